/*
 * kl_store_faults: power cuts at every program/erase step of a COMMIT and of
 * a LOAD, through the real session core, on the host (file-backed NOR
 * simulation, reopened from the file after each cut) and on the QEMU mps2
 * boards (NOR simulation over PSRAM, re-mounted after each cut). After each
 * cut and "reboot" the session must boot with exactly the old or exactly
 * the new blob, byte for byte, and the next COMMIT must succeed.
 *
 *   host:  kl_store_faults BLOB FLASH_FILE [SIZE,ERASE,WRITE,EV] [TRAIN_STEPS]
 *   board: the blob is loaded raw at the job address; geometry 64K,4K,16,0xFF
 *
 * Prints one summary line per experiment and "PASS" / "FAIL ..." at the end;
 * exits 0 on PASS.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kilolearn/kl_blob.h"
#include "kilolearn/kl_session.h"
#include "kl_port.h"
#include "kl_test_say.h"

#ifndef KL_BAREMETAL
#include "posix/kl_store_file.h"
static kl_store_file_t fstore;
static const char *flash_path;
#else
static kl_nor_sim_t nor;
static uint32_t wear[2u * 256u];
#endif

static kl_store_geom_t geom = {64u * 1024u, 4096u, 16u, 0xFFu};
static kl_store_t store;
static kl_session_t sess;
static uint32_t arena[96u * 1024u / 4u];
static const uint8_t *job;
static uint32_t job_len;
static uint32_t train_steps = 3u;
static int failures;

/* ---- buffers: PSRAM above the simulated flash on the boards, malloc on the host */
static uint8_t *buffer(int i)
{
#ifdef KL_BAREMETAL
	return (uint8_t *)(uintptr_t)(KL_FLASH_SIM_ADDR + (uint32_t)(i + 1) * 0x100000u);
#else
	static uint8_t *bufs[8];
	if (bufs[i] == NULL) {
		bufs[i] = malloc(geom.size > 0x100000u ? geom.size : 0x100000u);
		if (bufs[i] == NULL) {
			say("FAIL out of memory\n");
			kl_port_exit(2);
		}
	}
	return bufs[i];
#endif
}
enum { SNAP0, SNAP1, B_OLD, B_MID, B_NEW, B_GOT };

/* ---- the store: open, power cut, reboot ---------------------------------------- */
static uint8_t *image(void)
{
#ifdef KL_BAREMETAL
	return nor.mem;
#else
	return fstore.image;
#endif
}

static void store_open(int fresh)
{
#ifdef KL_BAREMETAL
	if (kl_store_nor_init(&store, &nor, (uint8_t *)(uintptr_t)KL_FLASH_SIM_ADDR, &geom) != KL_OK) {
		say("FAIL geometry\n");
		kl_port_exit(2);
	}
	if (fresh) {
		kl_store_nor_format(&store);
		memset(wear, 0, sizeof(wear));
	}
	kl_store_set_wear(&store, wear, wear + kl_store_sectors(&store));
#else
	if (fresh) {
		remove(flash_path);
	}
	if (kl_store_file_open(&store, &fstore, flash_path, &geom) != KL_OK) {
		say("FAIL cannot open %s\n", flash_path);
		kl_port_exit(2);
	}
#endif
}

/* power comes back: the part is re-read (host: from its file) */
static void reboot(void)
{
#ifndef KL_BAREMETAL
	kl_store_file_close(&store);
#endif
	store_open(0);
}

static void snapshot(int i)
{
	memcpy(buffer(i), image(), geom.size);
}

static void restore(int i)
{
	memcpy(image(), buffer(i), geom.size);
#ifndef KL_BAREMETAL
	fstore.sim.on_change(fstore.sim.change_ctx, 0, geom.size); /* to the file */
#endif
	reboot();
}

/* ---- a minimal protocol client ---------------------------------------------- */
static uint8_t rx[2u * KL_FRAME_WIRE_MAX];
static size_t rx_len;
static uint16_t seq;

