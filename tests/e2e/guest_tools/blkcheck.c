/* Guest-side block I/O checker, linked statically and shipped to the guest on a disk image.
 *   blkcheck write DEV SEED N   N random 4 KiB blocks with pattern contents, then fsync
 *   blkcheck read  DEV SEED N   reads the same N blocks, prints their FNV-1a hash
 * Exit status 0 on success; any I/O error is printed and exits 1. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "blkpattern.h"

int main(int argc, char** argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: blkcheck write|read DEV SEED N\n");
        return 2;
    }
    int writing = strcmp(argv[1], "write") == 0;
    /* O_DIRECT: every access reaches the virtio disk instead of the guest's page cache. */
    int fd = open(argv[2], (writing ? O_RDWR : O_RDONLY) | O_DIRECT);
    if (fd < 0) {
        perror(argv[2]);
        return 1;
    }
    uint64_t size = 0;
    if (ioctl(fd, BLKGETSIZE64, &size) < 0) size = (uint64_t)lseek(fd, 0, SEEK_END);
    uint64_t blocks = size / BLKPATTERN_BLOCK, seed = strtoull(argv[3], 0, 0),
             n = strtoull(argv[4], 0, 0), h = BLKPATTERN_FNV_INIT;
    static uint8_t buf[BLKPATTERN_BLOCK] __attribute__((aligned(4096)));
    for (uint64_t i = 0; i < n; ++i) {
        off_t off = (off_t)blkpattern_offset(seed, i, blocks);
        ssize_t r;
        if (writing) {
            blkpattern_fill(seed, i, buf);
            r = pwrite(fd, buf, sizeof buf, off);
        } else {
            r = pread(fd, buf, sizeof buf, off);
            h = blkpattern_fnv(h, buf, sizeof buf);
        }
        if (r != (ssize_t)sizeof buf) {
            fprintf(stderr, "blkcheck: %s at %lld: %s\n", writing ? "write" : "read",
                    (long long)off, r < 0 ? strerror(errno) : "short");
            return 1;
        }
    }
    if (writing && fsync(fd) < 0) {
        perror("fsync");
        return 1;
    }
    if (writing)
        printf("wrote %llu blocks\n", (unsigned long long)n);
    else
        printf("%016llx\n", (unsigned long long)h);
    return 0;
}
