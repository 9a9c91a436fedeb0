/* Reproduces a rare abort, not yet fixed (kept out of CI until it is).
 *
 * Two threads per round allocate about 24 MiB each in blocks of 64 KiB to
 * 1 MiB (large blocks and multi-slice slabs in 32 MiB segments), keep every
 * eighth block alive past their exit (so their segments are abandoned with
 * live large blocks and adopted by later threads), and free the blocks the
 * previous round's thread of the same slot kept, while the other slot's
 * thread may be adopting those segments.
 *
 * Built with `gcc -O2 -pthread`, run as `LD_PRELOAD=.../libapexalloc.so
 * ./a.out 300`, two instances at a time on 2 cores: about 1 run in 60 ends
 * with "apexalloc: fatal: double free (0x..., 917504-1114112 B)" on a large
 * block, under every preset (also `off`), with this session's build and
 * with the one before it alike. glibc and mimalloc finish every run. The
 * program frees each block once, so either the remote-free protocol of
 * large blocks in abandoned/adopted segments misjudges a first free, or a
 * block was handed out twice before.
 */
#include <pthread.h>
#include <stdlib.h>
#include <stdint.h>
#include <stdio.h>
#define KEEP 64
static void *kept[2][KEEP];
static void *work(void *arg) {
    long id = (long)arg; uint64_t x = 88172645463325252ull ^ (uint64_t)id * 7919;
    void *blk[512]; int n = 0; size_t total = 0;
    while (total < (24u << 20) && n < 512) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        size_t sz = (64u << 10) + x % (1u << 20);
        char *p = malloc(sz); if (!p) abort();
        for (size_t o = 0; o < sz; o += 65536) p[o] = 1;
        blk[n++] = p; total += sz;
    }
    int slot = id & 1;
    for (int i = 0; i < KEEP; i++) { free(kept[slot][i]); kept[slot][i] = NULL; }
    for (int i = 0; i < n; i++) {
        if (i % 8 == 0 && i / 8 < KEEP) kept[slot][i / 8] = blk[i];
        else free(blk[i]);
    }
    return NULL;
}
int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 200;
    for (int r = 0; r < rounds; r++) {
        pthread_t t[2];
        for (long i = 0; i < 2; i++) pthread_create(&t[i], NULL, work, (void *)(r * 2 + i));
        for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    }
    return 0;
}
