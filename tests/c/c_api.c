/* The C allocation API and its edge cases.
 *
 * Usage: c_api SUBTEST. Exit status 0 means the subtest passed, 1 that a
 * check failed (the message is on stderr), and 3 that an optional function
 * (free_sized, free_aligned_sized) is not provided by any loaded object.
 */
#include "common.h"

#include <dlfcn.h>
#include <malloc.h>
#include <pthread.h>
#include <stddef.h>
#include <sys/sysinfo.h>

#define EXIT_ABSENT 3

static size_t page_size(void) { return (size_t)sysconf(_SC_PAGESIZE); }

/* The largest alignment malloc(n) must honour: 16 from 16 bytes on, else
 * the largest power of two not above n (a smaller object cannot hold a type
 * with a larger alignment). */
static size_t min_malloc_align(size_t n) {
    if (n >= 16) return 16;
    size_t a = 1;
    while (a * 2 <= n) a *= 2;
    return a;
}

/* Interesting sizes: every size up to 1 KiB, then around each power of two
 * up to 64 MiB. Returns the count; `out` must hold 1200 entries. */
static size_t interesting_sizes(size_t *out) {
    size_t n = 0;
    for (size_t s = 1; s <= 1024; s++) out[n++] = s;
    for (size_t p = 2048; p <= 64 * MIB; p *= 2) {
        out[n++] = p - 1;
        out[n++] = p;
        out[n++] = p + 1;
        if (p < 64 * MIB) out[n++] = p + p / 2;
    }
    return n;
}

/* Writes the whole block and checks it reads back. */
static void exercise_block(void *p, size_t n) {
    unsigned char seed = pattern_seed(p, n);
    fill_pattern(p, n, seed);
    size_t bad = check_pattern(p, n, seed);
    CHECKF(bad == n, "block %p of %zu bytes reads back wrong at byte %zu", p, n, bad);
}

static void test_malloc_zero(void) {
    void *a = malloc(opaque(0));
    void *b = malloc(opaque(0));
    /* Either NULL or a unique pointer that free accepts. */
    if (a && b) CHECK(a != b);
    free(a);
    free(b);
}

static void test_malloc_sizes(void) {
    static size_t sizes[1200];
    size_t count = interesting_sizes(sizes);
    for (size_t i = 0; i < count; i++) {
        size_t n = sizes[i];
        void *p = malloc(opaque(n));
        CHECKF(p != NULL, "malloc(%zu) returned NULL", n);
        CHECKF(is_aligned(p, min_malloc_align(n)), "malloc(%zu) = %p is not %zu-aligned", n, p,
               min_malloc_align(n));
        exercise_block(p, n);
        free(p);
    }
}

struct block {
    unsigned char *p;
    size_t n;
};

static int by_address(const void *a, const void *b) {
    uintptr_t x = (uintptr_t)((const struct block *)a)->p;
    uintptr_t y = (uintptr_t)((const struct block *)b)->p;
    return x < y ? -1 : x > y;
}

/* Many live blocks at once must be distinct and must not overlap. */
static void test_malloc_distinct(void) {
    enum { COUNT = 20000 };
    static struct block blocks[COUNT];
    uint64_t rng = 0x1234567;
    for (size_t i = 0; i < COUNT; i++) {
        uint64_t r = rng_next(&rng);
        size_t n = (i % 1000 == 999) ? 100000 + r % 2000000 : 1 + r % 2048;
        blocks[i].n = n;
        blocks[i].p = malloc(opaque(n));
        CHECKF(blocks[i].p != NULL, "malloc(%zu) returned NULL", n);
        fill_pattern(blocks[i].p, n, pattern_seed(blocks[i].p, n));
    }
    for (size_t i = 0; i < COUNT; i++) {
        size_t n = blocks[i].n;
        size_t bad = check_pattern(blocks[i].p, n, pattern_seed(blocks[i].p, n));
        CHECKF(bad == n, "block %p (%zu bytes) was overwritten at byte %zu", (void *)blocks[i].p,
               n, bad);
    }
    qsort(blocks, COUNT, sizeof blocks[0], by_address);
    for (size_t i = 0; i + 1 < COUNT; i++)
        CHECKF(blocks[i].p + blocks[i].n <= blocks[i + 1].p, "blocks %p (%zu bytes) and %p overlap",
               (void *)blocks[i].p, blocks[i].n, (void *)blocks[i + 1].p);
    for (size_t i = 0; i < COUNT; i++) free(blocks[i].p);
}

