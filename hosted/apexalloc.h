/* ApexAlloc: the functions exported by libapexalloc.so. */
#ifndef APEXALLOC_H
#define APEXALLOC_H

#include <stddef.h>
#include <stdint.h>

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

/* ------------------------------------------------------------------------
 * Control and statistics by name, in the manner of jemalloc's mallctl:
 *
 *     size_t allocated, len = sizeof(allocated);
 *     if (apex_ctl("stats.allocated", &allocated, &len, NULL, 0) == 0) ...
 *
 *     uint64_t delay = 50;                          // write a value
 *     apex_ctl("opt.purge_delay_ms", NULL, NULL, &delay, sizeof(delay));
 *
 *     apex_ctl("arena.purge", NULL, NULL, NULL, 0); // run an action
 *
 * Reading: *oldlenp must be the size of the value's type; oldp == NULL with
 * oldlenp != NULL stores that size in *oldlenp. Writing: newlen must be the
 * size of the type. Actions run when neither oldp nor newp is given.
 * Returns 0, or:
 *   ENOENT  no such name;
 *   EINVAL  a length that is not the type's size, oldp without oldlenp,
 *           newlen without newp, a written value out of range;
 *   EPERM   writing a value that cannot change at run time, or giving an
 *           action a value;
 *   EFAULT  a non-NULL pointer (name, oldp, oldlenp, newp, or the string a
 *           written const char * points to) that cannot be read or written:
 *           every access goes through the kernel, so a bad pointer never
 *           crashes the allocator;
 *   EAGAIN  no file descriptor left for that check.
 * Works from any thread, in a child after fork, and in exit handlers.
 * Statistics are computed when read: exact when no other thread is inside
 * an allocator call at the time (otherwise off by at most the blocks moving
 * meanwhile).
 *
 * Names (type; access):
 *   version                    const char *; read
 *   epoch                      uint64_t; read, write (a write advances it;
 *                              statistics are never cached)
 *   opt.show_stats             const char *; read, write ("0", "1", "json")
 *   opt.stats_file             const char *; read
 *   opt.verbose                const char *; read
 *   opt.harden                 const char *; read ("default:links,bitmap,...")
 *   opt.purge_delay_ms         uint64_t; read, write
 *   opt.decommit               const char *; read, write ("dontneed", "free")
 *   opt.thp                    bool; read, write
 *   opt.segment_cache          size_t; read, write
 *   opt.huge_cache_mb          size_t; read, write
 *   opt.background_purge_ms    uint64_t; read
 *   opt.strategy               const char *; read
 *   opt.mmap_threshold         size_t; read
 *   opt.leaks                  bool; read
 *   opt.leaks_sample           uint64_t; read
 *     (one per APEX_* environment variable: the name lower-cased without
 *     APEX_; the written ones take effect at once)
 *   stats.allocated            size_t; bytes in blocks the program holds
 *                              (usable sizes)
 *   stats.active               size_t; bytes in used spans: whole slabs,
 *                              large blocks' spans, huge blocks
 *   stats.resident             size_t; bytes that may be resident (touched
 *                              slices, huge blocks, resident cached ranges;
 *                              metadata not counted)
 *   stats.mapped               size_t; address space reserved from the
 *                              system (segments, huge blocks, cache,
 *                              metadata)
 *   stats.retained             size_t; of mapped, cached empty segments and
 *                              freed huge blocks kept for reuse
 *   stats.segments             size_t; live segments (32 MiB each)
 *   stats.huge_blocks, stats.slabs, stats.large_blocks, stats.blocks_active,
 *   stats.heaps, stats.abandoned_segments, stats.peak_active (bytes),
 *   stats.mallocs, stats.frees, stats.remote_frees, stats.bytes_allocated,
 *   stats.bytes_freed, stats.foreign_frees
 *                              size_t each; read
 *   stats.size_classes.count   size_t; the number of size classes
 *   stats.size_classes.<n>.size, .allocated, .active_blocks, .slabs
 *                              size_t; class n's block size, the bytes and
 *                              blocks the program holds in it, its slabs
 *   thread.allocated, thread.deallocated
 *                              uint64_t; bytes the calling thread allocated
 *                              and freed so far
 *   thread.mallocs, thread.frees, thread.remote_frees
 *                              uint64_t; its operation counts
 *   thread.reset               action; hands the calling thread's cached
 *                              free memory back (frees other threads sent
 *                              it, its empty slabs)
 *   arena.purge                action; returns free memory to the system
 *                              now (as malloc_trim)
 *   harden.flags               unsigned; the mitigations in force, the
 *                              APEX_HARDEN_* bits below
 *   harden.preset              const char *; "off", "default", "full" or
 *                              "custom"
 *
 * Operation counts of small blocks are kept in batches (where blocks enter
 * or leave a slab's free lists), so mallocs and frees (and the byte sums)
 * may both trail, or both lead, the program's own count by the blocks a
 * thread freed and has not reused yet; their differences (live blocks and
 * bytes) are exact.
 * ------------------------------------------------------------------------ */
