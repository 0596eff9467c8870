/* Fully connected layer, int8, mve backend: the fused SGD update
 * w -= floor((dy_i lr_q (x_j - x_zp) + dither_ij) >> w_shift) (saturated to
 * int8, the weight clamped to [-127, 127]) with the stochastic-rounding
 * dither of the ref kernel (d advances by KL_WEYL per weight), the same
 * integers. Sixteen weights per step on int32 lanes, in one assembly loop
 * per row (40 instructions per 16 weights): the input is centred once into
 * int16 in the order (0, 4, 8, 12), (1, 5, ...), (2, ...), (3, ...) per 16,
 * so that two saturating narrows (VQMOVNB / VQMOVNT .S32, then .S16) put the
 * 16 steps back in weight order; per four weights VLDRH.S32, VMUL by the
 * row's factor, the dither (four vectors of d + (4k + m) W in q0..q3, +16 W
 * per step) shifted right by 32 - w_shift and added, VSHL right by w_shift;
 * then VLDRB, VQSUB.S8, VMAX with -127, VSTRB. Rows whose factor could
 * overflow int32 there, the n_in % 16 tail and shifts outside 1..30 go as in
 * ref. */
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

/* per weight group m (lanes k = weight 4k + m), the dither step of lane k */
static const uint32_t kl_sgd_lane[4][4] = {
	{0u, 4u * KL_WEYL, 8u * KL_WEYL, 12u * KL_WEYL},
	{1u * KL_WEYL, 5u * KL_WEYL, 9u * KL_WEYL, 13u * KL_WEYL},
	{2u * KL_WEYL, 6u * KL_WEYL, 10u * KL_WEYL, 14u * KL_WEYL},
	{3u * KL_WEYL, 7u * KL_WEYL, 11u * KL_WEYL, 15u * KL_WEYL}};

/* one group of four weights: x (int16 at byte offset off of xp, the last
 * one post-incrementing xp by 32) times c, plus the dither vector qd
 * shifted right by 32 - sh, shifted right by sh, narrowed into half nq */
#define SGD_GRP(ld, qd, nq)                                                                       \
	ld "vmul.i32 q6, q6, %[c]\n\t"                                                            \
	   "vmov q7, " qd "\n\t"                                                                  \
	   "vshl.u32 q7, %[rd]\n\t"                                                               \
	   "vadd.i32 q6, q6, q7\n\t"                                                              \
	   "vshl.s32 q6, %[rs]\n\t"                                                               \
	   "vadd.i32 " qd ", " qd ", %[w16]\n\t" nq "\n\t"

/* one row's first n16 = 16 * blocks weights, dither d at weight 0: 40
 * instructions per 16 weights */
static void row16(int8_t *rp, const int16_t *xp, int32_t c, int sh, uint32_t d, int blocks,
		  const uint32_t (*lane)[4])
{
	const int32_t rd = sh - 32, rs = -sh, m127 = -127;
	const uint32_t w16 = 16u * KL_WEYL;
	register uint32_t cnt __asm__("lr") = (uint32_t)blocks;
	__asm__ volatile("vldrw.u32 q0, [%[ln]]\n\t" /* the dither of every lane */
			 "vldrw.u32 q1, [%[ln], #16]\n\t"
			 "vldrw.u32 q2, [%[ln], #32]\n\t"
			 "vldrw.u32 q3, [%[ln], #48]\n\t"
			 "vadd.i32 q0, q0, %[d]\n\t"
			 "vadd.i32 q1, q1, %[d]\n\t"
			 "vadd.i32 q2, q2, %[d]\n\t"
			 "vadd.i32 q3, q3, %[d]\n\t"
			 "dls lr, lr\n\t"
			 "1:\n\t"
			 SGD_GRP("vldrh.s32 q6, [%[xp], #8]\n\t", "q1", "vqmovnb.s32 q5, q6")
			 SGD_GRP("vldrh.s32 q6, [%[xp], #16]\n\t", "q2", "vqmovnt.s32 q4, q6")
			 SGD_GRP("vldrh.s32 q6, [%[xp], #24]\n\t", "q3", "vqmovnt.s32 q5, q6")
			 SGD_GRP("vldrh.s32 q6, [%[xp]], #32\n\t", "q0", "vqmovnb.s32 q4, q6")
			 "vqmovnb.s16 q7, q4\n\t"
			 "vqmovnt.s16 q7, q5\n\t"
			 "vldrb.8 q6, [%[rp]]\n\t"
			 "vqsub.s8 q6, q6, q7\n\t"
			 "vdup.8 q7, %[m127]\n\t"
			 "vmax.s8 q6, q6, q7\n\t"
			 "vstrb.8 q6, [%[rp]], #16\n\t"
			 "le lr, 1b\n\t"
			 : [rp] "+r"(rp), [xp] "+l"(xp), [cnt] "+r"(cnt)
			 : [ln] "r"(lane), [d] "r"(d), [c] "r"(c), [rd] "r"(rd), [rs] "r"(rs), [w16] "r"(w16),
			   [m127] "r"(m127)
			 : "q0", "q1", "q2", "q3", "q4", "q5", "q6", "q7", "memory");
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
			if (n16 > 0) {
				row16(row, xd, c, sh, d, n16 >> 4, kl_sgd_lane);
			}
			d += (uint32_t)n16 * KL_WEYL;
			d = row_ref(row, x, x_zp, c, sh, d, n16, n_in);
		}
		b[i] = kl_sat32((int64_t)b[i] - kl_rshift_round(c, b_shift));
	}
	*dither = d;
}

#else
typedef int kl_mve_fully_connected_sgd_s8_unused; /* (no empty translation unit) */
#endif
