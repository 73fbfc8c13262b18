//! Peer discovery against a State Manager stand-in ([`flash_api::stub`]): `ManifestFetcher`'s
//! TTL cache, single fetch under concurrency, local fallback, and write-back. The client
//! itself is tested in `flash-api`.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use flash_api::stub::{Stub, dead_base_url, start};
use flash_api::{ClientConfig, KeySource, StateManagerClient};
use flash_host::manifest_fetcher::{ManifestFetcher, ManifestSource};
use serde_json::{Value, json};

fn manifest(project: &str) -> Value {
    json!({
        "version": "1.0",
        "generated_at": "2026-11-28T00:00:00Z",
        "project_name": project,
        "flash_contract": "flash:runtime@0.2.0",
        "resources": {},
        "function_registry": {},
        "resources_endpoints": {
            "gpu_worker": "https://ep-gpu.api.runpod.ai",
            "api": "https://ep-api.api.runpod.ai"
        },
        "deploy_state": { "kept": true }
    })
}

/// A stand-in with `env-1` → `build-1` (manifest `demo`) and `env-new` without a build.
async fn seeded() -> (Arc<Stub>, String) {
    let stub = Arc::new(Stub::default());
    stub.add_environment("env-1", Some("build-1"));
    stub.add_environment("env-new", None);
    stub.set_build("build-1", manifest("demo"));
    let base = start(stub.clone()).await;
    (stub, base)
}

fn client(base: &str) -> StateManagerClient {
    let config = ClientConfig::new(base, "test-key", KeySource::Env)
        .expect("config")
        .with_timeout(Duration::from_secs(5))
        .with_backoff_base(Duration::from_millis(1));
    StateManagerClient::new(config).expect("client")
}

/// Every test runs under this bound, so a hang fails instead of stalling the suite.
async fn bounded<F: Future>(test: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), test)
        .await
        .expect("test exceeded 30 s")
}

fn write_json(path: &Path, value: &Value) {
    std::fs::write(path, serde_json::to_vec_pretty(value).expect("json")).expect("write file");
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("read file")).expect("file is JSON")
}

// ---------------------------------------------------------------------------------------------
// ManifestFetcher
// ---------------------------------------------------------------------------------------------

fn fetcher(base: &str, local: &Path) -> ManifestFetcher {
    ManifestFetcher::new()
        .with_state_manager(client(base), "env-1")
        .with_local_path(local)
}

#[tokio::test]
async fn fetcher_prefers_the_state_manager() {
    bounded(async {
        let (_stub, base) = seeded().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let local = dir.path().join("flash_manifest.json");
        write_json(&local, &manifest("local"));
        let (manifest, source) = fetcher(&base, &local)
            .get_with_source()
            .await
            .expect("manifest");
        assert_eq!(manifest.project_name, "demo");
        assert_eq!(
            source,
            ManifestSource::StateManager {
                build_id: "build-1".into()
            }
        );
    })
    .await;
}

#[tokio::test]
async fn fetcher_caches_for_the_ttl() {
    bounded(async {
        let (stub, base) = seeded().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let fetcher = fetcher(&base, &dir.path().join("flash_manifest.json"));
        for _ in 0..20 {
            let manifest = fetcher.get().await.expect("manifest");
            assert_eq!(manifest.project_name, "demo");
        }
        assert_eq!(stub.requests(), 2, "one fetch = environment + build");
        let endpoints = fetcher.resources_endpoints().await.expect("endpoints");
        assert_eq!(endpoints.len(), 2);
        assert_eq!(stub.requests(), 2);
    })
    .await;
}

#[tokio::test]
async fn concurrent_callers_after_expiry_share_one_fetch() {
    bounded(async {
        let (stub, base) = seeded().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let fetcher = Arc::new(
            fetcher(&base, &dir.path().join("flash_manifest.json"))
                .with_ttl(Duration::from_millis(400)),
        );
        fetcher.get().await.expect("first fetch");
        assert_eq!(stub.requests(), 2);

        tokio::time::sleep(Duration::from_millis(500)).await;
        stub.set_delay(Duration::from_millis(50));
        stub.set_build("build-1", manifest("after-expiry"));
        let callers: Vec<_> = (0..32)
            .map(|_| {
                let fetcher = fetcher.clone();
                tokio::spawn(async move { fetcher.get().await })
            })
            .collect();
        for caller in callers {
            let manifest = caller.await.expect("task").expect("manifest");
            assert_eq!(manifest.project_name, "after-expiry");
        }
        assert_eq!(
            stub.requests(),
            4,
            "32 callers after expiry cause one fetch"
        );
    })
    .await;
}

