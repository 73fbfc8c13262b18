//! [`InstanceLimiter`]: one memory cap for everything an instance allocates, together.
//!
//! A component is not one linear memory: componentize-py's hold a dozen core instances and
//! several memories, and the pooling allocator lets a component have up to 16 memories and
//! 32 tables. wasmtime's `StoreLimits` (what this replaced) caps *each* memory at the
//! limit, so a component could use 16 times its cap. This limiter keeps a running sum
//! over every memory and table of the store (a store holds one instance: a call's, or a
//! [`crate::LiveInstance`]'s) and refuses the growth, or the creation at instantiation,
//! that would take the sum past [`crate::InvokeLimits::max_memory_bytes`]. Table
//! elements count `size_of::<usize>()` bytes each, what wasmtime allocates for one; with
//! the on-demand allocator a table has no other bound.
//!
//! A refusal traps with [`MemoryCapExceeded`] instead of making `memory.grow` return -1:
//! the caller then gets an error that names the cap instead of whatever the guest's
//! allocator does when it runs out (often an unhelpful abort). So does a growth past a
//! memory's or table's own maximum (the pool's per-memory limit included), as before.

use wasmtime::ResourceLimiter;

/// Host bytes one table element takes.
const TABLE_ELEMENT_BYTES: usize = std::mem::size_of::<usize>();

/// The trap of a growth past the instance's memory cap.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "growing {what} by {requested} bytes would take the instance past its memory cap of {cap} \
     bytes ({used} bytes already in its memories and tables)"
)]
pub struct MemoryCapExceeded {
    /// "a linear memory" or "a table".
    pub what: &'static str,
    pub requested: usize,
    pub used: usize,
    pub cap: usize,
}

/// Sums an instance's memories and tables against one cap.
#[derive(Debug, Clone)]
pub(crate) struct InstanceLimiter {
    cap: usize,
    used: usize,
}

impl InstanceLimiter {
    pub(crate) fn new(cap: usize) -> Self {
        Self { cap, used: 0 }
    }

    fn grow(
        &mut self,
        what: &'static str,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
        unit: usize,
    ) -> wasmtime::Result<bool> {
        if let Some(max) = maximum
            && desired > max
        {
            wasmtime::bail!(
                "forcing a trap when growing {what} to {desired} {}: past its maximum of {max}",
                if unit == 1 { "bytes" } else { "elements" }
            );
        }
        let requested = desired.saturating_sub(current).saturating_mul(unit);
        match self.used.checked_add(requested) {
            Some(total) if total <= self.cap => {
                self.used = total;
                Ok(true)
            }
            _ => Err(MemoryCapExceeded {
                what,
                requested,
                used: self.used,
                cap: self.cap,
            }
            .into()),
        }
    }
}

impl ResourceLimiter for InstanceLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow("a linear memory", current, desired, maximum, 1)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        // Approved here but refused by wasmtime or the OS: a trap, as with the cap.
        Err(error.context("forcing a memory growth failure to be a trap"))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow("a table", current, desired, maximum, TABLE_ELEMENT_BYTES)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        Err(error.context("forcing a table growth failure to be a trap"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memories_and_tables_share_one_cap() {
        let mut l = InstanceLimiter::new(1 << 20);
        // Three memories created at instantiation, 256 KiB each.
        for _ in 0..3 {
            assert!(l.memory_growing(0, 256 << 10, None).unwrap());
        }
        // A table of 8192 elements: 64 KiB.
        assert!(l.table_growing(0, 8192, None).unwrap());
        // 832 KiB in use: growing one memory by 192 KiB reaches the cap exactly, which fits.
        assert!(l.memory_growing(256 << 10, 448 << 10, None).unwrap());
        let err = l.memory_growing(448 << 10, 512 << 10, None).unwrap_err();
        let cap = err.downcast_ref::<MemoryCapExceeded>().unwrap();
        assert_eq!(
            (cap.requested, cap.used, cap.cap),
            (64 << 10, 1 << 20, 1 << 20)
        );
        assert!(l.table_growing(8192, 8193, None).is_err());
        // A growth past a memory's own maximum traps, but is not the cap.
        let err = l.memory_growing(0, 2 << 20, Some(1 << 20)).unwrap_err();
        assert!(err.downcast_ref::<MemoryCapExceeded>().is_none());
    }
}
