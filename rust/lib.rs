//! aggkit's core: robust aggregation rules over `n` input vectors of `d` coordinates.
//!
//! A rule reads [`Rows`] (`n` borrowed rows of equal length; a numpy `(n, d)` array and a list of
//! `n` arrays alike) and writes one output of `d` values. Kernels are pure Rust: no Python in
//! this crate except behind the `python` feature (`rust/python/`), so `cargo test` needs no
//! interpreter. Conventions shared by every rule (DESIGN.md §3):
//!
//! * values are ranked by `(value, row index)` with IEEE total order, NaN above `+inf`
//!   ([`order`]);
//! * sums accumulate in float64 ([`order::Float::Acc`]);
//! * each output coordinate or score is computed by one task in a fixed order, so results are
//!   bit-identical for any thread count ([`pool`]) and SIMD level ([`simd`]);
//! * inputs are never written to.

pub mod columns;
pub mod distance;
pub mod error;
pub mod input;
pub mod monoid;
pub mod netgen;
pub mod network;
pub mod order;
pub mod pool;
pub mod rules;
pub mod simd;
#[cfg(test)]
pub(crate) mod testing;

#[cfg(feature = "python")]
mod python;

pub use error::AggError;
pub use input::{NonFinite, Rows};
