/*
 * xmalloc: producer/consumer.
 *
 * Half the threads (at least one) produce batches of objects and push them
 * onto a shared bounded queue; the other half pop the batches, verify and
 * free every object.  All objects are therefore freed by a thread other
 * than the one that allocated them.
 */
#include "common.h"

#define BATCH 64
#define QCAP 256

struct batch {
    void *obj[BATCH];
};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t not_empty, not_full;
    struct batch *items[QCAP];
    int head, count;
} q;

static void push(struct batch *b) {
    pthread_mutex_lock(&q.lock);
    while (q.count == QCAP) pthread_cond_wait(&q.not_full, &q.lock);
    q.items[(q.head + q.count) % QCAP] = b;
    q.count++;
    pthread_cond_signal(&q.not_empty);
    pthread_mutex_unlock(&q.lock);
}

static struct batch *pop(void) {
    pthread_mutex_lock(&q.lock);
    while (q.count == 0) pthread_cond_wait(&q.not_empty, &q.lock);
    struct batch *b = q.items[q.head];
    q.head = (q.head + 1) % QCAP;
    q.count--;
    pthread_cond_signal(&q.not_full);
    pthread_mutex_unlock(&q.lock);
    return b;
}

struct role {
    int id;
    long batches; /* producer: number of batches to make */
    long freed;   /* consumer: number of objects freed */
};

static void *producer(void *arg) {
    struct role *p = (struct role *)arg;
    rng_t r = rng_seed((uint64_t)p->id + 7);
    uint64_t tag = (uint64_t)p->id << 48;
    for (long i = 0; i < p->batches; i++) {
        struct batch *b = xmalloc(sizeof *b);
        for (int k = 0; k < BATCH; k++) b->obj[k] = new_obj(rng_powerlaw(&r, 16, 2048), ++tag);
        push(b);
    }
    return NULL;
}

static void *consumer(void *arg) {
    struct role *c = (struct role *)arg;
    for (;;) {
        struct batch *b = pop();
        if (!b) break; /* end-of-stream marker */
        for (int k = 0; k < BATCH; k++) free_obj(b->obj[k], "xmalloc");
        free(b);
        c->freed += BATCH;
    }
    return NULL;
}

int main(int argc, char **argv) {
    struct bench_args a = parse_args(argc, argv);
    int np = a.threads / 2 > 0 ? a.threads / 2 : 1;
    int nc = a.threads - np > 0 ? a.threads - np : 1;
    long per_producer = scaled(80000, a.scale, 10) / np;
    if (per_producer < 1) per_producer = 1;

    pthread_mutex_init(&q.lock, NULL);
    pthread_cond_init(&q.not_empty, NULL);
    pthread_cond_init(&q.not_full, NULL);
    pthread_t *pt = xmalloc(sizeof(pthread_t) * (size_t)np);
    pthread_t *ct = xmalloc(sizeof(pthread_t) * (size_t)nc);
    struct role *pr = calloc((size_t)np, sizeof *pr), *cr = calloc((size_t)nc, sizeof *cr);
    if (!pr || !cr) die("calloc failed");
    for (int i = 0; i < np; i++) pr[i] = (struct role){i, per_producer, 0};
    for (int i = 0; i < nc; i++) cr[i].id = np + i;

    double t0 = now_sec();
    spawn_threads(ct, nc, consumer, cr, sizeof *cr);
    spawn_threads(pt, np, producer, pr, sizeof *pr);
    join_threads(pt, np);
    for (int i = 0; i < nc; i++) push(NULL);
    join_threads(ct, nc);
    double dt = now_sec() - t0;

    long freed = 0;
    for (int i = 0; i < nc; i++) freed += cr[i].freed;
    long expected = per_producer * np * BATCH;
    if (freed != expected) die("xmalloc: freed %ld objects, expected %ld", freed, expected);
    printf("xmalloc: %d producers, %d consumers, %ld objects, %.0f objs/s\n", np, nc, freed,
           freed / dt);
    free(pt);
    free(ct);
    free(pr);
    free(cr);
    return 0;
}
