/* Defensive parser of the .klm model blob (format version 2): every size,
 * offset, tensor id and shape is checked before the engine touches it. */
#include "kilolearn/kilolearn.h"
#include "kilolearn/kl_kernels.h"
#include "kl_blob_read.h"

static int exp_ok(int8_t e)
{
	return e >= KL_EXP_MIN && e <= KL_EXP_MAX;
}

/* [off, off + size) inside [lo, total), 4-byte aligned */
static int range_ok(uint32_t off, uint64_t size, uint32_t lo, uint32_t total)
{
	return (off % 4u) == 0u && off >= lo && off <= total && size <= (uint64_t)(total - off);
}

static uint64_t tensor_size(const uint8_t *t)
{
	return (uint64_t)kl_rd16(t + KL_BT_H) * kl_rd16(t + KL_BT_W) * kl_rd16(t + KL_BT_C);
}

/* expected output extent of a window op along one axis, or 0 if invalid */
static uint32_t out_extent(uint32_t in, uint32_t k, uint32_t stride, uint32_t p0, uint32_t p1)
{
	if (k == 0u || stride == 0u || p0 >= k || p1 >= k || in + p0 + p1 < k) {
		return 0u;
	}
	return (in + p0 + p1 - k) / stride + 1u;
}

static int check_op(const uint8_t *blob, const uint8_t *o, uint32_t n_t, uint32_t t_off,
		    uint32_t data_lo, uint32_t total, int s8, uint8_t *produced)
{
	const uint8_t kind = o[KL_BO_KIND];
	const uint32_t in0 = kl_rd16(o + KL_BO_IN0);
	const uint32_t in1 = kl_rd16(o + KL_BO_IN1);
	const uint32_t out = kl_rd16(o + KL_BO_OUT);
	if (kind < KL_OP_DENSE || kind > KL_OP_ADD || o[KL_BO_ACT] > KL_ACT_RELU6 ||
	    (o[KL_BO_FLAGS] & ~KL_OP_TRAINABLE) != 0u || in0 >= n_t || out >= n_t ||
	    !(produced[in0 >> 3] & (1u << (in0 & 7u))) || (produced[out >> 3] & (1u << (out & 7u)))) {
		return KL_ECORRUPT;
	}
	if (kind == KL_OP_ADD) {
		if (in1 >= n_t || !(produced[in1 >> 3] & (1u << (in1 & 7u)))) {
			return KL_ECORRUPT;
		}
	} else if (in1 != KL_BLOB_NO_TENSOR) {
		return KL_ECORRUPT;
	}
	produced[out >> 3] |= (uint8_t)(1u << (out & 7u));
	const uint8_t *ti = blob + t_off + in0 * KL_BLOB_TENSOR_SIZE;
	const uint8_t *to = blob + t_off + out * KL_BLOB_TENSOR_SIZE;
	const uint32_t h = kl_rd16(ti + KL_BT_H), w = kl_rd16(ti + KL_BT_W), c = kl_rd16(ti + KL_BT_C);
	const uint32_t ho = kl_rd16(to + KL_BT_H), wo = kl_rd16(to + KL_BT_W);
	const uint32_t co = kl_rd16(to + KL_BT_C);
	const uint32_t kh = o[KL_BO_KH], kw = o[KL_BO_KW], st = o[KL_BO_STRIDE];
	const uint8_t *pad = o + KL_BO_PAD;
	const int has_params = kind <= KL_OP_DWCONV;
	const int window = kind != KL_OP_DENSE && kind != KL_OP_ADD;
	if (window && (ho != out_extent(h, kh, st, pad[0], pad[2]) ||
		       wo != out_extent(w, kw, st, pad[1], pad[3]))) {
		return KL_ECORRUPT;
	}
	if (kind >= KL_OP_DWCONV && co != c) { /* depthwise, pooling and add keep channels */
		return KL_ECORRUPT;
	}
	if ((kind == KL_OP_AVGPOOL || kind == KL_OP_MAXPOOL) &&
	    (pad[0] | pad[1] | pad[2] | pad[3]) != 0u) {
		return KL_ECORRUPT;
	}
	if (kind == KL_OP_ADD) {
		const uint8_t *t1 = blob + t_off + in1 * KL_BLOB_TENSOR_SIZE;
		if (kl_rd16(t1 + KL_BT_H) != h || kl_rd16(t1 + KL_BT_W) != w ||
		    kl_rd16(t1 + KL_BT_C) != c || ho != h || wo != w) {
			return KL_ECORRUPT;
		}
	}
	uint64_t n_w = 0;
	if (kind == KL_OP_DENSE) {
		if (ho != 1u || wo != 1u) {
			return KL_ECORRUPT;
		}
		n_w = tensor_size(ti) * co;
	} else if (kind == KL_OP_CONV) {
		n_w = (uint64_t)co * kh * kw * c;
	} else if (kind == KL_OP_DWCONV) {
		n_w = (uint64_t)kh * kw * c;
	}
	const uint32_t w_off = kl_rd32(o + KL_BO_W_OFF), w_size = kl_rd32(o + KL_BO_W_SIZE);
	const uint32_t b_off = kl_rd32(o + KL_BO_B_OFF), b_size = kl_rd32(o + KL_BO_B_SIZE);
	if (!has_params) { /* and so nothing to train */
		return (w_off | w_size | b_off | b_size | o[KL_BO_FLAGS]) == 0u ? KL_OK : KL_ECORRUPT;
	}
	if (n_w > 0x7FFFFFFFu || w_size != n_w * (s8 ? 1u : 4u) || b_size != co * 4u ||
	    !range_ok(w_off, w_size, data_lo, total) || !range_ok(b_off, b_size, data_lo, total)) {
		return KL_ECORRUPT;
	}
	if (s8 && (!exp_ok((int8_t)o[KL_BO_W_EXP]) || !exp_ok((int8_t)o[KL_BO_B_EXP]))) {
		return KL_ECORRUPT;
	}
	return KL_OK;
}

