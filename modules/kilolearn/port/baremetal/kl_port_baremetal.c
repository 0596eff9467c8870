/*
 * kilolearn port for bare-metal Cortex-M on QEMU's Arm boards
 * (mps2-an385/an386/an500/an505, mps3-an547).
 *
 *   console  CMSDK APB UART0, polled TX
 *   counter  SysTick on the processor clock, extended to 64 bits by its
 *            overflow interrupt; under QEMU -icount shift=0 one tick is
 *            KL_INSN_PER_TICK_NUM / KL_INSN_PER_TICK_DEN retired
 *            instructions (40 at 25 MHz, 31.25 at 32 MHz)
 *   job      image placed at KL_JOB_ADDR by QEMU's generic loader
 *   exit     Arm semihosting SYS_EXIT_EXTENDED (needs
 *            -semihosting-config enable=on,target=native)
 */
#include "kl_port.h"
#include "kl_baremetal.h"

/* ---- CMSDK APB UART ---------------------------------------------------- */

#define UART_DATA     KL_REG32(KL_UART_BASE + 0x000u)
#define UART_STATE    KL_REG32(KL_UART_BASE + 0x004u)
#define UART_CTRL     KL_REG32(KL_UART_BASE + 0x008u)
#define UART_BAUDDIV  KL_REG32(KL_UART_BASE + 0x010u)
#define UART_STATE_TXFULL 0x1u
#define UART_STATE_RXFULL 0x2u
#define UART_CTRL_TXEN    0x1u
#define UART_CTRL_RXEN    0x2u

static void uart_enable(void)
{
    if ((UART_CTRL & UART_CTRL_TXEN) == 0u) {
        /* The baud rate is irrelevant under QEMU; use 115200 anyway (the
         * CMSDK UART requires BAUDDIV >= 16). */
        UART_BAUDDIV = (uint32_t)(KL_CPU_HZ / 115200u);
        UART_CTRL = UART_CTRL_TXEN;
    }
}

void kl_bm_write(const char *buf, size_t n)
{
    size_t i;
    uart_enable();
    for (i = 0; i < n; i++) {
        while (UART_STATE & UART_STATE_TXFULL) {
        }
        UART_DATA = (uint8_t)buf[i];
    }
}

int kl_port_getc(void)
{
    uart_enable();
    if ((UART_CTRL & UART_CTRL_RXEN) == 0u) {
        UART_CTRL |= UART_CTRL_RXEN;
    }
    while ((UART_STATE & UART_STATE_RXFULL) == 0u) {
    }
    return (int)(UART_DATA & 0xFFu);
}

void kl_port_flush(void)
{
}

void kl_bm_puts(const char *s)
{
    size_t n = 0;
    while (s[n] != '\0') {
        n++;
    }
    kl_bm_write(s, n);
}

void kl_bm_puthex(uint32_t v)
{
    static const char digits[] = "0123456789abcdef";
    char out[8];
    int i;
    for (i = 7; i >= 0; i--) {
        out[i] = digits[v & 0xFu];
        v >>= 4;
    }
    kl_bm_write(out, sizeof out);
}

void kl_port_write(const char *buf, size_t n)
{
    kl_bm_write(buf, n);
}

/* ---- SysTick instruction counter --------------------------------------- */

#define SYST_CSR  KL_REG32(0xE000E010u)
#define SYST_RVR  KL_REG32(0xE000E014u)
#define SYST_CVR  KL_REG32(0xE000E018u)
#define SYST_CSR_ENABLE    0x1u
#define SYST_CSR_TICKINT   0x2u
#define SYST_CSR_CLKSOURCE 0x4u
#define ICSR_PENDSTSET     (1u << 26)

#ifndef KL_SYSTICK_RELOAD /* overridable only to test the wrap logic */
#define KL_SYSTICK_RELOAD 0xFFFFFFu
#endif
#define SYSTICK_PERIOD ((uint32_t)KL_SYSTICK_RELOAD + 1u)

static volatile uint32_t systick_wraps;
static int systick_running;

void kl_bm_systick_isr(void)
{
    systick_wraps++;
}

