/*
 * Power-cut test of the flash weight store (CONFIG_KILOLEARN_APP_POWERCUT_TEST):
 * the session core on the kilolearn_weights partition through flash_area,
 * with the power cut at every program/erase step of a COMMIT and of a LOAD.
 *
 * The session's store is a wrapper around the flash_area store that counts
 * steps (one erase page erased, one write block programmed) and, from the
 * k-th on, fails every operation with KL_EIO and lets nothing more reach the
 * flash. A clean cut drops the k-th step; a torn one lets it land in part:
 * a program sets a pseudo-random subset of its bits, an erase leaves a
 * pseudo-random half of the page's write blocks with their old contents
 * (erased, then those written back). "Reboot" is a fresh kl_session_init()
 * on the same flash. After each cut the session must boot with exactly the
 * old or exactly the new blob, byte for byte, then COMMIT again, and that
 * generation must be the one found after the next reboot.
 *
 * The model is the engine's golden int8 MLP (tests/zephyr/engine/src/golden.h).
 * Every experiment starts from an erased partition and the same frames, so
 * each run is deterministic.
 */
#include <string.h>

#include <zephyr/kernel.h>
#include <zephyr/storage/flash_map.h>
#include <zephyr/sys/printk.h>

#include "golden.h"
#include "kilolearn/kl_blob.h"
#include "kilolearn/kl_session.h"
#include "store.h"

#define BLOB_MAX S8G_MLP_BLOB_LEN
/* frames this test sends (LOAD data: 5 + 1,024 bytes) and receives (short
 * replies): buffers smaller than the protocol's maximum, for 64 KB boards */
#define REQ_MAX   (KL_FRAME_HEADER + 5u + 1024u + KL_FRAME_CRC)
#define REQ_WIRE  (REQ_MAX + REQ_MAX / 254u + 2u)
#define REPLY_MAX 256u

/* ---- the cut store ------------------------------------------------------------ */
static kl_store_t flash; /* the flash_area store */
static kl_store_t cut;   /* what the session sees */
static struct {
	uint32_t steps, cut_at, rng;
	int tear, dead;
} pc;
static uint8_t page_buf[1024]; /* torn erases of pages up to 1 KB (the simulators) */

static uint32_t rnd(void)
{
	pc.rng ^= pc.rng << 13;
	pc.rng ^= pc.rng >> 17;
	pc.rng ^= pc.rng << 5;
	return pc.rng;
}

/* 1 if this step is the one that loses power (it must then be torn or dropped) */
static int step(void)
{
	pc.steps++;
	if (pc.cut_at != 0u && pc.steps == pc.cut_at) {
		pc.dead = 1;
		return 1;
	}
	return 0;
}

static int cut_read(kl_store_t *st, uint32_t off, uint8_t *buf, uint32_t n)
{
	ARG_UNUSED(st);
	return pc.dead ? KL_EIO : flash.ops->read(&flash, off, buf, n);
}

static int cut_program(kl_store_t *st, uint32_t off, const uint8_t *data, uint32_t n)
{
	ARG_UNUSED(st);
	const uint32_t wb = flash.geom.write_block;

	for (uint32_t o = 0; o < n; o += wb) {
		if (pc.dead) {
			return KL_EIO;
		}
		if (step()) {
			if (pc.tear) {
				uint8_t t[KL_STORE_MAX_WRITE_BLOCK];

				for (uint32_t i = 0; i < wb; i++) {
					const uint8_t m = (uint8_t)rnd();

					/* bits in m stay erased */
					t[i] = flash.geom.erase_value ? (uint8_t)(data[o + i] | m)
								      : (uint8_t)(data[o + i] & ~m);
				}
				(void)flash.ops->program(&flash, off + o, t, wb);
			}
			return KL_EIO;
		}
		const int err = flash.ops->program(&flash, off + o, data + o, wb);

		if (err != KL_OK) {
			return err;
		}
	}
	return KL_OK;
}

