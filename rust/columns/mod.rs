//! The coordinate-wise engine of the order-statistic rules (median, trimmed mean, meamed and
//! their weighted forms): tiles of coordinates, each ranked by `(value, row)`.
//!
//! Coordinate-wise rules share [`for_each_tile`]: the output is cut into tiles of consecutive
//! coordinates at boundaries that depend only on `(n, d)`, each tile is computed by one task,
//! so the result is bit-identical for any thread count. [`compiled`] ranks a tile with the
//! generated selection networks for `n <= 64`; [`ranked_columns`] with the interpreted network
//! or a selection beyond; [`grad`] routes gradients back to the rows a selection kept.

pub(crate) mod bracket;
pub(crate) mod compiled;
pub mod grad;
pub mod weighted;

use rayon::prelude::*;

use crate::input::Rows;
use crate::network::{self, LANES};
use crate::order::{select, Float};
use crate::simd;

/// Per-coordinate outputs of a selection kernel: the values and, when asked for, the two rows
/// that define the selection (median: lower/upper middle; trimmed mean: lowest/highest kept).
pub struct ColumnsOut<'a, T> {
    pub values: &'a mut [T],
    pub rows: Option<(&'a mut [u32], &'a mut [u32])>,
}

impl<'a, T> ColumnsOut<'a, T> {
    pub fn new(values: &'a mut [T]) -> Self {
        ColumnsOut { values, rows: None }
    }
    pub fn with_rows(values: &'a mut [T], lo: &'a mut [u32], hi: &'a mut [u32]) -> Self {
        assert!(lo.len() == values.len() && hi.len() == values.len());
        ColumnsOut {
            values,
            rows: Some((lo, hi)),
        }
    }
}

/// One tile handed to a column kernel: coordinates `j0 .. j0 + values.len()`.
pub(crate) struct Tile<'t, T> {
    pub j0: usize,
    pub values: &'t mut [T],
    pub lo: &'t mut [u32],
    pub hi: &'t mut [u32],
    pub want_rows: bool,
}

/// Number of coordinates per tile for `n` rows: the tile's keys (`n × tile`, ~16 KiB of u32)
/// stay in L1 while they are transposed in and selected, which measured ~2x faster than
/// L2-sized tiles (the strided transpose writes touch one cache line per key).
pub(crate) fn tile_width(n: usize) -> usize {
    ((4096 / n.max(1)) / LANES * LANES).clamp(LANES, 512)
}

/// Bytes of keys per tile of the interpreted network (see [`network_tile_width`]).
const NETWORK_TILE_BYTES: usize = 1 << 18;

/// The type of an absent `ends` attempt (see [`ranked_columns_with`]).
type EndsFn<T, K> = fn(&[K], &[K; LANES], &[K; LANES], &mut [T; LANES]) -> u32;

/// Blocks of a tile that skip the `ends` attempt of [`ranked_columns_with`] after it missed.
pub(crate) const ENDS_SKIP: usize = 8;

/// Rows ahead of the one being loaded whose tile run [`load_tile`] prefetches.
const PREFETCH_ROWS: usize = 4;

/// Number of coordinates per tile of the interpreted network: the tile's keys (`n × tile`
/// keys of `key_bytes` each, block-major, see [`load_tile`]) fill about a quarter of L2,
/// while the network works on one block (`n × LANES` keys) at a time in L1. Each row is then read in
/// runs of `tile` values: with the L1-sized tiles of [`tile_width`], `n = 200` read 64 bytes
/// per row before switching rows, and loading the tile took more samples than the network.
pub(crate) fn network_tile_width(n: usize, key_bytes: usize) -> usize {
    ((NETWORK_TILE_BYTES / (n.max(1) * key_bytes)) / LANES * LANES).clamp(LANES, 4096)
}

/// What the zipped chunk iterators yield: `(tile index, ((values, lo rows), hi rows))`.
type TileItem<'t, T> = (usize, ((&'t mut [T], &'t mut [u32]), &'t mut [u32]));

