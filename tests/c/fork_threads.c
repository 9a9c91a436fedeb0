/* fork() while other threads are inside the allocator.
 *
 * HAMMERS threads malloc/free continuously while the main thread forks
 * FORKS times. Each child allocates, writes and frees (including a block
 * the parent allocated before the fork, and in a new thread), then
 * _exit(0)s. A child that deadlocks (say, on an allocator lock held by a
 * thread that does not exist in the child) is killed after CHILD_TIMEOUT
 * seconds and the program fails; alarm() bounds the whole run.
 *
 * Usage: fork_threads [FORKS]
 */
#include "common.h"

#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#define HAMMERS 4
#define CHILD_TIMEOUT 10.0

static volatile int stop;
static unsigned long hammer_ops[HAMMERS];

static void *hammer(void *arg) {
    size_t id = (size_t)arg;
    uint64_t rng = 0xabcdef + id;
    enum { SLOTS = 512 };
    void *slot[SLOTS] = {0};
    unsigned long ops = 0;
    while (!stop) {
        uint64_t r = rng_next(&rng);
        size_t i = r % SLOTS;
        if (slot[i]) {
            free(slot[i]);
            slot[i] = NULL;
        } else {
            size_t n = (r >> 20) % 64 == 0 ? 100000 + (r >> 32) % 400000 : 8 + (r >> 32) % 2000;
            slot[i] = malloc(n);
            CHECK(slot[i] != NULL);
            memset(slot[i], 0x6b, n < 64 ? n : 64);
        }
        ops++;
    }
    for (size_t i = 0; i < SLOTS; i++) free(slot[i]);
    hammer_ops[id] = ops;
    return NULL;
}

static void *child_thread(void *arg) {
    (void)arg;
    for (int i = 0; i < 1000; i++) {
        void *p = malloc(16 + (size_t)i * 13);
        if (!p) _exit(3);
        memset(p, 1, 16);
        free(p);
    }
    return NULL;
}

/* Runs in the child: only async-signal-safe calls besides the allocator
 * and pthread_create, and no stdio (its buffers were copied from the
 * parent). */
static void child_work(unsigned char *inherited, size_t inherited_size, int with_thread) {
    for (size_t i = 0; i < inherited_size; i++)
        if (inherited[i] != 0x33) _exit(4);
    free(inherited);
    void *blocks[300];
    for (int i = 0; i < 300; i++) {
        size_t n = i % 50 == 0 ? 200000 : 8 + (size_t)i * 7;
        blocks[i] = malloc(n);
        if (!blocks[i]) _exit(5);
        memset(blocks[i], i & 0xff, n);
    }
    for (int i = 0; i < 300; i++) free(blocks[i]);
    if (with_thread) {
        pthread_t t;
        if (pthread_create(&t, NULL, child_thread, NULL) != 0) _exit(6);
        if (pthread_join(t, NULL) != 0) _exit(7);
    }
    void *p = calloc(100, 100);
    if (!p) _exit(8);
    p = realloc(p, 50000);
    if (!p) _exit(9);
    free(p);
    _exit(0);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    int forks = 50;
    if (argc > 1) forks = atoi(argv[1]);
    alarm(120); /* backstop: SIGALRM kills the whole program */

    pthread_t threads[HAMMERS];
    for (size_t i = 0; i < HAMMERS; i++)
        CHECK(pthread_create(&threads[i], NULL, hammer, (void *)i) == 0);
    usleep(20000);

    for (int f = 0; f < forks; f++) {
        size_t n = 1000 + (size_t)f * 100;
        unsigned char *inherited = malloc(n);
        CHECK(inherited != NULL);
        memset(inherited, 0x33, n);
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) child_work(inherited, n, f % 2);
        free(inherited);

        double deadline = now() + CHILD_TIMEOUT;
        int status;
        pid_t r;
        while ((r = waitpid(pid, &status, WNOHANG)) == 0) {
            if (now() > deadline) {
                kill(pid, SIGKILL);
                waitpid(pid, &status, 0);
                fprintf(stderr, "child %d of %d hung (killed after %.0f s)\n", f, forks,
                        CHILD_TIMEOUT);
                exit(1);
            }
            usleep(1000);
        }
        CHECK(r == pid);
        CHECKF(WIFEXITED(status) && WEXITSTATUS(status) == 0,
               "child %d: exit status %d, signal %d", f,
               WIFEXITED(status) ? WEXITSTATUS(status) : -1,
               WIFSIGNALED(status) ? WTERMSIG(status) : 0);
        usleep(2000); /* let the hammers get back into the allocator */
    }

    stop = 1;
    unsigned long total = 0;
    for (size_t i = 0; i < HAMMERS; i++) {
        CHECK(pthread_join(threads[i], NULL) == 0);
        total += hammer_ops[i];
    }
    printf("%d forks, %lu allocator operations in other threads meanwhile\n", forks, total);
    CHECK(total > 0);
    printf("fork_threads: ok\n");
    return 0;
}
