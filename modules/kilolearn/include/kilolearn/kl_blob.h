/*
 * The kilolearn model blob (.klm), format version 1. All fields little-endian.
 * Written only by the host exporter (scripts/kilolearn/formats/export.py); parsed
 * defensively by kl_blob_parse(): every size and offset is checked.
 * The authoritative description is docs/blob-format.md (format 2: a
 * graph of tensors and ops).
 */
#ifndef KILOLEARN_KL_BLOB_H
#define KILOLEARN_KL_BLOB_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KL_BLOB_MAGIC         0x424D4C4Bu /* "KLMB" */
#define KL_BLOB_VERSION_MAJOR 2u
#define KL_BLOB_VERSION_MINOR 7u /* 2.1: optional schedule section, 2.2: update policy,
                                  * 2.3: compact backward steps, 2.4: paged ops,
                                  * 2.5: the loss (header byte 17),
                                  * 2.6: sigmoid, tanh and leaky ReLU activations,
                                  * 2.7: a schedule region split in two parts */
#define KL_BLOB_HEADER_SIZE   48u
#define KL_BLOB_TENSOR_SIZE   12u
#define KL_BLOB_OP_SIZE       48u
#define KL_BLOB_CRC_START     16u /* the CRC covers [16, total_size) */
#define KL_BLOB_LUT_ENTRIES   256u
#define KL_BLOB_NO_TENSOR     0xFFFFu

/* header field offsets */
#define KL_BH_MAGIC      0u
#define KL_BH_VER_MAJOR  4u
#define KL_BH_VER_MINOR  6u
#define KL_BH_TOTAL_SIZE 8u
#define KL_BH_CRC        12u
#define KL_BH_DTYPE      16u
#define KL_BH_LOSS       17u /* 2.5: u8 loss (enum kl_loss); 0 before */
#define KL_BH_N_TENSORS  18u
#define KL_BH_N_OPS      20u
#define KL_BH_INPUT      22u
#define KL_BH_OUTPUT     24u
#define KL_BH_LUT_EXP    26u
#define KL_BH_TENSORS    28u
#define KL_BH_OPS        32u
#define KL_BH_LUT        36u
#define KL_BH_SCHED      40u /* 2.1: offset of the schedule section, 0 = none */
#define KL_BH_UPD_POLICY 44u /* 2.2: u8 update policy (enum kl_update_policy) */
#define KL_BH_UPD_RSVD   45u /* 2.2: u8, 0 */
#define KL_BH_UPD_FRAC   46u /* 2.2: u16 fraction updated, per mille */

/* schedule section (2.1, docs/blob-format.md): a header, then 8-byte steps */
#define KL_SCHED_HEADER_SIZE 16u
#define KL_SCHED_N_STEPS     0u  /* u32 */
#define KL_SCHED_REGION      4u  /* u32: bytes of the arena region */
#define KL_SCHED_LIVE_PEAK   8u  /* u32: informative */
#define KL_SCHED_EXTRA_MACS  12u /* u32: informative */
/* minor >= 7: the header is 24 bytes; the region may be split in two parts,
 * offsets below the boundary in the first (the arena's second memory region
 * where it has one, kl_arena_set_far), the rest in the second (the arena,
 * after the static part); no buffer lies across the boundary */
#define KL_SCHED_HEADER_SIZE_SPLIT 24u
#define KL_SCHED_SPLIT       16u /* u32: the boundary, 8-aligned, 0 < it < region; 0 = one part */
#define KL_SCHED_SPLIT_REST  20u /* u32: the second part's bytes, region - boundary (0: none) */
#define KL_STEP_SIZE         8u
#define KL_SS_KIND           0u /* u8 */
#define KL_SS_FLAGS          1u /* u8 */
#define KL_SS_INDEX          2u /* u16: op (fwd, bwd) or tensor */
#define KL_SS_OFFSET         4u /* u32: offset in the region (fwd, loss, grad; bwd: scratch) */
#define KL_SCHED_MAX_STEPS   65535u
enum kl_step_kind {
	KL_STEP_FWD = 1,       /* run op index, its output at offset */
	KL_STEP_LOSS = 2,      /* loss gradient of the logits (index) at offset */
	KL_STEP_GRAD = 3,      /* gradient buffer of tensor index at offset */
	KL_STEP_BWD = 4,       /* backward (and update) of op index, int32 scratch at offset */
	KL_STEP_FREE_DATA = 5, /* tensor index's activations are dead */
	KL_STEP_FREE_GRAD = 6  /* tensor index's gradient is dead */
};
#define KL_STEP_RECOMPUTE 0x01u /* fwd flag: a recomputation */
/* bwd flag (int8): the input's gradient (its grad step came right before)
 * lies at the start or the end of this step's scratch and is quantised in
 * place from its int32 sums; the scratch is sized for that */
