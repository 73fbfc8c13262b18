//! The State Manager GraphQL API and the artifact store, against a real server on loopback:
//! every operation of reference §1.3 as the Flash client sends it, the error-text contracts,
//! artifact upload/download checks and atomic concurrent manifest updates.

use std::time::Duration;

use crate::common::{SAVE_ENDPOINT, TestServer};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const GET_APPS: &str = "query getFlashApps { myself { flashApps { id name flashEnvironments { id name state activeBuildId createdAt } flashBuilds { id createdAt } } } }";
const GET_APP: &str = "query getFlashApp($input: String!) { flashApp(flashAppId: $input) { id name flashEnvironments { id name state } flashBuilds { id objectKey createdAt } } }";
const GET_APP_BY_NAME: &str = "query getFlashAppByName($flashAppName: String!) { flashAppByName(flashAppName: $flashAppName) { id name flashEnvironments { id name state activeBuildId createdAt } flashBuilds { id objectKey createdAt } } }";
const LIST_ENVS: &str = "query listFlashEnvironments($flashAppId: String!) { flashApp(flashAppId: $flashAppId) { flashEnvironments { id name state activeBuildId createdAt } } }";
const LIST_BUILDS: &str = "query listFlashBuilds($flashAppId: String!) { flashApp(flashAppId: $flashAppId) { flashBuilds { id objectKey createdAt } } }";
const GET_ENV: &str = "query getFlashEnvironment($flashEnvironmentId: String!) { flashEnvironment(flashEnvironmentId: $flashEnvironmentId) { id name state activeBuildId createdAt endpoints { id name } networkVolumes { id name } } }";
const GET_ENV_BY_NAME: &str = "query getFlashEnvironmentByName($input: FlashEnvironmentByNameInput!) { flashEnvironmentByName(input: $input) { id name state activeBuildId createdAt endpoints { id name } networkVolumes { id name } } }";
const GET_BUILD: &str =
    "query getFlashBuild($input: String!) { flashBuild(flashBuildId: $input) { id manifest } }";
const GET_ENDPOINT: &str =
    "query getEndpoint($id: String!) { myself { endpoint(id: $id) { id } } }";
const GET_TEMPLATE: &str = "query getTemplate($id: String!) { podTemplate(id: $id) { id containerDiskInGb dockerArgs env { key value } imageName name readme } }";
const AUTH_STATUS: &str = "query flashAuthRequestStatus($flashAuthRequestId: String!) { flashAuthRequestStatus(flashAuthRequestId: $flashAuthRequestId) { id status expiresAt apiKey } }";
const GPU_TYPES: &str = "query ServerlessGpuTypes($gpuTypesInput: GpuTypeFilter, $lowestPriceInput: GpuLowestPriceInput) { gpuTypes(input: $gpuTypesInput) { lowestPrice(input: $lowestPriceInput) { stockStatus } } }";
const CPU_TYPES: &str = "query SecureCpuTypes($cpuFlavorInput: CpuFlavorInput, $specificsInput: SpecificsInput) { cpuFlavors(input: $cpuFlavorInput) { specifics(input: $specificsInput) { stockStatus } } }";
const DELETE_ENDPOINT: &str = "mutation deleteEndpoint($id: String!) { deleteEndpoint(id: $id) }";
const SAVE_TEMPLATE: &str = "mutation saveTemplate($input: SaveTemplateInput) { saveTemplate(input: $input) { id containerDiskInGb dockerArgs env { key value } imageName name readme } }";
const CREATE_APP: &str = "mutation createFlashApp($input: CreateFlashAppInput!) { createFlashApp(input: $input) { id name } }";
const CREATE_ENV: &str = "mutation createFlashEnvironment($input: CreateFlashEnvironmentInput!) { createFlashEnvironment(input: $input) { id name } }";
const DELETE_APP: &str =
    "mutation deleteFlashApp($flashAppId: String!) { deleteFlashApp(flashAppId: $flashAppId) }";
