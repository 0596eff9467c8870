/* Depthwise convolution (multiplier 1), int8, dsp backend, bit-identical to
 * src/kernels/ref.
 *
 * 3x3, stride 1 or 2 (the usual MobileNet layers): kernel taps paired in
 * SMLAD lanes. The weights are widened once per call into a pair table
 * (per channel and kernel row: (w0, w1), (w1, w2), 24 bytes per channel);
 * two output pixels of a row per pass, four channels as two halves of two.
 * Per kernel row and half, the input words of the pixels read are paired by
 * PKHBT / PKHTB and SXTB16 (ROR 8) into (x[i], x[i+1]) of one channel, and
 * eight SMLAD / SMLABT / SMLATB make the 12 MACs (inline asm, see dw3_row).
 *   forward      raw input, bias + rounding constant - x_zp * sum(w) preset
 *                in the accumulators; output stage ASR, USAT, byte-wise
 *                min (ReLU6) / max (saturation flag) / add zp on four
 *                outputs. Taken with an activation, y_shift 1..22 and
 *                |bias| < 2^29 (the others: the general path below).
 *   input grad   stride 1: the same kernel on dy with the weights rotated by
 *                180 degrees (zero padding), int32 out.
 *                stride 2: not this kernel but a gather by parity (see
 *                dw3_bwd_s2): the 2x2 input pixels of a dy pixel, the dy
 *                pair (d[u-1], d[u]) of a channel in SMLAD lanes against
 *                (w[k][2], w[k][0]); border pixels through a tap gather.
 *                Scratch 36 bytes per channel (rounded to 4): its table and
 *                the widened weights.
 * Blocks with padding taps read through a table of 15 pixel pointers
 * (padding -> a row of the padding value); channels beyond the last
 * multiple of four go one by one. Scratch: 29 bytes per channel (rounded
 * to 4). All within kl_conv_s8_scratch() (its forward term alone is at
 * least 62 bytes per channel); the weight gradient takes none.
 *
 * Other shapes:
 * forward      weights widened once per call to int16 (lanes as SXTB16 /
 *              SXTB16 ROR 8 leave the input); every output pixel gets a table
 *              of tap pointers (padding taps point at a row of x_zp), the
 *              input is used raw and sum w * x_zp is subtracted up front.
 * input grad   a gather: for each input pixel, the (dy pixel, tap) pairs that
 *              reach it, then the same inner loop on dy (no zero point).
 * weight grad  3x3: per kernel row and half, output pixel pairs whose three
 *              taps are inside the image, the dy pair unpacked once for the
 *              three kx (see wgrad3_half); the remaining columns, and other
 *              kernels, per tap over the rectangle of output pixels whose tap
 *              is inside the image, accumulators in registers over it;
 *              x - x_zp as SXTAB16; the bias gradient in int16 lanes.
 * Channels beyond the last multiple of four go the scalar way.
 */
#include "kilolearn/kl_kernels.h"

#if KL_KERNELS_DSP
#include "kl_dsp_conv.h"

#define MAX_TAPS 64 /* larger kernels go to the ref kernel */

/* int16 weights [tap][group][2]: (w c0, w c2), (w c1, w c3) */
static void widen_weights(const int8_t *w, int taps, int c, uint32_t *wx)
{
	const int G = kl_round4(c) >> 2;
	for (int t = 0; t < taps; t++) {
		const int8_t *wt = w + (long)t * c;
		uint32_t *o = wx + (long)t * G * 2;
		int gi = 0;
		for (; (gi + 1) * 4 <= c; gi++) {
			const uint32_t v = kl_read_s8x4(wt + 4 * gi);
			o[2 * gi] = kl_sxtb16(v);
			o[2 * gi + 1] = kl_sxtb16_ror8(v);
		}
		if (gi < G) { /* tail lanes (not used by the vector loop) */
			o[2 * gi] = 0;
			o[2 * gi + 1] = 0;
		}
	}
}

#define DW_MAC4(v, wp)                                                                            \
	do {                                                                                      \
		const uint32_t xe_ = kl_sxtb16(v), xo_ = kl_sxtb16_ror8(v);                       \
		const uint32_t we_ = (wp)[0], wo_ = (wp)[1];                                      \
		a0 = kl_smlabb(we_, xe_, a0);                                                     \
		a2 = kl_smlatt(we_, xe_, a2);                                                     \
		a1 = kl_smlabb(wo_, xo_, a1);                                                     \
		a3 = kl_smlatt(wo_, xo_, a3);                                                     \
	} while (0)

static int dw_fwd_any(const kl_geom_t *g, const int8_t *x, int32_t x_zp, const int8_t *w,
		      const int32_t *b, const kl_requant_t *rq, int8_t *y, void *scratch)
{
	const int taps = g->kh * g->kw;
	if (taps > MAX_TAPS) {
		return kl_ref_depthwise_conv_s8(g, x, x_zp, w, b, rq, y, scratch);
	}
	const int c = g->c, C4 = kl_round4(c), G = C4 >> 2, cv = c & ~3;
	uint32_t *wx = scratch;                                    /* 2 * taps * C4 bytes */
	int32_t *corr = (int32_t *)(void *)(wx + (long)taps * G * 2); /* C4 */
	int32_t *bq = corr + C4;                                   /* C4 */
	int8_t *zrow = (int8_t *)(void *)(bq + C4);                /* C4 */
	const int8_t *ptr[MAX_TAPS];
	widen_weights(w, taps, c, wx);
	for (int ch = 0; ch < c; ch++) {
		int32_t s = 0;
		for (int t = 0; t < taps; t++) {
			s += w[(long)t * c + ch];
		}
		corr[ch] = (int32_t)(0u - (uint32_t)s * (uint32_t)x_zp);
	}
	memset(zrow, (int)(int8_t)x_zp, (size_t)C4);
	kl_rqf_t f;
	kl_rqf_init(&f, rq, b, bq, c);
	for (int oy = 0; oy < g->ho; oy++) {
		for (int ox = 0; ox < g->wo; ox++) {
			int t = 0;
			for (int ky = 0; ky < g->kh; ky++) {
				const int iy = oy * g->stride + ky - g->pad_t;
				const int rowok = iy >= 0 && iy < g->h;
				for (int kx = 0; kx < g->kw; kx++, t++) {
					const int ix = ox * g->stride + kx - g->pad_l;
					ptr[t] = rowok && ix >= 0 && ix < g->w
							 ? x + ((long)iy * g->w + ix) * c
							 : zrow;
				}
			}
			int8_t *out = y + ((long)oy * g->wo + ox) * c;
			for (int ch = 0; ch < cv; ch += 4) {
				int32_t a0 = corr[ch], a1 = corr[ch + 1];
				int32_t a2 = corr[ch + 2], a3 = corr[ch + 3];
				const uint32_t *wp = wx + (ch >> 1);
				for (int k = 0; k < taps; k++) {
					const uint32_t v = kl_read_s8x4(ptr[k] + ch);
					DW_MAC4(v, wp);
					wp += 2 * G;
				}
				if (f.fast) {
					out[ch] = kl_rqf_one(&f, a0, bq[ch]);
					out[ch + 1] = kl_rqf_one(&f, a1, bq[ch + 1]);
					out[ch + 2] = kl_rqf_one(&f, a2, bq[ch + 2]);
					out[ch + 3] = kl_rqf_one(&f, a3, bq[ch + 3]);
				} else {
					out[ch] = kl_rqf_any(&f, a0, bq[ch]);
					out[ch + 1] = kl_rqf_any(&f, a1, bq[ch + 1]);
					out[ch + 2] = kl_rqf_any(&f, a2, bq[ch + 2]);
					out[ch + 3] = kl_rqf_any(&f, a3, bq[ch + 3]);
				}
			}
			for (int ch = cv; ch < c; ch++) {
				int32_t a = corr[ch];
				for (int k = 0; k < taps; k++) {
					a += (int32_t)w[(long)k * c + ch] * ptr[k][ch];
				}
				out[ch] = kl_rqf_any(&f, a, bq[ch]);
			}
		}
	}
	return kl_rqf_sat(&f);
}

