//! Coordinate-wise trimmed mean (Yin et al., ICML 2018; byzfl `TrMean(f)`).
//!
//! For each coordinate, rank the `n` values by `(value, row)`, drop the `f` lowest and `f`
//! highest, and average the `n - 2f` kept values. Needs `n >= 2f + 1`. The kept values are
//! summed in ascending order in float64 (float32 input) or compensated float64 (float64
//! input), so the result is bitwise permutation-invariant and never computes
//! `total - smallest - largest` (Byzantine 1e38 values would overflow or cancel).
//!
//! NaN policy: `Robust` ranks NaN above `+inf`, so at most `f` bad values per side are trimmed;
//! more than that reach the sum and give ±inf or NaN. `Propagate`: a coordinate with a NaN is
//! NaN. The kernel reports the rows of the lowest and highest kept value per coordinate (the
//! kept set is every row whose key lies between those two keys), which the backward needs.
//!
//! `n <= 64`: compiled full-sort networks on SIMD lanes (`columns.rs`); larger `n`: the
//! interpreted network (`network.rs`) up to `network::MAX_N`, introselect beyond. The result
//! is always the ascending sum of the sorted kept ranks. A plain masked sum over rows would
//! add in row order, which a permutation of the inputs changes, and differ in the last bit
//! (docs/conventions.md: permutation invariance is exact). The one exception in method, not in bits:
//! float32 without rows on AVX2 or AVX-512 for `n > 64` finds only the two boundary ranks (a
//! network placing those two, or sample brackets from `bracket::min_n` rows, which also
//! replace introselect beyond the networks) and takes the tie-corrected masked sum where it is
//! provably exact, hence the same bits ([`exact_kept_mean`]); a block where it is not sorts its
//! kept ranks as before.

use crate::columns::compiled::{self as columns, Select};
use crate::columns::{
    ranked_columns, ranked_columns_with, ColumnsOut, Keying, Ranked, ValuesOnly, WithRows,
};
use crate::error::{AggError, MAJORITY};
use crate::half::HalfRows;
use crate::input::{NonFinite, Rows};
use crate::network::LANES;
use crate::order::{average, Accumulator, Float, IsF32};
#[cfg(target_arch = "x86_64")]
use crate::simd::{self, Avx2, Avx512, Proof};

pub const NAME: &str = "trimmed_mean";

/// The coordinate-wise `f`-trimmed mean of `x` into `out`.
pub fn trimmed_mean<T: Float>(
    x: &Rows<'_, T>,
    f: usize,
    policy: NonFinite,
    out: ColumnsOut<'_, T>,
) -> Result<(), AggError> {
    let n = x.n();
    MAJORITY.check("trimmed mean", n, f)?;
    x.check_policy(NAME, policy)?;
    let propagate = policy == NonFinite::Propagate;
    let (lo, hi) = (f, n - f - 1);
    let Some(out) = columns::select_columns(x, out, propagate, Select::Trimmed { lo, hi }) else {
        return Ok(());
    };
    // n beyond the compiled networks: the interpreted network, or selection.
    if out.rows.is_some() {
        ranked_columns::<T, WithRows>(
            x,
            out,
            propagate,
            lo,
            hi,
            |k| (kept_mean::<T, WithRows>(k, lo, hi), lo, hi),
            |_, _| false,
        );
    } else if let Some((t, is)) = masked_f32::<T>(n, lo, hi) {
        // float32 without rows on AVX2 or AVX-512: find only the two boundary ranks, then the
        // exact masked sum (`exact_kept_mean`), or, in a block where it would not be exact,
        // the kept ranks as below.
        ranked_columns_with::<T, ValuesOnly>(
            x,
            out,
            propagate,
            lo,
            hi,
            Some(
                |kb: &[T::VKey],
                 low: &[T::VKey; LANES],
                 high: &[T::VKey; LANES],
                 out: &mut [T; LANES]| {
                    let ends = |k: &[T::VKey; LANES]| -> [u32; LANES] {
                        (is.keys)(k).try_into().expect("LANES keys")
                    };
                    let (low, high) = (ends(low), ends(high));
                    exact_kept_mean(t, (is.keys)(kb), &low, &high, lo, hi, (is.lanes_mut)(out))
                },
            ),
            |k| (kept_mean::<T, ValuesOnly>(k, lo, hi), lo, hi),
            |kb, out| kept_mean_block::<T>(kb, lo, hi, out),
        );
    } else {
        ranked_columns::<T, ValuesOnly>(
            x,
            out,
            propagate,
            lo,
            hi,
            |k| (kept_mean::<T, ValuesOnly>(k, lo, hi), lo, hi),
            |kb, out| kept_mean_block::<T>(kb, lo, hi, out),
        );
    }
    Ok(())
}