static void tx(void *ctx, const uint8_t *buf, size_t n)
{
	(void)ctx;
	if (rx_len + n <= sizeof(rx)) {
		memcpy(rx + rx_len, buf, n);
		rx_len += n;
	}
}

static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
	       ((uint32_t)p[3] << 24);
}

static void wr32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++) {
		p[i] = (uint8_t)(v >> (8 * i));
	}
}

/* one request; returns the reply status (payload after it in reply[]) */
static uint8_t reply[KL_FRAME_MAX];
static int request(uint8_t type, const uint8_t *p, uint32_t n)
{
	static uint8_t f[KL_FRAME_MAX], wire[KL_FRAME_WIRE_MAX];
	seq = type == KL_CMD_INFO ? 0u : (uint16_t)(seq + 1u);
	f[0] = type;
	f[1] = KL_PROTO_VERSION;
	f[2] = (uint8_t)seq;
	f[3] = (uint8_t)(seq >> 8);
	f[4] = (uint8_t)n;
	f[5] = (uint8_t)(n >> 8);
	if (n != 0u) {
		memcpy(f + KL_FRAME_HEADER, p, n);
	}
	wr32(f + KL_FRAME_HEADER + n, kl_crc32(0, f, KL_FRAME_HEADER + n));
	const size_t w = kl_cobs_encode(f, KL_FRAME_HEADER + n + 4u, wire, sizeof(wire) - 1u);
	wire[w] = 0;
	rx_len = 0;
	kl_session_feed(&sess, wire, w + 1u);
	if (rx_len < 2u || rx[rx_len - 1u] != 0u) {
		return -1000;
	}
	const size_t len = kl_cobs_decode(rx, rx_len - 1u, reply, sizeof(reply));
	if (len < KL_FRAME_HEADER + 8u || reply[0] != (type | KL_CMD_REPLY)) {
		return -1001;
	}
	return (int)rd32(reply + KL_FRAME_HEADER);
}

/* boot the session on the store; 1 if it came up with a model */
static int boot(void)
{
	const kl_session_cfg_t cfg = {(uint8_t *)arena, sizeof(arena), &store, tx, NULL, NULL, NULL,
				      NULL};
	if (kl_session_init(&sess, &cfg) != KL_OK || request(KL_CMD_INFO, NULL, 0) != KL_OK) {
		return -1;
	}
	return reply[KL_FRAME_HEADER + 4 + 6];
}

static int load(const uint8_t *blob, uint32_t len)
{
	uint8_t p[5u + 1024u];
	p[0] = KL_LOAD_BEGIN;
	wr32(p + 1, len);
	int err = request(KL_CMD_LOAD, p, 5);
	for (uint32_t off = 0; err == KL_OK && off < len; off += 1024u) {
		const uint32_t m = len - off < 1024u ? len - off : 1024u;
		p[0] = KL_LOAD_DATA;
		wr32(p + 1, off);
		memcpy(p + 5, blob + off, m);
		err = request(KL_CMD_LOAD, p, 5u + m);
	}
	if (err == KL_OK) {
		p[0] = KL_LOAD_END;
		wr32(p + 1, kl_crc32(0, blob, len));
		err = request(KL_CMD_LOAD, p, 5);
	}
	return err;
}

static int train(uint32_t steps, uint32_t salt)
{
	uint8_t p[2u + 4u * 1024u];
	const uint32_t n_in = sess.model.n_inputs, es = sess.model.dtype == KL_DTYPE_S8 ? 1u : 4u;
	if (n_in * es > 4u * 1024u) {
		return KL_ENOTSUP;
	}
	for (uint32_t i = 0; i < steps; i++) {
		const uint32_t label = (i * 7u + salt) % sess.model.n_classes;
		p[0] = (uint8_t)label;
		p[1] = (uint8_t)(label >> 8);
		for (uint32_t j = 0; j < n_in; j++) {
			const uint32_t v = (j * 13u + label * 29u + i + salt) % 97u;
			if (es == 1u) {
				p[2 + j] = (uint8_t)(int8_t)((int)v - 48);
			} else {
				const float x = (float)v / 97.0f;
				memcpy(p + 2 + 4u * j, &x, 4);
			}
		}
		const int err = request(KL_CMD_TRAIN, p, 2u + n_in * es);
		if (err != KL_OK) {
			return err;
		}
	}
	return KL_OK;
}

