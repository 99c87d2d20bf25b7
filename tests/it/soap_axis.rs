//! Java's Apache Axis 1.4 (Debian's libaxis-java), as a Java shop would use it: WSDL2Java on the
//! running server's WSDL, javac on the stubs and `tests/java/AxisClient.java`, then one run that
//! calls lists, arrays, nil arguments, calendars, and catches the typed `ExtilityException`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::{Backend, TestApp, db_test};

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

async fn calls_from_axis(backend: Backend) {
    let app = TestApp::start(backend).await;
    let work = tempfile::tempdir().unwrap();
    let (stubs, classes) = (work.path().join("src"), work.path().join("classes"));
    let mut classpath = axis_classpath();
    let jars = std::env::join_paths(&classpath).unwrap();

    run(
        "WSDL2Java",
        Command::new("java")
            .arg("-cp")
            .arg(&jars)
            .arg("org.apache.axis.wsdl.WSDL2Java")
            .arg("-o")
            .arg(&stubs)
            .args(["-p", "com.flexiant.extility"])
            .arg(format!("{}/?wsdl", app.server.url)),
    );
    let exception = stubs.join("com/flexiant/extility/ExtilityException.java");
    assert!(
        exception.exists(),
        "WSDL2Java generated no ExtilityException"
    );

    let mut sources =
        vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/java/AxisClient.java")];
    java_sources(&stubs, &mut sources);
    run(
        "javac",
        Command::new("javac")
            .args(["-nowarn", "-encoding", "UTF-8", "-cp"])
            .arg(&jars)
            .arg("-d")
            .arg(&classes)
            .args(&sources),
    );

    classpath.push(classes);
    let out = Command::new("java")
        .arg("-cp")
        .arg(std::env::join_paths(&classpath).unwrap())
        .arg("AxisClient")
        .env("EXTILITY_URL", format!("{}/", app.server.url))
        .env("ALICE_EMAIL", &app.alice.email)
        .env("ALICE_PASSWORD", &app.alice.password)
        .output()
        .expect("running java");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = format!(
        "AxisClient ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && stdout.contains("all done"),
        "{report}"
    );
    assert!(
        stdout.contains("errorCode: NOT_FOUND\n"),
        "the fault arrives as the typed ExtilityException: {report}"
    );
}
db_test!(calls_from_axis, calls_from_axis);
