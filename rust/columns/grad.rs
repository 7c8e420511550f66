//! Backward kernels of the selection rules: spread an output gradient `g` (one value per
//! coordinate) over the `n × d` input gradient, on the CPU, in one pass that writes every input
//! gradient value once (the torch backward's zeros-then-scatter takes several passes).
//!
//! Elementwise and split by rows, so the result does not depend on the thread count. The torch
//! backward uses these when no higher-order graph is being built; torch ops otherwise.

use rayon::prelude::*;

use crate::alloc;
use crate::error::AggError;
use crate::input::Rows;
use crate::order::Float;

fn bad(message: String) -> AggError {
    AggError::InvalidParameter {
        rule: "backward",
        message,
    }
}

fn check_rows(name: &str, r: &[u32], n: usize, d: usize) -> Result<(), AggError> {
    if r.len() != d {
        return Err(bad(format!(
            "{name} has {} entries, expected d={d}",
            r.len()
        )));
    }
    if let Some(&v) = r.iter().find(|&&v| v as usize >= n) {
        return Err(bad(format!("{name} holds row {v}, but n={n}")));
    }
    Ok(())
}

/// Run `row(i, out_row)` for every row of the `n × d` output, in parallel when it is large.
fn by_rows<T: Float>(n: usize, d: usize, out: &mut [T], row: impl Fn(usize, &mut [T]) + Sync) {
    assert_eq!(out.len(), n * d);
    if d == 0 {
        return;
    }
    if !crate::pool::split(n * d) {
        out.chunks_mut(d).enumerate().for_each(|(i, o)| row(i, o));
    } else {
        crate::pool::install(|| {
            out.par_chunks_mut(d)
                .enumerate()
                .for_each(|(i, o)| row(i, o))
        });
    }
}

/// Median backward: `out[i][j] = g[j]` where `i = lo[j]` (odd `n`, `lower`, `upper`), or
/// `g[j] / 2` where `i` is `lo[j]` or `hi[j]` (the two middles of `even = "mean"`, distinct rows).
pub fn route<T: Float>(
    n: usize,
    lo: &[u32],
    hi: Option<&[u32]>,
    g: &[T],
    out: &mut [T],
) -> Result<(), AggError> {
    let d = g.len();
    check_rows("lo", lo, n, d)?;
    if let Some(hi) = hi {
        check_rows("hi", hi, n, d)?;
        let half = alloc::collect(d, g.iter().map(|&v| T::from_f64(v.to_f64() * 0.5)))?;
        by_rows(n, d, out, |i, o| {
            let i = i as u32;
            // Zipped slices, no indexing: no bounds checks, so the loop vectorises.
            for (((y, &a), &b), &h) in o.iter_mut().zip(lo).zip(hi).zip(&half) {
                // Half to each middle row, both halves where they are one row (a NaN column
                // under Propagate): ((0 + h) + h), the torch path's scatter-adds, bit for bit.
                let (ha, hb) = (
                    if a == i { h } else { T::ZERO },
                    if b == i { h } else { T::ZERO },
                );
                *y = (T::ZERO + ha) + hb;
            }
        });
    } else {
        by_rows(n, d, out, |i, o| {
            let i = i as u32;
            for ((y, &a), &v) in o.iter_mut().zip(lo).zip(g) {
                *y = if a == i { v } else { T::ZERO };
            }
        });
    }
    Ok(())
}

/// Trimmed-mean backward: `out[i][j] = g[j] / kept` where `(x[i][j], i)` lies between the keys of
/// rows `lo[j]` and `hi[j]` (the lowest and highest kept values), 0 elsewhere.
pub fn kept<T: Float>(
    x: &Rows<'_, T>,
    lo: &[u32],
    hi: &[u32],
    g: &[T],
    kept: usize,
    out: &mut [T],
) -> Result<(), AggError> {
    let (n, d) = (x.n(), x.d());
    if g.len() != d {
        return Err(bad(format!("g has {} entries, expected d={d}", g.len())));
    }
    check_rows("lo", lo, n, d)?;
    check_rows("hi", hi, n, d)?;
    // Value-only keys (half the width of `(value, row)` keys, so the loop vectorises) plus the
    // row comparison that breaks ties.
    let vlo = alloc::collect(d, (0..d).map(|j| x.row(lo[j] as usize)[j].vkey()))?;
    let vhi = alloc::collect(d, (0..d).map(|j| x.row(hi[j] as usize)[j].vkey()))?;
    let scaled = alloc::collect(d, g.iter().map(|&v| T::from_f64(v.to_f64() / kept as f64)))?;
    by_rows(n, d, out, |row, o| {
        let i = row as u32;
        let lower = vlo.iter().zip(lo);
        let upper = vhi.iter().zip(hi);
        let bounds = lower.zip(upper).zip(&scaled);
        for ((y, &v), (((&a, &ra), (&b, &rb)), &s)) in o.iter_mut().zip(x.row(row)).zip(bounds) {
            let k = v.vkey();
            // Non-short-circuit `|` / `&`: no branches to mispredict on random data.
            let above = (k > a) | ((k == a) & (i >= ra));
            let below = (k < b) | ((k == b) & (i <= rb));
            *y = if above & below { s } else { T::ZERO };
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::rows;

    #[test]
    fn route_single_and_pair() {
        let mut out = vec![9.0f32; 6];
        route(3, &[2, 0], None, &[1.0, 4.0], &mut out).unwrap();
        assert_eq!(out, vec![0.0, 4.0, 0.0, 0.0, 1.0, 0.0]);
        route(3, &[2, 0], Some(&[1, 2]), &[1.0, 4.0], &mut out).unwrap();
        assert_eq!(out, vec![0.0, 2.0, 0.5, 0.0, 0.5, 2.0]);
        assert!(route(3, &[3, 0], None, &[1.0, 4.0], &mut out).is_err());
    }

    #[test]
    fn kept_follows_the_tie_rule() {
        // Column [2, 2, 2, 2, 9], f = 1: ranks 1..=3 are rows 1, 2, 3.
        let data: Vec<Vec<f64>> = [2.0, 2.0, 2.0, 2.0, 9.0].iter().map(|&v| vec![v]).collect();
        let x = rows(&data);
        let mut out = vec![0.0; 5];
        kept(&x, &[1], &[3], &[3.0], 3, &mut out).unwrap();
        assert_eq!(out, vec![0.0, 1.0, 1.0, 1.0, 0.0]);
    }
}
