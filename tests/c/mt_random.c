/* Multithreaded random malloc/calloc/memalign/realloc/free with content
 * verification, and blocks handed between threads.
 *
 * Every block is filled with a pattern derived from its address and size
 * and is checked before it is freed or reallocated, and at random times in
 * between. Blocks pass between threads through a shared exchange, so many
 * are freed or reallocated by a thread other than their allocator. Any
 * block handed out twice, overlapping another, or corrupted by the
 * allocator's own bookkeeping shows up as a pattern mismatch.
 *
 * Usage: mt_random [THREADS [OPS_PER_THREAD]]
 */
#include "common.h"

#include <pthread.h>

#define SLOTS 2048
#define EXCHANGE 512

struct blk {
    unsigned char *p;
    size_t n;
};

static struct blk exchange[EXCHANGE];
static size_t exchange_count;
static pthread_mutex_t exchange_lock = PTHREAD_MUTEX_INITIALIZER;
static size_t ops_per_thread = 200000;

static uint64_t seed_of(const void *p, size_t n) {
    return ((uint64_t)(uintptr_t)p * 0x9E3779B97F4A7C15ULL) ^ (n * 0xC2B2AE3D27D4EB4FULL);
}

/* The pattern word covering bytes [8*i, 8*i + 8). */
static inline uint64_t pattern_word(uint64_t seed, size_t i) {
    uint64_t x = seed + i * 0xD6E8FEB86659FD93ULL;
    return x ^ (x >> 29);
}

static void fill(unsigned char *p, size_t n, uint64_t seed) {
    size_t words = n / 8;
    if (words && ((uintptr_t)p & 7) == 0) {
        uint64_t *w = (uint64_t *)p;
        for (size_t i = 0; i < words; i++) w[i] = pattern_word(seed, i);
    } else {
        words = 0;
    }
    for (size_t j = words * 8; j < n; j++) p[j] = (unsigned char)(pattern_word(seed, j / 8) >> (8 * (j % 8)));
}

/* Checks the first m bytes; fails the program on a mismatch. */
static void verify(const unsigned char *p, size_t m, uint64_t seed, const char *what) {
    size_t words = m / 8, j = 0;
    if (words && ((uintptr_t)p & 7) == 0) {
        const uint64_t *w = (const uint64_t *)p;
        for (size_t i = 0; i < words; i++)
            if (w[i] != pattern_word(seed, i)) {
                j = i * 8;
                goto byte_check;
            }
        j = words * 8;
    }
byte_check:
    for (; j < m; j++) {
        unsigned char want = (unsigned char)(pattern_word(seed, j / 8) >> (8 * (j % 8)));
        CHECKF(p[j] == want, "%s: block %p: byte %zu of %zu is %#x, expected %#x", what,
               (const void *)p, j, m, p[j], want);
    }
}

static size_t random_size(uint64_t *rng) {
    uint64_t r = rng_next(rng);
    unsigned bucket = (unsigned)(r % 1000);
    r >>= 10;
    if (bucket < 750) return 1 + r % 256;
    if (bucket < 950) return 257 + r % (8192 - 256);
    if (bucket < 995) return 8193 + r % (65536 - 8192);
    return 65537 + r % (1024 * 1024 - 65536);
}

static unsigned char *allocate(uint64_t *rng, size_t n) {
    uint64_t r = rng_next(rng) % 100;
    unsigned char *p;
    if (r < 70) {
        p = malloc(n);
    } else if (r < 85) {
        p = calloc(1, n);
        CHECK(p != NULL);
        for (size_t i = 0; i < n; i++) CHECKF(p[i] == 0, "calloc(1, %zu) byte %zu not zero", n, i);
    } else if (r < 95) {
        size_t align = (size_t)16 << (rng_next(rng) % 9); /* 16 .. 4096 */
        void *q = NULL;
        CHECK(posix_memalign(&q, align, n) == 0);
        CHECK(is_aligned(q, align));
        p = q;
    } else {
        size_t align = (size_t)8 << (rng_next(rng) % 7); /* 8 .. 512 */
        p = aligned_alloc(align, (n + align - 1) / align * align);
        CHECK(p == NULL || is_aligned(p, align));
    }
    CHECKF(p != NULL, "allocation of %zu bytes failed", n);
    fill(p, n, seed_of(p, n));
    return p;
}

static void release(struct blk *b) {
    verify(b->p, b->n, seed_of(b->p, b->n), "before free");
    free(b->p);
    b->p = NULL;
    b->n = 0;
}

static void *worker(void *arg) {
    uint64_t rng = 0x5eed0000 + (uint64_t)(uintptr_t)arg * 7919;
    static __thread struct blk slots[SLOTS];
    for (size_t op = 0; op < ops_per_thread; op++) {
        uint64_t r = rng_next(&rng);
        struct blk *b = &slots[(r >> 8) % SLOTS];
        unsigned kind = (unsigned)(r % 100);
        if (kind < 40) {
            /* allocate into an empty slot, or free a full one */
            if (b->p) {
                release(b);
            } else {
                b->n = random_size(&rng);
                b->p = allocate(&rng, b->n);
            }
        } else if (kind < 60) {
            /* realloc (from NULL when empty) */
            size_t n = random_size(&rng);
            if (b->p) verify(b->p, b->n, seed_of(b->p, b->n), "before realloc");
            uint64_t old_seed = seed_of(b->p, b->n);
            size_t keep = b->n < n ? b->n : n;
            unsigned char *q = realloc(b->p, n);
            CHECKF(q != NULL, "realloc to %zu failed", n);
            verify(q, keep, old_seed, "after realloc");
            b->p = q;
            b->n = n;
            fill(q, n, seed_of(q, n));
        } else if (kind < 70) {
            /* hand a block to whichever thread takes it */
            if (b->p) {
                pthread_mutex_lock(&exchange_lock);
                if (exchange_count < EXCHANGE) {
                    exchange[exchange_count++] = *b;
                    b->p = NULL;
                    b->n = 0;
                }
                pthread_mutex_unlock(&exchange_lock);
            }
        } else if (kind < 80) {
            /* take a block from the exchange */
            if (!b->p) {
                pthread_mutex_lock(&exchange_lock);
                if (exchange_count > 0) {
                    size_t i = (r >> 32) % exchange_count;
                    *b = exchange[i];
                    exchange[i] = exchange[--exchange_count];
                }
                pthread_mutex_unlock(&exchange_lock);
                if (b->p) verify(b->p, b->n, seed_of(b->p, b->n), "after hand-over");
            }
        } else if (b->p) {
            verify(b->p, b->n, seed_of(b->p, b->n), "spot check");
        }
    }
    for (size_t i = 0; i < SLOTS; i++)
        if (slots[i].p) release(&slots[i]);
    return NULL;
}

int main(int argc, char **argv) {
    size_t threads = 4;
    if (argc > 1) threads = strtoull(argv[1], NULL, 10);
    if (argc > 2) ops_per_thread = strtoull(argv[2], NULL, 10);
    pthread_t tid[64];
    CHECK(threads >= 1 && threads <= 64);
    for (size_t t = 0; t < threads; t++)
        CHECK(pthread_create(&tid[t], NULL, worker, (void *)(uintptr_t)t) == 0);
    for (size_t t = 0; t < threads; t++) CHECK(pthread_join(tid[t], NULL) == 0);
    for (size_t i = 0; i < exchange_count; i++) release(&exchange[i]);
    printf("%zu threads x %zu operations\n", threads, ops_per_thread);
    printf("mt_random: ok\n");
    return 0;
}
