//! Allocations whose size comes from the caller: an output of `d` values, an `n × n` distance
//! matrix, `n` row views. Rust aborts the process when an allocation fails; these helpers
//! return [`AggError::OutOfMemory`] instead, which the binding layer raises as `MemoryError`
//! (what numpy raises for the same request).

use std::alloc::Layout;

use crate::error::AggError;

/// Types whose all-zero bit pattern is a valid value, and the value a caller means by zero
/// (`0`, `0.0`, `false`).
///
/// # Safety
/// Implement only for types for which every byte being zero is a valid value.
pub unsafe trait Zeroable: Copy {}

// SAFETY: zero bytes are 0.0 / 0 / false for each of these types.
unsafe impl Zeroable for f32 {}
// SAFETY: as above.
unsafe impl Zeroable for f64 {}
// SAFETY: as above.
unsafe impl Zeroable for u16 {}
// SAFETY: as above.
unsafe impl Zeroable for u32 {}
// SAFETY: as above.
unsafe impl Zeroable for u64 {}
// SAFETY: as above.
unsafe impl Zeroable for usize {}
// SAFETY: as above.
unsafe impl Zeroable for i64 {}
// SAFETY: as above.
unsafe impl Zeroable for bool {}

fn too_large<T>(len: usize) -> AggError {
    AggError::OutOfMemory {
        bytes: len.saturating_mul(std::mem::size_of::<T>()),
    }
}

/// `len` zeros, like `vec![0; len]` (the same zeroed allocation, so large buffers come from
/// fresh zero pages), or [`AggError::OutOfMemory`] where the allocator refuses.
pub fn zeroed<T: Zeroable>(len: usize) -> Result<Vec<T>, AggError> {
    let layout = Layout::array::<T>(len).map_err(|_| too_large::<T>(len))?;
    if layout.size() == 0 {
        // `len == 0` (no `Zeroable` type is zero-sized).
        return Ok(Vec::new());
    }
    // SAFETY: the layout has a non-zero size.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
    if ptr.is_null() {
        return Err(too_large::<T>(len));
    }
    // SAFETY: `ptr` was allocated by the global allocator with the layout of `[T; len]`, holds
    // `len` initialised values (zero bytes are a valid `T` by `Zeroable`), and is owned by
    // nothing else.
    Ok(unsafe { Vec::from_raw_parts(ptr.cast::<T>(), len, len) })
}

/// An empty vector with room for `len` values.
pub fn with_capacity<T>(len: usize) -> Result<Vec<T>, AggError> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| too_large::<T>(len))?;
    Ok(v)
}

/// The `len` items of `items`, collected into a buffer allocated up front.
pub fn collect<T>(len: usize, items: impl IntoIterator<Item = T>) -> Result<Vec<T>, AggError> {
    let mut v = with_capacity(len)?;
    v.extend(items.into_iter().take(len));
    Ok(v)
}

/// `n × n`, or [`AggError::OutOfMemory`] where the product exceeds `usize`.
pub fn square(n: usize) -> Result<usize, AggError> {
    n.checked_mul(n)
        .ok_or(AggError::OutOfMemory { bytes: usize::MAX })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_matches_vec_macro_and_refuses_impossible_sizes() {
        assert_eq!(zeroed::<f64>(5).unwrap(), vec![0.0; 5]);
        assert_eq!(zeroed::<u32>(0).unwrap(), Vec::<u32>::new());
        assert_eq!(with_capacity::<u32>(3).unwrap().capacity(), 3);
        for len in [usize::MAX, usize::MAX / 8 + 1, 1 << 62] {
            assert!(matches!(
                zeroed::<f64>(len),
                Err(AggError::OutOfMemory { .. })
            ));
            assert!(matches!(
                with_capacity::<u64>(len),
                Err(AggError::OutOfMemory { .. })
            ));
        }
        assert_eq!(collect(3, 1..).unwrap(), vec![1, 2, 3]);
        assert!(collect(usize::MAX, 0..).is_err());
        assert!(square(1 << 32).is_err());
        assert_eq!(square(1000).unwrap(), 1_000_000);
    }
}
