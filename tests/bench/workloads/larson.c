/*
 * larson: server simulation.
 *
 * Each worker owns a set of slots holding live objects of random sizes.
 * In every round it repeatedly picks a random slot, verifies and frees the
 * object there and allocates a fresh one.  After each round the slot sets
 * rotate between threads (thread i takes over the slots of thread i+1), so
 * most objects are freed by a thread other than the one that allocated
 * them, like connection state handed between server threads.
 */
#include "common.h"

#define SLOTS 2000
#define MIN_SIZE 16
#define MAX_SIZE 1024

struct slotset {
    void *obj[SLOTS];
};

struct worker {
    int id;
    long rounds, ops_per_round;
};

static struct slotset *sets;
static int nthreads;
static pthread_barrier_t barrier;

static void *run(void *arg) {
    struct worker *w = (struct worker *)arg;
    rng_t r = rng_seed((uint64_t)w->id + 1);
    uint64_t tag = (uint64_t)w->id << 48;
    for (long round = 0; round < w->rounds; round++) {
        /* Rotate ownership so frees cross threads. */
        struct slotset *s = &sets[(w->id + round) % nthreads];
        for (long i = 0; i < w->ops_per_round; i++) {
            size_t k = rng_range(&r, 0, SLOTS - 1);
            free_obj(s->obj[k], "larson");
            s->obj[k] = new_obj(rng_range(&r, MIN_SIZE, MAX_SIZE), ++tag);
        }
        pthread_barrier_wait(&barrier);
    }
    return NULL;
}

int main(int argc, char **argv) {
    struct bench_args a = parse_args(argc, argv);
    nthreads = a.threads;
    long rounds = scaled(160, a.scale, 2);
    long ops = 100000;
    sets = xmalloc(sizeof(struct slotset) * (size_t)nthreads);
    rng_t r = rng_seed(99);
    /* The main thread allocates the initial population. */
    uint64_t tag = (uint64_t)0xFFFF << 48;
    for (int t = 0; t < nthreads; t++)
        for (int k = 0; k < SLOTS; k++)
            sets[t].obj[k] = new_obj(rng_range(&r, MIN_SIZE, MAX_SIZE), ++tag);

    pthread_barrier_init(&barrier, NULL, (unsigned)nthreads);
    pthread_t *tids = xmalloc(sizeof(pthread_t) * (size_t)nthreads);
    struct worker *ws = xmalloc(sizeof(struct worker) * (size_t)nthreads);
    for (int i = 0; i < nthreads; i++) ws[i] = (struct worker){i, rounds, ops};
    double t0 = now_sec();
    spawn_threads(tids, nthreads, run, ws, sizeof(struct worker));
    join_threads(tids, nthreads);
    double dt = now_sec() - t0;

    for (int t = 0; t < nthreads; t++)
        for (int k = 0; k < SLOTS; k++) free_obj(sets[t].obj[k], "larson");
    long total = rounds * ops * nthreads;
    printf("larson: %d threads, %ld ops, %.0f ops/s\n", nthreads, total, total / dt);
    free(tids);
    free(ws);
    free(sets);
    pthread_barrier_destroy(&barrier);
    return 0;
}
