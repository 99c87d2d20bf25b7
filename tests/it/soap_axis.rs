//! Java's Apache Axis 1.4 (Debian's libaxis-java), as a Java shop would use it: WSDL2Java on the
//! running server's WSDL, javac on the stubs and a client from `tests/java`, then one run that
//! calls lists, arrays, nil arguments, calendars, and catches the typed `ExtilityException`:
//! a client written for version 1 against version 1's stubs (and compiled against the first
//! release's), and one of the current version against its stubs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use extility::ops::registry::CURRENT;

use crate::support::{Backend, Customer, TestApp, db_test};

/// The jars WSDL2Java and the generated stubs need, from `/usr/share/java`.
const JARS: [&str; 8] = [
    "axis",
    "axis-jaxrpc",
    "axis-saaj",
    "commons-discovery",
    "commons-logging",
    "javax.activation",
    "javax.mail",
    "wsdl4j",
];

fn axis_classpath() -> Vec<PathBuf> {
    JARS.iter()
        .map(|jar| {
            let path = Path::new("/usr/share/java").join(format!("{jar}.jar"));
            assert!(
                path.exists(),
                "{} is missing (scripts/test.sh installs default-jdk-headless libaxis-java)",
                path.display()
            );
            path
        })
        .collect()
}

/// Runs a JDK tool; panics with its output unless it succeeds.
fn run(what: &str, command: &mut Command) -> Output {
    let out = command.output().unwrap_or_else(|e| {
        panic!("{what}: {e} (scripts/test.sh installs default-jdk-headless libaxis-java)")
    });
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn java_sources(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            java_sources(&path, found);
        } else if path.extension().is_some_and(|e| e == "java") {
            found.push(path);
        }
    }
}

/// WSDL2Java on `wsdl` (a URL or a file) into `stubs`; returns the generated sources.
fn generate_stubs(jars: &std::ffi::OsStr, wsdl: &str, stubs: &Path) -> Vec<PathBuf> {
    run(
        "WSDL2Java",
        Command::new("java")
            .arg("-cp")
            .arg(jars)
            .arg("org.apache.axis.wsdl.WSDL2Java")
            .arg("-o")
            .arg(stubs)
            .args(["-p", "com.flexiant.extility"])
            .arg(wsdl),
    );
    let exception = stubs.join("com/flexiant/extility/ExtilityException.java");
    assert!(
        exception.exists(),
        "WSDL2Java generated no ExtilityException from {wsdl}"
    );
    let mut sources = Vec::new();
    java_sources(stubs, &mut sources);
    sources
}

/// javac on a client from tests/java and the stubs, into `classes`.
fn compile(jars: &std::ffi::OsStr, client: &str, stubs: &[PathBuf], classes: &Path) {
    let client = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/java")
        .join(client);
    run(
        "javac",
        Command::new("javac")
            .args(["-nowarn", "-encoding", "UTF-8", "-cp"])
            .arg(jars)
            .arg("-d")
            .arg(classes)
            .arg(client)
            .args(stubs),
    );
}

/// Runs a compiled client as `customer` (its ALICE_EMAIL and ALICE_PASSWORD); returns its
/// report, having checked it says "all done".
fn run_client(customer: &Customer, classes: &Path, class: &str, url: Option<String>) -> String {
    let mut classpath = axis_classpath();
    classpath.push(classes.to_path_buf());
    let mut command = Command::new("java");
    command
        .arg("-cp")
        .arg(std::env::join_paths(&classpath).unwrap())
        .arg(class)
        .env("ALICE_EMAIL", &customer.email)
        .env("ALICE_PASSWORD", &customer.password);
    if let Some(url) = url {
        command.env("EXTILITY_URL", url);
    }
    let out = command.output().expect("running java");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let report = format!(
        "{class} ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && stdout.contains("all done"),
        "{report}"
    );
    report
}

/// Java written for version 1 (tests/java/AxisClientV1.java) compiles against stubs of the
/// first release's WSDL (tests/fixtures/extility-first-release.wsdl), and compiles and runs
/// unchanged against stubs of today's version 1 (/?wsdl). A client of the current version
/// (tests/java/AxisClient.java) runs against stubs of /v2/?wsdl. One server for all three.
async fn calls_from_axis(backend: Backend) {
    let app = TestApp::start(backend).await;
    let work = tempfile::tempdir().unwrap();
    let jars = std::env::join_paths(axis_classpath()).unwrap();

    // The first release's WSDL as a file, with the schema it imports beside it.
    let first = work.path().join("first-release");
    std::fs::create_dir_all(first.join("schemas")).unwrap();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(
        manifest.join("tests/fixtures/extility-first-release.wsdl"),
        first.join("extility.wsdl"),
    )
    .unwrap();
    std::fs::copy(
        manifest.join("wsdl/soap-encoding.xsd"),
        first.join("schemas/soap-encoding.xsd"),
    )
    .unwrap();
    let first_stubs = generate_stubs(
        &jars,
        first.join("extility.wsdl").to_str().unwrap(),
        &work.path().join("first-stubs"),
    );
    compile(
        &jars,
        "AxisClientV1.java",
        &first_stubs,
        &work.path().join("first-classes"),
    );

    let v1_stubs = generate_stubs(
        &jars,
        &format!("{}/?wsdl", app.server.url),
        &work.path().join("v1-stubs"),
    );
    let v1_classes = work.path().join("v1-classes");
    compile(&jars, "AxisClientV1.java", &v1_stubs, &v1_classes);
    let report = run_client(&app.alice, &v1_classes, "AxisClientV1", None);
    assert!(
        report.contains("ok: a fault is the typed ExtilityException: NOT_FOUND"),
        "{report}"
    );

    let current_stubs = generate_stubs(
        &jars,
        &format!("{}/v{CURRENT}/?wsdl", app.server.url),
        &work.path().join("current-stubs"),
    );
    let current_classes = work.path().join("current-classes");
    compile(&jars, "AxisClient.java", &current_stubs, &current_classes);
    // Bob's account: the version 1 client's jobs are alice's.
    let report = run_client(
        &app.bob,
        &current_classes,
        "AxisClient",
        Some(format!("{}/v{CURRENT}/", app.server.url)),
    );
    assert!(
        report.contains("errorCode: NOT_FOUND\n"),
        "the fault arrives as the typed ExtilityException: {report}"
    );
}
db_test!(calls_from_axis, calls_from_axis);
