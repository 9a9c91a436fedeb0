/* Threads that exit leaving a few small blocks live, and threads whose TLS
 * destructors allocate: the blocks stay valid, and what they pin must stay
 * proportionate to them, not a slab or segment per thread.
 *
 * Usage: leftovers THREADS MAX_GROWTH_MIB
 * Each thread allocates four 200-byte blocks it keeps, then a mix it frees,
 * and registers a TLS destructor that allocates two more 200-byte blocks
 * after the thread's own cleanup; all are kept until the end, checked and
 * freed. Resident memory may grow by at most MAX_GROWTH_MIB over the run.
 */
#include "common.h"

#include <pthread.h>

#define KEEP 4
#define LATE 2

static pthread_key_t key;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned char **kept;
static size_t nkept;

static void keep_block(unsigned char *p) {
    pthread_mutex_lock(&lock);
    kept[nkept++] = p;
    pthread_mutex_unlock(&lock);
}

static void late_alloc(void *arg) {
    (void)arg;
    for (int i = 0; i < LATE; i++) {
        unsigned char *p = malloc(200);
        CHECK(p != NULL);
        fill_pattern(p, 200, pattern_seed(p, 200));
        keep_block(p);
    }
}

static void *worker(void *arg) {
    (void)arg;
    CHECK(pthread_setspecific(key, (void *)1) == 0);
    /* The kept blocks come first: a new thread's first allocation is where
     * an allocator that adopts an exited thread's segment but carves a new
     * slab anyway pins one more slab per thread. */
    for (int i = 0; i < KEEP; i++) {
        unsigned char *p = malloc(200);
        CHECK(p != NULL);
        fill_pattern(p, 200, pattern_seed(p, 200));
        keep_block(p);
    }
    void *tmp[64];
    for (int i = 0; i < 64; i++) {
        tmp[i] = malloc(16 + (size_t)i * 40);
        CHECK(tmp[i] != NULL);
        memset(tmp[i], i, 16);
    }
    for (int i = 0; i < 64; i++) free(tmp[i]);
    return NULL;
}

int main(int argc, char **argv) {
    CHECK(argc == 3);
    size_t threads = strtoull(argv[1], NULL, 10), max_growth = strtoull(argv[2], NULL, 10);
    kept = calloc(threads * (KEEP + LATE), sizeof *kept);
    CHECK(kept != NULL);
    CHECK(pthread_key_create(&key, late_alloc) == 0);
    /* Warm up: the first threads set up whatever is per-process. */
    size_t before = 0;
    for (size_t t = 0; t < threads; t++) {
        pthread_t th;
        CHECK(pthread_create(&th, NULL, worker, NULL) == 0);
        CHECK(pthread_join(th, NULL) == 0);
        if (t == 9) before = resident_bytes();
    }
    size_t after = resident_bytes();
    for (size_t i = 0; i < nkept; i++) CHECK(check_pattern(kept[i], 200, pattern_seed(kept[i], 200)) == 200);
    size_t growth = after > before ? after - before : 0;
    printf("leftovers: %zu threads left %zu blocks (%zu KiB); resident grew %zu MiB (limit %zu)\n",
           threads, nkept, nkept * 200 / 1024, growth / MIB, max_growth);
    CHECK(nkept == threads * (KEEP + LATE));
    for (size_t i = 0; i < nkept; i++) free(kept[i]);
    CHECKF(growth <= max_growth * MIB, "resident grew by %zu MiB", growth / MIB);
    printf("leftovers: ok\n");
    return 0;
}
