/* Sigmoid binary cross-entropy, int8 logits: sigmoid(z) is the two-class
 * softmax of (z, 0), so it comes from the softmax table exactly as
 * kl_softmax_ce_s8 computes it (docs/int8-training.md). */
#include <stddef.h>

#include "kilolearn/kl_kernels.h"

int kl_sigmoid_bce_s8(const int8_t *z, int32_t zz, int n, const int8_t *t, int label,
		      const uint16_t *lut, int lut_shift, int32_t *acc, int8_t *dy)
{
	for (int i = 0; i < n; i++) {
		const int32_t v = (int32_t)z[i] - zz;
		const uint32_t gap = (uint32_t)(v < 0 ? -v : v);
		const uint32_t d = gap == 0u ? 0u : (lut_shift >= 8 ? 256u : gap << lut_shift);
		const uint32_t e = d < 256u ? lut[d] : 0u;
		const uint32_t s = 32768u + e; /* exp(0) + exp(-|v|), Q15 */
		const uint32_t num = v >= 0 ? 32768u : e;
		const int32_t p = (int32_t)(((num << 15) + (s >> 1)) / s);
		const int ti = t != NULL ? t[i] != 0 : (n == 1 ? label != 0 : i == label);
		acc[i] = p - (ti ? 32768 : 0);
	}
	return kl_quantize_grad_s8(acc, dy, n);
}
