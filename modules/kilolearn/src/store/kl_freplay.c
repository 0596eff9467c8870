/* Latent replay in flash: kl_replay's reservoir with its latents in a
 * circular log of records in a store region (kl_freplay.h has the format and
 * what survives a power cut; docs/replay.md the argument). */
#include <string.h>

#include "kilolearn/kl_freplay.h"
#include "../kl_blob_read.h"

#define RH_MAGIC 0u
#define RH_EPOCH 4u
#define RH_SEQ   8u
#define RH_SLOT  16u
#define RH_LABEL 18u
#define RH_RNG   20u
#define RH_ELEM  24u
#define RH_NCLS  28u
#define RH_COUNT 30u
#define RH_CAP   32u
#define RH_PCRC  36u
#define RH_HCRC  40u

#define NONE 0xFFFFu

static uint32_t round_up(uint32_t v, uint32_t a)
{
	return (v + a - 1u) / a * a;
}

static uint32_t unit_of(const kl_store_geom_t *g)
{
	return g->write_block < 8u ? 8u : g->write_block;
}

static uint64_t rd64(const uint8_t *p)
{
	return (uint64_t)kl_rd32(p) | ((uint64_t)kl_rd32(p + 4) << 32);
}

uint32_t kl_freplay_span(const kl_store_geom_t *g, uint32_t elem, uint16_t n_classes)
{
	const uint32_t u = unit_of(g);
	const uint64_t pay = 4ull * n_classes + elem;
	const uint64_t span = round_up(KL_FREPLAY_HDR, u) + (pay + u - 1u) / u * u;
	return span > 0xFFFFFFFFull - u ? 0u : (uint32_t)span;
}

static uint32_t payload_len(const kl_freplay_t *f)
{
	return 4u * f->r.n_classes + f->r.elem;
}

/* where record rec starts in the region */
static uint32_t rec_off(const kl_freplay_t *f, uint32_t rec)
{
	return rec / f->per_sec * f->st->geom.erase_block + rec % f->per_sec * f->span;
}

static void *alloc(kl_arena_t *a, uint64_t size)
{
	if (size > (uint64_t)a->size) {
		return NULL;
	}
	return kl_arena_alloc(a, (size_t)(size != 0u ? size : 1u), 4u);
}

int kl_freplay_reserve(kl_freplay_t *f, kl_arena_t *a, kl_store_t *st, uint32_t cap,
		       uint32_t elem, uint16_t n_classes, uint32_t lines)
{
	if (f == NULL || a == NULL || st == NULL || elem == 0u || elem > 0xFFFF0000u ||
	    n_classes == 0u || lines == 0u || lines > 0xFFFFu || cap >= NONE) {
		return KL_EINVAL;
	}
	memset(f, 0, sizeof(*f));
	const kl_store_geom_t *g = &st->geom;
	const uint32_t span = kl_freplay_span(g, elem, n_classes);
	if (span == 0u || g->erase_block == 0u || span > g->erase_block) {
		return KL_ENOSPC; /* a record must fit a sector */
	}
	f->st = st;
	f->span = span;
	f->hdr_span = round_up(KL_FREPLAY_HDR, unit_of(g));
	f->per_sec = g->erase_block / span;
	f->n_sec = g->size / g->erase_block;
	if ((uint64_t)f->per_sec * f->n_sec >= NONE) {
		return KL_EINVAL; /* record numbers are 16-bit */
	}
	/* the live latents (and the record being written) fit outside the
	 * head and the spare sectors: a reclaim always finds a sector with dead
	 * records, whatever the order of the writes */
	if (f->n_sec < KL_FREPLAY_SPARE + 3u ||
	    (uint64_t)(f->n_sec - KL_FREPLAY_SPARE - 2u) * f->per_sec < (uint64_t)cap + 1u) {
		return KL_ENOSPC;
	}
	int err = kl_replay_reserve_meta(&f->r, a, cap, elem, n_classes);
	if (err != KL_OK) {
		return err;
	}
	f->lines = lines;
	f->index = alloc(a, 2ull * cap);
	f->live = alloc(a, 2ull * f->n_sec);
	f->tag = alloc(a, 2ull * lines);
	f->cache = alloc(a, (uint64_t)lines * f->r.stride);
	return f->index == NULL || f->live == NULL || f->tag == NULL || f->cache == NULL
		       ? KL_ENOMEM
		       : KL_OK;
}

/* ---- reading records -------------------------------------------------------------- */

