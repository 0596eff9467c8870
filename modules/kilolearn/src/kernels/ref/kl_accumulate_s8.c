/* int32 sums with a power-of-two scale: gradient accumulation over a batch
 * and the int8 momentum velocity (docs/int8-training.md). */
#include "kilolearn/kl_kernels.h"

/* x / 2^s rounded half away from zero, s >= 0 (0 beyond 62 bits) */
static inline int64_t rsh(int64_t x, int s)
{
	return s == 0 ? x : s > 62 ? 0 : kl_rshift_round64(x, s);
}

int kl_accumulate_s8(int32_t *acc, int ea, int32_t mu_q, const int32_t *g, int eg, int n)
{
	const int e = ea > eg ? ea : eg;
	const int sa = KL_MOM_FRAC_BITS + e - ea, sg = e - eg;
	uint64_t mx = 0;
	for (int k = 0; k < n; k++) {
		const int64_t t = rsh((int64_t)acc[k] * mu_q, sa) + rsh(g[k], sg);
		const uint64_t a = t < 0 ? 0u - (uint64_t)t : (uint64_t)t;
		mx = a > mx ? a : mx;
	}
	int s = 0;
	while ((mx >> s) > KL_ACC_MAX) {
		s++;
	}
	for (int k = 0; k < n; k++) {
		const int64_t t = rsh((int64_t)acc[k] * mu_q, sa) + rsh(g[k], sg);
		acc[k] = (int32_t)rsh(t, s);
	}
	return e + s;
}
