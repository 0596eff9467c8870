/* Fully connected layer, int8, dsp backend, on the paired weight layout
 * (kl_fc_pair_s8; the forward kernel is kl_dsp_fully_connected_paired_s8 in
 * kl_fully_connected_s8.c): the input gradient and the fused SGD step, read
 * and updated in place, the same integers as the ref kernels on the plain
 * layout.
 *
 * A weight word of pair p holds two columns c, c' of both rows: bytes
 * (w0[c] ^ 0x80, w1[c], w0[c'] ^ 0x80, w1[c']). SXTB16 of the word with the
 * flip undone gives (w0[c], w0[c']), SXTB16 ROR 8 (w1[c], w1[c']).
 *
 * Input gradient: per pair the two dy in one word (dy0, dy1); per weight
 * word PKHBT / PKHTB regroup the four weights by column, (w0[c], w1[c]) and
 * (w0[c'], w1[c']), and one SMLAD per column adds both rows. Two pairs per
 * pass over the columns, pairs whose dy are both zero skipped.
 * SGD: per weight word the four steps (dithers by each weight's plain index,
 * so the sequence is the ref kernel's), saturated, packed in the word's byte
 * order, one QSUB8 with the flip undone, -128 lifted to -127; lanes of a row
 * whose step factor is zero are left as they are (the ref kernel skips it). */
#include "kilolearn/kl_kernels.h"

#if KL_KERNELS_DSP
#include "kl_dsp_util.h"

static inline uint32_t pkhtb(uint32_t a, uint32_t b)
{
	uint32_t r;
	__asm__("pkhtb %0, %1, %2, asr #16" : "=r"(r) : "r"(a), "r"(b));
	return r;
}

/* acc[c] += w0[c] dy0 + w1[c] dy1 for the two columns of word v */
#define DX_WORD(v, d, lo, hi)                                                                     \
	do {                                                                                      \
		const uint32_t r0 = kl_sxtb16((v) ^ 0x00800080u), r1 = kl_sxtb16_ror8(v);         \
		lo = kl_smlad(kl_pkhbt(r0, r1), d, lo);                                           \
		hi = kl_smlad(pkhtb(r1, r0), d, hi);                                              \
	} while (0)

static void dx_general(const int8_t *w, const int8_t *dy, int32_t *acc, int n_in, int n_out)
{
	memset(acc, 0, (size_t)n_in * 4u);
	const int np = n_out >> 1;
	for (int p = 0; p < np; p++) {
		if (dy[2 * p] == 0 && dy[2 * p + 1] == 0) {
			continue;
		}
		const uint32_t d = kl_pkhbt((uint32_t)(int32_t)dy[2 * p], (uint32_t)(int32_t)dy[2 * p + 1]);
		int gs;
		const uint32_t *wp =
			(const uint32_t *)(const void *)(w + kl_fc_pair_at(p, n_in, n_out, &gs));
		for (int k = 0; k < n_in >> 1; k += 2, wp += gs >> 2) {
			/* columns j, j + 2 (word k) and j + 1, j + 3 (word k + 1) */
			int32_t *ac = acc + 2 * k;
			int32_t a0 = ac[0], a1 = ac[1], a2 = ac[2], a3 = ac[3];
			DX_WORD(wp[0], d, a0, a2);
			DX_WORD(wp[1], d, a1, a3);
			ac[0] = a0;
			ac[1] = a1;
			ac[2] = a2;
			ac[3] = a3;
		}
	}
	if ((n_out & 1) && dy[n_out - 1] != 0) { /* the plain last row */
		const int8_t *r = w + (long)(n_out - 1) * n_in;
		const int32_t g = dy[n_out - 1];
		for (int j = 0; j < n_in; j++) {
			acc[j] += (int32_t)r[j] * g;
		}
	}
}