static int read_hdr(kl_freplay_t *f, uint32_t rec, uint8_t *h)
{
	return kl_store_read(f->st, rec_off(f, rec), h, KL_FREPLAY_HDR);
}

static int hdr_intact(const uint8_t *h)
{
	return kl_rd32(h + RH_MAGIC) == KL_FREPLAY_MAGIC &&
	       kl_rd32(h + RH_HCRC) == kl_crc32(0, h, RH_HCRC);
}

/* a record of a buffer of these parameters (header only) */
static int hdr_ours(const kl_freplay_t *f, const uint8_t *h)
{
	const uint32_t slot = kl_rd16(h + RH_SLOT);
	return hdr_intact(h) && kl_rd32(h + RH_ELEM) == f->r.elem &&
	       kl_rd16(h + RH_NCLS) == f->r.n_classes && kl_rd32(h + RH_CAP) == f->r.cap &&
	       kl_rd16(h + RH_COUNT) <= f->r.cap && kl_rd16(h + RH_LABEL) < f->r.n_classes &&
	       (slot == KL_FREPLAY_STATE || slot < kl_rd16(h + RH_COUNT));
}

/* CRC of n payload bytes of record rec from byte at */
static int payload_crc(kl_freplay_t *f, uint32_t rec, uint32_t at, uint32_t n, uint32_t *crc)
{
	uint8_t buf[64];
	*crc = 0;
	for (uint32_t k = 0; k < n;) {
		const uint32_t m = n - k < sizeof(buf) ? n - k : (uint32_t)sizeof(buf);
		const int err = kl_store_read(f->st, rec_off(f, rec) + f->hdr_span + at + k, buf, m);
		if (err != KL_OK) {
			return err;
		}
		*crc = kl_crc32(*crc, buf, m);
		k += m;
	}
	return KL_OK;
}

/* a whole record of ours: header and payload CRCs */
static int rec_valid(kl_freplay_t *f, uint32_t rec, uint8_t *h)
{
	uint32_t crc;
	return read_hdr(f, rec, h) == KL_OK && hdr_ours(f, h) &&
	       payload_crc(f, rec, 0, payload_len(f), &crc) == KL_OK && crc == kl_rd32(h + RH_PCRC);
}

static int rec_erased(kl_freplay_t *f, uint32_t rec)
{
	uint8_t buf[64];
	const uint32_t off = rec_off(f, rec);
	for (uint32_t k = 0; k < f->span;) {
		const uint32_t m = f->span - k < sizeof(buf) ? f->span - k : (uint32_t)sizeof(buf);
		if (kl_store_read(f->st, off + k, buf, m) != KL_OK) {
			return 0;
		}
		for (uint32_t i = 0; i < m; i++) {
			if (buf[i] != f->st->geom.erase_value) {
				return 0;
			}
		}
		k += m;
	}
	return 1;
}

/* ---- writing records ---------------------------------------------------------------- */

static uint32_t free_after_head(const kl_freplay_t *f)
{
	return f->tail == f->head ? f->n_sec - 1u : (f->tail + f->n_sec - f->head - 1u) % f->n_sec;
}

/* the tail: the oldest sector with live records after the head (the head
 * itself when there is none) */
static void fix_tail(kl_freplay_t *f)
{
	while (f->tail != f->head && f->live[f->tail] == 0u) {
		f->tail = (f->tail + 1u) % f->n_sec;
	}
}

/* payload bytes, buffered into whole write blocks */
typedef struct {
	kl_freplay_t *f;
	uint32_t off, n, crc;
	uint8_t blk[KL_STORE_MAX_WRITE_BLOCK];
} writer_t;

static int w_put(writer_t *w, const uint8_t *p, uint32_t n, int crc)
{
	const uint32_t wb = w->f->st->geom.write_block;
	if (crc) {
		w->crc = kl_crc32(w->crc, p, n);
	}
	while (n > 0u) {
		const uint32_t k = wb - w->n < n ? wb - w->n : n;
		memcpy(w->blk + w->n, p, k);
		w->n += k;
		p += k;
		n -= k;
		if (w->n == wb) {
			const int err = kl_store_program(w->f->st, w->off, w->blk, wb);
			if (err != KL_OK) {
				return err;
			}
			w->off += wb;
			w->n = 0;
		}
	}
	return KL_OK;
}

