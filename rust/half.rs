//! Half-precision inputs (IEEE float16 and bfloat16) read in place.
//!
//! The rules' kernels are written for float32 and float64. A half-precision input is not copied
//! to float32 as a whole (that would triple the memory of the input): it is read in blocks of
//! coordinates, each block of all `n` rows widened into a float32 buffer of about 128 KiB that
//! one worker owns and reuses, the float32 kernel runs on the block, and its output is rounded
//! to the input's format (round to nearest, ties to even). Extra memory: one buffer per worker
//! and the float32 outputs of one block.
//!
//! Widening is exact (every float16 and bfloat16 is a float32), so a coordinate-wise rule gives
//! the bits of the float32 kernel on the widened input, rounded once: the same as converting the
//! whole input first. Rules whose semantics span a whole row (a mean dropping the inputs that
//! hold NaN anywhere, `nonfinite="raise"` naming every such input) make that decision on the
//! whole input first, then run by blocks on what is kept (`mean_half` in `rules/mean.rs`, the
//! `*_half` entry points beside each float32 one).

use rayon::prelude::*;

use crate::error::AggError;
use crate::input::{NonFinite, Rows};
use crate::simd::Isa;

/// The two half-precision formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Half {
    /// IEEE 754 binary16: 5 exponent bits, 10 mantissa bits.
    F16,
    /// bfloat16: float32's 8 exponent bits, 7 mantissa bits.
    Bf16,
}

impl Half {
    pub const NAMES: [&'static str; 2] = ["float16", "bfloat16"];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "float16" => Some(Half::F16),
            "bfloat16" => Some(Half::Bf16),
            _ => None,
        }
    }

    /// The float32 value of the bit pattern `h` (exact). The kernels use [`widen`]'s loops.
    #[cfg(test)]
    pub fn widen(self, h: u16) -> f32 {
        match self {
            Half::F16 => f16_to_f32(h),
            Half::Bf16 => f32::from_bits((h as u32) << 16),
        }
    }

    /// `v` rounded to this format: to nearest, ties to even; overflow gives ±inf; NaN stays
    /// NaN with its sign (float16 keeps the top of the payload, as numpy does; bfloat16 gives
    /// the canonical quiet NaN, as ml_dtypes and torch do). The kernels use [`narrow`]'s
    /// loops.
    #[cfg(test)]
    pub fn narrow(self, v: f32) -> u16 {
        match self {
            Half::F16 => f32_to_f16(v),
            Half::Bf16 => f32_to_bf16(v),
        }
    }

    /// Whether the bit pattern `h` is a finite value.
    #[inline(always)]
    pub fn is_finite(self, h: u16) -> bool {
        match self {
            Half::F16 => h & 0x7c00 != 0x7c00,
            Half::Bf16 => h & 0x7f80 != 0x7f80,
        }
    }
}

/// float16 to float32, branch-free (the selects vectorise). Normal numbers move their exponent
/// and mantissa into place and rebias; subnormals `m 2^-24` are formed exactly as
/// `2^-14 (1 + m/1024) - 2^-14`; inf stays inf and NaN keeps its payload and becomes quiet, as
/// F16C's conversion does (so every level gives the same bits).
#[inline(always)]
fn f16_to_f32(h: u16) -> f32 {
    let h = h as u32;
    let sign = (h & 0x8000) << 16;
    let shifted = (h & 0x7fff) << 13;
    let exp = shifted & 0x0f80_0000;
    let normal = shifted + ((127 - 15) << 23);
    let sub = (f32::from_bits(shifted + (113 << 23)) - f32::from_bits(113 << 23)).to_bits();
    let quiet = if shifted & 0x007f_ffff != 0 {
        0x0040_0000
    } else {
        0
    };
    let special = shifted | 0x7f80_0000 | quiet;
    let bits = if exp == 0x0f80_0000 {
        special
    } else if exp == 0 {
        sub
    } else {
        normal
    };
    f32::from_bits(bits | sign)
}

