/*
 * cache-scratch / cache-thrash: false-sharing tests (one source, selected
 * with -DSCRATCH).
 *
 * Each thread repeatedly allocates a small object, writes it many times,
 * checks it and frees it.  An allocator that places small objects of
 * different threads on the same cache line makes those writes bounce the
 * line between cores (active false sharing: cache-thrash).  In the scratch
 * variant, every thread starts by freeing a small object that the main
 * thread allocated next to the others; an allocator that recycles that
 * memory for the thread's own allocations inherits the shared cache line
 * (passive false sharing).
 */
#include "common.h"

#define OBJ_SIZE 8

struct worker {
    int id;
    long iterations, repetitions;
    unsigned char *initial; /* scratch: object handed over by main */
};

static void *run(void *arg) {
    struct worker *w = (struct worker *)arg;
    if (w->initial) {
        if (w->initial[0] != (unsigned char)w->id) die("cache: bad initial object");
        free(w->initial);
    }
    for (long i = 0; i < w->iterations; i++) {
        volatile unsigned char *p = xmalloc(OBJ_SIZE);
        for (long j = 0; j < w->repetitions; j++)
            for (int k = 0; k < OBJ_SIZE; k++) p[k] = (unsigned char)(p[k] + 1 + k);
        /* Each byte k was incremented repetitions*(k+1) times from an
         * unknown start; overwrite with a known value and check it. */
        for (int k = 0; k < OBJ_SIZE; k++) p[k] = (unsigned char)(w->id + k);
        for (int k = 0; k < OBJ_SIZE; k++)
            if (p[k] != (unsigned char)(w->id + k)) die("cache: object corrupted");
        free((void *)p);
    }
    return NULL;
}

int main(int argc, char **argv) {
    struct bench_args a = parse_args(argc, argv);
    int n = a.threads;
    #ifdef SCRATCH
    long iterations = scaled(1500, a.scale, 2);
#else
    long iterations = scaled(4000, a.scale, 2);
#endif
    long repetitions = 50000;
    pthread_t *tids = xmalloc(sizeof(pthread_t) * (size_t)n);
    struct worker *ws = xmalloc(sizeof(struct worker) * (size_t)n);
    for (int i = 0; i < n; i++) {
        ws[i] = (struct worker){i, iterations, repetitions, NULL};
#ifdef SCRATCH
        ws[i].initial = xmalloc(OBJ_SIZE);
        ws[i].initial[0] = (unsigned char)i;
#endif
    }
    double t0 = now_sec();
    spawn_threads(tids, n, run, ws, sizeof(struct worker));
    join_threads(tids, n);
    double dt = now_sec() - t0;
#ifdef SCRATCH
    const char *name = "cache-scratch";
#else
    const char *name = "cache-thrash";
#endif
    printf("%s: %d threads, %ld allocations, %.3f s\n", name, n, iterations * n, dt);
    free(tids);
    free(ws);
    return 0;
}
