//! The (weighted) mean: the non-robust baseline every robust rule is compared with (FedAvg).
//!
//! `y_j = Σ_i w_i x_ij / Σ_i w_i` (`w_i = 1` without weights), accumulated in float64
//! (compensated for float64 input), rows added in index order. NaN policy: `Robust` drops every
//! input that holds a NaN or ±inf (a client whose update is not finite is broken as a whole)
//! and averages the others; it fails only when no finite input is left. `Propagate` is plain
//! IEEE arithmetic (numpy). The first pass detects non-finite rows while it sums, so clean
//! input is read once; a second pass runs only when something had to be dropped.

use std::borrow::Cow;

use rayon::prelude::*;

use crate::error::AggError;
use crate::half::HalfRows;
use crate::input::{NonFinite, Rows};
use crate::order::{mean_within, overflowed, wide_mean, Accumulator, Float};
use crate::simd::{self, Proof};

pub const NAME: &str = "mean";

/// Coordinates per task: long contiguous runs per row (16-32 KB) stream at full bandwidth.
const TILE: usize = 32768;

/// The result of [`mean`] besides the values: which inputs were dropped (robust policy).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MeanInfo {
    pub dropped: Vec<usize>,
}

/// Per-input weights: one per input, finite and `>= 0` (shared by every rule taking weights).
pub(crate) fn check_weights(rule: &'static str, w: &[f64], n: usize) -> Result<(), AggError> {
    let bad = |message: String| AggError::InvalidParameter { rule, message };
    if w.len() != n {
        return Err(bad(format!(
            "weights must have one entry per input: got {} weights for n={n}",
            w.len()
        )));
    }
    if let Some((i, v)) = w
        .iter()
        .enumerate()
        .find(|(_, v)| !(v.is_finite() && **v >= 0.0))
    {
        return Err(bad(format!(
            "weights must be finite and >= 0, got weights[{i}]={v}"
        )));
    }
    Ok(())
}

/// Only the ratios of weights matter, so where the largest of the weights of the values
/// averaged lies outside `[1/2, 1]`, they are all scaled by the power of two that brings it
/// into `[1/2, 1)`: then no product `w·x` overflows (an overflowing sum of finite products is
/// infinite, never NaN, which is how [`crate::order::overflowed`] tells it), and none of the
/// largest weight with a normal value underflows (weights `1e-130` with values near `1e-308`
/// averaged to the smallest value). Scaling up is exact; scaling down (where the largest
/// weight exceeds one) is exact for every weight that stays normal, that is all but weights
/// more than `2^1021` times smaller than the largest. Weights already in range (all ones,
/// fractions) are used as they are.
pub(crate) fn normalise_weights(w: &[f64]) -> Cow<'_, [f64]> {
    let top = w.iter().copied().fold(0.0f64, f64::max);
    if top == 0.0 || (0.5..=1.0).contains(&top) {
        return Cow::Borrowed(w);
    }
    // top = 2^e · (1 + fraction), subnormals included; the factor is 2^k, k = -e - 1.
    let bits = top.to_bits();
    let e = match (bits >> 52) as i32 {
        0 => 63 - bits.leading_zeros() as i32 - 1074,
        biased => biased - 1023,
    };
    let k = -e - 1;
    // In at most two exact factors: 2^k is beyond float64 for k > 1023 (a subnormal top; every
    // weight is then subnormal and the first factor scales it up exactly).
    let (a, b) = if k > 1023 { (1023, k - 1023) } else { (k, 0) };
    let (fa, fb) = (crate::distance::exp2(a), crate::distance::exp2(b));
    Cow::Owned(w.iter().map(|&v| v * fa * fb).collect())
}

/// Rows summed per pass over the accumulator: the running sums of a group stay in registers,
/// which cuts the float64 accumulator traffic by this factor.
const GROUP: usize = 8;

/// One pass of a group of rows over a tile: `fresh` = the first group (the sums start at 0 and
/// `acc` is not read), `finish` = the last group (`acc / total` goes to the output instead of
/// back to `acc`). For `n <= GROUP` the first pass is the last: it reads its rows once and
/// touches no accumulator at all.
struct Pass<'a, T> {
    fresh: bool,
    finish: Option<(f64, &'a mut [T])>,
}

