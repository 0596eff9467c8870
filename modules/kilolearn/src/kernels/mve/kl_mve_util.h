/* Helpers of the mve kernels (Armv8.1-M MVE, "Helium": Cortex-M55/M85): the
 * output stage of an int8 layer on four int32 lanes, bit-identical to
 * kl_requant per element. Only included where __ARM_FEATURE_MVE is defined. */
#ifndef KL_MVE_UTIL_H
#define KL_MVE_UTIL_H

#include <arm_mve.h>

#include "kilolearn/kl_kernels.h"

/* x / 2^s rounded half away from zero (kl_rshift_round) for 1 <= s <= 31:
 * floor(x / 2^s) + (x mod 2^s > 2^(s-1) - 1 + (x < 0)); the comparison as the
 * sign of threshold - remainder (both in [0, 2^31), no overflow) */
static inline int32x4_t kl_mve_rshift_round(int32x4_t x, int s)
{
	const int32_t mask = (int32_t)((1u << s) - 1u);
	const int32x4_t fl = vshlq_r_s32(x, -s);
	const int32x4_t rem = vandq_s32(x, vdupq_n_s32(mask));
	const int32x4_t thr = vsubq_s32(vdupq_n_s32(mask >> 1), vshrq_n_s32(x, 31));
	return vsubq_s32(fl, vshrq_n_s32(vsubq_s32(thr, rem), 31));
}

/* the shifts the vector output stage takes (the others: kl_requant) */
static inline int kl_mve_requant_fast(const kl_requant_t *q)
{
	return q->b_shift >= 1 && q->b_shift <= 31 && q->y_shift >= 1 && q->y_shift <= 32;
}

/* kl_requant on four lanes (those of p), kl_mve_requant_fast(q) holding:
 * acc = sat32(dot + round(bias / 2^b_shift)); x / 2 rounded half up, then
 * rounded half away from zero by y_shift - 1; clamp, zero point, store the
 * active lanes as bytes. Returns the lanes' saturation flag. */
static inline int kl_mve_requant4(const kl_requant_t *q, int32x4_t dot, int32x4_t bias,
				  int8_t *y, mve_pred16_t p)
{
	const int32x4_t acc = vqaddq_s32(dot, kl_mve_rshift_round(bias, q->b_shift));
	int32x4_t r = vaddq_s32(vshrq_n_s32(acc, 1), vandq_s32(acc, vdupq_n_s32(1)));
	if (q->y_shift >= 2) {
		r = kl_mve_rshift_round(r, q->y_shift - 1);
	}
	mve_pred16_t s = 0;
	if (q->cap_saturates) {
		s |= vcmpgeq_n_s32(r, q->hi_range);
	}
	if (q->act == KL_ACT_NONE) {
		s |= vcmpleq_n_s32(r, q->lo);
	}
	r = vaddq_n_s32(vmaxq_s32(vminq_s32(r, vdupq_n_s32(q->hi)), vdupq_n_s32(q->lo)), q->zp);
	vstrbq_p_s32(y, r, p);
	return (s & p) != 0;
}

/* the output stage over n raw dot products (dot, b: n int32 each), the
 * constants of kl_mve_requant4 kept in registers over the loop */
static inline int kl_mve_requant_n(const int32_t *dot, const int32_t *b, const kl_requant_t *q,
				   int8_t *y, int n)
{
	int sat = 0;
	if (!kl_mve_requant_fast(q)) {
		for (int i = 0; i < n; i++) {
			y[i] = kl_requant(q, dot[i], b[i], &sat);
		}
		return sat;
	}
	const int bs = q->b_shift, ys1 = q->y_shift - 1;
	const int32x4_t bmask = vdupq_n_s32((int32_t)((1u << bs) - 1u));
	const int32x4_t bhalf = vdupq_n_s32((int32_t)((1u << bs) - 1u) >> 1);
	const int32x4_t ymask = vdupq_n_s32((int32_t)((1u << ys1) - 1u));
	const int32x4_t yhalf = vdupq_n_s32((int32_t)((1u << ys1) - 1u) >> 1);
	const int32x4_t hi = vdupq_n_s32(q->hi), lo = vdupq_n_s32(q->lo);
	const int32_t sat_hi = q->cap_saturates ? q->hi_range : INT32_MAX;
	const int32_t sat_lo = q->act == KL_ACT_NONE ? q->lo : INT32_MIN;
	const int32_t zp = q->zp;
	mve_pred16_t any = 0;
	for (int i = 0; i < n; i += 4) {
		const mve_pred16_t p = vctp32q((uint32_t)(n - i));
		const int32x4_t bias = vldrwq_z_s32(b + i, p);
		const int32x4_t rb = vsubq_s32(
			vshlq_r_s32(bias, -bs),
			vshrq_n_s32(vsubq_s32(vsubq_s32(bhalf, vshrq_n_s32(bias, 31)),
					      vandq_s32(bias, bmask)),
				    31));
		const int32x4_t acc = vqaddq_s32(vldrwq_z_s32(dot + i, p), rb);
		int32x4_t r = vaddq_s32(vshrq_n_s32(acc, 1), vandq_s32(acc, vdupq_n_s32(1)));
		if (ys1 > 0) {
			r = vsubq_s32(vshlq_r_s32(r, -ys1),
				      vshrq_n_s32(vsubq_s32(vsubq_s32(yhalf, vshrq_n_s32(r, 31)),
							    vandq_s32(r, ymask)),
						  31));
		}
		/* r >= INT32_MAX or <= INT32_MIN where the flag does not apply:
		 * r is at most 2^30 in magnitude here, never there */
		any |= (vcmpgeq_n_s32(r, sat_hi) | vcmpleq_n_s32(r, sat_lo)) & p;
		vstrbq_p_s32(y + i, vaddq_n_s32(vmaxq_s32(vminq_s32(r, hi), lo), zp), p);
	}
	return sat | (any != 0);
}

#endif
