//! The validated input every rule reads: `n` rows of `d` values each.
//!
//! Rows are borrowed slices, not one `(n, d)` block: a numpy `(n, d)` array and a Python list
//! of `n` separate arrays are read in place alike (no stacking copy, docs/conventions.md).

use rayon::prelude::*;

use crate::error::AggError;
use crate::order::Float;

/// What a rule does with NaN and ±inf (docs/conventions.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonFinite {
    /// NaN ranks above +inf in order statistics (so up to `f` bad values per side are trimmed),
    /// a non-finite distance is +inf, mean-type rules drop non-finite inputs.
    Robust,
    /// Refuse inputs holding any NaN or ±inf with [`AggError::NonFinite`] naming them.
    Raise,
    /// numpy semantics: a NaN reaches the output of every coordinate it takes part in.
    Propagate,
}

impl NonFinite {
    pub const NAMES: [&'static str; 3] = ["robust", "raise", "propagate"];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "robust" => Some(NonFinite::Robust),
            "raise" => Some(NonFinite::Raise),
            "propagate" => Some(NonFinite::Propagate),
            _ => None,
        }
    }
}

/// Row indices are `u32` in the kernels' ranking keys: more inputs are refused.
pub fn check_n(rule: &'static str, n: usize) -> Result<(), AggError> {
    if n > u32::MAX as usize {
        return Err(AggError::InvalidParameter {
            rule,
            message: format!("at most {} inputs are supported, got n={n}", u32::MAX),
        });
    }
    Ok(())
}

/// The length `d` of `rows`: at least one row, all of one length, at most `u32::MAX` of them.
/// Every kind of rows the core reads is checked here.
pub fn check_rows<E>(rule: &'static str, rows: &[&[E]]) -> Result<usize, AggError> {
    let d = match rows.first() {
        Some(r) => r.len(),
        None => return Err(AggError::Empty { rule }),
    };
    if let Some((row, r)) = rows.iter().enumerate().find(|(_, r)| r.len() != d) {
        return Err(AggError::Ragged {
            row,
            expected: d,
            got: r.len(),
        });
    }
    check_n(rule, rows.len())?;
    Ok(d)
}

/// `n >= 1` rows of equal length `d` (`d` may be 0).
#[derive(Debug, Clone)]
pub struct Rows<'a, T> {
    rows: Vec<&'a [T]>,
    d: usize,
}

impl<'a, T: Float> Rows<'a, T> {
    /// Check that there is at least one row and that all rows have the same length.
    pub fn new(rule: &'static str, rows: Vec<&'a [T]>) -> Result<Self, AggError> {
        let d = check_rows(rule, &rows)?;
        Ok(Rows { rows, d })
    }

    /// View a row-major `(n, d)` block.
    #[cfg(test)]
    pub fn from_matrix(
        rule: &'static str,
        data: &'a [T],
        n: usize,
        d: usize,
    ) -> Result<Self, AggError> {
        assert_eq!(data.len(), n * d, "data length must be n * d");
        let rows = (0..n).map(|i| &data[i * d..(i + 1) * d]).collect();
        Rows::new(rule, rows)
    }

    #[inline]
    pub fn n(&self) -> usize {
        self.rows.len()
    }
    #[inline]
    pub fn d(&self) -> usize {
        self.d
    }
    #[inline]
    pub fn row(&self, i: usize) -> &'a [T] {
        self.rows[i]
    }
    #[inline]
    pub fn rows(&self) -> &[&'a [T]] {
        &self.rows
    }

    /// The rows that hold at least one NaN or ±inf, in increasing order.
    pub fn nonfinite_rows(&self) -> Vec<usize> {
        crate::pool::install(|| {
            self.rows
                .par_iter()
                .enumerate()
                .filter(|(_, r)| !all_finite(r))
                .map(|(i, _)| i)
                .collect()
        })
    }

    /// The rows a mean-type rule works on: under `Robust` the finite ones (inputs holding NaN
    /// or ±inf are dropped), otherwise all; an error if nothing is left.
    pub fn kept_rows(&self, rule: &'static str, policy: NonFinite) -> Result<Vec<usize>, AggError> {
        let keep: Vec<usize> = if policy == NonFinite::Robust {
            (0..self.n()).filter(|&i| all_finite(self.row(i))).collect()
        } else {
            (0..self.n()).collect()
        };
        if keep.is_empty() {
            return Err(AggError::NonFinite {
                rule,
                rows: (0..self.n()).collect(),
                detail: "every input holds NaN or infinite values, nothing is left",
            });
        }
        Ok(keep)
    }

    /// With `NonFinite::Raise`, refuse non-finite inputs; otherwise do nothing.
    pub fn check_policy(&self, rule: &'static str, policy: NonFinite) -> Result<(), AggError> {
        check_policy(rule, policy, || self.nonfinite_rows())
    }
}

/// With `NonFinite::Raise`, refuse the inputs `nonfinite_rows()` names (if any); otherwise do
/// nothing. Shared by every kind of rows.
pub fn check_policy(
    rule: &'static str,
    policy: NonFinite,
    nonfinite_rows: impl FnOnce() -> Vec<usize>,
) -> Result<(), AggError> {
    if policy == NonFinite::Raise {
        let bad = nonfinite_rows();
        if !bad.is_empty() {
            return Err(AggError::NonFinite {
                rule,
                rows: bad,
                detail: "nonfinite='raise' refuses NaN and infinite values",
            });
        }
    }
    Ok(())
}

/// Whether every value of `r` is finite. Branch-free over blocks so it runs at memory speed.
pub fn all_finite<T: Float>(r: &[T]) -> bool {
    r.chunks(1024)
        .all(|c| c.iter().fold(true, |ok, v| ok & v.is_finite()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_shape() {
        let a = [1.0f32, 2.0];
        let b = [1.0f32];
        assert_eq!(
            Rows::new("median", vec![&a[..], &b[..]]).unwrap_err(),
            AggError::Ragged {
                row: 1,
                expected: 2,
                got: 1
            }
        );
        assert_eq!(
            Rows::<f32>::new("median", vec![]).unwrap_err(),
            AggError::Empty { rule: "median" }
        );
        let data = [1.0f64, f64::NAN, 3.0, 4.0, 5.0, f64::INFINITY];
        let x = Rows::from_matrix("mean", &data, 3, 2).unwrap();
        assert_eq!(x.nonfinite_rows(), vec![0, 2]);
        assert!(x.check_policy("mean", NonFinite::Robust).is_ok());
        assert!(matches!(
            x.check_policy("mean", NonFinite::Raise),
            Err(AggError::NonFinite { .. })
        ));
    }
}
