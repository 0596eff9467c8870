/* Helpers of the dsp kernels: ACLE intrinsics of the Armv7E-M / Armv8-M
 * DSP extension. Only included where __ARM_FEATURE_DSP is defined. */
#ifndef KL_DSP_UTIL_H
#define KL_DSP_UTIL_H

#include <arm_acle.h>
#include <string.h>

#include "kilolearn/kl_kernels.h"

/* four int8 from any address (one unaligned LDR) */
static inline uint32_t kl_read_s8x4(const int8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return v;
}

/* bytes 1 and 3 sign-extended to two int16 lanes: SXTB16 with ROR #8 */
static inline uint32_t kl_sxtb16_ror8(uint32_t v)
{
	uint32_t r;
	__asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
	return r;
}

static inline uint32_t kl_sxtb16(uint32_t v)
{
	return (uint32_t)__sxtb16((int8x4_t)v);
}

static inline int32_t kl_smlad(uint32_t a, uint32_t b, int32_t acc)
{
	return __smlad((int16x2_t)a, (int16x2_t)b, acc);
}

/* lanes equal to -128 become -127 (the symmetric weight range) */
static inline uint32_t kl_clamp_m127_s8x4(uint32_t v)
{
	uint32_t t;
	__asm__("ssub8 %0, %1, %2\n\tsel %0, %1, %2" : "=&r"(t) : "r"(v), "r"(0x81818181u) : "cc");
	return t;
}

/* x - zp as int16, each group of four reordered (0, 2, 1, 3) to match
 * SXTB16 / SXTB16 ROR 8 of a weight word; the n % 4 tail stays in order. */
static inline void kl_center_interleave_s8(const int8_t *x, int32_t zp, int16_t *out, int n)
{
	int j = 0;
	for (; j + 4 <= n; j += 4) {
		out[j] = (int16_t)(x[j] - zp);
		out[j + 1] = (int16_t)(x[j + 2] - zp);
		out[j + 2] = (int16_t)(x[j + 1] - zp);
		out[j + 3] = (int16_t)(x[j + 3] - zp);
	}
	for (; j < n; j++) {
		out[j] = (int16_t)(x[j] - zp);
	}
}

#endif
