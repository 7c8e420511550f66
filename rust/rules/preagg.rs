//! Kernels of the pre-aggregators: row norms (static clipping, ARC), means of groups of rows
//! (nearest-neighbour mixing, bucketing) and scaled rows.
//!
//! Every output value is computed by one task with a fixed summation order (rows in the order
//! given, float64 accumulation), so results do not depend on the thread count.

use rayon::prelude::*;

use crate::error::AggError;
use crate::input::Rows;
use crate::order::{average, Accumulator, Float};
use crate::pool;

/// Coordinates per task: long contiguous runs per row stream at full bandwidth (as in mean.rs).
pub(crate) const TILE: usize = 32768;

/// Run `task((k, chunk))` over a row-major `rows × d` output cut into chunks of one row and at
/// most [`TILE`] coordinates (chunk `k` is row `k / tiles`, tile `k % tiles`), in parallel when
/// `work` (values read) is large. Each output value is written by exactly one task.
fn for_each_row_tile<T: Send>(
    out: &mut [T],
    d: usize,
    work: usize,
    task: impl Fn((usize, &mut [T])) + Sync + Send,
) {
    let mut parts: Vec<&mut [T]> = out.chunks_mut(d).flat_map(|r| r.chunks_mut(TILE)).collect();
    if !crate::pool::split(work) {
        parts.iter_mut().enumerate().for_each(|(k, o)| task((k, o)));
    } else {
        pool::install(|| {
            parts
                .par_iter_mut()
                .enumerate()
                .for_each(|(k, o)| task((k, o)))
        });
    }
}

/// The Euclidean norm of every row (float64, one task per row).
pub fn row_norms<T: Float>(x: &Rows<'_, T>) -> Result<Vec<f64>, AggError> {
    Ok(crate::distance::dists_to(
        x,
        &crate::alloc::zeroed::<f64>(x.d())?,
    ))
}

/// `out[g] = mean of the rows listed in group g`: groups are given in CSR form, the members of
/// group `g` being `members[offsets[g] .. offsets[g + 1]]`, summed in that order in float64.
/// `out` is `groups × d`, row-major.
pub fn group_means<T: Float>(
    x: &Rows<'_, T>,
    offsets: &[usize],
    members: &[usize],
    out: &mut [T],
) -> Result<(), AggError> {
    let (n, d) = (x.n(), x.d());
    let bad = |message: String| AggError::InvalidParameter {
        rule: "group means",
        message,
    };
    if offsets.is_empty() || offsets[0] != 0 || *offsets.last().unwrap() != members.len() {
        return Err(bad("offsets must start at 0 and end at len(members)".into()));
    }
    if offsets.windows(2).any(|w| w[1] <= w[0]) {
        return Err(bad("every group must have at least one member".into()));
    }
    if let Some(&m) = members.iter().find(|&&m| m >= n) {
        return Err(bad(format!("member {m} is out of range for n={n}")));
    }
    let groups = offsets.len() - 1;
    assert_eq!(out.len(), groups * d);
    if d == 0 {
        return Ok(());
    }
    let tiles = d.div_ceil(TILE);
    let task = |(k, o): (usize, &mut [T])| {
        let (g, t) = (k / tiles, k % tiles);
        let j0 = t * TILE;
        let mem = &members[offsets[g]..offsets[g + 1]];
        // The core's accumulator (compensated for float64, from -0.0), kept within the
        // members' values.
        let mut acc = vec![T::Acc::zero(); o.len()];
        let mut range = vec![(T::INFINITY, T::from_f64(f64::NEG_INFINITY)); o.len()];
        for &i in mem {
            let row = &x.row(i)[j0..j0 + o.len()];
            for ((a, r), &v) in acc.iter_mut().zip(range.iter_mut()).zip(row) {
                a.add(v.to_f64());
                if v < r.0 {
                    r.0 = v;
                }
                if v > r.1 {
                    r.1 = v;
                }
            }
        }
        let c = mem.len() as f64;
        for (j, ((ov, a), &(lo, hi))) in o.iter_mut().zip(&acc).zip(&range).enumerate() {
            *ov = average(a.value() / c, c, lo, hi, || {
                mem.iter().map(move |&i| (1.0, x.row(i)[j0 + j].to_f64()))
            });
        }
    };
    for_each_row_tile(out, d, members.len() * d, task);
    Ok(())
}

/// `out[i] = x[i] * scales[i]` (clipping): row-major `n × d`, the scale rounded to the input
/// type and the product taken in it (as the torch path does).
pub fn scale_rows<T: Float>(x: &Rows<'_, T>, scales: &[f64], out: &mut [T]) {
    let d = x.d();
    assert_eq!(scales.len(), x.n());
    assert_eq!(out.len(), x.n() * d);
    if d == 0 {
        return;
    }
    let tiles = d.div_ceil(TILE);
    let task = |(k, o): (usize, &mut [T])| {
        let (i, t) = (k / tiles, k % tiles);
        let s = T::from_f64(scales[i]);
        let (j0, w) = (t * TILE, o.len());
        let src = &x.row(i)[j0..j0 + w];
        // Multiplying by 1 is exact; a copy_from_slice branch for unscaled rows measured slower.
        for (ov, &v) in o.iter_mut().zip(src) {
            *ov = v * s;
        }
    };
    for_each_row_tile(out, d, x.n() * d, task);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::rows;

    #[test]
    fn group_means_and_norms() {
        let data = vec![vec![1.0f64, -2.0], vec![3.0, 0.0], vec![5.0, 2.0]];
        let x = rows(&data);
        let mut out = vec![0.0; 4];
        group_means(&x, &[0, 2, 3], &[0, 2, 1], &mut out).unwrap();
        assert_eq!(out, vec![3.0, 0.0, 3.0, 0.0]);
        assert!(group_means(&x, &[0, 0, 3], &[0, 1, 2], &mut out).is_err());
        assert_eq!(row_norms(&x).unwrap()[1], 3.0);
    }
}
