//! Bad input gets a clear error, over JSON and SOAP, and changes nothing.

use crate::support::catalogue::{BLANK_IMAGE, DISK_20GB, SERVER_1CPU_1GB};
use crate::support::{Backend, TestApp, db_test};
use reqwest::StatusCode;
use serde_json::{Value, json};

const ENVELOPE_START: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/"
  xmlns:ns1="http://extility.flexiant.com" xmlns:xsd="http://www.w3.org/2001/XMLSchema"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><SOAP-ENV:Body>"#;
const ENVELOPE_END: &str = "</SOAP-ENV:Body></SOAP-ENV:Envelope>";

fn envelope(body: &str) -> String {
    format!("{ENVELOPE_START}{body}{ENVELOPE_END}")
}

struct Raw {
    http: reqwest::Client,
    base: String,
}

impl Raw {
    /// POSTs `body`; returns the status, the body and the `WWW-Authenticate` challenge.
    async fn post(
        &self,
        path: &str,
        content_type: &str,
        auth: Option<(&str, &str)>,
        body: Vec<u8>,
    ) -> (StatusCode, String, Option<String>) {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("Content-Type", content_type)
            .body(body);
        if let Some((user, pass)) = auth {
            req = req.basic_auth(user, Some(pass));
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let challenge = resp
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_string());
        (status, resp.text().await.unwrap(), challenge)
    }

    async fn soap(
        &self,
        auth: Option<(&str, &str)>,
        body: String,
    ) -> (StatusCode, String, Option<String>) {
        self.post("/", "text/xml; charset=utf-8", auth, body.into_bytes())
            .await
    }

    async fn json(
        &self,
        op: &str,
        auth: Option<(&str, &str)>,
        body: Vec<u8>,
    ) -> (StatusCode, Value, Option<String>) {
        let (status, text, challenge) = self
            .post(&format!("/api/v1/{op}"), "application/json", auth, body)
            .await;
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::Null),
            challenge,
        )
    }
}

/// The (faultcode, errorCode, message) of a SOAP fault.
fn fault(xml: &str) -> (String, String, String) {
    let between = |open: &str, close: &str| -> String {
        let start = xml
            .find(open)
            .unwrap_or_else(|| panic!("no {open} in {xml}"))
            + open.len();
        let rest = &xml[start..];
        let start = rest.find('>').unwrap() + 1;
        rest[start..rest.find(close).unwrap()].to_string()
    };
    (
        between("<faultcode", "</faultcode>"),
        between("<errorCode", "</errorCode>"),
        between("<faultstring", "</faultstring>"),
    )
}

async fn json_bad_input(backend: Backend) {
    let app = TestApp::start(backend).await;
    let raw = Raw {
        http: reqwest::Client::new(),
        base: app.server.url.clone(),
    };
    let alice = Some(("alice@example.com", "alice-password"));
    let body = |v: Value| v.to_string().into_bytes();

    // No credentials and wrong credentials are told apart: the first needs the header, the
    // second other values in it.
    for (auth, code) in [
        (None, "AUTHENTICATION_REQUIRED"),
        (Some(("alice@example.com", "wrong")), "UNAUTHENTICATED"),
        (Some(("nobody@example.com", "x")), "UNAUTHENTICATED"),
    ] {
        let (status, err, challenge) = raw.json("ListVDCs", auth, vec![]).await;
        assert_eq!(status, 401, "{auth:?}");
        assert_eq!(err["error"]["code"], code, "{auth:?}");
        assert!(
            challenge.unwrap().starts_with("Basic"),
            "401 carries a Basic challenge"
        );
    }
    let cases: Vec<(&str, Vec<u8>, u16, &str, &str)> = vec![
        (
            "CreateVDC",
            b"{not json".to_vec(),
            400,
            "MALFORMED_REQUEST",
            "JSON",
        ),
        (
            "CreateVDC",
            b"[1,2]".to_vec(),
            400,
            "MALFORMED_REQUEST",
            "object",
        ),
        (
            "CreateVDC",
            body(json!({})),
            400,
            "MISSING_ARGUMENT",
            "vdc_name",
        ),
        (
            "CreateVDC",
            body(json!({"vdc_name": 5})),
            400,
            "INVALID_ARGUMENT",
            "vdc_name",
        ),
        (
            "CreateVDC",
            body(json!({"vdc_name": "x", "colour": "red"})),
            400,
            "INVALID_ARGUMENT",
            "colour",
        ),
        (
            "GetDisk",
            body(json!({"disk_id": "seven"})),
            400,
            "INVALID_ARGUMENT",
            "disk_id",
        ),
        (
            "GetDisk",
            body(json!({"disk_id": 1.5})),
            400,
            "INVALID_ARGUMENT",
            "disk_id",
        ),
        (
            "CreateServer",
            body(
                json!({"vdc_id": 1, "vlan_id": -1, "server_name": "s", "image_id": BLANK_IMAGE,
            "server_productoffer_id": SERVER_1CPU_1GB, "disk_productoffer_ids": DISK_20GB}),
            ),
            400,
            "INVALID_ARGUMENT",
            "disk_productoffer_ids",
        ),
        (
            "FormatHardDisk",
            body(json!({})),
            404,
            "UNKNOWN_OPERATION",
            "FormatHardDisk",
        ),
        (
            "CreateVDC",
            vec![b' '; 2 << 20],
            413,
            "PAYLOAD_TOO_LARGE",
            "bytes",
        ),
    ];
    for (op, payload, status, code, mentions) in cases {
        let (got, err, _) = raw.json(op, alice, payload).await;
        assert_eq!(got.as_u16(), status, "{op}: {err}");
        assert_eq!(err["error"]["code"], code, "{op}: {err}");
        assert!(
            err["error"]["message"].as_str().unwrap().contains(mentions),
            "{op}: {err}"
        );
    }
    assert_nothing_changed(&app).await;
}
db_test!(json_bad_input, json_bad_input);

