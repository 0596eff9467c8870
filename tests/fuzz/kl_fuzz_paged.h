/*
 * For the fuzz harnesses (tests/fuzz/kl_fuzz_blob_lf.c, tests/c/kl_fuzz_blob.c): a paged model
 * (blob 2.4, docs/paged-weights.md) trains with a weight log. The blob is stored as a
 * generation in a RAM store, the model laid out again from that copy (its paged weights read
 * in place there) and a RAM weight log attached: what a device does, without flash.
 */
#ifndef KL_FUZZ_PAGED_H
#define KL_FUZZ_PAGED_H

#include <string.h>

#include "kilolearn/kilolearn.h"
#include "kilolearn/kl_store.h"
#include "kilolearn/kl_wlog.h"

#define FZ_PAGED_SLOTS (2u << 20) /* two generations of a blob up to 1 MB */
#define FZ_PAGED_LOG   (256u << 10)

static int fz_attach_paged(kl_model_t *m, const uint8_t *blob, kl_arena_t *a, void *arena_mem,
			   size_t arena_size, const kl_train_cfg_t *cfg)
{
	static uint64_t slot_mem[FZ_PAGED_SLOTS / 8u], log_mem[FZ_PAGED_LOG / 8u];
	static kl_store_t slot_st, log_st;
	static kl_slots_t slots;
	static kl_wlog_t lg;
	const uint32_t len = (uint32_t)blob[8] | ((uint32_t)blob[9] << 8) |
			     ((uint32_t)blob[10] << 16) | ((uint32_t)blob[11] << 24);
	uint64_t need = 2u * ((uint64_t)len + 2u * KL_STORE_RAM_SECTOR);
	need = (need + KL_STORE_RAM_SECTOR - 1u) / KL_STORE_RAM_SECTOR * KL_STORE_RAM_SECTOR;
	if (need > FZ_PAGED_SLOTS) {
		return KL_ENOMEM;
	}
	memset(slot_mem, 0xFF, (size_t)need); /* erased */
	memset(log_mem, 0xFF, sizeof(log_mem));
	kl_store_ram_init(&slot_st, (uint8_t *)slot_mem, (uint32_t)need);
	kl_store_ram_init(&log_st, (uint8_t *)log_mem, sizeof(log_mem));
	int err = kl_slots_mount(&slots, &slot_st);
	if (err == KL_OK) {
		err = kl_slots_begin(&slots, len);
	}
	if (err == KL_OK) {
		err = kl_slots_write(&slots, blob, len);
	}
	if (err == KL_OK) {
		err = kl_slots_end(&slots, kl_crc32(0, blob, len));
	}
	uint32_t n = 0;
	const uint8_t *copy = err == KL_OK ? kl_slots_active(&slots, &n) : NULL;
	if (copy == NULL) {
		return err != KL_OK ? err : KL_EINVAL;
	}
	kl_slots_pin(&slots, 1);
	kl_arena_init(a, arena_mem, arena_size);
	err = kl_model_init(m, copy, n, a, cfg);
	if (err == KL_OK) {
		err = kl_wlog_open_active(&lg, &log_st, &slots);
	}
	return err == KL_OK ? kl_model_attach_wlog(m, &lg) : err;
}

#endif /* KL_FUZZ_PAGED_H */
