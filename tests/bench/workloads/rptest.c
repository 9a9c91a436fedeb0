/*
 * rptest: random sizes and random lifetimes, both power-law distributed.
 *
 * Each thread runs a timing wheel: at every step it allocates an object
 * whose size follows a power law (many small, few big) and schedules its
 * free a power-law-distributed number of steps later (many short-lived,
 * few long-lived).  Objects that expire are verified and freed; one in
 * eight is instead passed to the next thread's lock-free inbox and freed
 * there, so a share of frees are remote.  An inbox holds at most
 * INBOX_MAX objects (beyond that the owner frees locally), which keeps
 * memory bounded when the peer thread is descheduled.
 */
#include "common.h"

#define WHEEL 8192 /* maximum lifetime in steps */
#define INBOX_MAX 4096

struct node {
    uint64_t tag;
    size_t size;
    struct node *next; /* lies inside the object body, after the header */
};

struct worker {
    int id;
    long steps;
    _Atomic(struct node *) inbox; /* objects other threads ask us to free */
    atomic_long pending;           /* approximate length of inbox */
    long remote_freed;
    char pad[64];
};

static struct worker *ws;
static int nthreads;

/* Verify and free a node; the caller has already read n->next. */
static void free_node(struct node *n) {
    /* The link field overwrote part of the body: restore the fill pattern
     * there before the generic check. */
    memset(&n->next, tag_byte(n->tag), sizeof n->next);
    free_obj(n, "rptest");
}

static long drain_inbox(struct worker *w) {
    long count = 0;
    struct node *n = atomic_exchange(&w->inbox, NULL);
    while (n) {
        struct node *next = n->next;
        free_node(n);
        n = next;
        count++;
    }
    atomic_fetch_sub(&w->pending, count);
    return count;
}

static void *run(void *arg) {
    struct worker *w = (struct worker *)arg;
    struct worker *peer = &ws[(w->id + 1) % nthreads];
    rng_t r = rng_seed((uint64_t)w->id * 31 + 5);
    struct node **wheel = calloc(WHEEL, sizeof(struct node *));
    if (!wheel) die("calloc failed");
    uint64_t tag = (uint64_t)w->id << 48;
    for (long t = 0; t < w->steps + WHEEL; t++) {
        /* Expire everything scheduled for this step. */
        struct node *n = wheel[t % WHEEL];
        wheel[t % WHEEL] = NULL;
        while (n) {
            struct node *next = n->next;
            if ((n->tag & 7) == 0 && nthreads > 1 &&
                atomic_load_explicit(&peer->pending, memory_order_relaxed) < INBOX_MAX) {
                atomic_fetch_add(&peer->pending, 1);
                struct node *head = atomic_load(&peer->inbox);
                do n->next = head;
                while (!atomic_compare_exchange_weak(&peer->inbox, &head, n));
            } else {
                free_node(n);
            }
            n = next;
        }
        if ((t & 255) == 0) w->remote_freed += drain_inbox(w);
        if (t >= w->steps) continue; /* draining phase */
        size_t size = rng_powerlaw(&r, sizeof(struct node), 64 * 1024);
        struct node *o = new_obj(size, ++tag);
        size_t life = rng_powerlaw(&r, 1, WHEEL - 1);
        size_t slot = (size_t)(t + (long)life) % WHEEL;
        o->next = wheel[slot];
        wheel[slot] = o;
    }
    free(wheel);
    return NULL;
}

int main(int argc, char **argv) {
    struct bench_args a = parse_args(argc, argv);
    nthreads = a.threads;
    long steps = scaled(6000000, a.scale, 1000) / nthreads;
    ws = calloc((size_t)nthreads, sizeof *ws);
    if (!ws) die("calloc failed");
    for (int i = 0; i < nthreads; i++) {
        ws[i].id = i;
        ws[i].steps = steps;
        atomic_init(&ws[i].inbox, NULL);
        atomic_init(&ws[i].pending, 0);
    }
    pthread_t *tids = xmalloc(sizeof(pthread_t) * (size_t)nthreads);
    double t0 = now_sec();
    spawn_threads(tids, nthreads, run, ws, sizeof *ws);
    join_threads(tids, nthreads);
    double dt = now_sec() - t0;
    long remote = 0;
    for (int i = 0; i < nthreads; i++) remote += ws[i].remote_freed + drain_inbox(&ws[i]);
    printf("rptest: %d threads, %ld allocations (%ld freed remotely), %.3f s\n", nthreads,
           steps * nthreads, remote, dt);
    free(tids);
    free(ws);
    return 0;
}
