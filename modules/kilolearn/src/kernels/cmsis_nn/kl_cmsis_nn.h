/* Shared helpers of the CMSIS-NN backend (forward int8 kernels through
 * CMSIS-NN). Built only when CMSIS-NN is present: Zephyr with
 * CONFIG_KILOLEARN_KERNELS_CMSIS_NN, standalone with -DKL_CMSIS_NN_DIR=...
 *
 * kilolearn's scales are powers of two, so an output shift s is CMSIS-NN's
 * multiplier 1 << 30 with shift 1 - s; CMSIS-NN's arm_nn_requantize then
 * rounds exactly as kl_requant_shift does (docs/int8-training.md). Shifts
 * CMSIS-NN cannot take (s < 1 or s > 31) run the default kernels. */
#ifndef KL_CMSIS_NN_H
#define KL_CMSIS_NN_H

#include <string.h>

#include "arm_nnfunctions.h"
#include "kilolearn/kl_kernels.h"

/* the kernels without CMSIS-NN (dsp where the core has it, else ref) */
#if KL_KERNELS_DSP
#define KL_CMSIS_FALLBACK(name) kl_dsp_##name
#else
#define KL_CMSIS_FALLBACK(name) kl_ref_##name
#endif

static inline int kl_cmsis_rq_ok(const kl_requant_t *rq)
{
	return rq->y_shift >= 1 && rq->y_shift <= 31;
}

static inline cmsis_nn_activation kl_cmsis_act(const kl_requant_t *rq)
{
	cmsis_nn_activation a = {rq->lo + rq->zp, rq->hi + rq->zp};
	return a;
}

/* The saturation flag from the outputs alone (kl_requant_clamp's rule: an
 * output at the top of the int8 range when the range is the cap, at the
 * bottom without an activation). Every output lies in [lo + zp, hi + zp],
 * so the top is hit iff the largest output is 127 and the bottom iff the
 * smallest is -128: a running byte-wise maximum and minimum, four outputs a
 * word (SSUB8 + SEL with the DSP extension; else a word-wise test for a byte
 * equal to 127 or -128), instead of a test per output. */
#if defined(__ARM_FEATURE_DSP)
static inline uint32_t kl_cmsis_max8(uint32_t m, uint32_t v)
{
	uint32_t t;
	__asm__("ssub8 %1, %0, %2\n\tsel %0, %0, %2" : "+r"(m), "=&r"(t) : "r"(v) : "cc");
	return m;
}
static inline uint32_t kl_cmsis_min8(uint32_t m, uint32_t v)
{
	uint32_t t;
	__asm__("ssub8 %1, %2, %0\n\tsel %0, %0, %2" : "+r"(m), "=&r"(t) : "r"(v) : "cc");
	return m;
}
#endif

/* nonzero iff a byte of v is zero */
static inline uint32_t kl_cmsis_zero_byte(uint32_t v)
{
	return (v - 0x01010101u) & ~v & 0x80808080u;
}

static inline uint32_t kl_cmsis_word(const int8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return v;
}

static inline int kl_cmsis_sat(const kl_requant_t *rq, const int8_t *y, int n)
{
	const int top = rq->cap_saturates, bottom = rq->act == KL_ACT_NONE;
	if (!top && !bottom) {
		return 0;
	}
	int i = 0;
	uint32_t hit = 0;
#if defined(__ARM_FEATURE_DSP)
	uint32_t mx = 0x80808080u, mn = 0x7F7F7F7Fu;
	if (!bottom) {
		for (; i + 16 <= n; i += 16) {
			mx = kl_cmsis_max8(mx, kl_cmsis_word(y + i));
			mx = kl_cmsis_max8(mx, kl_cmsis_word(y + i + 4));
			mx = kl_cmsis_max8(mx, kl_cmsis_word(y + i + 8));
			mx = kl_cmsis_max8(mx, kl_cmsis_word(y + i + 12));
		}
	} else {
		for (; i + 8 <= n; i += 8) {
			const uint32_t a = kl_cmsis_word(y + i), b = kl_cmsis_word(y + i + 4);
			mx = kl_cmsis_max8(kl_cmsis_max8(mx, a), b);
			mn = kl_cmsis_min8(kl_cmsis_min8(mn, a), b);
		}
	}
	hit |= (top ? kl_cmsis_zero_byte(mx ^ 0x7F7F7F7Fu) : 0u) |
	       kl_cmsis_zero_byte(mn ^ 0x80808080u);
#else
	uint32_t acc = 0;
	for (; i + 4 <= n; i += 4) {
		const uint32_t v = kl_cmsis_word(y + i);
		if (top) {
			const uint32_t t = v ^ 0x7F7F7F7Fu;
			acc |= (t - 0x01010101u) & ~t;
		}
		if (bottom) {
			const uint32_t t = v ^ 0x80808080u;
			acc |= (t - 0x01010101u) & ~t;
		}
	}
	hit = acc & 0x80808080u;
#endif
	int sat = hit != 0u;
	for (; i < n; i++) {
		sat |= (top & (y[i] == 127)) | (bottom & (y[i] == -128));
	}
	return sat;
}

