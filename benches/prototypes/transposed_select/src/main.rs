//! Per-column selection over transposed tiles for the median at n > 64, prototyped to decide
//! whether it should replace the interpreted network there (issue 3, session 11; results in
//! benches/RESULTS.md, "An Intel Xeon machine, ... (issue 3, session 11)"). Not part of aggkit.
//!
//! Input: blocks of 16 coordinates x n rows of value keys laid out `[row][lane]`, as the
//! library's `load_tile` leaves them. Each mode computes rank `(n - 1) / 2` of every column,
//! is checked against a sort, and is timed (best of 20 passes over the blocks, one thread):
//! see [`Mode`]. AVX-512 (F/BW/DQ/VL) x86-64 only.
//!
//!     cargo run --release -- n [blocks] [gauss|ties|sorted|byz]

use std::arch::x86_64::*;
use std::time::Instant;
include!(concat!(env!("OUT_DIR"), "/net32.rs"));

#[inline(always)]
unsafe fn cm(v: __m512i, p: __m512i, maxmask: u16) -> __m512i {
    let lo = _mm512_min_epu32(v, p);
    let hi = _mm512_max_epu32(v, p);
    _mm512_mask_mov_epi32(lo, maxmask, hi)
}

#[inline(always)]
unsafe fn perm(v: __m512i, idx: [i32; 16]) -> __m512i {
    _mm512_permutexvar_epi32(_mm512_loadu_si512(idx.as_ptr() as *const _), v)
}

const fn xor_idx(x: i32) -> [i32; 16] {
    let mut a = [0i32; 16];
    let mut i = 0;
    while i < 16 {
        a[i] = (i as i32) ^ x;
        i += 1;
    }
    a
}
const fn hi_mask(bit: u32) -> u16 {
    let mut m = 0u16;
    let mut i = 0;
    while i < 16 {
        if i & bit != 0 {
            m |= 1 << i;
        }
        i += 1;
    }
    m
}

/// Sort 16 u32 ascending (bitonic, reversal form).
#[inline(always)]
unsafe fn sort16(mut v: __m512i) -> __m512i {
    v = cm(v, _mm512_shuffle_epi32::<0b10_11_00_01>(v), hi_mask(1)); // i^1
    v = cm(v, _mm512_shuffle_epi32::<0b00_01_10_11>(v), hi_mask(2)); // i^3
    v = cm(v, _mm512_shuffle_epi32::<0b10_11_00_01>(v), hi_mask(1));
    v = cm(v, perm(v, xor_idx(7)), hi_mask(4));
    v = cm(v, _mm512_shuffle_epi32::<0b01_00_11_10>(v), hi_mask(2)); // i^2
    v = cm(v, _mm512_shuffle_epi32::<0b10_11_00_01>(v), hi_mask(1));
    v = cm(v, perm(v, xor_idx(15)), hi_mask(8));
    v = cm(v, _mm512_shuffle_i32x4::<0b10_11_00_01>(v, v), hi_mask(4)); // i^4
    v = cm(v, _mm512_shuffle_epi32::<0b01_00_11_10>(v), hi_mask(2));
    v = cm(v, _mm512_shuffle_epi32::<0b10_11_00_01>(v), hi_mask(1));
    v
}

/// Finish a bitonic 16 (after the first merge step): steps 8,4,2,1.
#[inline(always)]
unsafe fn bitonic_finish16(mut v: __m512i) -> __m512i {
    v = cm(v, _mm512_shuffle_i32x4::<0b01_00_11_10>(v, v), hi_mask(8)); // i^8
    v = cm(v, _mm512_shuffle_i32x4::<0b10_11_00_01>(v, v), hi_mask(4));
    v = cm(v, _mm512_shuffle_epi32::<0b01_00_11_10>(v), hi_mask(2));
    v = cm(v, _mm512_shuffle_epi32::<0b10_11_00_01>(v), hi_mask(1));
    v
}

/// Sort 32 keys in two vectors.
#[inline(always)]
unsafe fn sort32(a: __m512i, b: __m512i) -> (__m512i, __m512i) {
    let a = sort16(a);
    let b = sort16(b);
    let br = perm(b, xor_idx(15));
    let lo = _mm512_min_epu32(a, br);
    let hi = _mm512_max_epu32(a, br);
    (bitonic_finish16(lo), bitonic_finish16(hi))
}

#[inline(always)]
unsafe fn lane(v: __m512i, i: usize) -> u32 {
    let mut a = [0u32; 16];
    _mm512_storeu_si512(a.as_mut_ptr() as *mut _, v);
    a[i]
}

