/* Fully connected layer, float32: forward. */
#include "kilolearn/kl_kernels.h"

void kl_ref_fully_connected_f32(const float *x, const float *w, const float *b, float *y,
				int n_in, int n_out, int act)
{
	for (int i = 0; i < n_out; i++) {
		const float *row = w + (long)i * n_in;
		float acc = 0.0f;
		int j = 0;
		for (; j + 4 <= n_in; j += 4) {
			acc += row[j] * x[j] + row[j + 1] * x[j + 1] + row[j + 2] * x[j + 2] +
			       row[j + 3] * x[j + 3];
		}
		for (; j < n_in; j++) {
			acc += row[j] * x[j];
		}
		y[i] = kl_act_f32(acc + b[i], act);
	}
}
