/* Convolution (groups = 1), int8, dsp backend: forward, input gradient and
 * weight gradient as GEMMs with SMLAD, bit-identical to src/kernels/ref.
 *
 * forward      four output pixels x one output channel per step (fwd4_*, a
 *              naked assembly channel loop): the pixels' im2col rows are
 *              packed once into int16 words, even lanes then odd lanes of
 *              the four pixels per group of four inputs, to match SXTB16 /
 *              SXTB16 ROR 8 of a weight word (1x1: from the input in place,
 *              four LDRs (+ four EORs: zero point -128) + eight SXTB16 /
 *              UXTB16 + one STM per group, pack4_*; input channels % 4 ==
 *              0: whole kernel rows of the four pixels the same way where
 *              they lie inside the image, else tap by tap per pixel with the
 *              padding as words, pack_im2col; else through a byte im2col
 *              row); per group one weight LDR, two SXTB16, two LDMs, eight
 *              SMLADs. The accumulator starts at the bias folded with the
 *              rounding and zero-point terms (the input zero point too, by
 *              the weight row sums, where pixels outnumber 2 co; not -128
 *              for 1x1), so an output is one SSAT with the shift built in:
 *              one output block per shift, entered by TBH, with the stores
 *              and the channel loop test (fwd_fast; the saturation flag is
 *              read from the outputs).
 *              Other shapes and shifts: two pixels x two channels (fwd_pairs)
 *              through the kl_rqf output stage, the rows centred and
 *              interleaved per group of four as pixel 0 even lanes, pixel 1
 *              even, pixel 0 odd, pixel 1 odd (pack_pair, dot2x2).
 * input grad   gathered per input pixel: the weights of pairs of input
 *              channels are widened to int16 into the scratch (as many pairs
 *              as fit, per tile), ordered by column class (kx mod stride),
 *              row class (ky mod stride), ky, kx descending, so the taps of
 *              one kernel row that reach a pixel meet contiguous dy columns.
 *              Per input row and column class the reaching kernel rows are
 *              found once; a run of pixel pairs (p, p + stride) with every
 *              tap in range then takes per pair and channel pair one
 *              assembly block: per kernel row one dot over its dy columns
 *              (34 instructions per 32 MACs, pixel q one column on), the
 *              kernel rows' weights contiguous, sums stored once (no
 *              clearing or col2im). Edge pairs go tap by tap with a zero dy
 *              row for a missing column. 1x1 stride-1 convolutions,
 *              co % 4 != 0, kernels over 25 taps and tiles too small take
 *              the older way: W transposed into the scratch, the 2x2 GEMM on
 *              dy, columns added back (col2im) or stored.
 * weight grad  pixels are paired into int16x2 words (dy and the im2col rows)
 *              so one SMLAD accumulates two pixels; a chunk of eight pixels is
 *              accumulated per 2x2 block of gw, two rows of gw at a time in
 *              assembly (LDRD / STRD of the sums, 30 instructions per 32
 *              MACs). The input is used raw (padding = x_zp) and
 *              gw -= x_zp * gb at the end.
 */
#include "kilolearn/kl_kernels.h"

#if KL_KERNELS_DSP
#include "kl_dsp_conv.h"

/* Two rows s0, s1 of n bytes, centred by zp, into the interleaved int16
 * layout described above; a last partial group holds the n % 4 values of
 * s0 (four int16, in order, zero-filled) then those of s1. */
static void pack_pair(const int8_t *s0, const int8_t *s1, int32_t zp, uint32_t *col, int n)
{
	int j = 0;
	if (zp == -128) { /* x + 128 = x ^ 0x80 read unsigned */
		for (; j + 4 <= n; j += 4) {
			const uint32_t v0 = kl_read_s8x4(s0 + j) ^ 0x80808080u;
			const uint32_t v1 = kl_read_s8x4(s1 + j) ^ 0x80808080u;
			col[0] = __uxtb16(v0);
			col[1] = __uxtb16(v1);
			col[2] = kl_uxtb16_ror8(v0);
			col[3] = kl_uxtb16_ror8(v1);
			col += 4;
		}
	} else if (zp == 0) {
		for (; j + 4 <= n; j += 4) {
			const uint32_t v0 = kl_read_s8x4(s0 + j);
			const uint32_t v1 = kl_read_s8x4(s1 + j);
			col[0] = kl_sxtb16(v0);
			col[1] = kl_sxtb16(v1);
			col[2] = kl_sxtb16_ror8(v0);
			col[3] = kl_sxtb16_ror8(v1);
			col += 4;
		}
	} else {
		const uint32_t zz = ((uint32_t)zp & 0xFFFFu) * 0x10001u;
		for (; j + 4 <= n; j += 4) {
			const uint32_t v0 = kl_read_s8x4(s0 + j);
			const uint32_t v1 = kl_read_s8x4(s1 + j);
			col[0] = (uint32_t)__ssub16((int16x2_t)kl_sxtb16(v0), (int16x2_t)zz);
			col[1] = (uint32_t)__ssub16((int16x2_t)kl_sxtb16(v1), (int16x2_t)zz);
			col[2] = (uint32_t)__ssub16((int16x2_t)kl_sxtb16_ror8(v0), (int16x2_t)zz);
			col[3] = (uint32_t)__ssub16((int16x2_t)kl_sxtb16_ror8(v1), (int16x2_t)zz);
			col += 4;
		}
	}
	if (j < n) {
		int16_t *t = (int16_t *)(void *)col;
		for (int i = 0; i < 4; i++) {
			t[i] = (int16_t)(j + i < n ? s0[j + i] - zp : 0);
			t[4 + i] = (int16_t)(j + i < n ? s1[j + i] - zp : 0);
		}
	}
}

/* One step of four inputs: two weight words (rows 0, 1), the even lanes of
 * both pixels (one LDRD), the odd lanes (another), eight SMLADs. */
#define STEP4                                                                                     \
	"ldr %[w0], [%[r0]], #4\n\t"                                                           \
	"ldr %[w1], [%[r1]], #4\n\t"                                                           \
	"ldrd %[c0], %[c1], [%[cp]], #8\n\t"                                                   \
	"sxtb16 %[we], %[w0]\n\t"                                                              \
	"smlad %[a00], %[we], %[c0], %[a00]\n\t"                                               \
	"smlad %[a01], %[we], %[c1], %[a01]\n\t"                                               \
	"sxtb16 %[we], %[w1]\n\t"                                                              \
	"smlad %[a10], %[we], %[c0], %[a10]\n\t"                                               \
	"smlad %[a11], %[we], %[c1], %[a11]\n\t"                                               \
	"ldrd %[c0], %[c1], [%[cp]], #8\n\t"                                                   \
	"sxtb16 %[we], %[w0], ror #8\n\t"                                                      \
	"smlad %[a00], %[we], %[c0], %[a00]\n\t"                                               \
	"smlad %[a01], %[we], %[c1], %[a01]\n\t"                                               \
	"sxtb16 %[we], %[w1], ror #8\n\t"                                                      \
	"smlad %[a10], %[we], %[c0], %[a10]\n\t"                                               \
	"smlad %[a11], %[we], %[c1], %[a11]\n\t"

/* d = (r0 . col0, r0 . col1, r1 . col0, r1 . col1) over n, col from pack_pair */
__attribute__((always_inline)) static inline void dot2x2(const int8_t *r0, const int8_t *r1,
							 const uint32_t *col, int n, int32_t *d)
{
	int32_t a00 = 0, a01 = 0, a10 = 0, a11 = 0;
	const uint32_t *cp = col;
	const int8_t *p0 = r0, *p1 = r1;
	int n8 = n >> 3;
	if (n8 > 0) {
		uint32_t w0, w1, we, c0, c1;
		__asm__("1:\n\t" STEP4 STEP4 "subs %[n8], %[n8], #1\n\t"
			"bne 1b\n\t"
			: [a00] "+r"(a00), [a01] "+r"(a01), [a10] "+r"(a10), [a11] "+r"(a11),
			  [r0] "+r"(p0), [r1] "+r"(p1), [cp] "+r"(cp), [n8] "+r"(n8),
			  [w0] "=&r"(w0), [w1] "=&r"(w1), [we] "=&r"(we), [c0] "=&r"(c0),
			  [c1] "=&r"(c1)
			:
			: "cc", "memory");
	}
	int j = n & ~7;
	if (n & 4) {
		uint32_t w0, w1, we, c0, c1;
		__asm__(STEP4
			: [a00] "+r"(a00), [a01] "+r"(a01), [a10] "+r"(a10), [a11] "+r"(a11),
			  [r0] "+r"(p0), [r1] "+r"(p1), [cp] "+r"(cp), [w0] "=&r"(w0),
			  [w1] "=&r"(w1), [we] "=&r"(we), [c0] "=&r"(c0), [c1] "=&r"(c1)
			:
			: "memory");
		j += 4;
	}
	if (j < n) {
		const int16_t *t = (const int16_t *)(const void *)cp;
		for (int i = 0; j + i < n; i++) {
			a00 += (int32_t)r0[j + i] * t[i];
			a01 += (int32_t)r0[j + i] * t[4 + i];
			a10 += (int32_t)r1[j + i] * t[i];
			a11 += (int32_t)r1[j + i] * t[4 + i];
		}
	}
	d[0] = a00;
	d[1] = a01;
	d[2] = a10;
	d[3] = a11;
}

