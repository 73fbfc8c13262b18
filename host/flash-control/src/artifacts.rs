//! The artifact store: build tarballs on disk behind signed, expiring URLs.
//!
//! `prepareFlashArtifactUpload` reserves an object key for an app with the announced size
//! and returns a presigned `PUT /artifacts/{objectKey}?token=…&expires=…` URL, like S3's:
//! the client uploads without its API key (reference §1.6). The token is a SHA-256 over a
//! server secret, the method, the key and the expiry, so nothing per-URL needs storing and a
//! URL cannot be widened to another key, method or deadline. The upload may not exceed the
//! announced size; its SHA-256 is computed while streaming to disk and recorded, an optional
//! `x-flash-sha256` request header is checked against it, and downloads (presigned `GET`s,
//! for tools; local workers read the stored file itself as RunPod's artifact file)
//! re-verify the file against the recorded digest before serving it and return the digest
//! in `x-flash-sha256`.

use std::path::PathBuf;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::state::AppState;
use crate::store::{Artifact, DeployStore, StoreError};
use flash_api::credential::keys_match;
use flash_manifest::atomic::{Staged, Visibility};

use crate::util::{ApiError, now_ms};

/// Request header (upload) and response header (download) carrying the hex SHA-256.
pub const SHA256_HEADER: &str = "x-flash-sha256";

/// Where artifacts live and how their URLs are signed.
pub struct ArtifactStore {
    dir: PathBuf,
    secret: String,
    base_url: String,
    url_ttl: Duration,
    max_bytes: u64,
}

/// A presigned upload URL, as `prepareFlashArtifactUpload` returns it.
pub struct UploadTicket {
    pub upload_url: String,
    pub object_key: String,
    pub expires_at: i64,
}

/// Why preparing an upload was refused.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("tarballSize {size} bytes exceeds the server limit of {max} bytes")]
    TooLarge { size: i64, max: u64 },
    #[error("tarballSize must be positive, got {0}")]
    BadSize(i64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ArtifactStore {
    /// `dir` holds the files; `base_url` is the server's own URL (`http://127.0.0.1:PORT`).
    pub fn new(
        dir: PathBuf,
        secret: String,
        base_url: String,
        url_ttl: Duration,
        max_bytes: u64,
    ) -> Self {
        Self {
            dir,
            secret,
            base_url,
            url_ttl,
            max_bytes,
        }
    }

    fn sign(&self, method: &str, key: &str, expires: i64) -> String {
        let mut h = Sha256::new();
        for part in [self.secret.as_str(), method, key, &expires.to_string()] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
        hex::encode(h.finalize())
    }

    fn url(&self, method: &str, key: &str) -> (String, i64) {
        let expires = now_ms() / 1000 + self.url_ttl.as_secs() as i64;
        let token = self.sign(method, key, expires);
        (
            format!(
                "{}/artifacts/{key}?token={token}&expires={expires}",
                self.base_url
            ),
            expires,
        )
    }

    fn path_of(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    /// The file of a stored artifact: what local workers get as RunPod's artifact file.
    pub fn local_path(&self, key: &str) -> PathBuf {
        self.path_of(key)
    }

    /// Reserves an object key for `app_id` and returns its upload URL.
    pub fn prepare(
        &self,
        store: &dyn DeployStore,
        app_id: &str,
        size: i64,
    ) -> Result<UploadTicket, PrepareError> {
        if size <= 0 {
            return Err(PrepareError::BadSize(size));
        }
        if size as u64 > self.max_bytes {
            return Err(PrepareError::TooLarge {
                size,
                max: self.max_bytes,
            });
        }
        let object_key = format!("{app_id}/{}.tar.gz", uuid::Uuid::new_v4().simple());
        store.create_artifact(&Artifact {
            object_key: object_key.clone(),
            app_id: app_id.to_string(),
            declared_size: size,
            sha256: None,
            size: None,
            created_at: now_ms(),
        })?;
        let (upload_url, expires) = self.url("PUT", &object_key);
        Ok(UploadTicket {
            upload_url,
            object_key,
            expires_at: expires * 1000,
        })
    }

    /// A presigned download URL for an uploaded artifact, and its expiry (ms).
    pub fn download_url(&self, object_key: &str) -> (String, i64) {
        let (url, expires) = self.url("GET", object_key);
        (url, expires * 1000)
    }

    /// Recomputes the digest of a stored artifact.
    pub async fn file_sha256(&self, key: &str) -> std::io::Result<String> {
        let mut file = tokio::fs::File::open(self.path_of(key)).await?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = file.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(hex::encode(hasher.finalize()))
    }

    fn check_url(&self, method: &str, key: &str, q: &SignedQuery) -> Result<(), ApiError> {
        let valid_key = !key.is_empty()
            && !key
                .split('/')
                .any(|p| p.is_empty() || p == "." || p == "..")
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
        if !valid_key {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("invalid object key `{key}`"),
            ));
        }
        if !keys_match(&q.token, &self.sign(method, key, q.expires)) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "invalid artifact URL signature",
            ));
        }
        if now_ms() / 1000 > q.expires {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "artifact URL expired; request a new one (prepareFlashArtifactUpload or getFlashEnvironment)",
            ));
        }
        Ok(())
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// Query string of a presigned URL.
#[derive(Deserialize)]
pub struct SignedQuery {
    token: String,
    expires: i64,
}

