//! PublishImage answers with the image's hygiene report (issue 26, item 3): the owner of a
//! checked image with findings is told them (code, severity, paths), of a clean one that it is
//! clean, of one nobody checked that it was not checked (publishing runs no check). Seen as a
//! JSON client, PHP's SoapClient (version 2's second part; version 1 answers the result alone,
//! as released) and the panel's publish notice see it. Two checks in libguestfs's appliance
//! per database, side by side (`support::hygiene_images`' fixtures).

use reqwest::header;
use serde_json::{Value, json};

use crate::support::catalogue::DISK_1GB;
use crate::support::fetch_disk::fetch;
use crate::support::hygiene_images;
use crate::support::image_server::ImageServer;
use crate::support::test_app::csrf_field;
use crate::support::{Api, Backend, ServerOptions, TestApp, db_test, id, run_php};

async fn app(backend: Backend) -> TestApp {
    let options = ServerOptions {
        args: ["--allow-fetch-from", "127.0.0.0/8", "--hypervisor", "none"]
            .into_iter()
            .map(str::to_string)
            .collect(),
        ..ServerOptions::default()
    };
    TestApp::start_with(backend, options).await
}

/// A private image of alice's holding `bytes`, fetched; returns its id.
async fn fetch_image(app: &TestApp, bytes: Vec<u8>, name: &str) -> i64 {
    let files = ImageServer::start().await;
    let url = files.put_data("image.img", bytes);
    let alice = app.alice();
    let job = fetch(
        &alice,
        json!({"url": url, "name": name, "disk_productoffer_id": DISK_1GB,
               "vdc_id": app.alice.vdc_id, "make_image": true}),
    )
    .await;
    id(&alice.job_ok(job).await, "item_id")
}

/// Runs CheckImage to a successful end.
async fn check(api: &Api, image_id: i64) {
    let job = api.call("CheckImage", json!({"image_id": image_id})).await;
    let job = api.wait_job(id(&job, "job_id")).await;
    assert_eq!(job["status"], 1, "{job}");
}

/// A report's findings as `(code, severity, paths)`, sorted by code. PHP gives an empty
/// SOAP array as an empty array or as nothing; both mean none.
fn findings(report: &Value) -> Vec<(String, String, Vec<String>)> {
    let text = |v: &Value| v.as_str().unwrap_or_else(|| panic!("{v}")).to_string();
    let mut found: Vec<_> = report["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            let paths = f["paths"].as_array().into_iter().flatten().map(text);
            (text(&f["code"]), text(&f["severity"]), paths.collect())
        })
        .collect();
    found.sort();
    found
}

/// A SOAP call of PublishImage at `path` as alice: the response's XML.
async fn soap_publish(app: &TestApp, path: &str, image_id: i64, to: &str) -> String {
    let envelope = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/"
  xmlns:ns1="http://extility.flexiant.com"><SOAP-ENV:Body><ns1:PublishImage><image_id>{image_id}</image_id><publish_to>{to}</publish_to></ns1:PublishImage></SOAP-ENV:Body></SOAP-ENV:Envelope>"#
    );
    let response = reqwest::Client::new()
        .post(format!("{}{path}", app.server.url))
        .header("Content-Type", "text/xml; charset=utf-8")
        .basic_auth(&app.alice.email, Some(&app.alice.password))
        .body(envelope)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// Publishes `image_id` to `to` from alice's Images tab, as htmx posts the form: the notice