/* The fast input gradient: per pair (A, B) = (256 dy0, dy1 - 256 dy0) in one
 * word; for a column c with halfword h = 256 w1 + w0 + 128 and m = h & 0xFF00
 * (= 256 w1), h A + m B = 256 (w0 dy0 + w1 dy1) + 32768 dy0, so SMLABB /
 * SMLATB on the raw word and SMLABT / SMLATT on the masked one add a pair's
 * two rows to a column: 5 instructions per 4 MACs. The sums (wrapping) are
 * 256 acc + 32768 sum(dy0), exact while |256 acc| < 2^31 (n_out <= 512),
 * with B a halfword (dy0 != -128). Two pairs per pass over the columns, the
 * four column sums of a pass loaded and stored with LDM / STM. */
typedef struct {
	int32_t *acc;
	const uint32_t *wa, *wb;
	uint32_t aba, abb;
	const int32_t *end;
	const uint32_t *wc;
	uint32_t abc;
} dx2_t;

#define DX_PAIR(P, AB, T0, T1, GS) \
	"ldrd " T0 ", " T1 ", [" P "], #" GS "\n\t" \
	"smlabb r6, " T0 ", " AB ", r6\n\t" \
	"smlatb r8, " T0 ", " AB ", r8\n\t" \
	"and " T0 ", " T0 ", #0xFF00FF00\n\t" \
	"smlabt r6, " T0 ", " AB ", r6\n\t" \
	"smlatt r8, " T0 ", " AB ", r8\n\t" \
	"smlabb r7, " T1 ", " AB ", r7\n\t" \
	"smlatb r9, " T1 ", " AB ", r9\n\t" \
	"and " T1 ", " T1 ", #0xFF00FF00\n\t" \
	"smlabt r7, " T1 ", " AB ", r7\n\t" \
	"smlatt r9, " T1 ", " AB ", r9\n\t"

#define DX_FUNC(name, BODY, FIN) \
	__attribute__((naked, noinline)) static void name(const dx2_t *a __attribute__((unused))) \
	{ \
		__asm__ volatile("push {r4-r11, lr}\n\t" \
				 "ldrd r12, lr, [r0, #24]\n\t" \
				 "ldm r0, {r0-r5}\n\t" \
				 "1:\n\t" \
				 "ldm r0, {r6-r9}\n\t" BODY FIN "stm r0!, {r6-r9}\n\t" \
				 "cmp r0, r5\n\t" \
				 "bne 1b\n\t" \
				 "pop {r4-r11, pc}\n\t"); \
	}
/* the last pass divides by 256 (the sums started at -32768 sum(dy0)) */
#define DX_FIN \
	"asr r6, r6, #8\n\t" \
	"asr r7, r7, #8\n\t" \
	"asr r8, r8, #8\n\t" \
	"asr r9, r9, #8\n\t"
/* three, two or one pairs of the same group stride GS */
#define DX_THREE(GS) \
	DX_PAIR("r1", "r3", "r10", "r11", GS) DX_PAIR("r2", "r4", "r10", "r11", GS) \
	DX_PAIR("r12", "lr", "r10", "r11", GS)
#define DX_TWO(GS) DX_PAIR("r1", "r3", "r10", "r11", GS) DX_PAIR("r2", "r4", "r10", "r11", GS)
#define DX_ONE(GS) DX_PAIR("r1", "r3", "r10", "r11", GS)
DX_FUNC(dx3_8, DX_THREE("8"), "")
DX_FUNC(dx3_8l, DX_THREE("8"), DX_FIN)
DX_FUNC(dx2_8, DX_TWO("8"), "")
DX_FUNC(dx2_8l, DX_TWO("8"), DX_FIN)
DX_FUNC(dx1_8, DX_ONE("8"), "")
DX_FUNC(dx1_8l, DX_ONE("8"), DX_FIN)
DX_FUNC(dx3_24, DX_THREE("24"), "")
DX_FUNC(dx3_24l, DX_THREE("24"), DX_FIN)
DX_FUNC(dx2_24, DX_TWO("24"), "")
DX_FUNC(dx2_24l, DX_TWO("24"), DX_FIN)
DX_FUNC(dx1_24, DX_ONE("24"), "")
DX_FUNC(dx1_24l, DX_ONE("24"), DX_FIN)
/* [stride 24?][pairs - 1][last pass?] */
static void (*const dx_fn[2][3][2])(const dx2_t *) = {
	{{dx1_8, dx1_8l}, {dx2_8, dx2_8l}, {dx3_8, dx3_8l}},
	{{dx1_24, dx1_24l}, {dx2_24, dx2_24l}, {dx3_24, dx3_24l}},
};

