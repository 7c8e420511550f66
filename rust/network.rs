//! Lane-parallel sorting networks: the column kernels' selection engine for `n <= MAX_N`.
//!
//! Per-coordinate selection (introselect, one column at a time) is branchy and measured 4-5x
//! numpy at best. A sorting network is a fixed list of compare-exchanges `(a, b)` (`a < b`:
//! min goes to `a`, max to `b`), so it can run on [`LANES`] coordinates at once: keys are laid
//! out row-major per block (`keys[row * LANES + lane]`), each compare-exchange is a min and a
//! max over `LANES` integers, which the compiler vectorises. Keys are the integer encodings
//! of `order.rs`, so min/max is the total `(value, row)` order, NaN and signed zero included.
//!
//! The network is Batcher's odd-even merge sort for the next power of two, pruned twice
//! (NATIVE_PERF.md §2.3): comparators that touch a virtual padding row (+inf, at the top, so
//! they never move) are dropped, then a backward pass keeps only comparators that feed a wanted
//! output rank. This is the interpreted form (a comparator list at run time); compiled
//! per-`n` networks with SIMD dispatch are the follow-up (issue 3).

/// Coordinates processed together by one pass over the network.
pub const LANES: usize = 16;
/// Largest `n` served by a network (about 20k comparators there); beyond it, use selection.
pub const MAX_N: usize = 1024;

/// The compare-exchanges that sort `n` keys far enough to place every rank in `wanted`.
pub fn network(n: usize, wanted: &[usize]) -> Vec<(u32, u32)> {
    let size = n.next_power_of_two();
    let mut all = Vec::new();
    let mut p = 1;
    while p < size {
        let mut k = p;
        while k >= 1 {
            let mut j = k % p;
            while j + k < size {
                for i in 0..k.min(size - j - k) {
                    if (i + j) / (2 * p) == (i + j + k) / (2 * p) {
                        let (a, b) = (i + j, i + j + k);
                        if b < n {
                            all.push((a as u32, b as u32));
                        }
                    }
                }
                j += 2 * k;
            }
            k /= 2;
        }
        p *= 2;
    }
    let mut needed = vec![false; n];
    for &r in wanted {
        needed[r] = true;
    }
    let mut kept: Vec<(u32, u32)> = Vec::with_capacity(all.len());
    for &(a, b) in all.iter().rev() {
        if needed[a as usize] || needed[b as usize] {
            needed[a as usize] = true;
            needed[b as usize] = true;
            kept.push((a, b));
        }
    }
    kept.reverse();
    kept
}

/// Apply `net` to a block of keys laid out `keys[row * LANES + lane]`.
#[inline(always)]
pub fn apply<K: Ord + Copy>(keys: &mut [K], net: &[(u32, u32)]) {
    for &(a, b) in net {
        let (a, b) = (a as usize * LANES, b as usize * LANES);
        let (lo, hi) = keys.split_at_mut(b);
        let lo = &mut lo[a..a + LANES];
        let hi = &mut hi[..LANES];
        for l in 0..LANES {
            let (x, y) = (lo[l], hi[l]);
            lo[l] = x.min(y);
            hi[l] = x.max(y);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn apply_avx2<K: Ord + Copy>(keys: &mut [K], net: &[(u32, u32)]) {
    apply(keys, net)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
fn apply_avx512<K: Ord + Copy>(keys: &mut [K], net: &[(u32, u32)]) {
    apply(keys, net)
}

/// [`apply`] on the SIMD level in force (same result on every level: integer min/max).
pub fn apply_dispatch<K: Ord + Copy>(
    level: crate::simd::Level,
    keys: &mut [K],
    net: &[(u32, u32)],
) {
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Level::Avx2` is only in force when the CPU reports avx2 and fma (simd.rs).
        crate::simd::Level::Avx2 => unsafe { apply_avx2(keys, net) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Level::Avx512` is only in force when the CPU reports those features.
        crate::simd::Level::Avx512 => unsafe { apply_avx512(keys, net) },
        _ => apply(keys, net),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_simd_level_applies_the_same_network() {
        use crate::simd::Level;
        let n = 37;
        let net = network(n, &[n / 2, 3, n - 1]);
        let mut state = 99u64;
        let keys: Vec<u64> = (0..n * LANES)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state % 1000
            })
            .collect();
        let mut want = keys.clone();
        apply(&mut want, &net);
        for level in [Level::Scalar, Level::Avx2, Level::Avx512] {
            // A level this CPU lacks is capped by set_level; call the dispatcher with the level
            // actually available.
            let l = level.min(crate::simd::detected());
            let mut got = keys.clone();
            apply_dispatch(l, &mut got, &net);
            assert_eq!(got, want, "{}", l.name());
        }
    }

    #[test]
    fn sorts_every_size_and_places_wanted_ranks() {
        let mut state = 12345u64;
        for n in 1..=70usize {
            let full = network(n, &(0..n).collect::<Vec<_>>());
            let mid = network(n, &[n / 2]);
            assert!(mid.len() <= full.len());
            for _ in 0..20 {
                let mut keys = vec![0u32; n * LANES];
                for k in keys.iter_mut() {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    *k = (state % 7) as u32;
                }
                let cols: Vec<Vec<u32>> = (0..LANES)
                    .map(|l| {
                        let mut c: Vec<u32> = (0..n).map(|r| keys[r * LANES + l]).collect();
                        c.sort();
                        c
                    })
                    .collect();
                let mut a = keys.clone();
                apply(&mut a, &full);
                let mut b = keys.clone();
                apply(&mut b, &mid);
                for l in 0..LANES {
                    for r in 0..n {
                        assert_eq!(a[r * LANES + l], cols[l][r]);
                    }
                    assert_eq!(b[(n / 2) * LANES + l], cols[l][n / 2]);
                }
            }
        }
    }
}
