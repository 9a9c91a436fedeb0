/* Checks that what the leak report calls inside malloc and at exit never
 * calls malloc itself on this system: _Unwind_Backtrace and _Unwind_GetIP
 * of libgcc_s (loaded with dlopen, as the library loads them) and dladdr.
 * This program defines the malloc family itself, forwarding to glibc's,
 * and aborts if any of them is called while a check runs. The first
 * backtrace of the process and of a new thread are checked, since lazy
 * set-up would happen there. Run without LD_PRELOAD; prints
 * "unwind: ok <frames> <named>". With the argument "trap", it calls malloc
 * where it is forbidden instead, and must abort (the check of the check). */
#include "common.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
extern void *__libc_memalign(size_t, size_t);

/* Set while a check runs. */
static __thread int forbidden;

static void trap(const char *what) {
    if (forbidden) {
        static const char msg[] = " called inside the unwinder or dladdr\n";
        CHECK(write(2, what, strlen(what)) >= 0);
        CHECK(write(2, msg, sizeof msg - 1) >= 0);
        abort();
    }
}

void *malloc(size_t n) {
    trap("malloc");
    return __libc_malloc(n);
}
void *calloc(size_t a, size_t b) {
    trap("calloc");
    return __libc_calloc(a, b);
}
void *realloc(void *p, size_t n) {
    trap("realloc");
    return __libc_realloc(p, n);
}
void free(void *p) {
    trap("free");
    __libc_free(p);
}
void *memalign(size_t a, size_t n) {
    trap("memalign");
    return __libc_memalign(a, n);
}
void *aligned_alloc(size_t a, size_t n) {
    trap("aligned_alloc");
    return __libc_memalign(a, n);
}
int posix_memalign(void **out, size_t a, size_t n) {
    trap("posix_memalign");
    *out = __libc_memalign(a, n);
    return *out ? 0 : ENOMEM;
}

typedef int (*trace_fn)(void *ctx, void *arg);
static int (*backtrace_fn)(trace_fn, void *);
static uintptr_t (*get_ip)(void *);

struct walk {
    uintptr_t ip[64];
    int n;
};

static int step(void *ctx, void *arg) {
    struct walk *w = arg;
    if (w->n == 64) return 4; /* _URC_NORMAL_STOP */
    w->ip[w->n++] = get_ip(ctx);
    return 0; /* _URC_NO_REASON */
}

__attribute__((noinline)) void deep(int d, struct walk *w) {
    if (d > 0) {
        deep(d - 1, w);
        __asm__ volatile("");
    } else {
        backtrace_fn(step, w);
    }
}

/* One backtrace and its symbols with malloc forbidden; the number of
 * frames named goes to *named. */
static int check(int *named) {
    struct walk w = {.n = 0};
    Dl_info info;
    forbidden = 1;
    deep(6, &w);
    *named = 0;
    for (int i = 0; i < w.n; i++)
        if (dladdr((void *)(w.ip[i] - 1), &info) && info.dli_sname) (*named)++;
    forbidden = 0;
    return w.n;
}

static void *in_thread(void *arg) {
    int named;
    *(int *)arg = check(&named);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "trap") == 0) {
        forbidden = 1;
        void *volatile p = malloc(16);
        (void)p;
        return 0;
    }
    void *lib = dlopen("libgcc_s.so.1", RTLD_NOW);
    CHECK(lib);
    backtrace_fn = (int (*)(trace_fn, void *))dlsym(lib, "_Unwind_Backtrace");
    get_ip = (uintptr_t(*)(void *))dlsym(lib, "_Unwind_GetIP");
    CHECK(backtrace_fn && get_ip);
    int named;
    int frames = check(&named);
    /* deep() seven times, main, and the C library's start. */
    CHECKF(frames >= 9, "%d frames", frames);
    CHECKF(named >= 8, "%d of %d frames named", named, frames);
    pthread_t t;
    int thread_frames = 0;
    CHECK(pthread_create(&t, NULL, in_thread, &thread_frames) == 0);
    CHECK(pthread_join(t, NULL) == 0);
    CHECKF(thread_frames >= 8, "%d frames in a thread", thread_frames);
    printf("unwind: ok %d %d\n", frames, named);
    return 0;
}
