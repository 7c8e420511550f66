//! Pairwise squared Euclidean distances `D_ij = Σ_k (x_ik - x_jk)²`, shared by Krum, Multi-Krum
//! and (later) Bulyan and DETOX.
//!
//! **Exact by construction.** Differences are taken directly, never through the Gram identity
//! `|a|² + |b|² - 2ab`, which cancels catastrophically on near-identical inputs (honest
//! gradients) and returns negative "squared distances" in Flower's float32 Krum. Each term is
//! non-negative, so the only error is ordinary rounding: 16 float-typed lane accumulators over
//! a chunk of at most 2048 coordinates (≤ 128 terms per lane), then float64 across chunks.
//! float32 lanes cannot hold every float32 distance: a difference above ~1.8e19 squares to
//! +inf, and below ~1.1e-19 its square is subnormal and loses bits. So a float32 pair whose
//! sum is not finite or is below [`F32_EXACT_MIN`] is summed again in float64 ([`refine`]),
//! where the square of any float32 difference is a normal number: every finite float32 input
//! gets a finite distance with float32-lane rounding at worst.
//!
//! **Deterministic.** `d` is cut into chunks and the chunks into at most 64 parts, both from
//! `(n, d)` alone. Each part is summed by one task in chunk order, parts are combined in order,
//! and every pair goes through the same lane arithmetic wherever it sits in a register block:
//! the result does not depend on thread count, SIMD level or row order.

use crate::alloc;
use crate::error::AggError;
use rayon::prelude::*;

use crate::half::HalfRows;
use crate::input::Rows;
use crate::order::Float;
use crate::simd::{self, Isa, Proof};

const LANES: usize = 16;
/// Rows of the register block: one row `i` against `BLOCK` rows `j` reuses each load of `x_i`.
const BLOCK: usize = 4;

/// Index of pair `i < j` in the packed upper triangle of an `n × n` matrix.
#[inline(always)]
/// A squared distance as a selection reads it: non-finite counts as +inf (never preferred).
pub(crate) fn clean(v: f64) -> f64 {
    if v.is_finite() {
        v
    } else {
        f64::INFINITY
    }
}

/// A full `n × n` distance matrix has `n * n` entries.
pub(crate) fn check_square(rule: &'static str, dist: &[f64], n: usize) -> Result<(), AggError> {
    if Some(dist.len()) != n.checked_mul(n) {
        return Err(AggError::InvalidParameter {
            rule,
            message: format!(
                "the distance matrix must be n x n, got {} entries for n={n}",
                dist.len()
            ),
        });
    }
    Ok(())
}

pub fn pair_index(n: usize, i: usize, j: usize) -> usize {
    debug_assert!(i < j && j < n);
    i * n - i * (i + 1) / 2 + (j - i - 1)
}

/// Coordinates per chunk: all `n` rows of a chunk (~256 KiB) stay in L2 while every pair is
/// formed; at most 2048 so a lane accumulates at most 128 float32 terms.
fn chunk_width<T>(n: usize) -> usize {
    let c = (256 * 1024) / (n.max(1) * std::mem::size_of::<T>());
    (c / LANES * LANES).clamp(64, 2048)
}

#[inline(always)]
fn reduce_lanes<T: Float>(acc: &[T; LANES]) -> f64 {
    let mut v = [0.0f64; LANES];
    for l in 0..LANES {
        v[l] = acc[l].to_f64();
    }
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for l in 0..width {
            v[l] += v[l + width];
        }
    }
    v[0]
}

/// `acc[l] += (a[l] - b[l])²` for one block of `LANES` coordinates.
#[inline(always)]
fn lanes<T: Float>(acc: &mut [T; LANES], a: &[T], b: &[T]) {
    let a: &[T; LANES] = a.try_into().expect("a block has LANES values");
    let b: &[T; LANES] = b.try_into().expect("a block has LANES values");
    for ((s, &x), &y) in acc.iter_mut().zip(a).zip(b) {
        let t = x - y;
        *s = *s + t * t;
    }
}

/// The tail (fewer than `LANES` coordinates) goes into lanes `0..len`, same for every block.
#[inline(always)]
fn tail<T: Float>(acc: &mut [T; LANES], a: &[T], b: &[T]) {
    for (l, (&x, &y)) in a.iter().zip(b).enumerate() {
        let t = x - y;
        acc[l] = acc[l] + t * t;
    }
}

/// Squared distances from `a` to four rows, the portable form (the scalar level; x86 runs the
/// explicit kernels below). float32 rows go at once (each load of `a` is used four times);
/// float64 rows one at a time, because four pairs' 16-lane float64 accumulators would fill the
/// 16 vector registers and spill. Every pair goes through exactly the arithmetic of [`dist_1`],
/// so blocking never changes bits.
#[inline(always)]
fn dist_4<T: Float>(a: &[T], b: [&[T]; 4]) -> [f64; 4] {
    if std::mem::size_of::<T>() > 4 {
        let mut out = [0.0; 4];
        for p in 0..4 {
            out[p] = dist_1(a, b[p]);
        }
        return out;
    }
    let mut acc = [[T::ZERO; LANES]; 4];
    let (mut a0, mut a1, mut a2, mut a3) = (acc[0], acc[1], acc[2], acc[3]);
    let full = a.len() / LANES * LANES;
    let mut k = 0;
    while k < full {
        let av = &a[k..k + LANES];
        lanes(&mut a0, av, &b[0][k..k + LANES]);
        lanes(&mut a1, av, &b[1][k..k + LANES]);
        lanes(&mut a2, av, &b[2][k..k + LANES]);
        lanes(&mut a3, av, &b[3][k..k + LANES]);
        k += LANES;
    }
    tail(&mut a0, &a[full..], &b[0][full..]);
    tail(&mut a1, &a[full..], &b[1][full..]);
    tail(&mut a2, &a[full..], &b[2][full..]);
    tail(&mut a3, &a[full..], &b[3][full..]);
    acc = [a0, a1, a2, a3];
    [
        reduce_lanes(&acc[0]),
        reduce_lanes(&acc[1]),
        reduce_lanes(&acc[2]),
        reduce_lanes(&acc[3]),
    ]
}

/// Squared distance from `a` to `b`.
#[inline(always)]
fn dist_1<T: Float>(a: &[T], b: &[T]) -> f64 {
    let mut acc = [T::ZERO; LANES];
    let full = a.len() / LANES * LANES;
    let mut k = 0;
    while k < full {
        lanes(&mut acc, &a[k..k + LANES], &b[k..k + LANES]);
        k += LANES;
    }
    tail(&mut acc, &a[full..], &b[full..]);
    reduce_lanes(&acc)
}

/// Add the distances over coordinates `c0..c1` of the pairs `i < j`, `i` in `is`, `j` in
/// `js`, into `acc` in the order of [`tile_pairs`], with the given 1x4 and 1x1 kernels.
#[inline(always)]
fn chunk_with<T: Float>(
    rows: &[&[T]],
    (is, js): Tile,
    c0: usize,
    c1: usize,
    acc: &mut [f64],
    d4: impl Fn(&[T], [&[T]; BLOCK]) -> [f64; BLOCK],
    d1: impl Fn(&[T], &[T]) -> f64,
) {
    let n = js.end;
    let mut idx = 0;
    for i in is {
        let a = &rows[i][c0..c1];
        let mut j = js.start.max(i + 1);
        while j + BLOCK <= n {
            let b: [&[T]; BLOCK] = [
                &rows[j][c0..c1],
                &rows[j + 1][c0..c1],
                &rows[j + 2][c0..c1],
                &rows[j + 3][c0..c1],
            ];
            let v = d4(a, b);
            for p in 0..BLOCK {
                acc[idx + p] += v[p];
            }
            idx += BLOCK;
            j += BLOCK;
        }
        while j < n {
            acc[idx] += d1(a, &rows[j][c0..c1]);
            idx += 1;
            j += 1;
        }
    }
}

