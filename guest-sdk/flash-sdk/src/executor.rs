//! A minimal executor for `async fn` remote functions.
//!
//! Guests do no asynchronous I/O: the only import, `peer.call`, is synchronous. An
//! `async` remote function therefore never waits on anything external, and polling it
//! with a no-op waker until it is ready is a complete executor. A future that stays
//! pending forever (say, a hand-written one that waits for a wake-up that never comes)
//! spins until the host's deadline stops it, like any other infinite loop.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

/// Runs `future` to completion on the current thread.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pending for `n` polls, then ready: like a future that yields to its executor.
    struct YieldTimes(u32);

    impl Future for YieldTimes {
        type Output = u32;
        fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
            if self.0 == 0 {
                Poll::Ready(7)
            } else {
                self.0 -= 1;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }

    #[test]
    fn drives_nested_async_fns() {
        async fn add(a: u32, b: u32) -> u32 {
            a + YieldTimes(3).await + b
        }
        assert_eq!(block_on(async { add(1, 2).await * 2 }), 20);
    }
}
