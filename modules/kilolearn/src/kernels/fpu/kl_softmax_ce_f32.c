/* Softmax cross-entropy, float32, fpu backend: the ref kernel's loss and
 * gradient with exp(z - max) inlined (the libm expf costs about 70
 * instructions a call): 2^n p(r), n = round(x log2 e) by the 1.5 2^23
 * rounding constant, r = x - n ln 2 in two parts, p Cephes' degree-7 expf
 * polynomial by VFMA (within about one ulp of expf), 2^n added to the
 * exponent bits. Arguments below -86 give 0 (the ref: below 1e-37). */
#include <math.h>
#include <stddef.h>

#include "kilolearn/kl_kernels.h"

#if KL_KERNELS_FPU
#include "../ref/kl_softmax_f32.h"
#include "kl_fpu_util.h"

/* exp(x) for x <= 0 */
static inline float exp_neg(float x)
{
	if (x < -86.0f) {
		return 0.0f;
	}
	const float t = __builtin_fmaf(x, 1.44269504088896341f, 12582912.0f);
	const float kf = t - 12582912.0f; /* round(x log2 e), exactly */
	uint32_t tb, pb;
	memcpy(&tb, &t, sizeof(tb));
	float r = __builtin_fmaf(kf, -0.693359375f, x);
	r = __builtin_fmaf(kf, 2.12194440e-4f, r);
	float p = __builtin_fmaf(1.9875691500e-4f, r, 1.3981999507e-3f);
	p = __builtin_fmaf(p, r, 8.3334519073e-3f);
	p = __builtin_fmaf(p, r, 4.1665795894e-2f);
	p = __builtin_fmaf(p, r, 1.6666665459e-1f);
	p = __builtin_fmaf(p, r, 5.0000001201e-1f);
	p = __builtin_fmaf(p, r * r, r) + 1.0f;
	memcpy(&pb, &p, sizeof(pb));
	pb += (tb - 0x4b400000u) << 23; /* t's low bits: n */
	memcpy(&p, &pb, sizeof(p));
	return p;
}

/* dy = softmax(z) over the unmasked classes and the label (without a mask
 * the label is among the classes: one loop less) */
static void softmax_f32(const float *z, int n, int label, const uint8_t *mask, float *dy)
{
	if (mask == NULL) { /* every class (the label among them) */
		float m = z[0], s = 0.0f;
		for (int i = 1; i < n; i++) {
			m = z[i] > m ? z[i] : m;
		}
		for (int i = 0; i < n; i++) {
			const float e = exp_neg(z[i] - m);
			dy[i] = e;
			s += e;
		}
		const float inv = 1.0f / s;
		for (int i = 0; i < n; i++) {
			dy[i] *= inv;
		}
		return;
	}
	kl_softmax_masked_f32(z, n, label, mask, dy, exp_neg);
}

void kl_fpu_softmax_ce_grad_f32(const float *z, int n, int label, const uint8_t *mask, float *dy)
{
	softmax_f32(z, n, label, mask, dy);
	dy[label] -= 1.0f;
}

float kl_fpu_softmax_ce_f32(const float *z, int n, int label, const uint8_t *mask, float *dy)
{
	softmax_f32(z, n, label, mask, dy);
	return kl_softmax_ce_loss_f32(dy, label);
}
#else
typedef int kl_fpu_softmax_ce_f32_unused;
#endif
