/*
 * kl_session: the continual-learning session firmware. Bytes from the
 * console (UART on the boards, stdin on the host) go to the session core,
 * replies go back out; see docs/protocol.md. The same program runs on the
 * host and on the QEMU boards; the Zephyr app wraps the same core.
 */
#include <stdint.h>

#include "kilolearn/kl_session.h"
#include "kl_port.h"

#ifndef KL_SESSION_ARENA_SIZE
#define KL_SESSION_ARENA_SIZE (256u * 1024u)
#endif
#ifndef KL_SESSION_STORE_SIZE
#define KL_SESSION_STORE_SIZE (256u * 1024u)
#endif

static uint32_t arena_mem[KL_SESSION_ARENA_SIZE / 4u];
static uint32_t store_mem[KL_SESSION_STORE_SIZE / 4u];
static kl_session_t session;
static kl_store_t store;

static void tx(void *ctx, const uint8_t *buf, size_t n)
{
	(void)ctx;
	kl_port_write((const char *)buf, n);
	kl_port_flush();
}

int main(int argc, char **argv)
{
	if (kl_port_init(argc, argv) != 0) {
		return 1;
	}
	kl_store_ram_init(&store, (uint8_t *)store_mem, sizeof(store_mem));
	const kl_session_cfg_t cfg = {
		.arena = (uint8_t *)arena_mem,
		.arena_size = sizeof(arena_mem),
		.store = &store,
		.tx = tx,
		.tx_ctx = NULL,
		.insn = kl_port_has_counter() ? kl_port_insn : NULL,
	};
	if (kl_session_init(&session, &cfg) != KL_OK) {
		return 1;
	}
	for (;;) {
		const int c = kl_port_getc();
		if (c < 0) {
			return 0; /* end of input: the host closed the link */
		}
		const uint8_t b = (uint8_t)c;
		kl_session_feed(&session, &b, 1u);
	}
}