/// Rows `is` against rows `js` (pairs `i < j` only).
type Tile = (std::ops::Range<usize>, std::ops::Range<usize>);

/// The pairs of a tile, in the order [`chunk_with`] accumulates them.
fn tile_pairs((is, js): Tile) -> impl Iterator<Item = (usize, usize)> {
    is.flat_map(move |i| (js.start.max(i + 1)..js.end).map(move |j| (i, j)))
}

crate::simd::per_level! {
    avx512;
    /// One chunk of coordinates of a tile's pairs: the explicit kernels below (float32 with
    /// AVX2 on both x86 levels; float64 with AVX-512 or AVX2), or the portable body.
    fn chunk[T: Float][T](isa: I, rows: &[&[T]], tile: Tile, c0: usize, c1: usize, acc: &mut [f64]) {
        #[cfg(target_arch = "x86_64")]
        if let (Some(t), Some(is)) = (isa.as_avx512(), T::is_f64()) {
            return chunk_with(
                (is.rows)(rows),
                tile,
                c0,
                c1,
                acc,
                #[inline(always)]
                |a, b| avx512::dist_4_f64(t, a, b),
                #[inline(always)]
                |a, b| avx512::dist_1_f64(t, a, b),
            );
        }
        #[cfg(target_arch = "x86_64")]
        if let (Some(t), Some(is)) = (isa.as_avx2(), T::is_f32()) {
            return chunk_with(
                (is.rows)(rows),
                tile,
                c0,
                c1,
                acc,
                #[inline(always)]
                |a, b| avx2::dist_4_f32(t, a, b),
                #[inline(always)]
                |a, b| avx2::dist_1_f32(t, a, b),
            );
        }
        #[cfg(target_arch = "x86_64")]
        if let (Some(t), Some(is)) = (isa.as_avx2(), T::is_f64()) {
            return chunk_with(
                (is.rows)(rows),
                tile,
                c0,
                c1,
                acc,
                #[inline(always)]
                |a, b| avx2::dist_4_f64(t, a, b),
                #[inline(always)]
                |a, b| avx2::dist_1_f64(t, a, b),
            );
        }
        let _ = isa;
        chunk_with(rows, tile, c0, c1, acc, dist_4, dist_1)
    }
}

/// float32 distances with explicit AVX2 intrinsics: the compiler would not vectorise the lane
/// loops to 256 bits. Lane `l` of the portable code is lane `l % 8` of register `l / 8` here,
/// and each lane runs the same sub, mul, add (no FMA), so both paths give the same bits. Each
/// function takes the `Avx2` token that proves the CPU runs the instructions.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{reduce_lanes, tail, BLOCK, LANES};
    use crate::simd::Avx2;

    #[inline(always)]
    fn step(_: Avx2, acc: &mut [__m256; 2], a0: __m256, a1: __m256, b: &[f32], k: usize) {
        let b = &b[k..k + LANES];
        // SAFETY: the token proves AVX2; `b` has LANES = 16 floats, so both unaligned 8-float
        // loads are in bounds.
        unsafe {
            let (b0, b1) = (
                _mm256_loadu_ps(b.as_ptr()),
                _mm256_loadu_ps(b.as_ptr().add(8)),
            );
            let (t0, t1) = (_mm256_sub_ps(a0, b0), _mm256_sub_ps(a1, b1));
            acc[0] = _mm256_add_ps(acc[0], _mm256_mul_ps(t0, t0));
            acc[1] = _mm256_add_ps(acc[1], _mm256_mul_ps(t1, t1));
        }
    }

    #[inline(always)]
    fn finish(_: Avx2, acc: &[__m256; 2], a: &[f32], b: &[f32], full: usize) -> f64 {
        if full == a.len() {
            // No tail: `reduce_lanes` in registers, the same float64 additions in the same
            // tree (lane l + lane l + 8, then + 4, + 2, + 1; float32 to float64 is exact).
            // SAFETY: the token proves AVX2.
            return unsafe {
                let wide = |v: __m128| _mm256_cvtps_pd(v);
                let (a0, a1) = (acc[0], acc[1]);
                let lo = _mm256_add_pd(
                    wide(_mm256_castps256_ps128(a0)),
                    wide(_mm256_castps256_ps128(a1)),
                );
                let hi = _mm256_add_pd(
                    wide(_mm256_extractf128_ps(a0, 1)),
                    wide(_mm256_extractf128_ps(a1, 1)),
                );
                let v4 = _mm256_add_pd(lo, hi);
                let v2 = _mm_add_pd(_mm256_castpd256_pd128(v4), _mm256_extractf128_pd(v4, 1));
                _mm_cvtsd_f64(_mm_add_sd(v2, _mm_unpackhi_pd(v2, v2)))
            };
        }
        let mut lanes = [0.0f32; LANES];
        // SAFETY: the token proves AVX2; `lanes` holds 16 floats: two 8-float unaligned stores.
        unsafe {
            _mm256_storeu_ps(lanes.as_mut_ptr(), acc[0]);
            _mm256_storeu_ps(lanes.as_mut_ptr().add(8), acc[1]);
        }
        tail(&mut lanes, &a[full..], &b[full..]);
        reduce_lanes(&lanes)
    }

    /// Two 8-float halves of `a[k..k + 16]`.
    #[inline(always)]
    fn load_a(_: Avx2, a: &[f32], k: usize) -> (__m256, __m256) {
        let av = &a[k..k + LANES];
        // SAFETY: the token proves AVX2; `av` has 16 floats: two 8-float unaligned loads.
        unsafe {
            (
                _mm256_loadu_ps(av.as_ptr()),
                _mm256_loadu_ps(av.as_ptr().add(8)),
            )
        }
    }

    #[inline(always)]
    fn zero(_: Avx2) -> __m256 {
        // SAFETY: the token proves AVX2.
        unsafe { _mm256_setzero_ps() }
    }

    #[inline(always)]
    pub(super) fn dist_4_f32(t: Avx2, a: &[f32], b: [&[f32]; BLOCK]) -> [f64; BLOCK] {
        let full = a.len() / LANES * LANES;
        let mut acc = [[zero(t); 2]; BLOCK];
        let mut k = 0;
        while k < full {
            let (a0, a1) = load_a(t, a, k);
            for p in 0..BLOCK {
                step(t, &mut acc[p], a0, a1, b[p], k);
            }
            k += LANES;
        }
        // A loop, not `array::from_fn`: a closure called through it may stay out of line, and
        // out of line it would not be compiled with the clone's features.
        let mut out = [0.0; BLOCK];
        for p in 0..BLOCK {
            out[p] = finish(t, &acc[p], a, b[p], full);
        }
        out
    }

    #[inline(always)]
    pub(super) fn dist_1_f32(t: Avx2, a: &[f32], b: &[f32]) -> f64 {
        let full = a.len() / LANES * LANES;
        let mut acc = [zero(t); 2];
        let mut k = 0;
        while k < full {
            let (a0, a1) = load_a(t, a, k);
            step(t, &mut acc, a0, a1, b, k);
            k += LANES;
        }
        finish(t, &acc, a, b, full)
    }

    /// Lanes `8h..8h + 8` of the float64 accumulators: two 4-double registers per pair.
    type Half = [__m256d; 2];

    #[inline(always)]
    fn zero_pd(_: Avx2) -> __m256d {
        // SAFETY: the token proves AVX2.
        unsafe { _mm256_setzero_pd() }
    }

    /// `a[k..k + 8]` as two 4-double registers.
    #[inline(always)]
    fn load_pd(_: Avx2, a: &[f64], k: usize) -> (__m256d, __m256d) {
        let av = &a[k..k + 8];
        // SAFETY: the token proves AVX2; `av` has 8 doubles: two 4-double unaligned loads.
        unsafe {
            (
                _mm256_loadu_pd(av.as_ptr()),
                _mm256_loadu_pd(av.as_ptr().add(4)),
            )
        }
    }

    #[inline(always)]
    fn step_pd(t: Avx2, acc: &mut Half, a0: __m256d, a1: __m256d, b: &[f64], k: usize) {
        let (b0, b1) = load_pd(t, b, k);
        // SAFETY: the token proves AVX2.
        unsafe {
            let (t0, t1) = (_mm256_sub_pd(a0, b0), _mm256_sub_pd(a1, b1));
            acc[0] = _mm256_add_pd(acc[0], _mm256_mul_pd(t0, t0));
            acc[1] = _mm256_add_pd(acc[1], _mm256_mul_pd(t1, t1));
        }
    }

    #[inline(always)]
    fn store_pd(_: Avx2, acc: &Half, lanes: &mut [f64]) {
        let lanes = &mut lanes[..8];
        // SAFETY: the token proves AVX2; `lanes` holds 8 doubles: two 4-double stores.
        unsafe {
            _mm256_storeu_pd(lanes.as_mut_ptr(), acc[0]);
            _mm256_storeu_pd(lanes.as_mut_ptr().add(4), acc[1]);
        }
    }

    /// Squared distances from `a` to four float64 rows. The 16 lanes of four pairs would need
    /// all 16 registers, so the kernel makes two passes over the chunk: lanes 0-7 (the first 8
    /// doubles of every 16), then lanes 8-15. A lane only ever sees its own coordinates, in
    /// order, so the halves give the portable kernel's bits; the chunk stays in L2 for both.
    #[inline(always)]
    pub(super) fn dist_4_f64(t: Avx2, a: &[f64], b: [&[f64]; BLOCK]) -> [f64; BLOCK] {
        let full = a.len() / LANES * LANES;
        let mut lanes = [[0.0f64; LANES]; BLOCK];
        for h in [0, 8] {
            let mut acc = [[zero_pd(t); 2]; BLOCK];
            let mut k = h;
            while k < full {
                let (a0, a1) = load_pd(t, a, k);
                for p in 0..BLOCK {
                    step_pd(t, &mut acc[p], a0, a1, b[p], k);
                }
                k += LANES;
            }
            for p in 0..BLOCK {
                store_pd(t, &acc[p], &mut lanes[p][h..]);
            }
        }
        let mut out = [0.0; BLOCK];
        for p in 0..BLOCK {
            tail(&mut lanes[p], &a[full..], &b[p][full..]);
            out[p] = reduce_lanes(&lanes[p]);
        }
        out
    }

    #[inline(always)]
    pub(super) fn dist_1_f64(t: Avx2, a: &[f64], b: &[f64]) -> f64 {
        let full = a.len() / LANES * LANES;
        let mut lanes = [0.0f64; LANES];
        for h in [0, 8] {
            let mut acc = [zero_pd(t); 2];
            let mut k = h;
            while k < full {
                let (a0, a1) = load_pd(t, a, k);
                step_pd(t, &mut acc, a0, a1, b, k);
                k += LANES;
            }
            store_pd(t, &acc, &mut lanes[h..]);
        }
        tail(&mut lanes, &a[full..], &b[full..]);
        reduce_lanes(&lanes)
    }
}