/// Run `kernel(scratch, tile)` over all tiles of `out`, in parallel when the input is large.
pub(crate) fn for_each_tile<T, S>(
    x: &Rows<'_, T>,
    out: ColumnsOut<'_, T>,
    width: usize,
    init: impl Fn() -> S + Sync + Send,
    kernel: impl Fn(&mut S, Tile<'_, T>) + Sync + Send,
) where
    T: Float,
{
    let d = x.d();
    assert_eq!(out.values.len(), d);
    if d == 0 {
        return;
    }
    let want_rows = out.rows.is_some();
    let parallel = crate::pool::split(x.n() * d);
    let run = |s: &mut S, (t, ((v, l), h)): TileItem<'_, T>| {
        kernel(
            s,
            Tile {
                j0: t * width,
                values: v,
                lo: l,
                hi: h,
                want_rows,
            },
        )
    };
    // Without requested rows, each worker writes them into one tile's worth of scratch that
    // nobody reads: one code path for the kernels, and no buffer that grows with d.
    let with_scratch = || (init(), vec![0u32; width], vec![0u32; width]);
    let run_scratch = |(s, l, h): &mut (S, Vec<u32>, Vec<u32>), (t, v): (usize, &mut [T])| {
        let w = v.len();
        run(s, (t, ((v, &mut l[..w]), &mut h[..w])))
    };
    let values = out.values;
    match out.rows {
        Some((lo, hi)) if parallel => crate::pool::install(|| {
            values
                .par_chunks_mut(width)
                .zip(lo.par_chunks_mut(width))
                .zip(hi.par_chunks_mut(width))
                .enumerate()
                .for_each_init(&init, |s, item| run(s, item));
        }),
        Some((lo, hi)) => {
            let mut s = init();
            values
                .chunks_mut(width)
                .zip(lo.chunks_mut(width))
                .zip(hi.chunks_mut(width))
                .enumerate()
                .for_each(|item| run(&mut s, item));
        }
        None if parallel => crate::pool::install(|| {
            values
                .par_chunks_mut(width)
                .enumerate()
                .for_each_init(with_scratch, |s, item| run_scratch(s, item));
        }),
        None => {
            let mut s = with_scratch();
            values
                .chunks_mut(width)
                .enumerate()
                .for_each(|item| run_scratch(&mut s, item));
        }
    }
}

/// How a column kernel ranks values: `(value, row)` keys when it must report rows, value-only
/// keys (half the width, faster to select) when it need not. Both give the same order of values.
pub(crate) trait Keying<T: Float>: Sync {
    type K: Ord + Copy + Send + Sync + bracket::Sentinel;
    fn key(v: T, row: u32) -> Self::K;
    fn value(k: Self::K) -> T;
    fn row(k: Self::K) -> u32;
}

pub(crate) struct WithRows;
pub(crate) struct ValuesOnly;

impl<T: Float> Keying<T> for WithRows {
    type K = T::Key;
    #[inline(always)]
    fn key(v: T, row: u32) -> T::Key {
        v.key(row)
    }
    #[inline(always)]
    fn value(k: T::Key) -> T {
        T::key_value(k)
    }
    #[inline(always)]
    fn row(k: T::Key) -> u32 {
        T::key_row(k)
    }
}

impl<T: Float> Keying<T> for ValuesOnly {
    type K = T::VKey;
    #[inline(always)]
    fn key(v: T, _row: u32) -> T::VKey {
        v.vkey()
    }
    #[inline(always)]
    fn value(k: T::VKey) -> T {
        T::vkey_value(k)
    }
    #[inline(always)]
    fn row(_k: T::VKey) -> u32 {
        0
    }
}

/// The keys of one coordinate in rank order, at least for the ranks a kernel asked for.
pub(crate) struct Ranked<'k, K> {
    keys: &'k [K],
    base: usize,
    stride: usize,
}

impl<K: Copy> Ranked<'_, K> {
    /// The key of rank `r` (0-based); valid for the ranks passed to [`ranked_columns`].
    #[inline(always)]
    pub fn get(&self, r: usize) -> K {
        self.keys[self.base + r * self.stride]
    }
}

