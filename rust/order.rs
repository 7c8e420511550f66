//! Floats, their order, and how they are summed. The only place comparisons on floats live.
//!
//! **Order.** Values are ranked by the pair `(value, row index)`: on equal values the lower
//! row ranks first (docs/conventions.md). The value order is IEEE-754 `totalOrder` with every NaN
//! made the canonical positive quiet NaN first, so NaN ranks above `+inf` (the "robust"
//! policy: a NaN is just the largest outlier). One deliberate refinement of "equal values":
//! `-0.0` ranks below `+0.0`. They compare equal under IEEE `==`, but ranking them apart makes
//! every order statistic bitwise permutation-invariant (with index tie-breaking a median could
//! otherwise return `-0.0` or `+0.0` depending on row order).
//!
//! The pair is packed into one unsigned integer key (`value bits << 32 | row`), so selection and
//! sorting are integer comparisons, and the selected key says which row supplied the value
//! (the torch backward routes the gradient there). Rows are therefore limited to `u32::MAX`.
//!
//! **Sums** (docs/conventions.md): float32 inputs are accumulated in float64; float64 inputs in float64
//! with Neumaier compensation. [`Float::Acc`] is the one accumulator every rule uses.

use std::fmt::Debug;
use std::ops::{Add, Mul, Sub};

/// A float64 accumulator: what every sum over inputs goes through.
pub trait Accumulator: Copy + Send + Sync + Default {
    /// The empty sum: `-0.0`, the identity of IEEE addition (`-0.0 + x` is `x` for every `x`,
    /// `-0.0` included), so the sum of `-0.0`s is `-0.0`, as the inputs have it.
    fn zero() -> Self;
    fn add(&mut self, v: f64);
    /// The sum; infinite where finite terms overflow it (see [`average`] for the means).
    fn value(self) -> f64;
}

/// Plain float64 summation, the accumulator of float32 inputs: exact enough for them (53 vs 24
/// mantissa bits), and no sum of at most `2^32` float32 values (times weights below 1)
/// overflows float64.
impl Accumulator for f64 {
    #[inline(always)]
    fn zero() -> Self {
        -0.0
    }
    #[inline(always)]
    fn add(&mut self, v: f64) {
        *self += v;
    }
    #[inline(always)]
    fn value(self) -> f64 {
        self
    }
}

/// Neumaier-compensated float64 summation, used for float64 inputs.
#[derive(Clone, Copy, Default, Debug)]
pub struct CompensatedSum {
    sum: f64,
    comp: f64,
}

impl CompensatedSum {
    /// Neumaier's step with the term `v`.
    #[inline(always)]
    fn step(&mut self, v: f64) {
        let t = self.sum + v;
        if self.sum.abs() >= v.abs() {
            self.comp += (self.sum - t) + v;
        } else {
            self.comp += (v - t) + self.sum;
        }
        self.sum = t;
    }
}

impl Accumulator for CompensatedSum {
    #[inline(always)]
    fn zero() -> Self {
        CompensatedSum {
            sum: -0.0,
            comp: 0.0,
        }
    }
    #[inline(always)]
    fn add(&mut self, v: f64) {
        self.step(v);
    }
    #[inline(always)]
    fn value(self) -> f64 {
        // With infinities the compensation term is NaN; the plain sum is the IEEE answer then.
        // A zero compensation leaves the sum as it is (`-0.0 + 0.0` would lose the sign).
        if self.sum.is_finite() && self.comp != 0.0 {
            self.sum + self.comp
        } else {
            self.sum
        }
    }
}

/// The factor terms are scaled by once a float64 sum of finite terms leaves the float64 range
/// ([`wide_mean`]): `2^-560`, so that `2^32` terms of up to `2^500 · f64::MAX` fit.
pub(crate) const SHRINK: f64 = f64::from_bits((1023 - 560) << 52);
/// `1 / SHRINK`.
const GROW: f64 = f64::from_bits((1023 + 560) << 52);

