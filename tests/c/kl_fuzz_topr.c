/*
 * kl_fuzz_topr: kl_topr_sgd_weights_s8 (int8 top-r, docs/selective-updates.md)
 * against the rule written plainly here: every weight's step
 * clamp8(stochastic_shift(g lr_q, sh, d + index W)), the k largest |steps|
 * applied (ties: lower index first; zero steps never), w clamped to
 * [-127, 127]. Random fused dense layers (dy, x, zero point; the paired
 * layout of kl_fc_pair_s8 where the shape allows) and kept gradients, shifts
 * -2..40 (the int32 and the int64 paths), fractions from one weight to all,
 * weights at the edge of their range (steps that clamp, more than the kernel
 * lists). Checks the weights, the count returned and the dither. Runs on every
 * target (the kernel is plain C). Prints "KL fuzz done cases N mismatches N".
 */
#include <stdint.h>
#include <string.h>

#include "kilolearn/kl_kernels.h"
#include "kl_port.h"
#include "kl_test_out.h"
#include "kl_test_rand.h"

#define NMAX 4096
#define CMAX 300
static int8_t w0[NMAX], w1[NMAX], wp[NMAX], dy[64], x[CMAX];
static int32_t gw[NMAX];
static int32_t step[NMAX];
static uint32_t scr[KL_TOPR_S8_BINS + KL_TOPR_S8_LIST + 2 * CMAX];

/* the rule: returns the weights changed (non-zero steps chosen) */
static uint32_t rule(int8_t *w, const int32_t *g, const int8_t *d, const int8_t *xv, int32_t x_zp,
		     int rows, int cols, int32_t lr_q, int sh, uint32_t d0, uint32_t k_sel)
{
	const long n = (long)rows * cols;
	for (long k = 0; k < n; k++) {
		const long i = k / cols, j = k % cols;
		const int64_t v = g != NULL ? (int64_t)g[k] * lr_q
					    : (int64_t)d[i] * lr_q * ((int32_t)xv[j] - x_zp);
		const int64_t s = kl_stochastic_shift(v, sh, d0 + (uint32_t)k * KL_WEYL);
		step[k] = (int32_t)(s > 127 ? 127 : (s < -128 ? -128 : s));
	}
	uint32_t taken = 0;
	for (int a = 128; a >= 1; a--) { /* largest first, each magnitude in index order */
		for (long k = 0; k < n && taken < k_sel; k++) {
			if (step[k] == a || step[k] == -a) {
				const int32_t r = (int32_t)w[k] - step[k];
				w[k] = (int8_t)(r > 127 ? 127 : (r < -127 ? -127 : r));
				taken++;
			}
		}
	}
	return taken;
}

static long one_case(int it, int verbose)
{
	const int kept = kl_test_rnd() % 4 == 0;
	const int rows = kept ? 1 : kl_test_rr(1, 64);
	const int cols = kept ? kl_test_rr(1, NMAX) : (kl_test_rnd() & 1) ? 4 * kl_test_rr(1, 64)
									   : kl_test_rr(1, CMAX);
	const long n = (long)rows * cols;
	if (n > NMAX) {
		return -1;
	}
	const int edge = kl_test_rnd() % 4 == 0; /* weights at +-127: steps clamp */
	for (long k = 0; k < n; k++) {
		w0[k] = edge ? ((kl_test_rnd() & 1) ? 127 : -127) : (int8_t)kl_test_rr(-127, 127);
	}
	const int32_t x_zp = kl_test_rnd() & 1 ? -128 : kl_test_rr(-128, 127);
	const int sparse = kl_test_rr(0, 3); /* zeros in dy, x and gw */
	for (int i = 0; i < rows; i++) {
		dy[i] = kl_test_rr(0, 3) < sparse ? 0 : (int8_t)kl_test_rr(-128, 127);
	}
	for (int j = 0; j < cols && !kept; j++) { /* (kept gradients: one row of n, no x) */
		x[j] = kl_test_rr(0, 3) < sparse ? (int8_t)x_zp : (int8_t)kl_test_rr(-128, 127);
	}
	for (long k = 0; k < n && kept; k++) {
		gw[k] = kl_test_rr(0, 3) < sparse ? 0
			: kl_test_rnd() % 50 == 0 ? (int32_t)kl_test_rnd()
						  : kl_test_rr(-100000, 100000);
	}
	const int sh = kl_test_rnd() % 5 == 0 ? kl_test_rr(-2, 40) : kl_test_rr(8, 26);
	/* below a shift of 1 (taken as 1) small products, so that steps do not all clamp */
	const int32_t lr_q = kl_test_rnd() % 10 == 0 ? 0 : sh < 1 ? 1 : kl_test_rr(1, 4096);
	for (int i = 0; i < rows && sh < 1; i++) {
		dy[i] = (int8_t)(dy[i] % 2);
	}
	for (long k = 0; k < n && kept && sh < 1; k++) {
		gw[k] %= 300;
	}
	const uint32_t k_sel = kl_test_rnd() % 5 == 0 ? (uint32_t)n : (uint32_t)kl_test_rr(1, (int)n);
	const uint32_t d0 = kl_test_rnd();
	const int paired = !kept && rows >= 2 && (cols & 3) == 0 && (kl_test_rnd() & 1);
	memcpy(w1, w0, (size_t)n);
	const uint32_t want = rule(w1, kept ? gw : NULL, dy, x, x_zp, rows, cols, lr_q, sh, d0,
				   k_sel);
	int8_t *const wk = paired ? wp : w0;
	if (paired) {
		kl_fc_pair_s8(w0, wp, cols, rows);
	}
	memset(scr, 0xA5, sizeof scr);
	uint32_t d = d0;
	const uint32_t got = kl_topr_sgd_weights_s8(wk, kept ? gw : NULL, dy, x, x_zp, rows, cols,
						    lr_q, sh, &d, k_sel, scr, paired);
	if (paired) {
		kl_fc_unpair_s8(wp, w0, cols, rows);
	}
	long m = (got != want) + (d != d0 + (uint32_t)n * KL_WEYL) + kl_test_diff_s8(w0, w1, n);
	if (m && verbose) {
		kl_test_bad(it);
		out_field(" rows ", rows);
		out_field(" cols ", cols);
		out_field(" kept ", kept);
		out_field(" paired ", paired);
		out_field(" edge ", edge);
		out_field(" sh ", sh);
		out_field(" lr_q ", lr_q);
		out_field(" k ", k_sel);
		out_field(" want ", want);
		out_field(" got ", got);
		kl_test_diffs(m);
	}
	return m;
}

int main(int argc, char **argv)
{
	return kl_test_fuzz_main(argc, argv, 0x7F4A7C15u, 3000, one_case);
}
