//! `flash login`: the authorization-request flow of reference §1.6.
//!
//! 1. `createFlashAuthRequest`, sent without a key;
//! 2. the person opens `{console}/flash/login?request={id}` and approves;
//! 3. the CLI polls `flashAuthRequestStatus` every 2 s until the request is approved
//!    (`apiKey` present and `APPROVED` or `CONSUMED`), refused (`DENIED`, `EXPIRED`, or
//!    `CONSUMED` without a key), or the deadline passes: the smaller of `--timeout` and the
//!    request's `expiresAt`.
//!
//! Saving the key is [`crate::credentials::save_key`].

use std::time::Duration;

use anyhow::{Context, Result, bail};
use flash_api::StateManagerClient;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::time::Instant;

/// Between two `flashAuthRequestStatus` polls.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// How long `flash login` waits for approval by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// The page where a person approves request `request_id`.
pub fn login_url(console: &str, request_id: &str) -> Result<String> {
    let mut url = reqwest::Url::parse(&format!("{}/flash/login", console.trim_end_matches('/')))
        .with_context(|| format!("the console URL `{console}` is not a URL"))?;
    url.query_pairs_mut().append_pair("request", request_id);
    Ok(url.into())
}

/// How patiently to wait.
#[derive(Debug, Clone, Copy)]
pub struct Wait {
    pub timeout: Duration,
    pub interval: Duration,
}

impl Default for Wait {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            interval: POLL_INTERVAL,
        }
    }
}

/// Runs the flow on `sm` (an anonymous client): creates the request, hands its page to
/// `show` (which prints it and perhaps opens a browser), then polls until a key comes.
pub async fn obtain_key(
    sm: &StateManagerClient,
    console: &str,
    wait: Wait,
    show: impl FnOnce(&str),
) -> Result<String> {
    let request = sm
        .create_auth_request()
        .await
        .context("starting the login")?;
    if request.id.trim().is_empty() {
        bail!(
            "the server at {} returned an auth request without an id: it does not support \
             `flash login`; set RUNPOD_API_KEY instead",
            sm.base_url()
        );
    }
    show(&login_url(console, &request.id)?);

    let started = Instant::now();
    let expires_in = request.expires_at.as_deref().and_then(until);
    let (deadline, expiry) = match expires_in {
        Some(left) if left < wait.timeout => (started + left, true),
        _ => (started + wait.timeout, false),
    };
    loop {
        let status = sm
            .auth_request_status(&request.id)
            .await
            .context("asking whether the login was approved")?;
        let state = status.status.to_ascii_uppercase();
        if let Some(key) = status.api_key.as_deref().map(str::trim)
            && !key.is_empty()
            && matches!(state.as_str(), "APPROVED" | "CONSUMED")
        {
            return Ok(key.to_string());
        }
        match state.as_str() {
            "DENIED" => bail!("login failed: denied in the browser; run `flash login` again"),
            "EXPIRED" => bail!(
                "login failed: the request expired before it was approved; run `flash login` \
                 again and approve it in time"
            ),
            "CONSUMED" => bail!(
                "login failed: the request was already used (its key went to another client); \
                 run `flash login` again"
            ),
            _ => {}
        }
        if Instant::now() >= deadline {
            if expiry {
                bail!(
                    "login timed out: the request expired at {} without approval; run `flash \
                     login` again",
                    request.expires_at.as_deref().unwrap_or("?")
                );
            }
            bail!(
                "login timed out after {} s without approval; run `flash login` again \
                 (`--timeout` sets how long to wait)",
                wait.timeout.as_secs_f64()
            );
        }
        tokio::time::sleep(
            wait.interval
                .min(deadline.saturating_duration_since(Instant::now())),
        )
        .await;
    }
}

