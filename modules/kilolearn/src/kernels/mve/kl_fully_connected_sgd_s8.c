/* Fully connected layer, int8, mve backend: the fused SGD update
 * w -= floor((dy_i lr_q (x_j - x_zp) + dither_ij) >> w_shift) (saturated to
 * int8, the weight clamped to [-127, 127]) with the stochastic-rounding
 * dither of the ref kernel (d advances by KL_WEYL per weight), the same
 * integers. Sixteen weights per step on int32 lanes: the input is centred
 * once into int16 in the order (0, 4, 8, 12), (1, 5, ...), (2, ...), (3, ...)
 * per 16, so that two saturating narrows (VQMOVNB / VQMOVNT .S32, then .S16)
 * put the 16 steps back in weight order; per four weights VLDRH.S32, VMUL by
 * the row's factor, the dither (four vectors of d + (4k + m) W, +16 W per
 * step) shifted right by 32 - w_shift and added, VSHL right by w_shift; then
 * VLDRB, VQSUB.S8, VMAX with -127, VSTRB. Rows whose factor could overflow
 * int32 there, the n_in % 16 tail and shifts outside 1..30 go as in ref. */
#include "kilolearn/kl_kernels.h"

#if KL_KERNELS_MVE
#include "kl_mve_util.h"

/* one row's weights j in [j0, n) the ref way (dither d at weight j0) */
static uint32_t row_ref(int8_t *row, const int8_t *x, int32_t x_zp, int32_t c, int sh, uint32_t d,
			int j0, int n)
{
	for (int j = j0; j < n; j++) {
		const int32_t v = c * ((int32_t)x[j] - x_zp);
		row[j] = kl_sub_clamp_w(row[j], kl_stochastic_shift(v, sh, d));
		d += KL_WEYL;
	}
	return d;
}

void kl_mve_fully_connected_sgd_s8(int8_t *w, int32_t *b, const int8_t *dy, const int8_t *x,
				   int32_t x_zp, int32_t lr_q, int w_shift, int b_shift,
				   uint32_t *dither, int n_in, int n_out, int16_t *scratch)
{
	if (w_shift < 1 || w_shift > 30) {
		kl_ref_fully_connected_sgd_s8(w, b, dy, x, x_zp, lr_q, w_shift, b_shift, dither,
					      n_in, n_out, scratch);
		return;
	}
	const int sh = w_shift, n16 = n_in & ~15;
	/* the centred input, each 16 as four groups of lanes k = 0..3 of weight
	 * 4k + m (m the group) */
	int16_t *xd = scratch;
	for (int j = 0; j < n16; j += 16) {
		for (int m = 0; m < 4; m++) {
			for (int k = 0; k < 4; k++) {
				xd[j + 4 * m + k] = (int16_t)(x[j + 4 * k + m] - x_zp);
			}
		}
	}
	/* |c (x - x_zp)| + dither < 2^31: |c| * 255 < 2^31 - 2^sh */
	const int32_t c_max = (int32_t)((0x7FFFFFFFu - (1u << sh)) / 255u);
	const uint32_t W = KL_WEYL;
	const uint32_t o[4][4] = {{0u, 4u * W, 8u * W, 12u * W},
				  {W, 5u * W, 9u * W, 13u * W},
				  {2u * W, 6u * W, 10u * W, 14u * W},
				  {3u * W, 7u * W, 11u * W, 15u * W}};
	const uint32x4_t o0 = vldrwq_u32(o[0]), o1 = vldrwq_u32(o[1]);
	const uint32x4_t o2 = vldrwq_u32(o[2]), o3 = vldrwq_u32(o[3]);
	uint32_t d = *dither;
	for (int i = 0; i < n_out; i++) {
		const int32_t c = (int32_t)dy[i] * lr_q;
		int8_t *row = w + (long)i * n_in;
		if (c == 0) { /* every delta is floor(d / 2^sh) = 0 */
			d += (uint32_t)n_in * KL_WEYL;
			continue;
		}
		if (c > c_max || c < -c_max) {
			d = row_ref(row, x, x_zp, c, sh, d, 0, n_in);
		} else {
			uint32x4_t d0 = vaddq_n_u32(o0, d), d1 = vaddq_n_u32(o1, d);
			uint32x4_t d2 = vaddq_n_u32(o2, d), d3 = vaddq_n_u32(o3, d);
			const int16_t *xp = xd;
			int8_t *rp = row;
			for (int j = 0; j < n16; j += 16) {
				int32x4_t s;
				int16x8_t he = vdupq_n_s16(0), ho = vdupq_n_s16(0);
#define SGD_STEP(m, dm)                                                                           \
	s = vaddq_s32(vmulq_n_s32(vldrhq_s32(xp + 4 * (m)), c),                                   \
		      vreinterpretq_s32_u32(vshlq_r_u32(dm, sh - 32)));                           \
	s = vshlq_r_s32(s, -sh);                                                                  \
	dm = vaddq_n_u32(dm, 16u * KL_WEYL)
				SGD_STEP(0, d0);
				he = vqmovnbq_s32(he, s);
				SGD_STEP(2, d2);
				he = vqmovntq_s32(he, s);
				SGD_STEP(1, d1);
				ho = vqmovnbq_s32(ho, s);
				SGD_STEP(3, d3);
				ho = vqmovntq_s32(ho, s);
#undef SGD_STEP
				int8x16_t st = vqmovnbq_s16(vdupq_n_s8(0), he);
				st = vqmovntq_s16(st, ho);
				const int8x16_t r = vqsubq_s8(vldrbq_s8(rp), st);
				vstrbq_s8(rp, vmaxq_s8(r, vdupq_n_s8(-127)));
				xp += 16;
				rp += 16;
			}
			d += (uint32_t)n16 * KL_WEYL;
			d = row_ref(row, x, x_zp, c, sh, d, n16, n_in);
		}
		b[i] = kl_sat32((int64_t)b[i] - kl_rshift_round(c, b_shift));
	}
	*dither = d;
}

#endif
