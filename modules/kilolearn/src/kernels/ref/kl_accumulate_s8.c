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

/* the same for an int32 x and 1 <= s <= 31, in 32 bits */
static inline int32_t rsh32(int32_t x, int s)
{
	const int32_t mask = (int32_t)((1u << s) - 1u);
	return (x >> s) + ((x & mask) > (mask >> 1) + (x < 0));
}

/* g (exponent e - sg) at the exponent e */
static inline int32_t g_at(int32_t g, int sg)
{
	return sg == 0 ? g : sg < 32 ? rsh32(g, sg) : (int32_t)rsh(g, sg);
}

/* the general case (exponents far apart): 64-bit, two passes */
static int kl_accumulate_wide(int32_t *acc, int e, int32_t mu_q, int sa, const int32_t *g, int sg,
			      int n)
{
	uint64_t mx = 0;
	for (int k = 0; k < n; k++) {
		int32_t a;
		if (mu_q == 0) {
			a = 0;
		} else if (mu_q == (int32_t)1 << KL_MOM_FRAC_BITS) {
			a = (int32_t)rsh(acc[k], sa - KL_MOM_FRAC_BITS);
		} else {
			a = (int32_t)rsh((int64_t)acc[k] * mu_q, sa);
		}
		acc[k] = a;
		const int64_t t = (int64_t)a + g_at(g[k], sg);
		const uint64_t m = t < 0 ? 0u - (uint64_t)t : (uint64_t)t;
		mx = m > mx ? m : mx;
	}
	int s = 0;
	while ((mx >> s) > KL_ACC_MAX) {
		s++;
	}
	for (int k = 0; k < n; k++) {
		const int64_t t = (int64_t)acc[k] + g_at(g[k], sg);
		acc[k] = (int32_t)(s == 0 ? t : rsh(t, s));
	}
	return e + s;
}

int kl_accumulate_s8(int32_t *acc, int ea, int32_t mu_q, const int32_t *g, int eg, int n)
{
	const int e = ea > eg ? ea : eg;
	const int sa = KL_MOM_FRAC_BITS + e - ea, sg = e - eg;
	if (sa > 31 || sg > 31) {
		return kl_accumulate_wide(acc, e, mu_q, sa, g, sg, n);
	}
	/* acc * mu_q / 2^15 and g at the exponent e (a sum, mu_q = 2^15, shifts acc
	 * by sa - 15 directly: the same real number, so the same rounding); their
	 * sum t is stored wrapped to 32 bits. The shift s depends only on the bit
	 * length of max |t|, which the OR of every |t| has too (an int32 overflow:
	 * 2^31 <= |t| < 2^32). No shift (the usual case): one pass. */
	const int32_t one = (int32_t)1 << KL_MOM_FRAC_BITS;
	uint32_t mx = 0;
	for (int k = 0; k < n; k++) {
		int32_t a;
		if (mu_q == 0) {
			a = 0;
		} else if (mu_q == one) {
			a = sa == KL_MOM_FRAC_BITS ? acc[k] : rsh32(acc[k], sa - KL_MOM_FRAC_BITS);
		} else { /* rsh of the 64-bit product by 15 <= sa <= 31, |result| < 2^31 */
			int64_t p = (int64_t)acc[k] * mu_q;
			p += ((int64_t)1 << (sa - 1)) - (p < 0);
			a = (int32_t)(((uint32_t)p >> sa) | ((uint32_t)(p >> 32) << (32 - sa)));
		}
		const int32_t gk = sg == 0 ? g[k] : rsh32(g[k], sg);
		const int32_t t = (int32_t)((uint32_t)a + (uint32_t)gk);
		const uint32_t m = t < 0 ? 0u - (uint32_t)t : (uint32_t)t;
		mx |= ((a ^ t) & (gk ^ t)) < 0 ? 0x80000000u : m;
		acc[k] = t;
	}
	int s = 0;
	while ((mx >> s) > KL_ACC_MAX) {
		s++;
	}
	if (s != 0) { /* a' = t - g' (mod 2^32) is exact: the sums, shifted */
		for (int k = 0; k < n; k++) {
			const int32_t gk = sg == 0 ? g[k] : rsh32(g[k], sg);
			const int32_t a = (int32_t)((uint32_t)acc[k] - (uint32_t)gk);
			acc[k] = (int32_t)rsh((int64_t)a + gk, s);
		}
	}
	return e + s;
}
