/*
 * Startup code of the mamext firmware: the vector table and the reset handler.
 *
 * The reset handler enables the FPU (hard-float targets) before any
 * floating-point instruction can run, copies .data from flash to RAM, zeroes
 * .bss, paints the unused stack with a known word (for the high-water mark),
 * calls main and hands its return value to the emulator as the exit status.
 * Every exception or interrupt ends the emulation with MCU_EXIT_FAULT.
 *
 * Symbols from mcu_link.ld: __data_load (flash image of .data),
 * __data_start/__data_end, __bss_start/__bss_end, __stack_limit/__stack_top.
 */
#include <stdint.h>

#include "mcu_semihost.h"
#include "mcu_startup.h"

#define MCU_EXIT_FAULT 127
#define STACK_PAINT 0x5AC3A55Cu
#define SCB_CPACR (*(volatile uint32_t *)0xE000ED88u)

extern uint32_t __data_load[], __data_start[], __data_end[], __bss_start[], __bss_end[];
extern uint32_t __stack_limit[], __stack_top[];

int main(void);
void mcu_reset(void);

static void mcu_fault(void)
{
    mcu_sh_exit(MCU_EXIT_FAULT);
}

typedef void (*mcu_vector)(void);

/* Initial stack pointer, reset, then NMI .. SysTick (14 system exceptions) and 32 interrupts. */
__attribute__((section(".vectors"), used)) static const mcu_vector mcu_vectors[48] = {
    (mcu_vector)__stack_top, mcu_reset,
    mcu_fault, mcu_fault, mcu_fault, mcu_fault, mcu_fault, 0, 0, 0, 0, mcu_fault, mcu_fault, 0,
    mcu_fault, mcu_fault,
    mcu_fault, mcu_fault, mcu_fault, mcu_fault, mcu_fault, mcu_fault, mcu_fault, mcu_fault,
    mcu_fault, mcu_fault, mcu_fault, mcu_fault, mcu_fault, mcu_fault, mcu_fault, mcu_fault,
    mcu_fault, mcu_fault, mcu_fault, mcu_fault, mcu_fault, mcu_fault, mcu_fault, mcu_fault,
    mcu_fault, mcu_fault, mcu_fault, mcu_fault, mcu_fault, mcu_fault, mcu_fault, mcu_fault,
};

/* Paints [__stack_limit, sp): volatile stores, so the loop cannot become a memset call using that stack. */
static void paint_stack(void)
{
    volatile uint32_t *word = __stack_limit;
    uint32_t sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    while ((uint32_t)word < sp) *word++ = STACK_PAINT;
}

uint32_t mcu_stack_high_water(void)
{
    const volatile uint32_t *word = __stack_limit;
    while (word < (const volatile uint32_t *)__stack_top && *word == STACK_PAINT) ++word;
    return (uint32_t)((uintptr_t)__stack_top - (uintptr_t)word);
}

uint32_t mcu_stack_size(void)
{
    return (uint32_t)((uintptr_t)__stack_top - (uintptr_t)__stack_limit);
}

void mcu_reset(void)
{
    volatile uint32_t *dst;
    const volatile uint32_t *src;
#if defined(__ARM_FP)
    SCB_CPACR |= 0xFu << 20; /* full access to CP10 and CP11, the FPU */
    __asm__ volatile("dsb\n\tisb" ::: "memory");
#endif
    for (src = __data_load, dst = __data_start; dst < __data_end;) *dst++ = *src++;
    for (dst = __bss_start; dst < __bss_end;) *dst++ = 0;
    paint_stack();
    mcu_sh_exit(main());
}