static void systick_start(void)
{
    SYST_CSR = 0;
    SYST_RVR = KL_SYSTICK_RELOAD;
    SYST_CVR = 0; /* any write clears the counter; reload on first tick */
    systick_wraps = 0;
    SYST_CSR = SYST_CSR_CLKSOURCE | SYST_CSR_TICKINT | SYST_CSR_ENABLE;
    systick_running = 1;
}

static uint32_t irq_save(void)
{
    uint32_t primask;
    __asm__ volatile("mrs %0, primask\n\tcpsid i" : "=r"(primask) : : "memory");
    return primask;
}

static void irq_restore(uint32_t primask)
{
    __asm__ volatile("msr primask, %0" : : "r"(primask) : "memory");
}

/* Ticks since systick_start(). The counter pends its interrupt when it
 * reaches 0 and reloads one tick later, so a period is RELOAD+1 ticks and
 * the value v maps to (PERIOD - v) mod PERIOD ticks into the current period.
 * With interrupts masked, a wrap that has happened but whose interrupt has
 * not run yet shows up as PENDSTSET: count it and re-read the counter so
 * both halves refer to the same period. Safe from any context. */
static uint64_t systick_ticks(void)
{
    uint32_t primask = irq_save();
    uint32_t hi = systick_wraps;
    uint32_t v = SYST_CVR;
    if (KL_SCB_ICSR & ICSR_PENDSTSET) {
        v = SYST_CVR;
        hi++;
    }
    irq_restore(primask);
    return (uint64_t)hi * SYSTICK_PERIOD + (uint64_t)((SYSTICK_PERIOD - v) % SYSTICK_PERIOD);
}

uint64_t kl_port_insn(void)
{
    if (!systick_running) {
        return 0;
    }
    /* DEN is 1 or a small power of two: a shift, no division call */
    return systick_ticks() * (uint64_t)KL_INSN_PER_TICK_NUM / (uint64_t)KL_INSN_PER_TICK_DEN;
}

int kl_port_has_counter(void)
{
    return 1;
}

/* ---- init / job / exit -------------------------------------------------- */

int kl_port_init(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    uart_enable();
    if (!systick_running) {
        systick_start();
    }
    return 0;
}

const uint8_t *kl_port_job(size_t *len)
{
    const volatile uint8_t *p = (const volatile uint8_t *)(uintptr_t)KL_JOB_ADDR;
    uint32_t n;

    if (len != NULL) {
        *len = 0;
    }
    if (p[0] != 'K' || p[1] != 'L' || p[2] != 'J' || p[3] != 'B') {
        return NULL;
    }
    n = (uint32_t)p[8] | ((uint32_t)p[9] << 8) | ((uint32_t)p[10] << 16) |
        ((uint32_t)p[11] << 24);
    if (n > (uint32_t)KL_JOB_MAX) {
        return NULL;
    }
    if (len != NULL) {
        *len = (size_t)n;
    }
    return (const uint8_t *)(uintptr_t)KL_JOB_ADDR;
}

uint8_t *kl_port_flash_sim(size_t *len)
{
    size_t job = 0;
    (void)kl_port_job(&job);
    const uintptr_t start = ((uintptr_t)KL_JOB_ADDR + job + 4095u) & ~(uintptr_t)4095u;
    const uintptr_t end = (uintptr_t)KL_JOB_ADDR + (uintptr_t)KL_JOB_MAX;
    *len = start < end ? (size_t)(end - start) : 0u;
    return *len != 0u ? (uint8_t *)start : NULL;
}

#define SYS_EXIT_EXTENDED           0x20u
#define ADP_STOPPED_APPLICATIONEXIT 0x20026u

void kl_bm_exit(int code)
{
    volatile uint32_t block[2];
    block[0] = ADP_STOPPED_APPLICATIONEXIT;
    block[1] = (uint32_t)code;
    {
        register uint32_t r0 __asm__("r0") = SYS_EXIT_EXTENDED;
        register volatile uint32_t *r1 __asm__("r1") = block;
        __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    }
    /* Only reached without semihosting: nothing else can stop QEMU. */
    for (;;) {
        __asm__ volatile("wfi");
    }
}

void kl_port_exit(int code)
{
    kl_bm_exit(code);
}
