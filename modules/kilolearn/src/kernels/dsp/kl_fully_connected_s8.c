/* Fully connected layer, int8, dsp backend: SMLAD on sign-extended weight pairs against the
 * input centred once into int16 words, reordered per group of four inputs to match
 * SXTB16 / SXTB16 ROR 8 of a weight word (kl_center_interleave_s8).
 *
 * fast path   n_in % 8 == 0, word-aligned weights, the usual shifts (fc_fast): three rows
 *             per step in a naked assembly loop (LDM of the input, LDRD per row, 28
 *             instructions per 24 MACs), bias folded per row into the accumulator so an
 *             output is ASR + SSAT; the last n_out % 3 rows by the same loop on two
 *             rows (19 instructions per 16 MACs) or one (10 per 8); the saturation
 *             flag is read from the outputs.
 * otherwise   (fc_general) four rows per step (LDRD of the input, LDR per row) where
 *             n_in % 4 == 0, then two and one; output stage kl_dsp_requant_n. */
#include "kilolearn/kl_kernels.h"

#if KL_KERNELS_DSP
#include "kl_dsp_util.h"

int8_t kl_dsp_requant_one(const kl_requant_t *rq, int32_t dot, int32_t bias, int *sat)
{
	return kl_requant(rq, dot, bias, sat);
}

/* the output stage out of line: its loop keeps its constants in registers */
static __attribute__((noinline)) int requant_dots(const int32_t *dots, const int32_t *b,
						  const kl_requant_t *rq, int8_t *y, int n)
{
	return kl_dsp_requant_n(dots, b, rq, y, n);
}

static inline int32_t dot_tail(const int8_t *row, const int16_t *xc, int j, int n)
{
	int32_t acc = 0;
	for (; j < n; j++) {
		acc += (int32_t)row[j] * xc[j];
	}
	return acc;
}

#define MAC4(acc, w)                                                                              \
	do {                                                                                      \
		acc = kl_smlad(kl_sxtb16(w), xe, acc);                                            \
		acc = kl_smlad(kl_sxtb16_ror8(w), xo, acc);                                       \
	} while (0)

/* one row against the centred input: a word of four weights per two input
 * words, then the tail */
static inline int32_t dot_row(const int8_t *r0, const uint32_t *xw, const int16_t *xc, int n4,
			      int n_in)
{
	const uint32_t *xp = xw;
	int32_t a0 = 0;
	for (int j = 0; j < n4; j += 4) {
		const uint32_t xe = xp[0], xo = xp[1];
		xp += 2;
		const uint32_t w0 = kl_read_s8x4(r0 + j);
		MAC4(a0, w0);
	}
	return a0 + dot_tail(r0, xc, n4, n_in);
}

/* four inputs of four rows: rows 0, 1 at p0, p0 + st, rows 2, 3 at p2, p2 + st */
#define FC4_STEP                                                                                  \
	"ldrd %[xe], %[xo], [%[xp]], #8\n\t"                                                     \
	"ldr %[v], [%[p0], %[st]]\n\t"                                                           \
	"sxtb16 %[t], %[v]\n\t"                                                                  \
	"smlad %[a1], %[t], %[xe], %[a1]\n\t"                                                    \
	"sxtb16 %[t], %[v], ror #8\n\t"                                                          \
	"smlad %[a1], %[t], %[xo], %[a1]\n\t"                                                    \
	"ldr %[v], [%[p0]], #4\n\t"                                                              \
	"sxtb16 %[t], %[v]\n\t"                                                                  \
	"smlad %[a0], %[t], %[xe], %[a0]\n\t"                                                    \
	"sxtb16 %[t], %[v], ror #8\n\t"                                                          \
	"smlad %[a0], %[t], %[xo], %[a0]\n\t"                                                    \
	"ldr %[v], [%[p2], %[st]]\n\t"                                                           \
	"sxtb16 %[t], %[v]\n\t"                                                                  \
	"smlad %[a3], %[t], %[xe], %[a3]\n\t"                                                    \
	"sxtb16 %[t], %[v], ror #8\n\t"                                                          \
	"smlad %[a3], %[t], %[xo], %[a3]\n\t"                                                    \
	"ldr %[v], [%[p2]], #4\n\t"                                                              \
	"sxtb16 %[t], %[v]\n\t"                                                                  \
	"smlad %[a2], %[t], %[xe], %[a2]\n\t"                                                    \
	"sxtb16 %[t], %[v], ror #8\n\t"                                                          \
	"smlad %[a2], %[t], %[xo], %[a2]\n\t"

static int fc_general(const int8_t *x, int32_t x_zp, const int8_t *w, const int32_t *b,
		      const kl_requant_t *rq, int8_t *y, int n_in, int n_out, int16_t *scratch)
{
	kl_center_interleave_s8(x, x_zp, scratch, n_in);
	const uint32_t *xw = (const uint32_t *)(const void *)scratch;
	/* raw dot products after the centred input, 4-aligned */
	int32_t *dots = (int32_t *)(void *)(scratch + ((n_in + 1) & ~1));
	const int n4 = n_in & ~3;
	int i = 0;
	const int n8 = n_in & ~7;
	if (n4 == n_in && n_in >= 4) { /* four rows share each input pair */
		const long st = n_in;
		for (; i + 4 <= n_out; i += 4) {
			const int8_t *p0 = w + (long)i * n_in; /* rows 0 and 1 (at + st) */
			const int8_t *p2 = p0 + 2 * st;       /* rows 2 and 3 */
			const int8_t *const end = p0 + n_in;
			int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
			const uint32_t *xp = xw;
			uint32_t xe, xo, v, t;
			/* per four inputs: one LDRD of the centred pair, per row one LDR,
			 * two SXTB16 and two SMLAD (21 instructions per 16 MACs); eight
			 * inputs per loop pass when n_in % 8 == 0 */
			if (n_in & 4) {
				__asm__("1:\n\t" FC4_STEP
					"cmp %[p0], %[end]\n\t"
					"bne 1b\n\t"
					: [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3),
					  [p0] "+r"(p0), [p2] "+r"(p2), [xp] "+r"(xp), [xe] "=&r"(xe),
					  [xo] "=&r"(xo), [v] "=&r"(v), [t] "=&r"(t)
					: [st] "r"(st), [end] "r"(end)
					: "cc", "memory");
			} else {
				__asm__("1:\n\t" FC4_STEP FC4_STEP
					"cmp %[p0], %[end]\n\t"
					"bne 1b\n\t"
					: [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3),
					  [p0] "+r"(p0), [p2] "+r"(p2), [xp] "+r"(xp), [xe] "=&r"(xe),
					  [xo] "=&r"(xo), [v] "=&r"(v), [t] "=&r"(t)
					: [st] "r"(st), [end] "r"(end)
					: "cc", "memory");
			}
			dots[i] = a0;
			dots[i + 1] = a1;
			dots[i + 2] = a2;
			dots[i + 3] = a3;
		}
	}
	for (; i + 2 <= n_out; i += 2) {
		const int8_t *r0 = w + (long)i * n_in;
		const int8_t *r1 = r0 + n_in;
		int32_t a0 = 0, a1 = 0;
		const uint32_t *xp = xw;
		int j = 0;
		for (; j < n8; j += 8) {
			uint32_t xe = xp[0], xo = xp[1];
			const uint32_t w0 = kl_read_s8x4(r0 + j);
			const uint32_t w1 = kl_read_s8x4(r1 + j);
			MAC4(a0, w0);
			MAC4(a1, w1);
			xe = xp[2];
			xo = xp[3];
			xp += 4;
			const uint32_t w2 = kl_read_s8x4(r0 + j + 4);
			const uint32_t w3 = kl_read_s8x4(r1 + j + 4);
			MAC4(a0, w2);
			MAC4(a1, w3);
		}
		for (; j < n4; j += 4) {
			const uint32_t xe = xp[0], xo = xp[1];
			xp += 2;
			const uint32_t w0 = kl_read_s8x4(r0 + j);
			const uint32_t w1 = kl_read_s8x4(r1 + j);
			MAC4(a0, w0);
			MAC4(a1, w1);
		}
		if (n4 != n_in) {
			a0 += dot_tail(r0, scratch, n4, n_in);
			a1 += dot_tail(r1, scratch, n4, n_in);
		}
		dots[i] = a0;
		dots[i + 1] = a1;
	}
	for (; i < n_out; i++) {
		dots[i] = dot_row(w + (long)i * n_in, xw, scratch, n4, n_in);
	}
	return requant_dots(dots, b, rq, y, n_out);
}