/// float64 distances with AVX-512: the 16 lanes of a pair are two 8-double registers, so four
/// pairs take 8 of the 32 and the chunk is read once. Same lanes and operations as the portable
/// code (sub, mul, add; no FMA), so the same bits.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{reduce_lanes, tail, BLOCK, LANES};
    use crate::simd::Avx512;

    type Acc = [__m512d; 2];

    #[inline(always)]
    fn zero(_: Avx512) -> Acc {
        // SAFETY: the token proves AVX-512F.
        unsafe { [_mm512_setzero_pd(); 2] }
    }

    /// `a[k..k + 16]` as two 8-double registers.
    #[inline(always)]
    fn load(_: Avx512, a: &[f64], k: usize) -> (__m512d, __m512d) {
        let av = &a[k..k + LANES];
        // SAFETY: the token proves AVX-512F; `av` has 16 doubles: two 8-double unaligned loads.
        unsafe {
            (
                _mm512_loadu_pd(av.as_ptr()),
                _mm512_loadu_pd(av.as_ptr().add(8)),
            )
        }
    }

    #[inline(always)]
    fn step(t: Avx512, acc: &mut Acc, a0: __m512d, a1: __m512d, b: &[f64], k: usize) {
        let (b0, b1) = load(t, b, k);
        // SAFETY: the token proves AVX-512F.
        unsafe {
            let (t0, t1) = (_mm512_sub_pd(a0, b0), _mm512_sub_pd(a1, b1));
            acc[0] = _mm512_add_pd(acc[0], _mm512_mul_pd(t0, t0));
            acc[1] = _mm512_add_pd(acc[1], _mm512_mul_pd(t1, t1));
        }
    }

    #[inline(always)]
    fn finish(_: Avx512, acc: &Acc, a: &[f64], b: &[f64], full: usize) -> f64 {
        let mut lanes = [0.0f64; LANES];
        // SAFETY: the token proves AVX-512F; `lanes` holds 16 doubles: two 8-double stores.
        unsafe {
            _mm512_storeu_pd(lanes.as_mut_ptr(), acc[0]);
            _mm512_storeu_pd(lanes.as_mut_ptr().add(8), acc[1]);
        }
        tail(&mut lanes, &a[full..], &b[full..]);
        reduce_lanes(&lanes)
    }

    #[inline(always)]
    pub(super) fn dist_4_f64(t: Avx512, a: &[f64], b: [&[f64]; BLOCK]) -> [f64; BLOCK] {
        let full = a.len() / LANES * LANES;
        let mut acc = [zero(t); BLOCK];
        let mut k = 0;
        while k < full {
            let (a0, a1) = load(t, a, k);
            for p in 0..BLOCK {
                step(t, &mut acc[p], a0, a1, b[p], k);
            }
            k += LANES;
        }
        let mut out = [0.0; BLOCK];
        for p in 0..BLOCK {
            out[p] = finish(t, &acc[p], a, b[p], full);
        }
        out
    }

    #[inline(always)]
    pub(super) fn dist_1_f64(t: Avx512, a: &[f64], b: &[f64]) -> f64 {
        let full = a.len() / LANES * LANES;
        let mut acc = zero(t);
        let mut k = 0;
        while k < full {
            let (a0, a1) = load(t, a, k);
            step(t, &mut acc, a0, a1, b, k);
            k += LANES;
        }
        finish(t, &acc, a, b, full)
    }
}

/// Where the distance passes read their rows: float32 / float64 rows in place, or
/// half-precision rows widened to float32 one chunk at a time into a buffer of the task's (the
/// chunk's values are exact float32 copies, so the sums are those of the widened input).
trait Source: Sync {
    type T: Float;
    fn n(&self) -> usize;
    fn d(&self) -> usize;
    /// `f(rows, c0, c1)` where `rows[i][c0..c1]` holds columns `c0..c1` of row `i` for every
    /// `i` in `need` (rows outside it may be empty).
    fn with_chunk<R>(
        &self,
        need: &Tile,
        c0: usize,
        c1: usize,
        scratch: &mut Vec<Self::T>,
        f: impl FnOnce(&[&[Self::T]], usize, usize) -> R,
    ) -> R;
    /// The float64 sum of the pair `(i, j)` ([`dist_f64`] over the values as float64).
    fn pair_f64(&self, i: usize, j: usize) -> f64;
    /// Whether the float32-lane sums need [`refine`] (float32 lanes: over- and underflow).
    fn refines(&self) -> bool {
        Self::T::is_f32().is_some()
    }
}

impl<T: Float> Source for Rows<'_, T> {
    type T = T;
    fn n(&self) -> usize {
        Rows::n(self)
    }
    fn d(&self) -> usize {
        Rows::d(self)
    }
    fn with_chunk<R>(
        &self,
        _: &Tile,
        c0: usize,
        c1: usize,
        _: &mut Vec<T>,
        f: impl FnOnce(&[&[T]], usize, usize) -> R,
    ) -> R {
        f(self.rows(), c0, c1)
    }
    fn pair_f64(&self, i: usize, j: usize) -> f64 {
        dist_f64(self.row(i), self.row(j))
    }
}

