/* Power-loss-safe generations of a blob in a weight store: a ring of slots,
 * each a run of sectors with a header programmed last. docs/flash-store.md
 * has the layout and the argument why a cut leaves the old or the new blob. */
#include <string.h>

#include "kilolearn/kl_blob.h"
#include "kilolearn/kl_store.h"

/* slot header, little-endian u32s. KLS2 (written now) carries a 64-bit
 * sequence number, its high half at 20 and the header CRC over [0, 24) at 24;
 * KLS1 (read still) has a 32-bit one and its header CRC over [0, 20) at 20. */
#define SH_MAGIC   0u
#define SH_SEQ     4u
#define SH_LEN     8u
#define SH_CRC     12u /* CRC-32 of the blob */
#define SH_DATA    16u /* blob offset inside the slot (layout check) */
#define SH_SEQ_HI  20u /* KLS2 */
#define SH_HCRC1   20u /* KLS1: CRC-32 of bytes [0, 20) */
#define SH_HCRC2   24u /* KLS2: CRC-32 of bytes [0, 24) */
#define SH_USED    28u

static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
	       ((uint32_t)p[3] << 24);
}

static void wr32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static uint32_t span(const kl_slots_t *g, uint32_t len)
{
	const uint32_t eb = g->st->geom.erase_block;
	return (g->data_off + len + eb - 1u) / eb; /* sectors */
}

/* CRC-32 of n stored bytes at off (in place when memory-mapped) */
static int stored_crc(kl_store_t *st, uint32_t off, uint32_t n, uint32_t *crc)
{
	if (st->base != NULL) {
		*crc = kl_crc32(0, st->base + off, n);
		return KL_OK;
	}
	uint8_t buf[64];
	uint32_t c = 0;
	while (n > 0u) {
		const uint32_t m = n < sizeof(buf) ? n : (uint32_t)sizeof(buf);
		const int err = kl_store_read(st, off, buf, m);
		if (err != KL_OK) {
			return err;
		}
		c = kl_crc32(c, buf, m);
		off += m;
		n -= m;
	}
	*crc = c;
	return KL_OK;
}

/* The sequence number of a slot header, or 0 when it is not a valid one. */
static uint64_t header_seq(const uint8_t *h, uint32_t data_off)
{
	const uint32_t magic = rd32(h + SH_MAGIC);
	if (rd32(h + SH_DATA) != data_off) {
		return 0u;
	}
	if (magic == KL_SLOT_MAGIC && rd32(h + SH_HCRC2) == kl_crc32(0, h, SH_HCRC2)) {
		return ((uint64_t)rd32(h + SH_SEQ_HI) << 32) | rd32(h + SH_SEQ);
	}
	if (magic == KL_SLOT_MAGIC_V1 && rd32(h + SH_HCRC1) == kl_crc32(0, h, SH_HCRC1)) {
		return rd32(h + SH_SEQ);
	}
	return 0u;
}

int kl_slots_mount(kl_slots_t *g, kl_store_t *st)
{
	return kl_slots_mount_checked(g, st, NULL);
}

int kl_slots_mount_checked(kl_slots_t *g, kl_store_t *st, kl_slot_check_fn check)
{
	memset(g, 0, sizeof(*g));
	g->st = st;
	const uint32_t wb = st->geom.write_block, eb = st->geom.erase_block;
	g->data_off = wb > KL_SLOT_HDR ? wb : KL_SLOT_HDR;
	if (wb == 0u || eb == 0u || eb % wb != 0u || st->geom.size % eb != 0u ||
	    wb > KL_STORE_MAX_WRITE_BLOCK || eb < g->data_off) {
		return KL_EINVAL;
	}
	for (uint32_t off = 0; off < st->geom.size; off += eb) {
		uint8_t h[SH_USED];
		if (kl_store_read(st, off, h, SH_USED) != KL_OK) {
			continue;
		}
		const uint64_t seq = header_seq(h, g->data_off);
		const uint32_t len = rd32(h + SH_LEN);
		uint32_t crc;
		if (seq == 0u || len == 0u || len > st->geom.size - off - g->data_off ||
		    stored_crc(st, off + g->data_off, len, &crc) != KL_OK || crc != rd32(h + SH_CRC)) {
			continue;
		}
		/* the next generation numbers above every intact one, used or not */
		g->max_seq = seq > g->max_seq ? seq : g->max_seq;
		/* a generation the caller cannot use (e.g. a CRC-valid blob that
		 * kl_blob_check refuses) is not one to boot into */
		if (check != NULL && st->base != NULL &&
		    check(st->base + off + g->data_off, len) != KL_OK) {
			continue;
		}
		g->n_valid++;
		if (!g->have_active || seq > g->active.seq) {
			g->have_active = 1;
			g->active.off = off;
			g->active.len = len;
			g->active.seq = seq;
		}
	}
	return KL_OK;
}