/// `PUT /artifacts/{*key}`: receives an upload.
pub async fn put(
    State(state): State<AppState>,
    Path(key): Path<String>,
    Query(q): Query<SignedQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let arts = &state.artifacts;
    if let Err(e) = arts.check_url("PUT", &key, &q) {
        return e.into_response();
    }
    let artifact = match state.store.get_artifact(&key) {
        Ok(Some(a)) => a,
        Ok(None) => {
            return error(
                StatusCode::NOT_FOUND,
                format!("no upload was prepared for `{key}`"),
            );
        }
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    if artifact.sha256.is_some() {
        return error(
            StatusCode::CONFLICT,
            format!("artifact `{key}` was already uploaded"),
        );
    }
    let limit = artifact.declared_size as u64;
    let declared_len = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared_len.is_some_and(|n| n > limit) {
        return too_large(limit);
    }
    let expected_sha = headers
        .get(SHA256_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);

    // Streamed into a staged replacement of the file (`flash_manifest::atomic`): a failed,
    // oversized or mismatched upload leaves nothing behind, a stored one is complete.
    let path = arts.path_of(&key);
    let result = async {
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        let target = path.clone();
        let mut staged =
            tokio::task::spawn_blocking(move || Staged::new(&target, Visibility::Shared))
                .await
                .map_err(std::io::Error::other)??;
        let mut file = tokio::fs::File::from_std(staged.file().try_clone()?);
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(std::io::Error::other)?;
            size += chunk.len() as u64;
            if size > limit {
                return Ok(Err(too_large(limit)));
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await?;
        }
        // Waits for the writes in flight; `commit` syncs them to disk.
        file.flush().await?;
        Ok::<_, std::io::Error>(Ok((staged, hex::encode(hasher.finalize()), size)))
    }
    .await;
    let (staged, sha, size) = match result {
        Ok(Ok(done)) => done,
        Ok(Err(resp)) => return resp,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("storing artifact `{key}`: {e}"),
            );
        }
    };
    if let Some(expected) = expected_sha
        && expected != sha
    {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "sha256 mismatch for `{key}`: header says {expected}, body hashes to {sha}; upload again"
            ),
        );
    }
    let committed = tokio::task::spawn_blocking(move || staged.commit())
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
    if let Err(e) = committed {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("storing artifact `{key}`: {e}"),
        );
    }
    if let Err(e) = state.store.record_upload(&key, &sha, size as i64) {
        return error(StatusCode::CONFLICT, e.to_string());
    }
    tracing::info!(key, size, sha256 = %sha, "artifact uploaded");
    let mut resp = (
        StatusCode::OK,
        Json(json!({ "objectKey": key, "sha256": sha, "size": size })),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&sha) {
        resp.headers_mut().insert(SHA256_HEADER, v);
    }
    resp
}

fn too_large(limit: u64) -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("upload exceeds the {limit} bytes announced in prepareFlashArtifactUpload"),
    )
}

/// `GET /artifacts/{*key}`: serves an uploaded artifact after re-verifying its digest.
pub async fn get(
    State(state): State<AppState>,
    Path(key): Path<String>,
    Query(q): Query<SignedQuery>,
) -> Response {
    let arts = &state.artifacts;
    if let Err(e) = arts.check_url("GET", &key, &q) {
        return e.into_response();
    }
    let recorded = match state.store.get_artifact(&key) {
        Ok(Some(Artifact {
            sha256: Some(sha), ..
        })) => sha,
        Ok(_) => {
            return error(
                StatusCode::NOT_FOUND,
                format!("artifact `{key}` was never uploaded"),
            );
        }
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    match arts.file_sha256(&key).await {
        Ok(actual) if actual == recorded => {}
        Ok(actual) => {
            tracing::error!(key, %recorded, %actual, "artifact corrupted on disk");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "artifact `{key}` is corrupted: sha256 {actual}, recorded {recorded}; redeploy with `flash deploy`"
                ),
            );
        }
        Err(e) => {
            return error(
                StatusCode::NOT_FOUND,
                format!("artifact `{key}` is missing on disk: {e}"),
            );
        }
    }
    let file = match tokio::fs::File::open(arts.path_of(&key)).await {
        Ok(f) => f,
        Err(e) => return error(StatusCode::NOT_FOUND, format!("artifact `{key}`: {e}")),
    };
    let stream = futures::stream::unfold(file, |mut file| async move {
        let mut buf = vec![0u8; 64 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(axum::body::Bytes::from(buf)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    });
    let mut resp = Body::from_stream(stream).into_response();
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/gzip"),
    );
    if let Ok(v) = HeaderValue::from_str(&recorded) {
        resp.headers_mut().insert(SHA256_HEADER, v);
    }
    resp
}
