/* Depthwise convolution (multiplier 1), int8, dsp backend: four channels per
 * word, SMLABB/SMLATT on SXTB16 lanes, bit-identical to src/kernels/ref.
 *
 * forward      weights widened once per call to int16 (lanes as SXTB16 /
 *              SXTB16 ROR 8 leave the input); every output pixel gets a table
 *              of tap pointers (padding taps point at a row of x_zp), the
 *              input is used raw and sum w * x_zp is subtracted up front.
 * input grad   a gather: for each input pixel, the (dy pixel, tap) pairs that
 *              reach it, then the same inner loop on dy (no zero point).
 * weight grad  for each tap, the rectangle of output pixels whose tap is
 *              inside the image; accumulators in registers over it.
 * Channels beyond the last multiple of four go the scalar way.
 */
#include "kilolearn/kl_kernels.h"

#if KL_KERNELS_DSP
#include "kl_dsp_conv.h"

#define MAX_TAPS 64 /* larger kernels go to the ref kernel */

/* int16 weights [tap][group][2]: (w c0, w c2), (w c1, w c3) */
static void widen_weights(const int8_t *w, int taps, int c, uint32_t *wx)
{
	const int G = kl_round4(c) >> 2;
	for (int t = 0; t < taps; t++) {
		const int8_t *wt = w + (long)t * c;
		uint32_t *o = wx + (long)t * G * 2;
		int gi = 0;
		for (; (gi + 1) * 4 <= c; gi++) {
			const uint32_t v = kl_read_s8x4(wt + 4 * gi);
			o[2 * gi] = kl_sxtb16(v);
			o[2 * gi + 1] = kl_sxtb16_ror8(v);
		}
		if (gi < G) { /* tail lanes (not used by the vector loop) */
			o[2 * gi] = 0;
			o[2 * gi + 1] = 0;
		}
	}
}

#define DW_MAC4(v, wp)                                                                            \
	do {                                                                                      \
		const uint32_t xe_ = kl_sxtb16(v), xo_ = kl_sxtb16_ror8(v);                       \
		const uint32_t we_ = (wp)[0], wo_ = (wp)[1];                                      \
		a0 = kl_smlabb(we_, xe_, a0);                                                     \
		a2 = kl_smlatt(we_, xe_, a2);                                                     \
		a1 = kl_smlabb(wo_, xo_, a1);                                                     \
		a3 = kl_smlatt(wo_, xo_, a3);                                                     \
	} while (0)

