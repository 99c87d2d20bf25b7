//! Property tests of the request decoders, through the real operation table: random JSON
//! arguments to random operations, random SOAP envelopes, random bytes. Whatever arrives, the
//! server answers with a result or a typed error, never a panic and never INTERNAL_ERROR.
//!
//! The operations run for real, in-process on a node that runs no workers: a queued job (a
//! FetchDisk of a random URL) is never run, so nothing leaves the machine. Inputs come from a
//! deterministic generator, so a failure reproduces.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::{Map, Value, json};

use extility::api::soap::{codec, xml};
use extility::ops::registry;
use extility::ops::wire::WireType;
use extility::ops::{Ctx, OPERATIONS, Origin, Via, accounts::customer};

use crate::support::in_process::in_process_node;
use crate::support::{Backend, TestDatabase, db_test};

/// Cases per property: enough to reach every operation several times, bounded for CI.
const CASES: usize = 300;

fn arb_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (-3i64..40).prop_map(|n| json!(n)),
        prop_oneof![Just(i64::MAX), Just(i64::MIN), Just(-1i64), Just(0i64)].prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,24}".prop_map(Value::String),
        prop::sample::select(vec![
            "",
            "-1",
            "0",
            "1",
            "true",
            "platform",
            "2026-12-01T00:00:00Z",
            "server",
            "disk",
            "image",
            "sha256:00",
            "http://127.0.0.1:9/x.img",
            "ftp.example.invalid/a",
            "\u{0}",
            "<a/>",
            "'; DROP TABLE jobs; --",
        ])
        .prop_map(|s| Value::String(s.to_string())),
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    arb_scalar().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A value of the wire type an argument has, as a well-behaved client sends it: small ids that
/// may exist, strings the operations know, timestamps. What reaches the operations' own checks.
fn arb_typed(ty: &'static WireType) -> BoxedStrategy<Value> {
    match ty {
        WireType::Long => prop_oneof![
            6 => (-1i64..12).prop_map(|n| json!(n)),
            1 => prop::sample::select(vec![17i64, 18, 19, 20, 29, 30, 31, 40, 66, 1 << 40])
                .prop_map(|n| json!(n)),
        ]
        .boxed(),
        WireType::Boolean => any::<bool>().prop_map(Value::Bool).boxed(),
        WireType::DateTime => prop::sample::select(vec![
            "2026-12-01T00:00:00Z",
            "1970-01-01T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "yesterday",
        ])
        .prop_map(|s| json!(s))
        .boxed(),
        WireType::String => prop_oneof![
            4 => "[a-z][a-z0-9 _-]{0,12}".prop_map(Value::String),
            1 => prop::sample::select(vec![
                "platform", "server", "disk", "image", "", " ", "sha256:00",
                "d41d8cd98f00b204e9800998ecf8427e", "http://127.0.0.1:9/x.img",
                "ftp.example.invalid/a.img", "file:///etc/passwd", "admin",
            ])
            .prop_map(|s| json!(s)),
        ]
        .boxed(),
        WireType::Array(item) => prop::collection::vec(arb_typed(item), 0..4)
            .prop_map(Value::Array)
            .boxed(),
        WireType::Struct(_) => arb_json().boxed(),
    }
}

/// An operation (by index) and arguments: mostly of the right names and types, sometimes
/// missing, of another type, or not arguments of the operation at all.
fn arb_call() -> impl Strategy<Value = (usize, Map<String, Value>)> {
    (0..OPERATIONS.len()).prop_flat_map(|index| {
        let params = OPERATIONS[index].params;
        let values: Vec<BoxedStrategy<Option<Value>>> = params
            .iter()
            .map(|p| {
                prop_oneof![
                    16 => arb_typed(&p.ty).prop_map(Some),
                    2 => arb_json().prop_map(Some),
                    1 => Just(None),
                ]
                .boxed()
            })
            .collect();
        let extra = prop::option::weighted(0.05, ("[a-z_]{1,10}", arb_json()));
        (Just(index), values, extra).prop_map(move |(index, values, extra)| {
            let mut args: Map<String, Value> = params
                .iter()
                .zip(values)
                .filter_map(|(p, v)| Some((p.name.to_string(), v?)))
                .collect();
            if let Some((name, value)) = extra {
                args.insert(name, value);
            }
            (index, args)
        })
    })
}

