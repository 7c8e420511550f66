//! Runtime CPU dispatch. Wheels are built for baseline x86-64 (never `-C target-cpu=native`);
//! hot loops are compiled once more per SIMD level and picked at run time.
//!
//! Every clone runs the *same* source with the same explicit lane structure, and Rust never
//! contracts `a * b + c` into an FMA, so all levels give bit-identical results: the SIMD
//! level changes speed, never answers (tests check this by forcing `scalar`).
//!
//! Soundness rests on proofs, not conventions. A level's instructions run only in code that
//! holds its token ([`Avx2`], [`Avx512`], [`Neon`]), a zero-sized value made only by its
//! `detect` after the CPU reported the features. The per-level clones come from one mechanism,
//! [`per_level!`]: a kernel is written once, generic over the token type, and the macro emits
//! one clone per level (the only place each level's `#[target_feature]` list is written) and
//! the dispatch that picks one from a [`Proof`]. Each clone sits in a module of its own, so the
//! compiler builds the levels' code in separate codegen units, in parallel.

use std::sync::atomic::{AtomicU8, Ordering};

/// A dispatch level. `Scalar` is the portable baseline build (SSE2 on x86-64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Scalar = 1,
    Avx2 = 2,
    /// AVX-512 F/BW/DQ/VL (with AVX2 and FMA): native 64-bit integer min/max, which the
    /// networks' compare-exchanges on `u64` keys need (AVX2 emulates them).
    Avx512 = 3,
    /// aarch64's Advanced SIMD, part of every aarch64 CPU (the selection networks run on
    /// 128-bit NEON vectors there; the other kernels rely on the compiler's NEON code).
    Neon = 4,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
            Level::Neon => "neon",
        }
    }
    pub const NAMES: [&'static str; 4] = ["scalar", "avx2", "avx512", "neon"];

    pub fn parse(s: &str) -> Option<Level> {
        match s {
            "scalar" => Some(Level::Scalar),
            "avx2" => Some(Level::Avx2),
            "avx512" => Some(Level::Avx512),
            "neon" => Some(Level::Neon),
            _ => None,
        }
    }
}

/// Every level, for tests that run a kernel on each: [`cap`] or [`set_level`] turns the ones
/// this CPU lacks into the best it has (on aarch64 that tests `Neon` and `Scalar`).
#[cfg(test)]
pub const ALL: [Level; 4] = [Level::Scalar, Level::Avx2, Level::Avx512, Level::Neon];

/// 0 = not decided yet.
static LEVEL: AtomicU8 = AtomicU8::new(0);

/// The best level this CPU supports.
pub fn detected() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        if Avx512::detect().is_some() {
            return Level::Avx512;
        }
        if Avx2::detect().is_some() {
            return Level::Avx2;
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if Neon::detect().is_some() {
            return Level::Neon;
        }
    }
    Level::Scalar
}

/// Whether this CPU can run `l`.
pub fn available(l: Level) -> bool {
    let best = detected();
    match l {
        Level::Scalar => true,
        Level::Neon => best == Level::Neon,
        Level::Avx2 | Level::Avx512 => best != Level::Neon && l <= best,
    }
}

/// `requested` if this CPU can run it, else the best level below it that it can run.
pub fn cap(requested: Level) -> Level {
    [Level::Neon, Level::Avx512, Level::Avx2, Level::Scalar]
        .into_iter()
        .find(|&l| l <= requested && available(l))
        .unwrap_or(Level::Scalar)
}

fn from_u8(v: u8) -> Level {
    match v {
        4 => Level::Neon,
        3 => Level::Avx512,
        2 => Level::Avx2,
        _ => Level::Scalar,
    }
}

/// The level kernels use by default: the best the CPU has. The compiled selection networks
/// measured faster with AVX-512 than with AVX2 (docs/performance.md: the median and trimmed
/// mean 1.1-1.3x at float32 n = 10, about 1.4x at float64 n = 50, on a Zen 4). `AGGKIT_SIMD=avx2`
/// keeps 512-bit code off (some older Intel cores lower their clock for it).
#[cfg(not(target_arch = "aarch64"))]
pub const DEFAULT_MAX: Level = Level::Avx512;
#[cfg(target_arch = "aarch64")]
pub const DEFAULT_MAX: Level = Level::Neon;