static void dw_bwd_any(const kl_geom_t *g, const int8_t *w, const int8_t *dy, int32_t *acc,
		       void *scratch)
{
	const int taps = g->kh * g->kw;
	if (taps > MAX_TAPS) {
		kl_ref_depthwise_conv_backward_input_s8(g, w, dy, acc, scratch);
		return;
	}
	const int c = g->c, C4 = kl_round4(c), G = C4 >> 2, cv = c & ~3, s = g->stride;
	uint32_t *wx = scratch;
	const int8_t *dp[MAX_TAPS];
	const uint32_t *wp[MAX_TAPS];
	int tk[MAX_TAPS];
	widen_weights(w, taps, c, wx);
	for (int iy = 0; iy < g->h; iy++) {
		for (int ix = 0; ix < g->w; ix++) {
			int n = 0;
			for (int ky = 0; ky < g->kh; ky++) {
				const int ty = iy + g->pad_t - ky;
				if (ty < 0 || ty % s != 0 || ty / s >= g->ho) {
					continue;
				}
				for (int kx = 0; kx < g->kw; kx++) {
					const int tx = ix + g->pad_l - kx;
					if (tx < 0 || tx % s != 0 || tx / s >= g->wo) {
						continue;
					}
					const int t = ky * g->kw + kx;
					dp[n] = dy + ((long)(ty / s) * g->wo + tx / s) * c;
					wp[n] = wx + (long)t * G * 2;
					tk[n] = t;
					n++;
				}
			}
			int32_t *out = acc + ((long)iy * g->w + ix) * c;
			for (int ch = 0; ch < cv; ch += 4) {
				int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
				for (int k = 0; k < n; k++) {
					const uint32_t v = kl_read_s8x4(dp[k] + ch);
					DW_MAC4(v, wp[k] + (ch >> 1));
				}
				out[ch] = a0;
				out[ch + 1] = a1;
				out[ch + 2] = a2;
				out[ch + 3] = a3;
			}
			for (int ch = cv; ch < c; ch++) {
				int32_t a = 0;
				for (int k = 0; k < n; k++) {
					a += (int32_t)w[(long)tk[k] * c + ch] * dp[k][ch];
				}
				out[ch] = a;
			}
		}
	}
}

/* first output index whose tap (offset off = k - pad) lands at >= 0, and the
 * end of those landing below n */
static void tap_range(int off, int stride, int n_in, int n_out, int *lo, int *hi)
{
	int l = off >= 0 ? 0 : (-off + stride - 1) / stride;
	int h = n_in - 1 - off < 0 ? 0 : (n_in - 1 - off) / stride + 1;
	if (h > n_out) {
		h = n_out;
	}
	*lo = l;
	*hi = h > l ? h : l;
}

static inline uint32_t sxtab16(uint32_t a, uint32_t v)
{
	uint32_t r;
	__asm__("sxtab16 %0, %1, %2" : "=r"(r) : "r"(a), "r"(v));
	return r;
}

static inline uint32_t sxtab16_ror8(uint32_t a, uint32_t v)
{
	uint32_t r;
	__asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(v));
	return r;
}

/* gb = dy summed over the pixels: int16 lanes (SXTAB16) over blocks of at
 * most 255 pixels, then int32 */
static void grad_bias(const int8_t *dy, long npix, int c, int32_t *gb)
{
	const int cv = c & ~3;
	for (int ch = 0; ch < cv; ch += 4) {
		int32_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
		const int8_t *d = dy + ch;
		for (long p = 0; p < npix;) {
			const long e = npix - p < 255 ? npix : p + 255;
			uint32_t se = 0, so = 0;
			for (; p < e; p++, d += c) {
				const uint32_t v = kl_read_s8x4(d);
				se = sxtab16(se, v);
				so = sxtab16_ror8(so, v);
			}
			s0 += (int16_t)se;
			s2 += (int16_t)(se >> 16);
			s1 += (int16_t)so;
			s3 += (int16_t)(so >> 16);
		}
		gb[ch] = s0;
		gb[ch + 1] = s1;
		gb[ch + 2] = s2;
		gb[ch + 3] = s3;
	}
	for (int ch = cv; ch < c; ch++) {
		int32_t a = 0;
		for (long p = 0; p < npix; p++) {
			a += dy[p * c + ch];
		}
		gb[ch] = a;
	}
}

/* four channels of one pixel: a0..a3 += d * (x - x_zp) */
#define WG_MAC4(dp, xp)                                                                           \
	do {                                                                                      \
		const uint32_t vd_ = kl_read_s8x4(dp), vx_ = kl_read_s8x4(xp);                    \
		const uint32_t de_ = kl_sxtb16(vd_), do_ = kl_sxtb16_ror8(vd_);                   \
		const uint32_t xe_ = sxtab16(nz, vx_), xo_ = sxtab16_ror8(nz, vx_);               \
		a0 = kl_smlabb(de_, xe_, a0);                                                     \
		a2 = kl_smlatt(de_, xe_, a2);                                                     \
		a1 = kl_smlabb(do_, xo_, a1);                                                     \
		a3 = kl_smlatt(do_, xo_, a3);                                                     \
	} while (0)

/* tap (ky, kx) of the vector channels over output columns [ox0, ox1) of
 * rows [oy0, oy1), added to gt (x - x_zp as SXTAB16 with nz = -x_zp) */
static void wgrad_tap(const kl_geom_t *g, const int8_t *x, uint32_t nz, const int8_t *dy,
		      int ky, int kx, int oy0, int oy1, int ox0, int ox1, int32_t *gt)
{
	const int c = g->c, cv = c & ~3, s = g->stride, n = ox1 - ox0;
	if (n <= 0 || oy1 <= oy0) {
		return;
	}
	const long xstep = (long)s * c, drs = (long)g->wo * c, xrs = (long)s * g->w * c;
	const int8_t *dp0 = dy + ((long)oy0 * g->wo + ox0) * c;
	const int8_t *xp0 =
		x + ((long)(oy0 * s + ky - g->pad_t) * g->w + ox0 * s + kx - g->pad_l) * c;
	for (int ch = 0; ch < cv; ch += 4) {
		int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
		const int8_t *dr = dp0 + ch, *xr = xp0 + ch;
		if (n == 1) { /* a border column: down the rows */
			for (int oy = oy0; oy < oy1; oy++, dr += drs, xr += xrs) {
				WG_MAC4(dr, xr);
			}
		} else {
			for (int oy = oy0; oy < oy1; oy++, dr += drs, xr += xrs) {
				const int8_t *dp = dr, *xp = xr;
				for (int i = 0; i < n; i++, dp += c, xp += xstep) {
					WG_MAC4(dp, xp);
				}
			}
		}
		gt[ch] += a0;
		gt[ch + 1] += a1;
		gt[ch + 2] += a2;
		gt[ch + 3] += a3;
	}
}

/* Weight gradient, 3x3: kernel row ky, half h of the channel group at ch,
 * over the pixel pairs (ox, ox + 1), ox = ox0 + 2i, i < np, of rows
 * [oy0, oy1): per pair the dy pair of each channel (d[ox], d[ox+1]) once
 * (PKH, SXTB16), then per kx the x pair (x[j+kx], x[j+kx+s]) - x_zp (PKH,
 * SXTAB16 on -x_zp), one SMLAD per channel and kx: 12 MACs in 32
 * instructions; the rows in the same asm loop (row end and advances in
 * memory). */
#define WG_PK0 "pkhbt %[t0], %[t0], %[t1], lsl #16\n\t"
#define WG_PK1 "pkhtb %[t0], %[t1], %[t0], asr #16\n\t"
#define WG_X(PK, LD, G0, G1)                                                                      \
	LD PK "sxtab16 %[t1], %[nz], %[t0]\n\t"                                                   \
	"smlad %[" G0 "], %[de], %[t1], %[" G0 "]\n\t"                                            \
	"sxtab16 %[t1], %[nz], %[t0], ror #8\n\t"                                                 \
	"smlad %[" G1 "], %[dq], %[t1], %[" G1 "]\n\t"
#define WG_D(PK)                                                                                  \
	"ldr %[t1], [%[dp], %[c]]\n\t"                                                            \
	"ldr %[t0], [%[dp]]\n\t" PK "sxtb16 %[de], %[t0]\n\t"                                     \
	"sxtb16 %[dq], %[t0], ror #8\n\t"
#define WG_L_0_C "ldr %[t0], [%[xp]]\n\tldr %[t1], [%[xp], %[c]]\n\t"
#define WG_L_C_2C "ldr %[t0], [%[xp], %[c]]\n\tldr %[t1], [%[xp], %[c], lsl #1]\n\t"
#define WG_L_2C_3C                                                                                \
	"ldr %[t0], [%[xp], %[c], lsl #1]\n\t"                                                    \
	"add %[t1], %[xp], %[c], lsl #1\n\t"                                                      \
	"ldr %[t1], [%[t1], %[c]]\n\t"
#define WG_L_0_2C "ldr %[t0], [%[xp]]\n\tldr %[t1], [%[xp], %[c], lsl #1]\n\t"
#define WG_L_C_3C                                                                                 \
	"ldr %[t0], [%[xp], %[c]]\n\t"                                                            \
	"add %[t1], %[xp], %[c], lsl #1\n\t"                                                      \
	"ldr %[t1], [%[t1], %[c]]\n\t"
