/* glibc-simple: single-threaded tight malloc/free loop (threads ignored). */
#include "glibc_loop.h"

int main(int argc, char **argv) {
    struct bench_args a = parse_args(argc, argv);
    long iterations = scaled(600000, a.scale, 10);
    double t0 = now_sec();
    uint64_t sum = malloc_loop(iterations, 0);
    double dt = now_sec() - t0;
    if (sum != expected_sum(iterations)) die("glibc-simple: bad checksum");
    printf("glibc-simple: %ld mallocs, %.1f ns per malloc/free pair\n", iterations * BATCH,
           dt * 1e9 / (double)(iterations * BATCH));
    return 0;
}