/// `Σ w·x / count` over `terms` `(w, x)` in order, Neumaier-compensated like
/// [`CompensatedSum`] (the same bits wherever that sum stays finite), and also where finite
/// terms overflow it: from the first term that would, the sum goes on with every term scaled by
/// [`SHRINK`] and the quotient is scaled back (the mean of `[MAX, MAX / 2, 0]` is `MAX / 2`);
/// likewise where only adding the compensation at the end would overflow.
/// Terms below `2^-462` lose bits to subnormals once scaled, far less than the rounding of a
/// sum that has exceeded `f64::MAX`. Infinite and NaN terms are added as IEEE addition has it.
/// The slow path of [`average`]: the kernels sum with [`CompensatedSum`] and call this only
/// for the rare column whose sum overflowed.
#[cold]
#[inline(never)]
pub(crate) fn wide_mean(terms: impl Iterator<Item = (f64, f64)>, count: f64) -> f64 {
    let (mut acc, mut scale) = (CompensatedSum::zero(), 1.0f64);
    for (w, x) in terms {
        // `x` is scaled before the product, which may overflow where the scaled one does not.
        let v = w * (x * scale);
        let finite = acc.sum.is_finite() && w.is_finite() && x.is_finite();
        if finite && scale == 1.0 && !(acc.sum + v).is_finite() {
            scale = SHRINK;
            acc.sum *= SHRINK;
            acc.comp *= SHRINK;
            acc.step(w * (x * scale));
        } else {
            acc.step(v);
        }
    }
    if scale == 1.0 && acc.sum.is_finite() && acc.value().is_infinite() {
        // The sum fits but adding its compensation overflows (`[MAX, 9e291, 9e291]`).
        (acc.sum, acc.comp, scale) = (acc.sum * SHRINK, acc.comp * SHRINK, SHRINK);
    }
    let q = acc.value() / count;
    if scale == 1.0 {
        q
    } else {
        q * GROW
    }
}

/// A mean `quotient` (an accumulator's value divided by the count or the weights' total) of
/// values of which `lo` is the smallest and `hi` the largest, rounded to `T` and kept inside
/// `[lo, hi]`: a float64 quotient can round one ulp outside the values (the mean of identical
/// values would come back one ulp off). NaN stays NaN. A float32 mean needs no clamp: its
/// float64 quotient is within float64 rounding of a value inside the float32 range `[lo, hi]`,
/// and rounding it to float32 cannot cross `lo` or `hi`, so the bounds are not even read
/// (callers' conversions of them compile away). Where the sum overflowed, see [`average`].
#[inline(always)]
pub(crate) fn mean_within<T: Float>(quotient: f64, lo: T, hi: T) -> T {
    let y = T::from_f64(quotient);
    if T::is_f32().is_some() {
        return y;
    }
    // Two selects, not an if-else chain, so a loop of them vectorises (lo <= hi here).
    let y = if y < lo { lo } else { y };
    if y > hi {
        hi
    } else {
        y
    }
}

/// Whether a float64 mean `quotient` of finite values in `[lo, hi]` is infinite: its sum
/// overflowed, and the mean must be computed again with [`wide_mean`]. Never for float32 (a
/// float64 sum of float32 values cannot overflow), where it compiles away.
#[inline(always)]
pub(crate) fn overflowed<T: Float>(quotient: f64, lo: T, hi: T) -> bool {
    T::is_f32().is_none() && quotient.is_infinite() && lo.is_finite() && hi.is_finite()
}

/// The mean of values in `[lo, hi]` ([`mean_within`]) from the `quotient` of their
/// [`CompensatedSum`], or, where that sum overflowed ([`overflowed`]), from [`wide_mean`]
/// over `terms` (the same `(w, x)` in the same order) divided by `count`.
#[inline(always)]
pub(crate) fn average<T: Float, I: Iterator<Item = (f64, f64)>>(
    quotient: f64,
    count: f64,
    lo: T,
    hi: T,
    terms: impl FnOnce() -> I,
) -> T {
    if overflowed(quotient, lo, hi) {
        return mean_within(wide_mean(terms(), count), lo, hi);
    }
    mean_within(quotient, lo, hi)
}