#define WG_L_2C_4C "ldr %[t0], [%[xp], %[c], lsl #1]\n\tldr %[t1], [%[xp], %[c], lsl #2]\n\t"
#define WG_LOOP(PK, L0, L1, L2, XS)                                                               \
	"1:\n\t" WG_D(PK) WG_X(PK, L0, "g00", "g01") WG_X(PK, L1, "g10", "g11")                    \
		WG_X(PK, L2, "g20", "g21") "add %[dp], %[dp], %[c], lsl #1\n\t"                   \
					   "add %[xp], %[xp], %[c], lsl #" XS "\n\t"              \
					   "ldr %[t0], %[end]\n\t"                                \
					   "cmp %[dp], %[t0]\n\t"                                 \
					   "bne 1b\n\t"                                           \
					   "ldr %[t1], %[dadv]\n\t"                               \
					   "add %[dp], %[dp], %[t1]\n\t"                          \
					   "ldr %[t1], %[xadv]\n\t"                               \
					   "add %[xp], %[xp], %[t1]\n\t"                          \
					   "ldr %[t1], %[drs]\n\t"                                \
					   "add %[t0], %[t0], %[t1]\n\t"                          \
					   "str %[t0], %[end]\n\t"                                \
					   "ldr %[t1], %[last]\n\t"                               \
					   "cmp %[t0], %[t1]\n\t"                                 \
					   "bne 1b\n\t"
#define WG_OPS                                                                                    \
	: [g00] "+r"(g00), [g01] "+r"(g01), [g10] "+r"(g10), [g11] "+r"(g11), [g20] "+r"(g20),    \
	  [g21] "+r"(g21), [de] "=&r"(de), [dq] "=&r"(dq), [t0] "=&r"(t0), [t1] "=&r"(t1),        \
	  [dp] "+&r"(dp), [xp] "+&r"(xp)                                                          \
	  , [end] "+m"(end)                                                                       \
	: [c] "r"(c), [nz] "r"(nz), [dadv] "m"(dadv), [xadv] "m"(xadv), [drs] "m"(drs),          \
	  [last] "m"(last)                                                                        \
	: "cc", "memory"

static inline __attribute__((always_inline)) void
wgrad3_half(const kl_geom_t *g, const int8_t *x, uint32_t nz, const int8_t *dy, int ky, int ch,
	    int h, int oy0, int oy1, int ox0, int np, int32_t *gt)
{
	const int c = g->c, s = g->stride;
	int32_t g00 = 0, g01 = 0, g10 = 0, g11 = 0, g20 = 0, g21 = 0;
	if (oy1 > oy0) { /* the rows in the asm: row end, advances in memory */
		const long drs = (long)g->wo * c, xrs = (long)s * g->w * c;
		const long dadv = drs - 2L * np * c, xadv = xrs - 2L * np * s * c;
		const int8_t *xp =
			x + ((long)(oy0 * s + ky - g->pad_t) * g->w + ox0 * s - g->pad_l) * c + ch;
		const int8_t *dp = dy + ((long)oy0 * g->wo + ox0) * c + ch;
		const int8_t *end = dp + 2L * np * c;
		const int8_t *last = end + (long)(oy1 - oy0) * drs;
		uint32_t de, dq, t0, t1;
		if (s == 1 && h == 0) {
			__asm__ volatile(WG_LOOP(WG_PK0, WG_L_0_C, WG_L_C_2C, WG_L_2C_3C, "1") WG_OPS);
		} else if (s == 1) {
			__asm__ volatile(WG_LOOP(WG_PK1, WG_L_0_C, WG_L_C_2C, WG_L_2C_3C, "1") WG_OPS);
		} else if (h == 0) {
			__asm__ volatile(WG_LOOP(WG_PK0, WG_L_0_2C, WG_L_C_3C, WG_L_2C_4C, "2") WG_OPS);
		} else {
			__asm__ volatile(WG_LOOP(WG_PK1, WG_L_0_2C, WG_L_C_3C, WG_L_2C_4C, "2") WG_OPS);
		}
	}
	const int k = ch + 2 * h;
	gt[k] = g00;
	gt[k + 1] = g01;
	gt[c + k] = g10;
	gt[c + k + 1] = g11;
	gt[2 * c + k] = g20;
	gt[2 * c + k + 1] = g21;
}

void kl_dsp_depthwise_conv_grad_s8(const kl_geom_t *g, const int8_t *x, int32_t x_zp,
				   const int8_t *dy, int32_t *gw, int32_t *gb, void *scratch)
{
	(void)scratch;
	const int c = g->c, cv = c & ~3, s = g->stride;
	const uint32_t nz = ((uint32_t)(-x_zp) & 0xFFFFu) * 0x10001u;
	grad_bias(dy, (long)g->ho * g->wo, c, gb);
	const int k3 = g->kw == 3;
	int cl = 0, cr = 0, np = 0; /* 3x3: pairs from column cl, all three kx inside */
	if (k3) {
		cl = 0;
		cr = g->wo;
		for (int kx = 0; kx < 3; kx++) {
			int l, r;
			tap_range(kx - g->pad_l, s, g->w, g->wo, &l, &r);
			cl = l > cl ? l : cl;
			cr = r < cr ? r : cr;
		}
		np = cr > cl ? (cr - cl) >> 1 : 0;
	}
	for (int ky = 0; ky < g->kh; ky++) {
		int oy0, oy1;
		tap_range(ky - g->pad_t, s, g->h, g->ho, &oy0, &oy1);
		int32_t *grow = gw + (long)ky * g->kw * c;
		if (np > 0) {
			for (int ch = 0; ch < cv; ch += 4) {
				wgrad3_half(g, x, nz, dy, ky, ch, 0, oy0, oy1, cl, np, grow);
				wgrad3_half(g, x, nz, dy, ky, ch, 1, oy0, oy1, cl, np, grow);
			}
		} else {
			for (int k = 0; k < g->kw * c; k++) {
				grow[k] = 0;
			}
		}
		for (int kx = 0; kx < g->kw; kx++) {
			int ox0, ox1;
			tap_range(kx - g->pad_l, s, g->w, g->wo, &ox0, &ox1);
			int32_t *gt = grow + (long)kx * c;
			if (np > 0) { /* the columns outside the pairs */
				const int pe = cl + 2 * np;
				wgrad_tap(g, x, nz, dy, ky, kx, oy0, oy1, ox0, ox1 < cl ? ox1 : cl, gt);
				wgrad_tap(g, x, nz, dy, ky, kx, oy0, oy1, ox0 > pe ? ox0 : pe, ox1, gt);
			} else {
				wgrad_tap(g, x, nz, dy, ky, kx, oy0, oy1, ox0, ox1, gt);
			}
			for (int ch = cv; ch < c; ch++) {
				int32_t a = 0;
				for (int oy = oy0; oy < oy1; oy++) {
					const int iy = oy * s + ky - g->pad_t;
					for (int ox = ox0; ox < ox1; ox++) {
						const int ix = ox * s + kx - g->pad_l;
						a += (int32_t)dy[((long)oy * g->wo + ox) * c + ch] *
						     ((int32_t)x[((long)iy * g->w + ix) * c + ch] - x_zp);
					}
				}
				gt[ch] = a;
			}
		}
	}
}
/* ---- 3x3, stride 1 and 2: taps paired in SMLAD lanes ----------------------
 * Two output pixels of one row at a time. Per kernel row, the input words
 * of the pixels they read (four at stride 1, five at stride 2) are paired
 * by PKHBT / PKHTB (channels 0,1 / 2,3 of two pixels) and SXTB16 (ROR 8)
 * turns each into one channel of two neighbouring pixels, (x[i], x[i+1]).
 * With W01 = (w0, w1), W12 = (w1, w2) of that channel and kernel row:
 *   stride 1  o0 += SMLAD(x0x1, W01) + SMLABT(x2x3, W12)
 *             o1 += SMLATB(x0x1, W01) + SMLAD(x2x3, W12)
 *   stride 2  o0 += SMLAD(x0x1, W01) + SMLABT(x2x3, W12)
 *             o1 += SMLAD(x2x3, W01) + SMLABT(x4, W12)
 * Blocks whose taps are all inside the image read it directly; the others
 * read through a table of 15 pixel pointers, padding taps pointing at a row
 * of the padding value. */

#define DW3_WORDS 24 /* words of the pair table per group of four channels */

static inline uint32_t sxtb16_ror16(uint32_t v)
{
	uint32_t r;
	__asm__("sxtb16 %0, %1, ror #16" : "=r"(r) : "r"(v));
	return r;
}

static inline uint32_t sxtb16_ror24(uint32_t v)
{
	uint32_t r;
	__asm__("sxtb16 %0, %1, ror #24" : "=r"(r) : "r"(v));
	return r;
}

/* bytewise unsigned minimum / maximum */
static inline uint32_t umin8(uint32_t v, uint32_t m)
{
	uint32_t t;
	__asm__("usub8 %0, %2, %1\n\tsel %0, %1, %2" : "=&r"(t) : "r"(v), "r"(m) : "cc");
	return t;
}