#[tokio::test]
async fn invalidate_forces_a_refetch() {
    bounded(async {
        let (stub, base) = seeded().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let fetcher = fetcher(&base, &dir.path().join("flash_manifest.json"));
        assert_eq!(fetcher.get().await.expect("get").project_name, "demo");
        stub.set_build("build-1", manifest("redeployed"));
        assert_eq!(
            fetcher.get().await.expect("get").project_name,
            "demo",
            "still cached"
        );
        fetcher.invalidate().await;
        assert_eq!(fetcher.get().await.expect("get").project_name, "redeployed");
        assert_eq!(stub.requests(), 4);
    })
    .await;
}

#[tokio::test]
async fn fetched_manifest_is_written_back_atomically() {
    bounded(async {
        let (_stub, base) = seeded().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let local = dir.path().join("flash_manifest.json");
        write_json(&local, &manifest("stale-local"));
        fetcher(&base, &local).get().await.expect("manifest");

        assert_eq!(read_json(&local), manifest("demo"), "unknown keys kept too");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["flash_manifest.json"], "no temp files left behind");
    })
    .await;
}

#[tokio::test]
async fn falls_back_to_local_file_when_server_is_down() {
    bounded(async {
        let base = dead_base_url().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let local = dir.path().join("flash_manifest.json");
        write_json(&local, &manifest("local"));
        let (manifest, source) = fetcher(&base, &local)
            .get_with_source()
            .await
            .expect("local fallback");
        assert_eq!(manifest.project_name, "local");
        assert_eq!(source, ManifestSource::LocalFile(local.clone()));
        assert_eq!(
            manifest
                .resources_endpoints
                .as_ref()
                .and_then(|e| e.get("api"))
                .map(String::as_str),
            Some("https://ep-api.api.runpod.ai")
        );
    })
    .await;
}

#[tokio::test]
async fn falls_back_to_local_file_when_nothing_is_persisted() {
    bounded(async {
        let (_stub, base) = seeded().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let local = dir.path().join("flash_manifest.json");
        write_json(&local, &manifest("local"));
        let fetcher = ManifestFetcher::new()
            .with_state_manager(client(&base), "env-new")
            .with_local_path(&local);
        let (_, source) = fetcher.get_with_source().await.expect("local fallback");
        assert_eq!(source, ManifestSource::LocalFile(local));
    })
    .await;
}

#[tokio::test]
async fn reports_both_causes_when_no_source_works() {
    bounded(async {
        let base = dead_base_url().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let local = dir.path().join("missing.json");
        let err = fetcher(&base, &local)
            .get()
            .await
            .expect_err("nothing works");
        let text = err.to_string();
        assert!(text.contains("State Manager failed"), "{text}");
        assert!(text.contains("missing.json"), "{text}");
    })
    .await;
}

#[tokio::test]
async fn from_lookup_wires_env_vars() {
    bounded(async {
        let (_stub, base) = seeded().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let local = dir.path().join("flash_manifest.json");
        write_json(&local, &manifest("local"));
        let local_text = local.to_string_lossy().into_owned();

        let only_file = {
            let local_text = local_text.clone();
            move |name: &str| (name == "FLASH_MANIFEST_PATH").then(|| local_text.clone())
        };
        let (_, source) = ManifestFetcher::from_lookup(only_file)
            .get_with_source()
            .await
            .expect("local only");
        assert_eq!(source, ManifestSource::LocalFile(local.clone()));

        let vars: HashMap<&str, String> = HashMap::from([
            ("FLASH_MANIFEST_PATH", local_text),
            ("FLASH_ENVIRONMENT_ID", "env-1".to_owned()),
            ("RUNPOD_API_KEY", "test-key".to_owned()),
            ("RUNPOD_API_BASE_URL", format!("{base}/")),
        ]);
        let fetcher = ManifestFetcher::from_lookup(|name| vars.get(name).cloned());
        let (manifest, source) = fetcher.get_with_source().await.expect("remote");
        assert_eq!(manifest.project_name, "demo");
        assert!(matches!(source, ManifestSource::StateManager { .. }));
    })
    .await;
}
