/* The weight log of paged models: row records appended to a flash region,
 * grouped in committed transactions (kl_wlog.h; docs/paged-weights.md has
 * the argument why a power cut leaves the last committed step). */
#include <string.h>

#include "kilolearn/kl_wlog.h"
#include "../kl_blob_read.h"

#define RH_MAGIC 0u
#define RH_OP    4u
#define RH_ROW   6u
#define RH_LEN   8u
#define RH_BLOB  12u
#define RH_TXN   16u
#define RH_GEN   24u
#define RH_DCRC  32u
#define RH_HCRC  36u

static uint64_t rd64(const uint8_t *p)
{
	return (uint64_t)kl_rd32(p) | ((uint64_t)kl_rd32(p + 4) << 32);
}

static void wr64(uint8_t *p, uint64_t v)
{
	kl_wr32(p, (uint32_t)v);
	kl_wr32(p + 4, (uint32_t)(v >> 32));
}

static uint32_t round_up(uint32_t v, uint32_t a)
{
	return (v + a - 1u) / a * a;
}

static uint32_t unit(const kl_wlog_t *lg);

int kl_wlog_open(kl_wlog_t *lg, kl_store_t *st, kl_slots_t *slots, uint64_t gen,
		 uint32_t blob_crc)
{
	if (lg == NULL || st == NULL || st->base == NULL || ((uintptr_t)st->base & 7u) != 0u ||
	    st->geom.erase_block == 0u ||
	    st->geom.write_block == 0u || st->geom.erase_block % st->geom.write_block != 0u || st->geom.erase_block % 8u != 0u ||
	    st->geom.size < 2u * st->geom.erase_block) {
		return KL_EINVAL;
	}
	memset(lg, 0, sizeof(*lg));
	lg->st = st;
	lg->slots = slots;
	lg->hdr_span = round_up(KL_WLOG_HDR, unit(lg));
	kl_wlog_restart(lg, gen, blob_crc);
	return KL_OK;
}

int kl_wlog_open_active(kl_wlog_t *lg, kl_store_t *st, kl_slots_t *slots)
{
	uint32_t len = 0;
	const uint8_t *blob = slots != NULL ? kl_slots_active(slots, &len) : NULL;
	if (blob == NULL || len < KL_BLOB_HEADER_SIZE) {
		return KL_EINVAL;
	}
	return kl_wlog_open(lg, st, slots, slots->active.seq, kl_rd32(blob + KL_BH_CRC));
}

void kl_wlog_restart(kl_wlog_t *lg, uint64_t gen, uint32_t blob_crc)
{
	lg->gen = gen;
	lg->blob_crc = blob_crc;
	lg->pos = 0;
	lg->erased_to = 0;
	lg->txn_records = 0;
	lg->buf_n = 0;
}

/* records start 8-aligned (a float row read in place must be aligned) and
 * on a write block */
static uint32_t unit(const kl_wlog_t *lg)
{
	return lg->st->geom.write_block < 8u ? 8u : lg->st->geom.write_block;
}

uint32_t kl_wlog_span(const kl_wlog_t *lg, uint32_t len)
{
	return lg->hdr_span + round_up(len, unit(lg));
}

int kl_wlog_room(const kl_wlog_t *lg, uint64_t bytes)
{
	return (uint64_t)lg->pos + bytes <= lg->st->geom.size;
}

/* The record at off, if it is a valid one of this generation: its header,
 * else NULL. */
static const uint8_t *valid_record(const kl_wlog_t *lg, uint32_t off)
{
	const uint32_t size = lg->st->geom.size;
	if (off > size || size - off < lg->hdr_span) {
		return NULL;
	}
	const uint8_t *h = lg->st->base + off;
	if (kl_rd32(h + RH_MAGIC) != KL_WLOG_MAGIC ||
	    kl_rd32(h + RH_HCRC) != kl_crc32(0, h, RH_HCRC) || rd64(h + RH_GEN) != lg->gen ||
	    kl_rd32(h + RH_BLOB) != lg->blob_crc) {
		return NULL;
	}
	const uint32_t len = kl_rd32(h + RH_LEN);
	if (len > size - off - lg->hdr_span || kl_wlog_span(lg, len) > size - off ||
	    kl_rd32(h + RH_DCRC) != kl_crc32(0, h + lg->hdr_span, len)) {
		return NULL;
	}
	return h;
}

