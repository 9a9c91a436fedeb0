/* apex_ctl, apex_thread_stats, apex_global_stats and apex_heap_walk, from C
 * (tests/tests/introspect.rs runs one subtest per process):
 *   names    every name: its size, a read of it, a wrong length
 *   errors   every error path: ENOENT, EINVAL, EPERM, EFAULT (NULL and bad
 *            pointers of every argument), and the allocator still works
 *   values   statistics follow what the program does, exactly; options
 *            written at run time read back; epoch, actions, harden flags
 *   structs  apex_thread_stats and apex_global_stats, also NULL and bad
 *   walk     apex_heap_walk finds every block where it must be; a visitor
 *            that allocates; NULL visitor
 *   threads  four threads allocate and free each other's blocks; exact
 *            totals while they wait at a barrier; per-thread counts
 *   fork     apex_ctl and the walk in a child after fork
 *   atexit   apex_ctl and the walk from an exit handler
 *   json     leaves known blocks live (and one thread) for the JSON report
 *            at exit, and prints what the report must say
 *   decommit after opt.decommit is switched to "free" at run time (and
 *            back), memory returned by malloc_trim is no longer taken
 *            for zero: calloc over it is zeroed (MADV_FREE keeps the old
 *            contents until the kernel needs the pages)
 * Prints "<subtest>: ok" and exits 0 on success. Functions are looked up
 * with dlsym, so the program runs under any preloaded library (the driver
 * only runs it under ApexAlloc). */
#include "common.h"

#include <dlfcn.h>
#include <malloc.h>
#include <pthread.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "../../hosted/apexalloc.h"

typedef int (*ctl_fn)(const char *, void *, size_t *, void *, size_t);
typedef void (*thread_stats_fn)(apex_thread_stats_t *);
typedef void (*global_stats_fn)(apex_global_stats_t *);
typedef void (*walk_fn)(apex_heap_visitor_t, void *);

static ctl_fn ctl;
static thread_stats_fn thread_stats;
static global_stats_fn global_stats;
static walk_fn heap_walk;

static void lookup(void) {
    ctl = (ctl_fn)dlsym(RTLD_DEFAULT, "apex_ctl");
    thread_stats = (thread_stats_fn)dlsym(RTLD_DEFAULT, "apex_thread_stats");
    global_stats = (global_stats_fn)dlsym(RTLD_DEFAULT, "apex_global_stats");
    heap_walk = (walk_fn)dlsym(RTLD_DEFAULT, "apex_heap_walk");
    CHECK(ctl && thread_stats && global_stats && heap_walk);
}

static size_t get_size(const char *name) {
    size_t v = 0, len = sizeof v;
    int r = ctl(name, &v, &len, NULL, 0);
    CHECKF(r == 0, "%s: %d", name, r);
    return v;
}

static uint64_t get_u64(const char *name) {
    uint64_t v = 0;
    size_t len = sizeof v;
    int r = ctl(name, &v, &len, NULL, 0);
    CHECKF(r == 0, "%s: %d", name, r);
    return v;
}

static const char *get_str(const char *name) {
    const char *v = NULL;
    size_t len = sizeof v;
    int r = ctl(name, &v, &len, NULL, 0);
    CHECKF(r == 0 && v != NULL, "%s: %d", name, r);
    return v;
}

/* The size class serving `size` bytes: the smallest class at least that
 * big. */
static size_t class_for(size_t size) {
    size_t n = get_size("stats.size_classes.count");
    char name[96];
    for (size_t c = 0; c < n; c++) {
        snprintf(name, sizeof name, "stats.size_classes.%zu.size", c);
        if (get_size(name) >= size) return c;
    }
    CHECK(!"no class");
    return 0;
}

/* The class serving a request of `size` bytes: with canaries, each block
 * has 8 more bytes at its end. */
static size_t request_class(size_t size) {
    unsigned flags = 0;
    size_t len = sizeof flags;
    CHECK(ctl("harden.flags", &flags, &len, NULL, 0) == 0);
    return class_for(size + (flags & APEX_HARDEN_CANARY ? 8 : 0));
}

static size_t class_field(size_t c, const char *field) {
    char name[96];
    snprintf(name, sizeof name, "stats.size_classes.%zu.%s", c, field);
    return get_size(name);
}

/* ---------------------------------------------------------------- names */

struct name {
    const char *name;
    size_t size; /* 0: an action */
    bool writable;
};

