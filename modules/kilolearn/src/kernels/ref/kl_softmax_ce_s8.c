/* Softmax cross-entropy, int8 logits: gradient from a host-built exp table. */
#include <stddef.h>

#include "kilolearn/kl_kernels.h"

int kl_softmax_ce_s8(const int8_t *z, int n, int label, const uint16_t *lut, int lut_shift,
		     const uint8_t *mask, int32_t *acc, int8_t *dy)
{
	int32_t m = z[label];
	if (mask == NULL) { /* every class active: the same integers, fewer tests */
		for (int i = 0; i < n; i++) {
			m = z[i] > m ? z[i] : m;
		}
		uint32_t s = 0;
		for (int i = 0; i < n; i++) {
			const uint32_t gap = (uint32_t)(m - z[i]);
			const uint32_t d = lut_shift >= 8 ? (gap == 0u ? 0u : 256u) : gap << lut_shift;
			acc[i] = d < 256u ? (int32_t)lut[d] : 0;
			s += (uint32_t)acc[i];
		}
		for (int i = 0; i < n; i++) { /* (0 stays 0: s > 1) */
			if (acc[i] != 0) {
				acc[i] = (int32_t)((((uint32_t)acc[i] << 15) + (s >> 1)) / s);
			}
		}
		acc[label] -= 1 << 15;
		return kl_quantize_grad_s8(acc, dy, n);
	}
	for (int i = 0; i < n; i++) {
		if (mask == NULL || mask[i]) {
			m = z[i] > m ? z[i] : m;
		}
	}
	uint32_t s = 0;
	for (int i = 0; i < n; i++) {
		if (mask != NULL && !mask[i] && i != label) { /* inactive class: no share */
			acc[i] = 0;
			continue;
		}
		const uint32_t gap = (uint32_t)(m - z[i]);
		const uint32_t d = gap == 0u ? 0u : (lut_shift >= 8 ? 256u : gap << lut_shift);
		acc[i] = d < 256u ? (int32_t)lut[d] : 0;
		s += (uint32_t)acc[i];
	}
	/* s >= lut[0] = 32768 > 0: the maximum contributes exp(0) */
	for (int i = 0; i < n; i++) {
		acc[i] = (int32_t)((((uint32_t)acc[i] << 15) + (s >> 1)) / s);
	}
	acc[label] -= 1 << 15;
	return kl_quantize_grad_s8(acc, dy, n);
}