/* Rows given one by one: the input centred once, then per row one word of
 * four weights against two words of the centred input (two SXTB16, two
 * SMLAD), as fc_general's single rows. */
int kl_dsp_fully_connected_rows_s8(const int8_t *x, int32_t x_zp, const int8_t *const *rows,
				   const int32_t *b, const kl_requant_t *rq, int8_t *y, int n_in,
				   int n_out, int16_t *scratch)
{
	kl_center_interleave_s8(x, x_zp, scratch, n_in);
	const uint32_t *xw = (const uint32_t *)(const void *)scratch;
	int32_t *dots = (int32_t *)(void *)(scratch + ((n_in + 1) & ~1));
	const int n4 = n_in & ~3;
	for (int i = 0; i < n_out; i++) {
		dots[i] = dot_row(rows[i], xw, scratch, n4, n_in);
	}
	return requant_dots(dots, b, rq, y, n_out);
}

/* ---- the fast path: three rows per step in a naked assembly loop ---------
 *
 * Per eight inputs one LDM of the four centred int16 words, per row one LDRD
 * of two weight words, four SXTB16 and four SMLAD (28 instructions per 24
 * MACs). The input loop is unrolled eight times and entered part way (Duff);
 * it ends on a sentinel word after the centred input (lanes of -32768, which
 * no centred value reaches), so the loop costs one CMP and one BNE per 64
 * inputs and all 14 registers hold operands. Each accumulator starts at its
 * folded bias round(b >> b_shift) + k + (zp << y_shift) (kl_rq_k), computed
 * in the group prologue as ((sat(b - (b < 0)) >> (b_shift - 1)) + 2 K' + 1)
 * >> 1 with K' = k + (zp << y_shift), exact for every int32 b; fc_fast checks
 * that no sum can leave int32. An output is then SSAT(acc >> y_shift, 8)
 * (mode A: ReLU with zero point -128), with the round-down of negative sums
 * first (mode N, no activation: acc -= 2 where acc < K' - 1, kl_rq_m) or a
 * clamp to [lo, hi] + zp after (mode G). The saturation flag is read from the
 * outputs (sat_scan). */
typedef struct {
	const int32_t *b; /* bias of row 0 of the next group */
	int32_t bsm1;     /* b_shift - 1 */
	int32_t c2;       /* 2 K' + 1 */
	int32_t n;        /* n_in: row stride */
	const uint32_t *xc; /* centred input, sentinel after it */
	uint32_t entry;   /* set by the function */
	int32_t ys;
	int8_t *y;        /* output of row 0 of the next group */
	const int8_t *wend; /* row 0 + 3 n_in x groups */
	int32_t lo;       /* mode N: K' - 1 (threshold); mode G: lo + zp */
	int32_t hi;       /* mode G: hi + zp */
	const int8_t *w;  /* row 0 */
	int32_t steps;    /* n_in / 8 */
} fc3_t;

#define FC3_SENTINEL 0x80008000u

/* one row of a step: weights at P (post-incremented), accumulator A */
#define FC3_ROW(P, A)                                                                             \
	"ldrd r7, r8, [" P "], #8\n\t"                                                            \
	"sxtb16 r9, r7\n\t"                                                                        \
	"smlad " A ", r9, r0, " A "\n\t"                                                           \
	"sxtb16 r7, r7, ror #8\n\t"                                                                \
	"smlad " A ", r7, r1, " A "\n\t"                                                           \
	"sxtb16 r9, r8\n\t"                                                                        \
	"smlad " A ", r9, r2, " A "\n\t"                                                           \
	"sxtb16 r8, r8, ror #8\n\t"                                                                \
	"smlad " A ", r8, r3, " A "\n\t"

/* a step after its LDM (108 bytes: every instruction 32-bit) */
#define FC3_REST FC3_ROW("r10", "r4") FC3_ROW("r11", "r5") FC3_ROW("r12", "r6")
#define FC3_LDM "ldm.w lr!, {r0-r3}\n\t"
#define FC3_STEP FC3_LDM FC3_REST

/* folded bias of one row: b in B, into A (r1 = b_shift - 1, r2 = 2 K' + 1) */
#define FC3_BIAS(B, A)                                                                            \
	"asr " A ", " B ", #31\n\t"                                                                \
	"qadd " A ", " B ", " A "\n\t"                                                             \
	"asr " A ", " A ", r1\n\t"                                                                 \
	"add " A ", " A ", r2\n\t"                                                                 \
	"asr " A ", " A ", #1\n\t"

#define FC3_SHIFT_SAT                                                                             \
	"asr r4, r4, r7\n\t"                                                                       \
	"asr r5, r5, r7\n\t"                                                                       \
	"asr r6, r6, r7\n\t"                                                                       \
	"ssat r4, #8, r4\n\t"                                                                      \
	"ssat r5, #8, r5\n\t"                                                                      \
	"ssat r6, #8, r6\n\t"

#define FC3_STORE                                                                                 \
	"strb r4, [r8], #1\n\t"                                                                    \
	"strb r5, [r8], #1\n\t"                                                                    \
	"strb r6, [r8], #1\n\t"                                                                    \
	"str r8, [sp, #28]\n\t"

#define FC3_OUT_A "ldrd r7, r8, [sp, #24]\n\t" FC3_SHIFT_SAT FC3_STORE

#define FC3_RD(A)                                                                                 \
	"cmp " A ", r9\n\t"                                                                        \
	"it lt\n\t"                                                                                \
	"sublt " A ", " A ", #2\n\t"
