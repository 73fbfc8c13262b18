//! API-key authentication.
//!
//! The server has one user key, created on first start in `<data_dir>/api_key` (mode 0600)
//! so that the `flash` CLI on the same machine can read it. Clients send it as
//! `Authorization: Bearer <key>`; the RunPod worker SDK sends its key raw, without
//! `Bearer` (reference §3.3), so both forms are accepted. Each endpoint also has an `aiKey`:
//! it is what its workers get as `RUNPOD_AI_API_KEY`, and it is accepted for that endpoint's
//! worker routes and `/status` only, so a worker cannot act on other endpoints.
//!
//! Workers never get the user key. A deploy writes it into each template as
//! `RUNPOD_API_KEY` (what a worker uses to find and call its peers, as on RunPod), and the
//! supervisor hands the worker its environment's key instead
//! ([`Auth::worker_api_key`]): `flw_<environment id>_<tag>`, the tag an HMAC of the
//! environment id under `<data_dir>/worker_key_secret`. Such a key is good for what peer
//! calls need and nothing more: the endpoints of that one environment (`/v2/…` user routes
//! and `/lb/…`), and the GraphQL queries that find them (`flashEnvironment` of that
//! environment, `flashBuild` of its app). Deploying, deleting, reading other
//! environments, or logging in are refused. The mothership keeps the user key: it runs no
//! user code, and it saves and deletes its environment's endpoints.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use axum::http::HeaderMap;

use flash_api::credential::{keys_match, presented_key};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::store::{Endpoint, Template};
use crate::util::random_secret;

/// File name of the user API key inside the data dir.
pub const API_KEY_FILE: &str = "api_key";
/// File name of the secret that signs artifact URLs.
pub const URL_SECRET_FILE: &str = "url_secret";
/// File name of the secret environment keys are derived from.
pub const WORKER_KEY_SECRET_FILE: &str = "worker_key_secret";

const ENVIRONMENT_KEY_PREFIX: &str = "flw_";

/// Who a request speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The user key: everything.
    User,
    /// The key of one environment's workers ([`Auth::environment_key`]).
    Environment(String),
}

/// Path of the API key file for a data dir (what the CLI reads).
pub fn api_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(API_KEY_FILE)
}

/// Reads a secret file, creating it with a fresh random value (mode 0600) if missing.
pub fn load_or_create_secret(path: &Path) -> Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let secret = format!("fl_{}", random_secret());
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {} (is the data dir writable?)", path.display()))?;
    file.write_all(secret.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(secret)
}

/// Checks credentials against the user key, environment keys and, where allowed, an
/// endpoint's `aiKey`.
#[derive(Clone)]
pub struct Auth {
    user_key: String,
    worker_secret: String,
}

impl Auth {
    pub fn new(user_key: String, worker_secret: String) -> Self {
        Self {
            user_key,
            worker_secret,
        }
    }

    /// The user key (deploys put it in templates as `RUNPOD_API_KEY`).
    pub fn user_key(&self) -> &str {
        &self.user_key
    }

    /// Whether the request carries the user key.
    pub fn is_user(&self, headers: &HeaderMap) -> bool {
        presented_key(headers).is_some_and(|k| keys_match(k, &self.user_key))
    }

    /// Whether the request carries the user key or the given endpoint key.
    pub fn is_user_or(&self, headers: &HeaderMap, ai_key: &str) -> bool {
        presented_key(headers).is_some_and(|k| {
            keys_match(k, &self.user_key) || (!ai_key.is_empty() && keys_match(k, ai_key))
        })
    }

    /// Who the request's key speaks for, if anyone.
    pub fn principal(&self, headers: &HeaderMap) -> Option<Principal> {
        let key = presented_key(headers)?;
        if keys_match(key, &self.user_key) {
            return Some(Principal::User);
        }
        let (environment_id, tag) = key.strip_prefix(ENVIRONMENT_KEY_PREFIX)?.rsplit_once('_')?;
        (!environment_id.is_empty() && keys_match(tag, &self.tag(environment_id)))
            .then(|| Principal::Environment(environment_id.to_string()))
    }

    /// Whether the request may use `ep` as a caller: the user key, or the key of the
    /// environment `ep` belongs to.
    pub fn may_call(&self, headers: &HeaderMap, ep: &Endpoint) -> bool {
        match self.principal(headers) {
            Some(Principal::User) => true,
            Some(Principal::Environment(env)) => {
                ep.flash_environment_id.as_deref() == Some(env.as_str())
            }
            None => false,
        }
    }

    /// [`may_call`](Self::may_call), or the endpoint's own `aiKey`.
    pub fn may_call_or_worker(&self, headers: &HeaderMap, ep: &Endpoint) -> bool {
        self.may_call(headers, ep) || self.is_user_or(headers, &ep.ai_key)
    }