static inline uint32_t umax8(uint32_t v, uint32_t m)
{
	uint32_t t;
	__asm__("usub8 %0, %1, %2\n\tsel %0, %1, %2" : "=&r"(t) : "r"(v), "r"(m) : "cc");
	return t;
}

static inline uint32_t pair16(int32_t lo, int32_t hi)
{
	return ((uint32_t)lo & 0xFFFFu) | ((uint32_t)hi << 16);
}

/* pair table [group][ky][channel of 4][W01, W12]; flip: the kernel rotated by
 * 180 degrees (input gradient at stride 1). Lanes beyond c are zero. */
static void dw3_table(const int8_t *w, int c, int flip, uint32_t *wt)
{
	const int C4 = kl_round4(c);
	for (int ky = 0; ky < 3; ky++) {
		const int8_t *r = w + (long)(flip ? 2 - ky : ky) * 3 * c;
		const int8_t *w0 = flip ? r + 2 * c : r, *w2 = flip ? r : r + 2 * c;
		const int8_t *w1 = r + c;
		uint32_t *o = wt + ky * 8;
		for (int ch = 0; ch < C4; ch++) {
			const int in = ch < c;
			const int32_t v0 = in ? w0[ch] : 0, v1 = in ? w1[ch] : 0;
			const int32_t v2 = in ? w2[ch] : 0;
			uint32_t *q = o + (ch >> 2) * DW3_WORDS + (ch & 3) * 2;
			q[0] = pair16(v0, v1);
			q[1] = pair16(v1, v2);
		}
	}
}

typedef struct {
	const int8_t *src; /* HWC image read (x, or dy for the input gradient) */
	int sh, sw, c, s;  /* its height, width, channels; stride */
	int off_y, off_x;  /* source row of output row r, tap ky: r * s + ky - off_y */
	const uint32_t *wt;
	const int8_t *zrow; /* the padding value, c bytes */
} dw3_t;

/* One kernel row of one half (channels ch + 2h, ch + 2h + 1) of a block:
 * the input words into t0..t3 (t1 = the fifth pixel after the pairing at
 * stride 2), paired, then eight multiplies on a00, a01 (pixel 0, channels
 * 2h, 2h + 1) and a10, a11 (pixel 1). Operands: p = the row's first pixel
 * (direct) or its five pixel pointers (table), c = the pixel stride
 * (direct) or the channel offset (table); w advances by one kernel row. */
#define DW3_LD_D                                                                                  \
	"ldr %[t0], [%[p]]\n\t"                                                                   \
	"ldr %[t1], [%[p], %[c]]\n\t"                                                             \
	"ldr %[t2], [%[p], %[c], lsl #1]\n\t"                                                     \
	"add %[t3], %[p], %[c], lsl #1\n\t"                                                       \
	"ldr %[t3], [%[t3], %[c]]\n\t"
#define DW3_LD_T                                                                                  \
	"ldrd %[t0], %[t1], [%[p]]\n\t"                                                           \
	"ldrd %[t2], %[t3], [%[p], #8]\n\t"                                                       \
	"ldr %[t0], [%[t0], %[c]]\n\t"                                                            \
	"ldr %[t1], [%[t1], %[c]]\n\t"                                                            \
	"ldr %[t2], [%[t2], %[c]]\n\t"                                                            \
	"ldr %[t3], [%[t3], %[c]]\n\t"
#define DW3_PK0                                                                                   \
	"pkhbt %[t0], %[t0], %[t1], lsl #16\n\t"                                                  \
	"pkhbt %[t2], %[t2], %[t3], lsl #16\n\t"
#define DW3_PK1                                                                                   \
	"pkhtb %[t0], %[t1], %[t0], asr #16\n\t"                                                  \
	"pkhtb %[t2], %[t3], %[t2], asr #16\n\t"
#define DW3_LD4_D "ldr %[t1], [%[p], %[c], lsl #2]\n\t"
#define DW3_LD4_T                                                                                 \
	"ldr %[t1], [%[p], #16]\n\t"                                                              \
	"ldr %[t1], [%[t1], %[c]]\n\t"
#define DW3_MAC_S1                                                                                \
	"ldrd %[wa], %[wb], [%[w]], #8\n\t"                                                       \
	"sxtb16 %[t1], %[t0]\n\t"                                                                 \
	"sxtb16 %[t3], %[t2]\n\t"                                                                 \
	"smlad %[a00], %[t1], %[wa], %[a00]\n\t"                                                  \
	"smlatb %[a10], %[t1], %[wa], %[a10]\n\t"                                                 \
	"smlabt %[a00], %[t3], %[wb], %[a00]\n\t"                                                 \
	"smlad %[a10], %[t3], %[wb], %[a10]\n\t"                                                  \
	"ldrd %[wa], %[wb], [%[w]], #24\n\t"                                                      \
	"sxtb16 %[t1], %[t0], ror #8\n\t"                                                         \
	"sxtb16 %[t3], %[t2], ror #8\n\t"                                                         \
	"smlad %[a01], %[t1], %[wa], %[a01]\n\t"                                                  \
	"smlatb %[a11], %[t1], %[wa], %[a11]\n\t"                                                 \
	"smlabt %[a01], %[t3], %[wb], %[a01]\n\t"                                                 \
	"smlad %[a11], %[t3], %[wb], %[a11]\n\t"
#define DW3_MAC_S2(E4, O4)                                                                        \
	"ldrd %[wa], %[wb], [%[w]], #8\n\t"                                                       \
	"sxtb16 %[t3], %[t0]\n\t"                                                                 \
	"smlad %[a00], %[t3], %[wa], %[a00]\n\t"                                                  \
	"sxtb16 %[t3], %[t2]\n\t"                                                                 \
	"smlabt %[a00], %[t3], %[wb], %[a00]\n\t"                                                 \
	"smlad %[a10], %[t3], %[wa], %[a10]\n\t"                                                  \
	"sxtb16 %[t3], %[t1]" E4 "\n\t"                                                           \
	"smlabt %[a10], %[t3], %[wb], %[a10]\n\t"                                                 \
	"ldrd %[wa], %[wb], [%[w]], #24\n\t"                                                      \
	"sxtb16 %[t3], %[t0], ror #8\n\t"                                                         \
	"smlad %[a01], %[t3], %[wa], %[a01]\n\t"                                                  \
	"sxtb16 %[t3], %[t2], ror #8\n\t"                                                         \
	"smlabt %[a01], %[t3], %[wb], %[a01]\n\t"                                                 \
	"smlad %[a11], %[t3], %[wa], %[a11]\n\t"                                                  \
	"sxtb16 %[t3], %[t1]" O4 "\n\t"                                                           \
	"smlabt %[a11], %[t3], %[wb], %[a11]\n\t"
#define DW3_OPS                                                                                   \
	: [a00] "+r"(a00), [a01] "+r"(a01), [a10] "+r"(a10), [a11] "+r"(a11), [w] "+r"(w),        \
	  [t0] "=&r"(t0), [t1] "=&r"(t1), [t2] "=&r"(t2), [t3] "=&r"(t3), [wa] "=&r"(wa),         \
	  [wb] "=&r"(wb)                                                                          \
	: [p] "r"(p), [c] "r"(cc)                                                                 \
	: "memory"

#define DW3_ADV                                                                                   \
	"ldr %[t0], %[rs]\n\t"                                                                     \
	"add %[p], %[p], %[t0]\n\t"
#define DW3_R_S1_0 DW3_LD_D DW3_PK0 DW3_MAC_S1
#define DW3_R_S1_1 DW3_LD_D DW3_PK1 DW3_MAC_S1
#define DW3_R_S2_0 DW3_LD_D DW3_PK0 DW3_LD4_D DW3_MAC_S2("", ", ror #8")
#define DW3_R_S2_1 DW3_LD_D DW3_PK1 DW3_LD4_D DW3_MAC_S2(", ror #16", ", ror #24")
#define DW3_OPS3                                                                                  \
	: [a00] "+r"(a00), [a01] "+r"(a01), [a10] "+r"(a10), [a11] "+r"(a11), [w] "+r"(w),        \
	  [p] "+r"(p), [t0] "=&r"(t0), [t1] "=&r"(t1), [t2] "=&r"(t2), [t3] "=&r"(t3),            \
	  [wa] "=&r"(wa), [wb] "=&r"(wb)                                                          \
	: [c] "r"(c), [rs] "m"(rs)                                                                \
	: "memory"