static int all_erased(const kl_wlog_t *lg, uint32_t off, uint32_t end)
{
	const uint8_t ev = lg->st->geom.erase_value;
	for (const uint8_t *p = lg->st->base + off; p < lg->st->base + end; p++) {
		if (*p != ev) {
			return 0;
		}
	}
	return 1;
}

/* apply the records of the transaction from off up to and including its
 * commit record at end */
static void apply_txn(kl_wlog_t *lg, uint32_t off, uint32_t end, kl_wlog_apply_fn apply,
		      void *ctx)
{
	while (off <= end) {
		const uint8_t *h = lg->st->base + off;
		const uint32_t len = kl_rd32(h + RH_LEN);
		if (apply(ctx, kl_rd16(h + RH_OP), kl_rd16(h + RH_ROW), h + lg->hdr_span, len) == 0) {
			lg->mounted++;
		} else {
			lg->dropped++;
		}
		off += kl_wlog_span(lg, len);
	}
}

int kl_wlog_mount(kl_wlog_t *lg, kl_wlog_apply_fn apply, void *ctx)
{
	if (lg == NULL || lg->st == NULL || apply == NULL) {
		return KL_EINVAL;
	}
	const uint32_t eb = lg->st->geom.erase_block, size = lg->st->geom.size;
	lg->mounted = lg->dropped = 0;
	uint32_t off = 0, end = 0; /* end: after the last valid record */
	int have = 0;
	uint64_t max_txn = 0;
	uint32_t t_start = 0, t_records = 0; /* the open transaction */
	uint64_t t_txn = 0;
	while (off < size) {
		const uint8_t *h = valid_record(lg, off);
		if (h == NULL) { /* erased, junk or another generation: the next sector */
			lg->dropped += t_records;
			t_records = 0;
			off = (off / eb + 1u) * eb;
			continue;
		}
		const uint64_t txn = rd64(h + RH_TXN);
		const uint32_t next = off + kl_wlog_span(lg, kl_rd32(h + RH_LEN));
		if (t_records != 0u && txn != t_txn) { /* a transaction without its commit */
			lg->dropped += t_records;
			t_records = 0;
		}
		if (kl_rd16(h + RH_OP) == KL_WLOG_RESET) { /* alone: void what came before */
			lg->dropped += t_records;
			t_records = 0;
			apply_txn(lg, off, off, apply, ctx);
			lg->mounted--;
		} else if (kl_rd16(h + RH_OP) == KL_WLOG_COMMIT) {
			/* its transaction's rows and itself, or itself alone (state only) */
			apply_txn(lg, t_records != 0u ? t_start : off, off, apply, ctx);
			lg->mounted--; /* the commit record is not a row */
			t_records = 0;
		} else {
			if (t_records == 0u) {
				t_start = off;
				t_txn = txn;
			}
			t_records++;
		}
		max_txn = !have || txn > max_txn ? txn : max_txn;
		have = 1;
		end = next;
		off = next;
	}
	lg->dropped += t_records;
	/* continue after the last valid record, or at the next sector when what
	 * follows it in its sector is not erased (a torn record) */
	const uint32_t sec_end = end == 0u ? 0u : round_up(end, eb);
	if (end != 0u && !all_erased(lg, end, sec_end < size ? sec_end : size)) {
		end = sec_end;
	}
	lg->pos = end;
	lg->erased_to = round_up(end, eb);
	lg->txn = have ? max_txn + 1u : 1u;
	lg->txn_records = 0;
	lg->buf_n = 0;
	return KL_OK;
}

/* program n bytes at off, erasing the sectors it reaches first */
static int put(kl_wlog_t *lg, uint32_t off, const uint8_t *data, uint32_t n)
{
	const uint32_t eb = lg->st->geom.erase_block;
	while (lg->erased_to < off + n) {
		const int err = kl_store_erase(lg->st, lg->erased_to, eb);
		if (err != KL_OK) {
			return err;
		}
		lg->erased_to += eb;
	}
	return kl_store_program(lg->st, off, data, n);
}

int kl_wlog_begin(kl_wlog_t *lg, uint16_t op, uint16_t row, uint32_t len)
{
	if (lg == NULL || lg->st == NULL) {
		return KL_EINVAL;
	}
	if (!kl_wlog_room(lg, kl_wlog_span(lg, len))) {
		return KL_ENOSPC;
	}
	lg->r_off = lg->pos;
	lg->r_len = len;
	lg->r_done = 0;
	lg->r_crc = 0;
	lg->r_op = op;
	lg->r_row = row;
	lg->buf_n = 0;
	return KL_OK;
}