/// Run a rank-based column kernel. For every coordinate the keys of ranks `lo..=hi` are put in
/// rank order (a network for `n <= network::MAX_N`, selection plus a sort of that range beyond),
/// `finish` turns them into the output value and names two ranks (within `lo..=hi`) whose rows
/// are reported: the bounds of the kept range, which the backward rebuilds from them.
/// Under `propagate`, a coordinate holding a NaN is NaN and reports the first NaN row.
///
/// `finish_block` is the same computation for a whole network block at once (keys laid out
/// `[rank * LANES + lane]`), for rules whose per-coordinate `finish` is one long dependency
/// chain (the trimmed mean's ordered sum: its lanes are independent chains side by side). It
/// must give `finish`'s bits; it is used only when no rows are asked for, and returns `false`
/// where the rule has no such form.
pub(crate) fn ranked_columns<T: Float, Kg: Keying<T>>(
    x: &Rows<'_, T>,
    out: ColumnsOut<'_, T>,
    propagate: bool,
    lo: usize,
    hi: usize,
    finish: impl Fn(&Ranked<'_, Kg::K>) -> (T, usize, usize) + Sync + Send,
    finish_block: impl Fn(&mut [Kg::K], &mut [T; LANES]) -> bool + Sync + Send,
) {
    let no_ends: Option<EndsFn<T, Kg::K>> = None;
    ranked_columns_with::<T, Kg>(x, out, propagate, lo, hi, no_ends, finish, finish_block)
}

/// [`ranked_columns`] with a cheaper first attempt per block. With `ends` (and no rows asked
/// for), a block first finds only the keys of ranks `lo` and `hi` per coordinate, by sample
/// brackets ([`bracket`], `n >= bracket::min_n`) or by a network that places only those two
/// ranks, and `ends(block, low, high, out)` computes the block's values from them (the block's
/// keys in no particular order) and returns the mask of the lanes where it cannot give
/// `finish_block`'s bits (`0`: every lane done). Where a lane declined, the network placing
/// `lo..=hi` runs on the same keys (a network sorts any order) and `finish_block` or, where it
/// declines, `finish` per coordinate finishes the block as usual; beyond the networks, each
/// declined coordinate's column is selected instead. After such a miss the next
/// [`ENDS_SKIP`] blocks of the tile skip the attempt: where a tile holds many blocks, data
/// that defeats it on purpose (a Byzantine row) costs about `1 / ENDS_SKIP` of the attempt,
/// not a whole attempt per block; at large `n`, where a tile is one or two blocks, about one
/// wasted attempt per block. Which path a block takes never changes its bits.
#[allow(clippy::too_many_arguments)]
pub(crate) fn ranked_columns_with<T: Float, Kg: Keying<T>>(
    x: &Rows<'_, T>,
    out: ColumnsOut<'_, T>,
    propagate: bool,
    lo: usize,
    hi: usize,
    ends: Option<
        impl Fn(&[Kg::K], &[Kg::K; LANES], &[Kg::K; LANES], &mut [T; LANES]) -> u32 + Sync + Send,
    >,
    finish: impl Fn(&Ranked<'_, Kg::K>) -> (T, usize, usize) + Sync + Send,
    finish_block: impl Fn(&mut [Kg::K], &mut [T; LANES]) -> bool + Sync + Send,
) {
    let n = x.n();
    let emit = |t: &mut Tile<'_, T>, c: usize, first_nan: u32, r: &Ranked<'_, Kg::K>| {
        if first_nan != u32::MAX {
            t.values[c] = T::NAN;
            t.lo[c] = first_nan;
            t.hi[c] = first_nan;
            return;
        }
        let (v, r_lo, r_hi) = finish(r);
        t.values[c] = v;
        if t.want_rows {
            t.lo[c] = Kg::row(r.get(r_lo));
            t.hi[c] = Kg::row(r.get(r_hi));
        }
    };
    let level = simd::level();
    let ends = ends.filter(|_| out.rows.is_none());
    // Brackets for 32-bit keys only: their counting passes are written for them (float64
    // keys would run portable loops the compiler vectorises across rows, unmeasured).
    let brackets =
        ends.is_some() && n >= bracket::min_n(hi - lo > 1) && std::mem::size_of::<Kg::K>() == 4;
    if n > network::MAX_N && !brackets {
        for_each_tile(
            x,
            out,
            tile_width(n),
            || (Vec::new(), Vec::new()),
            |(keys, first_nan): &mut (Vec<Kg::K>, Vec<u32>), mut t| {
                let w = t.values.len();
                load_keys::<T, Kg>(x, t.j0, w, keys, first_nan, propagate);
                for c in 0..w {
                    let col = &mut keys[c * n..(c + 1) * n];
                    if first_nan[c] == u32::MAX {
                        select_range(col, lo, hi);
                    }
                    let r = Ranked {
                        keys: &col[..],
                        base: 0,
                        stride: 1,
                    };
                    emit(&mut t, c, first_nan[c], &r);
                }
            },
        );
        return;
    }
    let proof = simd::proof_of(level);
    let net =
        (n <= network::MAX_N).then(|| network::Plan::new(level, n, &(lo..=hi).collect::<Vec<_>>()));
    // A network placing `lo` and `hi` alone, unless that is `net` (two neighbouring ranks).
    let ends_net = (ends.is_some() && !brackets && hi - lo > 1).then(|| {
        let mut w = vec![lo, hi];
        w.dedup();
        network::Plan::new(level, n, &w)
    });
    // The sampled rows vary with the call: the results do not, only which rows an adversary
    // would have to avoid.
    let salt = std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), n);
    for_each_tile(
        x,
        out,
        network_tile_width(n, std::mem::size_of::<Kg::K>()),
        || BlockState::<Kg::K> {
            keys: Vec::new(),
            first_nan: Vec::new(),
            skip: 0,
            bracket: brackets.then(|| bracket::Bracket::new(level, n)),
            column: Vec::new(),
        },
        |st: &mut BlockState<Kg::K>, mut t| {
            let w = t.values.len();
            let off = load_tile::<T, Kg>(
                proof,
                x,
                t.j0,
                w,
                &mut st.keys,
                &mut st.first_nan,
                propagate,
            );
            let blocks = w.div_ceil(LANES);
            let keys = &mut st.keys[off..off + blocks * n * LANES];
            let first_nan = &st.first_nan;
            // A miss skips blocks of its own tile only. Carried across tiles (a tile is one
            // block at large n), the trimmed mean's exactness misses on Gaussian data at
            // n = 2000 (a kept value below 2^-16 next to values near 4) sent most blocks to
            // per-coordinate selection: 1.8x the time.
            st.skip = 0;
            for (b, kb) in keys.chunks_exact_mut(n * LANES).enumerate() {
                let b0 = b * LANES;
                let lanes = (w - b0).min(LANES);
                let mut block_values = [T::ZERO; LANES];
                // Lanes still without a value.
                let all = (1u32 << lanes) - 1;
                let mut declined = all;
                if let Some(attempt) = &ends {
                    if st.skip == 0 {
                        let picked = match (&mut st.bracket, &ends_net) {
                            (Some(br), _) => {
                                br.select(kb, lo, hi, salt ^ ((t.j0 + b0) / LANES) as u64)
                            }
                            (None, p) => {
                                // `net` where it places just these ranks; it exists, since
                                // without brackets `n <= network::MAX_N` here.
                                let p =
                                    p.as_ref().or(net.as_ref()).expect("a network for the ends");
                                p.apply(kb);
                                let row = |r: usize| -> [Kg::K; LANES] {
                                    kb[r * LANES..(r + 1) * LANES]
                                        .try_into()
                                        .expect("LANES keys")
                                };
                                Some((row(lo), row(hi)))
                            }
                        };
                        declined = match picked {
                            Some((low, high)) => attempt(kb, &low, &high, &mut block_values) & all,
                            None => all,
                        };
                        // A miss costs a network's whole block, or a hand-back: skip the next
                        // attempts. Beyond the networks the lanes that declined are selected
                        // alone, at no cost to the others.
                        if declined != 0 && (net.is_some() || picked.is_none()) {
                            st.skip = ENDS_SKIP;
                        }
                    } else {
                        st.skip -= 1;
                    }
                }
                if declined != 0 {
                    if let Some(net) = &net {
                        net.apply(kb);
                        // Where `finish_block` declines, the ranks are in place for `finish`.
                        let done = !t.want_rows && finish_block(kb, &mut block_values);
                        declined = if done { 0 } else { all };
                    }
                }
                if declined == 0 {
                    for (l, &v) in block_values.iter().enumerate().take(lanes) {
                        t.values[b0 + l] = if first_nan[b0 + l] == u32::MAX {
                            v
                        } else {
                            T::NAN
                        };
                    }
                    continue;
                }
                for l in 0..lanes {
                    if declined >> l & 1 == 0 {
                        t.values[b0 + l] = if first_nan[b0 + l] == u32::MAX {
                            block_values[l]
                        } else {
                            T::NAN
                        };
                    } else if net.is_some() {
                        let r = Ranked {
                            keys: &kb[..],
                            base: l,
                            stride: LANES,
                        };
                        emit(&mut t, b0 + l, first_nan[b0 + l], &r);
                    } else {
                        // Beyond the networks: this coordinate's column, by selection.
                        st.column.clear();
                        st.column.extend(kb.iter().skip(l).step_by(LANES));
                        if first_nan[b0 + l] == u32::MAX {
                            select_range(&mut st.column, lo, hi);
                        }
                        let r = Ranked {
                            keys: &st.column[..],
                            base: 0,
                            stride: 1,
                        };
                        emit(&mut t, b0 + l, first_nan[b0 + l], &r);
                    }
                }
            }
        },
    );
}

