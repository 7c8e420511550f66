//! Commutative monoids reduced over fixed binary trees: the built-in monoids (sum, product,
//! max, min, logsumexp, and the mean as a sum divided by the count) and the tree schedules that
//! the learnable monoid of `aggkit.torch.nn.LCMAggregation` runs on (docs/algorithms.md, monoid tree reductions).
//!
//! Floating-point operators are not associative, so a reduction is only reproducible if its
//! tree is fixed. Every reduction here uses one tree per set, decided by the set's size alone
//! (never by the thread count or by the other sets): the "carry" tree of PyG's
//! `LCMAggregation` — pair neighbours level by level, carry an odd last node up unchanged —
//! which is the perfect binary tree over `2^⌈log2 k⌉` leaves with the missing leaves pruned.
//! [`tree::reduce`] evaluates it with a stack of `⌈log2 k⌉ + 1` rows (a binary counter);
//! [`tree::Schedule`] lists the same tree level by level for batched evaluation in torch.

pub mod tree;

use std::ops::{Div, Neg};

use crate::order::Float;

/// The float operations the built-in monoids need, on top of [`Float`].
pub trait MFloat: Float + Div<Output = Self> + Neg<Output = Self> {
    const ONE: Self;
    const NEG_INFINITY: Self;
    fn exp(self) -> Self;
    fn ln_1p(self) -> Self;
    fn abs(self) -> Self;
    fn is_infinite(self) -> bool;
    fn from_usize(v: usize) -> Self;
    /// The bitwise AND / OR of two values' encodings (used on equal values, where only the
    /// zeros' signs can differ: AND keeps +0, OR keeps -0).
    fn and_bits(a: Self, b: Self) -> Self;
    fn or_bits(a: Self, b: Self) -> Self;
}

macro_rules! mfloat {
    ($t:ty) => {
        impl MFloat for $t {
            const ONE: Self = 1.0;
            const NEG_INFINITY: Self = <$t>::NEG_INFINITY;
            #[inline(always)]
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            #[inline(always)]
            fn ln_1p(self) -> Self {
                <$t>::ln_1p(self)
            }
            #[inline(always)]
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            #[inline(always)]
            fn is_infinite(self) -> bool {
                <$t>::is_infinite(self)
            }
            #[inline(always)]
            fn from_usize(v: usize) -> Self {
                v as $t
            }
            #[inline(always)]
            fn and_bits(a: Self, b: Self) -> Self {
                <$t>::from_bits(a.to_bits() & b.to_bits())
            }
            #[inline(always)]
            fn or_bits(a: Self, b: Self) -> Self {
                <$t>::from_bits(a.to_bits() | b.to_bits())
            }
        }
    };
}
mfloat!(f32);
mfloat!(f64);

/// A built-in monoid. Every `combine` is exactly commutative (`a ⊕ b` and `b ⊕ a` have the
/// same bits, signed zeros and NaN included), so only the tree's grouping matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Sum,
    /// The sum divided by the set's size (an empty set gives 0, as PyG's mean aggregation).
    Mean,
    Prod,
    Max,
    Min,
    /// `log(exp a + exp b)`, computed as `m + log1p(exp(-|a - b|))` with `m = max(a, b)`.
    LogSumExp,
}

impl Op {
    pub const NAMES: [&'static str; 6] = ["sum", "mean", "prod", "max", "min", "logsumexp"];

    pub fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "sum" => Op::Sum,
            "mean" => Op::Mean,
            "prod" => Op::Prod,
            "max" => Op::Max,
            "min" => Op::Min,
            "logsumexp" => Op::LogSumExp,
            _ => return None,
        })
    }

    /// The value of an empty set: the monoid's identity (0 for the mean, see [`Op::Mean`]).
    pub fn identity<T: MFloat>(self) -> T {
        match self {
            Op::Sum | Op::Mean => T::ZERO,
            Op::Prod => T::ONE,
            Op::Max | Op::LogSumExp => T::NEG_INFINITY,
            Op::Min => T::INFINITY,
        }
    }
}

/// `max(a, b)`: NaN if either is NaN, `+0` for `max(-0, +0)` (IEEE 754-2019 `maximum`).
/// Written as selects, not branches, so row loops vectorise.
#[inline(always)]
pub fn max<T: MFloat>(a: T, b: T) -> T {
    let (gt, lt, eq) = (a > b, b > a, a == b);
    let r = if gt { a } else { b };
    // Equal: only the zeros' signs can differ, and +0 has the sign bit clear.
    let r = if eq { T::and_bits(a, b) } else { r };
    if gt || lt || eq {
        r
    } else {
        a + b // one is NaN
    }
}

/// `min(a, b)`: NaN if either is NaN, `-0` for `min(-0, +0)`.
#[inline(always)]
pub fn min<T: MFloat>(a: T, b: T) -> T {
    let (gt, lt, eq) = (a > b, b > a, a == b);
    let r = if lt { a } else { b };
    let r = if eq { T::or_bits(a, b) } else { r };
    if gt || lt || eq {
        r
    } else {
        a + b
    }
}

/// `log(exp a + exp b)` without overflow; `±inf` when the larger operand is infinite.
#[inline(always)]
pub fn logaddexp<T: MFloat>(a: T, b: T) -> T {
    let m = max(a, b);
    if m.is_infinite() {
        m
    } else {
        m + (-(a - b).abs()).exp().ln_1p()
    }
}

/// `a[j] ⊕= b[j]` for every `j` (the left operand is the lower-index subtree).
#[inline(always)]
pub fn combine_rows<T: MFloat>(op: Op, a: &mut [T], b: &[T]) {
    debug_assert_eq!(a.len(), b.len());
    match op {
        Op::Sum | Op::Mean => a.iter_mut().zip(b).for_each(|(x, &y)| *x = *x + y),
        Op::Prod => a.iter_mut().zip(b).for_each(|(x, &y)| *x = *x * y),
        Op::Max => a.iter_mut().zip(b).for_each(|(x, &y)| *x = max(*x, y)),
        Op::Min => a.iter_mut().zip(b).for_each(|(x, &y)| *x = min(*x, y)),
        Op::LogSumExp => a
            .iter_mut()
            .zip(b)
            .for_each(|(x, &y)| *x = logaddexp(*x, y)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combines_are_exactly_commutative() {
        let vals = [
            0.0f64,
            -0.0,
            1.0,
            -1.0,
            2.5,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            1e300,
            -1e-300,
        ];
        for &a in &vals {
            for &b in &vals {
                for f in [max::<f64>, min::<f64>, logaddexp::<f64>] {
                    let (x, y) = (f(a, b), f(b, a));
                    assert!(
                        x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
                        "{a} {b}"
                    );
                }
            }
        }
        assert_eq!(max(-0.0f64, 0.0).to_bits(), 0.0f64.to_bits());
        assert_eq!(min(-0.0f64, 0.0).to_bits(), (-0.0f64).to_bits());
        assert_eq!(min(0.0f64, 0.0).to_bits(), 0.0f64.to_bits());
        assert!(max(f64::NAN, 1.0).is_nan() && min(1.0, f64::NAN).is_nan());
        assert_eq!(
            logaddexp(f64::NEG_INFINITY, f64::NEG_INFINITY),
            f64::NEG_INFINITY
        );
        assert_eq!(logaddexp(f64::INFINITY, f64::INFINITY), f64::INFINITY);
        assert!((logaddexp(0.0f64, 0.0) - 2f64.ln()).abs() < 1e-15);
        assert!((logaddexp(1000.0f64, 1000.0) - (1000.0 + 2f64.ln())).abs() < 1e-12);
    }
}
