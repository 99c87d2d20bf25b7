//! SOAP 1.1 rpc/encoded: request arguments in, results and faults out, both driven by the
//! operations' wire types.

use std::collections::HashMap;
use std::fmt::Write;

use quick_xml::escape::escape;
use serde_json::{Map, Number, Value};

use super::xml::Element;
use crate::api::error::{FaultCode, error_type, fault_code};
use crate::error::{ApiError, ApiResult};
use crate::ops::registry::{CURRENT, Operation, Version};
use crate::ops::wire::WireType;

pub const NAMESPACE: &str = "http://extility.flexiant.com";
pub const SOAP_ENV: &str = "http://schemas.xmlsoap.org/soap/envelope/";
pub const SOAP_12_ENV: &str = "http://www.w3.org/2003/05/soap-envelope";
pub const SOAP_ENC: &str = "http://schemas.xmlsoap.org/soap/encoding/";

/// An operation call found in a request envelope.
pub struct Call {
    pub operation: String,
    pub element: Element,
    /// Elements with an `id`, for `href="#id"` references (multi-ref encoding).
    pub refs: HashMap<String, Element>,
}

/// Finds the call in a SOAP 1.1 envelope.
pub fn read_call(root: Element) -> ApiResult<Call> {
    if root.name != "Envelope" {
        return Err(ApiError::MalformedRequest(format!(
            "expected a SOAP Envelope, found <{}>",
            root.name
        )));
    }
    let ns = root.namespace_declaration(root.prefix.as_deref());
    if ns == Some(SOAP_12_ENV) {
        return Err(ApiError::MalformedRequest(
            "SOAP 1.2 is not supported; send a SOAP 1.1 envelope".into(),
        ));
    }
    let body = root
        .children
        .into_iter()
        .find(|c| c.name == "Body")
        .ok_or_else(|| ApiError::MalformedRequest("the envelope has no Body".into()))?;
    let mut elements = body.children.into_iter();
    let element = elements
        .next()
        .ok_or_else(|| ApiError::MalformedRequest("the SOAP Body is empty".into()))?;
    let mut refs = HashMap::new();
    for extra in elements {
        if let Some(id) = extra.attribute("id") {
            refs.insert(id.to_string(), extra);
        }
    }
    Ok(Call {
        operation: element.name.clone(),
        element,
        refs,
    })
}

/// Decodes the call's arguments, those `version` of the API has, into the JSON-shaped map
/// operations take; the operation's newer arguments are left out, so it takes them as not
/// given. Arguments are found by name; an argument not named is taken by position (clients
/// that send `param0`, ...).
pub fn decode_args(op: &Operation, version: Version, call: &Call) -> ApiResult<Map<String, Value>> {
    let children = &call.element.children;
    let known = |name: &str| op.params.iter().any(|p| p.name == name);
    let mut args = Map::new();
    for (index, param) in op.params_in(version).enumerate() {
        let element = children
            .iter()
            .find(|c| c.name == param.name)
            .or_else(|| children.get(index).filter(|c| !known(&c.name)));
        if let Some(element) = element {
            let value = decode(param.name, &param.ty, element, call, 0)?;
            args.insert(param.name.to_string(), value);
        }
    }
    Ok(args)
}

fn decode(name: &str, ty: &WireType, el: &Element, call: &Call, depth: usize) -> ApiResult<Value> {
    let el = match el.attribute("href").and_then(|h| h.strip_prefix('#')) {
        Some(id) if depth < 8 => call.refs.get(id).ok_or_else(|| {
            ApiError::invalid(
                name,
                format!("refers to #{id}, which the request does not hold"),
            )
        })?,
        _ => el,
    };
    if el.is_nil() {
        return Ok(Value::Null);
    }
    let text = el.text.as_str();
    Ok(match ty {
        WireType::Long => {
            let trimmed = text.trim();
            let n: i64 = trimmed.parse().map_err(|_| {
                ApiError::invalid(name, format!("must be an integer, got \"{trimmed}\""))
            })?;
            Value::Number(Number::from(n))
        }
        WireType::Boolean => match text.trim() {
            "true" | "1" => Value::Bool(true),
            "false" | "0" => Value::Bool(false),
            other => {
                return Err(ApiError::invalid(
                    name,
                    format!("must be a boolean, got \"{other}\""),
                ));
            }
        },
        WireType::String | WireType::DateTime => Value::String(text.to_string()),
        WireType::Array(item) => Value::Array(
            el.children
                .iter()
                .enumerate()
                .map(|(i, child)| decode(&format!("{name}[{i}]"), item, child, call, depth + 1))
                .collect::<ApiResult<_>>()?,
        ),
        WireType::Struct(s) => {
            let mut object = Map::new();
            for field in s.fields_in(CURRENT) {
                if let Some(child) = el.child(field.name) {
                    let value = decode(
                        &format!("{name}.{}", field.name),
                        &field.ty,
                        child,
                        call,
                        depth + 1,
                    )?;
                    object.insert(field.name.to_string(), value);
                }
            }
            Value::Object(object)
        }
    })
}

