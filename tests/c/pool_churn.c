/* A thread-pool program's churn: waves of short-lived threads, each
 * allocating a few blocks in each of the first 60 size classes and handing
 * half of them to the main thread, which frees them after joining it.
 *
 * Memory must stay bounded however many threads come and go: the program
 * prints resident memory (current and peak) and the address space mapped at
 * checkpoints, and fails when, after the first fifth of the threads,
 * resident memory grew by more than MAX_GROWTH_MIB or mapped memory by more
 * than MAX_MAP_GROWTH_MIB, or when peak resident memory passed MAX_PEAK_MIB
 * (0: no limit).
 *
 * Usage: pool_churn [THREADS [WAVE [MAX_PEAK_MIB [MAX_GROWTH_MIB [CHECKPOINTS
 *                   [MAX_MAP_GROWTH_MIB]]]]]]
 */
#include "common.h"

#include <pthread.h>

#define CLASSES 60
#define PER_CLASS 5
#define BLOCKS (CLASSES * PER_CLASS)
#define HANDED_OVER (BLOCKS / 2)

/* With BARRIER=1 in the environment, every thread of a wave holds its blocks
 * until all of the wave have allocated: exactly WAVE threads are alive at
 * once, whatever the scheduler does, so peaks compare across runs. */
static pthread_barrier_t wave_barrier;
static int use_barrier;

struct job {
    void *left[HANDED_OVER];
    size_t left_size[HANDED_OVER];
};

/* The first 60 size classes of a typical allocator: multiples of 16 up to
 * 128 bytes, then eight classes per power of two (16 B to 12 KiB). */
static size_t class_size(int c) {
    if (c < 8) return (size_t)(c + 1) * 16;
    int k = 7 + (c - 8) / 8, m = (c - 8) % 8;
    return ((size_t)1 << k) + (size_t)(m + 1) * ((size_t)1 << (k - 3));
}

static void *worker(void *arg) {
    struct job *job = arg;
    void *obj[BLOCKS];
    size_t size[BLOCKS];
    for (int i = 0; i < BLOCKS; i++) {
        size[i] = class_size(i % CLASSES);
        obj[i] = malloc(size[i]);
        CHECK(obj[i] != NULL);
        fill_pattern(obj[i], 64 < size[i] ? 64 : size[i], pattern_seed(obj[i], size[i]));
    }
    if (use_barrier) pthread_barrier_wait(&wave_barrier);
    /* Odd blocks are freed here, even ones by the main thread. */
    int h = 0;
    for (int i = 0; i < BLOCKS; i++) {
        size_t n = 64 < size[i] ? 64 : size[i];
        CHECK(check_pattern(obj[i], n, pattern_seed(obj[i], size[i])) == n);
        if (i % 2) {
            free(obj[i]);
        } else {
            job->left[h] = obj[i];
            job->left_size[h++] = size[i];
        }
    }
    return NULL;
}

struct vm {
    size_t rss, hwm, size;
};

/* Current and peak resident memory and mapped address space, in bytes. */
static struct vm vm_now(void) {
    struct vm v = {0, 0, 0};
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    if (!f) return v;
    while (fgets(line, sizeof line, f)) {
        unsigned long kb;
        if (sscanf(line, "VmRSS: %lu kB", &kb) == 1) v.rss = kb * 1024;
        if (sscanf(line, "VmHWM: %lu kB", &kb) == 1) v.hwm = kb * 1024;
        if (sscanf(line, "VmSize: %lu kB", &kb) == 1) v.size = kb * 1024;
    }
    fclose(f);
    return v;
}

int main(int argc, char **argv) {
    size_t total = 100000, wave = 40, max_peak_mib = 0, max_growth_mib = 32, checkpoints = 10;
    if (argc > 1) total = strtoull(argv[1], NULL, 10);
    if (argc > 2) wave = strtoull(argv[2], NULL, 10);
    if (argc > 3) max_peak_mib = strtoull(argv[3], NULL, 10);
    if (argc > 4) max_growth_mib = strtoull(argv[4], NULL, 10);
    if (argc > 5) checkpoints = strtoull(argv[5], NULL, 10);
    size_t max_map_growth_mib = argc > 6 ? strtoull(argv[6], NULL, 10) : max_growth_mib;
    struct job *jobs = calloc(wave, sizeof *jobs);
    pthread_t *threads = calloc(wave, sizeof *threads);
    CHECK(jobs && threads && wave > 0 && checkpoints > 0);

    size_t warmup = total / 5, step = total / checkpoints, next = step;
    struct vm base = {0, 0, 0}, v;
    size_t started = 0;
    use_barrier = getenv("BARRIER") && atoi(getenv("BARRIER"));
    while (started < total) {
        size_t n = total - started < wave ? total - started : wave;
        if (use_barrier) CHECK(pthread_barrier_init(&wave_barrier, NULL, (unsigned)n) == 0);
        for (size_t t = 0; t < n; t++)
            CHECK(pthread_create(&threads[t], NULL, worker, &jobs[t]) == 0);
        for (size_t t = 0; t < n; t++) {
            CHECK(pthread_join(threads[t], NULL) == 0);
            for (int i = 0; i < HANDED_OVER; i++) {
                unsigned char *p = jobs[t].left[i];
                size_t s = jobs[t].left_size[i], m = 64 < s ? 64 : s;
                CHECK(check_pattern(p, m, pattern_seed(p, s)) == m);
                free(p);
            }
        }
        if (use_barrier) pthread_barrier_destroy(&wave_barrier);
        size_t before = started;
        started += n;
        if (before < warmup && started >= warmup) base = vm_now();
        if (started >= next || started == total) {
            v = vm_now();
            printf("threads %7zu: resident %6zu MiB, peak %6zu MiB, mapped %7zu MiB\n", started,
                   v.rss / MIB, v.hwm / MIB, v.size / MIB);
            fflush(stdout);
            while (next <= started) next += step;
        }
    }
    v = vm_now();
    size_t rss_growth = v.rss > base.rss ? v.rss - base.rss : 0;
    size_t map_growth = v.size > base.size ? v.size - base.size : 0;
    printf("after %zu warm-up threads: resident grew %zu MiB (limit %zu), mapped grew %zu MiB "
           "(limit %zu); peak resident %zu MiB (limit %zu)\n",
           warmup, rss_growth / MIB, max_growth_mib, map_growth / MIB, max_map_growth_mib,
           v.hwm / MIB, max_peak_mib);
    CHECKF(rss_growth <= max_growth_mib * MIB, "resident memory grew by %zu MiB", rss_growth / MIB);
    CHECKF(map_growth <= max_map_growth_mib * MIB, "mapped memory grew by %zu MiB",
           map_growth / MIB);
    CHECKF(max_peak_mib == 0 || v.hwm <= max_peak_mib * MIB, "peak resident %zu MiB",
           v.hwm / MIB);
    free(jobs);
    free(threads);
    printf("pool_churn: ok\n");
    return 0;
}