/// float32 to float16, round to nearest even. Subnormal results come from one float32 addition
/// of 0.5, which rounds (to nearest even, the default mode) at float16's last subnormal bit.
#[inline(always)]
fn f32_to_f16(v: f32) -> u16 {
    let x = v.to_bits();
    let sign = (x >> 16) & 0x8000;
    let a = x & 0x7fff_ffff;
    let o = if a >= 0x4780_0000 {
        // |v| >= 2^16 (beyond float16's range after rounding), inf or NaN
        if a > 0x7f80_0000 {
            0x7e00 | ((a >> 13) & 0x3ff)
        } else {
            0x7c00
        }
    } else if a < 0x3880_0000 {
        // |v| < 2^-14: a float16 subnormal or zero
        const MAGIC: u32 = 126 << 23; // 0.5
        (f32::from_bits(a) + f32::from_bits(MAGIC)).to_bits() - MAGIC
    } else {
        // rebias the exponent, then round the 13 dropped bits to nearest even (a carry may
        // reach the exponent, and from 65520 on, infinity)
        let odd = (a >> 13) & 1;
        (a.wrapping_sub((127 - 15) << 23) + 0xfff + odd) >> 13
    };
    (o | sign) as u16
}

/// float32 to bfloat16, round to nearest even; NaN becomes the quiet NaN `0x7fc0` with its
/// sign, as ml_dtypes' and torch's conversions give it.
#[inline(always)]
fn f32_to_bf16(v: f32) -> u16 {
    let b = v.to_bits();
    if v.is_nan() {
        return (((b >> 16) & 0x8000) | 0x7fc0) as u16;
    }
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// `n >= 1` half-precision rows of equal length `d`, and their format.
#[derive(Debug, Clone)]
pub struct HalfRows<'a> {
    kind: Half,
    rows: Vec<&'a [u16]>,
    d: usize,
}

impl<'a> HalfRows<'a> {
    /// Check the rows as [`Rows::new`] does.
    pub fn new(rule: &'static str, kind: Half, rows: Vec<&'a [u16]>) -> Result<Self, AggError> {
        let d = crate::input::check_rows(rule, &rows)?;
        Ok(HalfRows { kind, rows, d })
    }

    pub fn kind(&self) -> Half {
        self.kind
    }
    pub fn n(&self) -> usize {
        self.rows.len()
    }
    pub fn row(&self, i: usize) -> &'a [u16] {
        self.rows[i]
    }
    pub fn d(&self) -> usize {
        self.d
    }

    /// The rows that hold at least one NaN or ±inf, in increasing order.
    pub fn nonfinite_rows(&self) -> Vec<usize> {
        let kind = self.kind;
        let bad = |r: &&[u16]| !r.iter().fold(true, |ok, &h| ok & kind.is_finite(h));
        let one = |(i, r): (usize, &&[u16])| bad(r).then_some(i);
        if !crate::pool::split(self.n() * self.d) {
            self.rows.iter().enumerate().filter_map(one).collect()
        } else {
            crate::pool::install(|| self.rows.par_iter().enumerate().filter_map(one).collect())
        }
    }

    /// With `NonFinite::Raise`, refuse non-finite inputs (as [`Rows::check_policy`]).
    pub fn check_policy(&self, rule: &'static str, policy: NonFinite) -> Result<(), AggError> {
        crate::input::check_policy(rule, policy, || self.nonfinite_rows())
    }

    /// Columns `c0..c1` of every row, widened to float32, into `buf` (row-major, `n` rows of
    /// `c1 - c0`).
    fn widen_block(&self, c0: usize, c1: usize, buf: &mut [f32]) {
        let w = c1 - c0;
        for (i, dst) in buf.chunks_exact_mut(w).enumerate() {
            self.widen_into(i, c0, c1, dst);
        }
    }

    /// Columns `c0..c1` of row `i`, widened to float32, into `dst`.
    pub fn widen_into(&self, i: usize, c0: usize, c1: usize, dst: &mut [f32]) {
        widen(crate::simd::proof(), self.kind, &self.rows[i][c0..c1], dst);
    }
}

