/* Softmax cross-entropy, float32: loss and gradient w.r.t. the logits. */
#include <math.h>

#include <stddef.h>

#include "kilolearn/kl_kernels.h"

/* dy = softmax(z) over the unmasked classes and the label */
static void softmax_f32(const float *z, int n, int label, const uint8_t *mask, float *dy)
{
	float m = z[label];
	for (int i = 0; i < n; i++) {
		if (mask == NULL || mask[i]) {
			m = z[i] > m ? z[i] : m;
		}
	}
	float s = 0.0f;
	for (int i = 0; i < n; i++) {
		dy[i] = (mask == NULL || mask[i] || i == label) ? expf(z[i] - m) : 0.0f;
		s += dy[i];
	}
	const float inv = 1.0f / s;
	for (int i = 0; i < n; i++) {
		dy[i] *= inv;
	}
}

void kl_ref_softmax_ce_grad_f32(const float *z, int n, int label, const uint8_t *mask, float *dy)
{
	softmax_f32(z, n, label, mask, dy);
	dy[label] -= 1.0f;
}

float kl_ref_softmax_ce_f32(const float *z, int n, int label, const uint8_t *mask, float *dy)
{
	softmax_f32(z, n, label, mask, dy);
	const float p = dy[label] > 1e-30f ? dy[label] : 1e-30f;
	dy[label] -= 1.0f;
	return -logf(p);
}
