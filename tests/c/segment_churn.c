/* Thread churn over large blocks, with blocks outliving their threads.
 *
 * Each round two threads allocate about 24 MiB each in blocks of 64 KiB to
 * 1 MiB (large blocks and multi-slice slabs), keep every eighth block alive
 * past their exit, so their segments are abandoned with live blocks and
 * adopted by later threads, and free the blocks that the previous round's
 * thread of the same slot kept, while the other slot's thread may be
 * adopting those very segments or exiting. Every kept block carries a
 * pattern that is checked before it is freed (a block handed out twice
 * shows up there). This interleaving once made two races visible: a
 * remote free meeting its block's owner exiting was taken for a double
 * free, and one meeting an adoption left the freed block marked live.
 *
 * Usage: segment_churn [ROUNDS]
 */
#include "common.h"

#include <pthread.h>

#define KEEP 64
#define PROBE 4096

static void *kept[2][KEEP];
static size_t kept_size[2][KEEP];

static void *work(void *arg) {
    long id = (long)arg;
    uint64_t x = 88172645463325252ull ^ (uint64_t)id * 7919;
    void *blk[512];
    size_t size[512];
    int n = 0;
    size_t total = 0;
    while (total < (24u << 20) && n < 512) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        size_t sz = (64u << 10) + x % (1u << 20);
        unsigned char *p = malloc(sz);
        CHECK(p != NULL);
        for (size_t o = 0; o < sz; o += 65536)
            p[o] = 1;
        fill_pattern(p, PROBE, pattern_seed(p, sz));
        blk[n] = p;
        size[n++] = sz;
        total += sz;
    }
    int slot = id & 1;
    for (int i = 0; i < KEEP; i++) {
        unsigned char *p = kept[slot][i];
        if (p != NULL) {
            size_t bad = check_pattern(p, PROBE, pattern_seed(p, kept_size[slot][i]));
            CHECKF(bad == PROBE, "kept block %p of %zu B overwritten at %zu", (void *)p,
                   kept_size[slot][i], bad);
        }
        free(p);
        kept[slot][i] = NULL;
    }
    for (int i = 0; i < n; i++) {
        if (i % 8 == 0 && i / 8 < KEEP) {
            kept[slot][i / 8] = blk[i];
            kept_size[slot][i / 8] = size[i];
        } else {
            free(blk[i]);
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 300;
    for (int r = 0; r < rounds; r++) {
        pthread_t t[2];
        for (long i = 0; i < 2; i++)
            CHECK(pthread_create(&t[i], NULL, work, (void *)(r * 2 + i)) == 0);
        for (int i = 0; i < 2; i++)
            CHECK(pthread_join(t[i], NULL) == 0);
    }
    for (int s = 0; s < 2; s++)
        for (int i = 0; i < KEEP; i++)
            free(kept[s][i]);
    printf("segment_churn: ok\n");
    return 0;
}
