/*
 * The runner's paged mode (KL_JOB_PAGED): the job's blob written as a
 * generation into a NOR-simulated weight store, the model read from there in
 * place, a weight log in a NOR-simulated region beside it. Both regions come
 * from kl_port_flash_sim() (the boards' PSRAM; a host buffer).
 */
#include <string.h>

#include "kilolearn/kl_store.h"
#include "kilolearn/kl_wlog.h"
#include "kl_job.h"
#include "kl_port.h"
#include "kl_runner_paged.h"

/* a serial NOR's geometry: 4 KB sectors erased to 0xFF, 16-byte program units */
#define NOR_SECTOR 4096u
#define NOR_WB     16u

static kl_store_t slot_st, log_st;
static kl_nor_sim_t slot_sim, log_sim;
static kl_slots_t slots;
static kl_wlog_t wlog;
/* per-sector wear of both parts (erases, bytes): at the end of the simulated
 * flash's memory, not in the runner's RAM */
#define MAX_SECTORS 4096u
#define WEAR_BYTES  (2u * 2u * MAX_SECTORS * 4u)
static uint32_t *wear[2];

static uint32_t round_sec(uint64_t v)
{
	return (uint32_t)((v + NOR_SECTOR - 1u) / NOR_SECTOR * NOR_SECTOR);
}

int kl_runner_paged_setup(const kl_job_t *job, const uint8_t **blob, size_t *len)
{
	size_t mem_len = 0;
	uint8_t *mem = kl_port_flash_sim(&mem_len);
	/* two generations (the fold writes the next beside the pinned one) */
	const uint32_t slot_size = round_sec(2u * ((uint64_t)job->blob_size + 2u * NOR_SECTOR));
	if (mem == NULL || mem_len < WEAR_BYTES || slot_size >= mem_len - WEAR_BYTES) {
		return KL_ENOMEM;
	}
	mem_len -= WEAR_BYTES;
	wear[0] = (uint32_t *)(void *)(mem + mem_len);
	wear[1] = wear[0] + 2u * MAX_SECTORS;
	memset(wear[0], 0, WEAR_BYTES);
	uint32_t log_size = (uint32_t)((mem_len - slot_size) / NOR_SECTOR * NOR_SECTOR);
	if (job->log_size != 0u) {
		if (round_sec(job->log_size) > log_size) {
			return KL_ENOMEM;
		}
		log_size = round_sec(job->log_size);
	}
	const kl_store_geom_t g1 = {slot_size, NOR_SECTOR, NOR_WB, 0xFFu};
	const kl_store_geom_t g2 = {log_size, NOR_SECTOR, NOR_WB, 0xFFu};
	int err = kl_store_nor_init(&slot_st, &slot_sim, mem, &g1);
	if (err == KL_OK) {
		err = kl_store_nor_init(&log_st, &log_sim, mem + slot_size, &g2);
	}
	if (err != KL_OK) {
		return err;
	}
	if (slot_size / NOR_SECTOR > MAX_SECTORS || log_size / NOR_SECTOR > MAX_SECTORS) {
		return KL_ENOMEM;
	}
	kl_store_nor_format(&slot_st);
	kl_store_nor_format(&log_st);
	err = kl_slots_mount_checked(&slots, &slot_st, kl_blob_check);
	if (err == KL_OK) {
		err = kl_slots_begin(&slots, job->blob_size);
	}
	if (err == KL_OK) {
		err = kl_slots_write(&slots, job->blob, job->blob_size);
	}
	if (err == KL_OK) {
		err = kl_slots_end(&slots, kl_crc32(0, job->blob, job->blob_size));
	}
	if (err != KL_OK) {
		return err;
	}
	uint32_t n = 0;
	*blob = kl_slots_active(&slots, &n);
	*len = n;
	kl_slots_pin(&slots, 1);
	/* what loading cost is not training's */
	slot_st.bytes_written = slot_st.erases = 0;
	kl_store_set_wear(&slot_st, wear[0], wear[0] + MAX_SECTORS);
	kl_store_set_wear(&log_st, wear[1], wear[1] + MAX_SECTORS);
	return KL_OK;
}

int kl_runner_paged_attach(kl_model_t *m)
{
	int err = kl_wlog_open_active(&wlog, &log_st, &slots);
	if (err == KL_OK) {
		err = kl_model_attach_wlog(m, &wlog);
	}
	return err;
}

/* the stores count in 32 bits: summed here in 64, call at least every 4 GB */
void kl_runner_paged_stats(kl_runner_flash_t *f)
{
	static uint32_t last_bytes, last_erases;
	static uint64_t bytes, erases;
	const uint32_t b = slot_st.bytes_written + log_st.bytes_written;
	const uint32_t e = slot_st.erases + log_st.erases;
	bytes += (uint32_t)(b - last_bytes);
	erases += (uint32_t)(e - last_erases);
	last_bytes = b;
	last_erases = e;
	f->bytes = bytes;
	f->erases = erases;
	f->folds = wlog.folds;
	f->max_sector_erases = 0;
	for (int k = 0; k < 2; k++) {
		for (uint32_t s = 0; s < MAX_SECTORS; s++) {
			f->max_sector_erases = wear[k][s] > f->max_sector_erases ? wear[k][s]
										 : f->max_sector_erases;
		}
	}
	f->slot_size = slot_st.geom.size;
	f->log_size = log_st.geom.size;
	f->sectors = (slot_st.geom.size + log_st.geom.size) / NOR_SECTOR;
}
