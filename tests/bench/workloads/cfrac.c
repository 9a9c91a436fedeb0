/*
 * cfrac: many small, short-lived objects from big-integer arithmetic, in
 * the spirit of the classic cfrac factoring benchmark.
 *
 * Big integers are immutable heap objects (a length plus 32-bit limbs);
 * every arithmetic operation allocates a fresh result and the operands
 * die soon after, producing a steady stream of small allocations of
 * slowly growing sizes.  Each thread evaluates Fibonacci numbers (checked
 * with Cassini's identity), factorials and powers, and checks every result
 * modulo several primes against native 64-bit arithmetic.
 */
#include "common.h"

typedef struct {
    uint32_t n;   /* number of limbs in use (>= 1) */
    uint32_t d[]; /* little-endian limbs */
} big;

static big *big_alloc(uint32_t n) {
    big *b = xmalloc(sizeof(big) + sizeof(uint32_t) * n);
    b->n = n;
    return b;
}

static big *big_trim(big *b) {
    while (b->n > 1 && b->d[b->n - 1] == 0) b->n--;
    return b;
}

static big *big_from(uint64_t v) {
    big *b = big_alloc(2);
    b->d[0] = (uint32_t)v;
    b->d[1] = (uint32_t)(v >> 32);
    return big_trim(b);
}

static int big_cmp(const big *a, const big *b) {
    if (a->n != b->n) return a->n < b->n ? -1 : 1;
    for (uint32_t i = a->n; i-- > 0;)
        if (a->d[i] != b->d[i]) return a->d[i] < b->d[i] ? -1 : 1;
    return 0;
}

static big *big_add(const big *a, const big *b) {
    if (a->n < b->n) { const big *t = a; a = b; b = t; }
    big *r = big_alloc(a->n + 1);
    uint64_t carry = 0;
    for (uint32_t i = 0; i < a->n; i++) {
        uint64_t s = (uint64_t)a->d[i] + (i < b->n ? b->d[i] : 0) + carry;
        r->d[i] = (uint32_t)s;
        carry = s >> 32;
    }
    r->d[a->n] = (uint32_t)carry;
    return big_trim(r);
}

/* a - b, requires a >= b. */
static big *big_sub(const big *a, const big *b) {
    big *r = big_alloc(a->n);
    int64_t borrow = 0;
    for (uint32_t i = 0; i < a->n; i++) {
        int64_t s = (int64_t)a->d[i] - (i < b->n ? b->d[i] : 0) - borrow;
        borrow = s < 0;
        r->d[i] = (uint32_t)(s + (borrow ? ((int64_t)1 << 32) : 0));
    }
    if (borrow) die("cfrac: negative subtraction result");
    return big_trim(r);
}

static big *big_mul(const big *a, const big *b) {
    big *r = big_alloc(a->n + b->n);
    memset(r->d, 0, sizeof(uint32_t) * r->n);
    for (uint32_t i = 0; i < a->n; i++) {
        uint64_t carry = 0;
        for (uint32_t j = 0; j < b->n; j++) {
            uint64_t t = (uint64_t)a->d[i] * b->d[j] + r->d[i + j] + carry;
            r->d[i + j] = (uint32_t)t;
            carry = t >> 32;
        }
        r->d[i + b->n] = (uint32_t)carry;
    }
    return big_trim(r);
}

static big *big_mul_small(const big *a, uint32_t m) {
    big *r = big_alloc(a->n + 1);
    uint64_t carry = 0;
    for (uint32_t i = 0; i < a->n; i++) {
        uint64_t t = (uint64_t)a->d[i] * m + carry;
        r->d[i] = (uint32_t)t;
        carry = t >> 32;
    }
    r->d[a->n] = (uint32_t)carry;
    return big_trim(r);
}

static uint32_t big_mod_small(const big *a, uint32_t m) {
    uint64_t r = 0;
    for (uint32_t i = a->n; i-- > 0;) r = ((r << 32) | a->d[i]) % m;
    return (uint32_t)r;
}

static const uint32_t primes[] = {1000003u, 998244353u, 4294967291u};
#define NPRIMES (sizeof primes / sizeof primes[0])