/// Add `Σ w·row` over a group of at most [`GROUP`] rows into `acc`, each element in row order
/// (`((0 + w0·x0) + w1·x1) + ...`, the same sequence for every group size); sets `bad[g]` if
/// row `g` holds a non-finite value. With a non-empty `range` (float64), it also tracks each
/// coordinate's smallest and largest value among the rows of positive weight and clamps the
/// result into them: a float64 quotient can round one ulp outside the averaged values (the mean
/// of identical values would come back one ulp off); a float32 one is rounded from float64 and
/// cannot.
#[inline(always)]
fn accumulate_body<T: Float>(
    acc: &mut [T::Acc],
    rows: &[(&[T], f64)],
    bad: &mut [bool; GROUP],
    range: &mut [(T, T)],
    pass: Pass<'_, T>,
) -> bool {
    if pass.fresh {
        acc.fill(T::Acc::zero());
        range.fill((T::INFINITY, T::from_f64(f64::NEG_INFINITY)));
    }
    if range.is_empty() {
        for (j, a) in acc.iter_mut().enumerate() {
            let mut s = *a;
            for &(r, w) in rows {
                s.add(w * r[j].to_f64());
            }
            *a = s;
        }
    } else {
        // In the same pass, while the group's values of coordinate j are in cache; only the
        // rows of positive weight bound the average.
        let mut weighed = [&[][..]; GROUP];
        let mut k = 0;
        for &(r, w) in rows {
            if w > 0.0 {
                weighed[k] = r;
                k += 1;
            }
        }
        let weighed = &weighed[..k];
        for (j, (a, lh)) in acc.iter_mut().zip(range.iter_mut()).enumerate() {
            let (mut s, (mut lo, mut hi)) = (*a, *lh);
            for &(r, w) in rows {
                s.add(w * r[j].to_f64());
            }
            for r in weighed {
                let v = r[j];
                lo = if v < lo { v } else { lo };
                hi = if v > hi { v } else { hi };
            }
            (*a, *lh) = (s, (lo, hi));
        }
    }
    for (g, &(r, _)) in rows.iter().enumerate() {
        bad[g] = !crate::input::all_finite(r);
    }
    if let Some((total, out)) = pass.finish {
        if range.is_empty() {
            for (y, a) in out.iter_mut().zip(acc.iter()) {
                *y = T::from_f64(a.value() / total);
            }
        } else {
            let mut wide = false;
            for ((y, a), &(lo, hi)) in out.iter_mut().zip(acc.iter()).zip(range.iter()) {
                // An infinite quotient stays infinite: where the values are finite, their sum
                // overflowed, and `weighted_sum` computes that mean again.
                let q = a.value() / total;
                let m = mean_within(q, lo, hi);
                wide |= q.is_infinite();
                *y = if q.is_infinite() { T::from_f64(q) } else { m };
            }
            return wide;
        }
    }
    false
}

/// The explicit SIMD kernels (float32 rows into float64 sums, the plain mean's hot path) when
/// `T` is float32 and the level has one; otherwise the portable body.
fn accumulate<T: Float>(
    proof: Proof,
    acc: &mut [T::Acc],
    rows: &[(&[T], f64)],
    bad: &mut [bool; GROUP],
    unit: bool,
    range: &mut [(T, T)],
    pass: Pass<'_, T>,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if let (Some(is), Proof::Avx2(_) | Proof::Avx512(_)) = (T::is_f32(), proof) {
        let pass = Pass {
            fresh: pass.fresh,
            finish: pass.finish.map(|(t, o)| (t, (is.slice_mut)(o))),
        };
        let (acc, rows) = ((is.acc_mut)(acc), (is.weighted_rows)(rows));
        x86::group(proof, acc, rows, bad, unit, pass);
        return false; // float32 quotients cannot overflow
    }
    let _ = (proof, unit);
    accumulate_body::<T>(acc, rows, bad, range, pass)
}

