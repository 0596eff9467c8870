/* Average and max pooling (valid windows), float32. */
#include "kilolearn/kl_kernels.h"

#define FOR_WINDOW(body)                                                                          \
	for (int ky = 0; ky < g->kh; ky++) {                                                      \
		for (int kx = 0; kx < g->kw; kx++) {                                              \
			const long xo = ((long)(oy * g->stride + ky) * g->w +                    \
					 (ox * g->stride + kx)) * g->c;                           \
			body                                                                      \
		}                                                                                 \
	}

void kl_avgpool_f32(const kl_geom_t *g, const float *x, float *y)
{
	const float inv = 1.0f / (float)(g->kh * g->kw);
	for (int oy = 0; oy < g->ho; oy++) {
		for (int ox = 0; ox < g->wo; ox++) {
			float *out = y + ((long)oy * g->wo + ox) * g->c;
			for (int c = 0; c < g->c; c++) {
				float s = 0.0f;
				FOR_WINDOW(s += x[xo + c];)
				out[c] = s * inv;
			}
		}
	}
}

void kl_avgpool_backward_f32(const kl_geom_t *g, const float *dy, float *dx)
{
	const float inv = 1.0f / (float)(g->kh * g->kw);
	for (long k = 0; k < (long)g->h * g->w * g->c; k++) {
		dx[k] = 0.0f;
	}
	for (int oy = 0; oy < g->ho; oy++) {
		for (int ox = 0; ox < g->wo; ox++) {
			const float *d = dy + ((long)oy * g->wo + ox) * g->c;
			for (int c = 0; c < g->c; c++) {
				const float v = d[c] * inv;
				FOR_WINDOW(dx[xo + c] += v;)
			}
		}
	}
}

void kl_maxpool_f32(const kl_geom_t *g, const float *x, float *y)
{
	for (int oy = 0; oy < g->ho; oy++) {
		for (int ox = 0; ox < g->wo; ox++) {
			float *out = y + ((long)oy * g->wo + ox) * g->c;
			for (int c = 0; c < g->c; c++) {
				float m = x[((long)(oy * g->stride) * g->w + ox * g->stride) * g->c + c];
				FOR_WINDOW(m = x[xo + c] > m ? x[xo + c] : m;)
				out[c] = m;
			}
		}
	}
}

void kl_maxpool_backward_f32(const kl_geom_t *g, const float *x, const float *dy, float *dx)
{
	for (long k = 0; k < (long)g->h * g->w * g->c; k++) {
		dx[k] = 0.0f;
	}
	for (int oy = 0; oy < g->ho; oy++) {
		for (int ox = 0; ox < g->wo; ox++) {
			const float *d = dy + ((long)oy * g->wo + ox) * g->c;
			for (int c = 0; c < g->c; c++) {
				long best = -1;
				FOR_WINDOW(if (best < 0 || x[xo + c] > x[best]) { best = xo + c; })
				dx[best] += d[c];
			}
		}
	}
}