static void expect_enomem_malloc(size_t n) {
    errno = 0;
    void *p = malloc(opaque(n));
    CHECKF(p == NULL, "malloc(%zu) did not fail", n);
    CHECKF(errno == ENOMEM, "malloc(%zu) set errno %d, not ENOMEM", n, errno);
}

static void test_malloc_huge(void) {
    expect_enomem_malloc(SIZE_MAX);
    expect_enomem_malloc(SIZE_MAX - 7);  /* overflows when rounded up */
    expect_enomem_malloc(SIZE_MAX - 4095);
    expect_enomem_malloc((size_t)PTRDIFF_MAX + 1);
    /* Under the kernel's default (heuristic) overcommit policy, a request
     * larger than memory and swap together fails at once, as with glibc,
     * instead of succeeding and meeting the OOM killer later. */
    FILE *f = fopen("/proc/sys/vm/overcommit_memory", "r");
    int policy = -1;
    if (f) {
        if (fscanf(f, "%d", &policy) != 1) policy = -1;
        fclose(f);
    }
    struct sysinfo si;
    if (policy == 0 && sysinfo(&si) == 0) {
        size_t everything = ((size_t)si.totalram + (size_t)si.totalswap) * si.mem_unit;
        expect_enomem_malloc(everything * 2);
        errno = 0;
        CHECKF(calloc(opaque(everything), 2) == NULL && errno == ENOMEM,
               "calloc of twice memory and swap did not fail with ENOMEM");
    }
    /* The allocator still works afterwards. */
    void *p = malloc(opaque(100));
    CHECK(p != NULL);
    free(p);
}

static void test_free_null(void) {
    errno = 4321;
    free(NULL);
    CHECK(errno == 4321);
}

static void check_zero(const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++) CHECKF(p[i] == 0, "calloc'd byte %zu of %zu is %#x", i, n, p[i]);
}

static void expect_enomem_calloc(size_t nmemb, size_t size) {
    errno = 0;
    void *p = calloc(opaque(nmemb), opaque(size));
    CHECKF(p == NULL, "calloc(%zu, %zu) did not fail", nmemb, size);
    CHECKF(errno == ENOMEM, "calloc(%zu, %zu) set errno %d, not ENOMEM", nmemb, size, errno);
}

static void test_calloc(void) {
    static size_t sizes[1200];
    size_t count = interesting_sizes(sizes);
    for (size_t i = 0; i < count; i++) {
        size_t n = sizes[i];
        unsigned char *p = calloc(1, opaque(n));
        CHECKF(p != NULL, "calloc(1, %zu) returned NULL", n);
        CHECK(is_aligned(p, min_malloc_align(n)));
        check_zero(p, n);
        free(p);
    }
    /* nmemb * size split both ways */
    unsigned char *p = calloc(opaque(1000), opaque(37));
    CHECK(p != NULL);
    check_zero(p, 37000);
    free(p);

    /* Memory freed dirty and handed out again must still come back zeroed. */
    static const size_t dirty_sizes[] = {16, 48, 200, 1000, 4000, 40000, 300000, 2 * MIB};
    for (size_t s = 0; s < sizeof dirty_sizes / sizeof dirty_sizes[0]; s++) {
        size_t n = dirty_sizes[s];
        enum { K = 64 };
        unsigned char *blocks[K];
        for (int round = 0; round < 3; round++) {
            for (int i = 0; i < K; i++) {
                blocks[i] = malloc(opaque(n));
                CHECK(blocks[i] != NULL);
                memset(blocks[i], 0xA5, n);
            }
            for (int i = 0; i < K; i++) free(blocks[i]);
            for (int i = 0; i < K; i++) {
                blocks[i] = round == 1 ? calloc(opaque(n / 4), 4) : calloc(1, opaque(n));
                CHECK(blocks[i] != NULL);
                check_zero(blocks[i], n);
                memset(blocks[i], 0x5A, n);
            }
            for (int i = 0; i < K; i++) free(blocks[i]);
        }
        /* free + calloc of the same size, which is likely the same block */
        for (int i = 0; i < 200; i++) {
            unsigned char *q = malloc(opaque(n));
            CHECK(q != NULL);
            memset(q, 0xFF, n);
            free(q);
            q = calloc(1, opaque(n));
            CHECK(q != NULL);
            check_zero(q, n);
            free(q);
        }
    }

    /* nmemb * size overflows */
    expect_enomem_calloc(SIZE_MAX / 2 + 1, 2);
    expect_enomem_calloc((size_t)1 << 32, (size_t)1 << 32);
    expect_enomem_calloc(SIZE_MAX, SIZE_MAX);
    expect_enomem_calloc(3, SIZE_MAX / 3 + 1);
    /* no overflow, but too big */
    expect_enomem_calloc(1, SIZE_MAX);
    expect_enomem_calloc((size_t)PTRDIFF_MAX + 1, 1);

    /* zero-sized: NULL or a unique pointer that free accepts */
    void *a = calloc(opaque(0), 16), *b = calloc(16, opaque(0));
    if (a && b) CHECK(a != b);
    free(a);
    free(b);
}

