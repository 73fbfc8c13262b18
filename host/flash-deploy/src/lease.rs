//! The environment's deploy lease: whoever changes an environment's endpoints and active
//! build — `flash deploy send`, the mothership's reconciliation — holds it while it does,
//! so that two deploys to one environment run one after the other instead of interleaving
//! their saves (which would leave endpoints of one build under the other's activation).
//!
//! - [`Lease::acquire`] takes it under a fresh random token, waiting (bounded, polling)
//!   while another holder has it, and then keeps it: a background task renews it every
//!   third of its time to live. A holder that dies stops renewing, and its lease ends by
//!   itself after [`LeaseOptions::ttl`].
//! - [`Lease::client`] is the State Manager client to make the changes with: it carries the
//!   token, and `flash server` refuses changes to a leased environment that do not (so a
//!   holder that stalled past its expiry while another took over cannot write any more).
//! - [`Lease::ensure_held`] says whether renewing found the lease lost; a deploy checks it
//!   before its point of no return (activation).
//! - [`Lease::release`] ends it (a lease dropped without it is released in the background,
//!   best effort, e.g. when a mothership is stopped while it reconciles).
//!
//! **RunPod's API has no leases** (nor any compare-and-swap on an environment). There
//! [`Lease::acquire`] returns a lease that is not [`Lease::is_supported`], and the caller
//! proceeds without one: concurrent deploys to one RunPod environment are not serialised,
//! and the last activation wins with whatever endpoint saves interleaved before it. The
//! mothership that boots with the active build then repairs what it can see (endpoints of
//! that build whose settings differ), but not a template env saved by the other deploy.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flash_api::{ApiError, LeaseAnswer, StateManagerClient};

/// How a lease is taken and kept.
#[derive(Debug, Clone)]
pub struct LeaseOptions {
    /// How long the lease lasts without renewal (it is renewed every third of this).
    pub ttl: Duration,
    /// How long to wait while another holder has it before giving up.
    pub wait: Duration,
    /// How often to ask again while waiting.
    pub poll: Duration,
}

impl Default for LeaseOptions {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(60),
            wait: Duration::from_secs(600),
            poll: Duration::from_secs(1),
        }
    }
}

/// Why a lease could not be taken or kept.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Another holder kept the lease for as long as the caller was willing to wait.
    #[error(
        "environment `{environment}` is being deployed by {holder}{} (waited {waited_s} s): \
         run this command again once that deploy has finished; a lease whose holder died ends \
         by itself",
        ends_in(*expires_in_seconds)
    )]
    Busy {
        environment: String,
        holder: String,
        expires_in_seconds: Option<i64>,
        waited_s: u64,
    },
    /// Renewing found the lease taken by another holder: this process stalled for longer
    /// than the lease lasts.
    #[error(
        "the deploy lease of environment `{environment}` was lost (this process stalled for \
         longer than the lease's {ttl_s} s and {holder} took over), so nothing more was \
         changed: run this command again"
    )]
    Lost {
        environment: String,
        holder: String,
        ttl_s: u64,
    },
    /// The State Manager could not be asked.
    #[error("taking the deploy lease of environment `{environment}`: {source}")]
    Api {
        environment: String,
        #[source]
        source: ApiError,
    },
}

fn ends_in(seconds: Option<i64>) -> String {
    seconds.map_or_else(String::new, |s| {
        format!(" (its lease ends in {s} s unless renewed)")
    })
}

/// A held environment lease (or, on a State Manager without leases, the absence of one).
pub struct Lease {
    client: StateManagerClient,
    environment_id: String,
    environment: String,
    token: Option<String>,
    ttl: Duration,
    /// Set by the renewer when the lease turned out to belong to someone else.
    lost: Arc<std::sync::Mutex<Option<String>>>,
    renewer: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("environment_id", &self.environment_id)
            .field("supported", &self.token.is_some())
            .finish_non_exhaustive()
    }
}

