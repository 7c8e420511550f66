//! Property-based tests (proptest) over the core's kernels, on stable Rust.
//!
//! Every kernel is driven with adversarial inputs: `n` in `0..40` and `d` in `0..20`, any float32
//! or float64 bit pattern (NaN payloads, signalling NaNs, subnormals, `±0`, `±inf`, `±MAX`),
//! every [`NonFinite`] policy, and counts (`f`, `m`, `keep`, ...) that mix small values with
//! values near `2^32`, `2^63` and `usize::MAX`. Three kinds of property are checked:
//!
//! 1. **No panic, ever**: each call returns `Ok` or an [`AggError`], and the error is the one
//!    the documented checks call for (a panic fails the case).
//! 2. **Agreement with a slow, obvious reference** written here: the median and trimmed mean
//!    ranked by `(value, row)` in IEEE total order with NaN canonicalised above `+inf`
//!    (docs/conventions.md, "Order and ties"), their reported rows, meamed's window, pairwise
//!    squared distances against float64 sums, Krum's selection against a reference argmin,
//!    MDA's subset against a brute-force search, the monoid trees against a level-by-level
//!    fold, averages of identical rows equal to the row bit for bit, averages within the range
//!    of the values averaged.
//! 3. **Determinism**: the same call twice gives the same bits; for the main kernels, one
//!    thread and the scalar level against two threads and the best level the CPU has.
//!
//! Where a legal call with a huge parameter would do enormous work that the core does not
//! refuse itself (iterations, subsets, `dim_size` sets), the strategy bounds the parameter
//! and a comment says why: the Python layer refuses those calls through its work limit.
//!
//! Each property runs `PROPTEST_CASES` cases (default 256; the two on large inputs a sixteenth
//! of that). A longer campaign:
//!
//! ```text
//! PROPTEST_CASES=100000 cargo test --release --lib fuzz
//! PROPTEST_CASES=10000 cargo test --lib fuzz   # debug: slower, but with overflow checks
//! ```
//!
//! A failing case is shrunk and its seed written to `proptest-regressions/fuzz.txt` (next to
//! `rust/`, proptest's `SourceParallel` layout): commit that file, every later run replays the
//! cases it lists before the random ones, so each failure found stays a regression test. A
//! confirmed bug also gets its minimal case as an explicit `#[test]` at the end of this file
//! (`#[ignore]`d while the bug is open) and the property skips its domain with a comment.

use std::cmp::Ordering;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

use crate::columns::weighted::{weighted_median, weighted_trimmed_mean};
use crate::columns::ColumnsOut;
use crate::distance::pairwise_sq_dists;
use crate::error::AggError;
use crate::input::{NonFinite, Rows};
use crate::monoid::tree::{self, Pad, Schedule};
use crate::monoid::{combine_rows, MFloat, Op};
use crate::order::Float;
use crate::rules::bulyan::bulyan_select;
use crate::rules::centered_clipping::centered_clipping;
use crate::rules::geometric_median::{geometric_median, Init};
use crate::rules::krum::{krum, multi_krum, select_from_distances, Selection};
use crate::rules::meamed::{closest_to_median, meamed};
use crate::rules::mean::mean;
use crate::rules::median::{median, Even};
use crate::rules::preagg::{group_means, row_norms, scale_rows};
use crate::rules::sign_vote::sign_vote;
use crate::rules::subsets::{binomial, mda_select};
use crate::rules::trimmed_mean::trimmed_mean;
use crate::simd::{self, Level};

type Check = Result<(), TestCaseError>;

// ---------------------------------------------------------------------------------------------
// Configuration

/// `PROPTEST_CASES / divisor` cases (256 / divisor by default), failures persisted under
/// `proptest-regressions/` (set explicitly, so a change of proptest's default cannot move them).
fn config(divisor: u32) -> ProptestConfig {
    let base = ProptestConfig::default();
    ProptestConfig {
        cases: (base.cases / divisor).max(1),
        failure_persistence: Some(Box::new(FileFailurePersistence::SourceParallel(
            "proptest-regressions",
        ))),
        ..base
    }
}

// ---------------------------------------------------------------------------------------------
// Values

/// The float types under test, with what the tests need beyond [`Float`].
trait Arb: MFloat + std::fmt::Debug {
    fn bits(self) -> u64;
    /// Any bit pattern, special values, small ties and moderate values, mixed.
    fn any_value() -> BoxedStrategy<Self>;
    /// The same, finite only.
    fn finite_value() -> BoxedStrategy<Self>;
    /// Relative accuracy of a float32-lane (or float64) distance or score.
    const DIST_TOL: f64;
}

/// float32 bit patterns: zeros, ones, infinities, NaNs (quiet, signalling, negative, payloads),
/// subnormals, the normal limits, values whose squares overflow or underflow float32.
const SPECIAL_F32: &[u32] = &[
    0x0000_0000, // +0
    0x8000_0000, // -0
    0x3f80_0000, // 1
    0xbf80_0000, // -1
    0x7f80_0000, // +inf
    0xff80_0000, // -inf
    0x7fc0_0000, // NaN
    0xffc0_0000, // -NaN
    0x7fc0_0001, // NaN with payload
    0x7f80_0001, // signalling NaN
    0xff80_0001, // negative signalling NaN
    0x7fff_ffff, // NaN, all payload bits
    0x0000_0001, // smallest subnormal
    0x8000_0001,
    0x007f_ffff, // largest subnormal
    0x807f_ffff,
    0x0080_0000, // MIN_POSITIVE
    0x8080_0000,
    0x7f7f_ffff, // MAX
    0xff7f_ffff, // MIN
    0x5f80_0000, // 2^64: squares overflow float32
    0xdf80_0000,
    0x1f80_0000, // 2^-64: squares underflow float32
    0x3400_0000, // EPSILON
];

const SPECIAL_F64: &[u64] = &[
    0x0000_0000_0000_0000,
    0x8000_0000_0000_0000,
    0x3ff0_0000_0000_0000,
    0xbff0_0000_0000_0000,
    0x7ff0_0000_0000_0000,
    0xfff0_0000_0000_0000,
    0x7ff8_0000_0000_0000,
    0xfff8_0000_0000_0000,
    0x7ff8_0000_0000_0001,
    0x7ff0_0000_0000_0001,
    0xfff0_0000_0000_0001,
    0x7fff_ffff_ffff_ffff,
    0x0000_0000_0000_0001,
    0x8000_0000_0000_0001,
    0x000f_ffff_ffff_ffff,
    0x800f_ffff_ffff_ffff,
    0x0010_0000_0000_0000,
    0x8010_0000_0000_0000,
    0x7fef_ffff_ffff_ffff,
    0xffef_ffff_ffff_ffff,
    0x5ff0_0000_0000_0000, // 2^512: squares overflow float64
    0xdff0_0000_0000_0000,
    0x1ff0_0000_0000_0000, // 2^-512: squares underflow float64
    0x47ef_ffff_e000_0000, // f32::MAX
    0x3cb0_0000_0000_0000, // EPSILON
];

impl Arb for f32 {
    fn bits(self) -> u64 {
        u64::from(self.to_bits())
    }
    fn any_value() -> BoxedStrategy<f32> {
        prop_oneof![
            3 => any::<u32>().prop_map(f32::from_bits),
            3 => prop::sample::select(SPECIAL_F32).prop_map(f32::from_bits),
            3 => (-3i8..=3).prop_map(|v| f32::from(v) * 0.5),
            2 => -1e3f32..1e3f32,
        ]
        .boxed()
    }
    fn finite_value() -> BoxedStrategy<f32> {
        // A map, not a filter (a filter rejects too often over long campaigns): an infinity
        // or NaN loses its exponent's lowest bit and becomes a huge finite value.
        Self::any_value()
            .prop_map(|v| {
                if v.is_finite() {
                    v
                } else {
                    f32::from_bits(v.to_bits() & 0xff7f_ffff)
                }
            })
            .boxed()
    }
    const DIST_TOL: f64 = 1e-5;
}

impl Arb for f64 {
    fn bits(self) -> u64 {
        self.to_bits()
    }
    fn any_value() -> BoxedStrategy<f64> {
        prop_oneof![
            3 => any::<u64>().prop_map(f64::from_bits),
            3 => prop::sample::select(SPECIAL_F64).prop_map(f64::from_bits),
            3 => (-3i8..=3).prop_map(|v| f64::from(v) * 0.5),
            2 => -1e3f64..1e3f64,
        ]
        .boxed()
    }
    fn finite_value() -> BoxedStrategy<f64> {
        Self::any_value()
            .prop_map(|v| {
                if v.is_finite() {
                    v
                } else {
                    f64::from_bits(v.to_bits() & 0xffef_ffff_ffff_ffff)
                }
            })
            .boxed()
    }
    const DIST_TOL: f64 = 1e-9;
}

/// Any float64 parameter (a weight, `tau`, `nu`, a scale): any bit pattern or a special value.
fn any_f64() -> BoxedStrategy<f64> {
    prop_oneof![
        2 => any::<u64>().prop_map(f64::from_bits),
        2 => prop::sample::select(SPECIAL_F64).prop_map(f64::from_bits),
        2 => 0.0f64..10.0,
        1 => (0u32..4).prop_map(f64::from),
    ]
    .boxed()
}

/// Counts (`f`, `m`, `keep`, a member index): mostly small, sometimes at the edges of `u32`,
/// `2^63` and `usize::MAX` (or any `usize`), where a careless bound would wrap around.
fn count() -> BoxedStrategy<usize> {
    const EDGES: &[usize] = &[
        usize::MAX,
        usize::MAX - 1,
        usize::MAX / 2,
        usize::MAX / 2 + 1,
        usize::MAX / 4,
        usize::MAX / 4 + 1,
        1 << 63,
        (1 << 63) - 1,
        1 << 62,
        1 << 32,
        (1 << 32) - 1,
        (1 << 32) + 1,
        (1 << 31) - 1,
        1 << 31,
    ];
    prop_oneof![
        8 => 0usize..24,
        1 => any::<usize>(),
        1 => (prop::sample::select(EDGES), 0usize..4).prop_map(|(e, k)| e.wrapping_sub(k)),
    ]
    .boxed()
}

fn policy() -> impl Strategy<Value = NonFinite> {
    prop::sample::select(vec![
        NonFinite::Robust,
        NonFinite::Raise,
        NonFinite::Propagate,
    ])
}

fn even() -> impl Strategy<Value = Even> {
    prop::sample::select(vec![Even::Mean, Even::Lower, Even::Upper])
}

// ---------------------------------------------------------------------------------------------
// Inputs

/// `n` rows of `d` values, row-major.
#[derive(Clone, Debug)]
struct M<T> {
    n: usize,
    d: usize,
    data: Vec<T>,
}

impl<T: Arb> M<T> {
    fn rows(&self) -> Result<Rows<'_, T>, AggError> {
        Rows::new(
            "fuzz",
            (0..self.n).map(|i| self.row(i)).collect::<Vec<&[T]>>(),
        )
    }
    fn row(&self, i: usize) -> &[T] {
        &self.data[i * self.d..(i + 1) * self.d]
    }
    fn at(&self, i: usize, j: usize) -> T {
        self.data[i * self.d + j]
    }
    fn finite_row(&self, i: usize) -> bool {
        self.row(i).iter().all(|v| v.is_finite())
    }
    fn nonfinite_rows(&self) -> Vec<usize> {
        (0..self.n).filter(|&i| !self.finite_row(i)).collect()
    }
    /// Column `j` ranked by `(value, row)` (the reference order).
    fn ranked(&self, j: usize) -> Vec<(T, usize)> {
        let mut c: Vec<(T, usize)> = (0..self.n).map(|i| (self.at(i, j), i)).collect();
        c.sort_by(|a, b| rank_cmp(a.0, b.0).then(a.1.cmp(&b.1)));
        c
    }
    fn first_nan_row(&self, j: usize) -> Option<usize> {
        (0..self.n).find(|&i| self.at(i, j).is_nan())
    }
    /// The rows `keep` as a new matrix.
    fn take(&self, keep: &[usize]) -> M<T> {
        M {
            n: keep.len(),
            d: self.d,
            data: keep.iter().flat_map(|&i| self.row(i).to_vec()).collect(),
        }
    }
}

