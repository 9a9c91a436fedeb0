// C++ operator new/delete in all their forms. Prints "cxx_new: ok" and
// exits 0 when every check passes; exits 1 with a message otherwise.
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include <sys/resource.h>

#define CHECK(cond)                                                                       \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            std::exit(1);                                                                 \
        }                                                                                 \
    } while (0)

static void escape(void *p) { __asm__ volatile("" : : "g"(p) : "memory"); }
static std::size_t opaque(std::size_t v) {
    __asm__ volatile("" : "+r"(v));
    return v;
}
static bool aligned(const void *p, std::size_t a) {
    return (reinterpret_cast<std::uintptr_t>(p) & (a - 1)) == 0;
}

static int live_objects = 0;

struct Tracked {
    std::uint64_t value;
    char payload[40];
    Tracked() : value(0x1122334455667788ULL) {
        ++live_objects;
        std::memset(payload, 0x3c, sizeof payload);
    }
    ~Tracked() {
        CHECK(value == 0x1122334455667788ULL);
        --live_objects;
    }
};

struct alignas(256) Aligned256 {
    unsigned char bytes[300];
    Aligned256() { std::memset(bytes, 0x7e, sizeof bytes); }
};

struct alignas(4096) AlignedPage {
    unsigned char bytes[10];
};

static void plain_new_delete() {
    int *i = new int(42);
    escape(i);
    CHECK(*i == 42);
    delete i;

    Tracked *t = new Tracked;
    escape(t);
    CHECK(live_objects == 1);
    delete t;
    CHECK(live_objects == 0);

    Tracked *arr = new Tracked[1000];
    escape(arr);
    CHECK(live_objects == 1000);
    delete[] arr;
    CHECK(live_objects == 0);

    for (std::size_t n = 1; n < 100000; n = n * 3 / 2 + 1) {
        char *c = new char[n];
        escape(c);
        std::memset(c, 0x55, n);
        delete[] c;
    }
}

static void sized_delete() {
    for (std::size_t n = 1; n < (1u << 22); n = n * 2 + 3) {
        void *p = ::operator new(opaque(n));
        escape(p);
        std::memset(p, 0x21, n);
        ::operator delete(p, n);
    }
    // The compiler emits sized delete for complete types as well.
    Tracked *t = new Tracked;
    escape(t);
    delete t;
}

static void aligned_new() {
    Aligned256 *a = new Aligned256;
    escape(a);
    CHECK(aligned(a, 256));
    CHECK(a->bytes[299] == 0x7e);
    delete a;

    Aligned256 *arr = new Aligned256[17];
    escape(arr);
    CHECK(aligned(arr, 256));
    for (int i = 0; i < 17; i++) CHECK(aligned(&arr[i], 256) && arr[i].bytes[0] == 0x7e);
    delete[] arr;

    AlignedPage *page = new AlignedPage;
    escape(page);
    CHECK(aligned(page, 4096));
    delete page;

    for (std::size_t align = 16; align <= (1u << 21); align *= 2) {
        std::size_t n = opaque(align + 100);
        void *p = ::operator new(n, std::align_val_t(align));
        escape(p);
        CHECK(aligned(p, align));
        std::memset(p, 0x42, n);
        if (align % 2048 == 0)
            ::operator delete(p, n, std::align_val_t(align));  // sized + aligned
        else
            ::operator delete(p, std::align_val_t(align));
    }

    void *p = ::operator new(opaque(5000), std::align_val_t(4096));
    escape(p);
    CHECK(aligned(p, 4096));
    std::memset(p, 0, 5000);
    ::operator delete(p, std::align_val_t(4096));

    void *q = ::operator new[](opaque(123), std::align_val_t(512));
    escape(q);
    CHECK(aligned(q, 512));
    ::operator delete[](q, std::align_val_t(512));
}

static void huge_allocations_fail() {
    const std::size_t huge = opaque(std::size_t(1) << 62);

    void *p = ::operator new(huge, std::nothrow);
    CHECK(p == nullptr);
    char *c = new (std::nothrow) char[huge];
    escape(c);
    CHECK(c == nullptr);
    void *a = ::operator new(huge, std::align_val_t(4096), std::nothrow);
    CHECK(a == nullptr);

    bool thrown = false;
    try {
        char *big = new char[huge];
        escape(big);
        delete[] big;
    } catch (const std::bad_alloc &) {
        thrown = true;
    }
    CHECK(thrown);

    thrown = false;
    try {
        void *big = ::operator new(huge);
        escape(big);
        ::operator delete(big);
    } catch (const std::bad_alloc &) {
        thrown = true;
    }
    CHECK(thrown);

    thrown = false;
    try {
        void *big = ::operator new(huge, std::align_val_t(64));
        escape(big);
        ::operator delete(big, std::align_val_t(64));
    } catch (const std::bad_alloc &) {
        thrown = true;
    }
    CHECK(thrown);
}

