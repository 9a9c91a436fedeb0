/* Attack: linear overflow into a live neighbour.
 *
 * An attacker with a forward linear write (a copy without a bounds check)
 * writes past the end of a block into the next one, a live object whose
 * contents (pointers, lengths) the attacker wants to control.
 *
 * Variants:
 *   small  past the usable size of a 64-byte block, among 256 live ones,
 *          into the first 16 bytes of a live block that starts within 16
 *          bytes after it (8 to 32 bytes written); then it is freed;
 *   large  up to 64 KiB past the end of a 600 KiB block, among 8 live ones
 *          (the chosen block's nearest live neighbour above it is hit);
 *   huge   the same with 64 MiB blocks (3 of them).
 *
 * The write is byte by byte between "about to write" and "write done", so
 * a guard page after the block shows as SIGSEGV in between.
 *
 * When no live block is in reach, the last block is overflowed by the
 * maximum anyway, into whatever follows it.
 *
 * SUCCEEDED when a live neighbour's contents changed and neither the write
 * nor freeing the overflowed block was stopped, or when the allocator
 * crashes or hangs after the overflow.
 */
#include "attack.h"

/* Allocates `n` blocks of `size` (filled with 'a' + index), picks the block
 * whose usable end is nearest below another live block's start, and writes
 * `len` bytes past its end (at least up to the neighbour's start, plus 16
 * bytes into it, within `max`). */
static void overflow(char **blk, int n, size_t size, size_t max) {
    size_t usable[256];
    CHECK(n <= 256);
    for (int i = 0; i < n; i++) {
        blk[i] = malloc(opaque(size));
        CHECK(blk[i] != NULL);
        usable[i] = malloc_usable_size(blk[i]);
        if (usable[i] < size) usable[i] = size;
        memset(blk[i], 'a' + i % 26, size);
    }
    int best = -1, hit = -1;
    size_t gap = SIZE_MAX;
    for (int i = 0; i < n; i++) {
        uintptr_t end = (uintptr_t)blk[i] + usable[i];
        for (int j = 0; j < n; j++) {
            uintptr_t s = (uintptr_t)blk[j];
            if (j != i && s >= end && s - end < gap) {
                gap = s - end;
                best = i;
                hit = j;
            }
        }
    }
    size_t len = gap + 16;
    if (best < 0 || len > max) {
        /* No live neighbour in reach: overflow the last block by `max`
         * bytes anyway, into whatever follows it (the allocator's own
         * memory, another mapping, or a fault). */
        best = n - 1;
        hit = -1;
        len = max;
    }
    unsigned char *from = (unsigned char *)blk[best] + usable[best];
    note("about to write %zu bytes past the end of %p (usable %zu), toward %s %p", len,
         (void *)blk[best], usable[best], hit >= 0 ? "the live block" : "no live block,",
         hit >= 0 ? (void *)blk[hit] : (void *)(from + len));
    for (size_t i = 0; i < len; i++) ((volatile unsigned char *)from)[i] = 'X';
    note("write done");
    size_t changed = hit >= 0 ? count_byte((unsigned char *)blk[hit], 16, 'X') : 0;
    char *victim = blk[best];
    crash_means_success("after the overflow", 3);
    free(victim);
    for (int i = 0; i < 4; i++) {
        void *x = malloc(opaque(size));
        escape(x);
        free(x);
    }
    note("freed the overflowed block");
    if (hit < 0)
        defeated("no live block within %zu bytes after a %zu-byte block; the %zu bytes written "
                 "past its end were accepted but hit no live block",
                 max, size, len);
    if (changed == 16)
        succeeded("overflowed %zu bytes from %p into the live block %p, undetected", len,
                  (void *)victim, (void *)blk[hit]);
    defeated("the live neighbour %p kept its contents (%zu of 16 bytes changed)",
             (void *)blk[hit], changed);
}

static void small(void) {
    static char *blk[256];
    overflow(blk, 256, 64, 32);
}

static void large(void) {
    static char *blk[8];
    overflow(blk, 8, 600 * KIB, 64 * KIB);
}

static void huge(void) {
    static char *blk[3];
    overflow(blk, 3, 64 * MIB, 64 * KIB);
}

static const struct variant variants[] = {
    {"small", small},
    {"large", large},
    {"huge", huge},
};
RUN_VARIANTS(variants)
