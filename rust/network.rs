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
//! (`netgen.rs`, NATIVE_PERF.md §2.3). Two forms run it:
//!
//! * **compiled** ([`generated`]): `build.rs` emits one straight-line function per size
//!   (`netgen::generated_size`: every `n <= 32`, padded sizes up to 64), generic over the
//!   lane vector [`Cx`], so one source serves every SIMD level. The median and trimmed mean
//!   run these (`rules/columns.rs`).
//! * **interpreted** ([`apply`]): a comparator list walked at run time over a block of keys in
//!   memory, for the rules that need every rank with its row (meamed, weighted order
//!   statistics) and for `n` beyond the generated sizes (up to [`MAX_N`]).

/// Coordinates processed together by one pass over the network.
pub const LANES: usize = 16;
/// Largest `n` served by a network (about 20k comparators there); beyond it, use selection.
pub const MAX_N: usize = 1024;

/// The compare-exchanges that sort `n` keys far enough to place every rank in `wanted` (both
/// outputs of each: the interpreted form runs every kept comparator in full).
pub fn network(n: usize, wanted: &[usize]) -> Vec<(u32, u32)> {
    level_order(n, crate::netgen::pruned(n, wanted))
}

/// Level order (each comparator after everything it depends on, stable by depth): the
/// interpreter keeps its slots in memory, so what limits it is the latency of a comparator
/// waiting on the one before (store, reload, min/max); in the recursive order consecutive
/// comparators mostly depend on each other, in level order they never do.
fn level_order(n: usize, net: Vec<(usize, usize, crate::netgen::Kind)>) -> Vec<(u32, u32)> {
    let mut depth_of = vec![0u32; n];
    let mut keyed: Vec<(u32, (u32, u32))> = net
        .into_iter()
        .map(|(a, b, _)| {
            let depth = depth_of[a].max(depth_of[b]) + 1;
            depth_of[a] = depth;
            depth_of[b] = depth;
            (depth, (a as u32, b as u32))
        })
        .collect();
    keyed.sort_by_key(|&(depth, _)| depth);
    keyed.into_iter().map(|(_, c)| c).collect()
}

/// Rows per presorted group (see [`Plan`]): 16 rows of 16 lanes fill 16 zmm registers with
/// 32-bit keys, 32 with 64-bit keys. Groups of 32 rows for 32-bit keys were tried: the
/// release build took 20.7 min (the sorts of 17..32 rows instantiated for both key widths).
pub const PRESORT: usize = 16;

/// An interpreted network ready to run at a SIMD level. On AVX-512 its first levels, which in
/// Batcher's recursive construction sort each aligned group of [`PRESORT`] rows and come
/// before every other comparator on those rows, run as the compiled straight-line sort of the
/// group in registers (one or two zmm per row); the comparators left are interpreted. The
/// sorted state of a group does not depend on which network sorted it (equal keys are equal
/// bits), so the result is bitwise that of [`network`]. perf, median n = 200, one thread: the
/// interpreter (two loads, two stores and a min/max pair per comparator) was 46 % of the
/// samples; the groups' sorts are 33 % of its comparators at n = 200 and 43 % at n = 100.
pub struct Plan {
    level: crate::simd::Level,
    n: usize,
    /// Rows per presorted group, 0 for none.
    presort: usize,
    net: Vec<(u32, u32)>,
}

