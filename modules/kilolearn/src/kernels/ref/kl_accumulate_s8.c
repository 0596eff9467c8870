/* int32 sums with a power-of-two scale: gradient accumulation over a batch
 * and the int8 momentum velocity (docs/int8-training.md). */
#include "kilolearn/kl_kernels.h"

/* x / 2^s rounded half away from zero, s >= 0 (0 beyond 62 bits):
 * floor((x + 2^(s-1) - (x < 0)) / 2^s), |x| < 2^62 */
static inline int64_t rsh(int64_t x, int s)
{
	if (s == 0) {
		return x;
	}
	if (s > 62) {
		return 0;
	}
	return (x + (((int64_t)1 << (s - 1)) - (x < 0))) >> s;
}

/* one element before the final shift: acc * mu_q / 2^15 at the exponent e (sa
 * = 15 + e - ea) plus g at e (sg = e - eg). A sum (mu_q = 2^15) shifts acc by
 * sa - 15 directly: the same real number, so the same rounding. */
static inline int64_t term(int32_t a, int32_t gk, int32_t mu_q, int sa, int sg)
{
	int64_t t;
	if (mu_q == 0) {
		t = 0;
	} else if (mu_q == (int32_t)1 << KL_MOM_FRAC_BITS) {
		t = rsh(a, sa - KL_MOM_FRAC_BITS);
	} else {
		t = rsh((int64_t)a * mu_q, sa);
	}
	return t + rsh(gk, sg);
}

int kl_accumulate_s8(int32_t *acc, int ea, int32_t mu_q, const int32_t *g, int eg, int n)
{
	const int e = ea > eg ? ea : eg;
	const int sa = KL_MOM_FRAC_BITS + e - ea, sg = e - eg;
	uint64_t mx = 0;
	for (int k = 0; k < n; k++) {
		const int64_t t = term(acc[k], g[k], mu_q, sa, sg);
		const uint64_t a = t < 0 ? 0u - (uint64_t)t : (uint64_t)t;
		mx = a > mx ? a : mx;
	}
	int s = 0;
	while ((mx >> s) > KL_ACC_MAX) {
		s++;
	}
	for (int k = 0; k < n; k++) {
		acc[k] = (int32_t)rsh(term(acc[k], g[k], mu_q, sa, sg), s);
	}
	return e + s;
}
