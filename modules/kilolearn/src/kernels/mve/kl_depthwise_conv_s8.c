/* Depthwise convolution (multiplier 1), int8, mve backend: the forward pass
 * and the input gradient, bit-identical to src/kernels/ref (the weight
 * gradient: kl_depthwise_conv_grad_s8.c).
 *
 * forward     sum_t w[t][c] (x_t[c] - x_zp) = sum_t w[t][c] x_t[c] - x_zp
 *             sum_t w[t][c]: the input is used raw, padding taps read a row
 *             of x_zp (they then add nothing), and -x_zp sum_t w[t][c] is one
 *             table per call, added to the rounded bias of the channel. HWC
 *             keeps a pixel's channels together, so one output pixel takes 16
 *             channels per block, as two halves of 8: per pair of taps and
 *             half four VLDRB.S16 (input, weight), two VMUL.I16 and a VADD
 *             (two taps' products still fit int16 with weights in [-127,
 *             127]; a weight of -128 sends the call to the ref kernel), then
 *             VMOVLB / VMOVLT and two VADD.I32 into two int32 accumulators
 *             holding the half's even and odd channels, stored in channel
 *             order by VST2. Inner pixels find their taps at fixed offsets,
 *             border ones through a table of pointers. Then 8 channels the
 *             same way, the last ones on four int32 lanes, predicated. The
 *             raw dots of a pixel go to the scratch, then the output stage on
 *             four outputs per step (kl_mve_requant_cb_n).
 * input grad  stride 1: a gather, for each input pixel the (dy pixel, tap)
 *             pairs that reach it, then the same blocks on dy and the taps'
 *             weights (inner pixels: the forward's blocks, dy at fixed
 *             offsets); stride >= 2 (a quarter of the pairs or fewer per input
 *             pixel): a scatter from each dy pixel into int32 sums.
 * Scratch: forward 9 bytes per channel (rounded to 4) and 8 bytes per tap,
 * input gradient 12 bytes per tap, within kl_conv_s8_scratch(). */
#include <stddef.h>

#include "kilolearn/kl_kernels.h"

#if KL_KERNELS_MVE
#include "kl_mve_util.h"

/* one half (8 channels at byte offset h) of a pair of taps into (e, o) */
#define DW_HALF(h, e, o)                                                                          \
	do {                                                                                      \
		int16x8_t pp = vmulq_s16(vldrbq_s16(xa + (h)), vldrbq_s16(wp + (h)));             \
		pp = vaddq_s16(pp, vmulq_s16(vldrbq_s16(xb + (h)), vldrbq_s16(wp + C + (h))));    \
		e = vaddq_s32(e, vmovlbq_s16(pp));                                                \
		o = vaddq_s32(o, vmovltq_s16(pp));                                                \
	} while (0)

/* raw dots of 16 channels of one pixel: tap t's input at P[t] + c (P != NULL)
 * or at base + off[t] */
static inline __attribute__((always_inline)) void
dw_block16(const int8_t *const *P, const int8_t *base, const int32_t *off, const int8_t *w,
	   long C, int taps, int c, int32_t *dots)
{
	int32x4_t a0 = vdupq_n_s32(0), a1 = a0, a2 = a0, a3 = a0;
	const int8_t *wp = w + c;
	int t = 0;
	for (; t + 2 <= taps; t += 2) {
		const int8_t *xa = P != NULL ? P[t] + c : base + off[t];
		const int8_t *xb = P != NULL ? P[t + 1] + c : base + off[t + 1];
		DW_HALF(0, a0, a1);
		DW_HALF(8, a2, a3);
		wp += 2 * C;
	}
	if (t < taps) {
		const int8_t *xa = P != NULL ? P[t] + c : base + off[t];
		int16x8_t pp = vmulq_s16(vldrbq_s16(xa), vldrbq_s16(wp));
		a0 = vaddq_s32(a0, vmovlbq_s16(pp));
		a1 = vaddq_s32(a1, vmovltq_s16(pp));
		pp = vmulq_s16(vldrbq_s16(xa + 8), vldrbq_s16(wp + 8));
		a2 = vaddq_s32(a2, vmovlbq_s16(pp));
		a3 = vaddq_s32(a3, vmovltq_s16(pp));
	}
	int32x4x2_t v = {{a0, a1}};
	vst2q_s32(dots, v);
	v.val[0] = a2;
	v.val[1] = a3;
	vst2q_s32(dots + 8, v);
}