/// What a worker of [`ranked_columns_with`] keeps between tiles.
struct BlockState<K> {
    keys: Vec<K>,
    first_nan: Vec<u32>,
    /// Blocks left that skip the `ends` attempt.
    skip: usize,
    bracket: Option<bracket::Bracket<K>>,
    /// One coordinate's keys, for selection beyond the networks.
    column: Vec<K>,
}

/// Put ranks `lo..=hi` of `col` in place, in order (selection, then a sort of that range).
fn select_range<K: Ord + Copy>(col: &mut [K], lo: usize, hi: usize) {
    select(col, lo);
    let rest = &mut col[lo..];
    if hi - lo + 1 < rest.len() {
        select(rest, hi - lo + 1);
    }
    rest[..=hi - lo].sort_unstable();
}

crate::simd::per_level! {
    avx2;
    /// Load coordinates `j0 .. j0 + width` as consecutive network blocks of [`LANES`]
    /// coordinates: block `b` is `keys[off + b * n * LANES ..]`, laid out `[row * LANES + lane]`,
    /// where the returned `off` puts the blocks on a 64-byte boundary; lanes past `width` in the
    /// last block hold a dummy key and are ignored. `first_nan[c]` is the first row holding a NaN
    /// in column `j0 + c` (or `u32::MAX`) when `track_nan`.
    ///
    /// Each row is read once, `width` values in a row (not 16 at a time per block): the per-row
    /// work is amortised over the tile and the reads stream (profiled: the block-by-block load
    /// was 42 % of the median's samples at n = 10).
    /// AVX-512 CPUs run the AVX2 clone (AVX-512 brought nothing here).
    pub(crate) fn load_tile[T: Float, Kg: Keying<T>][T, Kg](
        _isa: I,
        x: &Rows<'_, T>,
        j0: usize,
        width: usize,
        keys: &mut Vec<Kg::K>,
        first_nan: &mut Vec<u32>,
        track_nan: bool,
    ) -> usize {
        load_tile_body::<T, Kg>(x, j0, width, keys, first_nan, track_nan)
    }
}

