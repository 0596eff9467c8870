/* Depthwise convolution (multiplier 1), int8: forward, input gradient,
 * weight gradient. */
#include "kilolearn/kl_kernels.h"

#define FOR_TAPS(body)                                                                            \
	for (int ky = 0; ky < g->kh; ky++) {                                                      \
		const int iy = oy * g->stride + ky - g->pad_t;                                    \
		if (iy < 0 || iy >= g->h) {                                                       \
			continue;                                                                 \
		}                                                                                 \
		for (int kx = 0; kx < g->kw; kx++) {                                              \
			const int ix = ox * g->stride + kx - g->pad_l;                            \
			if (ix < 0 || ix >= g->w) {                                               \
				continue;                                                         \
			}                                                                         \
			const long xo = ((long)iy * g->w + ix) * g->c;                            \
			const long wo = ((long)ky * g->kw + kx) * g->c;                           \
			body                                                                      \
		}                                                                                 \
	}

int kl_ref_depthwise_conv_s8(const kl_geom_t *g, const int8_t *x, int32_t x_zp, const int8_t *w,
			 const int32_t *b, const kl_requant_t *rq, int8_t *y, void *scratch)
{
	(void)scratch;
	int sat = 0;
	for (int oy = 0; oy < g->ho; oy++) {
		for (int ox = 0; ox < g->wo; ox++) {
			int8_t *out = y + ((long)oy * g->wo + ox) * g->c;
			for (int c = 0; c < g->c; c++) {
				int32_t acc = 0;
				FOR_TAPS(acc += (int32_t)w[wo + c] * ((int32_t)x[xo + c] - x_zp);)
				out[c] = kl_requant(rq, acc, b[c], &sat);
			}
		}
	}
	return sat;
}

void kl_ref_depthwise_conv_backward_input_s8(const kl_geom_t *g, const int8_t *w, const int8_t *dy,
					 int32_t *acc, void *scratch)
{
	(void)scratch;
	for (long k = 0; k < (long)g->h * g->w * g->c; k++) {
		acc[k] = 0;
	}
	for (int oy = 0; oy < g->ho; oy++) {
		for (int ox = 0; ox < g->wo; ox++) {
			const int8_t *d = dy + ((long)oy * g->wo + ox) * g->c;
			FOR_TAPS(for (int c = 0; c < g->c; c++) {
				acc[xo + c] += (int32_t)w[wo + c] * d[c];
			})
		}
	}
}

void kl_ref_depthwise_conv_grad_s8(const kl_geom_t *g, const int8_t *x, int32_t x_zp,
			       const int8_t *dy, int32_t *gw, int32_t *gb, void *scratch)
{
	(void)scratch;
	for (long k = 0; k < (long)g->kh * g->kw * g->c; k++) {
		gw[k] = 0;
	}
	for (int c = 0; c < g->c; c++) {
		gb[c] = 0;
	}
	for (int oy = 0; oy < g->ho; oy++) {
		for (int ox = 0; ox < g->wo; ox++) {
			const int8_t *d = dy + ((long)oy * g->wo + ox) * g->c;
			for (int c = 0; c < g->c; c++) {
				gb[c] += d[c];
			}
			FOR_TAPS(for (int c = 0; c < g->c; c++) {
				gw[wo + c] += (int32_t)d[c] * ((int32_t)x[xo + c] - x_zp);
			})
		}
	}
}