/// The rows of tile `(is, js)` that a [`Source`] transforms, one chunk of `w` columns each,
/// written by `fill(i, dst)` into the task's buffer: row `i` of the result is its chunk (rows
/// outside the tile are empty), columns `0..w`.
fn buffered_chunk<'s, T: Float>(
    n: usize,
    (is, js): &Tile,
    w: usize,
    scratch: &'s mut Vec<T>,
    fill: impl Fn(usize, &mut [T]),
) -> Vec<&'s [T]> {
    let mut need: Vec<usize> = is.clone().chain(js.clone()).collect();
    need.sort_unstable();
    need.dedup();
    scratch.resize(need.len() * w, T::ZERO);
    for (&i, dst) in need.iter().zip(scratch.chunks_exact_mut(w)) {
        fill(i, dst);
    }
    let mut rows: Vec<&[T]> = vec![&[]; n];
    for (&i, src) in need.iter().zip(scratch.chunks_exact(w)) {
        rows[i] = src;
    }
    rows
}

impl Source for HalfRows<'_> {
    type T = f32;
    fn n(&self) -> usize {
        HalfRows::n(self)
    }
    fn d(&self) -> usize {
        HalfRows::d(self)
    }
    fn with_chunk<R>(
        &self,
        tile: &Tile,
        c0: usize,
        c1: usize,
        scratch: &mut Vec<f32>,
        f: impl FnOnce(&[&[f32]], usize, usize) -> R,
    ) -> R {
        let rows = buffered_chunk(self.n(), tile, c1 - c0, scratch, |i, dst| {
            self.widen_into(i, c0, c1, dst)
        });
        f(&rows, 0, c1 - c0)
    }
    fn pair_f64(&self, i: usize, j: usize) -> f64 {
        let wide = |r: usize| -> Vec<f32> {
            let mut v = vec![0.0; self.d()];
            self.widen_into(r, 0, self.d(), &mut v);
            v
        };
        dist_f64(&wide(i), &wide(j))
    }
}

/// float64 rows, row `i` multiplied by `2^-e_i` one chunk at a time into the task's buffer
/// ([`power_factors`]); a `None` row reads as zeros. FoolsGold's histories: the scaling keeps
/// every square and sum finite without a scaled copy of the `(n, d)` histories.
pub struct ScaledRows<'a> {
    rows: Vec<Option<&'a [f64]>>,
    factors: Vec<(f64, f64)>,
    d: usize,
}

impl<'a> ScaledRows<'a> {
    /// `rows[i]` scaled by `2^-exps[i]`; `rows` all of length `d`.
    pub fn new(rows: Vec<Option<&'a [f64]>>, exps: &[i32], d: usize) -> Self {
        assert_eq!(rows.len(), exps.len());
        assert!(rows.iter().flatten().all(|r| r.len() == d));
        let factors = exps.iter().map(|&e| power_factors(-e)).collect();
        ScaledRows { rows, factors, d }
    }

    /// Columns `c0..c1` of row `i`, scaled, into `dst`.
    fn scaled_into(&self, i: usize, c0: usize, c1: usize, dst: &mut [f64]) {
        match self.rows[i] {
            None => dst.fill(0.0),
            Some(r) => {
                let (s1, s2) = self.factors[i];
                for (o, &v) in dst.iter_mut().zip(&r[c0..c1]) {
                    *o = v * s1 * s2;
                }
            }
        }
    }

    /// The Euclidean norm of every scaled row, summed in 8 lanes in coordinate order (one
    /// task per row: independent of the thread count).
    pub fn norms(&self) -> Vec<f64> {
        let one = |i: usize| -> f64 {
            let Some(r) = self.rows[i] else { return 0.0 };
            let (s1, s2) = self.factors[i];
            let mut sq = [0.0f64; 8];
            let rc = r.chunks_exact(8);
            let rest = rc.remainder();
            for p in rc {
                for l in 0..8 {
                    let v = p[l] * s1 * s2;
                    sq[l] += v * v;
                }
            }
            for (l, &p) in rest.iter().enumerate() {
                let v = p * s1 * s2;
                sq[l] += v * v;
            }
            fold8(sq).sqrt()
        };
        let n = self.rows.len();
        if !crate::pool::split(n * self.d) {
            (0..n).map(one).collect()
        } else {
            crate::pool::install(|| (0..n).into_par_iter().map(one).collect())
        }
    }
}

impl Source for ScaledRows<'_> {
    type T = f64;
    fn n(&self) -> usize {
        self.rows.len()
    }
    fn d(&self) -> usize {
        self.d
    }
    fn with_chunk<R>(
        &self,
        tile: &Tile,
        c0: usize,
        c1: usize,
        scratch: &mut Vec<f64>,
        f: impl FnOnce(&[&[f64]], usize, usize) -> R,
    ) -> R {
        let rows = buffered_chunk(self.rows.len(), tile, c1 - c0, scratch, |i, dst| {
            self.scaled_into(i, c0, c1, dst)
        });
        f(&rows, 0, c1 - c0)
    }
    fn pair_f64(&self, i: usize, j: usize) -> f64 {
        let full = |r: usize| -> Vec<f64> {
            let mut v = vec![0.0; self.d];
            self.scaled_into(r, 0, self.d, &mut v);
            v
        };
        dist_f64(&full(i), &full(j))
    }
}

/// [`pairwise_sq_dists`] of scaled float64 rows, as a full `n × n` matrix.
pub fn pairwise_sq_dists_scaled(x: &ScaledRows<'_>) -> Result<Vec<f64>, AggError> {
    sq_dists(x)
}

/// All pairwise squared distances of the rows of `x`, as a full symmetric `n × n` row-major
/// matrix with a zero diagonal ([`AggError::OutOfMemory`] where it cannot be allocated).
pub fn pairwise_sq_dists<T: Float>(x: &Rows<'_, T>) -> Result<Vec<f64>, AggError> {
    sq_dists(x)
}

/// [`pairwise_sq_dists`] of half-precision rows: the float32 kernel on each chunk widened, so
/// the bits of the float32 call on the widened input, without widening the input as a whole.
pub fn pairwise_sq_dists_half(x: &HalfRows<'_>) -> Result<Vec<f64>, AggError> {
    sq_dists(x)
}

fn sq_dists<S: Source>(x: &S) -> Result<Vec<f64>, AggError> {
    let (n, d) = (x.n(), x.d());
    // The full matrix first: if it fits, so do the packed triangle and the partial sums.
    let mut full = alloc::zeroed::<f64>(alloc::square(n)?)?;
    let npairs = n * (n - 1) / 2;
    if npairs == 0 || d == 0 {
        return Ok(full);
    }
    let proof = simd::proof();
    if n > 2 * PAIR_BLOCK {
        let mut tri = tiled_sq_dists(x, proof)?;
        refine(x, &mut tri);
        symmetric(n, &tri, &mut full);
        return Ok(full);
    }
    let width = chunk_width::<S::T>(n);
    let nchunks = d.div_ceil(width);
    let max_parts = ((32usize << 20) / (npairs * 8)).clamp(1, 64);
    let parts = nchunks.min(max_parts);
    let all: Tile = (0..n, 0..n);
    let part = |p: usize| -> Vec<f64> {
        let mut acc = vec![0.0; npairs];
        let mut scratch = Vec::new();
        for c in (p * nchunks / parts)..((p + 1) * nchunks / parts) {
            let c0 = c * width;
            x.with_chunk(
                &all,
                c0,
                (c0 + width).min(d),
                &mut scratch,
                |rows, c0, c1| chunk(proof, rows, all.clone(), c0, c1, &mut acc),
            );
        }
        acc
    };
    let partials: Vec<Vec<f64>> = if parts == 1 {
        vec![part(0)]
    } else {
        crate::pool::install(|| (0..parts).into_par_iter().map(part).collect())
    };
    let mut tri = alloc::zeroed::<f64>(npairs)?;
    for p in &partials {
        for (t, v) in tri.iter_mut().zip(p) {
            *t += v;
        }
    }
    refine(x, &mut tri);
    symmetric(n, &tri, &mut full);
    Ok(full)
}

