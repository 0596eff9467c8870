/*
 * kilolearn session app for Zephyr: the continual-learning session core
 * (docs/protocol.md, modules/kilolearn/src/session/kl_session.c) on a UART.
 *
 * RX: the UART interrupt handler moves received bytes into a ring buffer and
 * wakes the session thread, which feeds them to kl_session_feed(); complete
 * frames are executed there and their replies go out with uart_poll_out().
 * The protocol is stop-and-wait, so the ring buffer (one frame at least)
 * never overflows. The UART is the chosen `kilolearn,uart` node, else the
 * console: boot messages and the line "kilolearn ready" come first, then the
 * UART carries protocol frames only.
 */
#include <zephyr/device.h>
#include <zephyr/devicetree.h>
#include <zephyr/drivers/uart.h>
#include <zephyr/kernel.h>
#include <zephyr/logging/log.h>
#include <zephyr/sys/printk.h>
#include <zephyr/sys/ring_buffer.h>

#include "kilolearn/kl_session.h"
#include "kl_port.h"
#include "store.h"

LOG_MODULE_REGISTER(kilolearn_app, CONFIG_KILOLEARN_APP_LOG_LEVEL);

#if DT_HAS_CHOSEN(kilolearn_uart)
#define KL_UART_NODE DT_CHOSEN(kilolearn_uart)
#else
#define KL_UART_NODE DT_CHOSEN(zephyr_console)
#endif

#define KL_ARENA_BYTES (CONFIG_KILOLEARN_ARENA_SIZE + CONFIG_KILOLEARN_REPLAY_SIZE)
BUILD_ASSERT(CONFIG_KILOLEARN_APP_RX_BUF_SIZE >= KL_FRAME_WIRE_MAX,
	     "the receive ring buffer must hold one whole frame");

static const struct device *const uart = DEVICE_DT_GET(KL_UART_NODE);

RING_BUF_DECLARE(rx_ring, CONFIG_KILOLEARN_APP_RX_BUF_SIZE);
static K_SEM_DEFINE(rx_sem, 0, 1);
static volatile uint32_t rx_dropped;

static uint8_t arena[KL_ARENA_BYTES] __aligned(8);
static kl_session_t session;

static void uart_isr(const struct device *dev, void *user_data)
{
	ARG_UNUSED(user_data);
	uint8_t buf[16];
	int n;

	if (!uart_irq_update(dev)) {
		return;
	}
	if (!uart_irq_rx_ready(dev)) {
		return;
	}
	while ((n = uart_fifo_read(dev, buf, sizeof(buf))) > 0) {
		const uint32_t put = ring_buf_put(&rx_ring, buf, (uint32_t)n);

		if (put < (uint32_t)n) {
			rx_dropped += (uint32_t)n - put; /* the CRC check NAKs the frame */
		}
	}
	k_sem_give(&rx_sem);
}

static void session_tx(void *ctx, const uint8_t *buf, size_t n)
{
	ARG_UNUSED(ctx);
	for (size_t i = 0; i < n; i++) {
		uart_poll_out(uart, buf[i]);
	}
}

static void session_thread(void *p1, void *p2, void *p3)
{
	ARG_UNUSED(p1);
	ARG_UNUSED(p2);
	ARG_UNUSED(p3);
	uint8_t chunk[64];

	for (;;) {
		(void)k_sem_take(&rx_sem, K_FOREVER);
		uint32_t n;

		while ((n = ring_buf_get(&rx_ring, chunk, sizeof(chunk))) > 0u) {
			kl_session_feed(&session, chunk, n);
		}
	}
}

K_THREAD_DEFINE(kl_session_tid, CONFIG_KILOLEARN_APP_STACK_SIZE, session_thread, NULL, NULL,
		NULL, CONFIG_KILOLEARN_APP_THREAD_PRIORITY, 0, SYS_FOREVER_MS);

int main(void)
{
	kl_store_t *store;

	if (!device_is_ready(uart)) {
		LOG_ERR("UART %s not ready", uart->name);
		return -ENODEV;
	}
	(void)app_store_probe_partition();
#ifdef CONFIG_KILOLEARN_APP_POWERCUT_TEST
	return app_powercut_run(&session, arena, sizeof(arena));
#endif
	if (app_store_init(&store) != 0) {
		return -EIO;
	}
	const kl_session_cfg_t cfg = {
		.arena = arena,
		.arena_size = sizeof(arena),
		.store = store,
		.tx = session_tx,
		.tx_ctx = NULL,
		.insn = kl_port_has_counter() ? kl_port_insn : NULL,
		.log_store = app_store_log(),
		.replay_store = app_store_replay(),
	};
	const int err = kl_session_init(&session, &cfg);

	if (err != KL_OK) {
		LOG_ERR("kl_session_init: %d", err);
		return err;
	}
	const int cb = uart_irq_callback_user_data_set(uart, uart_isr, NULL);

	if (cb != 0) {
		LOG_ERR("UART %s has no interrupt-driven API (%d)", uart->name, cb);
		return cb;
	}
	LOG_INF("session on %s: arena %u bytes (replay %u), rx ring %u bytes, max payload %u",
		uart->name, (unsigned int)sizeof(arena), (unsigned int)CONFIG_KILOLEARN_REPLAY_SIZE,
		(unsigned int)CONFIG_KILOLEARN_APP_RX_BUF_SIZE, (unsigned int)KL_SESSION_MAX_PAYLOAD);
	k_thread_start(kl_session_tid);
	uart_irq_rx_enable(uart);
	printk("kilolearn ready\n");
	return 0;
}