#define FC3_OUT_N                                                                                 \
	"ldrd r7, r8, [sp, #24]\n\t"                                                              \
	"ldr r9, [sp, #36]\n\t" FC3_RD("r4") FC3_RD("r5") FC3_RD("r6") FC3_SHIFT_SAT FC3_STORE

#define FC3_CL(A)                                                                                 \
	"cmp " A ", r9\n\t"                                                                        \
	"it lt\n\t"                                                                                \
	"movlt " A ", r9\n\t"                                                                      \
	"cmp " A ", r0\n\t"                                                                        \
	"it gt\n\t"                                                                                \
	"movgt " A ", r0\n\t"
#define FC3_OUT_G                                                                                 \
	"ldrd r7, r8, [sp, #24]\n\t" FC3_SHIFT_SAT "ldrd r9, r0, [sp, #36]\n\t" FC3_CL("r4")       \
		FC3_CL("r5") FC3_CL("r6") FC3_STORE

/* Registers in the input loop: r0-r3 centred input, r4-r6 accumulators,
 * r7-r9 weights, r10-r12 row pointers, lr input pointer. The frame (the
 * fc3_t, 13 words) is copied onto the stack. */
#define FC3_FUNC(name, OUT)                                                                       \
	__attribute__((naked, noinline)) static void name(const fc3_t *a __attribute__((unused)))  \
	{                                                                                         \
		__asm__ volatile(                                                                 \
			"push {r4-r11, lr}\n\t"                                                   \
			"sub sp, sp, #52\n\t"                                                     \
			"ldm r0!, {r1-r7}\n\t"                                                    \
			"stm sp, {r1-r7}\n\t"                                                     \
			"ldm r0, {r1-r6}\n\t"                                                     \
			"add r12, sp, #28\n\t"                                                    \
			"stm r12, {r1-r6}\n\t"                                                    \
			"mov r12, r5\n\t"                                                         \
			"negs r6, r6\n\t"                                                         \
			"and r6, r6, #7\n\t"                                                      \
			"movs r7, #112\n\t"                                                       \
			"adr.w r8, 3f\n\t"                                                        \
			"mla r8, r6, r7, r8\n\t"                                                  \
			"orr r8, r8, #1\n\t"                                                      \
			"str r8, [sp, #20]\n\t"                                                   \
			"1:\n\t"                                                                  \
			"ldm sp, {r0-r3, lr}\n\t"                                                 \
			"ldm r0!, {r7-r9}\n\t"                                                    \
			"str r0, [sp]\n\t" FC3_BIAS("r7", "r4") FC3_BIAS("r8", "r5")              \
				FC3_BIAS("r9", "r6") "mov r10, r12\n\t"                           \
			"add r11, r12, r3\n\t"                                                    \
			"add r12, r11, r3\n\t" FC3_LDM "ldr pc, [sp, #20]\n\t"                    \
			"3:\n\t" FC3_REST FC3_STEP FC3_STEP FC3_STEP FC3_STEP FC3_STEP FC3_STEP   \
				FC3_STEP FC3_LDM "cmp.w r0, #0x80008000\n\t"                      \
			"bne 3b\n\t" OUT "ldr r9, [sp, #32]\n\t"                                  \
			"cmp r12, r9\n\t"                                                         \
			"bne 1b\n\t"                                                              \
			"add sp, sp, #52\n\t"                                                     \
			"pop {r4-r11, pc}\n\t");                                                  \
	}

FC3_FUNC(fc3_a, FC3_OUT_A)
FC3_FUNC(fc3_n, FC3_OUT_N)
FC3_FUNC(fc3_g, FC3_OUT_G)

/* the last two rows where n_out % 3 == 2: the same loop on two rows (19
 * instructions per 16 MACs, 76-byte steps), r4, r5 accumulators, r10, r11
 * row pointers; one group, the frame as above */
#define FC2_REST FC3_ROW("r10", "r4") FC3_ROW("r11", "r5")

#define FC2_SHIFT_SAT                                                                             \
	"asr r4, r4, r7\n\t"                                                                       \
	"asr r5, r5, r7\n\t"                                                                       \
	"ssat r4, #8, r4\n\t"                                                                      \
	"ssat r5, #8, r5\n\t"

#define FC2_STORE                                                                                 \
	"strb r4, [r8]\n\t"                                                                        \
	"strb r5, [r8, #1]\n\t"

#define FC2_OUT_A "ldrd r7, r8, [sp, #24]\n\t" FC2_SHIFT_SAT FC2_STORE
#define FC2_OUT_N                                                                                 \
	"ldrd r7, r8, [sp, #24]\n\t"                                                              \
	"ldr r9, [sp, #36]\n\t" FC3_RD("r4") FC3_RD("r5") FC2_SHIFT_SAT FC2_STORE
#define FC2_OUT_G                                                                                 \
	"ldrd r7, r8, [sp, #24]\n\t" FC2_SHIFT_SAT "ldrd r9, r0, [sp, #36]\n\t" FC3_CL("r4")       \
		FC3_CL("r5") FC2_STORE

/* one group of two rows (REST: FC2_REST, SB = 76) or one row (FC1_REST, 40) */
#define FCT_FUNC(name, REST, SB, BIAS, OUT)                                                       \
	__attribute__((naked, noinline)) static void name(const fc3_t *a __attribute__((unused)))  \
	{                                                                                         \
		__asm__ volatile(                                                                 \
			"push {r4-r11, lr}\n\t"                                                   \
			"sub sp, sp, #52\n\t"                                                     \
			"ldm r0!, {r1-r7}\n\t"                                                    \
			"stm sp, {r1-r7}\n\t"                                                     \
			"ldm r0, {r1-r6}\n\t"                                                     \
			"add r12, sp, #28\n\t"                                                    \
			"stm r12, {r1-r6}\n\t"                                                    \
			"mov r10, r5\n\t"                                                         \
			"negs r6, r6\n\t"                                                         \
			"and r6, r6, #7\n\t"                                                      \
			"movs r7, #" #SB "\n\t"                                                   \
			"adr.w r8, 3f\n\t"                                                        \
			"mla r6, r6, r7, r8\n\t"                                                  \
			"orr r6, r6, #1\n\t"                                                      \
			"ldm sp, {r0-r3, lr}\n\t" BIAS FC3_LDM "bx r6\n\t"                       \
			"3:\n\t" REST FC3_LDM REST FC3_LDM REST FC3_LDM REST FC3_LDM REST FC3_LDM \
				REST FC3_LDM REST FC3_LDM REST FC3_LDM "cmp.w r0, #0x80008000\n\t" \
			"bne 3b\n\t" OUT "add sp, sp, #52\n\t"                                    \
			"pop {r4-r11, pc}\n\t");                                                  \
	}

#define FC2_BIAS                                                                                  \
	"ldrd r7, r8, [r0]\n\t" FC3_BIAS("r7", "r4") FC3_BIAS("r8", "r5") "add r11, r10, r3\n\t"

FCT_FUNC(fc2_a, FC2_REST, 76, FC2_BIAS, FC2_OUT_A)
FCT_FUNC(fc2_n, FC2_REST, 76, FC2_BIAS, FC2_OUT_N)
FCT_FUNC(fc2_g, FC2_REST, 76, FC2_BIAS, FC2_OUT_G)

