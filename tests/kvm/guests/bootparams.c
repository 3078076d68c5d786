// Checks the zero page that the VMM hands over in %rsi and prints what it found.
// Exit status: 0 when every check passed, else a bitmask of the failed checks.
#include <asm/bootparam.h>

#include "guest.h"

static int streq(const char* a, const char* b) {
    while (*a && *a == *b) ++a, ++b;
    return *a == *b;
}

_Noreturn void run(const struct boot_params* bp) {
    uint32_t fail = 0;
    if (bp->hdr.boot_flag != 0xaa55) fail |= 1;
    if (bp->hdr.header != 0x53726448) fail |= 2;
    if (bp->hdr.type_of_loader != 0xff) fail |= 4;
    const char* cmdline = (const char*)(uintptr_t)bp->hdr.cmd_line_ptr;
    puts_serial("cmdline=");
    puts_serial(cmdline);
    putc_serial('\n');
    if (!streq(cmdline, "vessel-test console=ttyS0 answer=42")) fail |= 8;

    // The initramfs holds bytes 0,1,2,...,255 repeated; sum them to prove placement and size.
    const uint8_t* rd = (const uint8_t*)(uintptr_t)bp->hdr.ramdisk_image;
    uint32_t size = bp->hdr.ramdisk_size;
    uint64_t sum = 0;
    int pattern_ok = 1;
    for (uint32_t i = 0; i < size; ++i) {
        sum += rd[i];
        if (rd[i] != (uint8_t)i) pattern_ok = 0;
    }
    puts_serial("initrd=");
    put_hex(bp->hdr.ramdisk_image);
    puts_serial(" size=");
    put_dec(size);
    puts_serial(" sum=");
    put_dec(sum);
    putc_serial('\n');
    if (!pattern_ok || size == 0 || (bp->hdr.ramdisk_image & 0xfff)) fail |= 16;

    uint64_t ram = 0;
    puts_serial("e820:");
    for (int i = 0; i < bp->e820_entries; ++i) {
        const struct boot_e820_entry* e = &bp->e820_table[i];
        putc_serial(' ');
        put_hex(e->addr);
        putc_serial('+');
        put_hex(e->size);
        putc_serial(e->type == 1 ? 'R' : 'X');
        if (e->type == 1) ram += e->size;
    }
    putc_serial('\n');
    puts_serial("ram_kib=");
    put_dec(ram >> 10);
    putc_serial('\n');
    if (bp->e820_entries < 2 || bp->e820_table[0].addr != 0 || bp->e820_table[0].type != 1)
        fail |= 32;
    // The initramfs must lie inside RAM the e820 map reports.
    int inside = 0;
    for (int i = 0; i < bp->e820_entries; ++i) {
        const struct boot_e820_entry* e = &bp->e820_table[i];
        if (e->type == 1 && bp->hdr.ramdisk_image >= e->addr &&
            bp->hdr.ramdisk_image + size <= e->addr + e->size)
            inside = 1;
    }
    if (!inside) fail |= 64;
    puts_serial(fail ? "bootparams: FAIL\n" : "bootparams: ok\n");
    guest_exit(fail);
}

// The zero page arrives in %rsi; hand it to run() as its first argument.
__asm__(".section .text.start\n.global _start\n_start:\n  mov %rsi, %rdi\n  jmp run\n.text\n");