/// `dst[0] = kind.widen(h)`, one value (the scalar tails of explicit kernels).
#[inline(always)]
pub fn widen_scalar(kind: Half, h: u16, dst: &mut [f32; 1]) {
    dst[0] = match kind {
        Half::F16 => f16_to_f32(h),
        Half::Bf16 => f32::from_bits((h as u32) << 16),
    };
}

crate::simd::per_level! {
    avx2;
    /// `dst[k] = kind.widen(src[k])`, compiled per level so the loop vectorises.
    fn widen[][](isa: I, kind: Half, src: &[u16], dst: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if let (Some(t), Half::F16) = (isa.as_avx2(), kind) {
            return widen_f16c(t, src, dst);
        }
        let _ = isa;
        match kind {
            Half::F16 => dst.iter_mut().zip(src).for_each(|(d, &h)| *d = f16_to_f32(h)),
            Half::Bf16 => dst
                .iter_mut()
                .zip(src)
                .for_each(|(d, &h)| *d = f32::from_bits((h as u32) << 16)),
        }
    }
}

/// float16 to float32 with F16C, 8 values per instruction: the bits of [`f16_to_f32`]
/// (compared on every pattern in the tests).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn widen_f16c(_: crate::simd::Avx2, src: &[u16], dst: &mut [f32]) {
    use std::arch::x86_64::{__m128i, _mm256_cvtph_ps, _mm256_storeu_ps, _mm_loadu_si128};
    let mut s = src.chunks_exact(8);
    let mut d = dst.chunks_exact_mut(8);
    for (a, b) in (&mut s).zip(&mut d) {
        // SAFETY: the token proves AVX2 and F16C; `a` holds 8 u16 (16 bytes, an unaligned
        // load) and `b` 8 floats (an unaligned store).
        unsafe {
            let h = _mm_loadu_si128(a.as_ptr() as *const __m128i);
            _mm256_storeu_ps(b.as_mut_ptr(), _mm256_cvtph_ps(h));
        }
    }
    for (&h, v) in s.remainder().iter().zip(d.into_remainder()) {
        *v = f16_to_f32(h);
    }
}

crate::simd::per_level! {
    avx2;
    /// `dst[k] = kind.narrow(src[k])`, compiled per level so the loop vectorises.
    fn narrow[][](isa: I, kind: Half, src: &[f32], dst: &mut [u16]) {
        let _ = isa;
        match kind {
            Half::F16 => dst.iter_mut().zip(src).for_each(|(d, &v)| *d = f32_to_f16(v)),
            Half::Bf16 => dst.iter_mut().zip(src).for_each(|(d, &v)| *d = f32_to_bf16(v)),
        }
    }
}

/// The policy each block runs under once the whole input has passed `policy`'s check:
/// `Raise` has refused any non-finite input already, and on finite inputs it computes what
/// `Robust` does, without scanning each block again.
pub fn per_block(policy: NonFinite) -> NonFinite {
    match policy {
        NonFinite::Raise => NonFinite::Robust,
        p => p,
    }
}

/// `out[k] = kind.narrow(vals[k])` on the level in force.
pub fn narrow_into(kind: Half, vals: &[f32], out: &mut [u16]) {
    narrow(crate::simd::proof(), kind, vals, out);
}

/// Widened values per block for small `n`: 128 KiB of float32, which stays in L2 while the
/// kernel reads it, and below the size at which the float32 kernels split work across threads
/// (so a block runs on the worker that widened it).
const BLOCK_VALUES: usize = 1 << 15;