int kl_wlog_append(kl_wlog_t *lg, const uint8_t *data, uint32_t n)
{
	const uint32_t wb = lg->st->geom.write_block;
	if (n > lg->r_len - lg->r_done) {
		return KL_EINVAL;
	}
	lg->r_crc = kl_crc32(lg->r_crc, data, n);
	while (n > 0u) {
		if (lg->buf_n == 0u && n >= wb) { /* whole write blocks straight from data */
			const uint32_t k = n / wb * wb;
			const int err = put(lg, lg->r_off + lg->hdr_span + lg->r_done, data, k);
			if (err != KL_OK) {
				return err;
			}
			lg->r_done += k;
			data += k;
			n -= k;
			continue;
		}
		uint32_t k = wb - lg->buf_n;
		k = k < n ? k : n;
		memcpy(lg->buf + lg->buf_n, data, k);
		lg->buf_n += k;
		lg->r_done += k;
		data += k;
		n -= k;
		if (lg->buf_n == wb) { /* a whole write block */
			const int err = put(lg, lg->r_off + lg->hdr_span + lg->r_done - wb, lg->buf, wb);
			if (err != KL_OK) {
				return err;
			}
			lg->buf_n = 0;
		}
	}
	return KL_OK;
}

int kl_wlog_end(kl_wlog_t *lg, const uint8_t **payload)
{
	const uint32_t wb = lg->st->geom.write_block;
	if (lg->r_done != lg->r_len) {
		return KL_EINVAL;
	}
	int err = KL_OK;
	if (lg->buf_n != 0u) { /* the tail, padded with the erase value */
		memset(lg->buf + lg->buf_n, lg->st->geom.erase_value, wb - lg->buf_n);
		err = put(lg, lg->r_off + lg->hdr_span + lg->r_done - lg->buf_n, lg->buf, wb);
		lg->buf_n = 0;
	}
	uint8_t h[KL_STORE_MAX_WRITE_BLOCK < 64u ? 64u : KL_STORE_MAX_WRITE_BLOCK];
	memset(h, lg->st->geom.erase_value, lg->hdr_span);
	kl_wr32(h + RH_MAGIC, KL_WLOG_MAGIC);
	kl_wr16(h + RH_OP, lg->r_op);
	kl_wr16(h + RH_ROW, lg->r_row);
	kl_wr32(h + RH_LEN, lg->r_len);
	kl_wr32(h + RH_BLOB, lg->blob_crc);
	wr64(h + RH_TXN, lg->txn);
	wr64(h + RH_GEN, lg->gen);
	kl_wr32(h + RH_DCRC, lg->r_crc);
	kl_wr32(h + RH_HCRC, kl_crc32(0, h, RH_HCRC));
	if (err == KL_OK) {
		err = put(lg, lg->r_off, h, lg->hdr_span); /* the record's commit point */
	}
	/* whatever happened, the space is used: a torn record is skipped */
	lg->pos = lg->r_off + kl_wlog_span(lg, lg->r_len);
	if (err != KL_OK) {
		return err;
	}
	if (payload != NULL) {
		*payload = lg->st->base + lg->r_off + lg->hdr_span;
	}
	if (lg->r_op != KL_WLOG_COMMIT) {
		lg->txn_records++;
	}
	return KL_OK;
}

int kl_wlog_reset(kl_wlog_t *lg)
{
	if (lg == NULL || lg->st == NULL || lg->txn_records != 0u) {
		return KL_EINVAL; /* not inside a transaction */
	}
	int err = kl_wlog_begin(lg, KL_WLOG_RESET, 0, 0);
	if (err == KL_OK) {
		err = kl_wlog_end(lg, NULL);
	}
	lg->txn++;
	return err;
}

int kl_wlog_commit(kl_wlog_t *lg, const uint8_t *payload, uint32_t len)
{
	if (lg == NULL || lg->st == NULL || (payload == NULL && len != 0u)) {
		return KL_EINVAL;
	}
	if (lg->txn_records == 0u && len == 0u) {
		return KL_OK; /* nothing to commit */
	}
	int err = kl_wlog_begin(lg, KL_WLOG_COMMIT, 0, len);
	if (err == KL_OK && len != 0u) {
		err = kl_wlog_append(lg, payload, len);
	}
	if (err == KL_OK) {
		err = kl_wlog_end(lg, NULL);
	}
	lg->txn++; /* a failed commit leaves its transaction uncommitted: never reused */
	lg->txn_records = 0;
	return err;
}
