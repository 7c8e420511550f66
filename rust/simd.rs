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
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Avx2 => "avx2",
        }
    }
    pub fn parse(s: &str) -> Option<Level> {
        match s {
            "scalar" => Some(Level::Scalar),
            "avx2" => Some(Level::Avx2),
            _ => None,
        }
    }
}

/// 0 = not decided yet.
static LEVEL: AtomicU8 = AtomicU8::new(0);

/// The best level this CPU supports.
pub fn detected() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Level::Avx2;
        }
    }
    Level::Scalar
}

fn from_u8(v: u8) -> Level {
    if v == Level::Avx2 as u8 {
        Level::Avx2
    } else {
        Level::Scalar
    }
}

/// The level kernels use: the detected one, lowered by `AGGKIT_SIMD=scalar` or [`set_level`].
pub fn level() -> Level {
    let v = LEVEL.load(Ordering::Relaxed);
    if v != 0 {
        return from_u8(v);
    }
    let mut l = detected();
    if let Some(req) = std::env::var("AGGKIT_SIMD")
        .ok()
        .as_deref()
        .and_then(Level::parse)
    {
        l = l.min(req);
    }
    LEVEL.store(l as u8, Ordering::Relaxed);
    l
}

/// Force a level (capped at what the CPU supports); returns the level now in force.
pub fn set_level(requested: Level) -> Level {
    let l = requested.min(detected());
    LEVEL.store(l as u8, Ordering::Relaxed);
    l
}