/* Write a record for slot (KL_FREPLAY_STATE: state only) with the
 * reservoir's state as it is now: its latent from latent, or (latent NULL)
 * copied from record src. Advances the head into the next sector (erasing
 * it) when the head is full. */
static int put_record(kl_freplay_t *f, uint32_t slot, uint32_t label, const uint8_t *latent,
		      uint32_t src)
{
	const kl_store_geom_t *g = &f->st->geom;
	if (f->fill == f->per_sec) {
		if (free_after_head(f) == 0u) {
			return KL_ENOSPC;
		}
		const uint32_t next = (f->head + 1u) % f->n_sec;
		const int err = kl_store_erase(f->st, next * g->erase_block, g->erase_block);
		if (err != KL_OK) {
			return err;
		}
		f->head = next;
		f->fill = 0;
		fix_tail(f);
	}
	if (f->seq == UINT64_MAX) {
		return KL_ENOSPC; /* only after a crafted region: numbers that cannot grow */
	}
	const uint32_t rec = f->head * f->per_sec + f->fill;
	f->fill++; /* used, whatever happens: a torn record is skipped */
	writer_t w = {.f = f, .off = rec_off(f, rec) + f->hdr_span, .n = 0, .crc = 0};
	int err = KL_OK;
	uint8_t b4[4];
	for (uint32_t c = 0; err == KL_OK && c < f->r.n_classes; c++) {
		kl_wr32(b4, f->r.seen[c]);
		err = w_put(&w, b4, 4u, 1);
	}
	if (latent != NULL) {
		if (err == KL_OK) {
			err = w_put(&w, latent, f->r.elem, 1);
		}
	} else {
		uint8_t buf[64];
		for (uint32_t k = 0; err == KL_OK && k < f->r.elem;) {
			const uint32_t m = f->r.elem - k < sizeof(buf) ? f->r.elem - k
								   : (uint32_t)sizeof(buf);
			err = kl_store_read(f->st, rec_off(f, src) + f->hdr_span +
							   4u * f->r.n_classes + k, buf, m);
			if (err == KL_OK) {
				err = w_put(&w, buf, m, 1);
			}
			k += m;
		}
	}
	/* pad to the record's end (the write block, 8 bytes at least) */
	const uint8_t ev = g->erase_value;
	while (err == KL_OK && (w.n != 0u || (w.off - rec_off(f, rec)) % unit_of(g) != 0u)) {
		err = w_put(&w, &ev, 1u, 0);
	}
	uint8_t h[KL_STORE_MAX_WRITE_BLOCK < 64u ? 64u : KL_STORE_MAX_WRITE_BLOCK];
	memset(h, ev, f->hdr_span);
	kl_wr32(h + RH_MAGIC, KL_FREPLAY_MAGIC);
	kl_wr32(h + RH_EPOCH, f->epoch);
	kl_wr32(h + RH_SEQ, (uint32_t)f->seq);
	kl_wr32(h + RH_SEQ + 4u, (uint32_t)(f->seq >> 32));
	kl_wr16(h + RH_SLOT, slot);
	kl_wr16(h + RH_LABEL, label);
	kl_wr32(h + RH_RNG, f->r.rng);
	kl_wr32(h + RH_ELEM, f->r.elem);
	kl_wr16(h + RH_NCLS, f->r.n_classes);
	kl_wr16(h + RH_COUNT, f->r.count);
	kl_wr32(h + RH_CAP, f->r.cap);
	kl_wr32(h + RH_PCRC, w.crc);
	kl_wr32(h + RH_HCRC, kl_crc32(0, h, RH_HCRC));
	f->seq++;
	f->records++;
	if (err == KL_OK) {
		err = kl_store_program(f->st, rec_off(f, rec), h, f->hdr_span); /* the commit point */
	}
	if (err != KL_OK) {
		return err;
	}
	if (slot != KL_FREPLAY_STATE) {
		if (f->index[slot] != NONE) {
			f->live[f->index[slot] / f->per_sec]--;
		}
		f->index[slot] = (uint16_t)rec;
		f->live[f->head]++;
		fix_tail(f);
	}
	return KL_OK;
}

