//! The one retry policy (reference §1.1): up to `attempts` tries, waiting
//! `min(base × 2^n, 15 s) × U(0.8, 1.2)` between transient failures, and never after the
//! last attempt.
//!
//! What may be sent again depends on what a repetition does ([`Repeat`]):
//!
//! - queries, and mutations whose repetition has the effect of one (an update that names
//!   its object's id, a delete, a lease taken with the caller's own token), are repeated
//!   after any transient failure;
//! - every other mutation is repeated only when the failed attempt provably never reached
//!   the server ([`ApiError::reached_server`]): a mutation whose answer was lost may have
//!   been applied, and sending it again would apply it twice;
//! - a **create** ([`create_or_find`]) whose answer was lost is not sent again blindly: the
//!   object is looked up by its name first, and the create is repeated only when it is not
//!   there.

use std::future::Future;
use std::time::Duration;

use rand::Rng;

use crate::config::MAX_BACKOFF;
use crate::error::ApiError;

/// Which failures another attempt may follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Repeat {
    /// Any transient failure: queries, and mutations that are safe to repeat.
    Transient,
    /// Only transient failures of requests that never reached the server.
    Unsent,
}

impl Repeat {
    fn allows(self, e: &ApiError) -> bool {
        e.is_transient() && (self == Repeat::Transient || !e.reached_server())
    }
}

/// Runs `op` until it succeeds, fails for good, or `attempts` are spent. A failure that
/// `repeat` allows to repeat, on the last of several attempts, is reported as
/// [`ApiError::RetriesExhausted`].
pub(crate) async fn retry<T, F, Fut>(
    operation: &str,
    attempts: u32,
    base: Duration,
    repeat: Repeat,
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
            Err(e) if !repeat.allows(&e) || attempts == 1 => return Err(e),
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

/// What a create answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Created<T> {
    /// The create was answered: the object it made.
    New(T),
    /// The answer to a create was lost, and the object was then found by its name: most
    /// likely the one that create made, possibly one that was there before. A caller that
    /// needs its own settings on it saves it again as an update.
    Found(T),
}

impl<T> Created<T> {
    /// The object, new or found.
    pub fn into_inner(self) -> T {
        match self {
            Created::New(v) | Created::Found(v) => v,
        }
    }

    pub fn was_found(&self) -> bool {
        matches!(self, Created::Found(_))
    }
}

