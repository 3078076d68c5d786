// Counts in a register, in an SSE register and in memory, checking each step that the three
// agree, so a snapshot restore that loses any of them makes the guest fail. The test reads
// the memory copy at COUNTER_ADDR.
#include "guest.h"

#define COUNTER_ADDR 0x3000000ull
#define COUNTER_LIMIT 20000000ull

__attribute__((section(".text.start"))) _Noreturn void _start(void) {
    volatile uint64_t* counter = (volatile uint64_t*)COUNTER_ADDR;
    // SSE on (CR4.OSFXSR | OSXMMEXCPT) so xmm0 carries the count too: that checks the
    // FPU/XSAVE part of a restore.
    uint64_t cr4;
    __asm__ volatile("mov %%cr4, %0" : "=r"(cr4));
    __asm__ volatile("mov %0, %%cr4" ::"r"(cr4 | 0x600));
    puts_serial("counter: start\n");
    uint64_t i = 0;
    *counter = 0;
    __asm__ volatile(
        "movq %0, %%xmm0" ::"r"(i));  // compiled with -mgeneral-regs-only: xmm0 is ours
    for (;;) {
        uint64_t x;
        __asm__ volatile("movq %%xmm0, %0" : "=r"(x));
        if (*counter != i || x != i) {
            puts_serial("counter: mismatch at ");
            put_dec(i);
            puts_serial("\n");
            guest_exit(1);
        }
        ++i;
        *counter = i;
        __asm__ volatile(
            "movq %0, %%xmm0" ::"r"(i));  // compiled with -mgeneral-regs-only: xmm0 is ours
        if (i == COUNTER_LIMIT) {
            puts_serial("counter: done ");
            put_dec(i);
            puts_serial("\n");
            guest_exit(0);
        }
    }
}
