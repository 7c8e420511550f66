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

fn default_threads() -> usize {
    std::env::var("AGGKIT_NUM_THREADS")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .filter(|&n| n >= 1)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn build(n: usize) -> Arc<ThreadPool> {
    Arc::new(
        ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("aggkit-{i}"))
            .build()
            .expect("failed to start aggkit's thread pool"),
    )
}

fn pool() -> Arc<ThreadPool> {
    if let Some(p) = POOL.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
        return Arc::clone(p);
    }
    let mut w = POOL.write().unwrap_or_else(|e| e.into_inner());
    Arc::clone(w.get_or_insert_with(|| build(default_threads())))
}

/// Use `n >= 1` threads from now on. Calls already running finish on the old pool.
pub fn set_num_threads(n: usize) -> Result<(), AggError> {
    if n == 0 {
        return Err(AggError::InvalidParameter {
            rule: "set_num_threads",
            message: "the number of threads must be >= 1, got 0".into(),
        });
    }
    let mut w = POOL.write().unwrap_or_else(|e| e.into_inner());
    if w.as_ref().map(|p| p.current_num_threads()) != Some(n) {
        *w = Some(build(n));
    }
    Ok(())
}

/// The number of threads kernels use.
pub fn num_threads() -> usize {
    pool().current_num_threads()
}

/// Run `f` inside aggkit's pool (rayon parallel iterators in `f` use its threads).
pub fn install<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    pool().install(f)
}
