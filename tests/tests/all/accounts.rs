//! runpod-flash's account commands end to end: `flash app` and `flash env` against a real
//! `flash server`, and `flash login` against the real server's auth-request flow and a
//! stand-in of RunPod's (reference §1.6), with a temporary HOME so that the real
//! `~/.runpod` is never touched.

use std::path::Path;
use std::process::Output;
use std::sync::Arc;

use flash_api::stub::{Stub, start};
use flash_tests::control_plane::{Server, fails, flash_command, flash_env, ok};

/// The first line of stderr: which control plane the command talks to.
fn banner(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// A home with RunPod credentials in every place runpod-flash looks, and a project dir
/// with a `.env`: none of them may reach a local server.
fn decoy_home() -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join(".runpod")).unwrap();
    std::fs::write(
        home.path().join(".runpod/config.toml"),
        "[default]\napi_key = \"rp-decoy\"\n",
    )
    .unwrap();
    std::fs::write(home.path().join(".env"), "RUNPOD_API_KEY=rp-decoy\n").unwrap();
    home
}

#[test]
fn app_and_env_commands_on_a_real_server() {
    let server = Server::start();
    let home = decoy_home();
    let dir = home.path();
    let home_env = home.path().to_str().unwrap();
    let flash = |args: &[&str]| {
        flash_env(
            dir,
            &server.url,
            server.data_dir.path(),
            args,
            &[("HOME", home_env)],
        )
    };
    let run = |args: &[&str]| {
        let out = flash(args);
        assert_eq!(
            banner(&out),
            format!("→ local flash server ({})", server.url),
            "{args:?}"
        );
        ok(&out, Some(&server))
    };

    let out = run(&["app", "list"]);
    assert!(out.contains("\n  no apps found\n"), "{out}");

    let out = run(&["env", "create", "dev", "--app", "demo"]);
    assert!(
        out.contains("✓ created app demo\n✓ created environment dev\n"),
        "{out}"
    );
    let out = run(&["env", "create", "production", "-a", "demo"]);
    assert!(
        out.starts_with("✓ created environment production\n"),
        "{out}"
    );
    let out = run(&["env", "create", "dev", "-a", "demo"]);
    assert!(out.contains("environment dev already exists"), "{out}");

    let out = run(&["env", "list", "-a", "demo"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..3], ["", "  demo", ""], "{out}");
    // Names padded to one column, then the (absent) build and the creation time.
    assert!(
        lines[3].starts_with("  dev         -  ") && lines[3].ends_with(" UTC"),
        "{out}"
    );
    assert!(lines[4].starts_with("  production  -  "), "{out}");

    let out = run(&["app", "list"]);
    assert!(out.contains("\n  demo  2 envs  0 builds\n"), "{out}");
    let out = run(&["app", "get", "demo"]);
    assert!(
        out.starts_with("\n  demo\n\n  dev         -  ") && out.contains("\n  production  -  "),
        "{out}"
    );
    assert!(!out.contains("build"), "no builds yet: {out}");

    let out = run(&["env", "get", "dev", "-a", "demo"]);
    assert!(
        out.starts_with("\n  dev\n\n  app     demo\n  build   -\n\n  mothership  "),
        "{out}"
    );

    // Deletion asks; without a terminal it refuses, before connecting, unless --yes.
    assert_eq!(server.endpoint_count(), 2, "one mothership per environment");
    let err = fails(&flash(&["env", "delete", "dev", "-a", "demo"]));
    assert!(
        err.contains("refusing to delete environment `dev` without confirmation")
            && err.contains("pass --yes"),
        "{err}"
    );
    let out = run(&["env", "delete", "dev", "-a", "demo", "--yes"]);
    assert!(
        out.contains("\n  deleting dev\n✓ undeployed 1 resource\n✓ deleted environment dev\n"),
        "{out}"
    );
    assert_eq!(server.endpoint_count(), 1);
    let err = fails(&flash(&["env", "get", "dev", "-a", "demo"]));
    assert!(
        err.contains("environment `dev` not found in app `demo`"),
        "{err}"
    );

    let err = fails(&flash(&["app", "delete", "demo"]));
    assert!(err.contains("pass --yes"), "{err}");
    let out = run(&["app", "delete", "demo", "--yes"]);
    assert!(
        out.contains("✓ deleted endpoint mothership  ") && out.ends_with("✓ deleted app demo\n"),
        "{out}"
    );
    assert_eq!(server.endpoint_count(), 0);
    let out = run(&["env", "list", "-a", "demo"]);
    assert!(out.contains("no app named demo found"), "{out}");
    let err = fails(&flash(&["app", "get", "demo"]));
    assert!(
        err.contains("app `demo` not found on") && err.contains("flash app list"),
        "{err}"
    );

    let out = run(&["app", "create", "made"]);
    assert_eq!(out, "✓ created app made\n");
    let err = fails(&flash(&["app", "create", "made"]));
    assert!(err.contains("app `made` already exists"), "{err}");

    // Outside a project, env commands need --app.
    let err = fails(&flash(&["env", "list"]));
    assert!(
        err.contains("pass --app <APP>, or run inside a Flash project"),
        "{err}"
    );
    // The decoy RunPod credentials were never read, let alone changed.
    assert_eq!(
        std::fs::read_to_string(home.path().join(".runpod/config.toml")).unwrap(),
        "[default]\napi_key = \"rp-decoy\"\n"
    );
}

