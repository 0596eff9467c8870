/* The kernel fuzzers' random layers (kl_fuzz_fwd, kl_fuzz_mve): biases and a
 * requantisation; and the mismatch counts they and kl_bench_kernels compare
 * with. */
#ifndef KL_TEST_RAND_H
#define KL_TEST_RAND_H

#include <stdint.h>

#include "kilolearn/kl_kernels.h"
#include "kl_test_out.h"

/* n biases: one case in six over the whole int32 range, else +-40000 */
static inline void kl_test_fill_bias(int32_t *b, int n)
{
	const int big = kl_test_rnd() % 6 == 0;
	for (int i = 0; i < n; i++) {
		b[i] = big ? (int32_t)kl_test_rnd() : kl_test_rr(-40000, 40000);
	}
}

/* a random layer's zero points, activation and shifts */
typedef struct {
	int32_t x_zp, y_zp;
	int act, ys, bsh; /* output and bias shifts against the accumulator */
} kl_test_rq_t;

/* draws t and makes rq of it (the accumulator at exponent -12) */
static inline void kl_test_rand_requant(kl_test_rq_t *t, kl_requant_t *rq)
{
	const int zsel = kl_test_rr(0, 3);
	t->x_zp = zsel == 0 ? -128 : zsel == 1 ? 0 : kl_test_rr(-128, 127);
	t->act = kl_test_rr(0, 2);
	t->y_zp = t->act != KL_ACT_NONE && (kl_test_rnd() & 1) ? -128 : kl_test_rr(-128, 127);
	t->ys = kl_test_rr(-1, 24);
	t->bsh = kl_test_rr(-2, 24);
	kl_requant_init(rq, -12, -12 - t->bsh, -12 + t->ys, t->y_zp, t->act);
	rq->y_shift = t->ys;
}

static inline long kl_test_diff_s8(const int8_t *a, const int8_t *b, long n)
{
	long m = 0;
	for (long i = 0; i < n; i++) {
		m += a[i] != b[i];
	}
	return m;
}

static inline long kl_test_diff_s32(const int32_t *a, const int32_t *b, long n)
{
	long m = 0;
	for (long i = 0; i < n; i++) {
		m += a[i] != b[i];
	}
	return m;
}

#endif