#define KL_STEP_IN_PLACE 0x02u
/* bwd flag (format 2.3; int8 conv or depthwise, with KL_STEP_IN_PLACE, the
 * input's gradient at the start of the scratch): the input-gradient sums
 * are made in bands of input rows (kl_band_rows) and kept as int16 rounded
 * to odd, 2 bytes per input element instead of 4, then quantised into the
 * gradient; the same integers as the int32 sums (docs/planner.md) */
#define KL_STEP_COMPACT 0x04u
#define KL_BAND_BYTES   8192u /* int32 bytes of one band of sums, at most (or stride rows) */

/* input rows per band of a compact step: a multiple of the stride */
static inline uint32_t kl_band_rows(uint32_t h, uint32_t w, uint32_t c, uint32_t stride)
{
	const uint64_t row = (uint64_t)w * c * 4u * stride;
	uint64_t r = row == 0u ? 1u : KL_BAND_BYTES / row;
	r = (r < 1u ? 1u : r) * stride;
	return (uint32_t)(r < h ? r : h);
}

/* scratch bytes of a compact step's input-gradient part: the int16 sums,
 * 8-aligned, then one band of int32 sums */
static inline uint64_t kl_compact_scratch(uint32_t h, uint32_t w, uint32_t c, uint32_t stride)
{
	const uint64_t nx = (uint64_t)h * w * c;
	return ((2u * nx + 7u) & ~(uint64_t)7u) +
	       4u * (uint64_t)kl_band_rows(h, w, c, stride) * w * c;
}

/* tensor record field offsets */
#define KL_BT_H   0u
#define KL_BT_W   2u
#define KL_BT_C   4u
#define KL_BT_EXP 6u
#define KL_BT_ZP  7u

/* op record field offsets */
#define KL_BO_KIND   0u
#define KL_BO_ACT    1u
#define KL_BO_FLAGS  2u
#define KL_BO_STRIDE 3u
#define KL_BO_KH     4u
#define KL_BO_KW     5u
#define KL_BO_PAD    6u /* top, left, bottom, right */
#define KL_BO_W_EXP  10u
#define KL_BO_B_EXP  11u
#define KL_BO_IN0    12u
#define KL_BO_IN1    14u
#define KL_BO_OUT    16u
#define KL_BO_W_OFF  20u
#define KL_BO_W_SIZE 24u
#define KL_BO_B_OFF  28u
#define KL_BO_B_SIZE 32u

enum kl_dtype { KL_DTYPE_F32 = 0, KL_DTYPE_S8 = 1 };
/* the loss on the output tensor (2.5) */
enum kl_loss {
	KL_LOSS_SOFTMAX_CE = 0,  /* softmax cross-entropy on a class label */
	KL_LOSS_MSE = 1,         /* mean squared error on a target vector (the input: autoencoder) */
	KL_LOSS_SIGMOID_BCE = 2, /* sigmoid binary cross-entropy per output (multi-label) */
	KL_LOSS_COUNT = 3
};
enum kl_op_kind {
	KL_OP_DENSE = 1,
	KL_OP_CONV = 2,
	KL_OP_DWCONV = 3,
	KL_OP_AVGPOOL = 4,
	KL_OP_MAXPOOL = 5,
	KL_OP_ADD = 6
};
#define KL_OP_TRAINABLE 0x01u
#define KL_OP_BIAS_ONLY 0x02u /* with TRAINABLE: only the bias trains */
#define KL_OP_PAGED     0x04u /* 2.4, dense with TRAINABLE: weights stay in the store,
			       * updated rows go to the weight log (kl_wlog.h) */

/* Exponents of power-of-two scales must lie in this range. */
#define KL_EXP_MIN (-60)
#define KL_EXP_MAX 30

uint32_t kl_crc32(uint32_t crc, const uint8_t *data, size_t len);

/* A checked blob's loss (enum kl_loss); softmax cross-entropy before 2.5. */
int kl_blob_loss(const uint8_t *blob);

/* Offset of a checked blob's schedule section, 0 when it has none (2.0). */
uint32_t kl_blob_schedule(const uint8_t *blob);

/* Bytes of a blob's schedule header: 24 from minor 7 on, else 16. */
static inline uint32_t kl_sched_header_size(const uint8_t *blob)
{
	return ((uint32_t)blob[6] | ((uint32_t)blob[7] << 8)) >= 7u ? KL_SCHED_HEADER_SIZE_SPLIT
								     : KL_SCHED_HEADER_SIZE;
}

/* A checked blob's update policy and fraction (per mille); 0 (all weights)
 * before format 2.2. */
int kl_blob_update_policy(const uint8_t *blob, uint32_t *permille);

#ifdef __cplusplus
}
#endif
#endif /* KILOLEARN_KL_BLOB_H */
