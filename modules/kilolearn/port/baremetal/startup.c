/*
 * Startup code for kilolearn on bare-metal Cortex-M (QEMU mps2 boards):
 * vector table, reset handler, fault handlers.
 *
 * Reset: set the main stack (and MSPLIM on ARMv8-M), enable the FPU when the
 * build uses one (before any FP instruction can run), copy .data, zero .bss,
 * enable the separate fault handlers, run constructors, call
 * main(0, NULL) and exit through semihosting with its return value.
 *
 * Faults (HardFault, MemManage, BusFault, UsageFault, SecureFault, NMI and
 * any unexpected exception or interrupt) print one line on the UART and exit
 * with code KL_EXIT_FAULT (0x7F) instead of hanging.
 */
#include <stddef.h>
#include <stdint.h>

#include "kl_baremetal.h"

/* Provided by the linker script (boards/qemu/common/kl_sections.ld). */
extern uint32_t __stack_top[];
extern uint32_t __stack_limit[];
extern uint32_t __data_load[];
extern uint32_t __data_start[];
extern uint32_t __data_end[];
extern uint32_t __bss_start[];
extern uint32_t __bss_end[];
extern uint32_t __ram_start[];
extern uint32_t __ram_end[];
extern void (*__preinit_array_start[])(void);
extern void (*__preinit_array_end[])(void);
extern void (*__init_array_start[])(void);
extern void (*__init_array_end[])(void);

int main(int argc, char **argv);

void Reset_Handler(void) __attribute__((naked, noreturn));
void kl_bm_fault_entry(void) __attribute__((naked, noreturn));
void kl_bm_reset_c(void) __attribute__((noreturn, used));
void kl_bm_fault_report(uint32_t ipsr, uint32_t exc_return, const uint32_t *frame)
    __attribute__((noreturn, used));

/* Stack for the fault reporter: the main stack may be the very thing that
 * broke. Above __stack_limit, so MSPLIM does not trip on it. */
#define KL_FAULT_STACK_WORDS 256
uint32_t kl_bm_fault_stack[KL_FAULT_STACK_WORDS] __attribute__((aligned(8), used));

/* ---- vector table ------------------------------------------------------ */

typedef void (*kl_vector_t)(void);

#define KL_NUM_IRQS 32 /* never enabled; listed so a stray one is reported */
#define FAULT ((kl_vector_t)kl_bm_fault_entry)

__attribute__((section(".isr_vector"), used, aligned(256)))
const kl_vector_t kl_bm_vectors[16 + KL_NUM_IRQS] = {
    (kl_vector_t)(uintptr_t)__stack_top, /* 0  initial MSP */
    Reset_Handler,                       /* 1  Reset */
    FAULT,                               /* 2  NMI */
    FAULT,                               /* 3  HardFault */
    FAULT,                               /* 4  MemManage */
    FAULT,                               /* 5  BusFault */
    FAULT,                               /* 6  UsageFault */
    FAULT,                               /* 7  SecureFault (v8-M) */
    0, 0, 0,                             /* 8-10 reserved */
    FAULT,                               /* 11 SVCall */
    FAULT,                               /* 12 DebugMonitor */
    0,                                   /* 13 reserved */
    FAULT,                               /* 14 PendSV */
    kl_bm_systick_isr,                   /* 15 SysTick */
    /* 16.. external interrupts */
    FAULT, FAULT, FAULT, FAULT, FAULT, FAULT, FAULT, FAULT,
    FAULT, FAULT, FAULT, FAULT, FAULT, FAULT, FAULT, FAULT,
    FAULT, FAULT, FAULT, FAULT, FAULT, FAULT, FAULT, FAULT,
    FAULT, FAULT, FAULT, FAULT, FAULT, FAULT, FAULT, FAULT,
};

/* ---- stack guard -------------------------------------------------------- */

/* The main stack sits at the bottom of RAM. On ARMv8-M MSPLIM (set in
 * Reset_Handler) catches an overflow exactly. On ARMv7-M an MPU region
 * directly below __stack_limit, inaccessible to everyone, turns an overflow
 * into a MemManage fault; without it the mps2 boards would let the stack run
 * into a RAZ/WI hole and then over the code SSRAM. The rest of the map keeps
 * the default attributes (PRIVDEFENA). Define KL_NO_STACK_GUARD to leave the
 * MPU alone. */
#if (defined(__ARM_ARCH_7M__) || defined(__ARM_ARCH_7EM__)) && !defined(KL_NO_STACK_GUARD)
#define MPU_TYPE KL_REG32(0xE000ED90u)
#define MPU_CTRL KL_REG32(0xE000ED94u)
#define MPU_RNR  KL_REG32(0xE000ED98u)
#define MPU_RBAR KL_REG32(0xE000ED9Cu)
#define MPU_RASR KL_REG32(0xE000EDA0u)
#define KL_GUARD_MAX_LOG2 18 /* 256 KB: larger than any single frame */

static void stack_guard_init(void)
{
    uint32_t limit = (uint32_t)(uintptr_t)__stack_limit;
    uint32_t log2 = KL_GUARD_MAX_LOG2;

    if (((MPU_TYPE >> 8) & 0xFFu) == 0u) {
        return; /* no MPU regions */
    }
    while (log2 > 5u && (limit & ((1u << log2) - 1u)) != 0u) {
        log2--; /* region base must be aligned to its size */
    }
    if ((limit & ((1u << log2) - 1u)) != 0u || limit < (1u << log2)) {
        return;
    }
    MPU_RNR = 0;
    MPU_RBAR = limit - (1u << log2);
    /* XN, AP=000 (no access), SIZE = log2 - 1, ENABLE */
    MPU_RASR = (1u << 28) | ((log2 - 1u) << 1) | 1u;
    MPU_CTRL = (1u << 2) | 1u; /* PRIVDEFENA | ENABLE */
    __asm__ volatile("dsb\n\tisb" ::: "memory");
}
#else
static void stack_guard_init(void)
{
}
#endif

