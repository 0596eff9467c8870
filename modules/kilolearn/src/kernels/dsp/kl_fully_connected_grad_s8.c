/* Fully connected layer, int8, dsp backend: the input gradient
 * acc = W^T dy (int32). Rows whose gradient is zero are skipped, the others
 * are taken four at a time (the last one to three as a group of two or
 * three). Per four columns and four rows, in assembly: one LDM of the four
 * sums, per row one LDR, two SXTB16 and four SMLAxy (the gradients of rows
 * a, b packed in one register, of rows c, d in another), one STM: 30
 * instructions per 16 MACs with eight columns per loop pass. The first group
 * multiplies instead of loading the sums (no clearing pass). Same integers
 * as the ref kernel. */
#include "kilolearn/kl_kernels.h"

#if KL_KERNELS_DSP
#include "kl_dsp_util.h"

/* four columns of one row (pointer p) into the four sums, its gradient in
 * the bottom ("b") or top ("t") half of gg */
#define FCG_ROW(p, gg, hx)                                                                        \
	"ldr %[w], [%[" p "]], #4\n\t"                                                           \
	"sxtb16 %[t], %[w]\n\t"                                                                  \
	"smlab" hx " %[a0], %[t], %[" gg "], %[a0]\n\t"                                           \
	"smlat" hx " %[a2], %[t], %[" gg "], %[a2]\n\t"                                           \
	"sxtb16 %[t], %[w], ror #8\n\t"                                                          \
	"smlab" hx " %[a1], %[t], %[" gg "], %[a1]\n\t"                                           \
	"smlat" hx " %[a3], %[t], %[" gg "], %[a3]\n\t"

/* the same for the first row of the first group: products, no sums yet */
#define FCG_FIRST                                                                                 \
	"ldr %[w], [%[ra]], #4\n\t"                                                              \
	"sxtb16 %[t], %[w]\n\t"                                                                  \
	"smulbb %[a0], %[t], %[g]\n\t"                                                            \
	"smultb %[a2], %[t], %[g]\n\t"                                                            \
	"sxtb16 %[t], %[w], ror #8\n\t"                                                          \
	"smulbb %[a1], %[t], %[g]\n\t"                                                            \
	"smultb %[a3], %[t], %[g]\n\t"

#define FCG_LOAD "ldm %[ap], {%[a0], %[a1], %[a2], %[a3]}\n\t" FCG_ROW("ra", "g", "b")
#define FCG_B    FCG_ROW("rb", "g", "t")
#define FCG_C    FCG_ROW("rc", "h", "b")
#define FCG_D    FCG_ROW("rd", "h", "t")
#define FCG_STORE "stmia %[ap]!, {%[a0], %[a1], %[a2], %[a3]}\n\t"

/* the sums live in r8..r11 so that LDM / STM keep their order */
#define FCG_LOOP(body, cols)                                                                      \
	__asm__ volatile("1:\n\t" body "subs %[j], %[j], #" #cols "\n\t"                         \
			 "bne 1b\n\t"                                                             \
			 : [a0] "=&r"(a0), [a1] "=&r"(a1), [a2] "=&r"(a2), [a3] "=&r"(a3),         \
			   [ap] "+r"(ap), [j] "+r"(j), [w] "=&r"(w), [t] "=&r"(t), [ra] "+r"(ra),  \
			   [rb] "+r"(rb), [rc] "+r"(rc), [rd] "+r"(rd)                             \
			 : [g] "r"(g), [h] "r"(h)                                                 \
			 : "cc", "memory")

/* acc[0..n4-1] (+)= rows ra..rd (of which the first nr count) times the
 * gradients in g (rows a, b) and h (rows c, d); first: acc is not read */
