/* Fully connected layer, float32, fpu backend (cores with a single-precision
 * FPU: Cortex-M4F, M7, M33): forward, input gradient and the fused SGD step
 * on blocks of eight floats moved with one VLDM / VSTM each and multiplied
 * with VFMA / VFMS. Results equal the ref kernels' up to float rounding (the
 * sums are split over two accumulators, products fused). */
#include <stddef.h>

#include "kilolearn/kl_kernels.h"

#if KL_KERNELS_FPU

#define KL_FPU_CLOBBER                                                                            \
	"s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "s12", "s13",   \
		"s14", "s15", "cc", "memory"

/* sum of a[j] * b[j] over n8 blocks of eight, as two partial sums */
static inline float dot8(const float *a, const float *b, int n8)
{
	float p = 0.0f, q = 0.0f;
	__asm__ volatile("1:\n\t"
			 "vldmia %[a]!, {s0-s7}\n\t"
			 "vldmia %[b]!, {s8-s15}\n\t"
			 "vfma.f32 %[p], s0, s8\n\t"
			 "vfma.f32 %[q], s1, s9\n\t"
			 "vfma.f32 %[p], s2, s10\n\t"
			 "vfma.f32 %[q], s3, s11\n\t"
			 "vfma.f32 %[p], s4, s12\n\t"
			 "vfma.f32 %[q], s5, s13\n\t"
			 "vfma.f32 %[p], s6, s14\n\t"
			 "vfma.f32 %[q], s7, s15\n\t"
			 "subs %[n], %[n], #1\n\t"
			 "bne 1b"
			 : [a] "+r"(a), [b] "+r"(b), [n] "+r"(n8), [p] "+t"(p), [q] "+t"(q)
			 :
			 : KL_FPU_CLOBBER);
	return p + q;
}

/* y[j] += c * x[j] (VFMA) or y[j] -= c * x[j] (VFMS) over n8 blocks of eight */
#define KL_FPU_AXPY8(OP)                                                                          \
	__asm__ volatile("1:\n\t"                                                                 \
			 "vldmia %[x]!, {s0-s7}\n\t"                                              \
			 "vldmia %[y], {s8-s15}\n\t"                                              \
			 OP " s8, s0, %[c]\n\t" OP " s9, s1, %[c]\n\t"                          \
			 OP " s10, s2, %[c]\n\t" OP " s11, s3, %[c]\n\t"                        \
			 OP " s12, s4, %[c]\n\t" OP " s13, s5, %[c]\n\t"                        \
			 OP " s14, s6, %[c]\n\t" OP " s15, s7, %[c]\n\t"                        \
			 "vstmia %[y]!, {s8-s15}\n\t"                                             \
			 "subs %[n], %[n], #1\n\t"                                                \
			 "bne 1b"                                                                 \
			 : [x] "+r"(x), [y] "+r"(y), [n] "+r"(n8)                                 \
			 : [c] "t"(c)                                                             \
			 : KL_FPU_CLOBBER)

static inline void axpy8(float *y, const float *x, float c, int n8)
{
	KL_FPU_AXPY8("vfma.f32");
}

static inline void axmy8(float *y, const float *x, float c, int n8)
{
	KL_FPU_AXPY8("vfms.f32");
}

/* two rows against the same eight inputs per pass (one VLDM of the input,
 * one per row, sixteen VFMA: 21 instructions per 16 MACs); each row's sum is
 * split over the same two accumulators as dot8, in the same order, so the
 * results equal dot8's */