static const struct name NAMES[] = {
    {"version", sizeof(char *), false},
    {"epoch", 8, true},
    {"opt.show_stats", sizeof(char *), true},
    {"opt.stats_file", sizeof(char *), false},
    {"opt.verbose", sizeof(char *), false},
    {"opt.harden", sizeof(char *), false},
    {"opt.purge_delay_ms", 8, true},
    {"opt.decommit", sizeof(char *), true},
    {"opt.thp", sizeof(bool), true},
    {"opt.segment_cache", sizeof(size_t), true},
    {"opt.huge_cache_mb", sizeof(size_t), true},
    {"opt.background_purge_ms", 8, false},
    {"opt.strategy", sizeof(char *), false},
    {"opt.mmap_threshold", sizeof(size_t), false},
    {"stats.allocated", sizeof(size_t), false},
    {"stats.active", sizeof(size_t), false},
    {"stats.resident", sizeof(size_t), false},
    {"stats.mapped", sizeof(size_t), false},
    {"stats.retained", sizeof(size_t), false},
    {"stats.segments", sizeof(size_t), false},
    {"stats.huge_blocks", sizeof(size_t), false},
    {"stats.slabs", sizeof(size_t), false},
    {"stats.large_blocks", sizeof(size_t), false},
    {"stats.blocks_active", sizeof(size_t), false},
    {"stats.heaps", sizeof(size_t), false},
    {"stats.abandoned_segments", sizeof(size_t), false},
    {"stats.peak_active", sizeof(size_t), false},
    {"stats.mallocs", sizeof(size_t), false},
    {"stats.frees", sizeof(size_t), false},
    {"stats.remote_frees", sizeof(size_t), false},
    {"stats.bytes_allocated", sizeof(size_t), false},
    {"stats.bytes_freed", sizeof(size_t), false},
    {"stats.foreign_frees", sizeof(size_t), false},
    {"stats.size_classes.count", sizeof(size_t), false},
    {"thread.allocated", 8, false},
    {"thread.deallocated", 8, false},
    {"thread.mallocs", 8, false},
    {"thread.frees", 8, false},
    {"thread.remote_frees", 8, false},
    {"thread.reset", 0, false},
    {"arena.purge", 0, false},
    {"harden.flags", sizeof(unsigned), false},
    {"harden.preset", sizeof(char *), false},
};

static const char *CLASS_FIELDS[] = {"size", "allocated", "active_blocks", "slabs"};

/* One name: its size, a read with the right length, a read with a wrong
 * one, and a write where it is not allowed. */
static void check_name(const char *name, size_t size, bool writable) {
    char buf[16];
    size_t len = 12345;
    CHECKF(ctl(name, NULL, &len, NULL, 0) == 0 && len == size, "%s: size %zu", name, len);
    if (size == 0) {
        /* An action: runs with no value, refuses one. */
        CHECKF(ctl(name, NULL, NULL, NULL, 0) == 0, "%s: run", name);
        len = sizeof buf;
        CHECKF(ctl(name, buf, &len, NULL, 0) == EPERM, "%s: read", name);
        CHECKF(ctl(name, NULL, NULL, buf, 8) == EPERM, "%s: write", name);
        return;
    }
    memset(buf, 0xa5, sizeof buf);
    len = size;
    CHECKF(ctl(name, buf, &len, NULL, 0) == 0 && len == size, "%s: read", name);
    /* Nothing beyond the value's size is written. */
    for (size_t i = size; i < sizeof buf; i++) CHECKF((unsigned char)buf[i] == 0xa5, "%s", name);
    len = size + 1;
    CHECKF(ctl(name, buf, &len, NULL, 0) == EINVAL, "%s: long", name);
    len = size - 1;
    CHECKF(ctl(name, buf, &len, NULL, 0) == EINVAL, "%s: short", name);
    len = 0;
    CHECKF(ctl(name, buf, &len, NULL, 0) == EINVAL, "%s: zero", name);
    if (!writable) {
        /* The value read back, written: refused. */
        len = size;
        CHECKF(ctl(name, buf, &len, NULL, 0) == 0, "%s", name);
        CHECKF(ctl(name, NULL, NULL, buf, size) == EPERM, "%s: write", name);
    }
}

static void test_names(void) {
    for (size_t i = 0; i < sizeof NAMES / sizeof NAMES[0]; i++)
        check_name(NAMES[i].name, NAMES[i].size, NAMES[i].writable);
    size_t n = get_size("stats.size_classes.count");
    CHECK(n > 50 && n < 1000);
    char name[96];
    size_t last = 0;
    for (size_t c = 0; c < n; c++) {
        for (size_t f = 0; f < 4; f++) {
            snprintf(name, sizeof name, "stats.size_classes.%zu.%s", c, CLASS_FIELDS[f]);
            check_name(name, sizeof(size_t), false);
        }
        size_t s = class_field(c, "size");
        CHECKF(s > last && s % 16 == 0, "class %zu size %zu", c, s);
        last = s;
    }
    /* One past the last class, and a field that does not exist. */
    snprintf(name, sizeof name, "stats.size_classes.%zu.size", n);
    size_t v, len = sizeof v;
    CHECK(ctl(name, &v, &len, NULL, 0) == ENOENT);
    CHECK(ctl("stats.size_classes.0.bogus", &v, &len, NULL, 0) == ENOENT);
    printf("names: ok\n");
}

