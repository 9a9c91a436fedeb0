/*
 * Prints the path of the shared object that provides `malloc` in this
 * process.  The runner uses it to confirm that an LD_PRELOAD allocator
 * really interposes malloc (ld.so only warns when a preload fails).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

int main(void) {
    void *sym = dlsym(RTLD_DEFAULT, "malloc");
    Dl_info info;
    if (!sym || !dladdr(sym, &info) || !info.dli_fname) {
        fprintf(stderr, "error: cannot locate malloc\n");
        return 1;
    }
    void *p = malloc(100);
    if (!p) return 1;
    free(p);
    printf("%s\n", info.dli_fname);
    return 0;
}
