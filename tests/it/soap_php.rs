//! The API from a real PHP SoapClient, on SQLite and PostgreSQL: every operation of the current
//! version. (The first release's scripts run against version 1: tests/php/appendix1*.php,
//! image_path.php.)

use extility::ops::registry::CURRENT;

use crate::support::{Backend, TestApp, db_test, run_php};

async fn every_operation_from_php(backend: Backend) {
    let app = TestApp::start(backend).await;
    let wsdl = format!("{}/v{CURRENT}/?wsdl", app.server.url);
    let out = run_php(
        "api_core.php",
        &[
            ("EXTILITY_WSDL", &wsdl),
            ("ALICE_EMAIL", &app.alice.email),
            ("ALICE_PASSWORD", &app.alice.password),
            ("BOB_EMAIL", &app.bob.email),
            ("BOB_PASSWORD", &app.bob.password),
        ],
    );
    assert!(out.contains("all done"), "{out}");
}
db_test!(every_operation_from_php, every_operation_from_php);