static int cut_erase(kl_store_t *st, uint32_t off, uint32_t n)
{
	ARG_UNUSED(st);
	const uint32_t eb = flash.geom.erase_block, wb = flash.geom.write_block;

	for (uint32_t o = 0; o < n; o += eb) {
		if (pc.dead) {
			return KL_EIO;
		}
		if (step()) {
			if (pc.tear && eb <= sizeof(page_buf) &&
			    flash.ops->read(&flash, off + o, page_buf, eb) == KL_OK &&
			    flash.ops->erase(&flash, off + o, eb) == KL_OK) {
				for (uint32_t b = 0; b < eb; b += wb) {
					if (rnd() & 1u) { /* this write block keeps its old bytes */
						(void)flash.ops->program(&flash, off + o + b,
									 page_buf + b, wb);
					}
				}
			}
			return KL_EIO;
		}
		const int err = flash.ops->erase(&flash, off + o, eb);

		if (err != KL_OK) {
			return err;
		}
	}
	return KL_OK;
}

static const kl_store_ops_t cut_ops = {cut_read, cut_program, cut_erase};

static void power_on(uint32_t k, uint32_t seed)
{
	pc.steps = 0;
	pc.cut_at = k;
	pc.tear = seed != 0u;
	pc.rng = seed != 0u ? seed : 1u;
	pc.dead = 0;
}

/* ---- the session, driven with frames --------------------------------------------- */
static kl_session_t *sess;
static uint8_t *arena;
static size_t arena_size;
static uint16_t seq;
static uint8_t rx[REPLY_MAX];
static size_t rx_len;
static uint8_t reply[REPLY_MAX];
static uint8_t frame[REQ_MAX], wire[REQ_WIRE];
static uint8_t blob_old[BLOB_MAX], blob_new[BLOB_MAX], blob_other[BLOB_MAX];
static int failures;

static void tx(void *ctx, const uint8_t *buf, size_t n)
{
	ARG_UNUSED(ctx);
	if (rx_len + n <= sizeof(rx)) {
		memcpy(rx + rx_len, buf, n);
		rx_len += n;
	}
}

static void wr32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++) {
		p[i] = (uint8_t)(v >> (8 * i));
	}
}

static int request(uint8_t type, const uint8_t *p, uint32_t n)
{
	if (KL_FRAME_HEADER + n + KL_FRAME_CRC > sizeof(frame)) {
		return -1002;
	}
	seq = type == KL_CMD_INFO ? 0u : (uint16_t)(seq + 1u);
	frame[0] = type;
	frame[1] = KL_PROTO_VERSION;
	frame[2] = (uint8_t)seq;
	frame[3] = (uint8_t)(seq >> 8);
	frame[4] = (uint8_t)n;
	frame[5] = (uint8_t)(n >> 8);
	if (n != 0u) {
		memcpy(frame + KL_FRAME_HEADER, p, n);
	}
	wr32(frame + KL_FRAME_HEADER + n, kl_crc32(0, frame, KL_FRAME_HEADER + n));
	const size_t w = kl_cobs_encode(frame, KL_FRAME_HEADER + n + 4u, wire, sizeof(wire) - 1u);

	wire[w] = 0;
	rx_len = 0;
	kl_session_feed(sess, wire, w + 1u);
	if (rx_len < 2u || rx[rx_len - 1u] != 0u) {
		return -1000;
	}
	const size_t len = kl_cobs_decode(rx, rx_len - 1u, reply, sizeof(reply));

	if (len < KL_FRAME_HEADER + 8u || reply[0] != (type | KL_CMD_REPLY)) {
		return -1001;
	}
	const uint8_t *s = reply + KL_FRAME_HEADER;

	return (int)((uint32_t)s[0] | ((uint32_t)s[1] << 8) | ((uint32_t)s[2] << 16) |
		     ((uint32_t)s[3] << 24));
}

/* boot the session on the (cut) store: 1 with a model, 0 without, < 0 on error */
static int boot(void)
{
	const kl_session_cfg_t cfg = {arena, arena_size, &cut, tx, NULL, NULL, NULL, NULL};

	if (kl_session_init(sess, &cfg) != KL_OK || request(KL_CMD_INFO, NULL, 0) != KL_OK) {
		return -1;
	}
	return reply[KL_FRAME_HEADER + 4 + 6];
}