/// The two element types the kernels are generic over (float32 and float64).
pub trait Float:
    Copy
    + Send
    + Sync
    + Debug
    + Default
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + crate::alloc::Zeroable
    + 'static
{
    /// `(value, row)` packed into one totally ordered integer.
    type Key: Ord + Copy + Send + Sync + Debug + crate::columns::bracket::Sentinel;
    /// The accumulator for sums of this type (see the module docs).
    type Acc: Accumulator;
    const ZERO: Self;
    const NAN: Self;
    const INFINITY: Self;
    fn to_f64(self) -> f64;
    /// Round a float64 to this type (round-to-nearest-even).
    fn from_f64(v: f64) -> Self;
    fn is_nan(self) -> bool;
    fn is_finite(self) -> bool;
    /// The ranking key of `(self, row)`.
    fn key(self, row: u32) -> Self::Key;
    /// The value a key was made from (NaN comes back as the canonical NaN).
    fn key_value(k: Self::Key) -> Self;
    /// The row a key was made from.
    fn key_row(k: Self::Key) -> u32;
    /// The value alone as a totally ordered integer (same order as [`Float::key`] without the
    /// row): half the width, for kernels that need the value but not which row supplied it.
    type VKey: Ord
        + Copy
        + Send
        + Sync
        + Debug
        + crate::network::LaneKey
        + crate::columns::bracket::Sentinel;
    fn vkey(self) -> Self::VKey;
    fn vkey_value(k: Self::VKey) -> Self;
    /// The average of two values without overflow, correctly rounded for float32
    /// (`f32::midpoint` computes in float64) and float64 (`f64::midpoint`).
    fn midpoint(a: Self, b: Self) -> Self;
    /// Proof that `Self` is float32, for the kernels written for float32 only: `Some` for
    /// `f32`, whose witness converts by identity, `None` for `f64`.
    fn is_f32() -> Option<IsF32<Self>>;
    /// Proof that `Self` is float64, for the kernels written for float64 only: `Some` for
    /// `f64`, whose witness converts by identity, `None` for `f32`.
    fn is_f64() -> Option<IsF64<Self>>;
}

/// Rows of `T` with a weight each (the mean's groups).
pub type WeightedRows<'a, 'b, T> = &'a [(&'b [T], f64)];

/// A witness that the float type `T` is `f32`: views of `T` data as float32 data. Only
/// [`Float::is_f32`] for `f32` makes one, from identity functions, so no cast is involved.
pub struct IsF32<T: Float> {
    pub rows: for<'a, 'b> fn(&'a [&'b [T]]) -> &'a [&'b [f32]],
    pub weighted_rows: for<'a, 'b> fn(WeightedRows<'a, 'b, T>) -> WeightedRows<'a, 'b, f32>,
    pub slice_mut: for<'a> fn(&'a mut [T]) -> &'a mut [f32],
    pub lanes_mut: for<'a> fn(&'a mut [T; 16]) -> &'a mut [f32; 16],
    pub keys: for<'a> fn(&'a [T::VKey]) -> &'a [u32],
    pub acc_mut: for<'a> fn(&'a mut [T::Acc]) -> &'a mut [f64],
}

/// A witness that the float type `T` is `f64`: views of `T` data as float64 data. Only
/// [`Float::is_f64`] for `f64` makes one, from identity functions, so no cast is involved.
pub struct IsF64<T: Float> {
    pub rows: for<'a, 'b> fn(&'a [&'b [T]]) -> &'a [&'b [f64]],
}

fn same<X: ?Sized>(x: &X) -> &X {
    x
}

fn same_mut<X: ?Sized>(x: &mut X) -> &mut X {
    x
}

fn same_rows<'a, 'b>(x: &'a [&'b [f32]]) -> &'a [&'b [f32]] {
    x
}

fn same_rows_f64<'a, 'b>(x: &'a [&'b [f64]]) -> &'a [&'b [f64]] {
    x
}

fn same_weighted_rows<'a, 'b>(x: &'a [(&'b [f32], f64)]) -> &'a [(&'b [f32], f64)] {
    x
}

