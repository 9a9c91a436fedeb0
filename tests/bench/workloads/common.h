/*
 * Shared helpers for the allocator benchmark workloads.
 *
 * Every workload is invoked as:   <prog> [threads] [scale]
 *   threads  number of worker threads (default 2; some workloads ignore it)
 *   scale    multiplier applied to the amount of work (default 1.0)
 *
 * Objects are "self-describing": a 16-byte header (tag, size) followed by a
 * fill byte derived from the tag.  check_obj() validates the header and a
 * sample of the body, so memory handed out twice, overlapping objects or a
 * broken realloc are detected.  On any error the program prints a message
 * and exits with status 1.
 */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define OBJ_HDR 16 /* bytes of header in a self-describing object */

struct bench_args {
    int threads;
    double scale;
};

static inline struct bench_args parse_args(int argc, char **argv) {
    struct bench_args a = {2, 1.0};
    if (argc > 1) a.threads = atoi(argv[1]);
    if (argc > 2) a.scale = atof(argv[2]);
    if (a.threads < 1) a.threads = 1;
    if (a.threads > 1024) a.threads = 1024;
    if (!(a.scale > 0.0)) a.scale = 1.0;
    return a;
}

/* Scale a base iteration count, never returning less than `min`. */
static inline long scaled(long base, double scale, long min) {
    double v = (double)base * scale;
    return v < (double)min ? min : (long)v;
}

#define die(...)                                                  \
    do {                                                          \
        fprintf(stderr, "error: " __VA_ARGS__);                   \
        fputc('\n', stderr);                                      \
        exit(1);                                                  \
    } while (0)

static inline void *xmalloc(size_t n) {
    void *p = malloc(n);
    if (!p) die("malloc(%zu) returned NULL", n);
    return p;
}

static inline void *xrealloc(void *old, size_t n) {
    void *p = realloc(old, n);
    if (!p) die("realloc(%zu) returned NULL", n);
    return p;
}

/* xorshift64* : small, fast, good enough for workload generation. */
typedef struct { uint64_t s; } rng_t;

static inline rng_t rng_seed(uint64_t seed) {
    rng_t r = {seed * 0x9E3779B97F4A7C15ull + 0x1234567ull};
    if (r.s == 0) r.s = 1;
    return r;
}

static inline uint64_t rng_next(rng_t *r) {
    uint64_t x = r->s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* Uniform in [lo, hi]. */
static inline size_t rng_range(rng_t *r, size_t lo, size_t hi) {
    return lo + (size_t)(rng_next(r) % (uint64_t)(hi - lo + 1));
}

/* Power-law-ish value in [lo, hi]: uniform exponent, so small values are
 * far more common than large ones (density ~ 1/x). */
static inline size_t rng_powerlaw(rng_t *r, size_t lo, size_t hi) {
    double u = (double)(rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
    double ratio = (double)hi / (double)lo;
    /* lo * ratio^u computed without libm: exp2 via repeated squaring
     * is overkill here, so use a tiny log2/exp2 approximation. */
    double l2 = 0.0, t = ratio;
    while (t >= 2.0) { t *= 0.5; l2 += 1.0; }
    l2 += (t - 1.0); /* linear mantissa approximation of log2 */
    double e = u * l2, v = (double)lo;
    while (e >= 1.0) { v *= 2.0; e -= 1.0; }
    v *= 1.0 + e; /* linear approximation of 2^e */
    size_t s = (size_t)v;
    if (s < lo) s = lo;
    if (s > hi) s = hi;
    return s;
}

static inline unsigned char tag_byte(uint64_t tag) {
    return (unsigned char)((tag ^ (tag >> 29) ^ (tag >> 47)) | 1);
}

/* Bodies larger than this are filled sparsely (one word per 4 KiB page,
 * or per 64 KiB above 1 MiB) so that huge objects measure the allocator
 * rather than memset bandwidth and page-fault cost. */
#define SPARSE_LIMIT (64 * 1024)

static inline size_t sparse_stride(size_t n) {
    return n > ((size_t)1 << 20) ? 65536 : 4096;
}

/* Fill a self-describing object of n >= OBJ_HDR bytes. */
static inline void fill_obj(void *p, size_t n, uint64_t tag) {
    unsigned char *b = (unsigned char *)p;
    memcpy(b, &tag, 8);
    memcpy(b + 8, &n, 8);
    unsigned char v = tag_byte(tag);
    if (n <= SPARSE_LIMIT) {
        memset(b + OBJ_HDR, v, n - OBJ_HDR);
    } else {
        size_t stride = sparse_stride(n);
        for (size_t i = stride; i + 8 < n; i += stride) memcpy(b + i, &tag, 8);
        b[n - 1] = v;
    }
}

/* Check the first `limit` bytes (limit <= n) of an object filled with
 * fill_obj(p, n, tag).  Returns 1 when consistent. */
static inline int check_prefix(const void *p, size_t n, uint64_t tag, size_t limit) {
    const unsigned char *b = (const unsigned char *)p;
    uint64_t t;
    size_t sz;
    if (limit < OBJ_HDR) return 1;
    memcpy(&t, b, 8);
    memcpy(&sz, b + 8, 8);
    if (t != tag || sz != n) return 0;
    unsigned char v = tag_byte(tag);
    if (n <= SPARSE_LIMIT) {
        /* Sample ~16 positions plus the last byte. */
        size_t step = (n - OBJ_HDR) / 16 + 1;
        for (size_t i = OBJ_HDR; i < limit; i += step)
            if (b[i] != v) return 0;
        if (limit > OBJ_HDR && b[limit - 1] != v) return 0;
    } else {
        size_t stride = sparse_stride(n);
        for (size_t i = stride; i + 8 < n && i + 8 <= limit; i += stride) {
            memcpy(&t, b + i, 8);
            if (t != tag) return 0;
        }
        if (limit == n && b[n - 1] != v) return 0;
    }
    return 1;
}

static inline int check_obj(const void *p, size_t n, uint64_t tag) {
    return check_prefix(p, n, tag, n);
}

/* Read the header of a self-describing object. */
static inline void obj_header(const void *p, uint64_t *tag, size_t *n) {
    memcpy(tag, p, 8);
    memcpy(n, (const unsigned char *)p + 8, 8);
}

/* Allocate and fill a self-describing object; sizes below OBJ_HDR are
 * rounded up. */
static inline void *new_obj(size_t n, uint64_t tag) {
    if (n < OBJ_HDR) n = OBJ_HDR;
    void *p = xmalloc(n);
    fill_obj(p, n, tag);
    return p;
}

/* Verify using only the object's own header, then free it.  `who` names
 * the workload in the error message. */
static inline void free_obj(void *p, const char *who) {
    uint64_t tag;
    size_t n;
    obj_header(p, &tag, &n);
    if (n < OBJ_HDR || n > ((size_t)1 << 40) || !check_obj(p, n, tag))
        die("%s: corrupted object %p (tag %llx size %zu)", who, p,
            (unsigned long long)tag, n);
    free(p);
}

static inline double now_sec(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline void spawn_threads(pthread_t *tids, int n, void *(*fn)(void *), void *args,
                                 size_t arg_size) {
    for (int i = 0; i < n; i++)
        if (pthread_create(&tids[i], NULL, fn, (char *)args + (size_t)i * arg_size) != 0)
            die("pthread_create failed");
}

static inline void join_threads(pthread_t *tids, int n) {
    for (int i = 0; i < n; i++) pthread_join(tids[i], NULL);
}

#endif