/// Runs the create `create` so that it makes its object at most once in effect:
///
/// - a transient failure that never reached the server is retried as [`retry`] does;
/// - after a failure that may have reached it (a reset or timeout after sending, a 5xx, a
///   "try again" GraphQL error), `find` looks the object up by name (after the backoff, so
///   that a slow server has committed what it was doing); found, it is returned as
///   [`Created::Found`]; not found, the create is sent again;
/// - a final refusal that follows such a failure ("already exists") is looked up once
///   more, since it may be the server refusing to make the object a second time.
pub(crate) async fn create_or_find<T, C, CF, F, FF>(
    operation: &str,
    attempts: u32,
    base: Duration,
    mut create: C,
    mut find: F,
) -> Result<Created<T>, ApiError>
where
    C: FnMut() -> CF,
    CF: Future<Output = Result<T, ApiError>>,
    F: FnMut() -> FF,
    FF: Future<Output = Result<Option<T>, ApiError>>,
{
    let attempts = attempts.max(1);
    let mut lost_answer = false;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let e = match create().await {
            Ok(value) => return Ok(Created::New(value)),
            Err(e) => e,
        };
        let sent = e.reached_server();
        if !e.is_transient() {
            if lost_answer && sent {
                return match find().await {
                    Ok(Some(value)) => Ok(Created::Found(value)),
                    Ok(None) => Err(e),
                    Err(lookup) => Err(unconfirmed(operation, e, lookup)),
                };
            }
            return Err(e);
        }
        let wait = backoff(base, attempt - 1);
        if sent {
            lost_answer = true;
            tracing::warn!(
                operation,
                attempt,
                wait_ms = wait.as_millis() as u64,
                error = %e,
                "the answer to a create was lost; looking for what it may have created \
                 before creating it again"
            );
            tokio::time::sleep(wait).await;
            match find().await {
                Ok(Some(value)) => {
                    tracing::info!(operation, "found what the lost create made; using it");
                    return Ok(Created::Found(value));
                }
                Ok(None) => {}
                Err(lookup) => return Err(unconfirmed(operation, e, lookup)),
            }
        }
        if attempt >= attempts {
            return Err(if attempts == 1 {
                e
            } else {
                ApiError::RetriesExhausted {
                    operation: operation.to_owned(),
                    attempts,
                    last: Box::new(e),
                }
            });
        }
        if !sent {
            tracing::warn!(
                operation,
                attempt,
                attempts,
                wait_ms = wait.as_millis() as u64,
                error = %e,
                "the create was not sent; retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }
}

fn unconfirmed(operation: &str, lost: ApiError, lookup: ApiError) -> ApiError {
    ApiError::CreateUnconfirmed {
        operation: operation.to_owned(),
        lost: Box::new(lost),
        lookup: Box::new(lookup),
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
        let err = retry("op", 3, Duration::ZERO, Repeat::Transient, || async {
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
        let err = retry("op", 4, Duration::ZERO, Repeat::Transient, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(ApiError::Config("bad".into()))
        })
        .await
        .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(matches!(err, ApiError::Config(_)));
        let err = retry("op", 1, Duration::ZERO, Repeat::Transient, || async {
            Err::<(), _>(transient())
        })
        .await
        .unwrap_err();
        assert!(matches!(err, ApiError::Http { status: 503, .. }), "{err}");
    }

    #[tokio::test]
    async fn a_later_success_is_returned() {
        let calls = AtomicU32::new(0);
        let value = retry("op", 4, Duration::ZERO, Repeat::Transient, || async {
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

    fn connect_timeout() -> ApiError {
        ApiError::ConnectTimeout {
            url: "u".into(),
            timeout: Duration::from_millis(1),
        }
    }

    #[tokio::test]
    async fn unsent_only_repeats_what_never_reached_the_server() {
        let calls = AtomicU32::new(0);
        let err = retry("op", 4, Duration::ZERO, Repeat::Unsent, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(transient())
        })
        .await
        .unwrap_err();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "a 503 may have been applied"
        );
        assert!(matches!(err, ApiError::Http { status: 503, .. }), "{err}");

        let calls = AtomicU32::new(0);
        let value = retry("op", 4, Duration::ZERO, Repeat::Unsent, || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(connect_timeout())
            } else {
                Ok(7)
            }
        })
        .await
        .unwrap();
        assert_eq!((value, calls.load(Ordering::SeqCst)), (7, 3));
    }

    /// A create whose first answer is lost (`first`), then answered normally; `exists` says
    /// whether the lookup finds the object. Returns (result, creates sent, lookups).
    async fn lossy_create(
        first: ApiError,
        exists: bool,
    ) -> (Result<Created<u32>, ApiError>, u32, u32) {
        let creates = AtomicU32::new(0);
        let lookups = AtomicU32::new(0);
        let mut first = Some(first);
        let result = create_or_find(
            "create",
            3,
            Duration::ZERO,
            || {
                creates.fetch_add(1, Ordering::SeqCst);
                let outcome = first.take().map_or(Ok(2), Err);
                async move { outcome }
            },
            || {
                lookups.fetch_add(1, Ordering::SeqCst);
                async move { Ok(exists.then_some(1)) }
            },
        )
        .await;
        (
            result,
            creates.load(Ordering::SeqCst),
            lookups.load(Ordering::SeqCst),
        )
    }

    #[tokio::test]
    async fn a_lost_create_is_looked_up_before_it_is_sent_again() {
        // Applied, answer lost: found by name, not created again.
        let (result, creates, lookups) = lossy_create(transient(), true).await;
        assert_eq!(result.unwrap(), Created::Found(1));
        assert_eq!((creates, lookups), (1, 1));
        // Not applied: not found, so created again.
        let (result, creates, lookups) = lossy_create(transient(), false).await;
        assert_eq!(result.unwrap(), Created::New(2));
        assert_eq!((creates, lookups), (2, 1));
        // Never sent: created again without looking.
        let (result, creates, lookups) = lossy_create(connect_timeout(), true).await;
        assert_eq!(result.unwrap(), Created::New(2));
        assert_eq!((creates, lookups), (2, 0));
        // A final refusal is final.
        let (result, creates, lookups) = lossy_create(ApiError::Config("bad".into()), true).await;
        assert!(matches!(result, Err(ApiError::Config(_))));
        assert_eq!((creates, lookups), (1, 0));
    }

    #[tokio::test]
    async fn a_failed_lookup_after_a_lost_create_says_both() {
        let err = create_or_find(
            "createThing",
            3,
            Duration::ZERO,
            || async { Err::<u32, _>(transient()) },
            || async { Err(ApiError::Config("lookup broke".into())) },
        )
        .await
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("createThing")
                && text.contains("HTTP 503")
                && text.contains("lookup broke"),
            "{text}"
        );
        assert!(!err.is_transient());
    }
}