const F32_SIGN: u32 = 1 << 31;
const F64_SIGN: u64 = 1 << 63;

/// The totally ordered integer of a float32: NaN made canonical, then negative values bit-
/// inverted and positive ones given the sign bit. Integer operations only (no float compare,
/// no branch), so loops converting rows of values to keys vectorise.
#[inline(always)]
fn ord32(v: f32) -> u32 {
    let bits = v.to_bits();
    let bits = if bits & !F32_SIGN > 0x7f80_0000 {
        f32::NAN.to_bits()
    } else {
        bits
    };
    let neg = ((bits as i32) >> 31) as u32; // all ones when the sign bit is set
    bits ^ (neg | F32_SIGN)
}

/// [`ord32`] for float64.
#[inline(always)]
fn ord64(v: f64) -> u64 {
    let bits = v.to_bits();
    let bits = if bits & !F64_SIGN > 0x7ff0_0000_0000_0000 {
        f64::NAN.to_bits()
    } else {
        bits
    };
    let neg = ((bits as i64) >> 63) as u64;
    bits ^ (neg | F64_SIGN)
}

impl Float for f32 {
    type Key = u64;
    type Acc = f64;
    const ZERO: Self = 0.0;
    const NAN: Self = f32::NAN;
    const INFINITY: Self = f32::INFINITY;
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    #[inline(always)]
    fn is_nan(self) -> bool {
        f32::is_nan(self)
    }
    #[inline(always)]
    fn is_finite(self) -> bool {
        f32::is_finite(self)
    }
    #[inline(always)]
    fn key(self, row: u32) -> u64 {
        ((ord32(self) as u64) << 32) | row as u64
    }
    #[inline(always)]
    fn key_value(k: u64) -> f32 {
        let ord = (k >> 32) as u32;
        let bits = if ord & F32_SIGN != 0 {
            ord & !F32_SIGN
        } else {
            !ord
        };
        f32::from_bits(bits)
    }
    #[inline(always)]
    fn key_row(k: u64) -> u32 {
        k as u32
    }
    type VKey = u32;
    #[inline(always)]
    fn vkey(self) -> u32 {
        ord32(self)
    }
    #[inline(always)]
    fn vkey_value(k: u32) -> f32 {
        f32::key_value((k as u64) << 32)
    }
    #[inline(always)]
    fn midpoint(a: Self, b: Self) -> Self {
        a.midpoint(b)
    }
    #[inline(always)]
    fn is_f32() -> Option<IsF32<f32>> {
        Some(IsF32 {
            rows: same_rows,
            weighted_rows: same_weighted_rows,
            slice_mut: same_mut,
            lanes_mut: same_mut,
            keys: same,
            acc_mut: same_mut,
        })
    }
    #[inline(always)]
    fn is_f64() -> Option<IsF64<f32>> {
        None
    }
}

impl Float for f64 {
    type Key = u128;
    type Acc = CompensatedSum;
    const ZERO: Self = 0.0;
    const NAN: Self = f64::NAN;
    const INFINITY: Self = f64::INFINITY;
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v
    }
    #[inline(always)]
    fn is_nan(self) -> bool {
        f64::is_nan(self)
    }
    #[inline(always)]
    fn is_finite(self) -> bool {
        f64::is_finite(self)
    }
    #[inline(always)]
    fn key(self, row: u32) -> u128 {
        ((ord64(self) as u128) << 32) | row as u128
    }
    #[inline(always)]
    fn key_value(k: u128) -> f64 {
        let ord = (k >> 32) as u64;
        let bits = if ord & F64_SIGN != 0 {
            ord & !F64_SIGN
        } else {
            !ord
        };
        f64::from_bits(bits)
    }
    #[inline(always)]
    fn key_row(k: u128) -> u32 {
        k as u32
    }
    type VKey = u64;
    #[inline(always)]
    fn vkey(self) -> u64 {
        ord64(self)
    }
    #[inline(always)]
    fn vkey_value(k: u64) -> f64 {
        f64::key_value((k as u128) << 32)
    }
    #[inline(always)]
    fn midpoint(a: Self, b: Self) -> Self {
        a.midpoint(b)
    }
    #[inline(always)]
    fn is_f32() -> Option<IsF32<f64>> {
        None
    }
    #[inline(always)]
    fn is_f64() -> Option<IsF64<f64>> {
        Some(IsF64 {
            rows: same_rows_f64,
        })
    }
}