/// [`trimmed_mean`] of half-precision rows into `out` (their format), by blocks of coordinates.
pub fn trimmed_mean_half(
    x: &HalfRows<'_>,
    f: usize,
    policy: NonFinite,
    out: &mut [u16],
) -> Result<(), AggError> {
    MAJORITY.check("trimmed mean", x.n(), f)?;
    x.check_policy(NAME, policy)?;
    let policy = crate::half::per_block(policy);
    crate::half::by_blocks(NAME, x, out, crate::half::WIDTH_RANKS, |r, o| {
        trimmed_mean(r, f, policy, ColumnsOut::new(o))
    })
}

/// The mean of ranks `lo..=hi`, summed in ascending order (bitwise permutation-invariant).
#[inline(always)]
fn kept_mean<T: Float, Kg: Keying<T>>(k: &Ranked<'_, Kg::K>, lo: usize, hi: usize) -> T {
    let mut acc = T::Acc::zero();
    for r in lo..=hi {
        acc.add(Kg::value(k.get(r)).to_f64());
    }
    let (a, b) = (Kg::value(k.get(lo)), Kg::value(k.get(hi)));
    let count = (hi - lo + 1) as f64;
    average(acc.value() / count, count, a, b, || {
        (lo..=hi).map(|r| (1.0, Kg::value(k.get(r)).to_f64()))
    })
}

/// [`kept_mean`] for a whole network block of value-only keys (`kb[rank * LANES + lane]`):
/// every lane sums its ranks in the same ascending order, so the bits are `kept_mean`'s, but
/// the lanes' sums are independent chains the CPU runs side by side (one chain of `n - 2f`
/// dependent additions per coordinate was the interpreted trimmed mean's bottleneck).
#[inline(always)]
fn kept_mean_block<T: Float>(kb: &[T::VKey], lo: usize, hi: usize, out: &mut [T; LANES]) -> bool {
    let mut acc = [T::Acc::zero(); LANES];
    for row in kb[lo * LANES..(hi + 1) * LANES].chunks_exact(LANES) {
        for (a, &k) in acc.iter_mut().zip(row) {
            a.add(T::vkey_value(k).to_f64());
        }
    }
    let count = (hi - lo + 1) as f64;
    for (l, (o, a)) in out.iter_mut().zip(&acc).enumerate() {
        let (a_lo, a_hi) = (kb[lo * LANES + l], kb[hi * LANES + l]);
        *o = average(
            a.value() / count,
            count,
            T::vkey_value(a_lo),
            T::vkey_value(a_hi),
            || (lo..=hi).map(move |r| (1.0, T::vkey_value(kb[r * LANES + l]).to_f64())),
        );
    }
    true
}

/// Per-lane totals of the masked pass over a block (see [`exact_kept_mean`]).
#[cfg(target_arch = "x86_64")]
struct MaskedPass {
    /// Sum, in float64, of the values strictly between the two boundary keys.
    sum: [f64; LANES],
    /// `#(key > low)` and `#(key < high)`.
    gt_low: [u32; LANES],
    lt_high: [u32; LANES],
    /// Largest magnitude, and smallest nonzero magnitude minus one (zero wraps to `u32::MAX`,
    /// so zeros never lower it), as float32 bits, of the values strictly between.
    a_max: [u32; LANES],
    a_min1: [u32; LANES],
}