const DELETE_ENV: &str = "mutation deleteFlashEnvironment($flashEnvironmentId: String!) { deleteFlashEnvironment(flashEnvironmentId: $flashEnvironmentId) }";
const PREPARE: &str = "mutation PrepareArtifactUpload($input: PrepareFlashArtifactUploadInput!) { prepareFlashArtifactUpload(input: $input) { uploadUrl objectKey expiresAt } }";
const FINALIZE: &str = "mutation FinalizeArtifactUpload($input: FinalizeFlashArtifactUploadInput!) { finalizeFlashArtifactUpload(input: $input) { id manifest } }";
const DEPLOY: &str = "mutation deployBuildToEnvironment($input: DeployBuildToEnvironmentInput!) { deployBuildToEnvironment(input: $input) { id name activeArtifact { objectKey downloadUrl expiresAt } } }";
const UPDATE_MANIFEST: &str = "mutation updateFlashBuildManifest($input: UpdateFlashBuildManifestInput!) { updateFlashBuildManifest(input: $input) { id manifest } }";
const CREATE_AUTH: &str =
    "mutation createFlashAuthRequest { createFlashAuthRequest { id status expiresAt } }";

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn error_text(resp: &Value) -> String {
    resp["errors"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|m| m["message"].as_str())
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default()
}