/// The smallest float32-lane sum [`refine`] keeps. Below it the lanes may have met subnormal
/// squares, each off by at most 2^-149: `d` of them are at most `d * 2^-149` in all, which is
/// `2^-89 * d` relative to a sum of `2^-60` (below float32's own rounding for any `d < 2^60`).
const F32_EXACT_MIN: f64 = 1.0 / (1u64 << 60) as f64;

/// Sum again in float64 the float32 pairs of the packed triangle `tri` whose float32 lanes
/// overflowed (a non-finite sum) or may have underflowed (below [`F32_EXACT_MIN`]). A pair's
/// value depends only on its two rows, so the result stays independent of thread count, SIMD
/// level and row order. Non-finite input stays non-finite (NaN or inf, as IEEE gives it).
fn refine<S: Source>(x: &S, tri: &mut [f64]) {
    if !x.refines() {
        return;
    }
    let n = x.n();
    let redo: Vec<(usize, usize)> = (0..n)
        .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
        .filter(|&(i, j)| {
            let v = tri[pair_index(n, i, j)];
            !(v.is_finite() && v >= F32_EXACT_MIN)
        })
        .collect();
    if redo.is_empty() {
        return;
    }
    let one = |&(i, j): &(usize, usize)| x.pair_f64(i, j);
    let values: Vec<f64> = if !crate::pool::split(redo.len() * x.d()) {
        redo.iter().map(one).collect()
    } else {
        crate::pool::install(|| redo.par_iter().map(one).collect())
    };
    for (&(i, j), v) in redo.iter().zip(values) {
        tri[pair_index(n, i, j)] = v;
    }
}

/// `Σ (a_k - b_k)²` with every difference and square in float64: 8 lane sums over fixed blocks,
/// then a fixed tree, so the order depends on the length alone.
fn dist_f64<A: Float, B: Float>(a: &[A], b: &[B]) -> f64 {
    let mut acc = [0.0f64; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (p, q) in ac.zip(bc) {
        for l in 0..8 {
            let t = p[l].to_f64() - q[l].to_f64();
            acc[l] += t * t;
        }
    }
    for (l, (p, q)) in ar.iter().zip(br).enumerate() {
        let t = p.to_f64() - q.to_f64();
        acc[l] += t * t;
    }
    ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))
}

/// Fill the zeroed `n × n` matrix `full` from a packed upper triangle (zero diagonal).
fn symmetric(n: usize, tri: &[f64], full: &mut [f64]) {
    for i in 0..n {
        for j in i + 1..n {
            let v = tri[pair_index(n, i, j)];
            full[i * n + j] = v;
            full[j * n + i] = v;
        }
    }
}

/// Rows per side of a pair tile of [`tiled_sq_dists`].
const PAIR_BLOCK: usize = 64;

/// The packed triangle for large `n`, tile by tile: all `n` rows of a chunk no longer fit in
/// L2 with chunks long enough to amortise each pair's lane reduction (n = 1000 left chunks of
/// 64 coordinates: 20 GFLOP/s per core). A task takes two blocks of [`PAIR_BLOCK`] rows and
/// walks `d` in chunks of which both blocks fit in L2 (~512 KiB), adding each chunk's value of
/// every pair into its float64 sum in chunk order: the bits depend only on the pair's rows and
/// `(n, d)`, never on the thread count or the tile a pair sits in.
fn tiled_sq_dists<S: Source>(x: &S, proof: Proof) -> Result<Vec<f64>, AggError> {
    let (n, d) = (x.n(), x.d());
    let bytes = 2 * PAIR_BLOCK * std::mem::size_of::<S::T>();
    let width = ((512 * 1024) / bytes / LANES * LANES).clamp(64, 2048);
    let nb = n.div_ceil(PAIR_BLOCK);
    let block = |b: usize| b * PAIR_BLOCK..((b + 1) * PAIR_BLOCK).min(n);
    let tiles: Vec<Tile> = (0..nb)
        .flat_map(|a| (a..nb).map(move |b| (block(a), block(b))))
        .collect();
    let run = |tile: &Tile| -> Vec<f64> {
        let mut acc = vec![0.0; tile_pairs(tile.clone()).count()];
        let mut scratch = Vec::new();
        let mut c0 = 0;
        while c0 < d {
            let c1 = (c0 + width).min(d);
            x.with_chunk(tile, c0, c1, &mut scratch, |rows, c0, c1| {
                chunk(proof, rows, tile.clone(), c0, c1, &mut acc)
            });
            c0 = c1;
        }
        acc
    };
    let sums: Vec<Vec<f64>> = crate::pool::install(|| tiles.par_iter().map(run).collect());
    let mut tri = alloc::zeroed::<f64>(n * (n - 1) / 2)?;
    for (tile, acc) in tiles.iter().zip(&sums) {
        for ((i, j), &v) in tile_pairs(tile.clone()).zip(acc) {
            tri[pair_index(n, i, j)] = v;
        }
    }
    Ok(tri)
}

/// `2^k` for `k` in float64's exponent range, subnormal powers included (exact).
pub(crate) fn exp2(k: i32) -> f64 {
    match k {
        1024.. => f64::INFINITY,
        -1022..=1023 => f64::from_bits(((k + 1023) as u64) << 52),
        -1074..=-1023 => f64::from_bits(1u64 << (k + 1074)),
        _ => 0.0,
    }
}

/// The Euclidean distance between two finite vectors whose float64 sum of squares overflows,
/// as `(e, m)`: `||a - b|| = 2^(e+1) m`, from the half differences `h = a/2 - b/2` (which cannot
/// overflow) scaled by `2^-e`, the power of two of the largest of them, so that `m` lies in
/// `[0.5, sqrt(d)]`: neither the squares nor `m` can overflow or underflow to nothing.
pub(crate) fn wide_dist<A: Float, B: Float>(a: &[A], b: &[B]) -> (i32, f64) {
    let half = |(&x, &y): (&A, &B)| x.to_f64() * 0.5 - y.to_f64() * 0.5;
    let top = a
        .iter()
        .zip(b)
        .map(half)
        .fold(0.0f64, |m, h| m.max(h.abs()));
    // frexp: top = f 2^e with f in [0.5, 1) (top is normal: the squares overflowed).
    let e = ((top.to_bits() >> 52) & 0x7ff) as i32 - 1022;
    let p = exp2(-e);
    let m = a
        .iter()
        .zip(b)
        .map(|xy| {
            let h = half(xy) * p;
            h * h
        })
        .sum::<f64>()
        .sqrt();
    (e, m)
}

/// Euclidean distances `||x_i - z||` of every row to one float64 point, one task per row
/// (each summed in float64 in coordinate order, so independent of the thread count).
pub fn dists_to<T: Float>(x: &Rows<'_, T>, z: &[f64]) -> Vec<f64> {
    assert_eq!(z.len(), x.d());
    let one = |r: &&[T]| dist_f64(r, z).sqrt();
    if !crate::pool::split(x.n() * x.d()) {
        x.rows().iter().map(one).collect()
    } else {
        crate::pool::install(|| x.rows().par_iter().map(one).collect())
    }
}