static void test_realloc(void) {
    /* realloc(NULL, n) is malloc(n) */
    unsigned char *p = realloc(NULL, opaque(100));
    CHECK(p != NULL);
    exercise_block(p, 100);
    free(p);

    /* growing keeps the contents */
    const unsigned char seed = 0x37;
    size_t n = 1;
    p = malloc(opaque(n));
    CHECK(p != NULL);
    fill_pattern(p, n, seed);
    while (n < 64 * MIB) {
        size_t next = n < 5000 ? n + 1 + n / 3 : n * 2;
        if (next > 64 * MIB) next = 64 * MIB;
        unsigned char *q = realloc(p, opaque(next));
        CHECKF(q != NULL, "realloc to %zu returned NULL", next);
        CHECK(is_aligned(q, min_malloc_align(next)));
        size_t bad = check_pattern(q, n, seed);
        CHECKF(bad == n, "growing %zu -> %zu lost byte %zu", n, next, bad);
        fill_pattern(q, next, seed);
        p = q;
        n = next;
    }
    /* shrinking keeps the prefix */
    while (n > 1) {
        size_t next = n > 10000 ? n / 2 : n - 1 - n / 3;
        if (next < 1) next = 1;
        unsigned char *q = realloc(p, opaque(next));
        CHECKF(q != NULL, "realloc to %zu returned NULL", next);
        size_t bad = check_pattern(q, next, seed);
        CHECKF(bad == next, "shrinking %zu -> %zu lost byte %zu", n, next, bad);
        p = q;
        n = next;
    }
    /* byte-by-byte growth through the small sizes */
    for (size_t m = 2; m <= 3000; m++) {
        unsigned char *q = realloc(p, opaque(m));
        CHECK(q != NULL);
        CHECKF(check_pattern(q, m - 1, seed) == m - 1, "growing to %zu lost data", m);
        q[m - 1] = (unsigned char)(seed + (m - 1) * 131);
        p = q;
    }
    free(p);

    /* a failed realloc leaves the block alone */
    p = malloc(opaque(1000));
    CHECK(p != NULL);
    fill_pattern(p, 1000, seed);
    size_t huge[] = {SIZE_MAX, SIZE_MAX - 7, (size_t)PTRDIFF_MAX + 1};
    for (size_t i = 0; i < 3; i++) {
        errno = 0;
        CHECKF(realloc(p, opaque(huge[i])) == NULL, "realloc to %zu did not fail", huge[i]);
        CHECKF(errno == ENOMEM, "realloc to %zu set errno %d, not ENOMEM", huge[i], errno);
        CHECK(check_pattern(p, 1000, seed) == 1000);
    }
    free(p);
}

/* realloc(p, 0): glibc frees p and returns NULL; returning a minimal unique
 * block is also allowed. Either way it must neither crash nor leak. */
