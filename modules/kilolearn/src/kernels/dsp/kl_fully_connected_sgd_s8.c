/* Fully connected layer, int8, dsp backend: the fused SGD update with the
 * stochastic-rounding dither (same integers as the ref kernel). The input is
 * centred once into int16 pairs (x0, x2), (x1, x3) per group of four; where
 * the row's step factor fits a halfword, SMLABB / SMLABT make the four steps
 * in one assembly loop; they are saturated, packed and subtracted with one
 * QSUB8, then -128 lanes are lifted to -127. */
#include "kilolearn/kl_kernels.h"

#if KL_KERNELS_DSP
#include "kl_dsp_util.h"

/* (c * xc + dither) >> sh for weight j + k (xc holds each group of four as
 * 0, 2, 1, 3); fits in 16 bits when sh >= 13 */
#define STEP(k, dk) ((c * xc[j + ((k) == 1 ? 2 : (k) == 2 ? 1 : (k))] + (int32_t)((dk) >> dsh)) >> sh)

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
	int16_t *xc = scratch; /* centred, each group of four as (0, 2, 1, 3) */
	kl_center_interleave_s8(x, x_zp, xc, n_in);
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
		if (c >= -32768 && c <= 32767 && n4 != 0) {
			/* c in one halfword: SMLABB / SMLABT against the int16 input
			 * pairs; 32 instructions per four weights */
			const int8_t *const end = row + n4;
			const uint32_t *xp = (const uint32_t *)(const void *)xc;
			int8_t *rp = row;
			uint32_t xa, xb, q0, q2, t;
			__asm__("1:\n\t"
				/* xa = (x0, x2), xb = (x1, x3): steps 0, 1, 2, 3 with
				 * dithers d, d + W, d + 2W, d + 3W */
				"ldrd %[xa], %[xb], [%[xp]], #8\n\t"
				"lsr %[t], %[d], %[dsh]\n\t"
				"smlabb %[q0], %[c], %[xa], %[t]\n\t"
				"add %[d], %[d], %[wy]\n\t"
				"lsr %[t], %[d], %[dsh]\n\t"
				"smlabb %[q2], %[c], %[xb], %[t]\n\t"
				"add %[d], %[d], %[wy]\n\t"
				"lsr %[t], %[d], %[dsh]\n\t"
				"smlabt %[xa], %[c], %[xa], %[t]\n\t"
				"add %[d], %[d], %[wy]\n\t"
				"lsr %[t], %[d], %[dsh]\n\t"
				"smlabt %[xb], %[c], %[xb], %[t]\n\t"
				"add %[d], %[d], %[wy]\n\t"
				"asr %[q0], %[q0], %[sh]\n\t" /* q0 */
				"asr %[q2], %[q2], %[sh]\n\t" /* q1 */
				"asr %[xa], %[xa], %[sh]\n\t" /* q2 */
				"asr %[xb], %[xb], %[sh]\n\t" /* q3 */
				"pkhbt %[q0], %[q0], %[xa], lsl #16\n\t"
				"pkhbt %[xa], %[q2], %[xb], lsl #16\n\t"
				"ssat16 %[q0], #8, %[q0]\n\t"
				"ssat16 %[xa], #8, %[xa]\n\t"
				"uxtb16 %[q0], %[q0]\n\t"
				"uxtb16 %[xa], %[xa]\n\t"
				"orr %[q0], %[q0], %[xa], lsl #8\n\t"
				"ldr %[t], [%[rp]]\n\t"
				"mov %[xb], #0x81818181\n\t"
				"qsub8 %[t], %[t], %[q0]\n\t"
				"ssub8 %[q0], %[t], %[xb]\n\t"
				"sel %[t], %[t], %[xb]\n\t"
				"str %[t], [%[rp]], #4\n\t"
				"cmp %[rp], %[end]\n\t"
				"bne 1b\n\t"
				: [d] "+r"(d), [rp] "+r"(rp), [xp] "+r"(xp), [xa] "=&r"(xa),
				  [xb] "=&r"(xb), [q0] "=&r"(q0), [q2] "=&r"(q2), [t] "=&r"(t)
				: [c] "r"(c), [wy] "r"(wy), [dsh] "r"(dsh), [sh] "r"(sh),
				  [end] "r"(end)
				: "cc", "memory");
			j = n4;
		}
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
		b[i] = __qsub(b[i], kl_rshift_round(c, b_shift)); /* = kl_sat32 of the difference */
	}
	*dither = d;
}
#else
typedef int kl_dsp_fully_connected_sgd_s8_unused;
#endif
