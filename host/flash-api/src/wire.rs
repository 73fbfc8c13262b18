//! Typed answers of the State Manager, with the field names of RunPod's schema (reference
//! §1.2). The manifest stays an opaque JSON object: it is the contract of `flash-manifest`,
//! not of this API.

use std::fmt;

use serde::Deserialize;
use serde_json::Value;

/// An id/name pair (`endpoints`, `networkVolumes` of an environment).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Ref {
    pub id: Option<String>,
    pub name: Option<String>,
}

/// A Flash environment as [`crate::operations::GET_FLASH_ENVIRONMENT`] selects it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Environment {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub state: Option<String>,
    /// The build currently deployed to the environment; `None` before the first deploy.
    #[serde(default)]
    pub active_build_id: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub endpoints: Vec<Ref>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub network_volumes: Vec<Ref>,
}

/// A build as `getFlashBuild` / `updateFlashBuildManifest` select it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Build {
    pub id: String,
    /// The opaque manifest object (`null` when the build has none).
    #[serde(default)]
    pub manifest: Value,
}

/// A build as `listFlashBuilds` / `getFlashApps` select it (no manifest).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildRef {
    pub id: String,
    #[serde(default)]
    pub object_key: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
}

/// An environment's deploy lease as `flash server` reports it (its extension; the token
/// is never sent back).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentLease {
    pub flash_environment_id: String,
    /// Whether the caller's token holds the lease now.
    pub granted: bool,
    /// Who holds it (the caller when granted), as the holder described itself.
    #[serde(default)]
    pub holder: Option<String>,
    /// RFC 3339.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// Seconds until the lease ends unless renewed (server's clock, so no skew).
    #[serde(default)]
    pub expires_in_seconds: Option<i64>,
}

/// A `flash login` authorization request (reference §1.6).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthRequest {
    pub id: String,
    /// `PENDING`, `APPROVED`, `CONSUMED`, `DENIED` or `EXPIRED`.
    pub status: String,
    /// RFC 3339; the request is void after it.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// The new API key, once the request is approved.
    #[serde(default)]
    pub api_key: Option<String>,
}

impl fmt::Debug for AuthRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthRequest")
            .field("id", &self.id)
            .field("status", &self.status)
            .field("expires_at", &self.expires_at)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

fn null_as_empty<'de, D, T>(de: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(de)?.unwrap_or_default())
}
