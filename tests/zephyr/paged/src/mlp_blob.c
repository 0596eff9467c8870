/*
 * The blob writer of mlp_blob.h: the layout the exporter (scripts/kilolearn/formats/export.py,
 * _pack) gives an int8 MLP: header, tensor table, op table, then the softmax table and each
 * op's weights and biases, 4-aligned; the CRC-32 over [16, total). Scales as the host's
 * quantizer picks them for He-uniform weights at half the int8 range: weight exponents
 * -9, -9, -8; biases 8 bits finer than the accumulator; activations 2^-8 (input, zero
 * point -128), 2^-6 (hidden, ReLU, -128), 2^-4 (logits, the softmax table's). For the same
 * weights the bytes are those of export.export_s8(qm, update=("channel-norm", 0.185),
 * paged=...) (compared on the host while writing this).
 */
#include <string.h>

#include <kilolearn/kilolearn.h>

#include "mlp_blob.h"

static const uint16_t sizes[MLP_N_OPS + 1u] = {784u, 512u, 128u, 10u};
static const int8_t t_exp[MLP_N_OPS + 1u] = {-8, -6, -6, -4};
static const int8_t t_zp[MLP_N_OPS + 1u] = {-128, -128, -128, 0};
static const int8_t w_exp[MLP_N_OPS] = {-9, -9, -8};
static const int8_t w_lim[MLP_N_OPS] = {44, 55, 55}; /* sqrt(6 / n_in) in units of 2^w_exp */

#define T_OFF    KL_BLOB_HEADER_SIZE
#define O_OFF    (T_OFF + (MLP_N_OPS + 1u) * KL_BLOB_TENSOR_SIZE)
#define LUT_OFF  (O_OFF + MLP_N_OPS * KL_BLOB_OP_SIZE)
#define DATA_OFF (LUT_OFF + 2u * KL_BLOB_LUT_ENTRIES)

/* exp(-x) for x >= 0 in double arithmetic (Zephyr's minimal libc has no libm): the
 * Taylor series on x / 2^k < 1/2, squared k times */
static double exp_neg(double x)
{
	int k = 0;

	while (x > 0.5) {
		x *= 0.5;
		k++;
	}
	double term = 1.0, sum = 1.0;

	for (int n = 1; n < 20; n++) {
		term *= -x / n;
		sum += term;
	}
	while (k-- > 0) {
		sum *= sum;
	}
	return sum;
}

static uint32_t align4(uint32_t v)
{
	return (v + 3u) & ~3u;
}

uint32_t mlp_n_in(uint32_t i)
{
	return sizes[i];
}

uint32_t mlp_n_out(uint32_t i)
{
	return sizes[i + 1u];
}

uint32_t mlp_w_off(uint32_t i)
{
	uint32_t off = DATA_OFF;

	for (uint32_t k = 0; k < i; k++) {
		off += align4(mlp_n_in(k) * mlp_n_out(k)) + 4u * mlp_n_out(k);
	}
	return off;
}

uint32_t mlp_b_off(uint32_t i)
{
	return mlp_w_off(i) + align4(mlp_n_in(i) * mlp_n_out(i));
}

uint32_t mlp_blob_size(void)
{
	return mlp_w_off(MLP_N_OPS);
}

