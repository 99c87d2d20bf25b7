//! The committed WSDL and OpenAPI documents are what the server generates and serves, and the
//! OpenAPI document names every operation of the WSDL.

use std::collections::BTreeSet;
use std::process::Command;

use crate::support::binary;

fn generated(args: &[&str]) -> String {
    let out = Command::new(binary()).args(args).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

fn committed(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

#[test]
fn committed_wsdl_is_current() {
    assert!(
        generated(&["wsdl"]) == committed("wsdl/extility.wsdl"),
        "wsdl/extility.wsdl is stale: run `cargo run -- wsdl > wsdl/extility.wsdl`"
    );
}

#[test]
fn committed_openapi_is_current() {
    assert!(
        generated(&["openapi"]) == committed("openapi/openapi.json"),
        "openapi/openapi.json is stale: run `cargo run -- openapi > openapi/openapi.json`"
    );
}

fn wsdl_operations(wsdl: &str) -> BTreeSet<String> {
    // The portType lists each operation once.
    let port_type = wsdl
        .split("<wsdl:portType")
        .nth(1)
        .and_then(|rest| rest.split("</wsdl:portType>").next())
        .expect("the WSDL has a portType");
    port_type
        .split("<wsdl:operation name=\"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap().to_string())
        .collect()
}

#[test]
fn openapi_names_every_wsdl_operation() {
    let wsdl = committed("wsdl/extility.wsdl");
    let ops = wsdl_operations(&wsdl);
    assert!(ops.len() >= 23, "only {} operations in the WSDL", ops.len());
    let openapi: serde_json::Value =
        serde_json::from_str(&committed("openapi/openapi.json")).unwrap();
    let paths = openapi["paths"].as_object().unwrap();
    for op in &ops {
        let path = paths
            .get(&format!("/api/v1/{op}"))
            .unwrap_or_else(|| panic!("OpenAPI lacks {op}"));
        assert_eq!(path["post"]["operationId"], op.as_str());
    }
    assert_eq!(
        paths.len(),
        ops.len(),
        "OpenAPI has operations the WSDL lacks"
    );
}