/// Runs `flash` on a blocking thread (the stand-in lives on this test's runtime).
async fn flash_blocking(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let dir = dir.to_path_buf();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let envs: Vec<(String, String)> = envs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        // Each call names its target with --server.
        flash_env(&dir, "local", &dir.join("flash-home"), &args, &envs)
    })
    .await
    .unwrap()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread")]
async fn login_against_runpods_flow_saves_the_key_in_runpods_file() {
    let stub = Arc::new(Stub::default());
    stub.script_auth(
        None,
        &[("PENDING", None), ("APPROVED", Some("rp_from_login"))],
    );
    let base = start(stub.clone()).await;
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join(".runpod/config.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    let before = "# written by runpodctl\napikey = \"ctl-key\"\napiurl = \"https://api.runpod.io/graphql\"\n\n[staging]\napi_key = \"staging\"\n";
    std::fs::write(&config, before).unwrap();
    let home_env = home.path().to_str().unwrap();
    let envs = [
        ("HOME", home_env),
        ("RUNPOD_API_BASE_URL", base.as_str()),
        ("RUNPOD_CONSOLE_URL", "https://console.example"),
    ];

    let out = flash_blocking(
        home.path(),
        &[
            "login",
            "--server",
            "runpod",
            "--no-open",
            "--timeout",
            "30",
        ],
        &envs,
    )
    .await;
    assert_eq!(banner(&out), format!("→ RunPod ({base})"));
    let stdout = ok(&out, None);
    assert_eq!(
        stdout,
        format!(
            "\nAuthorize flash in your browser:\n  https://console.example/flash/login?request=auth-1\n\n\
             Logged in. Credentials saved to {}\n\n",
            config.display()
        )
    );
    // Anonymous: no key went out, not even runpodctl's.
    assert!(stub.seen().iter().all(|s| s.authorization.is_none()));
    let after = std::fs::read_to_string(&config).unwrap();
    assert!(
        after.starts_with(before) && after.ends_with("[default]\napi_key = \"rp_from_login\"\n"),
        "{after}"
    );
    #[cfg(unix)]
    assert_eq!(mode(&config), 0o600);

    // The next command finds the key there and sends it.
    let out = flash_blocking(home.path(), &["app", "list", "--server", "runpod"], &envs).await;
    fails(&out); // the stand-in does not serve getFlashApps
    let last = stub.seen().pop().unwrap();
    assert_eq!(last.operation, "getFlashApps");
    assert_eq!(last.authorization.as_deref(), Some("Bearer rp_from_login"));
}

#[tokio::test(flavor = "multi_thread")]
async fn login_to_a_flash_server_saves_its_key_in_the_data_dir() {
    let stub = Arc::new(Stub::default());
    stub.script_auth(None, &[("PENDING", None), ("APPROVED", Some("fl_key"))]);
    let base = start(stub.clone()).await;
    let home = tempfile::tempdir().unwrap();
    let home_env = home.path().to_str().unwrap();
    let out = flash_blocking(
        home.path(),
        &["login", "--server", &base, "--no-open"],
        &[("HOME", home_env)],
    )
    .await;
    assert_eq!(banner(&out), format!("→ local flash server ({base})"));
    let stdout = ok(&out, None);
    // The server is its own console.
    assert!(
        stdout.contains(&format!("  {base}/flash/login?request=auth-1\n")),
        "{stdout}"
    );
    let key_file = home.path().join("flash-home/api_key");
    assert!(
        stdout.contains(&format!("Credentials saved to {}", key_file.display())),
        "{stdout}"
    );
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), "fl_key");
    #[cfg(unix)]
    assert_eq!(mode(&key_file), 0o600);
    assert!(
        !home.path().join(".runpod").exists(),
        "a flash server's key never goes into RunPod's file"
    );

    // Refused requests end the login with what to do.
    stub.script_auth(None, &[("PENDING", None), ("DENIED", None)]);
    let out = flash_blocking(
        home.path(),
        &["login", "--server", &base, "--no-open"],
        &[("HOME", home_env)],
    )
    .await;
    let err = fails(&out);
    assert!(
        err.contains("error: login failed: denied in the browser; run `flash login` again"),
        "{err}"
    );
}