/* the last row where n_out % 3 == 1: r4 accumulator, r10 row pointer (10
 * instructions per 8 MACs) */
#define FC1_REST FC3_ROW("r10", "r4")
#define FC1_BIAS "ldr r7, [r0]\n\t" FC3_BIAS("r7", "r4")
#define FC1_OUT_A                                                                                 \
	"ldrd r7, r8, [sp, #24]\n\t"                                                              \
	"asr r4, r4, r7\n\t"                                                                       \
	"ssat r4, #8, r4\n\t"                                                                      \
	"strb r4, [r8]\n\t"
#define FC1_OUT_N                                                                                 \
	"ldrd r7, r8, [sp, #24]\n\t"                                                              \
	"ldr r9, [sp, #36]\n\t" FC3_RD("r4") "asr r4, r4, r7\n\t"                                 \
	"ssat r4, #8, r4\n\t"                                                                      \
	"strb r4, [r8]\n\t"
#define FC1_OUT_G                                                                                 \
	"ldrd r7, r8, [sp, #24]\n\t"                                                              \
	"asr r4, r4, r7\n\t"                                                                       \
	"ssat r4, #8, r4\n\t"                                                                      \
	"ldrd r9, r0, [sp, #36]\n\t" FC3_CL("r4") "strb r4, [r8]\n\t"

FCT_FUNC(fc1_a, FC1_REST, 40, FC1_BIAS, FC1_OUT_A)
FCT_FUNC(fc1_n, FC1_REST, 40, FC1_BIAS, FC1_OUT_N)
FCT_FUNC(fc1_g, FC1_REST, 40, FC1_BIAS, FC1_OUT_G)

/* any output byte at 127 (or, with lo, at -128); eight bytes per pass */
static int sat_scan(const int8_t *y, int n, int lo)
{
	uint32_t f = 0;
	const uint32_t c = 0x7F7F7F7Fu;
	int i = 0;
	/* eight outputs per pass, then four */
	if (lo) {
		for (; i + 8 <= n; i += 8) {
			const uint32_t v = kl_read_s8x4(y + i), u = kl_read_s8x4(y + i + 4);
			uint32_t t;
			__asm__("ssub8 %[t], %[v], %[c]\n\t"
				"sel %[f], %[c], %[f]\n\t"
				"sadd8 %[t], %[v], %[c]\n\t"
				"sel %[f], %[f], %[c]\n\t"
				"ssub8 %[t], %[u], %[c]\n\t"
				"sel %[f], %[c], %[f]\n\t"
				"sadd8 %[t], %[u], %[c]\n\t"
				"sel %[f], %[f], %[c]"
				: [f] "+r"(f), [t] "=&r"(t)
				: [v] "r"(v), [u] "r"(u), [c] "r"(c));
		}
		for (; i + 4 <= n; i += 4) {
			const uint32_t v = kl_read_s8x4(y + i);
			uint32_t t;
			__asm__("ssub8 %[t], %[v], %[c]\n\t"
				"sel %[f], %[c], %[f]\n\t"
				"sadd8 %[t], %[v], %[c]\n\t"
				"sel %[f], %[f], %[c]"
				: [f] "+r"(f), [t] "=&r"(t)
				: [v] "r"(v), [c] "r"(c));
		}
	} else {
		for (; i + 8 <= n; i += 8) {
			const uint32_t v = kl_read_s8x4(y + i), u = kl_read_s8x4(y + i + 4);
			uint32_t t;
			__asm__("ssub8 %[t], %[v], %[c]\n\t"
				"sel %[f], %[c], %[f]\n\t"
				"ssub8 %[t], %[u], %[c]\n\t"
				"sel %[f], %[c], %[f]"
				: [f] "+r"(f), [t] "=&r"(t)
				: [v] "r"(v), [u] "r"(u), [c] "r"(c));
		}
		for (; i + 4 <= n; i += 4) {
			const uint32_t v = kl_read_s8x4(y + i);
			uint32_t t;
			__asm__("ssub8 %[t], %[v], %[c]\n\t"
				"sel %[f], %[c], %[f]"
				: [f] "+r"(f), [t] "=&r"(t)
				: [v] "r"(v), [c] "r"(c));
		}
	}
	for (; i < n; i++) {
		f |= (uint32_t)(y[i] == 127 || (lo && y[i] == -128));
	}
	return f != 0;
}

/* kl_center_interleave_s8 for n % 8 == 0, one STM per eight inputs: zero
 * point -128 as (x ^ 0x80) read unsigned (sixteen inputs per pass), 0 as it
 * is, others by SSUB16 (eight per pass) */
static void center8(const int8_t *x, int32_t zp, uint32_t *o, int n)
{
	const int8_t *const end = x + n;
	if (zp == -128) {
#define C8_M128                                                                                   \
	"ldr r4, [%[x]], #4\n\t"                                                                  \
	"ldr r6, [%[x]], #4\n\t"                                                                  \
	"eor r4, r4, #0x80808080\n\t"                                                             \
	"eor r6, r6, #0x80808080\n\t"                                                             \
	"uxtb16 r5, r4, ror #8\n\t"                                                               \
	"uxtb16 r4, r4\n\t"                                                                       \
	"uxtb16 r7, r6, ror #8\n\t"                                                               \
	"uxtb16 r6, r6\n\t"                                                                       \
	"stm %[o]!, {r4-r7}\n\t"
		/* sixteen inputs per pass, eight first where n % 16 == 8 */
		if (n & 8) {
			__asm__ volatile(C8_M128
					 : [x] "+r"(x), [o] "+r"(o)
					 :
					 : "r4", "r5", "r6", "r7", "memory");
			if (x == end) {
				return;
			}
		}
		__asm__ volatile("1:\n\t" C8_M128 C8_M128
				 "cmp %[x], %[e]\n\t"
				 "bne 1b"
				 : [x] "+r"(x), [o] "+r"(o)
				 : [e] "r"(end)
				 : "r4", "r5", "r6", "r7", "cc", "memory");
	} else if (zp == 0) {
		__asm__ volatile("1:\n\t"
				 "ldr r4, [%[x]], #4\n\t"
				 "ldr r6, [%[x]], #4\n\t"
				 "sxtb16 r5, r4, ror #8\n\t"
				 "sxtb16 r4, r4\n\t"
				 "sxtb16 r7, r6, ror #8\n\t"
				 "sxtb16 r6, r6\n\t"
				 "stm %[o]!, {r4-r7}\n\t"
				 "cmp %[x], %[e]\n\t"
				 "bne 1b"
				 : [x] "+r"(x), [o] "+r"(o)
				 : [e] "r"(end)
				 : "r4", "r5", "r6", "r7", "cc", "memory");
	} else {
		const uint32_t zz = ((uint32_t)zp & 0xFFFFu) * 0x10001u;
		__asm__ volatile("1:\n\t"
				 "ldr r4, [%[x]], #4\n\t"
				 "ldr r6, [%[x]], #4\n\t"
				 "sxtb16 r5, r4, ror #8\n\t"
				 "sxtb16 r4, r4\n\t"
				 "sxtb16 r7, r6, ror #8\n\t"
				 "sxtb16 r6, r6\n\t"
				 "ssub16 r4, r4, %[z]\n\t"
				 "ssub16 r5, r5, %[z]\n\t"
				 "ssub16 r6, r6, %[z]\n\t"
				 "ssub16 r7, r7, %[z]\n\t"
				 "stm %[o]!, {r4-r7}\n\t"
				 "cmp %[x], %[e]\n\t"
				 "bne 1b"
				 : [x] "+r"(x), [o] "+r"(o)
				 : [e] "r"(end), [z] "r"(zz)
				 : "r4", "r5", "r6", "r7", "cc", "memory");
	}
}