/// The trimmed mean of a block of float32 value keys (`kb[row * LANES + lane]`, `n` rows in
/// any order) whose keys of ranks `lo` and `hi` are `low` and `high`, computed as a masked sum: the
/// values strictly between the two boundary keys, plus each boundary value times the number
/// of its copies that are kept (ties, counted from `#(key > low)` and `#(key < high)`).
/// Writes `out` and returns the mask of the lanes whose sum is not exact (their `out`
/// unspecified); an exact sum has the bits of [`kept_mean`]'s ascending float64 sum.
///
/// When it is exact: a float32 with biased exponent `E` (`E' = max(E, 1)`) is a multiple of
/// `2^(E' - 150)` below `2^(E' - 126)` in magnitude. With `E'min` / `E'max` over the nonzero
/// kept values and `count <= 2^c` of them, every partial sum, in any order, is a multiple of
/// `u = 2^(E'min - 150)` of magnitude below `count * 2^(E'max - 126)`, so when
/// `c + E'max - E'min <= 29` it stays below `2^53 * u`, representable in float64: every
/// addition (and each `copies * value` product) is exact, in any order, and the ascending sum
/// gives the same float64 (an exact zero's sign is settled from the kept values at the end).
/// Infinities and NaN are never exact here. Kept values spanning more than about 2^21 (a tiny
/// nonzero value next to large ones) fall back to sorting the kept ranks, for that block only.
#[cfg(target_arch = "x86_64")]
#[inline]
fn exact_kept_mean(
    t: Masked,
    kb: &[u32],
    low: &[u32; LANES],
    high: &[u32; LANES],
    lo: usize,
    hi: usize,
    out: &mut [f32; LANES],
) -> u32 {
    assert!(kb.len().is_multiple_of(LANES) && lo <= hi && hi < kb.len() / LANES);
    let pass = match t {
        Masked::Avx512(t) => masked_pass(t, kb, low, high),
        Masked::Avx2(t) => masked_pass_avx2(t, kb, low, high),
    };
    finish_exact(&pass, kb.len() / LANES, low, high, lo, hi, out)
}

/// A level the masked pass is written for, with its proof.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
enum Masked {
    Avx2(Avx2),
    Avx512(Avx512),
}