/// A fresh random token (128 bits, hex).
fn new_token() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Lease {
    /// Takes the deploy lease of environment `environment_id` (`environment` names it in
    /// messages) for `holder` (who the caller is, for other callers' messages), waiting up
    /// to `options.wait` while another holder has it. `waiting` is told the holder's
    /// description once, when the caller has to wait.
    pub async fn acquire(
        sm: &StateManagerClient,
        environment_id: &str,
        environment: &str,
        holder: &str,
        options: &LeaseOptions,
        waiting: impl Fn(&str),
    ) -> Result<Lease, LeaseError> {
        let token = new_token();
        let started = Instant::now();
        let mut told = false;
        let api = |source| LeaseError::Api {
            environment: environment.to_string(),
            source,
        };
        loop {
            let answer = sm
                .acquire_environment_lease(environment_id, &token, holder, options.ttl)
                .await
                .map_err(api)?;
            match answer {
                LeaseAnswer::Granted(_) => break,
                LeaseAnswer::Unsupported => {
                    tracing::info!(
                        environment,
                        "the State Manager has no environment leases (RunPod's API): \
                         concurrent deploys to this environment are not serialised"
                    );
                    return Ok(Lease {
                        client: sm.clone(),
                        environment_id: environment_id.to_string(),
                        environment: environment.to_string(),
                        token: None,
                        ttl: options.ttl,
                        lost: Arc::default(),
                        renewer: None,
                    });
                }
                LeaseAnswer::Held(current) => {
                    let other = current
                        .holder
                        .clone()
                        .unwrap_or_else(|| "another deploy".to_string());
                    if started.elapsed() >= options.wait {
                        return Err(LeaseError::Busy {
                            environment: environment.to_string(),
                            holder: other,
                            expires_in_seconds: current.expires_in_seconds,
                            waited_s: started.elapsed().as_secs(),
                        });
                    }
                    if !told {
                        told = true;
                        waiting(&other);
                    }
                    tokio::time::sleep(options.poll).await;
                }
            }
        }
        let client = sm.with_environment_lease(&token).map_err(api)?;
        let lost: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
        let renewer = tokio::spawn(renew(
            sm.clone(),
            environment_id.to_string(),
            token.clone(),
            holder.to_string(),
            options.ttl,
            lost.clone(),
        ));
        tracing::debug!(environment, "environment lease taken");
        Ok(Lease {
            client,
            environment_id: environment_id.to_string(),
            environment: environment.to_string(),
            token: Some(token),
            ttl: options.ttl,
            lost,
            renewer: Some(renewer),
        })
    }

    /// The client to change the environment with (it carries the lease's token).
    pub fn client(&self) -> &StateManagerClient {
        &self.client
    }

    /// Whether the State Manager has leases (`false` on RunPod's API: nothing is held).
    pub fn is_supported(&self) -> bool {
        self.token.is_some()
    }

    /// `Err(LeaseError::Lost)` once renewing found the lease taken by another holder.
    pub fn ensure_held(&self) -> Result<(), LeaseError> {
        let lost = self.lost.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match lost {
            None => Ok(()),
            Some(holder) => Err(LeaseError::Lost {
                environment: self.environment.clone(),
                holder,
                ttl_s: self.ttl.as_secs(),
            }),
        }
    }

    /// Ends the lease (a failure to say so is logged: the lease then ends by expiry).
    pub async fn release(mut self) {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
        let Some(token) = self.token.take() else {
            return;
        };
        match self
            .client
            .release_environment_lease(&self.environment_id, &token)
            .await
        {
            Ok(_) => tracing::debug!(environment = %self.environment, "environment lease released"),
            Err(e) => tracing::warn!(
                environment = %self.environment,
                error = %e,
                "could not release the environment lease; it ends by itself"
            ),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Dropped without `release` (an early return, a cancelled task, a panic): stop
        // renewing, and release it in the background where a runtime still runs; otherwise
        // it ends by expiry.
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
        if let (Some(token), Ok(runtime)) =
            (self.token.take(), tokio::runtime::Handle::try_current())
        {
            let (client, environment_id) = (self.client.clone(), self.environment_id.clone());
            runtime.spawn(async move {
                let _ = client
                    .release_environment_lease(&environment_id, &token)
                    .await;
            });
        }
    }
}

/// Renews the lease every third of `ttl` until stopped or lost.
async fn renew(
    sm: StateManagerClient,
    environment_id: String,
    token: String,
    holder: String,
    ttl: Duration,
    lost: Arc<std::sync::Mutex<Option<String>>>,
) {
    let every = (ttl / 3).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(every).await;
        match sm
            .renew_environment_lease(&environment_id, &token, &holder, ttl)
            .await
        {
            Ok(lease) if lease.granted => {}
            Ok(lease) => {
                let other = lease.holder.unwrap_or_else(|| "another deploy".to_string());
                tracing::error!(environment = %environment_id, holder = %other, "the environment lease was lost");
                *lost.lock().unwrap_or_else(|e| e.into_inner()) = Some(other);
                return;
            }
            // The lease stays valid until it expires; the next round tries again, and the
            // server fences the writes of a holder that lost it.
            Err(e) => {
                tracing::warn!(environment = %environment_id, error = %e, "renewing the environment lease failed")
            }
        }
    }
}
