//! Python zeep loads the WSDL (with no internet access) and calls every operation.

use std::process::Command;

use crate::support::{Backend, TestApp, db_test};

async fn every_operation_from_zeep(backend: Backend) {
    let app = TestApp::start(backend).await;
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/zeep_client.py");
    let out = Command::new("python3")
        .arg(script)
        .env("EXTILITY_WSDL", format!("{}/?wsdl", app.server.url))
        .env("ALICE_EMAIL", &app.alice.email)
        .env("ALICE_PASSWORD", &app.alice.password)
        .output()
        .expect("running python3 (scripts/test.sh installs zeep)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("all done"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
db_test!(every_operation_from_zeep, every_operation_from_zeep);