/// The masked pass's level, and the witness that `T` is float32, when both hold and the pass
/// pays: on AVX-512 always (n > 64), on AVX2 where sample brackets find the boundary ranks.
/// Behind a network placing the two ranks, the AVX2 pass (twice the instructions of the
/// AVX-512 one) was 5-15 % slower than sorting the kept ranks at n = 65-400; with brackets it
/// was 1.4-1.55x faster at n = 1000-2000 (docs/performance.md).
#[cfg(target_arch = "x86_64")]
fn masked_f32<T: Float>(n: usize, lo: usize, hi: usize) -> Option<(Masked, IsF32<T>)> {
    match (simd::proof(), T::is_f32()) {
        (Proof::Avx512(t), Some(is)) => Some((Masked::Avx512(t), is)),
        (Proof::Avx2(t), Some(is)) if n >= crate::columns::bracket::min_n(hi - lo > 1) => {
            Some((Masked::Avx2(t), is))
        }
        _ => None,
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn masked_f32<T: Float>(_: usize, _: usize, _: usize) -> Option<((), IsF32<T>)> {
    None
}

#[cfg(not(target_arch = "x86_64"))]
fn exact_kept_mean(
    _: (),
    _: &[u32],
    _: &[u32; LANES],
    _: &[u32; LANES],
    _: usize,
    _: usize,
    _: &mut [f32; LANES],
) -> u32 {
    unreachable!("only on x86-64")
}

crate::simd::per_level! {
    avx512 only;
    /// [`masked_pass_body`] compiled for AVX-512, the only level it runs on.
    fn masked_pass[][](isa: I, kb: &[u32], low: &[u32; LANES], high: &[u32; LANES]) -> MaskedPass {
        masked_pass_body(isa, kb, low, high)
    }
}

/// The masked pass, one zmm of 16 keys per row: two compares give the inside mask, the keys
/// become float32 bits (`order.rs`'s `ord32` undone: one shift and one ternary logic op) and
/// two float64 halves added under the mask; masked counts, max and min take the rest.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn masked_pass_body(_: Avx512, kb: &[u32], low: &[u32; LANES], high: &[u32; LANES]) -> MaskedPass {
    assert!(kb.len().is_multiple_of(LANES));
    // SAFETY: the token proves the CPU runs AVX-512 F/BW/DQ/VL; every load is of a row
    // r < kb.len() / LANES of `kb`, or of `low` / `high`, 16 keys each.
    unsafe {
        use std::arch::x86_64::*;
        let p = kb.as_ptr();
        let (low, high) = (
            _mm512_loadu_si512(low.as_ptr() as *const _),
            _mm512_loadu_si512(high.as_ptr() as *const _),
        );
        let sign = _mm512_set1_epi32(i32::MIN);
        let abs = _mm512_set1_epi32(i32::MAX);
        let one = _mm512_set1_epi32(1);
        let (mut s0, mut s1) = (_mm512_setzero_pd(), _mm512_setzero_pd());
        let (mut gt, mut lt) = (_mm512_setzero_si512(), _mm512_setzero_si512());
        let (mut a_max, mut a_min1) = (_mm512_setzero_si512(), _mm512_set1_epi32(-1));
        for r in 0..kb.len() / LANES {
            let k = _mm512_loadu_si512(p.add(r * LANES) as *const _);
            let gt_low = _mm512_cmpgt_epu32_mask(k, low);
            let lt_high = _mm512_cmplt_epu32_mask(k, high);
            let inside = gt_low & lt_high;
            // bits = k ^ (!(k >>a 31) | SIGN): a set top bit clears it, a clear one flips all.
            let top = _mm512_srai_epi32::<31>(k);
            let bits = _mm512_ternarylogic_epi32::<0x4b>(k, top, sign);
            let f = _mm512_castsi512_ps(bits);
            let v0 = _mm512_cvtps_pd(_mm512_castps512_ps256(f));
            let v1 = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(
                _mm512_castps_pd(f),
            )));
            s0 = _mm512_mask_add_pd(s0, inside as u8, s0, v0);
            s1 = _mm512_mask_add_pd(s1, (inside >> 8) as u8, s1, v1);
            gt = _mm512_mask_add_epi32(gt, gt_low, gt, one);
            lt = _mm512_mask_add_epi32(lt, lt_high, lt, one);
            let a = _mm512_and_si512(bits, abs);
            a_max = _mm512_mask_max_epu32(a_max, inside, a_max, a);
            a_min1 = _mm512_mask_min_epu32(a_min1, inside, a_min1, _mm512_sub_epi32(a, one));
        }
        let mut out = MaskedPass {
            sum: [0.0; LANES],
            gt_low: [0; LANES],
            lt_high: [0; LANES],
            a_max: [0; LANES],
            a_min1: [0; LANES],
        };
        _mm512_storeu_pd(out.sum.as_mut_ptr(), s0);
        _mm512_storeu_pd(out.sum.as_mut_ptr().add(8), s1);
        _mm512_storeu_si512(out.gt_low.as_mut_ptr() as *mut _, gt);
        _mm512_storeu_si512(out.lt_high.as_mut_ptr() as *mut _, lt);
        _mm512_storeu_si512(out.a_max.as_mut_ptr() as *mut _, a_max);
        _mm512_storeu_si512(out.a_min1.as_mut_ptr() as *mut _, a_min1);
        out
    }
}

