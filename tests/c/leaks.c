/* Programs that leak known amounts from known functions, for the leak
 * report (APEX_LEAKS=1; tests/tests/leaks.rs). Built with -rdynamic so the
 * report can name the functions. Each subtest frees everything except the
 * blocks it means to leak, and prints "<subtest>: ok" on success. Counts
 * come from the command line so the compiler cannot unroll the loops into
 * several call sites.
 *
 *   leaks sites N       leak_small: N x 100 B (malloc); leak_big: N x
 *                       10000 B (calloc); leak_aligned: N x 256 B
 *                       (aligned_alloc 64); churn: 100 N blocks freed
 *   leaks realloc N     grow_then_shrink: N blocks malloc(100) ->
 *                       realloc 5000 -> realloc 4000, leaked; grown_and_freed:
 *                       N blocks malloc, realloc, freed; a failed realloc
 *                       keeps its block's sample
 *   leaks threads T N   T threads, each: thread_leak N x 200 B; handed_over:
 *                       blocks main allocates, the threads free
 *   leaks estimate      leak_tiny: 524288 x 64 B (32 MiB); leak_huge: 16 x
 *                       1 MiB; churn: 1,000,000 blocks freed
 *   leaks many N        leak_site_I for I in 0..24: N (I + 1) blocks of
 *                       1000 B each (25 sites, more than the report lists)
 */
#include <pthread.h>
#include <stdint.h>

#include "common.h"

static long arg(int argc, char **argv, int i) {
    CHECK(argc > i);
    return atol(argv[i]);
}

/* The blocks leaked go into a list the optimiser cannot see through. */
static void *volatile sink;

__attribute__((noinline)) void leak_small(void) {
    char *p = malloc(100);
    CHECK(p);
    memset(p, 1, 100);
    sink = p;
}

__attribute__((noinline)) void leak_big(void) {
    char *p = calloc(1, 10000);
    CHECK(p);
    sink = p;
}

__attribute__((noinline)) void leak_aligned(void) {
    char *p = aligned_alloc(64, 256);
    CHECK(p && ((uintptr_t)p & 63) == 0);
    sink = p;
}

/* Blocks of many sizes, all freed again. */
__attribute__((noinline)) void churn(long n) {
    enum { LIVE = 64 };
    void *live[LIVE] = {0};
    for (long i = 0; i < n; i++) {
        int k = (int)(i % LIVE);
        free(live[k]);
        live[k] = malloc(16 + (size_t)(i * 7919 % 20000));
        CHECK(live[k]);
    }
    for (int k = 0; k < LIVE; k++) free(live[k]);
}

static int sites(long n) {
    for (long i = 0; i < n; i++) {
        leak_small();
        leak_big();
        leak_aligned();
    }
    churn(100 * n);
    return 0;
}

__attribute__((noinline)) void *start_block(void) { return malloc(100); }

__attribute__((noinline)) void *grow_then_shrink(void *p) {
    p = realloc(p, 5000);
    CHECK(p);
    p = realloc(p, 4000);
    CHECK(p);
    return p;
}

__attribute__((noinline)) void grown_and_freed(void) {
    void *p = malloc(300);
    CHECK(p);
    p = realloc(p, 70000);
    CHECK(p);
    free(p);
}

__attribute__((noinline)) void *failed_realloc_keeps(void) {
    void *p = malloc(50);
    CHECK(p);
    /* Far more than the address space: fails, and p stays live. */
    void *q = realloc(p, SIZE_MAX / 2);
    CHECK(q == NULL);
    return p;
}

static int reallocs(long n) {
    for (long i = 0; i < n; i++) {
        void *p = start_block();
        CHECK(p);
        sink = grow_then_shrink(p);
        grown_and_freed();
    }
    sink = failed_realloc_keeps();
    return 0;
}

struct job {
    long n;
    void **handed;
    long handed_n;
};

__attribute__((noinline)) void thread_leak(void) {
    void *p = malloc(200);
    CHECK(p);
    sink = p;
}