/* input offset of output pixel p for a 1x1 kernel without padding, or -1 */
static int direct_1x1(const kl_geom_t *g)
{
	return g->kh == 1 && g->kw == 1 && g->pad_t == 0 && g->pad_l == 0 &&
	       (g->ho - 1) * g->stride < g->h && (g->wo - 1) * g->stride < g->w;
}

static inline const int8_t *pixel_1x1(const kl_geom_t *g, const int8_t *x, int p)
{
	const int oy = p / g->wo, ox = p - oy * g->wo;
	return x + ((long)oy * g->stride * g->w + (long)ox * g->stride) * g->c;
}

/* ---- forward ------------------------------------------------------------ */

/* Pixels p0.. (in pairs) through the 2x2 GEMM of dot2x2 and the kl_rqf
 * output stage: the general path, and the last npix % 4 pixels of the fast
 * one. Returns the saturation flag. */
static int fwd_pairs(const kl_geom_t *g, const int8_t *x, int32_t x_zp, const int8_t *w,
		     const int32_t *b, const kl_requant_t *rq, int8_t *y, void *scratch, int p0)
{
	const int K = g->kh * g->kw * g->c, K4 = kl_round4(K);
	const int co = g->co;
	uint32_t *col = scratch;
	int8_t *b0 = (int8_t *)scratch + 4 * K4;
	int8_t *b1 = b0 + K4;
	int32_t *bq = (int32_t *)(void *)(b1 + K4);
	kl_rqf_t f;
	kl_rqf_init(&f, rq, b, bq, co);
	const int direct = direct_1x1(g);
	const int npix = g->ho * g->wo;
	for (int p = p0; p < npix; p += 2) {
		const int q = p + 1 < npix ? p + 1 : p;
		const int8_t *s0, *s1;
		if (direct) {
			s0 = pixel_1x1(g, x, p);
			s1 = pixel_1x1(g, x, q);
		} else {
			kl_im2col_full_s8(g, x, x_zp, p / g->wo, p % g->wo, b0);
			kl_im2col_full_s8(g, x, x_zp, q / g->wo, q % g->wo, b1);
			s0 = b0;
			s1 = b1;
		}
		pack_pair(s0, s1, x_zp, col, K);
		int8_t *y0 = y + (long)p * co, *y1 = y + (long)q * co;
		if (f.fast) {
			int i = 0;
			for (; i + 2 <= co; i += 2) {
				const int8_t *r0 = w + (long)i * K;
				int32_t d[4];
				dot2x2(r0, r0 + K, col, K, d);
				const int32_t bq0 = bq[i], bq1 = bq[i + 1];
				y0[i] = kl_rqf_one(&f, d[0], bq0);
				y1[i] = kl_rqf_one(&f, d[1], bq0);
				y0[i + 1] = kl_rqf_one(&f, d[2], bq1);
				y1[i + 1] = kl_rqf_one(&f, d[3], bq1);
			}
			if (i < co) {
				const int8_t *r0 = w + (long)i * K;
				int32_t d[4];
				dot2x2(r0, r0, col, K, d);
				y0[i] = kl_rqf_one(&f, d[0], bq[i]);
				y1[i] = kl_rqf_one(&f, d[1], bq[i]);
			}
		} else {
			for (int i = 0; i < co; i += 2) {
				const int8_t *r0 = w + (long)i * K;
				const int8_t *r1 = i + 1 < co ? r0 + K : r0;
				int32_t d[4];
				dot2x2(r0, r1, col, K, d);
				y0[i] = kl_rqf_any(&f, d[0], bq[i]);
				y1[i] = kl_rqf_any(&f, d[1], bq[i]);
				if (i + 1 < co) {
					y0[i + 1] = kl_rqf_any(&f, d[2], bq[i + 1]);
					y1[i + 1] = kl_rqf_any(&f, d[3], bq[i + 1]);
				}
			}
		}
	}
	return kl_rqf_sat(&f);
}

/* Four pixels x one output channel per step (fwd4_*): per four inputs one
 * weight LDR, two SXTB16, two LDMs of the four pixels' int16 words and eight
 * SMLADs (13 instructions per 16 MACs). The packed column holds, per group
 * of four inputs, the even lanes of pixels 0..3 then their odd lanes. The
 * accumulator starts at the folded bias bf = round(b >> b_shift) + k +
 * (zp << y_shift) (kl_rq_k; exact: fwd_fast checks that no sum can leave
 * int32), so an output is SSAT(acc, 8, ASR #y_shift): one block per shift
 * (1..22, entered by TBH) holds the four SSATs with the shift built in, the
 * four stores and the channel loop's test. Mode A (ReLU with zero point
 * -128) goes there directly; mode N (no activation) first rounds negative
 * sums down (acc -= 2 where acc < thr, kl_rq_m); mode G first clamps acc to
 * [lo << ys, ((hi + 1) << ys) - 1], which is the clamp of the output to
 * [lo, hi]. The channel loop is one naked function; the frame below is
 * copied onto its stack and reloaded per channel by one LDM. The saturation
 * flag comes from the outputs (sat_scan). */
typedef struct {
	int32_t c1, c2, c3; /* co - 1, 2 co - 1, 3 co - 1 (store offsets) */
	int8_t *yend;       /* y + co */
	int32_t sidx;       /* y_shift - 1 */
	uint32_t bqa;       /* address of bf minus 4 x address of y */
	const uint32_t *col;
	const uint32_t *cend; /* col + 2 K */
	int32_t thr, lo, hi;  /* mode N: thr; mode G: clamp of acc */
	uint32_t entry;       /* 0: set by the function on its first call */
	const int8_t *w;
	int8_t *y; /* output of pixel 0, channel 0 */
	int32_t K; /* multiple of 4 */
} fwd4_t;

/* group of four inputs (52 bytes: every instruction 32-bit) */
#define FWD4_STEP(A0, A1, A2, A3)                                                                 \
	"ldr.w r4, [r11], #4\n\t"                                                                 \
	"ldm.w r10!, {r0-r3}\n\t"                                                                 \
	"sxtb16 r5, r4\n\t"                                                                        \
	"smlad r6, r5, r0, " A0 "\n\t"                                                             \
	"smlad r7, r5, r1, " A1 "\n\t"                                                             \
	"smlad r8, r5, r2, " A2 "\n\t"                                                             \
	"smlad r9, r5, r3, " A3 "\n\t"                                                             \
	"ldm.w r10!, {r0-r3}\n\t"                                                                 \
	"sxtb16 r4, r4, ror #8\n\t"                                                                \
	"smlad r6, r4, r0, r6\n\t"                                                                 \
	"smlad r7, r4, r1, r7\n\t"                                                                 \
	"smlad r8, r4, r2, r8\n\t"                                                                 \
	"smlad r9, r4, r3, r9\n\t"

#define FWD4_PRE_A ""

#define FWD4_RD(A)                                                                                \
	"cmp " A ", r5\n\t"                                                                        \
	"it lt\n\t"                                                                                \
	"sublt " A ", " A ", #2\n\t"
#define FWD4_PRE_N "ldr r5, [sp, #32]\n\t" FWD4_RD("r6") FWD4_RD("r7") FWD4_RD("r8") FWD4_RD("r9")

#define FWD4_CL(A)                                                                                \
	"cmp " A ", r0\n\t"                                                                        \
	"it lt\n\t"                                                                                \
	"movlt " A ", r0\n\t"                                                                      \
	"cmp " A ", r5\n\t"                                                                        \
	"it gt\n\t"                                                                                \
	"movgt " A ", r5\n\t"
#define FWD4_PRE_G "ldrd r0, r5, [sp, #36]\n\t" FWD4_CL("r6") FWD4_CL("r7") FWD4_CL("r8") FWD4_CL("r9")

#define FWD4_SHIFTS "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22"

/* The remaining K / 4 - 1 groups after the first run as four-group passes
 * entered part way (the entry is computed once per call). After the sums:
 * r0-r2 store offsets, r3 = y + co, r4 = shift - 1, r5 = bqa, r10 = col,
 * r12 = col end (one LDM), then the shift's output block. */
