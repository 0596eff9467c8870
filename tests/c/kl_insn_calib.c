/*
 * kl_insn_calib: the instruction counter against loops of known length.
 * A "subs; bne" loop of n iterations retires 2n instructions; the firmware
 * prints "KL calib n N insn X" for a few n (X = kl_port_insn() across the
 * loop, call overhead included). The test (tests/python/test_kernels.py)
 * checks the differences between the loops against 2 * delta n, within the
 * counter's quantisation (one SysTick tick per end of a timed region).
 */
#include <stdint.h>

#include "kl_port.h"
#include "kl_test_out.h"

static uint64_t timed_loop(uint32_t n)
{
	const uint64_t t0 = kl_port_insn();
	__asm__ volatile("1:\n\t"
			 "subs %0, %0, #1\n\t"
			 "bne 1b"
			 : "+r"(n)
			 :
			 : "cc");
	return kl_port_insn() - t0;
}

int main(int argc, char **argv)
{
	static const uint32_t ns[] = {1000u, 11000u, 101000u, 1001000u};
	kl_port_init(argc, argv);
	if (!kl_port_has_counter()) {
		out_str("KL calib no counter\n");
		return 1;
	}
	for (unsigned i = 0; i < sizeof(ns) / sizeof(ns[0]); i++) {
		const uint64_t insn = timed_loop(ns[i]);
		out_field("KL calib n ", ns[i]);
		out_field(" insn ", (int64_t)insn);
		out_str("\n");
	}
	return 0;
}