static inline uint32_t dx_ab(const int8_t *d)
{
	const int32_t a = 256 * (int32_t)d[0], b = (int32_t)d[1] - a;
	return ((uint32_t)a & 0xFFFFu) | ((uint32_t)b << 16);
}

void kl_dsp_fully_connected_backward_input_paired_s8(const int8_t *w, const int8_t *dy,
						     int32_t *acc, int n_in, int n_out)
{
	const int np = n_out >> 1;
	int32_t s0 = 0; /* sum of the paired even rows' dy */
	int last = -1;  /* the last pair with a nonzero gradient */
	for (int p = 0; p < np; p++) {
		const int32_t d0 = dy[2 * p];
		if (d0 == -128) {
			s0 = INT32_MIN;
			break;
		}
		s0 += d0;
		if ((d0 | dy[2 * p + 1]) != 0) {
			last = p;
		}
	}
	if (n_out > 512 || s0 == INT32_MIN || ((uintptr_t)w & 3u) != 0 || (n_in & 3) != 0) {
		dx_general(w, dy, acc, n_in, n_out);
		return;
	}
	/* the sums start at -32768 sum(dy0); the last pass divides by 256 */
	const int32_t k0 = (int32_t)((uint32_t)s0 << 15);
	for (int j = 0; j < n_in; j += 4) { /* n_in % 4 == 0 */
		acc[j] = -k0;
		acc[j + 1] = -k0;
		acc[j + 2] = -k0;
		acc[j + 3] = -k0;
	}
	dx2_t a;
	a.end = acc + n_in;
	const int ntp = kl_fc_triples(n_in) ? 3 * (np / 3) : 0; /* pairs in blocks of three */
	/* three pairs at a time (a block of three, or three in a row after the
	 * blocks): the ones with a nonzero gradient in one pass */
	const uint32_t **wq[3] = {&a.wa, &a.wb, &a.wc};
	uint32_t *abq[3] = {&a.aba, &a.abb, &a.abc};
	const int8_t *base = w;
	for (int p0 = 0; p0 <= last; p0 += 3) {
		const int tri = p0 < ntp;
		const int pe = p0 + 3 < np ? p0 + 3 : np;
		int k = 0;
		for (int p = p0; p < pe; p++) {
			const int8_t *d = dy + 2 * p;
			if ((d[0] | d[1]) != 0) {
				*wq[k] = (const uint32_t *)(const void *)(base + (tri ? 8 * (p - p0)
										 : 2 * n_in * (p - p0)));
				*abq[k] = dx_ab(d);
				k++;
			}
		}
		base += 6 * n_in;
		if (k != 0) {
			a.acc = acc;
			dx_fn[tri][k - 1][pe > last](&a);
		}
	}
	if ((n_out & 1) && dy[n_out - 1] != 0) { /* the plain last row */
		const int8_t *r = w + (long)(n_out - 1) * n_in;
		const int32_t g = dy[n_out - 1];
		for (int j = 0; j < n_in; j++) {
			acc[j] += (int32_t)r[j] * g;
		}
	}
}

/* The fused SGD step of one pair in a naked assembly loop: per weight word
 * (two columns of both rows) the four steps (c * x + dither) >> sh by SMLAxy
 * with the factors (c0, c1) in one word, saturated, packed in the word's byte
 * order, one QSUB8 with the flip undone, -128 lifted to -127 (31
 * instructions per four weights). The dithers: row 0's at column j is da + j
 * W, row 1's that plus ab = n_in W. The loop ends on a sentinel word after
 * the centred input. */
