/*
 * kilolearn weight store: where model blobs live (a flash partition, or RAM
 * behind the same calls), and the power-loss-safe generations of a blob on
 * top of it. docs/flash-store.md is the specification.
 *
 * A store is a driver (kl_store_ops_t) plus the geometry it reports. The
 * contract is that of NOR flash:
 *   - erase works on whole erase blocks (sectors) and sets every byte of the
 *     block to the erase value (0xFF, or 0x00 on some parts);
 *   - program writes whole write blocks (offset and length multiples of
 *     write_block) and can only move bits away from the erase value: a
 *     block must be erased before it is programmed again;
 *   - read may happen at any offset; a memory-mapped store (base != NULL)
 *     can also be read in place (XIP), which is how the engine reads frozen
 *     weights without copying them.
 * Each erase of one block and each program of one write block is one
 * "step": the unit a power cut can interrupt (see the NOR simulation's fault
 * injection below).
 *
 * Drivers here: RAM (kl_store_ram_init), a NOR simulation over a RAM region
 * (kl_store_nor_init: host buffers, the mps2 boards' PSRAM) with wear
 * counters and fault injection, and in port/posix a file-backed NOR
 * simulation (kl_store_file.h) that survives a process restart.
 */
#ifndef KILOLEARN_KL_STORE_H
#define KILOLEARN_KL_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "kilolearn/kilolearn.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KL_EIO    (-5)   /* the flash failed (or lost power) during an operation */
#define KL_ENOSPC (-28)  /* no room for another generation of this size */

/* largest write block a store may report */
#define KL_STORE_MAX_WRITE_BLOCK 256u

typedef struct {
	uint32_t size;        /* bytes, a multiple of erase_block */
	uint32_t erase_block; /* sector size (uniform) */
	uint32_t write_block; /* program granularity, a power of two <= KL_STORE_MAX_WRITE_BLOCK */
	uint8_t erase_value;  /* 0xFF or 0x00 */
} kl_store_geom_t;

struct kl_store;
typedef struct {
	/* off/n already checked against the geometry by the kl_store_* calls */
	int (*read)(struct kl_store *st, uint32_t off, uint8_t *buf, uint32_t n);
	int (*program)(struct kl_store *st, uint32_t off, const uint8_t *data, uint32_t n);
	int (*erase)(struct kl_store *st, uint32_t off, uint32_t n);
} kl_store_ops_t;

typedef struct kl_store {
	const kl_store_ops_t *ops;
	kl_store_geom_t geom;
	const uint8_t *base; /* memory-mapped image (XIP), or NULL */
	uint32_t size;       /* == geom.size */
	void *ctx;           /* driver state */
	/* wear: totals since the store was opened, and per sector (optional
	 * caller arrays of size/erase_block entries; the file store keeps them
	 * across restarts) */
	uint32_t bytes_written, erases;
	uint32_t *sector_erases, *sector_bytes;
	uint32_t base_off;   /* a part of another store (kl_store_sub_init): where it starts */
} kl_store_t;

/* Checked calls (bounds, alignment); they count the wear. */
int kl_store_read(kl_store_t *st, uint32_t off, uint8_t *buf, uint32_t n);
int kl_store_program(kl_store_t *st, uint32_t off, const uint8_t *data, uint32_t n);
int kl_store_erase(kl_store_t *st, uint32_t off, uint32_t n);
static inline uint32_t kl_store_sectors(const kl_store_t *st)
{
	return st->geom.erase_block ? st->geom.size / st->geom.erase_block : 0u;
}
/* Attach per-sector wear counters (kl_store_sectors() entries each, zeroed
 * by the caller or carried over from an earlier run). */
void kl_store_set_wear(kl_store_t *st, uint32_t *sector_erases, uint32_t *sector_bytes);

/* A part of a store: size bytes from off (whole sectors), same geometry;
 * its operations go through the parent's checked calls (which count the
 * wear, and the NOR simulation's power cuts, there too). E.g. one flash
 * partition as the blob's generations and a weight log (kl_wlog.h). */
int kl_store_sub_init(kl_store_t *sub, kl_store_t *parent, uint32_t off, uint32_t size);

/* A store over a caller-provided RAM buffer (4-aligned). No NOR rules:
 * any byte can be rewritten; it reports 4 KB virtual sectors, 1-byte writes
 * and erases to 0xFF so that the generation layer works the same. */
#define KL_STORE_RAM_SECTOR 4096u
void kl_store_ram_init(kl_store_t *st, uint8_t *buf, uint32_t size);

/* ---- NOR flash simulation over a RAM region, with fault injection ---------- */
typedef struct {
	uint8_t *mem;
	uint32_t steps;   /* program/erase steps since init */
	uint32_t cut_at;  /* step that loses power (torn), 0 = never */
	int tear;         /* the cut step lands in part (else not at all) */
	int dead;         /* power is gone: every later operation fails, nothing lands */
	uint32_t rng;     /* which bits a torn step leaves behind */
	uint32_t violations; /* programs over cells that were not erased */
	/* on every step that reached the cells (hook for the file store) */
	void (*on_change)(void *ctx, uint32_t off, uint32_t n);
	void *change_ctx;
} kl_nor_sim_t;

