/* Attack: predicting the heap layout.
 *
 * Heap exploits groom the heap so that a victim object lands right after
 * an overflowing one, or at a known offset. That is easy when consecutive
 * mallocs return consecutive addresses and when a fresh heap's first block
 * sits at the same offset in every run.
 *
 * A fresh thread allocates 64 blocks of 64 bytes. The program prints
 *
 *   LAYOUT sequential=<0|1> first_offset=<hex> stride=<bytes, 0 if none>
 *
 * where sequential=1 means every block is 64 bytes above the previous one
 * (any fixed stride would do for an attacker, but a stride of exactly the
 * size is the classic bump layout), and first_offset is the first block's
 * offset within its 64 KiB-aligned window. The verdict line covers the
 * sequential check only; whether first_offset is the same across runs is
 * decided by whoever runs the program several times.
 */
#include "attack.h"

#define N 64

static void *attack(void *arg) {
    (void)arg;
    uintptr_t p[N];
    for (int i = 0; i < N; i++) {
        void *b = malloc(opaque(64));
        CHECK(b != NULL);
        p[i] = (uintptr_t)b;
    }
    int sequential = 1;
    for (int i = 1; i < N; i++)
        if (p[i] != p[i - 1] + 64) sequential = 0;
    int fixed_stride = 1;
    for (int i = 2; i < N; i++)
        if (p[i] - p[i - 1] != p[1] - p[0]) fixed_stride = 0;
    printf("LAYOUT sequential=%d first_offset=%#lx stride=%ld\n", sequential,
           (unsigned long)(p[0] & (64 * KIB - 1)), fixed_stride ? (long)(p[1] - p[0]) : 0L);
    if (sequential || fixed_stride)
        succeeded("%d consecutive 64-byte mallocs returned addresses %ld bytes apart", N,
                  (long)(p[1] - p[0]));
    defeated("consecutive 64-byte mallocs are not at a fixed distance");
}

static void run(void) { on_fresh_thread(attack, NULL); }

static const struct variant variants[] = {{"sequence", run}};
RUN_VARIANTS(variants)