static inline void dot8x2(const float *a0, const float *a1, const float *b, int n8, float *r0,
			  float *r1)
{
	float p0 = 0.0f, q0 = 0.0f, p1 = 0.0f, q1 = 0.0f;
	__asm__ volatile("1:\n\t"
			 "vldmia %[b]!, {s8-s15}\n\t"
			 "vldmia %[a0]!, {s0-s7}\n\t"
			 "vldmia %[a1]!, {s16-s23}\n\t"
			 "vfma.f32 %[p0], s0, s8\n\t"
			 "vfma.f32 %[p1], s16, s8\n\t"
			 "vfma.f32 %[q0], s1, s9\n\t"
			 "vfma.f32 %[q1], s17, s9\n\t"
			 "vfma.f32 %[p0], s2, s10\n\t"
			 "vfma.f32 %[p1], s18, s10\n\t"
			 "vfma.f32 %[q0], s3, s11\n\t"
			 "vfma.f32 %[q1], s19, s11\n\t"
			 "vfma.f32 %[p0], s4, s12\n\t"
			 "vfma.f32 %[p1], s20, s12\n\t"
			 "vfma.f32 %[q0], s5, s13\n\t"
			 "vfma.f32 %[q1], s21, s13\n\t"
			 "vfma.f32 %[p0], s6, s14\n\t"
			 "vfma.f32 %[p1], s22, s14\n\t"
			 "vfma.f32 %[q0], s7, s15\n\t"
			 "vfma.f32 %[q1], s23, s15\n\t"
			 "subs %[n], %[n], #1\n\t"
			 "bne 1b"
			 : [a0] "+r"(a0), [a1] "+r"(a1), [b] "+r"(b), [n] "+r"(n8), [p0] "+t"(p0),
			   [q0] "+t"(q0), [p1] "+t"(p1), [q1] "+t"(q1)
			 :
			 : KL_FPU_CLOBBER, "s16", "s17", "s18", "s19", "s20", "s21", "s22", "s23");
	*r0 = p0 + q0;
	*r1 = p1 + q1;
}

void kl_fpu_fully_connected_f32(const float *x, const float *w, const float *b, float *y,
				int n_in, int n_out, int act)
{
	const int n8 = n_in / 8, done = n8 * 8;
	int i0 = 0;
	if (n8 > 0 && done == n_in) { /* two rows at a time */
		for (; i0 + 2 <= n_out; i0 += 2) {
			const float *row = w + (long)i0 * n_in;
			float a0, a1;
			dot8x2(row, row + n_in, x, n8, &a0, &a1);
			y[i0] = kl_act_f32(a0 + b[i0], act);
			y[i0 + 1] = kl_act_f32(a1 + b[i0 + 1], act);
		}
	}
	for (int i = i0; i < n_out; i++) {
		const float *row = w + (long)i * n_in;
		float acc = n8 > 0 ? dot8(row, x, n8) : 0.0f;
		for (int j = done; j < n_in; j++) {
			acc += row[j] * x[j];
		}
		y[i] = kl_act_f32(acc + b[i], act);
	}
}

void kl_fpu_fully_connected_backward_input_f32(const float *w, const float *dy, float *dx,
					       int n_in, int n_out)
{
	const int n8 = n_in / 8, done = n8 * 8;
	for (int j = 0; j < n_in; j++) {
		dx[j] = 0.0f;
	}
	for (int i = 0; i < n_out; i++) {
		const float g = dy[i];
		if (g == 0.0f) {
			continue;
		}
		const float *row = w + (long)i * n_in;
		if (n8 > 0) {
			axpy8(dx, row, g, n8);
		}
		for (int j = done; j < n_in; j++) {
			dx[j] += row[j] * g;
		}
	}
}

void kl_fpu_fully_connected_sgd_f32(float *w, float *b, float *vw, float *vb, const float *dy,
				    const float *x, float lr, float mu, int n_in, int n_out)
{
	if (vw != NULL) { /* momentum: the ref kernel */
		kl_ref_fully_connected_sgd_f32(w, b, vw, vb, dy, x, lr, mu, n_in, n_out);
		return;
	}
	const int n8 = n_in / 8, done = n8 * 8;
	for (int i = 0; i < n_out; i++) {
		const float g = dy[i];
		if (g == 0.0f) {
			continue;
		}
		const float c = lr * g;
		float *row = w + (long)i * n_in;
		if (n8 > 0) {
			axmy8(row, x, c, n8);
		}
		for (int j = done; j < n_in; j++) {
			row[j] -= c * x[j];
		}
		b[i] -= c;
	}
}
#else
typedef int kl_fpu_fully_connected_f32_unused;
#endif
