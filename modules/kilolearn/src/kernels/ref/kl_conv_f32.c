/* Convolution (groups = 1), float32: forward, input gradient, weight gradient. */
#include "kilolearn/kl_kernels.h"

static float act_f32(float v, int act)
{
	if (act != KL_ACT_NONE && v < 0.0f) {
		return 0.0f;
	}
	return (act == KL_ACT_RELU6 && v > 6.0f) ? 6.0f : v;
}

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
				for (int ky = 0; ky < g->kh; ky++) {
					const int iy = oy * g->stride + ky - g->pad_t;
					if (iy < 0 || iy >= g->h) {
						continue;
					}
					for (int kx = 0; kx < g->kw; kx++) {
						const int ix = ox * g->stride + kx - g->pad_l;
						if (ix < 0 || ix >= g->w) {
							continue;
						}
						const float *xi = x + ((long)iy * g->w + ix) * g->c;
						const float *wi = wk + ((long)ky * g->kw + kx) * g->c;
						for (int ci = 0; ci < g->c; ci++) {
							acc += wi[ci] * xi[ci];
						}
					}
				}
				out[co] = act_f32(acc + b[co], act);
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
				for (int ky = 0; ky < g->kh; ky++) {
					const int iy = oy * g->stride + ky - g->pad_t;
					if (iy < 0 || iy >= g->h) {
						continue;
					}
					for (int kx = 0; kx < g->kw; kx++) {
						const int ix = ox * g->stride + kx - g->pad_l;
						if (ix < 0 || ix >= g->w) {
							continue;
						}
						float *xi = dx + ((long)iy * g->w + ix) * g->c;
						const float *wi = wk + ((long)ky * g->kw + kx) * g->c;
						for (int ci = 0; ci < g->c; ci++) {
							xi[ci] += wi[ci] * gv;
						}
					}
				}
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
				for (int ky = 0; ky < g->kh; ky++) {
					const int iy = oy * g->stride + ky - g->pad_t;
					if (iy < 0 || iy >= g->h) {
						continue;
					}
					for (int kx = 0; kx < g->kw; kx++) {
						const int ix = ox * g->stride + kx - g->pad_l;
						if (ix < 0 || ix >= g->w) {
							continue;
						}
						const float *xi = x + ((long)iy * g->w + ix) * g->c;
						float *wi = wk + ((long)ky * g->kw + kx) * g->c;
						for (int ci = 0; ci < g->c; ci++) {
							wi[ci] += gv * xi[ci];
						}
					}
				}
			}
		}
	}
}