impl Plan {
    pub fn new(level: crate::simd::Level, n: usize, wanted: &[usize]) -> Plan {
        if !(cfg!(target_arch = "x86_64") && level == crate::simd::Level::Avx512) {
            return Plan {
                level,
                n,
                presort: 0,
                net: network(n, wanted),
            };
        }
        let g = PRESORT;
        // Group k's sort comes first on its rows (the recursive order emits it before anything
        // else touching them), and its first `batcher_n(rows)` comparators, the ones `left`
        // counts, are the sort of those rows. Drop them and prune the rest alone: the dropped
        // ones precede everything else on their rows. (A partial last group keeps the few
        // within-group comparators of the larger merges that follow: no-ops on sorted rows.)
        let all = crate::netgen::batcher_n(n);
        let mut left: Vec<usize> = (0..n.div_ceil(g))
            .map(|k| crate::netgen::batcher_n((n - k * g).min(g)).len())
            .collect();
        let rest: Vec<(usize, usize)> = all
            .into_iter()
            .filter(|&(a, b)| {
                let k = a / g;
                if k == b / g && left[k] > 0 {
                    left[k] -= 1;
                    false
                } else {
                    true
                }
            })
            .collect();
        Plan {
            level,
            n,
            presort: g,
            net: level_order(n, crate::netgen::prune(n, &rest, wanted)),
        }
    }

    /// Run the network on a block of keys laid out `keys[row * LANES + lane]`.
    pub fn apply<K: Ord + Copy>(&self, keys: &mut [K]) {
        assert_eq!(keys.len(), self.n * LANES);
        if self.presort > 0 {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `presort` is only set for `Level::Avx512`, in force only when the CPU
            // reports avx512f/bw/dq/vl (simd.rs).
            unsafe {
                presort_avx512(keys, self.presort)
            };
            #[cfg(not(target_arch = "x86_64"))]
            unreachable!("groups are presorted on AVX-512 only");
        }
        apply_dispatch(self.level, keys, &self.net);
    }
}

/// Sort each aligned group of `g` rows of `keys` (`[row * LANES + lane]`) per lane with the
/// compiled sort network of the group's size.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
fn presort_avx512<K: Ord + Copy>(keys: &mut [K], g: usize) {
    struct Group<'a, K>(&'a mut [K]);
    impl<K: Ord + Copy> UseNet<Lanes<K, LANES>> for Group<'_, K> {
        type Out = ();
        #[inline(always)]
        fn run<const N: usize, S: Net<Lanes<K, LANES>, N>>(self) {
            let k = self.0;
            let sorted = S::apply(
                #[inline(always)]
                |i| {
                    Lanes(
                        k[i * LANES..(i + 1) * LANES]
                            .try_into()
                            .expect("LANES keys"),
                    )
                },
            );
            for (dst, v) in k.chunks_exact_mut(LANES).zip(&sorted) {
                dst.copy_from_slice(&v.0);
            }
        }
    }
    for group in keys.chunks_mut(g * LANES) {
        let m = group.len() / LANES;
        generated::with_small_sort(m, Group(group));
    }
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