/* Returns -1 where the fast path does not apply, else the saturation flag. */
static int fc_fast(const int8_t *x, int32_t x_zp, const int8_t *w, const int32_t *b,
		   const kl_requant_t *rq, int8_t *y, int n_in, int n_out, int16_t *scratch)
{
	const int ys = rq->y_shift, bs = rq->b_shift;
	if ((n_in & 7) != 0 || n_in < 8 || n_in > 16384 || n_out < 3 ||
	    ((uintptr_t)w & 3u) != 0 || ys < 1 || ys > 22 || bs < 2 || bs > 31 ||
	    rq->hi <= rq->lo || x_zp < -128 || x_zp > 127 || rq->zp < -128 || rq->zp > 127) {
		return -1;
	}
	/* K' = k + zp 2^ys: |K'| < 2^29, |round(b >> bs)| <= 2^29 and the dot
	 * products stay below 2^30 - 2^29, so no sum leaves int32 */
	const int32_t kk = kl_rq_k(ys) + (int32_t)((uint32_t)rq->zp << ys);
	const int64_t dmax = (int64_t)n_in * 128 * 255 + 2;
	if (dmax + (kk < 0 ? -(int64_t)kk : kk) >= ((int64_t)1 << 30)) {
		return -1;
	}
	uint32_t *xc = (uint32_t *)(void *)scratch;
	center8(x, x_zp, xc, n_in);
	/* read by the loop's last LDM with the three words after it (within
	 * the scratch: n_out >= 3) */
	xc[n_in >> 1] = FC3_SENTINEL;
	void (*fn)(const fc3_t *);
	void (*fn2)(const fc3_t *);
	void (*fn1)(const fc3_t *);
	fc3_t a;
	a.lo = 0;
	a.hi = 0;
	if (rq->act == KL_ACT_NONE) {
		fn = fc3_n;
		fn2 = fc2_n;
		fn1 = fc1_n;
		/* kl_rq_m: no round-down for a shift of 1 */
		a.lo = ys >= 2 ? kk - 1 : INT32_MIN;
	} else if (rq->zp == -128 && rq->hi == 255) {
		fn = fc3_a;
		fn2 = fc2_a;
		fn1 = fc1_a;
	} else {
		fn = fc3_g;
		fn2 = fc2_g;
		fn1 = fc1_g;
		a.lo = rq->lo + rq->zp;
		a.hi = rq->hi + rq->zp;
	}
	a.bsm1 = bs - 1;
	a.c2 = 2 * kk + 1;
	a.n = n_in;
	a.xc = xc;
	a.entry = 0;
	a.ys = ys;
	a.steps = n_in >> 3;
	const int ng = n_out / 3;
	a.b = b;
	a.y = y;
	a.w = w;
	a.wend = w + (long)3 * ng * n_in;
	fn(&a);
	if (ng * 3 != n_out) { /* the last one or two rows */
		const int r = ng * 3;
		a.b = b + r;
		a.y = y + r;
		a.w = w + (long)r * n_in;
		(n_out - r == 2 ? fn2 : fn1)(&a);
	}
	if (rq->act != KL_ACT_NONE && !rq->cap_saturates) {
		return 0;
	}
	return sat_scan(y, n_out, rq->act == KL_ACT_NONE);
}

int kl_dsp_fully_connected_s8(const int8_t *x, int32_t x_zp, const int8_t *w, const int32_t *b,
			      const kl_requant_t *rq, int8_t *y, int n_in, int n_out,
			      int16_t *scratch)
{
	const int sat = fc_fast(x, x_zp, w, b, rq, y, n_in, n_out, scratch);
	if (sat >= 0) {
		return sat;
	}
	return fc_general(x, x_zp, w, b, rq, y, n_in, n_out, scratch);
}

/* ---- the paired layout: two rows per weight word -------------------------
 *
 * Rows 2p and 2p + 1 byte-interleaved, the first row's sign bit flipped
 * (kl_fc_pair_s8): a halfword holds h = 256 w1 + (w0 + 128). Against a word
 * of two centred inputs, one SMLAD on the raw weight word adds S0 + 128 sx +
 * 256 S1 to A, one on the word masked with 0xFF00FF00 adds 256 S1 to B (sx:
 * the sum of the centred inputs). So A - B = S0 + 128 sx and B >> 8 = S1, the
 * latter exact while |S1| < 2^23 (n_in <= 256; A and B wrap harmlessly).
 * Three pairs per step in a naked assembly loop: per four inputs one LDRD of
 * the centred input, per pair one LDRD of two weight words, two AND and four
 * SMLAD (22 instructions per 24 MACs); the loop structure, the folded bias
 * and the output modes are fc3's, the even rows' accumulators start at their
 * folded bias minus 128 sx (folded into the constant: 2 K' + 1 - 256 sx). */
typedef struct {
	const int32_t *b;   /* 0: bias of row 0 of the next group */
	int32_t bsm1;       /* 4: b_shift - 1 */
	int32_t c2;         /* 8: 2 K' + 1 (odd rows) */
	int32_t n2;         /* 12: 2 n_in, a pair's bytes */
	const uint32_t *xc; /* 16: centred input, sentinel after it */
	uint32_t entry;     /* 20: set by the function */
	int32_t ys;         /* 24 */
	int8_t *y;          /* 28: output of row 0 of the next group */
	const int8_t *wend; /* 32: end of the groups' pairs */
	int32_t lo;         /* 36: mode N: K' - 1; mode G: lo + zp */
	int32_t hi;         /* 40: mode G: hi + zp */
	const int8_t *w;    /* 44: pair 0 */
	int32_t steps;      /* 48: n_in / 4 */
	int32_t c2e;        /* 52: 2 K' + 1 - 256 sx (even rows) */
} fp3_t;

/* one pair of a step: weights at P (post-incremented), accumulators A, B */
#define FP_PAIR(P, A, B)                                                                          \
	"ldrd r2, r3, [" P "], #8\n\t"                                                            \
	"smlad " A ", r2, r0, " A "\n\t"                                                           \
	"and r2, r2, #0xFF00FF00\n\t"                                                              \
	"smlad " B ", r2, r0, " B "\n\t"                                                           \
	"smlad " A ", r3, r1, " A "\n\t"                                                           \
	"and r3, r3, #0xFF00FF00\n\t"                                                              \
	"smlad " B ", r3, r1, " B "\n\t"
