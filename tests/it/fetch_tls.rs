//! FetchDisk over TLS: https from a server in this process and ftps from a real FTP server
//! (pyftpdlib), both with certificates from a CA made by the test, trusted only through
//! `--fetch-ca-file`; on SQLite and PostgreSQL.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::fetch_disk::{
    allowing, assert_thin_disk_holds, disks, fetch, fetch_args, gzip_two_members, md5_hex,
    sparse_image,
};
use crate::support::ftp_server::FtpServer;
use crate::support::image_server::{ImageServer, Served};
use crate::support::tls::{ServerIdentity, TestCa};
use crate::support::{Backend, MIB, ServerOptions, TestApp, binary, db_test, files_in};

/// A CA nobody trusts, a certificate it signed for 127.0.0.1 and localhost, and the CA's PEM
/// file (in a folder of its own, which lives as long as this).
struct Certificates {
    identity: ServerIdentity,
    ca_file: PathBuf,
    dir: tempfile::TempDir,
}

fn certificates() -> Certificates {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Extility test CA");
    let identity = ca.issue(&["127.0.0.1", "localhost"]);
    let ca_file = ca.write_pem(dir.path(), "private-ca.pem");
    Certificates {
        identity,
        ca_file,
        dir,
    }
}

/// Loopback allowed, and the test's CA trusted.
fn trusting(ca_file: &Path) -> ServerOptions {
    let mut options = allowing("127.0.0.0/8");
    options
        .args
        .extend(["--fetch-ca-file".into(), ca_file.display().to_string()]);
    options
}

/// The job failed on the server's certificate, at once, and left nothing behind.
async fn assert_refused_certificate(app: &TestApp, job_id: i64) {
    let alice = app.alice();
    let (code, message) = alice.job_fails(job_id).await;
    assert_eq!(code, "FETCH_FAILED", "{message}");
    assert!(message.contains("certificate"), "{message}");
    assert!(
        !message.contains("retries"),
        "a certificate error is not retried: {message}"
    );
    assert!(disks(&alice, app.alice.vdc_id).await.is_empty());
    let data = &app.server.data_dir;
    assert!(files_in(&data.join("staging")).is_empty());
    assert!(files_in(&data.join("volumes")).is_empty());
}

async fn https_with_the_ca_file_makes_the_disk(backend: Backend) {
    let certs = certificates();
    let app = TestApp::start_with(backend, trusting(&certs.ca_file)).await;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    let https = ImageServer::start_tls_on("127.0.0.1:0", &certs.identity).await;
    let (image, blocks) = sparse_image(3 * MIB + 100, 4, 29);
    https.put_data("images/disk.img.gz", gzip_two_members(&image));
    let url = https.url("images/disk.img.gz");
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    let mut args = fetch_args(&url, vdc, "over-https");
    args["checksum"] = json!(md5_hex(&image));
    let job = alice.job_ok(fetch(&alice, args).await).await;
    let disk = alice
        .call("GetDisk", json!({"disk_id": job["item_id"]}))
        .await;
    assert_thin_disk_holds(&app, &disk, &image, blocks).await;

    // Basic credentials, sent over TLS.
    https.put(
        "private/disk.img",
        Served {
            data: image.clone().into(),
            auth: Some(("fetcher".into(), "tls-s3cret".into())),
            ..Default::default()
        },
    );
    let url = https.url("private/disk.img");
    let (code, message) = alice
        .job_fails(fetch(&alice, fetch_args(&url, vdc, "no-credentials")).await)
        .await;
    assert_eq!(code, "FETCH_FAILED");
    assert!(message.contains("401"), "{message}");
    let mut args = fetch_args(&url, vdc, "with-credentials");
    args["conn_user"] = json!("fetcher");
    args["conn_pass"] = json!("tls-s3cret");
    args["checksum"] = json!(md5_hex(&image));
    let job = alice.job_ok(fetch(&alice, args).await).await;
    let disk = alice
        .call("GetDisk", json!({"disk_id": job["item_id"]}))
        .await;
    assert_thin_disk_holds(&app, &disk, &image, blocks).await;
    assert_eq!(disks(&alice, vdc).await.len(), 2);

    // A trusted CA does not make a certificate good for another name: 127.0.0.2 is not
    // among the certificate's names.
    let elsewhere = ImageServer::start_tls_on("127.0.0.2:0", &certs.identity).await;
    elsewhere.put_data("disk.img", image.clone());
    let job_id = fetch(
        &alice,
        fetch_args(&elsewhere.url("disk.img"), vdc, "wrong-name"),
    )
    .await;
    let (code, message) = alice.job_fails(job_id).await;
    assert_eq!(code, "FETCH_FAILED");
    assert!(message.contains("certificate"), "{message}");
    assert!(message.contains("127.0.0.2"), "{message}");
    assert!(elsewhere.seen().is_empty(), "no request went unverified");
    assert_eq!(disks(&alice, vdc).await.len(), 2);
}
db_test!(
    https_with_the_ca_file_makes_the_disk,
    https_with_the_ca_file_makes_the_disk
);

