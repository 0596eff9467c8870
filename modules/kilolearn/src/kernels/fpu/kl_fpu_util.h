/* Shared pieces of the fpu kernels (float32 on a single-precision FPU with
 * Thumb-2: Cortex-M4F, M7, M33, M55): the clobber lists of their inline
 * assembly and the test for a zero gradient. */
#ifndef KL_FPU_UTIL_H
#define KL_FPU_UTIL_H

#include <stdint.h>
#include <string.h>

/* s0 .. s23: the blocks of eight floats the kernels move with VLDM / VSTM */
#define KL_FPU_CLOBBER                                                                            \
	"s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "s12", "s13",   \
		"s14", "s15", "cc", "memory"
#define KL_FPU_CLOBBER24                                                                          \
	KL_FPU_CLOBBER, "s16", "s17", "s18", "s19", "s20", "s21", "s22", "s23"

/* v == 0.0f or -0.0f, read as an integer (no VCMP / VMRS) */
static inline int kl_fpu_is_zero(const float *v)
{
	uint32_t u;
	memcpy(&u, v, sizeof(u));
	return (u << 1) == 0u;
}

/* the index of the first nonzero entry of v[i ..n - 1], or n */
static inline int kl_fpu_next_nonzero(const float *v, int i, int n)
{
	while (i < n && kl_fpu_is_zero(&v[i])) {
		i++;
	}
	return i;
}

#endif