#define FWD4_FUNC(name, PRE)                                                                      \
	__attribute__((naked, noinline)) static void name(fwd4_t *a __attribute__((unused)))       \
	{                                                                                         \
		__asm__ volatile(                                                                 \
			"push {r4-r11, lr}\n\t"                                                   \
			"sub sp, sp, #60\n\t"                                                     \
			"ldm r0!, {r1-r8}\n\t"                                                    \
			"stm sp, {r1-r8}\n\t"                                                     \
			"ldm r0, {r1-r7}\n\t"                                                     \
			"add r12, sp, #32\n\t"                                                    \
			"stm r12, {r1-r7}\n\t"                                                    \
			"mov r11, r5\n\t"                                                         \
			"mov lr, r6\n\t"                                                          \
			"cbnz r4, 9f\n\t"                                                         \
			"lsrs r5, r7, #2\n\t"                                                     \
			"subs r5, r5, #1\n\t"                                                     \
			"beq 5f\n\t"                                                              \
			"negs r5, r5\n\t"                                                         \
			"and r5, r5, #3\n\t"                                                      \
			"adr.w r6, 3f\n\t"                                                        \
			"movs r7, #52\n\t"                                                        \
			"mla r6, r5, r7, r6\n\t"                                                  \
			"b 6f\n\t"                                                                \
			"5:\n\t"                                                                  \
			"adr.w r6, 4f\n\t"                                                        \
			"6:\n\t"                                                                  \
			"orr r6, r6, #1\n\t"                                                      \
			"str r6, [sp, #44]\n\t"                                                   \
			"str r6, [r0, #12]\n\t"                                                   \
			"9:\n\t"                                                                  \
			"ldm sp, {r0-r5, r10, r12}\n\t"                                           \
			"1:\n\t"                                                                  \
			"ldr r9, [r5, lr, lsl #2]\n\t" FWD4_STEP("r9", "r9", "r9", "r9")          \
			"ldr pc, [sp, #44]\n\t"                                                   \
			"3:\n\t" FWD4_STEP("r6", "r7", "r8", "r9") FWD4_STEP("r6", "r7", "r8", "r9") \
				FWD4_STEP("r6", "r7", "r8", "r9")                                 \
					FWD4_STEP("r6", "r7", "r8", "r9")                         \
			"cmp r10, r12\n\t"                                                        \
			"bne 3b\n\t"                                                              \
			"4:\n\t" PRE "ldm sp, {r0-r5, r10, r12}\n\t"                              \
			"tbh [pc, r4, lsl #1]\n\t"                                                \
			"7:\n\t"                                                                  \
			".irp s, " FWD4_SHIFTS "\n\t"                                             \
			".hword (.L" #name "_b\\s - 7b) / 2\n\t"                                  \
			".endr\n\t"                                                               \
			".irp s, " FWD4_SHIFTS "\n"                                               \
			".L" #name "_b\\s:\n\t"                                                      \
			"ssat r6, #8, r6, asr #\\s\n\t"                                           \
			"ssat r7, #8, r7, asr #\\s\n\t"                                           \
			"ssat r8, #8, r8, asr #\\s\n\t"                                           \
			"ssat r9, #8, r9, asr #\\s\n\t"                                           \
			"strb r6, [lr], #1\n\t"                                                   \
			"strb r7, [lr, r0]\n\t"                                                   \
			"strb r8, [lr, r1]\n\t"                                                   \
			"strb r9, [lr, r2]\n\t"                                                   \
			"cmp lr, r3\n\t"                                                          \
			"bne.w 1b\n\t"                                                            \
			"b.w 8f\n\t"                                                              \
			".endr\n\t"                                                               \
			"8:\n\t"                                                                  \
			"add sp, sp, #60\n\t"                                                     \
			"pop {r4-r11, pc}\n\t");                                                  \
	}

FWD4_FUNC(fwd4_a, FWD4_PRE_A)
FWD4_FUNC(fwd4_n, FWD4_PRE_N)
FWD4_FUNC(fwd4_g, FWD4_PRE_G)

/* four pixels' n bytes (n % 4 == 0) into the four-pixel column: centred
 * for zero point -128 (x + 128 = x ^ 0x80 read unsigned) or by zc != 0,
 * otherwise sign-extended as they are (a zero point folded into the bias) */
static void pack_px4(const int8_t *s0, const int8_t *s1, const int8_t *s2, const int8_t *s3,
		     uint32_t *col, int n, int flip, int32_t zc)
{
	if (zc != 0) { /* centred by zc */
		const uint32_t zz = ((uint32_t)zc & 0xFFFFu) * 0x10001u;
		const int8_t *const src[4] = {s0, s1, s2, s3};
		for (int i = 0; i < 4; i++) {
			uint32_t *c = col + i;
			for (int j = 0; j < n; j += 4) {
				const uint32_t v = kl_read_s8x4(src[i] + j);
				c[0] = (uint32_t)__ssub16((int16x2_t)kl_sxtb16(v), (int16x2_t)zz);
				c[4] = (uint32_t)__ssub16((int16x2_t)kl_sxtb16_ror8(v), (int16x2_t)zz);
				c += 8;
			}
		}
		return;
	}
	if (flip) {
		for (int j = 0; j < n; j += 4) {
			const uint32_t v0 = kl_read_s8x4(s0 + j) ^ 0x80808080u;
			const uint32_t v1 = kl_read_s8x4(s1 + j) ^ 0x80808080u;
			const uint32_t v2 = kl_read_s8x4(s2 + j) ^ 0x80808080u;
			const uint32_t v3 = kl_read_s8x4(s3 + j) ^ 0x80808080u;
			col[0] = __uxtb16(v0);
			col[1] = __uxtb16(v1);
			col[2] = __uxtb16(v2);
			col[3] = __uxtb16(v3);
			col[4] = kl_uxtb16_ror8(v0);
			col[5] = kl_uxtb16_ror8(v1);
			col[6] = kl_uxtb16_ror8(v2);
			col[7] = kl_uxtb16_ror8(v3);
			col += 8;
		}
		return;
	}
	for (int j = 0; j < n; j += 4) {
		const uint32_t v0 = kl_read_s8x4(s0 + j), v1 = kl_read_s8x4(s1 + j);
		const uint32_t v2 = kl_read_s8x4(s2 + j), v3 = kl_read_s8x4(s3 + j);
		col[0] = kl_sxtb16(v0);
		col[1] = kl_sxtb16(v1);
		col[2] = kl_sxtb16(v2);
		col[3] = kl_sxtb16(v3);
		col[4] = kl_sxtb16_ror8(v0);
		col[5] = kl_sxtb16_ror8(v1);
		col[6] = kl_sxtb16_ror8(v2);
		col[7] = kl_sxtb16_ror8(v3);
		col += 8;
	}
}

/* four pixels' n bytes (n % 4 == 0, n > 0) into the four-pixel column,
 * sign-extended (pack4_raw) or + 128 (pack4_flip: x ^ 0x80 read
 * unsigned): per group four LDRs, (four EORs,) eight SXTB16 / UXTB16, one
 * STM (sp: the four pixels' rows) */
#define PACK4_FUNC(name, EOR, XT)                                                                 \
	__attribute__((naked, noinline)) static void name(                                        \
		const int8_t *const *sp __attribute__((unused)),                                  \
		uint32_t *col __attribute__((unused)), int n __attribute__((unused)))             \
	{                                                                                         \
		__asm__ volatile("push {r4-r11, lr}\n\t"                                          \
				 "ldm r0, {r10, r11, r12, lr}\n\t"                                \
				 "mov r0, r1\n\t"                                                 \
				 "add r1, r1, r2, lsl #3\n\t"                                     \
				 "1:\n\t"                                                         \
				 "ldr r6, [r10], #4\n\t"                                          \
				 "ldr r7, [r11], #4\n\t"                                          \
				 "ldr r8, [r12], #4\n\t"                                          \
				 "ldr r9, [lr], #4\n\t" EOR XT " r2, r6\n\t" XT " r3, r7\n\t"     \
				 XT " r4, r8\n\t" XT " r5, r9\n\t" XT " r6, r6, ror #8\n\t"       \
				 XT " r7, r7, ror #8\n\t" XT " r8, r8, ror #8\n\t"                \
				 XT " r9, r9, ror #8\n\t"                                         \
				 "stm r0!, {r2-r9}\n\t"                                           \
				 "cmp r0, r1\n\t"                                                 \
				 "bne 1b\n\t"                                                     \
				 "pop {r4-r11, pc}\n\t");                                         \
	}