/// The level kernels use: the detected one up to [`DEFAULT_MAX`]; `AGGKIT_SIMD=scalar|avx2|
/// avx512` or [`set_level`] picks another (capped at what the CPU supports).
pub fn level() -> Level {
    let v = LEVEL.load(Ordering::Relaxed);
    if v != 0 {
        return from_u8(v);
    }
    let mut l = cap(DEFAULT_MAX);
    if let Some(req) = std::env::var("AGGKIT_SIMD")
        .ok()
        .as_deref()
        .and_then(Level::parse)
    {
        l = cap(req);
    }
    LEVEL.store(l as u8, Ordering::Relaxed);
    l
}

/// Force a level (capped at what the CPU supports); returns the level now in force.
pub fn set_level(requested: Level) -> Level {
    let l = cap(requested);
    LEVEL.store(l as u8, Ordering::Relaxed);
    l
}

// ---------------------------------------------------------------------------------------------
// Proofs of CPU support, and the per-level clones

/// The portable baseline: no proof needed (SSE2 is part of x86-64, NEON of aarch64).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scalar;

/// Proof that this CPU runs AVX2, FMA and F16C instructions (F16C converts float16; every CPU
/// with AVX2 has it); only [`Avx2::detect`] makes one.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2 {
    _detected: (),
}

#[cfg(target_arch = "x86_64")]
impl Avx2 {
    pub(crate) fn detect() -> Option<Avx2> {
        use std::arch::is_x86_feature_detected as has;
        (has!("avx2") && has!("fma") && has!("f16c")).then_some(Avx2 { _detected: () })
    }
}

/// Proof that this CPU runs AVX-512 F/BW/DQ/VL, AVX2, FMA and F16C instructions; only
/// [`Avx512::detect`] makes one.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512 {
    _detected: (),
}

#[cfg(target_arch = "x86_64")]
impl Avx512 {
    pub(crate) fn detect() -> Option<Avx512> {
        use std::arch::is_x86_feature_detected as has;
        let ok = Avx2::detect().is_some()
            && has!("avx512f")
            && has!("avx512bw")
            && has!("avx512dq")
            && has!("avx512vl");
        ok.then_some(Avx512 { _detected: () })
    }

    /// `detect` checked AVX2, FMA and F16C too.
    pub(crate) fn avx2(self) -> Avx2 {
        Avx2 { _detected: () }
    }
}

/// Proof that this CPU runs NEON (part of every aarch64 CPU; detected all the same).
#[cfg(target_arch = "aarch64")]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Neon {
    _detected: (),
}

#[cfg(target_arch = "aarch64")]
impl Neon {
    pub(crate) fn detect() -> Option<Neon> {
        std::arch::is_aarch64_feature_detected!("neon").then_some(Neon { _detected: () })
    }
}

/// A SIMD level as a type, implemented by the proof tokens: kernels generic over it are
/// compiled once per level, with its lane vectors.
pub(crate) trait Isa: Copy + Send + Sync + 'static {
    /// The lane vectors of 32- and 64-bit selection-network keys at this level.
    type Keys32: crate::network::KeyVec<Self, K = u32>;
    type Keys64: crate::network::KeyVec<Self, K = u64>;

    /// The AVX2 and FMA proof this level carries, if any.
    #[cfg(target_arch = "x86_64")]
    fn as_avx2(self) -> Option<Avx2> {
        None
    }

    /// The AVX-512 proof this level carries, if any.
    #[cfg(target_arch = "x86_64")]
    fn as_avx512(self) -> Option<Avx512> {
        None
    }
}

impl Isa for Scalar {
    type Keys32 = crate::network::Base32;
    type Keys64 = crate::network::Base64;
}

#[cfg(target_arch = "x86_64")]
impl Isa for Avx2 {
    type Keys32 = crate::network::x86::U32x8;
    type Keys64 = crate::network::x86::U64x4;
    fn as_avx2(self) -> Option<Avx2> {
        Some(self)
    }
}

#[cfg(target_arch = "x86_64")]
impl Isa for Avx512 {
    type Keys32 = crate::network::x86::U32x16;
    type Keys64 = crate::network::x86::U64x8;
    fn as_avx2(self) -> Option<Avx2> {
        Some(self.avx2())
    }
    fn as_avx512(self) -> Option<Avx512> {
        Some(self)
    }
}

#[cfg(target_arch = "aarch64")]
impl Isa for Neon {
    type Keys32 = crate::network::Lanes<u32, 4>;
    type Keys64 = crate::network::Lanes<u64, 2>;
}

/// The proof of a level: what [`per_level!`]'s dispatch runs a kernel with.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Proof {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2(Avx2),
    #[cfg(target_arch = "x86_64")]
    Avx512(Avx512),
    #[cfg(target_arch = "aarch64")]
    Neon(Neon),
}