static void check_mod(const big *b, const uint64_t *expect, const char *what) {
    for (size_t k = 0; k < NPRIMES; k++)
        if (big_mod_small(b, primes[k]) != expect[k]) die("cfrac: %s mismatch", what);
}

static void task_fib(uint32_t n) {
    big *a = big_from(0), *b = big_from(1); /* F(i), F(i+1) */
    uint64_t fa[NPRIMES] = {0}, fb[NPRIMES];
    for (size_t k = 0; k < NPRIMES; k++) fb[k] = 1;
    for (uint32_t i = 0; i < n; i++) {
        big *c = big_add(a, b);
        free(a);
        a = b;
        b = c;
        for (size_t k = 0; k < NPRIMES; k++) {
            uint64_t t = (fa[k] + fb[k]) % primes[k];
            fa[k] = fb[k];
            fb[k] = t;
        }
    }
    check_mod(a, fa, "fibonacci");
    /* Cassini: F(n+1) * F(n-1) - F(n)^2 = (-1)^n. */
    big *prev = big_sub(b, a);
    big *x = big_mul(b, prev), *y = big_mul(a, a), *one = big_from(1);
    big *lhs = (n % 2 == 0) ? x : y, *rhs = (n % 2 == 0) ? y : x;
    big *rhs1 = big_add(rhs, one);
    if (big_cmp(lhs, rhs1) != 0) die("cfrac: Cassini identity failed for n=%u", n);
    free(rhs1);
    free(one);
    free(x);
    free(y);
    free(prev);
    free(a);
    free(b);
}

static void task_factorial(uint32_t n) {
    big *f = big_from(1);
    uint64_t e[NPRIMES];
    for (size_t k = 0; k < NPRIMES; k++) e[k] = 1;
    for (uint32_t i = 2; i <= n; i++) {
        big *g = big_mul_small(f, i);
        free(f);
        f = g;
        for (size_t k = 0; k < NPRIMES; k++) e[k] = e[k] * i % primes[k];
    }
    check_mod(f, e, "factorial");
    free(f);
}

static void task_power(uint32_t base, uint32_t exp) {
    big *r = big_from(1), *b = big_from(base);
    uint64_t e[NPRIMES];
    for (size_t k = 0; k < NPRIMES; k++) {
        uint64_t acc = 1, x = base % primes[k];
        for (uint32_t j = exp; j; j >>= 1) {
            if (j & 1) acc = acc * x % primes[k];
            x = x * x % primes[k];
        }
        e[k] = acc;
    }
    for (uint32_t j = exp; j; j >>= 1) {
        if (j & 1) {
            big *t = big_mul(r, b);
            free(r);
            r = t;
        }
        if (j > 1) {
            big *t = big_mul(b, b);
            free(b);
            b = t;
        }
    }
    check_mod(r, e, "power");
    free(r);
    free(b);
}

struct worker {
    int id;
    long tasks;
};

static void *run(void *arg) {
    struct worker *w = (struct worker *)arg;
    rng_t r = rng_seed((uint64_t)w->id + 11);
    for (long t = 0; t < w->tasks; t++) {
        switch (t % 3) {
        case 0: task_fib((uint32_t)rng_range(&r, 100, 3000)); break;
        case 1: task_factorial((uint32_t)rng_range(&r, 50, 1500)); break;
        default: task_power((uint32_t)rng_range(&r, 2, 1000000), (uint32_t)rng_range(&r, 10, 2000)); break;
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    struct bench_args a = parse_args(argc, argv);
    int n = a.threads;
    long tasks = scaled(30000, a.scale, 3) / n + 1;
    pthread_t *tids = xmalloc(sizeof(pthread_t) * (size_t)n);
    struct worker *ws = xmalloc(sizeof(struct worker) * (size_t)n);
    for (int i = 0; i < n; i++) ws[i] = (struct worker){i, tasks};
    double t0 = now_sec();
    spawn_threads(tids, n, run, ws, sizeof(struct worker));
    join_threads(tids, n);
    printf("cfrac: %d threads, %ld tasks, %.3f s\n", n, tasks * n, now_sec() - t0);
    free(tids);
    free(ws);
    return 0;
}