typedef struct {
	uint32_t c;   /* (c0, c1) as halfwords */
	uint32_t ab;  /* n_in W */
	uint32_t wy;  /* W */
	int32_t dsh;  /* 32 - sh */
	int32_t sh;
	uint32_t da;  /* row 0's dither at column 0 */
	const uint32_t *xp;
	uint32_t *rp;
} sg_t;

/* the four steps of word X (columns c: bottom, c': top), da at column c; da
 * ends at column c' */
#define SG_STEPS(X) \
	"lsr r10, r5, r3\n\t" \
	"smlabb r11, r0, " X ", r10\n\t" \
	"add r10, r5, r1\n\t" \
	"lsr r10, r10, r3\n\t" \
	"smlatb r12, r0, " X ", r10\n\t" \
	"add r5, r5, r2, lsl #1\n\t" \
	"lsr r10, r5, r3\n\t" \
	"smlabt lr, r0, " X ", r10\n\t" \
	"add r10, r5, r1\n\t" \
	"lsr r10, r10, r3\n\t" \
	"smlatt " X ", r0, " X ", r10\n\t"
#define SG_UPDATE(X, INC) \
	"asr r11, r11, r4\n\t" \
	"asr r12, r12, r4\n\t" \
	"asr lr, lr, r4\n\t" \
	"asr " X ", " X ", r4\n\t" \
	"pkhbt r11, r11, lr, lsl #16\n\t" \
	"pkhbt r12, r12, " X ", lsl #16\n\t" \
	"ssat16 r11, #8, r11\n\t" \
	"ssat16 r12, #8, r12\n\t" \
	"uxtb16 r11, r11\n\t" \
	"uxtb16 r12, r12\n\t" \
	"orr r11, r11, r12, lsl #8\n\t" \
	"ldr r10, [r7]\n\t" \
	"eor r10, r10, #0x00800080\n\t" \
	"qsub8 r10, r10, r11\n\t" \
	"mov r12, #0x81818181\n\t" \
	"ssub8 r11, r10, r12\n\t" \
	"sel r10, r10, r12\n\t" \
	"eor r10, r10, #0x00800080\n\t" \
	"str r10, [r7], #" INC "\n\t"

/* GS: the group stride in bytes (8, or 24 in a block of three pairs) */
#define SG_FUNC(name, GS2) \
	__attribute__((naked, noinline)) static void name(const sg_t *a __attribute__((unused))) \
	{ \
		__asm__ volatile("push {r4-r11, lr}\n\t" \
				 "ldm r0, {r0-r7}\n\t" \
				 "ldrd r8, r9, [r6], #8\n\t" \
				 "cmp r8, #0x80008000\n\t" \
				 "beq 2f\n\t" \
				 "1:\n\t" SG_STEPS("r8") "sub r5, r5, r2\n\t" SG_UPDATE("r8", "4") \
				 SG_STEPS("r9") "add r5, r5, r2\n\t" SG_UPDATE("r9", GS2) \
				 "ldrd r8, r9, [r6], #8\n\t" \
				 "cmp r8, #0x80008000\n\t" \
				 "bne 1b\n\t" \
				 "2:\n\t" \
				 "pop {r4-r11, pc}\n\t"); \
	}
SG_FUNC(sg_pair8, "4")
SG_FUNC(sg_pair24, "20")

/* One row of a pair (the other's factor is zero: its steps are zero and its
 * lanes stay as they are): per two weight words the row's four steps, the
 * bytes placed in its lanes (LANE: "" for row 0's bytes 0 and 2, a shift by
 * 8 for row 1's), both words updated with one LDRD / STRD (36 to 38
 * instructions per four weights). r0 = the factor (bottom halfword), r5 = the row's
 * dither at column 0; r1 unused. */
#define SG1_WORD(X, S, LANE, ADJ) \
	"lsr r10, r5, r3\n\t" \
	"smlabb " S ", r0, " X ", r10\n\t" \
	"add r5, r5, r2, lsl #1\n\t" \
	"lsr r10, r5, r3\n\t" \
	"smlabt " X ", r0, " X ", r10\n\t" ADJ \
	"asr " S ", " S ", r4\n\t" \
	"asr " X ", " X ", r4\n\t" \
	"pkhbt " S ", " S ", " X ", lsl #16\n\t" \
	"ssat16 " S ", #8, " S "\n\t" \
	"uxtb16 " S ", " S "\n\t" LANE
