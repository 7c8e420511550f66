//! Coordinate-wise median (Yin et al., ICML 2018).
//!
//! `y_j` is the middle of `x_1j .. x_nj` ranked by `(value, row)` (see `order.rs`). For even
//! `n`, [`Even`] picks the lower middle (rank `n/2`, 1-based; `torch.median`), the upper middle
//! (rank `n/2 + 1`), or their average (`Even::Mean`, numpy's convention and the default),
//! computed without overflow. NaN policy: `Robust` ranks NaN above `+inf`, so up to
//! `ceil(n/2) - 1` NaN or infinite values in a coordinate cannot reach the output; `Propagate`
//! returns NaN in every coordinate that holds a NaN (numpy, torch).
//!
//! The kernel reports, per coordinate, the rows of the lower and upper middle values (equal for
//! odd `n` or `lower`/`upper`): the torch backward routes the gradient there.
//!
//! `n <= 64`: compiled selection networks on SIMD lanes (`columns.rs`); larger `n`: the
//! interpreted network (`network.rs`), or, for float32 without rows from `bracket::min_n`
//! rows, sample brackets (`columns/bracket.rs`); introselect per coordinate beyond
//! `network::MAX_N` where brackets do not apply.

use crate::columns::compiled::{self as columns, Select};
use crate::columns::{
    ranked_columns, ranked_columns_with, ColumnsOut, Keying, Ranked, ValuesOnly, WithRows,
};
use crate::error::AggError;
use crate::half::HalfRows;
use crate::input::{NonFinite, Rows};
use crate::network::LANES;
use crate::order::Float;

pub const NAME: &str = "median";

/// Which value an even-sized median returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Even {
    Mean,
    Lower,
    Upper,
}

impl Even {
    pub const NAMES: [&'static str; 3] = ["mean", "lower", "upper"];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "mean" => Some(Even::Mean),
            "lower" => Some(Even::Lower),
            "upper" => Some(Even::Upper),
            _ => None,
        }
    }
}

/// The coordinate-wise median of `x` into `out`.
pub fn median<T: Float>(
    x: &Rows<'_, T>,
    even: Even,
    policy: NonFinite,
    out: ColumnsOut<'_, T>,
) -> Result<(), AggError> {
    x.check_policy(NAME, policy)?;
    let n = x.n();
    let propagate = policy == NonFinite::Propagate;
    // 0-based ranks of the two values the output is made of.
    let (r_lo, r_hi) = if n % 2 == 1 {
        (n / 2, n / 2)
    } else {
        match even {
            Even::Mean => (n / 2 - 1, n / 2),
            Even::Lower => (n / 2 - 1, n / 2 - 1),
            Even::Upper => (n / 2, n / 2),
        }
    };
    let select = Select::Median { lo: r_lo, hi: r_hi };
    let Some(out) = columns::select_columns(x, out, propagate, select) else {
        return Ok(());
    };
    // n beyond the compiled networks: the interpreted network, or selection.
    if out.rows.is_some() {
        ranked_columns::<T, WithRows>(
            x,
            out,
            propagate,
            r_lo,
            r_hi,
            |k| (middle::<T, WithRows>(k, r_lo, r_hi), r_lo, r_hi),
            |_, _| false,
        );
    } else {
        // Only the keys of the two middle ranks are needed: sample brackets or a network
        // placing those two find them (`ranked_columns_with`).
        ranked_columns_with::<T, ValuesOnly>(
            x,
            out,
            propagate,
            r_lo,
            r_hi,
            Some(
                |_: &[T::VKey], a: &[T::VKey; LANES], b: &[T::VKey; LANES], o: &mut [T; LANES]| {
                    for l in 0..LANES {
                        let hi = T::vkey_value(b[l]);
                        o[l] = if r_lo == r_hi {
                            hi
                        } else {
                            T::midpoint(T::vkey_value(a[l]), hi)
                        };
                    }
                    0
                },
            ),
            |k| (middle::<T, ValuesOnly>(k, r_lo, r_hi), r_lo, r_hi),
            |_, _| false,
        );
    }
    Ok(())
}