#define FP_LDX "ldrd r0, r1, [lr], #8\n\t"
#define FP3_REST FP_PAIR("r10", "r4", "r5") FP_PAIR("r11", "r6", "r7") FP_PAIR("r12", "r8", "r9")
#define FP2_REST FP_PAIR("r10", "r4", "r5") FP_PAIR("r11", "r6", "r7")
#define FP1_REST FP_PAIR("r10", "r4", "r5")

/* the folded bias of a row: b in B, into A; r1 = b_shift - 1, C = 2 K' + 1
 * (minus 256 sx for an even row) */
#define FP_FOLD(B, A, C)                                                                          \
	"asr " A ", " B ", #31\n\t"                                                                \
	"qadd " A ", " B ", " A "\n\t"                                                             \
	"asr " A ", " A ", r1\n\t"                                                                 \
	"add " A ", " A ", " C "\n\t"                                                              \
	"asr " A ", " A ", #1\n\t"

/* after the loop, pair (A, B) of the group whose biases r0 points at: the
 * odd row's folded bias (at byte BO) plus B >> 8, and A - B */
#define FP_FIX(BO, A, B)                                                                          \
	"ldr r3, [r0, #" BO "]\n\t" FP_FOLD("r3", "r10", "r2") "sub " A ", " A ", " B "\n\t"          \
	"add " B ", r10, " B ", asr #8\n\t"

#define FP_SS(A)                                                                                  \
	"asr " A ", " A ", r10\n\t"                                                                \
	"ssat " A ", #8, " A "\n\t"
#define FP_ST(A) "strb " A ", [r11], #1\n\t"
#define FP_RD(A)                                                                                  \
	"cmp " A ", r0\n\t"                                                                        \
	"it lt\n\t"                                                                                \
	"sublt " A ", " A ", #2\n\t"
#define FP_CL(A)                                                                                  \
	"cmp " A ", r0\n\t"                                                                        \
	"it lt\n\t"                                                                                \
	"movlt " A ", r0\n\t"                                                                      \
	"cmp " A ", r1\n\t"                                                                        \
	"it gt\n\t"                                                                                \
	"movgt " A ", r1\n\t"
/* the output stage of one accumulator in the three modes (fc3's) */
#define FP_OA(A) FP_SS(A) FP_ST(A)
#define FP_ON(A) FP_RD(A) FP_SS(A) FP_ST(A)
#define FP_OG(A) FP_SS(A) FP_CL(A) FP_ST(A)
#define FP_PRE_A "ldrd r10, r11, [sp, #24]\n\t"
#define FP_PRE_N "ldrd r10, r11, [sp, #24]\n\t" "ldr r0, [sp, #36]\n\t"
#define FP_PRE_G "ldrd r10, r11, [sp, #24]\n\t" "ldrd r0, r1, [sp, #36]\n\t"
#define FP_OUT3(PRE, O) PRE O("r4") O("r5") O("r6") O("r7") O("r8") O("r9") "str r11, [sp, #28]\n\t"
#define FP_OUT2(PRE, O) PRE O("r4") O("r5") O("r6") O("r7")
#define FP_OUT1(PRE, O) PRE O("r4") O("r5")

/* the frame (fp3_t, 14 words) copied onto the stack; r6 = steps, r5 = w */
#define FP_FRAME                                                                                  \
	"push {r4-r11, lr}\n\t"                                                                   \
	"sub sp, sp, #60\n\t"                                                                     \
	"ldm r0!, {r1-r7}\n\t"                                                                    \
	"stm sp, {r1-r7}\n\t"                                                                     \
	"ldm r0, {r1-r7}\n\t"                                                                     \
	"add r12, sp, #28\n\t"                                                                    \
	"stm r12, {r1-r7}\n\t"

/* Duff entry into the eight-step loop: r6 = steps, SB bytes per step */
#define FP_ENTRY(SB, R)                                                                           \
	"negs r6, r6\n\t"                                                                         \
	"and r6, r6, #7\n\t"                                                                      \
	"movs r7, #" #SB "\n\t"                                                                   \
	"adr.w r8, 3f\n\t"                                                                        \
	"mla " R ", r6, r7, r8\n\t"                                                               \
	"orr " R ", " R ", #1\n\t"

#define FP_LOOP(REST)                                                                             \
	"3:\n\t" REST FP_LDX REST FP_LDX REST FP_LDX REST FP_LDX REST FP_LDX REST FP_LDX REST     \
		FP_LDX REST FP_LDX "cmp.w r0, #0x80008000\n\t"                                    \
	"bne 3b\n\t"

/* groups of three pairs (88-byte steps) */
#define FP3_FUNC(name, OUT)                                                                       \
	__attribute__((naked, noinline)) static void name(const fp3_t *a __attribute__((unused)))  \
	{                                                                                         \
		__asm__ volatile(                                                                 \
			FP_FRAME "mov r12, r5\n\t" FP_ENTRY(88, "r8") "str r8, [sp, #20]\n\t"     \
			"1:\n\t"                                                                  \
			"ldm sp, {r0-r3, lr}\n\t"                                                 \
			"ldr r10, [sp, #52]\n\t"                                                  \
			"ldr r5, [r0]\n\t" FP_FOLD("r5", "r4", "r10") "ldr r5, [r0, #8]\n\t"      \
				FP_FOLD("r5", "r6", "r10") "ldr r5, [r0, #16]\n\t"               \
					FP_FOLD("r5", "r8", "r10") "movs r5, #0\n\t"             \
			"movs r7, #0\n\t"                                                         \
			"movs r9, #0\n\t"                                                         \
			"mov r10, r12\n\t"                                                        \
			"add r11, r12, r3\n\t"                                                    \
			"add r12, r11, r3\n\t" FP_LDX "ldr pc, [sp, #20]\n\t" FP_LOOP(FP3_REST)   \
			"ldm sp, {r0-r2}\n\t" FP_FIX("4", "r4", "r5") FP_FIX("12", "r6", "r7")    \
				FP_FIX("20", "r8", "r9") "add r0, r0, #24\n\t"                    \
			"str r0, [sp]\n\t" OUT "ldr r10, [sp, #32]\n\t"                            \
			"cmp r12, r10\n\t"                                                        \
			"bne 1b\n\t"                                                              \
			"add sp, sp, #60\n\t"                                                     \
			"pop {r4-r11, pc}\n\t");                                                  \
	}

FP3_FUNC(fp3_a, FP_OUT3(FP_PRE_A, FP_OA))
FP3_FUNC(fp3_n, FP_OUT3(FP_PRE_N, FP_ON))
FP3_FUNC(fp3_g, FP_OUT3(FP_PRE_G, FP_OG))

/* one group of two pairs (60-byte steps) or one pair (32) */
#define FP2_PRO                                                                                   \
	"ldr r5, [r0]\n\t" FP_FOLD("r5", "r4", "r10") "ldr r5, [r0, #8]\n\t"                      \
		FP_FOLD("r5", "r6", "r10") "movs r5, #0\n\t"                                      \
	"movs r7, #0\n\t"