/* the same for 8 channels */
static inline __attribute__((always_inline)) void
dw_block8(const int8_t *const *P, const int8_t *base, const int32_t *off, const int8_t *w, long C,
	  int taps, int c, int32_t *dots)
{
	int32x4_t a0 = vdupq_n_s32(0), a1 = a0;
	const int8_t *wp = w + c;
	int t = 0;
	for (; t + 2 <= taps; t += 2) {
		const int8_t *xa = P != NULL ? P[t] + c : base + off[t];
		const int8_t *xb = P != NULL ? P[t + 1] + c : base + off[t + 1];
		DW_HALF(0, a0, a1);
		wp += 2 * C;
	}
	if (t < taps) {
		const int8_t *xa = P != NULL ? P[t] + c : base + off[t];
		const int16x8_t pp = vmulq_s16(vldrbq_s16(xa), vldrbq_s16(wp));
		a0 = vaddq_s32(a0, vmovlbq_s16(pp));
		a1 = vaddq_s32(a1, vmovltq_s16(pp));
	}
	int32x4x2_t v = {{a0, a1}};
	vst2q_s32(dots, v);
}

/* every channel of one pixel (P or base + off as above) */
static inline __attribute__((always_inline)) void
dw_pixel(const int8_t *const *P, const int8_t *base, const int32_t *off, const int8_t *w, int C,
	 int taps, int32_t *dots)
{
	int c = 0;
	for (; c + 16 <= C; c += 16) {
		dw_block16(P, base + c, off, w, C, taps, c, dots + c);
	}
	if (c + 8 <= C) {
		dw_block8(P, base + c, off, w, C, taps, c, dots + c);
		c += 8;
	}
	for (; c < C; c += 4) {
		const mve_pred16_t p = vctp32q((uint32_t)(C - c));
		int32x4_t a = vdupq_n_s32(0);
		for (int t = 0; t < taps; t++) {
			const int8_t *xa = P != NULL ? P[t] + c : base + c + off[t];
			a = vaddq_s32(a, vmulq_s32(vldrbq_z_s32(xa, p),
						   vldrbq_z_s32(w + (long)t * C + c, p)));
		}
		vstrwq_p_s32(dots + c, a, p);
	}
}

/* the output stage of one pixel, out of line: its loop keeps its constants
 * in registers */
static __attribute__((noinline)) int requant_pixel(const int32_t *dots, const int32_t *cb,
						   const kl_requant_t *rq, int8_t *y, int n)
{
	return kl_mve_requant_cb_n(dots, cb, rq, y, n);
}

int kl_mve_depthwise_conv_s8(const kl_geom_t *g, const int8_t *x, int32_t x_zp, const int8_t *w,
			     const int32_t *b, const kl_requant_t *rq, int8_t *y, void *scratch)
{
	const int C = g->c, taps = g->kh * g->kw, c4 = (C + 3) & ~3;
	/* a weight of -128 (outside the engine's symmetric range): two products
	 * of -128 * -128 would not fit int16; a bias shift below 1: a rounded
	 * bias may reach the int32 limits and the correction not add exactly */
	if (rq->b_shift < 1 || taps > 4096 || kl_mve_min_s8(w, taps * C) == -128) {
		return kl_ref_depthwise_conv_s8(g, x, x_zp, w, b, rq, y, scratch);
	}
	int32_t *corr = (int32_t *)scratch; /* c4: rounded bias - x_zp sum_t w[t][c] */
	int32_t *dots = corr + c4;          /* c4 */
	const int8_t **P = (const int8_t **)(void *)(dots + c4); /* taps */
	int32_t *off = (int32_t *)(void *)(P + taps);              /* taps */
	int8_t *zrow = (int8_t *)(void *)(off + taps);             /* c4 bytes of x_zp */
	for (int ky = 0, t = 0; ky < g->kh; ky++) { /* tap offsets of an inner pixel */
		for (int kx = 0; kx < g->kw; kx++, t++) {
			off[t] = (ky * g->w + kx) * C;
		}
	}
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
			if (iy0 >= 0 && iy0 + g->kh <= g->h && ix0 >= 0 && ix0 + g->kw <= g->w) {
				dw_pixel(NULL, x + ((long)iy0 * g->w + ix0) * C, off, w, C, taps,
					 dots);
			} else { /* a border pixel: the taps' pointers, padding at zrow */
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
				dw_pixel(P, x, off, w, C, taps, dots);
			}
			sat |= requant_pixel(dots, corr, rq, y + ((long)oy * g->wo + ox) * C, C);
		}
	}
	return sat;
}

