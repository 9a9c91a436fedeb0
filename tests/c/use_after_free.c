/* Reads a byte of a freed block: for the tool tests (tests/tests/tools.rs),
 * which run it under AddressSanitizer and memcheck. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
    char *volatile p = malloc(64);
    strcpy(p, "hello");
    free(p);
    printf("read after free: %d\n", p[8]);
    return 0;
}