/// Ask for `run` in L1 ahead of its use. The tile's rows are read in short runs (a few
/// hundred bytes to a few KB each at `n >= 100`), too short for the hardware prefetcher to
/// ramp up before the next row: the loads stalled on memory (perf: 75 % of `load_tile`'s
/// samples on one load at n = 200). Prefetching the run of the row `PREFETCH_ROWS` ahead, with
/// 256 KiB tiles, measured n = 500 at 521-614 ms against 886-1456 ms for 512 KiB tiles without
/// prefetch (docs/performance.md).
#[inline(always)]
fn prefetch<T>(run: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        let p = run.as_ptr() as *const i8;
        for off in (0..std::mem::size_of_val(run)).step_by(64) {
            // SAFETY: `p + off` is inside `run`; a prefetch never faults anyway.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.add(off))
            };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = run;
}

/// One block row of keys. A function of its own so that `src` and `dst` are parameters: their
/// no-alias guarantee survives inlining and the loop vectorises (written inline, the compiler
/// could not rule out that the keys overlap the input and emitted scalar code).
#[inline(always)]
fn convert<T: Float, Kg: Keying<T>>(src: &[T; LANES], dst: &mut [Kg::K; LANES], row: u32) {
    for l in 0..LANES {
        dst[l] = Kg::key(src[l], row);
    }
}