// Library containers, with objects created in one thread and destroyed in
// another.
static void containers() {
    std::map<std::string, std::vector<int>> m;
    for (int i = 0; i < 20000; i++) {
        std::string key = "key-" + std::to_string(i * 7919 % 10007) + std::string(i % 50, 'x');
        m[key].push_back(i);
    }
    std::uint64_t sum = 0;
    for (auto &kv : m)
        for (int v : kv.second) sum += kv.first.size() * 31 + static_cast<std::uint64_t>(v);
    CHECK(sum != 0);

    std::vector<std::string *> handoff;
    std::thread producer([&] {
        for (int i = 0; i < 10000; i++) handoff.push_back(new std::string(100 + i % 300, 'q'));
    });
    producer.join();
    std::thread consumer([&] {
        for (std::string *s : handoff) {
            CHECK(s->size() >= 100 && (*s)[0] == 'q');
            delete s;
        }
    });
    consumer.join();
}

// Every form of operator new calls the installed new_handler while one is
// installed, then throws (or returns null for the nothrow forms).
static int handler_calls = 0;
static void counting_handler() {
    if (++handler_calls >= 3) std::set_new_handler(nullptr);
}

static void new_handler_is_called() {
    const std::size_t huge = opaque(SIZE_MAX / 4);
    for (int form = 0; form < 4; form++) {
        handler_calls = 0;
        std::set_new_handler(counting_handler);
        bool thrown = false;
        void *p = nullptr;
        try {
            switch (form) {
            case 0: p = ::operator new(huge); break;
            case 1: p = ::operator new(huge, std::align_val_t(64)); break;
            case 2: p = ::operator new(huge, std::nothrow); break;
            default: p = ::operator new(huge, std::align_val_t(64), std::nothrow); break;
            }
        } catch (const std::bad_alloc &) {
            thrown = true;
        }
        CHECK(p == nullptr);
        CHECK(thrown == (form < 2));
        CHECK(handler_calls == 3);
    }
}

// A handler that frees memory makes the retried allocation succeed: the
// address space is capped, filled with 64 MiB blocks, and the handler
// frees one of them for a `new` that did not fit.
static void *reserve_blocks[64];
static int reserve_count = 0;
static void releasing_handler() {
    ++handler_calls;
    if (reserve_count > 0) {
        std::free(reserve_blocks[--reserve_count]);
    } else {
        std::set_new_handler(nullptr);
    }
}

static std::size_t mapped_bytes() {
    std::FILE *f = std::fopen("/proc/self/statm", "r");
    unsigned long pages = 0;
    CHECK(f != nullptr);
    CHECK(std::fscanf(f, "%lu", &pages) == 1);
    std::fclose(f);
    return pages * 4096;
}

static void new_handler_can_free_memory() {
    const std::size_t block = 64u << 20;
    struct rlimit old;
    CHECK(getrlimit(RLIMIT_AS, &old) == 0);
    struct rlimit capped = old;
    capped.rlim_cur = mapped_bytes() + (512u << 20);
    CHECK(setrlimit(RLIMIT_AS, &capped) == 0);
    while (reserve_count < 64) {
        void *p = std::malloc(block);
        if (p == nullptr) break;
        std::memset(p, 1, 4096);
        reserve_blocks[reserve_count++] = p;
    }
    CHECK(reserve_count > 0 && reserve_count < 64);
    const int filled = reserve_count;
    handler_calls = 0;
    std::set_new_handler(releasing_handler);
    char *big = new char[opaque(block)];
    escape(big);
    big[0] = 1;
    big[block - 1] = 2;
    CHECK(handler_calls >= 1 && reserve_count < filled);
    std::set_new_handler(nullptr);
    delete[] big;
    while (reserve_count > 0) std::free(reserve_blocks[--reserve_count]);
    CHECK(setrlimit(RLIMIT_AS, &old) == 0);
}

int main() {
    plain_new_delete();
    sized_delete();
    aligned_new();
    huge_allocations_fail();
    containers();
    new_handler_is_called();
    new_handler_can_free_memory();
    std::printf("cxx_new: ok\n");
    return 0;
}
