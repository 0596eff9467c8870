/* Fully connected layer, int8, dsp backend: two rows at a time, SMLAD on
 * sign-extended weight pairs against a centred, reordered int16 input. */
#include "kilolearn/kl_kernels.h"

#if KL_KERNELS_DSP
#include "kl_dsp_util.h"

static inline int32_t dot_tail(const int8_t *row, const int16_t *xc, int j, int n)
{
	int32_t acc = 0;
	for (; j < n; j++) {
		acc += (int32_t)row[j] * xc[j];
	}
	return acc;
}

int kl_dsp_fully_connected_s8(const int8_t *x, int32_t x_zp, const int8_t *w, const int32_t *b,
			      int b_shift, int y_shift, int32_t y_zp, int relu, int8_t *y, int n_in,
			      int n_out, int16_t *scratch)
{
	kl_center_interleave_s8(x, x_zp, scratch, n_in);
	const int n4 = n_in & ~3;
	int sat = 0;
	int i = 0;
	for (; i + 2 <= n_out; i += 2) {
		const int8_t *r0 = w + (long)i * n_in;
		const int8_t *r1 = r0 + n_in;
		const uint32_t *xp = (const uint32_t *)(const void *)scratch;
		int32_t a0 = 0, a1 = 0;
		for (int j = 0; j < n4; j += 4) {
			const uint32_t xe = xp[0], xo = xp[1];
			xp += 2;
			const uint32_t w0 = kl_read_s8x4(r0 + j);
			const uint32_t w1 = kl_read_s8x4(r1 + j);
			a0 = kl_smlad(kl_sxtb16(w0), xe, a0);
			a1 = kl_smlad(kl_sxtb16(w1), xe, a1);
			a0 = kl_smlad(kl_sxtb16_ror8(w0), xo, a0);
			a1 = kl_smlad(kl_sxtb16_ror8(w1), xo, a1);
		}
		a0 += dot_tail(r0, scratch, n4, n_in);
		a1 += dot_tail(r1, scratch, n4, n_in);
		y[i] = kl_requant_out_s8(a0, b[i], b_shift, y_shift, y_zp, relu, &sat);
		y[i + 1] = kl_requant_out_s8(a1, b[i + 1], b_shift, y_shift, y_zp, relu, &sat);
	}
	if (i < n_out) {
		const int8_t *r0 = w + (long)i * n_in;
		const uint32_t *xp = (const uint32_t *)(const void *)scratch;
		int32_t a0 = 0;
		for (int j = 0; j < n4; j += 4) {
			const uint32_t w0 = kl_read_s8x4(r0 + j);
			a0 = kl_smlad(kl_sxtb16(w0), xp[0], a0);
			a0 = kl_smlad(kl_sxtb16_ror8(w0), xp[1], a0);
			xp += 2;
		}
		a0 += dot_tail(r0, scratch, n4, n_in);
		y[i] = kl_requant_out_s8(a0, b[i], b_shift, y_shift, y_zp, relu, &sat);
	}
	return sat;
}
#else
typedef int kl_dsp_fully_connected_s8_unused;
#endif
