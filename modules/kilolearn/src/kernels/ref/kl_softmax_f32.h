/* The float32 softmax cross-entropy of both backends (ref/kl_softmax_ce_f32.c
 * with libm's expf, fpu/kl_softmax_ce_f32.c with its inlined exp): one body,
 * given the exp. */
#ifndef KL_SOFTMAX_F32_H
#define KL_SOFTMAX_F32_H

#include <math.h>
#include <stddef.h>

#include "kilolearn/kl_kernels.h"

/* dy = softmax(z) over the unmasked classes and the label (mask NULL: all) */
static inline void kl_softmax_masked_f32(const float *z, int n, int label, const uint8_t *mask,
					 float *dy, float (*ex)(float))
{
	float m = z[label];
	for (int i = 0; i < n; i++) {
		if (mask == NULL || mask[i]) {
			m = z[i] > m ? z[i] : m;
		}
	}
	float s = 0.0f;
	for (int i = 0; i < n; i++) {
		dy[i] = (mask == NULL || mask[i] || i == label) ? ex(z[i] - m) : 0.0f;
		s += dy[i];
	}
	const float inv = 1.0f / s;
	for (int i = 0; i < n; i++) {
		dy[i] *= inv;
	}
}

/* the loss -log p[label] (p floored at 1e-30) of the softmax in dy, which
 * becomes the gradient p - onehot(label) */
static inline float kl_softmax_ce_loss_f32(float *dy, int label)
{
	const float p = dy[label] > 1e-30f ? dy[label] : 1e-30f;
	dy[label] -= 1.0f;
	return -logf(p);
}

#endif