/// The k-th smallest (0-based) of `src[..m]`; `src` is padded with u32::MAX to a multiple of 16
/// and has room for 16 more; `tmp` likewise (>= m + 16).
#[inline(always)]
unsafe fn select_k(
    src: *mut u32,
    mut m: usize,
    mut k: usize,
    tmp: *mut u32,
    stats: &mut [u64; 4],
) -> u32 {
    let maxv = _mm512_set1_epi32(-1);
    let (mut a, mut b) = (src, tmp);
    loop {
        if m <= 16 {
            let v = sort16(_mm512_loadu_si512(a as *const _));
            return lane(v, k);
        }
        if m <= 32 {
            let (x, y) = sort32(
                _mm512_loadu_si512(a as *const _),
                _mm512_loadu_si512(a.add(16) as *const _),
            );
            return if k < 16 { lane(x, k) } else { lane(y, k - 16) };
        }
        stats[0] += 1;
        // sample 16 at stride m/16
        let iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let idx = _mm512_srli_epi32::<5>(_mm512_add_epi32(
            _mm512_mullo_epi32(iota, _mm512_set1_epi32(2 * m as i32)),
            _mm512_set1_epi32(m as i32),
        ));
        let s = sort16(_mm512_i32gather_epi32::<4>(idx, a as *const _));
        // sample position of rank k: (k+0.5)*17/m - 1
        let p = ((2 * k + 1) * 17) as isize / (2 * m) as isize - 1;
        const D: isize = 3;
        let ia = p - D + 1;
        let ib = p + D;
        let lo = if ia <= 0 { 0 } else { lane(s, ia as usize) };
        let hi = if ib >= 15 {
            u32::MAX - 1
        } else {
            lane(s, ib as usize)
        };
        let (vlo, vhi) = (_mm512_set1_epi32(lo as i32), _mm512_set1_epi32(hi as i32));
        let nv = m.div_ceil(16);
        let mut below = 0usize;
        let mut w = 0usize;
        for i in 0..nv {
            let v = _mm512_loadu_si512(a.add(16 * i) as *const _);
            let lt = _mm512_cmplt_epu32_mask(v, vlo);
            let inr = _mm512_mask_cmple_epu32_mask(!lt, v, vhi);
            below += lt.count_ones() as usize;
            _mm512_storeu_si512(b.add(w) as *mut _, _mm512_maskz_compress_epi32(inr, v));
            w += inr.count_ones() as usize;
        }
        // pads (MAX) are never below lo nor <= hi
        if k >= below && k < below + w {
            _mm512_storeu_si512(b.add(w) as *mut _, maxv);
            if lo == hi {
                return lo;
            }
            k -= below;
            m = w;
            std::mem::swap(&mut a, &mut b);
            continue;
        }
        stats[1] += 1;
        // miss: one side
        let mut w2 = 0usize;
        let low_side = k < below;
        for i in 0..nv {
            let v = _mm512_loadu_si512(a.add(16 * i) as *const _);
            let msk = if low_side {
                _mm512_cmplt_epu32_mask(v, vlo)
            } else {
                _mm512_mask_cmpgt_epu32_mask(_mm512_cmpneq_epi32_mask(v, maxv), v, vhi)
            };
            _mm512_storeu_si512(b.add(w2) as *mut _, _mm512_maskz_compress_epi32(msk, v));
            w2 += msk.count_ones() as usize;
        }
        _mm512_storeu_si512(b.add(w2) as *mut _, maxv);
        if !low_side {
            k -= below + w;
        }
        m = w2;
        std::mem::swap(&mut a, &mut b);
    }
}