#[cfg(test)]
/// A row's dot product with `z` and its norm, both of the row scaled by `2^-e`, and `e`: the
/// exponent of the row's largest magnitude (`frexp`), 0 for a zero row.
///
/// Scaling by a power of two is exact and brings the largest value into `[0.5, 1)`, so the
/// float64 sums neither overflow nor lose a tiny row to underflow: `x . z = dot 2^e` and
/// `||x|| = norm 2^e` for any finite row. A row holding NaN or ±inf gives NaN. Sums in 8 lanes
/// in coordinate order (independent of the thread count).
pub fn scaled_dot_norm<T: Float>(r: &[T], z: &[f64]) -> (f64, f64, i32) {
    assert_eq!(r.len(), z.len());
    // One pass for the largest magnitude and finiteness, in 8 lanes (vectorised): `v * 0` is 0
    // for a finite value and NaN for NaN or ±inf.
    let (mut top, mut bad) = ([0.0f64; 8], [0.0f64; 8]);
    let rc = r.chunks_exact(8);
    let rest = rc.remainder();
    for p in rc {
        for l in 0..8 {
            let v = p[l].to_f64();
            top[l] = top[l].max(v.abs());
            bad[l] += v * 0.0;
        }
    }
    for (l, p) in rest.iter().enumerate() {
        let v = p.to_f64();
        top[l] = top[l].max(v.abs());
        bad[l] += v * 0.0;
    }
    if bad.iter().any(|b| *b != 0.0) {
        return (f64::NAN, f64::NAN, 0);
    }
    let top = top.iter().fold(0.0f64, |a, &b| a.max(b));
    if top == 0.0 {
        return (0.0, 0.0, 0);
    }
    let e = exponent(top);
    let (s1, s2) = power_factors(-e);
    let (mut dot, mut sq) = ([0.0f64; 8], [0.0f64; 8]);
    let (rc, zc) = (r.chunks_exact(8), z.chunks_exact(8));
    let (rr, zr) = (rc.remainder(), zc.remainder());
    for (p, q) in rc.zip(zc) {
        for l in 0..8 {
            let v = p[l].to_f64() * s1 * s2;
            dot[l] += v * q[l];
            sq[l] += v * v;
        }
    }
    for (l, (p, q)) in rr.iter().zip(zr).enumerate() {
        let v = p.to_f64() * s1 * s2;
        dot[l] += v * q;
        sq[l] += v * v;
    }
    (fold8(dot), fold8(sq).sqrt(), e)
}

/// `2^k` as two float64 factors whose product is exact: one factor where `2^k` is a normal
/// float64, else two halves (`k` past either end of the normal range, as for a subnormal row).
/// `v * a * b` is then `v 2^k` exactly unless the result is subnormal.
pub(crate) fn power_factors(k: i32) -> (f64, f64) {
    if (-1022..=1023).contains(&k) {
        (exp2(k), 1.0)
    } else {
        (exp2(k / 2), exp2(k - k / 2))
    }
}

/// The fixed tree that sums 8 lane accumulators.
fn fold8(a: [f64; 8]) -> f64 {
    ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]))
}

/// `frexp`'s exponent of a positive finite `v`: `v = m 2^e` with `m` in `[0.5, 1)`.
fn exponent(v: f64) -> i32 {
    let bits = v.to_bits();
    let raw = ((bits >> 52) & 0x7ff) as i32;
    if raw == 0 {
        // subnormal: its leading bit sets the exponent
        let mant = bits & ((1u64 << 52) - 1);
        return -1022 - (mant.leading_zeros() as i32 - 12);
    }
    raw - 1022
}

/// Rows a task of [`scaled_dots`] takes together at most: each block of `z` is read from memory
/// once for all of them instead of once per row.
const DOT_ROWS: usize = 8;
/// Coordinates per block of [`scaled_dots`] (a multiple of 8): 8 KiB of `z`, kept in L1 while
/// the group's rows use it.
const DOT_BLOCK: usize = 1024;

/// `a.max(b)` for the lanes that track a largest magnitude next to a NaN flag: a NaN `b` may be
/// dropped (the flag reports it), so this is one compare-and-select (`vmaxpd`), where `max`'s
/// NaN rule costs two more instructions per value.
#[inline(always)]
fn max_ignoring_nan(a: f64, b: f64) -> f64 {
    if b > a {
        b
    } else {
        a
    }
}

/// The largest magnitude of `r` as float64, and whether `r` holds NaN or ±inf (8 lanes: `v * 0`
/// is 0 for a finite value, NaN otherwise).
#[inline(always)]
fn top_and_bad<T: Float>(r: &[T]) -> (f64, bool) {
    let (mut top, mut bad) = ([0.0f64; 8], [0.0f64; 8]);
    let rc = r.chunks_exact(8);
    let rest = rc.remainder();
    for p in rc {
        for l in 0..8 {
            let v = p[l].to_f64();
            top[l] = max_ignoring_nan(top[l], v.abs());
            bad[l] += v * 0.0;
        }
    }
    for (l, p) in rest.iter().enumerate() {
        let v = p.to_f64();
        top[l] = max_ignoring_nan(top[l], v.abs());
        bad[l] += v * 0.0;
    }
    let bad = bad.iter().any(|b| *b != 0.0);
    (top.iter().fold(0.0f64, |a, &b| a.max(b)), bad)
}

/// Add the products of a block of `r` scaled by `s1 s2` to the row's 8 lane sums: `dot` with
/// `z`, `sq` with itself. Lane `l` takes coordinate `k` with `k % 8 == l` (blocks start at
/// multiples of 8), so the sums are those of one pass over the whole row.
#[inline(always)]
fn dot_block<T: Float>(
    r: &[T],
    z: &[f64],
    (s1, s2): (f64, f64),
    dot: &mut [f64; 8],
    sq: &mut [f64; 8],
) {
    let (rc, zc) = (r.chunks_exact(8), z.chunks_exact(8));
    let (rr, zr) = (rc.remainder(), zc.remainder());
    for (p, q) in rc.zip(zc) {
        for l in 0..8 {
            let v = p[l].to_f64() * s1 * s2;
            dot[l] += v * q[l];
            sq[l] += v * v;
        }
    }
    for (l, (p, q)) in rr.iter().zip(zr).enumerate() {
        let v = p.to_f64() * s1 * s2;
        dot[l] += v * q;
        sq[l] += v * v;
    }
}

/// [`dot_block`] of the unscaled row, also taking its largest magnitude and NaN flag lanes
/// ([`top_and_bad`]): float32 rows in one pass ([`scaled_dots`] says when this is exact).
#[inline(always)]
fn dot_block_unscaled<T: Float>(r: &[T], z: &[f64], acc: &mut [[f64; 8]; 4]) {
    let [dot, sq, top, bad] = acc;
    let (rc, zc) = (r.chunks_exact(8), z.chunks_exact(8));
    let (rr, zr) = (rc.remainder(), zc.remainder());
    for (p, q) in rc.zip(zc) {
        for l in 0..8 {
            let v = p[l].to_f64();
            dot[l] += v * q[l];
            sq[l] += v * v;
            top[l] = max_ignoring_nan(top[l], v.abs());
            bad[l] += v * 0.0;
        }
    }
    for (l, (p, q)) in rr.iter().zip(zr).enumerate() {
        let v = p.to_f64();
        dot[l] += v * q;
        sq[l] += v * v;
        top[l] = max_ignoring_nan(top[l], v.abs());
        bad[l] += v * 0.0;
    }
}

/// The smallest float64 magnitude `z` may hold (zeros aside) for [`scaled_dots`] to sum float32
/// rows unscaled: every product of a float32 value and a `z` value is then a normal float64
/// whether or not the row is scaled.
const ONE_PASS_Z_MIN: f64 = f64::from_bits(323 << 52); // 2^-700

