//! The rules, one file per family, named as on every other layer (`rules/median.rs` is
//! `aggkit.median`, the registry's `"median"`, `torch.ops.aggkit.median`, `tests/test_median.py`).
//! Each file exposes a `NAME` and pure kernels over [`Rows`]; the engines they share are
//! [`crate::columns`] (order statistics), [`crate::distance`] and [`crate::network`].
//!
//! [`Rows`]: crate::input::Rows

pub mod bulyan;
pub mod centered_clipping;
pub mod crossmax;
pub mod detox;
pub mod foolsgold;
pub mod geometric_median;
pub mod krum;
pub mod meamed;
pub mod mean;
pub mod median;
pub mod preagg;
pub mod sign_vote;
pub mod subsets;
pub mod trimmed_mean;