/// float32 rows added into float64 sums with explicit AVX2 / AVX-512: a group of rows is summed
/// in registers, 32 coordinates per step in four independent float64 vectors, then written
/// once (to `acc`, or divided straight into the output on the last pass). Each element is
/// `acc + w * (x as f64)` row after row, as in the portable path (no FMA; no product when
/// every weight is 1, `unit`, since `1 * x` is `x` exactly), so every path gives the same
/// bits. Non-finite input is detected from the sums, not per value: float32 values widened to
/// float64 cannot overflow a float64 sum, so a sum is non-finite only when a row (or a weight
/// product) made it so, and then the group's rows are scanned to name the rows (rare; a
/// non-finite sum carried over from an earlier group only costs such a scan).
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{accumulate_body, Pass, GROUP};
    use crate::half::Half;
    use crate::simd::{Avx2, Avx512, Isa};

    /// A vector of float64 lanes, built under its level's token (`zero`, `splat` and `load`
    /// take one), so its methods run only on CPUs that have their instructions. The methods
    /// carry no `#[target_feature]`: they are `#[inline(always)]` and inlined into the
    /// per-level clones of `per_level!`, which have the features.
    trait F64v: Copy {
        type Proof: Copy;
        const LANES: usize;
        fn zero(p: Self::Proof) -> Self;
        fn splat(p: Self::Proof, v: f64) -> Self;
        /// # Safety
        /// `p` points at `LANES` readable float64.
        unsafe fn load(t: Self::Proof, p: *const f64) -> Self;
        /// # Safety
        /// `p` points at `LANES` writable float64.
        unsafe fn store(self, p: *mut f64);
        /// # Safety
        /// `p` points at `LANES` readable float32 (widened exactly).
        unsafe fn load_f32(t: Self::Proof, p: *const f32) -> Self;
        /// # Safety
        /// `p` points at `LANES` writable float32 (rounded to nearest, as `as f32`).
        unsafe fn store_f32(self, p: *mut f32);
        /// # Safety
        /// `p` points at `LANES` readable float16 bit patterns (widened exactly, with F16C).
        unsafe fn load_f16(t: Self::Proof, p: *const u16) -> Self;
        /// # Safety
        /// `p` points at `LANES` readable bfloat16 bit patterns (widened exactly).
        unsafe fn load_bf16(t: Self::Proof, p: *const u16) -> Self;
        fn add(self, o: Self) -> Self;
        fn mul(self, o: Self) -> Self;
        fn div(self, o: Self) -> Self;
        /// `self | (v - v)`: stays all-zero while every `v` is finite.
        fn flag(self, v: Self) -> Self;
        fn any(self) -> bool;
    }

    #[derive(Clone, Copy)]
    struct F64x4(__m256d);

    // SAFETY (every block below): an F64x4 exists only where an `Avx2` token proved the CPU
    // runs AVX2 (every constructor takes one).
    impl F64v for F64x4 {
        type Proof = Avx2;
        const LANES: usize = 4;
        #[inline(always)]
        fn zero(_: Self::Proof) -> Self {
            // SAFETY: the impl note.
            F64x4(unsafe { _mm256_setzero_pd() })
        }
        #[inline(always)]
        fn splat(_: Self::Proof, v: f64) -> Self {
            // SAFETY: the impl note.
            F64x4(unsafe { _mm256_set1_pd(v) })
        }
        #[inline(always)]
        unsafe fn load(_: Self::Proof, p: *const f64) -> Self {
            // SAFETY: the caller passes a valid pointer; the features: the impl note.
            F64x4(unsafe { _mm256_loadu_pd(p) })
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f64) {
            // SAFETY: the caller passes a valid pointer; the features: the impl note.
            unsafe { _mm256_storeu_pd(p, self.0) }
        }
        #[inline(always)]
        unsafe fn load_f32(_: Self::Proof, p: *const f32) -> Self {
            // SAFETY: the caller passes a valid pointer; the features: the impl note.
            F64x4(unsafe { _mm256_cvtps_pd(_mm_loadu_ps(p)) })
        }
        #[inline(always)]
        unsafe fn store_f32(self, p: *mut f32) {
            // SAFETY: the caller passes a valid pointer; the features: the impl note.
            unsafe { _mm_storeu_ps(p, _mm256_cvtpd_ps(self.0)) }
        }
        #[inline(always)]
        unsafe fn load_f16(_: Self::Proof, p: *const u16) -> Self {
            // SAFETY: the caller passes 4 readable u16 (an 8-byte load); the features (AVX2 and
            // F16C, which `Avx2` proves): the impl note.
            F64x4(unsafe { _mm256_cvtps_pd(_mm_cvtph_ps(_mm_loadl_epi64(p as *const __m128i))) })
        }
        #[inline(always)]
        unsafe fn load_bf16(_: Self::Proof, p: *const u16) -> Self {
            // SAFETY: the caller passes 4 readable u16 (an 8-byte load); the features: the
            // impl note. A bfloat16 is the top half of its float32.
            F64x4(unsafe {
                let h = _mm_cvtepu16_epi32(_mm_loadl_epi64(p as *const __m128i));
                _mm256_cvtps_pd(_mm_castsi128_ps(_mm_slli_epi32::<16>(h)))
            })
        }
        #[inline(always)]
        fn add(self, o: Self) -> Self {
            // SAFETY: the impl note.
            F64x4(unsafe { _mm256_add_pd(self.0, o.0) })
        }
        #[inline(always)]
        fn mul(self, o: Self) -> Self {
            // SAFETY: the impl note.
            F64x4(unsafe { _mm256_mul_pd(self.0, o.0) })
        }
        #[inline(always)]
        fn div(self, o: Self) -> Self {
            // SAFETY: the impl note.
            F64x4(unsafe { _mm256_div_pd(self.0, o.0) })
        }
        #[inline(always)]
        fn flag(self, v: Self) -> Self {
            // SAFETY: the impl note.
            F64x4(unsafe { _mm256_or_pd(self.0, _mm256_sub_pd(v.0, v.0)) })
        }
        #[inline(always)]
        fn any(self) -> bool {
            // SAFETY: the impl note.
            let b = unsafe { _mm256_castpd_si256(self.0) };
            // SAFETY: the impl note.
            unsafe { _mm256_testz_si256(b, b) == 0 }
        }
    }

    #[derive(Clone, Copy)]
    struct F64x8(__m512d);

    // SAFETY (every block below): an F64x8 exists only where an `Avx512` token proved the CPU
    // runs AVX-512 (every constructor takes one).
    impl F64v for F64x8 {
        type Proof = Avx512;
        const LANES: usize = 8;
        #[inline(always)]
        fn zero(_: Self::Proof) -> Self {
            // SAFETY: the impl note.
            F64x8(unsafe { _mm512_setzero_pd() })
        }
        #[inline(always)]
        fn splat(_: Self::Proof, v: f64) -> Self {
            // SAFETY: the impl note.
            F64x8(unsafe { _mm512_set1_pd(v) })
        }
        #[inline(always)]
        unsafe fn load(_: Self::Proof, p: *const f64) -> Self {
            // SAFETY: the caller passes a valid pointer; the features: the impl note.
            F64x8(unsafe { _mm512_loadu_pd(p) })
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f64) {
            // SAFETY: the caller passes a valid pointer; the features: the impl note.
            unsafe { _mm512_storeu_pd(p, self.0) }
        }
        #[inline(always)]
        unsafe fn load_f32(_: Self::Proof, p: *const f32) -> Self {
            // SAFETY: the caller passes a valid pointer; the features: the impl note.
            F64x8(unsafe { _mm512_cvtps_pd(_mm256_loadu_ps(p)) })
        }
        #[inline(always)]
        unsafe fn store_f32(self, p: *mut f32) {
            // SAFETY: the caller passes a valid pointer; the features: the impl note.
            unsafe { _mm256_storeu_ps(p, _mm512_cvtpd_ps(self.0)) }
        }
        #[inline(always)]
        unsafe fn load_f16(_: Self::Proof, p: *const u16) -> Self {
            // SAFETY: the caller passes 8 readable u16 (a 16-byte load); the features (F16C
            // with AVX-512, which `Avx512` proves): the impl note.
            F64x8(unsafe { _mm512_cvtps_pd(_mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))) })
        }
        #[inline(always)]
        unsafe fn load_bf16(_: Self::Proof, p: *const u16) -> Self {
            // SAFETY: the caller passes 8 readable u16 (a 16-byte load); the features: the
            // impl note. A bfloat16 is the top half of its float32.
            F64x8(unsafe {
                let h = _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i));
                _mm512_cvtps_pd(_mm256_castsi256_ps(_mm256_slli_epi32::<16>(h)))
            })
        }
        #[inline(always)]
        fn add(self, o: Self) -> Self {
            // SAFETY: the impl note.
            F64x8(unsafe { _mm512_add_pd(self.0, o.0) })
        }
        #[inline(always)]
        fn mul(self, o: Self) -> Self {
            // SAFETY: the impl note.
            F64x8(unsafe { _mm512_mul_pd(self.0, o.0) })
        }
        #[inline(always)]
        fn div(self, o: Self) -> Self {
            // SAFETY: the impl note.
            F64x8(unsafe { _mm512_div_pd(self.0, o.0) })
        }
        #[inline(always)]
        fn flag(self, v: Self) -> Self {
            // SAFETY: the impl note.
            F64x8(unsafe { _mm512_or_pd(self.0, _mm512_sub_pd(v.0, v.0)) })
        }
        #[inline(always)]
        fn any(self) -> bool {
            // SAFETY: the impl note.
            let b = unsafe { _mm512_castpd_si512(self.0) };
            // SAFETY: the impl note.
            unsafe { _mm512_test_epi64_mask(b, b) != 0 }
        }
    }

    /// Four vectors of sums per step: independent addition chains, so a small group (n = 10:
    /// two rows in the second pass) is not bound by the latency of one chain.
    const ACCS: usize = 4;

    /// How [`kernel`] reads one kind of row element: a vector of `LANES`, one value, and
    /// whether a value is finite.
    trait Elem<V: F64v>: Copy {
        /// # Safety
        /// `p` points at `V::LANES` readable elements.
        unsafe fn load(t: V::Proof, p: *const Self, kind: Option<Half>) -> V;
        fn wide(self, kind: Option<Half>) -> f64;
        fn finite(self, kind: Option<Half>) -> bool;
    }

    impl<V: F64v> Elem<V> for f32 {
        #[inline(always)]
        unsafe fn load(t: V::Proof, p: *const f32, _: Option<Half>) -> V {
            // SAFETY: as the caller promises.
            unsafe { V::load_f32(t, p) }
        }
        #[inline(always)]
        fn wide(self, _: Option<Half>) -> f64 {
            self as f64
        }
        #[inline(always)]
        fn finite(self, _: Option<Half>) -> bool {
            self.is_finite()
        }
    }

    /// Half-precision bit patterns (`kind` is `Some`: the format).
    impl<V: F64v> Elem<V> for u16 {
        #[inline(always)]
        unsafe fn load(t: V::Proof, p: *const u16, kind: Option<Half>) -> V {
            // SAFETY: as the caller promises.
            unsafe {
                match kind {
                    Some(Half::Bf16) => V::load_bf16(t, p),
                    _ => V::load_f16(t, p),
                }
            }
        }
        #[inline(always)]
        fn wide(self, kind: Option<Half>) -> f64 {
            let mut v = [0.0f32];
            crate::half::widen_scalar(kind.unwrap_or(Half::F16), self, &mut v);
            v[0] as f64
        }
        #[inline(always)]
        fn finite(self, kind: Option<Half>) -> bool {
            kind.unwrap_or(Half::F16).is_finite(self)
        }
    }

    #[inline(always)]
    fn kernel<V: F64v, E: Elem<V>>(
        t: V::Proof,
        kind: Option<Half>,
        acc: &mut [f64],
        rows: &[(&[E], f64)],
        bad: &mut [bool; GROUP],
        unit: bool,
        pass: Pass<'_, f32>,
    ) {
        let len = acc.len();
        assert!(rows.len() <= GROUP && rows.iter().all(|(r, _)| r.len() == len));
        let (fresh, (total, mut out)) = match pass.finish {
            Some((t, o)) => (pass.fresh, (t, Some(o))),
            None => (pass.fresh, (1.0, None)),
        };
        assert!(out.as_ref().is_none_or(|o| o.len() == len));
        let step = ACCS * V::LANES;
        let full = len / step * step;
        let tv = V::splat(t, total);
        let mut flag = V::zero(t);
        let mut k = 0;
        while k < full {
            // SAFETY: k + step <= len for `acc`, the output and every row (asserted).
            unsafe {
                let p = acc.as_mut_ptr().add(k);
                let mut s = [V::splat(t, -0.0); ACCS];
                if !fresh {
                    for (q, v) in s.iter_mut().enumerate() {
                        *v = V::load(t, p.add(q * V::LANES));
                    }
                }
                for &(r, w) in rows {
                    let rp = r.as_ptr().add(k);
                    if unit {
                        for (q, v) in s.iter_mut().enumerate() {
                            *v = v.add(E::load(t, rp.add(q * V::LANES), kind));
                        }
                    } else {
                        let wv = V::splat(t, w);
                        for (q, v) in s.iter_mut().enumerate() {
                            *v = v.add(wv.mul(E::load(t, rp.add(q * V::LANES), kind)));
                        }
                    }
                }
                for v in &s {
                    flag = flag.flag(*v);
                }
                match &mut out {
                    None => {
                        for (q, v) in s.iter().enumerate() {
                            v.store(p.add(q * V::LANES));
                        }
                    }
                    Some(o) => {
                        let op = o.as_mut_ptr().add(k);
                        for (q, v) in s.iter().enumerate() {
                            v.div(tv).store_f32(op.add(q * V::LANES));
                        }
                    }
                }
            }
            k += step;
        }
        let mut any = flag.any();
        for j in full..len {
            let mut s = if fresh { -0.0 } else { acc[j] };
            for &(r, w) in rows {
                s += w * r[j].wide(kind);
            }
            any |= !s.is_finite();
            match &mut out {
                None => acc[j] = s,
                Some(o) => o[j] = (s / total) as f32,
            }
        }
        for (g, &(r, _)) in rows.iter().enumerate() {
            bad[g] = any && r.iter().any(|v| !v.finite(kind));
        }
    }

    crate::simd::per_level! {
        avx512;
        /// One group of float32 rows into float64 sums: AVX-512 and AVX2 run their explicit
        /// kernel, the portable level the generic body.
        pub(super) fn group[][](
            isa: I,
            acc: &mut [f64],
            rows: &[(&[f32], f64)],
            bad: &mut [bool; GROUP],
            unit: bool,
            pass: Pass<'_, f32>,
        ) {
            if let Some(t) = isa.as_avx512() {
                kernel::<F64x8, f32>(t, None, acc, rows, bad, unit, pass)
            } else if let Some(t) = isa.as_avx2() {
                kernel::<F64x4, f32>(t, None, acc, rows, bad, unit, pass)
            } else {
                accumulate_body::<f32>(acc, rows, bad, &mut [], pass);
            }
        }
    }

    crate::simd::per_level! {
        avx512;
        /// One group of half-precision rows into float64 sums, widened in registers: the float32
        /// kernel's arithmetic on the same values, so its bits. `false` where the level has no
        /// such kernel (the caller then widens blocks, `rust/half.rs`).
        pub(super) fn group_half[][](
            isa: I,
            kind: Half,
            acc: &mut [f64],
            rows: &[(&[u16], f64)],
            bad: &mut [bool; GROUP],
            unit: bool,
            pass: Pass<'_, f32>,
        ) -> bool {
            if let Some(t) = isa.as_avx512() {
                kernel::<F64x8, u16>(t, Some(kind), acc, rows, bad, unit, pass);
                true
            } else if let Some(t) = isa.as_avx2() {
                kernel::<F64x4, u16>(t, Some(kind), acc, rows, bad, unit, pass);
                true
            } else {
                let _ = (kind, acc, rows, bad, unit, pass);
                false
            }
        }
    }
}