/// `n` in `ns`, `d` in `ds`, values from `values`.
fn matrix_in<T: Arb>(
    values: BoxedStrategy<T>,
    ns: std::ops::Range<usize>,
    ds: std::ops::Range<usize>,
) -> impl Strategy<Value = M<T>> {
    (ns, ds).prop_flat_map(move |(n, d)| {
        vec(values.clone(), n * d).prop_map(move |data| M { n, d, data })
    })
}

/// `n` in `0..40`, `d` in `0..20`, any values.
fn matrix<T: Arb>() -> impl Strategy<Value = M<T>> {
    matrix_in(T::any_value(), 0..40, 0..20)
}

/// `n` in `1..40`, `d` in `0..20`, finite values.
fn finite_matrix<T: Arb>() -> impl Strategy<Value = M<T>> {
    matrix_in(T::finite_value(), 1..40, 0..20)
}

/// One row repeated `n` times.
fn identical_rows<T: Arb>() -> impl Strategy<Value = M<T>> {
    (1usize..40, vec(T::finite_value(), 0..20)).prop_map(|(n, row)| M {
        n,
        d: row.len(),
        data: row.repeat(n),
    })
}

// ---------------------------------------------------------------------------------------------
// Comparisons and references

/// IEEE total order with every NaN made the canonical positive NaN (above `+inf`), `-0 < +0`.
fn rank_cmp<T: Float>(a: T, b: T) -> Ordering {
    let canon = |v: T| if v.is_nan() { f64::NAN } else { v.to_f64() };
    canon(a).total_cmp(&canon(b))
}

/// Equal bits, or both NaN (a NaN's payload is not specified).
fn same<T: Arb>(a: T, b: T) -> bool {
    a.bits() == b.bits() || (a.is_nan() && b.is_nan())
}

fn bits<T: Arb>(v: &[T]) -> Vec<u64> {
    v.iter().map(|x| x.bits()).collect()
}

/// The same selection (scores compared as bits), or errors of the same variant.
fn same_selection(a: &Result<&Selection, &AggError>, b: &Result<&Selection, &AggError>) -> bool {
    match (a, b) {
        (Ok(x), Ok(y)) => x.indices == y.indices && bits(&x.scores) == bits(&y.scores),
        (Err(x), Err(y)) => std::mem::discriminant(*x) == std::mem::discriminant(*y),
        _ => false,
    }
}

fn is_too_few<A>(r: &Result<A, AggError>) -> bool {
    matches!(r, Err(AggError::TooFewInputs { .. }))
}
fn is_invalid<A>(r: &Result<A, AggError>) -> bool {
    matches!(r, Err(AggError::InvalidParameter { .. }))
}
fn is_nonfinite<A>(r: &Result<A, AggError>) -> bool {
    matches!(r, Err(AggError::NonFinite { .. }))
}
fn is_nonfinite_rows<A>(r: &Result<A, AggError>, want: &[usize]) -> bool {
    matches!(r, Err(AggError::NonFinite { rows, .. }) if rows == want)
}

/// `a·f + b <= n` with exact integers.
fn needs(n: usize, f: usize, a: u128, b: u128) -> bool {
    a * f as u128 + b <= n as u128
}

/// Neumaier's compensated sum from `-0.0` (the sum of `-0.0`s keeps its sign; with infinities
/// the plain sum is the IEEE answer), and the factor `k` it is scaled by: `1`, or, with `wide`,
/// `2^-560` where finite values overflow it, from the value that would overflow on (or for
/// adding the compensation, if only that overflows). The sum is the first result divided by
/// the second.
fn neumaier(values: impl Iterator<Item = f64>, wide: bool) -> (f64, f64) {
    let (mut s, mut c, mut k) = (-0.0f64, 0.0f64, 1.0f64);
    let shrink = 2f64.powi(-560);
    for v in values {
        let mut v = v * k;
        if wide && !(s + v).is_finite() && s.is_finite() && v.is_finite() && k == 1.0 {
            k = shrink;
            (s, c, v) = (s * k, c * k, v * k);
        }
        let t = s + v;
        c += if s.abs() >= v.abs() {
            (s - t) + v
        } else {
            (v - t) + s
        };
        s = t;
    }
    if wide && k == 1.0 && s.is_finite() && (s + c).is_infinite() {
        (s, c, k) = (s * shrink, c * shrink, shrink);
    }
    let s = if s.is_finite() && c != 0.0 { s + c } else { s };
    (s, k)
}

/// The core's float64 average of `values` (in summing order) whose smallest is `lo` and
/// largest `hi` (docs/conventions.md, "Arithmetic"): the compensated sum over the count, or,
/// where that is infinite although `lo` and `hi` are finite (the sum of finite values
/// overflowed), the wide sum's; kept within `[lo, hi]`.
fn ref_average_f64(values: &[f64], lo: f64, hi: f64) -> f64 {
    let count = values.len() as f64;
    let (s, _) = neumaier(values.iter().copied(), false);
    let mut q = s / count;
    if q.is_infinite() && lo.is_finite() && hi.is_finite() {
        let (s, k) = neumaier(values.iter().copied(), true);
        q = s / count / k;
    }
    if q < lo {
        lo
    } else if q > hi {
        hi
    } else {
        q
    }
}

/// The exact sum of finite float64 values rounded to float64 (to within one rounding), by
/// Shewchuk's non-overlapping partials (Python's `math.fsum`); `None` where a partial
/// overflows.
fn exact_sum(values: impl Iterator<Item = f64>) -> Option<f64> {
    let mut partials: Vec<f64> = Vec::new();
    for mut x in values {
        let mut i = 0;
        for k in 0..partials.len() {
            let mut y = partials[k];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let hi = x + y;
            if !hi.is_finite() {
                return None;
            }
            let lo = y - (hi - x);
            if lo != 0.0 {
                partials[i] = lo;
                i += 1;
            }
            x = hi;
        }
        partials.truncate(i);
        partials.push(x);
    }
    let s: f64 = partials.iter().rev().sum();
    s.is_finite().then_some(s)
}

/// The mean of the values, kept within `[lo, hi]` (docs/conventions.md, "Arithmetic"): summed
/// from `-0.0` in float64, compensated for float64 input.
fn ref_mean<T: Arb>(values: &[T]) -> T {
    let (lo, hi) = (values[0], values[values.len() - 1]);
    if T::is_f32().is_none() {
        let f64s: Vec<f64> = values.iter().map(|v| v.to_f64()).collect();
        return T::from_f64(ref_average_f64(&f64s, lo.to_f64(), hi.to_f64()));
    }
    let s = values.iter().map(|v| v.to_f64()).fold(-0.0, |s, v| s + v);
    let y = T::from_f64(s / values.len() as f64);
    if y < lo {
        lo
    } else if y > hi {
        hi
    } else {
        y
    }
}

/// The squared distance of two rows: float64 differences and squares, summed in float64.
fn ref_dist<T: Arb>(a: &[T], b: &[T]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let t = x.to_f64() - y.to_f64();
            t * t
        })
        .sum()
}

/// A distance as the selections read it: non-finite counts as `+inf`.
fn clean(v: f64) -> f64 {
    if v.is_finite() {
        v
    } else {
        f64::INFINITY
    }
}

// ---------------------------------------------------------------------------------------------
// Kernels: each check returns an error for a wrong answer, and panics where the kernel does.

/// The coordinate-wise median: reference value and rows, both key widths, determinism.
fn check_median<T: Arb>(m: &M<T>, even: Even, policy: NonFinite) -> Check {
    let x = match m.rows() {
        Ok(x) => x,
        Err(e) => {
            prop_assert_eq!(e, AggError::Empty { rule: "fuzz" });
            return Ok(());
        }
    };
    let run = || {
        let (mut v, mut lo, mut hi) = (vec![T::ZERO; m.d], vec![0u32; m.d], vec![0u32; m.d]);
        median(
            &x,
            even,
            policy,
            ColumnsOut::with_rows(&mut v, &mut lo, &mut hi),
        )
        .map(|()| (v, lo, hi))
    };
    let got = run();
    let bad = m.nonfinite_rows();
    if policy == NonFinite::Raise && !bad.is_empty() {
        prop_assert!(is_nonfinite_rows(&got, &bad), "{got:?}");
        return Ok(());
    }
    let (v, lo, hi) = got.map_err(|e| TestCaseError::fail(format!("{e}")))?;
    let again = run().unwrap();
    prop_assert_eq!(bits(&v), bits(&again.0));
    prop_assert_eq!((&lo, &hi), (&again.1, &again.2));
    let mut v2 = vec![T::ZERO; m.d];
    median(&x, even, policy, ColumnsOut::new(&mut v2)).unwrap();
    prop_assert_eq!(bits(&v), bits(&v2), "values-only keys");
    let n = m.n;
    let (r_lo, r_hi) = match (n % 2, even) {
        (1, _) => (n / 2, n / 2),
        (_, Even::Mean) => (n / 2 - 1, n / 2),
        (_, Even::Lower) => (n / 2 - 1, n / 2 - 1),
        (_, Even::Upper) => (n / 2, n / 2),
    };
    for j in 0..m.d {
        if policy == NonFinite::Propagate {
            if let Some(r) = m.first_nan_row(j) {
                prop_assert!(v[j].is_nan(), "col {j}");
                prop_assert_eq!((lo[j] as usize, hi[j] as usize), (r, r));
                continue;
            }
        }
        let c = m.ranked(j);
        let want = if r_lo == r_hi {
            c[r_hi].0
        } else {
            T::midpoint(c[r_lo].0, c[r_hi].0)
        };
        prop_assert!(same(v[j], want), "col {j}: {:?} vs {:?}", v[j], want);
        prop_assert_eq!((lo[j] as usize, hi[j] as usize), (c[r_lo].1, c[r_hi].1));
    }
    Ok(())
}

/// The coordinate-wise trimmed mean: expected errors, reference value and rows, both key widths.
fn check_trimmed_mean<T: Arb>(m: &M<T>, f: usize, policy: NonFinite) -> Check {
    let Ok(x) = m.rows() else { return Ok(()) };
    let run = || {
        let (mut v, mut lo, mut hi) = (vec![T::ZERO; m.d], vec![0u32; m.d], vec![0u32; m.d]);
        trimmed_mean(
            &x,
            f,
            policy,
            ColumnsOut::with_rows(&mut v, &mut lo, &mut hi),
        )
        .map(|()| (v, lo, hi))
    };
    let got = run();
    if !needs(m.n, f, 2, 1) {
        prop_assert!(is_too_few(&got), "{got:?}");
        return Ok(());
    }
    let bad = m.nonfinite_rows();
    if policy == NonFinite::Raise && !bad.is_empty() {
        prop_assert!(is_nonfinite_rows(&got, &bad), "{got:?}");
        return Ok(());
    }
    let (v, lo, hi) = got.map_err(|e| TestCaseError::fail(format!("{e}")))?;
    prop_assert_eq!(bits(&v), bits(&run().unwrap().0));
    let mut v2 = vec![T::ZERO; m.d];
    trimmed_mean(&x, f, policy, ColumnsOut::new(&mut v2)).unwrap();
    prop_assert_eq!(bits(&v), bits(&v2), "values-only keys");
    let n = m.n;
    for j in 0..m.d {
        if policy == NonFinite::Propagate {
            if let Some(r) = m.first_nan_row(j) {
                prop_assert!(v[j].is_nan(), "col {j}");
                prop_assert_eq!((lo[j] as usize, hi[j] as usize), (r, r));
                continue;
            }
        }
        let c = m.ranked(j);
        let kept: Vec<T> = c[f..n - f].iter().map(|p| p.0).collect();
        let want = ref_mean(&kept);
        prop_assert!(same(v[j], want), "col {j}: {:?} vs {:?}", v[j], want);
        prop_assert_eq!((lo[j] as usize, hi[j] as usize), (c[f].1, c[n - f - 1].1));
        check_average(v[j], &kept, true)?;
    }
    Ok(())
}