#define FP2_FIX FP_FIX("4", "r4", "r5") FP_FIX("12", "r6", "r7")
#define FP1_PRO "ldr r5, [r0]\n\t" FP_FOLD("r5", "r4", "r10") "movs r5, #0\n\t"
#define FP1_FIX FP_FIX("4", "r4", "r5")
#define FP2_PTR "add r11, r10, r3\n\t"
#define FP1_PTR ""
#define FPT_FUNC(name, REST, SB, PRO, PTR, FIX, OUT)                                                   \
	__attribute__((naked, noinline)) static void name(const fp3_t *a __attribute__((unused)))  \
	{                                                                                         \
		__asm__ volatile(                                                                 \
			FP_FRAME FP_ENTRY(SB, "r12") "ldm sp, {r0-r3, lr}\n\t"                     \
			"ldr r10, [sp, #52]\n\t" PRO "ldr r10, [sp, #44]\n\t" PTR FP_LDX          \
			"bx r12\n\t" FP_LOOP(REST) "ldm sp, {r0-r2}\n\t" FIX OUT                  \
			"add sp, sp, #60\n\t"                                                     \
			"pop {r4-r11, pc}\n\t");                                                  \
	}

FPT_FUNC(fp2_a, FP2_REST, 60, FP2_PRO, FP2_PTR, FP2_FIX, FP_OUT2(FP_PRE_A, FP_OA))
FPT_FUNC(fp2_n, FP2_REST, 60, FP2_PRO, FP2_PTR, FP2_FIX, FP_OUT2(FP_PRE_N, FP_ON))
FPT_FUNC(fp2_g, FP2_REST, 60, FP2_PRO, FP2_PTR, FP2_FIX, FP_OUT2(FP_PRE_G, FP_OG))
FPT_FUNC(fp1_a, FP1_REST, 32, FP1_PRO, FP1_PTR, FP1_FIX, FP_OUT1(FP_PRE_A, FP_OA))
FPT_FUNC(fp1_n, FP1_REST, 32, FP1_PRO, FP1_PTR, FP1_FIX, FP_OUT1(FP_PRE_N, FP_ON))
FPT_FUNC(fp1_g, FP1_REST, 32, FP1_PRO, FP1_PTR, FP1_FIX, FP_OUT1(FP_PRE_G, FP_OG))

/* Three pairs in one block (kl_fc_triples: n_in % 8 == 0, n_in <= 256): one
 * pointer (r10) walks the three pairs' words in turn, so the input takes an
 * LDM of four words (eight inputs): 43 instructions per 48 MACs, 172-byte
 * steps. r11, r12 weights; after the loop r11, r12 hold the shift and the
 * output pointer. */
#define FT_PAIR(A, B, X0, X1) \
	"ldrd r11, r12, [r10], #8\n\t" \
	"smlad " A ", r11, " X0 ", " A "\n\t" \
	"and r11, r11, #0xFF00FF00\n\t" \
	"smlad " B ", r11, " X0 ", " B "\n\t" \
	"smlad " A ", r12, " X1 ", " A "\n\t" \
	"and r12, r12, #0xFF00FF00\n\t" \
	"smlad " B ", r12, " X1 ", " B "\n\t"
#define FT_REST \
	FT_PAIR("r4", "r5", "r0", "r1") FT_PAIR("r6", "r7", "r0", "r1") \
	FT_PAIR("r8", "r9", "r0", "r1") FT_PAIR("r4", "r5", "r2", "r3") \
	FT_PAIR("r6", "r7", "r2", "r3") FT_PAIR("r8", "r9", "r2", "r3")
#define FT_LDX "ldm.w lr!, {r0-r3}\n\t"
#define FT_FIX(BO, A, B) \
	"ldr r3, [r0, #" BO "]\n\t" FP_FOLD("r3", "r11", "r2") "sub " A ", " A ", " B "\n\t" \
	"add " B ", r11, " B ", asr #8\n\t"
#define FT_SS(A) \
	"asr " A ", " A ", r11\n\t" \
	"ssat " A ", #8, " A "\n\t"
#define FT_ST(A) "strb " A ", [r12], #1\n\t"
#define FT_OA(A) FT_SS(A) FT_ST(A)
#define FT_ON(A) FP_RD(A) FT_SS(A) FT_ST(A)
#define FT_OG(A) FT_SS(A) FP_CL(A) FT_ST(A)
#define FT_PRE_A "ldrd r11, r12, [sp, #24]\n\t"
#define FT_PRE_N "ldrd r11, r12, [sp, #24]\n\t" "ldr r0, [sp, #36]\n\t"
#define FT_PRE_G "ldrd r11, r12, [sp, #24]\n\t" "ldrd r0, r1, [sp, #36]\n\t"
#define FT_OUT3(PRE, O) PRE O("r4") O("r5") O("r6") O("r7") O("r8") O("r9") "str r12, [sp, #28]\n\t"
#define FT_LOOP \
	"3:\n\t" FT_REST FT_LDX FT_REST FT_LDX FT_REST FT_LDX FT_REST FT_LDX FT_REST FT_LDX FT_REST \
		FT_LDX FT_REST FT_LDX FT_REST FT_LDX "cmp.w r0, #0x80008000\n\t" \
	"bne 3b\n\t"
#define FT3_FUNC(name, OUT) \
	__attribute__((naked, noinline)) static void name(const fp3_t *a __attribute__((unused))) \
	{ \
		__asm__ volatile( \
			FP_FRAME "mov r10, r5\n\t" FP_ENTRY(172, "r8") "str r8, [sp, #20]\n\t" \
			"1:\n\t" \
			"ldm sp, {r0-r3, lr}\n\t" \
			"ldr r11, [sp, #52]\n\t" \
			"ldr r5, [r0]\n\t" FP_FOLD("r5", "r4", "r11") "ldr r5, [r0, #8]\n\t" \
				FP_FOLD("r5", "r6", "r11") "ldr r5, [r0, #16]\n\t" \
					FP_FOLD("r5", "r8", "r11") "movs r5, #0\n\t" \
			"movs r7, #0\n\t" \
			"movs r9, #0\n\t" FT_LDX "ldr pc, [sp, #20]\n\t" FT_LOOP \
			"ldm sp, {r0-r2}\n\t" FT_FIX("4", "r4", "r5") FT_FIX("12", "r6", "r7") \
				FT_FIX("20", "r8", "r9") "add r0, r0, #24\n\t" \
			"str r0, [sp]\n\t" OUT "ldr r11, [sp, #32]\n\t" \
			"cmp r10, r11\n\t" \
			"bne 1b\n\t" \
			"add sp, sp, #60\n\t" \
			"pop {r4-r11, pc}\n\t"); \
	}

FT3_FUNC(ft3_a, FT_OUT3(FT_PRE_A, FT_OA))
FT3_FUNC(ft3_n, FT_OUT3(FT_PRE_N, FT_ON))
FT3_FUNC(ft3_g, FT_OUT3(FT_PRE_G, FT_OG))

/* the paired layout in plain C (any n_in % 4 == 0): both rows' sums exactly,
 * the weights unpacked by SXTB16 (the first row's after its sign flip back) */
