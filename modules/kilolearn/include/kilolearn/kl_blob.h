/*
 * The kilolearn model blob (.klm), format version 1. All fields little-endian.
 * Written only by the host exporter (scripts/kilolearn/export.py); parsed
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
#define KL_BLOB_VERSION_MINOR 0u
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
#define KL_BH_N_TENSORS  18u
#define KL_BH_N_OPS      20u
#define KL_BH_INPUT      22u
#define KL_BH_OUTPUT     24u
#define KL_BH_LUT_EXP    26u
#define KL_BH_TENSORS    28u
#define KL_BH_OPS        32u
#define KL_BH_LUT        36u

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
enum kl_op_kind {
	KL_OP_DENSE = 1,
	KL_OP_CONV = 2,
	KL_OP_DWCONV = 3,
	KL_OP_AVGPOOL = 4,
	KL_OP_MAXPOOL = 5,
	KL_OP_ADD = 6
};
#define KL_OP_TRAINABLE 0x01u

/* Exponents of power-of-two scales must lie in this range. */
#define KL_EXP_MIN (-60)
#define KL_EXP_MAX 30

uint32_t kl_crc32(uint32_t crc, const uint8_t *data, size_t len);

#ifdef __cplusplus
}
#endif
#endif /* KILOLEARN_KL_BLOB_H */
