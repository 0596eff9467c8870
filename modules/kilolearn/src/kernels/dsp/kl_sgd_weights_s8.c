/* The int8 weight update from int32 gradients (conv, depthwise, kept
 * gradients), dsp backend: w -= floor((gw * lr_q + dither) >> w_shift) with
 * the stochastic-rounding dither of kl_ref_sgd_weights_s8, the same integers.
 * Where every product and its dither fit int32 and every step an int16 lane
 * (checked once per call from the largest |gw|), four weights take one MLA,
 * LSR, ASR and dither add each, then one saturating pack and QSUB8;
 * otherwise the ref code runs. */
#include "kilolearn/kl_kernels.h"

#if KL_KERNELS_DSP
#include "kl_dsp_util.h"

void kl_dsp_sgd_weights_s8(int8_t *w, const int32_t *gw, int32_t lr_q, int w_shift,
			   uint32_t *dither, int n)
{
	uint32_t m = 0;
	for (int k = 0; k < n; k++) {
		const uint32_t a = gw[k] < 0 ? 0u - (uint32_t)gw[k] : (uint32_t)gw[k];
		m = a > m ? a : m;
	}
	const uint32_t al = lr_q < 0 ? 0u - (uint32_t)lr_q : (uint32_t)lr_q;
	/* |gw * lr_q| < 2^30 (plus a dither < 2^30: no overflow) and
	 * < 2^(w_shift + 14) (every step fits an int16 lane before saturation) */
	const uint64_t big = (uint64_t)m * al;
	if (w_shift < 13 || w_shift > 30 || (big >> 30) != 0u || (big >> (w_shift + 14)) != 0u) {
		kl_ref_sgd_weights_s8(w, gw, lr_q, w_shift, dither, n);
		return;
	}
	uint32_t d = *dither;
	const int sh = w_shift, dsh = 32 - sh;
	const uint32_t wy = KL_WEYL;
	const int n4 = n & ~3;
	for (int k = 0; k < n4; k += 4) {
		const int32_t q0 = (gw[k] * lr_q + (int32_t)(d >> dsh)) >> sh;
		d += wy;
		const int32_t q1 = (gw[k + 1] * lr_q + (int32_t)(d >> dsh)) >> sh;
		d += wy;
		const int32_t q2 = (gw[k + 2] * lr_q + (int32_t)(d >> dsh)) >> sh;
		d += wy;
		const int32_t q3 = (gw[k + 3] * lr_q + (int32_t)(d >> dsh)) >> sh;
		d += wy;
		/* |q| <= 2^14 + 1: int16 lanes hold them, saturated to int8 */
		const uint32_t e = (uint32_t)__ssat16((int16x2_t)kl_pkhbt((uint32_t)q0, (uint32_t)q2), 8);
		const uint32_t o = (uint32_t)__ssat16((int16x2_t)kl_pkhbt((uint32_t)q1, (uint32_t)q3), 8);
		const uint32_t steps = (uint32_t)__uxtb16(e) | ((uint32_t)__uxtb16(o) << 8);
		uint32_t word;
		memcpy(&word, w + k, 4);
		word = kl_clamp_m127_s8x4((uint32_t)__qsub8((int8x4_t)word, (int8x4_t)steps));
		memcpy(w + k, &word, 4);
	}
	for (int k = n4; k < n; k++) {
		w[k] = kl_sub_clamp_w(w[k], kl_stochastic_shift((int64_t)gw[k] * lr_q, sh, d));
		d += wy;
	}
	*dither = d;
}
#else
typedef int kl_dsp_sgd_weights_s8_unused;
#endif
