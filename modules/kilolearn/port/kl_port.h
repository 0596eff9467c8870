/*
 * kilolearn port interface: the only place where a program built on the
 * engine touches the outside world. The engine itself (src/) never calls
 * these; runners and the session core do.
 *
 * Implementations: port/posix (host), port/baremetal (QEMU mps2 boards),
 * port/zephyr (Zephyr RTOS).
 */
#ifndef KL_PORT_H
#define KL_PORT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bring up the console and the instruction counter. argc/argv are those of
 * main() (bare metal passes 0/NULL). Returns 0 or a negative errno. */
int kl_port_init(int argc, char **argv);

/* Write n bytes to the console (UART on boards, stdout on the host). */
void kl_port_write(const char *buf, size_t n);

/* Read one byte from the console (blocking): 0..255, or -1 at the end of
 * the input (host) / when there is no input channel. */
int kl_port_getc(void);

/* Push out what kl_port_write() buffered (the host's stdout). */
void kl_port_flush(void);

/* Retired-instruction counter. On QEMU with -icount shift=0 this is exact to
 * one timer tick (40 instructions). Returns 0 where no counter exists
 * (kl_port_has_counter() says which). */
uint64_t kl_port_insn(void);
int kl_port_has_counter(void);

/* The job handed to this run: on bare metal the image QEMU's generic loader
 * put at the board's job address, on the host the file named by argv[1].
 * Returns NULL (and *len = 0) when there is none. */
const uint8_t *kl_port_job(size_t *len);

/* Memory a program may use as simulated flash (kl_store_nor_init): on the
 * mps2 boards the PSRAM after the job image, on the host a static buffer.
 * 8-aligned; NULL (and *len = 0) where there is none. */
uint8_t *kl_port_flash_sim(size_t *len);

/* End the run with an exit code (semihosting SYS_EXIT_EXTENDED on boards). */
void kl_port_exit(int code);

#ifdef __cplusplus
}
#endif
#endif /* KL_PORT_H */