#[inline(always)]
fn load_tile_body<T: Float, Kg: Keying<T>>(
    x: &Rows<'_, T>,
    j0: usize,
    width: usize,
    keys: &mut Vec<Kg::K>,
    first_nan: &mut Vec<u32>,
    track_nan: bool,
) -> usize {
    let n = x.n();
    let blocks = width.div_ceil(LANES);
    let len = blocks * n * LANES;
    // Block rows start on cache lines: the allocator only promises 16 bytes, and with a
    // buffer off by 16 every other 32-byte access of the network splits a line, so its
    // stores no longer forward to the loads that follow (measured: the network's time
    // doubled in processes whose heap had shifted, e.g. after `import torch`).
    let slack = 64usize.div_ceil(std::mem::size_of::<Kg::K>());
    keys.resize(len + slack, Kg::key(T::ZERO, 0));
    let off = keys.as_ptr().align_offset(64).min(slack);
    let keys = &mut keys[off..off + len];
    first_nan.clear();
    first_nan.resize(blocks * LANES, u32::MAX);
    let stride = n * LANES;
    for i in 0..n {
        let r = &x.row(i)[j0..j0 + width];
        let row = i as u32;
        if i + PREFETCH_ROWS < n {
            prefetch(&x.row(i + PREFETCH_ROWS)[j0..j0 + width]);
        }
        let mut chunks = r.chunks_exact(LANES);
        for (b, c) in (&mut chunks).enumerate() {
            // Fixed-size arrays: a known trip count of LANES lets the loop vectorise.
            let c: &[T; LANES] = c.try_into().expect("chunks_exact yields LANES values");
            let at = b * stride + i * LANES;
            let dst: &mut [Kg::K; LANES] = (&mut keys[at..at + LANES])
                .try_into()
                .expect("a block row holds LANES keys");
            convert::<T, Kg>(c, dst, row);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let b = blocks - 1;
            let dst = &mut keys[b * stride + i * LANES..b * stride + (i + 1) * LANES];
            for (l, d) in dst.iter_mut().enumerate() {
                *d = Kg::key(rest.get(l).copied().unwrap_or(T::ZERO), row);
            }
        }
        if track_nan && r.iter().any(|v| v.is_nan()) {
            for (c, v) in r.iter().enumerate() {
                if v.is_nan() && first_nan[c] == u32::MAX {
                    first_nan[c] = row;
                }
            }
        }
    }
    off
}

/// Fill `keys` (column-major, `n` keys per column) with the keys of coordinates
/// `j0 .. j0 + width`; returns, per column, the first row holding a NaN (or `u32::MAX`).
pub(crate) fn load_keys<T: Float, Kg: Keying<T>>(
    x: &Rows<'_, T>,
    j0: usize,
    width: usize,
    keys: &mut Vec<Kg::K>,
    first_nan: &mut Vec<u32>,
    track_nan: bool,
) {
    let n = x.n();
    // Every slot is overwritten below: only grow or shrink, never re-fill.
    keys.resize(n * width, Kg::key(T::ZERO, 0));
    first_nan.clear();
    first_nan.resize(width, u32::MAX);
    for i in 0..n {
        let r = &x.row(i)[j0..j0 + width];
        for (c, &v) in r.iter().enumerate() {
            keys[c * n + i] = Kg::key(v, i as u32);
        }
        if track_nan {
            for (c, &v) in r.iter().enumerate() {
                if v.is_nan() && first_nan[c] == u32::MAX {
                    first_nan[c] = i as u32;
                }
            }
        }
    }
}
