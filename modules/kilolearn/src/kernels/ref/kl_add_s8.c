/* Residual add, int8 and float32. */
#include "kilolearn/kl_kernels.h"

int kl_add_s8(const int8_t *a, int32_t za, int sa, const int8_t *b, int32_t zb, int sb,
	      const kl_requant_t *rq, int8_t *y, int n)
{
	int sat = 0;
	for (int k = 0; k < n; k++) {
		const int32_t acc = ((int32_t)a[k] - za) * (1 << sa) + ((int32_t)b[k] - zb) * (1 << sb);
		/* one rounding, as TFLite's ADD (whose 2^20 headroom makes the
		 * first of its two exact) */
		y[k] = kl_requant_clamp(rq, kl_rshift_round(acc, rq->y_shift), &sat);
	}
	return sat;
}

void kl_add_f32(const float *a, const float *b, float *y, int n, int act)
{
	for (int k = 0; k < n; k++) {
		y[k] = kl_act_f32(a[k] + b[k], act);
	}
}
