// Writes a line to the serial port and reports status 0 through the exit port.
#include "guest.h"

__attribute__((section(".text.start"))) _Noreturn void _start(void) {
    puts_serial("hello from a vessel test guest\n");
    guest_exit(0);
}