/// `out = Σ w·x_row / total` over `items` (`(row, w)`, summed in the order given); returns the
/// rows among `items` that were not finite. Shared by the mean and Multi-Krum.
pub(crate) fn weighted_sum<T: Float>(
    x: &Rows<'_, T>,
    items: &[(usize, f64)],
    total: f64,
    out: &mut [T],
) -> Vec<usize> {
    let proof = simd::proof();
    assert!(!items.is_empty(), "callers average at least one input");
    let unit = items.iter().all(|&(_, w)| w == 1.0);
    let groups = items.len().div_ceil(GROUP);
    // float32 quotients need no clamp (see `accumulate_body`).
    let clamp = T::is_f32().is_none();
    type Scratch<T> = (Vec<<T as Float>::Acc>, Vec<(T, T)>);
    let tile = |(t, o): (usize, &mut [T]), (acc, range): &mut Scratch<T>| -> Vec<usize> {
        let j0 = t * TILE;
        acc.resize(o.len(), T::Acc::zero());
        range.resize(if clamp { o.len() } else { 0 }, (T::ZERO, T::ZERO));
        let mut bad = Vec::new();
        let mut flags = [false; GROUP];
        let mut wide = false;
        for (g, group) in items.chunks(GROUP).enumerate() {
            let rows: Vec<(&[T], f64)> = group
                .iter()
                .map(|&(i, w)| (&x.row(i)[j0..j0 + acc.len()], w))
                .collect();
            let pass = Pass {
                fresh: g == 0,
                finish: (g + 1 == groups).then_some((total, &mut *o)),
            };
            wide = accumulate::<T>(proof, acc, &rows, &mut flags, unit, range, pass);
            bad.extend(
                group
                    .iter()
                    .zip(flags)
                    .filter(|(_, b)| *b)
                    .map(|(&(i, _), _)| i),
            );
        }
        // float64 means of finite values whose sum overflowed (left infinite by the last pass):
        // again with the sum that scales (rare).
        if wide {
            for (j, (y, &(lo, hi))) in o.iter_mut().zip(range.iter()).enumerate() {
                if overflowed(y.to_f64(), lo, hi) {
                    let terms = items.iter().map(|&(i, w)| (w, x.row(i)[j0 + j].to_f64()));
                    *y = mean_within(wide_mean(terms, total), lo, hi);
                }
            }
        }
        bad
    };
    over_tiles(out, items.len() * x.d(), tile)
}

