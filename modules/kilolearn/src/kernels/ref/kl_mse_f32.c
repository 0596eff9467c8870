/* Mean squared error, float32: L = (1/n) sum (y - t)^2, dy = 2 (y - t) / n. */
#include "kilolearn/kl_kernels.h"

float kl_mse_f32(const float *y, const float *t, int n, float *dy)
{
	const float k = 2.0f / (float)n;
	float loss = 0.0f;
	for (int i = 0; i < n; i++) {
		const float d = y[i] - t[i];
		loss += d * d;
		dy[i] = k * d;
	}
	return loss / (float)n;
}