int kl_dsp_depthwise_conv_s8(const kl_geom_t *g, const int8_t *x, int32_t x_zp, const int8_t *w,
			     const int32_t *b, const kl_requant_t *rq, int8_t *y, void *scratch)
{
	const int taps = g->kh * g->kw;
	if (taps > MAX_TAPS) {
		return kl_ref_depthwise_conv_s8(g, x, x_zp, w, b, rq, y, scratch);
	}
	const int c = g->c, C4 = kl_round4(c), G = C4 >> 2, cv = c & ~3;
	uint32_t *wx = scratch;                                    /* 2 * taps * C4 bytes */
	int32_t *corr = (int32_t *)(void *)(wx + (long)taps * G * 2); /* C4 */
	int32_t *bq = corr + C4;                                   /* C4 */
	int8_t *zrow = (int8_t *)(void *)(bq + C4);                /* C4 */
	const int8_t *ptr[MAX_TAPS];
	widen_weights(w, taps, c, wx);
	for (int ch = 0; ch < c; ch++) {
		int32_t s = 0;
		for (int t = 0; t < taps; t++) {
			s += w[(long)t * c + ch];
		}
		corr[ch] = (int32_t)(0u - (uint32_t)s * (uint32_t)x_zp);
	}
	memset(zrow, (int)(int8_t)x_zp, (size_t)C4);
	kl_rqf_t f;
	kl_rqf_init(&f, rq, b, bq, c);
	for (int oy = 0; oy < g->ho; oy++) {
		for (int ox = 0; ox < g->wo; ox++) {
			int t = 0;
			for (int ky = 0; ky < g->kh; ky++) {
				const int iy = oy * g->stride + ky - g->pad_t;
				const int rowok = iy >= 0 && iy < g->h;
				for (int kx = 0; kx < g->kw; kx++, t++) {
					const int ix = ox * g->stride + kx - g->pad_l;
					ptr[t] = rowok && ix >= 0 && ix < g->w
							 ? x + ((long)iy * g->w + ix) * c
							 : zrow;
				}
			}
			int8_t *out = y + ((long)oy * g->wo + ox) * c;
			for (int ch = 0; ch < cv; ch += 4) {
				int32_t a0 = corr[ch], a1 = corr[ch + 1];
				int32_t a2 = corr[ch + 2], a3 = corr[ch + 3];
				const uint32_t *wp = wx + (ch >> 1);
				for (int k = 0; k < taps; k++) {
					const uint32_t v = kl_read_s8x4(ptr[k] + ch);
					DW_MAC4(v, wp);
					wp += 2 * G;
				}
				if (f.fast) {
					out[ch] = kl_rqf_one(&f, a0, bq[ch]);
					out[ch + 1] = kl_rqf_one(&f, a1, bq[ch + 1]);
					out[ch + 2] = kl_rqf_one(&f, a2, bq[ch + 2]);
					out[ch + 3] = kl_rqf_one(&f, a3, bq[ch + 3]);
				} else {
					out[ch] = kl_rqf_any(&f, a0, bq[ch]);
					out[ch + 1] = kl_rqf_any(&f, a1, bq[ch + 1]);
					out[ch + 2] = kl_rqf_any(&f, a2, bq[ch + 2]);
					out[ch + 3] = kl_rqf_any(&f, a3, bq[ch + 3]);
				}
			}
			for (int ch = cv; ch < c; ch++) {
				int32_t a = corr[ch];
				for (int k = 0; k < taps; k++) {
					a += (int32_t)w[(long)k * c + ch] * ptr[k][ch];
				}
				out[ch] = kl_rqf_any(&f, a, bq[ch]);
			}
		}
	}
	return kl_rqf_sat(&f);
}

void kl_dsp_depthwise_conv_backward_input_s8(const kl_geom_t *g, const int8_t *w,
					     const int8_t *dy, int32_t *acc, void *scratch)
{
	const int taps = g->kh * g->kw;
	if (taps > MAX_TAPS) {
		kl_ref_depthwise_conv_backward_input_s8(g, w, dy, acc, scratch);
		return;
	}
	const int c = g->c, C4 = kl_round4(c), G = C4 >> 2, cv = c & ~3, s = g->stride;
	uint32_t *wx = scratch;
	const int8_t *dp[MAX_TAPS];
	const uint32_t *wp[MAX_TAPS];
	int tk[MAX_TAPS];
	widen_weights(w, taps, c, wx);
	for (int iy = 0; iy < g->h; iy++) {
		for (int ix = 0; ix < g->w; ix++) {
			int n = 0;
			for (int ky = 0; ky < g->kh; ky++) {
				const int ty = iy + g->pad_t - ky;
				if (ty < 0 || ty % s != 0 || ty / s >= g->ho) {
					continue;
				}
				for (int kx = 0; kx < g->kw; kx++) {
					const int tx = ix + g->pad_l - kx;
					if (tx < 0 || tx % s != 0 || tx / s >= g->wo) {
						continue;
					}
					const int t = ky * g->kw + kx;
					dp[n] = dy + ((long)(ty / s) * g->wo + tx / s) * c;
					wp[n] = wx + (long)t * G * 2;
					tk[n] = t;
					n++;
				}
			}
			int32_t *out = acc + ((long)iy * g->w + ix) * c;
			for (int ch = 0; ch < cv; ch += 4) {
				int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
				for (int k = 0; k < n; k++) {
					const uint32_t v = kl_read_s8x4(dp[k] + ch);
					DW_MAC4(v, wp[k] + (ch >> 1));
				}
				out[ch] = a0;
				out[ch + 1] = a1;
				out[ch + 2] = a2;
				out[ch + 3] = a3;
			}
			for (int ch = cv; ch < c; ch++) {
				int32_t a = 0;
				for (int k = 0; k < n; k++) {
					a += (int32_t)w[(long)tk[k] * c + ch] * dp[k][ch];
				}
				out[ch] = a;
			}
		}
	}
}

