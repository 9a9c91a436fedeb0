#!/usr/bin/env python3
"""Writes the seed inputs under seeds/ops and seeds/corrupt.

The encoding is the one `src/engine.rs` decodes: four configuration bytes,
then operations (an opcode byte and its operands). Run from anywhere:
`python3 fuzz/make_seeds.py`.
"""

import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

MAX_CLASS_SIZE = 512 * 1024
LARGE_MAX = 16 << 20


def u16(v):
    return struct.pack("<H", v & 0xFFFF)


def size(n):
    """The size selector and value that decode to exactly `n` bytes."""
    if n <= 256:
        return bytes([0]) + u16(n)
    if n <= 2048:
        return bytes([6]) + u16(n)
    if n <= 16384:
        return bytes([9]) + u16(n)
    if n <= MAX_CLASS_SIZE and n % 8 == 0:
        return bytes([10]) + u16(n // 8)
    if n > LARGE_MAX and (n - LARGE_MAX) % 128 == 0 and (n - LARGE_MAX) // 128 < 65536:
        return bytes([14]) + u16((n - LARGE_MAX) // 128)
    if n > MAX_CLASS_SIZE and (n - MAX_CLASS_SIZE) % 64 == 0 and (n - MAX_CLASS_SIZE) // 64 < 65536:
        return bytes([12]) + u16((n - MAX_CLASS_SIZE) // 64)
    assert n % 256 == 0 and n // 256 < 65536, n
    return bytes([13]) + u16(n // 256)


def edge(i, delta=0):
    """Threshold size number `i` of the engine's EDGES, plus `delta` (-8..7)."""
    return bytes([11 | ((delta + 8) << 4)]) + u16(i)


def malloc(n, heap=0):
    return bytes([0, heap]) + size(n)


def zalloc(n, heap=0):
    return bytes([3, heap]) + size(n)


def aligned(n, shift, heap=0, zero=False):
    return bytes([4, heap | (2 if zero else 0) | ((shift - 4) << 2)]) + size(n)


def realloc(i, n, other_heap=False, keep_align=False):
    return bytes([6 if keep_align else 5, 1 if other_heap else 0]) + u16(i) + size(n)


def free(i):
    return bytes([7]) + u16(i)


def free_remote(i):
    return bytes([9]) + u16(i)


VERIFY = bytes([10])


def tick(ms4, heap=0):
    return bytes([11, (ms4 << 1 | heap) & 0xFF])


def release(now, heap=0):
    return bytes([12, (2 if now else 0) | heap])


def recreate(heap):
    return bytes([13, heap])


def uaf_write(freed, data, off=None):
    if off is None:
        return bytes([14, 0]) + u16(freed) + bytes([len(data) - 1]) + u16(0) + data
    return bytes([14, 2 | (off << 2)]) + u16(freed) + bytes([len(data) - 1]) + data


def double_free(freed, heap=0):
    return bytes([15, heap]) + u16(freed)


def interior(i, off, use_free=True):
    return bytes([16, 2 if use_free else 0]) + u16(i) + u16(off)


def wild(kind, v=0, extra=0):
    return bytes([17, (kind << 1) | (extra << 3)]) + u16(v)


def overflow(i, data, from_size=False):
    return bytes([18, 2 if from_size else 0]) + u16(i) + bytes([len(data) - 1]) + data


def config(flavor=0, clock=False, budget=0, purge=0, cache=0, resident=0, harden=0, seed=0):
    b0 = flavor | (4 if clock else 0) | (budget << 3) | (purge << 5)
    return bytes([b0, cache | (resident << 2), harden, seed])


SMALL = [0, 1, 8, 16, 24, 48, 100, 128, 200, 256, 640, 1024, 2048, 3000, 8192, 16384]

SEEDS_OPS = {
    "small": config()
    + b"".join(malloc(n, i & 1) for i, n in enumerate(SMALL))
    + free(3) + free(0) + free(5) + VERIFY
    + b"".join(malloc(n) for n in SMALL[:6])
    + VERIFY,
    "remote": config()
    + b"".join(malloc(48) for _ in range(12))
    + b"".join(free_remote(0) for _ in range(6))
    + VERIFY + b"".join(malloc(48, 1) for _ in range(4)) + free_remote(2) + VERIFY
    + release(True, 0) + VERIFY,
    "big": config()
    + malloc(600_000) + malloc(4 << 20) + malloc(20 << 20) + zalloc(700_032)
    + aligned(100, 12) + aligned(70_000, 16, zero=True) + aligned(1 << 20, 20)
    + aligned(1, 25) + aligned(64, 26)
    + realloc(0, 1_200_000) + realloc(1, 256) + realloc(2, 22 << 20) + realloc(4, 5000, keep_align=True)
    + VERIFY + free(3) + free(2) + VERIFY,
    "edges": config(seed=7)
    + b"".join(bytes([0, i & 1]) + edge(i, d) for i in range(24) for d in (-1, 0))
    + VERIFY,
    "madvfree-clock": config(flavor=1, clock=True, purge=2)
    + b"".join(malloc(n) for n in (64, 3000, 100_000, 1 << 20))
    + free(0) + free(0) + tick(60) + tick(60, 1) + VERIFY
    + b"".join(malloc(n) for n in (64, 3000)) + release(False) + release(True, 1) + VERIFY,
    "bare-metal": config(flavor=2, cache=1)
    + b"".join(zalloc(n) for n in (32, 5000, 200_000, 2 << 20)) + free(1) + free(0)
    + release(True) + b"".join(zalloc(n) for n in (32, 5000, 200_000)) + VERIFY,
    "strict-commit": config(flavor=3, purge=1)
    + b"".join(malloc(n) for n in (16, 4096, 65536, 600_000, 17 << 20))
    + free(2) + free(0) + tick(10) + release(True) + VERIFY
    + b"".join(malloc(n) for n in (16, 65536, 600_000)) + VERIFY,
    "thread-exit": config()
    + b"".join(malloc(n, 1) for n in (32, 32, 700, 70_000)) + recreate(1)
    + free(0) + free_remote(0) + VERIFY + b"".join(malloc(n, 1) for n in (32, 700)) + VERIFY,
    "budget": config(budget=3, cache=1)
    + malloc(23 << 20) + malloc(23 << 20) + malloc(23 << 20) + malloc(64) + free(0)
    + malloc(20 << 20) + VERIFY,
}

SEEDS_CORRUPT = {
    "uaf-link": config()
    + malloc(32) + malloc(32) + free(0) + free(0)
    + uaf_write(1, b"\x41" * 8, off=0)
    + b"".join(malloc(32) for _ in range(8)),
    "uaf-low-byte": config()
    + malloc(64) + malloc(64) + malloc(64) + free(1)
    + uaf_write(0, b"\x10", off=0)
    + b"".join(malloc(64) for _ in range(6)),
    "double-free": config() + malloc(48) + malloc(48) + free(1) + double_free(0),
    "double-free-large": config() + malloc(100) + malloc(1 << 20) + free(1) + double_free(0),
    "interior": config() + malloc(64) + interior(0, 8) + malloc(3000) + interior(1, 100, use_free=False),
    "wild": config()
    + malloc(1210) + wild(2, 0, 2) + wild(0, 5, 1) + wild(3, 0) + wild(3, 1) + wild(3, 2)
    + free(0),
    "overflow": config()
    + malloc(24) + malloc(24) + malloc(24)
    + overflow(0, b"\xff" * 16) + overflow(1, b"\x00" * 4, from_size=True)
    + free(2) + free(1) + free(0) + VERIFY,
}


def main():
    for kind, seeds in (("ops", SEEDS_OPS), ("corrupt", SEEDS_CORRUPT)):
        d = os.path.join(HERE, "seeds", kind)
        os.makedirs(d, exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
    # The corrupt target runs the ops seeds too.
    for name, data in SEEDS_OPS.items():
        with open(os.path.join(HERE, "seeds", "corrupt", "ops-" + name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
