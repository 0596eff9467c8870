/*
 * kl_fuzz_acc: kl_accumulate_s8 (batch sums and the int8 momentum velocity)
 * against its definition written plainly here in 64-bit arithmetic
 * (docs/int8-training.md: acc * mu_q / 2^15 + g, both at the coarser
 * exponent, rounded half away from zero, then shifted until every |sum| <=
 * KL_ACC_MAX), on random and extreme inputs: sums at KL_ACC_MAX, gradients at
 * INT32_MIN / INT32_MAX, exponent gaps 0-70, mu_q 0, 2^15 and random.
 * Every other case kl_quantize_grad_s8 (int32 gradient sums to int8: the
 * smallest shift s with round(max |v| / 2^s) <= 127, each v rounded half away
 * from zero) against that rule, on magnitudes of every bit length, values at
 * INT32_MIN / INT32_MAX, exact halves and the largest magnitude's top bits all
 * ones (the rounding carry), written apart, over the sums and over their end.
 * Runs on every target (the function is plain C). Prints "KL fuzz done cases
 * N mismatches N".
 */
#include <stdint.h>

#include "kilolearn/kl_kernels.h"
#include "kl_port.h"
#include "kl_test_out.h"

#define NMAX 64
static int32_t acc[NMAX], want[NMAX], gr[NMAX];

/* x / 2^s rounded half away from zero (0 <= s; 0 for s > 62): by the division */
static int64_t spec_rsh(int64_t x, int s)
{
	if (s == 0) {
		return x;
	}
	if (s > 62) {
		return 0;
	}
	const int64_t d = (int64_t)1 << s;
	const int64_t ax = x < 0 ? -x : x;
	const int64_t q = (ax + d / 2) / d;
	return x < 0 ? -q : q;
}

static int spec(int32_t *a, int ea, int32_t mu_q, const int32_t *g, int eg, int n)
{
	const int e = ea > eg ? ea : eg;
	int64_t t[NMAX];
	int64_t mx = 0;
	for (int k = 0; k < n; k++) {
		t[k] = spec_rsh((int64_t)a[k] * mu_q, KL_MOM_FRAC_BITS + e - ea) +
		       spec_rsh(g[k], e - eg);
		const int64_t m = t[k] < 0 ? -t[k] : t[k];
		mx = m > mx ? m : mx;
	}
	int s = 0;
	while ((mx >> s) > (int64_t)KL_ACC_MAX) {
		s++;
	}
	for (int k = 0; k < n; k++) {
		a[k] = (int32_t)spec_rsh(t[k], s);
	}
	return e + s;
}

static int32_t draw(int32_t lim)
{
	switch (kl_test_rnd() % 6) {
	case 0:
		return lim;
	case 1:
		return -lim;
	case 2:
		return (int32_t)kl_test_rr(-3, 3);
	default: {
		const int bits = kl_test_rr(0, 31);
		const int32_t v = (int32_t)(kl_test_rnd() >> (32 - bits > 31 ? 31 : 32 - bits));
		return (int32_t)(((int64_t)v % ((int64_t)lim + 1)) * (kl_test_rnd() % 2 ? 1 : -1));
	}
	}
}

/* kl_quantize_grad_s8 against its rule; where 0: apart, 1: over the sums
 * (byte k in sum k / 4), 2: over their end (the last n bytes) */
static long quant_case(int it, int verbose)
{
	const int n = kl_test_rr(1, NMAX);
	const int bits = kl_test_rr(0, 32); /* the magnitudes' bit length */
	for (int k = 0; k < n; k++) {
		const uint32_t r = kl_test_rnd() % 8;
		int64_t v = bits == 0 ? 0 : (int64_t)(kl_test_rnd() >> (32 - bits));
		if (r == 0) { /* an exact half at some shift */
			v = (v >> 4 << 4) | 8;
		} else if (r == 1) {
			v = kl_test_rnd() % 2 ? INT32_MAX : -(int64_t)INT32_MAX - 1;
		}
		v = kl_test_rnd() % 2 ? -v : v;
		gr[k] = (int32_t)(v > INT32_MAX ? INT32_MAX : v < INT32_MIN ? INT32_MIN : v);
	}
	if (kl_test_rnd() % 4 == 0) { /* the largest magnitude's top 8 bits all ones */
		const int sh = kl_test_rr(0, 23);
		gr[kl_test_rr(0, n - 1)] = (int32_t)((0xFFu << sh) | (kl_test_rnd() & ((1u << sh) - 1u))) *
					   (kl_test_rnd() % 2 ? 1 : -1);
	}
	int64_t mx = 0;
	for (int k = 0; k < n; k++) {
		const int64_t a = gr[k] < 0 ? -(int64_t)gr[k] : gr[k];
		mx = a > mx ? a : mx;
	}
	int s = 0;
	while (spec_rsh(mx, s) > 127) {
		s++;
	}
	const int where = kl_test_rr(0, 2);
	for (int k = 0; k < n; k++) {
		acc[k] = gr[k];
	}
	int8_t *const out = where == 0 ? (int8_t *)(void *)want
			    : where == 1 ? (int8_t *)(void *)acc
					 : (int8_t *)(void *)(acc + n) - n;
	const int got = kl_quantize_grad_s8(acc, out, n);
	long m = got != s;
	for (int k = 0; k < n; k++) {
		m += out[k] != (int8_t)spec_rsh(gr[k], s);
	}
	if (m && verbose) {
		kl_test_bad(it);
		out_str(" quantize");
		out_field(" n ", n);
		out_field(" bits ", bits);
		out_field(" where ", where);
		out_field(" s ", s);
		out_field(" got ", got);
		kl_test_diffs(m);
	}
	return m;
}

static long one_case(int it, int verbose)
{
	if (it % 2 == 1) {
		return quant_case(it, verbose);
	}
	const int n = kl_test_rr(1, NMAX);
	const int32_t alim = kl_test_rnd() % 2 ? (int32_t)KL_ACC_MAX : kl_test_rr(0, 1 << 20);
	const int32_t glim = kl_test_rnd() % 3 == 0 ? INT32_MAX : kl_test_rr(0, 1 << 24);
	for (int k = 0; k < n; k++) {
		acc[k] = want[k] = draw(alim);
		gr[k] = kl_test_rnd() % 17 == 0 ? INT32_MIN : draw(glim);
	}
	const uint32_t r = kl_test_rnd() % 4;
	const int32_t mu_q = r == 0 ? 0 : r == 1 ? (int32_t)1 << KL_MOM_FRAC_BITS
				 : kl_test_rr(1, (1 << KL_MOM_FRAC_BITS) - 1);
	const int base = kl_test_rr(-40, 10);
	const int gap = kl_test_rnd() % 4 == 0 ? kl_test_rr(0, 70) : kl_test_rr(0, 3);
	const int ea = kl_test_rnd() % 2 ? base : base + gap, eg = ea == base ? base + gap : base;
	const int e0 = spec(want, ea, mu_q, gr, eg, n);
	const int e1 = kl_accumulate_s8(acc, ea, mu_q, gr, eg, n);
	long m = e0 != e1;
	for (int k = 0; k < n; k++) {
		m += acc[k] != want[k];
	}
	if (m && verbose) {
		kl_test_bad(it);
		out_field(" n ", n);
		out_field(" ea ", ea);
		out_field(" eg ", eg);
		out_field(" mu_q ", mu_q);
		out_field(" e ", e0);
		out_field(" got ", e1);
		kl_test_diffs(m);
	}
	return m;
}

int main(int argc, char **argv)
{
	return kl_test_fuzz_main(argc, argv, 0x2545F491u, 4000, one_case);
}
