/* Convolution (groups = 1), float32: forward, input gradient, weight gradient. */
#include "kilolearn/kl_kernels.h"
#include "kl_window.h"

void kl_conv_f32(const kl_geom_t *g, const float *x, const float *w, const float *b, float *y,
		 int act)
{
	const int ksz = g->kh * g->kw * g->c;
	for (int oy = 0; oy < g->ho; oy++) {
		for (int ox = 0; ox < g->wo; ox++) {
			float *out = y + ((long)oy * g->wo + ox) * g->co;
			for (int co = 0; co < g->co; co++) {
				const float *wk = w + (long)co * ksz;
				float acc = 0.0f;
				KL_FOR_TAPS(g, oy, ox, {
					const float *xi = x + xo;
					const float *wi = wk + to;
					for (int ci = 0; ci < g->c; ci++) {
						acc += wi[ci] * xi[ci];
					}
				})
				out[co] = kl_act_f32(acc + b[co], act);
			}
		}
	}
}

void kl_conv_backward_input_f32(const kl_geom_t *g, const float *w, const float *dy, float *dx)
{
	const long n = (long)g->h * g->w * g->c;
	for (long k = 0; k < n; k++) {
		dx[k] = 0.0f;
	}
	const int ksz = g->kh * g->kw * g->c;
	for (int oy = 0; oy < g->ho; oy++) {
		for (int ox = 0; ox < g->wo; ox++) {
			const float *d = dy + ((long)oy * g->wo + ox) * g->co;
			for (int co = 0; co < g->co; co++) {
				const float gv = d[co];
				if (gv == 0.0f) {
					continue;
				}
				const float *wk = w + (long)co * ksz;
				KL_FOR_TAPS(g, oy, ox, {
					float *xi = dx + xo;
					const float *wi = wk + to;
					for (int ci = 0; ci < g->c; ci++) {
						xi[ci] += wi[ci] * gv;
					}
				})
			}
		}
	}
}

void kl_conv_grad_f32(const kl_geom_t *g, const float *x, const float *dy, float *gw, float *gb)
{
	const int ksz = g->kh * g->kw * g->c;
	for (long k = 0; k < (long)g->co * ksz; k++) {
		gw[k] = 0.0f;
	}
	for (int co = 0; co < g->co; co++) {
		gb[co] = 0.0f;
	}
	for (int oy = 0; oy < g->ho; oy++) {
		for (int ox = 0; ox < g->wo; ox++) {
			const float *d = dy + ((long)oy * g->wo + ox) * g->co;
			for (int co = 0; co < g->co; co++) {
				const float gv = d[co];
				gb[co] += gv;
				if (gv == 0.0f) {
					continue;
				}
				float *wk = gw + (long)co * ksz;
				KL_FOR_TAPS(g, oy, ox, {
					const float *xi = x + xo;
					float *wi = wk + to;
					for (int ci = 0; ci < g->c; ci++) {
						wi[ci] += gv * xi[ci];
					}
				})
			}
		}
	}
}