/// Put the element of rank `k` at `v[k]`, smaller-or-equal ones before it, larger-or-equal ones
/// after it, and return it (the contract of `slice::select_nth_unstable`).
///
/// Quickselect with a branch-free Lomuto partition: keys in a column are in random order, so
/// the branch of a classic partition mispredicts about half the time; here the swap always
/// happens and only the store index moves by the comparison result. Median-of-3 pivots; a pass
/// that gathers keys equal to the pivot guarantees progress on ties; small ranges are finished
/// by `sort_unstable` (branch-free small-sort networks for integers); after too many rounds
/// (adversarial input) it hands over to std's introselect, which is O(n) worst case.
pub fn select<K: Ord + Copy>(v: &mut [K], k: usize) -> K {
    assert!(k < v.len());
    let (mut lo, mut hi) = (0, v.len());
    let mut rounds = 2 * (usize::BITS - v.len().leading_zeros()) + 4;
    loop {
        let len = hi - lo;
        if len <= 16 {
            v[lo..hi].sort_unstable();
            return v[k];
        }
        if rounds == 0 {
            let (_, &mut x, _) = v[lo..hi].select_nth_unstable(k - lo);
            return x;
        }
        rounds -= 1;
        let (a, b, c) = (v[lo], v[lo + len / 2], v[hi - 1]);
        let p = a.max(b).min(a.min(b).max(c));
        let mut store = lo;
        for i in lo..hi {
            let x = v[i];
            v.swap(i, store);
            store += (x < p) as usize;
        }
        if k < store {
            hi = store;
            continue;
        }
        if store > lo {
            lo = store;
            continue;
        }
        // Every key of the range is >= p: gather those equal to p (p itself is one of them).
        for i in lo..hi {
            let x = v[i];
            v.swap(i, store);
            store += (x <= p) as usize;
        }
        if k < store {
            return p;
        }
        lo = store;
    }
}

/// Rank float64 scores (Krum) by `(score, index)` with NaN above `+inf`; `nan_first` puts
/// NaN scores first instead (numpy's `argmin` semantics, used by `nonfinite="propagate"`).
pub fn rank_scores(scores: &[f64], nan_first: bool) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by_key(|&i| {
        let nan = scores[i].is_nan();
        let first = if nan_first { !nan } else { nan };
        (first, scores[i].key(0), i)
    });
    idx
}

#[cfg(test)]
mod tests {

    /// The branchy definition the integer-only `ord32`/`ord64` replaced.
    fn ord32_ref(v: f32) -> u32 {
        let bits = if v.is_nan() {
            f32::NAN.to_bits()
        } else {
            v.to_bits()
        };
        if bits & F32_SIGN != 0 {
            !bits
        } else {
            bits | F32_SIGN
        }
    }

    fn ord64_ref(v: f64) -> u64 {
        let bits = if v.is_nan() {
            f64::NAN.to_bits()
        } else {
            v.to_bits()
        };
        if bits & F64_SIGN != 0 {
            !bits
        } else {
            bits | F64_SIGN
        }
    }

    #[test]
    fn integer_only_keys_equal_the_branchy_definition() {
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let specials32 = [
            0x0u32,
            0x8000_0000,
            0x7f80_0000,
            0xff80_0000,
            0x7f80_0001,
            0xffc0_0000,
            0x7fff_ffff,
            0x1,
            0x8000_0001,
        ];
        for b in specials32
            .into_iter()
            .chain((0..200_000).map(|_| next() as u32))
        {
            let v = f32::from_bits(b);
            assert_eq!(ord32(v), ord32_ref(v), "{b:#x}");
        }
        let specials64 = [
            0x0u64,
            F64_SIGN,
            0x7ff0_0000_0000_0000,
            0xfff0_0000_0000_0000,
            0x7ff0_0000_0000_0001,
            0xfff8_0000_0000_0000,
            0x1,
        ];
        for b in specials64.into_iter().chain((0..200_000).map(|_| next())) {
            let v = f64::from_bits(b);
            assert_eq!(ord64(v), ord64_ref(v), "{b:#x}");
        }
    }