/// Run `tile` on each [`TILE`] of `out` with scratch of its worker's (in parallel where
/// `values` of input are worth splitting) and collect the rows the tiles report, sorted once.
fn over_tiles<O: Send, A: Send, B: Send>(
    out: &mut [O],
    values: usize,
    tile: impl Fn((usize, &mut [O]), &mut (Vec<A>, Vec<B>)) -> Vec<usize> + Sync + Send,
) -> Vec<usize> {
    let mut bad: Vec<usize> = if !crate::pool::split(values) {
        let mut scratch = (Vec::new(), Vec::new());
        out.chunks_mut(TILE)
            .enumerate()
            .flat_map(|it| tile(it, &mut scratch))
            .collect()
    } else {
        crate::pool::install(|| {
            out.par_chunks_mut(TILE)
                .enumerate()
                .map_init(|| (Vec::new(), Vec::new()), |scratch, it| tile(it, scratch))
                .flatten_iter()
                .collect()
        })
    };
    bad.sort_unstable();
    bad.dedup();
    bad
}

/// The (weighted) mean of `x` into `out`.
pub fn mean<T: Float>(
    x: &Rows<'_, T>,
    weights: Option<&[f64]>,
    policy: NonFinite,
    out: &mut [T],
) -> Result<MeanInfo, AggError> {
    let n = x.n();
    assert_eq!(out.len(), x.d());
    let w = MeanWeights::new(weights, n)?;
    x.check_policy(NAME, policy)?;
    let bad = w.pass(x, &[], out)?;
    if policy != NonFinite::Robust || bad.is_empty() {
        return Ok(MeanInfo::default());
    }
    nothing_left(&bad, n)?;
    w.pass(x, &bad, out)?;
    Ok(MeanInfo { dropped: bad })
}

