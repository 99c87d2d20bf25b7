//! Login throttling (issue 11): failed logins are counted per client address and per
//! (account, address); past the limits the server answers 429 with `Retry-After` (a SOAP fault
//! with the same `errorCode`) without checking the password, the password checks wait in a
//! bounded line, and customers logging in from elsewhere are not slowed down or locked out.
//!
//! Requests come from several loopback addresses (127.0.0.x all reach the server on Linux), so
//! that one test can be the attacker and the customer.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use extility::error::ApiError;
use extility::ops::accounts::credentials;
use extility::ops::accounts::customer;
use extility::ops::accounts::throttle::Line;
use futures::FutureExt;
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::in_process::in_process_node;
use crate::support::{Backend, ServerOptions, TestApp, TestDatabase, db_test};

const ENVELOPE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/"
  xmlns:ns1="http://extility.flexiant.com"><SOAP-ENV:Body><ns1:ListVDCs/></SOAP-ENV:Body></SOAP-ENV:Envelope>"#;

/// An HTTP client whose connections come from `source`.
fn client_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source.parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// What the server answered: status, `Retry-After`, body.
struct Answer {
    status: StatusCode,
    retry_after: Option<u64>,
    body: String,
}

impl Answer {
    async fn from(response: reqwest::Response) -> Answer {
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().parse().expect("Retry-After in seconds"));
        Answer {
            status,
            retry_after,
            body: response.text().await.unwrap(),
        }
    }

    fn json_code(&self) -> String {
        let body: Value = serde_json::from_str(&self.body).unwrap_or(Value::Null);
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The SOAP fault's `faultcode` and `errorCode`.
    fn fault(&self) -> (String, String) {
        let between = |open: &str, close: &str| -> String {
            let start = self
                .body
                .find(open)
                .unwrap_or_else(|| panic!("no {open} in {}", self.body));
            let rest = &self.body[start..];
            let value_start = rest.find('>').unwrap() + 1;
            let end = rest.find(close).unwrap();
            rest[value_start..end].to_string()
        };
        (
            between("<faultcode", "</faultcode>"),
            between("<errorCode", "</errorCode>"),
        )
    }

    fn is_throttled(&self) -> bool {
        self.status == StatusCode::TOO_MANY_REQUESTS
    }
}

async fn json_login(http: &reqwest::Client, base: &str, email: &str, password: &str) -> Answer {
    let response = http
        .post(format!("{base}/api/v1/ListVDCs"))
        .basic_auth(email, Some(password))
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("sending a request");
    Answer::from(response).await
}

async fn soap_login(http: &reqwest::Client, base: &str, email: &str, password: &str) -> Answer {
    let response = http
        .post(format!("{base}/"))
        .header("Content-Type", "text/xml; charset=utf-8")
        .header("SOAPAction", "\"\"")
        .basic_auth(email, Some(password))
        .body(ENVELOPE)
        .send()
        .await
        .expect("sending a request");
    Answer::from(response).await
}

fn throttled_server(args: &[&str]) -> ServerOptions {
    ServerOptions {
        args: args.iter().map(|a| a.to_string()).collect(),
        ..ServerOptions::default()
    }
}

/// After the limit of wrong passwords for an account from an address, that address gets 429
/// with `Retry-After` over JSON, and a SOAP fault with the same code over SOAP, even for the
/// right password; the same account from elsewhere, and other accounts from there, still log
/// in. Past the limit per address, every account is refused from there.
async fn wrong_passwords_are_refused_past_the_limits(backend: Backend) {
    let app = TestApp::start_with(
        backend,
        throttled_server(&[
            "--login-failures-per-account",
            "3",
            "--login-failures-per-address",
            "6",
            "--login-window-seconds",
            "600",
        ]),
    )
    .await;
    let base = &app.server.url;
    let attacker = client_from("127.0.0.1");
    let (alice, alice_password) = (&app.alice.email, &app.alice.password);

    for n in 0..3 {
        let answer = json_login(&attacker, base, alice, &format!("guess-{n}")).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.body);
        assert_eq!(answer.retry_after, None);
    }
    let refused = json_login(&attacker, base, alice, "guess-3").await;
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        refused.body
    );
    assert_eq!(refused.json_code(), "TOO_MANY_LOGIN_ATTEMPTS");
    // Three failures per 600 s: the next fits in 200 s.
    let retry_after = refused.retry_after.expect("a 429 carries Retry-After");
    assert!(
        (150..=200).contains(&retry_after),
        "Retry-After {retry_after}"
    );

    let soap = soap_login(&attacker, base, alice, "guess-4").await;
    assert_eq!(soap.status, StatusCode::TOO_MANY_REQUESTS, "{}", soap.body);
    assert!(soap.retry_after.is_some_and(|s| s >= 1));
    let (faultcode, error_code) = soap.fault();
    assert_eq!(error_code, "TOO_MANY_LOGIN_ATTEMPTS");
    assert!(faultcode.ends_with("Client"), "{faultcode}");

    // Not even the right password is checked from there...
    let answer = json_login(&attacker, base, alice, alice_password).await;
    assert!(answer.is_throttled(), "{}", answer.body);
    // ... but from another address it works: no locking the owner out.
    let elsewhere = client_from("127.0.0.2");
    let answer = json_login(&elsewhere, base, alice, alice_password).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let answer = soap_login(&elsewhere, base, alice, alice_password).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    // Another account from the attacker's address is not refused yet (3 failures of 6).
    let answer = json_login(&attacker, base, &app.bob.email, &app.bob.password).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);

    // Unknown e-mails count like known ones; past 6 failures the address is refused for all.
    for n in 0..3 {
        let answer = json_login(&attacker, base, &format!("nobody{n}@example.com"), "x").await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.body);
    }
    let carol = app
        .server
        .add_customer("carol@example.com", "long-enough-password", &[]);
    let answer = json_login(&attacker, base, &carol.email, &carol.password).await;
    assert!(answer.is_throttled(), "{}", answer.body);
    assert_eq!(answer.json_code(), "TOO_MANY_LOGIN_ATTEMPTS");
    // Bob logged in from there a moment ago: his check is remembered, not refused.
    let answer = json_login(&attacker, base, &app.bob.email, &app.bob.password).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let answer = json_login(&elsewhere, base, &carol.email, &carol.password).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
}
db_test!(
    wrong_passwords_are_refused_past_the_limits,
    wrong_passwords_are_refused_past_the_limits
);