/* ---- input gradient ---------------------------------------------------- */

/* one half (8 channels at byte offset h) of a pair (da, wa), (db, wb) */
#define BW_HALF(h, e, o)                                                                          \
	do {                                                                                      \
		int16x8_t pp = vmulq_s16(vldrbq_s16(da + (h)), vldrbq_s16(wa + (h)));             \
		pp = vaddq_s16(pp, vmulq_s16(vldrbq_s16(db + (h)), vldrbq_s16(wb + (h))));        \
		e = vaddq_s32(e, vmovlbq_s16(pp));                                                \
		o = vaddq_s32(o, vmovltq_s16(pp));                                                \
	} while (0)

/* acc[0..16 or 8) = sum_k D[k][c..] * Wt[k][c..] over the n pairs */
static inline __attribute__((always_inline)) void dwb_block(const int8_t *const *D,
							     const int8_t *const *Wt, int n,
							     long c, int32_t *acc, const int two)
{
	int32x4_t a0 = vdupq_n_s32(0), a1 = a0, a2 = a0, a3 = a0;
	int k = 0;
	for (; k + 2 <= n; k += 2) {
		const int8_t *da = D[k] + c, *wa = Wt[k] + c;
		const int8_t *db = D[k + 1] + c, *wb = Wt[k + 1] + c;
		BW_HALF(0, a0, a1);
		if (two) {
			BW_HALF(8, a2, a3);
		}
	}
	if (k < n) {
		const int8_t *da = D[k] + c, *wa = Wt[k] + c;
		int16x8_t pp = vmulq_s16(vldrbq_s16(da), vldrbq_s16(wa));
		a0 = vaddq_s32(a0, vmovlbq_s16(pp));
		a1 = vaddq_s32(a1, vmovltq_s16(pp));
		if (two) {
			pp = vmulq_s16(vldrbq_s16(da + 8), vldrbq_s16(wa + 8));
			a2 = vaddq_s32(a2, vmovlbq_s16(pp));
			a3 = vaddq_s32(a3, vmovltq_s16(pp));
		}
	}
	int32x4x2_t v = {{a0, a1}};
	vst2q_s32(acc, v);
	if (two) {
		v.val[0] = a2;
		v.val[1] = a3;
		vst2q_s32(acc + 8, v);
	}
}

/* the output index o in [0, n_out) with o * s == v, or -1 */
static inline int dw_src(int v, int s, int n_out)
{
	if (v < 0) {
		return -1;
	}
	const int o = s == 1 ? v : v / s;
	return (o * s == v && o < n_out) ? o : -1;
}

/* stride >= 2, where few (dy pixel, tap) pairs reach an input pixel: a
 * scatter from each dy pixel, tap by tap, into the int32 sums (cleared
 * first): per four channels VLDRB.S32 of dy and weight, VMUL, VLDRW / VADD /
 * VSTRW of the sums */
static void dw_bwd_scatter(const kl_geom_t *g, const int8_t *w, const int8_t *dy, int32_t *acc)
{
	const long C = g->c, n = (long)g->h * g->w * C, c4 = C & ~3L;
	const int32x4_t z = vdupq_n_s32(0);
	long k = 0;
	for (; k + 16 <= n; k += 16) {
		vstrwq_s32(acc + k, z);
		vstrwq_s32(acc + k + 4, z);
		vstrwq_s32(acc + k + 8, z);
		vstrwq_s32(acc + k + 12, z);
	}
	for (; k < n; k++) {
		acc[k] = 0;
	}
	const mve_pred16_t pt = vctp32q((uint32_t)(C - c4));
	for (int oy = 0; oy < g->ho; oy++) {
		const int iy0 = oy * g->stride - g->pad_t;
		const int ky0 = iy0 < 0 ? -iy0 : 0;
		const int ky1 = iy0 + g->kh > g->h ? g->h - iy0 : g->kh;
		for (int ox = 0; ox < g->wo; ox++) {
			const int ix0 = ox * g->stride - g->pad_l;
			const int kx0 = ix0 < 0 ? -ix0 : 0;
			const int kx1 = ix0 + g->kw > g->w ? g->w - ix0 : g->kw;
			const int8_t *d = dy + ((long)oy * g->wo + ox) * C;
			for (int ky = ky0; ky < ky1; ky++) {
				for (int kx = kx0; kx < kx1; kx++) {
					int32_t *a = acc + ((long)(iy0 + ky) * g->w + ix0 + kx) * C;
					const int8_t *wt = w + ((long)ky * g->kw + kx) * C;
					long c = 0;
					for (; c < c4; c += 4) {
						const int32x4_t pr = vmulq_s32(vldrbq_s32(d + c),
									       vldrbq_s32(wt + c));
						vstrwq_s32(a + c, vaddq_s32(vldrwq_s32(a + c), pr));
					}
					if (c < C) {
						const int32x4_t pr =
							vmulq_s32(vldrbq_z_s32(d + c, pt),
								  vldrbq_z_s32(wt + c, pt));
						vstrwq_p_s32(a + c,
							     vaddq_s32(vldrwq_z_s32(a + c, pt), pr),
							     pt);
					}
				}
			}
		}
	}
}

