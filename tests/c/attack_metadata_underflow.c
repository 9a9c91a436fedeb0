/* Attack: linear underflow into the allocator's metadata.
 *
 * An attacker with a backward linear write (a negative index, an underflow
 * of a copy loop) writes from a small block down toward lower addresses.
 * Allocators that keep their bookkeeping at the start of the region the
 * block lives in (a segment header, an arena or heap header, chunk headers)
 * have it rewritten with attacker bytes, and then run on it.
 *
 * The block comes from a fresh thread (a fresh heap, so it sits near the
 * start of its region). The write goes byte by byte, from just below the
 * block down to the block's address rounded down to 32 MiB (where a 32 MiB
 * aligned segment or a 64 MiB aligned heap starts), at most 32 MiB. Then the
 * thread calls malloc and free.
 *
 * Outcomes: SIGSEGV between "about to write" and "write done" means an
 * inaccessible page stopped the write before the metadata; a fatal line
 * from the allocator is a detection. SUCCEEDED when malloc and free run
 * on without complaint after their metadata was overwritten, or crash or
 * hang on it (the allocator trusted the corrupted metadata).
 */
#include "attack.h"

#define REGION (32 * MIB)

static void *attack(void *arg) {
    (void)arg;
    unsigned char *p = malloc(opaque(64));
    CHECK(p != NULL);
    memset(p, 'P', 64);
    uintptr_t base = (uintptr_t)p & ~(uintptr_t)(REGION - 1);
    note("about to write backwards from %p down to %#lx (%zu bytes)", (void *)(p - 1),
         (unsigned long)base, (size_t)((uintptr_t)p - base));
    for (volatile unsigned char *q = p - 1; (uintptr_t)q >= base; q--) *q = 0x41;
    note("write done");
    crash_means_success("on metadata overwritten by the underflow", 3);
    for (int i = 0; i < 64; i++) {
        void *x = malloc(opaque(64 + 16 * (size_t)i));
        escape(x);
        free(x);
    }
    free(p);
    void *y = malloc(opaque(64));
    escape(y);
    succeeded("malloc and free kept running after %zu bytes below the block (its metadata) were "
              "overwritten with 0x41",
              (size_t)((uintptr_t)p - base));
}

static void run(void) { on_fresh_thread(attack, NULL); }

static const struct variant variants[] = {{"backward", run}};
RUN_VARIANTS(variants)
