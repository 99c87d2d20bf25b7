//! The first hour (issue 28): a newcomer's mistakes get answers that say what to do. Each test
//! makes the mistake as a person would, on the command line or over HTTP, and reads the answer.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

use crate::support::{Backend, ServerOptions, TestApp, TestDatabase, TestServer, binary, db_test};

/// `extility ARGS` with a backtrace asked for: user errors must still print none.
fn extility(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(binary())
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LOG", "warn")
        .env_remove("DATABASE_URL")
        .env_remove("EXTILITY_CUSTOMER_PASSWORD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// Stderr of a run that must fail with `code`, checked to carry no backtrace.
fn refused(out: &Output, code: i32) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    assert!(!stderr.to_lowercase().contains("backtrace"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

fn data_args(dir: &std::path::Path) -> Vec<String> {
    vec!["--data-dir".into(), dir.join("data").display().to_string()]
}

#[test]
fn listen_without_a_host_names_the_host_port_form() {
    let out = extility(&["serve", "--listen", "8080"], None);
    let err = refused(&out, 2);
    assert!(err.contains("HOST:PORT"), "{err}");
    assert!(err.contains("127.0.0.1:8080"), "{err}");
}

#[test]
fn port_points_to_listen_not_to_port_forwards() {
    let out = extility(&["serve", "--port", "8080"], None);
    let err = refused(&out, 2);
    assert!(err.contains("--listen"), "{err}");
    assert!(!err.contains("--port-forward-ports"), "{err}");
}

#[test]
fn customer_add_refuses_bad_addresses_and_common_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_args(dir.path());
    let data: Vec<&str> = data.iter().map(String::as_str).collect();
    for (email, password, says) in [
        ("a@@b.com", "long-enough-password", "more than one '@'"),
        (
            " @example.com",
            "long-enough-password",
            "nothing comes before the '@'",
        ),
        ("me@localhost", "long-enough-password", "needs a dot"),
        ("me@example.com", "password", "most common passwords"),
        ("me@example.com", "12345678", "most common passwords"),
    ] {
        let mut args = vec!["customer", "add", "--email", email, "--password", password];
        args.extend(&data);
        let err = refused(&extility(&args, None), 1);
        assert!(err.contains(says), "{email} {password}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_can_come_from_stdin_and_never_from_a_missing_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_args(dir.path());
    let mut args = vec![
        "customer",
        "add",
        "--email",
        "pat@example.com",
        "--password-stdin",
    ];
    args.extend(data.iter().map(String::as_str));
    let out = extility(&args, Some("a fine long passphrase\n"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Without any password and no terminal to ask on: told the three ways.
    let mut args = vec!["customer", "add", "--email", "sam@example.com"];
    args.extend(data.iter().map(String::as_str));
    let err = refused(&extility(&args, None), 1);
    assert!(err.contains("--password-stdin"), "{err}");
    assert!(err.contains("EXTILITY_CUSTOMER_PASSWORD"), "{err}");

    // The password read from stdin signs in.
    let db = TestDatabase::new(Backend::Sqlite, &dir.path().join("data")).await;
    let server = TestServer::spawn(&db, &dir.path().join("data"), ServerOptions::default());
    let api = server.api("pat@example.com", "a fine long passphrase");
    let vdcs = api.call("ListVDCs", json!({})).await;
    assert_eq!(vdcs.as_array().unwrap().len(), 1);
}

#[test]
fn nodes_on_an_empty_directory_creates_no_database() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = extility(&["nodes", "--data-dir", data.to_str().unwrap()], None);
    let err = refused(&out, 1);
    assert!(err.contains("no database"), "{err}");
    assert!(!data.join("extility.db").exists());
}

#[test]
fn a_closed_postgres_port_is_named_with_the_os_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://someone:hunter2@127.0.0.1:{port}/x");
    let dir = tempfile::tempdir().unwrap();
    let out = extility(
        &[
            "migrate",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--database-url",
            &url,
        ],
        None,
    );
    let err = refused(&out, 1);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.contains("refused"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn a_port_in_use_is_found_before_anything_is_written() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = extility(
        &[
            "serve",
            "--listen",
            &address,
            "--data-dir",
            data.to_str().unwrap(),
            "--network",
            "user",
        ],
        None,
    );
    let err = refused(&out, 1);
    assert!(err.contains(&address) && err.contains("--listen"), "{err}");
    assert!(!data.exists(), "nothing made: {err}");
}

async fn a_second_serve_of_one_node_is_refused(backend: Backend) {
    let app = TestApp::start(backend).await;
    let data = app.server.data_dir.clone();
    // The same data directory (and so the same node id): the lock names the first process.
    let out = extility(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--network",
            "user",
            "--data-dir",
            data.to_str().unwrap(),
            "--database-url",
            &app.server.db_url,
        ],
        None,
    );
    let err = refused(&out, 1);
    let first = app.server.url.trim_start_matches("http://");
    assert!(
        err.contains("already served") && err.contains(first),
        "{err}"
    );

    // Another data directory on the same database, under the same node id: the heartbeat is
    // fresh and keeps moving, so it is refused too, naming where the first one listens.
    let node_id = std::fs::read_to_string(data.join("node-id")).unwrap();
    let other = tempfile::tempdir().unwrap();
    let out = extility(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--network",
            "user",
            "--data-dir",
            other.path().to_str().unwrap(),
            "--database-url",
            &app.server.db_url,
            "--node-id",
            node_id.trim(),
        ],
        None,
    );
    let err = refused(&out, 1);
    assert!(
        err.contains("another live process") && err.contains(first),
        "{err}"
    );
}
db_test!(
    a_second_serve_of_one_node_is_refused,
    a_second_serve_of_one_node_is_refused
);

async fn set_quota_for_nobody_says_so_plainly(backend: Backend) {
    let app = TestApp::start(backend).await;
    let out = app.server.cli(&[
        "customer",
        "set-quota",
        "--email",
        "nobody@example.com",
        "--servers",
        "3",
    ]);
    let err = refused(&out, 1);
    assert!(
        err.contains("no customer has the e-mail nobody@example.com"),
        "{err}"
    );
}
db_test!(
    set_quota_for_nobody_says_so_plainly,
    set_quota_for_nobody_says_so_plainly
);

/// GET/POST a path with Alice's credentials; the status and the JSON body.
async fn request(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{path}", app.server.url))
        .basic_auth(&app.alice.email, Some(&app.alice.password));
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: not JSON: {text:?}"));
    (status, body)
}

fn message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or_default()
}

async fn http_answers_explain_themselves(backend: Backend) {
    let app = TestApp::start(backend).await;
    use reqwest::Method;

    let (status, body) = request(&app, Method::GET, "/api/v1/ListVDCs", None).await;
    assert_eq!(status, 405);
    assert!(message(&body).contains("use POST"), "{body}");

    for path in ["/api/v1/", "/api/v1"] {
        let (status, body) = request(&app, Method::POST, path, None).await;
        assert_eq!(status, 404, "{path}");
        assert!(message(&body).contains("/openapi.json"), "{path}: {body}");
    }
    let (status, body) = request(&app, Method::GET, "/docs", None).await;
    assert_eq!(status, 404);
    assert!(message(&body).contains("/panel/"), "{body}");
    let (status, body) = request(&app, Method::POST, "/api/v1/ListVDCs/", Some(json!({}))).await;
    assert_eq!(status, 404);
    assert!(
        message(&body).contains("POST /api/v1/ListVDCs (no trailing slash)"),
        "{body}"
    );

    // A misspelt argument is named, with the one meant; a misspelt operation too.
    let (status, body) = request(
        &app,
        Method::POST,
        "/api/v1/GetDisk",
        Some(json!({"diskid": 1})),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "INVALID_ARGUMENT");
    assert!(
        message(&body).contains("'diskid'") && message(&body).contains("'disk_id'"),
        "{body}"
    );
    let (status, body) = request(&app, Method::POST, "/api/v1/ListVDC", Some(json!({}))).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "UNKNOWN_OPERATION");
    assert!(message(&body).contains("did you mean 'ListVDCs'"), "{body}");
    // Names are matched ignoring case, as PHP's SoapClient calls them.
    let (status, _) = request(&app, Method::POST, "/api/v1/listvdcs", Some(json!({}))).await;
    assert_eq!(status, 200);

    // A status number comes with its name.
    let args = json!({"vdc_id": app.alice.vdc_id, "vlan_id": -1, "server_name": "named",
                      "image_id": 66, "server_productoffer_id": 18,
                      "disk_productoffer_ids": [31]});
    let (status, server) = request(&app, Method::POST, "/api/v1/CreateServer", Some(args)).await;
    assert_eq!(status, 200, "{server}");
    assert_eq!(server["status"], 5);
    assert_eq!(server["status_name"], "stopped");
    let args = json!({"server_id": server["server_id"]});
    let (_, job) = request(&app, Method::POST, "/api/v1/DestroyServer", Some(args)).await;
    let args = json!({"job_id": job["job_id"], "timeout_seconds": 30});
    let (_, job) = request(&app, Method::POST, "/api/v1/WaitForJob", Some(args)).await;
    assert_eq!(job["status"], 1, "{job}");
    assert_eq!(job["status_name"], "successful");
}
db_test!(
    http_answers_explain_themselves,
    http_answers_explain_themselves
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sign_in_page_says_where_accounts_come_from() {
    let app = TestApp::start(Backend::Sqlite).await;
    let page = reqwest::get(format!("{}/panel/signin", app.server.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("extility customer add"), "{page}");
}

#[test]
fn the_first_start_names_the_panel_and_how_to_add_a_customer() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = Command::new(binary())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--network",
            "user",
            "--hypervisor",
            "none",
        ])
        .arg("--data-dir")
        .arg(&data)
        .env("RUST_LOG", "warn")
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines: Vec<String> = std::io::BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .take(3)
        .collect();
    let _ = child.kill();
    let _ = child.wait();
    let url = lines[0].strip_prefix("extility listening on ").unwrap();
    assert_eq!(lines[1], format!("control panel: {url}/panel/"));
    assert!(
        lines[2].contains("extility customer add --email"),
        "{lines:?}"
    );
    assert!(lines[2].contains(&data.display().to_string()), "{lines:?}");
}
