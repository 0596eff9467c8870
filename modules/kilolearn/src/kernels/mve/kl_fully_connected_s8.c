/* Fully connected layer, int8, mve backend (Armv8.1-M Helium), bit-identical
 * to src/kernels/ref:
 * sum_j w[i][j] (x[j] - x_zp) = sum_j w[i][j] x[j] - x_zp sum_j w[i][j], both
 * on 16 int8 lanes per instruction: per 16 inputs one VLDRB of the input,
 * then per row one VLDRB, one VMLADAVA (the dot) and one VADDVA (the row sum;
 * not with x_zp == 0), three rows per pass (11 instructions per 48 MACs with
 * the loop's LE); the n_in % 16 tail by one predicated pass. The raw dots go to the scratch, the output stage runs on
 * four outputs per step (kl_mve_requant_n). */
#include <stddef.h>

#include "kilolearn/kl_kernels.h"

#if KL_KERNELS_MVE
#include "kl_mve_util.h"

/* the main loop of three rows over n16 / 16 > 0 passes, in assembly: the
 * pointers post-incremented by the loads, the sums in the even registers
 * VMLADAVA / VADDVA need, a low-overhead loop (DLS / LE) */
#define FC3_LOOP(sums)                                                                            \
	__asm__ volatile("dls lr, %[cnt]\n\t"                                                     \
			 "1:\n\t"                                                                  \
			 "vldrb.8 q0, [%[x]], #16\n\t"                                             \
			 "vldrb.8 q1, [%[p0]], #16\n\t"                                            \
			 "vmladava.s8 %[a0], q1, q0\n\t" sums("s0", "q1")                          \
			 "vldrb.8 q2, [%[p1]], #16\n\t"                                            \
			 "vmladava.s8 %[a1], q2, q0\n\t" sums("s1", "q2")                          \
			 "vldrb.8 q3, [%[p2]], #16\n\t"                                            \
			 "vmladava.s8 %[a2], q3, q0\n\t" sums("s2", "q3")                          \
			 "le lr, 1b\n\t"                                                           \
			 : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [s0] "+r"(s0),             \
			   [s1] "+r"(s1), [s2] "+r"(s2), [x] "+r"(xp), [p0] "+r"(r0),              \
			   [p1] "+r"(r1), [p2] "+r"(r2)                                            \
			 : [cnt] "r"(cnt)                                                          \
			 : "lr", "q0", "q1", "q2", "q3", "memory")
#define FC_SUMS(s, q) "vaddva.s8 %[" s "], " q "\n\t"
#define FC_NOSUMS(s, q)

/* dot products of three rows (r0..r2) against x; zp: with the row sums */
static inline __attribute__((always_inline)) void dot3(const int8_t *x, int32_t x_zp,
							const int8_t *r0, const int8_t *r1,
							const int8_t *r2, int n_in, int32_t *out,
							const int zp)
{
	/* VMLADAVA / VADDVA take even registers only */
	register int32_t a0 __asm__("r0") = 0;
	register int32_t a1 __asm__("r2") = 0;
	register int32_t a2 __asm__("r4") = 0;
	register int32_t s0 __asm__("r6") = 0;
	register int32_t s1 __asm__("r8") = 0;
	register int32_t s2 __asm__("r10") = 0;
	const int8_t *xp = x;
	const int n16 = n_in & ~15;
	if (n16 > 0) {
		const uint32_t cnt = (uint32_t)n16 >> 4;
		if (zp) {
			FC3_LOOP(FC_SUMS);
		} else {
			FC3_LOOP(FC_NOSUMS);
		}
	}
	int32_t b0 = a0, b1 = a1, b2 = a2, t0 = s0, t1 = s1, t2 = s2;
	if (n16 < n_in) { /* zeroing loads: the inactive lanes add nothing */
		const mve_pred16_t p = vctp8q((uint32_t)(n_in - n16));
		const int8x16_t xv = vldrbq_z_s8(xp, p);
		const int8x16_t w0 = vldrbq_z_s8(r0, p), w1 = vldrbq_z_s8(r1, p);
		const int8x16_t w2 = vldrbq_z_s8(r2, p);
		b0 = vmladavaq_s8(b0, w0, xv);
		b1 = vmladavaq_s8(b1, w1, xv);
		b2 = vmladavaq_s8(b2, w2, xv);
		t0 = vaddvaq_s8(t0, w0);
		t1 = vaddvaq_s8(t1, w1);
		t2 = vaddvaq_s8(t2, w2);
	}
	/* in uint32: the same wrap-around as the ref's int32 sums */
	const uint32_t z = (uint32_t)x_zp;
	out[0] = (int32_t)((uint32_t)b0 - z * (uint32_t)t0);
	out[1] = (int32_t)((uint32_t)b1 - z * (uint32_t)t1);
	out[2] = (int32_t)((uint32_t)b2 - z * (uint32_t)t2);
}

static inline int32_t dot1(const int8_t *x, int32_t x_zp, const int8_t *r0, int n_in)
{
	int32_t a0 = 0, s0 = 0;
	for (int j = 0; j < n_in; j += 16) {
		const mve_pred16_t p = vctp8q((uint32_t)(n_in - j));
		const int8x16_t w0 = vldrbq_z_s8(r0 + j, p);
		a0 = vmladavaq_s8(a0, w0, vldrbq_z_s8(x + j, p));
		s0 = vaddvaq_s8(s0, w0);
	}
	return (int32_t)((uint32_t)a0 - (uint32_t)x_zp * (uint32_t)s0);
}

/* rows given by a pointer each (r[i], i < n_out) */
static int fc_rows(const int8_t *x, int32_t x_zp, const int8_t *w, const int8_t *const *rows,
		   const int32_t *b, const kl_requant_t *rq, int8_t *y, int n_in, int n_out,
		   int16_t *scratch)
{
	int32_t *dots = (int32_t *)(void *)scratch;
	int i = 0;
	for (; i + 3 <= n_out; i += 3) {
		const int8_t *r0, *r1, *r2;
		if (rows != NULL) {
			r0 = rows[i];
			r1 = rows[i + 1];
			r2 = rows[i + 2];
		} else {
			r0 = w + (long)i * n_in;
			r1 = r0 + n_in;
			r2 = r1 + n_in;
		}
		if (x_zp != 0) {
			dot3(x, x_zp, r0, r1, r2, n_in, dots + i, 1);
		} else {
			dot3(x, 0, r0, r1, r2, n_in, dots + i, 0);
		}
	}
	for (; i < n_out; i++) {
		dots[i] = dot1(x, x_zp, rows != NULL ? rows[i] : w + (long)i * n_in, n_in);
	}
	return kl_mve_requant_n(dots, b, rq, y, n_out);
}

int kl_mve_fully_connected_s8(const int8_t *x, int32_t x_zp, const int8_t *w, const int32_t *b,
			      const kl_requant_t *rq, int8_t *y, int n_in, int n_out,
			      int16_t *scratch)
{
	return fc_rows(x, x_zp, w, NULL, b, rq, y, n_in, n_out, scratch);
}

int kl_mve_fully_connected_rows_s8(const int8_t *x, int32_t x_zp, const int8_t *const *rows,
				   const int32_t *b, const kl_requant_t *rq, int8_t *y, int n_in,
				   int n_out, int16_t *scratch)
{
	return fc_rows(x, x_zp, NULL, rows, b, rq, y, n_in, n_out, scratch);
}

#else
typedef int kl_mve_fully_connected_s8_unused; /* (no empty translation unit) */
#endif
