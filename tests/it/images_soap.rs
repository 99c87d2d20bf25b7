//! The image path over SOAP from PHP's SoapClient (tests/php/image_path.php); this side sets
//! up the customers and checks, byte for byte, what the disks the script made read.

use serde_json::Value;

use crate::support::server_db::{ServerDb, Volume};
use crate::support::{Backend, GIB, MIB, TestApp, db_test, id, run_php};

const PHP_BOOT: &[u8] = b"PHP BOOT SECTOR";

fn check_php_contents(volume: &Volume, what: &str) {
    assert_eq!(
        volume.read(0, PHP_BOOT.len() as u64),
        PHP_BOOT,
        "{what}: boot sector"
    );
    assert_eq!(
        volume.read(5 * GIB, 65536),
        vec![0xab; 65536],
        "{what}: data at 5 GiB"
    );
    assert_eq!(
        volume.read(5 * GIB + 65536, 4096),
        vec![0; 4096],
        "{what}: zeros"
    );
    assert!(
        volume.allocated() < MIB,
        "{what}: {} bytes allocated",
        volume.allocated()
    );
}

async fn image_path_over_soap_from_php(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (carol, _) = app.add_customer("carol@example.com", &["--billing-entity", "Acme"]);
    let wsdl = format!("{}/?wsdl", app.server.url);
    let volumes_dir = app.server.data_dir.join("volumes");
    let out = run_php(
        "image_path.php",
        &[
            ("WSDL", wsdl.as_str()),
            ("ALICE_USER", app.alice.email.as_str()),
            ("ALICE_PASS", app.alice.password.as_str()),
            ("CAROL_USER", carol.email.as_str()),
            ("CAROL_PASS", carol.password.as_str()),
            ("CAROL_ENTITY", carol.billing_entity_uuid.as_str()),
            ("BOB_USER", app.bob.email.as_str()),
            ("BOB_PASS", app.bob.password.as_str()),
            ("VOLUMES_DIR", volumes_dir.to_str().unwrap()),
        ],
    );
    let result: Value = out
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .map(|json| serde_json::from_str(json).unwrap())
        .unwrap_or_else(|| panic!("the script printed no RESULT:\n{out}"));
    let db = ServerDb::open(&app.server).await;
    let image = db.of_image(id(&result, "image_id")).await;
    assert_eq!(image.format, "raw");
    check_php_contents(&image, "the image");
    for (disk, what) in [
        ("from_image_boot", "the reverted server made from the image"),
        ("carol_boot", "carol's server"),
        ("clone", "the clone of the snapshot"),
    ] {
        check_php_contents(&db.of_disk(id(&result, disk)).await, what);
    }
}
db_test!(image_path_over_soap_from_php, image_path_over_soap_from_php);
