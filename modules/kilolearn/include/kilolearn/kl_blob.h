/*
 * The kilolearn model blob (.klm), format version 1. All fields little-endian.
 * Written only by the host exporter (scripts/kilolearn/export.py); parsed
 * defensively by kl_blob_parse(): every size and offset is checked.
 * The authoritative description is docs/blob-format.md.
 */
#ifndef KILOLEARN_KL_BLOB_H
#define KILOLEARN_KL_BLOB_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KL_BLOB_MAGIC         0x424D4C4Bu /* "KLMB" */
#define KL_BLOB_VERSION_MAJOR 1u
#define KL_BLOB_VERSION_MINOR 0u
#define KL_BLOB_HEADER_SIZE   48u
#define KL_BLOB_LAYER_SIZE    32u
#define KL_BLOB_CRC_START     16u /* the CRC covers [16, total_size) */
#define KL_BLOB_LUT_ENTRIES   256u

/* header field offsets */
#define KL_BH_MAGIC      0u
#define KL_BH_VER_MAJOR  4u
#define KL_BH_VER_MINOR  6u
#define KL_BH_TOTAL_SIZE 8u
#define KL_BH_CRC        12u
#define KL_BH_DTYPE      16u
#define KL_BH_N_LAYERS   17u
#define KL_BH_N_INPUTS   18u
#define KL_BH_N_CLASSES  20u
#define KL_BH_IN_EXP     22u
#define KL_BH_IN_ZP      23u
#define KL_BH_LUT_EXP    24u
#define KL_BH_LAYERS_OFF 28u
#define KL_BH_LUT_OFF    32u

/* layer record field offsets */
#define KL_BL_OP     0u
#define KL_BL_ACT    1u
#define KL_BL_FLAGS  2u
#define KL_BL_N_IN   4u
#define KL_BL_N_OUT  6u
#define KL_BL_W_EXP  8u
#define KL_BL_B_EXP  9u
#define KL_BL_Y_EXP  10u
#define KL_BL_Y_ZP   11u
#define KL_BL_W_OFF  12u
#define KL_BL_W_SIZE 16u
#define KL_BL_B_OFF  20u
#define KL_BL_B_SIZE 24u

enum kl_dtype { KL_DTYPE_F32 = 0, KL_DTYPE_S8 = 1 };
enum kl_op { KL_OP_DENSE = 1 };
enum kl_act { KL_ACT_NONE = 0, KL_ACT_RELU = 1 };
#define KL_LAYER_TRAINABLE 0x01u

/* Exponents of power-of-two scales must lie in this range. */
#define KL_EXP_MIN (-60)
#define KL_EXP_MAX 30

uint32_t kl_crc32(uint32_t crc, const uint8_t *data, size_t len);

#ifdef __cplusplus
}
#endif
#endif /* KILOLEARN_KL_BLOB_H */
