/* Fully connected layer, int8: forward with power-of-two requantisation. */
#include "kilolearn/kl_kernels.h"

int kl_fully_connected_s8(const int8_t *x, int32_t x_zp, const int8_t *w, const int32_t *b,
			  int b_shift, int y_shift, int32_t y_zp, int relu, int8_t *y, int n_in,
			  int n_out)
{
	const int32_t hi = 127 - y_zp;
	const int32_t lo = relu ? 0 : -128 - y_zp;
	int sat = 0;
	for (int i = 0; i < n_out; i++) {
		const int8_t *row = w + (long)i * n_in;
		int32_t dot = 0;
		for (int j = 0; j < n_in; j++) {
			dot += (int32_t)row[j] * ((int32_t)x[j] - x_zp);
		}
		const int32_t acc = kl_sat32((int64_t)dot + kl_rshift_round(b[i], b_shift));
		int32_t r = kl_rshift_round(acc, y_shift);
		if (r > hi) {
			r = hi;
			sat = 1;
		} else if (r < lo) {
			sat |= !relu;
			r = lo;
		}
		y[i] = (int8_t)(r + y_zp);
	}
	return sat;
}
