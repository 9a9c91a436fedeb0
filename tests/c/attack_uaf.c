/* Attack: use after free.
 *
 * Variants:
 *   read         a 64-byte block holding a secret is freed; the attacker
 *                reads it through the dangling pointer right away, and
 *                again when malloc hands the same address out (within
 *                4096 mallocs, or 4096 frees and 4096 more mallocs);
 *   write-small  the attacker writes through a dangling pointer to a freed
 *                64-byte block, then the program mallocs: does the write
 *                reach the next owner?
 *   write-large  a 600 KiB block is freed, the program allocates new
 *                600 KiB blocks, the attacker writes through the dangling
 *                pointer: does the write land in the next owner's block?
 *
 * The write-large write is between "about to write" and "write done": a
 * freed block made inaccessible shows as SIGSEGV in between.
 *
 * SUCCEEDED when secret bytes are read back after the free, or when the
 * attacker's write is found in a block that malloc handed out.
 */
#include "attack.h"

#define TRIES 4096

/* Bytes 16..63: the first 16 bytes of a freed block often hold the
 * allocator's links, whatever the program wrote. */
#define SECRET_AT 16
#define SECRET_LEN 48

static unsigned char *got[TRIES];

/* The freed block may wait in a quarantine that only frees push forward:
 * free every block of the first round of mallocs before the second. */
static void push_out(void) {
    for (int i = 0; i < TRIES; i++) free(got[i]);
}

static void *read_secret(void *arg) {
    (void)arg;
    unsigned char *p = malloc(opaque(64));
    CHECK(p != NULL);
    memset(p, 'S', 64);
    free(p);
    size_t left = count_byte(p + SECRET_AT, SECRET_LEN, 'S');
    if (left >= 8)
        succeeded("%zu of %d secret bytes read back through the dangling pointer right after "
                  "free",
                  left, SECRET_LEN);
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < TRIES; i++) {
            got[i] = malloc(opaque(64));
            if (got[i] == p) {
                left = count_byte(got[i] + SECRET_AT, SECRET_LEN, 'S');
                if (left >= 8)
                    succeeded("%zu of %d secret bytes still there when malloc handed the block "
                              "out again",
                              left, SECRET_LEN);
                defeated("the secret was gone right after free and when the block came back");
            }
        }
        push_out();
    }
    defeated("the secret was gone right after free; the block was not handed out again in %d "
             "mallocs, %d frees and %d more mallocs",
             TRIES, TRIES, TRIES);
}

static void *write_small(void *arg) {
    (void)arg;
    unsigned char *p = malloc(opaque(64));
    CHECK(p != NULL);
    memset(p, 'P', 64);
    free(p);
    memset(p + SECRET_AT, 'W', SECRET_LEN);
    crash_means_success("after the write to a freed block", 3);
    note("wrote %d bytes into the freed block %p", SECRET_LEN, (void *)p);
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < TRIES; i++) {
            got[i] = malloc(opaque(64));
            CHECK(got[i] != NULL);
            if (got[i] == p) {
                size_t planted = count_byte(got[i] + SECRET_AT, SECRET_LEN, 'W');
                if (planted == SECRET_LEN)
                    succeeded("the write after free reached the next owner of %p", (void *)p);
                defeated("the block came back without the attacker's bytes (%zu of %d left)",
                         planted, SECRET_LEN);
            }
        }
        push_out();
    }
    defeated("the freed block was not handed out again in %d mallocs, %d frees and %d more "
             "mallocs",
             TRIES, TRIES, TRIES);
}

static void *write_large(void *arg) {
    (void)arg;
    size_t size = 600 * KIB;
    unsigned char *p = malloc(opaque(size));
    CHECK(p != NULL);
    memset(p, 'P', size);
    free(p);
    unsigned char *got[8];
    int owner = -1;
    for (int i = 0; i < 8 && owner < 0; i++) {
        got[i] = malloc(opaque(size));
        CHECK(got[i] != NULL);
        memset(got[i], 'N', size);
        if (overlaps(got[i], size, p, size)) owner = i;
    }
    /* Write where the next owner's block is, or the middle of the freed
     * block if nobody reused it (a quarantined block may fault). */
    unsigned char *at = p + size / 2;
    if (owner >= 0) {
        uintptr_t lo = (uintptr_t)(got[owner] > p ? got[owner] : p);
        uintptr_t hi = (uintptr_t)(got[owner] > p ? p : got[owner]) + size;
        at = (unsigned char *)((lo + (hi - lo) / 2) & ~(uintptr_t)63);
    }
    note("about to write 64 bytes through the dangling pointer %p at %p", (void *)p, (void *)at);
    for (int i = 0; i < 64; i++) ((volatile unsigned char *)at)[i] = 'W';
    note("write done");
    if (owner >= 0 && count_byte(at, 64, 'W') == 64)
        succeeded("the write through the dangling pointer %p landed in the next owner's live "
                  "block %p",
                  (void *)p, (void *)got[owner]);
    defeated("none of %d new 600 KiB blocks overlaps the freed one; the write landed in free "
             "memory",
             8);
}

static void run_read(void) { on_fresh_thread(read_secret, NULL); }
static void run_write_small(void) { on_fresh_thread(write_small, NULL); }
static void run_write_large(void) { on_fresh_thread(write_large, NULL); }

static const struct variant variants[] = {
    {"read", run_read},
    {"write-small", run_write_small},
    {"write-large", run_write_large},
};
RUN_VARIANTS(variants)
