/* Running out of address space, then recovering: under an address-space cap
 * (RLIMIT_AS, as `ulimit -v` sets it) memory that was freed must serve new
 * requests, from any thread, without the program calling malloc_trim.
 *
 * Usage: exhaustion MODE
 *   refill   fill the cap with 1 MiB blocks, free them all; one 100 MiB block
 *            must then fit, and the blocks must fit again (80%: the
 *            shared heap's segment may have been released meanwhile)
 *   realloc  grow one block 1 MiB at a time until realloc fails: it must
 *            reach 112 MiB of the 256 MiB cap, and the block stays intact
 *   threads  16 threads wait while the main thread fills the cap, then frees
 *            everything: every thread must then allocate
 *   many     64 threads allocate at once with room for only a few segments:
 *            every one must get its blocks
 *   align    (no cap) alignments up to 16 GiB must be served
 */
#include "common.h"

#include <pthread.h>
#include <sys/resource.h>

#define CAP_MIB 256

static size_t mapped_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0;
    CHECK(f != NULL);
    CHECK(fscanf(f, "%lu", &size) == 1);
    fclose(f);
    return size * (size_t)sysconf(_SC_PAGESIZE);
}

/* Caps the address space at what is mapped now plus `mib`. */
static void cap_address_space(size_t mib) {
    size_t limit = mapped_bytes() + mib * MIB;
    struct rlimit r = {limit, limit};
    CHECK(setrlimit(RLIMIT_AS, &r) == 0);
}

#define MAX_BLOCKS 4096
static void *blocks[MAX_BLOCKS];

/* Allocates 1 MiB blocks until malloc fails; returns how many it got. */
static size_t fill(void) {
    size_t n = 0;
    for (;;) {
        CHECK(n < MAX_BLOCKS);
        errno = 0;
        void *p = malloc(MIB);
        if (!p) {
            CHECKF(errno == ENOMEM, "errno %d after a failed malloc", errno);
            return n;
        }
        memset(p, 1, 4096);
        blocks[n++] = p;
    }
}

static void release(size_t n) {
    for (size_t i = 0; i < n; i++) free(blocks[i]);
}

static void mode_refill(void) {
    cap_address_space(CAP_MIB);
    size_t first = fill();
    release(first);
    char *big = malloc(100 * MIB);
    CHECKF(big != NULL, "malloc(100 MiB) failed after freeing %zu MiB", first);
    big[0] = big[100 * MIB - 1] = 7;
    free(big);
    size_t again = fill();
    release(again);
    printf("refill: %zu MiB, then 100 MiB in one block, then %zu MiB again\n", first, again);
    CHECKF(first >= CAP_MIB / 2, "only %zu MiB of a %d MiB cap", first, CAP_MIB);
    CHECKF(again * 10 >= first * 8, "the second fill got %zu MiB, the first %zu", again, first);
}

static void mode_realloc(void) {
    cap_address_space(CAP_MIB);
    size_t size = MIB;
    unsigned char *p = malloc(size);
    CHECK(p != NULL);
    fill_pattern(p, size, 3);
    for (;;) {
        unsigned char *q = realloc(p, size + MIB);
        if (!q) break;
        p = q;
        fill_pattern(p + size, MIB, (unsigned char)(3 + size * 131));
        size += MIB;
    }
    CHECK(check_pattern(p, MIB, 3) == MIB);
    free(p);
    printf("realloc: grew to %zu MiB\n", size / MIB);
    CHECKF(size >= 112 * MIB, "realloc stopped at %zu MiB", size / MIB);
}

#define THREADS 16
static pthread_barrier_t start, filled, freed;
static int failed_while_full, ok_after;

static void *late_thread(void *arg) {
    (void)arg;
    pthread_barrier_wait(&start);
    pthread_barrier_wait(&filled);
    void *p = malloc(MIB);
    if (!p) __atomic_add_fetch(&failed_while_full, 1, __ATOMIC_RELAXED);
    free(p);
    pthread_barrier_wait(&freed);
    void *small = malloc(16), *big = malloc(MIB);
    if (small && big) {
        memset(big, 2, MIB);
        __atomic_add_fetch(&ok_after, 1, __ATOMIC_RELAXED);
    }
    free(small);
    free(big);
    return NULL;
}