PACK4_FUNC(pack4_raw, "", "sxtb16")
PACK4_FUNC(pack4_flip,
	   "eor r6, r6, #0x80808080\n\teor r7, r7, #0x80808080\n\t"
	   "eor r8, r8, #0x80808080\n\teor r9, r9, #0x80808080\n\t",
	   "uxtb16")

/* one pixel's n bytes (n % 4 == 0) into its lane of the four-pixel column
 * (c[0] even lanes, c[4] odd lanes, per group of four): x + 128 for
 * zero point -128 (flip: x ^ 0x80 read unsigned), x - zc (zz = zc in both
 * halves) for zc != 0, else sign-extended as they are */
static void pack_px(const int8_t *s, uint32_t *c, int n, int flip, uint32_t zz)
{
	const int8_t *e = s + n;
	if (flip) {
		for (; s != e; s += 4, c += 8) {
			const uint32_t v = kl_read_s8x4(s) ^ 0x80808080u;
			c[0] = __uxtb16(v);
			c[4] = kl_uxtb16_ror8(v);
		}
	} else if (zz != 0u) {
		for (; s != e; s += 4, c += 8) {
			const uint32_t v = kl_read_s8x4(s);
			c[0] = (uint32_t)__ssub16((int16x2_t)kl_sxtb16(v), (int16x2_t)zz);
			c[4] = (uint32_t)__ssub16((int16x2_t)kl_sxtb16_ror8(v), (int16x2_t)zz);
		}
	} else {
		for (; s != e; s += 4, c += 8) {
			const uint32_t v = kl_read_s8x4(s);
			c[0] = kl_sxtb16(v);
			c[4] = kl_sxtb16_ror8(v);
		}
	}
}

/* n / 4 groups of a pixel's lane set to the padding word pw */
static void pack_fill(uint32_t *c, int n, uint32_t pw)
{
	for (uint32_t *e = c + 2 * n; c != e; c += 8) {
		c[0] = pw;
		c[4] = pw;
	}
}

/* pixel (oy, ox)'s im2col row straight from the input into its lane (c % 4
 * == 0: every tap is whole groups); pw is the packed padding */
static void pack_im2col(const kl_geom_t *g, const int8_t *x, int oy, int ox, uint32_t *c,
			int flip, uint32_t zz, uint32_t pw)
{
	const int ch = g->c, kw = g->kw;
	int kx0, kx1;
	const int ix0 = kl_im2col_cols(g, ox, &kx0, &kx1);
	for (int ky = 0; ky < g->kh; ky++) {
		const int iy = oy * g->stride + ky - g->pad_t;
		if (iy < 0 || iy >= g->h) {
			pack_fill(c, kw * ch, pw);
		} else {
			pack_fill(c, kx0 * ch, pw);
			pack_px(x + ((long)iy * g->w + ix0 + kx0) * ch, c + 2 * kx0 * ch, (kx1 - kx0) * ch,
				flip, zz);
			pack_fill(c + 2 * kx1 * ch, (kw - kx1) * ch, pw);
		}
		c += 2 * kw * ch;
	}
}

/* sum of a row of n weights (n % 4 == 0): USADA8 of the bytes + 128 */
static int32_t row_sum(const int8_t *r, int n)
{
	uint32_t s = 0;
	for (int j = 0; j < n; j += 4) {
		s = __usada8(kl_read_s8x4(r + j) ^ 0x80808080u, 0u, s);
	}
	return (int32_t)s - 128 * n;
}

/* four words of outputs against the flag constant: GE lanes select it */
#define SAT_SCAN4                                                                                 \
	"ldm %[p]!, {r4, r5, r6, r7}\n\t"                                                         \
	"ssub8 r4, r4, %[c]\n\t"                                                                  \
	"sel %[f], %[c], %[f]\n\t"                                                                \
	"ssub8 r5, r5, %[c]\n\t"                                                                  \
	"sel %[f], %[c], %[f]\n\t"                                                                \
	"ssub8 r6, r6, %[c]\n\t"                                                                  \
	"sel %[f], %[c], %[f]\n\t"                                                                \
	"ssub8 r7, r7, %[c]\n\t"                                                                  \
	"sel %[f], %[c], %[f]\n\t"

/* any output byte at 127 (or, with lo, at -128): the saturation flag of the
 * folded output stage (kl_requant_clamp: visible in the outputs alone when
 * lo < hi) */
static int sat_scan(const int8_t *y, long n, int lo)
{
	uint32_t f = 0;
	const uint32_t c7f = 0x7F7F7F7Fu;
	long i = 0;
	for (; i < n && ((uintptr_t)(y + i) & 3u) != 0; i++) {
		f |= (uint32_t)(y[i] == 127 || (lo && y[i] == -128));
	}
	const int8_t *p = y + i;
	long nw = (n - i) >> 2;
	i += nw << 2;
	if (lo) {
		for (; nw > 0; nw--) {
			const uint32_t v = kl_read_s8x4(p);
			uint32_t t;
			p += 4;
			__asm__("ssub8 %[t], %[v], %[c]\n\t"
				"sel %[f], %[c], %[f]\n\t"
				"sadd8 %[t], %[v], %[c]\n\t"
				"sel %[f], %[f], %[c]"
				: [f] "+r"(f), [t] "=&r"(t)
				: [v] "r"(v), [c] "r"(c7f));
		}
	} else {
		if (nw >= 16) { /* p is 4-aligned here; 16 words a pass */
			const int8_t *e = p + ((nw >> 4) << 6);
			__asm__ volatile("1:\n\t"
					 SAT_SCAN4 SAT_SCAN4 SAT_SCAN4 SAT_SCAN4
					 "cmp %[p], %[e]\n\t"
					 "bne 1b"
					 : [p] "+r"(p), [f] "+r"(f)
					 : [c] "r"(c7f), [e] "r"(e)
					 : "r4", "r5", "r6", "r7", "cc", "memory");
			nw &= 15;
		}
		for (; nw > 0; nw--) {
			const uint32_t v = kl_read_s8x4(p);
			uint32_t t;
			p += 4;
			__asm__("ssub8 %[t], %[v], %[c]\n\t"
				"sel %[f], %[c], %[f]"
				: [f] "+r"(f), [t] "=&r"(t)
				: [v] "r"(v), [c] "r"(c7f));
		}
	}
	for (; i < n; i++) {
		f |= (uint32_t)(y[i] == 127 || (lo && y[i] == -128));
	}
	return f != 0;
}

/* The fast path: pixels in fours (fwd4_*), the rest by fwd_pairs. Returns
 * -1 where it does not apply (shift, shape, range or scratch), else the
 * saturation flag. */
