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
//! This is the straightforward implementation (transpose a tile of coordinates into keys, one
//! introselect per coordinate); the SIMD selection networks replace it per issue 3.

use crate::error::AggError;
use crate::input::{NonFinite, Rows};
use crate::network::{self, LANES};
use crate::order::{select, Float};
use crate::rules::{
    for_each_tile, load_block, load_keys, ColumnsOut, Keying, ValuesOnly, WithRows,
};
use crate::simd;

pub const NAME: &str = "median";

/// Which value an even-sized median returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Even {
    Mean,
    Lower,
    Upper,
}

impl Even {
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
    if out.rows.is_some() {
        run::<T, WithRows>(x, propagate, r_lo, r_hi, out);
    } else {
        run::<T, ValuesOnly>(x, propagate, r_lo, r_hi, out);
    }
    Ok(())
}

fn run<T: Float, Kg: Keying<T>>(
    x: &Rows<'_, T>,
    propagate: bool,
    r_lo: usize,
    r_hi: usize,
    out: ColumnsOut<'_, T>,
) {
    let n = x.n();
    if n <= network::MAX_N {
        let net = network::network(n, &[r_lo, r_hi]);
        let level = simd::level();
        for_each_tile(x, out, Vec::new, |keys: &mut Vec<Kg::K>, t| {
            let w = t.values.len();
            for b0 in (0..w).step_by(LANES) {
                let bw = (w - b0).min(LANES);
                let first_nan = load_block::<T, Kg>(x, t.j0 + b0, bw, keys, propagate);
                network::apply_dispatch(level, keys, &net);
                for l in 0..bw {
                    let c = b0 + l;
                    if first_nan[l] != u32::MAX {
                        t.values[c] = T::NAN;
                        t.lo[c] = first_nan[l];
                        t.hi[c] = first_nan[l];
                        continue;
                    }
                    let (lo_key, hi_key) = (keys[r_lo * LANES + l], keys[r_hi * LANES + l]);
                    let (a, b) = (Kg::value(lo_key), Kg::value(hi_key));
                    t.values[c] = if r_lo == r_hi { b } else { T::midpoint(a, b) };
                    if t.want_rows {
                        t.lo[c] = Kg::row(lo_key);
                        t.hi[c] = Kg::row(hi_key);
                    }
                }
            }
        });
        return;
    }
    for_each_tile(
        x,
        out,
        || (Vec::new(), Vec::new()),
        |(keys, first_nan): &mut (Vec<Kg::K>, Vec<u32>), t| {
            let w = t.values.len();
            load_keys::<T, Kg>(x, t.j0, w, keys, first_nan, propagate);
            for c in 0..w {
                if first_nan[c] != u32::MAX {
                    t.values[c] = T::NAN;
                    t.lo[c] = first_nan[c];
                    t.hi[c] = first_nan[c];
                    continue;
                }
                let col = &mut keys[c * n..(c + 1) * n];
                let hi_key = select(col, r_hi);
                let lo_key = if r_lo == r_hi {
                    hi_key
                } else {
                    // Rank r_hi - 1 is the largest key left of rank r_hi.
                    *col[..r_hi].iter().max().expect("n >= 2 here")
                };
                let (a, b) = (Kg::value(lo_key), Kg::value(hi_key));
                t.values[c] = if r_lo == r_hi { b } else { T::midpoint(a, b) };
                if t.want_rows {
                    t.lo[c] = Kg::row(lo_key);
                    t.hi[c] = Kg::row(hi_key);
                }
            }
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::{rows, Rng};

    fn med<T: Float>(data: &[Vec<T>], even: Even, policy: NonFinite) -> Vec<T> {
        let x = rows(data);
        let mut out = vec![T::ZERO; x.d()];
        median(&x, even, policy, ColumnsOut::new(&mut out)).unwrap();
        out
    }

    #[test]
    fn spec_oracle() {
        // ALGORITHMS.md §18.1
        let x = vec![
            vec![1.0f64, 10.0],
            vec![2.0, -3.0],
            vec![4.0, 7.0],
            vec![100.0, 0.5],
        ];
        assert_eq!(med(&x, Even::Mean, NonFinite::Robust), vec![3.0, 3.75]);
        assert_eq!(med(&x, Even::Lower, NonFinite::Robust), vec![2.0, 0.5]);
        assert_eq!(med(&x, Even::Upper, NonFinite::Robust), vec![4.0, 7.0]);
        // §18.2 CWMed
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
        for &n in &[1usize, 2, 3, 10, 11, 64] {
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
