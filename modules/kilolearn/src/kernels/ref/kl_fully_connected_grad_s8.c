/* Fully connected layer, int8: input gradient, weight gradient, SGD update. */
#include <stddef.h>

#include "kilolearn/kl_kernels.h"

void kl_ref_fully_connected_backward_input_s8(const int8_t *w, const int8_t *dy, int32_t *acc,
					      int n_in, int n_out)
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
}

void kl_ref_fully_connected_grad_s8(const int8_t *dy, const int8_t *x, int32_t x_zp, int32_t *gw,
				    int32_t *gb, int n_in, int n_out)
{
	for (int i = 0; i < n_out; i++) {
		int32_t *row = gw + (long)i * n_in;
		for (int j = 0; j < n_in; j++) {
			row[j] = (int32_t)dy[i] * ((int32_t)x[j] - x_zp);
		}
		gb[i] = dy[i];
	}
}

void kl_ref_fully_connected_sgd_s8(int8_t *w, int32_t *b, const int8_t *dy, const int8_t *x,
				   int32_t x_zp, int32_t lr_q, int w_shift, int b_shift,
				   uint32_t *dither, int n_in, int n_out, int16_t *scratch)
{
	(void)scratch;
	uint32_t d = *dither;
	for (int i = 0; i < n_out; i++) {
		const int32_t c = (int32_t)dy[i] * lr_q;
		if (c == 0) { /* every delta is floor(d / 2^sh) = 0 */
			d += (uint32_t)n_in * KL_WEYL;
			continue;
		}
		int8_t *row = w + (long)i * n_in;
		for (int j = 0; j < n_in; j++) {
			const int32_t v = c * ((int32_t)x[j] - x_zp);
			row[j] = kl_sub_clamp_w(row[j], kl_stochastic_shift(v, w_shift, d));
			d += KL_WEYL;
		}
		b[i] = kl_sat32((int64_t)b[i] - kl_rshift_round(c, b_shift));
	}
	*dither = d;
}

void kl_ref_sgd_weights_s8(int8_t *w, const int32_t *gw, int32_t lr_q, int w_shift,
			   uint32_t *dither, int n)
{
	uint32_t d = *dither;
	for (int k = 0; k < n; k++) {
		w[k] = kl_sub_clamp_w(w[k], kl_stochastic_shift((int64_t)gw[k] * lr_q, w_shift, d));
		d += KL_WEYL;
	}
	*dither = d;
}

void kl_sgd_bias_s8(int32_t *b, const int32_t *gb, int32_t lr_q, int b_shift, int n)
{
	for (int i = 0; i < n; i++) {
		b[i] = kl_sat32((int64_t)b[i] -
				kl_rshift_round64((int64_t)gb[i] * lr_q, b_shift));
	}
}
