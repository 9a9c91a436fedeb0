/* Shared helpers for the system-test programs. */
#ifndef APEX_TEST_COMMON_H
#define APEX_TEST_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Fails the program (exit status 1) with the location and expression. */
#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, \
                    #cond);                                                  \
            fflush(stdout);                                                  \
            exit(1);                                                         \
        }                                                                    \
    } while (0)

/* Like CHECK, with a printf-style explanation. */
#define CHECKF(cond, ...)                                                    \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, \
                    #cond);                                                  \
            fprintf(stderr, __VA_ARGS__);                                    \
            fputc('\n', stderr);                                             \
            fflush(stdout);                                                  \
            exit(1);                                                         \
        }                                                                    \
    } while (0)

/* Makes `p` (and the memory it points to) visible to the outside world, so
 * the compiler must assume it is used. */
static inline void escape(void *p) { __asm__ volatile("" : : "g"(p) : "memory"); }

/* Returns `v` unchanged, hiding its value from the optimizer. */
static inline size_t opaque(size_t v) {
    __asm__ volatile("" : "+r"(v));
    return v;
}

static inline int is_aligned(const void *p, size_t align) {
    return ((uintptr_t)p & (align - 1)) == 0;
}

/* Resident set size of this process in bytes, from /proc/self/statm. */
static inline size_t resident_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, resident = 0;
    if (!f) return 0;
    if (fscanf(f, "%lu %lu", &size, &resident) != 2) resident = 0;
    fclose(f);
    return resident * (size_t)sysconf(_SC_PAGESIZE);
}

#define MIB ((size_t)1 << 20)

/* A byte pattern derived from an object's address and size: a block that
 * is moved, overlapped or handed out twice shows up as a mismatch. */
static inline unsigned char pattern_seed(const void *p, size_t size) {
    uintptr_t a = (uintptr_t)p;
    return (unsigned char)((a >> 4) ^ (a >> 12) ^ (size * 2654435761u) ^ 0x5a);
}

static inline void fill_pattern(unsigned char *p, size_t n, unsigned char seed) {
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(seed + i * 131);
}

/* Index of the first byte that breaks the pattern, or `n` if none. */
static inline size_t check_pattern(const unsigned char *p, size_t n, unsigned char seed) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(seed + i * 131)) return i;
    return n;
}

/* Small, fast, deterministic PRNG (xorshift64*). */
static inline uint64_t rng_next(uint64_t *s) {
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

#endif
