/* Mean squared error, int8 outputs and targets (docs/int8-training.md):
 * both aligned to a common exponent, their difference times the Q16
 * reciprocal of n, quantised to int8 as every gradient. */
#include "kilolearn/kl_kernels.h"

/* v in units of 2^(e + d): to units of 2^e (d <= KL_MSE_ALIGN_MAX) */
static inline int32_t mse_align(int32_t v, int d)
{
	return d >= 0 ? v * (1 << d) : kl_rshift_round(v, -d);
}

int kl_mse_exp(int ey, int et)
{
	const int lo = ey < et ? ey : et, hi = ey < et ? et : ey;
	return lo > hi - KL_MSE_ALIGN_MAX ? lo : hi - KL_MSE_ALIGN_MAX;
}

int kl_mse_s8(const int8_t *y, int ey, int32_t zy, const int8_t *t, int et, int32_t zt, int n,
	      int32_t *acc, int8_t *dy)
{
	const int e = kl_mse_exp(ey, et);
	const int32_t r = (int32_t)((65536u + (uint32_t)n / 2u) / (uint32_t)n); /* 2^16 / n */
	for (int i = 0; i < n; i++) {
		const int32_t d = mse_align((int32_t)y[i] - zy, ey - e) -
				  mse_align((int32_t)t[i] - zt, et - e);
		acc[i] = d * r; /* |d| < 2^15, r <= 2^16: no overflow */
	}
	/* 2 d / n = d r 2^(e - 15) */
	return e - 15 + kl_quantize_grad_s8(acc, dy, n);
}

uint32_t kl_mse_err_s8(const int8_t *y, int ey, int32_t zy, const int8_t *t, int et, int32_t zt,
		       int n, int *exp)
{
	const int e = kl_mse_exp(ey, et);
	uint64_t s = 0;
	for (int i = 0; i < n; i++) {
		const int32_t d = mse_align((int32_t)y[i] - zy, ey - e) -
				  mse_align((int32_t)t[i] - zt, et - e);
		s += (uint64_t)((int64_t)d * d);
	}
	/* the sum in units of 2^(2e + k), at most 32 bits */
	int k = 0;
	while ((s >> k) > 0xFFFFFFFFu) {
		k++;
	}
	*exp = 2 * e + k;
	return (uint32_t)(s >> k);
}
