/* Deterministic block I/O pattern shared by the guest tool (C) and the host tests (C++):
 * both sides derive the same offsets and contents from a seed, so the host can check the
 * image byte for byte after the guest wrote it. */
#ifndef VESSEL_BLKPATTERN_H
#define VESSEL_BLKPATTERN_H

#include <stdint.h>

#define BLKPATTERN_BLOCK 4096u

static inline uint64_t blkpattern_mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Byte offset of the i-th random block in a disk of `blocks` blocks. */
static inline uint64_t blkpattern_offset(uint64_t seed, uint64_t i, uint64_t blocks) {
    return (blkpattern_mix(seed * 1000003u + i) % blocks) * BLKPATTERN_BLOCK;
}

/* The i-th extent of a random-extent run: 1..BLKPATTERN_MAX_EXTENT blocks (4-128 KiB, so
 * requests span several segments) at a random block offset where it fits. Runs go on until at
 * least a given number of blocks moved, so the guest tool and the host agree on the count. */
#define BLKPATTERN_MAX_EXTENT 32u
static inline uint64_t blkpattern_extent_blocks(uint64_t seed, uint64_t i) {
    return 1 + blkpattern_mix(seed * 7919u + i + 1) % BLKPATTERN_MAX_EXTENT;
}
static inline uint64_t blkpattern_extent_offset(uint64_t seed, uint64_t i, uint64_t blocks) {
    return (blkpattern_mix(seed * 1000003u + i) %
            (blocks - blkpattern_extent_blocks(seed, i) + 1)) *
           BLKPATTERN_BLOCK;
}
/* Key of block j of extent i, for blkpattern_fill. */
static inline uint64_t blkpattern_extent_key(uint64_t i, uint64_t j) {
    return i * 64 + j;
}

/* Contents of the block with key i. */
static inline void blkpattern_fill(uint64_t seed, uint64_t i, uint8_t* buf) {
    uint64_t s = blkpattern_mix(seed ^ (i << 20));
    for (unsigned k = 0; k < BLKPATTERN_BLOCK; k += 8) {
        s = blkpattern_mix(s);
        for (unsigned b = 0; b < 8; ++b) buf[k + b] = (uint8_t)(s >> (8 * b));
    }
}

static inline uint64_t blkpattern_fnv(uint64_t h, const uint8_t* p, uint64_t n) {
    for (uint64_t k = 0; k < n; ++k) h = (h ^ p[k]) * 0x100000001b3ull;
    return h;
}
#define BLKPATTERN_FNV_INIT 0xcbf29ce484222325ull

#endif