/* --------------------------------------------------------------- errors */

static void test_errors(void) {
    size_t v = 0, len = sizeof v;
    /* Unknown names. */
    const char *unknown[] = {"",
                             "stats",
                             "stats.",
                             "stats.allocated.x",
                             "Stats.allocated",
                             "opt.APEX_THP",
                             "opt.apex_thp",
                             "opt.lib",
                             "opt.test_handoff_fd",
                             "stats.size_classes",
                             "stats.size_classes.",
                             "stats.size_classes.01.size",
                             "stats.size_classes.-1.size",
                             "stats.size_classes.+1.size",
                             "stats.size_classes.1",
                             "stats.size_classes.99999999999999999999999.size",
                             "thread",
                             "thread.",
                             "arena.purge.now"};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        len = sizeof v;
        CHECKF(ctl(unknown[i], &v, &len, NULL, 0) == ENOENT, "'%s'", unknown[i]);
        len = 0;
        CHECKF(ctl(unknown[i], NULL, &len, NULL, 0) == ENOENT, "'%s'", unknown[i]);
    }
    /* A name longer than any (and than the library's buffer). */
    char longname[400];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    CHECK(ctl(longname, &v, &len, NULL, 0) == ENOENT);

    /* EINVAL: NULL name, oldp without oldlenp, newlen without newp, a
     * new value of the wrong length, a value out of range. */
    CHECK(ctl(NULL, &v, &len, NULL, 0) == EINVAL);
    CHECK(ctl("stats.allocated", &v, NULL, NULL, 0) == EINVAL);
    CHECK(ctl("opt.purge_delay_ms", NULL, NULL, NULL, 8) == EINVAL);
    uint64_t delay = 77;
    CHECK(ctl("opt.purge_delay_ms", NULL, NULL, &delay, 4) == EINVAL);
    CHECK(ctl("opt.purge_delay_ms", NULL, NULL, &delay, 16) == EINVAL);
    const char *word = "bogus";
    CHECK(ctl("opt.decommit", NULL, NULL, &word, sizeof word) == EINVAL);
    word = "2";
    CHECK(ctl("opt.show_stats", NULL, NULL, &word, sizeof word) == EINVAL);
    char huge_word[200];
    memset(huge_word, 'f', sizeof huge_word - 1);
    huge_word[sizeof huge_word - 1] = 0;
    word = huge_word;
    CHECK(ctl("opt.decommit", NULL, NULL, &word, sizeof word) == EINVAL);
    /* Nothing changed by the refused writes. */
    CHECK(strcmp(get_str("opt.decommit"), "dontneed") == 0);
    CHECK(strcmp(get_str("opt.show_stats"), "0") == 0);
    CHECK(get_u64("opt.purge_delay_ms") == 100);

    /* EPERM: read-only values, actions given values. */
    size_t one = 1;
    CHECK(ctl("stats.allocated", NULL, NULL, &one, sizeof one) == EPERM);
    CHECK(ctl("stats.allocated", NULL, NULL, &one, 3) == EPERM);
    CHECK(ctl("opt.mmap_threshold", NULL, NULL, &one, sizeof one) == EPERM);
    word = "first-fit";
    CHECK(ctl("opt.strategy", NULL, NULL, &word, sizeof word) == EPERM);
    CHECK(ctl("version", NULL, NULL, &word, sizeof word) == EPERM);
    len = sizeof v;
    CHECK(ctl("arena.purge", &v, &len, NULL, 0) == EPERM);
    CHECK(ctl("thread.reset", NULL, NULL, &one, sizeof one) == EPERM);

    /* EFAULT: bad pointers in every argument, never a crash. */
    long page = sysconf(_SC_PAGESIZE);
    char *none = mmap(NULL, page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *ro = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(none != MAP_FAILED && ro != MAP_FAILED);
    strcpy(ro, "stats.allocated");
    *(size_t *)(ro + 64) = sizeof(size_t);
    CHECK(mprotect(ro, page, PROT_READ) == 0);
    void *bad[] = {(void *)8, (void *)-4096L, none};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        len = sizeof v;
        CHECKF(ctl(bad[i], &v, &len, NULL, 0) == EFAULT, "name %p", bad[i]);
        CHECKF(ctl("stats.allocated", bad[i], &len, NULL, 0) == EFAULT, "oldp %p", bad[i]);
        CHECKF(ctl("stats.allocated", &v, bad[i], NULL, 0) == EFAULT, "oldlenp %p", bad[i]);
        CHECKF(ctl("stats.allocated", NULL, bad[i], NULL, 0) == EFAULT, "oldlenp %p", bad[i]);
        CHECKF(ctl("opt.purge_delay_ms", NULL, NULL, bad[i], 8) == EFAULT, "newp %p", bad[i]);
        word = bad[i];
        CHECKF(ctl("opt.decommit", NULL, NULL, &word, sizeof word) == EFAULT, "string %p",
               bad[i]);
    }
    /* Read-only memory: readable names and lengths are fine; the value
     * cannot be stored there. */
    CHECK(ctl(ro, &v, &len, NULL, 0) == 0);
    CHECK(ctl("stats.allocated", ro + 128, &len, NULL, 0) == EFAULT);
    CHECK(ctl("stats.allocated", &v, (size_t *)(ro + 64), NULL, 0) == 0);
    CHECK(ctl("stats.allocated", NULL, (size_t *)(ro + 64), NULL, 0) == EFAULT);
    /* A name running into an inaccessible page. */
    char *edge = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(edge != MAP_FAILED);
    memset(edge, 'x', 2 * page);
    CHECK(mprotect(edge + page, page, PROT_NONE) == 0);
    CHECK(ctl(edge + page - 5, &v, &len, NULL, 0) == EFAULT);
    /* A name that ends just before it is read whole. */
    strcpy(edge + page - 8, "epoch");
    uint64_t e;
    len = sizeof e;
    CHECK(ctl(edge + page - 8, &e, &len, NULL, 0) == 0 && e >= 1);

    /* Everything still works. */
    for (int i = 0; i < 1000; i++) {
        void *p = malloc(opaque(100));
        CHECK(p != NULL);
        free(p);
    }
    CHECK(get_size("stats.segments") >= 1);
    printf("errors: ok\n");
}