/// Uploads `body` for a fresh artifact of `app`; returns (objectKey, PUT status).
async fn upload(
    s: &TestServer,
    app: &str,
    declared: usize,
    body: Vec<u8>,
    sha: Option<String>,
) -> (String, u16, Value) {
    let t = s
        .gql(
            PREPARE,
            json!({ "input": { "flashAppId": app, "tarballSize": declared } }),
        )
        .await;
    let url = t["prepareFlashArtifactUpload"]["uploadUrl"]
        .as_str()
        .expect("uploadUrl")
        .to_string();
    let key = t["prepareFlashArtifactUpload"]["objectKey"]
        .as_str()
        .expect("objectKey")
        .to_string();
    // Presigned: no Authorization header, like the Flash client.
    let mut req = reqwest::Client::new()
        .put(&url)
        .header("content-type", "application/gzip")
        .body(body);
    if let Some(sha) = sha {
        req = req.header("x-flash-sha256", sha);
    }
    let r = req.send().await.expect("PUT");
    let code = r.status().as_u16();
    (key, code, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_api_requires_the_key() {
    let s = TestServer::start().await;
    let c = reqwest::Client::new();
    for key in [None, Some("wrong")] {
        let mut req = c
            .post(format!("{}/graphql", s.url))
            .json(&json!({ "query": GET_APPS, "variables": {} }));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let r = req.send().await.expect("graphql");
        assert_eq!(r.status(), 401);
        let body: Value = r.json().await.expect("401 body is JSON");
        assert!(error_text(&body).contains("unauthorized"), "{body}");
        let mut req = c
            .post(format!("{}/v2/someep/run", s.url))
            .json(&json!({ "input": {} }));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        assert_eq!(req.send().await.expect("run").status(), 401);
        let mut req = c.get(format!("{}/v2/someep/job-take/w1", s.url));
        if let Some(k) = key {
            req = req.header("authorization", k);
        }
        assert_eq!(req.send().await.expect("take").status(), 401);
    }
    // The key file exists with 0600 permissions.
    let key_file = s.dir.path().join("api_key");
    assert_eq!(
        std::fs::read_to_string(&key_file).expect("api_key").trim(),
        s.key
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key_file)
                .expect("meta")
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deploy_sequence_uses_every_operation() {
    let s = TestServer::start().await;

    // 1. Resolve the app: unknown names fail with "app not found".
    let resp = s
        .gql_raw(GET_APP_BY_NAME, json!({ "flashAppName": "demo" }))
        .await;
    assert!(error_text(&resp).contains("app not found"), "{resp}");
    let app = s
        .gql(CREATE_APP, json!({ "input": { "name": "demo" } }))
        .await["createFlashApp"]
        .clone();
    let app_id = app["id"].as_str().expect("app id").to_string();
    assert_eq!(app["name"], "demo");
    let dup = s
        .gql_raw(CREATE_APP, json!({ "input": { "name": "demo" } }))
        .await;
    assert!(error_text(&dup).contains("already exists"), "{dup}");
    let env = s
        .gql(
            CREATE_ENV,
            json!({ "input": { "flashAppId": app_id, "name": "production" } }),
        )
        .await["createFlashEnvironment"]
        .clone();
    let env_id = env["id"].as_str().expect("env id").to_string();
    let by_name = s
        .gql(GET_APP_BY_NAME, json!({ "flashAppName": "demo" }))
        .await;
    assert_eq!(by_name["flashAppByName"]["id"], app_id);
    let apps = s.gql(GET_APPS, json!({})).await;
    assert_eq!(
        apps["myself"]["flashApps"][0]["flashEnvironments"][0]["name"],
        "production"
    );
    let envs = s.gql(LIST_ENVS, json!({ "flashAppId": app_id })).await;
    assert_eq!(
        envs["flashApp"]["flashEnvironments"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    let missing = s
        .gql(
            GET_ENV_BY_NAME,
            json!({ "input": { "flashAppId": app_id, "name": "staging" } }),
        )
        .await;
    assert!(missing["flashEnvironmentByName"].is_null());

    // 2. Upload the artifact.
    let tarball: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    let (key, code, body) = upload(
        &s,
        &app_id,
        tarball.len(),
        tarball.clone(),
        Some(sha256(&tarball)),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["sha256"], sha256(&tarball));
    let manifest = json!({ "version": "1.0", "project_name": "demo", "resources": { "gpu_worker": { "resource_type": "LiveServerless" } } });
    let build = s
        .gql(
            FINALIZE,
            json!({ "input": { "flashAppId": app_id, "objectKey": key, "manifest": manifest } }),
        )
        .await["finalizeFlashArtifactUpload"]
        .clone();
    let build_id = build["id"].as_str().expect("build id").to_string();
    assert_eq!(
        build["manifest"], manifest,
        "manifest is a JSON object, not a string"
    );
    let builds = s.gql(LIST_BUILDS, json!({ "flashAppId": app_id })).await;
    assert_eq!(builds["flashApp"]["flashBuilds"][0]["objectKey"], key);
    let app_q = s.gql(GET_APP, json!({ "input": app_id })).await;
    assert_eq!(app_q["flashApp"]["flashBuilds"][0]["id"], build_id);

    // 3. Activate; the artifact downloads from the returned URL, verified.
    let env_q = s
        .gql(
            GET_ENV_BY_NAME,
            json!({ "input": { "flashAppId": app_id, "name": "production" } }),
        )
        .await;
    assert_eq!(env_q["flashEnvironmentByName"]["id"], env_id);
    let deployed = s
        .gql(
            DEPLOY,
            json!({ "input": { "flashEnvironmentId": env_id, "flashBuildId": build_id } }),
        )
        .await["deployBuildToEnvironment"]
        .clone();
    assert_eq!(deployed["activeArtifact"]["objectKey"], key);
    let url = deployed["activeArtifact"]["downloadUrl"]
        .as_str()
        .expect("downloadUrl");
    let r = reqwest::get(url).await.expect("download");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["x-flash-sha256"].to_str().expect("sha header"),
        sha256(&tarball)
    );
    assert_eq!(r.bytes().await.expect("bytes").to_vec(), tarball);

    // 4. Provision.
    let got = s.gql(GET_BUILD, json!({ "input": build_id })).await;
    assert_eq!(got["flashBuild"]["manifest"], manifest);
    let ep = s
        .gql(SAVE_ENDPOINT, json!({ "input": {
            "name": "gpu_worker-fb", "flashEnvironmentId": env_id, "gpuIds": "ADA_24", "gpuCount": 1,
            "template": { "name": "tpl", "imageName": "runpod/flash:py3.12-latest", "containerDiskInGb": 64,
                          "env": [{ "key": "FLASH_RESOURCE_NAME", "value": "gpu_worker" }], "config": {} } } }))
        .await["saveEndpoint"]
        .clone();
    let ep_id = ep["id"].as_str().expect("endpoint id").to_string();
    assert_eq!(ep["name"], "gpu_worker", "trailing -fb stripped");
    assert_eq!(ep["type"], "QB");
    assert_eq!(ep["workersMin"], 0);
    assert_eq!(ep["workersMax"], 1);
    assert_eq!(ep["idleTimeout"], 60);
    assert_eq!(ep["scalerType"], "QUEUE_DELAY");
    assert_eq!(ep["scalerValue"], 4);
    assert_eq!(ep["flashBootType"], "FLASHBOOT");
    assert_eq!(ep["activeBuildid"], build_id);
    assert_eq!(ep["version"], 1);
    assert!(ep["aiKey"].as_str().is_some_and(|k| !k.is_empty()));
    let tpl_id = ep["templateId"].as_str().expect("templateId").to_string();
    let tpl = s.gql(GET_TEMPLATE, json!({ "id": tpl_id })).await;
    assert_eq!(tpl["podTemplate"]["env"][0]["value"], "gpu_worker");
    let saved = s
        .gql(SAVE_TEMPLATE, json!({ "input": { "id": tpl_id, "name": "tpl", "imageName": "img", "containerDiskInGb": 64,
              "dockerArgs": "", "env": [{ "key": "A", "value": "1" }], "volumeInGb": 0 } }))
        .await;
    assert_eq!(
        saved["saveTemplate"]["env"],
        json!([{ "key": "A", "value": "1" }])
    );
    // Update by id with templateId (the drift path of §1.5).
    let updated = s
        .gql(SAVE_ENDPOINT, json!({ "input": { "id": ep_id, "name": "gpu_worker", "templateId": tpl_id, "workersMax": 3 } }))
        .await["saveEndpoint"]
        .clone();
    assert_eq!(updated["id"], ep_id);
    assert_eq!(updated["version"], 2);
    assert_eq!(updated["workersMax"], 3);
    assert_eq!(updated["aiKey"], ep["aiKey"]);
    let bad = s
        .gql_raw(
            SAVE_ENDPOINT,
            json!({ "input": { "name": "x", "workersMin": 3, "workersMax": 1 } }),
        )
        .await;
    assert!(error_text(&bad).contains("workersMin"), "{bad}");
    let env_full = s
        .gql(GET_ENV, json!({ "flashEnvironmentId": env_id }))
        .await;
    assert_eq!(env_full["flashEnvironment"]["endpoints"][0]["id"], ep_id);
    assert_eq!(env_full["flashEnvironment"]["activeBuildId"], build_id);
    let found = s.gql(GET_ENDPOINT, json!({ "id": ep_id })).await;
    assert_eq!(found["myself"]["endpoint"]["id"], ep_id);

    // 5. Publish.
    let mut published = manifest.clone();
    published["resources_endpoints"] = json!({ "gpu_worker": format!("{}/v2/{ep_id}", s.url) });
    let up = s
        .gql(
            UPDATE_MANIFEST,
            json!({ "input": { "flashBuildId": build_id, "manifest": published } }),
        )
        .await;
    assert_eq!(up["updateFlashBuildManifest"]["manifest"], published);
    let not_object = s
        .gql_raw(
            UPDATE_MANIFEST,
            json!({ "input": { "flashBuildId": build_id, "manifest": "{}" } }),
        )
        .await;
    assert!(
        error_text(&not_object).contains("JSON object"),
        "{not_object}"
    );

    // Capacity probes and login.
    let gpus = s
        .gql(GPU_TYPES, json!({ "gpuTypesInput": { "ids": ["ADA_24", "AMPERE_16"] }, "lowestPriceInput": {
            "gpuCount": 1, "secureCloud": true, "includeAiApi": true, "allowedCudaVersions": [], "compliance": [] } }))
        .await;
    assert_eq!(gpus["gpuTypes"].as_array().map(Vec::len), Some(2));
    assert_eq!(gpus["gpuTypes"][0]["lowestPrice"]["stockStatus"], "High");
    let cpus = s.gql(CPU_TYPES, json!({ "cpuFlavorInput": { "id": "cpu3c" }, "specificsInput": { "dataCenterId": "EU-RO-1", "instanceId": "cpu3c-2-4" } })).await;
    assert_eq!(cpus["cpuFlavors"][0]["specifics"]["stockStatus"], "High");
    let auth = s.gql(CREATE_AUTH, json!({})).await;
    let auth_id = auth["createFlashAuthRequest"]["id"]
        .as_str()
        .expect("auth id")
        .to_string();
    let auth_status = s
        .gql(AUTH_STATUS, json!({ "flashAuthRequestId": auth_id }))
        .await;
    // Pending until someone approves it with the server's key (crate::login), then the
    // key is handed out once.
    assert_eq!(auth_status["flashAuthRequestStatus"]["status"], "PENDING");
    assert_eq!(auth_status["flashAuthRequestStatus"]["apiKey"], Value::Null);
    let approved = s
        .http
        .post(format!("{}/flash/login", s.url))
        .form(&[
            ("request", auth_id.as_str()),
            ("api_key", s.key.as_str()),
            ("decision", "approve"),
        ])
        .send()
        .await
        .expect("approving");
    assert_eq!(approved.status(), 200);
    let auth_status = s
        .gql(AUTH_STATUS, json!({ "flashAuthRequestId": auth_id }))
        .await;
    assert_eq!(auth_status["flashAuthRequestStatus"]["status"], "APPROVED");
    assert_eq!(auth_status["flashAuthRequestStatus"]["apiKey"], s.key);

    // Deletion: endpoint, environment, app.
    let del = s.gql_raw(DELETE_ENDPOINT, json!({ "id": ep_id })).await;
    assert!(
        del["data"]
            .as_object()
            .is_some_and(|d| d.contains_key("deleteEndpoint")),
        "{del}"
    );
    let gone = s.gql(GET_ENDPOINT, json!({ "id": ep_id })).await;
    assert!(gone["myself"]["endpoint"].is_null());
    s.gql(DELETE_ENV, json!({ "flashEnvironmentId": env_id }))
        .await;
    s.gql(DELETE_APP, json!({ "flashAppId": app_id })).await;
    let resp = s.gql_raw(GET_APP, json!({ "input": app_id })).await;
    assert!(error_text(&resp).contains("app not found"), "{resp}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn artifact_uploads_are_checked() {
    let s = TestServer::start_with(|c| c.max_artifact_bytes = 1_000_000).await;
    let app = s
        .gql(CREATE_APP, json!({ "input": { "name": "arts" } }))
        .await["createFlashApp"]["id"]
        .as_str()
        .expect("id")
        .to_string();

    // Oversize body: more bytes than announced.
    let (key, code, body) = upload(&s, &app, 10, vec![7u8; 11], None).await;
    assert_eq!(code, 413, "{body}");
    let fin = s
        .gql_raw(
            FINALIZE,
            json!({ "input": { "flashAppId": app, "objectKey": key, "manifest": {} } }),
        )
        .await;
    assert!(error_text(&fin).contains("not uploaded"), "{fin}");

    // Over the server limit: refused at prepare time.
    let big = s
        .gql_raw(
            PREPARE,
            json!({ "input": { "flashAppId": app, "tarballSize": 2_000_000 } }),
        )
        .await;
    assert!(error_text(&big).contains("exceeds"), "{big}");

    // Wrong sha256: rejected, nothing recorded.
    let data = b"tarball bytes".to_vec();
    let (key, code, body) =
        upload(&s, &app, data.len(), data.clone(), Some(sha256(b"other"))).await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("sha256 mismatch")),
        "{body}"
    );
    let fin = s
        .gql_raw(
            FINALIZE,
            json!({ "input": { "flashAppId": app, "objectKey": key, "manifest": {} } }),
        )
        .await;
    assert!(error_text(&fin).contains("not uploaded"), "{fin}");

    // A good upload cannot be overwritten, and a tampered URL is refused.
    let t = s
        .gql(
            PREPARE,
            json!({ "input": { "flashAppId": app, "tarballSize": data.len() } }),
        )
        .await;
    let url = t["prepareFlashArtifactUpload"]["uploadUrl"]
        .as_str()
        .expect("url")
        .to_string();
    let key = t["prepareFlashArtifactUpload"]["objectKey"]
        .as_str()
        .expect("key")
        .to_string();
    let c = reqwest::Client::new();
    assert_eq!(
        c.put(&url)
            .body(data.clone())
            .send()
            .await
            .expect("put")
            .status(),
        200
    );
    assert_eq!(
        c.put(&url)
            .body(data.clone())
            .send()
            .await
            .expect("put again")
            .status(),
        409
    );
    let (base, query) = url.split_once('?').expect("query");
    let expires: i64 = query
        .split('&')
        .find_map(|p| p.strip_prefix("expires="))
        .expect("expires")
        .parse()
        .expect("int");
    let tampered = format!(
        "{base}?{}",
        query.replace(
            &format!("expires={expires}"),
            &format!("expires={}", expires + 3600)
        )
    );
    let r = c
        .put(&tampered)
        .body(data.clone())
        .send()
        .await
        .expect("tampered");
    assert_eq!(r.status(), 403);

    // Stored file corrupted on disk: finalize and download refuse it.
    let build = s
        .gql(
            FINALIZE,
            json!({ "input": { "flashAppId": app, "objectKey": key, "manifest": {} } }),
        )
        .await;
    assert!(build["finalizeFlashArtifactUpload"]["id"].is_string());
    std::fs::write(s.dir.path().join("artifacts").join(&key), b"corrupted").expect("tamper");
    let env = s
        .gql(
            CREATE_ENV,
            json!({ "input": { "flashAppId": app, "name": "e" } }),
        )
        .await["createFlashEnvironment"]["id"]
        .clone();
    let dep = s.gql(DEPLOY, json!({ "input": { "flashEnvironmentId": env, "flashBuildId": build["finalizeFlashArtifactUpload"]["id"] } })).await;
    let dl = dep["deployBuildToEnvironment"]["activeArtifact"]["downloadUrl"]
        .as_str()
        .expect("dl")
        .to_string();
    let r = c.get(&dl).send().await.expect("download");
    assert_eq!(r.status(), 500);
    let body: Value = r.json().await.expect("json");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("corrupted")),
        "{body}"
    );
    s.stop().await;

    // Expired URL.
    let s = TestServer::start_with(|c| c.artifact_url_ttl = Duration::ZERO).await;
    let app = s
        .gql(CREATE_APP, json!({ "input": { "name": "exp" } }))
        .await["createFlashApp"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let t = s
        .gql(
            PREPARE,
            json!({ "input": { "flashAppId": app, "tarballSize": 4 } }),
        )
        .await;
    let url = t["prepareFlashArtifactUpload"]["uploadUrl"]
        .as_str()
        .expect("url")
        .to_string();
    // With a zero TTL the URL expires at the end of the second it was signed in (`expires`,
    // in whole seconds): wait for the clock to pass it (bounded poll), then use it.
    let expires: u64 = url
        .split_once("expires=")
        .and_then(|(_, v)| v.split('&').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no expires in {url}"));
    let unix_now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while unix_now() <= expires {
        assert!(std::time::Instant::now() < deadline, "{url} never expired");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = reqwest::Client::new()
        .put(&url)
        .body(vec![1u8; 4])
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.expect("json");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("expired")),
        "{body}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_manifest_updates_lose_nothing() {
    let s = TestServer::start().await;
    let app = s.gql(CREATE_APP, json!({ "input": { "name": "m" } })).await["createFlashApp"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let (key, code, _) = upload(&s, &app, 3, vec![1, 2, 3], None).await;
    assert_eq!(code, 200);
    let build = s.gql(FINALIZE, json!({ "input": { "flashAppId": app, "objectKey": key, "manifest": { "version": "1.0" } } })).await;
    let build_id = build["finalizeFlashArtifactUpload"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let s = std::sync::Arc::new(s);

    // 100 writers each patch their own resource endpoint in: all 100 survive.
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let s = s.clone();
            let build_id = build_id.clone();
            tokio::spawn(async move {
                s.gql(UPDATE_MANIFEST, json!({ "input": { "flashBuildId": build_id, "merge": true,
                    "manifest": { "resources_endpoints": { format!("r{i}"): format!("ep{i}") } } } }))
                    .await
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("writer");
    }
    let got = s.gql(GET_BUILD, json!({ "input": build_id })).await;
    let eps = got["flashBuild"]["manifest"]["resources_endpoints"]
        .as_object()
        .expect("resources_endpoints")
        .clone();
    assert_eq!(eps.len(), 100, "lost updates: {}", eps.len());
    assert_eq!(got["flashBuild"]["manifest"]["version"], "1.0");

    // 100 whole-document replacements: the result is exactly one of them, never a mix.
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let s = s.clone();
            let build_id = build_id.clone();
            tokio::spawn(async move {
                s.gql(
                    UPDATE_MANIFEST,
                    json!({ "input": { "flashBuildId": build_id,
                    "manifest": { "writer": i, "copy": i } } }),
                )
                .await
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("writer");
    }
    let got = s.gql(GET_BUILD, json!({ "input": build_id })).await;
    let m = &got["flashBuild"]["manifest"];
    assert_eq!(m["writer"], m["copy"]);
    assert_eq!(m.as_object().map(|o| o.len()), Some(2));
}

const ACQUIRE_LEASE: &str = "mutation acquireFlashEnvironmentLease($input: FlashEnvironmentLeaseInput!) { acquireFlashEnvironmentLease(input: $input) { flashEnvironmentId granted holder expiresAt expiresInSeconds } }";
const RELEASE_LEASE: &str = "mutation releaseFlashEnvironmentLease($input: ReleaseFlashEnvironmentLeaseInput!) { releaseFlashEnvironmentLease(input: $input) }";

/// POST /graphql with the key and `token` in the lease header; the whole response body.
async fn gql_leased(s: &TestServer, token: &str, query: &str, variables: Value) -> Value {
    s.http
        .post(format!("{}/graphql", s.url))
        .bearer_auth(&s.key)
        .header(flash_api::ENVIRONMENT_LEASE_HEADER, token)
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .expect("graphql request")
        .json()
        .await
        .expect("graphql JSON")
}

/// While an environment is leased, every mutation that changes it is refused unless it
/// carries the lease's token, with an error that names the holder and what to do; other
/// environments are untouched, and a released lease fences nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leased_environment_refuses_changes_without_its_token() {
    let s = TestServer::start().await;
    let app_id = s
        .gql(CREATE_APP, json!({ "input": { "name": "demo" } }))
        .await["createFlashApp"]["id"]
        .as_str()
        .expect("app id")
        .to_string();
    let env = |name: &'static str| {
        let (s, app_id) = (&s, app_id.clone());
        async move {
            s.gql(
                CREATE_ENV,
                json!({ "input": { "flashAppId": app_id, "name": name } }),
            )
            .await["createFlashEnvironment"]["id"]
                .as_str()
                .expect("env id")
                .to_string()
        }
    };
    let (dev, other) = (env("dev").await, env("other").await);
    let endpoint = |env_id: &str| {
        json!({ "input": { "name": "gpu", "workersMin": 0, "workersMax": 1,
            "flashEnvironmentId": env_id, "template": { "imageName": "i", "env": [] } } })
    };
    let saved = s.gql(SAVE_ENDPOINT, endpoint(&dev)).await["saveEndpoint"].clone();
    let (ep, template) = (
        saved["id"].as_str().expect("id").to_string(),
        saved["templateId"].as_str().expect("template").to_string(),
    );
    let (key, code, _) = upload(&s, &app_id, 4, vec![1, 2, 3, 4], None).await;
    assert_eq!(code, 200);
    let build = s
        .gql(
            FINALIZE,
            json!({ "input": { "flashAppId": app_id, "objectKey": key, "manifest": {} } }),
        )
        .await["finalizeFlashArtifactUpload"]["id"]
        .clone();

    let lease = |token: &str, holder: &str| {
        json!({ "input": { "flashEnvironmentId": dev, "token": token, "holder": holder,
            "ttlSeconds": 60 } })
    };
    let granted = s.gql(ACQUIRE_LEASE, lease("t-1", "send 1")).await;
    assert_eq!(granted["acquireFlashEnvironmentLease"]["granted"], true);
    let refused = s.gql(ACQUIRE_LEASE, lease("t-2", "send 2")).await;
    let refused = &refused["acquireFlashEnvironmentLease"];
    assert_eq!(
        (&refused["granted"], &refused["holder"]),
        (&json!(false), &json!("send 1"))
    );
    assert!(
        refused["expiresInSeconds"]
            .as_i64()
            .is_some_and(|s| (1..=60).contains(&s)),
        "{refused}"
    );
    let bad = s
        .gql_raw(
            ACQUIRE_LEASE,
            json!({ "input": { "flashEnvironmentId": dev, "token": "t", "ttlSeconds": 0 } }),
        )
        .await;
    assert!(error_text(&bad).contains("ttlSeconds"), "{bad}");

    let changes: Vec<(&str, Value)> = vec![
        (SAVE_ENDPOINT, endpoint(&dev)),
        (
            SAVE_ENDPOINT,
            json!({ "input": { "id": ep, "name": "gpu", "workersMax": 2 } }),
        ),
        (
            SAVE_TEMPLATE,
            json!({ "input": { "id": template, "env": [] } }),
        ),
        (
            DEPLOY,
            json!({ "input": { "flashEnvironmentId": dev, "flashBuildId": build } }),
        ),
        (DELETE_ENDPOINT, json!({ "id": ep })),
        (DELETE_ENV, json!({ "flashEnvironmentId": dev })),
        (DELETE_APP, json!({ "flashAppId": app_id })),
    ];
    for (query, variables) in &changes {
        for resp in [
            s.gql_raw(query, variables.clone()).await,
            gql_leased(&s, "t-2", query, variables.clone()).await,
        ] {
            let text = error_text(&resp);
            assert!(
                text.contains("environment `dev`")
                    && text.contains("is being deployed by send 1")
                    && text.contains("run this command again"),
                "{query}: {resp}"
            );
        }
    }
    // Another environment of the app is not fenced.
    s.gql(SAVE_ENDPOINT, endpoint(&other)).await;
    // The holder may (the deletes last, since they end what the others need).
    for (query, variables) in &changes[..5] {
        let resp = gql_leased(&s, "t-1", query, variables.clone()).await;
        assert!(resp.get("errors").is_none(), "{query}: {resp}");
    }
    let released = s
        .gql(
            RELEASE_LEASE,
            json!({ "input": { "flashEnvironmentId": dev, "token": "t-1" } }),
        )
        .await;
    assert_eq!(released["releaseFlashEnvironmentLease"], true);
    s.gql(DELETE_ENV, json!({ "flashEnvironmentId": dev }))
        .await;
    s.stop().await;
}
