/* Top-r SGD update, int8 (Kwon & Park, selective updates by gradient delta):
 * of a layer's weight steps only the k largest in magnitude are applied.
 * The threshold comes from one histogram pass over |step| (a step is an int8
 * value, so |step| <= 128 and the histogram is exact): no sort, no copy of
 * the steps. Ties at the threshold go to the lower index. */
#include <stddef.h>

#include "kilolearn/kl_kernels.h"

/* the step of weight k = row i, column j (the fused SGD's integers) */
static inline int32_t topr_step(const int32_t *gw, const int8_t *dy, const int8_t *x, int32_t x_zp,
				int32_t lr_q, int w_shift, int i, int j, int cols, uint32_t d)
{
	if (gw == NULL && w_shift >= 1 && w_shift <= 30) {
		/* fused dense: |v| < 2^27 and the dither's top bits < 2^30, so the
		 * stochastic shift fits int32 (the same integers) */
		const int32_t v = (int32_t)dy[i] * lr_q * ((int32_t)x[j] - x_zp);
		const int32_t s = (v + (int32_t)(d >> (32 - w_shift))) >> w_shift;
		return s > 127 ? 127 : (s < -128 ? -128 : s);
	}
	const int64_t v = gw != NULL ? (int64_t)gw[(long)i * cols + j] * lr_q
				     : (int64_t)((int32_t)dy[i] * lr_q * ((int32_t)x[j] - x_zp));
	const int64_t s = kl_stochastic_shift(v, w_shift, d);
	return (int32_t)(s > 127 ? 127 : (s < -128 ? -128 : s));
}

/* is row i all zero steps? (the fused kernel's c == 0 shortcut) */
static inline int topr_row_zero(const int32_t *gw, const int8_t *dy, int32_t lr_q, int i)
{
	return gw == NULL && (int32_t)dy[i] * lr_q == 0;
}

uint32_t kl_topr_sgd_weights_s8(int8_t *w, const int32_t *gw, const int8_t *dy, const int8_t *x,
				int32_t x_zp, int rows, int cols, int32_t lr_q, int w_shift,
				uint32_t *dither, uint32_t k_sel, uint32_t *hist)
{
	for (int v = 0; v <= KL_TOPR_S8_BINS - 1; v++) {
		hist[v] = 0;
	}
	uint32_t d = *dither;
	for (int i = 0; i < rows; i++) {
		if (topr_row_zero(gw, dy, lr_q, i)) {
			hist[0] += (uint32_t)cols;
			d += (uint32_t)cols * KL_WEYL;
			continue;
		}
		for (int j = 0; j < cols; j++, d += KL_WEYL) {
			const int32_t s = topr_step(gw, dy, x, x_zp, lr_q, w_shift, i, j, cols, d);
			hist[s < 0 ? -s : s]++;
		}
	}
	/* threshold t: the k-th largest |step|; take the first `at_t` equal to it */
	uint32_t above = 0;
	int t = KL_TOPR_S8_BINS - 1;
	while (t > 0 && above + hist[t] < k_sel) {
		above += hist[t--];
	}
	uint32_t at_t = t > 0 ? k_sel - above : 0u;
	uint32_t applied = 0;
	d = *dither;
	for (int i = 0; i < rows; i++) {
		if (topr_row_zero(gw, dy, lr_q, i)) {
			d += (uint32_t)cols * KL_WEYL;
			continue;
		}
		int8_t *row = w + (long)i * cols;
		for (int j = 0; j < cols; j++, d += KL_WEYL) {
			const int32_t s = topr_step(gw, dy, x, x_zp, lr_q, w_shift, i, j, cols, d);
			const int a = s < 0 ? -s : s;
			if (a == 0 || a < t) {
				continue;
			}
			if (a == t) {
				if (at_t == 0u) {
					continue;
				}
				at_t--;
			}
			row[j] = kl_sub_clamp_w(row[j], s);
			applied++;
		}
	}
	*dither = d;
	return applied;
}