static void wr16(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void wr32(uint8_t *p, uint32_t v)
{
	wr16(p, v & 0xFFFFu);
	wr16(p + 2, v >> 16);
}

void mlp_blob_write(uint8_t *buf, int paged, uint32_t seed, uint32_t permille)
{
	const uint32_t total = mlp_blob_size();
	uint32_t rng = seed != 0u ? seed : 1u;

	memset(buf, 0, total);
	memcpy(buf + KL_BH_MAGIC, "KLMB", 4);
	wr16(buf + KL_BH_VER_MAJOR, 2u);
	wr16(buf + KL_BH_VER_MINOR, paged ? 4u : 2u); /* 2.4 paged ops, 2.2 update policy */
	wr32(buf + KL_BH_TOTAL_SIZE, total);
	buf[KL_BH_DTYPE] = KL_DTYPE_S8;
	wr16(buf + KL_BH_N_TENSORS, MLP_N_OPS + 1u);
	wr16(buf + KL_BH_N_OPS, MLP_N_OPS);
	wr16(buf + KL_BH_INPUT, 0u);
	wr16(buf + KL_BH_OUTPUT, MLP_N_OPS);
	buf[KL_BH_LUT_EXP] = (uint8_t)t_exp[MLP_N_OPS];
	wr32(buf + KL_BH_TENSORS, T_OFF);
	wr32(buf + KL_BH_OPS, O_OFF);
	wr32(buf + KL_BH_LUT, LUT_OFF);
	buf[KL_BH_UPD_POLICY] = KL_UPDATE_CHANNEL_NORM;
	wr16(buf + KL_BH_UPD_FRAC, permille);
	for (uint32_t t = 0; t <= MLP_N_OPS; t++) {
		uint8_t *r = buf + T_OFF + t * KL_BLOB_TENSOR_SIZE;

		wr16(r + KL_BT_H, 1u);
		wr16(r + KL_BT_W, 1u);
		wr16(r + KL_BT_C, sizes[t]);
		r[KL_BT_EXP] = (uint8_t)t_exp[t];
		r[KL_BT_ZP] = (uint8_t)t_zp[t];
	}
	/* T[d] = round(2^15 exp(-d 2^e)) */
	for (uint32_t d = 0; d < KL_BLOB_LUT_ENTRIES; d++) {
		const int e = t_exp[MLP_N_OPS];
		const double x = e < 0 ? (double)d / (double)(1u << -e) : (double)d * (1u << e);

		wr16(buf + LUT_OFF + 2u * d, (uint32_t)(32768.0 * exp_neg(x) + 0.5));
	}
	for (uint32_t i = 0; i < MLP_N_OPS; i++) {
		uint8_t *o = buf + O_OFF + i * KL_BLOB_OP_SIZE;
		const uint32_t n_w = mlp_n_in(i) * mlp_n_out(i);

		o[KL_BO_KIND] = KL_OP_DENSE;
		o[KL_BO_ACT] = i + 1u < MLP_N_OPS ? 1u : 0u; /* ReLU, none for the logits */
		o[KL_BO_FLAGS] = KL_OP_TRAINABLE | (paged ? KL_OP_PAGED : 0u);
		o[KL_BO_STRIDE] = 1u;
		o[KL_BO_KH] = 1u;
		o[KL_BO_KW] = 1u;
		o[KL_BO_W_EXP] = (uint8_t)w_exp[i];
		o[KL_BO_B_EXP] = (uint8_t)(t_exp[i] + w_exp[i] - 8);
		wr16(o + KL_BO_IN0, i);
		wr16(o + KL_BO_IN1, KL_BLOB_NO_TENSOR);
		wr16(o + KL_BO_OUT, i + 1u);
		wr32(o + KL_BO_W_OFF, mlp_w_off(i));
		wr32(o + KL_BO_W_SIZE, n_w);
		wr32(o + KL_BO_B_OFF, mlp_b_off(i));
		wr32(o + KL_BO_B_SIZE, 4u * mlp_n_out(i));
		int8_t *w = (int8_t *)(buf + mlp_w_off(i));
		const uint32_t span = 2u * (uint32_t)w_lim[i] + 1u;

		for (uint32_t k = 0; k < n_w; k++) {
			w[k] = (int8_t)((int32_t)(kl_xorshift32(&rng) % span) - w_lim[i]);
		}
	}
	wr32(buf + KL_BH_CRC, kl_crc32(0, buf + KL_BLOB_CRC_START, total - KL_BLOB_CRC_START));
}

void mlp_sample(uint32_t i, int8_t *x, int *label)
{
	const int c = (int)(i % MLP_N_OUT);
	uint32_t proto = 0x9E3779B9u * (uint32_t)(c + 1); /* the class's prototype */
	uint32_t noise = (0x85EBCA6Bu * (i + 1u)) ^ 0xC2B2AE35u;

	noise = noise != 0u ? noise : 1u; /* xorshift32 stays at 0 */

	for (uint32_t k = 0; k < MLP_N_IN; k++) {
		/* a quarter of the pixels bright, the rest dark; noise of +-40 */
		const uint32_t p = kl_xorshift32(&proto);
		int32_t v = (p & 3u) == 0u ? 160 + (int32_t)((p >> 8) % 96u) : (int32_t)((p >> 8) % 40u);

		v += (int32_t)(kl_xorshift32(&noise) % 81u) - 40;
		v = v < 0 ? 0 : (v > 255 ? 255 : v);
		x[k] = (int8_t)(v - 128);
	}
	*label = c;
}