/// Transpose a 16x16 block of u32: rows r[0..16] -> columns.
#[inline(always)]
unsafe fn transpose16(r: &mut [__m512i; 16]) {
    let mut t = [_mm512_setzero_si512(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    for i in 0..4 {
        r[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        r[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        r[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        r[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    for i in 0..2 {
        for j in 0..4 {
            t[8 * i + j] = _mm512_shuffle_i32x4::<0x88>(r[8 * i + j], r[8 * i + 4 + j]);
            t[8 * i + 4 + j] = _mm512_shuffle_i32x4::<0xdd>(r[8 * i + j], r[8 * i + 4 + j]);
        }
    }
    for j in 0..8 {
        r[j] = _mm512_shuffle_i32x4::<0x88>(t[j], t[8 + j]);
        r[8 + j] = _mm512_shuffle_i32x4::<0xdd>(t[j], t[8 + j]);
    }
}

/// Rows `g .. g + 16` of a `[row][lane]` key block (rows past `n` read as `u32::MAX`, above
/// every real key), transposed: vector `j` holds lane `j`'s 16 keys.
#[inline(always)]
unsafe fn tile_columns(p: *const u32, n: usize, g: usize) -> [__m512i; 16] {
    let mut r = [_mm512_set1_epi32(-1); 16];
    for i in 0..16.min(n - g) {
        r[i] = _mm512_loadu_si512(p.add((g + i) * 16) as *const _);
    }
    transpose16(&mut r);
    r
}

/// One block: kb row-major [row*16 + lane], n rows; out: 16 medians (ranks r_lo..r_hi).
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,popcnt,bmi1,bmi2")]
unsafe fn block(
    kb: &[u32],
    n: usize,
    k: usize,
    cols: &mut Vec<u32>,
    tmp: &mut Vec<u32>,
    out: &mut [u32; 16],
    stats: &mut [u64; 4],
    transpose_only: bool,
) {
    let np = n.div_ceil(16) * 16 + 16;
    cols.resize(16 * np, 0);
    tmp.resize(np + 16, 0);
    let p = kb.as_ptr();
    let c = cols.as_mut_ptr();
    let mut g = 0;
    while g < n {
        let r = tile_columns(p, n, g);
        for j in 0..16 {
            _mm512_storeu_si512(c.add(j * np + g) as *mut _, r[j]);
        }
        g += 16;
    }
    if transpose_only {
        out[0] = *c;
        return;
    }
    for l in 0..16 {
        let col = c.add(l * np);
        out[l] = select_k(col, n, k, tmp.as_mut_ptr(), stats);
    }
}

pub struct Work {
    cols: Vec<u32>,
    surv: Vec<u32>,
    tmp: Vec<u32>,
    surv2: Vec<u32>,
}

const S: usize = 32;

#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,popcnt,bmi1,bmi2")]
unsafe fn sample_sort(sm: &mut [__m512i; S], net: &[(usize, usize)]) {
    for &(a, b) in net {
        let (x, y) = (sm[a], sm[b]);
        sm[a] = _mm512_min_epu32(x, y);
        sm[b] = _mm512_max_epu32(x, y);
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,popcnt,bmi1,bmi2")]
unsafe fn block2(
    kb: &[u32],
    n: usize,
    k: usize,
    ws: &mut Work,
    out: &mut [u32; 16],
    stats: &mut [u64; 4],
    mode: Mode,
) {
    let np = n.div_ceil(16) * 16;
    let ns = np + 16;
    ws.cols.resize(16 * np, 0);
    ws.surv.resize(16 * ns, 0);
    ws.tmp.resize(ns + 16, 0);
    let p = kb.as_ptr();
    // 1. sample
    let mut sm = [_mm512_setzero_si512(); S];
    for j in 0..S {
        let r = (2 * j + 1) * n / (2 * S);
        sm[j] = _mm512_loadu_si512(p.add(r * 16) as *const _);
    }
    if mode == Mode::V2Interp {
        sample_sort(&mut sm, NET32);
    } else {
        sort32_lanes(&mut sm);
    }
    let pos = ((2 * k + 1) * (S + 1)) as isize / (2 * n) as isize - 1;
    const D: isize = 5;
    let (ia, ib) = (pos - D + 1, pos + D);
    let lo = if ia <= 0 {
        _mm512_setzero_si512()
    } else {
        sm[ia as usize]
    };
    let hi = if ib >= S as isize - 1 {
        _mm512_set1_epi32(-2)
    } else {
        sm[ib as usize]
    };
    let mut lo_a = [0u32; 16];
    let mut hi_a = [0u32; 16];
    _mm512_storeu_si512(lo_a.as_mut_ptr() as *mut _, lo);
    _mm512_storeu_si512(hi_a.as_mut_ptr() as *mut _, hi);
    // 2. fused transpose + compress
    let c = ws.cols.as_mut_ptr();
    let sv = ws.surv.as_mut_ptr();
    let mut below = [0u32; 16];
    let mut w = [0u32; 16];
    let mut g = 0;
    while g < n {
        let r = tile_columns(p, n, g);
        for j in 0..16 {
            let v = r[j];
            _mm512_storeu_si512(c.add(j * np + g) as *mut _, v);
            let lt = _mm512_cmplt_epu32_mask(v, _mm512_set1_epi32(lo_a[j] as i32));
            let inr = _mm512_mask_cmple_epu32_mask(!lt, v, _mm512_set1_epi32(hi_a[j] as i32));
            below[j] += lt.count_ones();
            _mm512_storeu_si512(
                sv.add(j * ns + w[j] as usize) as *mut _,
                _mm512_maskz_compress_epi32(inr, v),
            );
            w[j] += inr.count_ones();
        }
        g += 16;
    }
    // 3. per column
    let maxv = _mm512_set1_epi32(-1);
    let mut kk = [0usize; 16];
    let mut mm = [0usize; 16];
    for j in 0..16 {
        let (b, ww) = (below[j] as usize, w[j] as usize);
        let col = sv.add(j * ns);
        if k >= b && k < b + ww {
            _mm512_storeu_si512(col.add(ww) as *mut _, maxv);
            kk[j] = k - b;
            mm[j] = ww;
        } else {
            stats[1] += 1;
            // slow path: copy the column and select
            std::ptr::copy_nonoverlapping(c.add(j * np), col, n);
            _mm512_storeu_si512(col.add(n) as *mut _, maxv);
            kk[j] = k;
            mm[j] = n;
        }
    }
    if mode == Mode::V2Phase12 {
        for j in 0..16 {
            out[j] = mm[j] as u32;
        }
        return;
    }
    if mode != Mode::V2Lockstep {
        for j in 0..16 {
            out[j] = select_k(sv.add(j * ns), mm[j], kk[j], ws.tmp.as_mut_ptr(), stats);
        }
        return;
    }
    // lockstep round 2: sample + bracket for every column with m > 32
    let iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let mut lo2 = [0u32; 16];
    let mut hi2 = [u32::MAX - 1; 16];
    for j in 0..16 {
        let m = mm[j];
        let a = sv.add(j * ns);
        let idx = _mm512_srli_epi32::<5>(_mm512_add_epi32(
            _mm512_mullo_epi32(iota, _mm512_set1_epi32(2 * m as i32)),
            _mm512_set1_epi32(m as i32),
        ));
        let smp = sort16(_mm512_i32gather_epi32::<4>(idx, a as *const _));
        let mut sa = [0u32; 16];
        _mm512_storeu_si512(sa.as_mut_ptr() as *mut _, smp);
        let k = kk[j];
        let p = (((2 * k + 1) * 17) / (2 * m)) as isize - 1;
        const D2: isize = 3;
        let (ia, ib) = (p - D2 + 1, p + D2);
        if ia > 0 {
            lo2[j] = sa[ia as usize];
        }
        if ib < 15 {
            hi2[j] = sa[ib as usize];
        }
    }
    let tmp = ws.tmp.as_mut_ptr();
    let _ = tmp;
    let mut below2 = [0usize; 16];
    let mut w2 = [0usize; 16];
    let sv2 = ws.surv2.as_mut_ptr();
    for j in 0..16 {
        let m = mm[j];
        if m <= 32 {
            continue;
        }
        let a = sv.add(j * ns);
        let b = sv2.add(j * 48);
        let (vlo, vhi) = (
            _mm512_set1_epi32(lo2[j] as i32),
            _mm512_set1_epi32(hi2[j] as i32),
        );
        let mut below = 0usize;
        let mut w = 0usize;
        for i in 0..m.div_ceil(16) {
            let v = _mm512_loadu_si512(a.add(16 * i) as *const _);
            let lt = _mm512_cmplt_epu32_mask(v, vlo);
            let inr = _mm512_mask_cmple_epu32_mask(!lt, v, vhi);
            below += lt.count_ones() as usize;
            if w <= 32 {
                _mm512_storeu_si512(b.add(w) as *mut _, _mm512_maskz_compress_epi32(inr, v));
            }
            w += inr.count_ones() as usize;
        }
        below2[j] = below;
        w2[j] = w;
    }
    for j in 0..16 {
        let (m, k) = (mm[j], kk[j]);
        let (src, kr) = if m <= 32 {
            (sv.add(j * ns), k)
        } else if w2[j] <= 32 && k >= below2[j] && k < below2[j] + w2[j] {
            let b = sv2.add(j * 48);
            _mm512_storeu_si512(b.add(w2[j]) as *mut _, _mm512_set1_epi32(-1));
            if w2[j] <= 16 {
                _mm512_storeu_si512(b.add(16) as *mut _, _mm512_set1_epi32(-1));
            }
            (b, k - below2[j])
        } else {
            stats[1] += 1;
            out[j] = select_k(sv.add(j * ns), m, k, ws.tmp.as_mut_ptr(), stats);
            continue;
        };
        if m <= 16 {
            _mm512_storeu_si512(src.add(16) as *mut _, _mm512_set1_epi32(-1));
        }
        let (x, y) = sort32(
            _mm512_loadu_si512(src as *const _),
            _mm512_loadu_si512(src.add(16) as *const _),
        );
        out[j] = if kr < 16 {
            lane(x, kr)
        } else {
            lane(y, kr - 16)
        };
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// v1: transpose the block, then a bracketed quickselect per column (a 16-key gathered
    /// sample per round, sorted in a zmm register; one-sided re-partition on a miss).
    V1,
    /// v1's transpose alone (its cost).
    Transpose,
    /// v2: a 32-row sample sorted lane-parallel (straight-line network in zmm registers) gives
    /// every column its bracket; one fused pass transposes 16x16 tiles and compresses each
    /// column's in-bracket keys; then v1's per-column select on the survivors.
    V2,
    /// v2 with the sample sorted by an interpreted comparator list.
    V2Interp,
    /// v2 up to the end of the fused pass (its cost without the final selection).
    V2Phase12,
    /// v2 with the final selection in lockstep over the 16 columns (round-2 samples for all
    /// columns, then all passes, then all final sorts).
    V2Lockstep,
}

fn ord32(v: f32) -> u32 {
    let bits = v.to_bits();
    let bits = if bits & 0x7fff_ffff > 0x7f80_0000 {
        f32::NAN.to_bits()
    } else {
        bits
    };
    let neg = ((bits as i32) >> 31) as u32;
    bits ^ (neg | 0x8000_0000)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).map(|s| s.parse().unwrap()).unwrap_or(200);
    let blocks: usize = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(128);
    let dist: &str = args.get(3).map(|s| s.as_str()).unwrap_or("gauss");
    let k = (n - 1) / 2;
    let mut s = 0x9E3779B97F4A7C15u64;
    let mut rnd = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    // Blocks of keys laid out [row][lane], as the library's load_tile leaves them.
    let mut kb = vec![0u32; blocks * n * 16];
    for b in 0..blocks {
        for i in 0..n {
            for l in 0..16 {
                let r = rnd();
                let u = ((r >> 11) as f64 / (1u64 << 53) as f64) as f32;
                let v = match dist {
                    "gauss" => u - 0.5,
                    "ties" => ((r % 5) as f32) - 2.0,
                    "sorted" => i as f32,
                    "byz" => {
                        if i < n / 5 {
                            1e30
                        } else {
                            u
                        }
                    }
                    _ => panic!("dist: gauss | ties | sorted | byz"),
                };
                kb[(b * n + i) * 16 + l] = ord32(v);
            }
        }
    }
    let want: Vec<[u32; 16]> = (0..blocks)
        .map(|b| {
            core::array::from_fn(|l| {
                let mut col: Vec<u32> = (0..n).map(|i| kb[(b * n + i) * 16 + l]).collect();
                col.sort_unstable();
                col[k]
            })
        })
        .collect();
    let mut ws = Work {
        cols: vec![],
        surv: vec![],
        tmp: vec![],
        surv2: vec![0; 16 * 48 + 64],
    };
    let (mut cols, mut tmp) = (Vec::new(), Vec::new());
    let mut out = vec![[0u32; 16]; blocks];
    for mode in [
        Mode::V1,
        Mode::Transpose,
        Mode::V2,
        Mode::V2Interp,
        Mode::V2Phase12,
        Mode::V2Lockstep,
    ] {
        let mut stats = [0u64; 4];
        let mut run = |stats: &mut [u64; 4], out: &mut [[u32; 16]]| unsafe {
            for b in 0..blocks {
                let x = &kb[b * n * 16..(b + 1) * n * 16];
                match mode {
                    Mode::V1 | Mode::Transpose => block(
                        x,
                        n,
                        k,
                        &mut cols,
                        &mut tmp,
                        &mut out[b],
                        stats,
                        mode == Mode::Transpose,
                    ),
                    _ => block2(x, n, k, &mut ws, &mut out[b], stats, mode),
                }
            }
        };
        run(&mut stats, &mut out);
        if !matches!(mode, Mode::Transpose | Mode::V2Phase12) {
            assert_eq!(out, want, "{mode:?}: wrong selection");
        }
        let mut best = f64::MAX;
        for _ in 0..20 {
            let t = Instant::now();
            run(&mut [0; 4], &mut out);
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "n={n} {dist} {mode:?}: {:.1} ns per coordinate ({:.2} us per block); per column: {:.2} sampled rounds, {:.3} misses",
            best / (blocks * 16) as f64 * 1e9,
            best / blocks as f64 * 1e6,
            stats[0] as f64 / (blocks * 16) as f64,
            stats[1] as f64 / (blocks * 16) as f64
        );
    }
}