static int fwd_fast(const kl_geom_t *g, const int8_t *x, int32_t x_zp, const int8_t *w,
		    const int32_t *b, const kl_requant_t *rq, int8_t *y, void *scratch)
{
	const int K = g->kh * g->kw * g->c;
	const int co = g->co, npix = g->ho * g->wo;
	const int ys = rq->y_shift;
	if ((K & 3) != 0 || K < 4 || npix < 4 || ys < 1 || ys > 22 || rq->hi <= rq->lo ||
	    K > 32768 || x_zp < -128 || x_zp > 127) {
		return -1;
	}
	const int direct = direct_1x1(g);
	const uint32_t need = 8u * (uint32_t)K + (direct ? 0u : 4u * (uint32_t)K) + 4u * (uint32_t)co;
	if (need + 16u > kl_conv_s8_scratch(g)) {
		return -1;
	}
	uint32_t *col = scratch;
	int32_t *bf = (int32_t *)(void *)(col + 2 * K);
	int8_t *buf = (int8_t *)(void *)(bf + co);
	const int32_t k = kl_rq_k(ys);
	const int64_t zsh = (int64_t)rq->zp * ((int64_t)1 << ys);
	const int64_t dmax = (int64_t)K * 128 * 255 + 2;
	/* zero points != 0: folded into the bias with the row sums where there
	 * are many pixels (not -128 for 1x1: flipped in pack4_flip), else
	 * centred in the packing (-128: flipped) */
	const int fold = x_zp != 0 && (x_zp != -128 || !direct) && npix > 2 * co;
	const int flip = !fold && x_zp == -128;
	const int32_t zc = !flip && !fold ? x_zp : 0;
	const uint32_t zz = ((uint32_t)zc & 0xFFFFu) * 0x10001u;
	/* the padding packed: x_zp as it is when folded, else 0 */
	const uint32_t pw = fold ? ((uint32_t)x_zp & 0xFFFFu) * 0x10001u : 0u;
	const int by_tap = !direct && (g->c & 3) == 0;
	/* 1x1, stride 1, full rows: pixel p at x + p K */
	const int seq = direct && g->stride == 1 && g->wo == g->w;
	for (int i = 0; i < co; i++) {
		const int64_t v = (int64_t)kl_rshift_round(b[i], rq->b_shift) + k + zsh;
		if (v + dmax > INT32_MAX || v - dmax < INT32_MIN) {
			return -1;
		}
		/* sum w (x - zp) = sum w x - zp sum w: the true sum fits, so
		 * the wrapping one is exact */
		const int32_t zs = fold ? x_zp * row_sum(w + (long)i * K, K) : 0;
		bf[i] = (int32_t)((uint32_t)v - (uint32_t)zs);
	}
	void (*fn)(fwd4_t *);
	fwd4_t a;
	a.lo = 0;
	a.hi = 0;
	a.thr = 0;
	if (rq->act == KL_ACT_NONE) {
		fn = fwd4_n;
		/* kl_rq_m: no round-down for a shift of 1 */
		a.thr = ys >= 2 ? (int32_t)(k - 1 + zsh) : INT32_MIN;
	} else if (rq->zp == -128 && rq->hi == 255) {
		fn = fwd4_a;
	} else {
		fn = fwd4_g;
		/* y in [lo, hi] <=> acc in [lo << ys, ((hi + 1) << ys) - 1] */
		a.lo = (int32_t)((uint32_t)rq->zp << ys);
		a.hi = (int32_t)(((uint32_t)(rq->hi + rq->zp + 1) << ys) - 1u);
	}
	a.c1 = co - 1;
	a.c2 = 2 * co - 1;
	a.c3 = 3 * co - 1;
	a.sidx = ys - 1;
	a.col = col;
	a.cend = col + 2 * K;
	a.K = K;
	a.w = w;
	a.entry = 0;
	const int np4 = npix & ~3;
	for (int p = 0; p < np4; p += 4) {
		if (direct) {
			const int8_t *sp[4];
			for (int j = 0; j < 4; j++) {
				sp[j] = seq ? x + (long)(p + j) * K : pixel_1x1(g, x, p + j);
			}
			if (zc == 0) {
				(flip ? pack4_flip : pack4_raw)(sp, col, K);
			} else {
				pack_px4(sp[0], sp[1], sp[2], sp[3], col, K, flip, zc);
			}
		} else if (by_tap) {
			int oy[4], ix[4], inx = !flip && zc == 0;
			for (int j = 0; j < 4; j++) {
				oy[j] = (p + j) / g->wo;
				ix[j] = ((p + j) - oy[j] * g->wo) * g->stride - g->pad_l;
				inx &= ix[j] >= 0 && ix[j] + g->kw <= g->w;
			}
			if (inx) { /* kernel rows whole: four pixels at once */
				const int n = g->kw * g->c;
				for (int ky = 0; ky < g->kh; ky++) {
					const int8_t *sp[4];
					int all = 1;
					for (int j = 0; j < 4; j++) {
						const int iy = oy[j] * g->stride + ky - g->pad_t;
						const int in = iy >= 0 && iy < g->h;
						all &= in;
						sp[j] = in ? x + ((long)iy * g->w + ix[j]) * g->c : NULL;
					}
					uint32_t *c = col + 2 * ky * n;
					if (all) {
						pack4_raw(sp, c, n);
						continue;
					}
					for (int j = 0; j < 4; j++) {
						if (sp[j] != NULL) {
							pack_px(sp[j], c + j, n, 0, 0u);
						} else {
							pack_fill(c + j, n, pw);
						}
					}
				}
			} else {
				for (int j = 0; j < 4; j++) {
					pack_im2col(g, x, oy[j], (p + j) - oy[j] * g->wo, col + j, flip, zz, pw);
				}
			}
		} else {
			const int8_t *sp[4];
			for (int j = 0; j < 4; j++) {
				int8_t *bj = buf + j * K;
				kl_im2col_full_s8(g, x, x_zp, (p + j) / g->wo, (p + j) % g->wo, bj);
				sp[j] = bj;
			}
			pack_px4(sp[0], sp[1], sp[2], sp[3], col, K, flip, zc);
		}
		a.y = y + (long)p * co;
		a.yend = a.y + co;
		a.bqa = (uint32_t)(uintptr_t)bf - 4u * (uint32_t)(uintptr_t)a.y;
		fn(&a);
	}
	if (np4 < npix) {
		(void)fwd_pairs(g, x, x_zp, w, b, rq, y, scratch, np4);
	}
	if (rq->act != KL_ACT_NONE && !rq->cap_saturates) {
		return 0;
	}
	return sat_scan(y, (long)npix * co, rq->act == KL_ACT_NONE);
}

int kl_dsp_conv_s8(const kl_geom_t *g, const int8_t *x, int32_t x_zp, const int8_t *w,
		   const int32_t *b, const kl_requant_t *rq, int8_t *y, void *scratch)
{
	const int sat = fwd_fast(g, x, x_zp, w, b, rq, y, scratch);
	if (sat >= 0) {
		return sat;
	}
	return fwd_pairs(g, x, x_zp, w, b, rq, y, scratch, 0);
}

/* acc[pixel p's taps, columns k0..k1-1] += cb */
static void col2im_add(const kl_geom_t *g, int32_t *acc, const int32_t *cb, int p, int k0,
		       int k1)
{
	const int c = g->c;
	const int oy = p / g->wo, ox = p - oy * g->wo;
	int k = k0;
	int t = k / c;
	int ci = k - t * c;
	while (k < k1) {
		int len = c - ci;
		if (len > k1 - k) {
			len = k1 - k;
		}
		const int ky = t / g->kw, kx = t - ky * g->kw;
		const int iy = oy * g->stride + ky - g->pad_t;
		const int ix = ox * g->stride + kx - g->pad_l;
		if (iy >= 0 && iy < g->h && ix >= 0 && ix < g->w) {
			int32_t *a = acc + ((long)iy * g->w + ix) * c + ci;
			int i = 0;
			for (; i + 2 <= len; i += 2) {
				const int32_t v0 = a[i] + cb[i], v1 = a[i + 1] + cb[i + 1];
				a[i] = v0;
				a[i + 1] = v1;
			}
			if (i < len) {
				a[i] += cb[i];
			}
		}
		cb += len;
		k += len;
		t++;
		ci = 0;
	}
}

/* the input gradient as a GEMM per pixel pair and col2im (the general way:
 * co % 4 != 0, large kernels, a tile too small for the gather below) */
static __attribute__((noinline)) void bwd_input_scatter(const kl_geom_t *g, const int8_t *w, const int8_t *dy, int32_t *acc,
			      void *scratch)
{
	const int K = g->kh * g->kw * g->c;
	const int co = g->co, RS = kl_round4(co);
	const int T = (int)kl_conv_s8_wt_rows(g);
	int8_t *wt = scratch;
	uint32_t *dcol = (uint32_t *)(void *)((int8_t *)scratch + kl_conv_s8_wt_bytes(g));
	int32_t *cb = (int32_t *)(void *)(dcol + RS);
	const int direct = g->kh == 1 && g->kw == 1 && g->stride == 1 && g->pad_t == 0 &&
			   g->pad_l == 0 && g->ho == g->h && g->wo == g->w;
	const int npix = g->ho * g->wo;
	if (!direct) {
		memset(acc, 0, (size_t)g->h * (size_t)g->w * (size_t)g->c * sizeof(int32_t));
	}
	for (int k0 = 0; k0 < K; k0 += T) {
		const int n = K - k0 < T ? K - k0 : T;
		for (int k = 0; k < n; k++) {
			const int8_t *src = w + k0 + k;
			int8_t *dst = wt + (long)k * RS;
			for (int o = 0; o < co; o++) {
				dst[o] = src[(long)o * K];
			}
		}
		for (int p = 0; p < npix; p += 2) {
			const int q = p + 1 < npix ? p + 1 : p;
			pack_pair(dy + (long)p * co, dy + (long)q * co, 0, dcol, co);
			int32_t *o0 = direct ? acc + (long)p * K + k0 : cb;
			int32_t *o1 = direct ? acc + (long)q * K + k0 : cb + T;
			for (int kk = 0; kk < n; kk += 2) {
				const int8_t *r0 = wt + (long)kk * RS;
				const int two = kk + 1 < n;
				const int8_t *r1 = two ? r0 + RS : r0;
				int32_t d[4];
				dot2x2(r0, r1, dcol, co, d);
				o0[kk] = d[0];
				o1[kk] = d[1]; /* q == p: the same values twice */
				if (two) {
					o0[kk + 1] = d[2];
					o1[kk + 1] = d[3];
				}
			}
			if (!direct) {
				col2im_add(g, acc, cb, p, k0, k0 + n);
				if (q != p) {
					col2im_add(g, acc, cb + T, q, k0, k0 + n);
				}
			}
		}
	}
}