static void test_realloc_zero(void) {
    void *a = malloc(opaque(64)), *b = malloc(opaque(64));
    CHECK(a && b);
    void *ra = realloc(a, opaque(0));
    void *rb = realloc(b, opaque(0));
    if (ra && rb) CHECK(ra != rb);
    free(ra);
    free(rb);

    size_t before = resident_bytes();
    for (int i = 0; i < 100000; i++) {
        void *p = malloc(opaque(4096));
        CHECK(p != NULL);
        memset(p, 1, 4096);
        void *q = realloc(p, opaque(0));
        free(q);
    }
    size_t after = resident_bytes();
    CHECKF(after < before + 64 * MIB,
           "resident grew by %zu MiB over 100000 malloc(4096)+realloc(p, 0): it leaks",
           (after - before) / MIB);
}

static void test_reallocarray(void) {
    unsigned char *p = reallocarray(NULL, opaque(10), 10);
    CHECK(p != NULL);
    fill_pattern(p, 100, 9);
    p = reallocarray(p, opaque(1000), 10);
    CHECK(p != NULL);
    CHECK(check_pattern(p, 100, 9) == 100);
    fill_pattern(p, 10000, 9);

    struct {
        size_t nmemb, size;
    } bad[] = {{SIZE_MAX / 2 + 1, 2}, {(size_t)1 << 32, (size_t)1 << 32}, {SIZE_MAX, SIZE_MAX}};
    for (size_t i = 0; i < 3; i++) {
        errno = 0;
        void *q = reallocarray(p, opaque(bad[i].nmemb), opaque(bad[i].size));
        CHECKF(q == NULL, "reallocarray(p, %zu, %zu) did not fail", bad[i].nmemb, bad[i].size);
        CHECKF(errno == ENOMEM, "reallocarray overflow set errno %d, not ENOMEM", errno);
        CHECK(check_pattern(p, 10000, 9) == 10000);
    }
    p = reallocarray(p, opaque(3), 7);
    CHECK(p != NULL);
    CHECK(check_pattern(p, 21, 9) == 21);
    free(p);
}

/* Writes the first and last bytes, and everything when it is not too big. */
static void touch_block(void *p, size_t n) {
    if (n <= MIB) {
        exercise_block(p, n);
    } else {
        ((volatile unsigned char *)p)[0] = 1;
        ((volatile unsigned char *)p)[n - 1] = 2;
    }
}

static void test_posix_memalign(void) {
    for (size_t align = sizeof(void *); align <= 64 * MIB; align *= 2) {
        size_t sizes[] = {1, 8, 24, 1000, align - 1, align, align + 1, 3 * align};
        size_t nsizes = align >= MIB ? 7 : 8; /* skip 3 * align for the largest */
        void *held[8];
        for (size_t i = 0; i < nsizes; i++) {
            size_t n = sizes[i] ? sizes[i] : 1;
            void *p = (void *)0x1;
            int rc = posix_memalign(&p, opaque(align), opaque(n));
            CHECKF(rc == 0, "posix_memalign(align %zu, size %zu) returned %d", align, n, rc);
            CHECKF(p != NULL && is_aligned(p, align), "posix_memalign(%zu, %zu) = %p", align, n, p);
            touch_block(p, n);
            held[i] = p;
        }
        for (size_t i = 0; i < nsizes; i++) free(held[i]);
    }

    /* bad alignments: EINVAL, and the out-pointer is left alone */
    size_t bad_aligns[] = {0, 1, 2, 4, 3, 12, 24, 48, 4095, 4097, SIZE_MAX};
    for (size_t i = 0; i < sizeof bad_aligns / sizeof bad_aligns[0]; i++) {
        void *const sentinel = (void *)0x1234;
        void *p = sentinel;
        int rc = posix_memalign(&p, opaque(bad_aligns[i]), opaque(64));
        CHECKF(rc == EINVAL, "posix_memalign(align %zu) returned %d, not EINVAL", bad_aligns[i],
               rc);
        CHECKF(p == sentinel, "posix_memalign(align %zu) changed the out-pointer to %p",
               bad_aligns[i], p);
    }

    /* impossible sizes or alignments: ENOMEM */
    void *p;
    CHECK(posix_memalign(&p, 16, opaque(SIZE_MAX)) == ENOMEM);
    CHECK(posix_memalign(&p, 4096, opaque((size_t)PTRDIFF_MAX + 1)) == ENOMEM);
    CHECK(posix_memalign(&p, opaque(SIZE_MAX / 2 + 1), 64) == ENOMEM);

    /* size 0: success, with NULL or a pointer free accepts */
    p = (void *)0x1;
    CHECK(posix_memalign(&p, 64, opaque(0)) == 0);
    CHECK(p == NULL || is_aligned(p, 64));
    free(p);
}

