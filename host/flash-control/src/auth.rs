//! API-key authentication.
//!
//! The server has one user key, created on first start in `<data_dir>/api_key` (mode 0600)
//! so that the `flash` CLI on the same machine can read it. Clients send it as
//! `Authorization: Bearer <key>`; the RunPod worker SDK sends its key raw, without
//! `Bearer` (reference §3.3), so both forms are accepted. Each endpoint also has an `aiKey`:
//! it is what its workers get as `RUNPOD_AI_API_KEY`, and it is accepted for that endpoint's
//! worker routes and `/status` only, so a worker cannot act on other endpoints.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use axum::http::HeaderMap;

use flash_api::credential::{keys_match, presented_key};

use crate::util::random_secret;

/// File name of the user API key inside the data dir.
pub const API_KEY_FILE: &str = "api_key";
/// File name of the secret that signs artifact URLs.
pub const URL_SECRET_FILE: &str = "url_secret";

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

/// Checks credentials against the user key and, where allowed, an endpoint's `aiKey`.
#[derive(Clone)]
pub struct Auth {
    user_key: String,
}

impl Auth {
    pub fn new(user_key: String) -> Self {
        Self { user_key }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::AUTHORIZATION,
            value.parse().expect("header"),
        );
        h
    }

    #[test]
    fn bearer_and_raw_keys_are_accepted() {
        let auth = Auth::new("k1".into());
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
