/* Top-r SGD update, int8 (Kwon & Park, selective updates by gradient delta):
 * of a layer's weight steps only the k largest in magnitude are applied.
 * The threshold comes from one histogram pass over |step| (a step is an int8
 * value, so |step| <= 128 and the histogram is exact): no sort, no copy of
 * the steps. Ties at the threshold go to the lower index. (Computed weight
 * gradients; the fused dense update ranks blocks, kl_topr_sgd_dense_s8 below.) */
#include <stddef.h>
#include <string.h>

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

/* ---- top-r of the fused dense update, by blocks of four inputs -------------
 * A dense layer's gradient is the outer product dy[i] * (x[j] - x_zp), so a
 * block (row i, inputs 4b .. 4b + 3) is ranked by the key e(|dy[i]|) +
 * e(max |x[j] - x_zp|) (e: bit length, 0 for 0; key 0, a zero gradient, is
 * never picked): the exponent of the block's largest |gradient| to within
 * one. The k_blocks largest keys are picked (ties: lower row, then lower
 * block first) from a 17-bin histogram made of two small ones (rows by
 * e(dy), blocks by e(x)); the blocks are sorted by e(x) once, so each row
 * visits only its picked blocks, a prefix of that order. A picked block gets
 * the fused SGD's steps (the same integers and dither); the others are not
 * read. The dither advances over all rows * cols weights. Returns the
 * weights of the picked blocks. */
#if KL_KERNELS_DSP
#include "../dsp/kl_dsp_util.h"

/* the picked blocks of one row: entries (4b, 4b * W, (x0, x2), (x1, x3)),
 * the inputs centred; per block the fused kernel's four steps (SMLABB /
 * SMLABT against the int16 pairs, saturated, packed, one QSUB8, -128 lifted
 * to -127): 34 instructions. The row's factor c fits a halfword; sh in
 * [13, 30] (the steps fit a halfword before saturation). */
typedef struct {
	int8_t *row;
	const uint32_t *ent, *end;
	uint32_t drow, wy;
	int32_t c;
	int32_t dsh, sh;
} tb_t;

__attribute__((naked, noinline)) static void tb_row(const tb_t *a __attribute__((unused)))
{
	__asm__ volatile("push {r4-r11, lr}\n\t"
			 "ldr r7, [r0, #8]\n\t" /* end, kept on the stack */
			 "push {r7}\n\t"
			 "ldr r1, [r0, #4]\n\t"
			 "ldrd r2, r3, [r0, #12]\n\t"
			 "ldrd r4, r5, [r0, #20]\n\t"
			 "ldr r6, [r0, #28]\n\t"
			 "ldr r0, [r0]\n\t"
			 "1:\n\t"
			 "ldm r1!, {r7, r8, r9, r10}\n\t" /* 4b, its dither offset, x pairs */
			 "add r8, r8, r2\n\t"
			 "lsr r11, r8, r5\n\t"
			 "smlabb r12, r4, r9, r11\n\t" /* step 0 */
			 "add r8, r8, r3\n\t"
			 "lsr r11, r8, r5\n\t"
			 "smlabb lr, r4, r10, r11\n\t" /* step 1 */
			 "add r8, r8, r3\n\t"
			 "lsr r11, r8, r5\n\t"
			 "smlabt r9, r4, r9, r11\n\t" /* step 2 */
			 "add r8, r8, r3\n\t"
			 "lsr r11, r8, r5\n\t"
			 "smlabt r10, r4, r10, r11\n\t" /* step 3 */
			 "asr r12, r12, r6\n\t"
			 "asr r9, r9, r6\n\t"
			 "pkhbt r12, r12, r9, lsl #16\n\t"
			 "ssat16 r12, #8, r12\n\t"
			 "uxtb16 r12, r12\n\t"
			 "asr lr, lr, r6\n\t"
			 "asr r10, r10, r6\n\t"
			 "pkhbt lr, lr, r10, lsl #16\n\t"
			 "ssat16 lr, #8, lr\n\t"
			 "uxtb16 lr, lr\n\t"
			 "orr r12, r12, lr, lsl #8\n\t"
			 "ldr r11, [r0, r7]\n\t"
			 "qsub8 r11, r11, r12\n\t"
			 "mov lr, #0x81818181\n\t"
			 "ssub8 r12, r11, lr\n\t"
			 "sel r11, r11, lr\n\t"
			 "str r11, [r0, r7]\n\t"
			 "ldr r12, [sp]\n\t"
			 "cmp r1, r12\n\t"
			 "bne 1b\n\t"
			 "add sp, sp, #4\n\t"
			 "pop {r4-r11, pc}\n\t");
}

