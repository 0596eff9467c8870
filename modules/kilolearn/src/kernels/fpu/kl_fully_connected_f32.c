/* Fully connected layer, float32, fpu backend: forward. Two output rows per
 * pass against blocks of eight inputs: one VLDM of the inputs and one per
 * row, sixteen VFMA (19 instructions per 16 MACs), two to four blocks per
 * loop iteration; each row's sum starts from its bias and ReLU clears the
 * sign bit's values with one BIC. Shapes without a multiple of eight inputs
 * take the ref kernel. Results equal the ref kernel's up to float rounding
 * (products fused, summed in another order). */
#include <stddef.h>

#include "kilolearn/kl_kernels.h"

#if KL_KERNELS_FPU
#include "kl_fpu_util.h"

/* a0 += r0[0..7] . x[0..7], a1 += r1[0..7] . x[0..7], pointers advanced */
#define KL_FC2_BLOCK                                                                              \
	"vldmia %[x]!, {s0-s7}\n\t"                                                               \
	"vldmia %[r0]!, {s8-s15}\n\t"                                                             \
	"vldmia %[r1]!, {s16-s23}\n\t"                                                            \
	"vfma.f32 %[a0], s8, s0\n\t"                                                              \
	"vfma.f32 %[a1], s16, s0\n\t"                                                             \
	"vfma.f32 %[a0], s9, s1\n\t"                                                              \
	"vfma.f32 %[a1], s17, s1\n\t"                                                             \
	"vfma.f32 %[a0], s10, s2\n\t"                                                             \
	"vfma.f32 %[a1], s18, s2\n\t"                                                             \
	"vfma.f32 %[a0], s11, s3\n\t"                                                             \
	"vfma.f32 %[a1], s19, s3\n\t"                                                             \
	"vfma.f32 %[a0], s12, s4\n\t"                                                             \
	"vfma.f32 %[a1], s20, s4\n\t"                                                             \
	"vfma.f32 %[a0], s13, s5\n\t"                                                             \
	"vfma.f32 %[a1], s21, s5\n\t"                                                             \
	"vfma.f32 %[a0], s14, s6\n\t"                                                             \
	"vfma.f32 %[a1], s22, s6\n\t"                                                             \
	"vfma.f32 %[a0], s15, s7\n\t"                                                             \
	"vfma.f32 %[a1], s23, s7\n\t"

/* the same for one row */
#define KL_FC1_BLOCK                                                                              \
	"vldmia %[x]!, {s0-s7}\n\t"                                                               \
	"vldmia %[r0]!, {s8-s15}\n\t"                                                             \
	"vfma.f32 %[a0], s8, s0\n\t"                                                              \
	"vfma.f32 %[a0], s9, s1\n\t"                                                              \
	"vfma.f32 %[a0], s10, s2\n\t"                                                             \
	"vfma.f32 %[a0], s11, s3\n\t"                                                             \
	"vfma.f32 %[a0], s12, s4\n\t"                                                             \
	"vfma.f32 %[a0], s13, s5\n\t"                                                             \
	"vfma.f32 %[a0], s14, s6\n\t"                                                             \
	"vfma.f32 %[a0], s15, s7\n\t"

#define KL_FC_LOOP(BODY) "1:\n\t" BODY "subs %[n], %[n], #1\n\t" "bne 1b"

/* rows r0 and r1 (r1 = r0 + n_in) over n iterations of B blocks of eight;
 * r1 is left at the row after them */
#define KL_FC2_PASS(BODY)                                                                         \
	__asm__ volatile(KL_FC_LOOP(BODY)                                                         \
			 : [x] "+r"(xp), [r0] "+r"(r0), [r1] "+r"(r1), [n] "+r"(n),               \
			   [a0] "+t"(a0), [a1] "+t"(a1)                                           \
			 :                                                                        \
			 : KL_FPU_CLOBBER24)
#define KL_FC1_PASS(BODY)                                                                         \
	__asm__ volatile(KL_FC_LOOP(BODY)                                                         \
			 : [x] "+r"(xp), [r0] "+r"(r0), [n] "+r"(n), [a0] "+t"(a0)                \
			 :                                                                        \
			 : KL_FPU_CLOBBER)

/* ReLU on the bits: a value with the sign bit set becomes +0 */
static inline float relu_bits(float v)
{
	uint32_t u;
	memcpy(&u, &v, sizeof(u));
	u &= ~(uint32_t)((int32_t)u >> 31);
	memcpy(&v, &u, sizeof(v));
	return v;
}

void kl_fpu_fully_connected_f32(const float *x, const float *w, const float *b, float *y,
				int n_in, int n_out, int act)
{
	if (n_in <= 0 || n_in % 8 != 0) {
		kl_ref_fully_connected_f32(x, w, b, y, n_in, n_out, act);
		return;
	}
	/* blocks of eight per loop iteration: four, two or one */
	const int per = n_in % 32 == 0 ? 4 : n_in % 16 == 0 ? 2 : 1;
	const int iters = n_in / (8 * per);
	const int relu = act == KL_ACT_RELU;
	const float *r0 = w;
	int i = 0;
	for (; i + 2 <= n_out; i += 2) {
		const float *xp = x, *r1 = r0 + n_in;
		float a0 = b[i], a1 = b[i + 1];
		int n = iters;
		if (per == 4) {
			KL_FC2_PASS(KL_FC2_BLOCK KL_FC2_BLOCK KL_FC2_BLOCK KL_FC2_BLOCK);
		} else if (per == 2) {
			KL_FC2_PASS(KL_FC2_BLOCK KL_FC2_BLOCK);
		} else {
			KL_FC2_PASS(KL_FC2_BLOCK);
		}
		r0 = r1;
		y[i] = relu ? relu_bits(a0) : a0;
		y[i + 1] = relu ? relu_bits(a1) : a1;
	}
	if (i < n_out) { /* the last, odd row */
		const float *xp = x;
		float a0 = b[i];
		int n = n_in / 8;
		KL_FC1_PASS(KL_FC1_BLOCK);
		y[i] = relu ? relu_bits(a0) : a0;
	}
	if (act != KL_ACT_NONE && !relu) { /* ReLU6 */
		for (int k = 0; k < n_out; k++) {
			y[k] = kl_act_f32(y[k], act);
		}
	}
}
#else
typedef int kl_fpu_fully_connected_f32_unused;
#endif
