/* Helpers shared by the test firmwares in tests/c: decimal output through
 * the port, the xorshift32 generator their data come from and the main of
 * the kernel fuzz firmwares. */
#ifndef KL_TEST_OUT_H
#define KL_TEST_OUT_H

#include <stdint.h>
#include <string.h>

#include "kilolearn/kl_kernels.h"
#include "kl_port.h"

static inline void out_str(const char *s)
{
	kl_port_write(s, strlen(s));
}

static inline void out_int(int64_t v)
{
	char buf[24];
	int n = 0;
	uint64_t u = v < 0 ? (uint64_t)(-(v + 1)) + 1u : (uint64_t)v;
	do {
		buf[sizeof(buf) - 1 - n++] = (char)('0' + u % 10u);
		u /= 10u;
	} while (u != 0u);
	if (v < 0) {
		buf[sizeof(buf) - 1 - n++] = '-';
	}
	kl_port_write(buf + sizeof(buf) - n, (size_t)n);
}

/* a labelled number: label, then v */
static inline void out_field(const char *label, int64_t v)
{
	out_str(label);
	out_int(v);
}

/* the final line of a fuzz firmware; its exit code */
static inline int kl_test_done(long cases, long bad)
{
	out_str("KL fuzz done cases ");
	out_int(cases);
	out_str(" mismatches ");
	out_int(bad);
	out_str("\n");
	return bad != 0;
}

/* xorshift32: the next value of *state */
static inline uint32_t kl_test_xorshift(uint32_t *state)
{
	uint32_t v = *state;
	v ^= v << 13;
	v ^= v >> 17;
	v ^= v << 5;
	return *state = v;
}

/* The generator a fuzz firmware draws its cases from: kl_test_seed() once, then
 * kl_test_rnd() (32 bits) and kl_test_rr() (an int in [lo, hi]). */
static inline uint32_t *kl_test_state(void)
{
	static uint32_t state = 1u;
	return &state;
}

static inline void kl_test_seed(uint32_t seed)
{
	*kl_test_state() = seed;
}

static inline uint32_t kl_test_rnd(void)
{
	return kl_test_xorshift(kl_test_state());
}

static inline int kl_test_rr(int lo, int hi)
{
	return lo + (int)(kl_test_rnd() % (uint32_t)(hi - lo + 1));
}

/* n int8 values: uniform, or (extreme) each 127 or -128 */
static inline void kl_test_fill_s8(int8_t *v, long n, int extreme)
{
	for (long i = 0; i < n; i++) {
		v[i] = (int8_t)(extreme ? ((kl_test_rnd() & 1) ? 127 : -128)
					: kl_test_rr(-128, 127));
	}
}

/* a mismatch report: kl_test_bad(it), the case's fields, kl_test_diffs(differences) */
static inline void kl_test_bad(int it)
{
	out_str("KL fuzz bad it ");
	out_int(it);
}

static inline void kl_test_diffs(long m)
{
	out_str(" diffs ");
	out_int(m);
	out_str("\n");
}

/* The main of a fuzz firmware: the port, the generator seeded, one_case(it, verbose) for
 * it = 0 .. iters - 1, the final line. one_case returns -1 for a drawn case it skips, else
 * the differences it found, which it reports when verbose (the first 19 bad cases). */
static inline int kl_test_fuzz_main(int argc, char **argv, uint32_t seed, int iters,
				    long (*one_case)(int it, int verbose))
{
	if (kl_port_init(argc, argv) != 0) {
		return 2;
	}
	long bad = 0, cases = 0;
	kl_test_seed(seed);
	for (int it = 0; it < iters; it++) {
		const long m = one_case(it, bad < 19);
		cases += m >= 0;
		bad += m > 0;
	}
	return kl_test_done(cases, bad);
}

/* The main of a kernel fuzz firmware whose cases are its one_case() (dsp kernels against
 * ref): iters draws from seed. Without the dsp kernels there is nothing to compare, no
 * one_case, and the firmware reports no cases. */
#if KL_KERNELS_DSP
#define KL_TEST_FUZZ_MAIN(seed, iters)                                           \
	int main(int argc, char **argv)                                          \
	{                                                                        \
		return kl_test_fuzz_main(argc, argv, (seed), (iters), one_case); \
	}
#else
#define KL_TEST_FUZZ_MAIN(seed, iters)                                 \
	int main(int argc, char **argv)                                \
	{                                                              \
		return kl_test_fuzz_main(argc, argv, (seed), 0, NULL); \
	}
#endif

#endif
