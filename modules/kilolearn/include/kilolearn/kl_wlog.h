/*
 * kilolearn weight log: trainable weights that stay in flash (docs/paged-weights.md).
 *
 * A paged model (blob ops with KL_OP_PAGED) reads its weights in place from
 * the active generation of the weight store (kl_slots). What training
 * changes is appended, row by row, to a log in a region of its own: a record
 * per updated output row (its weights and bias), programmed data first and
 * header last, so that a record is either complete and CRC-valid or ignored.
 * The rows one training step writes form a transaction closed by a commit
 * record (carrying the step's other state: an int8 model's activation
 * exponents); a mount applies only committed transactions, so a power cut
 * anywhere leaves the weights of the last committed step or of the one
 * before, never a mix. When the log is full, the model folds it: the base
 * weights with the logged rows over them are written as a new generation of
 * the blob through kl_slots (its header is the commit point), and the log
 * starts again (records carry the generation they apply to, so the old ones
 * die with it). Sectors are erased as the writer reaches them.
 *
 * Record (little-endian, at a write-block-aligned offset):
 *   0 u32 magic "KWL1"      4 u16 op (0xFFFF: commit)   6 u16 row
 *   8 u32 payload bytes    12 u32 base blob CRC        16 u64 transaction
 *  24 u64 base generation  32 u32 payload CRC          36 u32 CRC of bytes 0..35
 * the payload follows at the header rounded up to the write block.
 */
#ifndef KILOLEARN_KL_WLOG_H
#define KILOLEARN_KL_WLOG_H

#include <stddef.h>
#include <stdint.h>

#include "kilolearn/kl_store.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KL_WLOG_MAGIC  0x314C574Bu /* "KWL1" */
#define KL_WLOG_HDR    40u
#define KL_WLOG_COMMIT 0xFFFFu /* op of a commit record */
#define KL_WLOG_RESET  0xFFFEu /* op of a reset record: what came before it is void */

typedef struct kl_wlog {
	kl_store_t *st;      /* the log region (memory-mapped: records are read in place) */
	kl_slots_t *slots;   /* the generations of the blob (for folds), or NULL */
	uint64_t gen;        /* generation (slot sequence number) the records apply to */
	uint32_t blob_crc;   /* and its blob's CRC */
	uint32_t hdr_span;   /* header bytes, rounded up to the write block */
	uint32_t pos;        /* where the next record starts */
	uint32_t erased_to;  /* [pos, erased_to) is erased (a sector boundary) */
	uint64_t txn;        /* the transaction being written (or the next one) */
	uint32_t txn_records; /* records written in it */
	/* the record being written */
	uint32_t r_off, r_len, r_done, r_crc;
	uint16_t r_op, r_row;
	uint8_t buf[KL_STORE_MAX_WRITE_BLOCK];
	uint32_t buf_n;
	/* counts */
	uint32_t mounted;    /* records applied by the last mount */
	uint32_t dropped;    /* valid records of uncommitted transactions, or unusable */
	uint32_t folds;      /* folds since open */
} kl_wlog_t;

/* Called by a mount for each record of a committed transaction, in log
 * order, its commit record (op KL_WLOG_COMMIT) last. Returning nonzero drops
 * the record (counted in dropped). */
typedef int (*kl_wlog_apply_fn)(void *ctx, uint16_t op, uint16_t row, const uint8_t *payload,
				uint32_t len);

/* A log over st (memory-mapped, a sector multiple) for the blob of the
 * active generation gen (CRC blob_crc); slots for folds (may be NULL).
 * KL_EINVAL on an unusable store. Nothing is read or written yet. */
int kl_wlog_open(kl_wlog_t *lg, kl_store_t *st, kl_slots_t *slots, uint64_t gen,
		 uint32_t blob_crc);
/* kl_wlog_open for the active generation of slots (memory-mapped). */
int kl_wlog_open_active(kl_wlog_t *lg, kl_store_t *st, kl_slots_t *slots);
/* Walk the log: apply every record of every committed transaction of this
 * generation, in order; the writer continues after the last valid record
 * (at the next sector when junk follows it). */
int kl_wlog_mount(kl_wlog_t *lg, kl_wlog_apply_fn apply, void *ctx);
/* Bytes a record of len payload bytes takes in the log. */
uint32_t kl_wlog_span(const kl_wlog_t *lg, uint32_t len);
/* Is there room for bytes more (records, the commit record included)? */
int kl_wlog_room(const kl_wlog_t *lg, uint64_t bytes);
/* Write a record: begin, append its payload (any chunking), end. end
 * programs the header (the record's commit point) and returns the payload
 * as it lies in the store. */
int kl_wlog_begin(kl_wlog_t *lg, uint16_t op, uint16_t row, uint32_t len);
int kl_wlog_append(kl_wlog_t *lg, const uint8_t *data, uint32_t n);
int kl_wlog_end(kl_wlog_t *lg, const uint8_t **payload);
/* Close the transaction: a commit record with len bytes of payload (the
 * state besides the rows; a commit without rows carries that state alone).
 * Nothing when the transaction wrote no record and len is 0. */
int kl_wlog_commit(kl_wlog_t *lg, const uint8_t *payload, uint32_t len);
/* A reset record, a transaction of its own: a mount drops every row and
 * state before it (the model goes back to the blob's weights). */
int kl_wlog_reset(kl_wlog_t *lg);
/* The log starts again for a new generation (after a fold). */
void kl_wlog_restart(kl_wlog_t *lg, uint64_t gen, uint32_t blob_crc);

#ifdef __cplusplus
}
#endif
#endif /* KILOLEARN_KL_WLOG_H */
