//! Creates whose answer is lost, against a real `flash server` behind
//! [`flash_api::stub::FaultyProxy`]: the server receives the create and commits it, and the
//! client hears nothing. The client must end up with exactly one object, never two, and
//! carry on with it. Also what "never sent" means (a connect timeout is sent again) and the
//! environment lease mutations, on `flash server` and on a server that lacks them.

use std::sync::Arc;
use std::time::Duration;

use flash_api::stub::{FaultyProxy, ProxyFault, Stub, start, start_proxy};
use flash_api::{ApiError, ClientConfig, Created, KeySource, LeaseAnswer, StateManagerClient};
use flash_control::testing::LocalServer;
use serde_json::json;

use super::client::bounded;

async fn local_server() -> LocalServer {
    LocalServer::start().await
}

fn client_of(base: &str, key: &str) -> StateManagerClient {
    flash_api::stub::quick_client(base, key)
}

/// The server, a proxy in front of it, a client through the proxy and one straight to it.
async fn behind_proxy() -> (
    LocalServer,
    Arc<FaultyProxy>,
    StateManagerClient,
    StateManagerClient,
) {
    let server = local_server().await;
    let proxy = Arc::new(FaultyProxy::default());
    let proxied = start_proxy(proxy.clone(), &server.url).await;
    let through = client_of(&proxied, &server.key);
    let direct = client_of(&server.url, &server.key);
    (server, proxy, through, direct)
}

#[tokio::test]
async fn an_app_whose_create_answer_was_lost_is_found_not_failed() {
    bounded(async {
        let (_server, proxy, through, direct) = behind_proxy().await;
        proxy.fault("createFlashApp", ProxyFault::DropAnswer, 1);
        let app = through
            .create_app("demo")
            .await
            .expect("the app was made; the client finds it");
        let apps = direct.apps().await.expect("apps");
        assert_eq!(apps.len(), 1, "{apps:?}");
        assert_eq!(app["id"], apps[0]["id"]);
        assert_eq!(
            proxy.seen(),
            ["createFlashApp", "getFlashAppByName"],
            "looked up, not created again"
        );
    })
    .await;
}

#[tokio::test]
async fn an_environment_whose_create_answer_was_lost_is_found_not_failed() {
    bounded(async {
        let (_server, proxy, through, direct) = behind_proxy().await;
        let app = direct.create_app("demo").await.expect("app");
        let app_id = app["id"].as_str().expect("id");
        proxy.fault("createFlashEnvironment", ProxyFault::DropAnswer, 1);
        let env = through
            .create_environment(app_id, "dev")
            .await
            .expect("the environment was made; the client finds it");
        let envs = direct.app_environments(app_id).await.expect("envs");
        assert_eq!(envs.len(), 1, "{envs:?}");
        assert_eq!(env["id"].as_str(), Some(envs[0].id.as_str()));
    })
    .await;
}

/// A queue endpoint of environment `env_id` named `name` (no workers, so none start).
fn endpoint_input(env_id: &str, name: &str) -> serde_json::Value {
    json!({
        "name": name, "type": "QB", "workersMin": 0, "workersMax": 1,
        "flashEnvironmentId": env_id,
        "template": { "name": format!("t-{name}"), "imageName": "img", "env": [] },
    })
}

async fn environment(direct: &StateManagerClient) -> String {
    let app = direct.create_app("demo").await.expect("app");
    let env = direct
        .create_environment(app["id"].as_str().expect("id"), "dev")
        .await
        .expect("env");
    env["id"].as_str().expect("env id").to_string()
}

