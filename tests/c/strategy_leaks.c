/* Allocates 10 blocks of 1000 bytes and frees all of them ("none") or
 * all but 5 ("five"): the classic engines' exit report must count the
 * difference as 5 live blocks.
 *
 * Usage: strategy_leaks none|five
 */
#include "common.h"

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s none|five\n", argv[0]);
        return 2;
    }
    int keep = strcmp(argv[1], "five") == 0 ? 5 : 0;
    static char *blocks[10];
    for (int i = 0; i < 10; i++) {
        blocks[i] = malloc(opaque(1000));
        CHECK(blocks[i] != NULL);
        memset(blocks[i], i, 1000);
    }
    for (int i = keep; i < 10; i++) free(blocks[i]);
    printf("strategy_leaks: ok\n");
    return 0;
}