static void test_aligned_alloc(void) {
    for (size_t align = 1; align <= 64 * MIB; align *= 2) {
        for (size_t k = 1; k <= 3; k++) {
            if (align >= 16 * MIB && k > 1) break;
            size_t n = align * k;
            void *p = aligned_alloc(opaque(align), opaque(n));
            CHECKF(p != NULL, "aligned_alloc(%zu, %zu) returned NULL", align, n);
            CHECKF(is_aligned(p, align), "aligned_alloc(%zu, %zu) = %p", align, n, p);
            touch_block(p, n);
            free(p);
        }
    }
    /* a size that is not a multiple of the alignment (allowed since C17) */
    void *p = aligned_alloc(opaque(64), opaque(100));
    CHECK(p != NULL && is_aligned(p, 64));
    touch_block(p, 100);
    free(p);
    p = aligned_alloc(opaque(4096), opaque(10));
    CHECK(p != NULL && is_aligned(p, 4096));
    free(p);

    errno = 0;
    CHECK(aligned_alloc(opaque(64), opaque(SIZE_MAX)) == NULL);
    CHECK(errno == ENOMEM);
}

static void test_memalign(void) {
    for (size_t align = 1; align <= 64 * MIB; align *= 2) {
        size_t sizes[] = {1, align, 3 * align + 5};
        for (size_t i = 0; i < (align >= 16 * MIB ? 2u : 3u); i++) {
            void *p = memalign(opaque(align), opaque(sizes[i]));
            CHECKF(p != NULL, "memalign(%zu, %zu) returned NULL", align, sizes[i]);
            CHECKF(is_aligned(p, align), "memalign(%zu, %zu) = %p", align, sizes[i], p);
            touch_block(p, sizes[i]);
            free(p);
        }
    }
    errno = 0;
    CHECK(memalign(opaque(4096), opaque(SIZE_MAX)) == NULL);
    CHECK(errno == ENOMEM);
}

static void test_valloc(void) {
    size_t sizes[] = {1, 100, 4095, 4096, 4097, MIB, 10 * MIB + 3};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        void *p = valloc(opaque(sizes[i]));
        CHECKF(p != NULL, "valloc(%zu) returned NULL", sizes[i]);
        CHECKF(is_aligned(p, page_size()), "valloc(%zu) = %p is not page aligned", sizes[i], p);
        touch_block(p, sizes[i]);
        free(p);
    }
}

static void test_pvalloc(void) {
    size_t page = page_size();
    size_t sizes[] = {1, 100, 4095, 4096, 4097, MIB + 1, 10 * MIB + 3};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t n = sizes[i];
        size_t rounded = (n + page - 1) / page * page;
        void *p = pvalloc(opaque(n));
        CHECKF(p != NULL, "pvalloc(%zu) returned NULL", n);
        CHECKF(is_aligned(p, page), "pvalloc(%zu) = %p is not page aligned", n, p);
        size_t usable = malloc_usable_size(p);
        CHECKF(usable >= rounded, "pvalloc(%zu): usable size %zu is below %zu", n, usable, rounded);
        touch_block(p, rounded);
        free(p);
    }
}