#[tokio::test]
async fn an_endpoint_whose_create_answer_was_lost_is_made_once() {
    bounded(async {
        let (_server, proxy, through, direct) = behind_proxy().await;
        let env_id = environment(&direct).await;
        proxy.fault("saveEndpoint", ProxyFault::DropAnswer, 1);
        let created = through
            .create_endpoint(&endpoint_input(&env_id, "gpu"), 3)
            .await
            .expect("create");
        let Created::Found(found) = created else {
            panic!("the create's answer was lost, so it must be found: {created:?}");
        };
        let env = direct.flash_environment(&env_id).await.expect("env");
        assert_eq!(env.endpoints.len(), 1, "one endpoint, not two: {env:?}");
        assert_eq!(found["id"].as_str(), env.endpoints[0].id.as_deref());
        assert!(found["templateId"].is_string(), "{found}");

        // Lost, and not applied (the server refused it): not found, so sent again.
        proxy.fault("saveEndpoint", ProxyFault::DropAnswer, 1);
        let other = endpoint_input(&env_id, "cpu");
        let mut broken = other.clone();
        broken["workersMin"] = json!(5);
        let err = through
            .create_endpoint(&broken, 3)
            .await
            .expect_err("workersMin > workersMax is refused");
        assert!(err.to_string().contains("workersMin"), "{err}");
        let created = through.create_endpoint(&other, 3).await.expect("create");
        assert!(matches!(created, Created::New(_)), "{created:?}");
        let env = direct.flash_environment(&env_id).await.expect("env");
        assert_eq!(env.endpoints.len(), 2, "{env:?}");
    })
    .await;
}

#[tokio::test]
async fn creates_and_updates_cannot_be_confused() {
    bounded(async {
        let client = client_of("http://127.0.0.1:9", "k");
        let err = client
            .create_endpoint(&json!({ "id": "ep-1", "name": "x" }), 3)
            .await
            .expect_err("an id is an update");
        assert!(matches!(err, ApiError::Config(_)), "{err:?}");
        let err = client
            .update_endpoint(&json!({ "name": "x" }), 3)
            .await
            .expect_err("no id is a create");
        assert!(matches!(err, ApiError::Config(_)), "{err:?}");
    })
    .await;
}

#[tokio::test]
async fn a_build_whose_finalize_answer_was_lost_is_registered_once() {
    bounded(async {
        let (server, proxy, through, direct) = behind_proxy().await;
        let app = direct.create_app("demo").await.expect("app");
        let app_id = app["id"].as_str().expect("id");
        let tarball = [
            0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 3, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        let (url, object_key) = direct
            .prepare_upload(app_id, tarball.len() as u64)
            .await
            .expect("prepare");
        let put = direct
            .http()
            .put(&url)
            .header("content-type", "application/gzip")
            .body(tarball.to_vec())
            .send()
            .await
            .expect("PUT");
        assert!(put.status().is_success(), "{}", put.status());
        proxy.fault("FinalizeArtifactUpload", ProxyFault::DropAnswer, 1);
        let build = through
            .finalize_upload(app_id, &object_key, &json!({ "version": "1.0" }))
            .await
            .expect("the build was registered; the client finds it");
        let builds = direct.app_builds(app_id).await.expect("builds");
        assert_eq!(builds.len(), 1, "{builds:?}");
        assert_eq!(builds[0].id, build);
        drop(server);
    })
    .await;
}

#[tokio::test]
async fn mutations_are_not_sent_again_after_a_lost_answer() {
    bounded(async {
        let (_server, proxy, through, direct) = behind_proxy().await;
        let app = direct.create_app("demo").await.expect("app");
        let app_id = app["id"].as_str().expect("id");
        proxy.fault("PrepareArtifactUpload", ProxyFault::DropAnswer, 1);
        let err = through
            .prepare_upload(app_id, 10)
            .await
            .expect_err("the answer was lost");
        assert!(matches!(err, ApiError::Transport { .. }), "{err:?}");
        assert_eq!(proxy.seen(), ["PrepareArtifactUpload"], "sent once");
    })
    .await;
}

/// A listener whose accept queue is full: the kernel drops new SYNs, so a connect times out
/// with nothing sent. Returns its base URL and what keeps the queue full.
async fn full_listener() -> (String, Vec<tokio::net::TcpStream>, tokio::net::TcpListener) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let addr = socket.local_addr().expect("addr");
    let listener = socket.listen(0).expect("listen");
    let mut fillers = Vec::new();
    for _ in 0..4 {
        match tokio::time::timeout(
            Duration::from_millis(300),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(stream)) => fillers.push(stream),
            _ => break,
        }
    }
    (format!("http://{addr}"), fillers, listener)
}