/* --------------------------------------------------------------- values */

enum { N = 5000 };
static void *blocks[N];

static void test_values(void) {
    size_t c = request_class(100);
    size_t size = class_field(c, "size");
    size_t alloc0 = get_size("stats.allocated");
    size_t blocks0 = class_field(c, "active_blocks");
    size_t live0 = get_size("stats.blocks_active");
    uint64_t t_alloc0 = get_u64("thread.allocated"), t_free0 = get_u64("thread.deallocated");
    uint64_t t_m0 = get_u64("thread.mallocs"), t_f0 = get_u64("thread.frees");
    for (int i = 0; i < N; i++) CHECK((blocks[i] = malloc(opaque(100))) != NULL);
    CHECK(get_size("stats.allocated") - alloc0 == N * size);
    CHECK(class_field(c, "active_blocks") - blocks0 == N);
    CHECK(class_field(c, "allocated") == class_field(c, "active_blocks") * size);
    CHECK(class_field(c, "slabs") >= 1);
    CHECK(get_size("stats.blocks_active") - live0 == N);
    uint64_t t_alloc1 = get_u64("thread.allocated"), t_free1 = get_u64("thread.deallocated");
    uint64_t t_m1 = get_u64("thread.mallocs"), t_f1 = get_u64("thread.frees");
    CHECK((t_alloc1 - t_free1) - (t_alloc0 - t_free0) == N * size);
    CHECK((t_m1 - t_f1) - (t_m0 - t_f0) == N);
    /* A huge block: one more huge block, its pages in active. */
    size_t huge0 = get_size("stats.huge_blocks"), active0 = get_size("stats.active");
    char *h = malloc(opaque(40 * MIB));
    CHECK(h != NULL);
    memset(h, 1, 40 * MIB);
    CHECK(get_size("stats.huge_blocks") == huge0 + 1);
    CHECK(get_size("stats.active") >= active0 + 40 * MIB);
    CHECK(get_size("stats.allocated") >= alloc0 + N * size + 40 * MIB);
    CHECK(get_size("stats.mapped") >= get_size("stats.active"));
    CHECK(get_size("stats.peak_active") >= get_size("stats.active"));
    free(h);
    CHECK(get_size("stats.huge_blocks") == huge0);
    for (int i = 0; i < N; i++) free(blocks[i]);
    CHECK(get_size("stats.allocated") == alloc0);
    CHECK(class_field(c, "active_blocks") == blocks0);
    CHECK(get_size("stats.blocks_active") == live0);

    /* Options written at run time read back. */
    uint64_t delay = 55;
    CHECK(ctl("opt.purge_delay_ms", NULL, NULL, &delay, sizeof delay) == 0);
    CHECK(get_u64("opt.purge_delay_ms") == 55);
    /* Old value out, new value in, in one call. */
    uint64_t old = 0, delay2 = 100;
    size_t len = sizeof old;
    CHECK(ctl("opt.purge_delay_ms", &old, &len, &delay2, sizeof delay2) == 0 && old == 55);
    CHECK(get_u64("opt.purge_delay_ms") == 100);
    const char *word = "free";
    CHECK(ctl("opt.decommit", NULL, NULL, &word, sizeof word) == 0);
    CHECK(strcmp(get_str("opt.decommit"), "free") == 0);
    word = "dontneed";
    CHECK(ctl("opt.decommit", NULL, NULL, &word, sizeof word) == 0);
    CHECK(strcmp(get_str("opt.decommit"), "dontneed") == 0);
    bool thp = true, got = false;
    CHECK(ctl("opt.thp", NULL, NULL, &thp, sizeof thp) == 0);
    len = sizeof got;
    CHECK(ctl("opt.thp", &got, &len, NULL, 0) == 0 && got);
    thp = false;
    CHECK(ctl("opt.thp", NULL, NULL, &thp, sizeof thp) == 0);
    size_t slots = 3;
    CHECK(ctl("opt.segment_cache", NULL, NULL, &slots, sizeof slots) == 0);
    CHECK(get_size("opt.segment_cache") == 3);
    size_t mb = 64;
    CHECK(ctl("opt.huge_cache_mb", NULL, NULL, &mb, sizeof mb) == 0);
    CHECK(get_size("opt.huge_cache_mb") == 64);
    word = "json";
    CHECK(ctl("opt.show_stats", NULL, NULL, &word, sizeof word) == 0);
    CHECK(strcmp(get_str("opt.show_stats"), "json") == 0);
    word = "0";
    CHECK(ctl("opt.show_stats", NULL, NULL, &word, sizeof word) == 0);
    CHECK(strcmp(get_str("opt.show_stats"), "0") == 0);

    /* Fixed options show the environment the driver set. */
    CHECK(strcmp(get_str("opt.stats_file"), "stderr") == 0);
    CHECK(strcmp(get_str("opt.strategy"), "apex") == 0);
    CHECK(strcmp(get_str("opt.verbose"), "0") == 0);
    CHECK(get_u64("opt.background_purge_ms") == 0);
    CHECK(get_size("opt.mmap_threshold") == 131072);
    const char *harden = get_str("opt.harden");
    const char *env = getenv("APEX_HARDEN");
    if (env == NULL || strcmp(env, "default") == 0) {
        CHECK(strncmp(harden, "default:", 8) == 0);
        CHECK(strcmp(get_str("harden.preset"), "default") == 0);
        unsigned flags = 0;
        len = sizeof flags;
        CHECK(ctl("harden.flags", &flags, &len, NULL, 0) == 0);
        CHECK(flags == (APEX_HARDEN_LINKS | APEX_HARDEN_BITMAP | APEX_HARDEN_FOREIGN |
                        APEX_HARDEN_GUARDS | APEX_HARDEN_SHUFFLE));
    } else if (strcmp(env, "full") == 0) {
        CHECK(strcmp(get_str("harden.preset"), "full") == 0);
        unsigned flags = 0;
        len = sizeof flags;
        CHECK(ctl("harden.flags", &flags, &len, NULL, 0) == 0 && flags == 0x7ff);
    }

    /* version is the crate's; epoch advances on a write and is read back
     * advanced in the same call. */
    const char *version = get_str("version");
    CHECK(strchr(version, '.') != NULL);
    uint64_t e0 = get_u64("epoch"), e1 = 0, any = 0;
    len = sizeof e1;
    CHECK(ctl("epoch", &e1, &len, &any, sizeof any) == 0 && e1 == e0 + 1);
    CHECK(get_u64("epoch") == e0 + 1);

    /* arena.purge returns free memory: after freeing a big burst, resident
     * and retained fall (the burst's segments and cache go). */
    enum { BURST = 20000 };
    static void *burst[BURST];
    for (int i = 0; i < BURST; i++) {
        burst[i] = malloc(opaque(2000));
        memset(burst[i], 3, 2000);
    }
    for (int i = 0; i < BURST; i++) free(burst[i]);
    size_t res0 = get_size("stats.resident");
    CHECK(ctl("arena.purge", NULL, NULL, NULL, 0) == 0);
    size_t res1 = get_size("stats.resident");
    CHECKF(res1 < res0, "resident %zu -> %zu", res0, res1);
    CHECK(get_size("stats.retained") == 0);
    CHECK(ctl("thread.reset", NULL, NULL, NULL, 0) == 0);
    printf("values: ok\n");
}

