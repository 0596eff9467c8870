/* Helpers shared by the test firmwares in tests/c: decimal output through
 * the port and the xorshift32 generator their data come from. */
#ifndef KL_TEST_OUT_H
#define KL_TEST_OUT_H

#include <stdint.h>
#include <string.h>

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

#endif
