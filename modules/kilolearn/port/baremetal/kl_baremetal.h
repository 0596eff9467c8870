/*
 * Internal interface of the bare-metal port (QEMU mps2 boards). Not part of
 * the public port API (kl_port.h); shared by startup.c, kl_port_baremetal.c
 * and syscalls.c only.
 *
 * Board parameters arrive as compile definitions set by cmake/kl_firmware.cmake
 * from boards/qemu/<board>/board.cmake:
 *   KL_UART_BASE      CMSDK APB UART0 base address
 *   KL_CPU_HZ         processor clock (SysTick CLKSOURCE=1)
 *   KL_INSN_PER_TICK_NUM / KL_INSN_PER_TICK_DEN
 *                     instructions per SysTick tick under -icount shift=0
 *                     (1e9 / KL_CPU_HZ as a reduced fraction)
 *   KL_JOB_ADDR       where the runner loads the job image
 *   KL_JOB_MAX        size of the job region in bytes
 */
#ifndef KL_BAREMETAL_H
#define KL_BAREMETAL_H

#include <stddef.h>
#include <stdint.h>

#if !defined(KL_UART_BASE) || !defined(KL_JOB_ADDR) || !defined(KL_INSN_PER_TICK_NUM) || \
    !defined(KL_INSN_PER_TICK_DEN)
#error "bare-metal port: KL_UART_BASE, KL_JOB_ADDR and KL_INSN_PER_TICK_NUM/_DEN must be defined (see cmake/kl_firmware.cmake)"
#endif
#ifndef KL_JOB_MAX
#define KL_JOB_MAX 0x1000000u
#endif
#ifndef KL_CPU_HZ
#define KL_CPU_HZ 25000000u
#endif

/* Exit code for faults, failed asserts and abort(). */
#define KL_EXIT_FAULT 0x7F

#define KL_REG32(addr) (*(volatile uint32_t *)(uintptr_t)(addr))

/* System control space (identical on v7-M and v8-M; Secure bank when the
 * program runs Secure). */
#define KL_SCB_ICSR   KL_REG32(0xE000ED04u)
#define KL_SCB_VTOR   KL_REG32(0xE000ED08u)
#define KL_SCB_CCR    KL_REG32(0xE000ED14u)
#define KL_SCB_SHCSR  KL_REG32(0xE000ED24u)
#define KL_SCB_CFSR   KL_REG32(0xE000ED28u)
#define KL_SCB_HFSR   KL_REG32(0xE000ED2Cu)
#define KL_SCB_MMFAR  KL_REG32(0xE000ED34u)
#define KL_SCB_BFAR   KL_REG32(0xE000ED38u)
#define KL_SCB_CPACR  KL_REG32(0xE000ED88u)
#define KL_SAU_SFSR   KL_REG32(0xE000EDE4u)
#define KL_SAU_SFAR   KL_REG32(0xE000EDE8u)

/* Console output that works at any time (also before kl_port_init and from
 * fault handlers): enables the UART transmitter if needed. */
void kl_bm_write(const char *buf, size_t n);
void kl_bm_puts(const char *s);
void kl_bm_puthex(uint32_t v);

/* SysTick overflow interrupt (extends the 24-bit counter). */
void kl_bm_systick_isr(void);

/* Semihosting SYS_EXIT_EXTENDED; does not return. */
void kl_bm_exit(int code) __attribute__((noreturn));

#endif /* KL_BAREMETAL_H */