/* the update of two words by steps in r11, r12; lr: the clamp constant */
#define SG1_UPD0(GS) \
	"ldrd r8, r9, [r7]\n\t" \
	"eor r8, r8, #0x00800080\n\t" \
	"eor r9, r9, #0x00800080\n\t" \
	"qsub8 r8, r8, r11\n\t" \
	"qsub8 r9, r9, r12\n\t" \
	"ssub8 r11, r8, lr\n\t" \
	"sel r8, r8, lr\n\t" \
	"ssub8 r11, r9, lr\n\t" \
	"sel r9, r9, lr\n\t" \
	"eor r8, r8, #0x00800080\n\t" \
	"eor r9, r9, #0x00800080\n\t" \
	"strd r8, r9, [r7], #" GS "\n\t"
/* row 1: row 0's flipped lanes are left alone by a zero step and by a clamp
 * constant of 0x80 (no byte is below it), so no flip */
#define SG1_UPD1(GS) \
	"ldrd r8, r9, [r7]\n\t" \
	"qsub8 r8, r8, r11\n\t" \
	"qsub8 r9, r9, r12\n\t" \
	"ssub8 r11, r8, lr\n\t" \
	"sel r8, r8, lr\n\t" \
	"ssub8 r11, r9, lr\n\t" \
	"sel r9, r9, lr\n\t" \
	"strd r8, r9, [r7], #" GS "\n\t"
#define SG1_FUNC(name, LANE, UPD, K) \
	__attribute__((naked, noinline)) static void name(const sg_t *a __attribute__((unused))) \
	{ \
		__asm__ volatile("push {r4-r11, lr}\n\t" \
				 "ldm r0, {r0-r7}\n\t" \
				 "movw lr, #" K "\n\t" \
				 "movt lr, #" K "\n\t" \
				 "ldrd r8, r9, [r6], #8\n\t" \
				 "cmp r8, #0x80008000\n\t" \
				 "beq 2f\n\t" \
				 "1:\n\t" SG1_WORD("r8", "r11", LANE("r11"), "sub r5, r5, r2\n\t") \
				 SG1_WORD("r9", "r12", LANE("r12"), "add r5, r5, r2\n\t") UPD \
				 "ldrd r8, r9, [r6], #8\n\t" \
				 "cmp r8, #0x80008000\n\t" \
				 "bne 1b\n\t" \
				 "2:\n\t" \
				 "pop {r4-r11, pc}\n\t"); \
	}
#define SG1_LANE0(S) ""
#define SG1_LANE1(S) "lsl " S ", " S ", #8\n\t"
SG1_FUNC(sg_row0_8, SG1_LANE0, SG1_UPD0("8"), "0x8181")
SG1_FUNC(sg_row1_8, SG1_LANE1, SG1_UPD1("8"), "0x8180")
SG1_FUNC(sg_row0_24, SG1_LANE0, SG1_UPD0("24"), "0x8181")
SG1_FUNC(sg_row1_24, SG1_LANE1, SG1_UPD1("24"), "0x8180")

/* the ref kernel's step of weight (i, j) on the paired layout */
static void sgd_one(int8_t *w, int i, int j, int32_t c, const int8_t *x, int32_t x_zp,
		    int w_shift, uint32_t d, int n_in, int n_out)
{
	const uint32_t off = kl_fc_paired_offset((uint32_t)i, (uint32_t)j, (uint32_t)n_in,
						 (uint32_t)n_out);
	const uint8_t flip = (i & 1) == 0 && i < (n_out & ~1) ? 0x80u : 0u;
	const int8_t wv = (int8_t)((uint8_t)w[off] ^ flip);
	const int32_t v = c * ((int32_t)x[j] - x_zp);
	w[off] = (int8_t)((uint8_t)kl_sub_clamp_w(wv, kl_stochastic_shift(v, w_shift, d)) ^ flip);
}