/// An average of finite `values` (ranked ascending) lies within them and, where their sum fits
/// in float64, near the exact mean: within a few roundings when float64 sums are compensated
/// (`compensated`, docs/conventions.md "Arithmetic"), within a plain float64 sum's error bound
/// otherwise.
fn check_average<T: Arb>(got: T, values: &[T], compensated: bool) -> Check {
    if !values.iter().all(|v| v.is_finite()) {
        return Ok(());
    }
    let (lo, hi) = (values[0], values[values.len() - 1]);
    prop_assert!(lo <= got && got <= hi, "{got:?} outside [{lo:?}, {hi:?}]");
    let count = values.len() as f64;
    // Where the sum overflows, that of the values scaled by 2^-560 (exact: a sum that overflows
    // has terms so large that what scaling takes off subnormals is far below the tolerance).
    let k = 2f64.powi(-560);
    let exact = match exact_sum(values.iter().map(|v| v.to_f64())) {
        Some(s) => s / count,
        None => match exact_sum(values.iter().map(|v| v.to_f64() * k)) {
            Some(s) => s / count / k,
            None => return Ok(()),
        },
    };
    let scale: f64 = values.iter().map(|v| v.to_f64().abs()).sum::<f64>() / count;
    let tol = if T::is_f32().is_some() {
        // One rounding of a float64 mean to float32, subnormals included.
        exact.abs() * 2f64.powi(-23) + scale * count * 2f64.powi(-50) + 2f64.powi(-149)
    } else if compensated {
        exact.abs() * 2f64.powi(-50) + scale * 2f64.powi(-90) + 1e-320
    } else {
        exact.abs() * 2f64.powi(-50) + scale * count * 2f64.powi(-52) + 1e-320
    };
    prop_assert!(
        (got.to_f64() - exact).abs() <= tol,
        "{got:?} vs exact mean {exact:e} (tol {tol:e})"
    );
    Ok(())
}

/// Meamed and `closest_to_median`: errors, the window grown from the median (docs of
/// `rules/meamed.rs`), determinism.
fn check_meamed<T: Arb>(m: &M<T>, f: usize, keep: Option<usize>, policy: NonFinite) -> Check {
    let Ok(x) = m.rows() else { return Ok(()) };
    let run = || {
        let (mut v, mut lo, mut hi) = (vec![T::ZERO; m.d], vec![0u32; m.d], vec![0u32; m.d]);
        let out = ColumnsOut::with_rows(&mut v, &mut lo, &mut hi);
        match keep {
            None => meamed(&x, f, policy, out),
            Some(k) => closest_to_median(&x, k, policy, out, "bulyan"),
        }
        .map(|()| (v, lo, hi))
    };
    let got = run();
    let n = m.n;
    let keep = match keep {
        None if !needs(n, f, 2, 1) => {
            prop_assert!(is_too_few(&got), "{got:?}");
            return Ok(());
        }
        None => n - f,
        Some(k) if k < 1 || k > n => {
            prop_assert!(is_invalid(&got), "{got:?}");
            return Ok(());
        }
        Some(k) => k,
    };
    let bad = m.nonfinite_rows();
    if policy == NonFinite::Raise && !bad.is_empty() {
        prop_assert!(is_nonfinite_rows(&got, &bad), "{got:?}");
        return Ok(());
    }
    let (v, lo, hi) = got.map_err(|e| TestCaseError::fail(format!("{e}")))?;
    let again = run().unwrap();
    prop_assert_eq!(bits(&v), bits(&again.0));
    prop_assert_eq!((&lo, &hi), (&again.1, &again.2));
    for j in 0..m.d {
        if policy == NonFinite::Propagate && m.first_nan_row(j).is_some() {
            prop_assert!(v[j].is_nan());
            continue;
        }
        let c = m.ranked(j);
        let p = n / 2;
        let med = if n % 2 == 1 {
            c[p].0.to_f64()
        } else {
            T::midpoint(c[p - 1].0, c[p].0).to_f64()
        };
        let dist = |r: usize| {
            let d = (c[r].0.to_f64() - med).abs();
            if d.is_nan() {
                f64::INFINITY
            } else {
                d
            }
        };
        // Grow the kept ranks a..b outward from p; on equal distances the lower row wins.
        let (mut a, mut b) = (p, p);
        for _ in 0..keep {
            let low = a > 0
                && (b == n || {
                    let (da, db) = (dist(a - 1), dist(b));
                    da < db || (da == db && c[a - 1].1 < c[b].1)
                });
            if low {
                a -= 1;
            } else {
                b += 1;
            }
        }
        let kept: Vec<T> = c[a..b].iter().map(|p| p.0).collect();
        let want = ref_mean(&kept);
        prop_assert!(same(v[j], want), "col {j}: {:?} vs {:?}", v[j], want);
        prop_assert_eq!((lo[j] as usize, hi[j] as usize), (c[a].1, c[b - 1].1));
        check_average(v[j], &kept, true)?;
    }
    Ok(())
}

/// The (weighted) mean: errors, dropped rows, range, determinism.
fn check_mean<T: Arb>(m: &M<T>, weights: Option<&[f64]>, policy: NonFinite) -> Check {
    let Ok(x) = m.rows() else { return Ok(()) };
    let run = || {
        let mut out = vec![T::ZERO; m.d];
        mean(&x, weights, policy, &mut out).map(|info| (out, info))
    };
    let got = run();
    let n = m.n;
    if let Some(w) = weights {
        if w.len() != n || !w.iter().all(|v| v.is_finite() && *v >= 0.0) {
            prop_assert!(is_invalid(&got), "{got:?}");
            return Ok(());
        }
    }
    let bad = m.nonfinite_rows();
    if policy == NonFinite::Raise && !bad.is_empty() {
        prop_assert!(is_nonfinite_rows(&got, &bad), "{got:?}");
        return Ok(());
    }
    let w = |i: usize| weights.map_or(1.0, |w| w[i]);
    let kept: Vec<usize> = if policy == NonFinite::Robust {
        (0..n).filter(|&i| m.finite_row(i)).collect()
    } else {
        (0..n).collect()
    };
    if !(0..n).any(|i| w(i) > 0.0) {
        prop_assert!(is_invalid(&got), "{got:?}");
        return Ok(());
    }
    if kept.is_empty() {
        prop_assert!(is_nonfinite(&got), "{got:?}");
        return Ok(());
    }
    if !kept.iter().any(|&i| w(i) > 0.0) {
        prop_assert!(is_invalid(&got), "{got:?}");
        return Ok(());
    }
    let (v, info) = got.map_err(|e| TestCaseError::fail(format!("{e}")))?;
    prop_assert_eq!(bits(&v), bits(&run().unwrap().0));
    if policy == NonFinite::Robust {
        prop_assert_eq!(&info.dropped, &bad);
    } else {
        prop_assert!(info.dropped.is_empty());
    }
    // Within the range of the values averaged (rows of positive weight) and near the exact
    // weighted average, for weights of any magnitude (only their ratios matter).
    let wmax = kept.iter().map(|&i| w(i)).fold(0.0, f64::max);
    for (j, &got) in v.iter().enumerate() {
        let pos: Vec<usize> = kept.iter().copied().filter(|&i| w(i) > 0.0).collect();
        // Under Propagate a zero weight times an infinity is NaN (IEEE, as numpy).
        if !kept.iter().all(|&i| m.at(i, j).is_finite()) {
            continue;
        }
        let lo = pos.iter().map(|&i| m.at(i, j)).fold(T::INFINITY, |a, b| {
            if rank_cmp(b, a).is_lt() {
                b
            } else {
                a
            }
        });
        let hi = pos.iter().map(|&i| m.at(i, j)).fold(-T::INFINITY, |a, b| {
            if rank_cmp(b, a).is_gt() {
                b
            } else {
                a
            }
        });
        prop_assert!(
            lo <= got && got <= hi,
            "col {j}: {got:?} outside [{lo:?}, {hi:?}]"
        );
        if weights.is_none() {
            let mut vals: Vec<T> = kept.iter().map(|&i| m.at(i, j)).collect();
            vals.sort_by(|a, b| rank_cmp(*a, *b));
            check_average(got, &vals, true)?;
            continue;
        }
        // The weighted average as `16 Σ (r_i / R) (x_i / 16)` with the ratios `r_i = w_i / max w`,
        // which cannot overflow: each term within a few roundings (a coefficient or value
        // flushed to a subnormal loses at most 2^-1074 of it).
        let r = |i: usize| w(i) / wmax;
        let total: f64 = pos.iter().map(|&i| r(i)).sum();
        let (mut est, mut mag, mut big) = (0.0f64, 0.0f64, 0.0f64);
        for &i in &pos {
            let x = m.at(i, j).to_f64();
            let t = r(i) / total * (x / 16.0);
            (est, mag, big) = (est + t, mag + t.abs(), big.max(x.abs()));
        }
        let (est, mag, n) = (est * 16.0, mag * 16.0, pos.len() as f64);
        let tol = if T::is_f32().is_some() {
            est.abs() * 2f64.powi(-23) + 2f64.powi(-149)
        } else {
            est.abs() * 2f64.powi(-50) + 1e-320
        } + mag * 2f64.powi(-52) * (n + 4.0)
            + (big + 1.0) * 2f64.powi(-1000) * n * 2f64.powi(-66);
        prop_assert!(
            (got.to_f64() - est).abs() <= tol,
            "col {j}: {got:?} vs weighted average {est:e} (tol {tol:e})"
        );
    }
    Ok(())
}

/// Krum and Multi-Krum: errors, the selection against the scores it reports and against a
/// reference argmin, the output against the selected rows, agreement with the selection from
/// the distance matrix.
fn check_krum<T: Arb>(m: &M<T>, f: usize, mm: usize, policy: NonFinite) -> Check {
    let Ok(x) = m.rows() else { return Ok(()) };
    let n = m.n;
    let run = || {
        let mut out = vec![T::ZERO; m.d];
        if mm == 1 {
            krum(&x, f, policy, &mut out)
        } else {
            multi_krum(&x, f, mm, policy, &mut out)
        }
        .map(|s| (out, s))
    };
    let got = run();
    if !needs(n, f, 2, 3) {
        prop_assert!(is_too_few(&got), "{got:?}");
        return Ok(());
    }
    if mm < 1 || mm > n {
        prop_assert!(is_invalid(&got), "{got:?}");
        return Ok(());
    }
    let bad = m.nonfinite_rows();
    if policy == NonFinite::Raise && !bad.is_empty() {
        prop_assert!(is_nonfinite_rows(&got, &bad), "{got:?}");
        return Ok(());
    }
    let dist = pairwise_sq_dists(&x).unwrap();
    let via = select_from_distances(&dist, n, f, mm, policy);
    if policy != NonFinite::Raise {
        prop_assert!(
            same_selection(&got.as_ref().map(|g| &g.1), &via.as_ref()),
            "{got:?} vs {via:?}"
        );
    }
    let (out, sel) = match got {
        Ok(g) => g,
        Err(e) => {
            // Only too few finite scores (infinite distances) are refused here.
            prop_assert!(matches!(e, AggError::NonFinite { .. }), "{e}");
            prop_assert!(policy != NonFinite::Propagate);
            let finite = (0..n).filter(|&i| via_scores(&dist, n, f, i).is_finite());
            prop_assert!(finite.count() < mm);
            return Ok(());
        }
    };
    let again = run().unwrap();
    prop_assert_eq!(bits(&out), bits(&again.0));
    prop_assert_eq!(&sel.indices, &again.1.indices);
    prop_assert_eq!(bits(&sel.scores), bits(&again.1.scores));
    prop_assert_eq!(sel.scores.len(), n);
    prop_assert_eq!(sel.indices.len(), mm);
    // The selection is the first m by (score, index); NaN first under Propagate, else last.
    let mut order: Vec<usize> = (0..n).collect();
    let nan_first = policy == NonFinite::Propagate;
    order.sort_by(|&a, &b| {
        let (sa, sb) = (sel.scores[a], sel.scores[b]);
        (nan_first && sb.is_nan())
            .cmp(&(nan_first && sa.is_nan()))
            .then(rank_cmp(sa, sb))
            .then(a.cmp(&b))
    });
    prop_assert_eq!(&sel.indices[..], &order[..mm]);
    if mm == 1 {
        // The row goes through the float64 sum: a signalling NaN comes back quiet.
        let row = m.row(sel.indices[0]);
        prop_assert!(
            out.iter().zip(row).all(|(a, b)| same(*a, *b)),
            "Krum copies its row: {:?} vs {:?}",
            out,
            row
        );
    } else {
        for (j, &o) in out.iter().enumerate() {
            let mut vals: Vec<T> = sel.indices.iter().map(|&i| m.at(i, j)).collect();
            vals.sort_by(|a, b| rank_cmp(*a, *b));
            if vals.iter().all(|v| v.is_finite())
                && vals
                    .iter()
                    .map(|v| v.to_f64().abs())
                    .sum::<f64>()
                    .is_finite()
            {
                prop_assert!(vals[0] <= o && o <= vals[mm - 1], "col {j}");
            }
        }
    }
    // The reference: float64 distances, each score the sum of its n - f - 2 smallest.
    if policy == NonFinite::Propagate {
        return Ok(());
    }
    let k = n - f - 2;
    let reference: Vec<f64> = (0..n)
        .map(|i| {
            let mut ds: Vec<f64> = (0..n)
                .filter(|&j| j != i)
                .map(|j| clean(ref_dist(m.row(i), m.row(j))))
                .collect();
            ds.sort_by(f64::total_cmp);
            ds[..k].iter().sum()
        })
        .collect();
    let best = (0..n)
        .min_by(|&a, &b| reference[a].total_cmp(&reference[b]).then(a.cmp(&b)))
        .unwrap();
    let s = reference[best];
    // Skip near-ties (the kernel's float32 lanes round differently from float64 sums) and
    // scores near float64's limit (a sum may overflow in one and not the other).
    let tied = (0..n).any(|i| i != best && reference[i] - s <= T::DIST_TOL * s.abs() + 1e-300);
    if s.is_finite() && s < 1e300 && !tied {
        prop_assert_eq!(sel.indices[0], best, "reference scores {:?}", reference);
        for (i, (&a, &b)) in sel.scores.iter().zip(&reference).enumerate() {
            if b.is_finite() && b < 1e300 {
                prop_assert!(
                    (a - b).abs() <= 4.0 * T::DIST_TOL * b + 1e-300,
                    "score {i}: {a} vs {b}"
                );
            }
        }
    }
    Ok(())
}