static void test_malloc_usable_size(void) {
    CHECK(malloc_usable_size(NULL) == 0);

    static size_t sizes[1200];
    size_t count = interesting_sizes(sizes);
    for (size_t i = 0; i < count; i++) {
        size_t n = sizes[i];
        void *p = malloc(opaque(n));
        CHECK(p != NULL);
        size_t usable = malloc_usable_size(p);
        CHECKF(usable >= n, "malloc(%zu): usable size %zu", n, usable);
        free(p);
    }

    /* Filling the whole usable size of many neighbouring blocks must not
     * disturb any of them. */
    enum { COUNT = 5000 };
    static struct block blocks[COUNT];
    uint64_t rng = 42;
    for (size_t i = 0; i < COUNT; i++) {
        size_t n = i % 500 == 0 ? 200000 : 1 + rng_next(&rng) % 3000;
        unsigned char *p = malloc(opaque(n));
        CHECK(p != NULL);
        blocks[i].p = p;
        blocks[i].n = malloc_usable_size(p);
        CHECK(blocks[i].n >= n);
        fill_pattern(p, blocks[i].n, pattern_seed(p, blocks[i].n));
    }
    for (size_t i = 0; i < COUNT; i++) {
        size_t n = blocks[i].n;
        CHECKF(malloc_usable_size(blocks[i].p) == n, "usable size of %p changed",
               (void *)blocks[i].p);
        size_t bad = check_pattern(blocks[i].p, n, pattern_seed(blocks[i].p, n));
        CHECKF(bad == n, "block %p (usable %zu) was overwritten at byte %zu", (void *)blocks[i].p,
               n, bad);
        free(blocks[i].p);
    }

    /* aligned blocks too */
    void *p;
    CHECK(posix_memalign(&p, 4096, opaque(5000)) == 0);
    size_t usable = malloc_usable_size(p);
    CHECK(usable >= 5000);
    memset(p, 0x11, usable);
    free(p);
}

typedef void (*free_sized_fn)(void *, size_t);
typedef void (*free_aligned_sized_fn)(void *, size_t, size_t);

static void test_free_sized(void) {
    free_sized_fn fs = (free_sized_fn)dlsym(RTLD_DEFAULT, "free_sized");
    if (!fs) {
        printf("free_sized: absent\n");
        exit(EXIT_ABSENT);
    }
    static size_t sizes[1200];
    size_t count = interesting_sizes(sizes);
    for (size_t i = 0; i < count; i++) {
        size_t n = sizes[i];
        void *p = malloc(opaque(n));
        CHECK(p != NULL);
        touch_block(p, n);
        errno = 777;
        fs(p, n);
        CHECK(errno == 777);
    }
    void *p = calloc(opaque(10), 10);
    CHECK(p != NULL);
    fs(p, 100);
    p = realloc(malloc(opaque(10)), opaque(5000));
    CHECK(p != NULL);
    fs(p, 5000);
    fs(NULL, 0);
    fs(NULL, 123);

    /* It really frees: a loop of malloc + free_sized stays bounded. */
    size_t before = resident_bytes();
    for (int i = 0; i < 100000; i++) {
        size_t n = 4096 + (size_t)(i % 7) * 1000;
        void *q = malloc(opaque(n));
        CHECK(q != NULL);
        memset(q, 1, n);
        fs(q, n);
    }
    size_t after = resident_bytes();
    CHECKF(after < before + 64 * MIB, "resident grew by %zu MiB: free_sized leaks",
           (after - before) / MIB);
}

static void test_free_aligned_sized(void) {
    free_aligned_sized_fn fas = (free_aligned_sized_fn)dlsym(RTLD_DEFAULT, "free_aligned_sized");
    if (!fas) {
        printf("free_aligned_sized: absent\n");
        exit(EXIT_ABSENT);
    }
    for (size_t align = 1; align <= 16 * MIB; align *= 2) {
        size_t sizes[] = {align, 2 * align, align + align / 2};
        for (size_t i = 0; i < 3; i++) {
            size_t n = sizes[i];
            void *p = aligned_alloc(opaque(align), opaque(n));
            CHECK(p != NULL && is_aligned(p, align));
            touch_block(p, n);
            errno = 777;
            fas(p, align, n);
            CHECK(errno == 777);
        }
    }
    fas(NULL, 64, 0);

    size_t before = resident_bytes();
    for (int i = 0; i < 50000; i++) {
        void *q = aligned_alloc(opaque(256), opaque(8192));
        CHECK(q != NULL);
        memset(q, 1, 8192);
        fas(q, 256, 8192);
    }
    size_t after = resident_bytes();
    CHECKF(after < before + 64 * MIB, "resident grew by %zu MiB: free_aligned_sized leaks",
           (after - before) / MIB);
}

