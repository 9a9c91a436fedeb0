/* Thousands of short-lived threads: memory must not grow with their number.
 *
 * Threads run in waves of WAVE at a time (the first fifth is a warm-up). Each allocates a mix of objects,
 * frees most of them itself, and hands the rest to the main thread, which
 * frees them after joining it (so they are freed by a thread other than
 * the one, now dead, that allocated them). An allocator that loses per-thread
 * state when a thread exits grows with every wave.
 *
 * Usage: thread_churn [THREADS [WAVE [MAX_GROWTH_MIB]]]
 */
#include "common.h"

#include <pthread.h>

#define PER_THREAD 256
#define HANDED_OVER 64

struct job {
    uint64_t seed;
    void *left[HANDED_OVER];
    size_t left_size[HANDED_OVER];
};

static size_t object_size(uint64_t *rng) {
    uint64_t r = rng_next(rng);
    switch (r % 16) {
    case 0:
        return 4096 + r % 60000; /* medium */
    case 1:
        return r % 64 == 1 ? 300000 : 2000 + r % 2000; /* rarely large */
    default:
        return 8 + (r >> 8) % 512; /* small */
    }
}

static void *worker(void *arg) {
    struct job *job = arg;
    uint64_t rng = job->seed;
    void *obj[PER_THREAD];
    size_t size[PER_THREAD];
    for (int i = 0; i < PER_THREAD; i++) {
        size[i] = object_size(&rng);
        obj[i] = malloc(size[i]);
        CHECK(obj[i] != NULL);
        memset(obj[i], (int)(size[i] & 0xff), size[i]);
    }
    /* free all but the last HANDED_OVER, in a scrambled order */
    for (int i = 0; i < PER_THREAD - HANDED_OVER; i++) {
        int j = (int)((size_t)i * 37 % (PER_THREAD - HANDED_OVER));
        unsigned char *p = obj[j];
        CHECK(p[0] == (unsigned char)(size[j] & 0xff));
        CHECK(p[size[j] - 1] == (unsigned char)(size[j] & 0xff));
        free(p);
    }
    for (int i = 0; i < HANDED_OVER; i++) {
        job->left[i] = obj[PER_THREAD - HANDED_OVER + i];
        job->left_size[i] = size[PER_THREAD - HANDED_OVER + i];
    }
    return NULL;
}

static void run_wave(struct job *jobs, pthread_t *threads, size_t wave, uint64_t *seed) {
    for (size_t t = 0; t < wave; t++) {
        jobs[t].seed = ++*seed * 0x9E3779B97F4A7C15ULL;
        CHECK(pthread_create(&threads[t], NULL, worker, &jobs[t]) == 0);
    }
    for (size_t t = 0; t < wave; t++) {
        CHECK(pthread_join(threads[t], NULL) == 0);
        for (int i = 0; i < HANDED_OVER; i++) {
            unsigned char *p = jobs[t].left[i];
            size_t n = jobs[t].left_size[i];
            CHECK(p[0] == (unsigned char)(n & 0xff) && p[n - 1] == (unsigned char)(n & 0xff));
            free(p);
        }
    }
}

int main(int argc, char **argv) {
    size_t total = 5000, wave = 16, max_growth_mib = 64;
    if (argc > 1) total = strtoull(argv[1], NULL, 10);
    if (argc > 2) wave = strtoull(argv[2], NULL, 10);
    if (argc > 3) max_growth_mib = strtoull(argv[3], NULL, 10);
    struct job *jobs = calloc(wave, sizeof *jobs);
    pthread_t *threads = calloc(wave, sizeof *threads);
    CHECK(jobs && threads);
    uint64_t seed = 1;

    /* The first fifth of the threads is a warm-up: thread stacks, the
     * allocator's setup and whatever it caches for WAVE concurrent threads
     * are part of the baseline. Only growth after that counts; memory lost
     * with each exiting thread keeps adding up. */
    size_t warmup = total / 5 > wave ? total / 5 : wave;
    size_t started = 0, before = 0;
    while (started < total) {
        size_t n = total - started < wave ? total - started : wave;
        run_wave(jobs, threads, n, &seed);
        started += n;
        if (started >= warmup && before == 0) before = resident_bytes();
    }
    size_t after = resident_bytes();
    size_t growth = after > before ? after - before : 0;
    printf("threads %zu, resident after %zu warm-up threads %zu MiB, at the end %zu MiB, "
           "growth %zu MiB (limit %zu)\n",
           total, warmup, before / MIB, after / MIB, growth / MIB, max_growth_mib);
    CHECKF(growth < max_growth_mib * MIB, "resident grew by %zu MiB over %zu threads",
           growth / MIB, total - warmup);
    free(jobs);
    free(threads);
    printf("thread_churn: ok\n");
    return 0;
}