/* input gradient, gather form: one tap of a pixel pair (dy rows at dp, dq)
 * and a pair of input channels (int16 weights at wp, per four output
 * channels: ci0 even, ci1 even, ci0 odd, ci1 odd lanes), eight output
 * channels per loop pass: 34 instructions per 32 MACs */
#define BWD_STEP                                                                                  \
	"ldr %[d0], [%[dp]], #4\n\t"                                                             \
	"ldr %[d1], [%[dq]], #4\n\t"                                                             \
	"ldrd %[w0], %[w1], [%[wp]], #8\n\t"                                                     \
	"sxtb16 %[t], %[d0]\n\t"                                                                 \
	"smlad %[a00], %[w0], %[t], %[a00]\n\t"                                                  \
	"smlad %[a10], %[w1], %[t], %[a10]\n\t"                                                  \
	"sxtb16 %[t], %[d1]\n\t"                                                                 \
	"smlad %[a01], %[w0], %[t], %[a01]\n\t"                                                  \
	"smlad %[a11], %[w1], %[t], %[a11]\n\t"                                                  \
	"ldrd %[w0], %[w1], [%[wp]], #8\n\t"                                                     \
	"sxtb16 %[t], %[d0], ror #8\n\t"                                                         \
	"smlad %[a00], %[w0], %[t], %[a00]\n\t"                                                  \
	"smlad %[a10], %[w1], %[t], %[a10]\n\t"                                                  \
	"sxtb16 %[t], %[d1], ror #8\n\t"                                                         \
	"smlad %[a01], %[w0], %[t], %[a01]\n\t"                                                  \
	"smlad %[a11], %[w1], %[t], %[a11]\n\t"

#define BWD_TAPS_MAX 25 /* kernels up to 5x5 take the gather form */

/* a00..a11 += the dot of NW tile words (NW / 4 steps of four output
 * channels) with the dy bytes at DP (pixel p) and DQ (pixel q) */
#define BWD_DOT(DP, DQ, WP, NW)                                                                   \
	do {                                                                                      \
		const int8_t *dp = (DP), *dq = (DQ);                                              \
		const uint32_t *wp = (WP);                                                        \
		const uint32_t *const wend = wp + (NW);                                           \
		uint32_t d0, d1, w0, w1, t;                                                       \
		if ((NW) & 4) {                                                                   \
			__asm__(BWD_STEP                                                          \
				: [a00] "+r"(a00), [a01] "+r"(a01), [a10] "+r"(a10),              \
				  [a11] "+r"(a11), [dp] "+r"(dp), [dq] "+r"(dq), [wp] "+r"(wp),   \
				  [d0] "=&r"(d0), [d1] "=&r"(d1), [w0] "=&r"(w0), [w1] "=&r"(w1), \
				  [t] "=&r"(t)                                                    \
				:                                                                 \
				: "memory");                                                      \
		}                                                                                 \
		if (wp != wend) {                                                                 \
			__asm__("1:\n\t" BWD_STEP BWD_STEP "cmp %[wp], %[wend]\n\t"               \
				"bne 1b\n\t"                                                      \
				: [a00] "+r"(a00), [a01] "+r"(a01), [a10] "+r"(a10),              \
				  [a11] "+r"(a11), [dp] "+r"(dp), [dq] "+r"(dq), [wp] "+r"(wp),   \
				  [d0] "=&r"(d0), [d1] "=&r"(d1), [w0] "=&r"(w0), [w1] "=&r"(w1), \
				  [t] "=&r"(t)                                                    \
				: [wend] "r"(wend)                                                \
				: "cc", "memory");                                                \
		}                                                                                 \
	} while (0)

/* the four sums of channel pair cp into o0 (pixel p) and o0 + qofs (q) */
#define BWD_STORE(o0, qofs, cp, nch, hq)                                                          \
	do {                                                                                      \
		(o0)[2 * (cp)] = a00;                                                             \
		if (hq) {                                                                         \
			(o0)[(qofs) + 2 * (cp)] = a01;                                            \
		}                                                                                 \
		if (2 * (cp) + 1 < (nch)) {                                                       \
			(o0)[2 * (cp) + 1] = a10;                                                 \
			if (hq) {                                                                 \
				(o0)[(qofs) + 2 * (cp) + 1] = a11;                                \
			}                                                                         \
		}                                                                                 \
	} while (0)

/* the loop-invariant values of the gather below */
typedef struct {
	int32_t co, wo, ncp, nch;
	int32_t pair_words; /* a channel pair's tile, words */
	int32_t nwb;        /* a kernel row's taps of one column class, bytes */
	int32_t dadj;       /* dy bytes from a kernel row's end to the next one's start */
	int32_t wtot;       /* the weights of all kernel rows reaching the row, words */
	long qofs, ostep;   /* acc of q from p; from a pair to the next */
} bwd_prm_t;

/* npp pixel pairs (p, p + stride), p advancing by 2 * stride, every tap in
 * range. Per pair and channel pair one assembly block: per kernel row a
 * contiguous dot over dy columns from d on (pixel q: one column on) and
 * the tile words from w on (contiguous over the kernel rows), the next
 * kernel row's dy at dadj bytes from the end. */
static __attribute__((noinline)) void bwd_gather_run(const int8_t *d, const uint32_t *w, int npp,
						     int32_t *o0, const bwd_prm_t *pp)
{
	const bwd_prm_t pr = *pp;
	for (int k = 0; k < npp; k++, d += 2 * pr.co, o0 += pr.ostep) {
		const uint32_t *wc = w;
		for (int cp = 0; cp < pr.ncp; cp++, wc += pr.pair_words) {
			int32_t a00 = 0, a01 = 0, a10 = 0, a11 = 0;
			const int8_t *dp = d, *dq;
			const uint32_t *wp = wc, *wend;
			const uint32_t *const wfin = wc + pr.wtot;
			uint32_t d0, d1, w0, w1, t;
			__asm__("ldr %[t], %[co]\n\t"
				"add %[dq], %[dp], %[t]\n\t"
				"0:\n\t"
				"ldr %[t], %[nwb]\n\t"
				"add %[wend], %[wp], %[t]\n\t"
				"tst %[t], #16\n\t" /* an odd number of steps */
				"bne 2f\n\t"
				"1:\n\t" BWD_STEP "2:\n\t" BWD_STEP "cmp %[wp], %[wend]\n\t"
				"bne 1b\n\t"
				"ldr %[t], %[wfin]\n\t"
				"cmp %[wp], %[t]\n\t"
				"beq 3f\n\t"
				"ldr %[t], %[dadj]\n\t"
				"add %[dp], %[dp], %[t]\n\t"
				"add %[dq], %[dq], %[t]\n\t"
				"b 0b\n\t"
				"3:\n\t"
				: [a00] "+r"(a00), [a01] "+r"(a01), [a10] "+r"(a10), [a11] "+r"(a11),
				  [dp] "+r"(dp), [dq] "=&r"(dq), [wp] "+r"(wp), [wend] "=&r"(wend),
				  [d0] "=&r"(d0), [d1] "=&r"(d1), [w0] "=&r"(w0), [w1] "=&r"(w1),
				  [t] "=&r"(t)
				: [co] "m"(pr.co), [nwb] "m"(pr.nwb), [wfin] "m"(wfin),
				  [dadj] "m"(pr.dadj)
				: "cc", "memory");
			BWD_STORE(o0, pr.qofs, cp, pr.nch, 1);
		}
	}
}

/* one pixel pair with taps out of range (an edge) or no pixel q (hq = 0):
 * per tap, a zero dy row for a missing column; nky kernel rows, the first
 * one's dy row at drow, the next ones wo * co bytes before */
static __attribute__((noinline)) void bwd_gather_edge(const int8_t *drow, const uint32_t *w,
						      int nky, int m, int c0, int hq,
						      const int8_t *zrow, int32_t *o0,
						      const bwd_prm_t *pr)
{
	const int co = pr->co, wo = pr->wo;
	for (int cp = 0; cp < pr->ncp; cp++) {
		int32_t a00 = 0, a01 = 0, a10 = 0, a11 = 0;
		const uint32_t *wc = w + (long)cp * pr->pair_words;
		for (int j = 0; j < nky; j++) {
			const int8_t *dr = drow - (long)j * wo * co;
			for (int tt = 0; tt < m; tt++, wc += co) {
				const int col = c0 + tt;
				const int vp = col >= 0 && col < wo;
				const int vq = hq && col + 1 >= 0 && col + 1 < wo;
				if (!vp && !vq) {
					continue;
				}
				const int8_t *dp0 = vp ? dr + (long)col * co : zrow;
				const int8_t *dq0 = vq ? dr + (long)(col + 1) * co : zrow;
				BWD_DOT(dp0, dq0, wc, co);
			}
		}
		BWD_STORE(o0, pr->qofs, cp, pr->nch, hq);
	}
}

