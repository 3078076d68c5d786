// Minimal runtime for freestanding KVM test guests: serial output and the exit port.
#pragma once

#include <stdint.h>

static inline void outb(uint16_t port, uint8_t v) {
    __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port));
}
static inline void outl(uint16_t port, uint32_t v) {
    __asm__ volatile("outl %0, %1" ::"a"(v), "Nd"(port));
}
static inline uint8_t inb(uint16_t port) {
    uint8_t v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

static inline void putc_serial(char c) {
    while (!(inb(0x3f8 + 5) & 0x20)) {
    }
    outb(0x3f8, (uint8_t)c);
}
static inline void puts_serial(const char* s) {
    while (*s) putc_serial(*s++);
}
static inline void put_hex(uint64_t v) {
    puts_serial("0x");
    for (int i = 60; i >= 0; i -= 4) putc_serial("0123456789abcdef"[(v >> i) & 0xf]);
}
static inline void put_dec(uint64_t v) {
    char b[21];
    int i = 20;
    b[i] = 0;
    do {
        b[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    puts_serial(&b[i]);
}

_Noreturn static inline void guest_exit(uint32_t status) {
    outl(0xf4, status);
    for (;;) __asm__ volatile("hlt");
}
