/*
 * Tight malloc/free loop shared by glibc-simple (one thread) and
 * glibc-thread (N threads), modelled on the malloc micro-benchmarks that
 * ship with glibc: allocate a small batch of same-size blocks, touch them,
 * free them, over a few small size classes.
 */
#include "common.h"

#define BATCH 100

static const size_t loop_sizes[] = {16, 32, 64, 128, 256, 512};

/* Returns a checksum so the work cannot be optimised away. */
static uint64_t malloc_loop(long iterations, unsigned seed) {
    void *blocks[BATCH];
    uint64_t sum = 0;
    for (long it = 0; it < iterations; it++) {
        size_t size = loop_sizes[(it + seed) % (sizeof loop_sizes / sizeof loop_sizes[0])];
        for (int i = 0; i < BATCH; i++) {
            unsigned char *p = xmalloc(size);
            p[0] = (unsigned char)i;
            p[size - 1] = (unsigned char)(i ^ 0x5a);
            blocks[i] = p;
        }
        for (int i = 0; i < BATCH; i++) {
            unsigned char *p = blocks[i];
            if (p[0] != (unsigned char)i || p[size - 1] != (unsigned char)(i ^ 0x5a))
                die("malloc loop: block %d of size %zu corrupted", i, size);
            sum += p[0];
            free(p);
        }
    }
    return sum;
}

static uint64_t expected_sum(long iterations) {
    return (uint64_t)iterations * (BATCH * (BATCH - 1) / 2);
}
