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

/* s24 += r0[0..7] . x[0..7], s25 += r1[0..7] . x[0..7], pointers advanced */
#define KL_FC2_BLOCK                                                                              \
	"vldmia %[x]!, {s0-s7}\n\t"                                                               \
	"vldmia %[r0]!, {s8-s15}\n\t"                                                             \
	"vldmia %[r1]!, {s16-s23}\n\t"                                                            \
	"vfma.f32 s24, s8, s0\n\t"                                                                \
	"vfma.f32 s25, s16, s0\n\t"                                                               \
	"vfma.f32 s24, s9, s1\n\t"                                                                \
	"vfma.f32 s25, s17, s1\n\t"                                                               \
	"vfma.f32 s24, s10, s2\n\t"                                                               \
	"vfma.f32 s25, s18, s2\n\t"                                                               \
	"vfma.f32 s24, s11, s3\n\t"                                                               \
	"vfma.f32 s25, s19, s3\n\t"                                                               \
	"vfma.f32 s24, s12, s4\n\t"                                                               \
	"vfma.f32 s25, s20, s4\n\t"                                                               \
	"vfma.f32 s24, s13, s5\n\t"                                                               \
	"vfma.f32 s25, s21, s5\n\t"                                                               \
	"vfma.f32 s24, s14, s6\n\t"                                                               \
	"vfma.f32 s25, s22, s6\n\t"                                                               \
	"vfma.f32 s24, s15, s7\n\t"                                                               \
	"vfma.f32 s25, s23, s7\n\t"

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

/* n_pairs passes of two rows (r0 and the next) over n_in / (8 B) loop
 * iterations of B blocks each, all in one block of assembly: per pair the
 * two sums start from the biases (s24, s25), x is rewound by the row's
 * stride, the sums go out with ReLU on their bits (a sign bit set: +0) or
 * as they are, the rows move on by two */
#define KL_FC2_LAYER(BODY, OUT)                                                                   \
	__asm__ volatile("2:\n\t"                                                                 \
			 "vldmia %[b]!, {s24-s25}\n\t"                                            \
			 "add %[r1], %[r0], %[stride]\n\t"                                        \
			 "mov %[n], %[iters]\n\t"                                                 \
			 "1:\n\t" BODY "subs %[n], %[n], #1\n\t"                                  \
			 "bne 1b\n\t"                                                             \
			 "sub %[x], %[x], %[stride]\n\t"                                          \
			 "mov %[r0], %[r1]\n\t" OUT "subs %[pairs], %[pairs], #1\n\t"            \
			 "bne 2b"                                                                 \
			 : [x] "+r"(xp), [r0] "+r"(r0), [r1] "=&r"(r1), [n] "=&r"(n),             \
			   [t] "=&r"(t), [b] "+r"(bp), [y] "+r"(yp), [pairs] "+r"(pairs)          \
			 : [stride] "r"(stride), [iters] "r"(iters)                               \
			 : KL_FPU_CLOBBER24, "s24", "s25")

#define KL_FC2_OUT_RELU                                                                           \
	"vmov %[n], %[t], s24, s25\n\t"                                                           \
	"bic %[n], %[n], %[n], asr #31\n\t"                                                       \
	"bic %[t], %[t], %[t], asr #31\n\t"                                                       \
	"strd %[n], %[t], [%[y]], #8\n\t"
#define KL_FC2_OUT_NONE "vstmia %[y]!, {s24-s25}\n\t"

#define KL_FC2_BODY4 KL_FC2_BLOCK KL_FC2_BLOCK KL_FC2_BLOCK KL_FC2_BLOCK
#define KL_FC2_BODY2 KL_FC2_BLOCK KL_FC2_BLOCK

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
	const int iters = n_in / (8 * per), stride = n_in * 4;
	const int relu = act == KL_ACT_RELU;
	const float *xp = x, *r0 = w, *r1, *bp = b;
	float *yp = y;
	int pairs = n_out / 2, n;
	uint32_t t;
	if (pairs > 0) {
		if (relu) {
			if (per == 4) {
				KL_FC2_LAYER(KL_FC2_BODY4, KL_FC2_OUT_RELU);
			} else if (per == 2) {
				KL_FC2_LAYER(KL_FC2_BODY2, KL_FC2_OUT_RELU);
			} else {
				KL_FC2_LAYER(KL_FC2_BLOCK, KL_FC2_OUT_RELU);
			}
		} else {
			if (per == 4) {
				KL_FC2_LAYER(KL_FC2_BODY4, KL_FC2_OUT_NONE);
			} else if (per == 2) {
				KL_FC2_LAYER(KL_FC2_BODY2, KL_FC2_OUT_NONE);
			} else {
				KL_FC2_LAYER(KL_FC2_BLOCK, KL_FC2_OUT_NONE);
			}
		}
	}
	if (n_out % 2 != 0) { /* the last, odd row: r0 is there */
		const int i = n_out - 1;
		float a0 = b[i];
		n = n_in / 8;
		xp = x;
		__asm__ volatile("1:\n\t" KL_FC1_BLOCK "subs %[n], %[n], #1\n\t"
				 "bne 1b"
				 : [x] "+r"(xp), [r0] "+r"(r0), [n] "+r"(n), [a0] "+t"(a0)
				 :
				 : KL_FPU_CLOBBER);
		y[i] = relu ? relu_bits(a0) : a0;
	}
	if (act != KL_ACT_NONE && !relu) { /* ReLU6 */
		for (int k = 0; k < n_out; k++) {
			y[k] = kl_act_f32(y[k], act);
		}
	}
	(void)r1;
	(void)t;
}
#else
typedef int kl_fpu_fully_connected_f32_unused;
#endif