/// [`mean`] of half-precision rows into `out` (their format). The inputs to drop are found on
/// the whole input first (under `Robust`, those holding NaN or ±inf anywhere); then each block
/// of coordinates averages the same rows with the same weights, as [`mean`]'s passes do.
pub fn mean_half(
    x: &HalfRows<'_>,
    weights: Option<&[f64]>,
    policy: NonFinite,
    out: &mut [u16],
) -> Result<MeanInfo, AggError> {
    let n = x.n();
    let w = MeanWeights::new(weights, n)?;
    x.check_policy(NAME, policy)?;
    // The first pass's weights (all inputs) are checked before anything is dropped, as in
    // [`mean`].
    w.items(&[])?;
    let bad = if policy == NonFinite::Robust {
        x.nonfinite_rows()
    } else {
        Vec::new()
    };
    nothing_left(&bad, n)?;
    // The items `MeanWeights::pass` makes, summed once.
    let (items, total) = w.items(&bad)?;
    weighted_sum_half_or_blocks(x, &items, total, out)?;
    Ok(MeanInfo { dropped: bad })
}

/// [`weighted_sum`] of half-precision rows into `out` (their format), where the level has an
/// explicit kernel that widens them in registers (AVX2, AVX-512): the float32 kernel's sums of
/// the same values, divided and rounded to float32, then to the format. `None` on other levels
/// (the caller runs the float32 kernel on widened blocks instead, with the same bits).
#[cfg(target_arch = "x86_64")]
fn weighted_sum_half(
    x: &HalfRows<'_>,
    items: &[(usize, f64)],
    total: f64,
    out: &mut [u16],
) -> Option<Vec<usize>> {
    let proof = simd::proof();
    if matches!(proof, Proof::Scalar) {
        return None;
    }
    assert!(!items.is_empty(), "callers average at least one input");
    let unit = items.iter().all(|&(_, w)| w == 1.0);
    let groups = items.len().div_ceil(GROUP);
    let kind = x.kind();
    let tile = |(t, o): (usize, &mut [u16]), (acc, vals): &mut (Vec<f64>, Vec<f32>)| {
        let j0 = t * TILE;
        acc.resize(o.len(), 0.0);
        vals.resize(o.len(), 0.0);
        let mut bad = Vec::new();
        let mut flags = [false; GROUP];
        for (g, group) in items.chunks(GROUP).enumerate() {
            let rows: Vec<(&[u16], f64)> = group
                .iter()
                .map(|&(i, w)| (&x.row(i)[j0..j0 + acc.len()], w))
                .collect();
            let pass = Pass {
                fresh: g == 0,
                finish: (g + 1 == groups).then_some((total, &mut vals[..])),
            };
            let done = x86::group_half(proof, kind, acc, &rows, &mut flags, unit, pass);
            assert!(done, "levels other than the scalar one have the kernel");
            bad.extend(
                group
                    .iter()
                    .zip(flags)
                    .filter(|(_, b)| *b)
                    .map(|(&(i, _), _)| i),
            );
        }
        crate::half::narrow_into(kind, vals, o);
        bad
    };
    Some(over_tiles(out, items.len() * x.d(), tile))
}

