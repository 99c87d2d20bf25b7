//! Python zeep loads the WSDL (with no internet access) and calls the API: a script written for
//! the first release against version 1 (`/?wsdl`), then every operation of the current version
//! (`/v2/?wsdl`), on one server.

use std::process::Command;

use extility::ops::registry::CURRENT;

use crate::support::{Backend, Customer, TestApp, db_test};

/// Runs a script from tests/python as `customer` (its ALICE_EMAIL and ALICE_PASSWORD).
fn run_zeep(app: &TestApp, script: &str, customer: &Customer) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let out = Command::new("python3")
        .arg(&script)
        .env("EXTILITY_WSDL", format!("{}/?wsdl", app.server.url))
        .env(
            "EXTILITY_WSDL_CURRENT",
            format!("{}/v{CURRENT}/?wsdl", app.server.url),
        )
        .env("ALICE_EMAIL", &customer.email)
        .env("ALICE_PASSWORD", &customer.password)
        .output()
        .expect("running python3 (scripts/test.sh installs zeep)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("all done"),
        "{}:\n{stdout}\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn every_operation_from_zeep(backend: Backend) {
    let app = TestApp::start(backend).await;
    // Bob's account for the first release's script: the other one counts what alice has.
    run_zeep(&app, "zeep_first_release.py", &app.bob);
    run_zeep(&app, "zeep_client.py", &app.alice);
}
db_test!(every_operation_from_zeep, every_operation_from_zeep);