/// Behind a trusted reverse proxy, failures count under the address `X-Forwarded-For` names;
/// from anywhere else that header is ignored.
async fn behind_a_trusted_proxy_the_forwarded_address_counts(backend: Backend) {
    let app = TestApp::start_with(
        backend,
        throttled_server(&[
            "--login-failures-per-address",
            "2",
            "--trusted-proxy",
            "127.0.0.1/32",
        ]),
    )
    .await;
    let base = &app.server.url;
    let proxy = client_from("127.0.0.1");
    let via_proxy = |client: &'static str, email: &str, password: &str| {
        proxy
            .post(format!("{base}/api/v1/ListVDCs"))
            .header("Content-Type", "application/json")
            .header("X-Forwarded-For", client)
            .basic_auth(email, Some(password))
            .send()
    };
    for n in 0..2 {
        let answer = Answer::from(
            via_proxy("198.51.100.1", "x@example.com", &n.to_string())
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.body);
    }
    let answer = Answer::from(
        via_proxy("198.51.100.1", "y@example.com", "z")
            .await
            .unwrap(),
    )
    .await;
    assert!(answer.is_throttled(), "{}", answer.body);
    // Another client behind the same proxy is not.
    let answer = Answer::from(
        via_proxy("198.51.100.2", &app.alice.email, &app.alice.password)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);

    // A client that is not the proxy cannot choose its address with the header.
    let direct = client_from("127.0.0.2");
    for n in 0..2 {
        let response = direct
            .post(format!("{base}/api/v1/ListVDCs"))
            .header("Content-Type", "application/json")
            .header("X-Forwarded-For", format!("203.0.113.{n}"))
            .basic_auth("x@example.com", Some("wrong"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let response = direct
        .post(format!("{base}/api/v1/ListVDCs"))
        .header("Content-Type", "application/json")
        .header("X-Forwarded-For", "203.0.113.9")
        .basic_auth("y@example.com", Some("z"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
}
db_test!(
    behind_a_trusted_proxy_the_forwarded_address_counts,
    behind_a_trusted_proxy_the_forwarded_address_counts
);

/// A refused login runs no password check: with every core taken (the checks' permits held by
/// the test), a login from a fresh address cannot proceed, while a login from the throttled
/// address is answered at once, at the first poll, right password or not.
async fn a_refused_login_checks_no_password(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::new(backend, dir.path()).await;
    let app = in_process_node(
        &db,
        &dir.path().join("data"),
        "node",
        &["--login-failures-per-account", "2"],
    )
    .await;
    let state = app.state();
    customer::create_customer(
        &state.db,
        "alice@example.com",
        "alice-password",
        false,
        "Default",
    )
    .await
    .unwrap();
    let attacker: IpAddr = "192.0.2.1".parse().unwrap();
    let owner: IpAddr = "198.51.100.1".parse().unwrap();
    for guess in ["guess-1", "guess-2"] {
        let err = credentials::authenticate(state, "alice@example.com", guess, attacker)
            .await
            .unwrap_err();
        assert!(matches!(err, ApiError::Unauthenticated), "{err:?}");
    }

    // Take every core.
    let checks = state.credentials.password_checks();
    let mut cores = Vec::new();
    while let Some(permit) = checks.acquire(Line::Quiet).now_or_never() {
        cores.push(permit.unwrap());
        assert!(cores.len() < 1024, "the cores never ran out");
    }
    // The owner's login needs a core: it waits.
    let waiting = credentials::authenticate(state, "alice@example.com", "alice-password", owner)
        .now_or_never();
    assert!(waiting.is_none(), "a password was checked without a core");
    // The attacker's is refused without one, even with the right password.
    for password in ["guess-3", "alice-password"] {
        match credentials::authenticate(state, "ALICE@example.com ", password, attacker)
            .now_or_never()
        {
            Some(Err(err @ ApiError::TooManyLoginAttempts { .. })) => {
                assert_eq!(err.code(), "TOO_MANY_LOGIN_ATTEMPTS");
                assert!(err.retry_after().is_some_and(|s| s >= 1));
            }
            other => panic!("the throttled login was not refused at once: {other:?}"),
        }
    }
    drop(cores);
    // With the cores back, the owner logs in from their address.
    let caller = credentials::authenticate(state, "alice@example.com", "alice-password", owner)
        .await
        .unwrap();
    assert!(caller.customer_id > 0);
}
db_test!(
    a_refused_login_checks_no_password,
    a_refused_login_checks_no_password
);

/// The issue's measurement: a flood of wrong passwords from one address, and meanwhile another
/// customer's first login from another address succeeds in under half a second (the one
/// wall-clock bound here, as the issue asks; with one unbounded line of password checks it
/// took over 3 s). The flooded account's owner still logs in from elsewhere.
///
/// The flood: 200 connections, all sending at once, then each a wrong password every 250 ms
/// at most (800 attempts/s offered, the issue's flood managed 45), bounded (10,000 requests)
/// and stopped once the logins are measured. It is paced because its clients run on the
/// same two cores as the server: unpaced, it would measure this machine's CPU, not the
/// server's queue.
async fn a_flood_of_wrong_passwords_leaves_other_logins_fast(backend: Backend) {
    const CONNECTIONS: usize = 200;
    const REQUESTS_EACH: usize = 50;
    const PACE: Duration = Duration::from_millis(250);
    // One flood at a time: the SQLite and PostgreSQL runs would otherwise measure each other.
    static ONE_FLOOD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one_flood = ONE_FLOOD.lock().await;
    let _no_guests_booting = crate::support::CPU_HEAVY.write().await;
    let app = TestApp::start(backend).await;
    let carol = app
        .server
        .add_customer("carol@example.com", "long-enough-password", &[]);
    let base = app.server.url.clone();
    // A first login without the flood, for the failure message (on a busy machine both are
    // slow).
    let dave = app
        .server
        .add_customer("dave@example.com", "long-enough-password", &[]);
    let started = Instant::now();
    let answer = json_login(
        &client_from("127.0.0.4"),
        &base,
        &dave.email,
        &dave.password,
    )
    .await;
    let without_flood = started.elapsed();
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let flooder = client_from("127.0.0.1");
    let stop = Arc::new(AtomicBool::new(false));
    let (answered_tx, mut answered) = tokio::sync::mpsc::unbounded_channel::<StatusCode>();
    let mut flood = Vec::new();
    for connection in 0..CONNECTIONS {
        let (http, base, stop, answered) = (
            flooder.clone(),
            base.clone(),
            stop.clone(),
            answered_tx.clone(),
        );
        let target = if connection % 2 == 0 {
            app.alice.email.clone()
        } else {
            format!("nobody{connection}@example.com")
        };
        flood.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            let mut pace = tokio::time::interval(PACE);
            for n in 0..REQUESTS_EACH {
                pace.tick().await;
                if stop.load(Ordering::Relaxed) {
                    return (statuses, true);
                }
                let password = format!("guess-{connection}-{n}");
                let answer = json_login(&http, &base, &target, &password).await;
                let _ = answered.send(answer.status);
                statuses.push(answer.status);
            }
            (statuses, false)
        }));
    }
    drop(answered_tx);
    // The flood is on once the server has answered most of its first wave.
    for _ in 0..CONNECTIONS * 3 / 4 {
        answered.recv().await.expect("the flood was answered");
    }

    // Measured on a thread of its own: the flood's 200 clients share this test's runtime.
    let (url, email, password) = (base.clone(), carol.email.clone(), carol.password.clone());
    let (answer, took) = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let customer = client_from("127.0.0.2");
            let started = Instant::now();
            let answer = json_login(&customer, &url, &email, &password).await;
            (answer, started.elapsed())
        })
    })
    .join()
    .unwrap();
    eprintln!("a first login took {took:?} during the flood, {without_flood:?} without");
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    // The flooded account's owner, from their own address.
    let owner = client_from("127.0.0.3");
    let answer = json_login(&owner, &base, &app.alice.email, &app.alice.password).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    stop.store(true, Ordering::Relaxed);

    let mut statuses = Vec::new();
    let mut flood_was_on = false;
    for task in flood {
        let (answers, stopped) = task.await.unwrap();
        statuses.extend(answers);
        flood_was_on |= stopped;
    }
    let throttled = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    assert!(
        took < Duration::from_millis(500),
        "a first login during the flood took {took:?}, without {without_flood:?} \
         ({refused} wrong passwords checked, {throttled} refused at once)"
    );
    assert_eq!(
        throttled + refused,
        statuses.len(),
        "only 401 and 429: {statuses:?}"
    );
    assert!(throttled > 0, "the flood was never throttled");
    assert!(flood_was_on, "the flood ended before the login");
}
db_test!(
    a_flood_of_wrong_passwords_leaves_other_logins_fast,
    a_flood_of_wrong_passwords_leaves_other_logins_fast
);
