"""Allocation-heavy Python workload: dicts, lists, strings and tuples.

Usage: python3 py_alloc.py [scale]

Builds word-frequency dicts from generated text, nested lists of tuples,
string joins/splits and sorting, then checks every result against a value
computed independently.  Exits 1 on a mismatch.  The runner sets
PYTHONMALLOC=malloc so that every object goes through the C allocator
under test instead of CPython's own small-object pool.
"""
import sys


def lcg(seed):
    """Deterministic pseudo-random stream (no dependency on `random`)."""
    x = seed
    while True:
        x = (x * 6364136223846793005 + 1442695040888963407) & ((1 << 64) - 1)
        yield x >> 33


def fail(msg):
    print("error: " + msg, file=sys.stderr)
    sys.exit(1)


def word_counts(rounds):
    syllables = ["ka", "lo", "mi", "ne", "su", "ta", "vo", "re", "zi", "pu"]
    rnd = lcg(42)
    total_words = 0
    for _ in range(rounds):
        words = []
        for _ in range(20000):
            n = next(rnd) % 4 + 1
            words.append("".join(syllables[next(rnd) % 10] for _ in range(n)))
        text = " ".join(words)
        counts = {}
        for w in text.split(" "):
            counts[w] = counts.get(w, 0) + 1
        if sum(counts.values()) != len(words):
            fail("word count mismatch")
        # Distinct words can't exceed what the syllable alphabet allows.
        if len(counts) > 10 + 100 + 1000 + 10000:
            fail("too many distinct words")
        top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        if any(c < 1 for _, c in top):
            fail("bad top words")
        total_words += len(words)
    return total_words


def nested_structures(rounds):
    checksum = 0
    for r in range(rounds):
        table = {}
        for i in range(30000):
            key = ("row", i % 5000, str(i))
            table[key] = [i, i * 2, {"v": i, "s": "x" * (i % 64)}]
        acc = 0
        for (_, _, s), row in table.items():
            acc += row[0] + row[1] + row[2]["v"] + len(row[2]["s"]) - int(s) * 4
        # sum over i of (i % 64): 30000 = 468 * 64 + 48
        expected = 468 * (63 * 64 // 2) + (47 * 48 // 2)
        if acc != expected:
            fail("nested structure checksum %d != %d" % (acc, expected))
        checksum += acc
        del table
    return checksum


def string_churn(rounds):
    n_total = 0
    for r in range(rounds):
        parts = [("%08d" % i) * (1 + i % 7) for i in range(20000)]
        joined = "|".join(parts)
        back = joined.split("|")
        if back != parts:
            fail("split/join round trip failed")
        upper = [p.upper() + p[::-1] for p in back]
        n_total += sum(len(u) for u in upper)
        del parts, joined, back, upper
    return n_total


def list_sorting(rounds):
    rnd = lcg(7)
    for _ in range(rounds):
        data = [(next(rnd) % 100000, str(next(rnd) % 1000)) for _ in range(50000)]
        s = sorted(data)
        if any(s[i] > s[i + 1] for i in range(len(s) - 1)):
            fail("sort order broken")
        if sorted(s, reverse=True)[::-1] != s:
            fail("reverse sort mismatch")


def main():
    scale = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    rounds = max(1, int(round(6 * scale)))
    words = word_counts(rounds)
    nested_structures(rounds)
    chars = string_churn(rounds)
    list_sorting(rounds)
    # string_churn's total length is fully determined: check it.
    expected = 0
    for i in range(20000):
        expected += 2 * 8 * (1 + i % 7)
    if chars != expected * rounds:
        fail("string churn length mismatch")
    print("py_alloc: %d rounds, %d words, %d chars ok" % (rounds, words, chars))


if __name__ == "__main__":
    main()