static int load(const uint8_t *blob, uint32_t len)
{
	static uint8_t p[5u + 1024u];

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
	static uint8_t p[2u + 256u];
	const uint32_t n_in = sess->model.n_inputs;

	if (sess->model.dtype != KL_DTYPE_S8 || n_in > 256u) {
		return KL_ENOTSUP;
	}
	for (uint32_t i = 0; i < steps; i++) {
		const uint32_t label = (i * 7u + salt) % sess->model.n_classes;

		p[0] = (uint8_t)label;
		p[1] = (uint8_t)(label >> 8);
		for (uint32_t j = 0; j < n_in; j++) {
			p[2 + j] = (uint8_t)(int8_t)((int)((j * 13u + label * 29u + i + salt) % 97u) -
						     48);
		}
		const int err = request(KL_CMD_TRAIN, p, 2u + n_in);

		if (err != KL_OK) {
			return err;
		}
	}
	return KL_OK;
}

static void check(int ok, const char *what, uint32_t k)
{
	if (!ok) {
		if (failures < 10) {
			printk("FAIL %s (cut %u)\n", what, (unsigned int)k);
		}
		failures++;
	}
}

static uint32_t active_len(void)
{
	uint32_t len = 0;

	return kl_slots_active(&sess->slots, &len) != NULL ? len : 0u;
}

static int active_is(const uint8_t *blob, uint32_t len)
{
	uint32_t got = 0;
	const uint8_t *b = kl_slots_active(&sess->slots, &got);

	return b != NULL && got == len && memcmp(b, blob, len) == 0;
}

static void copy_active(uint8_t *dst)
{
	uint32_t len = 0;
	const uint8_t *b = kl_slots_active(&sess->slots, &len);

	if (b != NULL && len <= BLOB_MAX) {
		memcpy(dst, b, len);
	}
}

/* the flash right after LOADing the golden blob into an erased partition
 * (generation 1): its first pages, the rest erased */
static uint8_t gen1[2048];
static uint32_t gen1_len;

static int page_erased(uint32_t off)
{
	const uint8_t *p = flash.base + off;

	for (uint32_t i = 0; i < flash.geom.erase_block; i++) {
		if (p[i] != flash.geom.erase_value) {
			return 0;
		}
	}
	return 1;
}

/* erase every page that is not, then put generation 1 back */
static int flash_reset(void)
{
	for (uint32_t off = 0; off < flash.size; off += flash.geom.erase_block) {
		if (!page_erased(off) &&
		    flash.ops->erase(&flash, off, flash.geom.erase_block) != KL_OK) {
			return -1;
		}
	}
	return gen1_len == 0u ? 0 : flash.ops->program(&flash, 0, gen1, gen1_len);
}

/* generation 1 (the golden blob, LOADed), trained and COMMITted (generation
 * 2), trained again: the state in which the cut is armed */
static int prologue(void)
{
	power_on(0, 0);
	if (flash_reset() != 0 || boot() != 1) {
		return -1;
	}
	if (train(3, 1) != KL_OK || request(KL_CMD_COMMIT, NULL, 0) != KL_OK ||
	    train(3, 2) != KL_OK) {
		return -2;
	}
	return 0;
}

/* LOAD the golden blob into the erased partition and keep the image */
static int format(void)
{
	power_on(0, 0);
	gen1_len = 0;
	if (flash_reset() != 0 || boot() != 0 || load(s8g_mlp_blob, S8G_MLP_BLOB_LEN) != KL_OK) {
		return -1;
	}
	const uint32_t eb = flash.geom.erase_block;
	const uint32_t used = (sess->slots.data_off + S8G_MLP_BLOB_LEN + eb - 1u) / eb * eb;

	if (sess->slots.active.off != 0u || used > sizeof(gen1)) {
		return -2;
	}
	memcpy(gen1, flash.base, used);
	gen1_len = used;
	return 0;
}

enum { EXP_COMMIT, EXP_LOAD };