/// Coordinates per block at least, for kernels that stream through their rows once (sums):
/// the float32 kernels have fixed costs per call that narrower blocks repeat too often.
pub const WIDTH_SUMS: usize = 256;

/// Coordinates per block at least, for the rank-based kernels, whose fixed costs per call
/// (scratch tiles, the interpreted network's and the sample brackets' set-up) are larger.
/// Measured (release build, 2-core Xeon, bfloat16 against float32 coordinates per second at
/// n = 200 / 1000): median 0.46 / 0.37 with blocks of at least 256 coordinates, 0.79 / 0.70
/// with 1024; the mean instead lost (0.63 / 0.77 with 256, 0.40 / 0.52 with 1024).
pub const WIDTH_RANKS: usize = 1024;

/// Coordinates per block for `n` rows: a multiple of 16 (the column kernels' lane blocks).
fn block_width(n: usize, min_width: usize) -> usize {
    ((BLOCK_VALUES / n.max(1)) / 16 * 16).max(min_width)
}

/// Run a coordinate-wise float32 kernel over `x` by blocks of coordinates (at least
/// `min_width` of them, [`WIDTH_SUMS`] or [`WIDTH_RANKS`]): each block widened into a buffer its
/// worker reuses, `kernel(block, out)` writes the block's float32 outputs,
/// which are rounded into `out` (`x.d()` values in `x`'s format). `kernel` must compute each
/// output coordinate from that coordinate's values alone, so that blocking cannot change bits.
/// The first error a block returns is returned.
pub fn by_blocks<K>(
    rule: &'static str,
    x: &HalfRows<'_>,
    out: &mut [u16],
    min_width: usize,
    kernel: K,
) -> Result<(), AggError>
where
    K: Fn(&Rows<'_, f32>, &mut [f32]) -> Result<(), AggError> + Sync,
{
    let (n, d) = (x.n(), x.d());
    assert_eq!(out.len(), d);
    if d == 0 {
        // The kernel's own checks (parameters against n) still run, on an empty block.
        let empty: Vec<&[f32]> = vec![&[]; n];
        return kernel(&Rows::new(rule, empty)?, &mut []);
    }
    let width = block_width(n, min_width).min(d);
    let proof = crate::simd::proof();
    let init = || (vec![0.0f32; n * width], vec![0.0f32; width]);
    // `serial`: inside the parallel blocks the kernel must not split its block again; blocks
    // run one after the other, it may.
    let run =
        |serial: bool, (buf, vals): &mut (Vec<f32>, Vec<f32>), (b, o): (usize, &mut [u16])| {
            let (c0, w) = (b * width, o.len());
            let buf = &mut buf[..n * w];
            x.widen_block(c0, c0 + w, buf);
            let rows = Rows::new(rule, buf.chunks_exact(w).collect())?;
            if serial {
                crate::pool::serial(|| kernel(&rows, &mut vals[..w]))?;
            } else {
                kernel(&rows, &mut vals[..w])?;
            }
            narrow(proof, x.kind, &vals[..w], o);
            Ok(())
        };
    let blocks = d.div_ceil(width);
    if !crate::pool::split(n * d) || blocks < crate::pool::num_threads() {
        let mut s = init();
        out.chunks_mut(width)
            .enumerate()
            .try_for_each(|item| run(false, &mut s, item))
    } else {
        crate::pool::install(|| {
            out.par_chunks_mut(width)
                .enumerate()
                .try_for_each_init(init, |s, item| run(true, s, item))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;

    /// Every finite half value in increasing order, as (bits, f64 value), decoded from the
    /// format's fields the slow obvious way.
    fn finite_values(kind: Half) -> Vec<(u16, f64)> {
        let (mant_bits, bias): (u32, i32) = match kind {
            Half::F16 => (10, 15),
            Half::Bf16 => (7, 127),
        };
        let exp_max = (1u32 << (15 - mant_bits)) - 1;
        let mut v: Vec<(u16, f64)> = (0..=u16::MAX)
            .filter_map(|h| {
                let e = (h as u32 >> mant_bits) & exp_max;
                let m = h as u32 & ((1 << mant_bits) - 1);
                if e == exp_max {
                    return None;
                }
                let mag = if e == 0 {
                    m as f64 * 2f64.powi(1 - bias - mant_bits as i32)
                } else {
                    (1.0 + m as f64 / (1u32 << mant_bits) as f64) * 2f64.powi(e as i32 - bias)
                };
                Some((h, if h & 0x8000 != 0 { -mag } else { mag }))
            })
            .collect();
        v.sort_by(|a, b| {
            a.1.total_cmp(&b.1)
                .then((a.0 & 0x8000 == 0).cmp(&(b.0 & 0x8000 == 0)))
        });
        v
    }

    #[test]
    fn widening_is_exact_for_every_bit_pattern() {
        for kind in [Half::F16, Half::Bf16] {
            let finite = finite_values(kind);
            for &(h, v) in &finite {
                let got = kind.widen(h);
                assert_eq!(got as f64, v, "{kind:?} {h:#06x}");
                assert_eq!(got.is_sign_negative(), h & 0x8000 != 0, "{kind:?} {h:#06x}");
                assert!(kind.is_finite(h));
            }
            for h in 0..=u16::MAX {
                let w = kind.widen(h);
                assert_eq!(w.is_finite(), kind.is_finite(h), "{kind:?} {h:#06x}");
                if !w.is_finite() {
                    // inf round-trips; NaN stays NaN with its sign and payload, made quiet
                    let quiet = match kind {
                        Half::F16 => 0x0200,
                        Half::Bf16 => 0x0040,
                    };
                    let back = match (w.is_nan(), kind) {
                        (false, _) => h,
                        (true, Half::F16) => h | quiet,
                        (true, Half::Bf16) => (h & 0x8000) | 0x7fc0,
                    };
                    assert_eq!(kind.narrow(w), back, "{kind:?} {h:#06x}");
                }
            }
            // the vectorised loop gives the scalar bits, on every level
            let src: Vec<u16> = (0..=u16::MAX).collect();
            for level in [
                crate::simd::Level::Scalar,
                crate::simd::Level::Avx2,
                crate::simd::DEFAULT_MAX,
            ] {
                let mut dst = vec![0.0f32; src.len()];
                widen(crate::simd::proof_of(level), kind, &src, &mut dst);
                for (&h, v) in src.iter().zip(&dst) {
                    assert_eq!(v.to_bits(), kind.widen(h).to_bits());
                }
            }
        }
    }

    /// The nearest finite half value to `v` (ties to the even bit pattern), or ±inf where `v`
    /// is at least the largest finite value plus half its step, by binary search.
    fn nearest(finite: &[(u16, f64)], kind: Half, v: f32) -> u16 {
        let v = v as f64;
        let top = finite.last().unwrap().1;
        let step = top - finite[finite.len() - 2].1;
        let inf = match kind {
            Half::F16 => 0x7c00,
            Half::Bf16 => 0x7f80,
        };
        if v.abs() >= top + step / 2.0 {
            return if v < 0.0 { inf | 0x8000 } else { inf };
        }
        let i = finite.partition_point(|&(_, x)| x < v);
        let hi = finite[i.min(finite.len() - 1)];
        let lo = finite[i.saturating_sub(1)];
        let pick = if (v - lo.1).abs() < (hi.1 - v).abs() {
            lo
        } else if (v - lo.1).abs() > (hi.1 - v).abs() {
            hi
        } else if lo.0 & 1 == 0 {
            lo
        } else {
            hi
        };
        // zero keeps the sign of v (-0.0 and tiny negatives that round to zero give -0)
        if pick.1 == 0.0 {
            return if v.is_sign_negative() { 0x8000 } else { 0 };
        }
        pick.0
    }

    #[test]
    fn narrowing_rounds_to_nearest_even() {
        let mut rng = Rng(17);
        for kind in [Half::F16, Half::Bf16] {
            let finite = finite_values(kind);
            // every half value, the midpoints between neighbours and one float32 step either
            // side of them, and random float32 bit patterns
            let mut probes: Vec<f32> = Vec::new();
            for w in finite.windows(2) {
                let (a, b) = (w[0].1 as f32, w[1].1 as f32);
                let mid = ((w[0].1 + w[1].1) / 2.0) as f32;
                probes.extend([a, b, mid, mid.next_up(), mid.next_down()]);
            }
            probes.extend((0..200_000).map(|_| f32::from_bits(rng.next_u64() as u32)));
            probes.extend([
                0.0,
                -0.0,
                f32::MAX,
                f32::MIN,
                f32::MIN_POSITIVE,
                1e-45,
                -1e-45,
            ]);
            for &v in &probes {
                if v.is_nan() {
                    let h = kind.narrow(v);
                    assert!(kind.widen(h).is_nan(), "{kind:?} {v:?}");
                    assert_eq!(h & 0x8000 != 0, v.is_sign_negative());
                    continue;
                }
                let got = kind.narrow(v);
                let want = if v.is_infinite() {
                    kind.narrow(v) // checked below by value
                } else {
                    nearest(&finite, kind, v)
                };
                if v.is_infinite() {
                    assert!(kind.widen(got).is_infinite() && (kind.widen(got) > 0.0) == (v > 0.0));
                    continue;
                }
                assert_eq!(
                    kind.widen(got).to_bits(),
                    kind.widen(want).to_bits(),
                    "{kind:?} {v:e} ({:#010x}): got {got:#06x}, want {want:#06x}",
                    v.to_bits()
                );
            }
            let mut dst = vec![0u16; probes.len()];
            for level in [crate::simd::Level::Scalar, crate::simd::DEFAULT_MAX] {
                narrow(crate::simd::proof_of(level), kind, &probes, &mut dst);
                for (&v, &h) in probes.iter().zip(&dst) {
                    assert_eq!(h, kind.narrow(v));
                }
            }
        }
    }

    #[test]
    fn by_blocks_gives_the_whole_input_kernel_bits() {
        // A coordinate-wise kernel (the median) on blocks of the half input against the same
        // kernel on the whole widened input, rounded: every n around the block width's steps.
        for kind in [Half::F16, Half::Bf16] {
            for (n, d) in [(1, 5), (3, 1000), (10, 7_000), (50, 2_051), (600, 300)] {
                let mut rng = Rng(n as u64 * 31 + d as u64);
                let bits: Vec<Vec<u16>> = (0..n)
                    .map(|_| {
                        (0..d)
                            .map(|_| kind.narrow(rng.next_f64() as f32 * 100.0))
                            .collect()
                    })
                    .collect();
                let x =
                    HalfRows::new("median", kind, bits.iter().map(|r| &r[..]).collect()).unwrap();
                let wide: Vec<Vec<f32>> = bits
                    .iter()
                    .map(|r| r.iter().map(|&h| kind.widen(h)).collect())
                    .collect();
                let median = |r: &Rows<'_, f32>, o: &mut [f32]| {
                    crate::rules::median::median(
                        r,
                        crate::rules::median::Even::Mean,
                        crate::input::NonFinite::Robust,
                        crate::columns::ColumnsOut::new(o),
                    )
                };
                let mut want = vec![0.0f32; d];
                median(&crate::testing::rows(&wide), &mut want).unwrap();
                let mut got = vec![0u16; d];
                by_blocks("median", &x, &mut got, WIDTH_RANKS, median).unwrap();
                for j in 0..d {
                    assert_eq!(got[j], kind.narrow(want[j]), "{kind:?} n={n} d={d} j={j}");
                }
            }
        }
    }
}
