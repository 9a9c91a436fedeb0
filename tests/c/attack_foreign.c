/* Attack: freeing pointers the allocator never handed out (House of
 * Spirit and relatives).
 *
 * The attacker makes the program free a pointer it controls, hoping the
 * allocator takes the memory into a free list and later hands it out, so
 * that a malloc'd object lands on the stack, in a global, or over a live
 * object. The fake regions carry a glibc-style chunk header (size 0x50 for
 * a 64-byte request) 8 bytes before the pointer, as a real attacker would
 * prepare, so that allocators checking only that header accept them.
 *
 * Variants:
 *   stack          free of a fake 64-byte block on the stack;
 *   global         free of a fake 64-byte block in a static array;
 *   interior       free of a pointer 16 bytes into a live 64-byte block;
 *   forged         free of an address inside the heap's 32 MiB region
 *                  (16 MiB past a live block's region start) that is no
 *                  block;
 *   realloc-stack  realloc of the fake stack block to 128 bytes.
 *
 * SUCCEEDED when malloc (or realloc) returns memory in the fake region or
 * overlapping the live block (or the allocator crashes or hangs on the
 * pointer, reported as "the allocator crashed/hung").
 */
#include "attack.h"

#define TRIES 4096

static _Alignas(64) unsigned char global_area[512];

/* Prepares a fake 64-byte block at `region + 64` and returns it. */
static unsigned char *fake_block(unsigned char *region) {
    memset(region, 0, 256);
    uint64_t size = 0x51; /* 80-byte chunk, "previous in use" */
    memcpy(region + 64 - 8, &size, sizeof size);
    uint64_t next_size = 0x21;
    memcpy(region + 64 + 80 - 8, &next_size, sizeof next_size);
    return region + 64;
}

/* Mallocs up to TRIES 64-byte blocks; succeeds if one overlaps
 * [lo, lo + len). */
static void hunt(const void *lo, size_t len, const char *where) {
    for (int i = 0; i < TRIES; i++) {
        char *p = malloc(opaque(64));
        if (p == NULL) break;
        if (overlaps(p, 64, lo, len)) succeeded("malloc returned %p, inside %s", (void *)p, where);
    }
    defeated("none of %d mallocs returned memory in %s", TRIES, where);
}

static void stack(void) {
    _Alignas(64) unsigned char region[256];
    unsigned char *fake = fake_block(region);
    crash_means_success("on the stack pointer", 3);
    free(fake);
    note("free of the stack address %p returned", (void *)fake);
    hunt(region, sizeof region, "the stack");
}

static void global(void) {
    unsigned char *fake = fake_block(global_area);
    crash_means_success("on the global pointer", 3);
    free(fake);
    note("free of the global address %p returned", (void *)fake);
    hunt(global_area, sizeof global_area, "a global array");
}

static void *interior_thread(void *arg) {
    (void)arg;
    char *live = malloc(opaque(64));
    CHECK(live != NULL);
    memset(live, 'L', 64);
    crash_means_success("on the interior pointer", 3);
    free(live + 16);
    note("free of %p, 16 bytes into the live block %p, returned", (void *)(live + 16),
         (void *)live);
    hunt(live, 64, "the live block");
    return NULL;
}

static void interior(void) { on_fresh_thread(interior_thread, NULL); }

static void *forged_thread(void *arg) {
    (void)arg;
    char *live = malloc(opaque(64));
    CHECK(live != NULL);
    uintptr_t region = (uintptr_t)live & ~(uintptr_t)(32 * MIB - 1);
    char *forged = (char *)(region + 16 * MIB + 64);
    crash_means_success("on the forged pointer", 3);
    free(forged);
    note("free of the forged address %p (region of %p) returned", (void *)forged, (void *)live);
    hunt(forged, 64, "the forged address");
    return NULL;
}

static void forged(void) { on_fresh_thread(forged_thread, NULL); }

static void realloc_stack(void) {
    _Alignas(64) unsigned char region[256];
    unsigned char *fake = fake_block(region);
    memset(fake, 'F', 64);
    errno = 0;
    crash_means_success("on the stack pointer", 3);
    unsigned char *r = realloc(fake, opaque(128));
    int err = errno;
    if (r == NULL)
        defeated("realloc of the stack address %p refused (NULL, errno %d)", (void *)fake, err);
    if (overlaps(r, 128, region, sizeof region))
        succeeded("realloc returned the stack memory %p as a 128-byte block", (void *)r);
    note("realloc moved the stack block to %p", (void *)r);
    hunt(region, sizeof region, "the stack");
}

static const struct variant variants[] = {
    {"stack", stack},
    {"global", global},
    {"interior", interior},
    {"forged", forged},
    {"realloc-stack", realloc_stack},
};
RUN_VARIANTS(variants)
