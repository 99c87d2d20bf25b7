//! The audit trail: one row for each call that changes something (over JSON, SOAP or the
//! command line) and for each failed login, none for reads, never a secret; ListAuditEvents
//! shows customers their own rows and administrators everyone's, a page at a time.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::catalogue::DISK_1GB;
use crate::support::server_db::ServerDb;
use crate::support::{Api, Backend, TestApp, db_test, id};

/// A row of `audit_events`, as the test reads the table.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    id: i64,
    customer_id: Option<i64>,
    email: Option<String>,
    operation: String,
    via: String,
    address: Option<String>,
    ids: String,
    outcome: String,
}

type RowTuple = (
    i64,
    Option<i64>,
    Option<String>,
    String,
    String,
    Option<String>,
    String,
    String,
);

/// The rows with an id above `after`, oldest first.
async fn rows_after(db: &ServerDb, after: i64) -> Vec<Row> {
    let rows: Vec<RowTuple> = sqlx::query_as(
        "SELECT id, customer_id, email, operation, via, address, ids, outcome \
         FROM audit_events WHERE id > $1 ORDER BY id",
    )
    .bind(after)
    .fetch_all(db.pool())
    .await
    .unwrap();
    rows.into_iter()
        .map(
            |(id, customer_id, email, operation, via, address, ids, outcome)| Row {
                id,
                customer_id,
                email,
                operation,
                via,
                address,
                ids,
                outcome,
            },
        )
        .collect()
}

/// The id of the newest row (0 when there is none).
async fn last_id(db: &ServerDb) -> i64 {
    sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(id) FROM audit_events")
        .fetch_one(db.pool())
        .await
        .unwrap()
        .unwrap_or(0)
}

/// The one row written since `after`.
async fn one_row_after(db: &ServerDb, after: i64) -> Row {
    let rows = rows_after(db, after).await;
    assert_eq!(rows.len(), 1, "exactly one audit row: {rows:#?}");
    rows[0].clone()
}

/// Waits (failed logins are written in the background) until `count` rows follow `after`.
async fn wait_for_rows(db: &ServerDb, after: i64, count: usize) -> Vec<Row> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows = rows_after(db, after).await;
        if rows.len() >= count {
            return rows;
        }
        assert!(
            Instant::now() < deadline,
            "{count} audit rows never came: {rows:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Rows of the table whose text holds `secret` anywhere.
async fn rows_holding(db: &ServerDb, secret: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_events WHERE \
         (COALESCE(email, '') || ' ' || operation || ' ' || via || ' ' || \
          COALESCE(address, '') || ' ' || ids || ' ' || outcome) LIKE $1",
    )
    .bind(format!("%{secret}%"))
    .fetch_one(db.pool())
    .await
    .unwrap()
}

/// A SOAP call with Basic credentials: the HTTP status and the response's XML.
async fn soap(app: &TestApp, email: &str, password: &str, body: &str) -> (u16, String) {
    let envelope = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/"
  xmlns:ns1="http://extility.flexiant.com"><SOAP-ENV:Body>{body}</SOAP-ENV:Body></SOAP-ENV:Envelope>"#
    );
    let response = reqwest::Client::new()
        .post(format!("{}/", app.server.url))
        .header("Content-Type", "text/xml; charset=utf-8")
        .basic_auth(email, Some(password))
        .body(envelope)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// The text of the first `<name ...>text</name>` in `xml`.
fn element(xml: &str, name: &str) -> String {
    let start = xml
        .find(&format!("<{name}"))
        .unwrap_or_else(|| panic!("no <{name}> in {xml}"));
    let rest = &xml[start..];
    let text = &rest[rest.find('>').unwrap() + 1..];
    text[..text.find('<').unwrap()].to_string()
}

async fn audit_events(api: &Api, args: Value) -> Vec<Value> {
    api.call("ListAuditEvents", args)
        .await
        .as_array()
        .unwrap()
        .clone()
}