/* the live records of the tail sector written again at the head */
static int reclaim(kl_freplay_t *f)
{
	const uint32_t t = f->tail;
	for (uint32_t i = 0; i < f->per_sec && f->live[t] != 0u; i++) {
		const uint32_t rec = t * f->per_sec + i;
		uint8_t h[KL_FREPLAY_HDR];
		int err = read_hdr(f, rec, h);
		if (err != KL_OK) {
			return err;
		}
		const uint32_t slot = kl_rd16(h + RH_SLOT);
		if (slot >= f->r.count || f->index[slot] != rec) {
			continue; /* dead: a newer record of its slot, or state only */
		}
		err = put_record(f, slot, f->r.labels[slot], NULL, rec);
		if (err != KL_OK) {
			return err;
		}
		f->copies++;
	}
	fix_tail(f);
	return f->tail == t ? KL_ENOSPC : KL_OK;
}

/* room for one more record with the spare sectors kept free */
static int make_room(kl_freplay_t *f)
{
	for (uint32_t guard = 0; guard <= 2u * f->n_sec + 2u; guard++) {
		fix_tail(f);
		const uint32_t need = f->fill == f->per_sec ? 1u : 0u;
		if (free_after_head(f) >= KL_FREPLAY_SPARE + need) {
			return KL_OK;
		}
		const int err = reclaim(f);
		if (err != KL_OK) {
			return err;
		}
	}
	return KL_ENOSPC;
}

/* ---- mount ---------------------------------------------------------------------------- */

/* restore the buffer of epoch from the records of ours; newest is its newest
 * record. 0 when what the flash holds is not a consistent buffer. */
static int restore(kl_freplay_t *f, uint32_t epoch, uint32_t newest)
{
	const uint32_t n_rec = f->per_sec * f->n_sec;
	uint8_t h[KL_FREPLAY_HDR], h2[KL_FREPLAY_HDR];
	for (uint32_t rec = 0; rec < n_rec; rec++) { /* the newest record of each slot */
		if (!rec_valid(f, rec, h) || kl_rd32(h + RH_EPOCH) != epoch) {
			continue;
		}
		const uint32_t slot = kl_rd16(h + RH_SLOT);
		if (slot == KL_FREPLAY_STATE) {
			continue;
		}
		if (f->index[slot] == NONE ||
		    (read_hdr(f, f->index[slot], h2) == KL_OK && rd64(h + RH_SEQ) > rd64(h2 + RH_SEQ))) {
			f->index[slot] = (uint16_t)rec;
			f->r.labels[slot] = kl_rd16(h + RH_LABEL);
		}
	}
	if (read_hdr(f, newest, h) != KL_OK) {
		return 0;
	}
	f->r.count = kl_rd16(h + RH_COUNT);
	f->r.rng = kl_rd32(h + RH_RNG);
	uint8_t b4[4];
	for (uint32_t c = 0; c < f->r.n_classes; c++) {
		if (kl_store_read(f->st, rec_off(f, newest) + f->hdr_span + 4u * c, b4, 4u) != KL_OK) {
			return 0;
		}
		f->r.seen[c] = kl_rd32(b4);
	}
	for (uint32_t s = 0; s < f->r.cap; s++) {
		if ((s < f->r.count) != (f->index[s] != NONE)) {
			return 0; /* a slot without its latent, or one past the count */
		}
		if (s < f->r.count) {
			f->r.stored[f->r.labels[s]]++;
			f->live[f->index[s] / f->per_sec]++;
		}
	}
	for (uint32_t c = 0; c < f->r.n_classes; c++) {
		if (f->r.seen[c] < f->r.stored[c]) {
			return 0;
		}
	}
	f->mounted = f->r.count;
	return 1;
}

static void reset_state(kl_freplay_t *f)
{
	f->r.count = 0;
	memset(f->r.stored, 0, 2u * f->r.n_classes);
	memset(f->r.seen, 0, 4u * f->r.n_classes);
	memset(f->index, 0xFF, 2u * f->r.cap);
	memset(f->live, 0, 2u * f->n_sec);
	f->mounted = 0;
}

