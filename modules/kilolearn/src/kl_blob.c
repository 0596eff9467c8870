/* Defensive parser of the .klm model blob (format version 1). */
#include "kilolearn/kilolearn.h"

static uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
	       ((uint32_t)p[3] << 24);
}

static int exp_ok(int8_t e)
{
	return e >= KL_EXP_MIN && e <= KL_EXP_MAX;
}

/* [off, off + size) inside [lo, total), 4-byte aligned */
static int range_ok(uint32_t off, uint32_t size, uint32_t lo, uint32_t total)
{
	return (off % 4u) == 0u && off >= lo && off <= total && size <= total - off;
}

int kl_blob_check(const uint8_t *blob, size_t len)
{
	if (blob == NULL) {
		return KL_EINVAL;
	}
	if (len < 8u || rd32(blob + KL_BH_MAGIC) != KL_BLOB_MAGIC) {
		return len < 4u ? KL_ETRUNC : KL_EBADMAGIC;
	}
	if (rd16(blob + KL_BH_VER_MAJOR) != KL_BLOB_VERSION_MAJOR) {
		return KL_EVERSION;
	}
	if (len < KL_BLOB_HEADER_SIZE) {
		return KL_ETRUNC;
	}
	const uint32_t total = rd32(blob + KL_BH_TOTAL_SIZE);
	if (total < KL_BLOB_HEADER_SIZE) {
		return KL_ECORRUPT;
	}
	if (total > len) {
		return KL_ETRUNC;
	}
	if (kl_crc32(0, blob + KL_BLOB_CRC_START, total - KL_BLOB_CRC_START) !=
	    rd32(blob + KL_BH_CRC)) {
		return KL_ECRC;
	}
	const uint8_t dtype = blob[KL_BH_DTYPE];
	const uint8_t n_layers = blob[KL_BH_N_LAYERS];
	const uint32_t layers_off = rd32(blob + KL_BH_LAYERS_OFF);
	if (dtype > KL_DTYPE_S8 || n_layers == 0u || n_layers > KL_MAX_LAYERS ||
	    rd16(blob + KL_BH_N_INPUTS) == 0u || rd16(blob + KL_BH_N_CLASSES) < 2u ||
	    !range_ok(layers_off, (uint32_t)n_layers * KL_BLOB_LAYER_SIZE, KL_BLOB_HEADER_SIZE,
		      total)) {
		return KL_ECORRUPT;
	}
	const uint32_t data_lo = layers_off + (uint32_t)n_layers * KL_BLOB_LAYER_SIZE;
	if (dtype == KL_DTYPE_S8) {
		if (!exp_ok((int8_t)blob[KL_BH_IN_EXP]) || !exp_ok((int8_t)blob[KL_BH_LUT_EXP]) ||
		    !range_ok(rd32(blob + KL_BH_LUT_OFF), 2u * KL_BLOB_LUT_ENTRIES, data_lo,
			      total)) {
			return KL_ECORRUPT;
		}
	}
	uint32_t width = rd16(blob + KL_BH_N_INPUTS);
	for (uint32_t l = 0; l < n_layers; l++) {
		const uint8_t *r = blob + layers_off + l * KL_BLOB_LAYER_SIZE;
		const uint32_t n_in = rd16(r + KL_BL_N_IN);
		const uint32_t n_out = rd16(r + KL_BL_N_OUT);
		const uint32_t esize = dtype == KL_DTYPE_F32 ? 4u : 1u;
		if (r[KL_BL_OP] != KL_OP_DENSE || r[KL_BL_ACT] > KL_ACT_RELU ||
		    (r[KL_BL_FLAGS] & ~KL_LAYER_TRAINABLE) != 0u || n_in != width || n_out == 0u ||
		    rd32(r + KL_BL_W_SIZE) != n_in * n_out * esize ||
		    rd32(r + KL_BL_B_SIZE) != n_out * 4u ||
		    !range_ok(rd32(r + KL_BL_W_OFF), rd32(r + KL_BL_W_SIZE), data_lo, total) ||
		    !range_ok(rd32(r + KL_BL_B_OFF), rd32(r + KL_BL_B_SIZE), data_lo, total)) {
			return KL_ECORRUPT;
		}
		if (dtype == KL_DTYPE_S8) {
			const int8_t zp = (int8_t)r[KL_BL_Y_ZP];
			if (!exp_ok((int8_t)r[KL_BL_W_EXP]) || !exp_ok((int8_t)r[KL_BL_B_EXP]) ||
			    !exp_ok((int8_t)r[KL_BL_Y_EXP]) ||
			    (r[KL_BL_ACT] == KL_ACT_RELU && zp != -128)) {
				return KL_ECORRUPT;
			}
		}
		width = n_out;
	}
	const uint8_t *last = blob + layers_off + (n_layers - 1u) * KL_BLOB_LAYER_SIZE;
	if (width != rd16(blob + KL_BH_N_CLASSES) || last[KL_BL_ACT] != KL_ACT_NONE) {
		return KL_ECORRUPT;
	}
	return KL_OK;
}

const char *kl_strerror(int err)
{
	switch (err) {
	case KL_OK:
		return "ok";
	case KL_ENOMEM:
		return "arena too small";
	case KL_EINVAL:
		return "invalid argument";
	case KL_ENOTSUP:
		return "not supported";
	case KL_EBADMAGIC:
		return "not a kilolearn blob (bad magic)";
	case KL_EVERSION:
		return "unsupported blob format version";
	case KL_ETRUNC:
		return "blob truncated";
	case KL_ECRC:
		return "blob CRC mismatch";
	case KL_ECORRUPT:
		return "blob contents inconsistent";
	default:
		return "unknown error";
	}
}