static int fp_general(const int8_t *x, int32_t x_zp, const int8_t *w, const int32_t *b,
		      const kl_requant_t *rq, int8_t *y, int n_in, int n_out, int16_t *scratch)
{
	kl_center_interleave_s8(x, x_zp, scratch, n_in);
	const uint32_t *xw = (const uint32_t *)(const void *)scratch;
	int32_t *dots = (int32_t *)(void *)(scratch + ((n_in + 1) & ~1));
	const int np = n_out >> 1;
	for (int p = 0; p < np; p++) {
		int gs;
		const uint32_t *wp =
			(const uint32_t *)(const void *)(w + kl_fc_pair_at(p, n_in, n_out, &gs));
		const int gw = gs >> 2; /* words from a group to the next */
		int32_t s0 = 0, s1 = 0;
		for (int k = 0; k < n_in >> 1; k++) {
			const uint32_t v = wp[(k >> 1) * gw + (k & 1)];
			s0 = kl_smlad(kl_sxtb16(v ^ 0x00800080u), xw[k], s0);
			s1 = kl_smlad(kl_sxtb16_ror8(v), xw[k], s1);
		}
		dots[2 * p] = s0;
		dots[2 * p + 1] = s1;
	}
	if (n_out & 1) {
		dots[n_out - 1] = dot_row(w + (long)np * 2 * n_in, xw, scratch, n_in, n_in);
	}
	return requant_dots(dots, b, rq, y, n_out);
}

int kl_dsp_fully_connected_paired_s8(const int8_t *x, int32_t x_zp, const int8_t *w,
				     const int32_t *b, const kl_requant_t *rq, int8_t *y, int n_in,
				     int n_out, int16_t *scratch)
{
	const int ys = rq->y_shift, bs = rq->b_shift;
	if ((n_in & 3) != 0 || n_in < 4 || n_in > 256 || n_out < 2 || ((uintptr_t)w & 3u) != 0 ||
	    ys < 1 || ys > 22 || bs < 2 || bs > 31 || rq->hi <= rq->lo || x_zp < -128 ||
	    x_zp > 127 || rq->zp < -128 || rq->zp > 127) {
		return fp_general(x, x_zp, w, b, rq, y, n_in, n_out, scratch);
	}
	/* as fc_fast: no sum leaves int32; |S1| < 2^23 by n_in <= 256 */
	const int32_t kk = kl_rq_k(ys) + (int32_t)((uint32_t)rq->zp << ys);
	const int64_t dmax = (int64_t)n_in * 128 * 255 + 2;
	const int64_t akk = kk < 0 ? -(int64_t)kk : kk;
	if (dmax + akk >= ((int64_t)1 << 30) ||
	    2 * akk + 2 + (int64_t)256 * 255 * n_in >= ((int64_t)1 << 30)) {
		return fp_general(x, x_zp, w, b, rq, y, n_in, n_out, scratch);
	}
	uint32_t *xc = (uint32_t *)(void *)scratch;
	int32_t sx = 0; /* the centred inputs' sum */
	if ((n_in & 7) == 0 && x_zp == -128) { /* x - zp = x ^ 0x80 read unsigned: USADA8 */
		uint32_t *o = xc;
		const int8_t *xp = x, *const end = x + n_in;
		const uint32_t z = 0;
		__asm__ volatile("1:\n\t"
				 "ldr r4, [%[x]], #4\n\t"
				 "ldr r6, [%[x]], #4\n\t"
				 "eor r4, r4, #0x80808080\n\t"
				 "eor r6, r6, #0x80808080\n\t"
				 "usada8 %[s], r4, %[z], %[s]\n\t"
				 "usada8 %[s], r6, %[z], %[s]\n\t"
				 "uxtb16 r5, r4, ror #8\n\t"
				 "uxtb16 r4, r4\n\t"
				 "uxtb16 r7, r6, ror #8\n\t"
				 "uxtb16 r6, r6\n\t"
				 "stm %[o]!, {r4-r7}\n\t"
				 "cmp %[x], %[e]\n\t"
				 "bne 1b"
				 : [x] "+&r"(xp), [o] "+&r"(o), [s] "+&r"(sx)
				 : [e] "r"(end), [z] "r"(z)
				 : "r4", "r5", "r6", "r7", "cc", "memory");
	} else {
		if ((n_in & 7) == 0) {
			center8(x, x_zp, xc, n_in);
		} else {
			kl_center_interleave_s8(x, x_zp, scratch, n_in);
		}
		for (int k = 0; k < n_in >> 1; k++) {
			sx = kl_smlad(xc[k], 0x00010001u, sx);
		}
	}
	xc[n_in >> 1] = FC3_SENTINEL; /* the next word is read too (scratch: n_out >= 2) */
	const int tri = kl_fc_triples(n_in);
	void (*fn3)(const fp3_t *);
	void (*fn2)(const fp3_t *);
	void (*fn1)(const fp3_t *);
	fp3_t a;
	a.lo = 0;
	a.hi = 0;
	if (rq->act == KL_ACT_NONE) {
		fn3 = tri ? ft3_n : fp3_n;
		fn2 = fp2_n;
		fn1 = fp1_n;
		a.lo = ys >= 2 ? kk - 1 : INT32_MIN;
	} else if (rq->zp == -128 && rq->hi == 255) {
		fn3 = tri ? ft3_a : fp3_a;
		fn2 = fp2_a;
		fn1 = fp1_a;
	} else {
		fn3 = tri ? ft3_g : fp3_g;
		fn2 = fp2_g;
		fn1 = fp1_g;
		a.lo = rq->lo + rq->zp;
		a.hi = rq->hi + rq->zp;
	}
	a.bsm1 = bs - 1;
	a.c2 = 2 * kk + 1;
	a.c2e = 2 * kk + 1 - 256 * sx;
	a.n2 = 2 * n_in;
	a.xc = xc;
	a.entry = 0;
	a.ys = ys;
	a.steps = tri ? n_in >> 3 : n_in >> 2;
	const int np = n_out >> 1, ng = np / 3;
	a.b = b;
	a.y = y;
	a.w = w;
	a.wend = w + (long)6 * ng * n_in;
	if (ng > 0) {
		fn3(&a);
	}
	const int r = 6 * ng;
	if (np - 3 * ng > 0) { /* the last one or two pairs (four-input steps) */
		a.steps = n_in >> 2;
		a.b = b + r;
		a.y = y + r;
		a.w = w + (long)r * n_in;
		(np - 3 * ng == 2 ? fn2 : fn1)(&a);
	}
	int sat = 0;
	if (n_out & 1) { /* the plain last row */
		const int32_t d = dot_row(w + (long)(n_out - 1) * n_in, xc, scratch, n_in, n_in);
		y[n_out - 1] = kl_requant(rq, d, b[n_out - 1], &sat);
	}
	if (rq->act != KL_ACT_NONE && !rq->cap_saturates) {
		return 0;
	}
	return sat | sat_scan(y, n_out, rq->act == KL_ACT_NONE);
}
#else
typedef int kl_dsp_fully_connected_s8_unused;
#endif