/* the blob the session booted with (its active generation) into buffer i */
static uint32_t active_blob(int i)
{
	uint32_t len;
	const uint8_t *b = kl_slots_active(&sess.slots, &len);
	if (b == NULL) {
		return 0;
	}
	memcpy(buffer(i), b, len);
	return len;
}

static void check(int ok, const char *what, uint32_t k)
{
	if (!ok) {
		if (failures < 10) {
			say("FAIL %s (cut %lu)\n", what, (unsigned long)k);
		}
		failures++;
	}
}

static uint32_t steps(void)
{
	return kl_store_nor_steps(&store);
}

static uint32_t violations(void)
{
#ifdef KL_BAREMETAL
	return nor.violations;
#else
	return fstore.sim.violations;
#endif
}

/* the state before the experiment, up to where the cut is armed */
static void prologue_commit(void)
{
	restore(SNAP0);
	check(boot() == 1, "boot with generation 1", 0);
	check(train(train_steps, 1u) == KL_OK, "train", 0);
	check(request(KL_CMD_COMMIT, NULL, 0) == KL_OK, "first commit", 0);
	check(train(train_steps, 2u) == KL_OK, "train", 0);
}

/* after the cut: reboot, compare, then the next commit must work */
static int after_cut(uint32_t k, int old_buf, int new_buf, uint32_t len, uint32_t *n_old,
		     uint32_t *n_new)
{
	reboot();
	const int up = boot();
	check(up == 1, "boot after the cut", k);
	const uint32_t got = active_blob(B_GOT);
	const int is_old = got == len && memcmp(buffer(B_GOT), buffer(old_buf), len) == 0;
	const int is_new = got == len && memcmp(buffer(B_GOT), buffer(new_buf), len) == 0;
	check(is_old || is_new, "neither the old nor the new blob", k);
	*n_old += (uint32_t)is_old;
	*n_new += (uint32_t)is_new;
	if (up == 1) {
		const uint32_t gen = sess.slots.active.seq;
		check(train(1u, 3u) == KL_OK && request(KL_CMD_COMMIT, NULL, 0) == KL_OK,
		      "commit after the cut", k);
		reboot();
		check(boot() == 1 && sess.slots.active.seq == gen + 1u, "recovered generation", k);
	}
	return is_old || is_new;
}