async fn soap_bad_input(backend: Backend) {
    let app = TestApp::start(backend).await;
    let raw = Raw {
        http: reqwest::Client::new(),
        base: app.server.url.clone(),
    };
    let alice = Some(("alice@example.com", "alice-password"));
    let create_vdc = envelope("<ns1:CreateVDC><vdc_name>x</vdc_name></ns1:CreateVDC>");

    let (status, body, challenge) = raw.soap(None, create_vdc.clone()).await;
    assert_eq!(status, 401);
    assert!(challenge.unwrap().starts_with("Basic"));
    assert_eq!(fault(&body).1, "AUTHENTICATION_REQUIRED");
    let (status, _, _) = raw
        .soap(Some(("alice@example.com", "nope")), create_vdc)
        .await;
    assert_eq!(status, 401);

    let billion_laughs = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>"#.to_string()
        + &envelope("<ns1:CreateVDC><vdc_name>&lol2;</vdc_name></ns1:CreateVDC>");
    let xxe = r#"<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>"#
        .to_string()
        + &envelope("<ns1:CreateVDC><vdc_name>&xxe;</vdc_name></ns1:CreateVDC>");
    let deep = envelope(&format!(
        "<ns1:CreateVDC>{}x{}</ns1:CreateVDC>",
        "<a>".repeat(100),
        "</a>".repeat(100)
    ));
    let cases: Vec<(String, &str, &str)> = vec![
        (envelope("<ns1:CreateVDC><vdc_name>x</ns1:CreateVDC>"), "MALFORMED_REQUEST", "XML"),
        ("this is not xml".into(), "MALFORMED_REQUEST", "XML"),
        (billion_laughs, "MALFORMED_REQUEST", "DOCTYPE"),
        (xxe, "MALFORMED_REQUEST", "DOCTYPE"),
        (envelope("<ns1:CreateVDC><vdc_name>&ent;</vdc_name></ns1:CreateVDC>"), "MALFORMED_REQUEST", "&amp;ent;"),
        (deep, "MALFORMED_REQUEST", "deeper"),
        ("<Letter><Body/></Letter>".into(), "MALFORMED_REQUEST", "Envelope"),
        (envelope(""), "MALFORMED_REQUEST", "empty"),
        (envelope("<ns1:FormatHardDisk/>"), "UNKNOWN_OPERATION", "FormatHardDisk"),
        (envelope("<ns1:CreateVDC/>"), "MISSING_ARGUMENT", "vdc_name"),
        (envelope("<ns1:GetDisk><disk_id>seven</disk_id></ns1:GetDisk>"), "INVALID_ARGUMENT", "disk_id"),
        (envelope("<ns1:FetchDisk><url>http://x/y</url><make_image>maybe</make_image></ns1:FetchDisk>"), "INVALID_ARGUMENT", "make_image"),
        (
            r#"<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"><env:Body><ListVDCs/></env:Body></env:Envelope>"#.into(),
            "MALFORMED_REQUEST",
            "SOAP 1.2",
        ),
    ];
    for (request, code, mentions) in cases {
        let (status, body, _) = raw.soap(alice, request.clone()).await;
        assert_eq!(status, 500, "SOAP 1.1 faults come with HTTP 500: {body}");
        let (faultcode, error_code, message) = fault(&body);
        assert_eq!(faultcode, "SOAP-ENV:Client", "{request}");
        assert_eq!(error_code, code, "{request}: {message}");
        assert!(message.contains(mentions), "{request}: {message}");
    }
    let huge = envelope(&format!(
        "<ns1:CreateVDC><vdc_name>{}</vdc_name></ns1:CreateVDC>",
        "x".repeat(2 << 20)
    ));
    let (status, body, _) = raw.soap(alice, huge).await;
    assert_eq!(status, 413);
    assert_eq!(fault(&body).1, "PAYLOAD_TOO_LARGE");
    assert_nothing_changed(&app).await;
}
db_test!(soap_bad_input, soap_bad_input);

/// Alice still has exactly what `customer add` gave her, and the server still answers.
async fn assert_nothing_changed(app: &TestApp) {
    let alice = app.alice();
    let vdcs = alice.call("ListVDCs", json!({})).await;
    assert_eq!(vdcs.as_array().unwrap().len(), 1, "{vdcs}");
    assert_eq!(vdcs[0]["vdc_name"], "Default VDC");
    assert_eq!(alice.call("ListJobs", json!({})).await, json!([]));
    let health = reqwest::get(format!("{}/health", app.server.url))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}