int apex_ctl(const char *name, void *oldp, size_t *oldlenp, void *newp,
             size_t newlen);

/* The bits of harden.flags. */
#define APEX_HARDEN_LINKS 0x001u
#define APEX_HARDEN_BITMAP 0x002u
#define APEX_HARDEN_FOREIGN 0x004u
#define APEX_HARDEN_GUARDS 0x008u
#define APEX_HARDEN_SHUFFLE 0x010u
#define APEX_HARDEN_CANARY 0x020u
#define APEX_HARDEN_ZERO 0x040u
#define APEX_HARDEN_QUARANTINE 0x080u
#define APEX_HARDEN_ISOLATE 0x100u
#define APEX_HARDEN_LARGE_GUARDS 0x200u
#define APEX_HARDEN_WIDE_SHUFFLE 0x400u

/* The calling thread's counts (zero before its first allocation). */
typedef struct {
    uint64_t malloc_count;    /* blocks allocated */
    uint64_t free_count;      /* blocks freed (own and other threads') */
    uint64_t bytes_allocated; /* their usable bytes */
    uint64_t bytes_freed;
    uint64_t remote_frees;    /* of free_count, other threads' blocks */
    uint64_t cache_hits;      /* allocations served by the fast path */
    uint64_t cache_misses;    /* trips to the slow path (refills, large and
                                 huge blocks) */
} apex_thread_stats_t;

/* Fills *stats; nothing is written when stats is NULL or not writable. */
void apex_thread_stats(apex_thread_stats_t *stats);

/* The allocator's totals, over every thread (exited ones too). */
typedef struct {
    uint64_t superblocks_allocated; /* segments and huge blocks ever set up */
    uint64_t superblocks_active;    /* live segments and huge blocks */
    uint64_t blocks_allocated;      /* allocations so far */
    uint64_t blocks_active;         /* blocks the program holds */
    uint64_t total_allocated_bytes; /* bytes allocated so far */
    uint64_t total_freed_bytes;     /* bytes freed so far */
    uint64_t peak_allocated_bytes;  /* highest stats.active so far (huge
                                       blocks with their whole mapping) */
    uint64_t fragmentation_percent; /* share of stats.active not in live
                                       blocks, 0-100 */
} apex_global_stats_t;

/* Fills *stats; nothing is written when stats is NULL or not writable. */
void apex_global_stats(apex_global_stats_t *stats);

/* Called by apex_heap_walk for every segment, then for each of its spans
 * in address order. size_class tells which:
 *   APEX_WALK_SEGMENT  a segment: block_addr its base, block_size its size,
 *                      used_chunks the bytes of its used spans,
 *                      total_chunks its size;
 *   APEX_WALK_FREE     free pages of a segment (used and total 0);
 *   APEX_WALK_LARGE    one large block in a span of its own (total 1, used
 *                      1 while it is allocated);
 *   APEX_WALK_HUGE     a huge block (its own mapping; used and total 1);
 *   anything else      a slab of that size class: block_size is the span's
 *                      bytes, used_chunks the blocks out of the slab
 *                      (allocated, or freed by another thread and not yet
 *                      collected), total_chunks the blocks that fit. */
typedef void (*apex_heap_visitor_t)(void *block_addr, size_t block_size,
                                    size_t size_class, size_t used_chunks,
                                    size_t total_chunks, void *userdata);

#define APEX_WALK_SEGMENT ((size_t)-1)
#define APEX_WALK_FREE ((size_t)-2)
#define APEX_WALK_LARGE ((size_t)-3)
#define APEX_WALK_HUGE ((size_t)-4)

/* Walks the heap, calling visitor(..., userdata) for every segment and span.
 * Safe while other threads allocate and free (a segment released meanwhile
 * is seen whole, in part, or not at all); the visitor is called without any
 * lock held and may allocate. Exact when no other thread runs in the
 * allocator. NULL visitor: nothing. */
void apex_heap_walk(apex_heap_visitor_t visitor, void *userdata);

/* Also replaced, as declared in glibc's <malloc.h>: mallinfo2 and mallinfo
 * (arena = memory in spans, uordblks = bytes allocated, fordblks = the rest
 * of the spans, hblks = huge blocks, usmblks = peak of arena) and
 * malloc_stats (prints the summary line). */

#ifdef __cplusplus
}
#endif

#endif /* APEXALLOC_H */
