/* Sigmoid, tanh and leaky ReLU on float32 activations, and their
 * derivatives from the outputs. */
#include <math.h>

#include "kilolearn/kl_kernels.h"

void kl_activation_f32(float *y, int n, int act)
{
	for (int i = 0; i < n; i++) {
		const float v = y[i];
		if (act == KL_ACT_SIGMOID) {
			y[i] = 1.0f / (1.0f + expf(-v));
		} else if (act == KL_ACT_TANH) {
			y[i] = tanhf(v);
		} else if (act == KL_ACT_LEAKY_RELU) {
			y[i] = v > 0.0f ? v : v * KL_LEAKY_ALPHA;
		}
	}
}

void kl_activation_grad_f32(const float *y, int act, float *dy, int n)
{
	for (int i = 0; i < n; i++) {
		const float v = y[i];
		if (act == KL_ACT_SIGMOID) {
			dy[i] *= v * (1.0f - v);
		} else if (act == KL_ACT_TANH) {
			dy[i] *= 1.0f - v * v;
		} else if (act == KL_ACT_LEAKY_RELU) {
			dy[i] = v > 0.0f ? dy[i] : dy[i] * KL_LEAKY_ALPHA;
		}
	}
}
