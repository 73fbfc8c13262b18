//! The provisioning engine and the environment lease against a real `flash server` on
//! loopback, with [`flash_api::stub::FaultyProxy`] in front of it to lose or delay chosen
//! operations after the server received them.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flash_api::StateManagerClient;
use flash_api::stub::{FaultyProxy, ProxyFault, Stub, start, start_proxy};
use flash_control::testing::LocalServer;
use flash_deploy::lease::{Lease, LeaseError, LeaseOptions};
use flash_deploy::provision::{self, DeployContext};
use flash_manifest::Manifest;
use serde_json::json;

/// Every test runs under this bound, so a hang fails instead of stalling the suite.
async fn bounded<F: Future>(test: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), test)
        .await
        .expect("test exceeded 60 s")
}

async fn local_server() -> LocalServer {
    LocalServer::start().await
}

fn client_of(base: &str, key: &str) -> StateManagerClient {
    flash_api::stub::quick_client(base, key)
}

/// An app `app` with environment `dev`; returns the environment id.
async fn environment(sm: &StateManagerClient) -> String {
    let app = sm.create_app("app").await.expect("app");
    let env = sm
        .create_environment(app["id"].as_str().expect("id"), "dev")
        .await
        .expect("env");
    env["id"].as_str().expect("env id").to_string()
}

/// Two queue resources without workers (so the server starts no process for them).
fn manifest() -> Manifest {
    let resource = |component: &str| {
        json!({ "resource_type": "LiveServerless", "is_load_balanced": false,
            "config_hash": "h", "gpuIds": "ADA_24", "workersMin": 0, "workersMax": 2,
            "idleTimeout": 5, "scalerType": "QUEUE_DELAY", "scalerValue": 4,
            "functions": [{ "name": format!("f_{component}"), "module": "m",
                "is_async": false, "is_class": false, "is_load_balanced": false,
                "component": format!("components/{component}.wasm"),
                "component_sha256": component }] })
    };
    serde_json::from_value(json!({
        "version": "1.0", "generated_at": "x", "project_name": "app",
        "resources": { "gpu": resource("a"), "cpu": resource("b") },
        "function_registry": { "f_a": "gpu", "f_b": "cpu" },
        "components": {
            "components/a.wasm": { "sha256": "a", "size": 1 },
            "components/b.wasm": { "sha256": "b", "size": 1 }
        }
    }))
    .expect("manifest")
}

fn ctx(env_id: &str, key: &str) -> DeployContext {
    DeployContext {
        app: "app".into(),
        env_name: "dev".into(),
        env_id: env_id.into(),
        api_key: key.into(),
        require_auth: false,
        image: None,
    }
}

/// (name, id) of the environment's endpoints.
async fn endpoints(sm: &StateManagerClient, env_id: &str) -> Vec<(String, String)> {
    let env = sm.flash_environment(env_id).await.expect("environment");
    let mut out: Vec<(String, String)> = env
        .endpoints
        .into_iter()
        .map(|e| (e.name.unwrap_or_default(), e.id.unwrap_or_default()))
        .collect();
    out.sort();
    out
}

/// `saveEndpoint` creates whose answers are lost after the server made the endpoint: the
/// engine must end with one endpoint per resource, not one per attempt.
#[tokio::test]
async fn a_create_whose_answer_was_lost_makes_one_endpoint() {
    bounded(async {
        let server = local_server().await;
        let direct = client_of(&server.url, &server.key);
        let env_id = environment(&direct).await;
        let proxy = Arc::new(FaultyProxy::default());
        let through = client_of(&start_proxy(proxy.clone(), &server.url).await, &server.key);
        // Both creates lose their first answer.
        proxy.fault("saveEndpoint", ProxyFault::DropAnswer, 2);

        let manifest = manifest();
        let ctx = ctx(&env_id, &server.key);
        let plans = provision::plan(&through, &manifest, &BTreeMap::new(), &ctx)
            .await
            .expect("plan");
        let (deployed, failures) =
            provision::provision_all(&through, &ctx, &manifest, &plans, 2, 3).await;
        assert!(failures.is_empty(), "{failures:?}");

        let live = endpoints(&direct, &env_id).await;
        let names: Vec<&str> = live.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["cpu", "gpu"], "one endpoint per resource: {live:?}");
        for (name, id) in &live {
            assert_eq!(&deployed[name].endpoint_id, id, "{name}");
            // The found endpoint carries this resource's settings and template.
            let endpoint = direct.endpoint(id).await.expect("get").expect("exists");
            assert_eq!(endpoint["workersMax"], 2);
            let template = deployed[name].template_id.as_deref().expect("template");
            let env = direct
                .template_env(template)
                .await
                .expect("template")
                .expect("exists");
            assert!(
                env.iter()
                    .any(|(k, v)| k == "FLASH_RESOURCE_NAME" && v == name),
                "{env:?}"
            );
        }
    })
    .await;
}