static void test_malloc_trim(void) {
    enum { COUNT = 20000 };
    static void *blocks[COUNT];
    for (int i = 0; i < COUNT; i++) {
        blocks[i] = malloc(opaque(16 + (size_t)(i % 100) * 40));
        CHECK(blocks[i] != NULL);
        memset(blocks[i], 3, 16);
    }
    void *big = malloc(opaque(32 * MIB));
    CHECK(big != NULL);
    memset(big, 4, 32 * MIB);
    for (int i = 0; i < COUNT; i += 2) free(blocks[i]);
    free(big);
    int r = malloc_trim(0);
    CHECKF(r == 0 || r == 1, "malloc_trim(0) returned %d", r);
    for (int i = 1; i < COUNT; i += 2) free(blocks[i]);
    r = malloc_trim(opaque(MIB));
    CHECKF(r == 0 || r == 1, "malloc_trim(1 MiB) returned %d", r);
    /* still usable */
    for (int i = 0; i < 1000; i++) {
        void *p = malloc(opaque((size_t)i * 10 + 1));
        CHECK(p != NULL);
        exercise_block(p, (size_t)i * 10 + 1);
        free(p);
    }
}

static void *alloc_for_other_thread(void *arg) {
    void **out = arg;
    for (int i = 0; i < 1000; i++) {
        out[i] = malloc(opaque(8 + (size_t)i * 17));
        CHECK(out[i] != NULL);
    }
    return NULL;
}

/* free must preserve errno, whatever path it takes. */
static void test_free_errno(void) {
    size_t sizes[] = {1, 16, 100, 1000, 10000, 100000, MIB, 16 * MIB, 64 * MIB};
    void *blocks[16];
    size_t k = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        blocks[k] = malloc(opaque(sizes[i]));
        CHECK(blocks[k] != NULL);
        touch_block(blocks[k], sizes[i]);
        k++;
    }
    CHECK(posix_memalign(&blocks[k++], 4096, opaque(12345)) == 0);
    blocks[k++] = calloc(opaque(100), 100);
    blocks[k++] = realloc(malloc(opaque(10)), opaque(300000));
    blocks[k++] = memalign(opaque(MIB), opaque(3 * MIB));
    for (size_t i = 0; i < k; i++) {
        CHECK(blocks[i] != NULL);
        errno = 1234;
        free(blocks[i]);
        CHECKF(errno == 1234, "free of block %zu changed errno to %d", i, errno);
    }
    errno = 1234;
    free(NULL);
    CHECK(errno == 1234);

    /* many small blocks: emptying whole pages or slabs must not touch errno */
    enum { COUNT = 10000 };
    static void *small[COUNT];
    for (int i = 0; i < COUNT; i++) CHECK((small[i] = malloc(opaque(64))) != NULL);
    for (int i = 0; i < COUNT; i++) {
        errno = 1234;
        free(small[i]);
        CHECK(errno == 1234);
    }

    /* blocks allocated by another (finished) thread */
    static void *remote[1000];
    pthread_t t;
    CHECK(pthread_create(&t, NULL, alloc_for_other_thread, remote) == 0);
    CHECK(pthread_join(t, NULL) == 0);
    for (int i = 0; i < 1000; i++) {
        errno = 1234;
        free(remote[i]);
        CHECK(errno == 1234);
    }
}

/* Under LD_PRELOAD the allocation functions must resolve into the preloaded
 * library. EXPECT_LIB_SUBSTR is a substring of the file name of the object
 * that must define them; EXPECT_FULL_API=1 adds the functions that only a
 * complete implementation is required to provide. */