int kl_freplay_init(kl_freplay_t *f, kl_arena_t *a, kl_store_t *st, uint32_t cap, uint32_t elem,
		    uint16_t n_classes, uint32_t lines, uint32_t seed, int resume)
{
	int err = kl_freplay_reserve(f, a, st, cap, elem, n_classes, lines);
	if (err != KL_OK) {
		return err;
	}
	memset(f->tag, 0xFF, 2u * lines);
	reset_state(f);
	/* scan: the highest epoch and sequence number of any intact header, the
	 * newest whole record of ours */
	const uint32_t n_rec = f->per_sec * f->n_sec;
	uint32_t max_epoch = 0, newest = NONE;
	uint64_t max_seq = 0, newest_seq = 0;
	int any = 0;
	uint8_t h[KL_FREPLAY_HDR];
	for (uint32_t rec = 0; rec < n_rec; rec++) {
		if (read_hdr(f, rec, h) != KL_OK || !hdr_intact(h)) {
			continue;
		}
		const uint64_t seq = rd64(h + RH_SEQ);
		max_epoch = !any || kl_rd32(h + RH_EPOCH) > max_epoch ? kl_rd32(h + RH_EPOCH) : max_epoch;
		max_seq = !any || seq > max_seq ? seq : max_seq;
		any = 1;
		if ((newest == NONE || seq > newest_seq) && rec_valid(f, rec, h)) {
			newest = rec;
			newest_seq = seq;
		}
	}
	if (any && (max_seq == UINT64_MAX || max_epoch == UINT32_MAX)) {
		return KL_ENOSPC; /* only a crafted region: numbers that cannot grow */
	}
	f->seq = any ? max_seq + 1u : 1u;
	/* the head: after the newest record of ours, past anything not erased
	 * in its sector (a torn record); a full head moves on at the next write */
	if (newest != NONE) {
		f->head = newest / f->per_sec;
		f->fill = f->per_sec;
		const uint32_t first = f->head * f->per_sec;
		for (uint32_t i = f->per_sec;
		     i > newest % f->per_sec + 1u && rec_erased(f, first + i - 1u); i--) {
			f->fill = i - 1u;
		}
	} else {
		f->head = f->n_sec - 1u;
		f->fill = f->per_sec;
	}
	f->tail = (f->head + 1u) % f->n_sec;
	if (resume && newest != NONE && read_hdr(f, newest, h) == KL_OK) {
		f->epoch = kl_rd32(h + RH_EPOCH);
		if (restore(f, f->epoch, newest)) {
			fix_tail(f);
			/* the tail's live records must fit before the head needs a free
			 * sector: always so after power cuts (a reclaim leaves a free
			 * sector or room in the head), not after corrupted records let
			 * older copies come back in a sector that had been reclaimed */
			if (free_after_head(f) != 0u || f->per_sec - f->fill >= f->live[f->tail]) {
				return KL_OK;
			}
		}
	}
	/* a new buffer: a new epoch, announced by a state record */
	reset_state(f);
	f->r.rng = seed != 0u ? seed : 0x2545F491u;
	f->epoch = any ? max_epoch + 1u : 1u;
	fix_tail(f);
	err = make_room(f);
	return err == KL_OK ? put_record(f, KL_FREPLAY_STATE, 0u, NULL, 0u) : err;
}

/* ---- the reservoir ---------------------------------------------------------------------- */

int kl_freplay_add(kl_freplay_t *f, const void *latent, int label)
{
	if (label < 0 || label >= f->r.n_classes || f->r.cap == 0u) {
		return -1;
	}
	/* room first: a reclaim's copies carry the state before this offer */
	int err = make_room(f);
	if (err != KL_OK) {
		return err;
	}
	const int slot = kl_replay_choose(&f->r, label);
	if (slot < 0) {
		return -1;
	}
	err = put_record(f, (uint32_t)slot, (uint32_t)label, latent, 0u);
	if (err != KL_OK) {
		return err;
	}
	for (uint32_t i = 0; i < f->lines; i++) { /* a cached copy follows */
		if (f->tag[i] == slot) {
			memcpy(f->cache + (size_t)i * f->r.stride, latent, f->r.elem);
		}
	}
	return slot;
}

int kl_freplay_pick(kl_freplay_t *f)
{
	return kl_replay_pick(&f->r);
}

const void *kl_freplay_latent(kl_freplay_t *f, int slot)
{
	if (slot < 0 || (uint32_t)slot >= f->r.count) {
		return NULL;
	}
	for (uint32_t i = 0; i < f->lines; i++) {
		if (f->tag[i] == slot) {
			f->hits++;
			return f->cache + (size_t)i * f->r.stride;
		}
	}
	const uint32_t line = f->next_line;
	f->next_line = (line + 1u) % f->lines;
	uint8_t *p = f->cache + (size_t)line * f->r.stride;
	f->tag[line] = NONE;
	if (kl_store_read(f->st, rec_off(f, f->index[slot]) + f->hdr_span + 4u * f->r.n_classes, p,
			  f->r.elem) != KL_OK) {
		return NULL;
	}
	f->tag[line] = (uint16_t)slot;
	f->misses++;
	return p;
}