/* first output index whose tap (offset off = k - pad) lands at >= 0, and the
 * end of those landing below n */
static void tap_range(int off, int stride, int n_in, int n_out, int *lo, int *hi)
{
	int l = off >= 0 ? 0 : (-off + stride - 1) / stride;
	int h = n_in - 1 - off < 0 ? 0 : (n_in - 1 - off) / stride + 1;
	if (h > n_out) {
		h = n_out;
	}
	*lo = l;
	*hi = h > l ? h : l;
}

void kl_dsp_depthwise_conv_grad_s8(const kl_geom_t *g, const int8_t *x, int32_t x_zp,
				   const int8_t *dy, int32_t *gw, int32_t *gb, void *scratch)
{
	(void)scratch;
	const int c = g->c, cv = c & ~3, s = g->stride;
	const uint32_t zz = ((uint32_t)x_zp & 0xFFFFu) * 0x10001u;
	const long npix = (long)g->ho * g->wo;
	for (int ch = 0; ch < c; ch++) {
		gb[ch] = 0;
	}
	for (long p = 0; p < npix; p++) {
		const int8_t *d = dy + p * c;
		for (int ch = 0; ch < c; ch++) {
			gb[ch] += d[ch];
		}
	}
	for (int ky = 0; ky < g->kh; ky++) {
		int oy0, oy1;
		tap_range(ky - g->pad_t, s, g->h, g->ho, &oy0, &oy1);
		for (int kx = 0; kx < g->kw; kx++) {
			int ox0, ox1;
			tap_range(kx - g->pad_l, s, g->w, g->wo, &ox0, &ox1);
			int32_t *gt = gw + ((long)ky * g->kw + kx) * c;
			const int nx = ox1 - ox0;
			const long xstep = (long)s * c;
			for (int ch = 0; ch < cv; ch += 4) {
				int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
				for (int oy = oy0; oy < oy1; oy++) {
					const int iy = oy * s + ky - g->pad_t;
					const int8_t *xp =
						x + ((long)iy * g->w + ox0 * s + kx - g->pad_l) * c + ch;
					const int8_t *dp = dy + ((long)oy * g->wo + ox0) * c + ch;
					for (int i = 0; i < nx; i++) {
						const uint32_t vd = kl_read_s8x4(dp);
						const uint32_t vx = kl_read_s8x4(xp);
						const uint32_t de = kl_sxtb16(vd), dd = kl_sxtb16_ror8(vd);
						const uint32_t xe = (uint32_t)__ssub16(
							(int16x2_t)kl_sxtb16(vx), (int16x2_t)zz);
						const uint32_t xo = (uint32_t)__ssub16(
							(int16x2_t)kl_sxtb16_ror8(vx), (int16x2_t)zz);
						a0 = kl_smlabb(de, xe, a0);
						a2 = kl_smlatt(de, xe, a2);
						a1 = kl_smlabb(dd, xo, a1);
						a3 = kl_smlatt(dd, xo, a3);
						dp += c;
						xp += xstep;
					}
				}
				gt[ch] = a0;
				gt[ch + 1] = a1;
				gt[ch + 2] = a2;
				gt[ch + 3] = a3;
			}
			for (int ch = cv; ch < c; ch++) {
				int32_t a = 0;
				for (int oy = oy0; oy < oy1; oy++) {
					const int iy = oy * s + ky - g->pad_t;
					for (int ox = ox0; ox < ox1; ox++) {
						const int ix = ox * s + kx - g->pad_l;
						a += (int32_t)dy[((long)oy * g->wo + ox) * c + ch] *
						     ((int32_t)x[((long)iy * g->w + ix) * c + ch] - x_zp);
					}
				}
				gt[ch] = a;
			}
		}
	}
}
#else
typedef int kl_dsp_depthwise_conv_s8_unused;
#endif
