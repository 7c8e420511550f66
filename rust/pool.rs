//! The rayon pool the kernels run on, sized by `AGGKIT_NUM_THREADS` or `set_num_threads`.
//!
//! aggkit keeps its own pool instead of rayon's global one so the thread count can be changed
//! at run time (rayon's global pool is fixed once built) and so aggkit never resizes a pool
//! that the host application owns. Results never depend on the thread count: every kernel
//! assigns each output coordinate or score to exactly one task with a fixed order of work.

use std::sync::{Arc, RwLock};

use rayon::{ThreadPool, ThreadPoolBuilder};

use crate::error::AggError;

/// Below this many input values a call runs on the calling thread (rayon's fork/join costs
/// microseconds, more than the work).
pub(crate) const PARALLEL_MIN_VALUES: usize = 1 << 15;

static POOL: RwLock<Option<Arc<ThreadPool>>> = RwLock::new(None);

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The most threads a pool may have: `max(256, 4 × cores)`. Far more than any speed-up needs;
/// a pool of millions of threads would take the process down while it starts.
pub fn max_threads() -> usize {
    cores().saturating_mul(4).max(256)
}

/// `AGGKIT_NUM_THREADS` when it is a valid count, else every core.
fn default_threads() -> usize {
    std::env::var("AGGKIT_NUM_THREADS")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .filter(|&n| (1..=max_threads()).contains(&n))
        .unwrap_or_else(cores)
}

fn build(n: usize) -> Result<Arc<ThreadPool>, AggError> {
    ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("aggkit-{i}"))
        .build()
        .map(Arc::new)
        .map_err(|e| AggError::InvalidParameter {
            rule: "set_num_threads",
            message: format!("could not start {n} threads: {e}"),
        })
}

fn pool() -> Arc<ThreadPool> {
    if let Some(p) = POOL.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
        return Arc::clone(p);
    }
    let mut w = POOL.write().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = w.as_ref() {
        return Arc::clone(p);
    }
    // Where the system refuses the default count, one thread (the calling thread's work) is
    // still correct: results never depend on the thread count.
    let p = build(default_threads())
        .or_else(|_| build(1))
        .expect("the system cannot start one thread");
    Arc::clone(w.insert(p))
}

/// Use `n` threads (`1 <= n <= max_threads()`) from now on. Calls already running finish on
/// the old pool.
pub fn set_num_threads(n: usize) -> Result<(), AggError> {
    if !(1..=max_threads()).contains(&n) {
        return Err(AggError::InvalidParameter {
            rule: "set_num_threads",
            message: format!("n must be between 1 and {}, got n={n}", max_threads()),
        });
    }
    let mut w = POOL.write().unwrap_or_else(|e| e.into_inner());
    if w.as_ref().map(|p| p.current_num_threads()) != Some(n) {
        *w = Some(build(n)?);
    }
    Ok(())
}

/// The number of threads kernels use.
pub fn num_threads() -> usize {
    pool().current_num_threads()
}

thread_local! {
    /// Set while this thread runs one block of a job that is already split across the pool.
    static SERIAL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether work over `values` input values is worth splitting across the pool: enough of it,
/// and not already one block of a split job ([`serial`]).
pub(crate) fn split(values: usize) -> bool {
    values >= PARALLEL_MIN_VALUES && !SERIAL.with(|s| s.get())
}

/// Run `f` on this thread alone: kernels inside it that ask [`split`] do not split again. For
/// a job whose blocks already run in parallel (the half-precision blocks, `rust/half.rs`),
/// where splitting each block again only costs fork/join.
pub(crate) fn serial<R>(f: impl FnOnce() -> R) -> R {
    /// Restores the flag even when `f` panics (the thread may be the caller's own).
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            SERIAL.with(|s| s.set(self.0));
        }
    }
    let _restore = Restore(SERIAL.with(|s| s.replace(true)));
    f()
}

/// Run `f` inside aggkit's pool (rayon parallel iterators in `f` use its threads).
pub fn install<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    pool().install(f)
}
