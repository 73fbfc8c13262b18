//! [`HostBudget`]: the host memory one call may make the host spend on it.
//!
//! The engine caps a guest's own memory (all its linear memories and tables together), but
//! some host calls copy guest bytes into host memory, outside that cap: `wasi:nn`
//! `tensor.new` and `load` (model bytes), inference outputs waiting in the host until the
//! guest reads them, `progress.emit` chunks, and the call's output. A guest could loop
//! over `tensor.new` with one small buffer and make the host hold gigabytes. Each of these
//! is charged here, against one budget per call; a charge past it fails with
//! [`BudgetExceeded`], which the host call turns into a trap (the runtime reports it as
//! the call's error, naming the budget and its setting).
//!
//! Two kinds of bytes count against the same limit:
//!
//! - **held**: tensors and guest-loaded models while the guest holds them. Dropping one
//!   gives its bytes back, so a guest that runs inference over many batches in a loop is
//!   bounded by its largest working set, not by the sum of its batches;
//! - **sent**: progress chunks and the output. They leave the host (to the job's stream,
//!   to the caller), so they count for good: the budget also bounds what one call can send.
//!
//! It lives in `flash-nn` because this is the lowest crate that charges it: the runtime
//! (`flash-runtime`) owns one per store and lends it to the `wasi:nn` bindings.

/// What one call holds and has sent, against its limit. Cheap: two counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostBudget {
    limit: usize,
    held: usize,
    sent: usize,
}

impl Default for HostBudget {
    /// No limit (tools and tests that do not configure one).
    fn default() -> Self {
        Self::new(usize::MAX)
    }
}

/// A charge that would take a call past its [`HostBudget`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what} of {bytes} bytes would take the call past its host memory budget of {limit} bytes \
     ({used} bytes already held or sent)"
)]
pub struct BudgetExceeded {
    /// What was charged, for people: "a wasi:nn tensor", "a progress chunk", ….
    pub what: &'static str,
    pub bytes: usize,
    /// Bytes held and sent before this charge.
    pub used: usize,
    pub limit: usize,
}

impl HostBudget {
    /// A budget of `limit` bytes.
    pub const fn new(limit: usize) -> Self {
        Self {
            limit,
            held: 0,
            sent: 0,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held and sent so far.
    pub fn used(&self) -> usize {
        self.held.saturating_add(self.sent)
    }

    fn check(&self, what: &'static str, bytes: usize) -> Result<(), BudgetExceeded> {
        match self.used().checked_add(bytes) {
            Some(total) if total <= self.limit => Ok(()),
            _ => Err(BudgetExceeded {
                what,
                bytes,
                used: self.used(),
                limit: self.limit,
            }),
        }
    }

    /// Charges `bytes` the host holds for the guest until [`release`](Self::release).
    pub fn hold(&mut self, what: &'static str, bytes: usize) -> Result<(), BudgetExceeded> {
        self.check(what, bytes)?;
        self.held += bytes;
        Ok(())
    }

    /// Gives back bytes charged with [`hold`](Self::hold).
    pub fn release(&mut self, bytes: usize) {
        self.held = self.held.saturating_sub(bytes);
    }

    /// Charges `bytes` that leave the host (progress, output): they count until the call
    /// ends.
    pub fn send(&mut self, what: &'static str, bytes: usize) -> Result<(), BudgetExceeded> {
        self.check(what, bytes)?;
        self.sent += bytes;
        Ok(())
    }

    /// Starts a new call on the same store (a live instance): what earlier calls sent no
    /// longer counts; what the guest still holds does.
    pub fn new_call(&mut self) {
        self.sent = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_bytes_come_back_and_sent_bytes_do_not() {
        let mut b = HostBudget::new(100);
        b.hold("a tensor", 60).unwrap();
        let err = b.hold("a tensor", 41).unwrap_err();
        assert_eq!(
            err,
            BudgetExceeded {
                what: "a tensor",
                bytes: 41,
                used: 60,
                limit: 100
            }
        );
        b.release(60);
        b.send("a progress chunk", 90).unwrap();
        assert!(b.hold("a tensor", 11).is_err());
        b.release(1000); // more than held: saturates, sent stays
        assert_eq!(b.used(), 90);
        b.new_call();
        b.hold("a tensor", 100).unwrap();
        assert!(b.send("the output", usize::MAX).is_err());
    }
}