/// WaitForJob waits up to `timeout_seconds` for a job no worker will run: keep it short.
fn bounded(op: &str, mut args: Map<String, Value>) -> Map<String, Value> {
    if op == "WaitForJob"
        && let Some(Value::Number(n)) = args.get("timeout_seconds")
        && n.as_i64().is_some_and(|t| (1..=300).contains(&t))
    {
        args.insert("timeout_seconds".into(), json!(0));
    }
    args
}

async fn ctx(backend: Backend) -> (Ctx, tempfile::TempDir, TestDatabase) {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::new(backend, dir.path()).await;
    let node = in_process_node(&db, &dir.path().join("node"), "fuzz", &[]).await;
    let state = node.state().clone();
    customer::create_customer(
        &state.db,
        "fuzz@example.com",
        "fuzz-password",
        false,
        "Default",
    )
    .await
    .unwrap();
    let caller = customer::find_login(&state.db, "fuzz@example.com")
        .await
        .unwrap()
        .check("fuzz-password")
        .unwrap();
    let origin = Origin {
        address: None,
        via: Via::Json,
    };
    let ctx = Ctx {
        state,
        caller,
        origin,
    };
    seed(&ctx).await;
    (ctx, dir, db)
}

/// Gives the customer a few of everything, so that small ids name real things.
async fn seed(ctx: &Ctx) {
    let vdc = json!(1);
    let calls = [
        (
            "CreateDisk",
            json!({"vdc_id": vdc, "name": "d1", "disk_productoffer_id": 29, "image_id": 0}),
        ),
        (
            "CreateDisk",
            json!({"vdc_id": vdc, "name": "d2", "disk_productoffer_id": 29, "image_id": 66}),
        ),
        ("CreateVLAN", json!({"vdc_id": vdc, "vlan_name": "v"})),
        (
            "CreateServer",
            json!({"vdc_id": vdc, "vlan_id": 1, "server_name": "s", "image_id": 66,
                                 "server_productoffer_id": 18, "disk_productoffer_ids": [29]}),
        ),
        ("CreateDiskSnapshot", json!({"disk_id": 1, "name": "snap"})),
        (
            "FetchDisk",
            json!({"url": "http://127.0.0.1:9/x.img", "name": "f", "vdc_id": vdc,
                              "disk_productoffer_id": 29, "make_image": false}),
        ),
        (
            "CreateImage",
            json!({"disk_id": 2, "name": "i", "generate_password": true}),
        ),
    ];
    for (name, args) in calls {
        let op = registry::find(name).unwrap();
        let Value::Object(args) = args else {
            unreachable!()
        };
        (op.call)(ctx, args)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
    }
}

fn input<S: Strategy>(runner: &mut TestRunner, strategy: &S) -> S::Value {
    strategy.new_tree(runner).unwrap().current()
}

/// Random JSON arguments to every operation: a result or a typed error.
async fn random_json_arguments(backend: Backend) {
    let (ctx, _dir, _db) = ctx(backend).await;
    let mut runner = TestRunner::deterministic();
    let calls = arb_call();
    for _ in 0..CASES {
        let (index, args) = input(&mut runner, &calls);
        let op = &OPERATIONS[index];
        let args = bounded(op.name, args);
        let shown = Value::Object(args.clone());
        if let Err(err) = (op.call)(&ctx, args).await {
            assert_ne!(err.code(), "INTERNAL_ERROR", "{} {shown}: {err:?}", op.name);
        }
    }
}
db_test!(random_json_arguments, random_json_arguments);

/// A SOAP argument element with random content, attributes and children.
fn arb_element(name: String) -> impl Strategy<Value = String> {
    let text = prop_oneof![
        ".{0,16}".prop_map(|s| quick_xml_escape(&s)),
        any::<i64>().prop_map(|n| n.to_string()),
        (-1i64..12).prop_map(|n| n.to_string()),
        Just("true".to_string()),
        Just(String::new()),
    ];
    let attributes = prop::sample::select(vec![
        "",
        r#" xsi:nil="true""#,
        r#" xsi:type="xsd:long""#,
        r##" href="#r1""##,
        r##" href="#missing""##,
        r#" SOAP-ENC:arrayType="xsd:long[2]""#,
    ]);
    let items = prop::collection::vec(any::<i16>(), 0..3);
    (text, attributes, items).prop_map(move |(text, attributes, items)| {
        let items: String = items.iter().map(|i| format!("<item>{i}</item>")).collect();
        format!("<{name}{attributes}>{text}{items}</{name}>")
    })
}

