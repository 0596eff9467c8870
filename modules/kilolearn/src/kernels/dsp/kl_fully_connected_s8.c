/* Fully connected layer, int8, dsp backend: two rows and eight inputs at a time, SMLAD on
 * sign-extended weight pairs against a centred, reordered int16 input. */
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

int kl_dsp_fully_connected_s8(const int8_t *x, int32_t x_zp, const int8_t *w, const int32_t *b,
			      const kl_requant_t *rq, int8_t *y, int n_in, int n_out,
			      int16_t *scratch)
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
		const int8_t *r0 = w + (long)i * n_in;
		const uint32_t *xp = xw;
		int32_t a0 = 0;
		for (int j = 0; j < n4; j += 4) {
			const uint32_t xe = xp[0], xo = xp[1];
			xp += 2;
			const uint32_t w0 = kl_read_s8x4(r0 + j);
			MAC4(a0, w0);
		}
		a0 += dot_tail(r0, scratch, n4, n_in);
		dots[i] = a0;
	}
	return requant_dots(dots, b, rq, y, n_out);
}
#else
typedef int kl_dsp_fully_connected_s8_unused;
#endif