/// A record that lost its endpoint id (a send that died before publishing) is completed by
/// name: the endpoint there is reused, not made a second time.
#[tokio::test]
async fn endpoints_named_after_a_resource_are_adopted_not_duplicated() {
    bounded(async {
        let server = local_server().await;
        let sm = client_of(&server.url, &server.key);
        let env_id = environment(&sm).await;
        let manifest = manifest();
        let ctx = ctx(&env_id, &server.key);
        let plans = provision::plan(&sm, &manifest, &BTreeMap::new(), &ctx)
            .await
            .expect("plan");
        let (first, failures) = provision::provision_all(&sm, &ctx, &manifest, &plans, 2, 3).await;
        assert!(failures.is_empty(), "{failures:?}");

        let env = sm.environment(&env_id).await.expect("env").expect("exists");
        let adopted = provision::adopt_by_name(&env, &manifest);
        assert_eq!(adopted["gpu"].endpoint_id, first["gpu"].endpoint_id);
        let plans = provision::plan(&sm, &manifest, &adopted, &ctx)
            .await
            .expect("plan");
        assert!(
            plans
                .iter()
                .all(|p| p.action == provision::Action::UpdatedConfig),
            "saved again as updates: {plans:?}"
        );
        let (again, failures) = provision::provision_all(&sm, &ctx, &manifest, &plans, 2, 3).await;
        assert!(failures.is_empty(), "{failures:?}");
        assert_eq!(again["gpu"].endpoint_id, first["gpu"].endpoint_id);
        assert_eq!(endpoints(&sm, &env_id).await.len(), 2);
    })
    .await;
}

fn quick(wait: Duration) -> LeaseOptions {
    LeaseOptions {
        ttl: Duration::from_secs(30),
        wait,
        poll: Duration::from_millis(50),
    }
}

