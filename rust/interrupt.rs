//! Cooperative interruption of long kernels. A kernel whose running time grows with a parameter
//! or faster than its input (iterations, selection rounds, subset scans) calls [`check`]
//! between steps on the calling thread; when the embedding application asks to stop (Python:
//! Ctrl-C delivers `KeyboardInterrupt` only between bytecodes, so a kernel running with the GIL
//! released would otherwise hold it off until it returns), [`check`] gives
//! [`AggError::Interrupted`] and the kernel returns it.
//!
//! The core knows nothing of Python: the binding layer installs the question as a hook. Asking
//! is throttled to once per [`PERIOD`] per thread, so a kernel may call [`check`] in any loop.

use std::cell::Cell;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::error::AggError;

/// How often a kernel asks at most.
const PERIOD: Duration = Duration::from_millis(50);

static HOOK: OnceLock<fn() -> bool> = OnceLock::new();

thread_local! {
    static LAST: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Install `stop`, which says whether the caller asked to stop (once per process; later calls
/// are ignored).
pub fn set_hook(stop: fn() -> bool) {
    let _ = HOOK.set(stop);
}

/// `Err(Interrupted)` when the hook says to stop; asks at most once per [`PERIOD`].
pub fn check() -> Result<(), AggError> {
    let Some(stop) = HOOK.get() else {
        return Ok(());
    };
    let now = Instant::now();
    let due = LAST.with(|last| match last.get() {
        Some(t) if now.duration_since(t) < PERIOD => false,
        _ => {
            last.set(Some(now));
            true
        }
    });
    if due && stop() {
        return Err(AggError::Interrupted);
    }
    Ok(())
}

/// Start a call: the first [`check`] of the call waits a full [`PERIOD`], so short calls never
/// ask.
pub fn start() {
    LAST.with(|last| last.set(Some(Instant::now())));
}
