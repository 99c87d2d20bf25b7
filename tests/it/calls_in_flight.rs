//! The per-customer bound on API calls in flight (`--max-calls-in-flight`, issue 20): a
//! customer with as many calls running as it may has one more refused with TOO_MANY_REQUESTS
//! (429, `Retry-After`; over SOAP a fault with that code) and nothing done, while another
//! customer's calls go through; once its calls end, it is served again.
//!
//! The calls are held deterministically: WaitForJob on a fetch from a server that answers
//! nothing until the test lets it (then 404, which ends the job), and the test waits until the
//! node's `extility_api_calls_in_flight` gauge shows them inside the bound.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use crate::support::catalogue::DISK_1GB;
use crate::support::{Backend, ServerOptions, TestApp, db_test, id};

/// An HTTP server that holds every request until `release` is sent, then answers 404 to them
/// and to every later one.
async fn held_url() -> (String, watch::Sender<bool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/image.img", listener.local_addr().unwrap());
    let (release, released) = watch::channel(false);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut released = released.clone();
            tokio::spawn(async move {
                let _ = released.wait_for(|r| *r).await;
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    )
                    .await;
            });
        }
    });
    (url, release)
}

/// The node's count of API calls in flight, from `/metrics`.
async fn in_flight(app: &TestApp) -> i64 {
    let text = reqwest::get(format!("{}/metrics", app.server.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("extility_api_calls_in_flight "))
        .unwrap_or_else(|| panic!("no calls-in-flight gauge in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Polls the gauge until it reads `want` (at most a minute).
async fn until_in_flight(app: &TestApp, want: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = in_flight(app).await;
        if now == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{now} calls in flight, never {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_customer_over_its_calls_in_flight_is_refused_others_are_served(backend: Backend) {
    let app = TestApp::start_with(
        backend,
        ServerOptions {
            args: [
                "--hypervisor",
                "none",
                "--max-calls-in-flight",
                "2",
                "--allow-fetch-from",
                "127.0.0.1/32",
            ]
            .map(String::from)
            .to_vec(),
            ..Default::default()
        },
    )
    .await;
    let (alice, bob, vdc) = (app.alice(), app.bob(), app.alice.vdc_id);
    let (url, release) = held_url().await;
    let job = id(
        &alice
            .call(
                "FetchDisk",
                json!({"url": url, "name": "held", "disk_productoffer_id": DISK_1GB,
                       "vdc_id": vdc, "make_image": false}),
            )
            .await,
        "job_id",
    );
    until_in_flight(&app, 0).await;

    // Two calls of alice's that last until the fetch is let go.
    let held: Vec<_> = (0..2)
        .map(|_| {
            let alice = alice.clone();
            tokio::spawn(async move {
                alice
                    .try_call("WaitForJob", json!({"job_id": job, "timeout_seconds": 300}))
                    .await
            })
        })
        .collect();
    until_in_flight(&app, 2).await;

    // A third is refused, having done nothing (no VLAN made); bob is served meanwhile.
    let err = alice
        .fail("CreateVLAN", json!({"vdc_id": vdc, "vlan_name": "lan"}))
        .await;
    assert_eq!(
        (err.code.as_str(), err.status),
        ("TOO_MANY_REQUESTS", 429),
        "{err:?}"
    );
    assert!(err.message.contains("2 API calls running"), "{err:?}");
    // Over JSON with `Retry-After`, and over SOAP as a fault with the same code.
    let http = reqwest::Client::new();
    let json_answer = http
        .post(format!("{}/api/v1/GetQuota", app.server.url))
        .basic_auth(&app.alice.email, Some(&app.alice.password))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(json_answer.status().as_u16(), 429);
    assert_eq!(json_answer.headers()["retry-after"], "1");
    let soap_answer = http
        .post(format!("{}/v2/", app.server.url))
        .basic_auth(&app.alice.email, Some(&app.alice.password))
        .header("Content-Type", "text/xml; charset=utf-8")
        .body(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/"
  xmlns:ns1="http://extility.flexiant.com"><SOAP-ENV:Body><ns1:GetQuota/></SOAP-ENV:Body></SOAP-ENV:Envelope>"#,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(soap_answer.status().as_u16(), 429);
    assert_eq!(soap_answer.headers()["retry-after"], "1");
    let fault = soap_answer.text().await.unwrap();
    assert!(
        fault.contains("Fault") && fault.contains("TOO_MANY_REQUESTS"),
        "{fault}"
    );
    let bobs: Value = bob.call("GetQuota", json!({})).await;
    assert_eq!(bobs["vlans_used"], 0);
    assert!(
        held.iter().all(|h| !h.is_finished()),
        "alice's calls were still in flight"
    );
    assert_eq!(
        in_flight(&app).await,
        2,
        "the refused call left no place taken"
    );

    // Let go: the fetch fails, the waits return, and alice is served again.
    release.send(true).unwrap();
    for call in held {
        let job = call.await.unwrap().expect("WaitForJob answered");
        assert_eq!(job["status"], 3, "{job}");
    }
    until_in_flight(&app, 0).await;
    alice
        .call("CreateVLAN", json!({"vdc_id": vdc, "vlan_name": "lan"}))
        .await;
    let q = alice.call("GetQuota", json!({})).await;
    assert_eq!(q["vlans_used"], 1, "only the call served made a VLAN: {q}");
}
db_test!(
    a_customer_over_its_calls_in_flight_is_refused_others_are_served,
    a_customer_over_its_calls_in_flight_is_refused_others_are_served
);