async fn a_redirect_from_http_to_https_is_followed(backend: Backend) {
    let certs = certificates();
    let app = TestApp::start_with(backend, trusting(&certs.ca_file)).await;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    let http = ImageServer::start().await;
    let https = ImageServer::start_tls_on("127.0.0.1:0", &certs.identity).await;
    let (image, blocks) = sparse_image(2 * MIB + 4096, 3, 31);
    https.put_data("disk.img", image.clone());
    // Same host, another scheme and port.
    http.redirect("disk.img", &https.url("disk.img"));

    let mut args = fetch_args(&http.url("disk.img"), vdc, "upgraded");
    args["conn_user"] = json!("u");
    args["conn_pass"] = json!("p");
    args["checksum"] = json!(md5_hex(&image));
    let job = alice.job_ok(fetch(&alice, args).await).await;
    let disk = alice
        .call("GetDisk", json!({"disk_id": job["item_id"]}))
        .await;
    assert_thin_disk_holds(&app, &disk, &image, blocks).await;
    let asked = https.seen();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(
        asked[0].authorization, None,
        "https on another port is another origin: credentials stay behind"
    );
}
db_test!(
    a_redirect_from_http_to_https_is_followed,
    a_redirect_from_http_to_https_is_followed
);

/// Serves `image` gzip'd as `pub/disk.img.gz` over FTPS to ftpuser / ftps-s3cret.
fn ftps_server(dir: &Path, identity: &ServerIdentity, image: &[u8]) -> FtpServer {
    let root = dir.join("ftp-root");
    std::fs::create_dir_all(root.join("pub")).unwrap();
    std::fs::write(root.join("pub/disk.img.gz"), gzip_two_members(image)).unwrap();
    let (cert, key) = identity.write_pem(dir);
    FtpServer::start_tls(&root, "ftpuser", "ftps-s3cret", &cert, &key)
}

async fn ftps_with_the_ca_file_makes_the_disk(backend: Backend) {
    let certs = certificates();
    // The CA through the environment this time.
    let mut options = allowing("127.0.0.0/8");
    options.env.push((
        "EXTILITY_FETCH_CA_FILE".into(),
        certs.ca_file.display().to_string(),
    ));
    let app = TestApp::start_with(backend, options).await;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    let (image, blocks) = sparse_image(2 * MIB + 512, 4, 37);
    let ftps = ftps_server(certs.dir.path(), &certs.identity, &image);
    let url = ftps.url("pub/disk.img.gz");
    assert!(url.starts_with("ftps://"), "{url}");

    let mut args = fetch_args(&url, vdc, "over-ftps");
    args["conn_user"] = json!("ftpuser");
    args["conn_pass"] = json!("ftps-s3cret");
    args["checksum"] = json!(md5_hex(&image));
    let job = alice.job_ok(fetch(&alice, args).await).await;
    let disk = alice
        .call("GetDisk", json!({"disk_id": job["item_id"]}))
        .await;
    assert_thin_disk_holds(&app, &disk, &image, blocks).await;

    let mut args = fetch_args(&url, vdc, "wrong-password");
    args["conn_user"] = json!("ftpuser");
    args["conn_pass"] = json!("not-it");
    let (code, message) = alice.job_fails(fetch(&alice, args).await).await;
    assert_eq!(code, "FETCH_FAILED");
    assert!(message.contains("login"), "{message}");
    assert_eq!(disks(&alice, vdc).await.len(), 1);
}
db_test!(
    ftps_with_the_ca_file_makes_the_disk,
    ftps_with_the_ca_file_makes_the_disk
);

async fn without_the_ca_file_https_and_ftps_fail_on_the_certificate(backend: Backend) {
    let certs = certificates();
    let app = TestApp::start_with(backend, allowing("127.0.0.0/8")).await;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    let (image, _) = sparse_image(MIB, 2, 41);

    let https = ImageServer::start_tls_on("127.0.0.1:0", &certs.identity).await;
    https.put_data("disk.img", image.clone());
    let job_id = fetch(&alice, fetch_args(&https.url("disk.img"), vdc, "https")).await;
    assert_refused_certificate(&app, job_id).await;
    assert!(https.seen().is_empty(), "no request went unverified");

    let ftps = ftps_server(certs.dir.path(), &certs.identity, &image);
    let mut args = fetch_args(&ftps.url("pub/disk.img.gz"), vdc, "ftps");
    args["conn_user"] = json!("ftpuser");
    args["conn_pass"] = json!("ftps-s3cret");
    assert_refused_certificate(&app, fetch(&alice, args).await).await;
    assert!(
        !app.server.log_text().contains("ftps-s3cret"),
        "the password is not logged"
    );
}
db_test!(
    without_the_ca_file_https_and_ftps_fail_on_the_certificate,
    without_the_ca_file_https_and_ftps_fail_on_the_certificate
);

/// Runs `extility serve` with these extra arguments and environment, expecting it to refuse
/// to start; returns what it printed on stderr.
fn serve_refuses(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut child = Command::new(binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(args)
        .envs(env.iter().copied())
        .env_remove("DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("extility serve started despite {args:?} {env:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    stderr
}

/// The server stops on a CA file it cannot use before it opens its database, so this test
/// needs none.
#[test]
fn a_bad_ca_file_stops_the_server_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let missing = dir.path().join("missing-ca.pem");
    let stderr = serve_refuses(
        &data_dir,
        &["--fetch-ca-file", missing.to_str().unwrap()],
        &[],
    );
    assert!(stderr.contains("--fetch-ca-file"), "{stderr}");
    assert!(stderr.contains("missing-ca.pem"), "{stderr}");
    assert!(stderr.contains("cannot read"), "{stderr}");

    let not_pem = dir.path().join("not-a-ca.pem");
    std::fs::write(&not_pem, "this is not a certificate\n").unwrap();
    let stderr = serve_refuses(
        &data_dir,
        &[],
        &[("EXTILITY_FETCH_CA_FILE", not_pem.to_str().unwrap())],
    );
    assert!(stderr.contains("not-a-ca.pem"), "{stderr}");
    assert!(stderr.contains("no PEM certificate"), "{stderr}");
    assert!(
        !data_dir.exists(),
        "the server stopped before making anything"
    );
}