crate::simd::per_level! {
    avx512;
    /// A group of at most [`DOT_ROWS`] rows of [`scaled_dots`], the columns block by block,
    /// each block of `z` used by every row of the group. `one_pass`: unscaled sums and the
    /// largest magnitudes in one pass, scaled at the end (float32 rows, see [`scaled_dots`]);
    /// else one pass per row for its largest magnitude, then the scaled sums.
    fn dot_group[T: Float][T](isa: I, rows: &[&[T]], z: &[f64], one_pass: bool, out: &mut [(f64, f64, i32)]) {
        let _ = isa;
        let d = z.len();
        if one_pass {
            let mut acc = [[[0.0f64; 8]; 4]; DOT_ROWS];
            let mut c0 = 0;
            while c0 < d {
                let c1 = (c0 + DOT_BLOCK).min(d);
                for (r, a) in rows.iter().zip(acc.iter_mut()) {
                    dot_block_unscaled(&r[c0..c1], &z[c0..c1], a);
                }
                c0 = c1;
            }
            for (a, o) in acc.iter().zip(out.iter_mut()) {
                let top = a[2].iter().fold(0.0f64, |m, &v| m.max(v));
                *o = if a[3].iter().any(|b| *b != 0.0) {
                    (f64::NAN, f64::NAN, 0)
                } else if top == 0.0 {
                    (0.0, 0.0, 0)
                } else {
                    let e = exponent(top);
                    let s = exp2(-e); // a normal power of two for float32 rows
                    (fold8(a[0]) * s, fold8(a[1]).sqrt() * s, e)
                };
            }
            return;
        }
        let mut live = [(0usize, (1.0f64, 1.0f64)); DOT_ROWS];
        let mut k = 0;
        for (i, (r, o)) in rows.iter().zip(out.iter_mut()).enumerate() {
            let (top, bad) = top_and_bad(r);
            *o = if bad { (f64::NAN, f64::NAN, 0) } else { (0.0, 0.0, 0) };
            if !bad && top > 0.0 {
                let e = exponent(top);
                o.2 = e;
                live[k] = (i, power_factors(-e));
                k += 1;
            }
        }
        let live = &live[..k];
        let mut dot = [[0.0f64; 8]; DOT_ROWS];
        let mut sq = [[0.0f64; 8]; DOT_ROWS];
        let mut c0 = 0;
        while c0 < d {
            let c1 = (c0 + DOT_BLOCK).min(d);
            for (g, &(i, f)) in live.iter().enumerate() {
                dot_block(&rows[i][c0..c1], &z[c0..c1], f, &mut dot[g], &mut sq[g]);
            }
            c0 = c1;
        }
        for (g, &(i, _)) in live.iter().enumerate() {
            out[i].0 = fold8(dot[g]);
            out[i].1 = fold8(sq[g]).sqrt();
        }
    }
}