/// [`masked_pass_body`] in AVX2: two ymm of 8 keys per row, the same totals. Where AVX-512
/// adds under a mask, this adds `+0.0` outside it (exact, and a zero sum's sign is settled by
/// [`finish_exact`] either way), and the max and min take 0 and `u32::MAX` outside.
#[cfg(target_arch = "x86_64")]
fn masked_pass_avx2(_: Avx2, kb: &[u32], low: &[u32; LANES], high: &[u32; LANES]) -> MaskedPass {
    // SAFETY: the token proves the CPU runs AVX2.
    unsafe { masked_pass_avx2_impl(kb, low, high) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn masked_pass_avx2_impl(kb: &[u32], low: &[u32; LANES], high: &[u32; LANES]) -> MaskedPass {
    assert!(kb.len().is_multiple_of(LANES));
    // SAFETY: AVX2 is enabled (the caller's proof); every load is of a row r < kb.len() /
    // LANES of `kb`, or of `low` / `high`, 8 keys at offsets 0 and 8; every store is into the
    // 16-lane arrays of `out`.
    unsafe {
        use std::arch::x86_64::*;
        let sign = _mm256_set1_epi32(i32::MIN);
        let abs = _mm256_set1_epi32(i32::MAX);
        let ones = _mm256_set1_epi32(-1);
        let load = |p: *const u32| _mm256_loadu_si256(p as *const _);
        let flip = |v: __m256i| _mm256_xor_si256(v, sign);
        let lowx = [flip(load(low.as_ptr())), flip(load(low.as_ptr().add(8)))];
        let highx = [flip(load(high.as_ptr())), flip(load(high.as_ptr().add(8)))];
        let mut s = [_mm256_setzero_pd(); 4];
        let mut gt = [_mm256_setzero_si256(); 2];
        let mut lt = [_mm256_setzero_si256(); 2];
        let mut a_max = [_mm256_setzero_si256(); 2];
        let mut a_min1 = [ones; 2];
        for row in kb.chunks_exact(LANES) {
            for h in 0..2 {
                let k = load(row.as_ptr().add(8 * h));
                let kx = flip(k);
                let gt_low = _mm256_cmpgt_epi32(kx, lowx[h]);
                let lt_high = _mm256_cmpgt_epi32(highx[h], kx);
                let inside = _mm256_and_si256(gt_low, lt_high);
                gt[h] = _mm256_sub_epi32(gt[h], gt_low);
                lt[h] = _mm256_sub_epi32(lt[h], lt_high);
                // bits = k ^ (!(k >>a 31) | SIGN), as the AVX-512 pass.
                let top = _mm256_srai_epi32::<31>(k);
                let bits = _mm256_xor_si256(k, _mm256_or_si256(_mm256_xor_si256(top, ones), sign));
                let f = _mm256_castsi256_ps(_mm256_and_si256(bits, inside));
                let v0 = _mm256_cvtps_pd(_mm256_castps256_ps128(f));
                let v1 = _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(f));
                s[2 * h] = _mm256_add_pd(s[2 * h], v0);
                s[2 * h + 1] = _mm256_add_pd(s[2 * h + 1], v1);
                let a = _mm256_and_si256(bits, abs);
                a_max[h] = _mm256_max_epu32(a_max[h], _mm256_and_si256(a, inside));
                let a1 = _mm256_sub_epi32(a, _mm256_set1_epi32(1));
                a_min1[h] = _mm256_min_epu32(
                    a_min1[h],
                    _mm256_or_si256(a1, _mm256_xor_si256(inside, ones)),
                );
            }
        }
        let mut out = MaskedPass {
            sum: [0.0; LANES],
            gt_low: [0; LANES],
            lt_high: [0; LANES],
            a_max: [0; LANES],
            a_min1: [0; LANES],
        };
        for (q, &v) in s.iter().enumerate() {
            _mm256_storeu_pd(out.sum.as_mut_ptr().add(4 * q), v);
        }
        for h in 0..2 {
            _mm256_storeu_si256(out.gt_low.as_mut_ptr().add(8 * h) as *mut _, gt[h]);
            _mm256_storeu_si256(out.lt_high.as_mut_ptr().add(8 * h) as *mut _, lt[h]);
            _mm256_storeu_si256(out.a_max.as_mut_ptr().add(8 * h) as *mut _, a_max[h]);
            _mm256_storeu_si256(out.a_min1.as_mut_ptr().add(8 * h) as *mut _, a_min1[h]);
        }
        out
    }
}

/// [`exact_kept_mean`]'s per-lane conclusion from the pass's totals.
#[cfg(target_arch = "x86_64")]
fn finish_exact(
    pass: &MaskedPass,
    n: usize,
    low: &[u32; LANES],
    high: &[u32; LANES],
    lo: usize,
    hi: usize,
    out: &mut [f32; LANES],
) -> u32 {
    const ABS: u32 = !(1 << 31);
    let mut inexact = 0u32;
    let count = hi - lo + 1;
    let c = usize::BITS - (count - 1).leading_zeros();
    for l in 0..LANES {
        let (kl, kh) = (low[l], high[l]);
        let (bl, bh) = (f32::vkey_value(kl).to_bits(), f32::vkey_value(kh).to_bits());
        let a_max = pass.a_max[l].max(bl & ABS).max(bh & ABS);
        let a_min1 = pass.a_min1[l]
            .min((bl & ABS).wrapping_sub(1))
            .min((bh & ABS).wrapping_sub(1));
        if a_max >= 0x7f80_0000 {
            inexact |= 1 << l; // an infinity or NaN is kept
            continue;
        }
        if a_min1 != u32::MAX {
            let e_max = (a_max >> 23).max(1);
            let e_min = ((a_min1 + 1) >> 23).max(1);
            if c + e_max - e_min > 29 {
                inexact |= 1 << l;
                continue;
            }
        }
        // Copies of each boundary kept; all of them at the low one when the two are equal.
        let (n_low, n_high) = if kl == kh {
            (count, 0)
        } else {
            (
                n - pass.gt_low[l] as usize - lo,
                hi + 1 - pass.lt_high[l] as usize,
            )
        };
        let s = pass.sum[l]
            + n_low as f64 * f32::from_bits(bl) as f64
            + n_high as f64 * f32::from_bits(bh) as f64;
        // The ascending sum starts from -0.0: it is -0.0 exactly when every kept value is
        // -0.0, i.e. the sum is zero and the highest kept value is -0.0 (+0.0 ranks above).
        let s = if s == 0.0 && bh == 1 << 31 { -0.0 } else { s };
        out[l] = (s / count as f64) as f32;
    }
    inexact
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{rows, Rng};

    fn tm<T: Float>(data: &[Vec<T>], f: usize, policy: NonFinite) -> Vec<T> {
        let x = rows(data);
        let mut out = vec![T::ZERO; x.d()];
        trimmed_mean(&x, f, policy, ColumnsOut::new(&mut out)).unwrap();
        out
    }

    #[test]
    fn spec_oracles() {
        let x = vec![
            vec![1.0f64, 10.0],
            vec![2.0, -3.0],
            vec![4.0, 7.0],
            vec![100.0, 0.5],
        ];
        assert_eq!(tm(&x, 1, NonFinite::Robust), vec![3.0, 3.75]);
        let y: Vec<Vec<f64>> = [
            [6., -8.],
            [-6., -5.],
            [-6., 6.],
            [7., 2.],
            [-9., -8.],
            [-3., -1.],
            [40., -30.],
        ]
        .iter()
        .map(|r| r.to_vec())
        .collect();
        let b1 = tm(&y, 1, NonFinite::Robust);
        assert!((b1[0] + 0.4).abs() < 1e-12 && (b1[1] + 4.0).abs() < 1e-12);
        let b2 = tm(&y, 2, NonFinite::Robust);
        assert!((b2[0] + 1.0).abs() < 1e-12 && (b2[1] + 14.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn too_few_inputs() {
        let x = vec![vec![1.0f32], vec![2.0]];
        let x = rows(&x);
        let mut out = vec![0.0f32];
        let e = trimmed_mean(&x, 1, NonFinite::Robust, ColumnsOut::new(&mut out)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "trimmed mean needs n >= 2f + 1, got n=2, f=1"
        );
    }

    #[test]
    fn identical_values_average_to_themselves() {
        let mut rng = Rng(23);
        for n in [5usize, 9, 40, 100] {
            let v: Vec<f64> = (0..67).map(|_| (rng.next_f64() - 0.5) * 1e3).collect();
            let data = vec![v.clone(); n];
            for got in [
                tm(&data, 1, NonFinite::Robust),
                tm(&data, n / 2 - 1, NonFinite::Robust),
            ] {
                assert!(
                    got.iter().zip(&v).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "n={n}"
                );
            }
        }
    }

    #[test]
    fn huge_values_are_trimmed_without_overflow() {
        let x = vec![vec![3e38f32], vec![1.0], vec![2.0], vec![3.0], vec![-3e38]];
        assert_eq!(tm(&x, 1, NonFinite::Robust), vec![2.0]);
        let x = vec![
            vec![f32::NAN],
            vec![1.0],
            vec![2.0],
            vec![f32::INFINITY],
            vec![0.0],
        ];
        assert_eq!(tm(&x, 2, NonFinite::Robust), vec![2.0]);
        assert!(tm(&x, 2, NonFinite::Propagate)[0].is_nan());
    }

    /// The sorted-sum trimmed mean of one float32 column (the definition).
    fn sorted_mean(col: &[f32], f: usize) -> f32 {
        let mut c = col.to_vec();
        c.sort_by(|a, b| a.total_cmp(b));
        let s = c[f..c.len() - f].iter().fold(-0.0f64, |s, &v| s + v as f64);
        (s / (c.len() - 2 * f) as f64) as f32
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn masked_sum_is_exact_or_declines() {
        let levels: Vec<Masked> = [
            Avx512::detect().map(Masked::Avx512),
            Avx2::detect().map(Masked::Avx2),
        ]
        .into_iter()
        .flatten()
        .collect();
        // Blocks of value keys in random order, boundaries placed by sorting: when the masked
        // sum says it is exact it has the sorted sum's bits; on kept values spanning 2^40 it
        // must decline (their row-order sum rounds differently), and on narrow ones accept.
        let mut rng = Rng(17);
        for &(n, f) in &[(65usize, 6usize), (100, 10), (200, 20), (200, 0), (129, 64)] {
            for wide in [false, true] {
                let cols: Vec<Vec<f32>> = (0..LANES)
                    .map(|_| {
                        (0..n)
                            .map(|i| {
                                let v = (rng.next_f64() - 0.5) as f32;
                                let e = if wide { (i % 41) as i32 - 20 } else { 0 };
                                v * (2.0f32).powi(e)
                            })
                            .collect()
                    })
                    .collect();
                let mut kb = vec![0u32; n * LANES];
                for (l, col) in cols.iter().enumerate() {
                    let mut keys: Vec<u32> = col.iter().map(|v| v.vkey()).collect();
                    keys.sort_unstable();
                    // Keep ranks f and n-f-1 in place, scramble the rest by a rotation.
                    let (a, b) = (keys[f], keys[n - f - 1]);
                    let mut rest: Vec<u32> = keys
                        .iter()
                        .enumerate()
                        .filter(|&(r, _)| r != f && r != n - f - 1)
                        .map(|(_, &k)| k)
                        .collect();
                    rest.rotate_left(l + 3);
                    let mut it = rest.into_iter();
                    for r in 0..n {
                        kb[r * LANES + l] = if r == f {
                            a
                        } else if r == n - f - 1 {
                            b
                        } else {
                            it.next().unwrap()
                        };
                    }
                }
                let mut out = [0.0f32; LANES];
                let row = |r: usize| -> [u32; LANES] {
                    kb[r * LANES..(r + 1) * LANES].try_into().unwrap()
                };
                let (low, high) = (row(f), row(n - f - 1));
                for &t in &levels {
                    let inexact = exact_kept_mean(t, &kb, &low, &high, f, n - f - 1, &mut out);
                    let all_exact = !wide || n - 2 * f == 1;
                    assert_eq!(inexact == 0, all_exact, "n={n} f={f} wide={wide}");
                    for l in (0..LANES).filter(|&l| inexact >> l & 1 == 0) {
                        assert_eq!(out[l].to_bits(), sorted_mean(&cols[l], f).to_bits());
                    }
                }
            }
        }
    }

    #[test]
    fn values_only_float32_on_every_level() {
        // The masked sum and its per-block fallback through the public kernel, every SIMD
        // level, against the sorted sum: narrow data, wide data, ties with signed zeros.
        let mut rng = Rng(5);
        for &n in &[65usize, 100, 200, 768, 1100] {
            for case in 0..3 {
                let data: Vec<Vec<f32>> = (0..n)
                    .map(|i| {
                        (0..16 * 5 + 3)
                            .map(|j| {
                                let v = (rng.next_f64() - 0.5) as f32;
                                match case {
                                    0 => v,
                                    1 if j % 3 == 0 => v * (2.0f32).powi((i % 41) as i32 - 20),
                                    1 => v,
                                    _ => [0.0, -0.0, 1.0, -2.0][(i * 7 + j) % 4],
                                }
                            })
                            .collect()
                    })
                    .collect();
                for f in [0, 1, n / 10, (n - 1) / 2] {
                    let want: Vec<u32> = (0..data[0].len())
                        .map(|j| {
                            let col: Vec<f32> = (0..n).map(|i| data[i][j]).collect();
                            sorted_mean(&col, f).to_bits()
                        })
                        .collect();
                    for level in simd::ALL {
                        simd::set_level(level); // capped at what the CPU has
                        let got: Vec<u32> = tm(&data, f, NonFinite::Robust)
                            .iter()
                            .map(|v| v.to_bits())
                            .collect();
                        assert_eq!(got, want, "n={n} case={case} f={f} {level:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn matches_sorting_and_reports_bounds() {
        let mut rng = Rng(3);
        // 1100 > network::MAX_N: the selection path.
        for &(n, f) in &[
            (1usize, 0usize),
            (5, 0),
            (5, 2),
            (12, 3),
            (40, 4),
            (1100, 100),
            (1101, 550),
        ] {
            let data = rng.matrix(n, 300);
            let x = rows(&data);
            let mut out = vec![0.0f32; 300];
            let (mut lo, mut hi) = (vec![0u32; 300], vec![0u32; 300]);
            trimmed_mean(
                &x,
                f,
                NonFinite::Robust,
                ColumnsOut::with_rows(&mut out, &mut lo, &mut hi),
            )
            .unwrap();
            for j in 0..300 {
                let mut col: Vec<(f32, usize)> = (0..n).map(|i| (data[i][j], i)).collect();
                col.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                let s: f64 = col[f..n - f].iter().map(|v| v.0 as f64).sum();
                assert_eq!(out[j], (s / (n - 2 * f) as f64) as f32);
                assert_eq!(
                    (lo[j] as usize, hi[j] as usize),
                    (col[f].1, col[n - f - 1].1)
                );
            }
        }
    }
}