/* the three kernel rows of a half, direct (rows rs bytes apart) */
static inline __attribute__((always_inline)) void
dw3_rows3(const int8_t *p, int c, long rs, const uint32_t *w, int s2, int h, int32_t *p00,
	  int32_t *p01, int32_t *p10, int32_t *p11)
{
	int32_t a00 = *p00, a01 = *p01, a10 = *p10, a11 = *p11;
	uint32_t t0, t1, t2, t3, wa, wb;
	if (!s2 && !h) {
		__asm__(DW3_R_S1_0 DW3_ADV DW3_R_S1_0 DW3_ADV DW3_R_S1_0 DW3_OPS3);
	} else if (!s2) {
		__asm__(DW3_R_S1_1 DW3_ADV DW3_R_S1_1 DW3_ADV DW3_R_S1_1 DW3_OPS3);
	} else if (!h) {
		__asm__(DW3_R_S2_0 DW3_ADV DW3_R_S2_0 DW3_ADV DW3_R_S2_0 DW3_OPS3);
	} else {
		__asm__(DW3_R_S2_1 DW3_ADV DW3_R_S2_1 DW3_ADV DW3_R_S2_1 DW3_OPS3);
	}
	*p00 = a00;
	*p01 = a01;
	*p10 = a10;
	*p11 = a11;
}

static inline __attribute__((always_inline)) void
dw3_row(const void *p, int cc, const uint32_t **wp, int tab, int s2, int h, int32_t *p00,
	int32_t *p01, int32_t *p10, int32_t *p11)
{
	int32_t a00 = *p00, a01 = *p01, a10 = *p10, a11 = *p11;
	const uint32_t *w = *wp;
	uint32_t t0, t1, t2, t3, wa, wb;
	if (!tab && !s2 && !h) {
		__asm__(DW3_LD_D DW3_PK0 DW3_MAC_S1 DW3_OPS);
	} else if (!tab && !s2) {
		__asm__(DW3_LD_D DW3_PK1 DW3_MAC_S1 DW3_OPS);
	} else if (!tab && !h) {
		__asm__(DW3_LD_D DW3_PK0 DW3_LD4_D DW3_MAC_S2("", ", ror #8") DW3_OPS);
	} else if (!tab) {
		__asm__(DW3_LD_D DW3_PK1 DW3_LD4_D DW3_MAC_S2(", ror #16", ", ror #24") DW3_OPS);
	} else if (!s2 && !h) {
		__asm__(DW3_LD_T DW3_PK0 DW3_MAC_S1 DW3_OPS);
	} else if (!s2) {
		__asm__(DW3_LD_T DW3_PK1 DW3_MAC_S1 DW3_OPS);
	} else if (!h) {
		__asm__(DW3_LD_T DW3_PK0 DW3_LD4_T DW3_MAC_S2("", ", ror #8") DW3_OPS);
	} else {
		__asm__(DW3_LD_T DW3_PK1 DW3_LD4_T DW3_MAC_S2(", ror #16", ", ror #24") DW3_OPS);
	}
	*wp = w;
	*p00 = a00;
	*p01 = a01;
	*p10 = a10;
	*p11 = a11;
}

/* Half h of a block over the three kernel rows: direct (base = pixel 0 of
 * row 0 at channel ch, rs = the row stride) or through the table P. */
static inline __attribute__((always_inline)) void
dw3_half(const int8_t *const *P, const int8_t *base, long rs, int c, int ch, int tab, int s2,
	 int h, const uint32_t *wk, int32_t *p00, int32_t *p01, int32_t *p10, int32_t *p11)
{
	const uint32_t *w = wk + 4 * h;
	if (tab) {
		dw3_row(P, ch, &w, 1, s2, h, p00, p01, p10, p11);
		dw3_row(P + 5, ch, &w, 1, s2, h, p00, p01, p10, p11);
		dw3_row(P + 10, ch, &w, 1, s2, h, p00, p01, p10, p11);
	} else {
		dw3_rows3(base, c, rs, w, s2, h, p00, p01, p10, p11);
	}
}

/* The output stage of the fast forward path: with an activation (lo = 0),
 * no overflow possible (|bias| < 2^29) and y_shift in 1..22, kl_requant is
 * min(USAT8((dot + bq + k) >> ys), hi) + zp, k = kl_rq_k(ys): the sign
 * correction of kl_rq_add only changes sums that clamp to 0 anyway. */
typedef struct {
	const int32_t *binit; /* per channel: bq + k - x_zp * sum(w) */
	int ys;
	uint32_t hi4, zp4, mx; /* hi and zp in every byte; bytewise max of r */
	int8_t *y;
} dw3_out_t;

/* half h of one block: accumulate, then the output stage */
static inline __attribute__((always_inline)) void
dw3_out_half(const int8_t *const *P, const int8_t *base, long rs, int c, int ch, int tab, int s2,
	     int h, const uint32_t *wk, dw3_out_t *o, uint32_t *mx, int8_t *y8, int32_t *y32,
	     int two)
{
	int32_t a00 = 0, a01 = 0, a10 = 0, a11 = 0;
	if (o) {
		a00 = a10 = o->binit[ch + 2 * h];
		a01 = a11 = o->binit[ch + 2 * h + 1];
	}
	dw3_half(P, base, rs, c, ch, tab, s2, h, wk, &a00, &a01, &a10, &a11);
	if (o) {
		const int ys = o->ys;
		uint32_t pk = __usat(a00 >> ys, 8);
		pk |= __usat(a01 >> ys, 8) << 8;
		pk |= __usat(a10 >> ys, 8) << 16;
		pk |= __usat(a11 >> ys, 8) << 24;
		pk = umin8(pk, o->hi4);
		*mx = umax8(pk, *mx);
		pk = (uint32_t)__uadd8((uint8x4_t)pk, (uint8x4_t)o->zp4);
		const uint16_t lo16 = (uint16_t)pk, hi16 = (uint16_t)(pk >> 16);
		memcpy(y8 + ch + 2 * h, &lo16, 2);
		if (two) {
			memcpy(y8 + c + ch + 2 * h, &hi16, 2);
		}
	} else {
		y32[ch + 2 * h] = a00;
		y32[ch + 2 * h + 1] = a01;
		if (two) {
			y32[c + ch + 2 * h] = a10;
			y32[c + ch + 2 * h + 1] = a11;
		}
	}
}

/* one block (two output pixels at row r, column ox; pixel 1 only if two)
 * over the vector channel groups: forward (o, y8) or int32 sums (y32) */
static inline __attribute__((always_inline)) void
dw3_block(const dw3_t *d, const int8_t *const *P, const int8_t *base, int cv, int tab, int s2,
	  dw3_out_t *o, int8_t *y8, int32_t *y32, int two)
{
	const int c = d->c;
	const long rs = (long)d->sw * c;
	uint32_t mx = o ? o->mx : 0;
	const uint32_t *wk = d->wt;
	for (int ch = 0; ch < cv; ch += 4) {
		dw3_out_half(P, base, rs, c, ch, tab, s2, 0, wk, o, &mx, y8, y32, two);
		dw3_out_half(P, base, rs, c, ch, tab, s2, 1, wk, o, &mx, y8, y32, two);
		wk += DW3_WORDS;
		if (!tab) {
			base += 4;
		}
	}
	if (o) {
		o->mx = mx;
	}
}

/* Rows of outputs (oh x ow) of the 3x3 operator d, the vector channels;
 * the others (c % 4) one by one (value and weight from the sources,
 * padding as d->zrow[0]). */
static inline __attribute__((always_inline)) void
dw3_run(const dw3_t *d, int oh, int ow, dw3_out_t *o, int8_t *y8, int32_t *y32, const int8_t *w,
	int flip)
{
	const int c = d->c, cv = c & ~3, s = d->s, span = s == 2 ? 5 : 4;
	const int8_t *P[15];
	int32_t rmax = 0;
	for (int r = 0; r < oh; r++) {
		const int iy0 = r * s - d->off_y;
		const int rows_ok = iy0 >= 0 && iy0 + 2 < d->sh;
		for (int ox = 0; ox < ow; ox += 2) {
			const int ix0 = ox * s - d->off_x;
			const int two = ox + 1 < ow;
			const long po = (long)r * ow + ox;
			int8_t *yb = o ? y8 + po * c : NULL;
			int32_t *yw = o ? NULL : y32 + po * c;
			if (cv > 0) {
				if (rows_ok && two && ix0 >= 0 && ix0 + span <= d->sw) {
					const int8_t *base = d->src + ((long)iy0 * d->sw + ix0) * c;
					if (s == 2) {
						dw3_block(d, P, base, cv, 0, 1, o, yb, yw, 1);
					} else {
						dw3_block(d, P, base, cv, 0, 0, o, yb, yw, 1);
					}
				} else {
					for (int ky = 0; ky < 3; ky++) {
						const int iy = iy0 + ky;
						for (int i = 0; i < 5; i++) {
							const int ix = ix0 + i;
							P[ky * 5 + i] =
								iy >= 0 && iy < d->sh && ix >= 0 &&
										ix < d->sw
									? d->src + ((long)iy * d->sw + ix) * c
									: d->zrow;
						}
					}
					if (s == 2) {
						dw3_block(d, P, NULL, cv, 1, 1, o, yb, yw, two);
					} else {
						dw3_block(d, P, NULL, cv, 1, 0, o, yb, yw, two);
					}
				}
			}
			for (int k = 0; k < 1 + two && cv < c; k++) {
				for (int ch = cv; ch < c; ch++) {
					int32_t a = o ? o->binit[ch] : 0;
					for (int ky = 0; ky < 3; ky++) {
						const int iy = iy0 + ky;
						for (int kx = 0; kx < 3; kx++) {
							const int ix = ix0 + k * s + kx;
							const int t = flip ? (2 - ky) * 3 + 2 - kx : ky * 3 + kx;
							const int32_t v =
								iy >= 0 && iy < d->sh && ix >= 0 && ix < d->sw
									? d->src[((long)iy * d->sw + ix) * c + ch]
									: d->zrow[0];
							a += (int32_t)w[(long)t * c + ch] * v;
						}
					}
					if (o) {
						int32_t r8 = (int32_t)__usat(a >> o->ys, 8);
						const int32_t hi = (int32_t)(o->hi4 & 0xFFu);
						r8 = r8 > hi ? hi : r8;
						rmax = r8 > rmax ? r8 : rmax;
						yb[(long)k * c + ch] = (int8_t)(r8 + (int32_t)(int8_t)o->zp4);
					} else {
						yw[(long)k * c + ch] = a;
					}
				}
			}
		}
	}
	if (o) {
		o->mx = umax8(o->mx, (uint32_t)rmax);
	}
}

