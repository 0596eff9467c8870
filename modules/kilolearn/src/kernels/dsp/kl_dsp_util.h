/* Helpers of the dsp kernels: ACLE intrinsics of the Armv7E-M / Armv8-M
 * DSP extension. Only included where __ARM_FEATURE_DSP is defined. */
#ifndef KL_DSP_UTIL_H
#define KL_DSP_UTIL_H

#include <arm_acle.h>
#include <string.h>

#include "kilolearn/kl_kernels.h"

/* four int8 from any address (one unaligned LDR) */
static inline uint32_t kl_read_s8x4(const int8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return v;
}

/* bytes 1 and 3 sign-extended to two int16 lanes: SXTB16 with ROR #8 */
static inline uint32_t kl_sxtb16_ror8(uint32_t v)
{
	uint32_t r;
	__asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
	return r;
}

static inline uint32_t kl_sxtb16(uint32_t v)
{
	return (uint32_t)__sxtb16((int8x4_t)v);
}

static inline int32_t kl_smlad(uint32_t a, uint32_t b, int32_t acc)
{
	return __smlad((int16x2_t)a, (int16x2_t)b, acc);
}

/* bottom halfword of a, bottom halfword of b on top: PKHBT */
static inline uint32_t kl_pkhbt(uint32_t a, uint32_t b)
{
	uint32_t r;
	__asm__("pkhbt %0, %1, %2, lsl #16" : "=r"(r) : "r"(a), "r"(b));
	return r;
}

/* lanes equal to -128 become -127 (the symmetric weight range) */
static inline uint32_t kl_clamp_m127_s8x4(uint32_t v)
{
	uint32_t t;
	__asm__("ssub8 %0, %1, %2\n\tsel %0, %1, %2" : "=&r"(t) : "r"(v), "r"(0x81818181u) : "cc");
	return t;
}

/* x - zp as int16, each group of four reordered (0, 2, 1, 3) to match
 * SXTB16 / SXTB16 ROR 8 of a weight word; the n % 4 tail stays in order.
 * out must be 4-aligned. */
static inline void kl_center_interleave_s8(const int8_t *x, int32_t zp, int16_t *out, int n)
{
	const uint32_t zz = ((uint32_t)zp & 0xFFFFu) * 0x10001u;
	uint32_t *o = (uint32_t *)(void *)out;
	int j = 0;
	for (; j + 4 <= n; j += 4) {
		const uint32_t v = kl_read_s8x4(x + j);
		o[0] = (uint32_t)__ssub16((int16x2_t)kl_sxtb16(v), (int16x2_t)zz);
		o[1] = (uint32_t)__ssub16((int16x2_t)kl_sxtb16_ror8(v), (int16x2_t)zz);
		o += 2;
	}
	for (; j < n; j++) {
		out[j] = (int16_t)(x[j] - zp);
	}
}

/* kl_requant_shift(x, s) for s >= 1 as one shift: x / 2 rounded half up,
 * then rounded half away from zero by s - 1, folds (nested floors) into
 * (x + k + (x < -1 ? m : 0)) >> s with k = 1 + 2^(s-1), m = -2 for s >= 2,
 * and k = 1, m = 0 for s = 1. */
static inline int32_t kl_rq_k(int s)
{
	return s >= 2 ? 1 + ((int32_t)1 << (s - 1)) : 1;
}

static inline int32_t kl_rq_m(int s)
{
	return s >= 2 ? -2 : 0;
}

/* the addend for x: k, plus m where x < -1 (x + 1 wraps harmlessly at
 * INT32_MAX: the sum saturates there either way) */
static inline int32_t kl_rq_add(int32_t x, int32_t k, int32_t m)
{
	return k + (((int32_t)((uint32_t)x + 1u) >> 31) & m);
}

/* Output stage of an int8 layer over n raw dot products, bit-identical to
 * kl_requant per element: a fast path for the usual shifts (bias 1..31,
 * output 1..22) with everything in registers, the general one for other
 * shifts and for sums near the int32 limits. Returns the saturation flag. */
/* the general per-element path, out of line so the loops below keep their
 * registers (kl_fully_connected_s8.c) */
int8_t kl_dsp_requant_one(const kl_requant_t *rq, int32_t dot, int32_t bias, int *sat);

/* mode 1: ReLU with zero point -128 (USAT), mode 2: no activation with zero
 * point 0 (SSAT), mode 0: anything else */
static inline __attribute__((always_inline)) int kl_dsp_requant_loop(
	const int32_t *dot, const int32_t *b, const kl_requant_t *rq, int8_t *y, int n,
	const int mode)
{
	int sat = 0;
	const int bs = rq->b_shift, ys = rq->y_shift;
	const int32_t bh = (int32_t)(1u << (bs - 1));
	const int32_t yk = kl_rq_k(ys), ym = kl_rq_m(ys);
	const int32_t b_lim = INT32_MAX - bh, y_lim = INT32_MAX - yk;
	for (int i = 0; i < n; i++) {
		const int32_t bias = b[i];
		/* bias: round half away from zero, (v + half - (v < 0)) >> s,
		 * exact unless v + half overflows, which goes the general way */
		if (bias > b_lim) {
			int s1 = 0; /* (sat itself stays in a register) */
			y[i] = kl_dsp_requant_one(rq, dot[i], bias, &s1);
			sat |= s1;
			continue;
		}
		const int32_t acc = __qadd(dot[i], (bias + bh + (bias >> 31)) >> bs);
		if (acc > y_lim) {
			int s1 = 0;
			y[i] = kl_dsp_requant_one(rq, dot[i], bias, &s1);
			sat |= s1;
			continue;
		}
		const int32_t r = (acc + kl_rq_add(acc, yk, ym)) >> ys;
		if (mode == 1) {
			sat |= r >= 255;
			y[i] = (int8_t)((int32_t)__usat(r, 8) - 128);
		} else if (mode == 2) {
			const int32_t c = __ssat(r, 8);
			sat |= (c == 127) | (c == -128);
			y[i] = (int8_t)c;
		} else {
			const int32_t sat_hi = rq->cap_saturates ? rq->hi_range : INT32_MAX;
			const int32_t sat_lo = rq->act == KL_ACT_NONE ? rq->lo : INT32_MIN;
			sat |= (r >= sat_hi) | (r <= sat_lo);
			y[i] = (int8_t)((r > rq->hi ? rq->hi : (r < rq->lo ? rq->lo : r)) + rq->zp);
		}
	}
	return sat;
}

/* Output stage of an int8 layer over n raw dot products, bit-identical to
 * kl_requant per element: fast paths for the usual shifts (bias 1..31,
 * output 1..22) and the usual activation/zero-point pairs, the general one
 * otherwise. Returns the saturation flag. */
static inline int kl_dsp_requant_n(const int32_t *dot, const int32_t *b, const kl_requant_t *rq,
				   int8_t *y, int n)
{
	const int bs = rq->b_shift, ys = rq->y_shift;
	if (!(ys >= 1 && ys <= 22 && bs >= 1 && bs <= 31)) {
		int sat = 0;
		for (int i = 0; i < n; i++) {
			y[i] = kl_requant(rq, dot[i], b[i], &sat);
		}
		return sat;
	}
	if (rq->act == KL_ACT_RELU && rq->zp == -128) {
		return kl_dsp_requant_loop(dot, b, rq, y, n, 1);
	}
	if (rq->act == KL_ACT_NONE && rq->zp == 0) {
		return kl_dsp_requant_loop(dot, b, rq, y, n, 2);
	}
	return kl_dsp_requant_loop(dot, b, rq, y, n, 0);
}

#endif