/// Time left until the RFC 3339 instant `at` (zero when past), or `None` when it does not
/// parse.
fn until(at: &str) -> Option<Duration> {
    let at = OffsetDateTime::parse(at.trim(), &Rfc3339).ok()?;
    let left = at - OffsetDateTime::now_utc();
    Some(Duration::try_from(left).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use flash_api::stub::{Fault, Stub, start};
    use flash_api::{ClientConfig, StateManagerClient};

    use super::*;

    async fn anonymous(stub: &Arc<Stub>) -> StateManagerClient {
        let base = start(stub.clone()).await;
        let config = ClientConfig::anonymous(&base)
            .unwrap()
            .with_backoff_base(Duration::from_millis(1));
        StateManagerClient::new(config).unwrap()
    }

    fn quick(timeout_ms: u64) -> Wait {
        Wait {
            timeout: Duration::from_millis(timeout_ms),
            interval: Duration::from_millis(10),
        }
    }

    #[test]
    fn the_login_page_carries_the_request_id() {
        assert_eq!(
            login_url("https://console.runpod.io/", "req 1").unwrap(),
            "https://console.runpod.io/flash/login?request=req+1"
        );
    }

    #[tokio::test]
    async fn pending_then_approved_gives_the_key() {
        let stub = Arc::new(Stub::default());
        stub.script_auth(
            None,
            &[
                ("PENDING", None),
                ("PENDING", None),
                ("APPROVED", Some("rp_key")),
            ],
        );
        let sm = anonymous(&stub).await;
        let mut shown = None;
        let key = obtain_key(&sm, "http://console", quick(5_000), |url| {
            shown = Some(url.to_string())
        })
        .await
        .unwrap();
        assert_eq!(key, "rp_key");
        assert_eq!(
            shown.as_deref(),
            Some("http://console/flash/login?request=auth-1")
        );
        let polls = stub
            .seen()
            .iter()
            .filter(|s| s.operation == "flashAuthRequestStatus")
            .count();
        assert_eq!(polls, 3);
        assert!(stub.seen().iter().all(|s| s.authorization.is_none()));
    }

    #[tokio::test]
    async fn consumed_with_a_key_is_success_without_one_failure() {
        let stub = Arc::new(Stub::default());
        stub.script_auth(None, &[("CONSUMED", Some("rp_key"))]);
        let sm = anonymous(&stub).await;
        assert_eq!(
            obtain_key(&sm, "http://c", quick(5_000), |_| {})
                .await
                .unwrap(),
            "rp_key"
        );
        stub.script_auth(None, &[("CONSUMED", None)]);
        let err = obtain_key(&sm, "http://c", quick(5_000), |_| {})
            .await
            .unwrap_err();
        assert!(err.to_string().contains("already used"), "{err}");
    }

    #[tokio::test]
    async fn denied_and_expired_fail_at_once() {
        for (status, text) in [("DENIED", "denied"), ("EXPIRED", "expired")] {
            let stub = Arc::new(Stub::default());
            stub.script_auth(None, &[("PENDING", None), (status, None)]);
            let sm = anonymous(&stub).await;
            let err = obtain_key(&sm, "http://c", quick(60_000), |_| {})
                .await
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(text) && err.contains("flash login"),
                "{status}: {err}"
            );
        }
    }

    #[tokio::test]
    async fn the_deadline_is_the_sooner_of_timeout_and_expiry() {
        let stub = Arc::new(Stub::default());
        stub.script_auth(None, &[("PENDING", None)]);
        let sm = anonymous(&stub).await;
        let started = std::time::Instant::now();
        let err = obtain_key(&sm, "http://c", quick(200), |_| {})
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("timed out after 0.2 s"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));

        // An expiry in 300 ms cuts a 60 s timeout short.
        let expires = (OffsetDateTime::now_utc() + time::Duration::milliseconds(300))
            .format(&Rfc3339)
            .unwrap();
        stub.script_auth(Some(&expires), &[("PENDING", None)]);
        let started = std::time::Instant::now();
        let err = obtain_key(&sm, "http://c", quick(60_000), |_| {})
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("expired at"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_server_without_anonymous_login_says_so() {
        let stub = Arc::new(Stub::default());
        stub.fail_next(1, Fault::Http401);
        let sm = anonymous(&stub).await;
        let err = obtain_key(&sm, "http://c", quick(1_000), |_| {})
            .await
            .unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("does not offer `flash login`"), "{text}");
    }
}
