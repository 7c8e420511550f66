"""Write sample_bracket_sorts.h: Batcher's odd-even merge sort on 32 and 64 zmm rows as
straight-line C (u32 keys, recursive order), for sample_bracket.c."""

import sys


def merge(lo, hi, r):
    step = r * 2
    if step < hi - lo:
        yield from merge(lo, hi, step)
        yield from merge(lo + r, hi, step)
        yield from ((i, i + r) for i in range(lo + r, hi - r, step))
    else:
        yield (lo, lo + r)


def sort(lo, hi):
    if hi - lo >= 1:
        mid = lo + (hi - lo) // 2
        yield from sort(lo, mid)
        yield from sort(mid + 1, hi)
        yield from merge(lo, hi, 1)


def emit(m, out):
    out.write(f"static inline void sort{m}(__m512i *v) {{\n")
    out.write("  __m512i " + ", ".join(f"r{i} = v[{i}]" for i in range(m)) + ";\n")
    for a, b in sort(0, m - 1):
        out.write(
            f"  {{ __m512i t = _mm512_min_epu32(r{a}, r{b}); "
            f"r{b} = _mm512_max_epu32(r{a}, r{b}); r{a} = t; }}\n"
        )
    out.write("  " + " ".join(f"v[{i}] = r{i};" for i in range(m)) + "\n}\n")


if __name__ == "__main__":
    for m in (32, 64):
        emit(m, sys.stdout)