/* mem holds geom->size bytes and keeps its contents: initialising again
 * over the same memory is a "reboot". A region never written should be
 * erased first (kl_store_nor_format). Returns KL_EINVAL on a bad geometry. */
int kl_store_nor_init(kl_store_t *st, kl_nor_sim_t *sim, uint8_t *mem, const kl_store_geom_t *geom);
void kl_store_nor_format(kl_store_t *st); /* every byte := erase value, no wear counted */
/* Lose power at the k-th program/erase step from now (k >= 1): it and every
 * later operation return KL_EIO. seed 0: the step does not happen at all (a
 * cut right after step k-1); otherwise it is torn, a pseudo-random part of
 * its bits (drawn from seed) changing. k = 0 disarms. */
void kl_store_nor_cut(kl_store_t *st, uint32_t k, uint32_t seed);
uint32_t kl_store_nor_steps(const kl_store_t *st);

/* ---- power-loss-safe generations of a blob ----------------------------------
 * The store is a ring of slots, each a run of whole sectors starting with a
 * slot header (magic, 64-bit sequence number, blob length, blob CRC, header CRC);
 * the blob follows at KL_SLOT_HDR (or the write block, if larger). A new
 * generation goes to the next free run after the active slot (rotating over
 * the whole store: wear levelling), sectors erased as the writer reaches
 * them, data first and the header last: programming the header is the
 * commit point. At mount the valid slot (header and blob CRC) with the
 * highest sequence number wins (a new one is numbered above every intact
 * slot, checked or not; 64 bits never wrap), so a power cut anywhere leaves exactly the
 * old or exactly the new generation. The slot a running model reads in
 * place (pinned) is never erased. */
#define KL_SLOT_MAGIC    0x32534C4Bu /* "KLS2": 64-bit sequence numbers (written) */
#define KL_SLOT_MAGIC_V1 0x31534C4Bu /* "KLS1": 32-bit ones (read) */
#define KL_SLOT_HDR   32u

typedef struct {
	uint32_t off, len; /* slot start, blob length */
	uint64_t seq;      /* sequence number: 64 bits, so it never wraps */
} kl_slot_t;

typedef struct {
	kl_store_t *st;
	uint32_t data_off; /* blob offset inside a slot */
	int have_active, have_pin;
	kl_slot_t active, pin;
	uint32_t n_valid;  /* valid slots found at mount */
	uint64_t max_seq;  /* the highest sequence number of any intact slot (0: none) */
	/* writer */
	int writing;
	kl_slot_t w;
	uint32_t w_pos, w_erased; /* bytes of the blob written; slot bytes erased */
	uint32_t w_crc;
	int finished;        /* kl_slots_finish() verified the data; the header is next */
	uint32_t w_blob_crc; /* the verified blob CRC the header will carry */
	uint8_t pend[KL_STORE_MAX_WRITE_BLOCK];
	uint32_t pend_n;
} kl_slots_t;

/* Scan the store for the newest valid generation. KL_OK (with or without
 * one: kl_slots_active() says), or KL_EINVAL on an unusable geometry. */
int kl_slots_mount(kl_slots_t *g, kl_store_t *st);
/* The same, counting a generation valid only if check(blob, len) == KL_OK as
 * well (memory-mapped stores; e.g. kl_blob_check): a CRC-valid generation the
 * caller cannot use is passed over for the newest one it can. */
typedef int (*kl_slot_check_fn)(const uint8_t *blob, size_t len);
int kl_slots_mount_checked(kl_slots_t *g, kl_store_t *st, kl_slot_check_fn check);
/* The newest blob read in place (memory-mapped stores), or NULL. */
const uint8_t *kl_slots_active(const kl_slots_t *g, uint32_t *len);
/* The running model reads the active slot in place: keep it (1) or not (0). */
void kl_slots_pin(kl_slots_t *g, int on);
/* Start a new generation of len bytes (KL_ENOSPC: no free run of sectors
 * that avoids the active and the pinned slot). */
int kl_slots_begin(kl_slots_t *g, uint32_t len);
/* Append blob bytes (any chunking); erases sectors as it goes. */
int kl_slots_write(kl_slots_t *g, const uint8_t *data, uint32_t n);
/* Finish: verify what landed in the store against crc (CRC-32 of the whole
 * blob; KL_ECRC on mismatch) and program the header. On KL_OK the new
 * generation is active. */
int kl_slots_end(kl_slots_t *g, uint32_t crc);
/* kl_slots_end() in two steps, so that a caller can look at the new blob in
 * place before it becomes the active generation: finish (tail, verify, as
 * kl_slots_end) and then commit (program the header: the switch). Between
 * the two, kl_slots_pending() is the new blob (memory-mapped stores) and
 * kl_slots_abort() drops it; the active generation is untouched until the
 * commit. */
int kl_slots_finish(kl_slots_t *g, uint32_t crc);
const uint8_t *kl_slots_pending(const kl_slots_t *g, uint32_t *len);
int kl_slots_commit(kl_slots_t *g);
/* CRC-32 of the bytes given to kl_slots_write() so far */
static inline uint32_t kl_slots_written_crc(const kl_slots_t *g)
{
	return g->w_crc;
}
void kl_slots_abort(kl_slots_t *g);

#ifdef __cplusplus
}
#endif
#endif /* KILOLEARN_KL_STORE_H */
