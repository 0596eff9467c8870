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
 * SGD: the walk over the steps that can be non-zero (below: rows with dy !=
 * 0 times inputs off their zero point, a non-zero step applied out of line);
 * where most steps are non-zero, the dense path: per weight word the four
 * steps (dithers by each weight's plain index, so the sequence is the ref
 * kernel's), saturated, packed in the word's byte order, one QSUB8 with the
 * flip undone, -128 lifted to -127; lanes of a row whose step factor is zero
 * are left as they are (the ref kernel skips it). */
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

/* The fused SGD step, visiting only the weights whose step can be non-zero.
 * A weight's step floor((c xc + (u >> (32 - sh))) / 2^sh) (c = dy lr_q, xc =
 * x - x_zp, u its dither) is, by nested floors, the high word of the 64-bit
 * u + c X with X = xc << (32 - sh): one SMLAL onto (high 0, low u). A zero xc
 * makes a zero step, so the columns with x != x_zp are listed once per call,
 * 12 bytes each: (j W, X, the byte offset of column j in a pair's block for
 * group stride 24 | that for 8 << 16), padded with zero entries to a multiple
 * of four; every row with c != 0 walks the list in a naked assembly loop, 4
 * instructions per weight (LDRD, ADD, SMLAL, CBNZ): the high word stays 0
 * through the zero steps, and a non-zero one (a few per cent) is applied out
 * of line (SG_STEP). Where most steps are non-zero the dense path below
 * (sgd_dense) costs less; dense_pays decides.
 *
 * The rows of one region of the layout: its blocks of P rows (P = 6: three
 * pairs interleaved, group stride 24; P = 2: a pair, stride 8), bs = P n_in
 * bytes each. The scan skips the rows with dy == 0 (4 instructions each); for
 * row i of the region found, c = dy lr_q in r3, block t = umulhi(i, magic)
 * (exact for i < 2^31: magic = ceil(2^32 / 6), or 2^31), r = i - t P, its
 * first byte w + t bs + 8 (r >> 1) + (r & 1) in r8, r10 0x80 for r odd, its
 * dither d + i rowd in r2; its bias steps by kl_rshift_round(c, b_shift)
 * (b_shift in [-30, 31]: below 1 c << -b_shift saturated; b NULL: the caller
 * steps the biases), then the row walks the list. */
typedef struct {
	const uint32_t *list, *end; /* 0, 4 */
	uint32_t d;                 /* 8: the region's first row's dither */
	int32_t lr_q;               /* 12 */
	const int8_t *dyb;          /* 16: the region's first dy + 1 */
	uint32_t rowd;              /* 20: n_in W */
	uint32_t magic;             /* 24 */
	int32_t p;                  /* 28: rows per block */
	int8_t *w;                  /* 32: the region's first block */
	int32_t bs;                 /* 36: bytes per block */
	int32_t *b;                 /* 40: the region's first bias, or NULL */
	int32_t b_shift;            /* 44 */
	int32_t b_mask, b_half;     /* 48, 52: 2^b_shift - 1, b_mask >> 1 */
	int32_t sel;                /* 56: offset halfword from an entry's end: -4 or -2 */
	const int8_t *dy_end;       /* 60 */
	const int8_t *dy;           /* 64 */
} sg_t;

/* one entry: r4 (the high word, 0) gets the step; non-zero: to R */
#define SG_SLOT(R) \
	"ldrd r6, r7, [r0], #12\n\t" \
	"adds r5, r2, r6\n\t" \
	"smlal r5, r4, r3, r7\n\t" \
	"cbnz r4, " R "\n\t"

/* the non-zero step r4 of the entry before r0: clamped to int8, subtracted
 * from the weight's byte read as u = w + 128 in [1, 255] (r10: 0 for row 0
 * of a pair, stored so, 0x80 for row 1), clamped to [1, 255] (w' in [-127,
 * 127]); r4 back to 0, on at NEXT */
#define SG_STEP(NEXT) \
	"ldrh r7, [r0, r9]\n\t" \
	"ldrb r5, [r8, r7]\n\t" \
	"eor r5, r5, r10\n\t" \
	"ssat r4, #8, r4\n\t" \
	"subs r5, r5, r4\n\t" \
	"usat r5, #8, r5\n\t" \
	"cbnz r5, 7f\n\t" \
	"movs r5, #1\n\t" \
	"7:\n\t" \
	"eor r5, r5, r10\n\t" \
	"strb r5, [r8, r7]\n\t" \
	"movs r4, #0\n\t" \
	"b " NEXT "\n\t"

__attribute__((naked, noinline)) static void sg_rows(const sg_t *a __attribute__((unused)))
{
	__asm__ volatile("push {r4-r11, lr}\n\t"
			 "mov r12, r0\n\t"
			 "ldr r11, [r12, #64]\n\t"
			 "ldr r6, [r12, #60]\n\t"
			 "ldr r9, [r12, #56]\n\t" /* sel */
			 "movs r4, #0\n\t"
			 "20:\n\t"
			 "ldrsb r3, [r11], #1\n\t"
			 "cbnz r3, 21f\n\t"
			 "cmp r11, r6\n\t"
			 "bne 20b\n\t"
			 "pop {r4-r11, pc}\n\t"
			 "21:\n\t"
			 "ldrd r5, r7, [r12, #12]\n\t" /* lr_q, dyb */
			 "mul r3, r3, r5\n\t"
			 "sub r5, r11, r7\n\t" /* i */
			 "ldrd r6, r7, [r12, #20]\n\t" /* rowd, magic */
			 "ldr r2, [r12, #8]\n\t"
			 "mla r2, r5, r6, r2\n\t"
			 "umull r6, r7, r5, r7\n\t" /* r7 = t */
			 "ldr r6, [r12, #28]\n\t"
			 "mls r6, r7, r6, r5\n\t" /* r */
			 "ldrd r8, r10, [r12, #32]\n\t" /* w, bs */
			 "mla r8, r7, r10, r8\n\t"
			 "lsr r10, r6, #1\n\t"
			 "add r8, r8, r10, lsl #3\n\t"
			 "and r10, r6, #1\n\t"
			 "add r8, r8, r10\n\t"
			 "lsl r10, r10, #7\n\t"
			 "ldr r7, [r12, #40]\n\t" /* the bias */
			 "cbz r7, 22f\n\t"
			 "add r7, r7, r5, lsl #2\n\t"
			 "ldrd r6, r5, [r12, #44]\n\t" /* b_shift, b_mask */
			 "cmp r6, #0\n\t"
			 "ble 23f\n\t"
			 "and r5, r3, r5\n\t"
			 "ldr r1, [r12, #52]\n\t"
			 "add r1, r1, r3, lsr #31\n\t"
			 "asr r6, r3, r6\n\t"
			 "cmp r5, r1\n\t"
			 "it gt\n\t"
			 "addgt r6, r6, #1\n\t"
			 "b 24f\n\t"
			 "23:\n\t" /* b_shift in [-30, 0]: c << -b_shift, saturated */
			 "rsb r1, r6, #0\n\t"
			 "lsl r6, r3, r1\n\t"
			 "asr r5, r6, r1\n\t"
			 "cmp r5, r3\n\t"
			 "beq 24f\n\t"
			 "mvn r6, r3, asr #31\n\t"
			 "eor r6, r6, #0x80000000\n\t"
			 "24:\n\t"
			 "ldr r5, [r7]\n\t"
			 "qsub r5, r5, r6\n\t"
			 "str r5, [r7]\n\t"
			 "22:\n\t"
			 "ldrd r0, r1, [r12]\n\t"
			 "1:\n\t" SG_SLOT("10f") "2:\n\t" SG_SLOT("12f") "3:\n\t" SG_SLOT("13f")
			 "4:\n\t" SG_SLOT("14f") "5:\n\t"
			 "cmp r0, r1\n\t"
			 "bne 1b\n\t"
			 "ldr r6, [r12, #60]\n\t"
			 "cmp r11, r6\n\t"
			 "bne 20b\n\t"
			 "pop {r4-r11, pc}\n\t"
			 /* the step of the entry before r0, then on: a copy per slot
			  * (slot 0's past the others, in reach of CBNZ) */
			 "10:\n\t"
			 "b 11f\n\t"
			 "12:\n\t" SG_STEP("3b") "13:\n\t" SG_STEP("4b") "14:\n\t" SG_STEP("5b")
			 "11:\n\t" SG_STEP("2b"));
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
} sd_t;

/* the four steps of word X (columns c: bottom, c': top), da at column c; da
 * ends at column c' */
#define SD_STEPS(X) \
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
#define SD_UPDATE(X, INC) \
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
#define SD_FUNC(name, GS2) \
	__attribute__((naked, noinline)) static void name(const sd_t *a __attribute__((unused))) \
	{ \
		__asm__ volatile("push {r4-r11, lr}\n\t" \
				 "ldm r0, {r0-r7}\n\t" \
				 "ldrd r8, r9, [r6], #8\n\t" \
				 "cmp r8, #0x80008000\n\t" \
				 "beq 2f\n\t" \
				 "1:\n\t" SD_STEPS("r8") "sub r5, r5, r2\n\t" SD_UPDATE("r8", "4") \
				 SD_STEPS("r9") "add r5, r5, r2\n\t" SD_UPDATE("r9", GS2) \
				 "ldrd r8, r9, [r6], #8\n\t" \
				 "cmp r8, #0x80008000\n\t" \
				 "bne 1b\n\t" \
				 "2:\n\t" \
				 "pop {r4-r11, pc}\n\t"); \
	}
SD_FUNC(sd_pair8, "4")
SD_FUNC(sd_pair24, "20")

/* One row of a pair (the other's factor is zero: its steps are zero and its
 * lanes stay as they are): per two weight words the row's four steps, the
 * bytes placed in its lanes (LANE: "" for row 0's bytes 0 and 2, a shift by
 * 8 for row 1's), both words updated with one LDRD / STRD (36 to 38
 * instructions per four weights). r0 = the factor (bottom halfword), r5 = the row's
 * dither at column 0; r1 unused. */
#define SD1_WORD(X, S, LANE, ADJ) \
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
#define SD1_UPD0(GS) \
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
#define SD1_UPD1(GS) \
	"ldrd r8, r9, [r7]\n\t" \
	"qsub8 r8, r8, r11\n\t" \
	"qsub8 r9, r9, r12\n\t" \
	"ssub8 r11, r8, lr\n\t" \
	"sel r8, r8, lr\n\t" \
	"ssub8 r11, r9, lr\n\t" \
	"sel r9, r9, lr\n\t" \
	"strd r8, r9, [r7], #" GS "\n\t"
#define SD1_FUNC(name, LANE, UPD, K) \
	__attribute__((naked, noinline)) static void name(const sd_t *a __attribute__((unused))) \
	{ \
		__asm__ volatile("push {r4-r11, lr}\n\t" \
				 "ldm r0, {r0-r7}\n\t" \
				 "movw lr, #" K "\n\t" \
				 "movt lr, #" K "\n\t" \
				 "ldrd r8, r9, [r6], #8\n\t" \
				 "cmp r8, #0x80008000\n\t" \
				 "beq 2f\n\t" \
				 "1:\n\t" SD1_WORD("r8", "r11", LANE("r11"), "sub r5, r5, r2\n\t") \
				 SD1_WORD("r9", "r12", LANE("r12"), "add r5, r5, r2\n\t") UPD \
				 "ldrd r8, r9, [r6], #8\n\t" \
				 "cmp r8, #0x80008000\n\t" \
				 "bne 1b\n\t" \
				 "2:\n\t" \
				 "pop {r4-r11, pc}\n\t"); \
	}
#define SD1_LANE0(S) ""
#define SD1_LANE1(S) "lsl " S ", " S ", #8\n\t"
SD1_FUNC(sd_row0_8, SD1_LANE0, SD1_UPD0("8"), "0x8181")
SD1_FUNC(sd_row1_8, SD1_LANE1, SD1_UPD1("8"), "0x8180")
SD1_FUNC(sd_row0_24, SD1_LANE0, SD1_UPD0("24"), "0x8181")
SD1_FUNC(sd_row1_24, SD1_LANE1, SD1_UPD1("24"), "0x8180")


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


/* The dense path (most steps non-zero: large gradients): every weight of a
 * row with c != 0, four per weight word of a pair (steps that fit a
 * halfword: 13 <= w_shift <= 30); 7.75 instructions per weight of a pair of
 * rows, where the sparse walk's out-of-line steps would cost more. */
__attribute__((noinline)) static void sgd_dense(int8_t *w, int32_t *b, const int8_t *dy, const int8_t *x, int32_t x_zp,
		      int32_t lr_q, int w_shift, int b_shift, uint32_t d0, int n_in, int n_out,
		      int16_t *scratch)
{
	const uint32_t rowd = (uint32_t)n_in * KL_WEYL;
	const int np = n_out >> 1;
	int16_t *xc = scratch; /* centred, each group of four as (0, 2, 1, 3) */
	kl_center_interleave_s8(x, x_zp, xc, n_in);
	uint32_t *xw = (uint32_t *)(void *)xc;
	xw[n_in >> 1] = 0x80008000u; /* sd_pair's sentinel */
	const int sh = w_shift, dsh = 32 - sh;
	const int ntp = kl_fc_triples(n_in) ? 3 * (np / 3) : 0; /* pairs in blocks of three */
	sd_t a;
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
				(gs == 8 ? sd_row0_8 : sd_row0_24)(&a);
			} else if (c0 == 0) {
				a.c = (uint32_t)c1 & 0xFFFFu;
				a.da += rowd;
				(gs == 8 ? sd_row1_8 : sd_row1_24)(&a);
			} else {
				(gs == 8 ? sd_pair8 : sd_pair24)(&a);
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

/* Does the dense path pay? The walk costs about 4.5 instructions per listed
 * input of a row and 16 per non-zero step, the dense path about 8 per
 * weight: it pays where nearly every step is non-zero, as where their mean
 * magnitude is 4 or more. The sum of |step| expected is E = lr_q sum|dy|
 * sum|x - x_zp| / 2^sh (sum|dy| over the rows, the other over the inputs
 * listed: q to qe, the list's first part, which covers n_done of the n_in
 * inputs: scaled up to all); dense where E >= 4 n_out N (N inputs listed,
 * scaled). First with |x - x_zp| <= 255: the sum is taken only where that
 * bound leaves the question open (as it seldom does in training, where
 * steps are small and the walk is the faster by far). */
__attribute__((noinline)) static int dense_pays(uint64_t u, const uint32_t *q, const uint32_t *qe,
						int dsh, int n_done, int n_in, int n_out)
{
	const uint32_t nq = (uint32_t)(qe - q) / 3u;
	/* (32-bit: nq, n_in < 2^15) */
	const uint32_t n = n_done == n_in ? nq : nq * (uint32_t)n_in / (uint32_t)n_done;
	if (n == 0u) {
		return 0;
	}
	if (u >= ((uint64_t)1 << 32)) {
		return 1;
	}
	uint32_t sx = 0; /* (< 2^8 2^15) */
	for (; q != qe; q += 3) {
		const int32_t v = (int32_t)q[1] >> dsh;
		sx += (uint32_t)(v < 0 ? -v : v);
	}
	const uint64_t sxa = n_done == n_in ? sx : (uint64_t)sx * (uint32_t)n_in / (uint32_t)n_done;
	return ((u * sxa) >> (32 - dsh)) >= 4u * (uint64_t)(uint32_t)n_out * n;
}

/* The list of one part: from the group of four inputs at x on, while the
 * list ends at or before e_lim and inputs are left, each input x != x_zp
 * listed as (j W, (x - x_zp) << dsh, its offsets go + (4 (j & 1) + 2 (j & 2
 * != 0)) * 0x10001); a group whose four inputs are at the zero point is
 * skipped in 7 instructions. e, x, jw and go are left where the part ends. */
typedef struct {
	uint32_t *e;         /* 0 */
	const int8_t *x;     /* 4 */
	const int8_t *x_end; /* 8 */
	uint32_t *e_lim;     /* 12 */
	uint32_t jw, go;     /* 16, 20: the group's first j W and offsets */
	uint32_t zz;         /* 24: x_zp in each byte */
	int32_t zp, dsh;     /* 28, 32 */
	uint32_t gstep;      /* 36: the offsets' advance per group */
} sl_t;

/* input k of the group (its byte at r1 - 4 + k): JW, OFF make its entry */
#define SL_COL(K, NEXT, JW, OFF) \
	"ldrsb r10, [r1, #" K "]\n\t" \
	"subs r10, r10, r7\n\t" \
	"beq " NEXT "\n\t" \
	"lsl r11, r10, r8\n\t" JW OFF \
	"stm r0!, {r10, r11, lr}\n\t"

__attribute__((naked, noinline)) static void sg_list(sl_t *l __attribute__((unused)))
{
	__asm__ volatile("push {r0, r4-r11, lr}\n\t"
			 "ldm r0, {r0-r9}\n\t"
			 "movw r12, #0x79B9\n\t"
			 "movt r12, #0x9E37\n\t" /* KL_WEYL */
			 "1:\n\t"
			 "ldr r10, [r1], #4\n\t"
			 "cmp r10, r6\n\t"
			 "beq 8f\n\t"
			 SL_COL("-4", "2f", "mov r10, r4\n\t", "mov lr, r5\n\t")
			 "2:\n\t"
			 SL_COL("-3", "3f", "add r10, r4, r12\n\t", "add lr, r5, #0x40004\n\t")
			 "3:\n\t"
			 SL_COL("-2", "4f", "add r10, r4, r12, lsl #1\n\t", "add lr, r5, #0x20002\n\t")
			 "4:\n\t"
			 SL_COL("-1", "5f", "add r10, r4, r12, lsl #1\n\tadd r10, r10, r12\n\t",
				"add lr, r5, #0x60006\n\t")
			 "5:\n\t"
			 "add r4, r4, r12, lsl #2\n\t"
			 "add r5, r5, r9\n\t"
			 "cmp r1, r2\n\t"
			 "beq 9f\n\t"
			 "cmp r0, r3\n\t"
			 "bls 1b\n\t"
			 "b 9f\n\t"
			 "8:\n\t"
			 "add r4, r4, r12, lsl #2\n\t"
			 "add r5, r5, r9\n\t"
			 "cmp r1, r2\n\t"
			 "bne 1b\n\t"
			 "9:\n\t"
			 "pop {r12}\n\t"
			 "strd r0, r1, [r12]\n\t"
			 "strd r4, r5, [r12, #16]\n\t"
			 "pop {r4-r11, pc}\n\t");
}

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

/* Weights of a paired layer are in [-127, 127] (kl_model_init pairs no layer
 * holding -128; every step clamps to the range). */
void kl_dsp_fully_connected_sgd_paired_s8(int8_t *w, int32_t *b, const int8_t *dy,
					  const int8_t *x, int32_t x_zp, int32_t lr_q, int w_shift,
					  int b_shift, uint32_t *dither, int n_in, int n_out,
					  int16_t *scratch)
{
	const uint32_t d0 = *dither;
	const uint32_t rowd = (uint32_t)n_in * KL_WEYL; /* a row's dither advance */
	const int np = n_out >> 1;
	*dither = d0 + (uint32_t)n_out * rowd;
	uint32_t any = 0; /* a gradient that is not zero (often none) */
	uint32_t sad = 0; /* the sum of |dy| (USADA8 of dy ^ 0x80 and 0x80) */
	int k = 0;
	for (; k + 4 <= n_out; k += 4) {
		const uint32_t v = kl_read_s8x4(dy + k);
		any |= v;
		sad = __usada8(v ^ 0x80808080u, 0x80808080u, sad);
	}
	for (; k < n_out; k++) {
		any |= (uint8_t)dy[k];
		sad += (uint32_t)(dy[k] < 0 ? -dy[k] : dy[k]);
	}
	if (any == 0u) {
		return;
	}
	/* could the dense path pay (dense_pays, with |x - x_zp| <= 255)? */
	const uint64_t u = (uint64_t)(lr_q < 0 ? 0u - (uint32_t)lr_q : (uint32_t)lr_q) * sad;
	const int maybe_dense = w_shift >= 13 && w_shift <= 30 &&
				u * 255u >= ((uint64_t)(4u * (uint32_t)n_out) << w_shift);
	if (w_shift < 9 || w_shift > 30 || n_in > KL_FC_SGD_LIST_MAX) { /* rare: weight by weight */
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
	/* the list: X = xc << dsh fits (|xc| <= 255, dsh <= 23); the offsets of a
	 * group of four columns (24 g | 8 g << 16) advance by one constant (8 | 8
	 * << 16 where no pair is in a block of three: 8 g < 2^16 for any n_in up to
	 * KL_FC_SGD_LIST_MAX), a column's (4 (j & 1) + 2 (j & 2 != 0)) * 0x10001
	 * added; a group whose four inputs are at the zero point is skipped. The
	 * list holds what the scratch does (KL_FC_SGD_S8_SCRATCH: at least
	 * KL_FC_SGD_LIST entries): more non-zero inputs are walked in parts. */
	const int dsh = 32 - w_shift;
	const int tri = kl_fc_triples(n_in);
	const uint32_t gstep = tri ? 24u | (8u << 16) : 8u | (8u << 16);
	const uint32_t zz = ((uint32_t)x_zp & 0xFFu) * 0x01010101u;
	uint32_t *const list = (uint32_t *)(void *)scratch;
	/* a part ends where a group of four might not fit with the padding */
	const long room = (long)(KL_FC_SGD_S8_SCRATCH((uint32_t)n_in, (uint32_t)n_out) / 12u) * 3 - 21;
	const int ntp = tri ? 3 * (np / 3) : 0; /* pairs in blocks of three */
	const int bias_here = b_shift >= -30 && b_shift <= 31;
	sg_t a;
	a.list = list;
	a.lr_q = lr_q;
	a.rowd = rowd;
	a.b_shift = b_shift;
	a.b_mask = (int32_t)((1u << (b_shift & 31)) - 1u);
	a.b_half = a.b_mask >> 1;
	sl_t l;
	l.x = x;
	l.x_end = x + n_in; /* (n_in % 4 == 0) */
	l.e_lim = list + room;
	l.jw = 0;
	l.go = 0;
	l.zz = zz;
	l.zp = x_zp;
	l.dsh = dsh;
	l.gstep = gstep;
	for (int part = 0; part == 0 || l.x != l.x_end; part++) {
		l.e = list;
		if (l.x != l.x_end) {
			sg_list(&l);
		}
		uint32_t *e = l.e;
		const uint32_t *const end = e;
		if (end == list && part > 0) {
			break; /* (the biases stepped with the first part) */
		}
		/* four entries a pass, one pass at least: zero entries after the
		 * list, up to the next multiple of four */
		const uint32_t ne = (uint32_t)(e - list) / 3u;
		if (part == 0 && maybe_dense &&
		    dense_pays(u, list, e, dsh, (int)(l.x - x), n_in, n_out)) {
			sgd_dense(w, b, dy, x, x_zp, lr_q, w_shift, b_shift, d0, n_in, n_out, scratch);
			return;
		}
		const uint32_t pad = ne == 0u ? 4u : (0u - ne) & 3u;
		for (uint32_t k = 0; k < 3u * pad; k++) {
			e[k] = 0;
		}
		e += 3u * pad;
		a.end = e;
		/* the blocks of three pairs, then the pairs after them */
		for (int r = 0; r < 2; r++) {
			const int i0 = r == 0 ? 0 : 2 * ntp, i1 = r == 0 ? 2 * ntp : 2 * np;
			if (i0 == i1) {
				continue;
			}
			a.d = d0 + (uint32_t)i0 * rowd;
			a.dy = dy + i0;
			a.dyb = dy + i0 + 1;
			a.dy_end = dy + i1;
			a.magic = r == 0 ? 0x2AAAAAABu : 0x80000000u;
			a.p = r == 0 ? 6 : 2;
			a.w = w + (long)i0 * n_in;
			a.bs = a.p * n_in;
			a.b = bias_here && part == 0 ? b + i0 : NULL;
			a.sel = r == 0 ? -4 : -2;
			sg_rows(&a);
		}
		if (n_out & 1) { /* the plain last row */
			const int i = n_out - 1;
			const int32_t c = (int32_t)dy[i] * lr_q;
			int8_t *row = w + (long)i * n_in;
			const uint32_t d = d0 + (uint32_t)i * rowd;
			for (const uint32_t *q = list; q != end && c != 0; q += 3) {
				const int32_t st = (int32_t)(((int64_t)c * (int32_t)q[1] + (d + q[0])) >> 32);
				if (st != 0) {
					const uint32_t jj = q[0] * KL_WEYL_INV;
					row[jj] = kl_sub_clamp_w(row[jj], st);
				}
			}
		}
	}
	if (!bias_here) { /* b_shift < -30 or > 31 */
		for (int i = 0; i < 2 * np; i++) {
			const int32_t c = (int32_t)dy[i] * lr_q;
			if (c != 0) {
				b[i] = __qsub(b[i], kl_rshift_round(c, b_shift));
			}
		}
	}
	if (n_out & 1) {
		const int i = n_out - 1;
		const int32_t c = (int32_t)dy[i] * lr_q;
		if (c != 0) {
			b[i] = __qsub(b[i], kl_rshift_round(c, b_shift));
		}
	}
}
#else
typedef int kl_dsp_fully_connected_paired_s8_unused;
#endif