#[cfg(not(target_arch = "x86_64"))]
fn weighted_sum_half(
    _: &HalfRows<'_>,
    _: &[(usize, f64)],
    _: f64,
    _: &mut [u16],
) -> Option<Vec<usize>> {
    None
}

/// The weighted mean of half-precision rows `items` into `out`: in registers where the level
/// can, else by widened blocks ([`crate::half::by_blocks`]); the same bits either way.
pub(crate) fn weighted_sum_half_or_blocks(
    x: &HalfRows<'_>,
    items: &[(usize, f64)],
    total: f64,
    out: &mut [u16],
) -> Result<(), AggError> {
    if weighted_sum_half(x, items, total, out).is_some() {
        return Ok(());
    }
    crate::half::by_blocks(NAME, x, out, crate::half::WIDTH_SUMS, |r, o| {
        weighted_sum(r, items, total, o);
        Ok(())
    })
}

/// [`AggError::NonFinite`] where every one of the `n` inputs was dropped as non-finite.
pub(crate) fn nothing_left(dropped: &[usize], n: usize) -> Result<(), AggError> {
    if dropped.len() == n {
        return Err(AggError::NonFinite {
            rule: NAME,
            rows: dropped.to_vec(),
            detail: "every input holds NaN or infinite values, nothing is left to average",
        });
    }
    Ok(())
}

/// The mean's checked weights (ones without weights), for one or more passes of [`mean`]: a
/// caller that finds the non-finite inputs itself (by blocks of a half-precision input) runs
/// the passes on each block.
pub(crate) struct MeanWeights {
    w: Vec<f64>,
    normalise: bool,
}

impl MeanWeights {
    pub(crate) fn new(weights: Option<&[f64]>, n: usize) -> Result<Self, AggError> {
        Ok(match weights {
            Some(w) => {
                check_weights(NAME, w, n)?;
                MeanWeights {
                    w: w.to_vec(),
                    normalise: true,
                }
            }
            None => MeanWeights {
                w: vec![1.0; n],
                normalise: false,
            },
        })
    }

