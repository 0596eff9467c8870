/* Softmax cross-entropy, float32: loss and gradient w.r.t. the logits (the
 * body in kl_softmax_f32.h, shared with the fpu backend). */
#include "kl_softmax_f32.h"

static float exp_f32(float x)
{
	return expf(x);
}

void kl_ref_softmax_ce_grad_f32(const float *z, int n, int label, const uint8_t *mask, float *dy)
{
	kl_softmax_masked_f32(z, n, label, mask, dy, exp_f32);
	dy[label] -= 1.0f;
}

float kl_ref_softmax_ce_f32(const float *z, int n, int label, const uint8_t *mask, float *dy)
{
	kl_softmax_masked_f32(z, n, label, mask, dy, exp_f32);
	return kl_softmax_ce_loss_f32(dy, label);
}