const ENVELOPE_OPEN: &str = concat!(
    r#"<?xml version="1.0" encoding="UTF-8"?>"#,
    r#"<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/""#,
    r#" xmlns:SOAP-ENC="http://schemas.xmlsoap.org/soap/encoding/""#,
    r#" xmlns:xsd="http://www.w3.org/2001/XMLSchema""#,
    r#" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance""#,
    r#" xmlns:tns="http://extility.flexiant.com""#,
    r#" SOAP-ENV:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/">"#,
    "<SOAP-ENV:Body>"
);
const ENVELOPE_CLOSE: &str = "</SOAP-ENV:Body></SOAP-ENV:Envelope>";

/// A string as XML 1.0 character data: markup escaped, and the control characters XML 1.0
/// cannot carry at all (a remote server's error text, a console) shown as their Unicode
/// control pictures, so that every response is a document clients can parse.
fn xml_text(s: &str) -> std::borrow::Cow<'_, str> {
    let legal = |c: char| !matches!(c, '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}');
    if s.chars().all(legal) {
        return escape(s);
    }
    let cleaned: String = s
        .chars()
        .map(|c| match c {
            c if legal(c) => c,
            '\u{0}'..='\u{1f}' => char::from_u32(0x2400 + c as u32).unwrap_or('\u{fffd}'),
            _ => '\u{fffd}',
        })
        .collect();
    std::borrow::Cow::Owned(escape(cleaned.as_str()).into_owned())
}

/// The response envelope of an operation's result, as `version` of the API has it: the parts
/// of that version's response alone, in order, and records with that version's fields alone,
/// in its order.
pub fn encode_response(op: &Operation, version: Version, result: &Value) -> String {
    let mut out = String::with_capacity(1024);
    out.push_str(ENVELOPE_OPEN);
    let _ = write!(out, "<tns:{}Response>", op.name);
    for (part, value) in op.result_parts(version, result) {
        encode(&mut out, part.name, &part.ty, value, version);
    }
    let _ = write!(out, "</tns:{}Response>", op.name);
    out.push_str(ENVELOPE_CLOSE);
    out
}

