/* Attack: free of a slot that was never handed out.
 *
 * The attacker frees an address on the block grid of a slab, beyond the
 * blocks handed out so far, as if it were a block (a forged pointer that
 * passes every "is this a block start?" check). If the allocator accepts
 * it, that slot is on the free list while it is also still a fresh slot to
 * carve, so it is later handed out twice: two live blocks share memory.
 *
 * Variants: `near` frees a slot 8 or more blocks after the first ones
 * (likely already carved onto a free list, where a double-free check finds
 * it); `far` frees the slot 600 blocks on (37.5 KiB into the slab), beyond
 * what an allocator carves from a fresh slab at once.
 *
 * SUCCEEDED when two live blocks returned by malloc are the same address
 * (found by sorting every live pointer).
 */
#include "attack.h"

#define SIZE 64
#define FIRST 4
#define MORE 4000

static char *live[FIRST + MORE];

static int cmp_ptr(const void *x, const void *y) {
    uintptr_t a = *(const uintptr_t *)x, b = *(const uintptr_t *)y;
    return a < b ? -1 : a > b;
}

static int is_live(const char *p, int n) {
    for (int i = 0; i < n; i++)
        if (live[i] == p) return 1;
    return 0;
}

static void *attack(void *arg) {
    int first_k = *(const int *)arg;
    for (int i = 0; i < FIRST; i++) {
        live[i] = malloc(opaque(SIZE));
        CHECK(live[i] != NULL);
        memset(live[i], 'A', SIZE);
    }
    /* The lowest block's grid, k blocks further: not one of the blocks
     * handed out (whatever order they came in). */
    char *base = live[0];
    for (int i = 1; i < FIRST; i++)
        if (live[i] < base) base = live[i];
    char *forged = NULL;
    for (int k = first_k; k < first_k + 64 && !forged; k++)
        if (!is_live(base + k * SIZE, FIRST)) forged = base + k * SIZE;
    CHECK(forged != NULL);
    note("blocks %p %p %p %p; freeing the never-allocated slot %p", (void *)live[0],
         (void *)live[1], (void *)live[2], (void *)live[3], (void *)forged);
    crash_means_success("on the forged free", 3);
    free(forged);
    note("free returned");

    int n = FIRST;
    for (int i = 0; i < MORE; i++) {
        char *p = malloc(opaque(SIZE));
        if (p == NULL) break;
        memset(p, 'B', SIZE);
        live[n++] = p;
    }
    qsort(live, n, sizeof live[0], cmp_ptr);
    for (int i = 1; i < n; i++)
        if (live[i] == live[i - 1])
            succeeded("the same block %p was handed out twice while live (forged slot %p)",
                      (void *)live[i], (void *)forged);
    for (int i = 1; i < n; i++)
        if (overlaps(live[i], SIZE, live[i - 1], SIZE))
            succeeded("live blocks %p and %p overlap (forged slot %p)", (void *)live[i - 1],
                      (void *)live[i], (void *)forged);
    defeated("%d live %d-byte blocks are all distinct: no block was handed out twice", n, SIZE);
}

static void run_near(void) {
    static const int k = 8;
    on_fresh_thread(attack, (void *)&k);
}

static void run_far(void) {
    static const int k = 600;
    on_fresh_thread(attack, (void *)&k);
}

static const struct variant variants[] = {{"near", run_near}, {"far", run_far}};
RUN_VARIANTS(variants)
