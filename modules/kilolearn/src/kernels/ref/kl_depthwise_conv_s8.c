/* Depthwise convolution (multiplier 1), int8: forward, input gradient,
 * weight gradient. */
#include "kilolearn/kl_kernels.h"
#include "kl_window.h"

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
				KL_FOR_TAPS(g, oy, ox, acc += (int32_t)w[to + c] * ((int32_t)x[xo + c] - x_zp);)
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
			KL_FOR_TAPS(g, oy, ox, for (int c = 0; c < g->c; c++) {
				acc[xo + c] += (int32_t)w[to + c] * d[c];
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
			KL_FOR_TAPS(g, oy, ox, for (int c = 0; c < g->c; c++) {
				gw[to + c] += (int32_t)d[c] * ((int32_t)x[xo + c] - x_zp);
			})
		}
	}
}
