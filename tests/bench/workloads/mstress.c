/*
 * mstress: mixed sizes with thread churn.
 *
 * The program runs a number of rounds; in each round it creates the worker
 * threads afresh and joins them at the end, so the allocator must cope
 * with threads appearing and exiting while their memory is still live.
 * Workers swap objects of mixed sizes (mostly small, some medium, a few
 * large) into a shared slot array with an atomic exchange and free
 * whatever was there before, so objects outlive the thread that allocated
 * them and are freed by unrelated threads.
 */
#include "common.h"

#define SLOTS 8192

static _Atomic(void *) slots[SLOTS];

struct worker {
    int id;
    long ops;
    uint64_t seed;
};

static size_t pick_size(rng_t *r) {
    uint64_t x = rng_next(r) % 1000;
    if (x < 900) return rng_range(r, 16, 256);        /* small */
    if (x < 995) return rng_range(r, 257, 16384);     /* medium */
    return rng_range(r, 16385, 512 * 1024);           /* large, rare */
}

static void *run(void *arg) {
    struct worker *w = (struct worker *)arg;
    rng_t r = rng_seed(w->seed);
    uint64_t tag = w->seed << 32;
    for (long i = 0; i < w->ops; i++) {
        void *p = new_obj(pick_size(&r), ++tag);
        void *old = atomic_exchange(&slots[rng_range(&r, 0, SLOTS - 1)], p);
        if (old) free_obj(old, "mstress");
    }
    return NULL;
}

int main(int argc, char **argv) {
    struct bench_args a = parse_args(argc, argv);
    int n = a.threads;
    long rounds = scaled(100, a.scale, 2);
    long ops = 100000 / n + 1;
    pthread_t *tids = xmalloc(sizeof(pthread_t) * (size_t)n);
    struct worker *ws = xmalloc(sizeof(struct worker) * (size_t)n);
    double t0 = now_sec();
    for (long round = 0; round < rounds; round++) {
        for (int i = 0; i < n; i++)
            ws[i] = (struct worker){i, ops, (uint64_t)(round * 1024 + i + 1)};
        spawn_threads(tids, n, run, ws, sizeof(struct worker));
        join_threads(tids, n);
    }
    double dt = now_sec() - t0;
    long live = 0;
    for (int k = 0; k < SLOTS; k++) {
        void *p = atomic_load(&slots[k]);
        if (p) {
            free_obj(p, "mstress");
            live++;
        }
    }
    printf("mstress: %d threads x %ld rounds, %ld live at end, %.3f s\n", n, rounds, live, dt);
    free(tids);
    free(ws);
    return 0;
}
