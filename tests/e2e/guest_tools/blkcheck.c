/* Guest-side block I/O checker, linked statically and shipped to the guest on a disk image.
 *   blkcheck write DEV SEED N   random extents (4-128 KiB) with pattern contents until at least
 *                               N 4 KiB blocks were written, then fsync
 *   blkcheck read  DEV SEED N   reads the same extents, prints their FNV-1a hash
 *   blkcheck bench randread|randwrite|seqread|seqwrite DEV SECONDS SEED
 *                               timed O_DIRECT I/O (4 KiB random or 1 MiB sequential);
 *                               prints "ops=N bytes=B seconds=S"
 * Exit status 0 on success; any I/O error is printed and exits 1. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "blkpattern.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int bench(const char* mode, const char* dev, double seconds, uint64_t seed) {
    int seq = strncmp(mode, "seq", 3) == 0, writing = strstr(mode, "write") != 0;
    int fd = open(dev, (writing ? O_RDWR : O_RDONLY) | O_DIRECT);
    if (fd < 0) {
        perror(dev);
        return 1;
    }
    uint64_t size = 0;
    if (ioctl(fd, BLKGETSIZE64, &size) < 0) size = (uint64_t)lseek(fd, 0, SEEK_END);
    static uint8_t buf[1u << 20] __attribute__((aligned(4096)));
    const uint64_t bs = seq ? sizeof buf : BLKPATTERN_BLOCK;
    memset(buf, 0x5a, sizeof buf);
    uint64_t ops = 0, off = 0;
    double t0 = now(), t = t0;
    while (t - t0 < seconds) {
        if (seq) {
            if (off + bs > size) off = 0;
        } else {
            off = blkpattern_offset(seed, ops, size / BLKPATTERN_BLOCK);
        }
        ssize_t r = writing ? pwrite(fd, buf, bs, (off_t)off) : pread(fd, buf, bs, (off_t)off);
        if (r != (ssize_t)bs) {
            fprintf(stderr, "blkcheck: bench I/O at %llu: %s\n", (unsigned long long)off,
                    r < 0 ? strerror(errno) : "short");
            return 1;
        }
        off += bs;
        ++ops;
        if ((ops & 15) == 0) t = now();
    }
    t = now();
    printf("ops=%llu bytes=%llu seconds=%.3f\n", (unsigned long long)ops,
           (unsigned long long)(ops * bs), t - t0);
    return 0;
}

int main(int argc, char** argv) {
    if (argc == 6 && strcmp(argv[1], "bench") == 0)
        return bench(argv[2], argv[3], atof(argv[4]), strtoull(argv[5], 0, 0));
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
    static uint8_t buf[BLKPATTERN_MAX_EXTENT * BLKPATTERN_BLOCK] __attribute__((aligned(4096)));
    uint64_t done = 0, i = 0;
    for (; done < n; ++i) {
        const uint64_t len = blkpattern_extent_blocks(seed, i);
        const size_t bytes = (size_t)(len * BLKPATTERN_BLOCK);
        const off_t off = (off_t)blkpattern_extent_offset(seed, i, blocks);
        ssize_t r;
        if (writing) {
            for (uint64_t j = 0; j < len; ++j)
                blkpattern_fill(seed, blkpattern_extent_key(i, j), buf + j * BLKPATTERN_BLOCK);
            r = pwrite(fd, buf, bytes, off);
        } else {
            r = pread(fd, buf, bytes, off);
            h = blkpattern_fnv(h, buf, bytes);
        }
        if (r != (ssize_t)bytes) {
            fprintf(stderr, "blkcheck: %s of %zu bytes at %lld: %s\n", writing ? "write" : "read",
                    bytes, (long long)off, r < 0 ? strerror(errno) : "short");
            return 1;
        }
        done += len;
    }
    if (writing && fsync(fd) < 0) {
        perror("fsync");
        return 1;
    }
    if (writing)
        printf("wrote %llu blocks in %llu extents\n", (unsigned long long)done,
               (unsigned long long)i);
    else
        printf("%016llx\n", (unsigned long long)h);
    return 0;
}
