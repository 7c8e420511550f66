//! Rank selection by sample brackets: the keys of one or two ranks per coordinate of a network
//! block, for `n` where a sorting network costs more than reading the block a few times.
//!
//! A network places a rank with about `n log² n / 4` comparators per coordinate; this reads the
//! block `O(log s)` times with two integer operations per key, then touches a few keys per
//! coordinate. For each block of [`LANES`] coordinates (keys `kb[row * LANES + lane]`, any order):
//!
//! 1. **Sample.** `s` rows spread over the block are sorted lane-parallel by a network: `s`
//!    splitters per coordinate. Which rows are sampled varies with the block and the call (a
//!    random `salt`), so rows placed to avoid the sample cannot be chosen in advance.
//! 2. **Search.** Each coordinate keeps two splitters `t_a < t_b` with `#(key < t_a) <= r <
//!    #(key < t_b)` (`t_{-1}` below and `t_s` above every key), narrowed by counting passes: the
//!    first counts below two splitters around where rank `r` is expected, the next ones bisect,
//!    each lane at its own splitter, until every lane's `t_a` and `t_b` are neighbours in the
//!    sample.
//! 3. **Extract.** One pass counts the copies of `t_a` and collects the keys strictly between
//!    `t_a` and `t_b` (about `2n / s` per coordinate: the gap holding a given rank is, on
//!    average, twice the mean gap); rank `r` is `t_a` if it falls among the
//!    copies, else it is found among the collected keys. Ties therefore cost nothing: a column
//!    of equal keys (a frozen parameter, a sparse gradient's zeros) is answered by the counts.
//!
//! The result is the key of rank `r` whatever the sample, so it is bitwise the network's: the
//! sample decides the speed only. A coordinate whose gap holds more than `cap` keys (an unlucky
//! sample, or values crowded there on purpose) is answered by a selection over its column; a
//! block with more than [`MISSES_BEFORE_BAIL`] such coordinates is handed back to the caller
//! (a network, or selection per coordinate beyond the networks), which skips the next blocks'
//! attempts, so crowded data costs a fraction of an attempt per block.

use crate::network::{Plan, LANES};
use crate::simd::{Level, Proof};

/// Integer keys with one value below and one above every key a column holds (`order.rs` never
/// encodes a value as all-zero or all-one bits; see `network::LaneKey`).
///
/// It also carries the two passes of the search: portable for any key width, explicit AVX2 /
/// AVX-512 code for 32-bit keys (float32), where the compiler had vectorised the portable
/// loops across rows (with gathers) instead of across lanes.
pub(crate) trait Sentinel: Ord + Copy + Send + Sync + std::fmt::Debug + 'static {
    const BELOW: Self;
    const ABOVE: Self;

    /// `c[j][lane] = #(key < t[j][lane])` over the block, for `J` thresholds in one pass.
    fn count_below<const J: usize>(
        _proof: Proof,
        kb: &[Self],
        t: [&[Self; LANES]; J],
    ) -> [[u32; LANES]; J] {
        count_below_portable(kb, t)
    }

    /// Per row, the mask of lanes whose key lies strictly between `ta` and `tb` (into
    /// `masks[row]`), and per lane the copies of `ta` (added to `eq`).
    fn inside(
        _proof: Proof,
        kb: &[Self],
        ta: &[Self; LANES],
        tb: &[Self; LANES],
        masks: &mut [u16],
        eq: &mut [u32; LANES],
    ) {
        inside_portable(kb, ta, tb, masks, eq)
    }
}

fn count_below_portable<K: Ord + Copy, const J: usize>(
    kb: &[K],
    t: [&[K; LANES]; J],
) -> [[u32; LANES]; J] {
    let mut c = [[0u32; LANES]; J];
    for row in kb.chunks_exact(LANES) {
        for (cj, tj) in c.iter_mut().zip(&t) {
            for l in 0..LANES {
                cj[l] += (row[l] < tj[l]) as u32;
            }
        }
    }
    c
}

