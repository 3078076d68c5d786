// Prints, then resets through the i8042 like a Linux guest booted with reboot=k.
#include "guest.h"

__attribute__((section(".text.start"))) _Noreturn void _start(void) {
    puts_serial("resetting\n");
    outb(0x64, 0xfe);
    for (;;) __asm__ volatile("hlt");
}