static int run_op(int exp)
{
	return exp == EXP_COMMIT ? request(KL_CMD_COMMIT, NULL, 0)
				 : load(blob_other, S8G_MLP_BLOB_LEN);
}

/* every cut of one experiment, clean (seed 0) or torn */
static void experiment(int exp, uint32_t seed)
{
	const char *name = exp == EXP_COMMIT ? "COMMIT" : "LOAD";
	const uint32_t len = S8G_MLP_BLOB_LEN;

	/* the uncut run: the old and the new blob, and how many steps */
	check(prologue() == 0, "prologue", 0);
	copy_active(blob_old);
	const uint32_t gen = (uint32_t)sess->slots.active.seq;

	power_on(0, 0);
	check(run_op(exp) == KL_OK, "uncut operation", 0);
	const uint32_t n = pc.steps;

	copy_active(blob_new);
	check(active_len() == len && memcmp(blob_old, blob_new, len) != 0 &&
		      sess->slots.active.seq == gen + 1u,
	      "uncut operation wrote a new generation", 0);
	check(boot() == 1 && active_is(blob_new, len), "new generation after a reboot", 0);

	uint32_t n_old = 0, n_new = 0;

	for (uint32_t k = 1; k <= n + 1u; k++) {
		check(prologue() == 0, "prologue", k);
		power_on(k, seed != 0u ? seed * 7919u + k : 0u);
		const int err = run_op(exp);

		check(k <= n ? err != KL_OK : err == KL_OK, "operation status", k);
		power_on(0, 0); /* reboot */
		const int up = boot();
		const int is_old = active_is(blob_old, len), is_new = active_is(blob_new, len);

		check(up == 1, "boot with a model after the cut", k);
		check(is_old || is_new, "neither the old nor the new blob", k);
		n_old += (uint32_t)is_old;
		n_new += (uint32_t)is_new;
		if (up == 1) {
			const uint32_t g = (uint32_t)sess->slots.active.seq;

			check(train(1, 3) == KL_OK && request(KL_CMD_COMMIT, NULL, 0) == KL_OK,
			      "commit after the cut", k);
			check(boot() == 1 && sess->slots.active.seq == g + 1u,
			      "recovered generation after a reboot", k);
		}
	}
	printk("kilolearn powercut: %s %s: %u steps, %u cuts: %u old, %u new, %d failures\n",
	       name, seed != 0u ? "torn" : "clean", (unsigned int)n, (unsigned int)(n + 1u),
	       (unsigned int)n_old, (unsigned int)n_new, failures);
}

int app_powercut_run(kl_session_t *s, uint8_t *a, size_t a_size)
{
	sess = s;
	arena = a;
	arena_size = a_size;
	if (app_store_flash_open(&flash) != 0) {
		printk("kilolearn powercut: FAIL no flash store\n");
		return -1;
	}
	cut = flash;
	cut.ops = &cut_ops;
	cut.ctx = NULL;
	cut.sector_erases = NULL;
	cut.sector_bytes = NULL;
	printk("kilolearn powercut: %u bytes, erase page %u, write block %u, erase value 0x%02x, "
	       "blob %u bytes\n",
	       (unsigned int)flash.size, (unsigned int)flash.geom.erase_block,
	       (unsigned int)flash.geom.write_block, flash.geom.erase_value,
	       (unsigned int)S8G_MLP_BLOB_LEN);
	const int64_t t0 = k_uptime_get();

	check(format() == 0, "LOAD into the erased partition", 0);
	/* the LOAD experiment loads a different valid blob: the trained one */
	check(prologue() == 0, "prologue", 0);
	check(train(5, 4) == KL_OK && request(KL_CMD_COMMIT, NULL, 0) == KL_OK, "commit", 0);
	copy_active(blob_other);
	experiment(EXP_COMMIT, 0);
	experiment(EXP_COMMIT, 1);
	experiment(EXP_LOAD, 1);
	printk("kilolearn powercut: %s (%d failures, %lld ms)\n", failures == 0 ? "PASS" : "FAIL",
	       failures, (long long)(k_uptime_get() - t0));
	return failures == 0 ? 0 : -1;
}