/// [`apply`] on the SIMD level in force (same result on every level: integer min/max).
pub fn apply_dispatch<K: Ord + Copy>(
    level: crate::simd::Level,
    keys: &mut [K],
    net: &[(u32, u32)],
) {
    match level {
        // The AVX-512 level runs the AVX2 clone: the interpreted network measured slower
        // compiled for AVX-512 (benches/RESULTS.md: n = 10 / 50 / 200 median 1.3-1.4x / 1.4x /
        // 1.26x the AVX2 time), unlike the compiled networks.
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Level::Avx2` and `Level::Avx512` are only in force when the CPU reports avx2
        // and fma (simd.rs).
        crate::simd::Level::Avx2 | crate::simd::Level::Avx512 => unsafe { apply_avx2(keys, net) },
        _ => apply(keys, net),
    }
}

/// A lane vector a compiled network runs on: `LANES` keys, element-wise integer min/max.
pub trait Cx: Copy {
    fn min(self, o: Self) -> Self;
    fn max(self, o: Self) -> Self;
    /// Compare-exchange: `a = min(a, b)`, `b = max(a, b)`.
    #[inline(always)]
    fn cx(a: &mut Self, b: &mut Self) {
        let (x, y) = (*a, *b);
        *a = x.min(y);
        *b = x.max(y);
    }
}

/// `L` keys as one vector. The element-wise loops compile to one `vpminud`/`vpmaxud` (or
/// `vpminuq`) per register inside a `#[target_feature]` function, and to SSE2 code in the
/// baseline build; integer min/max is exact, so every level gives the same bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(transparent)]
pub struct Lanes<K, const L: usize>(pub [K; L]);

impl<K: Ord + Copy, const L: usize> Cx for Lanes<K, L> {
    #[inline(always)]
    fn min(self, o: Self) -> Self {
        let mut r = self;
        for l in 0..L {
            r.0[l] = if o.0[l] < self.0[l] {
                o.0[l]
            } else {
                self.0[l]
            };
        }
        r
    }
    #[inline(always)]
    fn max(self, o: Self) -> Self {
        let mut r = self;
        for l in 0..L {
            r.0[l] = if o.0[l] < self.0[l] {
                self.0[l]
            } else {
                o.0[l]
            };
        }
        r
    }
}

/// A [`Cx`] vector of `L` keys as the column kernels use it.
pub trait KeyVec: Cx + Send + Sync + 'static {
    type K: Ord + Copy + Send + Sync;
    /// Lanes (coordinates) per vector.
    const L: usize;
    fn splat(k: Self::K) -> Self;
    fn lane(self, l: usize) -> Self::K;
    /// The `L` keys, then copies of the first up to 16 (the most lanes of any vector), as a
    /// plain array: loops over it with a constant trip count vectorise.
    fn keys(self) -> [Self::K; 16];
    /// The keys of `src[..L]` (value-only keys, `order.rs`).
    fn load<T: crate::order::Float<VKey = Self::K>>(src: &[T]) -> Self;
}

impl<K: Ord + Copy + Send + Sync + 'static, const L: usize> KeyVec for Lanes<K, L> {
    type K = K;
    const L: usize = L;
    #[inline(always)]
    fn splat(k: K) -> Self {
        Lanes([k; L])
    }
    #[inline(always)]
    fn lane(self, l: usize) -> K {
        self.0[l]
    }
    #[inline(always)]
    fn keys(self) -> [K; 16] {
        let mut o = [self.0[0]; 16];
        o[..L].copy_from_slice(&self.0);
        o
    }
    #[inline(always)]
    fn load<T: crate::order::Float<VKey = K>>(src: &[T]) -> Self {
        let a: &[T; L] = src[..L].try_into().expect("a slice of L values");
        Lanes(core::array::from_fn(|l| a[l].vkey()))
    }
}

/// A value-only key type with its lane vector per SIMD level, and the keys below and above
/// every real key (`order.rs` never produces them: they encode a negative NaN, which is made
/// positive first, and an all-ones payload above the canonical NaN), which pad a network's
/// unused slots.
///
/// x86-64: `Base` (the portable build's level) is SSE2 for 32-bit keys (explicit intrinsics:
/// SSE2 has no unsigned 32-bit min/max, so it compares biased keys) and one key per vector
/// for 64-bit keys (SSE2 has no 64-bit compare); `V256` (avx2) and `V512` (avx512) are
/// explicit intrinsics. aarch64: `Base` is one key per vector, `Neon` four or two keys as
/// plain arrays, which LLVM compiles to NEON `umin`/`umax` (NEON is part of every aarch64
/// CPU).
pub trait LaneKey: Ord + Copy + Send + Sync + 'static {
    const BELOW: Self;
    const ABOVE: Self;
    type Base: KeyVec<K = Self>;
    #[cfg(target_arch = "x86_64")]
    type V256: KeyVec<K = Self>;
    #[cfg(target_arch = "x86_64")]
    type V512: KeyVec<K = Self>;
    #[cfg(target_arch = "aarch64")]
    type Neon: KeyVec<K = Self>;
}

impl LaneKey for u32 {
    const BELOW: u32 = 0;
    const ABOVE: u32 = u32::MAX;
    #[cfg(target_arch = "x86_64")]
    type Base = x86::U32x4;
    #[cfg(not(target_arch = "x86_64"))]
    type Base = Lanes<u32, 1>;
    #[cfg(target_arch = "x86_64")]
    type V256 = x86::U32x8;
    #[cfg(target_arch = "x86_64")]
    type V512 = x86::U32x16;
    #[cfg(target_arch = "aarch64")]
    type Neon = Lanes<u32, 4>;
}

