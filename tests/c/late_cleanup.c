/*
 * malloc and free keep working after a thread's allocator state is gone:
 * in pthread-key destructors that run after the allocator's own, in atexit
 * handlers and in ELF destructors. Blocks allocated before the cleanup are
 * freed during it, and blocks allocated during it are freed by other code.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pthread_key_t late_key;
static void *handed_over[64];
static int handed_count;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static void churn(const char *where) {
    void *keep[32];
    for (int round = 0; round < 200; round++) {
        for (int i = 0; i < 32; i++) {
            size_t size = 16 + (size_t)((round * 31 + i * 17) % 3000);
            keep[i] = malloc(size);
            if (!keep[i]) {
                fprintf(stderr, "%s: malloc failed\n", where);
                abort();
            }
            memset(keep[i], i, size);
        }
        for (int i = 0; i < 32; i++) {
            keep[i] = realloc(keep[i], 100 + (size_t)i * 50);
            if (((unsigned char *)keep[i])[0] != (unsigned char)i) {
                fprintf(stderr, "%s: contents lost\n", where);
                abort();
            }
            free(keep[i]);
        }
    }
}

/* Runs after the allocator's key destructor (this key is created later). */
static void late_destructor(void *value) {
    free(value); /* allocated by the thread while it was alive */
    churn("pthread-key destructor");
    pthread_mutex_lock(&lock);
    if (handed_count < 64)
        handed_over[handed_count++] = malloc(777); /* freed by main */
    pthread_mutex_unlock(&lock);
}

static void *worker(void *arg) {
    (void)arg;
    pthread_setspecific(late_key, malloc(4096));
    churn("thread body");
    return NULL;
}

static void at_exit_handler(void) {
    churn("atexit handler");
    puts("late_cleanup: atexit ok");
    fflush(stdout);
}

__attribute__((destructor)) static void elf_destructor(void) {
    churn("ELF destructor");
    /* stderr is unbuffered, so this line is out even this late. */
    fputs("late_cleanup: destructor ok\n", stderr);
}

int main(void) {
    if (pthread_key_create(&late_key, late_destructor) != 0)
        return 1;
    atexit(at_exit_handler);
    for (int round = 0; round < 8; round++) {
        pthread_t t[8];
        for (int i = 0; i < 8; i++)
            pthread_create(&t[i], NULL, worker, NULL);
        for (int i = 0; i < 8; i++)
            pthread_join(t[i], NULL);
        pthread_mutex_lock(&lock);
        for (int i = 0; i < handed_count; i++)
            free(handed_over[i]);
        handed_count = 0;
        pthread_mutex_unlock(&lock);
    }
    puts("late_cleanup: ok");
    return 0;
}