#[tokio::test]
async fn a_second_holder_waits_for_the_first_then_gets_the_lease() {
    bounded(async {
        let server = local_server().await;
        let sm = client_of(&server.url, &server.key);
        let env_id = environment(&sm).await;
        let first = Lease::acquire(
            &sm,
            &env_id,
            "dev",
            "send A",
            &quick(Duration::ZERO),
            |_| {},
        )
        .await
        .expect("free");
        assert!(first.is_supported());

        let told = Arc::new(Mutex::new(Vec::<String>::new()));
        let second = {
            let (sm, env_id, told) = (sm.clone(), env_id.clone(), told.clone());
            tokio::spawn(async move {
                let lease = Lease::acquire(
                    &sm,
                    &env_id,
                    "dev",
                    "send B",
                    &quick(Duration::from_secs(20)),
                    |holder| told.lock().expect("told").push(holder.to_string()),
                )
                .await;
                (lease, Instant::now())
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        // B waits while A changes the environment; A's changes go through, others' do not.
        let input = json!({ "name": "gpu", "workersMin": 0, "workersMax": 1,
            "flashEnvironmentId": env_id, "template": { "imageName": "i", "env": [] } });
        let err = sm.create_endpoint(&input, 3).await.expect_err("fenced");
        assert!(
            err.to_string().contains("is being deployed by send A"),
            "{err}"
        );
        first
            .client()
            .create_endpoint(&input, 3)
            .await
            .expect("the holder may");
        let released = Instant::now();
        first.release().await;
        let (lease, granted_at) = second.await.expect("task");
        let lease = lease.expect("granted once A released");
        assert!(granted_at >= released);
        assert_eq!(
            *told.lock().expect("told"),
            ["send A"],
            "told once who it waits for"
        );
        lease.ensure_held().expect("held");
        lease.release().await;
    })
    .await;
}

#[tokio::test]
async fn a_holder_that_does_not_finish_in_time_is_reported_with_what_to_do() {
    bounded(async {
        let server = local_server().await;
        let sm = client_of(&server.url, &server.key);
        let env_id = environment(&sm).await;
        let _first = Lease::acquire(
            &sm,
            &env_id,
            "dev",
            "send A",
            &quick(Duration::ZERO),
            |_| {},
        )
        .await
        .expect("free");
        let err = Lease::acquire(
            &sm,
            &env_id,
            "dev",
            "send B",
            &quick(Duration::from_millis(300)),
            |_| {},
        )
        .await
        .expect_err("A keeps it");
        assert!(matches!(err, LeaseError::Busy { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("environment `dev` is being deployed by send A")
                && text.contains("run this command again"),
            "{text}"
        );
    })
    .await;
}

/// A holder that stalls past its lease (its renewals are held up on the way) loses it to
/// the next one: it learns so before activating, and its late writes are refused.
#[tokio::test]
async fn a_holder_that_stalled_past_its_lease_is_fenced() {
    bounded(async {
        let server = local_server().await;
        let direct = client_of(&server.url, &server.key);
        let env_id = environment(&direct).await;
        let proxy = Arc::new(FaultyProxy::default());
        let through = client_of(&start_proxy(proxy.clone(), &server.url).await, &server.key);
        proxy.fault(
            "renewFlashEnvironmentLease",
            ProxyFault::Delay(Duration::from_secs(3)),
            1,
        );
        let short = LeaseOptions {
            ttl: Duration::from_secs(1),
            wait: Duration::ZERO,
            poll: Duration::from_millis(50),
        };
        let stalled = Lease::acquire(&through, &env_id, "dev", "send A", &short, |_| {})
            .await
            .expect("free");
        let next = Lease::acquire(
            &direct,
            &env_id,
            "dev",
            "send B",
            &quick(Duration::from_secs(10)),
            |_| {},
        )
        .await
        .expect("A's lease expired");
        // A's held-up renewal arrives after B took over.
        let deadline = Instant::now() + Duration::from_secs(10);
        while stalled.ensure_held().is_ok() {
            assert!(
                Instant::now() < deadline,
                "A never learned it lost the lease"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let err = stalled.ensure_held().expect_err("lost");
        assert!(
            err.to_string().contains("was lost") && err.to_string().contains("send B"),
            "{err}"
        );
        let input = json!({ "name": "gpu", "workersMin": 0, "workersMax": 1,
            "flashEnvironmentId": env_id, "template": { "imageName": "i", "env": [] } });
        let err = stalled
            .client()
            .create_endpoint(&input, 3)
            .await
            .expect_err("fenced");
        assert!(err.to_string().contains("send B"), "{err}");
        stalled.release().await;
        next.ensure_held().expect("B still holds it");
        next.release().await;
    })
    .await;
}

#[tokio::test]
async fn without_leases_on_the_server_a_deploy_goes_ahead_unleased() {
    bounded(async {
        let stub = Arc::new(Stub::default());
        stub.add_environment("env-1", None);
        let sm = client_of(&start(stub.clone()).await, "k");
        let lease = Lease::acquire(
            &sm,
            "env-1",
            "dev",
            "send A",
            &quick(Duration::ZERO),
            |_| {},
        )
        .await
        .expect("RunPod's API: no lease, no error");
        assert!(!lease.is_supported());
        lease.ensure_held().expect("nothing to lose");
        lease
            .client()
            .flash_environment("env-1")
            .await
            .expect("the plain client");
        lease.release().await;
        let seen: Vec<String> = stub.seen().into_iter().map(|s| s.operation).collect();
        assert_eq!(
            seen,
            ["acquireFlashEnvironmentLease", "getFlashEnvironment"],
            "no renewals, no release"
        );
    })
    .await;
}