impl LaneKey for u64 {
    const BELOW: u64 = 0;
    const ABOVE: u64 = u64::MAX;
    type Base = Lanes<u64, 1>;
    #[cfg(target_arch = "x86_64")]
    type V256 = x86::U64x4;
    #[cfg(target_arch = "x86_64")]
    type V512 = x86::U64x8;
    #[cfg(target_arch = "aarch64")]
    type Neon = Lanes<u64, 2>;
}

/// A compiled network on `N` slots.
pub trait Net<V: Cx, const N: usize> {
    /// Slot `i` starts as `load(i)`; the wanted ranks end up in slot `rank` of the result.
    /// Returned by value: an `&mut [V; N]` out-parameter made every caller initialise the
    /// array first (a 4 KB memset per 16-coordinate block at N = 64, 9 % of the median's time
    /// at n = 50, perf).
    fn apply(load: impl Fn(usize) -> V) -> [V; N];
}

/// Work that runs with a compiled network of a size known only at run time: the generated
/// dispatchers (`generated::with_median`, `generated::with_sort`) call `run` with the network's
/// static type, so the work is compiled once per network.
pub trait UseNet<V: Cx> {
    type Out;
    fn run<const N: usize, S: Net<V, N>>(self) -> Self::Out;
}

/// Explicit x86-64 lane vectors. Their methods use the intrinsics of their level without a
/// `#[target_feature]` of their own: they are `#[inline(always)]` and only ever inlined into
/// the column kernels' per-level functions (`rules/columns.rs`), which carry the features.
/// Each `load` computes `order.rs`'s `ord32`/`ord64` on a whole vector (tested equal).
#[cfg(target_arch = "x86_64")]
pub mod x86 {
    use super::{Cx, KeyVec};
    use crate::order::Float;
    use std::arch::x86_64::*;

    const S32: i32 = i32::MIN;
    const S64: i64 = i64::MIN;
    const NAN32: i32 = 0x7fc0_0000;
    const INF32: i32 = 0x7f80_0000;
    const NAN64: i64 = 0x7ff8_0000_0000_0000;
    const INF64: i64 = 0x7ff0_0000_0000_0000;

    /// Check that `T` is the float of this key width and `src` holds `lanes` values.
    #[inline(always)]
    fn check<T>(src: &[T], lanes: usize, bytes: usize) {
        assert!(std::mem::size_of::<T>() == bytes && src.len() >= lanes);
    }

    macro_rules! lane_access {
        ($k:ty, $l:literal) => {
            const L: usize = $l;
            type K = $k;
            #[inline(always)]
            fn lane(self, l: usize) -> $k {
                self.keys()[l]
            }
            #[inline(always)]
            fn keys(self) -> [$k; 16] {
                // SAFETY: a SIMD register is plain bits, as an array of its lanes.
                let a: [$k; $l] = unsafe { std::mem::transmute(self.0) };
                let mut o = [0; 16];
                o[..$l].copy_from_slice(&a);
                o
            }
        };
    }

    /// 4 `u32` keys in an SSE2 register, the portable build's level.
    #[derive(Clone, Copy)]
    #[repr(transparent)]
    pub struct U32x4(__m128i);

    impl U32x4 {
        /// All ones in lanes where `a > b` as unsigned (SSE2 compares signed: flip the sign
        /// bits first).
        #[inline(always)]
        fn gt(a: __m128i, b: __m128i) -> __m128i {
            // SAFETY: SSE2 is part of x86-64.
            unsafe {
                let s = _mm_set1_epi32(S32);
                _mm_cmpgt_epi32(_mm_xor_si128(a, s), _mm_xor_si128(b, s))
            }
        }
        #[inline(always)]
        fn blend(m: __m128i, a: __m128i, b: __m128i) -> __m128i {
            // SAFETY: SSE2 is part of x86-64. Lanes of `a` where `m` is set, else of `b`.
            unsafe { _mm_or_si128(_mm_and_si128(m, a), _mm_andnot_si128(m, b)) }
        }
    }

