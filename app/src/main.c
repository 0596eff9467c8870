/*
 * kilolearn session app for Zephyr: the continual-learning session core
 * (docs/protocol.md, modules/kilolearn/src/session/kl_session.c) on a UART
 * or a USB CDC-ACM port.
 *
 * RX: the UART interrupt handler moves received bytes into a ring buffer and
 * wakes the session thread, which feeds them to kl_session_feed(); complete
 * frames are executed there and their replies go out with uart_poll_out().
 * Protocol version 2 lets the host keep a window of requests in flight: the
 * window is what both the ring buffer (that many whole frames while the
 * thread computes) and the window memory (CONFIG_KILOLEARN_APP_WINDOW) hold,
 * so the ring never overflows. The UART is the chosen `kilolearn,uart` node
 * (a `zephyr,cdc-acm-uart` node: USB, enabled here, waiting for the host to
 * open the port), else the console: boot messages and the line
 * "kilolearn ready" come first, then it carries protocol frames only.
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

#if DT_NODE_HAS_COMPAT(KL_UART_NODE, zephyr_cdc_acm_uart)
#define KL_USB_CDC 1
#include <zephyr/usb/usb_device.h>
#endif

#define KL_ARENA_BYTES (CONFIG_KILOLEARN_ARENA_SIZE + CONFIG_KILOLEARN_REPLAY_SIZE)
BUILD_ASSERT(CONFIG_KILOLEARN_APP_RX_BUF_SIZE >= KL_FRAME_WIRE_MAX,
	     "the receive ring buffer must hold one whole frame");
/* requests in flight: what the window memory and the ring buffer both hold */
#define KL_RING_FRAMES (CONFIG_KILOLEARN_APP_RX_BUF_SIZE / KL_FRAME_WIRE_MAX)
#define KL_WINDOW MIN(MIN(CONFIG_KILOLEARN_APP_WINDOW, KL_RING_FRAMES), KL_SESSION_MAX_WINDOW)

static const struct device *const uart = DEVICE_DT_GET(KL_UART_NODE);

RING_BUF_DECLARE(rx_ring, CONFIG_KILOLEARN_APP_RX_BUF_SIZE);
static K_SEM_DEFINE(rx_sem, 0, 1);
static volatile uint32_t rx_dropped;

static uint8_t arena[KL_ARENA_BYTES] __aligned(8);
static kl_session_t session;
#if KL_WINDOW > 1
static uint8_t window_mem[KL_SESSION_WINDOW_BYTES(KL_WINDOW)] __aligned(4);
#endif

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
#ifdef KL_USB_CDC
	/* The device stack of CONFIG_USB_DEVICE_STACK: Zephyr 4.x marks it (and usb_enable())
	 * deprecated in favour of the new stack (usbd_*), but still builds and runs it; twister's
	 * -Werror would turn the deprecation into an error there. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
	int usb_err = usb_enable(NULL);
#pragma GCC diagnostic pop

	if (usb_err != 0) {
		LOG_ERR("USB not enabled");
		return -EIO;
	}
	for (uint32_t dtr = 0; dtr == 0u;) { /* the host opened the port */
		(void)uart_line_ctrl_get(uart, UART_LINE_CTRL_DTR, &dtr);
		k_sleep(K_MSEC(100));
	}
#endif
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
#if KL_WINDOW > 1
	const unsigned int window = kl_session_window(&session, window_mem, sizeof(window_mem));
#else
	const unsigned int window = 1u;
#endif
	const int cb = uart_irq_callback_user_data_set(uart, uart_isr, NULL);

	if (cb != 0) {
		LOG_ERR("UART %s has no interrupt-driven API (%d)", uart->name, cb);
		return cb;
	}
	LOG_INF("session on %s: arena %u bytes (replay %u), rx ring %u bytes, max payload %u, "
		"window %u",
		uart->name, (unsigned int)sizeof(arena), (unsigned int)CONFIG_KILOLEARN_REPLAY_SIZE,
		(unsigned int)CONFIG_KILOLEARN_APP_RX_BUF_SIZE, (unsigned int)KL_SESSION_MAX_PAYLOAD,
		window);
	k_thread_start(kl_session_tid);
	printk("kilolearn ready\n");
	uart_irq_rx_enable(uart);
	/* A host that writes before the RX interrupt is on (one that does not wait
	 * for the banner, e.g. `kilolearn session --port`) may have left a byte in
	 * the receiver. The CMSDK APB UART (mps2 boards) raises its RX interrupt
	 * only when a byte arrives with the interrupt enabled, and takes no other
	 * byte while one waits, so nothing would ever come in: drain it here, as
	 * the interrupt would. */
	const unsigned int key = irq_lock();

	uart_isr(uart, NULL);
	irq_unlock(key);
	return 0;
}