    /// The rows not in `dropped` (sorted) with their weights (normalised when given), and the
    /// weights' total; an error where that total is not positive.
    pub(crate) fn items(&self, dropped: &[usize]) -> Result<(Vec<(usize, f64)>, f64), AggError> {
        let kept: Vec<usize> = (0..self.w.len())
            .filter(|i| dropped.binary_search(i).is_err())
            .collect();
        let mut kw: Vec<f64> = kept.iter().map(|&i| self.w[i]).collect();
        if self.normalise {
            kw = normalise_weights(&kw).into_owned();
        }
        let items: Vec<(usize, f64)> = kept.into_iter().zip(kw).collect();
        let mut acc = <f64 as Float>::Acc::zero();
        items.iter().for_each(|&(_, v)| acc.add(v));
        let total = acc.value();
        if total <= 0.0 {
            return Err(AggError::InvalidParameter {
                rule: NAME,
                message: format!(
                    "the weights of the inputs averaged sum to 0 ({} non-finite inputs dropped)",
                    dropped.len()
                ),
            });
        }
        Ok((items, total))
    }

    /// The weighted mean of the rows not in `dropped` into `out`; the rows among them that hold
    /// a non-finite value.
    pub(crate) fn pass<T: Float>(
        &self,
        x: &Rows<'_, T>,
        dropped: &[usize],
        out: &mut [T],
    ) -> Result<Vec<usize>, AggError> {
        let (items, total) = self.items(dropped)?;
        Ok(weighted_sum(x, &items, total, out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::Level;
    use crate::testing::{rows, Rng};

    #[test]
    fn identical_values_average_to_themselves() {
        // float64 quotients of a sum of n copies round one ulp off for ~9 % of values; the
        // clamp to the averaged values' range makes every average of identical values exact,
        // weighted or not, and keeps every average inside its values.
        let mut rng = Rng(21);
        for n in [3usize, 7, 10, 33] {
            let v: Vec<f64> = (0..257).map(|_| (rng.next_f64() - 0.5) * 1e3).collect();
            let data = vec![v.clone(); n];
            let w: Vec<f64> = (0..n).map(|_| rng.next_f64().abs() + 1e-3).collect();
            let mut out = vec![0.0f64; v.len()];
            mean(&rows(&data), None, NonFinite::Robust, &mut out).unwrap();
            assert!(
                out.iter().zip(&v).all(|(a, b)| a.to_bits() == b.to_bits()),
                "n={n}"
            );
            mean(&rows(&data), Some(&w), NonFinite::Robust, &mut out).unwrap();
            assert!(
                out.iter().zip(&v).all(|(a, b)| a.to_bits() == b.to_bits()),
                "n={n} w"
            );
        }
    }

    #[test]
    fn plain_weighted_and_robust() {
        let data = vec![vec![1.0f32, 2.0], vec![3.0, f32::NAN], vec![5.0, 6.0]];
        let x = rows(&data);
        let mut out = vec![0.0f32; 2];
        let info = mean(&x, None, NonFinite::Robust, &mut out).unwrap();
        assert_eq!(out, vec![3.0, 4.0]);
        assert_eq!(info.dropped, vec![1]);
        mean(&x, None, NonFinite::Propagate, &mut out).unwrap();
        assert_eq!(out[0], 3.0);
        assert!(out[1].is_nan());
        mean(&x, Some(&[1.0, 0.0, 3.0]), NonFinite::Robust, &mut out).unwrap();
        assert_eq!(out, vec![4.0, 5.0]);
        let e = mean(&x, Some(&[1.0, -1.0, 3.0]), NonFinite::Robust, &mut out).unwrap_err();
        assert_eq!(
            e.to_string(),
            "mean: weights must be finite and >= 0, got weights[1]=-1"
        );
        let e = mean(&x, Some(&[0.0, 1.0, 0.0]), NonFinite::Robust, &mut out).unwrap_err();
        assert!(e.to_string().contains("sum to 0"));
    }

    #[test]
    fn simd_levels_and_threads_agree_bitwise() {
        // 11 rows: a first pass of 8 and a last pass of 3 (and 7: one pass doing both).
        for n in [7, 11] {
            let data = Rng(11).matrix(n, 50_003);
            let x = rows(&data);
            let mut a = vec![0.0f32; x.d()];
            simd::set_level(Level::Scalar);
            crate::pool::set_num_threads(1).unwrap();
            mean(&x, None, NonFinite::Robust, &mut a).unwrap();
            let exact: Vec<f32> = (0..x.d())
                .map(|j| ((0..n).map(|i| data[i][j] as f64).sum::<f64>() / n as f64) as f32)
                .collect();
            assert_eq!(a, exact);
            for level in simd::ALL {
                let mut b = vec![0.0f32; x.d()];
                simd::set_level(level); // capped at what the CPU has
                crate::pool::set_num_threads(2).unwrap();
                mean(&x, None, NonFinite::Robust, &mut b).unwrap();
                assert!(a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()));
            }
        }
    }
}
