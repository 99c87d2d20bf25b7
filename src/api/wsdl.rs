//! The WSDL of each API version, generated from the operation table (rpc/encoded, SOAP 1.1):
//! the operations, arguments and record fields that version has (`ops::registry`).
//!
//! `/?wsdl` and `/wsdl` are version 1, the first release's API, for ever; `/v{N}/?wsdl` (or
//! `/?wsdl&version=N`) is version N, whose `soap:address` is `/v{N}/`.
//! `wsdl/extility.wsdl` in the repository is the current version's for `http://localhost:8080/`
//! and `wsdl/extility-v{N}.wsdl` each released version's (`extility wsdl --version N`); tests
//! keep the first current and the others unchanged.

use std::fmt::Write;
use std::sync::LazyLock;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use quick_xml::escape::escape;

use std::collections::HashMap;

use super::soap::codec::NAMESPACE;
use crate::ops::registry::{self, CURRENT, Operation, Version};
use crate::ops::state::AppState;
use crate::ops::wire::{StructType, WireType};

/// Where this server serves its copy of the SOAP encoding schema (relative to the WSDL's URL).
pub const SOAP_ENCODING_XSD_PATH: &str = "schemas/soap-encoding.xsd";
const SOAP_ENCODING_XSD: &str = include_str!("../../wsdl/soap-encoding.xsd");

/// `GET /schemas/soap-encoding.xsd`
pub async fn serve_soap_encoding() -> Response {
    (
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        SOAP_ENCODING_XSD,
    )
        .into_response()
}

const ADDRESS_PLACEHOLDER: &str = "{{SOAP_ADDRESS}}";

/// Each version's WSDL, with a placeholder for its address; index 0 is version 1.
static TEMPLATES: LazyLock<Vec<String>> = LazyLock::new(|| {
    registry::versions()
        .map(|version| generate(version, ADDRESS_PLACEHOLDER))
        .collect()
});

/// The WSDL of `version` (1 to [`CURRENT`]) with `address` as the SOAP endpoint.
pub fn render(version: Version, address: &str) -> String {
    let template = version
        .checked_sub(registry::FIRST)
        .and_then(|index| TEMPLATES.get(index as usize))
        .unwrap_or_else(|| panic!("there is no API version {version}"));
    template.replace(ADDRESS_PLACEHOLDER, &escape(address))
}

/// The path of `version`'s SOAP endpoint: `/` for version 1, which the first release served
/// there, `/v{N}/` for the others.
pub fn endpoint_path(version: Version) -> String {
    if version == registry::FIRST {
        "/".to_string()
    } else {
        format!("/v{version}/")
    }
}

/// Every struct and array type `version`'s operations use, each once, in first-use order.
fn collect_types(version: Version) -> (Vec<&'static StructType>, Vec<WireType>) {
    fn visit(
        ty: &WireType,
        version: Version,
        structs: &mut Vec<&'static StructType>,
        arrays: &mut Vec<WireType>,
    ) {
        match ty {
            WireType::Struct(s) if !structs.iter().any(|known| known.name == s.name) => {
                structs.push(s);
                for field in s.fields_in(version) {
                    visit(&field.ty, version, structs, arrays);
                }
            }
            WireType::Array(item) => {
                visit(item, version, structs, arrays);
                if !arrays.contains(item) {
                    arrays.push(**item);
                }
            }
            _ => {}
        }
    }
    let (mut structs, mut arrays) = (Vec::new(), Vec::new());
    for op in registry::operations_in(version) {
        for p in op.params_in(version) {
            visit(&p.ty, version, &mut structs, &mut arrays);
        }
        for part in op.results_in(version) {
            visit(&part.ty, version, &mut structs, &mut arrays);
        }
    }
    (structs, arrays)
}

/// The file in the repository that holds `version`'s WSDL.
pub fn committed_path(version: Version) -> String {
    if version == CURRENT {
        "wsdl/extility.wsdl".to_string()
    } else {
        format!("wsdl/extility-v{version}.wsdl")
    }
}

fn documentation(out: &mut String, indent: &str, doc: &str) {
    let doc = doc.split_whitespace().collect::<Vec<_>>().join(" ");
    if !doc.is_empty() {
        let _ = writeln!(
            out,
            "{indent}<wsdl:documentation>{}</wsdl:documentation>",
            escape(doc.as_str())
        );
    }
}