/* The convolution parameters of a kilolearn geometry (rq NULL: only the
 * shape, for buffer sizes); the depthwise kernels take the same values. */
static inline void kl_cmsis_conv_params(const kl_geom_t *g, const kl_requant_t *rq,
					int32_t x_zp, cmsis_nn_conv_params *p, cmsis_nn_dims *in,
					cmsis_nn_dims *out)
{
	p->input_offset = -x_zp;
	p->output_offset = rq != NULL ? rq->zp : 0;
	p->stride.w = g->stride;
	p->stride.h = g->stride;
	p->padding.w = g->pad_l;
	p->padding.h = g->pad_t;
	p->dilation.w = 1;
	p->dilation.h = 1;
	if (rq != NULL) {
		p->activation = kl_cmsis_act(rq);
	} else {
		p->activation.min = -128;
		p->activation.max = 127;
	}
	*in = (cmsis_nn_dims){1, g->h, g->w, g->c};
	*out = (cmsis_nn_dims){1, g->ho, g->wo, g->co};
}

/* bq = kl_rshift_round(b, s): for 1 <= s <= 31 without branches (up iff
 * the remainder exceeds half, +1 below zero: the sign of threshold - rem) */
static inline void kl_cmsis_rescale(int32_t *bq, const int32_t *b, int n, int s)
{
	if (s < 1 || s > 31) {
		for (int i = 0; i < n; i++) {
			bq[i] = kl_rshift_round(b[i], s);
		}
		return;
	}
	const uint32_t mask = (1u << s) - 1u, half = mask >> 1;
	for (int i = 0; i < n; i++) {
		const int32_t v = b[i];
		const uint32_t t = half + ((uint32_t)v >> 31) - ((uint32_t)v & mask);
		bq[i] = (v >> s) + (int32_t)(t >> 31);
	}
}

/* The per-layer parameters (kl_kernels.h, KL_CMSIS_PREP_BYTES): brought up
 * to date for rq, the per-channel multipliers and shifts when y_shift
 * changed, the bias at the accumulator's scale when b_shift changed or
 * bias_changed (a trained layer). Returns the biases; *qp: the multipliers
 * and shifts (conv, depthwise: per_channel). */
static inline const int32_t *kl_cmsis_prepare(int32_t *prep, const kl_requant_t *rq,
					      const int32_t *b, int n, int per_channel,
					      int bias_changed,
					      cmsis_nn_per_channel_quant_params *qp)
{
	int32_t *bq = prep + KL_CMSIS_PREP_HEADER;
	if (bias_changed || prep[KL_CMSIS_PREP_KEY_B] != rq->b_shift) {
		kl_cmsis_rescale(bq, b, n, rq->b_shift);
		prep[KL_CMSIS_PREP_KEY_B] = rq->b_shift;
	}
	if (per_channel) {
		qp->multiplier = bq + n;
		qp->shift = bq + 2 * n;
		if (prep[KL_CMSIS_PREP_KEY_Y] != rq->y_shift) {
			for (int i = 0; i < n; i++) {
				qp->multiplier[i] = (int32_t)1 << 30;
				qp->shift[i] = 1 - rq->y_shift;
			}
			prep[KL_CMSIS_PREP_KEY_Y] = rq->y_shift;
		}
	}
	return bq;
}

#endif
