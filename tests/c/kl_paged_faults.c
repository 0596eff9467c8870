/*
 * kl_paged_faults: power cuts at every program/erase step while a paged
 * model trains (docs/paged-weights.md): row records, commit records, folds
 * into a new generation. One simulated NOR part holds the blob's
 * generations and the weight log (two kl_store_sub_init parts); on the host
 * it is the file-backed store, reopened from its file after each cut, on the
 * QEMU boards the NOR simulation over PSRAM, re-mounted.
 *
 * A run without cuts records the weights (the blob as the model has it,
 * kl_model_blob_read) after every step. Then, for every step k of that run,
 * a fresh part, the same training with power lost at step k (torn, or not
 * at all, in turn), a reboot (mount the generations, init the model from
 * the active blob, attach the log), and the weights must be those after the
 * step that was cut or after the one before it: never a mix. The model then
 * trains one more step.
 *
 *   host:  kl_paged_faults JOB FLASH_FILE [STEPS]   (a job image with a paged blob)
 *   board: the job image at the job address
 * Prints the counts and "PASS" / "FAIL ..."; exits 0 on PASS.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kilolearn/kl_store.h"
#include "kilolearn/kl_wlog.h"
#include "kl_job.h"
#include "kl_port.h"
#include "kl_test_say.h"

#ifndef KL_BAREMETAL
#include "posix/kl_store_file.h"
static kl_store_file_t fstore;
static const char *flash_path;
#else
static kl_nor_sim_t nor;
#endif

#define SECTOR  4096u
#define MAX_STEPS 64u

static kl_store_geom_t geom = {0, SECTOR, 16u, 0xFFu};
static kl_store_t part, slot_st, log_st;
static kl_slots_t slots;
static kl_wlog_t wlog;
static kl_model_t model;
static kl_arena_t arena;
static uint64_t arena_mem[64u * 1024u / 8u];
static kl_job_t job;
static uint32_t n_steps = 24u, slot_size, log_size;
static uint32_t want[MAX_STEPS + 1u]; /* weights after step s (s = 0: the blob's) */

static int part_open(int fresh)
{
#ifdef KL_BAREMETAL
	int err = kl_store_nor_init(&part, &nor, (uint8_t *)(uintptr_t)KL_FLASH_SIM_ADDR, &geom);
	if (err == KL_OK && fresh) {
		kl_store_nor_format(&part);
	}
#else
	static int opened;
	if (opened) { /* the image is on file already: closing it loses nothing */
		kl_store_file_close(&part);
	}
	if (fresh) {
		remove(flash_path);
	}
	int err = kl_store_file_open(&part, &fstore, flash_path, &geom);
	opened = err == KL_OK;
#endif
	if (err == KL_OK) {
		err = kl_store_sub_init(&slot_st, &part, 0, slot_size);
	}
	if (err == KL_OK) {
		err = kl_store_sub_init(&log_st, &part, slot_size, log_size);
	}
	return err;
}

/* mount the generations, the model from the active one, the log */
static int boot(void)
{
	int err = kl_slots_mount_checked(&slots, &slot_st, kl_blob_check);
	uint32_t len = 0;
	const uint8_t *blob = err == KL_OK ? kl_slots_active(&slots, &len) : NULL;
	if (blob == NULL) {
		return err != KL_OK ? err : KL_ECORRUPT;
	}
	kl_slots_pin(&slots, 1);
	kl_arena_init(&arena, arena_mem, sizeof(arena_mem));
	const kl_train_cfg_t cfg = {.lr = job.lr, .seed = job.seed};
	err = kl_model_init(&model, blob, len, &arena, &cfg);
	if (err == KL_OK && (job.flags & KL_JOB_UPDATE)) {
		err = kl_model_set_update_policy(&model, job.upd_policy, job.upd_frac);
	}
	if (err == KL_OK) {
		err = kl_wlog_open_active(&wlog, &log_st, &slots);
	}
	return err == KL_OK ? kl_model_attach_wlog(&model, &wlog) : err;
}

/* a fresh part with the job's blob as its first generation, booted */
static int fresh(void)
{
	int err = part_open(1);
	if (err == KL_OK) {
		err = kl_slots_mount(&slots, &slot_st);
	}
	if (err == KL_OK) {
		err = kl_slots_begin(&slots, job.blob_size);
	}
	if (err == KL_OK) {
		err = kl_slots_write(&slots, job.blob, job.blob_size);
	}
	if (err == KL_OK) {
		err = kl_slots_end(&slots, kl_crc32(0, job.blob, job.blob_size));
	}
	return err == KL_OK ? boot() : err;
}

/* CRC of the weights as the model has them (the blob past its CRC field) */
static uint32_t weights_crc(void)
{
	uint8_t buf[256];
	uint32_t crc = 0;
	for (uint32_t off = KL_BLOB_CRC_START; off < model.blob_len; off += sizeof(buf)) {
		const uint32_t n = model.blob_len - off < sizeof(buf) ? model.blob_len - off
								      : (uint32_t)sizeof(buf);
		if (kl_model_blob_read(&model, off, buf, n) != KL_OK) {
			return 0;
		}
		crc = kl_crc32(crc, buf, n);
	}
	return crc;
}