/// Input `i`'s Krum score from a distance matrix, non-finite distances as `+inf`.
fn via_scores(dist: &[f64], n: usize, f: usize, i: usize) -> f64 {
    let mut ds: Vec<f64> = (0..n)
        .filter(|&j| j != i)
        .map(|j| clean(dist[i * n + j]))
        .collect();
    ds.sort_by(f64::total_cmp);
    ds[..n - f - 2].iter().sum()
}

/// Pairwise squared distances: symmetric, zero diagonal, the float64 reference.
fn check_dists<T: Arb>(m: &M<T>) -> Check {
    let Ok(x) = m.rows() else { return Ok(()) };
    let n = m.n;
    let dm = pairwise_sq_dists(&x).unwrap();
    prop_assert_eq!(dm.len(), n * n);
    prop_assert_eq!(bits(&dm), bits(&pairwise_sq_dists(&x).unwrap()));
    for i in 0..n {
        prop_assert_eq!(dm[i * n + i].to_bits(), 0u64);
        for j in 0..n {
            let got = dm[i * n + j];
            prop_assert!(same(got, dm[j * n + i]));
            let want = ref_dist(m.row(i), m.row(j));
            if !(m.finite_row(i) && m.finite_row(j)) {
                continue;
            }
            if T::is_f32().is_some() {
                // docs/conventions.md: every finite float32 input has a finite, accurate distance.
                prop_assert!(got.is_finite() && got >= 0.0, "{i} {j}: {got}");
                prop_assert!(
                    (got - want).abs() <= T::DIST_TOL * want,
                    "{i} {j}: {got:e} vs {want:e}"
                );
            } else if want.is_finite() {
                // float64: float64 lanes; squares below 2^-1022 lose bits (subnormal).
                prop_assert!(
                    (got - want).abs() <= 1e-12 * want + 1e-300 * (m.d as f64),
                    "{i} {j}: {got:e} vs {want:e}"
                );
            }
            let equal = m.row(i).iter().zip(m.row(j)).all(|(a, b)| a == b);
            // float64 differences below 2^-537 square to zero: only float32 rows are refined.
            if T::is_f32().is_some() || equal {
                prop_assert_eq!(got == 0.0, equal, "{} {}: {:e}", i, j, got);
            }
        }
    }
    Ok(())
}

/// Bulyan: the selection from arbitrary matrices (any `n`, any length), then the two variants
/// of the second stage on the chosen rows as the Python layer runs them.
fn check_bulyan_select(dist: &[f64], n: usize, f: usize, clamp: bool) -> Check {
    let got = bulyan_select(dist, n, f, clamp);
    if Some(dist.len()) != n.checked_mul(n) {
        prop_assert!(is_invalid(&got), "{got:?}");
        return Ok(());
    }
    if !needs(n, f, 4, 3) {
        prop_assert!(is_too_few(&got), "{got:?}");
        return Ok(());
    }
    let (chosen, scores) = got.map_err(|e| TestCaseError::fail(format!("{e}")))?;
    prop_assert_eq!(chosen.len(), n - 2 * f);
    prop_assert_eq!(scores.len(), n - 2 * f);
    let mut seen = vec![false; n];
    for &c in &chosen {
        prop_assert!(c < n && !seen[c], "{chosen:?}");
        seen[c] = true;
    }
    let again = bulyan_select(dist, n, f, clamp).unwrap();
    prop_assert_eq!(&chosen, &again.0);
    prop_assert_eq!(bits(&scores), bits(&again.1));
    Ok(())
}

fn check_bulyan<T: Arb>(m: &M<T>, f: usize, clamp: bool) -> Check {
    let Ok(x) = m.rows() else { return Ok(()) };
    let n = m.n;
    let dist = pairwise_sq_dists(&x).unwrap();
    check_bulyan_select(&dist, n, f, clamp)?;
    let Ok((chosen, _)) = bulyan_select(&dist, n, f, clamp) else {
        return Ok(());
    };
    let sub = m.take(&chosen);
    let (theta, beta) = (chosen.len(), chosen.len() - 2 * f);
    check_meamed(&sub, 0, Some(beta), NonFinite::Robust)?;
    prop_assert!(needs(theta, f, 2, 1));
    check_trimmed_mean(&sub, f, NonFinite::Robust)?;
    Ok(())
}

/// MDA against a brute-force search over the kept sets in lexicographic order.
fn check_mda(dist: &[f64], n: usize, f: usize, max_subsets: u64) -> Check {
    // A legal call scans C(n, f) subsets: the core refuses only beyond `max_subsets` (the
    // Python layer's work limit bounds it), so a huge `max_subsets` is tried only where
    // C(n, f) is small.
    if max_subsets > 3000 && n <= 64 && f <= n && binomial(n, f) > 3000 {
        return Ok(());
    }
    let got = mda_select(dist, n, f, max_subsets);
    if Some(dist.len()) != n.checked_mul(n) {
        prop_assert!(is_invalid(&got), "{got:?}");
        return Ok(());
    }
    if !needs(n, f, 2, 1) {
        prop_assert!(is_too_few(&got), "{got:?}");
        return Ok(());
    }
    if binomial(n, f) > max_subsets {
        prop_assert!(is_invalid(&got), "{got:?}");
        return Ok(());
    }
    let kept = got.map_err(|e| TestCaseError::fail(format!("{e}")))?;
    // Every (n - f)-subset in lexicographic order; the first of smallest diameter wins.
    let size = n - f;
    let diameter = |s: &[usize]| {
        let mut d: Option<f64> = None;
        for (a, &i) in s.iter().enumerate() {
            for &j in &s[a + 1..] {
                let v = clean(dist[i * n + j]);
                if d.is_none_or(|d| v.total_cmp(&d).is_gt()) {
                    d = Some(v);
                }
            }
        }
        d.unwrap_or(0.0)
    };
    let mut idx: Vec<usize> = (0..size).collect();
    let mut best: Option<(f64, Vec<usize>)> = None;
    loop {
        let dm = diameter(&idx);
        if best.as_ref().is_none_or(|b| dm < b.0) {
            best = Some((dm, idx.clone()));
        }
        let Some(k) = (0..size).rev().find(|&k| idx[k] < n - size + k) else {
            break;
        };
        idx[k] += 1;
        for t in k + 1..size {
            idx[t] = idx[t - 1] + 1;
        }
    }
    prop_assert_eq!(kept, best.unwrap().1);
    Ok(())
}

/// Centered clipping: errors, dropped rows, scales, a finite output for finite input.
fn check_cc<T: Arb>(
    m: &M<T>,
    center: Option<&[f64]>,
    tau: f64,
    iters: usize,
    policy: NonFinite,
) -> Check {
    let Ok(x) = m.rows() else { return Ok(()) };
    let run = || {
        let mut out = vec![T::ZERO; m.d];
        centered_clipping(&x, center, tau, iters, policy, &mut out).map(|i| (out, i))
    };
    let got = run();
    let bad_center = center.is_some_and(|c| c.len() != m.d || !c.iter().all(|v| v.is_finite()));
    if !(tau.is_finite() && tau >= 0.0) || bad_center {
        prop_assert!(is_invalid(&got), "{got:?}");
        return Ok(());
    }
    let bad = m.nonfinite_rows();
    if (policy == NonFinite::Raise && !bad.is_empty())
        || (policy == NonFinite::Robust && bad.len() == m.n)
    {
        prop_assert!(is_nonfinite(&got), "{got:?}");
        return Ok(());
    }
    let (out, info) = got.map_err(|e| TestCaseError::fail(format!("{e}")))?;
    let again = run().unwrap();
    prop_assert_eq!(bits(&out), bits(&again.0));
    prop_assert_eq!(bits(&info.scales), bits(&again.1.scales));
    prop_assert_eq!(info.scales.len(), m.n);
    if policy == NonFinite::Robust {
        prop_assert_eq!(&info.dropped, &bad);
    }
    // Distances whose float64 squares overflow take a path that scales rows up
    // (`centered_clipping_never_scales_a_row_up`): the properties below hold without them.
    let big = 2f64.powi(500);
    if m.data
        .iter()
        .any(|v| v.is_finite() && v.to_f64().abs() >= big)
        || center.is_some_and(|c| c.iter().any(|v| v.abs() >= big))
    {
        return Ok(());
    }
    let keep: Vec<usize> = (0..m.n)
        .filter(|&i| policy != NonFinite::Robust || m.finite_row(i))
        .collect();
    if !keep.iter().all(|&i| m.finite_row(i)) {
        return Ok(());
    }
    for &i in &keep {
        let s = info.scales[i];
        prop_assert!((0.0..=1.0).contains(&s), "scale of row {i}: {s}");
    }
    // The reference: the rule as written, in float64.
    let mut v: Vec<f64> = center.map_or(vec![0.0; m.d], |c| c.to_vec());
    for _ in 0..iters {
        let s: Vec<f64> = keep
            .iter()
            .map(|&i| {
                let d: f64 = m
                    .row(i)
                    .iter()
                    .zip(&v)
                    .map(|(x, c)| (x.to_f64() - c).powi(2))
                    .sum();
                (tau / d.sqrt().max(f64::MIN_POSITIVE)).min(1.0)
            })
            .collect();
        let step: Vec<f64> = (0..m.d)
            .map(|j| {
                let t: f64 = keep
                    .iter()
                    .zip(&s)
                    .map(|(&i, si)| (m.at(i, j).to_f64() - v[j]) * si)
                    .sum();
                t / keep.len() as f64
            })
            .collect();
        v.iter_mut().zip(step).for_each(|(c, t)| *c += t);
    }
    let scale = m.data.iter().map(|x| x.to_f64().abs()).fold(1.0, f64::max)
        + center.map_or(0.0, |c| c.iter().map(|v| v.abs()).fold(0.0, f64::max));
    for (j, (&o, &r)) in out.iter().zip(&v).enumerate() {
        let round = if T::is_f32().is_some() {
            2f64.powi(-23)
        } else {
            0.0
        };
        let tol = 1e-12 * scale * (iters as f64 + 1.0) + round * r.abs();
        prop_assert!(
            (o.to_f64() - r).abs() <= tol || (o.is_infinite() && T::is_f32().is_some()),
            "col {j}: {o:?} vs {r:e} (tau={tau:e})"
        );
    }
    // From the zero centre every step is a convex combination of the centre and the rows.
    if center.is_none() {
        prop_assert!(out.iter().all(|v| v.is_finite()), "tau={tau:e}: {out:?}");
    }
    Ok(())
}

