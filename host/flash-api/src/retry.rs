//! The one retry policy (reference §1.1): up to `attempts` tries, waiting
//! `min(base × 2^n, 15 s) × U(0.8, 1.2)` between transient failures, and never after the
//! last attempt.

use std::future::Future;
use std::time::Duration;

use rand::Rng;

use crate::config::MAX_BACKOFF;
use crate::error::ApiError;

/// Runs `op` until it succeeds, fails for good, or `attempts` are spent. A transient failure
/// on the last of several attempts is reported as [`ApiError::RetriesExhausted`].
pub(crate) async fn retry<T, F, Fut>(
    operation: &str,
    attempts: u32,
    base: Duration,
    mut op: F,
) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    let attempts = attempts.max(1);
    let mut attempt = 0;
    loop {
        attempt += 1;
        match op().await {
            Ok(value) => return Ok(value),
            Err(e) if !e.is_transient() || attempts == 1 => return Err(e),
            Err(e) if attempt >= attempts => {
                return Err(ApiError::RetriesExhausted {
                    operation: operation.to_owned(),
                    attempts,
                    last: Box::new(e),
                });
            }
            Err(e) => {
                let wait = backoff(base, attempt - 1);
                tracing::warn!(
                    operation,
                    attempt,
                    attempts,
                    wait_ms = wait.as_millis() as u64,
                    error = %e,
                    "State Manager call failed; retrying"
                );
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// The wait after failed attempt `attempt` (0-based).
pub(crate) fn backoff(base: Duration, attempt: u32) -> Duration {
    let exp = base
        .saturating_mul(1u32 << attempt.min(16))
        .min(MAX_BACKOFF);
    exp.mul_f64(rand::rng().random_range(0.8..1.2))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let base = Duration::from_secs(1);
        for attempt in 0..3 {
            let wait = backoff(base, attempt).as_secs_f64();
            let nominal = f64::from(1u32 << attempt);
            assert!(
                wait >= nominal * 0.8 - 1e-9 && wait <= nominal * 1.2 + 1e-9,
                "{wait}"
            );
        }
        assert!(backoff(base, 30) <= MAX_BACKOFF.mul_f64(1.2));
    }

    fn transient() -> ApiError {
        ApiError::Http {
            url: "u".into(),
            status: 503,
            body: String::new(),
        }
    }

    #[tokio::test]
    async fn transient_failures_are_retried_up_to_the_limit() {
        let calls = AtomicU32::new(0);
        let err = retry("op", 3, Duration::ZERO, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(transient())
        })
        .await
        .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert!(
            matches!(err, ApiError::RetriesExhausted { attempts: 3, .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn final_errors_and_single_attempts_are_not_retried() {
        let calls = AtomicU32::new(0);
        let err = retry("op", 4, Duration::ZERO, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(ApiError::Config("bad".into()))
        })
        .await
        .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(matches!(err, ApiError::Config(_)));
        let err = retry("op", 1, Duration::ZERO, || async {
            Err::<(), _>(transient())
        })
        .await
        .unwrap_err();
        assert!(matches!(err, ApiError::Http { status: 503, .. }), "{err}");
    }

    #[tokio::test]
    async fn a_later_success_is_returned() {
        let calls = AtomicU32::new(0);
        let value = retry("op", 4, Duration::ZERO, || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(transient())
            } else {
                Ok(7)
            }
        })
        .await
        .unwrap();
        assert_eq!((value, calls.load(Ordering::SeqCst)), (7, 3));
    }
}
