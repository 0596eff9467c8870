/* Depthwise convolution (multiplier 1), int8, mve backend: the forward pass,
 * bit-identical to src/kernels/ref.
 *
 * sum_t w[t][c] (x_t[c] - x_zp) = sum_t w[t][c] x_t[c] - x_zp sum_t w[t][c]:
 * the input is used raw, padding taps read a row of x_zp (they then add
 * nothing), and -x_zp sum_t w[t][c] is one table per call, added to the
 * rounded bias of the channel. HWC keeps a
 * pixel's channels together, so one output pixel takes 8 channels per block:
 * per pair of taps four VLDRB.S16 (input, weight), two VMUL.I16 and a VADD
 * (two taps' products still fit int16), then VMOVLB / VMOVLT and two VADD.I32
 * into two int32 accumulators holding the even and the odd channels, stored
 * in channel order by VST2 (11 instructions per 16 MACs; eight Q registers,
 * no spills). Channels beyond the last multiple of 8: four int32 lanes,
 * predicated. The
 * raw dots of a pixel go to the scratch, then the output stage on four
 * outputs per step (kl_mve_requant_n). Scratch: 9 bytes per channel (rounded
 * to 4) and a pointer per tap, within kl_conv_s8_scratch(). The gradients
 * stay with the dsp backend. */
#include "kilolearn/kl_kernels.h"

#if KL_KERNELS_MVE
#include "kl_mve_util.h"

/* raw dots of 8 channels of one pixel, P[t] + c the input of tap t */
static inline void dw_block8(const int8_t *const *P, const int8_t *w, long C, int taps, int c,
			     int32_t *dots)
{
	int32x4_t a0 = vdupq_n_s32(0), a1 = vdupq_n_s32(0);
	const int8_t *wp = w + c;
	int t = 0;
	for (; t + 2 <= taps; t += 2) {
		const int16x8_t pa = vmulq_s16(vldrbq_s16(P[t] + c), vldrbq_s16(wp));
		const int16x8_t pp = vaddq_s16(pa, vmulq_s16(vldrbq_s16(P[t + 1] + c),
							     vldrbq_s16(wp + C)));
		a0 = vaddq_s32(a0, vmovlbq_s16(pp));
		a1 = vaddq_s32(a1, vmovltq_s16(pp));
		wp += 2 * C;
	}
	if (t < taps) {
		const int16x8_t pa = vmulq_s16(vldrbq_s16(P[t] + c), vldrbq_s16(wp));
		a0 = vaddq_s32(a0, vmovlbq_s16(pa));
		a1 = vaddq_s32(a1, vmovltq_s16(pa));
	}
	int32x4x2_t v = {{a0, a1}};
	vst2q_s32(dots, v);
}

int kl_mve_depthwise_conv_s8(const kl_geom_t *g, const int8_t *x, int32_t x_zp, const int8_t *w,
			     const int32_t *b, const kl_requant_t *rq, int8_t *y, void *scratch)
{
	const int C = g->c, taps = g->kh * g->kw, c4 = (C + 3) & ~3, c8 = C & ~7;
	if (rq->b_shift < 1 || taps > 4096) { /* a rounded bias may reach the int32
					      * limits: the correction would not add exactly */
		return kl_ref_depthwise_conv_s8(g, x, x_zp, w, b, rq, y, scratch);
	}
	int32_t *corr = (int32_t *)scratch; /* c4: rounded bias - x_zp sum_t w[t][c] */
	int32_t *dots = corr + c4;          /* c4 */
	const int8_t **P = (const int8_t **)(void *)(dots + c4); /* taps */
	int8_t *zrow = (int8_t *)(void *)(P + taps);               /* c4 bytes of x_zp */
	for (int c = 0; c < C; c += 4) {
		const mve_pred16_t p = vctp32q((uint32_t)(C - c));
		int32x4_t s = vdupq_n_s32(0);
		for (int t = 0; t < taps; t++) {
			s = vaddq_s32(s, vldrbq_z_s32(w + (long)t * C + c, p));
		}
		vstrwq_p_s32(corr + c, vmulq_n_s32(s, -x_zp), p);
		vstrbq_p_s32(zrow + c, vdupq_n_s32(x_zp), p);
	}
	for (int c = 0; c < C; c++) { /* |corr| < 2^14 taps, |rounded bias| <= 2^30: exact */
		corr[c] += kl_rshift_round(b[c], rq->b_shift);
	}
	int sat = 0;
	for (int oy = 0; oy < g->ho; oy++) {
		const int iy0 = oy * g->stride - g->pad_t;
		for (int ox = 0; ox < g->wo; ox++) {
			const int ix0 = ox * g->stride - g->pad_l;
			int t = 0;
			for (int ky = 0; ky < g->kh; ky++) {
				const int iy = iy0 + ky;
				for (int kx = 0; kx < g->kw; kx++, t++) {
					const int ix = ix0 + kx;
					P[t] = (iy < 0 || iy >= g->h || ix < 0 || ix >= g->w)
						       ? zrow
						       : x + ((long)iy * g->w + ix) * C;
				}
			}
			int c = 0;
			for (; c < c8; c += 8) {
				dw_block8(P, w, C, taps, c, dots + c);
			}
			for (; c < C; c += 4) {
				const mve_pred16_t p = vctp32q((uint32_t)(C - c));
				int32x4_t a = vdupq_n_s32(0);
				for (t = 0; t < taps; t++) {
					a = vaddq_s32(a, vmulq_s32(vldrbq_z_s32(P[t] + c, p),
								   vldrbq_z_s32(w + (long)t * C + c, p)));
				}
				vstrwq_p_s32(dots + c, a, p);
			}
			sat |= kl_mve_requant_cb_n(dots, corr, rq, y + ((long)oy * g->wo + ox) * C, C);
		}
	}
	return sat;
}

#endif