fn inside_portable<K: Ord + Copy>(
    kb: &[K],
    ta: &[K; LANES],
    tb: &[K; LANES],
    masks: &mut [u16],
    eq: &mut [u32; LANES],
) {
    for (row, m) in kb.chunks_exact(LANES).zip(masks.iter_mut()) {
        let mut bits = 0u16;
        for l in 0..LANES {
            eq[l] += (row[l] == ta[l]) as u32;
            bits |= (((row[l] > ta[l]) & (row[l] < tb[l])) as u16) << l;
        }
        *m = bits;
    }
}

impl Sentinel for u32 {
    const BELOW: u32 = 0;
    const ABOVE: u32 = u32::MAX;

    fn count_below<const J: usize>(
        proof: Proof,
        kb: &[u32],
        t: [&[u32; LANES]; J],
    ) -> [[u32; LANES]; J] {
        match proof {
            #[cfg(target_arch = "x86_64")]
            Proof::Avx512(isa) => x86::count_below_avx512(isa, kb, t),
            #[cfg(target_arch = "x86_64")]
            Proof::Avx2(isa) => x86::count_below_avx2(isa, kb, t),
            _ => count_below_portable(kb, t),
        }
    }

    fn inside(
        proof: Proof,
        kb: &[u32],
        ta: &[u32; LANES],
        tb: &[u32; LANES],
        masks: &mut [u16],
        eq: &mut [u32; LANES],
    ) {
        match proof {
            #[cfg(target_arch = "x86_64")]
            Proof::Avx512(isa) => x86::inside_avx512(isa, kb, ta, tb, masks, eq),
            #[cfg(target_arch = "x86_64")]
            Proof::Avx2(isa) => x86::inside_avx2(isa, kb, ta, tb, masks, eq),
            _ => inside_portable(kb, ta, tb, masks, eq),
        }
    }
}

impl Sentinel for u64 {
    const BELOW: u64 = 0;
    const ABOVE: u64 = u64::MAX;
}

impl Sentinel for u128 {
    const BELOW: u128 = 0;
    const ABOVE: u128 = u128::MAX;
}

/// Smallest `n` that selects by brackets: below it a network that places the ranks is faster.
/// Measured crossovers (docs/performance.md): about 300-400 for one rank or two neighbouring
/// ones (a median), about 700 for two distant ranks (a trimmed mean's bounds: two searches).
pub(crate) fn min_n(distant: bool) -> usize {
    if distant {
        768
    } else {
        384
    }
}

/// Smallest `n` a [`Bracket`] accepts (its smallest sample must fit).
const MIN_ROWS: usize = 64;

/// Lanes of a block whose gap overflowed before the block goes back to the network.
pub(crate) const MISSES_BEFORE_BAIL: usize = 2;

/// Set by tests: every block is handed back, to exercise the callers' other paths.
#[cfg(test)]
pub(crate) static HAND_BACK: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Splitters sampled per coordinate for `n` rows: a gap holds about `n / s` keys.
fn sample_size(n: usize) -> usize {
    match n {
        0..=191 => 16,
        192..=511 => 32,
        512..=1535 => 64,
        _ => (n / 16).next_power_of_two().clamp(128, 512),
    }
}

/// Most keys collected per lane: beyond it (gaps of `n / 512` keys, n in the millions) a
/// coordinate is selected from its column.
const MAX_CAP: usize = 4096;

/// Most candidate rows sorted by a network; more are selected per lane (at 64, the trimmed mean
/// at n = 2000 selected per lane in most blocks and took 1.85x as long).
const SORT_MAX: usize = 128;

/// Reusable state for selecting ranks in the blocks of one call.
pub(crate) struct Bracket<K> {
    n: usize,
    s: usize,
    /// Keys collected per lane (`cand[i * LANES + lane]`): ten times the mean population of a
    /// gap (the gap holding a given rank averages about twice that mean), at most [`MAX_CAP`].
    cap: usize,
    proof: Proof,
    sort: Plan,
    sample: Vec<K>,
    cand: Vec<K>,
    /// Networks sorting `2^k` candidate rows, built on first use (`k <= log2(SORT_MAX)`).
    sorts: Vec<Option<Plan>>,
    level: Level,
    masks: Vec<u16>,
    column: Vec<K>,
}

