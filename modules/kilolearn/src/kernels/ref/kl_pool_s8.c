/* Average and max pooling (valid windows), int8. The output keeps the
 * input's scale and zero point. */
#include "kilolearn/kl_kernels.h"
#include "kl_window.h"

void kl_avgpool_s8(const kl_geom_t *g, const int8_t *x, int32_t zp, int8_t *y)
{
	const int32_t count = g->kh * g->kw;
	/* a global pool divides as TFLite's MEAN (the op converters write for
	 * it): a Q31 reciprocal, rounded twice; a windowed one as its
	 * AVERAGE_POOL_2D: integer division rounded half away from zero */
	const int global = g->ho == 1 && g->wo == 1 && g->kh == g->h && g->kw == g->w;
	int32_t rq;
	int re;
	kl_recip_q31(count, &rq, &re);
	for (int oy = 0; oy < g->ho; oy++) {
		for (int ox = 0; ox < g->wo; ox++) {
			int8_t *out = y + ((long)oy * g->wo + ox) * g->c;
			for (int c = 0; c < g->c; c++) {
				int32_t s = 0;
				KL_FOR_TAPS(g, oy, ox, s += (int32_t)x[xo + c] - zp;)
				int32_t a;
				if (global) {
					a = kl_mul_q31(s, rq, re);
				} else {
					a = ((s < 0 ? -s : s) + count / 2) / count;
					a = s < 0 ? -a : a;
				}
				int32_t v = a + zp;
				v = v > 127 ? 127 : (v < -128 ? -128 : v);
				out[c] = (int8_t)v;
			}
		}
	}
}

void kl_avgpool_backward_s8(const kl_geom_t *g, const int8_t *dy, int32_t *acc)
{
	const int32_t count = g->kh * g->kw;
	const int32_t recip = (65536 + count / 2) / count;
	for (long k = 0; k < (long)g->h * g->w * g->c; k++) {
		acc[k] = 0;
	}
	for (int oy = 0; oy < g->ho; oy++) {
		for (int ox = 0; ox < g->wo; ox++) {
			const int8_t *d = dy + ((long)oy * g->wo + ox) * g->c;
			for (int c = 0; c < g->c; c++) {
				const int32_t v = (int32_t)d[c] * recip;
				KL_FOR_TAPS(g, oy, ox, acc[xo + c] += v;)
			}
		}
	}
}

void kl_maxpool_s8(const kl_geom_t *g, const int8_t *x, int8_t *y)
{
	for (int oy = 0; oy < g->ho; oy++) {
		for (int ox = 0; ox < g->wo; ox++) {
			int8_t *out = y + ((long)oy * g->wo + ox) * g->c;
			for (int c = 0; c < g->c; c++) {
				int8_t m = -128;
				KL_FOR_TAPS(g, oy, ox, m = x[xo + c] > m ? x[xo + c] : m;)
				out[c] = m;
			}
		}
	}
}

void kl_maxpool_backward_s8(const kl_geom_t *g, const int8_t *x, const int8_t *dy,
			    int32_t *acc)
{
	for (long k = 0; k < (long)g->h * g->w * g->c; k++) {
		acc[k] = 0;
	}
	for (int oy = 0; oy < g->ho; oy++) {
		for (int ox = 0; ox < g->wo; ox++) {
			const int8_t *d = dy + ((long)oy * g->wo + ox) * g->c;
			for (int c = 0; c < g->c; c++) {
				long best = -1;
				KL_FOR_TAPS(g, oy, ox, if (best < 0 || x[xo + c] > x[best]) { best = xo + c; })
				acc[best] += d[c];
			}
		}
	}
}
