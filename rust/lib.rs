//! aggkit's core: robust aggregation rules over `n` input vectors of `d` coordinates.
//!
//! A rule reads [`Rows`] (`n` borrowed rows of equal length; a numpy `(n, d)` array and a list of
//! `n` arrays alike) and writes one output of `d` values. Kernels are pure Rust: no Python in
//! this crate except behind the `python` feature (`rust/python/`), so `cargo test` needs no
//! interpreter. Conventions shared by every rule (`docs/conventions.md`):
//!
//! * values are ranked by `(value, row index)` with IEEE total order, NaN above `+inf`
//!   ([`order`]);
//! * sums accumulate in float64 ([`order::Float::Acc`]);
//! * each output coordinate or score is computed by one task in a fixed order, so results are
//!   bit-identical for any thread count ([`pool`]) and SIMD level ([`simd`]);
//! * inputs are never written to.
//!
//! The crate is the Python extension `aggkit._core` and nothing else: its items are
//! crate-private (the Python package is the API). That keeps the SIMD internals out of any
//! other code's reach; inside the crate, a lane vector or a per-level kernel runs only under a
//! proof that the CPU has its instructions ([`simd`]).

// Without the binding layer nothing outside the tests calls into the core.
#![cfg_attr(not(feature = "python"), allow(dead_code))]

mod alloc;
mod columns;
mod distance;
mod error;
#[cfg(test)]
mod fuzz;
mod half;
mod input;
mod interrupt;
mod monoid;
mod netgen;
mod network;
mod order;
mod pool;
mod rules;
mod simd;
#[cfg(test)]
mod testing;

#[cfg(feature = "python")]
mod python;