    use super::*;

    #[test]
    fn key_order_is_total_and_round_trips() {
        let vals = [
            f32::NEG_INFINITY,
            -3.5,
            -0.0,
            0.0,
            1e-45,
            2.0,
            f32::MAX,
            f32::INFINITY,
            f32::NAN,
        ];
        for w in vals.windows(2) {
            assert!(w[0].key(7) < w[1].key(0), "{:?} !< {:?}", w[0], w[1]);
        }
        for &v in &vals {
            let k = v.key(5);
            assert_eq!(f32::key_row(k), 5);
            assert_eq!(
                f32::key_value(k).to_bits(),
                if v.is_nan() {
                    f32::NAN.to_bits()
                } else {
                    v.to_bits()
                }
            );
        }
        // Negative NaN is still the largest value.
        assert!((-f32::NAN).key(0) > f32::INFINITY.key(1));
        assert!((-f64::NAN).key(0) > f64::INFINITY.key(1));
        assert!((-0.0f64).key(9) < 0.0f64.key(0));
        assert_eq!(f64::key_value(1.25f64.key(3)), 1.25);
        for &v in &vals {
            assert_eq!(
                f32::vkey_value(v.vkey()).to_bits(),
                f32::key_value(v.key(0)).to_bits()
            );
        }
        assert!((-0.0f32).vkey() < 0.0f32.vkey() && 1.0f64.vkey() < f64::NAN.vkey());
        // Equal values: lower row first.
        assert!(2.0f64.key(1) < 2.0f64.key(2));
    }

    #[test]
    fn midpoint_does_not_overflow() {
        assert_eq!(f32::midpoint(3e38, 3e38), 3e38);
        assert_eq!(f64::midpoint(1e308, 1.5e308), 1.25e308);
        assert!(f64::midpoint(f64::NEG_INFINITY, f64::INFINITY).is_nan());
    }

    #[test]
    fn compensated_sum_recovers_cancellation() {
        let mut a = CompensatedSum::default();
        for v in [1e16, 1.0, -1e16] {
            a.add(v);
        }
        assert_eq!(a.value(), 1.0);
        let mut b = CompensatedSum::default();
        b.add(f64::INFINITY);
        b.add(1.0);
        assert_eq!(b.value(), f64::INFINITY);
    }

    #[test]
    fn select_matches_sorting() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for len in [1usize, 2, 3, 16, 17, 18, 31, 50, 64, 200, 1000] {
            for modulo in [2u64, 5, 1 << 40] {
                let v: Vec<u64> = (0..len).map(|_| next() % modulo).collect();
                let mut sorted = v.clone();
                sorted.sort();
                for k in [0, len / 2, len - 1, len / 3] {
                    let mut w = v.clone();
                    assert_eq!(select(&mut w, k), sorted[k]);
                    assert!(
                        w[..k].iter().all(|&a| a <= w[k]) && w[k + 1..].iter().all(|&a| a >= w[k])
                    );
                }
            }
            // Sorted, reversed and constant inputs.
            for base in [
                (0..len as u64).collect::<Vec<_>>(),
                (0..len as u64).rev().collect(),
                vec![7; len],
            ] {
                let mut w = base.clone();
                let mut s = base.clone();
                s.sort();
                assert_eq!(select(&mut w, len / 2), s[len / 2]);
            }
        }
    }

    #[test]
    fn rank_scores_orders_nan() {
        let s = [2.0, f64::NAN, 1.0, 2.0, f64::INFINITY];
        assert_eq!(rank_scores(&s, false), vec![2, 0, 3, 4, 1]);
        assert_eq!(rank_scores(&s, true), vec![1, 2, 0, 3, 4]);
    }
}