void kl_mve_depthwise_conv_backward_input_s8(const kl_geom_t *g, const int8_t *w,
					     const int8_t *dy, int32_t *acc, void *scratch)
{
	if (g->stride >= 2) {
		dw_bwd_scatter(g, w, dy, acc);
		return;
	}
	const long C = g->c;
	const int taps = g->kh * g->kw;
	if (kl_mve_min_s8(w, (int)(taps * C)) == -128) { /* see the forward */
		kl_ref_depthwise_conv_backward_input_s8(g, w, dy, acc, scratch);
		return;
	}
	const int8_t **D = (const int8_t **)scratch;
	const int8_t **Wt = D + taps;
	int32_t *off = (int32_t *)(void *)(Wt + taps); /* taps */
	const long c16 = C & ~15L, c8 = C & ~7L;
	for (int ky = 0, t = 0; ky < g->kh; ky++) { /* dy pixel of tap t, inner pixels */
		for (int kx = 0; kx < g->kw; kx++, t++) {
			off[t] = -(ky * g->wo + kx) * (int32_t)C;
		}
	}
	for (int iy = 0; iy < g->h; iy++) {
		const int row_in = iy + g->pad_t - (g->kh - 1) >= 0 && iy + g->pad_t < g->ho;
		for (int ix = 0; ix < g->w; ix++) {
			if (row_in && ix + g->pad_l - (g->kw - 1) >= 0 && ix + g->pad_l < g->wo) {
				/* every tap reaches a dy pixel: fixed offsets, the
				 * weights in tap order (the forward's blocks) */
				dw_pixel(NULL, dy + ((long)(iy + g->pad_t) * g->wo + ix + g->pad_l) * C,
					 off, w, (int)C, taps, acc + ((long)iy * g->w + ix) * C);
				continue;
			}
			int n = 0;
			for (int ky = 0; ky < g->kh; ky++) {
				const int oy = dw_src(iy + g->pad_t - ky, g->stride, g->ho);
				if (oy < 0) {
					continue;
				}
				for (int kx = 0; kx < g->kw; kx++) {
					const int ox = dw_src(ix + g->pad_l - kx, g->stride, g->wo);
					if (ox < 0) {
						continue;
					}
					D[n] = dy + ((long)oy * g->wo + ox) * C;
					Wt[n++] = w + ((long)ky * g->kw + kx) * C;
				}
			}
			int32_t *a = acc + ((long)iy * g->w + ix) * C;
			long c = 0;
			for (; c < c16; c += 16) {
				dwb_block(D, Wt, n, c, a + c, 1);
			}
			if (c < c8) {
				dwb_block(D, Wt, n, c, a + c, 0);
				c += 8;
			}
			for (; c < C; c += 4) {
				const mve_pred16_t p = vctp32q((uint32_t)(C - c));
				int32x4_t s = vdupq_n_s32(0);
				for (int k = 0; k < n; k++) {
					s = vaddq_s32(s, vmulq_s32(vldrbq_z_s32(D[k] + c, p),
								   vldrbq_z_s32(Wt[k] + c, p)));
				}
				vstrwq_p_s32(a + c, s, p);
			}
		}
	}
}

#else
typedef int kl_mve_depthwise_conv_s8_unused; /* (no empty translation unit) */
#endif