const uint8_t *kl_slots_active(const kl_slots_t *g, uint32_t *len)
{
	if (!g->have_active || g->st->base == NULL) {
		if (len != NULL) {
			*len = 0;
		}
		return NULL;
	}
	if (len != NULL) {
		*len = g->active.len;
	}
	return g->st->base + g->active.off + g->data_off;
}

void kl_slots_pin(kl_slots_t *g, int on)
{
	g->have_pin = on && g->have_active;
	g->pin = g->active;
}

static int overlaps(const kl_slots_t *g, uint32_t s, uint32_t k, const kl_slot_t *o)
{
	const uint32_t eb = g->st->geom.erase_block;
	const uint32_t os = o->off / eb, ok = span(g, o->len);
	return s < os + ok && os < s + k;
}

int kl_slots_begin(kl_slots_t *g, uint32_t len)
{
	kl_slots_abort(g);
	const uint32_t eb = g->st->geom.erase_block, n = g->st->geom.size / eb;
	if (len == 0u || len > g->st->geom.size - g->data_off) {
		return KL_ENOSPC;
	}
	if (g->max_seq == UINT64_MAX) {
		return KL_ENOSPC; /* no number above it (a crafted image: 2^64 commits never come) */
	}
	const uint32_t k = span(g, len);
	/* the ring: the first free run after the active slot */
	const uint32_t first = g->have_active ? (g->active.off / eb + span(g, g->active.len)) % n : 0u;
	for (uint32_t i = 0; i < n; i++) {
		const uint32_t s = (first + i) % n;
		if (s + k > n || (g->have_active && overlaps(g, s, k, &g->active)) ||
		    (g->have_pin && overlaps(g, s, k, &g->pin))) {
			continue;
		}
		g->w.off = s * eb;
		g->w.len = len;
		g->w.seq = g->max_seq + 1u;
		g->w_pos = g->w_erased = g->pend_n = 0;
		g->w_crc = 0;
		g->finished = 0;
		g->writing = 1;
		return KL_OK;
	}
	return KL_ENOSPC;
}

/* erase the slot's sectors up to slot byte `end` */
static int erase_to(kl_slots_t *g, uint32_t end)
{
	const uint32_t eb = g->st->geom.erase_block;
	while (g->w_erased < end) {
		const int err = kl_store_erase(g->st, g->w.off + g->w_erased, eb);
		if (err != KL_OK) {
			return err;
		}
		g->w_erased += eb;
	}
	return KL_OK;
}

/* program whole write blocks of the blob at blob offset pos */
static int put(kl_slots_t *g, uint32_t pos, const uint8_t *data, uint32_t n)
{
	const uint32_t at = g->data_off + pos;
	int err = erase_to(g, at + n);
	if (err == KL_OK) {
		err = kl_store_program(g->st, g->w.off + at, data, n);
	}
	return err;
}

static int fail(kl_slots_t *g, int err)
{
	g->writing = 0;
	g->finished = 0;
	return err;
}