    impl Cx for U32x4 {
        #[inline(always)]
        fn min(self, o: Self) -> Self {
            U32x4(Self::blend(Self::gt(self.0, o.0), o.0, self.0))
        }
        #[inline(always)]
        fn max(self, o: Self) -> Self {
            U32x4(Self::blend(Self::gt(self.0, o.0), self.0, o.0))
        }
        #[inline(always)]
        fn cx(a: &mut Self, b: &mut Self) {
            let g = Self::gt(a.0, b.0);
            let (x, y) = (a.0, b.0);
            a.0 = Self::blend(g, y, x);
            b.0 = Self::blend(g, x, y);
        }
    }

    impl KeyVec for U32x4 {
        lane_access!(u32, 4);
        #[inline(always)]
        fn splat(k: u32) -> Self {
            // SAFETY: SSE2 is part of x86-64.
            U32x4(unsafe { _mm_set1_epi32(k as i32) })
        }
        #[inline(always)]
        fn load<T: Float<VKey = u32>>(src: &[T]) -> Self {
            check(src, 4, 4);
            // SAFETY: `src` holds 4 float32 values (checked); SSE2 is part of x86-64.
            unsafe {
                let bits = _mm_loadu_si128(src.as_ptr() as *const __m128i);
                let abs = _mm_and_si128(bits, _mm_set1_epi32(i32::MAX));
                let nan = _mm_cmpgt_epi32(abs, _mm_set1_epi32(INF32));
                let bits = Self::blend(nan, _mm_set1_epi32(NAN32), bits);
                let neg = _mm_srai_epi32::<31>(bits);
                U32x4(_mm_xor_si128(bits, _mm_or_si128(neg, _mm_set1_epi32(S32))))
            }
        }
    }

    /// 8 `u32` keys in an AVX2 register.
    #[derive(Clone, Copy)]
    #[repr(transparent)]
    pub struct U32x8(__m256i);

    impl Cx for U32x8 {
        #[inline(always)]
        fn min(self, o: Self) -> Self {
            // SAFETY: only inlined into functions compiled with avx2 (see the module docs).
            U32x8(unsafe { _mm256_min_epu32(self.0, o.0) })
        }
        #[inline(always)]
        fn max(self, o: Self) -> Self {
            // SAFETY: as `min`.
            U32x8(unsafe { _mm256_max_epu32(self.0, o.0) })
        }
    }

