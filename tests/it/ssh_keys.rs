//! SSH keys (issue 12): CreateSSHKey, ListSSHKeys, DeleteSSHKey, and the keys given to a
//! server at creation; keys made by `ssh-keygen` of each type, the refusals, and isolation
//! between customers; on SQLite and PostgreSQL.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::support::catalogue::{BLANK_IMAGE, DISK_1GB, SERVER_1CPU_512MB};
use crate::support::{Api, Backend, TestApp, db_test};

/// A public key made by `ssh-keygen` (package openssh-client), with `comment`.
fn keygen(dir: &Path, args: &[&str], comment: &str) -> String {
    let private = keygen_files(dir, args, comment);
    std::fs::read_to_string(private.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string()
}

/// The private key file of a key pair made by `ssh-keygen` (the public one is beside it).
fn keygen_files(dir: &Path, args: &[&str], comment: &str) -> std::path::PathBuf {
    let file = dir.join(format!("key-{}", rand_suffix()));
    let out = Command::new("ssh-keygen")
        .args(["-q", "-N", "", "-C", comment, "-f"])
        .arg(&file)
        .args(args)
        .output()
        .expect("running ssh-keygen (install openssh-client)");
    assert!(
        out.status.success(),
        "ssh-keygen {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    file
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed).to_string()
}

/// The fingerprint `ssh-keygen -l` prints for a public key.
fn ssh_keygen_fingerprint(dir: &Path, public_key: &str) -> String {
    let file = dir.join(format!("print-{}.pub", rand_suffix()));
    std::fs::write(&file, public_key).unwrap();
    let out = Command::new("ssh-keygen")
        .args(["-l", "-E", "sha256", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string()
}

async fn create_key(api: &Api, name: &str, key: &str) -> Value {
    api.call("CreateSSHKey", json!({"name": name, "public_key": key}))
        .await
}

async fn create_server(
    api: &Api,
    vdc: i64,
    name: &str,
    keys: Value,
) -> Result<Value, crate::support::ApiError> {
    api.try_call(
        "CreateServer",
        json!({"vdc_id": vdc, "vlan_id": -1, "server_name": name, "image_id": BLANK_IMAGE,
               "server_productoffer_id": SERVER_1CPU_512MB, "disk_productoffer_ids": [DISK_1GB],
               "ssh_key_ids": keys}),
    )
    .await
}

db_test!(
    keys_of_every_supported_type_are_stored_with_their_fingerprints,
    every_supported_type
);
async fn every_supported_type(backend: Backend) {
    let app = TestApp::start(backend).await;
    let alice = app.alice();
    let dir = app.dir.path();
    for (name, args, key_type) in [
        ("ed25519", &["-t", "ed25519"][..], "ssh-ed25519"),
        (
            "ecdsa 256",
            &["-t", "ecdsa", "-b", "256"],
            "ecdsa-sha2-nistp256",
        ),
        (
            "ecdsa 384",
            &["-t", "ecdsa", "-b", "384"],
            "ecdsa-sha2-nistp384",
        ),
        (
            "ecdsa 521",
            &["-t", "ecdsa", "-b", "521"],
            "ecdsa-sha2-nistp521",
        ),
        ("rsa 3072", &["-t", "rsa", "-b", "3072"], "ssh-rsa"),
    ] {
        let text = keygen(dir, args, &format!("alice@{}", name.replace(' ', "-")));
        let key = create_key(&alice, name, &format!("  {text}\n")).await;
        assert_eq!(key["key_type"], key_type, "{key}");
        assert_eq!(key["public_key"], text, "stored as OpenSSH writes it");
        assert_eq!(
            key["fingerprint"],
            ssh_keygen_fingerprint(dir, &text),
            "the fingerprint ssh-keygen -l prints"
        );
    }
    let listed = alice.call("ListSSHKeys", json!({})).await;
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["ed25519", "ecdsa 256", "ecdsa 384", "ecdsa 521", "rsa 3072"]
    );
    assert_eq!(
        app.bob().call("ListSSHKeys", json!({})).await,
        json!([]),
        "another customer sees none of them"
    );
}

db_test!(weak_malformed_and_repeated_keys_are_refused, refusals);
async fn refusals(backend: Backend) {
    let app = TestApp::start(backend).await;
    let alice = app.alice();
    let dir = app.dir.path();
    let short_rsa = keygen(dir, &["-t", "rsa", "-b", "1024"], "old");
    // Not one line: refused before it is parsed.
    let private =
        std::fs::read_to_string(keygen_files(dir, &["-t", "ed25519"], "private")).unwrap();
    let private_line = private.lines().next().unwrap().to_string();
    let ed25519 = keygen(dir, &["-t", "ed25519"], "alice@laptop");
    for (key, says) in [
        (short_rsa.as_str(), "1024 bits"),
        (private.as_str(), "one line"),
        (private_line.as_str(), "private key"),
        (
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA",
            "not an OpenSSH public key",
        ),
        ("hello world", "not an OpenSSH public key"),
        (&format!("{ed25519}\n{ed25519}"), "one line"),
        (
            &format!("command=\"/bin/sh\" {ed25519}"),
            "not an OpenSSH public key",
        ),
        ("", "empty"),
    ] {
        let err = alice
            .fail("CreateSSHKey", json!({"name": "bad", "public_key": key}))
            .await;
        assert_eq!(err.code, "INVALID_ARGUMENT", "{key}: {err:?}");
        assert!(err.message.contains(says), "{key}: {err:?}");
    }
    let huge = format!("ssh-rsa {}", "A".repeat(9000));
    let err = alice
        .fail("CreateSSHKey", json!({"name": "huge", "public_key": huge}))
        .await;
    assert_eq!(err.code, "INVALID_ARGUMENT", "{err:?}");

    create_key(&alice, "laptop", &ed25519).await;
    let again = alice
        .fail(
            "CreateSSHKey",
            json!({"name": "other name", "public_key": ed25519}),
        )
        .await;
    assert_eq!(again.code, "CONFLICT");
    assert!(again.message.contains("'laptop'"), "{again:?}");
    let other = keygen(dir, &["-t", "ed25519"], "x");
    let same_name = alice
        .fail(
            "CreateSSHKey",
            json!({"name": "laptop", "public_key": other}),
        )
        .await;
    assert_eq!(same_name.code, "CONFLICT");
    // Another customer may store the same key under the same name.
    create_key(&app.bob(), "laptop", &ed25519).await;
    assert_eq!(
        alice
            .call("ListSSHKeys", json!({}))
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

db_test!(a_customer_holds_at_most_a_hundred_keys, at_most_a_hundred);
async fn at_most_a_hundred(backend: Backend) {
    let app = TestApp::start(backend).await;
    let alice = app.alice();
    let dir = app.dir.path();
    for n in 0..100 {
        let key = keygen(dir, &["-t", "ed25519"], "k");
        create_key(&alice, &format!("key {n}"), &key).await;
    }
    let key = keygen(dir, &["-t", "ed25519"], "k");
    let err = alice
        .fail(
            "CreateSSHKey",
            json!({"name": "one more", "public_key": key}),
        )
        .await;
    assert_eq!(err.code, "LIMIT_EXCEEDED", "{err:?}");
}

db_test!(
    servers_get_their_owners_keys_and_lose_deleted_ones,
    servers_keys
);
async fn servers_keys(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (alice, bob) = (app.alice(), app.bob());
    let vdc = app.alice.vdc_id;
    let dir = app.dir.path();
    let laptop = create_key(&alice, "laptop", &keygen(dir, &["-t", "ed25519"], "a")).await;
    let desktop = create_key(&alice, "desktop", &keygen(dir, &["-t", "ed25519"], "b")).await;
    let bobs = create_key(&bob, "bob's", &keygen(dir, &["-t", "ed25519"], "c")).await;
    let (laptop, desktop, bobs) = (
        laptop["ssh_key_id"].as_i64().unwrap(),
        desktop["ssh_key_id"].as_i64().unwrap(),
        bobs["ssh_key_id"].as_i64().unwrap(),
    );

    // Appendix 1's call, without the argument: no keys.
    let plain = create_server(&alice, vdc, "plain", Value::Null)
        .await
        .unwrap();
    assert_eq!(plain["ssh_key_ids"], json!([]));
    // Repeats count once.
    let keyed = create_server(&alice, vdc, "keyed", json!([desktop, laptop, desktop]))
        .await
        .unwrap();
    let keyed_id = keyed["server_id"].as_i64().unwrap();
    assert_eq!(keyed["ssh_key_ids"], json!([laptop, desktop]));

    // Another customer's key answers like a missing one, and nothing is made.
    let servers_before = alice.call("ListServers", json!({"vdc_id": vdc})).await;
    let disks_before = alice.call("ListDisks", json!({"vdc_id": vdc})).await;
    for keys in [json!([laptop, bobs]), json!([999_999])] {
        let err = create_server(&alice, vdc, "stolen", keys)
            .await
            .unwrap_err();
        assert_eq!(err.code, "NOT_FOUND", "{err:?}");
    }
    assert_eq!(
        alice.call("ListServers", json!({"vdc_id": vdc})).await,
        servers_before
    );
    assert_eq!(
        alice.call("ListDisks", json!({"vdc_id": vdc})).await,
        disks_before
    );
    let too_many: Vec<i64> = (1..=33).collect();
    let err = create_server(&alice, vdc, "many", json!(too_many))
        .await
        .unwrap_err();
    assert_eq!(err.code, "INVALID_ARGUMENT", "{err:?}");

    // Bob can neither delete nor see Alice's key.
    let err = bob
        .fail("DeleteSSHKey", json!({"ssh_key_id": laptop}))
        .await;
    assert_eq!(err.code, "NOT_FOUND");
    // Deleting a key takes it out of the servers that had it.
    alice
        .call("DeleteSSHKey", json!({"ssh_key_id": laptop}))
        .await;
    let after = alice
        .call("GetServer", json!({"server_id": keyed_id}))
        .await;
    assert_eq!(after["ssh_key_ids"], json!([desktop]));
    let listed = alice.call("ListServers", json!({"vdc_id": vdc})).await;
    let listed_keyed = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["server_id"] == keyed_id)
        .unwrap();
    assert_eq!(listed_keyed["ssh_key_ids"], json!([desktop]));
    let err = alice
        .fail("DeleteSSHKey", json!({"ssh_key_id": laptop}))
        .await;
    assert_eq!(err.code, "NOT_FOUND");

    // A destroyed server forgets its keys, and the key can then go too.
    let job = alice
        .call("DestroyServer", json!({"server_id": keyed_id}))
        .await;
    alice.job_ok(job["job_id"].as_i64().unwrap()).await;
    alice
        .call("DeleteSSHKey", json!({"ssh_key_id": desktop}))
        .await;
    assert_eq!(alice.call("ListSSHKeys", json!({})).await, json!([]));
}