/// The proof of level `l` if this CPU has it, else of the best level below it.
pub(crate) fn proof_of(l: Level) -> Proof {
    match l {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => match Avx512::detect() {
            Some(t) => Proof::Avx512(t),
            None => proof_of(Level::Avx2),
        },
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => Avx2::detect().map_or(Proof::Scalar, Proof::Avx2),
        #[cfg(target_arch = "aarch64")]
        Level::Neon => Neon::detect().map_or(Proof::Scalar, Proof::Neon),
        _ => Proof::Scalar,
    }
}

/// The proof of the level in force ([`level`]).
pub(crate) fn proof() -> Proof {
    proof_of(level())
}

/// Emits a kernel compiled once per SIMD level, and its dispatch, from one definition:
///
/// ```ignore
/// per_level! {
///     avx512;                                   // the levels: see below
///     /// Documentation of the kernel.
///     fn name[T: Float][T](isa: I, x: &[T]) -> f64 {
///         body::<T, I>(isa, x)                  // `I` is the level's token type, `isa` the token
///     }
/// }
/// ```
///
/// The first brackets hold the generic parameters, the second the arguments that name them
/// (for the turbofish of the dispatch). The macro emits `fn name<T: Float>(proof: Proof, x:
/// &[T]) -> f64`, which runs the clone for the level `proof` proves, and module `name` with one
/// clone per level, each in a module of its own (the compiler builds each level's code in a
/// codegen unit of its own, in parallel), with the level's `#[target_feature]` list: the only
/// place each list is written. Each clone is a function with the kernel's own parameters, so
/// the compiler sees its references as it would any function's (no-alias).
///
/// Levels: `avx512` clones scalar, AVX2 and AVX-512; `avx2` clones scalar and AVX2, and AVX-512
/// CPUs run the AVX2 clone; aarch64 always gets scalar and NEON. `avx512 only` emits the
/// AVX-512 clone alone, and `name` takes an [`Avx512`] token instead of a proof.
macro_rules! per_level {
    (
        $levels:ident $($only:ident)?;
        $(#[$meta:meta])*
        $vis:vis fn $name:ident [$($gen:tt)*] [$($garg:tt)*]
        ($isa:ident : I $(, $arg:ident : $aty:ty)* $(,)?) $(-> $ret:ty)? $body:block
    ) => {
        $crate::simd::per_level!(@entry $levels $($only)?; $(#[$meta])* $vis $name [$($gen)*]
            [$($garg)*] ($($arg : $aty),*) $(-> $ret)?);

        #[allow(dead_code, non_snake_case)]
        mod $name {
            $crate::simd::per_level!(@clones $levels $($only)?; [$($gen)*] ($isa $(, $arg : $aty)*)
                ($(-> $ret)?) $body);
        }
    };

    (@entry avx512; $(#[$meta:meta])* $vis:vis $name:ident [$($gen:tt)*] [$($garg:tt)*]
        ($($arg:ident : $aty:ty),*) $(-> $ret:ty)?) => {
        $(#[$meta])*
        $vis fn $name<$($gen)*>(proof: $crate::simd::Proof $(, $arg: $aty)*) $(-> $ret)? {
            match proof {
                $crate::simd::Proof::Scalar => $name::scalar::run::<$($garg)*>($crate::simd::Scalar $(, $arg)*),
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the token proves the CPU runs the clone's instructions.
                $crate::simd::Proof::Avx2(t) => unsafe { $name::avx2::run::<$($garg)*>(t $(, $arg)*) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the token proves the CPU runs the clone's instructions.
                $crate::simd::Proof::Avx512(t) => unsafe { $name::avx512::run::<$($garg)*>(t $(, $arg)*) },
                #[cfg(target_arch = "aarch64")]
                // SAFETY: the token proves the CPU runs the clone's instructions.
                $crate::simd::Proof::Neon(t) => unsafe { $name::neon::run::<$($garg)*>(t $(, $arg)*) },
            }
        }
    };
    (@entry avx2; $(#[$meta:meta])* $vis:vis $name:ident [$($gen:tt)*] [$($garg:tt)*]
        ($($arg:ident : $aty:ty),*) $(-> $ret:ty)?) => {
        $(#[$meta])*
        $vis fn $name<$($gen)*>(proof: $crate::simd::Proof $(, $arg: $aty)*) $(-> $ret)? {
            match proof {
                $crate::simd::Proof::Scalar => $name::scalar::run::<$($garg)*>($crate::simd::Scalar $(, $arg)*),
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the token proves the CPU runs the clone's instructions.
                $crate::simd::Proof::Avx2(t) => unsafe { $name::avx2::run::<$($garg)*>(t $(, $arg)*) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: an AVX-512 CPU runs AVX2 and FMA (the token's `avx2`).
                $crate::simd::Proof::Avx512(t) => unsafe { $name::avx2::run::<$($garg)*>(t.avx2() $(, $arg)*) },
                #[cfg(target_arch = "aarch64")]
                // SAFETY: the token proves the CPU runs the clone's instructions.
                $crate::simd::Proof::Neon(t) => unsafe { $name::neon::run::<$($garg)*>(t $(, $arg)*) },
            }
        }
    };
    (@entry avx512 only; $(#[$meta:meta])* $vis:vis $name:ident [$($gen:tt)*] [$($garg:tt)*]
        ($($arg:ident : $aty:ty),*) $(-> $ret:ty)?) => {
        $(#[$meta])*
        #[cfg(target_arch = "x86_64")]
        $vis fn $name<$($gen)*>(t: $crate::simd::Avx512 $(, $arg: $aty)*) $(-> $ret)? {
            // SAFETY: the token proves the CPU runs the clone's instructions.
            unsafe { $name::avx512::run::<$($garg)*>(t $(, $arg)*) }
        }
    };

    (@clones avx512; $gen:tt $args:tt $ret:tt $body:block) => {
        $crate::simd::per_level!(@clone scalar, $crate::simd::Scalar, ""; $gen $args $ret $body);
        $crate::simd::per_level!(@clone avx2, $crate::simd::Avx2, "avx2,fma,f16c"; $gen $args $ret $body);
        $crate::simd::per_level!(@clone avx512, $crate::simd::Avx512,
            "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c"; $gen $args $ret $body);
        $crate::simd::per_level!(@clone neon, $crate::simd::Neon, "neon"; $gen $args $ret $body);
    };
    (@clones avx2; $gen:tt $args:tt $ret:tt $body:block) => {
        $crate::simd::per_level!(@clone scalar, $crate::simd::Scalar, ""; $gen $args $ret $body);
        $crate::simd::per_level!(@clone avx2, $crate::simd::Avx2, "avx2,fma,f16c"; $gen $args $ret $body);
        $crate::simd::per_level!(@clone neon, $crate::simd::Neon, "neon"; $gen $args $ret $body);
    };
    (@clones avx512 only; $gen:tt $args:tt $ret:tt $body:block) => {
        $crate::simd::per_level!(@clone avx512, $crate::simd::Avx512,
            "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c"; $gen $args $ret $body);
    };

    (@clone scalar, $tok:ty, $features:literal; [$($gen:tt)*] ($isa:ident $(, $arg:ident : $aty:ty)*)
        ($(-> $ret:ty)?) $body:block) => {
        pub(super) mod scalar {
            use super::super::*;
            #[inline(never)]
            #[allow(clippy::too_many_arguments)] // the kernel's own, and the token
            pub(in super::super) fn run<$($gen)*>($isa: $tok $(, $arg: $aty)*) $(-> $ret)? {
                #[allow(dead_code)]
                type I = $tok;
                $body
            }
        }
    };
    (@clone neon, $tok:ty, $features:literal; [$($gen:tt)*] ($isa:ident $(, $arg:ident : $aty:ty)*)
        ($(-> $ret:ty)?) $body:block) => {
        #[cfg(target_arch = "aarch64")]
        pub(super) mod neon {
            use super::super::*;
            #[target_feature(enable = $features)]
            #[allow(clippy::too_many_arguments)] // the kernel's own, and the token
            pub(in super::super) fn run<$($gen)*>($isa: $tok $(, $arg: $aty)*) $(-> $ret)? {
                #[allow(dead_code)]
                type I = $tok;
                $body
            }
        }
    };
    (@clone $level:ident, $tok:ty, $features:literal; [$($gen:tt)*] ($isa:ident $(, $arg:ident : $aty:ty)*)
        ($(-> $ret:ty)?) $body:block) => {
        #[cfg(target_arch = "x86_64")]
        pub(super) mod $level {
            use super::super::*;
            #[target_feature(enable = $features)]
            #[allow(clippy::too_many_arguments)] // the kernel's own, and the token
            pub(in super::super) fn run<$($gen)*>($isa: $tok $(, $arg: $aty)*) $(-> $ret)? {
                #[allow(dead_code)]
                type I = $tok;
                $body
            }
        }
    };
}
pub(crate) use per_level;