/// Per row: its dot product with `z` and its norm, both of the row scaled by `2^-e`, and `e`,
/// the exponent of the row's largest magnitude (`frexp`; 0 for a zero row): `(dots, norms,
/// exponents)`.
///
/// Scaling by a power of two is exact and brings the largest value into `[0.5, 1)`, so the
/// float64 sums neither overflow nor lose a tiny row to underflow: `x . z = dot 2^e` and
/// `||x|| = norm 2^e` for any finite row. A row holding NaN or ±inf gives NaN. Each row's sums
/// run in 8 lanes in coordinate order, then a fixed tree: the bits do not depend on the thread
/// count, the SIMD level or the rows grouped with it. Rows go in groups of up to [`DOT_ROWS`]
/// that share each block of `z`.
pub fn scaled_dots<T: Float>(x: &Rows<'_, T>, z: &[f64]) -> (Vec<f64>, Vec<f64>, Vec<i32>) {
    assert_eq!(z.len(), x.d());
    let n = x.n();
    let proof = simd::proof();
    let mut all = vec![(0.0f64, 0.0f64, 0i32); n];
    let split = crate::pool::split(n * x.d());
    // Enough groups for every thread; the grouping never changes a row's result.
    let group = if split {
        n.div_ceil(2 * crate::pool::num_threads())
            .clamp(1, DOT_ROWS)
    } else {
        DOT_ROWS
    };
    // float32 rows summed unscaled give the scaled sums times 2^e exactly when no product is
    // subnormal either way: float32 values times z values of at least ONE_PASS_Z_MIN (or 0).
    let one_pass =
        T::is_f32().is_some() && z.iter().all(|v| *v == 0.0 || v.abs() >= ONE_PASS_Z_MIN);
    let rows = x.rows();
    let task = |(k, o): (usize, &mut [(f64, f64, i32)])| {
        dot_group(proof, &rows[k * group..k * group + o.len()], z, one_pass, o);
    };
    if split {
        crate::pool::install(|| all.par_chunks_mut(group).enumerate().for_each(task));
    } else {
        all.chunks_mut(group).enumerate().for_each(task);
    }
    let mut out = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for (d, nm, e) in all {
        out.0.push(d);
        out.1.push(nm);
        out.2.push(e);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::Level;
    use crate::testing::{rows, Rng};

    #[test]
    fn scaled_dots_at_every_magnitude() {
        // frexp's exponent, normal and subnormal
        assert_eq!(exponent(1.0), 1);
        assert_eq!(exponent(0.75), 0);
        assert_eq!(exponent(f64::MAX), 1024);
        assert_eq!(exponent(f64::from_bits(1)), -1073);
        assert_eq!(exponent(f64::MIN_POSITIVE), -1021);
        let z = [0.6, 0.8];
        for scale in [1e-310, 1e-300, 1e-40, 1.0, 1e40, 1e300, 1.7e308 / 4.0] {
            let r = [3.0 * scale, 4.0 * scale];
            let (dot, norm, e) = scaled_dot_norm(&r, &z);
            // cos(r, z) = 1 exactly in real numbers
            assert!((dot / norm - 1.0).abs() < 1e-15, "{scale}: {dot} {norm}");
            assert!(
                dot > 0.0 && dot.is_finite() && (0.5..2.0).contains(&norm),
                "{scale}: {norm} {e}"
            );
        }
        assert_eq!(scaled_dot_norm(&[0.0f64, -0.0], &z), (0.0, 0.0, 0));
        assert!(scaled_dot_norm(&[f64::NAN, 1.0], &z).0.is_nan());
        assert!(scaled_dot_norm(&[1.0f32, f32::INFINITY], &z).1.is_nan());
        // orthogonal: exactly 0
        assert_eq!(scaled_dot_norm(&[0.0f64, 5.0], &[1.0, 0.0]).0, 0.0);
    }

    #[test]
    fn exact_on_near_identical_rows() {
        // Large common component, tiny differences: the Gram identity in float32 fails here.
        let mut rng = Rng(5);
        let d = 20_000;
        let base: Vec<f32> = (0..d).map(|k| 100.0 + (k as f32 / 1000.0).sin()).collect();
        let data: Vec<Vec<f32>> = (0..6)
            .map(|_| {
                base.iter()
                    .map(|&b| b + 1e-3 * rng.next_f64() as f32)
                    .collect()
            })
            .collect();
        let x = rows(&data);
        let dm = pairwise_sq_dists(&x).unwrap();
        for i in 0..6 {
            for j in 0..6 {
                let exact: f64 = (0..d)
                    .map(|k| {
                        let t = data[i][k] as f64 - data[j][k] as f64;
                        t * t
                    })
                    .sum();
                let got = dm[i * 6 + j];
                assert!(got >= 0.0);
                assert!(
                    (got - exact).abs() <= 1e-5 * exact,
                    "{i} {j}: {got} vs {exact}"
                );
            }
        }
    }

    #[test]
    fn tiled_path_is_exact_and_independent_of_threads_simd_and_row_order() {
        // n > 2 * PAIR_BLOCK: pair tiles, three blocks of rows (the last one partial).
        let n = 2 * PAIR_BLOCK + 3;
        let data = Rng(11).matrix(n, 2_053);
        let x = rows(&data);
        crate::pool::set_num_threads(1).unwrap();
        simd::set_level(Level::Scalar);
        let a = pairwise_sq_dists(&x).unwrap();
        crate::pool::set_num_threads(2).unwrap();
        simd::set_level(Level::Avx2);
        let b = pairwise_sq_dists(&x).unwrap();
        simd::set_level(simd::DEFAULT_MAX);
        assert!(a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()));
        for i in 0..n {
            assert_eq!(a[i * n + i], 0.0);
            for j in 0..n {
                let exact: f64 = (0..data[i].len())
                    .map(|k| (data[i][k] as f64 - data[j][k] as f64).powi(2))
                    .sum();
                assert!((a[i * n + j] - exact).abs() <= 1e-6 * exact, "{i} {j}");
            }
        }
        let perm: Vec<usize> = (0..n).map(|i| (i * 37) % n).collect();
        let pdata: Vec<Vec<f32>> = perm.iter().map(|&i| data[i].clone()).collect();
        let c = pairwise_sq_dists(&rows(&pdata)).unwrap();
        for i in 0..n {
            for j in 0..n {
                assert_eq!(c[i * n + j].to_bits(), a[perm[i] * n + perm[j]].to_bits());
            }
        }
    }

    #[test]
    fn float32_extremes_are_summed_in_float64() {
        // Differences that overflow float32 squares (1e20, f32::MAX apart) and that underflow
        // them (1e-25 apart): every distance must be the float64 sum, finite and not zero.
        let data: Vec<Vec<f32>> = vec![
            vec![1e20, -3e-25, 0.0, 1.0],
            vec![-1e20, 7e-25, 0.0, 1.0],
            vec![f32::MAX, 0.0, -f32::MAX, 1.0],
            vec![1.0, 1e-30, 0.0, 1.0],
            vec![1.0, 1.1e-30, 0.0, 1.0],
            vec![1.0, 1e-30, 1e-45, 1.0],
        ];
        let n = data.len();
        for level in [Level::Scalar, Level::Avx2, simd::DEFAULT_MAX] {
            simd::set_level(level);
            let dm = pairwise_sq_dists(&rows(&data)).unwrap();
            for i in 0..n {
                for j in 0..n {
                    let exact: f64 = (0..4)
                        .map(|k| (data[i][k] as f64 - data[j][k] as f64).powi(2))
                        .sum();
                    let got = dm[i * n + j];
                    assert!(
                        got.is_finite() && (got == 0.0) == (i == j),
                        "{i} {j}: {got}"
                    );
                    assert!(
                        (got - exact).abs() <= 1e-6 * exact,
                        "{i} {j}: {got} vs {exact}"
                    );
                }
            }
        }
        simd::set_level(simd::DEFAULT_MAX);
    }

    #[test]
    fn scaled_dots_match_the_row_definition_bitwise() {
        // The grouped, blocked kernel against the one-row definition, for every SIMD level and
        // 1 or 2 threads: rows of every magnitude, a NaN row, an inf row, a zero row; lengths
        // with and without a tail, shorter and longer than a block.
        for d in [5, 8, 1_029, 3 * DOT_BLOCK + 13] {
            let mut rng = Rng(11);
            let z: Vec<f64> = (0..d).map(|_| rng.next_f64() - 0.5).collect();
            let mut data: Vec<Vec<f64>> = [1e-310, 1e-300, 1e-5, 1.0, 3e7, 1e300, 1.7e308]
                .iter()
                .map(|&s| (0..d).map(|_| (rng.next_f64() - 0.5) * s).collect())
                .collect();
            data.push(vec![0.0; d]);
            let mut nan = data[3].clone();
            nan[d - 1] = f64::NAN;
            let mut inf = data[3].clone();
            inf[0] = f64::NEG_INFINITY;
            data.extend([nan, inf]);
            let x = rows(&data);
            let want: Vec<(f64, f64, i32)> = data.iter().map(|r| scaled_dot_norm(r, &z)).collect();
            let bits = |v: f64| if v.is_nan() { u64::MAX } else { v.to_bits() };
            for threads in [1, 2] {
                crate::pool::set_num_threads(threads).unwrap();
                for level in [Level::Scalar, Level::Avx2, simd::DEFAULT_MAX] {
                    simd::set_level(level);
                    let (dots, norms, exps) = scaled_dots(&x, &z);
                    for (i, w) in want.iter().enumerate() {
                        assert_eq!(
                            (bits(dots[i]), bits(norms[i]), exps[i]),
                            (bits(w.0), bits(w.1), w.2),
                            "d={d} row {i} {level:?} threads={threads}"
                        );
                    }
                    // float32 rows from subnormal to f32::MAX, against z as it is (one pass)
                    // and with a value that makes some products subnormal (two passes).
                    let mut x32: Vec<Vec<f32>> = [1e-44, 1e-30, 1.0, 3e7, 3e38]
                        .iter()
                        .map(|&s| data[3].iter().map(|&v| (v * s) as f32).collect())
                        .collect();
                    x32[0][0] = f32::from_bits(1);
                    x32[4][d / 2] = f32::MAX;
                    let mut lone = vec![0.0f32; d];
                    lone[d / 3] = 1e-44;
                    x32.push(lone); // its only product with z_tiny: subnormal unless scaled
                    let mut z_tiny = z.clone();
                    z_tiny[d / 3] = 1e-300;
                    for zz in [&z, &z_tiny] {
                        let (d32, n32, e32) = scaled_dots(&rows(&x32), zz);
                        for (i, r) in x32.iter().enumerate() {
                            let w = scaled_dot_norm(r, zz);
                            assert_eq!(
                                (bits(d32[i]), bits(n32[i]), e32[i]),
                                (bits(w.0), bits(w.1), w.2),
                                "float32 d={d} row {i} {level:?}"
                            );
                        }
                    }
                }
            }
        }
        simd::set_level(simd::DEFAULT_MAX);
    }

    #[test]
    fn float64_is_independent_of_simd_level() {
        // The AVX2 float64 kernel (two passes of 8 lanes) against the portable one (pairs one
        // at a time): tails of 5 and 0 coordinates, both the flat (n = 11) and the tiled path
        // (n > 2 * PAIR_BLOCK), 1 and 2 threads.
        for (n, d) in [(11, 4_101), (11, 4_096), (2 * PAIR_BLOCK + 5, 1_029)] {
            let data: Vec<Vec<f64>> = Rng(3)
                .matrix(n, d)
                .into_iter()
                .map(|r| r.into_iter().map(|v| v as f64 * 1e3 - 7.0).collect())
                .collect();
            let x = rows(&data);
            crate::pool::set_num_threads(1).unwrap();
            simd::set_level(Level::Scalar);
            let a = pairwise_sq_dists(&x).unwrap();
            crate::pool::set_num_threads(2).unwrap();
            for level in [Level::Avx2, simd::DEFAULT_MAX] {
                simd::set_level(level);
                let b = pairwise_sq_dists(&x).unwrap();
                assert!(a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()));
            }
            simd::set_level(simd::DEFAULT_MAX);
            for i in 0..n {
                for j in 0..n {
                    let exact: f64 = (0..d).map(|k| (data[i][k] - data[j][k]).powi(2)).sum();
                    assert!((a[i * n + j] - exact).abs() <= 1e-12 * exact, "{i} {j}");
                }
            }
        }
    }

    #[test]
    fn independent_of_threads_simd_and_row_order() {
        let data = Rng(9).matrix(13, 30_011);
        let x = rows(&data);
        crate::pool::set_num_threads(1).unwrap();
        simd::set_level(Level::Scalar);
        let a = pairwise_sq_dists(&x).unwrap();
        crate::pool::set_num_threads(2).unwrap();
        simd::set_level(Level::Avx2);
        let b = pairwise_sq_dists(&x).unwrap();
        assert!(a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()));
        let perm: Vec<usize> = (0..13).rev().collect();
        let pdata: Vec<Vec<f32>> = perm.iter().map(|&i| data[i].clone()).collect();
        let c = pairwise_sq_dists(&rows(&pdata)).unwrap();
        for i in 0..13 {
            for j in 0..13 {
                assert_eq!(c[i * 13 + j].to_bits(), a[perm[i] * 13 + perm[j]].to_bits());
            }
        }
    }
}