int kl_slots_write(kl_slots_t *g, const uint8_t *data, uint32_t n)
{
	if (!g->writing || g->finished) {
		return KL_EINVAL;
	}
	if (n > g->w.len - g->w_pos - g->pend_n) {
		return fail(g, KL_EINVAL);
	}
	const uint32_t wb = g->st->geom.write_block;
	g->w_crc = kl_crc32(g->w_crc, data, n);
	while (n > 0u) {
		int err = KL_OK;
		if (g->pend_n == 0u && n >= wb) {
			const uint32_t m = n - n % wb;
			err = put(g, g->w_pos, data, m);
			g->w_pos += m;
			data += m;
			n -= m;
		} else {
			uint32_t m = wb - g->pend_n;
			if (m > n) {
				m = n;
			}
			memcpy(g->pend + g->pend_n, data, m);
			g->pend_n += m;
			data += m;
			n -= m;
			if (g->pend_n == wb) {
				err = put(g, g->w_pos, g->pend, wb);
				g->w_pos += wb;
				g->pend_n = 0;
			}
		}
		if (err != KL_OK) {
			return fail(g, err);
		}
	}
	return KL_OK;
}

int kl_slots_end(kl_slots_t *g, uint32_t crc)
{
	const int err = kl_slots_finish(g, crc);
	return err != KL_OK ? err : kl_slots_commit(g);
}

int kl_slots_finish(kl_slots_t *g, uint32_t crc)
{
	if (!g->writing || g->finished) {
		return KL_EINVAL;
	}
	if (g->w_pos + g->pend_n != g->w.len) {
		return fail(g, KL_EINVAL);
	}
	const uint32_t wb = g->st->geom.write_block;
	const uint8_t ev = g->st->geom.erase_value;
	int err;
	if (g->pend_n != 0u) { /* the tail, padded with the erase value (left as erased) */
		memset(g->pend + g->pend_n, ev, wb - g->pend_n);
		err = put(g, g->w_pos, g->pend, wb);
		if (err != KL_OK) {
			return fail(g, err);
		}
		g->w_pos += g->pend_n;
		g->pend_n = 0;
	}
	/* what landed must be what was meant */
	uint32_t got;
	err = stored_crc(g->st, g->w.off + g->data_off, g->w.len, &got);
	if (err != KL_OK) {
		return fail(g, err);
	}
	if (got != crc) {
		return fail(g, KL_ECRC);
	}
	g->w_blob_crc = crc;
	g->finished = 1;
	return KL_OK;
}

const uint8_t *kl_slots_pending(const kl_slots_t *g, uint32_t *len)
{
	if (!g->writing || !g->finished || g->st->base == NULL) {
		return NULL;
	}
	*len = g->w.len;
	return g->st->base + g->w.off + g->data_off;
}

int kl_slots_commit(kl_slots_t *g)
{
	if (!g->writing || !g->finished) {
		return KL_EINVAL;
	}
	const uint8_t ev = g->st->geom.erase_value;
	const uint32_t crc = g->w_blob_crc;
	int err;
	/* the commit point: the header */
	uint8_t h[KL_STORE_MAX_WRITE_BLOCK];
	memset(h, ev, g->data_off);
	wr32(h + SH_MAGIC, KL_SLOT_MAGIC);
	wr32(h + SH_SEQ, (uint32_t)g->w.seq);
	wr32(h + SH_LEN, g->w.len);
	wr32(h + SH_CRC, crc);
	wr32(h + SH_DATA, g->data_off);
	wr32(h + SH_SEQ_HI, (uint32_t)(g->w.seq >> 32));
	wr32(h + SH_HCRC2, kl_crc32(0, h, SH_HCRC2));
	err = erase_to(g, g->data_off);
	if (err == KL_OK) {
		err = kl_store_program(g->st, g->w.off, h, g->data_off);
	}
	if (err != KL_OK) {
		return fail(g, err);
	}
	g->writing = 0;
	g->finished = 0;
	g->have_active = 1;
	g->active = g->w;
	g->max_seq = g->w.seq;
	g->n_valid++;
	return KL_OK;
}

void kl_slots_abort(kl_slots_t *g)
{
	g->writing = 0;
	g->finished = 0;
	g->pend_n = 0;
}
