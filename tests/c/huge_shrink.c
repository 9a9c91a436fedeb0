/* A huge block shrunk in place gives its tail pages back, and grows back in
 * place within its reservation with its contents intact. */
#include "common.h"

int main(void) {
    size_t big = 256 * MIB, small = 160 * MIB;
    unsigned char *p = malloc(big);
    CHECK(p != NULL);
    memset(p, 0x77, big);
    size_t before = resident_bytes();
    unsigned char *q = realloc(p, small);
    CHECK(q != NULL);
    size_t after = resident_bytes();
    printf("huge_shrink: resident %zu MiB with 256 MiB, %zu MiB after shrinking to 160 MiB%s\n",
           before / MIB, after / MIB, q == p ? " (in place)" : " (moved)");
    CHECKF(before > after && before - after >= 64 * MIB, "only %zu MiB went back",
           before > after ? (before - after) / MIB : 0);
    for (size_t i = 0; i < small; i += 4096) CHECK(q[i] == 0x77);
    CHECK(q[small - 1] == 0x77);
    /* Growing again stays in the same reservation. */
    unsigned char *r = realloc(q, 200 * MIB);
    CHECK(r != NULL);
    CHECK(r[0] == 0x77 && r[small - 1] == 0x77);
    memset(r + small, 0x11, 200 * MIB - small);
    CHECK(r[200 * MIB - 1] == 0x11);
    printf("huge_shrink: grew back %s\n", r == q ? "in place" : "by moving");
    free(r);
    printf("huge_shrink: ok\n");
    return 0;
}