static void dw3_run_fwd(const dw3_t *d, int oh, int ow, dw3_out_t *o, int8_t *y8, const int8_t *w)
{
	dw3_run(d, oh, ow, o, y8, NULL, w, 0);
}

static void dw3_run_bwd(const dw3_t *d, int oh, int ow, int32_t *y32, const int8_t *w)
{
	dw3_run(d, oh, ow, NULL, NULL, y32, w, 1);
}

int kl_dsp_depthwise_conv_s8(const kl_geom_t *g, const int8_t *x, int32_t x_zp, const int8_t *w,
			     const int32_t *b, const kl_requant_t *rq, int8_t *y, void *scratch)
{
	const int c = g->c, C4 = kl_round4(c), ys = rq->y_shift;
	const int fast = g->kh == 3 && g->kw == 3 && (g->stride == 1 || g->stride == 2) &&
			 rq->act != KL_ACT_NONE && ys >= 1 && ys <= 22 && rq->hi >= 0 &&
			 rq->hi <= 255 && (!rq->cap_saturates || rq->hi >= 1) &&
			 29u * (uint32_t)C4 + 8u <= kl_conv_s8_scratch(g) - 16u;
	if (!fast) {
		return dw_fwd_any(g, x, x_zp, w, b, rq, y, scratch);
	}
	uint32_t *wt = scratch;                                   /* 24 * C4 bytes */
	int32_t *binit = (int32_t *)(void *)(wt + 6 * C4);        /* 4 * C4 */
	int8_t *zrow = (int8_t *)(void *)(binit + C4);           /* C4 */
	const int32_t k = kl_rq_k(ys);
	for (int ch = 0; ch < c; ch++) {
		const int8_t *wc = w + ch;
		const long c3 = 3L * c;
		int32_t sw = 0;
		for (int t = 0; t < 3; t++, wc += c3) {
			sw += wc[0] + wc[c] + wc[2 * c];
		}
		const int32_t bq = kl_rshift_round(b[ch], rq->b_shift);
		if (bq >= (1 << 29) || bq <= -(1 << 29)) {
			return dw_fwd_any(g, x, x_zp, w, b, rq, y, scratch);
		}
		binit[ch] = bq + k - sw * x_zp;
	}
	dw3_table(w, c, 0, wt);
	memset(zrow, (int)(int8_t)x_zp, (size_t)C4);
	const dw3_t d = {x, g->h, g->w, c, g->stride, g->pad_t, g->pad_l, wt, zrow};
	dw3_out_t o = {binit, ys, ((uint32_t)rq->hi & 0xFFu) * 0x01010101u,
		       ((uint32_t)rq->zp & 0xFFu) * 0x01010101u, 0, y};
	dw3_run_fwd(&d, g->ho, g->wo, &o, y, w);
	const uint32_t m = o.mx;
	uint32_t mb = m & 0xFFu;
	mb = (m >> 8 & 0xFFu) > mb ? m >> 8 & 0xFFu : mb;
	mb = (m >> 16 & 0xFFu) > mb ? m >> 16 & 0xFFu : mb;
	mb = (m >> 24) > mb ? m >> 24 : mb;
	return rq->cap_saturates && (int32_t)mb >= rq->hi;
}


/* ---- input gradient, 3x3 stride 2 ----------------------------------------
 * Input pixel (iy, ix) takes kernel row ky where iy + pad_t - ky is even:
 * with e = iy + pad_t even ("A row") ky = 0 from dy row e/2 and ky = 2 from
 * dy row e/2 - 1, with e odd ("B row") ky = 1 from dy row (e - 1)/2; the
 * same for columns. A unit is the 2x2 block of input pixels (A and B row,
 * A and B column) of dy pixel (a, u): it reads dy rows a, a - 1 and columns
 * u - 1, u. Per half (two channels), the dy words of (row, u - 1) and
 * (row, u) are paired (PKHBT / PKHTB, SXTB16) into (d[u-1], d[u]) of each
 * channel; with Wk = (w[k][2], w[k][0]) of that channel and Vk = w[k][1] of
 * both channels:
 *   B row   A col: SMUAD(Pa, W1)             B col: SMULTB / TT(Pa, V1)
 *   A row   A col: SMUAD(Pa, W0) + SMLAD(Pb, W2)
 *           B col: SMULTB(Pa, V0) + SMLATB(Pb, V2)  (TT / TT for channel 1)
 * 18 MACs per half in 34 instructions; units with both rows and both dy
 * rows run as one asm loop over the channel groups (s2_units_full), the
 * border rows' variants as C loops of asm halves. Units whose pixels or dy
 * reads leave
 * the image (and the channels beyond the last multiple of four) go through
 * s2_pixel, a gather over the (at most four) taps of one pixel. */

#define S2_WORDS 18 /* words of the stride-2 table per group of four channels */

/* table [group][half][W1 c0, W1 c1, V1, W0 c0, W0 c1, V0, W2 c0, W2 c1, V2] */
static void s2_table(const int8_t *w, int c, uint32_t *t)
{
	static const int krow[3] = {1, 0, 2};
	const int C4 = kl_round4(c);
	for (int ch = 0; ch < C4; ch += 2) {
		uint32_t *o = t + (ch >> 2) * S2_WORDS + ((ch >> 1) & 1) * 9;
		for (int i = 0; i < 3; i++) {
			const int8_t *r = w + (long)krow[i] * 3 * c;
			int32_t v[2][3];
			for (int j = 0; j < 2; j++) {
				for (int kx = 0; kx < 3; kx++) {
					v[j][kx] = ch + j < c ? r[(long)kx * c + ch + j] : 0;
				}
			}
			o[3 * i] = pair16(v[0][2], v[0][0]);
			o[3 * i + 1] = pair16(v[1][2], v[1][0]);
			o[3 * i + 2] = pair16(v[0][1], v[1][1]);
		}
	}
}

/* dy words of columns u - 1 (at p) and u (at p + c), paired for half H */
#define S2_LD(H)                                                                                  \
	"ldr %[t1], [%[p], %[c]]\n\t"                                                             \
	"ldr %[t0], [%[p]]\n\t" S2_PK##H                                                          \
	"sxtb16 %[t1], %[t0]\n\t"                                                                 \
	"sxtb16 %[t0], %[t0], ror #8\n\t"
#define S2_PK0 "pkhbt %[t0], %[t0], %[t1], lsl #16\n\t"
#define S2_PK1 "pkhtb %[t0], %[t1], %[t0], asr #16\n\t"
/* B row (kernel row 1), stored at q (A col) and q + 4c (B col); q += 8 */
#define S2_B(OW, OV)                                                                              \
	"ldrd %[wa], %[wb], [%[w], #" #OW "]\n\t"                                                 \
	"smuad %[a00], %[t1], %[wa]\n\t"                                                          \
	"smuad %[a01], %[t0], %[wb]\n\t"                                                          \
	"strd %[a00], %[a01], [%[q]], #8\n\t"                                                     \
	"ldr %[wa], [%[w], #" #OV "]\n\t"                                                         \
	"smultb %[a00], %[t1], %[wa]\n\t"                                                         \
	"smultt %[a01], %[t0], %[wa]\n\t"                                                         \
	"add %[wb], %[q], %[c], lsl #2\n\t"                                                       \
	"strd %[a00], %[a01], [%[wb], #-8]\n\t"
