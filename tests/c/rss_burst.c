/* After a burst of allocations is freed and malloc_trim(0) is called, the
 * resident set must fall back.
 *
 * Allocates about TOTAL_MIB MiB, half in small objects (16-256 bytes) and
 * half in medium ones (1-64 KiB), touches every object, frees them all,
 * calls malloc_trim(0), and checks that resident memory drops below
 * MAX_PERCENT% of its peak. Memory the allocator releases lazily gets a
 * short grace period (polling up to 2 s, with more allocator calls and
 * malloc_trim meanwhile).
 *
 * The pointer table is mmap'ed directly so it does not count against the
 * allocator.
 *
 * With a third argument "notrim", malloc_trim is never called: the
 * program keeps doing ordinary allocation work for up to 3 s and the
 * allocator must return the memory on its own (decay).
 *
 * Usage: rss_burst [TOTAL_MIB [MAX_PERCENT [notrim]]]
 */
#include "common.h"

#include <malloc.h>
#include <sys/mman.h>

int main(int argc, char **argv) {
    size_t total_mib = 512, max_percent = 50;
    if (argc > 1) total_mib = strtoull(argv[1], NULL, 10);
    if (argc > 2) max_percent = strtoull(argv[2], NULL, 10);
    int trim = !(argc > 3 && strcmp(argv[3], "notrim") == 0);
    const size_t half = total_mib * MIB / 2;

    size_t max_objects = half / 16 + half / 1024 + 2;
    size_t table_bytes = max_objects * sizeof(void *);
    void **table = mmap(NULL, table_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(table != MAP_FAILED);

    size_t base = resident_bytes();
    uint64_t rng = 77;
    size_t count = 0, small_bytes = 0, medium_bytes = 0;
    /* Interleave small and medium objects, as a real program would. */
    while (small_bytes < half || medium_bytes < half) {
        uint64_t r = rng_next(&rng);
        size_t n;
        if (small_bytes < half && (medium_bytes >= half || r % 256 != 0)) {
            n = 16 + r % 241;
            small_bytes += n;
        } else {
            n = 1024 + r % (63 * 1024 + 1);
            medium_bytes += n;
        }
        CHECK(count < max_objects);
        unsigned char *p = malloc(n);
        CHECK(p != NULL);
        for (size_t i = 0; i < n; i += 512) p[i] = (unsigned char)i; /* touch every page */
        p[n - 1] = 1;
        table[count++] = p;
    }
    size_t peak = resident_bytes();
    printf("%zu objects, %zu MiB requested; resident: base %zu MiB, peak %zu MiB\n", count,
           (small_bytes + medium_bytes) / MIB, base / MIB, peak / MIB);
    CHECKF(peak >= base + half, "peak resident %zu MiB is implausibly low", peak / MIB);

    /* Free in an order unrelated to allocation order. */
    for (size_t i = 0; i < count; i += 2) free(table[i]);
    for (size_t i = 1; i < count; i += 2) free(table[i]);
    munmap(table, table_bytes);
    if (trim) malloc_trim(0);

    size_t limit = peak / 100 * max_percent;
    size_t now = resident_bytes();
    void *work[4096];
    for (int tries = 0; now >= limit && tries < 30; tries++) {
        usleep(100000);
        if (trim) {
            void *p = malloc(100);
            free(p);
            malloc_trim(0);
        } else {
            /* Ordinary work: a few thousand objects of mixed sizes. */
            for (int i = 0; i < 4096; i++) work[i] = malloc(16 + (size_t)rng_next(&rng) % 8192);
            for (int i = 0; i < 4096; i++) free(work[i]);
        }
        now = resident_bytes();
    }
    printf("resident after freeing everything%s: %zu MiB (limit %zu MiB)\n",
           trim ? " and malloc_trim(0)" : " and waiting", now / MIB, limit / MIB);
    CHECKF(now < limit, "resident stayed at %zu MiB of a %zu MiB peak", now / MIB, peak / MIB);
    printf("rss_burst: ok\n");
    return 0;
}