/* ---- reset -------------------------------------------------------------- */

__attribute__((section(".text.Reset_Handler")))
void Reset_Handler(void)
{
    __asm__ volatile(
        "ldr   r0, =__stack_top\n\t"
        "mov   sp, r0\n\t"
#if defined(__ARM_ARCH_8M_MAIN__)
        "ldr   r0, =__stack_limit\n\t"
        "msr   msplim, r0\n\t"
#endif
#if defined(__ARM_FP)
        /* CPACR: full access to CP10/CP11 before any FP instruction. */
        "ldr   r0, =0xE000ED88\n\t"
        "ldr   r1, [r0]\n\t"
        "orr   r1, r1, #(0xF << 20)\n\t"
        "str   r1, [r0]\n\t"
        "dsb\n\t"
        "isb\n\t"
#endif
        "bl    kl_bm_reset_c\n\t"
        "b     .\n\t"
        ".ltorg\n\t");
}

void kl_bm_reset_c(void)
{
    uint32_t *dst;
    const uint32_t *src;
    void (**fn)(void);
    int rc;

    src = __data_load;
    for (dst = __data_start; dst < __data_end; dst++) {
        *dst = *src++;
    }
    for (dst = __bss_start; dst < __bss_end; dst++) {
        *dst = 0;
    }

    KL_SCB_VTOR = (uint32_t)(uintptr_t)kl_bm_vectors;
    /* Separate MemManage/BusFault/UsageFault (+SecureFault on v8-M)
     * handlers, and trap integer division by zero. */
#if defined(__ARM_ARCH_8M_MAIN__)
    KL_SCB_SHCSR |= (1u << 16) | (1u << 17) | (1u << 18) | (1u << 19);
#else
    KL_SCB_SHCSR |= (1u << 16) | (1u << 17) | (1u << 18);
#endif
    KL_SCB_CCR |= (1u << 4); /* DIV_0_TRP */
    __asm__ volatile("dsb\n\tisb" ::: "memory");
    stack_guard_init();

    for (fn = __preinit_array_start; fn < __preinit_array_end; fn++) {
        (*fn)();
    }
    for (fn = __init_array_start; fn < __init_array_end; fn++) {
        (*fn)();
    }

    rc = main(0, NULL);
    kl_bm_exit(rc);
}

/* ---- faults ------------------------------------------------------------- */

/* r0 = IPSR, r1 = EXC_RETURN, r2 = stacked frame (MSP or PSP per
 * EXC_RETURN.SPSEL); then continue on the dedicated fault stack. */
void kl_bm_fault_entry(void)
{
    __asm__ volatile(
        "mrs   r0, ipsr\n\t"
        "mov   r1, lr\n\t"
        "tst   r1, #4\n\t"
        "ite   eq\n\t"
        "mrseq r2, msp\n\t"
        "mrsne r2, psp\n\t"
        "ldr   r3, =kl_bm_fault_stack + 4 * 256\n\t"
        "mov   sp, r3\n\t"
        "b     kl_bm_fault_report\n\t"
        ".ltorg\n\t");
}

static const char *exception_name(uint32_t n)
{
    switch (n) {
    case 2: return "NMI";
    case 3: return "HardFault";
    case 4: return "MemManage";
    case 5: return "BusFault";
    case 6: return "UsageFault";
    case 7: return "SecureFault";
    case 11: return "SVCall";
    case 12: return "DebugMonitor";
    case 14: return "PendSV";
    default: return n >= 16 ? "IRQ" : "exception";
    }
}

void kl_bm_fault_report(uint32_t ipsr, uint32_t exc_return, const uint32_t *frame)
{
    uint32_t n = ipsr & 0x1FFu;
    uint32_t cfsr = KL_SCB_CFSR;
    uintptr_t f = (uintptr_t)frame;

    (void)exc_return;
    kl_bm_puts("\n*** kilolearn: ");
    kl_bm_puts(exception_name(n));
    kl_bm_puts(" #");
    kl_bm_puthex(n);
    /* Only read the stacked frame if it lies in RAM: a fault while
     * reporting a fault would lock the core up. */
    kl_bm_puts(" pc=");
    if ((f & 3u) == 0 && f >= (uintptr_t)__ram_start &&
        f + 8u * sizeof(uint32_t) <= (uintptr_t)__ram_end) {
        kl_bm_puthex(frame[6]);
        kl_bm_puts(" lr=");
        kl_bm_puthex(frame[5]);
    } else {
        kl_bm_puts("? sp=");
        kl_bm_puthex((uint32_t)f);
    }
    kl_bm_puts(" cfsr=");
    kl_bm_puthex(cfsr);
    kl_bm_puts(" hfsr=");
    kl_bm_puthex(KL_SCB_HFSR);
    if (cfsr & (1u << 15)) { /* BFARVALID */
        kl_bm_puts(" bfar=");
        kl_bm_puthex(KL_SCB_BFAR);
    }
    if (cfsr & (1u << 7)) { /* MMARVALID */
        kl_bm_puts(" mmfar=");
        kl_bm_puthex(KL_SCB_MMFAR);
    }
#if defined(__ARM_ARCH_8M_MAIN__)
    if (n == 7) {
        kl_bm_puts(" sfsr=");
        kl_bm_puthex(KL_SAU_SFSR);
    }
#endif
    kl_bm_puts("\n");
    kl_bm_exit(KL_EXIT_FAULT);
}
