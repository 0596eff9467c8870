/* Depthwise convolution (multiplier 1), float32: forward, input gradient,
 * weight gradient. */
#include "kilolearn/kl_kernels.h"
#include "kl_window.h"

void kl_depthwise_conv_f32(const kl_geom_t *g, const float *x, const float *w, const float *b,
			   float *y, int act)
{
	for (int oy = 0; oy < g->ho; oy++) {
		for (int ox = 0; ox < g->wo; ox++) {
			float *out = y + ((long)oy * g->wo + ox) * g->c;
			for (int c = 0; c < g->c; c++) {
				out[c] = 0.0f;
			}
			KL_FOR_TAPS(g, oy, ox, for (int c = 0; c < g->c; c++) { out[c] += w[to + c] * x[xo + c]; })
			for (int c = 0; c < g->c; c++) {
				out[c] = kl_act_f32(out[c] + b[c], act);
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
			KL_FOR_TAPS(g, oy, ox, for (int c = 0; c < g->c; c++) { dx[xo + c] += w[to + c] * d[c]; })
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
			KL_FOR_TAPS(g, oy, ox, for (int c = 0; c < g->c; c++) { gw[to + c] += d[c] * x[xo + c]; })
		}
	}
}
