/* Depthwise convolution (multiplier 1), float32: forward, input gradient,
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

void kl_depthwise_conv_f32(const kl_geom_t *g, const float *x, const float *w, const float *b,
			   float *y, int act)
{
	for (int oy = 0; oy < g->ho; oy++) {
		for (int ox = 0; ox < g->wo; ox++) {
			float *out = y + ((long)oy * g->wo + ox) * g->c;
			for (int c = 0; c < g->c; c++) {
				out[c] = 0.0f;
			}
			FOR_TAPS(for (int c = 0; c < g->c; c++) { out[c] += w[wo + c] * x[xo + c]; })
			for (int c = 0; c < g->c; c++) {
				float v = out[c] + b[c];
				if (act != KL_ACT_NONE && v < 0.0f) {
					v = 0.0f;
				}
				out[c] = (act == KL_ACT_RELU6 && v > 6.0f) ? 6.0f : v;
			}
		}
	}
}

void kl_depthwise_conv_backward_input_f32(const kl_geom_t *g, const float *w, const float *dy,
					  float *dx)
{
	for (long k = 0; k < (long)g->h * g->w * g->c; k++) {
		dx[k] = 0.0f;
	}
	for (int oy = 0; oy < g->ho; oy++) {
		for (int ox = 0; ox < g->wo; ox++) {
			const float *d = dy + ((long)oy * g->wo + ox) * g->c;
			FOR_TAPS(for (int c = 0; c < g->c; c++) { dx[xo + c] += w[wo + c] * d[c]; })
		}
	}
}

void kl_depthwise_conv_grad_f32(const kl_geom_t *g, const float *x, const float *dy, float *gw,
				float *gb)
{
	for (long k = 0; k < (long)g->kh * g->kw * g->c; k++) {
		gw[k] = 0.0f;
	}
	for (int c = 0; c < g->c; c++) {
		gb[c] = 0.0f;
	}
	for (int oy = 0; oy < g->ho; oy++) {
		for (int ox = 0; ox < g->wo; ox++) {
			const float *d = dy + ((long)oy * g->wo + ox) * g->c;
			for (int c = 0; c < g->c; c++) {
				gb[c] += d[c];
			}
			FOR_TAPS(for (int c = 0; c < g->c; c++) { gw[wo + c] += d[c] * x[xo + c]; })
		}
	}
}