/* A row, first dy row: a00 a01 (A col), a10 a11 (B col) set */
#define S2_A_SET(OW, OV)                                                                          \
	"ldrd %[wa], %[wb], [%[w], #" #OW "]\n\t"                                                 \
	"smuad %[a00], %[t1], %[wa]\n\t"                                                          \
	"smuad %[a01], %[t0], %[wb]\n\t"                                                          \
	"ldr %[wa], [%[w], #" #OV "]\n\t"                                                         \
	"smultb %[a10], %[t1], %[wa]\n\t"                                                         \
	"smultt %[a11], %[t0], %[wa]\n\t"
#define S2_A_ADD(OW, OV)                                                                          \
	"ldrd %[wa], %[wb], [%[w], #" #OW "]\n\t"                                                 \
	"smlad %[a00], %[t1], %[wa], %[a00]\n\t"                                                  \
	"smlad %[a01], %[t0], %[wb], %[a01]\n\t"                                                  \
	"ldr %[wa], [%[w], #" #OV "]\n\t"                                                         \
	"smlatb %[a10], %[t1], %[wa], %[a10]\n\t"                                                 \
	"smlatt %[a11], %[t0], %[wa], %[a11]\n\t"
#define S2_ST                                                                                     \
	"strd %[a00], %[a01], [%[q]], #8\n\t"                                                     \
	"add %[wb], %[q], %[c], lsl #2\n\t"                                                       \
	"strd %[a10], %[a11], [%[wb], #-8]\n\t"
#define S2_OPS_(M)                                                                                \
	: [a00] M(a00), [a01] M(a01), [a10] M(a10), [a11] M(a11), [t0] "=&r"(t0),                 \
	  [t1] "=&r"(t1), [wa] "=&r"(wa), [wb] "=&r"(wb), [q] "+&r"(*q)                           \
	: [p] "r"(p), [c] "r"(c), [w] "r"(w)                                                      \
	: "memory"
#define S2_OPS  S2_OPS_("+&r") /* accumulators read */
#define S2_OPSW S2_OPS_("=&r") /* accumulators only written */

/* Row a of a unit, half h: the B row (b) stored through *q, the A row's
 * kernel row 0 (a0) into the accumulators. */
static inline __attribute__((always_inline)) void
s2_row_a(const int8_t *p, int c, const uint32_t *w, int32_t **q, int b, int a0, int h,
	 int32_t *acc)
{
	int32_t a00, a01, a10, a11;
	uint32_t t0, t1, wa, wb;
	if (h == 0) {
		if (b && a0) {
			__asm__ volatile(S2_LD(0) S2_B(0, 8) S2_A_SET(12, 20) S2_OPSW);
		} else if (b) {
			__asm__ volatile(S2_LD(0) S2_B(0, 8) S2_OPSW);
		} else {
			__asm__ volatile(S2_LD(0) S2_A_SET(12, 20) S2_OPSW);
		}
	} else {
		if (b && a0) {
			__asm__ volatile(S2_LD(1) S2_B(36, 44) S2_A_SET(48, 56) S2_OPSW);
		} else if (b) {
			__asm__ volatile(S2_LD(1) S2_B(36, 44) S2_OPSW);
		} else {
			__asm__ volatile(S2_LD(1) S2_A_SET(48, 56) S2_OPSW);
		}
	}
	if (a0) {
		acc[0] = a00;
		acc[1] = a01;
		acc[2] = a10;
		acc[3] = a11;
	}
}

/* Row a - 1 of a unit, half h: the A row's kernel row 2 added (a2; set
 * when there was no kernel row 0, first), then the A row stored. */
static inline __attribute__((always_inline)) void
s2_row_b(const int8_t *p, int c, const uint32_t *w, int32_t **q, int a2, int first, int h,
	 int32_t *acc)
{
	int32_t a00 = 0, a01 = 0, a10 = 0, a11 = 0;
	if (!(a2 && first)) {
		a00 = acc[0];
		a01 = acc[1];
		a10 = acc[2];
		a11 = acc[3];
	}
	uint32_t t0, t1, wa, wb;
	if (h == 0) {
		if (a2 && first) {
			__asm__ volatile(S2_LD(0) S2_A_SET(24, 32) S2_ST S2_OPSW);
		} else if (a2) {
			__asm__ volatile(S2_LD(0) S2_A_ADD(24, 32) S2_ST S2_OPS);
		} else {
			__asm__ volatile(S2_ST S2_OPS);
		}
	} else {
		if (a2 && first) {
			__asm__ volatile(S2_LD(1) S2_A_SET(60, 68) S2_ST S2_OPSW);
		} else if (a2) {
			__asm__ volatile(S2_LD(1) S2_A_ADD(60, 68) S2_ST S2_OPS);
		} else {
			__asm__ volatile(S2_ST S2_OPS);
		}
	}
}

/* The whole unit (both rows, kernel rows 1, 0, 2) as one loop over the
 * channel groups: pa / pb dy rows a / a - 1, qa / qb the A / B row. */
#define S2F_LD(PK, P, POST)                                                                       \
	"ldr %[t1], [%[" P "], %[c]]\n\t"                                                         \
	"ldr %[t0], [%[" P "]]" POST "\n\t" PK "sxtb16 %[t1], %[t0]\n\t"                          \
	"sxtb16 %[t0], %[t0], ror #8\n\t"
#define S2F_B(OW, OV)                                                                             \
	"ldrd %[wa], %[wb], [%[w], #" #OW "]\n\t"                                                 \
	"smuad %[a00], %[t1], %[wa]\n\t"                                                          \
	"smuad %[a01], %[t0], %[wb]\n\t"                                                          \
	"strd %[a00], %[a01], [%[qb]], #8\n\t"                                                    \
	"ldr %[wa], [%[w], #" #OV "]\n\t"                                                         \
	"smultb %[a00], %[t1], %[wa]\n\t"                                                         \
	"smultt %[a01], %[t0], %[wa]\n\t"                                                         \
	"add %[wb], %[qb], %[c], lsl #2\n\t"                                                      \
	"strd %[a00], %[a01], [%[wb], #-8]\n\t"
#define S2F_ST                                                                                    \
	"strd %[a00], %[a01], [%[qa]], #8\n\t"                                                    \
	"add %[wb], %[qa], %[c], lsl #2\n\t"                                                      \
	"strd %[a10], %[a11], [%[wb], #-8]\n\t"
#define S2F_HALF(PK, POST, O0, O1, O2, O3, O4, O5)                                                \
	S2F_LD(PK, "pa", POST) S2F_B(O0, O1) S2_A_SET(O2, O3) S2F_LD(PK, "pb", POST)               \
		S2_A_ADD(O4, O5) S2F_ST

static inline __attribute__((always_inline)) void
s2_units_full(const int8_t *pa, const int8_t *pb, int32_t *qa, int32_t *qb, int n, int c, int G,
	      const uint32_t *wt)
{
	for (int u = 0; u < n; u++) {
		const int8_t *p0 = pa, *p1 = pb;
		int32_t *q0 = qa, *q1 = qb;
		const uint32_t *w = wt;
		const int8_t *end = pa + 4 * G;
		int32_t a00, a01, a10, a11;
		uint32_t t0, t1, wa, wb;
		__asm__ volatile("1:\n\t" S2F_HALF(S2_PK0, "", 0, 8, 12, 20, 24, 32)
					 S2F_HALF(S2_PK1, ", #4", 36, 44, 48, 56, 60, 68)
					 "add %[w], %[w], #72\n\t"
					 "ldr %[t0], %[end]\n\t"
					 "cmp %[pa], %[t0]\n\t"
					 "bne 1b\n\t"
				 : [a00] "=&r"(a00), [a01] "=&r"(a01), [a10] "=&r"(a10),
				   [a11] "=&r"(a11), [t0] "=&r"(t0), [t1] "=&r"(t1), [wa] "=&r"(wa),
				   [wb] "=&r"(wb), [pa] "+&r"(p0), [pb] "+&r"(p1), [qa] "+&r"(q0),
				   [qb] "+&r"(q1), [w] "+&r"(w)
				 : [c] "r"(c), [end] "m"(end)
				 : "cc", "memory");
		pa += c;
		pb += c;
		qa += 2 * c;
		qb += 2 * c;
	}
}

/* The units of one unit row over the vector channels: rows pa (dy row a,
 * column u0 - 1) and pb (row a - 1), outputs qa (A row, A col of unit u0)
 * and qb (B row); B: B row written, A0 / A2: A row from dy row a / a - 1. */
