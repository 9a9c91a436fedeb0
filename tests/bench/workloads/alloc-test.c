/*
 * alloc-test: a mix of malloc, realloc and free.
 *
 * Each thread keeps an array of slots.  A random step either fills an
 * empty slot with a new object, frees an object, or reallocates it to a
 * new random size (growing or shrinking).  After every realloc the
 * preserved prefix is verified before the object is refilled for its new
 * size.
 */
#include "common.h"

#define SLOTS 4096

struct worker {
    int id;
    long ops;
};

static size_t pick_size(rng_t *r) {
    if ((rng_next(r) & 63) == 0) return rng_range(r, 4096, 128 * 1024);
    return rng_powerlaw(r, OBJ_HDR, 4096);
}

static void *run(void *arg) {
    struct worker *w = (struct worker *)arg;
    rng_t r = rng_seed((uint64_t)w->id + 17);
    void **slot = calloc(SLOTS, sizeof(void *));
    if (!slot) die("calloc failed");
    uint64_t tag = (uint64_t)w->id << 48;
    for (long i = 0; i < w->ops; i++) {
        size_t k = rng_range(&r, 0, SLOTS - 1);
        void *p = slot[k];
        if (!p) {
            slot[k] = new_obj(pick_size(&r), ++tag);
        } else if (rng_next(&r) & 1) {
            free_obj(p, "alloc-test");
            slot[k] = NULL;
        } else {
            uint64_t old_tag;
            size_t old_n, new_n = pick_size(&r);
            obj_header(p, &old_tag, &old_n);
            p = xrealloc(p, new_n);
            if (!check_prefix(p, old_n, old_tag, old_n < new_n ? old_n : new_n))
                die("alloc-test: realloc %zu -> %zu lost data", old_n, new_n);
            fill_obj(p, new_n, ++tag);
            slot[k] = p;
        }
    }
    for (size_t k = 0; k < SLOTS; k++)
        if (slot[k]) free_obj(slot[k], "alloc-test");
    free(slot);
    return NULL;
}

int main(int argc, char **argv) {
    struct bench_args a = parse_args(argc, argv);
    int n = a.threads;
    long ops = scaled(24000000, a.scale, 1000) / n;
    pthread_t *tids = xmalloc(sizeof(pthread_t) * (size_t)n);
    struct worker *ws = xmalloc(sizeof(struct worker) * (size_t)n);
    for (int i = 0; i < n; i++) ws[i] = (struct worker){i, ops};
    double t0 = now_sec();
    spawn_threads(tids, n, run, ws, sizeof(struct worker));
    join_threads(tids, n);
    printf("alloc-test: %d threads, %ld ops, %.3f s\n", n, ops * n, now_sec() - t0);
    free(tids);
    free(ws);
    return 0;
}