int kl_blob_check(const uint8_t *blob, size_t len)
{
	if (blob == NULL) {
		return KL_EINVAL;
	}
	if (len < 8u || kl_rd32(blob + KL_BH_MAGIC) != KL_BLOB_MAGIC) {
		return len < 4u ? KL_ETRUNC : KL_EBADMAGIC;
	}
	if (kl_rd16(blob + KL_BH_VER_MAJOR) != KL_BLOB_VERSION_MAJOR) {
		return KL_EVERSION;
	}
	if (len < KL_BLOB_HEADER_SIZE) {
		return KL_ETRUNC;
	}
	const uint32_t total = kl_rd32(blob + KL_BH_TOTAL_SIZE);
	if (total < KL_BLOB_HEADER_SIZE) {
		return KL_ECORRUPT;
	}
	if (total > len) {
		return KL_ETRUNC;
	}
	if (kl_crc32(0, blob + KL_BLOB_CRC_START, total - KL_BLOB_CRC_START) !=
	    kl_rd32(blob + KL_BH_CRC)) {
		return KL_ECRC;
	}
	const uint8_t dtype = blob[KL_BH_DTYPE];
	const uint32_t n_t = kl_rd16(blob + KL_BH_N_TENSORS);
	const uint32_t n_ops = kl_rd16(blob + KL_BH_N_OPS);
	const uint32_t t_off = kl_rd32(blob + KL_BH_TENSORS);
	const uint32_t o_off = kl_rd32(blob + KL_BH_OPS);
	const uint32_t input = kl_rd16(blob + KL_BH_INPUT);
	const uint32_t output = kl_rd16(blob + KL_BH_OUTPUT);
	if (dtype > KL_DTYPE_S8 || n_t < 2u || n_t > KL_MAX_TENSORS || n_ops == 0u ||
	    n_ops > KL_MAX_OPS || input >= n_t || output >= n_t ||
	    !range_ok(t_off, (uint64_t)n_t * KL_BLOB_TENSOR_SIZE, KL_BLOB_HEADER_SIZE, total) ||
	    !range_ok(o_off, (uint64_t)n_ops * KL_BLOB_OP_SIZE, t_off + n_t * KL_BLOB_TENSOR_SIZE,
		      total)) {
		return KL_ECORRUPT;
	}
	const int s8 = dtype == KL_DTYPE_S8;
	const uint32_t data_lo = o_off + n_ops * KL_BLOB_OP_SIZE;
	if (s8 && (!exp_ok((int8_t)blob[KL_BH_LUT_EXP]) ||
		   !range_ok(kl_rd32(blob + KL_BH_LUT), 2u * KL_BLOB_LUT_ENTRIES, data_lo, total))) {
		return KL_ECORRUPT;
	}
	for (uint32_t k = 0; k < n_t; k++) {
		const uint8_t *t = blob + t_off + k * KL_BLOB_TENSOR_SIZE;
		const uint64_t n = tensor_size(t);
		if (n == 0u || n > (1u << 24) || (s8 && !exp_ok((int8_t)t[KL_BT_EXP]))) {
			return KL_ECORRUPT;
		}
	}
	uint8_t produced[KL_MAX_TENSORS / 8u] = {0};
	produced[input >> 3] = (uint8_t)(1u << (input & 7u));
	for (uint32_t i = 0; i < n_ops; i++) {
		const int err = check_op(blob, blob + o_off + i * KL_BLOB_OP_SIZE, n_t, t_off,
					 data_lo, total, s8, produced);
		if (err != KL_OK) {
			return err;
		}
	}
	const uint8_t *last = blob + o_off + (n_ops - 1u) * KL_BLOB_OP_SIZE;
	const uint64_t n_cls = tensor_size(blob + t_off + output * KL_BLOB_TENSOR_SIZE);
	if (kl_rd16(last + KL_BO_OUT) != output || last[KL_BO_ACT] != KL_ACT_NONE || n_cls < 2u ||
	    n_cls > 0xFFFFu || tensor_size(blob + t_off + input * KL_BLOB_TENSOR_SIZE) > 0xFFFFu) {
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