async fn each_call_that_changes_something_leaves_one_row(backend: Backend) {
    let app = TestApp::start(backend).await;
    let db = ServerDb::open(&app.server).await;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;

    // Reads leave nothing.
    let before = last_id(&db).await;
    alice.call("ListVDCs", json!({})).await;
    alice.call("ListDisks", json!({"vdc_id": vdc})).await;
    alice.call("GetCustomer", json!({})).await;
    alice.call("GetQuota", json!({})).await;
    alice.call("ListAuditEvents", json!({})).await;
    alice.fail("GetDisk", json!({"disk_id": 987654})).await;
    let (status, _) = soap(
        &app,
        &app.alice.email,
        &app.alice.password,
        "<ns1:ListVDCs/>",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(rows_after(&db, before).await, [], "reads leave no row");

    // JSON.
    let disk = alice
        .call(
            "CreateDisk",
            json!({"vdc_id": vdc, "name": "audited", "disk_productoffer_id": DISK_1GB,
                   "image_id": 0}),
        )
        .await;
    let disk_id = id(&disk, "disk_id");
    let row = one_row_after(&db, before).await;
    assert_eq!(row.customer_id, Some(app.alice.customer_id));
    assert_eq!(row.operation, "CreateDisk");
    assert_eq!(row.via, "json");
    assert_eq!(row.address.as_deref(), Some("127.0.0.1"));
    assert_eq!(
        row.ids,
        format!("vdc_id={vdc} disk_productoffer_id={DISK_1GB} disk_id={disk_id}")
    );
    assert_eq!(row.outcome, "OK");
    assert_eq!(row.email, None);

    // SOAP.
    let before = row.id;
    let (status, xml) = soap(
        &app,
        &app.alice.email,
        &app.alice.password,
        "<ns1:CreateVDC><vdc_name>audited over SOAP</vdc_name></ns1:CreateVDC>",
    )
    .await;
    assert_eq!(status, 200, "{xml}");
    let new_vdc = element(&xml, "vdc_id");
    let row = one_row_after(&db, before).await;
    assert_eq!(row.customer_id, Some(app.alice.customer_id));
    assert_eq!(row.operation, "CreateVDC");
    assert_eq!(row.via, "soap");
    assert_eq!(row.address.as_deref(), Some("127.0.0.1"));
    assert_eq!(row.ids, format!("vdc_id={new_vdc}"));
    assert_eq!(row.outcome, "OK");

    // A call that fails leaves its error code, and makes nothing.
    let before = row.id;
    let bobs_vdc = app.bob.vdc_id;
    let err = alice
        .fail(
            "CreateDisk",
            json!({"vdc_id": bobs_vdc, "name": "not mine", "disk_productoffer_id": DISK_1GB,
                   "image_id": 0}),
        )
        .await;
    assert_eq!(err.code, "NOT_FOUND");
    let row = one_row_after(&db, before).await;
    assert_eq!(row.operation, "CreateDisk");
    assert_eq!(row.outcome, "NOT_FOUND");
    assert_eq!(
        row.ids,
        format!("vdc_id={bobs_vdc} disk_productoffer_id={DISK_1GB}")
    );
    let bobs_disks = app
        .bob()
        .call("ListDisks", json!({"vdc_id": bobs_vdc}))
        .await;
    assert_eq!(bobs_disks, json!([]), "the failed call made nothing");

    // So does one whose arguments do not decode, over either adapter.
    let before = row.id;
    let err = alice.fail("DeleteDisk", json!({"disk_id": "seven"})).await;
    assert_eq!(err.code, "INVALID_ARGUMENT");
    let row = one_row_after(&db, before).await;
    assert_eq!(
        (
            row.operation.as_str(),
            row.ids.as_str(),
            row.outcome.as_str()
        ),
        ("DeleteDisk", "", "INVALID_ARGUMENT")
    );
    let before = row.id;
    let (status, _) = soap(
        &app,
        &app.alice.email,
        &app.alice.password,
        &format!("<ns1:DeleteDisk><disk_id>{disk_id}</disk_id></ns1:DeleteDisk>"),
    )
    .await;
    assert_eq!(status, 200);
    let row = one_row_after(&db, before).await;
    assert_eq!(
        (
            row.operation.as_str(),
            row.via.as_str(),
            row.outcome.as_str()
        ),
        ("DeleteDisk", "soap", "OK")
    );
    assert_eq!(row.ids, format!("disk_id={disk_id}"));
}
db_test!(
    each_call_that_changes_something_leaves_one_row,
    each_call_that_changes_something_leaves_one_row
);

async fn secrets_never_reach_the_audit_trail(backend: Backend) {
    const SECRET: &str = "s3cret-Xyzzy";
    let app = TestApp::start(backend).await;
    let db = ServerDb::open(&app.server).await;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    let before = last_id(&db).await;

    // Credentials as arguments and in the URL. (The job fails later: loopback is refused.)
    let fetch = alice
        .call(
            "FetchDisk",
            json!({"url": format!("http://fetch-user:{SECRET}-url@127.0.0.1:9/disk.img"),
                   "conn_user": "fetch-user", "conn_pass": format!("{SECRET}-arg"),
                   "name": format!("named-{SECRET}"), "disk_productoffer_id": DISK_1GB,
                   "vdc_id": vdc, "make_image": false}),
        )
        .await;
    let job_id = id(&fetch, "job_id");
    // Over SOAP, and a call refused at once (its message would name the URL).
    let (status, xml) = soap(
        &app,
        &app.alice.email,
        &app.alice.password,
        &format!(
            "<ns1:FetchDisk><url>ftp://fetch-user:{SECRET}-soap@127.0.0.1:9/disk.img</url>\
             <conn_pass>{SECRET}-soap-arg</conn_pass><name>soap</name>\
             <disk_productoffer_id>{DISK_1GB}</disk_productoffer_id><vdc_id>{vdc}</vdc_id>\
             <make_image>false</make_image></ns1:FetchDisk>"
        ),
    )
    .await;
    assert_eq!(status, 200, "{xml}");
    let err = alice
        .fail(
            "FetchDisk",
            json!({"url": format!("gopher://fetch-user:{SECRET}-refused@example.com/x"),
                   "name": "refused", "disk_productoffer_id": DISK_1GB, "vdc_id": vdc,
                   "make_image": false}),
        )
        .await;
    assert_eq!(err.code, "FETCH_REFUSED");
    // A password given at login.
    let mallory = Api::new(
        &app.server.url,
        &app.alice.email,
        &format!("{SECRET}-login"),
    );
    assert_eq!(
        mallory
            .fail("CreateVDC", json!({"vdc_name": "x"}))
            .await
            .code,
        "UNAUTHENTICATED"
    );
    alice.wait_job(job_id).await;

    let rows = wait_for_rows(&db, before, 4).await;
    let operations: Vec<&str> = rows.iter().map(|r| r.operation.as_str()).collect();
    assert_eq!(
        operations,
        ["FetchDisk", "FetchDisk", "FetchDisk", "Login"],
        "{rows:#?}"
    );
    assert_eq!(
        rows[0].ids,
        format!("disk_productoffer_id={DISK_1GB} vdc_id={vdc} job_id={job_id}")
    );
    assert_eq!(rows[2].outcome, "FETCH_REFUSED");
    for secret in [SECRET, "s3cret", "fetch-user", "named-", "gopher", "ftp:"] {
        assert_eq!(
            rows_holding(&db, secret).await,
            0,
            "the audit trail holds {secret}"
        );
    }
}
db_test!(
    secrets_never_reach_the_audit_trail,
    secrets_never_reach_the_audit_trail
);

async fn failed_logins_are_audited_with_the_email_only(backend: Backend) {
    const WRONG: &str = "WRONG-guess-4711";
    let app = TestApp::start(backend).await;
    let db = ServerDb::open(&app.server).await;
    let before = last_id(&db).await;

    // No credentials at all is no login: no row.
    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/ListVDCs", app.server.url))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    // A wrong password over JSON, an unknown e-mail, and a wrong password over SOAP.
    let err = Api::new(&app.server.url, &app.alice.email, WRONG)
        .fail("ListVDCs", json!({}))
        .await;
    assert_eq!(err.code, "UNAUTHENTICATED");
    let err = Api::new(&app.server.url, "Nobody@Example.com", WRONG)
        .fail("CreateVDC", json!({"vdc_name": "x"}))
        .await;
    assert_eq!(err.code, "UNAUTHENTICATED");
    let (status, _) = soap(&app, &app.bob.email, WRONG, "<ns1:ListVDCs/>").await;
    assert_eq!(status, 401);

    let rows = wait_for_rows(&db, before, 3).await;
    assert_eq!(rows.len(), 3, "one row per failed login: {rows:#?}");
    for row in &rows {
        assert_eq!(row.operation, "Login");
        assert_eq!(row.outcome, "UNAUTHENTICATED");
        assert_eq!(row.address.as_deref(), Some("127.0.0.1"));
        assert_eq!(row.ids, "");
    }
    assert_eq!(rows[0].email.as_deref(), Some(app.alice.email.as_str()));
    assert_eq!(rows[0].customer_id, Some(app.alice.customer_id));
    assert_eq!(rows[0].via, "json");
    assert_eq!(rows[1].email.as_deref(), Some("nobody@example.com"));
    assert_eq!(rows[1].customer_id, None);
    assert_eq!(rows[2].email.as_deref(), Some(app.bob.email.as_str()));
    assert_eq!(rows[2].customer_id, Some(app.bob.customer_id));
    assert_eq!(rows[2].via, "soap");
    assert_eq!(rows_holding(&db, "WRONG-guess").await, 0);

    // The customer whose e-mail was tried sees the attempt.
    let seen = audit_events(&app.alice(), json!({})).await;
    let login = seen
        .iter()
        .find(|e| e["operation"] == "Login")
        .expect("alice sees the failed login");
    assert_eq!(login["email"], app.alice.email);
    assert_eq!(login["customer_uuid"], app.alice.customer_uuid);
    assert_eq!(login["address"], "127.0.0.1");
    assert_eq!(login["outcome"], "UNAUTHENTICATED");
    assert!(!serde_json::to_string(&seen).unwrap().contains(WRONG));
    // A right password after wrong ones works, and leaves no row.
    let after_logins = rows.last().unwrap().id;
    app.alice().call("ListVDCs", json!({})).await;
    assert_eq!(rows_after(&db, after_logins).await, []);
}
db_test!(
    failed_logins_are_audited_with_the_email_only,
    failed_logins_are_audited_with_the_email_only
);

async fn customers_see_their_own_events_and_administrators_everyones(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (admin, admin_api) = app.add_customer("root@example.com", &["--admin"]);
    let alice = app.alice();
    let bob = app.bob();
    alice
        .call(
            "CreateVLAN",
            json!({"vdc_id": app.alice.vdc_id, "vlan_name": "a"}),
        )
        .await;
    alice.fail("DeleteDisk", json!({"disk_id": 987654})).await;
    bob.call("CreateVDC", json!({"vdc_name": "bob's second"}))
        .await;

    let alices = audit_events(&alice, json!({})).await;
    let operations: Vec<&str> = alices
        .iter()
        .map(|e| e["operation"].as_str().unwrap())
        .collect();
    assert_eq!(operations, ["DeleteDisk", "CreateVLAN"], "newest first");
    assert_eq!(alices[0]["outcome"], "NOT_FOUND");
    assert_eq!(alices[0]["ids"], "disk_id=987654");
    assert_eq!(alices[1]["via"], "json");
    assert!(
        alices
            .iter()
            .all(|e| e["customer_uuid"] == app.alice.customer_uuid)
    );
    let time = alices[0]["time"].as_str().unwrap();
    assert!(time.ends_with('Z') && time.starts_with("20"), "{time}");

    let bobs = audit_events(&bob, json!({})).await;
    assert_eq!(bobs.len(), 1);
    assert_eq!(bobs[0]["operation"], "CreateVDC");
    assert_eq!(bobs[0]["customer_uuid"], app.bob.customer_uuid);

    // The administrator sees everyone's, the command line's included; it made none itself.
    let all = audit_events(&admin_api, json!({})).await;
    let summary: Vec<(&str, &str, &str)> = all
        .iter()
        .map(|e| {
            (
                e["operation"].as_str().unwrap(),
                e["via"].as_str().unwrap(),
                e["customer_uuid"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    let (alice_uuid, bob_uuid) = (&app.alice.customer_uuid, &app.bob.customer_uuid);
    assert_eq!(
        summary,
        [
            ("CreateVDC", "json", bob_uuid.as_str()),
            ("DeleteDisk", "json", alice_uuid.as_str()),
            ("CreateVLAN", "json", alice_uuid.as_str()),
            ("customer add", "cli", "-"),
            ("customer add", "cli", "-"),
            ("customer add", "cli", "-"),
        ]
    );
    assert_eq!(
        all[3]["ids"],
        format!("customer_id={} vdc_id={}", admin.customer_id, admin.vdc_id)
    );
    assert!(all[3]["address"].is_null());
    assert!(
        audit_events(&admin_api, json!({})).await.len() == all.len(),
        "listing is no change"
    );
}
db_test!(
    customers_see_their_own_events_and_administrators_everyones,
    customers_see_their_own_events_and_administrators_everyones
);

async fn pages_return_each_event_once(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (_, admin) = app.add_customer("root@example.com", &["--admin"]);
    let alice = app.alice();
    for n in 0..7 {
        alice
            .call(
                "CreateVLAN",
                json!({"vdc_id": app.alice.vdc_id, "vlan_name": format!("v{n}")}),
            )
            .await;
        app.bob()
            .call("CreateVDC", json!({"vdc_name": format!("b{n}")}))
            .await;
    }

    for (api, page_size, expected) in [(&alice, 3, 7), (&alice, 7, 7), (&admin, 4, 17)] {
        let mut seen = Vec::new();
        let mut pages = 0;
        let mut before: Option<i64> = None;
        loop {
            let page =
                audit_events(api, json!({"page_size": page_size, "before_id": before})).await;
            assert!(page.len() <= page_size, "a page of {page_size}");
            if page.is_empty() {
                break;
            }
            pages += 1;
            seen.extend(page.iter().map(|e| id(e, "audit_id")));
            before = Some(id(page.last().unwrap(), "audit_id"));
        }
        assert_eq!(seen.len(), expected, "every event: {seen:?}");
        assert!(
            seen.windows(2).all(|w| w[0] > w[1]),
            "newest first, once each"
        );
        assert_eq!(pages, expected.div_ceil(page_size));
        let unpaged: Vec<i64> = audit_events(api, json!({}))
            .await
            .iter()
            .map(|e| id(e, "audit_id"))
            .collect();
        assert_eq!(unpaged, seen, "the default page holds them all");
    }
    // -1 means not given, as for every optional number.
    let newest = audit_events(&alice, json!({"page_size": 1, "before_id": -1})).await;
    assert_eq!(newest.len(), 1);
    assert_eq!(newest[0]["operation"], "CreateVLAN");

    for (args, argument) in [
        (json!({"page_size": 0}), "page_size"),
        (json!({"page_size": 1001}), "page_size"),
        (json!({"before_id": 0}), "before_id"),
    ] {
        let err = alice.fail("ListAuditEvents", args).await;
        assert_eq!(err.code, "INVALID_ARGUMENT");
        assert!(err.message.contains(argument), "{}", err.message);
    }
    assert_eq!(
        audit_events(&alice, json!({"page_size": 1000})).await.len(),
        7
    );
}
db_test!(pages_return_each_event_once, pages_return_each_event_once);

async fn command_line_changes_are_audited(backend: Backend) {
    let app = TestApp::start(backend).await;
    let db = ServerDb::open(&app.server).await;
    let rows = rows_after(&db, 0).await;
    assert_eq!(rows.len(), 2, "customer add, twice: {rows:#?}");
    for (row, customer) in rows.iter().zip([&app.alice, &app.bob]) {
        assert_eq!(row.operation, "customer add");
        assert_eq!(row.via, "cli");
        assert_eq!(row.address, None);
        assert_eq!(row.customer_id, None, "the operator, not a customer");
        assert_eq!(
            row.ids,
            format!(
                "customer_id={} vdc_id={}",
                customer.customer_id, customer.vdc_id
            )
        );
        assert_eq!(row.outcome, "OK");
    }
    let before = rows[1].id;

    // A command that fails is audited too; a password given to the command never is.
    let out = app.server.cli(&[
        "customer",
        "add",
        "--email",
        &app.alice.email,
        "--password",
        "cli-Pa55word-123",
    ]);
    assert!(!out.status.success());
    app.server.add_billing_entity("Audited Ltd").unwrap();
    app.server.add_billing_entity("Audited Ltd").unwrap_err();
    let out = app.server.cli(&[
        "customer",
        "set-quota",
        "--email",
        &app.bob.email,
        "--servers",
        "3",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let rows = rows_after(&db, before).await;
    let summary: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| (r.operation.as_str(), r.ids.as_str(), r.outcome.as_str()))
        .collect();
    let entity: i64 = sqlx::query_scalar("SELECT id FROM billing_entities WHERE name = $1")
        .bind("Audited Ltd")
        .fetch_one(db.pool())
        .await
        .unwrap();
    let entity_ids = format!("billing_entity_id={entity}");
    let bob_ids = format!("customer_id={}", app.bob.customer_id);
    assert_eq!(
        summary,
        [
            ("customer add", "", "CONFLICT"),
            ("billing-entity add", entity_ids.as_str(), "OK"),
            ("billing-entity add", "", "CONFLICT"),
            ("customer set-quota", bob_ids.as_str(), "OK"),
        ]
    );
    assert!(rows.iter().all(|r| r.via == "cli" && r.address.is_none()));
    assert_eq!(rows_holding(&db, "Pa55word").await, 0);
    let operations: BTreeSet<_> = rows_after(&db, 0)
        .await
        .into_iter()
        .map(|r| r.operation)
        .collect();
    assert!(!operations.contains("Login"));
}
db_test!(
    command_line_changes_are_audited,
    command_line_changes_are_audited
);

/// A command-line command's change commits with its audit row: when the database refuses
/// the row, the command fails and changes nothing (its failure is audited); allowed again,
/// it makes its change with exactly one row naming what it made.
async fn a_command_and_its_row_commit_together(backend: Backend) {
    let app = TestApp::start(backend).await;
    let db = ServerDb::open(&app.server).await;
    let count = |sql: &'static str, name: &str| {
        let pool = db.pool().clone();
        let name = name.to_string();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .bind(name)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let customer_add = |email: &str| {
        app.server.cli(&[
            "customer",
            "add",
            "--email",
            email,
            "--password",
            "cli-Pa55word-123",
        ])
    };
    let set_quota = || {
        app.server.cli(&[
            "customer",
            "set-quota",
            "--email",
            &app.bob.email,
            "--servers",
            "7",
        ])
    };
    let bobs_servers = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM customer_quotas WHERE customer_id = $1 AND \
             quota = 'servers' AND quota_limit = 7",
        )
        .bind(app.bob.customer_id)
        .fetch_one(db.pool())
        .await
        .unwrap()
    };
    for command in ["customer add", "billing-entity add", "customer set-quota"] {
        refuse_ok_rows_of(&db, backend, command).await;
    }
    let before = last_id(&db).await;
    assert!(!customer_add("refused@example.com").status.success());
    assert!(app.server.add_billing_entity("Refused Ltd").is_err());
    assert!(!set_quota().status.success());
    let made = count(
        "SELECT COUNT(*) FROM customers WHERE email = $1",
        "refused@example.com",
    )
    .await;
    assert_eq!(made, 0, "the customer was made without its row");
    let made = count(
        "SELECT COUNT(*) FROM billing_entities WHERE name = $1",
        "Refused Ltd",
    )
    .await;
    assert_eq!(made, 0, "the billing entity was made without its row");
    assert_eq!(bobs_servers().await, 0, "the quota was set without its row");
    let rows = rows_after(&db, before).await;
    let summary: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.operation.as_str(), r.outcome.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("customer add", "INTERNAL_ERROR"),
            ("billing-entity add", "INTERNAL_ERROR"),
            ("customer set-quota", "INTERNAL_ERROR"),
        ]
    );

    for command in ["customer add", "billing-entity add", "customer set-quota"] {
        allow_rows_of(&db, backend, command).await;
    }
    let before = rows.last().unwrap().id;
    let out = customer_add("allowed@example.com");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    app.server.add_billing_entity("Allowed Ltd").unwrap();
    assert!(set_quota().status.success());
    assert_eq!(bobs_servers().await, 1);
    let customer: (i64, i64) = sqlx::query_as(
        "SELECT c.id, v.id FROM customers c JOIN vdcs v ON v.customer_id = c.id \
         WHERE c.email = $1",
    )
    .bind("allowed@example.com")
    .fetch_one(db.pool())
    .await
    .unwrap();
    let entity: i64 = sqlx::query_scalar("SELECT id FROM billing_entities WHERE name = $1")
        .bind("Allowed Ltd")
        .fetch_one(db.pool())
        .await
        .unwrap();
    let rows = rows_after(&db, before).await;
    let summary: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| (r.operation.as_str(), r.ids.as_str(), r.outcome.as_str()))
        .collect();
    let customer_ids = format!("customer_id={} vdc_id={}", customer.0, customer.1);
    let entity_ids = format!("billing_entity_id={entity}");
    let bob_ids = format!("customer_id={}", app.bob.customer_id);
    assert_eq!(
        summary,
        [
            ("customer add", customer_ids.as_str(), "OK"),
            ("billing-entity add", entity_ids.as_str(), "OK"),
            ("customer set-quota", bob_ids.as_str(), "OK"),
        ]
    );
    assert!(
        rows.iter()
            .all(|r| r.via == "cli" && r.customer_id.is_none())
    );
}
db_test!(
    a_command_and_its_row_commit_together,
    a_command_and_its_row_commit_together
);

/// An operation's or command's name as part of an SQL identifier.
fn trigger_name(operation: &str) -> String {
    operation
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Makes the database refuse the row of a successful call of `operation`, as a full disk or a
/// failing audit table would: a trigger that rejects the insert.
async fn refuse_ok_rows_of(db: &ServerDb, backend: Backend, operation: &str) {
    let name = trigger_name(operation);
    let statements = match backend {
        Backend::Sqlite => vec![format!(
            "CREATE TRIGGER refuse_audit_{name} BEFORE INSERT ON audit_events \
             WHEN NEW.operation = '{operation}' AND NEW.outcome = 'OK' \
             BEGIN SELECT RAISE(ABORT, 'the test refuses this audit row'); END"
        )],
        Backend::Postgres => vec![
            format!(
                "CREATE FUNCTION refuse_audit_{name}() RETURNS trigger AS $$ BEGIN \
                 IF NEW.operation = '{operation}' AND NEW.outcome = 'OK' THEN \
                 RAISE EXCEPTION 'the test refuses this audit row'; END IF; \
                 RETURN NEW; END $$ LANGUAGE plpgsql"
            ),
            format!(
                "CREATE TRIGGER refuse_audit_{name} BEFORE INSERT ON audit_events \
                 FOR EACH ROW EXECUTE FUNCTION refuse_audit_{name}()"
            ),
        ],
    };
    for statement in statements {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(db.pool())
            .await
            .unwrap();
    }
}

async fn allow_rows_of(db: &ServerDb, backend: Backend, operation: &str) {
    let name = trigger_name(operation);
    let statement = match backend {
        Backend::Sqlite => format!("DROP TRIGGER refuse_audit_{name}"),
        Backend::Postgres => format!("DROP TRIGGER refuse_audit_{name} ON audit_events"),
    };
    sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
        .execute(db.pool())
        .await
        .unwrap();
}

async fn a_change_and_its_row_commit_together(backend: Backend) {
    let app = TestApp::start(backend).await;
    let db = ServerDb::open(&app.server).await;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;

    // The row of a successful CreateVDC cannot be written: the VDC is not made either, and
    // the caller is told the call failed. Its failure is audited.
    refuse_ok_rows_of(&db, backend, "CreateVDC").await;
    let before = last_id(&db).await;
    let err = alice
        .fail("CreateVDC", json!({"vdc_name": "unaudited"}))
        .await;
    assert_eq!(err.code, "INTERNAL_ERROR", "{err:?}");
    let vdcs = alice.call("ListVDCs", json!({})).await;
    let names: Vec<&str> = vdcs
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["vdc_name"].as_str().unwrap())
        .collect();
    assert!(!names.contains(&"unaudited"), "the VDC was made: {names:?}");
    let unmade: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM vdcs WHERE name = 'unaudited'")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(unmade, 0);
    let row = one_row_after(&db, before).await;
    assert_eq!(
        (row.operation.as_str(), row.outcome.as_str()),
        ("CreateVDC", "INTERNAL_ERROR")
    );

    // A FetchDisk whose row cannot be written queues no job. (Its job would fail later:
    // loopback is refused.)
    refuse_ok_rows_of(&db, backend, "FetchDisk").await;
    let before = row.id;
    let err = alice
        .fail(
            "FetchDisk",
            json!({"url": "http://127.0.0.1:9/disk.img", "name": "unaudited",
                   "disk_productoffer_id": DISK_1GB, "vdc_id": vdc, "make_image": false}),
        )
        .await;
    assert_eq!(err.code, "INTERNAL_ERROR", "{err:?}");
    assert_eq!(alice.call("ListJobs", json!({})).await, json!([]));
    let row = one_row_after(&db, before).await;
    assert_eq!(
        (row.operation.as_str(), row.outcome.as_str()),
        ("FetchDisk", "INTERNAL_ERROR")
    );

    // Allowed again, the same calls make their VDC and job, each with exactly one row that
    // names what it made.
    allow_rows_of(&db, backend, "CreateVDC").await;
    allow_rows_of(&db, backend, "FetchDisk").await;
    let before = row.id;
    let made = alice
        .call("CreateVDC", json!({"vdc_name": "audited"}))
        .await;
    let row = one_row_after(&db, before).await;
    assert_eq!(
        (row.operation.as_str(), row.outcome.as_str()),
        ("CreateVDC", "OK")
    );
    assert_eq!(row.ids, format!("vdc_id={}", id(&made, "vdc_id")));
    let before = row.id;
    let fetch = alice
        .call(
            "FetchDisk",
            json!({"url": "http://127.0.0.1:9/disk.img", "name": "audited",
                   "disk_productoffer_id": DISK_1GB, "vdc_id": vdc, "make_image": false}),
        )
        .await;
    let job_id = id(&fetch, "job_id");
    let row = one_row_after(&db, before).await;
    assert_eq!(
        row.ids,
        format!("disk_productoffer_id={DISK_1GB} vdc_id={vdc} job_id={job_id}")
    );
    assert_eq!(row.outcome, "OK");
    // CancelJob, whose change the job system makes in the call's transaction, too.
    let before = row.id;
    // (The job may have failed already: then the call is a CONFLICT.)
    let outcome = match alice.try_call("CancelJob", json!({"job_id": job_id})).await {
        Ok(_) => "OK".to_string(),
        Err(err) => err.code,
    };
    let row = one_row_after(&db, before).await;
    assert_eq!(
        (row.operation.as_str(), row.outcome.as_str()),
        ("CancelJob", outcome.as_str())
    );
    assert_eq!(row.ids, format!("job_id={job_id}"));
    alice.wait_job(job_id).await;
}
db_test!(
    a_change_and_its_row_commit_together,
    a_change_and_its_row_commit_together
);

/// Operations begin their write transactions through their call (`Ctx::begin_write`), which
/// writes the call's audit row in them; one begun on the database directly would commit a
/// change without its row.
#[test]
fn operations_begin_their_transactions_through_the_call() {
    let mut offenders = Vec::new();
    let mut dirs = vec![std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/ops"
    ))];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for (n, line) in text.lines().enumerate() {
                    if line.contains("ctx.state.db.begin_write") {
                        offenders.push(format!("{}:{}", path.display(), n + 1));
                    }
                }
            }
        }
    }
    assert_eq!(
        offenders,
        Vec::<String>::new(),
        "use ctx.begin_write(), which carries the call's audit row"
    );
}