fn generate(version: Version, address: &str) -> String {
    let (structs, arrays) = collect_types(version);
    let operations: Vec<&Operation> = registry::operations_in(version).collect();
    let mut out = String::new();
    let _ = writeln!(out, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    // (A comment cannot hold a double hyphen, so the command's option is not spelled here.)
    let _ = writeln!(
        out,
        "<!-- API version {version}, generated from the operation table (extility wsdl) as {} -->",
        committed_path(version)
    );
    let _ = writeln!(
        out,
        r#"<wsdl:definitions name="Extility" targetNamespace="{NAMESPACE}"
    xmlns:tns="{NAMESPACE}"
    xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/"
    xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/"
    xmlns:xsd="http://www.w3.org/2001/XMLSchema"
    xmlns:soapenc="http://schemas.xmlsoap.org/soap/encoding/">"#
    );
    documentation(
        &mut out,
        "  ",
        &format!(
            "Version {version} of the Extility cloud control API. HTTP Basic authentication: customer e-mail and password, or an authentication token (GetAuthenticationToken, version 2) as the user name with any password; or the token as `Authorization: Bearer`."
        ),
    );
    let _ = writeln!(out, "  <wsdl:types>");
    let _ = writeln!(out, r#"    <xsd:schema targetNamespace="{NAMESPACE}">"#);
    let _ = writeln!(
        out,
        r#"      <xsd:import namespace="http://schemas.xmlsoap.org/soap/encoding/" schemaLocation="{SOAP_ENCODING_XSD_PATH}"/>"#
    );
    for s in &structs {
        let _ = writeln!(out, r#"      <xsd:complexType name="{}">"#, s.name);
        let _ = writeln!(out, "        <xsd:sequence>");
        for f in s.fields_in(version) {
            let nillable = if f.nillable {
                r#" nillable="true""#
            } else {
                ""
            };
            let _ = writeln!(
                out,
                r#"          <xsd:element name="{}" type="{}"{nillable}/>"#,
                f.name,
                f.ty.xsd_name()
            );
        }
        let _ = writeln!(out, "        </xsd:sequence>");
        let _ = writeln!(out, "      </xsd:complexType>");
    }
    for item in &arrays {
        let _ = writeln!(
            out,
            r#"      <xsd:complexType name="{0}">
        <xsd:complexContent>
          <xsd:restriction base="soapenc:Array">
            <xsd:sequence>
              <xsd:element name="item" type="{1}" minOccurs="0" maxOccurs="unbounded"/>
            </xsd:sequence>
            <xsd:attribute ref="soapenc:arrayType" wsdl:arrayType="{1}[]"/>
          </xsd:restriction>
        </xsd:complexContent>
      </xsd:complexType>"#,
            item.array_name(),
            item.xsd_name()
        );
    }
    let _ = writeln!(
        out,
        r#"      <xsd:complexType name="ExtilityException">
        <xsd:sequence>
          <xsd:element name="errorCode" type="xsd:string"/>
          <xsd:element name="errorType" type="xsd:string"/>
          <xsd:element name="message" type="xsd:string"/>
        </xsd:sequence>
      </xsd:complexType>
    </xsd:schema>
  </wsdl:types>"#
    );

    // A message of parts (name, XSD type).
    let message = |out: &mut String, name: String, parts: Vec<(&str, String)>| {
        let _ = writeln!(out, r#"  <wsdl:message name="{name}">"#);
        for (part, ty) in parts {
            let _ = writeln!(out, r#"    <wsdl:part name="{part}" type="{ty}"/>"#);
        }
        let _ = writeln!(out, "  </wsdl:message>");
    };
    for op in &operations {
        let params = op.params_in(version).map(|p| (p.name, p.ty.xsd_name()));
        message(&mut out, format!("{}Request", op.name), params.collect());
        let results = op.results_in(version).map(|r| (r.name, r.ty.xsd_name()));
        message(&mut out, format!("{}Response", op.name), results.collect());
    }
    // The part is named like the fault's detail element (`<tns:ExtilityException>`, see
    // `soap::codec::encode_fault`): Axis 1.x maps a fault to the generated exception class only
    // when the two match, and otherwise throws a bare `AxisFault`.
    let _ = writeln!(
        out,
        r#"  <wsdl:message name="ExtilityException">
    <wsdl:part name="ExtilityException" type="tns:ExtilityException"/>
  </wsdl:message>"#
    );

    let _ = writeln!(out, r#"  <wsdl:portType name="ExtilityPortType">"#);
    for op in &operations {
        let order: Vec<&str> = op.params_in(version).map(|p| p.name).collect();
        if order.is_empty() {
            let _ = writeln!(out, r#"    <wsdl:operation name="{}">"#, op.name);
        } else {
            let _ = writeln!(
                out,
                r#"    <wsdl:operation name="{}" parameterOrder="{}">"#,
                op.name,
                order.join(" ")
            );
        }
        documentation(&mut out, "      ", op.doc);
        let _ = writeln!(
            out,
            r#"      <wsdl:input message="tns:{0}Request"/>
      <wsdl:output message="tns:{0}Response"/>
      <wsdl:fault name="ExtilityException" message="tns:ExtilityException"/>
    </wsdl:operation>"#,
            op.name
        );
    }
    let _ = writeln!(out, "  </wsdl:portType>");

    let body = format!(
        r#"<soap:body use="encoded" namespace="{NAMESPACE}" encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"/>"#
    );
    let _ = writeln!(
        out,
        r#"  <wsdl:binding name="ExtilityBinding" type="tns:ExtilityPortType">
    <soap:binding style="rpc" transport="http://schemas.xmlsoap.org/soap/http"/>"#
    );
    for op in &operations {
        let _ = writeln!(
            out,
            r#"    <wsdl:operation name="{0}">
      <soap:operation soapAction="{NAMESPACE}#{0}" style="rpc"/>
      <wsdl:input>{body}</wsdl:input>
      <wsdl:output>{body}</wsdl:output>
      <wsdl:fault name="ExtilityException"><soap:fault name="ExtilityException" use="encoded" namespace="{NAMESPACE}" encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"/></wsdl:fault>
    </wsdl:operation>"#,
            op.name
        );
    }
    let _ = writeln!(
        out,
        r#"  </wsdl:binding>
  <wsdl:service name="ExtilityService">
    <wsdl:port name="ExtilityPort" binding="tns:ExtilityBinding">
      <soap:address location="{address}"/>
    </wsdl:port>
  </wsdl:service>
</wsdl:definitions>"#
    );
    out
}

/// The URL of `version`'s SOAP endpoint as the client sees this server.
fn soap_address(state: &AppState, headers: &HeaderMap, version: Version) -> String {
    let path = endpoint_path(version);
    if let Some(url) = &state.config.public_url {
        return format!("{}{path}", url.trim_end_matches('/'));
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && !h.contains(['/', '"', '<', '>', ' ']))
        .unwrap_or("localhost");
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .filter(|p| *p == "https" || *p == "http")
        .unwrap_or("http");
    format!("{scheme}://{host}{path}")
}

fn wsdl_response(state: &AppState, headers: &HeaderMap, version: Version) -> Response {
    (
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        render(version, &soap_address(state, headers, version)),
    )
        .into_response()
}

/// The version a query asks for with `version=N`; `default` without one, `None` for one this
/// server does not have.
fn version_asked(query: &HashMap<String, String>, default: Version) -> Option<Version> {
    match query
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("version"))
    {
        None => Some(default),
        Some((_, v)) => v
            .trim()
            .trim_start_matches(['v', 'V'])
            .parse()
            .ok()
            .filter(|v| registry::versions().any(|known| known == *v)),
    }
}

fn no_such_version() -> Response {
    (
        axum::http::StatusCode::NOT_FOUND,
        format!(
            "No such API version: this server has versions 1 to {CURRENT} (/?wsdl&version=N, /v{{N}}/?wsdl).\n"
        ),
    )
        .into_response()
}

/// `GET /wsdl`: version 1, or `?version=N`.
pub async fn serve(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    match version_asked(&query, registry::FIRST) {
        Some(version) => wsdl_response(&state, &headers, version),
        None => no_such_version(),
    }
}

/// `GET /v{version}/wsdl`
pub async fn serve_version(version: Version, state: AppState, headers: HeaderMap) -> Response {
    wsdl_response(&state, &headers, version)
}

/// `GET /?wsdl` gives the WSDL; `GET /` alone says where things are.
/// Whether `GET /` comes from a browser (which is sent to the control panel): it accepts
/// HTML and is no SOAP call. SOAP and JSON clients, which accept XML, JSON or anything, get
/// the text below.
fn from_a_browser(headers: &HeaderMap) -> bool {
    !headers.contains_key("soapaction")
        && headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|media| {
                let media = media.split(';').next().unwrap_or("").trim();
                media.eq_ignore_ascii_case("text/html")
                    || media.eq_ignore_ascii_case("application/xhtml+xml")
            })
}

pub async fn serve_root(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    serve_endpoint(registry::FIRST, state, query, headers).await
}

/// `GET /` (version 1) or `GET /v{version}/`: `?wsdl` gives the WSDL of the version (or of
/// the one `version=N` names); a browser is sent to the control panel; anything else gets a
/// few lines saying where things are.
pub async fn serve_endpoint(
    version: Version,
    state: AppState,
    query: HashMap<String, String>,
    headers: HeaderMap,
) -> Response {
    if query.keys().any(|k| k.eq_ignore_ascii_case("wsdl")) {
        return match version_asked(&query, version) {
            Some(version) => wsdl_response(&state, &headers, version),
            None => no_such_version(),
        };
    }
    if from_a_browser(&headers) {
        return axum::response::Redirect::to("/panel/").into_response();
    }
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!(
            "Extility control API.\n\
             SOAP 1.1, version 1 (the first release's, never changing): POST / (WSDL at /?wsdl)\n\
             SOAP 1.1, version {CURRENT} (the current one): POST /v{CURRENT}/ (WSDL at /v{CURRENT}/?wsdl)\n\
             JSON: POST /api/v1/<Operation> (OpenAPI at /openapi.json)\n"
        ),
    )
        .into_response()
}