    impl KeyVec for U32x8 {
        lane_access!(u32, 8);
        #[inline(always)]
        fn splat(k: u32) -> Self {
            // SAFETY: as `min`.
            U32x8(unsafe { _mm256_set1_epi32(k as i32) })
        }
        #[inline(always)]
        fn load<T: Float<VKey = u32>>(src: &[T]) -> Self {
            check(src, 8, 4);
            // SAFETY: `src` holds 8 float32 values (checked); avx2 as `min`.
            unsafe {
                let bits = _mm256_loadu_si256(src.as_ptr() as *const __m256i);
                let abs = _mm256_and_si256(bits, _mm256_set1_epi32(i32::MAX));
                let nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(INF32));
                let bits = _mm256_blendv_epi8(bits, _mm256_set1_epi32(NAN32), nan);
                let neg = _mm256_srai_epi32::<31>(bits);
                U32x8(_mm256_xor_si256(
                    bits,
                    _mm256_or_si256(neg, _mm256_set1_epi32(S32)),
                ))
            }
        }
    }

    /// 16 `u32` keys in an AVX-512 register.
    #[derive(Clone, Copy)]
    #[repr(transparent)]
    pub struct U32x16(__m512i);

    impl Cx for U32x16 {
        #[inline(always)]
        fn min(self, o: Self) -> Self {
            // SAFETY: only inlined into functions compiled with avx512f (see the module docs).
            U32x16(unsafe { _mm512_min_epu32(self.0, o.0) })
        }
        #[inline(always)]
        fn max(self, o: Self) -> Self {
            // SAFETY: as `min`.
            U32x16(unsafe { _mm512_max_epu32(self.0, o.0) })
        }
    }

    impl KeyVec for U32x16 {
        lane_access!(u32, 16);
        #[inline(always)]
        fn splat(k: u32) -> Self {
            // SAFETY: as `min`.
            U32x16(unsafe { _mm512_set1_epi32(k as i32) })
        }
        #[inline(always)]
        fn load<T: Float<VKey = u32>>(src: &[T]) -> Self {
            check(src, 16, 4);
            // SAFETY: `src` holds 16 float32 values (checked); avx512f as `min`.
            unsafe {
                let bits = _mm512_loadu_si512(src.as_ptr() as *const __m512i);
                let abs = _mm512_and_si512(bits, _mm512_set1_epi32(i32::MAX));
                let nan = _mm512_cmpgt_epi32_mask(abs, _mm512_set1_epi32(INF32));
                let bits = _mm512_mask_blend_epi32(nan, bits, _mm512_set1_epi32(NAN32));
                let neg = _mm512_srai_epi32::<31>(bits);
                U32x16(_mm512_xor_si512(
                    bits,
                    _mm512_or_si512(neg, _mm512_set1_epi32(S32)),
                ))
            }
        }
    }

    /// 4 `u64` keys in an AVX2 register. AVX2 has no 64-bit min/max: one signed compare of
    /// sign-flipped keys and two blends per compare-exchange.
    #[derive(Clone, Copy)]
    #[repr(transparent)]
    pub struct U64x4(__m256i);

    impl U64x4 {
        #[inline(always)]
        fn gt(a: __m256i, b: __m256i) -> __m256i {
            // SAFETY: as `min`.
            unsafe {
                let s = _mm256_set1_epi64x(S64);
                _mm256_cmpgt_epi64(_mm256_xor_si256(a, s), _mm256_xor_si256(b, s))
            }
        }
    }

    impl Cx for U64x4 {
        #[inline(always)]
        fn min(self, o: Self) -> Self {
            // SAFETY: only inlined into functions compiled with avx2 (see the module docs).
            U64x4(unsafe { _mm256_blendv_epi8(self.0, o.0, Self::gt(self.0, o.0)) })
        }
        #[inline(always)]
        fn max(self, o: Self) -> Self {
            // SAFETY: as `min`.
            U64x4(unsafe { _mm256_blendv_epi8(o.0, self.0, Self::gt(self.0, o.0)) })
        }
        #[inline(always)]
        fn cx(a: &mut Self, b: &mut Self) {
            let g = Self::gt(a.0, b.0);
            let (x, y) = (a.0, b.0);
            // SAFETY: as `min`.
            unsafe {
                a.0 = _mm256_blendv_epi8(x, y, g);
                b.0 = _mm256_blendv_epi8(y, x, g);
            }
        }
    }

    impl KeyVec for U64x4 {
        lane_access!(u64, 4);
        #[inline(always)]
        fn splat(k: u64) -> Self {
            // SAFETY: as `min`.
            U64x4(unsafe { _mm256_set1_epi64x(k as i64) })
        }
        #[inline(always)]
        fn load<T: Float<VKey = u64>>(src: &[T]) -> Self {
            check(src, 4, 8);
            // SAFETY: `src` holds 4 float64 values (checked); avx2 as `min`.
            unsafe {
                let bits = _mm256_loadu_si256(src.as_ptr() as *const __m256i);
                let abs = _mm256_and_si256(bits, _mm256_set1_epi64x(i64::MAX));
                let nan = _mm256_cmpgt_epi64(abs, _mm256_set1_epi64x(INF64));
                let bits = _mm256_blendv_epi8(bits, _mm256_set1_epi64x(NAN64), nan);
                let neg = _mm256_cmpgt_epi64(_mm256_setzero_si256(), bits);
                U64x4(_mm256_xor_si256(
                    bits,
                    _mm256_or_si256(neg, _mm256_set1_epi64x(S64)),
                ))
            }
        }
    }

    /// 8 `u64` keys in an AVX-512 register (native 64-bit min/max).
    #[derive(Clone, Copy)]
    #[repr(transparent)]
    pub struct U64x8(__m512i);

    impl Cx for U64x8 {
        #[inline(always)]
        fn min(self, o: Self) -> Self {
            // SAFETY: only inlined into functions compiled with avx512f (see the module docs).
            U64x8(unsafe { _mm512_min_epu64(self.0, o.0) })
        }
        #[inline(always)]
        fn max(self, o: Self) -> Self {
            // SAFETY: as `min`.
            U64x8(unsafe { _mm512_max_epu64(self.0, o.0) })
        }
    }

    impl KeyVec for U64x8 {
        lane_access!(u64, 8);
        #[inline(always)]
        fn splat(k: u64) -> Self {
            // SAFETY: as `min`.
            U64x8(unsafe { _mm512_set1_epi64(k as i64) })
        }
        #[inline(always)]
        fn load<T: Float<VKey = u64>>(src: &[T]) -> Self {
            check(src, 8, 8);
            // SAFETY: `src` holds 8 float64 values (checked); avx512f as `min`.
            unsafe {
                let bits = _mm512_loadu_si512(src.as_ptr() as *const __m512i);
                let abs = _mm512_and_si512(bits, _mm512_set1_epi64(i64::MAX));
                let nan = _mm512_cmpgt_epi64_mask(abs, _mm512_set1_epi64(INF64));
                let bits = _mm512_mask_blend_epi64(nan, bits, _mm512_set1_epi64(NAN64));
                let neg = _mm512_srai_epi64::<63>(bits);
                U64x8(_mm512_xor_si512(
                    bits,
                    _mm512_or_si512(neg, _mm512_set1_epi64(S64)),
                ))
            }
        }
    }
}

