/*
 * The Zephyr port (modules/kilolearn/port/zephyr/kl_port_zephyr.c): console output, the
 * cycle counter, no job image.
 */
#include <zephyr/kernel.h>
#include <zephyr/ztest.h>

#include <kl_port.h>

ZTEST(kilolearn_port, test_port_basics)
{
	size_t len = 123;

	zassert_equal(kl_port_init(0, NULL), 0);
	zassert_is_null(kl_port_job(&len));
	zassert_equal(len, 0u);
	kl_port_write("KL port ok\n", 11);

	zassert_true(kl_port_has_counter());
	const uint64_t t0 = kl_port_insn();

	k_busy_wait(1000);
	const uint64_t t1 = kl_port_insn();

	zassert_true(t1 > t0, "the cycle counter does not advance");
}

ZTEST_SUITE(kilolearn_port, NULL, NULL, NULL, NULL, NULL);
