/* glibc-thread: the glibc-simple loop run in N threads at once. */
#include "glibc_loop.h"

struct worker {
    int id;
    long iterations;
    uint64_t sum;
};

static void *run(void *arg) {
    struct worker *w = (struct worker *)arg;
    w->sum = malloc_loop(w->iterations, (unsigned)w->id);
    return NULL;
}

int main(int argc, char **argv) {
    struct bench_args a = parse_args(argc, argv);
    int n = a.threads;
    long iterations = scaled(500000, a.scale, 10);
    pthread_t *tids = xmalloc(sizeof(pthread_t) * (size_t)n);
    struct worker *ws = xmalloc(sizeof(struct worker) * (size_t)n);
    for (int i = 0; i < n; i++) ws[i] = (struct worker){i, iterations, 0};
    double t0 = now_sec();
    spawn_threads(tids, n, run, ws, sizeof(struct worker));
    join_threads(tids, n);
    double dt = now_sec() - t0;
    for (int i = 0; i < n; i++)
        if (ws[i].sum != expected_sum(iterations)) die("glibc-thread: bad checksum");
    printf("glibc-thread: %d threads, %ld mallocs, %.3f s\n", n, iterations * BATCH * n, dt);
    free(tids);
    free(ws);
    return 0;
}
