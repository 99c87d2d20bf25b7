//! Token authentication (issue 11): GetAuthenticationToken makes a token that works in place of
//! the e-mail and password, as the Basic user name (any password) or a Bearer header, over JSON
//! and SOAP; it stops working when revoked or expired (refused like a wrong password, and
//! counted by the login throttle); customers see and revoke only their own tokens; the audit
//! trail names the token a call was made with; the secret is never stored, logged or audited.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use extility::ops::registry::CURRENT;

use crate::support::server_db::ServerDb;
use crate::support::{Api, Backend, ServerOptions, TestApp, db_test, id};

/// A token's secret, from GetAuthenticationToken's answer.
fn secret(token: &Value) -> String {
    token["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token in {token}"))
        .to_string()
}

/// A client that sends the token as the Basic user name, with `password` (possibly empty).
fn basic_token(app: &TestApp, token: &str, password: &str) -> Api {
    Api::new(&app.server.url, token, password)
}

/// A JSON call with `Authorization: Bearer <token>`: the status and the body.
async fn bearer_call(app: &TestApp, token: &str, op: &str, args: Value) -> (u16, Value) {
    bearer_call_from(app, "127.0.0.1", token, op, args).await
}

async fn bearer_call_from(
    app: &TestApp,
    source: &str,
    token: &str,
    op: &str,
    args: Value,
) -> (u16, Value) {
    let response = reqwest::Client::builder()
        .local_address(source.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
        .post(format!("{}/api/v1/{op}", app.server.url))
        .bearer_auth(token)
        .json(&args)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// How a SOAP call authenticates.
enum Auth<'a> {
    Basic(&'a str, &'a str),
    Bearer(&'a str),
}

/// A SOAP call to the current version (tokens came in version 2): the HTTP status and the
/// response's XML.
async fn soap(app: &TestApp, auth: Auth<'_>, body: &str) -> (u16, String) {
    let envelope = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/"
  xmlns:ns1="http://extility.flexiant.com"><SOAP-ENV:Body>{body}</SOAP-ENV:Body></SOAP-ENV:Envelope>"#
    );
    let request = reqwest::Client::new()
        .post(format!("{}/v{CURRENT}/", app.server.url))
        .header("Content-Type", "text/xml; charset=utf-8")
        .body(envelope);
    let request = match auth {
        Auth::Basic(user, password) => request.basic_auth(user, Some(password)),
        Auth::Bearer(token) => request.bearer_auth(token),
    };
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// The text of the element named exactly `name` (`<name>` or `<name attributes>`).
fn element(xml: &str, name: &str) -> String {
    let start = [format!("<{name}>"), format!("<{name} ")]
        .iter()
        .filter_map(|open| xml.find(open.as_str()))
        .min()
        .unwrap_or_else(|| panic!("no <{name}> in {xml}"));
    let rest = &xml[start..];
    let text = &rest[rest.find('>').unwrap() + 1..];
    text[..text.find('<').unwrap()].to_string()
}

async fn customer_id_of(api: &Api) -> i64 {
    id(&api.call("GetCustomer", json!({})).await, "customer_id")
}

/// A token works in place of the password: as the Basic user name with an empty or any
/// password, and as a Bearer token, over JSON and SOAP; it acts as the customer who made it.
async fn a_token_works_as_basic_user_and_bearer_over_json_and_soap(backend: Backend) {
    let app = TestApp::start(backend).await;
    let alice = app.alice();
    let token = alice
        .call(
            "GetAuthenticationToken",
            json!({"expiry_seconds": 600, "name": "backup script"}),
        )
        .await;
    let t = secret(&token);
    assert!(t.starts_with("ext_") && t.len() > 40, "{t}");
    assert_eq!(token["name"], "backup script");
    assert!(id(&token, "token_id") > 0);
    assert!(token["token_uuid"].as_str().unwrap().len() == 36);
    let created = chrono::DateTime::parse_from_rfc3339(token["created"].as_str().unwrap()).unwrap();
    let expires = chrono::DateTime::parse_from_rfc3339(token["expires"].as_str().unwrap()).unwrap();
    assert_eq!((expires - created).num_seconds(), 600);

    // JSON: Basic with an empty or any password, and Bearer.
    for password in ["", "not-a-password"] {
        let as_token = basic_token(&app, &t, password);
        assert_eq!(customer_id_of(&as_token).await, app.alice.customer_id);
        let vdcs = as_token.call("ListVDCs", json!({})).await;
        assert_eq!(id(&vdcs[0], "vdc_id"), app.alice.vdc_id);
    }
    let (status, customer) = bearer_call(&app, &t, "GetCustomer", json!({})).await;
    assert_eq!(status, 200, "{customer}");
    assert_eq!(id(&customer, "customer_id"), app.alice.customer_id);

    // SOAP: the same.
    for auth in [Auth::Basic(&t, ""), Auth::Basic(&t, "x"), Auth::Bearer(&t)] {
        let (status, xml) = soap(&app, auth, "<ns1:GetCustomer/>").await;
        assert_eq!(status, 200, "{xml}");
        assert_eq!(
            element(&xml, "customer_id"),
            app.alice.customer_id.to_string()
        );
    }

    // A token made over SOAP works over JSON; Bob's token is Bob's.
    let (status, xml) = soap(
        &app,
        Auth::Basic(&app.bob.email, &app.bob.password),
        "<ns1:GetAuthenticationToken><expiry_seconds>300</expiry_seconds>\
         </ns1:GetAuthenticationToken>",
    )
    .await;
    assert_eq!(status, 200, "{xml}");
    let bobs = element(&xml, "token");
    assert!(bobs.starts_with("ext_"), "{xml}");
    assert_eq!(
        customer_id_of(&basic_token(&app, &bobs, "")).await,
        app.bob.customer_id
    );
    assert_ne!(bobs, t);

    // A token may make a token, which expires no later than it.
    let child = basic_token(&app, &t, "")
        .call("GetAuthenticationToken", json!({"expiry_seconds": 3000}))
        .await;
    assert!(
        child["expires"].as_str().unwrap() <= token["expires"].as_str().unwrap(),
        "{child} outlives {token}"
    );
    assert_eq!(
        customer_id_of(&basic_token(&app, &secret(&child), "")).await,
        app.alice.customer_id
    );
}
db_test!(
    a_token_works_as_basic_user_and_bearer_over_json_and_soap,
    a_token_works_as_basic_user_and_bearer_over_json_and_soap
);

/// Revoked and expired tokens are refused with the fault a wrong password gets, over JSON and
/// SOAP, from the next call on; revoking a token revokes the tokens made with it.
async fn revoked_and_expired_tokens_are_refused_like_wrong_passwords(backend: Backend) {
    let app = TestApp::start(backend).await;
    let db = ServerDb::open(&app.server).await;
    let alice = app.alice();
    let wrong_password = app
        .server
        .api(&app.alice.email, "wrong-password")
        .fail("ListVDCs", json!({}))
        .await;
    assert_eq!(wrong_password.status, 401);
    let (_, wrong_password_fault) = soap(
        &app,
        Auth::Basic(&app.alice.email, "wrong-password"),
        "<ns1:ListVDCs/>",
    )
    .await;

    let refused_like_a_wrong_password = |t: String| {
        let app = &app;
        let wrong_password = wrong_password.clone();
        let wrong_password_fault = wrong_password_fault.clone();
        async move {
            let err = basic_token(app, &t, "").fail("ListVDCs", json!({})).await;
            assert_eq!(
                (err.status, err.code.as_str()),
                (401, wrong_password.code.as_str())
            );
            assert_eq!(err.message, wrong_password.message);
            let (status, body) = bearer_call(app, &t, "ListVDCs", json!({})).await;
            assert_eq!(status, 401);
            assert_eq!(body["error"]["code"], wrong_password.code.as_str());
            let (status, xml) = soap(app, Auth::Bearer(&t), "<ns1:ListVDCs/>").await;
            assert_eq!(status, 401, "{xml}");
            assert_eq!(
                element(&xml, "errorCode"),
                element(&wrong_password_fault, "errorCode")
            );
        }
    };

    // Revoked by id: the very next call is refused (nothing is cached past a revocation),
    // after it had worked (and been remembered) a moment before.
    let first = alice.call("GetAuthenticationToken", json!({})).await;
    let first_secret = secret(&first);
    let as_first = basic_token(&app, &first_secret, "");
    as_first.call("ListVDCs", json!({})).await;
    as_first.call("ListVDCs", json!({})).await;
    let revoked = alice
        .call(
            "RevokeAuthenticationToken",
            json!({"token_id": id(&first, "token_id")}),
        )
        .await;
    assert_eq!(revoked["token_id"], first["token_id"]);
    assert!(revoked["revoked"].is_string(), "{revoked}");
    assert!(revoked.get("token").is_none(), "{revoked}");
    refused_like_a_wrong_password(first_secret.clone()).await;
    // Revoking it again changes nothing.
    alice
        .call(
            "RevokeAuthenticationToken",
            json!({"token_id": id(&first, "token_id")}),
        )
        .await;

    // Revoked by the token itself, by a call made with it (a script logging out).
    let second = secret(&alice.call("GetAuthenticationToken", json!({})).await);
    let as_second = basic_token(&app, &second, "");
    as_second
        .call("RevokeAuthenticationToken", json!({"token": second}))
        .await;
    refused_like_a_wrong_password(second).await;

    // Expired: its expiry moved into the past in the database (no waiting).
    let third = alice.call("GetAuthenticationToken", json!({})).await;
    let third_secret = secret(&third);
    basic_token(&app, &third_secret, "")
        .call("ListVDCs", json!({}))
        .await;
    sqlx::query("UPDATE auth_tokens SET expires = $1 WHERE id = $2")
        .bind(chrono::Utc::now().timestamp_millis() - 1)
        .bind(id(&third, "token_id"))
        .execute(db.pool())
        .await
        .unwrap();
    refused_like_a_wrong_password(third_secret).await;

    // A token that never was.
    refused_like_a_wrong_password(format!("ext_{}", "A".repeat(43))).await;

    // Revoking a token revokes the tokens made with it, and theirs.
    let parent = alice.call("GetAuthenticationToken", json!({})).await;
    let child = basic_token(&app, &secret(&parent), "")
        .call("GetAuthenticationToken", json!({}))
        .await;
    let grandchild = basic_token(&app, &secret(&child), "")
        .call("GetAuthenticationToken", json!({}))
        .await;
    let listed = alice.call("ListAuthenticationTokens", json!({})).await;
    let listed_child = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["token_id"] == child["token_id"])
        .unwrap();
    assert_eq!(listed_child["parent_token_id"], parent["token_id"]);
    alice
        .call(
            "RevokeAuthenticationToken",
            json!({"token_id": id(&parent, "token_id")}),
        )
        .await;
    refused_like_a_wrong_password(secret(&child)).await;
    refused_like_a_wrong_password(secret(&grandchild)).await;
    // The password still works, and nothing is left in the list.
    assert_eq!(
        alice.call("ListAuthenticationTokens", json!({})).await,
        json!([])
    );
}
db_test!(
    revoked_and_expired_tokens_are_refused_like_wrong_passwords,
    revoked_and_expired_tokens_are_refused_like_wrong_passwords
);

/// Customers see and revoke only their own tokens, and the list never shows a secret.
async fn tokens_are_private_to_their_customer(backend: Backend) {
    let app = TestApp::start(backend).await;
    let alice = app.alice();
    let bob = app.bob();
    let mine = alice
        .call("GetAuthenticationToken", json!({"name": "mine"}))
        .await;
    let other = alice.call("GetAuthenticationToken", json!({})).await;
    let bobs = bob.call("GetAuthenticationToken", json!({})).await;
    let (mine_secret, other_secret) = (secret(&mine), secret(&other));

    let listed = basic_token(&app, &mine_secret, "")
        .call("ListAuthenticationTokens", json!({}))
        .await;
    let listed = listed.as_array().unwrap();
    let ids: Vec<&Value> = listed.iter().map(|t| &t["token_id"]).collect();
    assert_eq!(ids, [&mine["token_id"], &other["token_id"]]);
    assert_eq!(listed[0]["name"], "mine");
    assert_eq!(listed[0]["current"], true);
    assert_eq!(listed[1]["current"], false);
    assert_eq!(listed[0]["token_uuid"], mine["token_uuid"]);
    assert_eq!(listed[0]["expires"], mine["expires"]);
    assert!(listed[0]["last_used"].is_string(), "used for this call");
    assert!(listed[1]["last_used"].is_null(), "never used");
    let text = serde_json::to_string(listed).unwrap();
    for s in [&mine_secret, &other_secret] {
        assert!(!text.contains(&s[4..]), "the list shows a secret: {text}");
    }
    assert!(listed.iter().all(|t| t.get("token").is_none()));
    // Over SOAP too.
    let (status, xml) = soap(
        &app,
        Auth::Basic(&mine_secret, ""),
        "<ns1:ListAuthenticationTokens/>",
    )
    .await;
    assert_eq!(status, 200, "{xml}");
    assert!(xml.contains(&format!(">{}<", mine["token_uuid"].as_str().unwrap())));
    assert!(!xml.contains(&mine_secret[4..]) && !xml.contains(&other_secret[4..]));

    // Bob sees only his, and cannot revoke Alice's, by id or by the token itself.
    let bobs_list = bob.call("ListAuthenticationTokens", json!({})).await;
    assert_eq!(bobs_list.as_array().unwrap().len(), 1);
    assert_eq!(bobs_list[0]["token_id"], bobs["token_id"]);
    let err = bob
        .fail(
            "RevokeAuthenticationToken",
            json!({"token_id": id(&mine, "token_id")}),
        )
        .await;
    assert_eq!(err.code, "NOT_FOUND");
    let err = bob
        .fail("RevokeAuthenticationToken", json!({"token": mine_secret}))
        .await;
    assert_eq!(err.code, "INVALID_ARGUMENT");
    assert!(!err.message.contains(&mine_secret[4..]), "{}", err.message);
    // Nor with a token of his own.
    let err = basic_token(&app, &secret(&bobs), "")
        .fail(
            "RevokeAuthenticationToken",
            json!({"token_id": id(&other, "token_id")}),
        )
        .await;
    assert_eq!(err.code, "NOT_FOUND");
    // Alice's tokens still work.
    assert_eq!(
        customer_id_of(&basic_token(&app, &mine_secret, "")).await,
        app.alice.customer_id
    );
    assert_eq!(
        customer_id_of(&basic_token(&app, &other_secret, "")).await,
        app.alice.customer_id
    );
    // Naming no token, or two ways at once, is a bad call.
    let err = alice.fail("RevokeAuthenticationToken", json!({})).await;
    assert_eq!(err.code, "MISSING_ARGUMENT");
    let err = alice
        .fail(
            "RevokeAuthenticationToken",
            json!({"token_id": id(&other, "token_id"), "token": other_secret}),
        )
        .await;
    assert_eq!(err.code, "INVALID_ARGUMENT");

    // The database keeps a hash, never the token.
    let db = ServerDb::open(&app.server).await;
    let stored: Vec<(String, String, String)> =
        sqlx::query_as("SELECT uuid, token_hash, name FROM auth_tokens")
            .fetch_all(db.pool())
            .await
            .unwrap();
    assert_eq!(stored.len(), 3);
    for (uuid, hash, name) in stored {
        for s in [&mine_secret, &other_secret] {
            assert!(!format!("{uuid} {hash} {name}").contains(&s[4..]));
        }
        assert_eq!(hash.len(), 64);
    }
}
db_test!(
    tokens_are_private_to_their_customer,
    tokens_are_private_to_their_customer
);

/// The operator bounds lifetimes: a longer one is refused (not shortened), the default stays
/// within the maximum, and a token made with a token expires no later than it.
async fn lifetimes_stay_within_the_operators_maximum(backend: Backend) {
    let app = TestApp::start_with(
        backend,
        ServerOptions {
            args: [
                "--max-token-lifetime",
                "10m",
                "--default-token-lifetime",
                "1h",
            ]
            .iter()
            .map(|a| a.to_string())
            .collect(),
            ..ServerOptions::default()
        },
    )
    .await;
    let alice = app.alice();
    let lifetime = |token: &Value| {
        let at = |field: &str| {
            chrono::DateTime::parse_from_rfc3339(token[field].as_str().unwrap()).unwrap()
        };
        (at("expires") - at("created")).num_seconds()
    };
    // The default (1 h) is more than the maximum (10 min): the maximum.
    let default = alice.call("GetAuthenticationToken", json!({})).await;
    assert_eq!(lifetime(&default), 600);
    let err = alice
        .fail("GetAuthenticationToken", json!({"expiry_seconds": 601}))
        .await;
    assert_eq!(err.code, "INVALID_ARGUMENT");
    assert!(err.message.contains("at most 600"), "{}", err.message);
    for bad in [0, -7] {
        let err = alice
            .fail("GetAuthenticationToken", json!({"expiry_seconds": bad}))
            .await;
        assert_eq!(err.code, "INVALID_ARGUMENT", "{bad}");
    }
    let longest = alice
        .call("GetAuthenticationToken", json!({"expiry_seconds": 600}))
        .await;
    assert_eq!(lifetime(&longest), 600);
    // A token made with a token never outlives it, even asking for the maximum.
    let short = alice
        .call("GetAuthenticationToken", json!({"expiry_seconds": 5}))
        .await;
    let child = basic_token(&app, &secret(&short), "")
        .call("GetAuthenticationToken", json!({"expiry_seconds": 600}))
        .await;
    assert_eq!(child["expires"], short["expires"]);
    assert!(lifetime(&child) <= 5, "{child}");

    // A token older than the maximum is refused, whatever its expiry says (one made before the
    // operator lowered the maximum): made 11 minutes ago, as the database now says.
    let db = ServerDb::open(&app.server).await;
    let old = alice.call("GetAuthenticationToken", json!({})).await;
    let as_old = basic_token(&app, &secret(&old), "");
    as_old.call("ListVDCs", json!({})).await;
    sqlx::query("UPDATE auth_tokens SET created = created - 660000 WHERE id = $1")
        .bind(id(&old, "token_id"))
        .execute(db.pool())
        .await
        .unwrap();
    let err = as_old.fail("ListVDCs", json!({})).await;
    assert_eq!(err.code, "UNAUTHENTICATED");
    let live = alice.call("ListAuthenticationTokens", json!({})).await;
    assert!(
        live.as_array()
            .unwrap()
            .iter()
            .all(|t| t["token_id"] != old["token_id"]),
        "{live}"
    );
}
db_test!(
    lifetimes_stay_within_the_operators_maximum,
    lifetimes_stay_within_the_operators_maximum
);

/// A customer holds at most `--max-tokens-per-customer` live tokens.
async fn a_customer_holds_a_bounded_number_of_tokens(backend: Backend) {
    let app = TestApp::start_with(
        backend,
        ServerOptions {
            args: vec!["--max-tokens-per-customer".into(), "2".into()],
            ..ServerOptions::default()
        },
    )
    .await;
    let alice = app.alice();
    let first = alice.call("GetAuthenticationToken", json!({})).await;
    alice.call("GetAuthenticationToken", json!({})).await;
    let err = alice.fail("GetAuthenticationToken", json!({})).await;
    assert_eq!(err.code, "LIMIT_EXCEEDED", "{}", err.message);
    // Bob is not affected; a revoked token frees its place.
    app.bob().call("GetAuthenticationToken", json!({})).await;
    alice
        .call(
            "RevokeAuthenticationToken",
            json!({"token_id": id(&first, "token_id")}),
        )
        .await;
    alice.call("GetAuthenticationToken", json!({})).await;
}
db_test!(
    a_customer_holds_a_bounded_number_of_tokens,
    a_customer_holds_a_bounded_number_of_tokens
);

/// The audit trail names the token a call was made with (and a revoked token sent to log in),
/// and neither it, the database's audit rows nor the server's log ever hold the secret.
async fn the_audit_trail_names_the_token_and_never_holds_it(backend: Backend) {
    let app = TestApp::start(backend).await;
    let db = ServerDb::open(&app.server).await;
    let alice = app.alice();
    let token = alice.call("GetAuthenticationToken", json!({})).await;
    let (token_id, t) = (id(&token, "token_id"), secret(&token));
    let as_token = basic_token(&app, &t, "");

    as_token
        .call("CreateVDC", json!({"vdc_name": "made with a token"}))
        .await;
    let (status, xml) = soap(
        &app,
        Auth::Bearer(&t),
        "<ns1:CreateVDC><vdc_name>over SOAP with a token</vdc_name></ns1:CreateVDC>",
    )
    .await;
    assert_eq!(status, 200, "{xml}");
    alice
        .call("CreateVDC", json!({"vdc_name": "made with the password"}))
        .await;
    let child = as_token.call("GetAuthenticationToken", json!({})).await;
    as_token
        .call(
            "RevokeAuthenticationToken",
            json!({"token_id": id(&child, "token_id")}),
        )
        .await;
    // A call with the revoked child: a failed login naming it, Alice's.
    let err = basic_token(&app, &secret(&child), "")
        .fail("ListVDCs", json!({}))
        .await;
    assert_eq!(err.code, "UNAUTHENTICATED");
    // And one with a token that never was: a failed login of nobody.
    let err = basic_token(&app, "ext_nothing-of-the-sort", "")
        .fail("ListVDCs", json!({}))
        .await;
    assert_eq!(err.code, "UNAUTHENTICATED");

    type Row = (
        String,
        String,
        Option<i64>,
        Option<i64>,
        String,
        String,
        Option<String>,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let rows: Vec<Row> = loop {
        // Failed logins are written in the background: wait for both.
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT operation, via, customer_id, token_id, ids, outcome, email \
             FROM audit_events ORDER BY id",
        )
        .fetch_all(db.pool())
        .await
        .unwrap();
        if rows.iter().filter(|r| r.0 == "Login").count() >= 2 {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "failed logins never came: {rows:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let alice_id = Some(app.alice.customer_id);
    let child_id = id(&child, "token_id");
    let calls: Vec<_> = rows
        .iter()
        .filter(|r| r.0 != "customer add")
        .map(|r| {
            (
                r.0.as_str(),
                r.1.as_str(),
                r.2,
                r.3,
                r.4.as_str(),
                r.5.as_str(),
            )
        })
        .collect();
    let vdc_ids: Vec<&str> = calls
        .iter()
        .filter(|c| c.0 == "CreateVDC")
        .map(|c| c.4)
        .collect();
    assert_eq!(
        calls,
        [
            (
                "GetAuthenticationToken",
                "json",
                alice_id,
                None,
                format!("token_id={token_id}").as_str(),
                "OK"
            ),
            (
                "CreateVDC",
                "json",
                alice_id,
                Some(token_id),
                vdc_ids[0],
                "OK"
            ),
            (
                "CreateVDC",
                "soap",
                alice_id,
                Some(token_id),
                vdc_ids[1],
                "OK"
            ),
            ("CreateVDC", "json", alice_id, None, vdc_ids[2], "OK"),
            (
                "GetAuthenticationToken",
                "json",
                alice_id,
                Some(token_id),
                format!("token_id={child_id}").as_str(),
                "OK"
            ),
            (
                "RevokeAuthenticationToken",
                "json",
                alice_id,
                Some(token_id),
                format!("token_id={child_id}").as_str(),
                "OK"
            ),
            (
                "Login",
                "json",
                alice_id,
                Some(child_id),
                "",
                "UNAUTHENTICATED"
            ),
            ("Login", "json", None, None, "", "UNAUTHENTICATED"),
        ]
    );
    assert!(rows.iter().all(|r| r.6.is_none() || r.0 == "customer add"));

    // ListAuditEvents shows the token too.
    let events = alice.call("ListAuditEvents", json!({"page_size": 3})).await;
    assert_eq!(events[0]["operation"], "Login");
    assert_eq!(events[0]["token_id"], child_id);
    assert_eq!(events[1]["operation"], "RevokeAuthenticationToken");
    assert_eq!(events[1]["token_id"], token_id);

    // No secret anywhere: audit rows, the server's log.
    let everything: Vec<String> = sqlx::query_scalar(
        "SELECT COALESCE(email, '') || ' ' || operation || ' ' || ids || ' ' || outcome \
         FROM audit_events",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    let log = app.server.log_text();
    for s in [&t, &secret(&child)] {
        assert!(
            !everything.iter().any(|row| row.contains(&s[4..])),
            "{everything:?}"
        );
        assert!(!log.contains(&s[4..]), "the log holds a token:\n{log}");
    }
}
db_test!(
    the_audit_trail_names_the_token_and_never_holds_it,
    the_audit_trail_names_the_token_and_never_holds_it
);

/// Tokens that are not right count as failed logins of the address: past its limit the
/// address is answered 429 (bad tokens and passwords alike), while a live token still works
/// from there, and other addresses are not affected.
async fn bad_tokens_count_towards_login_throttling(backend: Backend) {
    let app = TestApp::start_with(
        backend,
        ServerOptions {
            args: vec!["--login-failures-per-address".into(), "3".into()],
            ..ServerOptions::default()
        },
    )
    .await;
    let token = secret(&app.alice().call("GetAuthenticationToken", json!({})).await);
    let revoked = app.alice().call("GetAuthenticationToken", json!({})).await;
    app.alice()
        .call(
            "RevokeAuthenticationToken",
            json!({"token_id": id(&revoked, "token_id")}),
        )
        .await;
    let attacker = "127.0.0.7";
    for bad in [
        "ext_guess-one".to_string(),
        "not-even-prefixed".to_string(),
        secret(&revoked),
    ] {
        let (status, body) = bearer_call_from(&app, attacker, &bad, "ListVDCs", json!({})).await;
        assert_eq!(status, 401, "{body}");
    }
    let (status, body) =
        bearer_call_from(&app, attacker, "ext_guess-four", "ListVDCs", json!({})).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "TOO_MANY_LOGIN_ATTEMPTS");
    // The address is refused for passwords too: the failures were its.
    let response = reqwest::Client::builder()
        .local_address(attacker.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
        .post(format!("{}/api/v1/ListVDCs", app.server.url))
        .basic_auth(&app.bob.email, Some(&app.bob.password))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    // A live token proves itself: it works even from there, as from anywhere else.
    let (status, body) = bearer_call_from(&app, attacker, &token, "ListVDCs", json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) =
        bearer_call_from(&app, "127.0.0.8", "ext_guess", "ListVDCs", json!({})).await;
    assert_eq!(status, 401, "another address is not throttled: {body}");
}
db_test!(
    bad_tokens_count_towards_login_throttling,
    bad_tokens_count_towards_login_throttling
);