    /// The key the workers of environment `environment_id` get in place of the user key.
    pub fn environment_key(&self, environment_id: &str) -> String {
        format!(
            "{ENVIRONMENT_KEY_PREFIX}{environment_id}_{}",
            self.tag(environment_id)
        )
    }

    /// The `RUNPOD_API_KEY` a worker of `ep` holds: its template's value, except that the
    /// user key becomes the key of `ep`'s environment. The mothership (it runs no user code,
    /// and saves and deletes endpoints) and endpoints outside any environment (nothing to
    /// scope them to) keep it; any other value is the user's choice, kept as is.
    pub fn worker_api_key(&self, template: Option<&Template>, ep: &Endpoint) -> Option<String> {
        let template = template?;
        let value = template.env_value("RUNPOD_API_KEY")?;
        let mothership = template
            .env_value("FLASH_IS_MOTHERSHIP")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        match ep.flash_environment_id.as_deref() {
            Some(env) if !mothership && keys_match(value, &self.user_key) => {
                Some(self.environment_key(env))
            }
            _ => Some(value.to_string()),
        }
    }

    fn tag(&self, environment_id: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.worker_secret.as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(b"flash environment key\0");
        mac.update(environment_id.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EnvVar;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::AUTHORIZATION,
            value.parse().expect("header"),
        );
        h
    }

    fn endpoint(environment: Option<&str>) -> Endpoint {
        Endpoint {
            ai_key: "ai".into(),
            flash_environment_id: environment.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn environment_keys_reach_their_environment_and_nothing_else() {
        let auth = Auth::new("k1".into(), "secret".into());
        let key = auth.environment_key("env-a");
        assert!(key.starts_with("flw_env-a_"), "{key}");
        let bearer = headers(&format!("Bearer {key}"));
        assert_eq!(
            auth.principal(&bearer),
            Some(Principal::Environment("env-a".into()))
        );
        assert!(!auth.is_user(&bearer));
        assert!(auth.may_call(&bearer, &endpoint(Some("env-a"))));
        assert!(!auth.may_call(&bearer, &endpoint(Some("env-b"))));
        assert!(!auth.may_call(&bearer, &endpoint(None)));
        // Another environment's name with this tag, a changed tag, another secret's key.
        let forged = key.replace("env-a", "env-b");
        assert_eq!(auth.principal(&headers(&forged)), None);
        let mut altered = key.clone();
        altered.pop();
        altered.push('x');
        assert_eq!(auth.principal(&headers(&altered)), None);
        let other = Auth::new("k1".into(), "another".into()).environment_key("env-a");
        assert_eq!(auth.principal(&headers(&other)), None);
    }

    fn template(env: &[(&str, &str)]) -> Template {
        Template {
            env: env
                .iter()
                .map(|(key, value)| EnvVar {
                    key: key.to_string(),
                    value: value.to_string(),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn workers_get_their_environments_key_instead_of_the_users() {
        let auth = Auth::new("k1".into(), "secret".into());
        let ep = endpoint(Some("env-a"));
        let deployed = template(&[("RUNPOD_API_KEY", "k1")]);
        assert_eq!(
            auth.worker_api_key(Some(&deployed), &ep),
            Some(auth.environment_key("env-a"))
        );
        let mothership = template(&[("RUNPOD_API_KEY", "k1"), ("FLASH_IS_MOTHERSHIP", "true")]);
        assert_eq!(
            auth.worker_api_key(Some(&mothership), &ep).as_deref(),
            Some("k1")
        );
        assert_eq!(
            auth.worker_api_key(Some(&deployed), &endpoint(None))
                .as_deref(),
            Some("k1")
        );
        let own = template(&[("RUNPOD_API_KEY", "their own")]);
        assert_eq!(
            auth.worker_api_key(Some(&own), &ep).as_deref(),
            Some("their own")
        );
        assert_eq!(auth.worker_api_key(Some(&template(&[])), &ep), None);
        assert_eq!(auth.worker_api_key(None, &ep), None);
    }

    #[test]
    fn bearer_and_raw_keys_are_accepted() {
        let auth = Auth::new("k1".into(), "secret".into());
        assert!(auth.is_user(&headers("Bearer k1")));
        assert!(auth.is_user(&headers("bearer k1")));
        assert!(
            auth.is_user(&headers("k1")),
            "the worker SDK sends the raw key"
        );
        assert!(!auth.is_user(&headers("Bearer k2")));
        assert!(!auth.is_user(&HeaderMap::new()));
        assert!(auth.is_user_or(&headers("ai"), "ai"));
        assert!(!auth.is_user_or(&headers(""), ""));
    }

    #[test]
    fn key_file_is_created_once_with_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = api_key_path(dir.path());
        let first = load_or_create_secret(&path).expect("create");
        assert_eq!(load_or_create_secret(&path).expect("read"), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777,
                0o600
            );
        }
    }
}