void kl_dsp_conv_backward_input_s8(const kl_geom_t *g, const int8_t *w, const int8_t *dy,
				   int32_t *acc, void *scratch)
{
	const int co = g->co, c = g->c, kw = g->kw, kh = g->kh, s = g->stride, wo = g->wo;
	const int taps = kh * kw, K = taps * c;
	/* a zero dy row, then the int16 weights of as many channel pairs as fit */
	const uint32_t budget = kl_conv_s8_scratch(g) - 16u;
	const uint32_t pair_bytes = 4u * (uint32_t)taps * (uint32_t)co;
	const uint32_t zbytes = (uint32_t)co;
	const int npairs = (c + 1) / 2;
	int cpb = budget > zbytes ? (int)((budget - zbytes) / pair_bytes) : 0;
	const int direct = kw == 1 && kh == 1 && s == 1 && g->pad_t == 0 && g->pad_l == 0 &&
			   g->ho == g->h && g->wo == g->w;
	if (direct || (co & 3) != 0 || kh > BWD_TAPS_MAX || kw > BWD_TAPS_MAX ||
	    taps > BWD_TAPS_MAX || cpb < 1 || g->pad_l < 0) {
		bwd_input_scatter(g, w, dy, acc, scratch);
		return;
	}
	cpb = cpb < npairs ? cpb : npairs;
	int8_t *zrow = scratch;
	memset(zrow, 0, zbytes);
	uint32_t *tile = (uint32_t *)(void *)(zrow + zbytes);
	/* column class rx (kx = rx mod stride): mx[rx] taps; row class ry:
	 * my[ry] kernel rows; the class pair's block starts offx[rx] +
	 * mx[rx] * offy[ry] words into a channel pair's tile */
	const int ncx = s < kw ? s : kw, ncy = s < kh ? s : kh;
	int mx[BWD_TAPS_MAX], my[BWD_TAPS_MAX], offx[BWD_TAPS_MAX], offy[BWD_TAPS_MAX];
	for (int r = 0, n = 0; r < ncx; r++) {
		mx[r] = (kw - 1 - r) / s + 1;
		offx[r] = n * kh * co;
		n += mx[r];
	}
	for (int r = 0, n = 0; r < ncy; r++) {
		my[r] = (kh - 1 - r) / s + 1;
		offy[r] = n * co;
		n += my[r];
	}
	bwd_prm_t pr;
	pr.co = co;
	pr.wo = wo;
	pr.pair_words = taps * co;
	pr.qofs = (long)s * c;
	pr.ostep = 2 * pr.qofs;
	for (int cp0 = 0; cp0 < npairs; cp0 += cpb) {
		const int ncp = npairs - cp0 < cpb ? npairs - cp0 : cpb;
		const int ci0 = 2 * cp0;
		pr.ncp = ncp;
		pr.nch = c - ci0 < 2 * ncp ? c - ci0 : 2 * ncp;
		/* tile[cp][rx][ry][ky ascending][kx descending][o / 4]: per four
		 * output channels the int16 pairs (ci0: o, o+2), (ci1: o, o+2),
		 * (ci0: o+1, o+3), (ci1: o+1, o+3) */
		uint32_t *tw = tile;
		for (int cp = 0; cp < ncp; cp++) {
			const int ci = ci0 + 2 * cp;
			const int one = ci + 1 < c; /* else the second channel is zero */
			for (int rx = 0; rx < ncx; rx++) {
				for (int ry = 0; ry < ncy; ry++) {
					for (int ky = ry; ky < kh; ky += s) {
						for (int kx = rx + (mx[rx] - 1) * s; kx >= 0; kx -= s) {
							const int8_t *src =
								w + (long)(ky * kw + kx) * c + ci;
							for (int o = 0; o < co; o += 4, tw += 4) {
								const int8_t *w0 = src + (long)o * K;
								const int8_t *w1 = w0 + K, *w2 = w1 + K;
								const int8_t *w3 = w2 + K;
								tw[0] = ((uint32_t)w0[0] & 0xFFFFu) |
									((uint32_t)w2[0] << 16);
								tw[2] = ((uint32_t)w1[0] & 0xFFFFu) |
									((uint32_t)w3[0] << 16);
								if (one) {
									tw[1] = ((uint32_t)w0[1] &
										 0xFFFFu) |
										((uint32_t)w2[1] << 16);
									tw[3] = ((uint32_t)w1[1] &
										 0xFFFFu) |
										((uint32_t)w3[1] << 16);
								} else {
									tw[1] = tw[3] = 0u;
								}
							}
						}
					}
				}
			}
		}
		for (int iy = 0; iy < g->h; iy++) {
			/* the kernel rows ky = ry + j * s, j0 <= j < j0 + nky, reach
			 * row iy; row j meets dy row (ty - ry) / s - j */
			const int ty = iy + g->pad_t;
			const int ry = ty >= 0 ? ty % s : 0;
			int j0 = 0, nky = 0;
			if (ty >= 0 && ry < ncy) {
				const int top = (ty - ry) / s; /* dy row of j = 0 */
				j0 = top - (g->ho - 1) > 0 ? top - (g->ho - 1) : 0;
				int j1 = top + 1 < my[ry] ? top + 1 : my[ry];
				nky = j1 > j0 ? j1 - j0 : 0;
			}
			const int8_t *drow =
				nky ? dy + (long)((ty - ry) / s - j0) * wo * co : dy;
			int32_t *orow = acc + (long)iy * g->w * c + ci0;
			for (int r0 = 0; r0 < s && r0 < g->w; r0++) {
				const int u0 = r0 + g->pad_l;
				const int rx = u0 % s;
				const int m = rx < ncx ? mx[rx] : 0;
				const uint32_t *wseg =
					tile + offx[rx < ncx ? rx : 0] +
					(long)m * (offy[ry < ncy ? ry : 0] + (long)j0 * co);
				pr.nwb = 4 * m * co;
				pr.dadj = -(wo + m) * co;
				pr.wtot = nky * m * co;
				for (int p = r0; p < g->w;) {
					const int hq = p + s < g->w;
					int32_t *o0 = orow + (long)p * c;
					if (nky == 0 || m == 0) { /* no tap reaches it */
						for (int i = 0; i < pr.nch; i++) {
							o0[i] = 0;
							if (hq) {
								o0[pr.qofs + i] = 0;
							}
						}
						p += 2 * s;
						continue;
					}
					const int ou = (p + g->pad_l) / s; /* p's last column */
					const int c0 = ou - (m - 1);
					if (!hq || c0 < 0 || ou + 1 >= wo) {
						bwd_gather_edge(drow, wseg, nky, m, c0, hq, zrow, o0,
								&pr);
						p += 2 * s;
						continue;
					}
					/* a run of pairs with every tap in range */
					int npp = 1;
					while (p + 2 * s * npp + s < g->w && ou + 2 * npp + 1 < wo) {
						npp++;
					}
					bwd_gather_run(drow + (long)c0 * co, wseg, npp, o0, &pr);
					p += 2 * s * npp;
				}
			}
		}
	}
}

#define GP ((int)KL_DSP_GRAD_PAIRS)
typedef char kl_dsp_grad_pairs_is_4[KL_DSP_GRAD_PAIRS == 4u ? 1 : -1]; /* GSTEP x 4 below */

/* one pixel pair of a 2x2 block of gw: dy words of channels o, o+1 and
 * im2col words of columns k, k+1 (each two pixels), four SMLADs */
#define GSTEP(off)                                                                                \
	"ldrd %[d0], %[d1], [%[dp], #" off "]\n\t"                                            \
	"ldrd %[x0], %[x1], [%[xp], #" off "]\n\t"                                            \
	"smlad %[a00], %[d0], %[x0], %[a00]\n\t"                                               \
	"smlad %[a01], %[d0], %[x1], %[a01]\n\t"                                               \
	"smlad %[a10], %[d1], %[x0], %[a10]\n\t"                                               \
	"smlad %[a11], %[d1], %[x1], %[a11]\n\t"

/* pixels a, b of 4 bytes each into four int16x2 words (a low, b high),
 * element order 0, 1, 2, 3 */
static inline void pair4(uint32_t va, uint32_t vb, uint32_t *w01, uint32_t *w23)
{
	const uint32_t ea = kl_sxtb16(va), eb = kl_sxtb16(vb);
	const uint32_t oa = kl_sxtb16_ror8(va), ob = kl_sxtb16_ror8(vb);
	w01[0] = kl_pkhbt(ea, eb);
	w01[1] = kl_pkhbt(oa, ob);
	w23[0] = kl_pkhtb(eb, ea);
	w23[1] = kl_pkhtb(ob, oa);
}