__attribute__((always_inline)) static inline void rows_asm(int32_t *acc, const int8_t *ra,
							   const int8_t *rb,
							   const int8_t *rc,
							   const int8_t *rd, uint32_t g,
							   uint32_t h, int n4, int nr,
							   int first)
{
	register int32_t a0 __asm__("r8");
	register int32_t a1 __asm__("r9");
	register int32_t a2 __asm__("r10");
	register int32_t a3 __asm__("r11");
	int32_t *ap = acc;
	uint32_t w, t;
	int j = n4 & 4;
	if (j != 0) { /* one step of four columns, then pairs of steps */
		if (first) {
			if (nr == 4) {
				FCG_LOOP(FCG_FIRST FCG_B FCG_C FCG_D FCG_STORE, 4);
			} else if (nr == 3) {
				FCG_LOOP(FCG_FIRST FCG_B FCG_C FCG_STORE, 4);
			} else {
				FCG_LOOP(FCG_FIRST FCG_B FCG_STORE, 4);
			}
		} else {
			if (nr == 4) {
				FCG_LOOP(FCG_LOAD FCG_B FCG_C FCG_D FCG_STORE, 4);
			} else if (nr == 3) {
				FCG_LOOP(FCG_LOAD FCG_B FCG_C FCG_STORE, 4);
			} else {
				FCG_LOOP(FCG_LOAD FCG_B FCG_STORE, 4);
			}
		}
	}
	j = n4 & ~7;
	if (j == 0) {
		return;
	}
	if (first) {
		if (nr == 4) {
			FCG_LOOP(FCG_FIRST FCG_B FCG_C FCG_D FCG_STORE FCG_FIRST FCG_B FCG_C FCG_D
					 FCG_STORE,
				 8);
		} else if (nr == 3) {
			FCG_LOOP(FCG_FIRST FCG_B FCG_C FCG_STORE FCG_FIRST FCG_B FCG_C FCG_STORE, 8);
		} else {
			FCG_LOOP(FCG_FIRST FCG_B FCG_STORE FCG_FIRST FCG_B FCG_STORE, 8);
		}
	} else {
		if (nr == 4) {
			FCG_LOOP(FCG_LOAD FCG_B FCG_C FCG_D FCG_STORE FCG_LOAD FCG_B FCG_C FCG_D
					 FCG_STORE,
				 8);
		} else if (nr == 3) {
			FCG_LOOP(FCG_LOAD FCG_B FCG_C FCG_STORE FCG_LOAD FCG_B FCG_C FCG_STORE, 8);
		} else {
			FCG_LOOP(FCG_LOAD FCG_B FCG_STORE FCG_LOAD FCG_B FCG_STORE, 8);
		}
	}
}

/* columns n4..n_in-1 of rows r[0..nr-1] times gradients gd[0..nr-1] */
static __attribute__((noinline)) void cols_tail(int32_t *acc, const int8_t *const *r,
						 const int16_t *gd, int n4, int n_in, int nr,
						 int first)
{
	for (int j = n4; j < n_in; j++) {
		int32_t s = first ? 0 : acc[j];
		for (int i = 0; i < nr; i++) {
			s += r[i][j] * gd[i];
		}
		acc[j] = s;
	}
}

/* the last one to three rows as a group of two (the second one with
 * gradient 0 if need be) or three; gd has room for four */
static __attribute__((noinline)) void rows_last(int32_t *acc, const int8_t **r, int16_t *gd,
						 int n_in, int nr, int first)
{
	const int n4 = n_in & ~3;
	for (int i = nr; i < 4; i++) {
		r[i] = r[0];
		gd[i] = 0;
	}
	nr = nr < 2 ? 2 : nr;
	if (n4 > 0) {
		uint32_t g, h;
		memcpy(&g, gd, 4);
		memcpy(&h, gd + 2, 4);
		rows_asm(acc, r[0], r[1], r[2], r[3], g, h, n4, nr, first);
	}
	if (n4 != n_in) {
		cols_tail(acc, r, gd, n4, n_in, nr, first);
	}
}

/* full groups of four rows after the first one: acc += rows r[0..4 ng - 1]
 * times gradients gd (n4 > 0 columns) */
