/* Shared helpers for the heap-attack programs (tests/c/attack_*.c).
 *
 * Each program performs one classic heap-exploitation technique through the
 * ordinary libc API and reports, on stdout, exactly one verdict line:
 *
 *   ATTACK SUCCEEDED: <what the attacker obtained>   (exit status 0)
 *   ATTACK DEFEATED: <why it did not work>           (exit status 0)
 *
 * An allocator that detects the attack kills the process instead (ApexAlloc:
 * one `apexalloc: fatal: ...` line on stderr and SIGABRT). Programs whose
 * attack is a linear write that a guard page may stop print
 *
 *   about to write <...>
 *   write done
 *
 * around the write, so that a SIGSEGV between the two lines is known to be
 * the attacker's own write faulting, not a crash inside the allocator.
 *
 * Verdicts are decided by observation (addresses compared, fill patterns
 * read back), never by assumption. After a successful attack the heap is
 * corrupted, so the verdict functions leave with _exit and run no
 * destructors that could call into the allocator again.
 */
#ifndef APEX_ATTACK_H
#define APEX_ATTACK_H

#include "common.h"

#include <malloc.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>

#define KIB ((size_t)1024)

/* Prints the verdict line `ATTACK <verdict>: <message>` and exits 0. */
static inline void verdict(const char *word, const char *fmt, va_list ap) {
    printf("ATTACK %s: ", word);
    vprintf(fmt, ap);
    putchar('\n');
    fflush(stdout);
    _exit(0);
}

static inline __attribute__((format(printf, 1, 2), noreturn)) void succeeded(const char *fmt,
                                                                             ...) {
    va_list ap;
    va_start(ap, fmt);
    verdict("SUCCEEDED", fmt, ap);
    va_end(ap);
    _exit(0);
}

static inline __attribute__((format(printf, 1, 2), noreturn)) void defeated(const char *fmt,
                                                                            ...) {
    va_list ap;
    va_start(ap, fmt);
    verdict("DEFEATED", fmt, ap);
    va_end(ap);
    _exit(0);
}

/* A progress line, flushed at once so it survives a crash right after. */
static inline __attribute__((format(printf, 1, 2))) void note(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

/* Runs `fn(arg)` on a new thread and waits for it: a new thread starts with
 * a fresh thread-local heap (or arena) in most allocators, so the attack
 * works on slabs nothing else has touched. Verdicts exit from the thread. */
static inline void on_fresh_thread(void *(*fn)(void *), void *arg) {
    pthread_t t;
    CHECK(pthread_create(&t, NULL, fn, arg) == 0);
    CHECK(pthread_join(t, NULL) == 0);
}

/* Do the byte ranges [a, a+an) and [b, b+bn) overlap? */
static inline int overlaps(const void *a, size_t an, const void *b, size_t bn) {
    uintptr_t x = (uintptr_t)a, y = (uintptr_t)b;
    return x < y + bn && y < x + an;
}

/* Counts the bytes of [p, p+n) equal to `v`. */
static inline size_t count_byte(const volatile unsigned char *p, size_t n, unsigned char v) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++) c += p[i] == v;
    return c;
}

/* Probing memory that may have been unmapped: a fault is caught and
 * reported as a failed probe instead of killing the program. */
static sigjmp_buf probe_jmp;
static volatile sig_atomic_t probing;

static inline void probe_handler(int sig) {
    if (probing) siglongjmp(probe_jmp, 1);
    signal(sig, SIG_DFL);
    raise(sig);
}

/* Writes `v` to `*p`; returns 1 if the write worked, 0 if it faulted. */
static inline int try_write(volatile unsigned char *p, unsigned char v) {
    struct sigaction sa, old_segv, old_bus;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = probe_handler;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &old_segv);
    sigaction(SIGBUS, &sa, &old_bus);
    int ok = 0;
    if (sigsetjmp(probe_jmp, 1) == 0) {
        probing = 1;
        *p = v;
        ok = 1;
    }
    probing = 0;
    sigaction(SIGSEGV, &old_segv, NULL);
    sigaction(SIGBUS, &old_bus, NULL);
    return ok;
}

/* After the attacker's corruption is in place, a crash (SIGSEGV, SIGBUS) or
 * a hang (no progress for `seconds`) inside the allocator is the attack
 * working, not a defence: report it as a success. SIGABRT is left alone,
 * since an allocator aborts on purpose when it detects corruption. */
static const char *crash_message;

static inline void crash_handler(int sig) {
    const char *what = sig == SIGALRM ? "hung" : "crashed";
    const char *head = "ATTACK SUCCEEDED: the allocator ";
    ssize_t r = write(1, head, strlen(head));
    r += write(1, what, strlen(what));
    r += write(1, " ", 1);
    r += write(1, crash_message, strlen(crash_message));
    r += write(1, "\n", 1);
    (void)r;
    _exit(0);
}

static inline void crash_means_success(const char *message, unsigned seconds) {
    crash_message = message;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = crash_handler;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGBUS, &sa, NULL);
    sigaction(SIGALRM, &sa, NULL);
    alarm(seconds);
}

/* One attack variant selected by the program's first argument. */
struct variant {
    const char *name;
    void (*run)(void);
};

/* Runs the variant named by argv[1] (the only one when there is one). */
static inline int run_variant(int argc, char **argv, const struct variant *v, size_t n) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2 && n == 1) {
        v[0].run();
        return 0;
    }
    for (size_t i = 0; argc >= 2 && i < n; i++) {
        if (strcmp(argv[1], v[i].name) == 0) {
            v[i].run();
            fprintf(stderr, "variant %s returned without a verdict\n", v[i].name);
            return 1;
        }
    }
    fprintf(stderr, "usage: %s VARIANT, one of:", argv[0]);
    for (size_t i = 0; i < n; i++) fprintf(stderr, " %s", v[i].name);
    fputc('\n', stderr);
    return 2;
}

#define RUN_VARIANTS(table) \
    int main(int argc, char **argv) { \
        return run_variant(argc, argv, table, sizeof table / sizeof table[0]); \
    }

#endif