/// One lane's gap after the search: `#(key < ta) = below <= r < #(key < tb) = below_b`.
#[derive(Clone, Copy)]
struct Gap<K> {
    ta: [K; LANES],
    tb: [K; LANES],
    below: [u32; LANES],
    below_b: [u32; LANES],
}

impl<K: Sentinel> Bracket<K> {
    pub(crate) fn new(level: Level, n: usize) -> Self {
        assert!(n >= MIN_ROWS && n < u32::MAX as usize);
        let s = sample_size(n);
        let cap = (10 * n / s).clamp(16, MAX_CAP);
        Bracket {
            n,
            s,
            cap,
            proof: crate::simd::proof_of(level),
            sort: Plan::new(level, s, &(0..s).collect::<Vec<_>>()),
            sample: Vec::new(),
            cand: vec![K::BELOW; LANES * cap.max(SORT_MAX)],
            sorts: (0..=SORT_MAX.ilog2()).map(|_| None).collect(),
            level,
            masks: Vec::new(),
            column: Vec::new(),
        }
    }

    /// The keys of ranks `r_lo <= r_hi` (0-based) of every lane of block `kb` (`n` rows laid
    /// out `[row * LANES + lane]`, left unchanged), or `None` when more than
    /// [`MISSES_BEFORE_BAIL`] lanes overflowed (the caller selects otherwise). `salt` picks
    /// the sampled rows.
    pub(crate) fn select(
        &mut self,
        kb: &[K],
        r_lo: usize,
        r_hi: usize,
        salt: u64,
    ) -> Option<([K; LANES], [K; LANES])> {
        let (n, s) = (self.n, self.s);
        assert!(kb.len() == n * LANES && r_lo <= r_hi && r_hi < n);
        #[cfg(test)]
        if HAND_BACK.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        // 1. The sample, sorted per lane.
        let off = (salt.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize % n;
        self.sample.clear();
        for j in 0..s {
            let row = (j * n + off) / s;
            self.sample
                .extend_from_slice(&kb[row * LANES..(row + 1) * LANES]);
        }
        self.sort.apply(&mut self.sample);
        let mut lo = [K::BELOW; LANES];
        let mut hi = [K::BELOW; LANES];
        let mut missed = 0u32;
        if r_hi <= r_lo + 1 {
            missed |= self.rank(kb, r_lo, r_hi > r_lo, &mut lo, &mut hi);
            if r_hi == r_lo {
                hi = lo;
            }
        } else {
            let mut unused = [K::BELOW; LANES];
            missed |= self.rank(kb, r_lo, false, &mut lo, &mut unused);
            missed |= self.rank(kb, r_hi, false, &mut hi, &mut unused);
        }
        if missed != 0 {
            if missed.count_ones() as usize > MISSES_BEFORE_BAIL {
                return None;
            }
            for l in (0..LANES).filter(|&l| missed >> l & 1 == 1) {
                self.column.clear();
                self.column.extend(kb.iter().skip(l).step_by(LANES));
                let (_, &mut a, rest) = self.column.select_nth_unstable(r_lo);
                lo[l] = a;
                hi[l] = if r_hi == r_lo {
                    a
                } else {
                    *rest.select_nth_unstable(r_hi - r_lo - 1).1
                };
            }
        }
        Some((lo, hi))
    }

    /// Rank `r` into `out` and, with `next`, rank `r + 1` into `out_next`, for every lane whose
    /// gap fits the candidate buffer; returns the mask of the lanes that did not.
    fn rank(
        &mut self,
        kb: &[K],
        r: usize,
        next: bool,
        out: &mut [K; LANES],
        out_next: &mut [K; LANES],
    ) -> u32 {
        let (n, s, cap) = (self.n, self.s, self.cap);
        let g = search(self.proof, kb, &self.sample, s, n, r);
        let mut cnt = [0u32; LANES];
        let mut eq = [0u32; LANES];
        extract(
            self.proof,
            kb,
            &g.ta,
            &g.tb,
            &mut self.masks,
            &mut self.cand,
            cap,
            &mut cnt,
            &mut eq,
        );
        // The lanes' candidates, padded above every key to the longest, sorted lane-parallel.
        let mut missed = 0u32;
        let mut m = 0;
        for (l, &c) in cnt.iter().enumerate() {
            if c as usize > cap {
                missed |= 1 << l;
            } else {
                m = m.max(c as usize);
            }
        }
        // Up to SORT_MAX rows: padded above every key to a power of two and sorted
        // lane-parallel (a few networks, built once). More: each lane selects its own.
        let sorted = m <= SORT_MAX;
        if m > 1 && sorted {
            let m2 = m.next_power_of_two();
            for l in (0..LANES).filter(|&l| missed >> l & 1 == 0) {
                for i in cnt[l] as usize..m2 {
                    self.cand[i * LANES + l] = K::ABOVE;
                }
            }
            let level = self.level;
            let sort = self.sorts[m2.ilog2() as usize]
                .get_or_insert_with(|| Plan::new(level, m2, &(0..m2).collect::<Vec<_>>()));
            sort.apply(&mut self.cand[..m2 * LANES]);
        }
        for l in (0..LANES).filter(|&l| missed >> l & 1 == 0) {
            let below = g.below[l] as usize;
            let copies = eq[l] as usize;
            let inside = cnt[l] as usize;
            debug_assert_eq!(below + copies + inside, g.below_b[l] as usize);
            // Rank `q` of this lane: `ta` among its copies, else a collected key, else (only
            // `r + 1` can get there) `tb`, which the sample proves present.
            if !sorted {
                self.column.clear();
                self.column
                    .extend((0..inside).map(|i| self.cand[i * LANES + l]));
            }
            let column = &mut self.column;
            let cand = &self.cand;
            let mut at = |q: usize| -> K {
                if q < below + copies {
                    g.ta[l]
                } else if q - below - copies < inside {
                    let i = q - below - copies;
                    if sorted {
                        cand[i * LANES + l]
                    } else {
                        *column.select_nth_unstable(i).1
                    }
                } else {
                    g.tb[l]
                }
            };
            out[l] = at(r);
            if next {
                out_next[l] = at(r + 1);
            }
        }
        missed
    }
}

#[inline(always)]
fn splitters<K: Sentinel>(sample: &[K], i: usize) -> &[K; LANES] {
    sample[i * LANES..(i + 1) * LANES]
        .try_into()
        .expect("LANES keys")
}

/// The search of step 2 (module docs): every lane's gap between neighbouring splitters.
fn search<K: Sentinel>(
    proof: Proof,
    kb: &[K],
    sample: &[K],
    s: usize,
    n: usize,
    r: usize,
) -> Gap<K> {
    let rr = r as u32;
    // Where rank r's splitter is expected, and 2.5 standard deviations of a sample quantile's
    // position either side: most lanes leave the first pass with a gap of a few splitters.
    let p = (r as f64 + 0.5) / n as f64;
    let e = p * s as f64 - 0.5;
    let spread = 2.5 * (s as f64 * p * (1.0 - p)).sqrt() + 1.0;
    let i1 = ((e - spread).floor().max(0.0) as usize).min(s - 1);
    let i2 = ((e + spread).ceil().max(0.0) as usize).clamp(i1, s - 1);
    let mut a = [-1i32; LANES];
    let mut b = [s as i32; LANES];
    let mut below = [0u32; LANES];
    let mut below_b = [n as u32; LANES];
    let [c1, c2] = K::count_below(proof, kb, [splitters(sample, i1), splitters(sample, i2)]);
    for l in 0..LANES {
        if rr < c1[l] {
            (b[l], below_b[l]) = (i1 as i32, c1[l]);
        } else if rr < c2[l] {
            (a[l], below[l], b[l], below_b[l]) = (i1 as i32, c1[l], i2 as i32, c2[l]);
        } else {
            (a[l], below[l]) = (i2 as i32, c2[l]);
        }
    }
    loop {
        let mut t = [K::BELOW; LANES];
        let mut mid = [0i32; LANES];
        let mut open = false;
        for l in 0..LANES {
            if b[l] - a[l] > 1 {
                // a >= -1 and b - a >= 2, so 0 <= mid < s.
                mid[l] = (a[l] + b[l]).div_euclid(2);
                t[l] = sample[mid[l] as usize * LANES + l];
                open = true;
            }
        }
        if !open {
            break;
        }
        let [c] = K::count_below(proof, kb, [&t]);
        for l in 0..LANES {
            if b[l] - a[l] > 1 {
                if rr < c[l] {
                    (b[l], below_b[l]) = (mid[l], c[l]);
                } else {
                    (a[l], below[l]) = (mid[l], c[l]);
                }
            }
        }
    }
    let mut g = Gap {
        ta: [K::BELOW; LANES],
        tb: [K::ABOVE; LANES],
        below,
        below_b,
    };
    for l in 0..LANES {
        if a[l] >= 0 {
            g.ta[l] = sample[a[l] as usize * LANES + l];
        }
        if (b[l] as usize) < s {
            g.tb[l] = sample[b[l] as usize * LANES + l];
        }
    }
    g
}

/// The pass of step 3 (module docs): copies of `ta` counted into `eq`, keys strictly between
/// `ta` and `tb` appended to lane `l`'s column of `cand` (`cand[i * LANES + l]`; counted past
/// `cap`, not stored).
#[allow(clippy::too_many_arguments)]
fn extract<K: Sentinel>(
    proof: Proof,
    kb: &[K],
    ta: &[K; LANES],
    tb: &[K; LANES],
    masks: &mut Vec<u16>,
    cand: &mut [K],
    cap: usize,
    cnt: &mut [u32; LANES],
    eq: &mut [u32; LANES],
) {
    assert!(cand.len() >= LANES * cap);
    let n = kb.len() / LANES;
    masks.resize(n, 0);
    K::inside(proof, kb, ta, tb, masks, eq);
    for (r, &m) in masks.iter().enumerate() {
        let mut m = m as u32;
        while m != 0 {
            let l = m.trailing_zeros() as usize;
            m &= m - 1;
            let c = cnt[l] as usize;
            if c < cap {
                cand[c * LANES + l] = kb[r * LANES + l];
            }
            cnt[l] += 1;
        }
    }
}

/// The 32-bit passes in explicit intrinsics, safe behind their proof tokens.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::LANES;
    use crate::simd::{Avx2, Avx512};
    use std::arch::x86_64::*;