static __attribute__((noinline)) void groups(int32_t *acc, const int8_t *const *r,
					      const int16_t *gd, int ng, int n4)
{
	if ((n4 & 15) == 0) { /* sixteen columns per loop pass */
		const int8_t *const *const re = r + 4 * ng;
		do {
			register int32_t a0 __asm__("r8");
			register int32_t a1 __asm__("r9");
			register int32_t a2 __asm__("r10");
			register int32_t a3 __asm__("r11");
			int32_t *ap = acc;
			uint32_t w, t, g, h;
			int j = n4;
			const int8_t *ra = r[0], *rb = r[1], *rc = r[2], *rd = r[3];
			memcpy(&g, gd, 4);
			memcpy(&h, gd + 2, 4);
			FCG_LOOP(FCG_LOAD FCG_B FCG_C FCG_D FCG_STORE FCG_LOAD FCG_B FCG_C FCG_D
					 FCG_STORE FCG_LOAD FCG_B FCG_C FCG_D FCG_STORE FCG_LOAD FCG_B
						 FCG_C FCG_D FCG_STORE,
				 16);
			r += 4;
			gd += 4;
		} while (r != re);
		return;
	}
	for (; ng > 0; ng--, r += 4, gd += 4) {
		uint32_t g, h;
		memcpy(&g, gd, 4);
		memcpy(&h, gd + 2, 4);
		rows_asm(acc, r[0], r[1], r[2], r[3], g, h, n4, 4, 0);
	}
}

/* acc[0..n-1] = 0 with STRDs (newlib-nano's memset stores bytes) */
static void zero_s32(int32_t *p, int n)
{
	int32_t *const e = p + (n & ~3);
	const uint32_t z = 0u;
	while (p != e) {
		__asm__ volatile("strd %[z], %[z], [%[p]], #8\n\t"
				 "strd %[z], %[z], [%[p]], #8\n\t"
				 : [p] "+r"(p)
				 : [z] "r"(z)
				 : "memory");
	}
	for (int i = 0; i < (n & 3); i++) {
		__asm__ volatile("str %[z], [%[p]], #4" : [p] "+r"(p) : [z] "r"(z) : "memory");
	}
}

#define FCG_BATCH 32 /* rows scanned per pass */

void kl_dsp_fully_connected_backward_input_s8(const int8_t *w, const int8_t *dy, int32_t *acc,
					      int n_in, int n_out)
{
	/* the nonzero rows of a pass and their gradients, after up to three
	 * left over from the previous pass */
	const int8_t *r[FCG_BATCH + 4];
	int16_t gd[FCG_BATCH + 4] __attribute__((aligned(4)));
	const int n4 = n_in & ~3;
	int first = 1, n = 0;
	const int8_t *row = w;
	for (int i = 0; i < n_out; i += FCG_BATCH) {
		const int8_t *dp = dy + i;
		const int8_t *const de = dp + (n_out - i < FCG_BATCH ? n_out - i : FCG_BATCH);
		const int8_t **rp = r + n;
		int16_t *gp = gd + n;
		while (dp != de) {
			const int32_t d = *dp++;
			if (d != 0) {
				*rp++ = row;
				*gp++ = (int16_t)d;
			}
			row += n_in;
		}
		n = (int)(rp - r);
		int k = 0;
		if (first && n >= 4) {
			uint32_t g, h;
			memcpy(&g, gd, 4);
			memcpy(&h, gd + 2, 4);
			if (n4 > 0) {
				rows_asm(acc, r[0], r[1], r[2], r[3], g, h, n4, 4, 1);
			}
			k = 4;
		}
		const int ng = (n - k) >> 2;
		if (ng > 0 && n4 > 0) {
			groups(acc, r + k, gd + k, ng, n4);
		}
		if (n4 != n_in) { /* the last n_in % 4 columns */
			cols_tail(acc, r, gd, n4, n_in, k + 4 * ng, first);
		}
		k += 4 * ng;
		first = first && k == 0;
		for (int j = k; j < n; j++) {
			r[j - k] = r[j];
			gd[j - k] = gd[j];
		}
		n -= k;
	}
	if (n > 0) {
		rows_last(acc, r, gd, n_in, n, first);
	} else if (first) { /* every gradient is zero */
		zero_s32(acc, n_in);
	}
}
#else
typedef int kl_dsp_fully_connected_grad_s8_unused;
#endif
