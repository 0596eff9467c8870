/* Adam, float32 (Kingma & Ba, PyTorch's form of the bias correction). */
#include <math.h>

#include "kilolearn/kl_kernels.h"

void kl_adam_f32(float *p, float *mo, float *v, const float *g, float scale, float lr, float b1,
		 float b2, float c1, float c2, float eps, int n)
{
	const float a1 = 1.0f - b1, a2 = 1.0f - b2;
	for (int k = 0; k < n; k++) {
		const float gk = g[k] * scale;
		mo[k] = b1 * mo[k] + a1 * gk;
		v[k] = b2 * v[k] + a2 * (gk * gk);
		p[k] -= lr * (mo[k] * c1) / (sqrtf(v[k] * c2) + eps);
	}
}