fn quick_xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn arb_envelope() -> impl Strategy<Value = String> {
    let known = prop::bool::weighted(0.9);
    let by_name = prop::bool::weighted(0.8);
    (0..OPERATIONS.len(), known, by_name).prop_flat_map(|(index, known, by_name)| {
        let op = &OPERATIONS[index];
        let names: Vec<String> = op.params.iter().map(|p| p.name.to_string()).collect();
        let element_name = if !by_name || names.is_empty() {
            Just("param0".to_string()).boxed()
        } else {
            prop::sample::select(names).boxed()
        };
        let args = prop::collection::vec(element_name.prop_flat_map(arb_element), 0..5);
        let op_name = if known { op.name } else { "tns:Unknown" };
        (
            Just(op.name),
            Just(op_name),
            args,
            arb_element("multiRef".into()),
        )
            .prop_map(|(name, shown, args, extra)| {
                let element = if shown == name {
                    format!("tns:{name}")
                } else {
                    shown.into()
                };
                format!(
                    "<?xml version=\"1.0\"?><SOAP-ENV:Envelope \
                     xmlns:SOAP-ENV=\"http://schemas.xmlsoap.org/soap/envelope/\" \
                     xmlns:SOAP-ENC=\"http://schemas.xmlsoap.org/soap/encoding/\" \
                     xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" \
                     xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
                     xmlns:tns=\"http://extility.flexiant.com\"><SOAP-ENV:Body>\
                     <{element}>{}</{element}>{}</SOAP-ENV:Body></SOAP-ENV:Envelope>",
                    args.concat(),
                    extra.replacen("<multiRef", "<multiRef id=\"r1\"", 1),
                )
            })
    })
}

/// Random SOAP envelopes, decoded and called as the SOAP adapter does: a result or a typed
/// error.
async fn random_soap_envelopes(backend: Backend) {
    let (ctx, _dir, _db) = ctx(backend).await;
    let mut runner = TestRunner::deterministic();
    let envelopes = arb_envelope();
    for _ in 0..CASES {
        let envelope = input(&mut runner, &envelopes);
        let outcome = async {
            let call = codec::read_call(xml::parse(envelope.as_bytes())?)?;
            let op = registry::find_or_suggest(&call.operation)?;
            let args = bounded(op.name, codec::decode_args(op, registry::CURRENT, &call)?);
            (op.call)(&ctx, args).await
        }
        .await;
        if let Err(err) = outcome {
            assert_ne!(err.code(), "INTERNAL_ERROR", "{envelope}: {err:?}");
            // Every error renders as a fault a client can parse.
            let fault = codec::encode_fault(&err);
            xml::parse(fault.as_bytes()).expect("a well-formed fault");
        }
    }
}
db_test!(random_soap_envelopes, random_soap_envelopes);

/// Random bytes and mangled envelopes never panic the XML reader.
#[test]
fn random_bytes_never_panic_the_soap_reader() {
    let mut runner = TestRunner::deterministic();
    let valid = arb_envelope();
    let bytes = prop::collection::vec(any::<u8>(), 0..512);
    for _ in 0..CASES {
        let noise = input(&mut runner, &bytes);
        let _ = xml::parse(&noise).and_then(codec::read_call);
        let mut envelope = input(&mut runner, &valid).into_bytes();
        // Cut it short and flip a byte: every prefix of a document, damaged.
        let cut = noise
            .first()
            .map_or(0, |b| *b as usize * envelope.len() / 256);
        envelope.truncate(cut.max(1));
        if let (Some(last), Some(flip)) = (envelope.last_mut(), noise.get(1)) {
            *last ^= flip;
        }
        let _ = xml::parse(&envelope).and_then(codec::read_call);
    }
}