/// The compiled networks (`build.rs` output).
#[allow(clippy::all)]
pub mod generated {
    use super::{Cx, Net, UseNet};
    include!(concat!(env!("OUT_DIR"), "/networks.rs"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_simd_level_applies_the_same_network() {
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
        for level in crate::simd::ALL {
            // A level this CPU lacks is capped by set_level; call the dispatcher with the level
            // actually available.
            let l = crate::simd::cap(level);
            let mut got = keys.clone();
            apply_dispatch(l, &mut got, &net);
            assert_eq!(got, want, "{}", l.name());
        }
    }

    #[test]
    fn presorted_plan_gives_the_networks_bits() {
        // Every level (AVX-512 presorts groups of 16 rows in registers) against the plain
        // interpreted network, on keys with many ties, u32 and u64, full and partial groups.
        let mut state = 777u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for n in [1usize, 5, 16, 17, 31, 32, 33, 65, 100, 130, 200] {
            let wanted_sets = [
                vec![n / 2],
                vec![(n - 1) / 2, n / 2],
                (n / 10..n - n / 10).collect::<Vec<_>>(),
                (0..n).collect(),
            ];
            for wanted in &wanted_sets {
                let net = network(n, wanted);
                let k32: Vec<u32> = (0..n * LANES).map(|_| (next() % 5) as u32).collect();
                let k64: Vec<u64> = (0..n * LANES).map(|_| next() % 1000).collect();
                let (mut w32, mut w64) = (k32.clone(), k64.clone());
                apply(&mut w32, &net);
                apply(&mut w64, &net);
                for level in crate::simd::ALL {
                    let l = crate::simd::cap(level);
                    let (mut g32, mut g64) = (k32.clone(), k64.clone());
                    let plan = Plan::new(l, n, wanted);
                    plan.apply(&mut g32);
                    plan.apply(&mut g64);
                    for &r in wanted {
                        let row = r * LANES..(r + 1) * LANES;
                        assert_eq!(g32[row.clone()], w32[row.clone()], "n={n} rank {r}");
                        assert_eq!(g64[row.clone()], w64[row], "n={n} rank {r}");
                    }
                }
            }
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