static int step(uint32_t s, uint32_t sb)
{
	const uint32_t i = s % job.n_train;
	return kl_train_step(&model, job.train_x + (size_t)i * sb, job.train_y[i]);
}

int main(int argc, char **argv)
{
	if (kl_port_init(argc, argv) != 0) {
		return 2;
	}
	size_t len = 0;
	const uint8_t *img = kl_port_job(&len);
	if (kl_job_parse(img, len, &job) != KL_OK) {
		say("FAIL job\n");
		return 2;
	}
#ifndef KL_BAREMETAL
	if (argc < 3) {
		say("usage: kl_paged_faults JOB FLASH_FILE [STEPS]\n");
		return 2;
	}
	flash_path = argv[2];
	if (argc > 3) {
		n_steps = (uint32_t)strtoul(argv[3], NULL, 10);
	}
#endif
	n_steps = n_steps > MAX_STEPS ? MAX_STEPS : n_steps;
	/* two generations and a log that takes a few steps, so that folds happen */
	slot_size = (2u * (job.blob_size + SECTOR) + SECTOR - 1u) / SECTOR * SECTOR;
	log_size = job.log_size != 0u ? (job.log_size + SECTOR - 1u) / SECTOR * SECTOR : 4u * SECTOR;
	geom.size = slot_size + log_size;
	int err = fresh();
	if (err != KL_OK) {
		say("FAIL setup %s\n", kl_strerror(err));
		return 2;
	}
	const uint32_t sb = model.n_inputs * (model.dtype == KL_DTYPE_S8 ? 1u : 4u);
	if (kl_job_check_samples(&job, sb) != KL_OK || job.n_train == 0u) {
		say("FAIL samples\n");
		return 2;
	}
	/* the run without cuts */
	const uint32_t base = kl_store_nor_steps(&part);
	want[0] = weights_crc();
	for (uint32_t s = 1; s <= n_steps; s++) {
		err = step(s - 1u, sb);
		if (err < 0) {
			say("FAIL step %u: %s\n", (unsigned)s, kl_strerror(err));
			return 1;
		}
		want[s] = weights_crc();
	}
	const uint32_t total = kl_store_nor_steps(&part) - base;
	say("run: %u steps, %u program/erase steps, %u folds, log %u B, slots %u B\n",
	    (unsigned)n_steps, (unsigned)total, (unsigned)wlog.folds, (unsigned)log_size,
	    (unsigned)slot_size);
	uint32_t old = 0, new_ = 0, bad = 0, torn = 0, exact = 0, window = 0;
	for (uint32_t k = 1; k <= total; k++) {
		if (fresh() != KL_OK) {
			say("FAIL fresh part\n");
			return 1;
		}
		kl_store_nor_cut(&part, k, (k & 1u) ? 0x9E3779B9u * k : 0u);
		torn += (k & 1u) != 0u;
		uint32_t s = 1;
		while (s <= n_steps && step(s - 1u, sb) >= 0) {
			s++;
		}
		err = part_open(0);
		if (err == KL_OK) {
			err = boot();
		}
		const uint32_t got = err == KL_OK ? weights_crc() : 0u;
		if (err == KL_OK && s <= n_steps && got == want[s]) {
			new_++;
		} else if (err == KL_OK && got == want[s - 1u]) {
			old++;
		} else {
			bad++;
			say("FAIL cut at %u (in step %u): %s\n", (unsigned)k, (unsigned)s,
			    err == KL_OK ? "weights of neither step" : kl_strerror(err));
			continue;
		}
		/* training goes on exactly where the last committed step left it
		 * (weights, dither, exponents): the next step gives the weights of
		 * the run without cuts, except right after a fold, before its
		 * state record (the new generation holds the weights and the
		 * exponents, the dither starts again from the seed:
		 * docs/paged-weights.md); and what it commits is what the next
		 * boot sees (the cut step's uncommitted records stay dropped) */
		const uint32_t done = got == want[s - 1u] ? s - 1u : s;
		const int fold_window = wlog.pos == 0u && slots.active.seq > 1u;
		window += fold_window;
		err = done < n_steps && step(done, sb) < 0 ? KL_EIO : KL_OK;
		const uint32_t crc_after = weights_crc();
		exact += !fold_window;
		if (err == KL_OK && done < n_steps && !fold_window && crc_after != want[done + 1u]) {
			bad++;
			say("FAIL cut at %u: the step after the reboot differs from the run "
			    "without cuts\n", (unsigned)k);
			continue;
		}
		if (err == KL_OK) {
			err = part_open(0);
		}
		if (err == KL_OK) {
			err = boot();
		}
		if (err != KL_OK || weights_crc() != crc_after) {
			bad++;
			say("FAIL cut at %u: the step after the reboot %s\n", (unsigned)k,
			    err != KL_OK ? kl_strerror(err) : "did not come back");
		}
	}
	say("cuts: %u (%u torn), old %u, new %u, bad %u, continued bit-exact %u, in a fold's "
	    "window %u\n", (unsigned)total, (unsigned)torn, (unsigned)old, (unsigned)new_,
	    (unsigned)bad, (unsigned)exact, (unsigned)window);
	say(bad == 0u ? "PASS\n" : "FAIL\n");
#ifndef KL_BAREMETAL
	kl_store_file_close(&part);
#endif
	return bad == 0u ? 0 : 1;
}