    pub(super) fn count_below_avx2<const J: usize>(
        _: Avx2,
        kb: &[u32],
        t: [&[u32; LANES]; J],
    ) -> [[u32; LANES]; J] {
        // SAFETY: the token proves AVX2.
        unsafe { count_below_avx2_impl(kb, t) }
    }

    #[target_feature(enable = "avx2")]
    unsafe fn count_below_avx2_impl<const J: usize>(
        kb: &[u32],
        t: [&[u32; LANES]; J],
    ) -> [[u32; LANES]; J] {
        // SAFETY: the caller's token proves the enabled features; every load and store
        // is of `LANES` keys inside the slices (lengths asserted) or the fixed-size arrays.
        unsafe {
            assert!(kb.len().is_multiple_of(LANES));
            // Unsigned order as the signed order of the keys with their top bit flipped.
            let sign = _mm256_set1_epi32(i32::MIN);
            let load = |p: *const u32| _mm256_xor_si256(_mm256_loadu_si256(p as *const _), sign);
            let tv: [[__m256i; 2]; J] =
                core::array::from_fn(|j| [load(t[j].as_ptr()), load(t[j].as_ptr().add(8))]);
            let mut c = [[_mm256_setzero_si256(); 2]; J];
            for row in kb.chunks_exact(LANES) {
                let k = [load(row.as_ptr()), load(row.as_ptr().add(8))];
                for j in 0..J {
                    for h in 0..2 {
                        // cmpgt gives -1 where t > key: subtracting it counts.
                        c[j][h] = _mm256_sub_epi32(c[j][h], _mm256_cmpgt_epi32(tv[j][h], k[h]));
                    }
                }
            }
            let mut out = [[0u32; LANES]; J];
            for j in 0..J {
                _mm256_storeu_si256(out[j].as_mut_ptr() as *mut _, c[j][0]);
                _mm256_storeu_si256(out[j].as_mut_ptr().add(8) as *mut _, c[j][1]);
            }
            out
        }
    }