static inline __attribute__((always_inline)) void
s2_units(const int8_t *pa, const int8_t *pb, int32_t *qa, int32_t *qb, int n, int c, int G,
	 const uint32_t *wt, int B, int A0, int A2)
{
	for (int u = 0; u < n; u++) {
		const int8_t *p0 = pa, *p1 = pb;
		int32_t *q0 = qa, *q1 = qb;
		const uint32_t *w = wt;
		for (int k = 0; k < G; k++) {
			for (int h = 0; h < 2; h++) {
				int32_t acc[4];
				if (B || A0) {
					s2_row_a(p0, c, w, &q1, B, A0, h, acc);
				}
				if (A0 || A2) {
					s2_row_b(p1, c, w, &q0, A2, !A0, h, acc);
				}
			}
			p0 += 4;
			p1 += 4;
			w += S2_WORDS;
		}
		pa += c;
		pb += c;
		qa += 2 * c;
		qb += 2 * c;
	}
}

/* int32 sums of n taps (dy pixel dp[k], widened weights wp[k] at channel 0)
 * over the vector channels */
static inline __attribute__((always_inline)) void
gather_n(const int8_t *const *dp, const uint32_t *const *wp, int n, int cv, int32_t *out)
{
	const int8_t *d0 = dp[0], *d1 = n > 1 ? dp[1] : NULL;
	const int8_t *d2 = n > 2 ? dp[2] : NULL, *d3 = n > 3 ? dp[3] : NULL;
	const uint32_t *w0 = wp[0], *w1 = n > 1 ? wp[1] : NULL;
	const uint32_t *w2 = n > 2 ? wp[2] : NULL, *w3 = n > 3 ? wp[3] : NULL;
	for (int ch = 0; ch < cv; ch += 4) {
		int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
		DW_MAC4(kl_read_s8x4(d0 + ch), w0);
		w0 += 2;
		if (n > 1) {
			DW_MAC4(kl_read_s8x4(d1 + ch), w1);
			w1 += 2;
		}
		if (n > 2) {
			DW_MAC4(kl_read_s8x4(d2 + ch), w2);
			w2 += 2;
		}
		if (n > 3) {
			DW_MAC4(kl_read_s8x4(d3 + ch), w3);
			w3 += 2;
		}
		out[ch] = a0;
		out[ch + 1] = a1;
		out[ch + 2] = a2;
		out[ch + 3] = a3;
	}
}

/* One input pixel (iy, ix) at stride 2, channels from ch0 (0 or cv): the
 * gather over its (at most four) taps, wx = widen_weights. */
static void s2_pixel(const kl_geom_t *g, const int8_t *w, const uint32_t *wx, const int8_t *dy,
		     int iy, int ix, int ch0, int32_t *out)
{
	const int c = g->c, cv = c & ~3, G = kl_round4(c) >> 2;
	int ky[2], oy[2], kx[2], ox[2], ny = 0, nx = 0;
	const int ey = iy + g->pad_t, ex = ix + g->pad_l;
	for (int k = (ey & 1); k < 3; k += 2) {
		const int r = (ey - k) >> 1;
		if (r >= 0 && r < g->ho) {
			ky[ny] = k;
			oy[ny++] = r;
		}
	}
	for (int k = (ex & 1); k < 3; k += 2) {
		const int r = (ex - k) >> 1;
		if (r >= 0 && r < g->wo) {
			kx[nx] = k;
			ox[nx++] = r;
		}
	}
	const int8_t *dp[4];
	const uint32_t *wp[4];
	int tk[4], n = 0;
	for (int i = 0; i < ny; i++) {
		for (int j = 0; j < nx; j++) {
			tk[n] = ky[i] * 3 + kx[j];
			dp[n] = dy + ((long)oy[i] * g->wo + ox[j]) * c;
			wp[n] = wx + (long)tk[n] * G * 2;
			n++;
		}
	}
	if (ch0 == 0) {
		if (n == 1) {
			gather_n(dp, wp, 1, cv, out);
		} else if (n == 2) {
			gather_n(dp, wp, 2, cv, out);
		} else if (n == 4) {
			gather_n(dp, wp, 4, cv, out);
		} else {
			for (int ch = 0; ch < cv; ch++) {
				out[ch] = 0;
			}
		}
	}
	for (int ch = cv; ch < c; ch++) {
		int32_t a = 0;
		for (int k = 0; k < n; k++) {
			a += (int32_t)w[(long)tk[k] * c + ch] * dp[k][ch];
		}
		out[ch] = a;
	}
}

static void dw3_bwd_s2(const kl_geom_t *g, const int8_t *w, const int8_t *dy, int32_t *acc,
		       void *scratch)
{
	const int c = g->c, C4 = kl_round4(c), G = C4 >> 2, cv = c & ~3, Gv = cv >> 2;
	const int pt = g->pad_t, pl = g->pad_l, H = g->h, W = g->w;
	uint32_t *wt = scratch;                  /* 18 * C4 bytes */
	uint32_t *wx = wt + (long)G * S2_WORDS; /* 18 * C4 bytes */
	s2_table(w, c, wt);
	widen_weights(w, 9, c, wx);
	/* units u in [u0, u1): dy columns u - 1, u and pixel columns 2u - pl,
	 * 2u + 1 - pl inside */
	int u0 = (pl + 1) >> 1;
	u0 = u0 < 1 ? 1 : u0;
	int u1 = (W - 2 + pl) >= 0 ? ((W - 2 + pl) >> 1) + 1 : 0;
	u1 = u1 < g->wo ? u1 : g->wo;
	const int nu = u1 > u0 && Gv > 0 ? u1 - u0 : 0;
	const int xc0 = nu ? 2 * u0 - pl : 0, xc1 = nu ? 2 * u1 - pl : 0;
	const long rs = (long)g->wo * c;
	for (int iya = -(pt & 1); iya < H; iya += 2) {
		const int a = (iya + pt) >> 1;
		const int wA = iya >= 0, wB = iya + 1 < H;
		const int ra = a < g->ho, rb = a >= 1 && a - 1 < g->ho;
		const int B = wB && ra, A0 = wA && ra, A2 = wA && rb;
		int32_t *qa = acc + ((long)iya * W + xc0) * c;
		int32_t *qb = qa + (long)W * c;
		const int8_t *pa = dy + (long)a * rs + (long)(u0 - 1) * c;
		const int8_t *pb = pa - rs;
		if (nu) {
			if (B && A0 && A2) {
				s2_units_full(pa, pb, qa, qb, nu, c, Gv, wt);
			} else if (B && A0) {
				s2_units(pa, pb, qa, qb, nu, c, Gv, wt, 1, 1, 0);
			} else if (B) {
				s2_units(pa, pb, qa, qb, nu, c, Gv, wt, 1, 0, 0);
			} else if (A0 && A2) {
				s2_units(pa, pb, qa, qb, nu, c, Gv, wt, 0, 1, 1);
			} else if (A0) {
				s2_units(pa, pb, qa, qb, nu, c, Gv, wt, 0, 1, 0);
			} else if (A2) {
				s2_units(pa, pb, qa, qb, nu, c, Gv, wt, 0, 0, 1);
			}
		}
		for (int r = 0; r < 2; r++) {
			const int iy = iya + r;
			if (r == 0 ? !wA : !wB) {
				continue;
			}
			const int done = nu && (r == 0 ? A0 || A2 : B);
			int32_t *orow = acc + (long)iy * W * c;
			for (int ix = 0; ix < W; ix++) {
				const int in = done && ix >= xc0 && ix < xc1;
				if (!in || cv < c) {
					s2_pixel(g, w, wx, dy, iy, ix, in ? cv : 0, orow + (long)ix * c);
				}
			}
		}
	}
}

void kl_dsp_depthwise_conv_backward_input_s8(const kl_geom_t *g, const int8_t *w,
					     const int8_t *dy, int32_t *acc, void *scratch)
{
	const int c = g->c, C4 = kl_round4(c);
	if (g->kh == 3 && g->kw == 3 && g->stride == 2 && g->pad_t >= 0 && g->pad_l >= 0 &&
	    36u * (uint32_t)C4 <= kl_conv_s8_scratch(g) - 16u) {
		dw3_bwd_s2(g, w, dy, acc, scratch);
		return;
	}
	if (!(g->kh == 3 && g->kw == 3 && g->stride == 1 &&
	      25u * (uint32_t)C4 <= kl_conv_s8_scratch(g) - 16u)) {
		dw_bwd_any(g, w, dy, acc, scratch);
		return;
	}
	uint32_t *wt = scratch;                   /* 24 * C4 bytes */
	int8_t *zrow = (int8_t *)(void *)(wt + 6 * C4); /* C4 */
	dw3_table(w, c, 1, wt);
	memset(zrow, 0, (size_t)C4);
	const dw3_t d = {dy, g->ho, g->wo, c, 1, 2 - g->pad_t, 2 - g->pad_l, wt, zrow};
	dw3_run_bwd(&d, g->h, g->w, acc, w);
}
#else
typedef int kl_dsp_depthwise_conv_s8_unused;
#endif
