//! The committed WSDL and OpenAPI documents are what the server generates and serves, and the
//! OpenAPI document names every operation of the WSDL. The rule for API versions
//! (ARCHITECTURE.md): a released version's WSDL never changes, version 1 is the first
//! release's, and each version keeps every operation and record of the versions before it.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use extility::api::wsdl::committed_path;
use extility::ops::registry::{self, CURRENT, Version};

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
    assert_eq!(committed_path(CURRENT), "wsdl/extility.wsdl");
    assert!(
        generated(&["wsdl"]) == committed("wsdl/extility.wsdl"),
        "wsdl/extility.wsdl is stale: run `cargo run -- wsdl > wsdl/extility.wsdl`"
    );
}

#[test]
fn committed_api_reference_is_current() {
    use extility::api::reference::COMMITTED_PATH;
    assert!(
        generated(&["api-reference"]) == committed(COMMITTED_PATH),
        "{COMMITTED_PATH} is stale: run `cargo run -- api-reference > {COMMITTED_PATH}`"
    );
}

/// What a client of a WSDL depends on: its lines but for documentation, comments and the
/// endpoint's address, which a version may refresh without changing a byte a client sends or
/// reads.
fn contract(wsdl: &str) -> Vec<&str> {
    wsdl.lines()
        .filter(|l| {
            let l = l.trim_start();
            !l.starts_with("<wsdl:documentation>")
                && !l.starts_with("<!--")
                && !l.starts_with("<soap:address ")
        })
        .collect()
}

/// The first line where two contracts differ, for the failure message.
fn first_difference(a: &[&str], b: &[&str]) -> String {
    let at = a
        .iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    format!(
        "line {} of the contract: {:?} became {:?}",
        at + 1,
        a.get(at).unwrap_or(&"(end)"),
        b.get(at).unwrap_or(&"(end)")
    )
}

#[test]
fn released_versions_never_change() {
    for version in registry::released() {
        let path = committed_path(version);
        let frozen = committed(&path);
        let now = generated(&["wsdl", "--version", &version.to_string()]);
        let (frozen, now) = (contract(&frozen), contract(&now));
        assert!(
            frozen == now,
            "version {version} of the API is released and never changes, but the operation \
             table now makes a different {path}: {}. Put the change in version {CURRENT} \
             (`#[since({CURRENT})]` on the new argument or field, see ARCHITECTURE.md) and \
             leave {path} as it is.",
            first_difference(&frozen, &now)
        );
    }
}

/// Version 1 is the first release's API (git 1a019bd, whose WSDL is
/// tests/fixtures/extility-first-release.wsdl) with one fix kept: the fault message's part is
/// named like the fault's detail element, so that Axis stubs throw the typed
/// `ExtilityException`. The stubs' methods and classes are the same (tests/it/soap_axis.rs).
#[test]
fn version_1_is_the_first_release() {
    let first = committed("tests/fixtures/extility-first-release.wsdl").replace(
        r#"<wsdl:part name="fault" type="tns:ExtilityException"/>"#,
        r#"<wsdl:part name="ExtilityException" type="tns:ExtilityException"/>"#,
    );
    let v1 = committed(&committed_path(1));
    let (first, v1) = (contract(&first), contract(&v1));
    assert!(first == v1, "{}", first_difference(&first, &v1));
}

/// A WSDL's operations (in order) with their request parts, and its types with their
/// elements, each as `name type`, from the generated layout (one element per line).
struct Shape {
    operations: Vec<String>,
    parts: BTreeMap<String, Vec<String>>,
    types: BTreeMap<String, Vec<String>>,
}

fn attribute<'a>(line: &'a str, name: &str) -> &'a str {
    line.split(&format!(" {name}=\""))
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("")
}

fn shape(wsdl: &str) -> Shape {
    let mut shape = Shape {
        operations: Vec::new(),
        parts: BTreeMap::new(),
        types: BTreeMap::new(),
    };
    let mut message: Option<String> = None;
    let mut complex_type: Option<String> = None;
    let mut in_port_type = false;
    for line in wsdl.lines().map(str::trim) {
        if line.starts_with("<wsdl:message ") {
            message = Some(attribute(line, "name").to_string());
            shape
                .parts
                .entry(attribute(line, "name").to_string())
                .or_default();
        } else if line.starts_with("</wsdl:message>") {
            message = None;
        } else if line.starts_with("<wsdl:part ")
            && let Some(m) = &message
        {
            let part = format!("{} {}", attribute(line, "name"), attribute(line, "type"));
            shape.parts.entry(m.clone()).or_default().push(part);
        } else if line.starts_with("<xsd:complexType ") {
            complex_type = Some(attribute(line, "name").to_string());
            shape
                .types
                .entry(attribute(line, "name").to_string())
                .or_default();
        } else if line.starts_with("</xsd:complexType>") {
            complex_type = None;
        } else if line.starts_with("<xsd:element ")
            && let Some(t) = &complex_type
        {
            let nillable = if line.contains(r#"nillable="true""#) {
                " nillable"
            } else {
                ""
            };
            let element = format!(
                "{} {}{nillable}",
                attribute(line, "name"),
                attribute(line, "type")
            );
            shape.types.entry(t.clone()).or_default().push(element);
        } else if line.starts_with("<wsdl:portType ") {
            in_port_type = true;
        } else if line.starts_with("</wsdl:portType>") {
            in_port_type = false;
        } else if in_port_type && line.starts_with("<wsdl:operation ") {
            shape.operations.push(attribute(line, "name").to_string());
        }
    }
    shape
}

fn is_subsequence(short: &[String], long: &[String]) -> bool {
    let mut long = long.iter();
    short.iter().all(|item| long.any(|l| l == item))
}

/// The committed WSDL of every version, oldest first.
fn committed_versions() -> Vec<(Version, Shape)> {
    registry::versions()
        .map(|v| (v, shape(&committed(&committed_path(v)))))
        .collect()
}

/// Each version has every operation of the versions before it, in the same order, with their
/// parts first and in order (a call written for an older version means the same, and its
/// answer starts with the same parts), and every record type, with the older fields in the
/// same order.
#[test]
fn each_version_keeps_what_the_versions_before_it_have() {
    let versions = committed_versions();
    let (_, first) = &versions[0];
    assert!(
        first.parts["ListVDCsRequest"].is_empty(),
        "version 1's ListVDCs takes no argument"
    );
    for (i, (older, old)) in versions.iter().enumerate() {
        for (newer, new) in &versions[i + 1..] {
            assert!(
                is_subsequence(&old.operations, &new.operations),
                "version {newer} lost or reordered operations of version {older}"
            );
            for op in &old.operations {
                let request = format!("{op}Request");
                let (before, after) = (&old.parts[&request], &new.parts[&request]);
                assert!(
                    after.starts_with(before),
                    "{op}: version {older} has parts {before:?}, version {newer} {after:?}: a \
                     newer version only adds parts after the older ones"
                );
                let response = format!("{op}Response");
                let (before, after) = (&old.parts[&response], &new.parts[&response]);
                assert!(
                    after.starts_with(before) && !after.is_empty(),
                    "{op}: version {older} answers with parts {before:?}, version {newer} \
                     {after:?}: a newer version only adds parts after the older ones"
                );
            }
            for (name, fields) in &old.types {
                let now = new.types.get(name).unwrap_or_else(|| {
                    panic!("version {newer} lost the type {name} of version {older}")
                });
                assert!(
                    is_subsequence(fields, now),
                    "{name}: version {older} has {fields:?}, version {newer} {now:?}"
                );
            }
        }
    }
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

/// OpenAPI documents the current version: every operation of its WSDL.
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