/* |lanes| of two int16 lanes (none is -32768): SSUB16 from 0, SEL */
static inline uint32_t abs16x2(uint32_t v)
{
	uint32_t r;
	__asm__("ssub16 %0, %1, %2\n\tsel %0, %0, %2" : "=&r"(r) : "r"(0u), "r"(v) : "cc");
	return r;
}
#endif

/* bit length of a (0 for 0) */
static inline uint32_t bitlen(uint32_t a)
{
#if defined(__arm__) && defined(__ARM_ARCH) && __ARM_ARCH >= 7 && defined(__thumb2__)
	uint32_t z;
	__asm__("clz %0, %1" : "=r"(z) : "r"(a)); /* 32 for 0 */
	return 32u - z;
#else
	return a == 0u ? 0u : 32u - (uint32_t)__builtin_clz(a);
#endif
}

/* the steps of weights j0 .. j1 - 1 of row i, weight by weight (any shift) */
static void topr_block_ref(int8_t *row, const int8_t *dy, const int8_t *x, int32_t x_zp,
			   int32_t lr_q, int w_shift, int i, int j0, int j1, uint32_t d)
{
	for (int j = j0; j < j1; j++, d += KL_WEYL) {
		row[j] = kl_sub_clamp_w(row[j], topr_step(NULL, dy, x, x_zp, lr_q, w_shift, i, j, 0, d));
	}
}