int main(int argc, char **argv)
{
	if (kl_port_init(argc, argv) != 0) {
		return 2;
	}
	size_t n = 0;
#ifdef KL_BAREMETAL
	/* the blob itself is the image QEMU's loader put at the job address */
	job = (const uint8_t *)(uintptr_t)KL_JOB_ADDR;
	n = rd32(job) == KL_BLOB_MAGIC ? rd32(job + KL_BH_TOTAL_SIZE) : 0u;
#else
	job = kl_port_job(&n);
	if (argc < 3) {
		say("usage: kl_store_faults BLOB FLASH_FILE [SIZE,ERASE,WRITE,EV] [TRAIN_STEPS]\n");
		return 2;
	}
	flash_path = argv[2];
	if (argc > 3 && kl_store_geom_parse(argv[3], &geom) != KL_OK) {
		say("FAIL bad geometry %s\n", argv[3]);
		return 2;
	}
	if (argc > 4) {
		train_steps = (uint32_t)strtoul(argv[4], NULL, 0);
	}
#endif
	if (job == NULL || n < KL_BLOB_HEADER_SIZE || n > geom.size) {
		say("FAIL no blob\n");
		kl_port_exit(2);
	}
	job_len = (uint32_t)n;
	say("geometry %lu,%lu,%lu,0x%02X blob %lu bytes, %lu training steps between commits\n",
	    (unsigned long)geom.size, (unsigned long)geom.erase_block,
	    (unsigned long)geom.write_block, geom.erase_value, (unsigned long)job_len,
	    (unsigned long)train_steps);

	/* generation 1: the blob as loaded */
	store_open(1);
	check(boot() == 0, "a fresh store holds no model", 0);
	check(load(job, job_len) == KL_OK, "load", 0);
	check(active_blob(B_OLD) == job_len && memcmp(buffer(B_OLD), job, job_len) == 0,
	      "generation 1 is the job", 0);
	snapshot(SNAP0);

	/* reference: commit (generation 2), train, commit (generation 3) */
	prologue_commit();
	(void)active_blob(B_MID);
	const uint32_t s0 = steps();
	check(request(KL_CMD_COMMIT, NULL, 0) == KL_OK, "second commit", 0);
	const uint32_t n_commit = steps() - s0;
	(void)active_blob(B_NEW);
	check(memcmp(buffer(B_MID), buffer(B_OLD), job_len) != 0, "training changed generation 2", 0);
	check(memcmp(buffer(B_NEW), buffer(B_MID), job_len) != 0, "training changed generation 3", 0);
	check(violations() == 0u, "programs only over erased cells", 0);
	reboot();
	check(boot() == 1 && active_blob(B_GOT) == job_len &&
	      memcmp(buffer(B_GOT), buffer(B_NEW), job_len) == 0, "generation 3 after reboot", 0);
	if (failures) {
		say("FAIL reference run\n");
		kl_port_exit(1);
	}

	/* every step of the second commit: not done (clean), then half done (torn) */
	for (int torn = 0; torn < 2; torn++) {
		uint32_t n_old = 0, n_new = 0;
		for (uint32_t k = 1; k <= n_commit + 1u; k++) {
			prologue_commit();
			kl_store_nor_cut(&store, k, torn ? 0x9E3779B9u * k + 1u : 0u);
			const int err = request(KL_CMD_COMMIT, NULL, 0);
			check(k > n_commit ? err == KL_OK : err == KL_EIO, "commit status", k);
			after_cut(k, B_MID, B_NEW, job_len, &n_old, &n_new);
		}
		say("commit: %lu steps, %s cut at each of %lu points: %lu old, %lu new\n",
		    (unsigned long)n_commit, torn ? "torn" : "clean", (unsigned long)(n_commit + 1u),
		    (unsigned long)n_old, (unsigned long)n_new);
	}

	/* LOAD of the original blob over generation 2: every step of the load */
	prologue_commit(); /* generation 2 active = B_MID */
	snapshot(SNAP1);
	uint32_t s1 = steps();
	check(load(job, job_len) == KL_OK, "reference load", 0);
	const uint32_t n_load = steps() - s1;
	for (int torn = 0; torn < 2; torn++) {
		uint32_t n_old = 0, n_new = 0;
		for (uint32_t k = 1; k <= n_load + 1u; k++) {
			restore(SNAP1);
			check(boot() == 1, "boot with generation 2", k);
			kl_store_nor_cut(&store, k, torn ? 0x85EBCA6Bu * k + 7u : 0u);
			const int err = load(job, job_len);
			check(k > n_load ? err == KL_OK : err == KL_EIO, "load status", k);
			after_cut(k, B_MID, B_OLD, job_len, &n_old, &n_new);
		}
		say("load: %lu steps, %s cut at each of %lu points: %lu old, %lu new\n",
		    (unsigned long)n_load, torn ? "torn" : "clean", (unsigned long)(n_load + 1u),
		    (unsigned long)n_old, (unsigned long)n_new);
	}
	unsigned long er = 0, by = 0;
	for (uint32_t i = 0; i < kl_store_sectors(&store); i++) {
		er += store.sector_erases[i];
		by += store.sector_bytes[i];
	}
	say("wear: %lu erases, %lu bytes programmed\n", er, by);
	if (failures) {
		say("FAIL %d checks\n", failures);
		kl_port_exit(1);
	}
	say("PASS\n");
#ifndef KL_BAREMETAL
	kl_store_file_close(&store);
#endif
	kl_port_exit(0);
	return 0;
}
