/* Fully connected layer, int8, dsp backend: the fused SGD update with the
 * stochastic-rounding dither (same integers as the ref kernel). The input is
 * centred once into int16; four weight steps are saturated, packed and
 * subtracted with one QSUB8, then -128 lanes are lifted to -127. */
#include "kilolearn/kl_kernels.h"

#if KL_KERNELS_DSP
#include "kl_dsp_util.h"

/* (c * xc + dither) >> sh for one weight; fits in 16 bits when sh >= 13 */
#define STEP(k, dk) ((c * xc[j + (k)] + (int32_t)((dk) >> dsh)) >> sh)

void kl_dsp_fully_connected_sgd_s8(int8_t *w, int32_t *b, const int8_t *dy, const int8_t *x,
				   int32_t x_zp, int32_t lr_q, int w_shift, int b_shift,
				   uint32_t *dither, int n_in, int n_out, int16_t *scratch)
{
	if (w_shift < 13 || w_shift > 30) { /* rare: the general path */
		kl_ref_fully_connected_sgd_s8(w, b, dy, x, x_zp, lr_q, w_shift, b_shift, dither,
					      n_in, n_out, scratch);
		return;
	}
	uint32_t d = *dither;
	int16_t *xc = scratch;
	for (int j = 0; j < n_in; j++) {
		xc[j] = (int16_t)(x[j] - x_zp);
	}
	const int sh = w_shift;
	const int dsh = 32 - sh;
	const int n4 = n_in & ~3;
	/* the Weyl increment in a register, so the four dither steps stay adds
	 * (GCC would otherwise fold them into d + k W from literal loads) */
	uint32_t wy = KL_WEYL;
	__asm__("" : "+r"(wy));
	for (int i = 0; i < n_out; i++) {
		const int32_t c = (int32_t)dy[i] * lr_q;
		if (c == 0) {
			d += (uint32_t)n_in * KL_WEYL;
			continue;
		}
		int8_t *row = w + (long)i * n_in;
		int j = 0;
		for (; j < n4; j += 4) {
			/* one dither register advanced per weight (four phases in
			 * registers spill on the M4) */
			const int32_t q0 = STEP(0, d);
			d += wy;
			const int32_t q1 = STEP(1, d);
			d += wy;
			const int32_t q2 = STEP(2, d);
			d += wy;
			const int32_t q3 = STEP(3, d);
			d += wy;
			/* lanes (q0, q2) and (q1, q3), saturated to int8, then bytes
			 * interleaved back to (q0, q1, q2, q3) */
			const uint32_t e = (uint32_t)__ssat16(
				(int16x2_t)kl_pkhbt((uint32_t)q0, (uint32_t)q2), 8);
			const uint32_t o = (uint32_t)__ssat16(
				(int16x2_t)kl_pkhbt((uint32_t)q1, (uint32_t)q3), 8);
			const uint32_t steps = (uint32_t)__uxtb16(e) | ((uint32_t)__uxtb16(o) << 8);
			uint32_t word;
			memcpy(&word, row + j, 4);
			word = kl_clamp_m127_s8x4((uint32_t)__qsub8((int8x4_t)word, (int8x4_t)steps));
			memcpy(row + j, &word, 4);
		}
		for (; j < n_in; j++) {
			const int32_t v = c * xc[j];
			row[j] = kl_sub_clamp_w(row[j], (v + (int32_t)(d >> dsh)) >> sh);
			d += KL_WEYL;
		}
		b[i] = kl_sat32((int64_t)b[i] - kl_rshift_round(c, b_shift));
	}
	*dither = d;
}
#else
typedef int kl_dsp_fully_connected_sgd_s8_unused;
#endif
