/* kilolearn port for Zephyr: console through printk, cycle counter from the
 * kernel's hardware cycle counter, exit through sys_reboot-free return. */
#include <zephyr/kernel.h>
#include <zephyr/logging/log.h>
#include <zephyr/sys/printk.h>

#include "kl_port.h"

LOG_MODULE_REGISTER(kilolearn, CONFIG_KILOLEARN_LOG_LEVEL);

int kl_port_init(int argc, char **argv)
{
	ARG_UNUSED(argc);
	ARG_UNUSED(argv);
	LOG_DBG("kilolearn port up");
	return 0;
}

void kl_port_write(const char *buf, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		printk("%c", buf[i]);
	}
}

int kl_port_getc(void)
{
	return -1; /* the Zephyr app reads its UART through an interrupt-driven ring buffer */
}

void kl_port_flush(void)
{
}

uint64_t kl_port_insn(void)
{
	/* Cycles, not retired instructions: on hardware that is what there is. */
#ifdef CONFIG_TIMER_HAS_64BIT_CYCLE_COUNTER
	return k_cycle_get_64();
#else
	/* the 32-bit counter extended to 64 bits: a wrap is seen as a smaller
	 * reading (callers read it at least once per wrap period: 171 s at
	 * 25 MHz), so differences of two readings never go negative */
	static uint32_t last;
	static uint64_t high;
	const uint32_t now = k_cycle_get_32();
	if (now < last) {
		high += (uint64_t)1 << 32;
	}
	last = now;
	return high | now;
#endif
}

int kl_port_has_counter(void)
{
	return 1;
}

const uint8_t *kl_port_job(size_t *len)
{
	*len = 0;
	return NULL;
}

uint8_t *kl_port_flash_sim(size_t *len)
{
	*len = 0;
	return NULL;
}

void kl_port_exit(int code)
{
	LOG_INF("exit %d", code);
	k_sleep(K_FOREVER);
}