/* four steps saturated to int8, bytes (a, b, c, d) */
static inline uint32_t pack4(int32_t a, int32_t b, int32_t c, int32_t d)
{
	const uint32_t e = (uint32_t)__ssat16((int16x2_t)kl_pkhbt((uint32_t)a, (uint32_t)c), 8);
	const uint32_t o = (uint32_t)__ssat16((int16x2_t)kl_pkhbt((uint32_t)b, (uint32_t)d), 8);
	return (uint32_t)__uxtb16(e) | ((uint32_t)__uxtb16(o) << 8);
}

/* one pair in C (a factor outside a halfword): the same steps, the lanes of
 * a row whose factor is zero kept as they are */
static void sgd_pair_c(int8_t *w, int p, int32_t c0, int32_t c1, const uint32_t *xw, uint32_t d0,
		       uint32_t rowd, int dsh, int sh, int n_in, int n_out)
{
	const uint32_t keep = (c0 == 0 ? 0x00FF00FFu : 0u) | (c1 == 0 ? 0xFF00FF00u : 0u);
	uint32_t da = d0 + (uint32_t)(2 * p) * rowd;
	const uint32_t ab = rowd, wy = KL_WEYL;
	int gs;
	uint32_t *wp = (uint32_t *)(void *)(w + kl_fc_pair_at(p, n_in, n_out, &gs)) - 2;
	for (int k = 0; k < n_in >> 1; k += 2) {
		wp += k == 0 ? 2 : gs >> 2;
		const uint32_t xa = xw[k], xb = xw[k + 1]; /* (x0, x2), (x1, x3) */
		const int32_t x0 = (int16_t)xa, x2 = (int32_t)xa >> 16;
		const int32_t x1 = (int16_t)xb, x3 = (int32_t)xb >> 16;
		const uint32_t e0 = da, e1 = da + wy, e2 = e1 + wy, e3 = e2 + wy;
		da = e3 + wy;
		/* word k: columns 0, 2; word k + 1: columns 1, 3 */
		const uint32_t s0 = pack4((c0 * x0 + (int32_t)(e0 >> dsh)) >> sh,
					  (c1 * x0 + (int32_t)((e0 + ab) >> dsh)) >> sh,
					  (c0 * x2 + (int32_t)(e2 >> dsh)) >> sh,
					  (c1 * x2 + (int32_t)((e2 + ab) >> dsh)) >> sh);
		const uint32_t s1 = pack4((c0 * x1 + (int32_t)(e1 >> dsh)) >> sh,
					  (c1 * x1 + (int32_t)((e1 + ab) >> dsh)) >> sh,
					  (c0 * x3 + (int32_t)(e3 >> dsh)) >> sh,
					  (c1 * x3 + (int32_t)((e3 + ab) >> dsh)) >> sh);
		const uint32_t o0 = wp[0], o1 = wp[1];
		const uint32_t n0 =
			kl_clamp_m127_s8x4((uint32_t)__qsub8((int8x4_t)(o0 ^ 0x00800080u), (int8x4_t)s0)) ^
			0x00800080u;
		const uint32_t n1 =
			kl_clamp_m127_s8x4((uint32_t)__qsub8((int8x4_t)(o1 ^ 0x00800080u), (int8x4_t)s1)) ^
			0x00800080u;
		wp[0] = (n0 & ~keep) | (o0 & keep);
		wp[1] = (n1 & ~keep) | (o1 & keep);
	}
}

/* Weights of a paired layer are in [-127, 127] (kl_model_init pairs no layer
 * holding -128; every step clamps to the range), so the zero steps of a row
 * whose factor is zero leave it as it is, as the ref kernel, which skips it. */
