/* Sigmoid binary cross-entropy, float32 (binary and multi-label): p =
 * sigmoid(z), L = sum -(t log p + (1 - t) log(1 - p)), dy = p - t. */
#include <math.h>
#include <stddef.h>

#include "kilolearn/kl_kernels.h"

float kl_sigmoid_bce_f32(const float *z, const float *t, int n, int label, float *dy)
{
	float loss = 0.0f;
	for (int i = 0; i < n; i++) {
		const float ti = t != NULL ? t[i] : (float)(n == 1 ? label != 0 : i == label);
		const float e = expf(-fabsf(z[i]));
		const float p = z[i] >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
		dy[i] = p - ti;
		loss += (z[i] > 0.0f ? z[i] : 0.0f) - z[i] * ti + log1pf(e);
	}
	return loss;
}
