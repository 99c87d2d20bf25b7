//! The SOAP API's versions side by side on one server: where each version's WSDL and endpoint
//! are, what version 1 does with an argument or an operation it does not have, and node-soap
//! (the npm package `soap`, from tests/node) against version 1 and the current version.
//! Versions are the same code on either database, so this runs on SQLite alone.

use std::path::Path;
use std::process::Command;

use extility::api::wsdl::render;
use extility::ops::registry::CURRENT;
use serde_json::json;

use crate::support::{Backend, TestApp};

/// A SOAP call to `path` as alice: the HTTP status and the response's XML.
async fn soap(app: &TestApp, path: &str, body: &str) -> (u16, String) {
    let envelope = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/"
  xmlns:ns1="http://extility.flexiant.com"><SOAP-ENV:Body>{body}</SOAP-ENV:Body></SOAP-ENV:Envelope>"#
    );
    let response = reqwest::Client::new()
        .post(format!("{}{path}", app.server.url))
        .header("Content-Type", "text/xml; charset=utf-8")
        .basic_auth(&app.alice.email, Some(&app.alice.password))
        .body(envelope)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

async fn get(app: &TestApp, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("{}{path}", app.server.url))
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

fn run_node(app: &TestApp) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    assert!(
        dir.join("node_modules/soap").exists(),
        "node-soap is not installed: scripts/test.sh runs `npm ci` in tests/node"
    );
    let out = Command::new("node")
        .arg(dir.join("versions.js"))
        .env("EXTILITY_WSDL", format!("{}/?wsdl", app.server.url))
        .env(
            "EXTILITY_WSDL_CURRENT",
            format!("{}/v{CURRENT}/?wsdl", app.server.url),
        )
        .env("ALICE_EMAIL", &app.alice.email)
        .env("ALICE_PASSWORD", &app.alice.password)
        .output()
        .expect("running node (scripts/test.sh installs nodejs)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.contains("all done"),
        "node versions.js ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_side_by_side() {
    let app = TestApp::start(Backend::Sqlite).await;
    let base = &app.server.url;

    // Version 1 at the first release's addresses, for ever; the current one at its own.
    let v1 = render(1, &format!("{base}/"));
    let current = render(CURRENT, &format!("{base}/v{CURRENT}/"));
    assert!(v1.contains(&format!(r#"<soap:address location="{base}/"/>"#)));
    for (path, expected, what) in [
        ("/?wsdl", &v1, "version 1"),
        ("/wsdl", &v1, "version 1"),
        (
            &format!("/v{CURRENT}/?wsdl"),
            &current,
            "the current version",
        ),
        (
            &format!("/v{CURRENT}/wsdl"),
            &current,
            "the current version",
        ),
        (
            &format!("/?wsdl&version={CURRENT}"),
            &current,
            "the current version",
        ),
        (
            &format!("/wsdl?version={CURRENT}"),
            &current,
            "the current version",
        ),
    ] {
        let (status, body) = get(&app, path).await;
        assert_eq!(status, 200, "{path}");
        assert!(&body == expected, "{path} is not {what}'s WSDL");
    }
    let (status, body) = get(&app, "/?wsdl&version=99").await;
    assert_eq!(status, 404, "{body}");

    // An argument version 1 does not have is not given: ListVDCs lists every VDC.
    alice_second_vdc(&app).await;
    let page = "<ns1:ListVDCs><page_size>1</page_size></ns1:ListVDCs>";
    for version_1 in ["/", "/v1/"] {
        let (status, xml) = soap(&app, version_1, page).await;
        assert_eq!(status, 200, "{xml}");
        assert!(
            xml.contains(r#"SOAP-ENC:arrayType="tns:VDC[2]""#),
            "{version_1}: {xml}"
        );
    }
    let (status, xml) = soap(&app, &format!("/v{CURRENT}/"), page).await;
    assert_eq!(status, 200, "{xml}");
    assert!(xml.contains(r#"SOAP-ENC:arrayType="tns:VDC[1]""#), "{xml}");

    // An operation version 1 does not have is refused, saying where it is.
    let delete = "<ns1:DeleteVDC><vdc_id>1</vdc_id></ns1:DeleteVDC>";
    let (status, xml) = soap(&app, "/", delete).await;
    assert_eq!(status, 500, "{xml}");
    assert!(xml.contains("<errorCode xsi:type=\"xsd:string\">UNKNOWN_OPERATION</errorCode>"));
    assert!(
        xml.contains("it came in version 2 (POST /v2/, WSDL /v2/?wsdl)"),
        "{xml}"
    );

    // Records carry each version's fields: a VLAN of version 1 has no subnet.
    let vlan = "<ns1:CreateVLAN><vdc_id>{vdc}</vdc_id><vlan_name>v</vlan_name></ns1:CreateVLAN>"
        .replace("{vdc}", &app.alice.vdc_id.to_string());
    let (status, xml) = soap(&app, "/", &vlan).await;
    assert_eq!(status, 200, "{xml}");
    assert!(
        xml.contains("</vdc_id></vlan>") && !xml.contains("<subnet"),
        "{xml}"
    );
    let (_, xml) = soap(&app, &format!("/v{CURRENT}/"), &vlan).await;
    assert!(xml.contains("<subnet xsi:type=\"xsd:string\">"), "{xml}");
    let alice = app.alice();
    for vlan in alice
        .call("ListVLANs", json!({"vdc_id": app.alice.vdc_id}))
        .await
        .as_array()
        .unwrap()
    {
        alice
            .call("DeleteVLAN", json!({"vlan_id": vlan["vlan_id"]}))
            .await;
    }
    let second = alice
        .call("ListVDCs", json!({"after_id": app.alice.vdc_id}))
        .await;
    alice
        .call("DeleteVDC", json!({"vdc_id": second[0]["vdc_id"]}))
        .await;

    // node-soap, as its users write it, against both.
    run_node(&app);
}

async fn alice_second_vdc(app: &TestApp) {
    app.alice()
        .call("CreateVDC", json!({"vdc_name": "second"}))
        .await;
}
