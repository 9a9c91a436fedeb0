/* A burst, then silence: 384 MiB of 16 KiB blocks are allocated and freed,
 * and the program then only sleeps. With the background purge on
 * (APEX_BACKGROUND_PURGE_MS) resident memory must fall under MAX_PERCENT of
 * its peak within 3 s, although the program never calls the allocator
 * again.
 *
 * Usage: idle_burst [MAX_PERCENT]
 */
#include "common.h"

#define BLOCK (16 * 1024)
#define COUNT (384 * 1024 / 16)

static void *blocks[COUNT];

int main(int argc, char **argv) {
    size_t max_percent = argc > 1 ? strtoull(argv[1], NULL, 10) : 50;
    for (int i = 0; i < COUNT; i++) {
        blocks[i] = malloc(BLOCK);
        CHECK(blocks[i] != NULL);
        memset(blocks[i], 0x42, BLOCK);
    }
    size_t peak = resident_bytes();
    for (int i = 0; i < COUNT; i++) free(blocks[i]);
    size_t now = peak;
    int waited = 0;
    for (; waited < 3000; waited += 100) {
        usleep(100 * 1000);
        now = resident_bytes();
        if (now * 100 < peak * max_percent) break;
    }
    printf("idle_burst: resident %zu MiB at the peak, %zu MiB after %d ms idle (limit %zu%%)\n",
           peak / MIB, now / MIB, waited, max_percent);
    CHECKF(now * 100 < peak * max_percent, "resident memory stayed at %zu MiB", now / MIB);
    printf("idle_burst: ok\n");
    return 0;
}
