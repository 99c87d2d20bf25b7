//! What a browser can be made to send runs nothing, and secrets in fetch URLs leave no trace.
//!
//! - Browser forgery: a page of another site can POST a form (`text/plain`,
//!   `application/x-www-form-urlencoded`, `multipart/form-data`) or a "simple" `fetch` (no
//!   type at all) to the API, and the browser adds the Basic credentials its user typed for
//!   the server. Such requests are refused before anything runs: the wrong type with 415, a
//!   foreign `Origin` with credentials with 403. The requests here are what a browser sends.
//! - A FetchDisk of a pre-signed URL: its query string (and user info) is in no log line, no
//!   job name, no job parameter, no audit row and no error message, and the fetch works.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::fetch_disk::{allowing, fetch, fetch_args};
use crate::support::image_server::ImageServer;
use crate::support::{Backend, TestApp, db_test};

fn envelope(body: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/"
  xmlns:ns1="http://extility.flexiant.com"><SOAP-ENV:Body>{body}</SOAP-ENV:Body></SOAP-ENV:Envelope>"#
    )
}

/// A POST with Alice's Basic credentials, as a browser that has them sends it.
async fn post(
    app: &TestApp,
    path: &str,
    content_type: Option<&str>,
    origin: Option<&str>,
    body: String,
) -> (StatusCode, String) {
    let mut request = reqwest::Client::new()
        .post(format!("{}{path}", app.server.url))
        .basic_auth(&app.alice.email, Some(&app.alice.password))
        .body(body);
    if let Some(content_type) = content_type {
        request = request.header("Content-Type", content_type);
    }
    if let Some(origin) = origin {
        request = request.header("Origin", origin);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

async fn vdc_names(app: &TestApp) -> Vec<String> {
    app.alice()
        .call("ListVDCs", json!({}))
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["vdc_name"].as_str().unwrap().to_string())
        .collect()
}

async fn forged_requests_run_nothing(backend: Backend) {
    let app = TestApp::start(backend).await;
    let soap = |name: &str| {
        envelope(&format!(
            "<ns1:CreateVDC><vdc_name>{name}</vdc_name></ns1:CreateVDC>"
        ))
    };
    let json = |name: &str| json!({ "vdc_name": name }).to_string();
    let own = app.server.url.clone();
    let before = vdc_names(&app).await;

    // Bodies of the types a form or a simple fetch sends.
    let form_types = [
        Some("text/plain"),
        Some("text/plain; charset=utf-8"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ];
    for content_type in form_types {
        let (status, body) = post(
            &app,
            "/api/v1/CreateVDC",
            content_type,
            None,
            json("typed-json"),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}: {body}"
        );
        let error: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(error["error"]["code"], "MALFORMED_REQUEST", "{body}");
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .contains("application/json"),
            "{body}"
        );
        let (status, body) = post(&app, "/", content_type, None, soap("typed-soap")).await;
        assert_eq!(
            status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}: {body}"
        );
        assert!(
            body.contains("<faultstring>") && body.contains("text/xml"),
            "{body}"
        );
    }
    // Even an empty body: a cross-site fetch can send one with no type, and some operations
    // need no arguments.
    let (status, _) = post(&app, "/api/v1/CreateVDC", None, None, String::new()).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // Cross-origin, with credentials and the right type (a page's fetch whose preflight a
    // careless proxy answers, or an old browser): refused.
    for origin in [
        "http://evil.example.com",
        "null",
        &own.replace("127.0.0.1", "localhost"),
    ] {
        let (status, body) = post(
            &app,
            "/api/v1/CreateVDC",
            Some("application/json"),
            Some(origin),
            json("cross-json"),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{origin}: {body}");
        let error: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(error["error"]["code"], "PERMISSION_DENIED", "{body}");
        let (status, body) = post(
            &app,
            "/",
            Some("text/xml; charset=utf-8"),
            Some(origin),
            soap("cross-soap"),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{origin}: {body}");
        assert!(body.contains("PERMISSION_DENIED"), "{body}");
    }
    assert_eq!(vdc_names(&app).await, before, "nothing was created");

    // The server's own origin, no origin at all (clients that are not browsers), and SOAP 1.2's
    // type all work.
    for (path, content_type, origin, body) in [
        (
            "/api/v1/CreateVDC",
            "application/json; charset=utf-8",
            Some(own.as_str()),
            json("own-json"),
        ),
        (
            "/api/v1/CreateVDC",
            "application/json",
            None,
            json("plain-json"),
        ),
        ("/", "text/xml", Some(own.as_str()), soap("own-soap")),
        (
            "/",
            "application/soap+xml; charset=utf-8",
            None,
            soap("soap12"),
        ),
    ] {
        let (status, answer) = post(&app, path, Some(content_type), origin, body).await;
        assert_eq!(status, StatusCode::OK, "{path} {content_type}: {answer}");
    }
    let mut made: Vec<String> = vdc_names(&app)
        .await
        .into_iter()
        .filter(|n| !before.contains(n))
        .collect();
    made.sort();
    assert_eq!(made, ["own-json", "own-soap", "plain-json", "soap12"]);
}

db_test!(forged_requests, forged_requests_run_nothing);

/// Every row of every table of the server's database, as text (and for SQLite the bytes of
/// the database file and its write-ahead log too).
async fn database_text(app: &TestApp, backend: Backend) -> String {
    let db = crate::support::server_db::ServerDb::open(&app.server).await;
    let mut text = String::new();
    match backend {
        Backend::Postgres => {
            // Every table of the schema, with its rows, as one XML document.
            let dump: String =
                sqlx::query_scalar("SELECT schema_to_xml(current_schema(), true, true, '')::text")
                    .fetch_one(db.pool())
                    .await
                    .unwrap();
            assert!(dump.contains("<jobs>"), "the dump holds the jobs");
            text.push_str(&dump);
        }
        Backend::Sqlite => {
            let file = app.server.data_dir.join("extility.db");
            for path in [file.clone(), file.with_extension("db-wal")] {
                if let Ok(bytes) = std::fs::read(&path) {
                    text.push_str(&String::from_utf8_lossy(&bytes));
                }
            }
            assert!(
                text.contains("FetchDisk"),
                "the database file holds the jobs"
            );
        }
    }
    text
}

async fn presigned_fetch_urls_leave_no_trace(backend: Backend) {
    const SECRET: &str = "secret123";
    // No retries: a connection that fails ends its job at once.
    let mut options = allowing("127.0.0.0/8");
    options
        .args
        .extend(["--fetch-max-retries".into(), "0".into()]);
    let app = TestApp::start_with(backend, options).await;
    let alice = app.alice();
    let files = ImageServer::start().await;
    let image = vec![0x5au8; 64 * 1024];
    let url = files.put_data("img.raw", image);
    let signed = format!("{url}?X-Amz-Signature={SECRET}&token=abc");

    let job = fetch(&alice, fetch_args(&signed, app.alice.vdc_id, "signed")).await;
    let done = alice.job_ok(job).await;
    assert!(done["item_id"].as_i64().unwrap() > 0, "{done}");
    let seen = files.seen();
    assert!(
        seen.iter().any(|s| s.path == "img.raw"
            && s.query.as_deref() == Some("X-Amz-Signature=secret123&token=abc")),
        "the fetch asked with the whole URL: {seen:?}"
    );
    // With credentials in the URL too, and a URL that fails: its error names the URL, without
    // its secrets.
    let missing = format!(
        "{}?X-Amz-Signature={SECRET}&token=abc",
        files
            .url("gone.raw")
            .replace("://", "://user:pw-secret123@")
    );
    let failed = fetch(&alice, fetch_args(&missing, app.alice.vdc_id, "missing")).await;
    let (code, message) = alice.job_fails(failed).await;
    assert_eq!(code, "FETCH_FAILED", "{message}");
    assert!(message.contains(&files.url("gone.raw")), "{message}");

    // A connection refused: the HTTP client's own error names the URL it tried, query and all.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let refused = format!("http://{closed}/x.raw?X-Amz-Signature={SECRET}&token=abc");
    let refused = fetch(&alice, fetch_args(&refused, app.alice.vdc_id, "refused")).await;
    let (code, message) = alice.job_fails(refused).await;
    assert_eq!(code, "FETCH_TIMEOUT", "{message}");
    assert!(message.contains("error sending request"), "{message}");

    let jobs = alice.call("ListJobs", json!({})).await;
    let names: Vec<&str> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&format!("Fetch disk \"signed\" from {url}").as_str()),
        "the job name shows the URL without its query: {names:?}"
    );
    let shown = [
        jobs.to_string(),
        alice
            .call("GetJob", json!({"job_id": job}))
            .await
            .to_string(),
        alice
            .call("GetJob", json!({"job_id": failed}))
            .await
            .to_string(),
        alice
            .call("GetJob", json!({"job_id": refused}))
            .await
            .to_string(),
        alice.call("ListAuditEvents", json!({})).await.to_string(),
        app.server.log_text(),
        database_text(&app, backend).await,
    ];
    for (what, text) in [
        "ListJobs",
        "GetJob",
        "GetJob (failed)",
        "GetJob (refused)",
        "ListAuditEvents",
        "log",
        "database",
    ]
    .iter()
    .zip(&shown)
    {
        assert!(!text.contains(SECRET), "{what} shows the secret: {text}");
        assert!(
            !text.contains("token=abc"),
            "{what} shows the query: {text}"
        );
    }
}

db_test!(presigned_fetch_urls, presigned_fetch_urls_leave_no_trace);