#[tokio::test]
async fn a_mutation_that_could_not_connect_is_sent_again() {
    bounded(async {
        let (base, _fillers, _listener) = full_listener().await;
        let config = ClientConfig::new(&base, "k", KeySource::Env)
            .expect("config")
            .with_timeout(Duration::from_millis(300))
            .with_backoff_base(Duration::from_millis(1))
            .with_max_attempts(3);
        let client = StateManagerClient::new(config).expect("client");
        let started = std::time::Instant::now();
        let err = client
            .prepare_upload("app-1", 10)
            .await
            .expect_err("nothing accepts");
        match &err {
            ApiError::RetriesExhausted { attempts, last, .. } => {
                assert_eq!(*attempts, 3);
                assert!(
                    matches!(**last, ApiError::ConnectTimeout { .. }),
                    "{last:?}"
                );
            }
            other => panic!("a connect timeout is sent again: {other:?}"),
        }
        assert!(!err.reached_server());
        assert!(err.to_string().contains("nothing was sent"), "{err}");
        // Three connect timeouts of 150 ms (half the 300 ms total).
        assert!(started.elapsed() >= Duration::from_millis(400));
    })
    .await;
}

#[tokio::test]
async fn an_environment_lease_is_held_by_one_token_and_fences_the_others() {
    bounded(async {
        let server = local_server().await;
        let direct = client_of(&server.url, &server.key);
        let env_id = environment(&direct).await;
        let ttl = Duration::from_secs(30);
        let a = direct
            .acquire_environment_lease(&env_id, "token-a", "send A", ttl)
            .await
            .expect("a");
        let LeaseAnswer::Granted(lease) = a else {
            panic!("{a:?}")
        };
        assert_eq!(lease.holder.as_deref(), Some("send A"));
        let b = direct
            .acquire_environment_lease(&env_id, "token-b", "send B", ttl)
            .await
            .expect("b");
        let LeaseAnswer::Held(held) = b else {
            panic!("{b:?}")
        };
        assert_eq!(held.holder.as_deref(), Some("send A"), "names the holder");
        assert!(held.expires_in_seconds.is_some_and(|s| s > 0 && s <= 30));

        // Changes without the token, or with another, are refused with what to do.
        let input = endpoint_input(&env_id, "gpu");
        let holder_a = direct.with_environment_lease("token-a").expect("a");
        let holder_b = direct.with_environment_lease("token-b").expect("b");
        for other in [&direct, &holder_b] {
            let err = other
                .create_endpoint(&input, 3)
                .await
                .expect_err("leased by A");
            let text = err.to_string();
            assert!(
                text.contains("is being deployed by send A")
                    && text.contains("run this command again"),
                "{text}"
            );
        }
        let created = holder_a.create_endpoint(&input, 3).await.expect("A may");
        let id = created.into_inner()["id"].as_str().expect("id").to_string();
        assert!(direct.delete_endpoint(&id).await.is_err(), "fenced");

        // Renewed by its holder only; released, it is anyone's.
        assert!(
            direct
                .renew_environment_lease(&env_id, "token-a", "send A", ttl)
                .await
                .expect("renew")
                .granted
        );
        let lost = direct
            .renew_environment_lease(&env_id, "token-b", "send B", ttl)
            .await
            .expect("renew");
        assert!(!lost.granted);
        assert!(
            direct
                .release_environment_lease(&env_id, "token-a")
                .await
                .expect("release")
        );
        direct.delete_endpoint(&id).await.expect("free again");
        assert!(matches!(
            direct
                .acquire_environment_lease(&env_id, "token-b", "send B", ttl)
                .await
                .expect("b"),
            LeaseAnswer::Granted(_)
        ));
    })
    .await;
}

#[tokio::test]
async fn a_server_without_leases_says_unsupported() {
    bounded(async {
        let stub = Arc::new(Stub::default());
        let base = start(stub.clone()).await;
        let answer = client_of(&base, "k")
            .acquire_environment_lease("env-1", "t", "me", Duration::from_secs(30))
            .await
            .expect("RunPod's refusal is an answer");
        assert_eq!(answer, LeaseAnswer::Unsupported);
        assert_eq!(stub.requests(), 1, "a refusal at validation is not retried");
    })
    .await;
}
