/* Fully connected layer, float32: input gradient, weight gradient, SGD. */
#include <stddef.h>

#include "kilolearn/kl_kernels.h"

void kl_ref_fully_connected_backward_input_f32(const float *w, const float *dy, float *dx,
					       int n_in, int n_out)
{
	for (int j = 0; j < n_in; j++) {
		dx[j] = 0.0f;
	}
	for (int i = 0; i < n_out; i++) {
		const float g = dy[i];
		if (g == 0.0f) {
			continue;
		}
		const float *row = w + (long)i * n_in;
		for (int j = 0; j < n_in; j++) {
			dx[j] += row[j] * g;
		}
	}
}

void kl_fully_connected_grad_f32(const float *dy, const float *x, float *gw, float *gb, int n_in,
				 int n_out)
{
	for (int i = 0; i < n_out; i++) {
		float *row = gw + (long)i * n_in;
		for (int j = 0; j < n_in; j++) {
			row[j] = dy[i] * x[j];
		}
		gb[i] = dy[i];
	}
}

void kl_ref_fully_connected_sgd_f32(float *w, float *b, float *vw, float *vb, const float *dy,
				    const float *x, float lr, float mu, int n_in, int n_out)
{
	for (int i = 0; i < n_out; i++) {
		const float g = dy[i];
		float *row = w + (long)i * n_in;
		if (vw == NULL) {
			if (g == 0.0f) {
				continue;
			}
			for (int j = 0; j < n_in; j++) {
				row[j] -= lr * (g * x[j]);
			}
			b[i] -= lr * g;
		} else {
			float *vrow = vw + (long)i * n_in;
			for (int j = 0; j < n_in; j++) {
				vrow[j] = mu * vrow[j] + g * x[j];
				row[j] -= lr * vrow[j];
			}
			vb[i] = mu * vb[i] + g;
			b[i] -= lr * vb[i];
		}
	}
}

void kl_sgd_f32(float *p, float *v, const float *g, float lr, float mu, int n)
{
	for (int k = 0; k < n; k++) {
		if (v == NULL) {
			p[k] -= lr * g[k];
		} else {
			v[k] = mu * v[k] + g[k];
			p[k] -= lr * v[k];
		}
	}
}
