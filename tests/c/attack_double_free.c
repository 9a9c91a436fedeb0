/* Attack: double free (and freeing a stale pointer to a reused block).
 *
 * Freeing a block twice puts it on a free list twice (or releases memory
 * someone else now owns), so two later allocations share memory: the
 * classic route from a double free to overlapping objects.
 *
 * Variants:
 *   small              free(a); free(a) of a 64-byte block;
 *   small-interleaved  free(a); free(b); free(a): defeats a check that
 *                      only compares with the last freed block;
 *   large-remote       a 600 KiB block (above the small classes) allocated
 *                      by one thread, freed twice by another;
 *   huge               a 64 MiB block freed twice;
 *   huge-stale         a 64 MiB block freed, a new 64 MiB block allocated
 *                      (often at the same address), then the stale pointer
 *                      freed: the new owner's block must not be released.
 *
 * SUCCEEDED when two live blocks overlap afterwards, when the new owner's
 * live block was released (writing it faults, or malloc hands it out
 * again), or when the allocator crashes or hangs on the bad free.
 */
#include "attack.h"

/* Allocates `count` blocks of `size` and succeeds if two of them overlap
 * (each is kept live); `what` says how the overlap came about. Small
 * blocks are allocated by the thousand, so that a block put on a free list
 * twice is reached even behind other free blocks. */
static void expect_distinct(size_t size, int count, const char *what) {
    static char *got[4096];
    CHECK(count <= 4096);
    for (int i = 0; i < count; i++) {
        got[i] = malloc(opaque(size));
        if (got[i] == NULL) defeated("malloc failed after the %s", what);
        memset(got[i], 'a' + i % 26, size < 4096 ? size : 4096);
        for (int j = 0; j < i; j++)
            if (overlaps(got[i], size, got[j], size))
                succeeded("after the %s, malloc handed out %p twice while live", what,
                          (void *)got[i]);
    }
    defeated("after the %s, %d new blocks of %zu bytes are distinct", what, count, size);
}

static void small(void) {
    char *a = malloc(opaque(64));
    CHECK(a != NULL);
    free(a);
    crash_means_success("on the double free", 3);
    free(a);
    note("second free returned");
    expect_distinct(64, 4096, "double free");
}

static void small_interleaved(void) {
    char *a = malloc(opaque(64)), *b = malloc(opaque(64));
    CHECK(a && b);
    free(a);
    free(b);
    crash_means_success("on the double free", 3);
    free(a);
    note("third free returned");
    expect_distinct(64, 4096, "double free with a free in between");
}

static char *shared;

static void *alloc_large(void *arg) {
    (void)arg;
    shared = malloc(opaque(600 * KIB));
    CHECK(shared != NULL);
    memset(shared, 'L', 600 * KIB);
    return NULL;
}

static void *free_twice(void *arg) {
    (void)arg;
    free(shared);
    crash_means_success("on the double free", 3);
    free(shared);
    note("second free returned");
    expect_distinct(600 * KIB, 16, "double free of a large block from another thread");
    return NULL;
}

static void large_remote(void) {
    on_fresh_thread(alloc_large, NULL);
    on_fresh_thread(free_twice, NULL);
}

static void huge(void) {
    char *a = malloc(opaque(64 * MIB));
    CHECK(a != NULL);
    memset(a, 'H', 64 * MIB);
    free(a);
    crash_means_success("on the double free", 3);
    free(a);
    note("second free returned");
    expect_distinct(64 * MIB, 3, "double free of a huge block");
}

static void huge_stale(void) {
    size_t size = 64 * MIB;
    char *a = malloc(opaque(size));
    CHECK(a != NULL);
    memset(a, 'H', size);
    free(a);
    char *b = malloc(opaque(size));
    CHECK(b != NULL);
    memset(b, 'N', size);
    note("stale %p, new block %p (%s address)", (void *)a, (void *)b,
         a == b ? "same" : "another");
    crash_means_success("on the stale free", 3);
    free(a);
    note("stale free returned");
    /* Is b still the caller's? Probe every page: a released block faults
     * or comes back from malloc. */
    for (size_t off = 0; off < size; off += 4096)
        if (!try_write((unsigned char *)b + off, 'M'))
            succeeded("the stale free released the new owner's live block %p (writing it "
                      "at offset %zu faults)",
                      (void *)b, off);
    char *c = malloc(opaque(size));
    if (c && overlaps(c, size, b, size))
        succeeded("the stale free released the new owner's live block: malloc returned %p "
                  "again while it is live",
                  (void *)c);
    if (count_byte((unsigned char *)b + 1, 4095, 'N') != 4095)
        succeeded("the new owner's block %p changed after the stale free", (void *)b);
    defeated("the new block %p is still intact and owned after the stale free%s", (void *)b,
             a == b ? "" : " (it was placed elsewhere)");
}

static const struct variant variants[] = {
    {"small", small},
    {"small-interleaved", small_interleaved},
    {"large-remote", large_remote},
    {"huge", huge},
    {"huge-stale", huge_stale},
};
RUN_VARIANTS(variants)
