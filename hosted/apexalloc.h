/* ApexAlloc: the functions exported by libapexalloc.so. */
#ifndef APEXALLOC_H
#define APEXALLOC_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The standard family, with glibc's semantics. */
void *malloc(size_t size);
void free(void *ptr);
void *calloc(size_t nmemb, size_t size);
void *realloc(void *ptr, size_t size);
void *reallocarray(void *ptr, size_t nmemb, size_t size);
int posix_memalign(void **out, size_t alignment, size_t size);
void *aligned_alloc(size_t alignment, size_t size);
void *memalign(size_t alignment, size_t size);
void *valloc(size_t size);
void *pvalloc(size_t size);
size_t malloc_usable_size(void *ptr);
int malloc_trim(size_t pad);

/* C23 sized deallocation. */
void free_sized(void *ptr, size_t size);
void free_aligned_sized(void *ptr, size_t alignment, size_t size);

/* Prints a one-line statistics summary to stderr. */
void apex_stats_print(void);

/* Also replaced, as declared in glibc's <malloc.h>: mallinfo2 and mallinfo
 * (arena = memory in spans, uordblks = bytes allocated, fordblks = the rest
 * of the spans, hblks = huge blocks, usmblks = peak of arena) and
 * malloc_stats (prints the summary line). */

#ifdef __cplusplus
}
#endif

#endif /* APEXALLOC_H */