/* -------------------------------------------------------------- structs */

static void test_structs(void) {
    size_t c = request_class(100);
    size_t size = class_field(c, "size");
    apex_thread_stats_t t0, t1;
    apex_global_stats_t g0, g1;
    memset(&t0, 0xff, sizeof t0);
    thread_stats(&t0);
    global_stats(&g0);
    for (int i = 0; i < N; i++) CHECK((blocks[i] = malloc(opaque(100))) != NULL);
    thread_stats(&t1);
    global_stats(&g1);
    CHECK((t1.malloc_count - t1.free_count) - (t0.malloc_count - t0.free_count) == N);
    CHECK((t1.bytes_allocated - t1.bytes_freed) - (t0.bytes_allocated - t0.bytes_freed) ==
          N * size);
    CHECK(t1.cache_hits <= t1.malloc_count);
    CHECK(t1.cache_misses > t0.cache_misses);
    CHECK(t1.remote_frees == t0.remote_frees);
    CHECK(g1.blocks_active - g0.blocks_active == N);
    CHECK(g1.superblocks_active >= 1 && g1.superblocks_allocated >= g1.superblocks_active);
    CHECK(g1.blocks_allocated >= g1.blocks_active);
    CHECK(g1.total_allocated_bytes - g1.total_freed_bytes ==
          (uint64_t)get_size("stats.allocated"));
    CHECK(g1.peak_allocated_bytes >= get_size("stats.active"));
    CHECK(g1.fragmentation_percent <= 100);
    /* The global figures agree with apex_ctl's. */
    CHECK(g1.blocks_active == get_size("stats.blocks_active"));
    CHECK(g1.superblocks_active == get_size("stats.segments") + get_size("stats.huge_blocks"));
    for (int i = 0; i < N; i++) free(blocks[i]);
    apex_global_stats_t g2;
    global_stats(&g2);
    CHECK(g2.blocks_active == g0.blocks_active);
    /* NULL and bad pointers: nothing written, no crash. */
    thread_stats(NULL);
    global_stats(NULL);
    thread_stats((apex_thread_stats_t *)8);
    global_stats((apex_global_stats_t *)8);
    long page = sysconf(_SC_PAGESIZE);
    char *ro = mmap(NULL, page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(ro != MAP_FAILED);
    global_stats((apex_global_stats_t *)ro);
    thread_stats((apex_thread_stats_t *)ro);
    for (long i = 0; i < page; i++) CHECK(ro[i] == 0);
    printf("structs: ok\n");
}

/* ----------------------------------------------------------------- walk */

struct span {
    uintptr_t addr;
    size_t size, cls, used, total;
};

struct walk {
    struct span *spans;
    size_t n, cap;
    size_t segments, bytes_in_segments;
    bool allocate; /* allocate and free inside the visitor */
};

static void visit(void *addr, size_t size, size_t cls, size_t used, size_t total, void *ud) {
    struct walk *w = ud;
    if (w->allocate) {
        /* Visitors run without locks: allocating (even a huge block) is
         * fine. */
        void *p = malloc(opaque(cls == APEX_WALK_SEGMENT ? 40 * MIB : 64));
        CHECK(p != NULL);
        free(p);
    }
    if (cls == APEX_WALK_SEGMENT) {
        w->segments++;
        w->bytes_in_segments += size;
        CHECK(used <= size && total == size);
        return;
    }
    if (w->n == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 1024;
        w->spans = realloc(w->spans, w->cap * sizeof *w->spans);
        CHECK(w->spans != NULL);
    }
    w->spans[w->n++] = (struct span){(uintptr_t)addr, size, cls, used, total};
}

/* The span holding `p`. */
static struct span *find(struct walk *w, const void *p) {
    uintptr_t a = (uintptr_t)p;
    for (size_t i = 0; i < w->n; i++)
        if (a >= w->spans[i].addr && a < w->spans[i].addr + w->spans[i].size) return &w->spans[i];
    return NULL;
}

static void test_walk(void) {
    size_t c = request_class(100);
    size_t size = class_field(c, "size");
    for (int i = 0; i < N; i++) CHECK((blocks[i] = malloc(opaque(100))) != NULL);
    char *large = malloc(opaque(MIB));
    char *huge = malloc(opaque(40 * MIB));
    CHECK(large && huge);
    struct walk w = {0};
    heap_walk(visit, &w);
    CHECK(w.segments == get_size("stats.segments") + get_size("stats.huge_blocks"));
    size_t used_in_class = 0, slabs = 0;
    for (size_t i = 0; i < w.n; i++) {
        struct span *s = &w.spans[i];
        CHECK(s->used <= s->total);
        if (s->cls == c) {
            used_in_class += s->used;
            slabs++;
            CHECK(s->total == s->size / size);
        }
        if (s->cls == APEX_WALK_FREE) CHECK(s->used == 0 && s->total == 0);
    }
    /* One thread, nothing freed remotely: the slabs' counts are exact. */
    CHECK(used_in_class == class_field(c, "active_blocks"));
    CHECK(slabs == class_field(c, "slabs"));
    for (int i = 0; i < N; i++) {
        struct span *s = find(&w, blocks[i]);
        CHECKF(s && s->cls == c, "block %d", i);
        CHECK(((uintptr_t)blocks[i] - s->addr) % size == 0);
    }
    struct span *s = find(&w, large);
    CHECK(s && s->cls == APEX_WALK_LARGE && s->addr == (uintptr_t)large && s->used == 1);
    CHECK(s->size >= MIB);
    s = find(&w, huge);
    CHECK(s && s->cls == APEX_WALK_HUGE && s->addr == (uintptr_t)huge && s->used == 1);
    CHECK(s->size >= 40 * MIB);
    free(w.spans);

    /* A visitor that allocates and frees (small and huge blocks). */
    struct walk w2 = {.allocate = true};
    heap_walk(visit, &w2);
    CHECK(w2.n > 0 && w2.segments >= 2);
    free(w2.spans);
    heap_walk(NULL, NULL);

    free(large);
    free(huge);
    for (int i = 0; i < N; i++) free(blocks[i]);
    printf("walk: ok\n");
}

/* -------------------------------------------------------------- threads */

enum { THREADS = 4, PER_THREAD = 3000 };
static pthread_barrier_t barrier;
static void *owned[THREADS][PER_THREAD];
static uint64_t thread_net[THREADS];

static void *worker(void *arg) {
    int t = (int)(intptr_t)arg;
    pthread_barrier_wait(&barrier); /* 0: main notes the totals */
    pthread_barrier_wait(&barrier); /* 0' */
    uint64_t a0 = get_u64("thread.allocated"), d0 = get_u64("thread.deallocated");
    for (int i = 0; i < PER_THREAD; i++) CHECK((owned[t][i] = malloc(opaque(100 + t * 300))) != NULL);
    uint64_t a1 = get_u64("thread.allocated"), d1 = get_u64("thread.deallocated");
    thread_net[t] = (a1 - d1) - (a0 - d0);
    pthread_barrier_wait(&barrier); /* 1: main checks the totals */
    pthread_barrier_wait(&barrier); /* 2 */
    /* Free the next thread's blocks: remote frees. */
    uint64_t r0 = get_u64("thread.remote_frees");
    int next = (t + 1) % THREADS;
    for (int i = 0; i < PER_THREAD; i++) free(owned[next][i]);
    CHECK(get_u64("thread.remote_frees") - r0 == PER_THREAD);
    pthread_barrier_wait(&barrier); /* 3: main checks again */
    pthread_barrier_wait(&barrier); /* 4 */
    return NULL;
}

static void test_threads(void) {
    free(malloc(opaque(16))); /* this thread's heap exists */
    size_t heaps0 = get_size("stats.heaps");
    pthread_t th[THREADS];
    CHECK(pthread_barrier_init(&barrier, NULL, THREADS + 1) == 0);
    for (int t = 0; t < THREADS; t++)
        CHECK(pthread_create(&th[t], NULL, worker, (void *)(intptr_t)t) == 0);
    /* Once the threads exist (creating them allocates their TLS). */
    pthread_barrier_wait(&barrier); /* 0 */
    size_t alloc0 = get_size("stats.allocated");
    size_t remote0 = get_size("stats.remote_frees");
    pthread_barrier_wait(&barrier); /* 0' */
    pthread_barrier_wait(&barrier); /* 1 */
    size_t expect = 0;
    for (int t = 0; t < THREADS; t++) {
        size_t sz = class_field(request_class(100 + t * 300), "size");
        CHECK(thread_net[t] == PER_THREAD * sz);
        expect += PER_THREAD * sz;
    }
    /* The threads wait at the barrier: the totals are exact. */
    CHECK(get_size("stats.allocated") - alloc0 == expect);
    CHECK(get_size("stats.heaps") == heaps0 + THREADS);
    for (int t = 0; t < THREADS; t++) {
        size_t c = request_class(100 + t * 300);
        CHECK(class_field(c, "active_blocks") >= PER_THREAD);
    }
    pthread_barrier_wait(&barrier); /* 2 */
    pthread_barrier_wait(&barrier); /* 3 */
    CHECK(get_size("stats.allocated") == alloc0);
    CHECK(get_size("stats.remote_frees") - remote0 == THREADS * PER_THREAD);
    pthread_barrier_wait(&barrier); /* 4 */
    for (int t = 0; t < THREADS; t++) pthread_join(th[t], NULL);
    /* Joined: their heaps are gone (and their TLS freed). */
    CHECK(get_size("stats.heaps") == heaps0);
    printf("threads: ok\n");
}

/* ----------------------------------------------------------------- fork */

static void test_fork(void) {
    for (int i = 0; i < N; i++) CHECK((blocks[i] = malloc(opaque(100))) != NULL);
    size_t parent_alloc = get_size("stats.allocated");
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        /* The child inherits the heap and its figures. */
        CHECK(get_size("stats.allocated") == parent_alloc);
        for (int i = 0; i < N; i++) free(blocks[i]);
        CHECK(get_size("stats.allocated") == parent_alloc - N * class_field(request_class(100), "size"));
        struct walk w = {0};
        heap_walk(visit, &w);
        CHECK(w.segments >= 1);
        apex_thread_stats_t t;
        thread_stats(&t);
        CHECK(t.malloc_count >= t.free_count);
        CHECK(ctl("arena.purge", NULL, NULL, NULL, 0) == 0);
        _exit(0);
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(get_size("stats.allocated") == parent_alloc);
    for (int i = 0; i < N; i++) free(blocks[i]);
    printf("fork: ok\n");
}

/* --------------------------------------------------------------- atexit */

static void at_exit(void) {
    size_t c = request_class(100);
    CHECK(class_field(c, "active_blocks") >= 1000);
    struct walk w = {0};
    heap_walk(visit, &w);
    CHECK(w.segments >= 1 && w.n >= 1);
    CHECK(ctl("arena.purge", NULL, NULL, NULL, 0) == 0);
    printf("atexit: ok\n");
    fflush(stdout);
}

static void test_atexit(void) {
    for (int i = 0; i < 1000; i++) CHECK((blocks[i] = malloc(opaque(100))) != NULL);
    CHECK(atexit(at_exit) == 0);
}

/* ----------------------------------------------------------------- json */

static int hold_pipe[2];

static void *holder(void *arg) {
    (void)arg;
    /* Allocates, says so, and waits until the process exits. */
    for (int i = 0; i < 500; i++) CHECK(malloc(opaque(700)) != NULL);
    printf("json: live thread %ld\n", (long)syscall(SYS_gettid));
    fflush(stdout);
    CHECK(write(hold_pipe[1], "r", 1) == 1);
    for (;;) pause();
    return NULL;
}

static void *leaver(void *arg) {
    (void)arg;
    CHECK(malloc(opaque(100)) != NULL);
    printf("json: exited thread %ld\n", (long)syscall(SYS_gettid));
    return NULL;
}

static void test_json(void) {
    /* Known live blocks at exit: 1000 of the class of 3000 bytes, one huge
     * block of 40 MiB, and a thread that is still running. */
    size_t c = request_class(3000);
    for (int i = 0; i < 1000; i++) CHECK((blocks[i] = malloc(opaque(3000))) != NULL);
    char *huge = malloc(opaque(40 * MIB));
    CHECK(huge != NULL);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, leaver, NULL) == 0);
    CHECK(pthread_join(t, NULL) == 0);
    CHECK(pipe(hold_pipe) == 0);
    CHECK(pthread_create(&t, NULL, holder, NULL) == 0);
    char b;
    CHECK(read(hold_pipe[0], &b, 1) == 1);
    printf("json: class %zu size %zu blocks %d\n", c, class_field(c, "size"),
           (int)class_field(c, "active_blocks"));
    printf("json: huge %p\n", (void *)huge);
    printf("json: main thread %ld\n", (long)syscall(SYS_gettid));
    printf("json: segments %zu huge %zu\n", get_size("stats.segments"),
           get_size("stats.huge_blocks"));
    printf("json: ok\n");
}

