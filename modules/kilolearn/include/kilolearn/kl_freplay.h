/*
 * kilolearn latent replay in flash (docs/replay.md).
 *
 * The reservoir of kl_replay (the same slots, the same choices, the same
 * generator: the numpy twin ReplayBuffer stays the reference) with its
 * latents kept in a store region (kl_store.h: flash, or any memory a port
 * offers) instead of the arena. SRAM holds per slot its label (2 bytes) and
 * the number of the record that holds its latent (2 bytes), per class the
 * reservoir's counts, per sector a count of live records, and a cache of
 * recently read latents (a read buffer when the store is not memory-mapped).
 *
 * The region is a circular log of fixed-size records, a whole number per
 * sector, each programmed data first and header last:
 *   0 u32 magic "KLR1"      4 u32 epoch            8 u64 sequence number
 *  16 u16 slot (0xFFFF: state only)   18 u16 label 20 u32 generator state
 *  24 u32 latent bytes     28 u16 classes         30 u16 latents held
 *  32 u32 capacity         36 u32 payload CRC     40 u32 CRC of bytes 0..39
 * and at the header rounded up to the write block (8 at least) the payload:
 * the per-class counts of latents offered (u32 each), then the latent.
 * Every record carries the reservoir's state after it was written, so the
 * newest one is the state a mount restores. A new latent replaces its slot's
 * older record (the newest record of a slot wins); when the log comes round,
 * the oldest sector's live records are written again at the head before the
 * sector is erased (two sectors are kept spare, so that a reclaim a power cut
 * interrupted finishes at the next write). A clear (a new buffer) starts a
 * new epoch with a state record: the older epochs' records are dead.
 *
 * Persisted: every latent whose record was written, with its label and slot,
 * and the reservoir's state (latents held, per-class counts, generator) as of
 * the newest record. Not persisted: what changed the state after the newest
 * record without writing one (offers not kept, picks): a mount resumes the
 * reservoir from the newest record's state, exactly (kl_freplay_faults).
 */
#ifndef KILOLEARN_KL_FREPLAY_H
#define KILOLEARN_KL_FREPLAY_H

#include <stddef.h>
#include <stdint.h>

#include "kilolearn/kilolearn.h"
#include "kilolearn/kl_store.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KL_FREPLAY_MAGIC 0x31524C4Bu /* "KLR1" */
#define KL_FREPLAY_HDR   44u
#define KL_FREPLAY_STATE 0xFFFFu /* slot of a state-only record */
#define KL_FREPLAY_SPARE 2u      /* sectors kept free besides the head */

typedef struct {
	kl_store_t *st;
	kl_replay_t r;        /* the reservoir (data NULL: the latents are in the store) */
	uint16_t *index;      /* per slot: its latent's record number */
	uint16_t *live;       /* per sector: live records */
	uint8_t *cache;       /* lines latents, r.stride bytes apart */
	uint16_t *tag;        /* per line: the slot it holds (0xFFFF: none) */
	uint32_t lines, next_line;
	uint32_t hdr_span, span, per_sec, n_sec;
	uint32_t head, fill, tail; /* sector written, records in it, oldest sector with live records */
	uint32_t epoch;
	uint64_t seq;         /* the next record's sequence number */
	/* counts */
	uint32_t records;     /* records written since init (copies included) */
	uint32_t copies;      /* live records written again by reclaims */
	uint32_t hits, misses; /* latent reads served by the cache, from the store */
	uint32_t mounted;     /* latents a resuming init found */
} kl_freplay_t;

/* Bytes of the store a record of a buffer with these parameters takes. */
uint32_t kl_freplay_span(const kl_store_geom_t *g, uint32_t elem, uint16_t n_classes);
/* The arena parts alone (nothing written anywhere) and the geometry checks:
 * KL_ENOMEM when the arena is too small, KL_ENOSPC when the region cannot
 * hold cap latents besides its spare sectors, KL_EINVAL on bad parameters
 * (cap and the region's records are counted in 16 bits). */
int kl_freplay_reserve(kl_freplay_t *f, kl_arena_t *a, kl_store_t *st, uint32_t cap,
		       uint32_t elem, uint16_t n_classes, uint32_t lines);
/* Reserve, then mount the region: with resume, the buffer of the newest
 * epoch comes back when its parameters (latent bytes, classes, capacity)
 * are these and it is consistent; otherwise (or without resume) a new
 * empty buffer (generator from seed, as kl_replay_init) is started with a
 * state record. KL_OK, or an error of the store (KL_EIO). */
int kl_freplay_init(kl_freplay_t *f, kl_arena_t *a, kl_store_t *st, uint32_t cap, uint32_t elem,
		    uint16_t n_classes, uint32_t lines, uint32_t seed, int resume);
/* Offer a latent (kl_replay_add): the slot written, -1 when not kept, or a
 * negative store error (KL_EIO, KL_ENOSPC) below -1. */
int kl_freplay_add(kl_freplay_t *f, const void *latent, int label);
/* A uniformly drawn slot, or -1 when empty (kl_replay_pick). */
int kl_freplay_pick(kl_freplay_t *f);
/* The latent of a slot (in the cache; valid until the next call), or NULL
 * when the store cannot be read. */
const void *kl_freplay_latent(kl_freplay_t *f, int slot);
static inline int kl_freplay_label(const kl_freplay_t *f, int slot)
{
	return f->r.labels[slot];
}

#ifdef __cplusplus
}
#endif
#endif /* KILOLEARN_KL_FREPLAY_H */