static int check_symbol_origin(const char *name, const char *expect, int required) {
    void *addr = dlsym(RTLD_DEFAULT, name);
    Dl_info info;
    const char *where = "(not found)";
    if (addr && dladdr(addr, &info) && info.dli_fname) where = info.dli_fname;
    int ok = addr != NULL && strstr(where, expect) != NULL;
    printf("%-20s %s%s\n", name, where, ok ? "" : required ? "  <-- WRONG" : "  (optional)");
    return ok || !required;
}

static void test_symbols(void) {
    const char *expect = getenv("EXPECT_LIB_SUBSTR");
    CHECKF(expect && *expect, "EXPECT_LIB_SUBSTR is not set");
    const char *full = getenv("EXPECT_FULL_API");
    int full_api = full && strcmp(full, "1") == 0;
    static const char *const core[] = {"malloc",         "free",     "calloc",
                                       "realloc",        "posix_memalign", "aligned_alloc",
                                       "memalign",       "valloc",   "pvalloc",
                                       "malloc_usable_size"};
    static const char *const extended[] = {"reallocarray", "malloc_trim", "free_sized",
                                           "free_aligned_sized", "mallinfo2", "malloc_stats"};
    int ok = 1;
    for (size_t i = 0; i < sizeof core / sizeof core[0]; i++)
        ok &= check_symbol_origin(core[i], expect, 1);
    for (size_t i = 0; i < sizeof extended / sizeof extended[0]; i++)
        ok &= check_symbol_origin(extended[i], expect, full_api);
    CHECKF(ok, "some allocation functions do not come from an object matching \"%s\"", expect);
}

/* mallinfo2: bytes in use rise by what is allocated and fall back when it
 * is freed (small blocks, so glibc counts them in uordblks too). */
static void test_mallinfo2(void) {
    enum { N = 1000, SIZE = 1000 };
    static void *blocks[N];
    size_t before = mallinfo2().uordblks;
    for (int i = 0; i < N; i++) {
        blocks[i] = malloc(opaque(SIZE));
        CHECK(blocks[i] != NULL);
        memset(blocks[i], 1, SIZE);
    }
    size_t during = mallinfo2().uordblks;
    CHECKF(during >= before + (size_t)N * SIZE, "uordblks %zu -> %zu after %d KB", before, during,
           N * SIZE / 1000);
    struct mallinfo2 m = mallinfo2();
    CHECKF(m.arena >= m.uordblks, "arena %zu below uordblks %zu", m.arena, m.uordblks);
    for (int i = 0; i < N; i++) free(blocks[i]);
    size_t after = mallinfo2().uordblks;
    CHECKF(after + (size_t)N * SIZE / 2 <= during, "uordblks %zu did not fall from %zu", after,
           during);
}

static const struct {
    const char *name;
    void (*fn)(void);
} subtests[] = {
    {"malloc_zero", test_malloc_zero},
    {"malloc_sizes", test_malloc_sizes},
    {"malloc_distinct", test_malloc_distinct},
    {"malloc_huge", test_malloc_huge},
    {"free_null", test_free_null},
    {"calloc", test_calloc},
    {"realloc", test_realloc},
    {"realloc_zero", test_realloc_zero},
    {"reallocarray", test_reallocarray},
    {"posix_memalign", test_posix_memalign},
    {"aligned_alloc", test_aligned_alloc},
    {"memalign", test_memalign},
    {"valloc", test_valloc},
    {"pvalloc", test_pvalloc},
    {"malloc_usable_size", test_malloc_usable_size},
    {"free_sized", test_free_sized},
    {"free_aligned_sized", test_free_aligned_sized},
    {"malloc_trim", test_malloc_trim},
    {"free_errno", test_free_errno},
    {"symbols", test_symbols},
    {"mallinfo2", test_mallinfo2},
};

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s SUBTEST\n", argv[0]);
        return 2;
    }
    for (size_t i = 0; i < sizeof subtests / sizeof subtests[0]; i++) {
        if (strcmp(argv[1], subtests[i].name) == 0) {
            subtests[i].fn();
            printf("%s: ok\n", argv[1]);
            return 0;
        }
    }
    fprintf(stderr, "unknown subtest %s\n", argv[1]);
    return 2;
}