/// `flash login` against the real `flash server`: the request stays pending until the
/// person approves it on the server's `/flash/login` page with the server's key (a wrong
/// key decides nothing), then the CLI gets the key once and saves it.
#[test]
fn login_against_a_real_flash_server() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let server = Server::start();
    let home = tempfile::tempdir().unwrap();
    let flash_home = home.path().join("flash-home");
    let mut child = flash_tests::ChildGuard(
        flash_command(
            home.path(),
            &server.url,
            &flash_home,
            &["login", "--no-open", "--timeout", "60"],
            &[("HOME", home.path().to_str().unwrap())],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap(),
    );

    // The page it asks the person to open (bounded: the CLI prints it before polling).
    let mut stdout = BufReader::new(child.0.stdout.take().unwrap());
    let mut stderr_pipe = child.0.stderr.take().unwrap();
    let mut printed = String::new();
    let page = loop {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "flash login ended without a page to open:\n{printed}"
        );
        printed.push_str(&line);
        if let Some(url) = line
            .trim()
            .strip_prefix(&format!("{}/flash/login?request=", server.url))
        {
            break url.to_string();
        }
        assert!(printed.len() < 10_000, "{printed}");
    };
    let request = page;
    let http = reqwest::blocking::Client::new();
    let shown = http
        .get(format!("{}/flash/login", server.url))
        .query(&[("request", request.as_str())])
        .send()
        .unwrap();
    assert_eq!(shown.status(), 200);
    let html = shown.text().unwrap();
    assert!(
        html.contains(&request) && html.contains("Approve"),
        "{html}"
    );

    // Without a key, the request only says it is pending.
    let status = http
        .post(format!("{}/graphql", server.url))
        .json(&serde_json::json!({
            "query": "query S($id: String!) { flashAuthRequestStatus(flashAuthRequestId: $id) { status apiKey } }",
            "variables": { "id": request },
        }))
        .send()
        .unwrap()
        .json::<serde_json::Value>()
        .unwrap();
    assert_eq!(
        status["data"]["flashAuthRequestStatus"],
        serde_json::json!({"status": "PENDING", "apiKey": null}),
        "{status}"
    );
    // ...and nothing else is answered without a key.
    let other = http
        .post(format!("{}/graphql", server.url))
        .json(&serde_json::json!({ "query": "{ myself { flashApps { id } } }" }))
        .send()
        .unwrap();
    assert_eq!(other.status(), 401);

    let decide = |key: &str| {
        http.post(format!("{}/flash/login", server.url))
            .form(&[
                ("request", request.as_str()),
                ("api_key", key),
                ("decision", "approve"),
            ])
            .send()
            .unwrap()
    };
    assert_eq!(decide("fl_wrong").status(), 403);
    let approved = decide(&server.key());
    assert_eq!(approved.status(), 200);
    assert!(approved.text().unwrap().contains("Return to your terminal"));

    let mut stdout_rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut stdout_rest).unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut stderr_pipe, &mut stderr).unwrap();
    let status = child.0.wait().unwrap();
    assert!(
        status.success(),
        "{printed}{stdout_rest}\n{stderr}\n{}",
        server.log()
    );
    assert_eq!(
        stderr.lines().next().unwrap_or_default(),
        format!("→ local flash server ({})", server.url)
    );
    assert!(stdout_rest.contains("Logged in."), "{stdout_rest}");
    assert_eq!(
        std::fs::read_to_string(flash_home.join("api_key")).unwrap(),
        server.key()
    );
    // The key was handed out once: the request is consumed.
    let again = server.graphql(
        "query S($id: String!) { flashAuthRequestStatus(flashAuthRequestId: $id) { status apiKey } }",
        serde_json::json!({ "id": request }),
    );
    assert_eq!(
        again["flashAuthRequestStatus"],
        serde_json::json!({"status": "CONSUMED", "apiKey": null}),
        "{again}"
    );
}