/* one pixel pair of a 2x2 block: dy words at dp + off, im2col words at
 * xp (post-incremented), four SMLADs */
#define GSTEP_X(off)                                                                              \
	"ldrd %[d0], %[d1], [%[dp], #" off "]\n\t"                                            \
	"ldrd %[x0], %[x1], [%[xp]], #8\n\t"                                                  \
	"smlad %[a00], %[d0], %[x0], %[a00]\n\t"                                               \
	"smlad %[a01], %[d0], %[x1], %[a01]\n\t"                                               \
	"smlad %[a10], %[d1], %[x0], %[a10]\n\t"                                               \
	"smlad %[a11], %[d1], %[x1], %[a11]\n\t"

/* g0[0..kp-1], g1[0..kp-1] (kp even) += the chunk's products: per column
 * pair one LDRD of each row's two sums, four pixel pairs (GSTEP_X), one
 * STRD each (30 instructions per 32 MACs) */
static void grad_rows2(const uint32_t *dp, const uint32_t *xp, int32_t *g0, int32_t *g1, int kp)
{
	int32_t *const gend = g0 + kp;
	int32_t a00, a01, a10, a11;
	uint32_t d0, d1, x0, x1;
	__asm__ volatile("1:\n\t"
			 "ldrd %[a00], %[a01], [%[g0]]\n\t"
			 "ldrd %[a10], %[a11], [%[g1]]\n\t" GSTEP_X("0") GSTEP_X("8")
				 GSTEP_X("16") GSTEP_X("24")
			 "strd %[a00], %[a01], [%[g0]], #8\n\t"
			 "strd %[a10], %[a11], [%[g1]], #8\n\t"
			 "cmp %[g0], %[gend]\n\t"
			 "bne 1b\n\t"
			 : [a00] "=&r"(a00), [a01] "=&r"(a01), [a10] "=&r"(a10), [a11] "=&r"(a11),
			   [d0] "=&r"(d0), [d1] "=&r"(d1), [x0] "=&r"(x0), [x1] "=&r"(x1),
			   [g0] "+r"(g0), [g1] "+r"(g1), [xp] "+r"(xp)
			 : [dp] "r"(dp), [gend] "r"(gend)
			 : "cc", "memory");
}

void kl_dsp_conv_grad_s8(const kl_geom_t *g, const int8_t *x, int32_t x_zp, const int8_t *dy,
			 int32_t *gw, int32_t *gb, void *scratch)
{
	const int K = g->kh * g->kw * g->c, K4 = kl_round4(K);
	const int co = g->co, C4 = kl_round4(co);
	const int KT = K4 < (int)KL_DSP_GRAD_KTILE ? K4 : (int)KL_DSP_GRAD_KTILE;
	uint32_t *X = scratch;        /* [KT / 2][GP][2]: im2col pairs */
	uint32_t *D = X + KT * GP;    /* [C4 / 2][GP][2]: dy pairs */
	int8_t *ba = (int8_t *)(void *)(D + C4 * GP);
	int8_t *bb = ba + KT;
	const int direct = direct_1x1(g) && (K & 3) == 0;
	const int npix = g->ho * g->wo;
	memset(gw, 0, (size_t)co * (size_t)K * sizeof(int32_t));
	memset(gb, 0, (size_t)co * sizeof(int32_t));
	for (int p0 = 0; p0 < npix; p0 += 2 * GP) {
		/* dy of the chunk's pixel pairs; missing pixels are zero */
		for (int pp = 0; pp < GP; pp++) {
			const int pa = p0 + 2 * pp, pb = pa + 1;
			const int8_t *da = pa < npix ? dy + (long)pa * co : NULL;
			const int8_t *db = pb < npix ? dy + (long)pb * co : NULL;
			int o = 0;
			for (; o + 4 <= co; o += 4) {
				const uint32_t va = da ? kl_read_s8x4(da + o) : 0u;
				const uint32_t vb = db ? kl_read_s8x4(db + o) : 0u;
				pair4(va, vb, D + ((o >> 1) * GP + pp) * 2,
				      D + (((o >> 1) + 1) * GP + pp) * 2);
			}
			for (; o < C4; o++) {
				const int32_t a = da && o < co ? da[o] : 0;
				const int32_t bv = db && o < co ? db[o] : 0;
				D[((o >> 1) * GP + pp) * 2 + (o & 1)] =
					((uint32_t)a & 0xFFFFu) | ((uint32_t)bv << 16);
			}
		}
		for (int o = 0; o < co; o++) {
			const uint32_t *dp = D + (o >> 1) * GP * 2 + (o & 1);
			int32_t s = gb[o];
			for (int pp = 0; pp < GP; pp++) {
				s = kl_smlad(dp[2 * pp], 0x00010001u, s);
			}
			gb[o] = s;
		}
		for (int k0 = 0; k0 < K4; k0 += KT) {
			const int n = K4 - k0 < KT ? K4 - k0 : KT;
			for (int pp = 0; pp < GP; pp++) {
				int pa = p0 + 2 * pp, pb = pa + 1;
				pa = pa < npix ? pa : p0; /* dy is zero there */
				pb = pb < npix ? pb : pa;
				const int8_t *sa, *sb;
				if (direct) {
					sa = pixel_1x1(g, x, pa) + k0;
					sb = pixel_1x1(g, x, pb) + k0;
				} else {
					if (n == K4) { /* one tile: whole rows */
						kl_im2col_full_s8(g, x, x_zp, pa / g->wo, pa % g->wo, ba);
						kl_im2col_full_s8(g, x, x_zp, pb / g->wo, pb % g->wo, bb);
						kl_fill_s8(ba + K, x_zp, K4 - K);
						kl_fill_s8(bb + K, x_zp, K4 - K);
					} else {
						kl_im2col_s8(g, x, x_zp, pa / g->wo, pa % g->wo, k0,
							     k0 + n, ba);
						kl_im2col_s8(g, x, x_zp, pb / g->wo, pb % g->wo, k0,
							     k0 + n, bb);
					}
					sa = ba;
					sb = bb;
				}
				for (int j = 0; j < n; j += 4) {
					pair4(kl_read_s8x4(sa + j), kl_read_s8x4(sb + j),
					      X + ((j >> 1) * GP + pp) * 2,
					      X + (((j >> 1) + 1) * GP + pp) * 2);
				}
			}
			const int kend = K - k0 < n ? K - k0 : n;
			const int kp = kend & ~1;
			int o = 0;
			if (kp > 0) { /* the 2x2 blocks of two rows, in assembly */
				for (; o + 2 <= co; o += 2) {
					int32_t *g0 = gw + (long)o * K + k0;
					grad_rows2(D + (o >> 1) * GP * 2, X, g0, g0 + K, kp);
				}
			}
			/* the last column of an odd tile and row of an odd co */
			for (int oo = 0; oo < co; oo += 2) {
				const uint32_t *dp = D + (oo >> 1) * GP * 2;
				int32_t *g0 = gw + (long)oo * K + k0;
				int32_t *g1 = oo + 1 < co ? g0 + K : NULL;
				for (int kk = oo < o ? kp : 0; kk < kend; kk += 2) {
					const uint32_t *xp = X + (kk >> 1) * GP * 2;
					const int two = kk + 1 < kend;
					int32_t a00 = g0[kk], a01 = two ? g0[kk + 1] : 0;
					int32_t a10 = g1 ? g1[kk] : 0;
					int32_t a11 = g1 && two ? g1[kk + 1] : 0;
					uint32_t d0, d1, x0, x1;
					__asm__(GSTEP("0") GSTEP("8") GSTEP("16") GSTEP("24")
						: [a00] "+r"(a00), [a01] "+r"(a01), [a10] "+r"(a10),
						  [a11] "+r"(a11), [d0] "=&r"(d0), [d1] "=&r"(d1),
						  [x0] "=&r"(x0), [x1] "=&r"(x1)
						: [dp] "r"(dp), [xp] "r"(xp)
						: "memory");
					g0[kk] = a00;
					if (two) {
						g0[kk + 1] = a01;
					}
					if (g1) {
						g1[kk] = a10;
						if (two) {
							g1[kk + 1] = a11;
						}
					}
				}
			}
		}
	}
	/* sum dy (x - zp) = sum dy x - zp sum dy (mod 2^32, padding taps = zp) */
	if (x_zp != 0) {
		for (int o = 0; o < co; o++) {
			const uint32_t z = (uint32_t)x_zp * (uint32_t)gb[o];
			int32_t *row = gw + (long)o * K;
			for (int k = 0; k < K; k++) {
				row[k] = (int32_t)((uint32_t)row[k] - z);
			}
		}
	}
}
#else
typedef int kl_dsp_conv_s8_unused;
#endif
