/* Helpers of the mve kernels (Armv8.1-M MVE, "Helium": Cortex-M55/M85): the
 * output stage of an int8 layer on four int32 lanes, bit-identical to
 * kl_requant per element, and a minimum scan. Only included where
 * __ARM_FEATURE_MVE is defined. */
#ifndef KL_MVE_UTIL_H
#define KL_MVE_UTIL_H

#include <arm_mve.h>

#include "kilolearn/kl_kernels.h"

/* the smallest of n int8 */
static inline int8_t kl_mve_min_s8(const int8_t *v, int n)
{
	int8_t m = 127;
	for (int i = 0; i < n; i += 16) {
		m = vminvq_s8(m, vldrbq_z_s8(v + i, vctp8q((uint32_t)(n - i))));
	}
	return m;
}

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

/* r for four lanes: the bias rounded (unless done), added with saturation,
 * the output shift */
static inline __attribute__((always_inline)) int32x4_t
kl_mve_rq_lanes(int32x4_t dot, int32x4_t rb, int bs, int32_t yk, int ys, const int rounded,
		const int ys2)
{
	if (!rounded) {
		rb = kl_mve_rshift_round(rb, bs);
	}
	const int32x4_t acc = vqaddq_s32(dot, rb);
	int32x4_t t = vqaddq_n_s32(acc, yk);
	if (ys2) { /* m = -2 where acc < -1 */
		t = vaddq_s32(t, vshlq_n_s32(vshrq_n_s32(vaddq_n_s32(acc, 1), 31), 1));
	}
	return vshlq_r_s32(t, -ys);
}

static inline __attribute__((always_inline)) int
kl_mve_requant_loop(const int32_t *dot, const int32_t *b, const kl_requant_t *q, int8_t *y, int n,
		    const int rounded, const int ys2)
{
	const int bs = q->b_shift, ys = q->y_shift;
	const int32_t yk = ys >= 2 ? 1 + ((int32_t)1 << (ys - 1)) : 1;
	const int32_t sat_hi = q->cap_saturates ? q->hi_range : INT32_MAX;
	const int32_t sat_lo = q->act == KL_ACT_NONE ? q->lo : INT32_MIN;
	const int32_t hi = q->hi, lo = q->lo, zp = q->zp;
	/* |r| < 2^31 >> ys: never INT32_MAX / INT32_MIN, so the flag is the
	 * largest r reaching sat_hi or the smallest sat_lo */
	int32x4_t rmax = vdupq_n_s32(INT32_MIN), rmin = vdupq_n_s32(INT32_MAX);
	const int n4 = n & ~3;
	int i = 0;
	for (; i < n4; i += 4) {
		const int32x4_t r = kl_mve_rq_lanes(vldrwq_s32(dot + i), vldrwq_s32(b + i), bs, yk,
						    ys, rounded, ys2);
		rmax = vmaxq_s32(rmax, r);
		rmin = vminq_s32(rmin, r);
		const int32x4_t c = vmaxq_s32(vminq_s32(r, vdupq_n_s32(hi)), vdupq_n_s32(lo));
		vstrbq_s32(y + i, vaddq_n_s32(c, zp));
	}
	if (i < n) {
		const mve_pred16_t p = vctp32q((uint32_t)(n - i));
		const int32x4_t r = kl_mve_rq_lanes(vldrwq_z_s32(dot + i, p), vldrwq_z_s32(b + i, p),
						    bs, yk, ys, rounded, ys2);
		rmax = vmaxq_m_s32(rmax, rmax, r, p);
		rmin = vminq_m_s32(rmin, rmin, r, p);
		const int32x4_t c = vmaxq_s32(vminq_s32(r, vdupq_n_s32(hi)), vdupq_n_s32(lo));
		vstrbq_p_s32(y + i, vaddq_n_s32(c, zp), p);
	}
	return vmaxvq_s32(INT32_MIN, rmax) >= sat_hi || vminvq_s32(INT32_MAX, rmin) <= sat_lo;
}

/* the output stage over n raw dot products, with the bias either raw (b,
 * rounded here by b_shift on four lanes) or already rounded (cb[i] =
 * kl_rshift_round(b[i], b_shift), plus any term folded into the dots whose
 * sum stays exact in int32). The output shift 1..22 as one rounding
 * constant and one shift ((x + k + (x < -1 ? m : 0)) >> s, the dsp backend's
 * kl_rq_k / kl_rq_m; the constant added with saturation, which changes no
 * output there); other shifts go through kl_requant one by one. */
static inline __attribute__((always_inline)) int
kl_mve_requant_core(const int32_t *dot, const int32_t *b, const kl_requant_t *q, int8_t *y, int n,
		    const int rounded)
{
	int sat = 0;
	const int bs = q->b_shift, ys = q->y_shift;
	if (ys < 1 || ys > 22 || (!rounded && (bs < 1 || bs > 31))) {
		for (int i = 0; i < n; i++) {
			const int32_t rb = rounded ? b[i] : kl_rshift_round(b[i], bs);
			const int32_t acc = kl_sat32((int64_t)dot[i] + rb);
			y[i] = kl_requant_clamp(q, kl_requant_shift(acc, ys), &sat);
		}
		return sat;
	}
	return ys >= 2 ? kl_mve_requant_loop(dot, b, q, y, n, rounded, 1)
		       : kl_mve_requant_loop(dot, b, q, y, n, rounded, 0);
}

/* raw biases b */
static inline int kl_mve_requant_n(const int32_t *dot, const int32_t *b, const kl_requant_t *q,
				   int8_t *y, int n)
{
	return kl_mve_requant_core(dot, b, q, y, n, 0);
}

/* rounded biases cb */
static inline int kl_mve_requant_cb_n(const int32_t *dot, const int32_t *cb,
				      const kl_requant_t *q, int8_t *y, int n)
{
	return kl_mve_requant_core(dot, cb, q, y, n, 1);
}

#endif
