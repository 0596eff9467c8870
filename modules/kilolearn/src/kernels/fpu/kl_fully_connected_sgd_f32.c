/* Fully connected layer, float32, fpu backend: the fused SGD step without
 * momentum, w[o][i] -= (lr dy[o]) x[i], b[o] -= lr dy[o], rows with a zero
 * gradient skipped. Two rows with a nonzero gradient per pass over x in
 * blocks of eight: one VLDM of x, per row one VLDM, eight VFMS and one VSTM
 * (21 instructions per 16 weights), two to four blocks per loop iteration;
 * a row left over alone. Momentum and shapes without a multiple of eight
 * inputs take the ref kernel. Results equal the ref kernel's up to float
 * rounding (lr dy[o] formed first, products fused). */
#include <stddef.h>

#include "kilolearn/kl_kernels.h"

#if KL_KERNELS_FPU
#include "kl_fpu_util.h"

#define KL_SGD2_BLOCK                                                                             \
	"vldmia %[x]!, {s0-s7}\n\t"                                                               \
	"vldmia %[r0], {s8-s15}\n\t"                                                              \
	"vldmia %[r1], {s16-s23}\n\t"                                                             \
	"vfms.f32 s8, s0, %[c0]\n\t"                                                              \
	"vfms.f32 s16, s0, %[c1]\n\t"                                                             \
	"vfms.f32 s9, s1, %[c0]\n\t"                                                              \
	"vfms.f32 s17, s1, %[c1]\n\t"                                                             \
	"vfms.f32 s10, s2, %[c0]\n\t"                                                             \
	"vfms.f32 s18, s2, %[c1]\n\t"                                                             \
	"vfms.f32 s11, s3, %[c0]\n\t"                                                             \
	"vfms.f32 s19, s3, %[c1]\n\t"                                                             \
	"vfms.f32 s12, s4, %[c0]\n\t"                                                             \
	"vfms.f32 s20, s4, %[c1]\n\t"                                                             \
	"vfms.f32 s13, s5, %[c0]\n\t"                                                             \
	"vfms.f32 s21, s5, %[c1]\n\t"                                                             \
	"vfms.f32 s14, s6, %[c0]\n\t"                                                             \
	"vfms.f32 s22, s6, %[c1]\n\t"                                                             \
	"vfms.f32 s15, s7, %[c0]\n\t"                                                             \
	"vfms.f32 s23, s7, %[c1]\n\t"                                                             \
	"vstmia %[r0]!, {s8-s15}\n\t"                                                             \
	"vstmia %[r1]!, {s16-s23}\n\t"

#define KL_SGD1_BLOCK                                                                             \
	"vldmia %[x]!, {s0-s7}\n\t"                                                               \
	"vldmia %[r0], {s8-s15}\n\t"                                                              \
	"vfms.f32 s8, s0, %[c0]\n\t"                                                              \
	"vfms.f32 s9, s1, %[c0]\n\t"                                                              \
	"vfms.f32 s10, s2, %[c0]\n\t"                                                             \
	"vfms.f32 s11, s3, %[c0]\n\t"                                                             \
	"vfms.f32 s12, s4, %[c0]\n\t"                                                             \
	"vfms.f32 s13, s5, %[c0]\n\t"                                                             \
	"vfms.f32 s14, s6, %[c0]\n\t"                                                             \
	"vfms.f32 s15, s7, %[c0]\n\t"                                                             \
	"vstmia %[r0]!, {s8-s15}\n\t"

#define KL_SGD_LOOP(BODY) "1:\n\t" BODY "subs %[n], %[n], #1\n\t" "bne 1b"

#define KL_SGD2_PASS(BODY)                                                                        \
	__asm__ volatile(KL_SGD_LOOP(BODY)                                                        \
			 : [x] "+r"(xp), [r0] "+r"(r0), [r1] "+r"(r1), [n] "+r"(n)                \
			 : [c0] "t"(c0), [c1] "t"(c1)                                             \
			 : KL_FPU_CLOBBER24)

void kl_fpu_fully_connected_sgd_f32(float *w, float *b, float *vw, float *vb, const float *dy,
				    const float *x, float lr, float mu, int n_in, int n_out)
{
	if (vw != NULL || n_in <= 0 || n_in % 8 != 0) { /* momentum, odd shapes: the ref kernel */
		kl_ref_fully_connected_sgd_f32(w, b, vw, vb, dy, x, lr, mu, n_in, n_out);
		return;
	}
	const int per = n_in % 32 == 0 ? 4 : n_in % 16 == 0 ? 2 : 1;
	const int iters = n_in / (8 * per);
	float *r0 = NULL;
	float c0 = 0.0f;
	const float *d = dy, *const d_end = dy + n_out;
	for (;; d++) {
		while (d < d_end && kl_fpu_is_zero(d)) { /* the next row with a gradient */
			d++;
		}
		if (d == d_end) {
			break;
		}
		const int i = (int)(d - dy);
		float *row = w + (long)i * n_in;
		const float c = lr * *d;
		b[i] -= c;
		if (r0 == NULL) { /* the pair's first row */
			r0 = row;
			c0 = c;
			continue;
		}
		const float c1 = c;
		const float *xp = x;
		float *r1 = row;
		int n = iters;
		if (per == 4) {
			KL_SGD2_PASS(KL_SGD2_BLOCK KL_SGD2_BLOCK KL_SGD2_BLOCK KL_SGD2_BLOCK);
		} else if (per == 2) {
			KL_SGD2_PASS(KL_SGD2_BLOCK KL_SGD2_BLOCK);
		} else {
			KL_SGD2_PASS(KL_SGD2_BLOCK);
		}
		r0 = NULL;
	}
	if (r0 != NULL) { /* a row alone */
		const float *xp = x;
		int n = n_in / 8;
		__asm__ volatile(KL_SGD_LOOP(KL_SGD1_BLOCK)
				 : [x] "+r"(xp), [r0] "+r"(r0), [n] "+r"(n)
				 : [c0] "t"(c0)
				 : KL_FPU_CLOBBER);
	}
}
#else
typedef int kl_fpu_fully_connected_sgd_f32_unused;
#endif
