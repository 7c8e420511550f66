//! Runtime CPU dispatch. Wheels are built for baseline x86-64 (never `-C target-cpu=native`);
//! hot loops are compiled a second time with `#[target_feature]` and picked at run time.
//!
//! Every clone runs the *same* source with the same explicit lane structure, and Rust never
//! contracts `a * b + c` into an FMA, so all levels give bit-identical results: the SIMD
//! level changes speed, never answers (tests check this by forcing `scalar`).

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
pub const ALL: [Level; 4] = [Level::Scalar, Level::Avx2, Level::Avx512, Level::Neon];

/// 0 = not decided yet.
static LEVEL: AtomicU8 = AtomicU8::new(0);

/// The best level this CPU supports.
pub fn detected() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx2") && has!("fma") {
            if has!("avx512f") && has!("avx512bw") && has!("avx512dq") && has!("avx512vl") {
                return Level::Avx512;
            }
            return Level::Avx2;
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        return Level::Neon;
    }
    #[allow(unreachable_code)]
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

/// The level kernels use by default: the best the CPU has. AVX-512 was opt-in while no kernel
/// measured faster with it; the compiled selection networks do (benches/RESULTS.md: the median
/// and trimmed mean 1.1-1.3x at float32 n = 10, about 1.4x at float64 n = 50, in four
/// alternating runs against AVX2 on the development machine's Zen 4). `AGGKIT_SIMD=avx2`
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
