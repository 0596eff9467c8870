/* Fully connected layer, int8, mve backend: the backward GEMMs, the same
 * integers as src/kernels/ref.
 *   input gradient  acc = W^T dy: rows whose gradient is zero are skipped,
 *                   the others go four at a time; per four columns one VLDRW
 *                   of the sums, per row one VLDRB.S32 and one VMLA by the
 *                   row's gradient (a general register), one VSTRW (10
 *                   instructions per 16 MACs); the first group stores
 *                   without loading (no clearing pass).
 *   weight gradient gw = dy (x - x_zp)^T, gb = dy: four rows per pass; per
 *                   four inputs one VLDRB.S32 and VSUB of the zero point,
 *                   then per row one VMUL by dy[i] and one VSTRW. */
#include "kilolearn/kl_kernels.h"

#if KL_KERNELS_MVE
#include "kl_mve_util.h"

/* acc[0..n) (first: =, else +=) rows r0..r3 times g0..g3 */
static inline __attribute__((always_inline)) void
rows4(int32_t *acc, const int8_t *r0, const int8_t *r1, const int8_t *r2, const int8_t *r3,
      int32_t g0, int32_t g1, int32_t g2, int32_t g3, int n, const int first)
{
	const int n4 = n & ~3;
	int j = 0;
	for (; j < n4; j += 4) {
		int32x4_t a = first ? vmulq_n_s32(vldrbq_s32(r0 + j), g0)
				    : vmlaq_n_s32(vldrwq_s32(acc + j), vldrbq_s32(r0 + j), g0);
		a = vmlaq_n_s32(a, vldrbq_s32(r1 + j), g1);
		a = vmlaq_n_s32(a, vldrbq_s32(r2 + j), g2);
		a = vmlaq_n_s32(a, vldrbq_s32(r3 + j), g3);
		vstrwq_s32(acc + j, a);
	}
	if (j < n) {
		const mve_pred16_t p = vctp32q((uint32_t)(n - j));
		int32x4_t a = first ? vmulq_n_s32(vldrbq_z_s32(r0 + j, p), g0)
				    : vmlaq_n_s32(vldrwq_z_s32(acc + j, p), vldrbq_z_s32(r0 + j, p), g0);
		a = vmlaq_n_s32(a, vldrbq_z_s32(r1 + j, p), g1);
		a = vmlaq_n_s32(a, vldrbq_z_s32(r2 + j, p), g2);
		a = vmlaq_n_s32(a, vldrbq_z_s32(r3 + j, p), g3);
		vstrwq_p_s32(acc + j, a, p);
	}
}

void kl_mve_fully_connected_backward_input_s8(const int8_t *w, const int8_t *dy, int32_t *acc,
					      int n_in, int n_out)
{
	const int8_t *r[4];
	int32_t g[4];
	int k = 0, first = 1;
	for (int i = 0; i <= n_out; i++) {
		if (i < n_out && dy[i] == 0) {
			continue;
		}
		if (i < n_out) {
			r[k] = w + (long)i * n_in;
			g[k++] = dy[i];
			if (k < 4) {
				continue;
			}
		} else if (k == 0) {
			break;
		}
		for (; k < 4; k++) { /* pad a short last group with a zero row */
			r[k] = r[0];
			g[k] = 0;
		}
		if (first) {
			rows4(acc, r[0], r[1], r[2], r[3], g[0], g[1], g[2], g[3], n_in, 1);
		} else {
			rows4(acc, r[0], r[1], r[2], r[3], g[0], g[1], g[2], g[3], n_in, 0);
		}
		first = 0;
		k = 0;
	}
	if (first) { /* every gradient zero */
		for (int j = 0; j < n_in; j += 4) {
			vstrwq_p_s32(acc + j, vdupq_n_s32(0), vctp32q((uint32_t)(n_in - j)));
		}
	}
}

/* rows g0..g3 of gw (stride n_in) = dy * (x - x_zp), n_in columns */
static inline __attribute__((always_inline)) void grad4(const int8_t *x, int32_t x_zp, int32_t *o,
							 int32_t d0, int32_t d1, int32_t d2,
							 int32_t d3, int n_in)
{
	int32_t *o1 = o + n_in, *o2 = o1 + n_in, *o3 = o2 + n_in;
	const int n4 = n_in & ~3;
	int j = 0;
	for (; j < n4; j += 4) {
		const int32x4_t xc = vsubq_n_s32(vldrbq_s32(x + j), x_zp);
		vstrwq_s32(o + j, vmulq_n_s32(xc, d0));
		vstrwq_s32(o1 + j, vmulq_n_s32(xc, d1));
		vstrwq_s32(o2 + j, vmulq_n_s32(xc, d2));
		vstrwq_s32(o3 + j, vmulq_n_s32(xc, d3));
	}
	if (j < n_in) {
		const mve_pred16_t p = vctp32q((uint32_t)(n_in - j));
		const int32x4_t xc = vsubq_n_s32(vldrbq_z_s32(x + j, p), x_zp);
		vstrwq_p_s32(o + j, vmulq_n_s32(xc, d0), p);
		vstrwq_p_s32(o1 + j, vmulq_n_s32(xc, d1), p);
		vstrwq_p_s32(o2 + j, vmulq_n_s32(xc, d2), p);
		vstrwq_p_s32(o3 + j, vmulq_n_s32(xc, d3), p);
	}
}

void kl_mve_fully_connected_grad_s8(const int8_t *dy, const int8_t *x, int32_t x_zp, int32_t *gw,
				    int32_t *gb, int n_in, int n_out)
{
	int i = 0;
	for (; i + 4 <= n_out; i += 4) {
		grad4(x, x_zp, gw + (long)i * n_in, dy[i], dy[i + 1], dy[i + 2], dy[i + 3], n_in);
	}
	for (; i < n_out; i++) {
		int32_t *o = gw + (long)i * n_in;
		for (int j = 0; j < n_in; j += 4) {
			const mve_pred16_t p = vctp32q((uint32_t)(n_in - j));
			const int32x4_t xc = vsubq_n_s32(vldrbq_z_s32(x + j, p), x_zp);
			vstrwq_p_s32(o + j, vmulq_n_s32(xc, dy[i]), p);
		}
	}
	for (i = 0; i < n_out; i++) {
		gb[i] = dy[i];
	}
}

#else
typedef int kl_mve_fully_connected_grad_s8_unused; /* (no empty translation unit) */
#endif