/// [`median`] of half-precision rows into `out` (their format), by blocks of coordinates.
pub fn median_half(
    x: &HalfRows<'_>,
    even: Even,
    policy: NonFinite,
    out: &mut [u16],
) -> Result<(), AggError> {
    x.check_policy(NAME, policy)?;
    let policy = crate::half::per_block(policy);
    crate::half::by_blocks(NAME, x, out, crate::half::WIDTH_RANKS, |r, o| {
        median(r, even, policy, ColumnsOut::new(o))
    })
}

/// The median from the keys of ranks `r_lo` and `r_hi` (equal unless averaging an even `n`).
#[inline(always)]
fn middle<T: Float, Kg: Keying<T>>(k: &Ranked<'_, Kg::K>, r_lo: usize, r_hi: usize) -> T {
    let b = Kg::value(k.get(r_hi));
    if r_lo == r_hi {
        b
    } else {
        T::midpoint(Kg::value(k.get(r_lo)), b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{rows, Rng};

    fn med<T: Float>(data: &[Vec<T>], even: Even, policy: NonFinite) -> Vec<T> {
        let x = rows(data);
        let mut out = vec![T::ZERO; x.d()];
        median(&x, even, policy, ColumnsOut::new(&mut out)).unwrap();
        out
    }

    #[test]
    fn spec_oracle() {
        // The oracle of docs/algorithms.md, Median.
        let x = vec![
            vec![1.0f64, 10.0],
            vec![2.0, -3.0],
            vec![4.0, 7.0],
            vec![100.0, 0.5],
        ];
        assert_eq!(med(&x, Even::Mean, NonFinite::Robust), vec![3.0, 3.75]);
        assert_eq!(med(&x, Even::Lower, NonFinite::Robust), vec![2.0, 0.5]);
        assert_eq!(med(&x, Even::Upper, NonFinite::Robust), vec![4.0, 7.0]);
        // The coordinate-wise median of the Krum oracle matrix
        let y: Vec<Vec<f32>> = [
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
        assert_eq!(med(&y, Even::Mean, NonFinite::Robust), vec![-3.0, -5.0]);
    }

    #[test]
    fn nan_policies() {
        let x = vec![vec![1.0f32, f32::NAN], vec![2.0, 5.0], vec![f32::NAN, 6.0]];
        assert_eq!(med(&x, Even::Mean, NonFinite::Robust), vec![2.0, 6.0]);
        let p = med(&x, Even::Mean, NonFinite::Propagate);
        assert!(p[0].is_nan() && p[1].is_nan());
        let xr = rows(&x);
        let mut out = vec![0.0; 2];
        assert!(matches!(
            median(&xr, Even::Mean, NonFinite::Raise, ColumnsOut::new(&mut out)),
            Err(AggError::NonFinite { .. })
        ));
    }

    #[test]
    fn reports_rows_and_matches_sorting() {
        let mut rng = Rng(42);
        // 1100 > network::MAX_N: the selection path.
        for &n in &[1usize, 2, 3, 10, 11, 64, 1100] {
            let data = rng.matrix(n, 700);
            let x = rows(&data);
            for even in [Even::Mean, Even::Lower, Even::Upper] {
                let mut out = vec![0.0f32; 700];
                let (mut lo, mut hi) = (vec![0u32; 700], vec![0u32; 700]);
                median(
                    &x,
                    even,
                    NonFinite::Robust,
                    ColumnsOut::with_rows(&mut out, &mut lo, &mut hi),
                )
                .unwrap();
                for j in 0..700 {
                    let mut col: Vec<(f32, usize)> = (0..n).map(|i| (data[i][j], i)).collect();
                    col.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                    let (a, b) = match (n % 2, even) {
                        (1, _) => (col[n / 2], col[n / 2]),
                        (_, Even::Mean) => (col[n / 2 - 1], col[n / 2]),
                        (_, Even::Lower) => (col[n / 2 - 1], col[n / 2 - 1]),
                        (_, Even::Upper) => (col[n / 2], col[n / 2]),
                    };
                    assert_eq!(out[j], f32::midpoint(a.0, b.0));
                    assert_eq!((lo[j] as usize, hi[j] as usize), (a.1, b.1));
                }
            }
        }
    }

    #[test]
    fn values_only_on_every_level_match_sorting() {
        // Sizes on both sides of the brackets' threshold and of the networks' limit; the
        // brackets' ties (few distinct values, equal columns) and NaN / infinities under
        // both policies, every SIMD level.
        use crate::simd;
        let mut rng = Rng(11);
        for &n in &[150usize, 383, 384, 385, 1024, 1025, 2100] {
            let d = 70;
            let mut data = rng.matrix(n, d);
            for (i, row) in data.iter_mut().enumerate() {
                row[0] = 1.5; // every key equal
                row[1] = (i % 3) as f32 - 1.0; // three distinct values
                row[2] = if i % 4 == 0 { f32::NAN } else { row[2] };
                row[3] = if i % 3 == 0 { f32::INFINITY } else { -0.0 };
                row[4] = if i % 2 == 0 { 0.0 } else { -0.0 };
            }
            for policy in [NonFinite::Robust, NonFinite::Propagate] {
                for even in [Even::Mean, Even::Lower, Even::Upper] {
                    let mut want: Option<Vec<u32>> = None;
                    for level in simd::ALL {
                        simd::set_level(level);
                        let got: Vec<u32> = med(&data, even, policy)
                            .iter()
                            .map(|v| v.to_bits())
                            .collect();
                        match &want {
                            None => {
                                for j in 0..d {
                                    let mut col: Vec<f32> = (0..n).map(|i| data[i][j]).collect();
                                    let nan = col.iter().any(|v| v.is_nan());
                                    col.sort_by(|a, b| a.total_cmp(b));
                                    let (a, b) = match (n % 2, even) {
                                        (1, _) => (col[n / 2], col[n / 2]),
                                        (_, Even::Mean) => (col[n / 2 - 1], col[n / 2]),
                                        (_, Even::Lower) => (col[n / 2 - 1], col[n / 2 - 1]),
                                        (_, Even::Upper) => (col[n / 2], col[n / 2]),
                                    };
                                    let m = if policy == NonFinite::Propagate && nan {
                                        f32::NAN
                                    } else {
                                        f32::midpoint(a, b)
                                    };
                                    assert_eq!(got[j], m.to_bits(), "n={n} j={j} {even:?}");
                                }
                                want = Some(got);
                            }
                            Some(w) => assert_eq!(w, &got, "n={n} {level:?} {even:?}"),
                        }
                    }
                    simd::set_level(simd::DEFAULT_MAX);
                }
            }
        }
    }

    #[test]
    fn blocks_handed_back_by_brackets_match_sorting() {
        // Every block the brackets would take goes to the network (n <= 1024) or to
        // selection per coordinate (beyond): the same bits as sorting.
        use crate::columns::bracket::HAND_BACK;
        use std::sync::atomic::Ordering::Relaxed;
        let mut rng = Rng(23);
        for &n in &[500usize, 2100] {
            let data = rng.matrix(n, 40);
            HAND_BACK.store(true, Relaxed);
            let got = med(&data, Even::Mean, NonFinite::Robust);
            HAND_BACK.store(false, Relaxed);
            let want = med(&data, Even::Mean, NonFinite::Robust);
            for j in 0..40 {
                let mut col: Vec<f32> = (0..n).map(|i| data[i][j]).collect();
                col.sort_by(|a, b| a.total_cmp(b));
                let m = f32::midpoint(col[n / 2 - 1], col[n / 2]);
                assert_eq!(
                    (got[j].to_bits(), want[j].to_bits()),
                    (m.to_bits(), m.to_bits())
                );
            }
        }
    }

    #[test]
    fn thread_count_does_not_change_bits() {
        let data = Rng(7).matrix(9, 100_000);
        let x = rows(&data);
        let mut a = vec![0.0f32; x.d()];
        let mut b = vec![0.0f32; x.d()];
        crate::pool::set_num_threads(1).unwrap();
        median(&x, Even::Mean, NonFinite::Robust, ColumnsOut::new(&mut a)).unwrap();
        crate::pool::set_num_threads(3).unwrap();
        median(&x, Even::Mean, NonFinite::Robust, ColumnsOut::new(&mut b)).unwrap();
        assert!(a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()));
    }
}
