/* Attack: cross-class reuse of a dangling pointer (type confusion).
 *
 * The attacker keeps a dangling pointer to a freed 64-byte block, then
 * makes the program allocate many blocks of other sizes. If the freed
 * block's memory is recycled for another size class, the dangling pointer
 * now points inside a live object of a different type and size, which
 * reads and writes through it corrupt.
 *
 * The victim is one of 2048 64-byte blocks allocated by a fresh thread and
 * all freed in order; the victim is a quarter of the way in, so its slab
 * (or run, or chunk) empties while later ones still hold blocks, and is not
 * kept as the size's last slab: the case where an allocator may hand the
 * memory to another size.
 *
 * SUCCEEDED when the dangling pointer lies inside a live block of another
 * size (and a write through it changes that block's contents).
 */
#include "attack.h"

#define ROUNDS 3000
#define NBLK 2048

static const size_t sizes[] = {4000, 1024, 16 * 1024, 100 * 1024};
#define NSIZES (sizeof sizes / sizeof sizes[0])

static void *attack(void *arg) {
    (void)arg;
    static char *blk[NBLK];
    for (int i = 0; i < NBLK; i++) {
        blk[i] = malloc(opaque(64));
        CHECK(blk[i] != NULL);
        memset(blk[i], 'D', 64);
    }
    char *dangling = blk[NBLK / 4];
    for (int i = 0; i < NBLK; i++) free(blk[i]);
    note("freed the 64-byte block %p; allocating other sizes", (void *)dangling);
    size_t total = 0;
    for (int i = 0; i < ROUNDS; i++) {
        size_t size = sizes[i % NSIZES];
        if (i >= (int)NSIZES * 100 && size > 4000) size = 4000; /* bound the total */
        char *p = malloc(opaque(size));
        if (p == NULL) break;
        memset(p, 'V', size);
        total += size;
        if (overlaps(dangling, 64, p, size)) {
            memset(dangling, 'X', 64);
            size_t changed = count_byte((unsigned char *)p, size, 'X');
            if (changed)
                succeeded("the dangling 64-byte pointer %p is inside the live %zu-byte block %p; "
                          "writing through it changed %zu of that block's bytes",
                          (void *)dangling, size, (void *)p, changed);
        }
    }
    defeated("no block of another size among %d (%zu MiB) covers the dangling pointer %p",
             ROUNDS, total / MIB, (void *)dangling);
}

static void run(void) { on_fresh_thread(attack, NULL); }

static const struct variant variants[] = {{"reuse", run}};
RUN_VARIANTS(variants)
