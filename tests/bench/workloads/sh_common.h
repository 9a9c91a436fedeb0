/*
 * Shared engine for sh6bench and sh8bench (in the style of the SmartHeap
 * benchmarks).  Each round, a thread allocates a batch of objects whose
 * sizes sweep a range, then frees a batch in one of several orders:
 * forward, reverse, or interleaved (even indices, then odd ones).  One
 * object in eight survives into the next round, which leaves holes and
 * mixes object ages.  With CROSS_THREAD, each thread hands its fresh batch
 * to the next thread and frees the batch it receives from the previous
 * one, so every free is remote.
 */
#include "common.h"

#define BATCH 1000

struct batch {
    struct batch *next;
    void *obj[BATCH];
};

struct mailbox {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct batch *head, *tail;
    char pad[64];
};

struct worker {
    int id;
    long rounds;
};

static struct mailbox *boxes;
static int nthreads;

static inline void send_batch(struct mailbox *m, struct batch *b) {
    b->next = NULL;
    pthread_mutex_lock(&m->lock);
    if (m->tail) m->tail->next = b;
    else m->head = b;
    m->tail = b;
    pthread_cond_signal(&m->cond);
    pthread_mutex_unlock(&m->lock);
}

static inline struct batch *recv_batch(struct mailbox *m) {
    pthread_mutex_lock(&m->lock);
    while (!m->head) pthread_cond_wait(&m->cond, &m->lock);
    struct batch *b = m->head;
    m->head = b->next;
    if (!m->head) m->tail = NULL;
    pthread_mutex_unlock(&m->lock);
    return b;
}

static void free_batch(struct batch *b, long round, void **survivors) {
    int order = (int)(round % 3);
    for (int j = 0; j < BATCH; j++) {
        int i;
        if (order == 0) i = j;
        else if (order == 1) i = BATCH - 1 - j;
        else i = j < BATCH / 2 ? 2 * j : 2 * (j - BATCH / 2) + 1;
        if (i % 8 == 0) {
            /* Keep this one until the next round; free its predecessor. */
            if (survivors[i / 8]) free_obj(survivors[i / 8], "sh-bench");
            survivors[i / 8] = b->obj[i];
        } else {
            free_obj(b->obj[i], "sh-bench");
        }
    }
    free(b);
}

static void *run(void *arg) {
    struct worker *w = (struct worker *)arg;
    void *survivors[BATCH / 8 + 1] = {0};
    uint64_t tag = (uint64_t)w->id << 48;
    const size_t min_size = 16, max_size = 1200;
    for (long round = 0; round < w->rounds; round++) {
        struct batch *b = xmalloc(sizeof *b);
        size_t size = min_size + (size_t)(round * 37) % (max_size - min_size);
        for (int i = 0; i < BATCH; i++) {
            b->obj[i] = new_obj(size, ++tag);
            size += 13;
            if (size > max_size) size = min_size;
        }
#ifdef CROSS_THREAD
        send_batch(&boxes[(w->id + 1) % nthreads], b);
        b = recv_batch(&boxes[w->id]);
#endif
        free_batch(b, round, survivors);
    }
    for (size_t i = 0; i < sizeof survivors / sizeof survivors[0]; i++)
        if (survivors[i]) free_obj(survivors[i], "sh-bench");
    return NULL;
}

static int sh_main(int argc, char **argv, const char *name, long base_rounds) {
    struct bench_args a = parse_args(argc, argv);
    nthreads = a.threads;
    long rounds = scaled(base_rounds, a.scale, 3);
    boxes = calloc((size_t)nthreads, sizeof *boxes);
    if (!boxes) die("calloc failed");
    for (int i = 0; i < nthreads; i++) {
        pthread_mutex_init(&boxes[i].lock, NULL);
        pthread_cond_init(&boxes[i].cond, NULL);
    }
    pthread_t *tids = xmalloc(sizeof(pthread_t) * (size_t)nthreads);
    struct worker *ws = xmalloc(sizeof(struct worker) * (size_t)nthreads);
    for (int i = 0; i < nthreads; i++) ws[i] = (struct worker){i, rounds};
    double t0 = now_sec();
    spawn_threads(tids, nthreads, run, ws, sizeof(struct worker));
    join_threads(tids, nthreads);
    printf("%s: %d threads, %ld objects, %.3f s\n", name, nthreads,
           rounds * BATCH * nthreads, now_sec() - t0);
    free(tids);
    free(ws);
    free(boxes);
    return 0;
}
