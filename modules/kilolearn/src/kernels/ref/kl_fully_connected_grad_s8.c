/* Fully connected layer, int8: input gradient, weight gradient, SGD update. */
#include <stddef.h>

#include "kilolearn/kl_kernels.h"

int kl_fully_connected_backward_input_s8(const int8_t *w, const int8_t *dy, const int8_t *mask,
					 int32_t mask_zp, int32_t *acc, int8_t *dx, int n_in,
					 int n_out)
{
	for (int j = 0; j < n_in; j++) {
		acc[j] = 0;
	}
	for (int i = 0; i < n_out; i++) {
		const int32_t g = dy[i];
		if (g == 0) {
			continue;
		}
		const int8_t *row = w + (long)i * n_in;
		for (int j = 0; j < n_in; j++) {
			acc[j] += (int32_t)row[j] * g;
		}
	}
	if (mask != NULL) {
		for (int j = 0; j < n_in; j++) {
			if ((int32_t)mask[j] <= mask_zp) {
				acc[j] = 0;
			}
		}
	}
	return kl_quantize_grad_s8(acc, dx, n_in);
}

void kl_fully_connected_grad_s8(const int8_t *dy, const int8_t *x, int32_t x_zp, int32_t *gw,
				int n_in, int n_out)
{
	for (int i = 0; i < n_out; i++) {
		int32_t *row = gw + (long)i * n_in;
		for (int j = 0; j < n_in; j++) {
			row[j] = (int32_t)dy[i] * ((int32_t)x[j] - x_zp);
		}
	}
}

/* floor((v + top sh bits of the dither) / 2^sh), sh limited to [1, 30] */
static inline int32_t stochastic_shift(int32_t v, int sh, uint32_t d)
{
	if (sh > 30) {
		v >>= (sh - 30 > 31 ? 31 : sh - 30);
		sh = 30;
	} else if (sh < 1) {
		sh = 1;
	}
	return (v + (int32_t)(d >> (32 - sh))) >> sh;
}

static inline int8_t sub_clamp(int8_t w, int32_t delta, int *clamped)
{
	int32_t r = (int32_t)w - delta;
	if (r > 127) {
		r = 127;
		(*clamped)++;
	} else if (r < -127) {
		r = -127;
		(*clamped)++;
	}
	return (int8_t)r;
}

int kl_fully_connected_sgd_s8(int8_t *w, int32_t *b, const int8_t *dy, const int8_t *x,
			      int32_t x_zp, int32_t lr_q, int w_shift, int b_shift,
			      uint32_t *dither, int n_in, int n_out)
{
	uint32_t d = *dither;
	int clamped = 0;
	for (int i = 0; i < n_out; i++) {
		const int32_t c = (int32_t)dy[i] * lr_q;
		if (c == 0) { /* every delta is floor(d / 2^sh) = 0 */
			d += (uint32_t)n_in * KL_WEYL;
			continue;
		}
		int8_t *row = w + (long)i * n_in;
		for (int j = 0; j < n_in; j++) {
			const int32_t v = c * ((int32_t)x[j] - x_zp);
			row[j] = sub_clamp(row[j], stochastic_shift(v, w_shift, d), &clamped);
			d += KL_WEYL;
		}
		b[i] = kl_sat32((int64_t)b[i] - kl_rshift_round(c, b_shift));
	}
	*dither = d;
	return clamped;
}

int kl_sgd_weights_s8(int8_t *w, const int32_t *gw, int32_t lr_q, int w_shift, uint32_t *dither,
		      int n)
{
	uint32_t d = *dither;
	int clamped = 0;
	for (int k = 0; k < n; k++) {
		w[k] = sub_clamp(w[k], stochastic_shift(gw[k] * lr_q, w_shift, d), &clamped);
		d += KL_WEYL;
	}
	*dither = d;
	return clamped;
}

void kl_sgd_bias_s8(int32_t *b, const int8_t *gb, int32_t lr_q, int b_shift, int n)
{
	for (int i = 0; i < n; i++) {
		b[i] = kl_sat32((int64_t)b[i] - kl_rshift_round((int32_t)gb[i] * lr_q, b_shift));
	}
}
