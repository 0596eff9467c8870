/* Average and max pooling (valid windows), float32. */
#include "kilolearn/kl_kernels.h"
#include "kl_window.h"

void kl_avgpool_f32(const kl_geom_t *g, const float *x, float *y)
{
	const float inv = 1.0f / (float)(g->kh * g->kw);
	for (int oy = 0; oy < g->ho; oy++) {
		for (int ox = 0; ox < g->wo; ox++) {
			float *out = y + ((long)oy * g->wo + ox) * g->c;
			for (int c = 0; c < g->c; c++) {
				float s = 0.0f;
				KL_FOR_TAPS(g, oy, ox, s += x[xo + c];)
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
				KL_FOR_TAPS(g, oy, ox, dx[xo + c] += v;)
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
				KL_FOR_TAPS(g, oy, ox, m = x[xo + c] > m ? x[xo + c] : m;)
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
				KL_FOR_TAPS(g, oy, ox, if (best < 0 || x[xo + c] > x[best]) { best = xo + c; })
				dx[best] += d[c];
			}
		}
	}
}
