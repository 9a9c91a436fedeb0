/* Heap misuse, one bug per subtest.
 *
 * The bugs (double free, invalid free, invalid realloc) must be caught:
 * the process is expected to die by SIGABRT before reaching the "survived"
 * line. Freeing foreign pointers (memory the allocator never handed out)
 * must be ignored: those subtests print "<name>: ok" and exit 0.
 *
 * Usage: misuse SUBTEST
 */
#include "common.h"

#include <malloc.h>
#include <sys/mman.h>

static void survived(const char *what) {
    printf("survived %s\n", what);
    fflush(stdout);
    exit(0);
}

static void double_free(void) {
    void *p = malloc(opaque(32));
    CHECK(p != NULL);
    escape(p);
    free(p);
    free(p);
    survived("double free");
}

static void invalid_free_small(void) {
    char *p = malloc(opaque(64));
    CHECK(p != NULL);
    escape(p);
    free(p + 8);
    survived("free of an interior pointer of a 64-byte block");
}

static void invalid_free_large(void) {
    char *p = malloc(opaque(MIB));
    CHECK(p != NULL);
    memset(p, 1, MIB);
    free(p + MIB / 2);
    survived("free of an interior pointer of a 1 MiB block");
}

static void invalid_realloc(void) {
    char *p = malloc(opaque(64));
    CHECK(p != NULL);
    escape(p);
    void *q = realloc(p + 8, opaque(128));
    escape(q);
    survived("realloc of an interior pointer");
}

static char static_area[256];

/* Foreign pointers are ignored by free and have no usable size. */
static void check_foreign(void *p, const char *what) {
    size_t usable = malloc_usable_size(p);
    CHECKF(usable == 0, "malloc_usable_size of %s (%p) is %zu, expected 0", what, p, usable);
    errno = 55;
    free(p);
    CHECKF(errno == 55, "free of %s changed errno", what);
}

static void foreign_static(void) {
    memset(static_area, 7, sizeof static_area);
    check_foreign(static_area, "a static array");
    check_foreign(static_area + 16, "the middle of a static array");
    for (size_t i = 0; i < sizeof static_area; i++) CHECK(static_area[i] == 7);
}

static void foreign_stack(void) {
    volatile char buf[128];
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = 9;
    long local = 5;
    check_foreign((void *)buf, "a stack array");
    check_foreign(&local, "a stack variable");
    for (size_t i = 0; i < sizeof buf; i++) CHECK(buf[i] == 9);
    CHECK(local == 5);
}

static void foreign_mmap(void) {
    size_t len = 4 * (size_t)sysconf(_SC_PAGESIZE);
    char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(m != MAP_FAILED);
    memset(m, 3, len);
    check_foreign(m, "an mmap'ed page");
    check_foreign(m + 64, "the middle of an mmap'ed page");
    /* still mapped and unchanged */
    for (size_t i = 0; i < len; i++) CHECK(m[i] == 3);
    munmap(m, len);
}

static void after_foreign_frees_the_heap_still_works(void) {
    void *blocks[1000];
    for (int i = 0; i < 1000; i++) {
        blocks[i] = malloc(opaque(16 + (size_t)i));
        CHECK(blocks[i] != NULL);
        memset(blocks[i], 1, 16 + (size_t)i);
    }
    for (int i = 0; i < 1000; i++) free(blocks[i]);
}

static const struct {
    const char *name;
    void (*fn)(void);
} subtests[] = {
    {"double_free", double_free},
    {"invalid_free_small", invalid_free_small},
    {"invalid_free_large", invalid_free_large},
    {"invalid_realloc", invalid_realloc},
    {"foreign_static", foreign_static},
    {"foreign_stack", foreign_stack},
    {"foreign_mmap", foreign_mmap},
};

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s SUBTEST\n", argv[0]);
        return 2;
    }
    for (size_t i = 0; i < sizeof subtests / sizeof subtests[0]; i++) {
        if (strcmp(argv[1], subtests[i].name) == 0) {
            subtests[i].fn();
            after_foreign_frees_the_heap_still_works();
            printf("%s: ok\n", argv[1]);
            return 0;
        }
    }
    fprintf(stderr, "unknown subtest %s\n", argv[1]);
    return 2;
}