/// The geometric median: errors, weights, iterations.
#[allow(clippy::too_many_arguments)]
fn check_gm<T: Arb>(
    m: &M<T>,
    alpha: Option<&[f64]>,
    nu: f64,
    maxiter: usize,
    ftol: f64,
    init: Init,
    policy: NonFinite,
) -> Check {
    let Ok(x) = m.rows() else { return Ok(()) };
    let run = || {
        let mut out = vec![T::ZERO; m.d];
        geometric_median(&x, alpha, nu, maxiter, ftol, init, policy, &mut out).map(|i| (out, i))
    };
    let got = run();
    let bad_alpha =
        alpha.is_some_and(|a| a.len() != m.n || !a.iter().all(|v| v.is_finite() && *v >= 0.0));
    if !(nu.is_finite() && nu > 0.0)
        || maxiter == 0
        || !(ftol.is_finite() && ftol >= 0.0)
        || bad_alpha
    {
        prop_assert!(is_invalid(&got), "{got:?}");
        return Ok(());
    }
    let bad = m.nonfinite_rows();
    if (policy == NonFinite::Raise && !bad.is_empty())
        || (policy == NonFinite::Robust && bad.len() == m.n)
    {
        prop_assert!(is_nonfinite(&got), "{got:?}");
        return Ok(());
    }
    let (out, info) = match got {
        Ok(g) => g,
        Err(e) => {
            // The weights of the rows left sum to 0, or the Weiszfeld weights all underflow.
            prop_assert!(matches!(e, AggError::InvalidParameter { .. }), "{e}");
            return Ok(());
        }
    };
    let again = run().unwrap();
    prop_assert_eq!(bits(&out), bits(&again.0));
    prop_assert_eq!(bits(&info.weights), bits(&again.1.weights));
    prop_assert!(info.iterations >= 1 && info.iterations <= maxiter);
    prop_assert_eq!(info.weights.len(), m.n);
    if policy == NonFinite::Robust {
        for &i in &bad {
            prop_assert_eq!(info.weights[i], 0.0);
        }
    }
    Ok(())
}

/// The weighted median and trimmed mean: errors, and the unweighted rules' bits for equal
/// weights (docs of `columns/weighted.rs`: "with unit weights this is exactly ...").
fn check_weighted<T: Arb>(m: &M<T>, w: &[f64], f: usize, even: Even, policy: NonFinite) -> Check {
    let Ok(x) = m.rows() else { return Ok(()) };
    let n = m.n;
    let mut v = vec![T::ZERO; m.d];
    let med = weighted_median(&x, w, even, policy, ColumnsOut::new(&mut v));
    let mut t = vec![T::ZERO; m.d];
    let tm = weighted_trimmed_mean(&x, w, f, policy, ColumnsOut::new(&mut t));
    let w_ok = w.len() == n && w.iter().all(|v| v.is_finite() && *v >= 0.0);
    if !w_ok {
        prop_assert!(is_invalid(&med), "{med:?}");
        prop_assert!(is_invalid(&tm) || is_too_few(&tm), "{tm:?}");
        return Ok(());
    }
    let bad = m.nonfinite_rows();
    if policy == NonFinite::Raise && !bad.is_empty() {
        prop_assert!(is_nonfinite(&med) || is_invalid(&med), "{med:?}");
        return Ok(());
    }
    if !needs(n, f, 2, 1) {
        prop_assert!(is_too_few(&tm), "{tm:?}");
    }
    if w.iter().all(|&v| v == 1.0) {
        let mut u = vec![T::ZERO; m.d];
        median(&x, even, policy, ColumnsOut::new(&mut u)).unwrap();
        prop_assert!(
            v.iter().zip(&u).all(|(a, b)| same(*a, *b)),
            "{v:?} vs {u:?}"
        );
        // float64 only within the plain sum's accuracy: the weighted kernel does not
        // compensate its float64 sum (`weighted_trimmed_mean_is_compensated_for_float64`).
        if tm.is_ok() && T::is_f32().is_some() {
            trimmed_mean(&x, f, policy, ColumnsOut::new(&mut u)).unwrap();
            prop_assert!(
                t.iter().zip(&u).all(|(a, b)| same(*a, *b)),
                "{t:?} vs {u:?}"
            );
        }
    }
    Ok(())
}

/// The pre-aggregators' kernels: group means, row norms, scaled rows.
fn check_preagg<T: Arb>(m: &M<T>, offsets: &[usize], members: &[usize], scales: &[f64]) -> Check {
    let Ok(x) = m.rows() else { return Ok(()) };
    let (n, d) = (m.n, m.d);
    // group_means: out is `groups × d`, as the binding allocates it.
    let groups = offsets.len().saturating_sub(1);
    let mut out = vec![T::ZERO; groups * d];
    let got = group_means(&x, offsets, members, &mut out);
    let valid = !offsets.is_empty()
        && offsets[0] == 0
        && offsets[groups] == members.len()
        && offsets.windows(2).all(|w| w[1] > w[0])
        && members.iter().all(|&i| i < n);
    prop_assert_eq!(valid, got.is_ok(), "{:?}", got);
    if valid {
        for g in 0..groups {
            let mem = &members[offsets[g]..offsets[g + 1]];
            for j in 0..d {
                let mut vals: Vec<T> = mem.iter().map(|&i| m.at(i, j)).collect();
                vals.sort_by(|a, b| rank_cmp(*a, *b));
                let y = out[g * d + j];
                if mem
                    .iter()
                    .all(|&i| m.at(i, j).bits() == m.at(mem[0], j).bits())
                {
                    prop_assert!(same(y, m.at(mem[0], j)), "group {g} col {j}: {y:?}");
                }
                check_average(y, &vals, false)?;
            }
        }
    }
    // row_norms: float64, one task per row.
    let norms = row_norms(&x).unwrap();
    prop_assert_eq!(norms.len(), n);
    for (i, &norm) in norms.iter().enumerate() {
        let want = m
            .row(i)
            .iter()
            .map(|v| v.to_f64() * v.to_f64())
            .sum::<f64>()
            .sqrt();
        if want.is_finite() {
            prop_assert!(
                (norm - want).abs() <= 1e-14 * want,
                "{i}: {} vs {want}",
                norm
            );
        } else {
            prop_assert!(!norm.is_finite());
        }
    }
    // scale_rows: the scale rounded to T, the product taken in T.
    if scales.len() == n {
        let mut out = vec![T::ZERO; n * d];
        scale_rows(&x, scales, &mut out);
        for i in 0..n {
            for j in 0..d {
                let want = m.at(i, j) * T::from_f64(scales[i]);
                prop_assert!(same(out[i * d + j], want));
            }
        }
    }
    Ok(())
}

