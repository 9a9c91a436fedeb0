/*
 * malloc-large: large objects of 1-32 MiB.
 *
 * Each thread keeps a few large objects alive and keeps replacing a random
 * one with a new object of random size.  Objects are touched sparsely
 * (once per 64 KiB), so the cost is dominated by how the allocator obtains
 * and reuses large regions (mmap/munmap churn, purging, retained memory).
 */
#include "common.h"

#define LIVE 6
#define MIB (1024 * 1024)

struct worker {
    int id;
    long ops;
};

static void *run(void *arg) {
    struct worker *w = (struct worker *)arg;
    rng_t r = rng_seed((uint64_t)w->id + 3);
    void *live[LIVE] = {0};
    uint64_t tag = (uint64_t)w->id << 48;
    for (long i = 0; i < w->ops; i++) {
        size_t k = rng_range(&r, 0, LIVE - 1);
        if (live[k]) free_obj(live[k], "malloc-large");
        live[k] = new_obj(rng_range(&r, 1 * MIB, 32 * MIB), ++tag);
    }
    for (int k = 0; k < LIVE; k++)
        if (live[k]) free_obj(live[k], "malloc-large");
    return NULL;
}

int main(int argc, char **argv) {
    struct bench_args a = parse_args(argc, argv);
    int n = a.threads;
    long ops = scaled(2000, a.scale, 10) / n;
    pthread_t *tids = xmalloc(sizeof(pthread_t) * (size_t)n);
    struct worker *ws = xmalloc(sizeof(struct worker) * (size_t)n);
    for (int i = 0; i < n; i++) ws[i] = (struct worker){i, ops};
    double t0 = now_sec();
    spawn_threads(tids, n, run, ws, sizeof(struct worker));
    join_threads(tids, n);
    printf("malloc-large: %d threads, %ld allocations, %.3f s\n", n, ops * n, now_sec() - t0);
    free(tids);
    free(ws);
    return 0;
}
