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
//! (`netgen.rs`, docs/performance.md). Two forms run it:
//!
//! * **compiled** ([`generated`]): `build.rs` emits one straight-line function per size
//!   (`netgen::generated_size`: every `n <= 32`, padded sizes up to 64), generic over the
//!   lane vector [`Cx`], so one source serves every SIMD level. The median and trimmed mean
//!   run these (`rules/columns.rs`).
//! * **interpreted** ([`apply`]): a comparator list walked at run time over a block of keys in
//!   memory, for the rules that need every rank with its row (meamed, weighted order
//!   statistics) and for `n` beyond the generated sizes (up to [`MAX_N`]).

use crate::simd::{Isa, Proof};

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
    proof: Proof,
    n: usize,
    /// The proof that groups of [`PRESORT`] rows can be sorted in AVX-512 registers.
    #[cfg(target_arch = "x86_64")]
    presort: Option<crate::simd::Avx512>,
    net: Vec<(u32, u32)>,
}

impl Plan {
    pub fn new(level: crate::simd::Level, n: usize, wanted: &[usize]) -> Plan {
        let proof = crate::simd::proof_of(level);
        #[cfg(target_arch = "x86_64")]
        let presort = match proof {
            Proof::Avx512(t) => Some(t),
            _ => None,
        };
        #[cfg(not(target_arch = "x86_64"))]
        let presort: Option<()> = None;
        if presort.is_none() {
            return Plan {
                proof,
                n,
                #[cfg(target_arch = "x86_64")]
                presort,
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
            proof,
            n,
            #[cfg(target_arch = "x86_64")]
            presort,
            net: level_order(n, crate::netgen::prune(n, &rest, wanted)),
        }
    }

    /// Run the network on a block of keys laid out `keys[row * LANES + lane]`.
    pub fn apply<K: Ord + Copy + Send>(&self, keys: &mut [K]) {
        assert_eq!(keys.len(), self.n * LANES);
        #[cfg(target_arch = "x86_64")]
        if let Some(t) = self.presort {
            presort(t, &mut *keys);
        }
        interpret(self.proof, keys, &self.net);
    }
}

crate::simd::per_level! {
    avx512 only;
    /// Sort each aligned group of [`PRESORT`] rows of `keys` (`[row * LANES + lane]`) per lane
    /// with the compiled sort network of the group's size, in registers (AVX-512).
    fn presort[K: Ord + Copy][K](_isa: I, keys: &mut [K]) {
        presort_groups(keys, PRESORT)
    }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn presort_groups<K: Ord + Copy>(keys: &mut [K], g: usize) {
    struct Group<'a, K>(&'a mut [K]);
    impl<K: Ord + Copy> UseNet for Group<'_, K> {
        type Out = ();
        #[inline(always)]
        fn run<const N: usize, S: Net<N>>(self) {
            let k = self.0;
            let sorted = S::apply::<Lanes<K, LANES>>(
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

crate::simd::per_level! {
    avx2;
    /// [`apply`] compiled per level (same result on every level: integer min/max). AVX-512 CPUs
    /// run the AVX2 clone: compiled for AVX-512 the interpreter measured slower (the median
    /// 1.26-1.44x the AVX2 time at n = 10, 50 and 200, docs/performance.md), unlike the compiled
    /// networks.
    fn interpret[K: Ord + Copy][K](_isa: I, keys: &mut [K], net: &[(u32, u32)]) {
        apply(keys, net)
    }
}

/// [`apply`] compiled for `level` (or the best level below it that this CPU has).
#[cfg(test)]
fn apply_dispatch<K: Ord + Copy + Send>(
    level: crate::simd::Level,
    keys: &mut [K],
    net: &[(u32, u32)],
) {
    interpret(crate::simd::proof_of(level), keys, net);
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

/// A [`Cx`] vector of `L` keys as the column kernels use it, built under proof `I` of its SIMD
/// level: a vector of explicit AVX2 or AVX-512 intrinsics exists only where a token proved the
/// CPU runs them, so its safe methods are sound.
pub(crate) trait KeyVec<I: Isa>: Cx + Send + Sync + 'static {
    type K: Ord + Copy + Send + Sync;
    /// Lanes (coordinates) per vector.
    const L: usize;
    fn splat(isa: I, k: Self::K) -> Self;
    fn lane(self, l: usize) -> Self::K;
    /// The `L` keys, then copies of the first up to 16 (the most lanes of any vector), as a
    /// plain array: loops over it with a constant trip count vectorise.
    fn keys(self) -> [Self::K; 16];
    /// The keys of `src[..L]` (value-only keys, `order.rs`).
    fn load<T: crate::order::Float<VKey = Self::K>>(isa: I, src: &[T]) -> Self;
}

// Plain arrays: no intrinsics, so any level (or none) may build them.
impl<I: Isa, K: Ord + Copy + Send + Sync + 'static, const L: usize> KeyVec<I> for Lanes<K, L> {
    type K = K;
    const L: usize = L;
    #[inline(always)]
    fn splat(_: I, k: K) -> Self {
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
    fn load<T: crate::order::Float<VKey = K>>(_: I, src: &[T]) -> Self {
        let a: &[T; L] = src[..L].try_into().expect("a slice of L values");
        Lanes(core::array::from_fn(|l| a[l].vkey()))
    }
}

/// A value-only key type, its lane vector per SIMD level, and the keys below and above every
/// real key (`order.rs` never produces them: they encode a negative NaN, which is made positive
/// first, and an all-ones payload above the canonical NaN), which pad a network's unused slots.
///
/// x86-64: the portable level is SSE2 for 32-bit keys (explicit intrinsics: SSE2 has no
/// unsigned 32-bit min/max, so it compares biased keys) and one key per vector for 64-bit keys
/// (SSE2 has no 64-bit compare); AVX2 and AVX-512 are explicit intrinsics. aarch64: the
/// portable level is one key per vector, NEON four or two keys as plain arrays, which LLVM
/// compiles to NEON `umin`/`umax`.
pub(crate) trait LaneKey: Ord + Copy + Send + Sync + 'static {
    const BELOW: Self;
    const ABOVE: Self;
    /// The vector of these keys at level `I`.
    type At<I: Isa>: KeyVec<I, K = Self>;
}

impl LaneKey for u32 {
    const BELOW: u32 = 0;
    const ABOVE: u32 = u32::MAX;
    type At<I: Isa> = I::Keys32;
}

impl LaneKey for u64 {
    const BELOW: u64 = 0;
    const ABOVE: u64 = u64::MAX;
    type At<I: Isa> = I::Keys64;
}

/// The portable level's vectors.
#[cfg(target_arch = "x86_64")]
pub(crate) type Base32 = x86::U32x4;
#[cfg(not(target_arch = "x86_64"))]
pub(crate) type Base32 = Lanes<u32, 1>;
pub(crate) type Base64 = Lanes<u64, 1>;

/// A compiled network on `N` slots, for any lane vector.
pub trait Net<const N: usize> {
    /// Slot `i` starts as `load(i)`; the wanted ranks end up in slot `rank` of the result.
    /// Returned by value: an `&mut [V; N]` out-parameter made every caller initialise the
    /// array first (a 4 KB memset per 16-coordinate block at N = 64, 9 % of the median's time
    /// at n = 50, perf).
    fn apply<V: Cx>(load: impl Fn(usize) -> V) -> [V; N];
}

/// Work that runs with a compiled network of a size known only at run time: the generated
/// dispatchers (`generated::with_median`, `generated::with_sort`) call `run` with the network's
/// static type, so the work is compiled once per network.
pub trait UseNet {
    type Out;
    fn run<const N: usize, S: Net<N>>(self) -> Self::Out;
}

/// Explicit x86-64 lane vectors. Their methods use the intrinsics of their level without a
/// `#[target_feature]` of their own: they are `#[inline(always)]` and inlined into the column
/// kernels' per-level clones (`simd::per_level!`), which carry the features. A vector of
/// an AVX2 or AVX-512 type is only built with that level's token (`KeyVec<Avx2>`,
/// `KeyVec<Avx512>`), so every method runs on a CPU that has its instructions. Each `load`
/// computes `order.rs`'s `ord32`/`ord64` on a whole vector (tested equal).
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use super::{Cx, KeyVec};
    use crate::order::Float;
    use crate::simd::{Avx2, Avx512, Isa};
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
                // SAFETY: a SIMD register is plain bits, as an array of its lanes.
                let a: [$k; $l] = unsafe { std::mem::transmute(self.0) };
                a[l]
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
    pub(crate) struct U32x4(__m128i);

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

    impl<I: Isa> KeyVec<I> for U32x4 {
        lane_access!(u32, 4);
        #[inline(always)]
        fn splat(_: I, k: u32) -> Self {
            // SAFETY: SSE2 is part of x86-64.
            U32x4(unsafe { _mm_set1_epi32(k as i32) })
        }
        #[inline(always)]
        fn load<T: Float<VKey = u32>>(_: I, src: &[T]) -> Self {
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
    pub(crate) struct U32x8(__m256i);

    impl Cx for U32x8 {
        #[inline(always)]
        fn min(self, o: Self) -> Self {
            // SAFETY: a U32x8 or U64x4 is only built under an `Avx2` token (`KeyVec<Avx2>`).
            U32x8(unsafe { _mm256_min_epu32(self.0, o.0) })
        }
        #[inline(always)]
        fn max(self, o: Self) -> Self {
            // SAFETY: as `min`.
            U32x8(unsafe { _mm256_max_epu32(self.0, o.0) })
        }
    }

    impl KeyVec<Avx2> for U32x8 {
        lane_access!(u32, 8);
        #[inline(always)]
        fn splat(_: Avx2, k: u32) -> Self {
            // SAFETY: as `min`.
            U32x8(unsafe { _mm256_set1_epi32(k as i32) })
        }
        #[inline(always)]
        fn load<T: Float<VKey = u32>>(_: Avx2, src: &[T]) -> Self {
            check(src, 8, 4);
            // SAFETY: `src` holds 8 float32 values (checked); the token proves AVX2.
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
    pub(crate) struct U32x16(__m512i);

    impl Cx for U32x16 {
        #[inline(always)]
        fn min(self, o: Self) -> Self {
            // SAFETY: a U32x16 or U64x8 is only built under an `Avx512` token (`KeyVec<Avx512>`).
            U32x16(unsafe { _mm512_min_epu32(self.0, o.0) })
        }
        #[inline(always)]
        fn max(self, o: Self) -> Self {
            // SAFETY: as `min`.
            U32x16(unsafe { _mm512_max_epu32(self.0, o.0) })
        }
    }

    impl KeyVec<Avx512> for U32x16 {
        lane_access!(u32, 16);
        #[inline(always)]
        fn splat(_: Avx512, k: u32) -> Self {
            // SAFETY: as `min`.
            U32x16(unsafe { _mm512_set1_epi32(k as i32) })
        }
        #[inline(always)]
        fn load<T: Float<VKey = u32>>(_: Avx512, src: &[T]) -> Self {
            check(src, 16, 4);
            // SAFETY: `src` holds 16 float32 values (checked); the token proves AVX-512.
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
    pub(crate) struct U64x4(__m256i);

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
            // SAFETY: a U32x8 or U64x4 is only built under an `Avx2` token (`KeyVec<Avx2>`).
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

    impl KeyVec<Avx2> for U64x4 {
        lane_access!(u64, 4);
        #[inline(always)]
        fn splat(_: Avx2, k: u64) -> Self {
            // SAFETY: as `min`.
            U64x4(unsafe { _mm256_set1_epi64x(k as i64) })
        }
        #[inline(always)]
        fn load<T: Float<VKey = u64>>(_: Avx2, src: &[T]) -> Self {
            check(src, 4, 8);
            // SAFETY: `src` holds 4 float64 values (checked); the token proves AVX2.
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
    pub(crate) struct U64x8(__m512i);

    impl Cx for U64x8 {
        #[inline(always)]
        fn min(self, o: Self) -> Self {
            // SAFETY: a U32x16 or U64x8 is only built under an `Avx512` token (`KeyVec<Avx512>`).
            U64x8(unsafe { _mm512_min_epu64(self.0, o.0) })
        }
        #[inline(always)]
        fn max(self, o: Self) -> Self {
            // SAFETY: as `min`.
            U64x8(unsafe { _mm512_max_epu64(self.0, o.0) })
        }
    }

    impl KeyVec<Avx512> for U64x8 {
        lane_access!(u64, 8);
        #[inline(always)]
        fn splat(_: Avx512, k: u64) -> Self {
            // SAFETY: as `min`.
            U64x8(unsafe { _mm512_set1_epi64(k as i64) })
        }
        #[inline(always)]
        fn load<T: Float<VKey = u64>>(_: Avx512, src: &[T]) -> Self {
            check(src, 8, 8);
            // SAFETY: `src` holds 8 float64 values (checked); the token proves AVX-512.
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