fn encode(out: &mut String, name: &str, ty: &WireType, value: &Value, version: Version) {
    if value.is_null() {
        let _ = write!(out, r#"<{name} xsi:nil="true"/>"#);
        return;
    }
    match ty {
        WireType::Struct(s) => {
            let _ = write!(out, r#"<{name} xsi:type="tns:{}">"#, s.name);
            for field in s.fields_in(version) {
                let v = value.get(field.name).unwrap_or(&Value::Null);
                encode(out, field.name, &field.ty, v, version);
            }
        }
        WireType::Array(item) => {
            let items = value.as_array().map(Vec::as_slice).unwrap_or_default();
            let _ = write!(
                out,
                r#"<{name} xsi:type="tns:{}" SOAP-ENC:arrayType="{}[{}]">"#,
                item.array_name(),
                item.xsd_name(),
                items.len()
            );
            for v in items {
                encode(out, "item", item, v, version);
            }
        }
        scalar => {
            let _ = write!(out, r#"<{name} xsi:type="{}">"#, scalar.xsd_name());
            match value {
                Value::String(s) => out.push_str(&xml_text(s)),
                other => {
                    let _ = write!(out, "{other}");
                }
            }
        }
    }
    let _ = write!(out, "</{name}>");
}

/// A SOAP 1.1 Fault carrying an `ExtilityException` detail.
pub fn encode_fault(err: &ApiError) -> String {
    let code = match fault_code(err) {
        FaultCode::Client => "SOAP-ENV:Client",
        FaultCode::Server => "SOAP-ENV:Server",
    };
    let message = err.public_message();
    let message = xml_text(&message);
    let mut out = String::with_capacity(1024);
    out.push_str(ENVELOPE_OPEN);
    let _ = write!(
        out,
        "<SOAP-ENV:Fault><faultcode>{code}</faultcode><faultstring>{message}</faultstring>\
         <detail><tns:ExtilityException>\
         <errorCode xsi:type=\"xsd:string\">{}</errorCode>\
         <errorType xsi:type=\"xsd:string\">{}</errorType>\
         <message xsi:type=\"xsd:string\">{message}</message>\
         </tns:ExtilityException></detail></SOAP-ENV:Fault>",
        err.code(),
        error_type(err),
    );
    out.push_str(ENVELOPE_CLOSE);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::soap::xml::parse;
    use crate::ops::registry::find;
    use serde_json::json;

    fn call(body: &str) -> Call {
        let xml = format!(
            r#"<SOAP-ENV:Envelope xmlns:SOAP-ENV="{SOAP_ENV}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><SOAP-ENV:Body>{body}</SOAP-ENV:Body></SOAP-ENV:Envelope>"#
        );
        read_call(parse(xml.as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn arguments_by_name_by_position_nil_and_arrays() {
        let op = find("CreateServer").unwrap();
        let c = call(
            r#"<ns1:CreateServer><vdc_id>3</vdc_id><param1>-1</param1><server_name>web &amp; db</server_name>
               <image_id>66</image_id><server_productoffer_id>18</server_productoffer_id>
               <disk_productoffer_ids><item>31</item><item>32</item></disk_productoffer_ids></ns1:CreateServer>"#,
        );
        let args = decode_args(op, CURRENT, &c).unwrap();
        assert_eq!(
            Value::Object(args),
            json!({"vdc_id": 3, "vlan_id": -1, "server_name": "web & db", "image_id": 66,
                   "server_productoffer_id": 18, "disk_productoffer_ids": [31, 32]})
        );
        let op = find("fetchdisk").unwrap();
        let c = call(r#"<FetchDisk><url>u</url><checksum xsi:nil="true"/></FetchDisk>"#);
        let args = decode_args(op, CURRENT, &c).unwrap();
        assert_eq!(args["checksum"], Value::Null);
    }

    #[test]
    fn strings_xml_cannot_carry_become_control_pictures() {
        assert_eq!(xml_text("a<b\tc\n"), "a&lt;b\tc\n");
        assert_eq!(xml_text("x\u{1b}[0m\u{0}"), "x\u{241b}[0m\u{2400}");
        let fault = encode_fault(&ApiError::FetchFailed("server said \u{7}bell".into()));
        assert!(parse(fault.as_bytes()).is_ok(), "{fault}");
        assert!(fault.contains("\u{2407}bell"));
    }

    #[test]
    fn mistyped_arguments_are_named() {
        let op = find("GetDisk").unwrap();
        let err = decode_args(
            op,
            CURRENT,
            &call("<GetDisk><disk_id>x1</disk_id></GetDisk>"),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "argument 'disk_id' must be an integer, got \"x1\""
        );
    }

    #[test]
    fn responses_carry_types_and_arrays_carry_their_length() {
        let op = find("ListVLANs").unwrap();
        let xml = encode_response(
            op,
            CURRENT,
            &json!([{"vlan_id": 1, "vlan_name": "a<b", "vlan_uuid": "u", "vdc_id": 2}]),
        );
        assert!(
            xml.contains(r#"<vlans xsi:type="tns:ArrayOfVlan" SOAP-ENC:arrayType="tns:Vlan[1]">"#)
        );
        assert!(xml.contains(r#"<vlan_name xsi:type="xsd:string">a&lt;b</vlan_name>"#));
        assert!(parse(xml.as_bytes()).is_ok());
    }

    #[test]
    fn version_1_takes_its_own_arguments_and_answers_with_its_own_fields() {
        let op = find("ListVLANs").unwrap();
        let c = call("<ListVLANs><vdc_id>3</vdc_id><page_size>1</page_size></ListVLANs>");
        let args = decode_args(op, 1, &c).unwrap();
        assert_eq!(
            Value::Object(args),
            json!({"vdc_id": 3}),
            "page_size is not given"
        );
        let args = decode_args(op, CURRENT, &c).unwrap();
        assert_eq!(args["page_size"], 1);
        // By position too: version 1's second part does not exist.
        let c = call("<ListVLANs><a>3</a><b>1</b></ListVLANs>");
        assert_eq!(
            Value::Object(decode_args(op, 1, &c).unwrap()),
            json!({"vdc_id": 3})
        );

        let vlan = json!([{"vlan_id": 1, "vlan_name": "n", "vlan_uuid": "u", "vdc_id": 2,
                           "subnet": "10.0.0.0/24", "gateway": "10.0.0.1"}]);
        let v1 = encode_response(op, 1, &vlan);
        assert!(
            v1.contains("<vdc_id xsi:type=\"xsd:long\">2</vdc_id></item>"),
            "{v1}"
        );
        assert!(!v1.contains("subnet") && !v1.contains("gateway"), "{v1}");
        let current = encode_response(op, CURRENT, &vlan);
        assert!(current.contains("<gateway xsi:type=\"xsd:string\">10.0.0.1</gateway></item>"));
    }

    /// A response of several parts: version 1 answers with the part it was released with,
    /// the current version with every part, in order.
    #[test]
    fn each_version_answers_with_its_own_result_parts() {
        let op = find("PublishImage").unwrap();
        let answer = json!({"result": 1, "hygiene": {
            "image_id": 7, "disk_id": null, "status": "not_checked", "highest_severity": null,
            "filesystems": [], "findings": [], "reason": null, "checked": null, "job_id": null}});
        let v1 = encode_response(op, 1, &answer);
        assert!(
            v1.contains(
                "<tns:PublishImageResponse><result xsi:type=\"xsd:long\">1</result>\
                 </tns:PublishImageResponse>"
            ),
            "{v1}"
        );
        let current = encode_response(op, CURRENT, &answer);
        assert!(
            current.contains(
                "<result xsi:type=\"xsd:long\">1</result><hygiene xsi:type=\"tns:HygieneReport\">\
                 <image_id xsi:type=\"xsd:long\">7</image_id>"
            ),
            "{current}"
        );
        assert!(
            current.contains("<status xsi:type=\"xsd:string\">not_checked</status>"),
            "{current}"
        );
    }
}
