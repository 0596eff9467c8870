/* Fully connected layer, float32, fpu backend: input gradient dx = W^T dy.
 * Four rows with a nonzero gradient per pass over dx in blocks of eight:
 * one VLDM of dx (none in the first pass: its first row multiplies), one
 * VLDM and eight VFMA per row, one VSTM (38 instructions per 32 MACs); the
 * rows left over one at a time. No separate zeroing of dx. Shapes without a
 * multiple of eight inputs take the ref kernel. Results equal the ref
 * kernel's up to float rounding (products fused). */
#include <stddef.h>

#include "kilolearn/kl_kernels.h"

#if KL_KERNELS_FPU
#include "kl_fpu_util.h"

/* s0..s7 (+)= s8..s15 * G, the row's next block loaded first */
#define KL_DX_ROW(OP, R, G)                                                                       \
	"vldmia %[" R "]!, {s8-s15}\n\t"                                                          \
	OP " s0, s8, %[" G "]\n\t" OP " s1, s9, %[" G "]\n\t"                                   \
	OP " s2, s10, %[" G "]\n\t" OP " s3, s11, %[" G "]\n\t"                                 \
	OP " s4, s12, %[" G "]\n\t" OP " s5, s13, %[" G "]\n\t"                                 \
	OP " s6, s14, %[" G "]\n\t" OP " s7, s15, %[" G "]\n\t"

#define KL_DX_LOOP(FIRST, REST)                                                                   \
	"1:\n\t" FIRST REST "vstmia %[dx]!, {s0-s7}\n\t"                                          \
	"subs %[n], %[n], #1\n\t"                                                                 \
	"bne 1b"

#define KL_DX_LOAD "vldmia %[dx], {s0-s7}\n\t"

#define KL_DX4_REST KL_DX_ROW("vfma.f32", "r1", "g1") KL_DX_ROW("vfma.f32", "r2", "g2")            \
	KL_DX_ROW("vfma.f32", "r3", "g3")

#define KL_DX4(FIRST)                                                                             \
	__asm__ volatile(KL_DX_LOOP(FIRST, KL_DX4_REST)                                           \
			 : [dx] "+r"(d), [n] "+r"(n), [r0] "+r"(r0), [r1] "+r"(r1),               \
			   [r2] "+r"(r2), [r3] "+r"(r3)                                           \
			 : [g0] "t"(g[0]), [g1] "t"(g[1]), [g2] "t"(g[2]), [g3] "t"(g[3])         \
			 : KL_FPU_CLOBBER)

#define KL_DX1(FIRST)                                                                             \
	__asm__ volatile(KL_DX_LOOP(FIRST, "")                                                    \
			 : [dx] "+r"(d), [n] "+r"(n), [r0] "+r"(r0)                               \
			 : [g0] "t"(g0)                                                            \
			 : KL_FPU_CLOBBER)

void kl_fpu_fully_connected_backward_input_f32(const float *w, const float *dy, float *dx,
					       int n_in, int n_out)
{
	if (n_in <= 0 || n_in % 8 != 0) {
		kl_ref_fully_connected_backward_input_f32(w, dy, dx, n_in, n_out);
		return;
	}
	int first = 1, k = 0; /* dx not written yet; rows gathered */
	const float *rows[4];
	float g[4];
	const float *row = w;
	for (int i = 0; i < n_out; i++, row += n_in) {
		if (kl_fpu_is_zero(&dy[i])) {
			continue;
		}
		rows[k] = row;
		g[k] = dy[i];
		if (++k < 4) {
			continue;
		}
		float *d = dx;
		int n = n_in / 8;
		const float *r0 = rows[0], *r1 = rows[1], *r2 = rows[2], *r3 = rows[3];
		if (first) {
			KL_DX4(KL_DX_ROW("vmul.f32", "r0", "g0"));
		} else {
			KL_DX4(KL_DX_LOAD KL_DX_ROW("vfma.f32", "r0", "g0"));
		}
		first = 0;
		k = 0;
	}
	for (int r = 0; r < k; r++) { /* the last one to three rows */
		float *d = dx;
		int n = n_in / 8;
		const float *r0 = rows[r];
		const float g0 = g[r];
		if (first) {
			KL_DX1(KL_DX_ROW("vmul.f32", "r0", "g0"));
		} else {
			KL_DX1(KL_DX_LOAD KL_DX_ROW("vfma.f32", "r0", "g0"));
		}
		first = 0;
	}
	if (first) { /* dy all zero */
		memset(dx, 0, (size_t)n_in * sizeof(float));
	}
}
#else
typedef int kl_fpu_fully_connected_grad_f32_unused;
#endif