static void spawn(pthread_t *t, size_t n, void *(*fn)(void *)) {
    pthread_attr_t attr;
    CHECK(pthread_attr_init(&attr) == 0);
    CHECK(pthread_attr_setstacksize(&attr, 256 * 1024) == 0);
    for (size_t i = 0; i < n; i++) CHECK(pthread_create(&t[i], &attr, fn, NULL) == 0);
    pthread_attr_destroy(&attr);
}

static void mode_threads(void) {
    pthread_t t[THREADS];
    CHECK(pthread_barrier_init(&start, NULL, THREADS + 1) == 0);
    CHECK(pthread_barrier_init(&filled, NULL, THREADS + 1) == 0);
    CHECK(pthread_barrier_init(&freed, NULL, THREADS + 1) == 0);
    spawn(t, THREADS, late_thread);
    pthread_barrier_wait(&start);
    cap_address_space(CAP_MIB);
    size_t n = fill();
    pthread_barrier_wait(&filled);
    /* The threads try while the cap is full; give them time to fail. */
    usleep(200 * 1000);
    release(n);
    pthread_barrier_wait(&freed);
    for (int i = 0; i < THREADS; i++) CHECK(pthread_join(t[i], NULL) == 0);
    printf("threads: filled %zu MiB; %d of %d threads failed while full, %d of %d allocated "
           "after the free\n",
           n, failed_while_full, THREADS, ok_after, THREADS);
    CHECKF(ok_after == THREADS, "only %d of %d threads could allocate", ok_after, THREADS);
}

#define MANY 64
static int many_ok;

static void *many_thread(void *arg) {
    (void)arg;
    pthread_barrier_wait(&start);
    void *p[8];
    int ok = 1;
    for (int i = 0; i < 8; i++) {
        p[i] = malloc(16 << i);
        if (p[i]) memset(p[i], 3, 16 << i);
        else ok = 0;
    }
    /* Hold the blocks until every thread has tried. */
    pthread_barrier_wait(&filled);
    for (int i = 0; i < 8; i++) free(p[i]);
    if (ok) __atomic_add_fetch(&many_ok, 1, __ATOMIC_RELAXED);
    return NULL;
}

static void mode_many(void) {
    pthread_t t[MANY];
    CHECK(pthread_barrier_init(&start, NULL, MANY + 1) == 0);
    CHECK(pthread_barrier_init(&filled, NULL, MANY + 1) == 0);
    spawn(t, MANY, many_thread);
    /* Room for a few 32 MiB segments, far from one per thread. */
    cap_address_space(160);
    pthread_barrier_wait(&start);
    pthread_barrier_wait(&filled);
    for (int i = 0; i < MANY; i++) CHECK(pthread_join(t[i], NULL) == 0);
    printf("many: %d of %d threads got all their blocks\n", many_ok, MANY);
    CHECKF(many_ok == MANY, "only %d of %d threads got their blocks", many_ok, MANY);
}

static void mode_align(void) {
    for (int k = 20; k <= 34; k++) {
        size_t align = (size_t)1 << k;
        unsigned char *p = aligned_alloc(align, 4096);
        CHECKF(p != NULL, "aligned_alloc(2^%d, 4096) failed", k);
        CHECK(is_aligned(p, align));
        p[0] = p[4095] = 9;
        free(p);
    }
    printf("align: 2^20 .. 2^34 served\n");
}

int main(int argc, char **argv) {
    CHECK(argc == 2);
    const char *m = argv[1];
    if (!strcmp(m, "refill")) mode_refill();
    else if (!strcmp(m, "realloc")) mode_realloc();
    else if (!strcmp(m, "threads")) mode_threads();
    else if (!strcmp(m, "many")) mode_many();
    else if (!strcmp(m, "align")) mode_align();
    else CHECKF(0, "unknown mode %s", m);
    printf("exhaustion: ok\n");
    return 0;
}