/* Fills `n` bytes, frees them, returns them to the system and checks that
 * calloc of the same size over that memory reads as zero; `what` names the
 * round in a failure. A second block stays live so the memory stays in the
 * allocator's segment (and the calloc lands there). */
static void calloc_after_trim(size_t n, const char *what) {
    unsigned char *keep = malloc(opaque(100));
    unsigned char *p = malloc(opaque(n));
    CHECK(keep != NULL && p != NULL);
    memset(p, 0xAB, n);
    free(p);
    malloc_trim(0);
    unsigned char *q = calloc(1, opaque(n));
    CHECK(q != NULL);
    for (size_t i = 0; i < n; i += 512)
        CHECKF(q[i] == 0, "%s: calloc(%zu) byte %zu is %#x (p %p, q %p)", what, n, i, q[i],
               (void *)p, (void *)q);
    free(q);
    free(keep);
}

static void test_decommit(void) {
    calloc_after_trim(1 << 20, "dontneed");
    calloc_after_trim(64 << 20, "dontneed, huge");
    const char *word = "free";
    CHECK(ctl("opt.decommit", NULL, NULL, &word, sizeof word) == 0);
    calloc_after_trim(1 << 20, "free");
    calloc_after_trim(64 << 20, "free, huge");
    word = "dontneed";
    CHECK(ctl("opt.decommit", NULL, NULL, &word, sizeof word) == 0);
    calloc_after_trim(1 << 20, "back to dontneed");
    calloc_after_trim(64 << 20, "back to dontneed, huge");
    printf("decommit: ok\n");
}

int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "";
    lookup();
    if (!strcmp(what, "names")) test_names();
    else if (!strcmp(what, "errors")) test_errors();
    else if (!strcmp(what, "values")) test_values();
    else if (!strcmp(what, "structs")) test_structs();
    else if (!strcmp(what, "walk")) test_walk();
    else if (!strcmp(what, "threads")) test_threads();
    else if (!strcmp(what, "fork")) test_fork();
    else if (!strcmp(what, "atexit")) test_atexit();
    else if (!strcmp(what, "json")) test_json();
    else if (!strcmp(what, "decommit")) test_decommit();
    else CHECKF(0, "unknown subtest '%s'", what);
    fflush(stdout);
    return 0;
}
