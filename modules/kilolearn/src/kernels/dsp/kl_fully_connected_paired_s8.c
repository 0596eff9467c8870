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
 * of line: clamped to int8, subtracted from the weight's byte (the flip of
 * a pair's row 0 undone and redone), the result clamped to [-127, 127]. */
/* The rows of one region of the layout: its blocks of P rows (P = 6: three
 * pairs interleaved, group stride 24; P = 2: a pair, stride 8), bs = P n_in
 * bytes each. The scan skips the rows with dy == 0 (4 instructions each); for
 * row i of the region found, c = dy lr_q in r3, block t = umulhi(i, magic)
 * (exact for i < 2^31: magic = ceil(2^32 / 6), or 2^31), r = i - t P, its
 * first byte w + t bs + 8 (r >> 1) + (r & 1) in r8, flip 0x80 for r even, its
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
 * from the weight's byte (row 0's flip undone and redone), the weight
 * clamped to [-127, 127]; r4 back to 0, on at NEXT */
#define SG_STEP(NEXT) \
	"ldrh r7, [r0, r9]\n\t" \
	"ldrb r5, [r8, r7]\n\t" \
	"eor r5, r5, r10\n\t" \
	"sxtb r5, r5\n\t" \
	"ssat r4, #8, r4\n\t" \
	"subs r5, r5, r4\n\t" \
	"ssat r5, #8, r5\n\t" \
	"cmn r5, #128\n\t" \
	"it eq\n\t" \
	"mvneq r5, #126\n\t" \
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
			 "eor r10, r10, #1\n\t"
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
	int k = 0;
	for (; k + 4 <= n_out; k += 4) {
		any |= kl_read_s8x4(dy + k);
	}
	for (; k < n_out; k++) {
		any |= (uint8_t)dy[k];
	}
	if (any == 0u) {
		return;
	}
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
