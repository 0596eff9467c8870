/* Convolution (groups = 1), int8: forward, input gradient, weight gradient.
 * Padding is the real value 0 (x == x_zp), so padded taps contribute nothing. */
#include "kilolearn/kl_kernels.h"
#include "kl_window.h"

int kl_ref_conv_s8(const kl_geom_t *g, const int8_t *x, int32_t x_zp, const int8_t *w,
	       const int32_t *b, const kl_requant_t *rq, int8_t *y, void *scratch)
{
	(void)scratch;
	const int ksz = g->kh * g->kw * g->c;
	int sat = 0;
	for (int oy = 0; oy < g->ho; oy++) {
		for (int ox = 0; ox < g->wo; ox++) {
			int8_t *out = y + ((long)oy * g->wo + ox) * g->co;
			for (int co = 0; co < g->co; co++) {
				const int8_t *wk = w + (long)co * ksz;
				int32_t acc = 0;
				KL_FOR_TAPS(g, oy, ox, {
					const int8_t *xi = x + xo;
					const int8_t *wi = wk + to;
					for (int ci = 0; ci < g->c; ci++) {
						acc += (int32_t)wi[ci] * ((int32_t)xi[ci] - x_zp);
					}
				})
				out[co] = kl_requant(rq, acc, b[co], &sat);
			}
		}
	}
	return sat;
}

void kl_ref_conv_backward_input_s8(const kl_geom_t *g, const int8_t *w, const int8_t *dy,
			       int32_t *acc, void *scratch)
{
	(void)scratch;
	const long n = (long)g->h * g->w * g->c;
	for (long k = 0; k < n; k++) {
		acc[k] = 0;
	}
	const int ksz = g->kh * g->kw * g->c;
	for (int oy = 0; oy < g->ho; oy++) {
		for (int ox = 0; ox < g->wo; ox++) {
			const int8_t *d = dy + ((long)oy * g->wo + ox) * g->co;
			for (int co = 0; co < g->co; co++) {
				const int32_t gv = d[co];
				if (gv == 0) {
					continue;
				}
				const int8_t *wk = w + (long)co * ksz;
				KL_FOR_TAPS(g, oy, ox, {
					int32_t *xi = acc + xo;
					const int8_t *wi = wk + to;
					for (int ci = 0; ci < g->c; ci++) {
						xi[ci] += (int32_t)wi[ci] * gv;
					}
				})
			}
		}
	}
}

void kl_ref_conv_grad_s8(const kl_geom_t *g, const int8_t *x, int32_t x_zp, const int8_t *dy,
		     int32_t *gw, int32_t *gb, void *scratch)
{
	(void)scratch;
	const int ksz = g->kh * g->kw * g->c;
	for (long k = 0; k < (long)g->co * ksz; k++) {
		gw[k] = 0;
	}
	for (int co = 0; co < g->co; co++) {
		gb[co] = 0;
	}
	for (int oy = 0; oy < g->ho; oy++) {
		for (int ox = 0; ox < g->wo; ox++) {
			const int8_t *d = dy + ((long)oy * g->wo + ox) * g->co;
			for (int co = 0; co < g->co; co++) {
				const int32_t gv = d[co];
				gb[co] += gv;
				if (gv == 0) {
					continue;
				}
				int32_t *wk = gw + (long)co * ksz;
				KL_FOR_TAPS(g, oy, ox, {
					const int8_t *xi = x + xo;
					int32_t *wi = wk + to;
					for (int ci = 0; ci < g->c; ci++) {
						wi[ci] += gv * ((int32_t)xi[ci] - x_zp);
					}
				})
			}
		}
	}
}