void kl_dsp_fully_connected_sgd_paired_s8(int8_t *w, int32_t *b, const int8_t *dy,
					  const int8_t *x, int32_t x_zp, int32_t lr_q, int w_shift,
					  int b_shift, uint32_t *dither, int n_in, int n_out,
					  int16_t *scratch)
{
	const uint32_t d0 = *dither;
	const uint32_t rowd = (uint32_t)n_in * KL_WEYL; /* a row's dither advance */
	const int np = n_out >> 1;
	*dither = d0 + (uint32_t)n_out * rowd;
	if (w_shift < 13 || w_shift > 30) { /* rare: weight by weight */
		for (int i = 0; i < n_out; i++) {
			const int32_t c = (int32_t)dy[i] * lr_q;
			if (c == 0) {
				continue;
			}
			const uint32_t d = d0 + (uint32_t)i * rowd;
			for (int j = 0; j < n_in; j++) {
				sgd_one(w, i, j, c, x, x_zp, w_shift, d + (uint32_t)j * KL_WEYL, n_in,
					n_out);
			}
			b[i] = kl_sat32((int64_t)b[i] - kl_rshift_round(c, b_shift));
		}
		return;
	}
	int16_t *xc = scratch; /* centred, each group of four as (0, 2, 1, 3) */
	kl_center_interleave_s8(x, x_zp, xc, n_in);
	uint32_t *xw = (uint32_t *)(void *)xc;
	xw[n_in >> 1] = 0x80008000u; /* sg_pair's sentinel */
	const int sh = w_shift, dsh = 32 - sh;
	const int ntp = kl_fc_triples(n_in) ? 3 * (np / 3) : 0; /* pairs in blocks of three */
	sg_t a;
	a.ab = rowd;
	a.wy = KL_WEYL;
	a.dsh = dsh;
	a.sh = sh;
	a.xp = xw;
	for (int p = 0; p < np; p++) {
		const int32_t c0 = (int32_t)dy[2 * p] * lr_q, c1 = (int32_t)dy[2 * p + 1] * lr_q;
		if (c0 == 0 && c1 == 0) {
			continue;
		}
		if (c0 >= -32768 && c0 <= 32767 && c1 >= -32768 && c1 <= 32767) {
			a.c = ((uint32_t)c0 & 0xFFFFu) | ((uint32_t)c1 << 16);
			a.da = d0 + (uint32_t)(2 * p) * rowd;
			const int gs = p < ntp ? 24 : 8;
			a.rp = (uint32_t *)(void *)(w + (p < ntp ? (long)(p / 3) * 6 * n_in + 8 * (p % 3)
							 : (long)p * 2 * n_in));
			if (c1 == 0) {
				(gs == 8 ? sg_row0_8 : sg_row0_24)(&a);
			} else if (c0 == 0) {
				a.c = (uint32_t)c1 & 0xFFFFu;
				a.da += rowd;
				(gs == 8 ? sg_row1_8 : sg_row1_24)(&a);
			} else {
				(gs == 8 ? sg_pair8 : sg_pair24)(&a);
			}
		} else {
			sgd_pair_c(w, p, c0, c1, xw, d0, rowd, dsh, sh, n_in, n_out);
		}
		if (c0 != 0) {
			b[2 * p] = __qsub(b[2 * p], kl_rshift_round(c0, b_shift));
		}
		if (c1 != 0) {
			b[2 * p + 1] = __qsub(b[2 * p + 1], kl_rshift_round(c1, b_shift));
		}
	}
	if (n_out & 1) { /* the plain last row */
		const int i = n_out - 1;
		const int32_t c = (int32_t)dy[i] * lr_q;
		if (c != 0) {
			int8_t *row = w + (long)i * n_in;
			uint32_t d = d0 + (uint32_t)i * rowd;
			for (int j = 0; j < n_in; j++) {
				const int32_t v = c * xc[j + ((j & 3) == 1 ? 1 : (j & 3) == 2 ? -1 : 0)];
				row[j] = kl_sub_clamp_w(row[j], (v + (int32_t)(d >> dsh)) >> sh);
				d += KL_WEYL;
			}
			b[i] = __qsub(b[i], kl_rshift_round(c, b_shift));
		}
	}
}
#else
typedef int kl_dsp_fully_connected_paired_s8_unused;
#endif