/// The monoid tree: `reduce` against a level-by-level fold, the schedule's sets.
fn check_reduce<T: Arb>(sizes: &[usize], h: usize, values: &[T], op: Op, empty: T) -> Check {
    let mut ptr = vec![0usize];
    for k in sizes {
        ptr.push(ptr.last().unwrap() + k);
    }
    let rows = *ptr.last().unwrap();
    let x: Vec<T> = (0..rows * h).map(|i| values[i % values.len()]).collect();
    let mut out = vec![T::ZERO; sizes.len() * h];
    tree::reduce(&x, h, &ptr, op, empty, &mut out);
    let mut again = vec![T::ZERO; sizes.len() * h];
    tree::reduce(&x, h, &ptr, op, empty, &mut again);
    prop_assert_eq!(bits(&out), bits(&again));
    for (s, &k) in sizes.iter().enumerate() {
        for j in 0..h {
            let want = if k == 0 {
                empty
            } else {
                let mut cur: Vec<T> = (ptr[s]..ptr[s + 1]).map(|i| x[i * h + j]).collect();
                while cur.len() > 1 {
                    let mut next: Vec<T> = cur
                        .chunks_exact(2)
                        .map(|p| {
                            let mut a = [p[0]];
                            combine_rows(op, &mut a, &[p[1]]);
                            a[0]
                        })
                        .collect();
                    if cur.len() % 2 == 1 {
                        next.push(cur[cur.len() - 1]);
                    }
                    cur = next;
                }
                if op == Op::Mean && k > 1 {
                    cur[0] / T::from_usize(k)
                } else {
                    cur[0]
                }
            };
            prop_assert!(same(out[s * h + j], want), "{op:?} set {s} col {j}");
        }
    }
    // The schedule: every set done exactly once (an empty set without pad never), and the
    // combines its trees need.
    for pad in [Pad::None, Pad::ZerosDense, Pad::Identity] {
        let sched = Schedule::build(&ptr, pad).unwrap();
        prop_assert_eq!(sched.done.len(), sched.levels.len() + 1);
        let mut done = vec![0usize; sizes.len()];
        for l in &sched.done_sets {
            for &s in l {
                done[s as usize] += 1;
            }
        }
        let kmax = sizes.iter().copied().max().unwrap_or(0);
        let leaves = |k: usize| match pad {
            Pad::None => k,
            Pad::ZerosDense => kmax,
            Pad::Identity => k.max(1).next_power_of_two(),
        };
        for (s, &k) in sizes.iter().enumerate() {
            prop_assert_eq!(done[s], usize::from(leaves(k) > 0), "{:?} set {}", pad, s);
        }
        let combines: usize = sizes.iter().map(|&k| leaves(k).saturating_sub(1)).sum();
        prop_assert_eq!(sched.combines(), combines, "{:?}", pad);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Strategies for the monoid tree's offsets

/// An index value: mostly small, sometimes negative or at least 2^60. Values in
/// `64..2^60` are left out: `ptr_from_index` then legally allocates and fills
/// `max(index) + 1` offsets (up to 8 EiB), which whether the allocator refuses depends on the
/// machine's overcommit policy (a legal call doing enormous work, as numpy would).
fn index_value() -> BoxedStrategy<i64> {
    prop_oneof![
        8 => 0i64..10,
        1 => any::<i64>().prop_map(|v| if (64..1 << 60).contains(&v) { v | (1 << 62) } else { v }),
        1 => prop::sample::select(vec![i64::MAX, i64::MIN, -1, 1 << 60, (1 << 60) - 1, 1 << 62]),
    ]
    .boxed()
}

/// `dim_size`: absent, small, or at least 2^60 (see [`index_value`] for the range left out).
fn dim_size() -> BoxedStrategy<Option<usize>> {
    prop_oneof![
        3 => Just(None),
        4 => (0usize..16).prop_map(Some),
        1 => (1usize << 60..=usize::MAX).prop_map(Some),
        1 => prop::sample::select(vec![usize::MAX, usize::MAX - 1, 1 << 63, 1 << 60]).prop_map(Some),
    ]
    .boxed()
}

// ---------------------------------------------------------------------------------------------
// The properties

proptest! {
    #![proptest_config(config(1))]

    #[test]
    fn median_f32(m in matrix::<f32>(), e in even(), p in policy()) {
        check_median(&m, e, p)?;
    }

    #[test]
    fn median_f64(m in matrix::<f64>(), e in even(), p in policy()) {
        check_median(&m, e, p)?;
    }

    #[test]
    fn trimmed_mean_f32(m in matrix::<f32>(), f in count(), p in policy()) {
        check_trimmed_mean(&m, f, p)?;
        check_trimmed_mean(&m, m.n.saturating_sub(1) / 2, p)?;
    }

    #[test]
    fn trimmed_mean_f64(m in matrix::<f64>(), f in count(), p in policy()) {
        check_trimmed_mean(&m, f, p)?;
        check_trimmed_mean(&m, m.n.saturating_sub(1) / 2, p)?;
    }

    #[test]
    fn trimmed_mean_finite_f64(m in finite_matrix::<f64>(), f in 0usize..20) {
        check_trimmed_mean(&m, f.min(m.n.saturating_sub(1) / 2), NonFinite::Robust)?;
    }

    #[test]
    fn meamed_f32(m in matrix::<f32>(), f in count(), keep in count(), p in policy()) {
        check_meamed(&m, f, None, p)?;
        check_meamed(&m, 0, Some(keep), p)?;
    }

    #[test]
    fn meamed_f64(m in matrix::<f64>(), f in count(), keep in count(), p in policy()) {
        check_meamed(&m, f, None, p)?;
        check_meamed(&m, 0, Some(keep), p)?;
    }

    #[test]
    fn mean_f32(
        m in matrix::<f32>(),
        w in prop::option::of(vec(any_f64(), 0..40)),
        p in policy(),
    ) {
        check_mean(&m, w.as_deref(), p)?;
        // Weights of the right length, non-negative, of every magnitude.
        let w: Vec<f64> = (0..m.n).map(|i| w.as_ref().and_then(|w| w.get(i)).map_or(1.0, |v| v.abs())).collect();
        check_mean(&m, Some(&w), p)?;
    }

    #[test]
    fn mean_f64(
        m in matrix::<f64>(),
        w in prop::option::of(vec(any_f64(), 0..40)),
        p in policy(),
    ) {
        check_mean(&m, w.as_deref(), p)?;
        let w: Vec<f64> = (0..m.n).map(|i| w.as_ref().and_then(|w| w.get(i)).map_or(1.0, |v| v.abs())).collect();
        check_mean(&m, Some(&w), p)?;
    }

    #[test]
    fn mean_finite(m in finite_matrix::<f32>(), m64 in finite_matrix::<f64>(), w in vec(0.0f64..1e3, 40)) {
        check_mean(&m, None, NonFinite::Robust)?;
        check_mean(&m, Some(&w[..m.n]), NonFinite::Robust)?;
        check_mean(&m64, None, NonFinite::Robust)?;
        check_mean(&m64, Some(&w[..m64.n]), NonFinite::Robust)?;
    }

    #[test]
    fn krum_f32(m in matrix::<f32>(), f in count(), mm in count(), p in policy()) {
        check_krum(&m, f, 1, p)?;
        check_krum(&m, f, mm, p)?;
    }

    #[test]
    fn krum_f64(m in matrix::<f64>(), f in count(), mm in count(), p in policy()) {
        check_krum(&m, f, 1, p)?;
        check_krum(&m, f, mm, p)?;
    }

    #[test]
    fn krum_reference(
        m in finite_matrix::<f32>(),
        m64 in finite_matrix::<f64>(),
        f in 0usize..20,
        mm in 1usize..40,
    ) {
        for (n, check) in [(m.n, 0), (m64.n, 1)] {
            if n < 3 {
                continue;
            }
            let f = f.min((n - 3) / 2);
            let mm = mm.min(n);
            if check == 0 {
                check_krum(&m, f, 1, NonFinite::Robust)?;
                check_krum(&m, f, mm, NonFinite::Robust)?;
            } else {
                check_krum(&m64, f, 1, NonFinite::Robust)?;
                check_krum(&m64, f, mm, NonFinite::Robust)?;
            }
        }
    }

    #[test]
    fn select_from_any_distances(
        dist in vec(any_f64(), 0..100),
        n in prop_oneof![4 => 0usize..11, 1 => count()],
        f in count(),
        mm in count(),
        p in policy(),
    ) {
        // The matrix's own n when it is square, else any n (the length check refuses it).
        let n = match (0..=10).find(|k| k * k == dist.len()) {
            Some(k) if n < 11 => k,
            _ => n,
        };
        let got = select_from_distances(&dist, n, f, mm, p);
        if Some(dist.len()) != n.checked_mul(n) {
            prop_assert!(is_invalid(&got), "{:?}", got);
        } else if !needs(n, f, 2, 3) {
            prop_assert!(is_too_few(&got), "{:?}", got);
        } else if mm < 1 || mm > n {
            prop_assert!(is_invalid(&got), "{:?}", got);
        } else if let Ok(sel) = got {
            prop_assert_eq!(sel.indices.len(), mm);
            prop_assert_eq!(sel.scores.len(), n);
        }
    }

    #[test]
    fn pairwise_distances_f32(m in matrix::<f32>()) {
        check_dists(&m)?;
    }

    #[test]
    fn pairwise_distances_f64(m in matrix::<f64>()) {
        check_dists(&m)?;
    }

    #[test]
    fn bulyan_f32(m in matrix::<f32>(), f in count(), clamp in any::<bool>()) {
        check_bulyan(&m, f, clamp)?;
        check_bulyan(&m, m.n.saturating_sub(3) / 4, clamp)?;
    }

    #[test]
    fn bulyan_f64(m in matrix::<f64>(), f in count(), clamp in any::<bool>()) {
        check_bulyan(&m, f, clamp)?;
        check_bulyan(&m, m.n.saturating_sub(3) / 4, clamp)?;
    }

    #[test]
    fn bulyan_and_mda_any_matrix(
        dist in vec(any_f64(), 0..400),
        n in prop_oneof![4 => 0usize..21, 1 => count()],
        f in count(),
        clamp in any::<bool>(),
        max_subsets in prop_oneof![
            4 => 0u64..3000,
            1 => prop::sample::select(vec![u64::MAX, u64::MAX - 1, 1 << 63, 1 << 32]),
        ],
    ) {
        let n = match (0..=20).find(|k| k * k == dist.len()) {
            Some(k) if n < 21 => k,
            _ => n,
        };
        check_bulyan_select(&dist, n, f, clamp)?;
        check_bulyan_select(&dist, n, n.saturating_sub(3) / 4, clamp)?;
        check_mda(&dist, n, f, max_subsets)?;
        check_mda(&dist, n, f % 4, max_subsets)?;
    }

    #[test]
    fn mda_on_rows(m in matrix::<f32>(), f in 0usize..6) {
        if let Ok(x) = m.rows() {
            let dist = pairwise_sq_dists(&x).unwrap();
            check_mda(&dist, m.n, f, 3000)?;
        }
    }

    #[test]
    fn centered_clipping_f32(
        m in matrix::<f32>(),
        center in prop::option::of(vec(any_f64(), 0..20)),
        tau in any_f64(),
        // A legal call runs `iters` iterations: the core does not bound them (the Python
        // layer's work limit does), so the strategy does.
        iters in 0usize..4,
        p in policy(),
    ) {
        check_cc(&m, center.as_deref(), tau, iters, p)?;
        let c: Vec<f64> = center.unwrap_or_default().into_iter().chain(std::iter::repeat(0.5)).take(m.d).collect();
        check_cc(&m, Some(&c), tau, iters, p)?;
    }

    #[test]
    fn centered_clipping_f64(
        m in matrix::<f64>(),
        center in prop::option::of(vec(any_f64(), 0..20)),
        tau in any_f64(),
        iters in 0usize..4,
        p in policy(),
    ) {
        check_cc(&m, center.as_deref(), tau, iters, p)?;
        let c: Vec<f64> = center.unwrap_or_default().into_iter().chain(std::iter::repeat(0.5)).take(m.d).collect();
        check_cc(&m, Some(&c), tau, iters, p)?;
    }

    #[test]
    fn geometric_median_any(
        m in matrix::<f32>(),
        m64 in matrix::<f64>(),
        alpha in prop::option::of(vec(any_f64(), 0..40)),
        nu in any_f64(),
        // `maxiter` Weiszfeld steps run unless the objective settles, which a NaN or infinite
        // objective never does: the core does not bound them (the Python layer's work limit
        // does), so the strategy does.
        maxiter in 0usize..4,
        ftol in any_f64(),
        init in prop::sample::select(vec![Init::Mean, Init::Median, Init::Zero]),
        p in policy(),
    ) {
        check_gm(&m, alpha.as_deref(), nu, maxiter, ftol, init, p)?;
        check_gm(&m64, alpha.as_deref(), nu, maxiter, ftol, init, p)?;
        let a: Vec<f64> = (0..m.n).map(|i| alpha.as_ref().and_then(|a| a.get(i)).map_or(1.0, |v| v.abs())).collect();
        check_gm(&m, Some(&a), nu.abs(), maxiter, ftol.abs(), init, p)?;
    }

    #[test]
    fn weighted_order_statistics(
        m in matrix::<f32>(),
        m64 in matrix::<f64>(),
        w in vec(any_f64(), 0..40),
        f in count(),
        e in even(),
        p in policy(),
        unit in any::<bool>(),
    ) {
        let fit = |n: usize| -> Vec<f64> {
            if unit {
                vec![1.0; n]
            } else {
                (0..n).map(|i| w.get(i).map_or(1.0, |v| v.abs())).collect()
            }
        };
        check_weighted(&m, &w, f, e, p)?;
        check_weighted(&m, &fit(m.n), f, e, p)?;
        check_weighted(&m, &fit(m.n), m.n.saturating_sub(1) / 2, e, p)?;
        check_weighted(&m64, &fit(m64.n), f, e, p)?;
        check_weighted(&m64, &fit(m64.n), m64.n.saturating_sub(1) / 3, e, p)?;
    }

    #[test]
    fn sign_vote_any(m in matrix::<f32>(), m64 in matrix::<f64>(), propagate in any::<bool>()) {
        if let Ok(x) = m.rows() {
            let mut out = vec![0.0f32; m.d];
            sign_vote(&x, propagate, &mut out);
        }
        if let Ok(x) = m64.rows() {
            let mut out = vec![0.0f64; m64.d];
            sign_vote(&x, propagate, &mut out);
        }
    }

    #[test]
    fn preaggregators(
        m in matrix::<f32>(),
        m64 in matrix::<f64>(),
        sizes in vec(1usize..4, 0..6),
        members in vec(prop_oneof![9 => 0usize..40, 1 => count()], 0..24),
        raw_offsets in prop::option::of(vec(prop_oneof![4 => 0usize..24, 1 => count()], 0..8)),
        scales in vec(any_f64(), 0..40),
    ) {
        // Mostly valid groups (offsets from group sizes, members below n), sometimes not.
        let offsets: Vec<usize> = raw_offsets.unwrap_or_else(|| {
            std::iter::once(0).chain(sizes.iter().scan(0, |s, k| { *s += k; Some(*s) })).collect()
        });
        let total = offsets.last().copied().unwrap_or(0).min(members.len());
        for (mm, n) in [(0, m.n), (1, m64.n)] {
            let members: Vec<usize> = members[..total].iter().map(|&i| if n > 0 && i < 40 { i % n } else { i }).collect();
            let scales: Vec<f64> = (0..n).map(|i| scales.get(i).copied().unwrap_or(2.0)).collect();
            if mm == 0 {
                check_preagg(&m, &offsets, &members, &scales)?;
            } else {
                check_preagg(&m64, &offsets, &members, &scales)?;
            }
        }
    }

    #[test]
    fn identical_rows_average_to_themselves(
        m in identical_rows::<f32>(),
        m64 in identical_rows::<f64>(),
        w in vec(1e-3f64..1e3, 40),
        f in 0usize..20,
    ) {
        fn one<T: Arb>(m: &M<T>, w: &[f64], f: usize) -> Check {
            let x = m.rows().unwrap();
            let (n, d) = (m.n, m.d);
            let row = bits(m.row(0));
            let f = f.min((n - 1) / 2);
            let mut out = vec![T::ZERO; d];
            mean(&x, None, NonFinite::Robust, &mut out).unwrap();
            prop_assert_eq!(bits(&out), row.clone(), "mean");
            mean(&x, Some(&w[..n]), NonFinite::Robust, &mut out).unwrap();
            prop_assert_eq!(bits(&out), row.clone(), "weighted mean");
            trimmed_mean(&x, f, NonFinite::Robust, ColumnsOut::new(&mut out)).unwrap();
            prop_assert_eq!(bits(&out), row.clone(), "trimmed mean");
            median(&x, Even::Mean, NonFinite::Robust, ColumnsOut::new(&mut out)).unwrap();
            prop_assert_eq!(bits(&out), row.clone(), "median");
            meamed(&x, f, NonFinite::Robust, ColumnsOut::new(&mut out)).unwrap();
            prop_assert_eq!(bits(&out), row.clone(), "meamed");
            weighted_trimmed_mean(&x, &w[..n], f, NonFinite::Robust, ColumnsOut::new(&mut out)).unwrap();
            prop_assert_eq!(bits(&out), row.clone(), "weighted trimmed mean");
            group_means(&x, &[0, n], &(0..n).collect::<Vec<_>>(), &mut out).unwrap();
            prop_assert_eq!(bits(&out), row.clone(), "group means");
            if n >= 2 * f + 3 {
                multi_krum(&x, f, n - f, NonFinite::Robust, &mut out).unwrap();
                prop_assert_eq!(bits(&out), row.clone(), "multi-krum");
            }
            for init in [Init::Mean, Init::Median, Init::Zero] {
                geometric_median(&x, None, 1e-6, 3, 0.0, init, NonFinite::Robust, &mut out).unwrap();
                prop_assert_eq!(bits(&out), row.clone(), "geometric median {:?}", init);
            }
            Ok(())
        }
        one(&m, &w, f)?;
        one(&m64, &w, f)?;
    }

    #[test]
    fn order_statistics_are_permutation_invariant(
        m in matrix::<f32>(),
        m64 in matrix::<f64>(),
        seed in any::<u64>(),
        f in 0usize..20,
        e in even(),
    ) {
        // docs/conventions.md, "Order and ties": every order statistic is bitwise
        // permutation-invariant (-0 ranks below +0); so are the distances.
        fn one<T: Arb>(m: &M<T>, seed: u64, f: usize, e: Even) -> Check {
            let Ok(x) = m.rows() else { return Ok(()) };
            let mut perm: Vec<usize> = (0..m.n).collect();
            let mut rng = crate::testing::Rng(seed | 1);
            for i in (1..m.n).rev() {
                let r = ((rng.next_f64() + 1.0) * 0.5 * (i + 1) as f64) as usize;
                perm.swap(i, r.min(i));
            }
            let pm = m.take(&perm);
            let px = pm.rows().unwrap();
            let f = f.min((m.n - 1) / 2);
            for p in [NonFinite::Robust, NonFinite::Propagate] {
                let (mut a, mut b) = (vec![T::ZERO; m.d], vec![T::ZERO; m.d]);
                median(&x, e, p, ColumnsOut::new(&mut a)).unwrap();
                median(&px, e, p, ColumnsOut::new(&mut b)).unwrap();
                prop_assert!(a.iter().zip(&b).all(|(u, v)| same(*u, *v)), "median {:?} vs {:?}", a, b);
                trimmed_mean(&x, f, p, ColumnsOut::new(&mut a)).unwrap();
                trimmed_mean(&px, f, p, ColumnsOut::new(&mut b)).unwrap();
                prop_assert!(a.iter().zip(&b).all(|(u, v)| same(*u, *v)), "trimmed mean {:?} vs {:?}", a, b);
            }
            let (da, db) = (pairwise_sq_dists(&x).unwrap(), pairwise_sq_dists(&px).unwrap());
            let n = m.n;
            for i in 0..n {
                for j in 0..n {
                    prop_assert!(same(db[i * n + j], da[perm[i] * n + perm[j]]), "({}, {})", i, j);
                }
            }
            Ok(())
        }
        one(&m, seed, f, e)?;
        one(&m64, seed, f, e)?;
    }

    #[test]
    fn weighted_median_is_the_median_of_repeated_rows(
        m in matrix::<f32>(),
        m64 in matrix::<f64>(),
        k in vec(0usize..4, 40),
        e in even(),
    ) {
        // docs of columns/weighted.rs: input i stands for a mass w_i of identical values; with
        // integer weights that is the median of the rows repeated w_i times.
        fn one<T: Arb>(m: &M<T>, k: &[usize], e: Even) -> Check {
            let Ok(x) = m.rows() else { return Ok(()) };
            let k = &k[..m.n];
            if k.iter().all(|&c| c == 0) {
                return Ok(());
            }
            let rep: Vec<usize> = (0..m.n).flat_map(|i| std::iter::repeat_n(i, k[i])).collect();
            let rm = m.take(&rep);
            let w: Vec<f64> = k.iter().map(|&c| c as f64).collect();
            let (mut a, mut b) = (vec![T::ZERO; m.d], vec![T::ZERO; m.d]);
            weighted_median(&x, &w, e, NonFinite::Robust, ColumnsOut::new(&mut a)).unwrap();
            median(&rm.rows().unwrap(), e, NonFinite::Robust, ColumnsOut::new(&mut b)).unwrap();
            prop_assert!(a.iter().zip(&b).all(|(u, v)| same(*u, *v)), "{:?} vs {:?}", a, b);
            Ok(())
        }
        one(&m, &k, e)?;
        one(&m64, &k, e)?;
    }

    #[test]
    fn monoid_reduce(
        sizes in vec(prop_oneof![3 => 0usize..4, 1 => 4usize..20], 0..8),
        h in 0usize..4,
        v32 in vec(f32::any_value(), 1..16),
        v64 in vec(f64::any_value(), 1..16),
        op in prop::sample::select(vec![Op::Sum, Op::Mean, Op::Prod, Op::Max, Op::Min, Op::LogSumExp]),
        e32 in f32::any_value(),
        e64 in f64::any_value(),
    ) {
        check_reduce(&sizes, h, &v32, op, e32)?;
        check_reduce(&sizes, h, &v64, op, e64)?;
    }

    #[test]
    fn segment_offsets(
        index in vec(0i64..10, 0..40),
        wild in prop::option::weighted(0.4, (any::<prop::sample::Index>(), index_value())),
        sort in prop::bool::weighted(0.8),
        dim in dim_size(),
    ) {
        // A small index, perhaps with one wild value (negative, or at least 2^60), sorted or not.
        let mut index = index;
        if let Some((at, v)) = wild.filter(|_| !index.is_empty()) {
            let i = at.index(index.len());
            index[i] = v;
        }
        if sort {
            index.sort_unstable();
        }
        let got = tree::ptr_from_index(&index, dim);
        let sorted = index.windows(2).all(|w| w[0] <= w[1]);
        let needed = index.last().map_or(0, |&m| m.max(0) as u128 + 1);
        let sets = dim.map_or(needed, |d| d as u128);
        if index.iter().any(|&i| i < 0) || !sorted || sets < needed {
            prop_assert!(is_invalid(&got), "{:?}", got);
            return Ok(());
        }
        if sets > 1 << 40 {
            prop_assert!(matches!(got, Err(AggError::OutOfMemory { .. })), "{:?}", got);
            return Ok(());
        }
        let ptr = got.map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(ptr.len() as u128, sets + 1);
        for (s, &p) in ptr.iter().enumerate() {
            prop_assert_eq!(p, index.iter().filter(|&&i| (i as usize) < s).count());
        }
        // check_ptr accepts what ptr_from_index built, and refuses every change of it.
        let p64: Vec<i64> = ptr.iter().map(|&p| p as i64).collect();
        prop_assert_eq!(tree::check_ptr(&p64, index.len(), dim).unwrap(), ptr.clone());
        prop_assert!(tree::check_ptr(&p64, index.len() + 1, None).is_err());
        prop_assert!(tree::check_ptr(&p64, index.len(), Some(ptr.len())).is_err());
        for pad in [Pad::None, Pad::ZerosDense, Pad::Identity] {
            Schedule::build(&ptr, pad).unwrap();
        }
    }

    #[test]
    fn segment_ptr_checks(
        sizes in vec(0i64..4, 0..10),
        wild in prop::option::weighted(0.3, (any::<prop::sample::Index>(), index_value())),
        rows in prop::option::weighted(0.2, prop_oneof![4 => 0usize..12, 1 => count()]),
        dim in prop_oneof![
            2 => Just(None),
            2 => Just(Some(usize::MAX)), // replaced by the number of sets below
            1 => (0usize..12).prop_map(Some),
            1 => count().prop_map(Some),
        ],
    ) {
        // Offsets from set sizes, perhaps with one wild entry; rows and dim_size mostly right.
        let mut ptr: Vec<i64> = std::iter::once(0)
            .chain(sizes.iter().scan(0, |s, k| { *s += k; Some(*s) }))
            .collect();
        if let Some((at, v)) = wild {
            let i = at.index(ptr.len());
            ptr[i] = v;
        }
        let rows = rows.unwrap_or(sizes.iter().sum::<i64>() as usize);
        let dim = dim.map(|d| if d == usize::MAX { sizes.len() } else { d });
        let got = tree::check_ptr(&ptr, rows, dim);
        let ok = !ptr.is_empty()
            && ptr[0] == 0
            && ptr.windows(2).all(|w| w[0] <= w[1])
            && ptr[ptr.len() - 1] as u128 == rows as u128
            && dim.is_none_or(|d| d == ptr.len() - 1);
        prop_assert_eq!(ok, got.is_ok(), "{:?}", got);
        // Offsets of a few rows only: a schedule and a reduction are O(rows).
        if let Some(p) = got.ok().filter(|_| rows <= 1024) {
            for pad in [Pad::None, Pad::ZerosDense, Pad::Identity] {
                Schedule::build(&p, pad).unwrap();
            }
            let sizes: Vec<usize> = p.windows(2).map(|w| w[1] - w[0]).collect();
            check_reduce(&sizes, 1, &[1.5f64, -0.0, 2.0], Op::Sum, 0.0)?;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Determinism across thread counts and SIMD levels, on inputs large enough to run in parallel

/// `n` rows (tiny, around the compiled networks' limit of 64, beyond the pair tiles' 128) of
/// `d` values with `n · d` above `pool::PARALLEL_MIN_VALUES`, drawn from a seed: uniform,
/// with sprinkled specials, small ties, or wide exponents.
#[derive(Clone, Debug)]
struct Big {
    n: usize,
    d: usize,
    seed: u64,
    kind: u8,
}

impl Big {
    fn data<T: Arb>(&self) -> Vec<T> {
        let mut rng = crate::testing::Rng(self.seed | 1);
        (0..self.n * self.d)
            .map(|_| {
                let u = rng.next_f64();
                let v = match self.kind {
                    0 => u,
                    1 if rng.next_f64() > 0.999 => {
                        [f64::NAN, f64::INFINITY, -f64::INFINITY, -0.0, 1e300]
                            [(u.abs() * 5.0) as usize % 5]
                    }
                    1 => u,
                    2 => (u * 3.0).round() * 0.5,
                    _ => u * 2f64.powi((rng.next_f64() * 40.0) as i32),
                };
                T::from_f64(v)
            })
            .collect()
    }
}

fn big() -> impl Strategy<Value = Big> {
    (
        prop_oneof![2 => 1usize..=12, 2 => 60usize..=72, 1 => 129usize..=134],
        0usize..50,
        any::<u64>(),
        0u8..4,
    )
        .prop_map(|(n, extra, seed, kind)| Big {
            n,
            d: (40_000 / n).max(64) + extra,
            seed,
            kind,
        })
}

/// Every kernel's outputs (as bits) under the thread count and level in force.
fn outputs<T: Arb>(m: &M<T>, f: usize) -> Vec<Vec<u64>> {
    let x = m.rows().unwrap();
    let (n, d) = (m.n, m.d);
    let mut all = Vec::new();
    let mut out = vec![T::ZERO; d];
    let (mut lo, mut hi) = (vec![0u32; d], vec![0u32; d]);
    let rows = |lo: &[u32], hi: &[u32]| lo.iter().chain(hi).map(|&r| u64::from(r)).collect();
    for even in [Even::Mean, Even::Lower] {
        median(&x, even, NonFinite::Robust, ColumnsOut::new(&mut out)).unwrap();
        all.push(bits(&out));
        median(
            &x,
            even,
            NonFinite::Propagate,
            ColumnsOut::with_rows(&mut out, &mut lo, &mut hi),
        )
        .unwrap();
        all.push(bits(&out));
        all.push(rows(&lo, &hi));
    }
    for p in [NonFinite::Robust, NonFinite::Propagate] {
        trimmed_mean(&x, f, p, ColumnsOut::new(&mut out)).unwrap();
        all.push(bits(&out));
        trimmed_mean(&x, f, p, ColumnsOut::with_rows(&mut out, &mut lo, &mut hi)).unwrap();
        all.push(bits(&out));
        all.push(rows(&lo, &hi));
        meamed(&x, f, p, ColumnsOut::with_rows(&mut out, &mut lo, &mut hi)).unwrap();
        all.push(bits(&out));
        all.push(rows(&lo, &hi));
    }
    let w: Vec<f64> = (0..n).map(|i| (i % 7) as f64 * 0.25).collect();
    for weights in [None, Some(&w[..])] {
        if mean(&x, weights, NonFinite::Robust, &mut out).is_ok() {
            all.push(bits(&out));
        }
    }
    let dist = pairwise_sq_dists(&x).unwrap();
    all.push(bits(&dist));
    if n >= 2 * f + 3 {
        if let Ok(sel) = multi_krum(&x, f, n - f, NonFinite::Propagate, &mut out) {
            all.push(bits(&out));
            all.push(bits(&sel.scores));
        }
    }
    all.push(bits(&row_norms(&x).unwrap()));
    let members: Vec<usize> = (0..n).rev().collect();
    let mut groups = vec![T::ZERO; 2 * d];
    if n >= 2 {
        group_means(&x, &[0, n / 2, n], &members, &mut groups).unwrap();
        all.push(bits(&groups));
    }
    if let Ok(info) = centered_clipping(&x, None, 0.5, 2, NonFinite::Robust, &mut out) {
        all.push(bits(&out));
        all.push(bits(&info.scales));
    }
    if let Ok(info) = geometric_median(
        &x,
        None,
        1e-6,
        2,
        0.0,
        Init::Median,
        NonFinite::Robust,
        &mut out,
    ) {
        all.push(bits(&out));
        all.push(bits(&info.weights));
    }
    all
}

fn check_threads_and_levels<T: Arb>(b: &Big) -> Check {
    let m = M {
        n: b.n,
        d: b.d,
        data: b.data::<T>(),
    };
    let f = (m.n - 1) / 4;
    let threads = crate::pool::num_threads();
    // Global settings: tests running beside this one may change them between the two calls,
    // which is harmless (no result may depend on them); the defaults are restored after.
    crate::pool::set_num_threads(1).unwrap();
    simd::set_level(Level::Scalar);
    let a = outputs(&m, f);
    crate::pool::set_num_threads(2).unwrap();
    simd::set_level(simd::DEFAULT_MAX);
    let b = outputs(&m, f);
    crate::pool::set_num_threads(threads).unwrap();
    prop_assert_eq!(a.len(), b.len());
    for (k, (p, q)) in a.iter().zip(&b).enumerate() {
        prop_assert!(p == q, "output {k} differs");
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(16))]

    #[test]
    fn same_bits_for_any_thread_count_and_simd_level(b in big(), wide in any::<bool>()) {
        if wide {
            check_threads_and_levels::<f64>(&b)?;
        } else {
            check_threads_and_levels::<f32>(&b)?;
        }
    }

    #[test]
    fn larger_n_against_the_references(
        m in matrix_in(f32::any_value(), 41..80, 1..4),
        m64 in matrix_in(f64::any_value(), 1020..1040, 1..3),
        f in 0usize..40,
        e in even(),
        p in policy(),
    ) {
        // Beyond the compiled networks (n > 64: the interpreted network) and beyond
        // network::MAX_N = 1024 (selection).
        check_median(&m, e, p)?;
        check_trimmed_mean(&m, f.min((m.n - 1) / 2), p)?;
        check_meamed(&m, f.min((m.n - 1) / 2), None, p)?;
        check_median(&m64, e, p)?;
        check_trimmed_mean(&m64, f * 13, p)?;
        check_dists(&m)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Findings: the minimal case of each bug the properties found. Open ones are `#[ignore]`d (and
// the property's exclusion names them); remove both when the bug is fixed.

/// `select_from_distances` computes `n * n` unchecked: an `n` whose square exceeds `usize`
/// panics in debug builds ("attempt to multiply with overflow", rules/krum.rs), and in release
/// builds wraps around (`(2^32)^2 = 0` matches an empty matrix), after which the kernel
/// reserves `n - 1` keys (an aborting allocation) and indexes out of bounds. `bulyan_select`
/// and `mda_select` refuse it through `distance::check_square`. Unreachable from Python (the
/// binding takes `n` from a contiguous square array).
#[test]
fn select_from_distances_with_n_squared_overflowing() {
    let got = select_from_distances(&[], 1 << 32, 0, 1, NonFinite::Robust);
    assert!(
        matches!(got, Err(AggError::InvalidParameter { .. })),
        "{got:?}"
    );
}

/// docs of columns/weighted.rs: "with unit weights this is exactly the trimmed mean"; and
/// docs/conventions.md: float64 sums over inputs are compensated. The weighted trimmed mean
/// sums float64 in plain float64: with `f = 0` and unit weights over `[1, 1e-30, -1]` it gives
/// `0.0` where the trimmed mean (and the mean) give `1e-30 / 3`.
#[test]
fn weighted_trimmed_mean_is_compensated_for_float64() {
    let data = [1.0f64, 1e-30, -1.0];
    let x = Rows::from_matrix("fuzz", &data, 3, 1).unwrap();
    let (mut a, mut b) = ([0.0f64], [0.0f64]);
    trimmed_mean(&x, 0, NonFinite::Robust, ColumnsOut::new(&mut a)).unwrap();
    weighted_trimmed_mean(&x, &[1.0; 3], 0, NonFinite::Robust, ColumnsOut::new(&mut b)).unwrap();
    assert_eq!(a[0], 1e-30 / 3.0);
    assert_eq!(b[0].to_bits(), a[0].to_bits(), "{} vs {}", b[0], a[0]);
}

/// docs/conventions.md: float64 sums over inputs are compensated. `group_means` (NNM,
/// bucketing) sums float64 rows in plain float64: the mean of `[1, 1e-30, -1]` as one group is
/// `0.0`, where `mean` gives `1e-30 / 3`.
#[test]
fn group_means_is_compensated_for_float64() {
    let data = [1.0f64, 1e-30, -1.0];
    let x = Rows::from_matrix("fuzz", &data, 3, 1).unwrap();
    let (mut a, mut b) = ([0.0f64], [0.0f64]);
    mean(&x, None, NonFinite::Robust, &mut a).unwrap();
    group_means(&x, &[0, 3], &[0, 1, 2], &mut b).unwrap();
    assert_eq!(a[0], 1e-30 / 3.0);
    assert_eq!(b[0].to_bits(), a[0].to_bits(), "{} vs {}", b[0], a[0]);
}

/// Centered clipping's factor is `min(1, tau / ||x_i - v||)`; where the float64 sum of squares
/// of `x_i - v` overflows (a distance above ~1.3e154, float64 input) the kernel takes
/// `(x_i - v) · tau / ||x_i - v||` without the `min(1, ·)`, and `tau / m` (`wide_dist`'s
/// mantissa, in `[0.5, sqrt(d)]`) overflows for `tau` near `f64::MAX`. One row `[1e200]`, one
/// iteration from zero: with `tau = 1e300` the output is `1e300` and the reported factor
/// `1e100` (expected `1e200` and `1.0`: the row is within `tau`); with `tau = f64::MAX` both
/// are `inf`.
#[test]
fn centered_clipping_never_scales_a_row_up() {
    let data = [1e200f64];
    let x = Rows::from_matrix("fuzz", &data, 1, 1).unwrap();
    for tau in [1e300, f64::MAX] {
        let mut out = [0.0f64];
        let info = centered_clipping(&x, None, tau, 1, NonFinite::Robust, &mut out).unwrap();
        assert_eq!((out[0], info.scales[0]), (1e200, 1.0), "tau={tau:e}");
    }
}

/// docs/conventions.md, "Arithmetic": a float64 average whose sum exceeds the float64 range is
/// still the average. The mean (and trimmed mean: every `mean_within` caller) of
/// `[MAX, MAX / 2, 0]` is `MAX / 2` (numpy gives `inf`; before the accumulator went on scaled,
/// the overflowing sum was clamped to `MAX`), and the weighted mean of `[1e300, 0]` with weights
/// `[1e100, 1e100]` (inside the range the Python layer passes bit for bit; the products
/// overflow) is `5e299`.
#[test]
fn mean_of_values_whose_sum_overflows() {
    let data = [f64::MAX, f64::MAX / 2.0, 0.0];
    let x = Rows::from_matrix("fuzz", &data, 3, 1).unwrap();
    let mut a = [0.0f64];
    mean(&x, None, NonFinite::Robust, &mut a).unwrap();
    assert_eq!(a[0], f64::MAX / 2.0, "mean");
    trimmed_mean(&x, 0, NonFinite::Robust, ColumnsOut::new(&mut a)).unwrap();
    assert_eq!(a[0], f64::MAX / 2.0, "trimmed mean");
    let data = [1e300f64, 0.0];
    let x = Rows::from_matrix("fuzz", &data, 2, 1).unwrap();
    mean(&x, Some(&[1e100, 1e100]), NonFinite::Robust, &mut a).unwrap();
    assert_eq!(a[0], 5e299, "weighted mean");
    // The sum stays at MAX (9e291 is below half its ulp); only adding the compensation
    // (1.8e292) at the end overflows.
    let data = [f64::MAX, 9e291, 9e291];
    let x = Rows::from_matrix("fuzz", &data, 3, 1).unwrap();
    mean(&x, None, NonFinite::Robust, &mut a).unwrap();
    let want = ref_average_f64(&data, 9e291, f64::MAX);
    assert!(
        want < f64::MAX && (want / (f64::MAX / 3.0) - 1.0).abs() < 1e-15,
        "{want:e}"
    );
    assert_eq!(a[0], want, "mean whose compensation overflows");
    let neg = [-f64::MAX, -9e291, -9e291];
    let x = Rows::from_matrix("fuzz", &neg, 3, 1).unwrap();
    trimmed_mean(&x, 0, NonFinite::Robust, ColumnsOut::new(&mut a)).unwrap();
    assert_eq!(a[0], -want, "trimmed mean whose compensation overflows");
}

/// The overflowing columns of a wide matrix, on every path that computes them again: the
/// mean's tiles (more rows than one group), the trimmed mean's SIMD lanes and its per-column
/// kernel (`f = 0` keeps every rank): each column is the reference mean of its values.
#[test]
fn overflowing_columns_on_every_path() {
    let (n, d) = (21, 67);
    let pool = [
        f64::MAX,
        f64::MAX / 2.0,
        -f64::MAX / 3.0,
        1.0,
        0.0,
        -0.0,
        1e300,
        -7e307,
    ];
    let mut rng = crate::testing::Rng(0x2545_F491_4F6C_DD1D);
    let pick = |u: f64| ((u + 1.0) / 2.0 * pool.len() as f64) as usize % pool.len();
    let data: Vec<f64> = (0..n * d).map(|_| pool[pick(rng.next_f64())]).collect();
    let x = Rows::from_matrix("fuzz", &data, n, d).unwrap();
    let col = |j: usize| -> Vec<f64> { (0..n).map(|i| data[i * d + j]).collect() };
    let overflowed = (0..d).filter(|&j| col(j).iter().sum::<f64>().is_infinite());
    assert!(
        overflowed.count() > d / 4,
        "the matrix must overflow column sums"
    );
    let mut a = vec![0.0f64; d];
    mean(&x, None, NonFinite::Robust, &mut a).unwrap();
    for (j, &got) in a.iter().enumerate() {
        // Summed in row order, kept within the smallest and largest value.
        let c = col(j);
        let lo = c.iter().copied().fold(f64::MAX, f64::min);
        let hi = c.iter().copied().fold(-f64::MAX, f64::max);
        let want = ref_average_f64(&c, lo, hi);
        assert_eq!(got.to_bits(), want.to_bits(), "mean col {j}");
    }
    for f in [0, 3] {
        trimmed_mean(&x, f, NonFinite::Robust, ColumnsOut::new(&mut a)).unwrap();
        for (j, &got) in a.iter().enumerate() {
            let mut c = col(j);
            c.sort_by(|a, b| rank_cmp(*a, *b));
            let want = ref_mean(&c[f..n - f]);
            assert_eq!(got.to_bits(), want.to_bits(), "trimmed mean f={f} col {j}");
        }
    }
}

/// Centered clipping's moves are each at most `tau`; with `tau` near `f64::MAX` their sum
/// overflowed and the centre became `inf` (found in review): rows `[1e308], [1e308], [0]`,
/// `tau = 1e308`, one iteration from zero move the centre to `2e308 / 3`.
#[test]
fn centered_clipping_moves_whose_sum_overflows() {
    let data = [1e308f64, 1e308, 0.0];
    let x = Rows::from_matrix("fuzz", &data, 3, 1).unwrap();
    let mut out = [0.0f64];
    centered_clipping(&x, None, 1e308, 1, NonFinite::Robust, &mut out).unwrap();
    assert_eq!(out[0], 1e308 / 3.0 + 1e308 / 3.0);
}

/// The Weiszfeld weight `alpha_i / max(nu, ||z - x_i||)` overflows to `inf` where an input
/// lies within `nu` of `z` and `alpha_i / nu` exceeds `f64::MAX` (`nu = 1e-310` with unit
/// weights; `nu = 1e-300` with weights `1e10`, inside the range the Python layer passes bit for
/// bit): the inner mean then refuses its weights and the geometric median fails with
/// `InvalidParameter { rule: "mean", message: "weights must be finite and >= 0, got
/// weights[0]=inf" }`, a message about weights the caller never passed. Expected: the
/// geometric median of three identical rows is that row.
#[test]
fn geometric_median_with_a_tiny_nu() {
    let data = [1.0f64, 2.0, 1.0, 2.0, 1.0, 2.0];
    let x = Rows::from_matrix("fuzz", &data, 3, 2).unwrap();
    for (nu, alpha) in [(1e-310, None), (1e-300, Some(&[1e10; 3][..]))] {
        let mut out = [0.0f64; 2];
        let got = geometric_median(
            &x,
            alpha,
            nu,
            3,
            0.0,
            Init::Mean,
            NonFinite::Robust,
            &mut out,
        );
        assert!(got.is_ok(), "nu={nu:e}: {got:?}");
        assert_eq!(out, [1.0, 2.0]);
    }
}
