/* Softmax cross-entropy, float32: loss and gradient w.r.t. the logits. */
#include <math.h>

#include "kilolearn/kl_kernels.h"

float kl_softmax_ce_f32(const float *z, int n, int label, float *dy)
{
	float m = z[0];
	for (int i = 1; i < n; i++) {
		m = z[i] > m ? z[i] : m;
	}
	float s = 0.0f;
	for (int i = 0; i < n; i++) {
		dy[i] = expf(z[i] - m);
		s += dy[i];
	}
	const float inv = 1.0f / s;
	for (int i = 0; i < n; i++) {
		dy[i] *= inv;
	}
	const float p = dy[label] > 1e-30f ? dy[label] : 1e-30f;
	dy[label] -= 1.0f;
	return -logf(p);
}