uint32_t kl_topr_sgd_dense_s8(int8_t *w, const int8_t *dy, const int8_t *x, int32_t x_zp,
			      int rows, int cols, int32_t lr_q, int w_shift, uint32_t *dither,
			      uint32_t k_blocks, void *scratch)
{
	const uint32_t nb = ((uint32_t)cols + 3u) / 4u;
	uint32_t *ent = scratch;  /* the blocks by e(x): 4b, 4b W, x pairs */
	uint32_t *xp = ent + 4u * nb; /* x pairs by block */
	uint8_t *ex = (uint8_t *)(xp + 2u * nb); /* e(max |x - zp|) by block */
	uint8_t *ey = ex + nb;			  /* e(|dy|) by row */
	uint32_t cnt[10 + 9 + 17];		  /* blocks by e(x) (cx[9]: none), rows by e(dy), keys */
	uint32_t *cx = cnt, *cy = cnt + 10, *hist = cnt + 19;
	memset(cnt, 0, sizeof(cnt));
	uint32_t b = 0;
#if KL_KERNELS_DSP
	if ((cols & 3) == 0) { /* a word of four inputs at a time: centred pairs, |pairs| */
		const uint32_t zz = ((uint32_t)x_zp & 0xFFFFu) * 0x10001u;
		for (; b < nb; b++) {
			const uint32_t xw = kl_read_s8x4(x + 4u * b);
			const uint32_t xa = (uint32_t)__ssub16((int16x2_t)kl_sxtb16(xw), (int16x2_t)zz);
			const uint32_t xb =
				(uint32_t)__ssub16((int16x2_t)kl_sxtb16_ror8(xw), (int16x2_t)zz);
			uint32_t o = abs16x2(xa) | abs16x2(xb);
			o = (o | (o >> 16)) & 0xFFFFu;
			const uint32_t e = bitlen(o);
			xp[2u * b] = xa;
			xp[2u * b + 1u] = xb;
			ex[b] = (uint8_t)e;
			cx[e]++;
		}
	}
#endif
	for (; b < nb; b++) {
		const uint32_t j0 = 4u * b, j1 = j0 + 4u > (uint32_t)cols ? (uint32_t)cols : j0 + 4u;
		int32_t v[4] = {0, 0, 0, 0};
		uint32_t o = 0;
		for (uint32_t j = j0; j < j1; j++) {
			v[j - j0] = (int32_t)x[j] - x_zp;
			o |= (uint32_t)(v[j - j0] < 0 ? -v[j - j0] : v[j - j0]);
		}
		xp[2u * b] = ((uint32_t)v[0] & 0xFFFFu) | (uint32_t)v[2] << 16;
		xp[2u * b + 1u] = ((uint32_t)v[1] & 0xFFFFu) | (uint32_t)v[3] << 16;
		ex[b] = (uint8_t)bitlen(o); /* the bit length of the largest */
		cx[ex[b]]++;
	}
	for (int i = 0; i < rows; i++) {
		const int32_t v = dy[i];
		ey[i] = (uint8_t)bitlen((uint32_t)(v < 0 ? -v : v));
		cy[ey[i]]++;
	}
	uint8_t lx[8]; /* the levels of e(x) that blocks have */
	uint32_t nlx = 0;
	for (uint32_t e = 1; e <= 8u; e++) {
		lx[nlx] = (uint8_t)e;
		nlx += cx[e] != 0u;
	}
	for (uint32_t a = 1; a <= 8u; a++) {
		for (uint32_t l = 0; cy[a] != 0u && l < nlx; l++) {
			hist[a + lx[l]] += cy[a] * cx[lx[l]];
		}
	}
	/* gt[e]: the blocks above level e, a prefix of the order (index order
	 * within a level); blocks of level 0 are never picked, not placed */
	uint32_t gt[10], pos[9];
	gt[9] = 0;
	for (int e = 8; e >= 0; e--) {
		gt[e] = gt[e + 1] + cx[e + 1];
		pos[e] = gt[e];
	}
	for (b = 0; b < nb; b++) {
		if (ex[b] != 0u) {
			uint32_t *en = ent + 4u * pos[ex[b]]++;
			en[0] = 4u * b;
			en[1] = 4u * b * KL_WEYL;
			en[2] = xp[2u * b];
			en[3] = xp[2u * b + 1u];
		}
	}
	/* t: the k-th largest key; the first at_t blocks at it are taken */
	uint32_t above = 0;
	int t = 16;
	while (t > 1 && above + hist[t] < k_blocks) {
		above += hist[t--];
	}
	uint32_t at_t = k_blocks - above;
	uint32_t picked = 0;
	const uint32_t d0 = *dither;
	*dither = d0 + (uint32_t)rows * (uint32_t)cols * KL_WEYL;
#if KL_KERNELS_DSP
	const int fast = w_shift >= 13 && w_shift <= 30 && (cols & 3) == 0;
#endif
	for (int i = 0; i < rows; i++) {
		const int thr = t - (int)ey[i]; /* blocks above it are taken, at it: ties */
		if (ey[i] == 0u || thr > 8) {
			continue;
		}
		uint32_t n = gt[thr < 0 ? 0 : thr];
		if (thr >= 1 && at_t != 0u) {
			const uint32_t nt = gt[thr - 1] - gt[thr];
			const uint32_t take = nt < at_t ? nt : at_t;
			n += take;
			at_t -= take;
		}
		if (n == 0u) {
			continue;
		}
		int8_t *row = w + (long)i * cols;
		const uint32_t drow = d0 + (uint32_t)i * (uint32_t)cols * KL_WEYL;
#if KL_KERNELS_DSP
		const int32_t c = (int32_t)dy[i] * lr_q;
		if (fast && c >= -32768 && c <= 32767) {
			tb_t a;
			a.row = row;
			a.ent = ent;
			a.end = ent + 4u * n;
			a.drow = drow;
			a.wy = KL_WEYL;
			a.c = c;
			a.dsh = 32 - w_shift;
			a.sh = w_shift;
			tb_row(&a);
			picked += 4u * n;
			continue;
		}
#endif
		for (uint32_t r = 0; r < n; r++) {
			const int j0 = (int)ent[4u * r];
			const int j1 = j0 + 4 > cols ? cols : j0 + 4;
			topr_block_ref(row, dy, x, x_zp, lr_q, w_shift, i, j0, j1,
				       drow + (uint32_t)j0 * KL_WEYL);
			picked += (uint32_t)(j1 - j0);
		}
	}
	return picked;
}