__attribute__((noinline)) void *handed_over(void) { return malloc(48); }

static void *worker(void *arg) {
    struct job *j = arg;
    for (long i = 0; i < j->n; i++) {
        thread_leak();
        churn(50);
    }
    /* Blocks another thread allocated, freed here. */
    for (long i = 0; i < j->handed_n; i++) free(j->handed[i]);
    return NULL;
}

static int threads(long t, long n) {
    enum { MAX = 16, HANDED = 100 };
    CHECK(t > 0 && t <= MAX);
    pthread_t tid[MAX];
    struct job jobs[MAX];
    static void *handed[MAX][HANDED];
    for (long i = 0; i < t; i++) {
        for (int k = 0; k < HANDED; k++) {
            handed[i][k] = handed_over();
            CHECK(handed[i][k]);
        }
        jobs[i] = (struct job){.n = n, .handed = handed[i], .handed_n = HANDED};
        CHECK(pthread_create(&tid[i], NULL, worker, &jobs[i]) == 0);
    }
    for (long i = 0; i < t; i++) CHECK(pthread_join(tid[i], NULL) == 0);
    return 0;
}

__attribute__((noinline)) void leak_tiny(void) {
    void *p = malloc(64);
    CHECK(p);
    sink = p;
}

__attribute__((noinline)) void leak_huge(void) {
    void *p = malloc(1 << 20);
    CHECK(p);
    sink = p;
}

static int estimate(void) {
    for (long i = 0; i < 524288; i++) leak_tiny();
    for (long i = 0; i < 16; i++) leak_huge();
    churn(1000000);
    return 0;
}

/* 25 functions, one call site each. */
#define SITE(i)                                       \
    __attribute__((noinline)) void leak_site_##i(void) { \
        void *p = malloc(1000);                       \
        CHECK(p);                                     \
        sink = p;                                     \
    }
SITE(0) SITE(1) SITE(2) SITE(3) SITE(4) SITE(5) SITE(6) SITE(7) SITE(8)
SITE(9) SITE(10) SITE(11) SITE(12) SITE(13) SITE(14) SITE(15) SITE(16)
SITE(17) SITE(18) SITE(19) SITE(20) SITE(21) SITE(22) SITE(23) SITE(24)

static int many(long n) {
    void (*const sites[])(void) = {
        leak_site_0,  leak_site_1,  leak_site_2,  leak_site_3,  leak_site_4,
        leak_site_5,  leak_site_6,  leak_site_7,  leak_site_8,  leak_site_9,
        leak_site_10, leak_site_11, leak_site_12, leak_site_13, leak_site_14,
        leak_site_15, leak_site_16, leak_site_17, leak_site_18, leak_site_19,
        leak_site_20, leak_site_21, leak_site_22, leak_site_23, leak_site_24,
    };
    for (int i = 0; i < 25; i++)
        for (long k = 0; k < n * (i + 1); k++) sites[i]();
    return 0;
}

int main(int argc, char **argv) {
    CHECK(argc >= 2);
    const char *t = argv[1];
    int r;
    if (strcmp(t, "sites") == 0) {
        r = sites(arg(argc, argv, 2));
    } else if (strcmp(t, "realloc") == 0) {
        r = reallocs(arg(argc, argv, 2));
    } else if (strcmp(t, "threads") == 0) {
        r = threads(arg(argc, argv, 2), arg(argc, argv, 3));
    } else if (strcmp(t, "estimate") == 0) {
        r = estimate();
    } else if (strcmp(t, "many") == 0) {
        r = many(arg(argc, argv, 2));
    } else {
        fprintf(stderr, "unknown subtest %s\n", t);
        return 2;
    }
    /* write(2), not stdio: a stdio buffer would be one more live block. */
    char line[64];
    int len = snprintf(line, sizeof line, "%s: ok\n", t);
    CHECK(write(1, line, (size_t)len) == len);
    return r;
}
