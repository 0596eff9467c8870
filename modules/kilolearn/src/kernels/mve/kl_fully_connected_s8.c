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

/* dot products of three rows (r0..r2) against x; zp: with the row sums
 * (three rows keep every pointer and sum in a register) */
static inline __attribute__((always_inline)) void dot3(const int8_t *x, int32_t x_zp,
							const int8_t *r0, const int8_t *r1,
							const int8_t *r2, int n_in, int32_t *out,
							const int zp)
{
	int32_t a0 = 0, a1 = 0, a2 = 0, s0 = 0, s1 = 0, s2 = 0;
	const int n16 = n_in & ~15;
	for (int j = 0; j < n16; j += 16) {
		const int8x16_t xv = vldrbq_s8(x + j);
		const int8x16_t w0 = vldrbq_s8(r0 + j), w1 = vldrbq_s8(r1 + j);
		const int8x16_t w2 = vldrbq_s8(r2 + j);
		a0 = vmladavaq_s8(a0, w0, xv);
		a1 = vmladavaq_s8(a1, w1, xv);
		a2 = vmladavaq_s8(a2, w2, xv);
		if (zp) {
			s0 = vaddvaq_s8(s0, w0);
			s1 = vaddvaq_s8(s1, w1);
			s2 = vaddvaq_s8(s2, w2);
		}
	}
	if (n16 < n_in) { /* zeroing loads: the inactive lanes add nothing */
		const mve_pred16_t p = vctp8q((uint32_t)(n_in - n16));
		const int8x16_t xv = vldrbq_z_s8(x + n16, p);
		const int8x16_t w0 = vldrbq_z_s8(r0 + n16, p), w1 = vldrbq_z_s8(r1 + n16, p);
		const int8x16_t w2 = vldrbq_z_s8(r2 + n16, p);
		a0 = vmladavaq_s8(a0, w0, xv);
		a1 = vmladavaq_s8(a1, w1, xv);
		a2 = vmladavaq_s8(a2, w2, xv);
		s0 = vaddvaq_s8(s0, w0);
		s1 = vaddvaq_s8(s1, w1);
		s2 = vaddvaq_s8(s2, w2);
	}
	/* in uint32: the same wrap-around as the ref's int32 sums */
	const uint32_t z = (uint32_t)x_zp;
	out[0] = (int32_t)((uint32_t)a0 - z * (uint32_t)s0);
	out[1] = (int32_t)((uint32_t)a1 - z * (uint32_t)s1);
	out[2] = (int32_t)((uint32_t)a2 - z * (uint32_t)s2);
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

#endif
