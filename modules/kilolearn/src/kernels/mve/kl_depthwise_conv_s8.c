/* Depthwise convolution (multiplier 1), int8, mve backend: the forward pass,
 * bit-identical to src/kernels/ref.
 *
 * sum_t w[t][c] (x_t[c] - x_zp) = sum_t w[t][c] x_t[c] - x_zp sum_t w[t][c]:
 * the input is used raw, padding taps read a row of x_zp (they then add
 * nothing), and -x_zp sum_t w[t][c] is one table per call. HWC keeps a
 * pixel's channels together, so one output pixel takes 16 channels per
 * block: per pair of taps four VLDRB (input, weight), VMULLB / VMULLT (16
 * int8 products as two int16x8, even and odd channels; two taps' products
 * still fit int16), two VADD.I16, then VMOVLB / VMOVLT and VADD.I32 into four
 * int32 accumulators holding channels (0, 4, 8, 12), (1, 5, ...), (2, ...),
 * (3, ...), stored in channel order by VST4 (18 instructions per 32 MACs).
 * Channels beyond the last multiple of 16: four int32 lanes, predicated. The
 * raw dots of a pixel go to the scratch, then the output stage on four
 * outputs per step (kl_mve_requant_n). Scratch: 9 bytes per channel (rounded
 * to 4) and a pointer per tap, within kl_conv_s8_scratch(). The gradients
 * stay with the dsp backend. */
#include "kilolearn/kl_kernels.h"

#if KL_KERNELS_MVE
#include "kl_mve_util.h"

/* products of taps (xa, wa) and (xb, wb) added into the accumulators */
#define DW_PAIR(xa, wa, xb, wb)                                                                   \
	do {                                                                                      \
		const int16x8_t pe = vaddq_s16(vmullbq_int_s8(xa, wa), vmullbq_int_s8(xb, wb));   \
		const int16x8_t po = vaddq_s16(vmulltq_int_s8(xa, wa), vmulltq_int_s8(xb, wb));   \
		a0 = vaddq_s32(a0, vmovlbq_s16(pe));                                              \
		a2 = vaddq_s32(a2, vmovltq_s16(pe));                                              \
		a1 = vaddq_s32(a1, vmovlbq_s16(po));                                              \
		a3 = vaddq_s32(a3, vmovltq_s16(po));                                              \
	} while (0)

/* 16 channels of one pixel: P[t] + c the input of tap t, corr the block's
 * correction in accumulator order */
static inline void dw_block16(const int8_t *const *P, const int8_t *w, long C, int taps, int c,
			      const int32_t *corr, int32_t *dots)
{
	int32x4_t a0 = vldrwq_s32(corr), a1 = vldrwq_s32(corr + 4);
	int32x4_t a2 = vldrwq_s32(corr + 8), a3 = vldrwq_s32(corr + 12);
	const int8_t *wp = w + c;
	int t = 0;
	for (; t + 2 <= taps; t += 2) {
		const int8x16_t xa = vldrbq_s8(P[t] + c), wa = vldrbq_s8(wp);
		const int8x16_t xb = vldrbq_s8(P[t + 1] + c), wb = vldrbq_s8(wp + C);
		DW_PAIR(xa, wa, xb, wb);
		wp += 2 * C;
	}
	if (t < taps) {
		const int8x16_t xa = vldrbq_s8(P[t] + c), wa = vldrbq_s8(wp);
		const int8x16_t z = vdupq_n_s8(0);
		DW_PAIR(xa, wa, z, z);
	}
	int32x4x4_t v = {{a0, a1, a2, a3}};
	vst4q_s32(dots, v);
}

int kl_mve_depthwise_conv_s8(const kl_geom_t *g, const int8_t *x, int32_t x_zp, const int8_t *w,
			     const int32_t *b, const kl_requant_t *rq, int8_t *y, void *scratch)
{
	const int C = g->c, taps = g->kh * g->kw, c4 = (C + 3) & ~3, c16 = C & ~15;
	int32_t *corr = (int32_t *)scratch; /* c4: blocks of 16 in accumulator order */
	int32_t *dots = corr + c4;          /* c4 */
	const int8_t **P = (const int8_t **)(void *)(dots + c4); /* taps */
	int8_t *zrow = (int8_t *)(void *)(P + taps);               /* c4 bytes of x_zp */
	for (int c = 0; c < C; c += 4) {
		const mve_pred16_t p = vctp32q((uint32_t)(C - c));
		int32x4_t s = vdupq_n_s32(0);
		for (int t = 0; t < taps; t++) {
			s = vaddq_s32(s, vldrbq_z_s32(w + (long)t * C + c, p));
		}
		vstrwq_p_s32(dots + c, vmulq_n_s32(s, -x_zp), p);
		vstrbq_p_s32(zrow + c, vdupq_n_s32(x_zp), p);
	}
	for (int c = 0; c < C; c++) { /* channel c of a block: lane (c % 16) / 4 of part c % 4 */
		const int k = c & 15;
		corr[c < c16 ? (c & ~15) + 4 * (k & 3) + (k >> 2) : c] = dots[c];
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
			for (; c < c16; c += 16) {
				dw_block16(P, w, C, taps, c, corr + c, dots + c);
			}
			for (; c < C; c += 4) {
				const mve_pred16_t p = vctp32q((uint32_t)(C - c));
				int32x4_t a = vldrwq_z_s32(corr + c, p);
				for (t = 0; t < taps; t++) {
					a = vaddq_s32(a, vmulq_s32(vldrbq_z_s32(P[t] + c, p),
								   vldrbq_z_s32(w + (long)t * C + c, p)));
				}
				vstrwq_p_s32(dots + c, a, p);
			}
			sat |= kl_mve_requant_n(dots, b, rq, y + ((long)oy * g->wo + ox) * C, C);
		}
	}
	return sat;
}

#endif