/// the tab answers with.
async fn publish_in_panel(app: &TestApp, image_id: i64, to: &str) -> String {
    let base = &app.server.url;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let cookie = format!(
        "extility_panel={}",
        app.http_sign_in(&http, &app.alice).await
    );
    let page = http
        .get(format!("{base}/panel/images"))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let response = http
        .post(format!("{base}/panel/images/{image_id}/publish"))
        .header(header::COOKIE, &cookie)
        .header("hx-request", "true")
        .form(&[("_csrf", csrf_field(&page).as_str()), ("publish_to", to)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let html = response.text().await.unwrap();
    let start = html
        .find(r#"<p class="notice" role="status">"#)
        .unwrap_or_else(|| panic!("no notice: {html}"));
    let end = start + html[start..].find("</p>").unwrap();
    html[start..end].to_string()
}

async fn publishing_answers_with_the_images_hygiene(backend: Backend) {
    let _heavy = crate::support::CPU_HEAVY.read().await;
    let app = app(backend).await;
    let alice = app.alice();
    let (carol, _) = app.add_customer("carol@example.com", &["--billing-entity", "Acme"]);
    let read = |path: &std::path::Path| std::fs::read(path).unwrap();
    let dirty = fetch_image(&app, read(hygiene_images::dirty_ext4()), "dirty").await;
    let clean = fetch_image(&app, read(hygiene_images::clean_ext4()), "clean").await;
    let unchecked = fetch_image(&app, vec![0x5a; 1 << 20], "unchecked").await;
    futures::future::join(check(&alice, dirty), check(&alice, clean)).await;
    let planted = hygiene_images::planted();

    // JSON: the result as before, and beside it the report GetImageReport gives.
    let mut reports = Vec::new();
    for (image, status) in [
        (dirty, "findings"),
        (clean, "clean"),
        (unchecked, "not_checked"),
    ] {
        let published = alice
            .call(
                "PublishImage",
                json!({"image_id": image, "publish_to": app.bob.customer_uuid}),
            )
            .await;
        let report = alice
            .call("GetImageReport", json!({"image_id": image}))
            .await;
        assert_eq!(published, json!({"result": 1, "hygiene": report}));
        assert_eq!(report["status"], status, "{report}");
        reports.push(report);
    }
    let dirty_findings = findings(&reports[0]);
    let mut codes: Vec<&str> = dirty_findings.iter().map(|f| f.0.as_str()).collect();
    let mut expected: Vec<&str> = planted.iter().map(|(code, _)| *code).collect();
    codes.sort();
    expected.sort();
    assert_eq!(codes, expected, "what was planted: {}", reports[0]);
    for (code, severity, _) in &dirty_findings {
        assert!(
            ["high", "medium", "low"].contains(&severity.as_str()),
            "{code}: {severity}"
        );
    }
    assert_eq!(reports[0]["highest_severity"], "high");
    assert!(reports[1]["checked"].is_string() && reports[1]["findings"] == json!([]));
    assert_eq!(
        (&reports[2]["checked"], &reports[2]["job_id"]),
        (&Value::Null, &Value::Null),
        "never checked, and publishing checked nothing: {}",
        reports[2]
    );

    // PHP's SoapClient: version 2's answer has the report as its second part, version 1's is
    // the result alone.
    let base = &app.server.url;
    let images = format!("{dirty},{clean},{unchecked}");
    let out = run_php(
        "publish_findings.php",
        &[
            ("WSDL_V1", &format!("{base}/?wsdl")),
            ("WSDL_V2", &format!("{base}/v2/?wsdl")),
            ("USER", &app.alice.email),
            ("PASS", &app.alice.password),
            ("PUBLISH_TO", &carol.billing_entity_uuid),
            ("IMAGES", &images),
        ],
    );
    let answers: Value = out
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .map(|json| serde_json::from_str(json).unwrap())
        .unwrap_or_else(|| panic!("the script printed no RESULT:\n{out}"));
    for (image, report) in [dirty, clean, unchecked].into_iter().zip(&reports) {
        let key = format!("image{image}");
        assert_eq!(answers["v1"][&key], 1, "{answers}");
        let v2 = &answers["v2"][&key];
        assert_eq!(v2["result"], 1, "{v2}");
        assert_eq!(v2["hygiene"]["status"], report["status"], "{v2}");
        assert_eq!(v2["hygiene"]["image_id"], image, "{v2}");
        assert_eq!(findings(&v2["hygiene"]), findings(report), "{v2}");
    }

    // On the wire: version 1's response has the one part it was released with.
    let v1 = soap_publish(&app, "/", dirty, &carol.customer_uuid).await;
    assert!(
        v1.contains(r#"<tns:PublishImageResponse><result xsi:type="xsd:long">1</result></tns:PublishImageResponse>"#),
        "{v1}"
    );
    let v2 = soap_publish(&app, "/v2/", dirty, &carol.customer_uuid).await;
    assert!(
        v2.contains(r#"<tns:PublishImageResponse><result xsi:type="xsd:long">1</result><hygiene xsi:type="tns:HygieneReport">"#),
        "{v2}"
    );

    // The panel tells the person publishing what the recipients receive.
    let notice = publish_in_panel(&app, dirty, &carol.customer_uuid).await;
    assert!(notice.contains("Published."), "{notice}");
    assert!(notice.contains(r#"data-hygiene="findings""#), "{notice}");
    for (code, paths) in &planted {
        assert!(
            notice.contains(&format!(r#"data-code="{code}""#)),
            "{code}: {notice}"
        );
        assert!(notice.contains(paths[0]), "{code}: {notice}");
    }
    let notice = publish_in_panel(&app, clean, &carol.customer_uuid).await;
    assert!(notice.contains("found nothing to clean"), "{notice}");
    let notice = publish_in_panel(&app, unchecked, &carol.customer_uuid).await;
    assert!(notice.contains("never checked"), "{notice}");
}
db_test!(
    publishing_answers_with_the_images_hygiene,
    publishing_answers_with_the_images_hygiene
);
