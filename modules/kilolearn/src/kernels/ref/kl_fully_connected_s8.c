/* Fully connected layer, int8: forward with power-of-two requantisation. */
#include "kilolearn/kl_kernels.h"

int kl_ref_fully_connected_s8(const int8_t *x, int32_t x_zp, const int8_t *w, const int32_t *b,
			      const kl_requant_t *rq, int8_t *y, int n_in, int n_out,
			      int16_t *scratch)
{
	(void)scratch;
	int sat = 0;
	for (int i = 0; i < n_out; i++) {
		const int8_t *row = w + (long)i * n_in;
		int32_t dot = 0;
		for (int j = 0; j < n_in; j++) {
			dot += (int32_t)row[j] * ((int32_t)x[j] - x_zp);
		}
		y[i] = kl_requant(rq, dot, b[i], &sat);
	}
	return sat;
}

int kl_ref_fully_connected_rows_s8(const int8_t *x, int32_t x_zp, const int8_t *const *rows,
				   const int32_t *b, const kl_requant_t *rq, int8_t *y, int n_in,
				   int n_out, int16_t *scratch)
{
	(void)scratch;
	int sat = 0;
	for (int i = 0; i < n_out; i++) {
		int32_t dot = 0;
		for (int j = 0; j < n_in; j++) {
			dot += (int32_t)rows[i][j] * ((int32_t)x[j] - x_zp);
		}
		y[i] = kl_requant(rq, dot, b[i], &sat);
	}
	return sat;
}
