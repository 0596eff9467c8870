/* Depthwise convolution (multiplier 1), int8, mve backend: the weight
 * gradient gw[t][c] = sum over the output pixels p whose tap t lies inside
 * the image of dy[p][c] (x[p + t][c] - x_zp), gb[c] = sum_p dy[p][c]; the
 * same integers as src/kernels/ref. Per tap, the rectangle of such output
 * pixels; per 8 channels and pixel two VLDRB.S16 (input, gradient), VSUB of
 * the zero point (x - x_zp in [-255, 255]: the product fits int16), VMUL.I16,
 * then VMOVLB / VMOVLT and two VADD.I32 into the even and odd channels' sums,
 * 16 channels per pass, stored in channel order by VST2; the last C % 8
 * channels on four int32 lanes, predicated. No scratch. */
#include "kilolearn/kl_kernels.h"

#if KL_KERNELS_MVE
#include "kl_mve_util.h"

/* the output indices o in [0, n_out) with o * stride + off in [0, n_in) */
static void tap_range(int off, int stride, int n_in, int n_out, int *lo, int *hi)
{
	int a = off >= 0 ? 0 : (-off + stride - 1) / stride;
	int b = n_in - 1 - off < 0 ? -1 : (n_in - 1 - off) / stride;
	*lo = a;
	*hi = b + 1 < n_out ? b + 1 : n_out;
}

#define GW_HALF(h, e, o)                                                                          \
	do {                                                                                      \
		const int16x8_t pp = vmulq_s16(vsubq_n_s16(vldrbq_s16(xp + (h)), zp),             \
					       vldrbq_s16(dp + (h)));                             \
		e = vaddq_s32(e, vmovlbq_s16(pp));                                                \
		o = vaddq_s32(o, vmovltq_s16(pp));                                                \
	} while (0)

void kl_mve_depthwise_conv_grad_s8(const kl_geom_t *g, const int8_t *x, int32_t x_zp,
				   const int8_t *dy, int32_t *gw, int32_t *gb, void *scratch)
{
	(void)scratch;
	const long C = g->c, xs = (long)g->stride * C, xrow = (long)g->w * C, drow = (long)g->wo * C;
	const long npix = (long)g->ho * g->wo;
	const int16_t zp = (int16_t)x_zp;
	for (long c = 0; c < C; c += 4) { /* gb */
		const mve_pred16_t p = vctp32q((uint32_t)(C - c));
		int32x4_t s = vdupq_n_s32(0);
		for (long k = 0; k < npix; k++) {
			s = vaddq_s32(s, vldrbq_z_s32(dy + k * C + c, p));
		}
		vstrwq_p_s32(gb + c, s, p);
	}
	const long c16 = C & ~15L, c8 = C & ~7L;
	for (int ky = 0; ky < g->kh; ky++) {
		int oy0, oy1;
		tap_range(ky - g->pad_t, g->stride, g->h, g->ho, &oy0, &oy1);
		for (int kx = 0; kx < g->kw; kx++) {
			int ox0, ox1;
			tap_range(kx - g->pad_l, g->stride, g->w, g->wo, &ox0, &ox1);
			int32_t *o = gw + ((long)ky * g->kw + kx) * C;
			/* input of output pixel (oy, ox0) through tap (ky, kx) */
			const long ix0 = (long)ox0 * g->stride + kx - g->pad_l;
			long c = 0;
			for (; c < c8; c += (c + 16 <= c16 ? 16 : 8)) {
				const int two = c + 16 <= c16;
				int32x4_t a0 = vdupq_n_s32(0), a1 = a0, a2 = a0, a3 = a0;
				for (int oy = oy0; oy < oy1; oy++) {
					const long iy = (long)oy * g->stride + ky - g->pad_t;
					const int8_t *xp = x + iy * xrow + ix0 * C + c;
					const int8_t *dp = dy + oy * drow + (long)ox0 * C + c;
					if (two) {
						for (int ox = ox0; ox < ox1; ox++) {
							GW_HALF(0, a0, a1);
							GW_HALF(8, a2, a3);
							xp += xs;
							dp += C;
						}
					} else {
						for (int ox = ox0; ox < ox1; ox++) {
							GW_HALF(0, a0, a1);
							xp += xs;
							dp += C;
						}
					}
				}
				int32x4x2_t v = {{a0, a1}};
				vst2q_s32(o + c, v);
				if (two) {
					v.val[0] = a2;
					v.val[1] = a3;
					vst2q_s32(o + c + 8, v);
				}
			}
			for (; c < C; c += 4) {
				const mve_pred16_t p = vctp32q((uint32_t)(C - c));
				int32x4_t a = vdupq_n_s32(0);
				for (int oy = oy0; oy < oy1; oy++) {
					const long iy = (long)oy * g->stride + ky - g->pad_t;
					const int8_t *xp = x + iy * xrow + ix0 * C + c;
					const int8_t *dp = dy + oy * drow + (long)ox0 * C + c;
					for (int ox = ox0; ox < ox1; ox++) {
						a = vaddq_s32(a, vmulq_s32(vsubq_n_s32(vldrbq_z_s32(xp, p),
										       x_zp),
									   vldrbq_z_s32(dp, p)));
						xp += xs;
						dp += C;
					}
				}
				vstrwq_p_s32(o + c, a, p);
			}
		}
	}
}

#else
typedef int kl_mve_depthwise_conv_grad_s8_unused; /* (no empty translation unit) */
#endif
