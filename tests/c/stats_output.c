/* A small program for the option and statistics-output tests
 * (tests/tests/hosted_options.rs). It prints "stats_output: pid <pid>" on
 * stdout, allocates and frees a few thousand blocks, prints
 * "stats_output: ok" and exits with status 0. The optional argument picks
 * what it does before exiting:
 *   close  closes stderr (descriptor 2), as ls, cat and sort do;
 *   chdir  changes to the root directory (a relative APEX_STATS_FILE must
 *          still name a file in the directory the program started in).
 */
#include "common.h"

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    printf("stats_output: pid %ld\n", (long)getpid());

    enum { N = 4000 };
    static char *blocks[N];
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < N; i++) {
            size_t size = opaque(16 + (size_t)(i * 37 + round * 11) % 2000);
            blocks[i] = malloc(size);
            CHECK(blocks[i] != NULL);
            memset(blocks[i], i & 0xff, size);
        }
        for (int i = 0; i < N; i++) {
            CHECK((unsigned char)blocks[i][0] == (unsigned char)(i & 0xff));
            free(blocks[i]);
        }
    }

    printf("stats_output: ok\n");
    fflush(stdout);
    if (strcmp(mode, "close") == 0) {
        CHECK(close(2) == 0);
    } else if (strcmp(mode, "chdir") == 0) {
        CHECK(chdir("/") == 0);
    } else {
        CHECK(mode[0] == '\0');
    }
    return 0;
}