    pub(super) fn count_below_avx512<const J: usize>(
        _: Avx512,
        kb: &[u32],
        t: [&[u32; LANES]; J],
    ) -> [[u32; LANES]; J] {
        // SAFETY: the token proves AVX-512 F/BW/DQ/VL.
        unsafe { count_below_avx512_impl(kb, t) }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2")]
    unsafe fn count_below_avx512_impl<const J: usize>(
        kb: &[u32],
        t: [&[u32; LANES]; J],
    ) -> [[u32; LANES]; J] {
        // SAFETY: the caller's token proves the enabled features; every load and store
        // is of `LANES` keys inside the slices (lengths asserted) or the fixed-size arrays.
        unsafe {
            assert!(kb.len().is_multiple_of(LANES));
            let one = _mm512_set1_epi32(1);
            let tv: [__m512i; J] =
                core::array::from_fn(|j| _mm512_loadu_si512(t[j].as_ptr() as *const _));
            let mut c = [_mm512_setzero_si512(); J];
            for row in kb.chunks_exact(LANES) {
                let k = _mm512_loadu_si512(row.as_ptr() as *const _);
                for j in 0..J {
                    let lt = _mm512_cmplt_epu32_mask(k, tv[j]);
                    c[j] = _mm512_mask_add_epi32(c[j], lt, c[j], one);
                }
            }
            let mut out = [[0u32; LANES]; J];
            for j in 0..J {
                _mm512_storeu_si512(out[j].as_mut_ptr() as *mut _, c[j]);
            }
            out
        }
    }

    pub(super) fn inside_avx2(
        _: Avx2,
        kb: &[u32],
        ta: &[u32; LANES],
        tb: &[u32; LANES],
        masks: &mut [u16],
        eq: &mut [u32; LANES],
    ) {
        // SAFETY: the token proves AVX2.
        unsafe { inside_avx2_impl(kb, ta, tb, masks, eq) }
    }

    #[target_feature(enable = "avx2")]
    unsafe fn inside_avx2_impl(
        kb: &[u32],
        ta: &[u32; LANES],
        tb: &[u32; LANES],
        masks: &mut [u16],
        eq: &mut [u32; LANES],
    ) {
        // SAFETY: the caller's token proves the enabled features; every load and store
        // is of `LANES` keys inside the slices (lengths asserted) or the fixed-size arrays.
        unsafe {
            assert!(kb.len() == masks.len() * LANES);
            let sign = _mm256_set1_epi32(i32::MIN);
            let raw = |p: *const u32| _mm256_loadu_si256(p as *const _);
            let a = [raw(ta.as_ptr()), raw(ta.as_ptr().add(8))];
            let ab = [_mm256_xor_si256(a[0], sign), _mm256_xor_si256(a[1], sign)];
            let bb = [
                _mm256_xor_si256(raw(tb.as_ptr()), sign),
                _mm256_xor_si256(raw(tb.as_ptr().add(8)), sign),
            ];
            let mut e = [_mm256_setzero_si256(); 2];
            for (row, m) in kb.chunks_exact(LANES).zip(masks.iter_mut()) {
                let mut bits = 0i32;
                for h in 0..2 {
                    let k = raw(row.as_ptr().add(8 * h));
                    let kx = _mm256_xor_si256(k, sign);
                    e[h] = _mm256_sub_epi32(e[h], _mm256_cmpeq_epi32(k, a[h]));
                    let inside = _mm256_and_si256(
                        _mm256_cmpgt_epi32(kx, ab[h]),
                        _mm256_cmpgt_epi32(bb[h], kx),
                    );
                    bits |= _mm256_movemask_ps(_mm256_castsi256_ps(inside)) << (8 * h);
                }
                *m = bits as u16;
            }
            let mut add = [0u32; LANES];
            _mm256_storeu_si256(add.as_mut_ptr() as *mut _, e[0]);
            _mm256_storeu_si256(add.as_mut_ptr().add(8) as *mut _, e[1]);
            for l in 0..LANES {
                eq[l] += add[l];
            }
        }
    }

    pub(super) fn inside_avx512(
        _: Avx512,
        kb: &[u32],
        ta: &[u32; LANES],
        tb: &[u32; LANES],
        masks: &mut [u16],
        eq: &mut [u32; LANES],
    ) {
        // SAFETY: the token proves AVX-512 F/BW/DQ/VL.
        unsafe { inside_avx512_impl(kb, ta, tb, masks, eq) }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2")]
    unsafe fn inside_avx512_impl(
        kb: &[u32],
        ta: &[u32; LANES],
        tb: &[u32; LANES],
        masks: &mut [u16],
        eq: &mut [u32; LANES],
    ) {
        // SAFETY: the caller's token proves the enabled features; every load and store
        // is of `LANES` keys inside the slices (lengths asserted) or the fixed-size arrays.
        unsafe {
            assert!(kb.len() == masks.len() * LANES);
            let one = _mm512_set1_epi32(1);
            let a = _mm512_loadu_si512(ta.as_ptr() as *const _);
            let b = _mm512_loadu_si512(tb.as_ptr() as *const _);
            let mut e = _mm512_setzero_si512();
            for (row, m) in kb.chunks_exact(LANES).zip(masks.iter_mut()) {
                let k = _mm512_loadu_si512(row.as_ptr() as *const _);
                e = _mm512_mask_add_epi32(e, _mm512_cmpeq_epu32_mask(k, a), e, one);
                *m = _mm512_cmpgt_epu32_mask(k, a) & _mm512_cmplt_epu32_mask(k, b);
            }
            let mut add = [0u32; LANES];
            _mm512_storeu_si512(add.as_mut_ptr() as *mut _, e);
            for l in 0..LANES {
                eq[l] += add[l];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd;
    use crate::testing::Rng;

    fn check(kb: &[u32], n: usize, r_lo: usize, r_hi: usize, crowded: bool) {
        for level in simd::ALL {
            let level = simd::cap(level);
            let mut br = Bracket::<u32>::new(level, n);
            for salt in [0, 1, 7, u64::MAX] {
                let Some((lo, hi)) = br.select(kb, r_lo, r_hi, salt) else {
                    assert!(crowded, "only crowded data may be handed back");
                    continue;
                };
                for l in 0..LANES {
                    let mut col: Vec<u32> = kb.iter().skip(l).step_by(LANES).copied().collect();
                    col.sort_unstable();
                    assert_eq!((lo[l], hi[l]), (col[r_lo], col[r_hi]), "n={n} lane {l}");
                }
            }
        }
    }

    #[test]
    fn ranks_match_sorting() {
        let mut rng = Rng(3);
        for n in [
            MIN_ROWS, 97, 100, 191, 200, 333, 512, 1000, 1536, 3000, 20_000,
        ] {
            let kb: Vec<u32> = (0..n * LANES)
                .map(|_| 1 + (rng.next_u64() >> 33) as u32)
                .collect();
            for (a, b) in [
                (0, 0),
                (n / 2, n / 2),
                (n / 2 - 1, n / 2),
                (n / 10, n - 1 - n / 10),
                (n - 1, n - 1),
                (0, n - 1),
                (n - 2, n - 1),
            ] {
                check(&kb, n, a, b, false);
            }
        }
    }

    #[test]
    fn ties_and_crowds() {
        let n = 300;
        let mut rng = Rng(5);
        // Every key equal; few distinct keys; a sorted block; keys crowded into one gap.
        let same = vec![7u32; n * LANES];
        let few: Vec<u32> = (0..n * LANES)
            .map(|_| 1 + (rng.next_u64() % 3) as u32)
            .collect();
        let sorted: Vec<u32> = (0..n * LANES).map(|i| 1 + (i / LANES) as u32).collect();
        let mut crowd: Vec<u32> = (0..n * LANES)
            .map(|_| 1 + (rng.next_u64() >> 40) as u32)
            .collect();
        for (i, k) in crowd.iter_mut().enumerate() {
            // Rows the sample rarely hits hold distinct keys just above the median.
            if !(i / LANES).is_multiple_of(5) {
                *k = 1 << 30 | i as u32;
            }
        }
        for (kb, crowded) in [
            (&same, false),
            (&few, false),
            (&sorted, false),
            (&crowd, true),
        ] {
            for (a, b) in [(n / 2 - 1, n / 2), (30, n - 31), (0, n - 1)] {
                check(kb, n, a, b, crowded);
            }
        }
    }
}
