/* One thread allocates, another frees: memory must stay bounded.
 *
 * The producer mallocs OBJECTS objects of 16-512 bytes, stamps them, and
 * passes them through a bounded, mutex-protected ring to the consumer,
 * which checks the stamp and frees them. At most RING objects are in flight,
 * so an allocator that recycles cross-thread frees needs only a few MiB; one
 * that strands them grows by hundreds of MiB.
 *
 * Usage: producer_consumer [OBJECTS [MAX_RSS_MIB]]
 */
#include "common.h"

#include <pthread.h>
#include <sys/resource.h>

#define RING 4096
#define BATCH 256

static void *ring[RING];
static size_t head, tail; /* head - tail = objects in the ring */
static int done;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t not_full = PTHREAD_COND_INITIALIZER;
static pthread_cond_t not_empty = PTHREAD_COND_INITIALIZER;
static size_t objects = 5000000;

/* Written at the start of each object; its last byte is stamped too. */
struct header {
    uint32_t size;
    uint32_t serial;
};

static void *producer(void *arg) {
    (void)arg;
    uint64_t rng = 0xfeedface;
    void *batch[BATCH];
    size_t serial = 0;
    while (serial < objects) {
        size_t n = 0;
        while (n < BATCH && serial < objects) {
            size_t size = 16 + rng_next(&rng) % 497; /* 16..512 */
            struct header *h = malloc(size);
            CHECK(h != NULL);
            h->size = (uint32_t)size;
            h->serial = (uint32_t)serial++;
            ((unsigned char *)h)[size - 1] = (unsigned char)h->serial;
            batch[n++] = h;
        }
        size_t i = 0;
        pthread_mutex_lock(&lock);
        while (i < n) {
            while (head - tail == RING) pthread_cond_wait(&not_full, &lock);
            while (i < n && head - tail < RING) ring[head++ % RING] = batch[i++];
            pthread_cond_signal(&not_empty);
        }
        pthread_mutex_unlock(&lock);
    }
    pthread_mutex_lock(&lock);
    done = 1;
    pthread_cond_signal(&not_empty);
    pthread_mutex_unlock(&lock);
    return NULL;
}

static void *consumer(void *arg) {
    (void)arg;
    static void *batch[RING];
    size_t expected = 0;
    for (;;) {
        size_t n = 0;
        pthread_mutex_lock(&lock);
        while (head == tail && !done) pthread_cond_wait(&not_empty, &lock);
        while (head != tail) batch[n++] = ring[tail++ % RING];
        pthread_cond_signal(&not_full);
        int finished = done && n == 0;
        pthread_mutex_unlock(&lock);
        if (finished) break;
        for (size_t i = 0; i < n; i++) {
            struct header *h = batch[i];
            CHECKF(h->serial == (uint32_t)expected, "object %zu arrived as %u (corrupted?)", expected,
                   h->serial);
            CHECK(((unsigned char *)h)[h->size - 1] == (unsigned char)h->serial);
            expected++;
            free(h);
        }
    }
    CHECK(expected == objects);
    return NULL;
}

int main(int argc, char **argv) {
    size_t max_rss_mib = 256;
    if (argc > 1) objects = strtoull(argv[1], NULL, 10);
    if (argc > 2) max_rss_mib = strtoull(argv[2], NULL, 10);
    pthread_t p, c;
    CHECK(pthread_create(&c, NULL, consumer, NULL) == 0);
    CHECK(pthread_create(&p, NULL, producer, NULL) == 0);
    CHECK(pthread_join(p, NULL) == 0);
    CHECK(pthread_join(c, NULL) == 0);

    struct rusage ru;
    CHECK(getrusage(RUSAGE_SELF, &ru) == 0);
    size_t peak_mib = (size_t)ru.ru_maxrss / 1024; /* ru_maxrss is in KiB */
    printf("objects %zu, peak RSS %zu MiB (limit %zu MiB)\n", objects, peak_mib, max_rss_mib);
    CHECKF(peak_mib < max_rss_mib,
           "peak RSS %zu MiB: memory freed by the consumer thread is not reused", peak_mib);
    printf("producer_consumer: ok\n");
    return 0;
}
