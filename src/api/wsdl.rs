//! The WSDL, generated from the operation table (rpc/encoded, SOAP 1.1).
//!
//! `wsdl/extility.wsdl` in the repository is this output for `http://localhost:8080/`; a test
//! keeps it current (`extility wsdl > wsdl/extility.wsdl` regenerates it).

use std::fmt::Write;
use std::sync::LazyLock;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use quick_xml::escape::escape;

use super::soap::codec::NAMESPACE;
use crate::ops::OPERATIONS;
use crate::ops::wire::{StructType, WireType};
use crate::state::AppState;

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

static TEMPLATE: LazyLock<String> = LazyLock::new(|| generate(ADDRESS_PLACEHOLDER));

/// The WSDL with `address` as the SOAP endpoint.
pub fn render(address: &str) -> String {
    TEMPLATE.replace(ADDRESS_PLACEHOLDER, &escape(address))
}

/// Every struct and array type the operations use, each once, in first-use order.
fn collect_types() -> (Vec<&'static StructType>, Vec<WireType>) {
    fn visit(ty: &WireType, structs: &mut Vec<&'static StructType>, arrays: &mut Vec<WireType>) {
        match ty {
            WireType::Struct(s) if !structs.iter().any(|known| known.name == s.name) => {
                structs.push(s);
                for field in s.fields {
                    visit(&field.ty, structs, arrays);
                }
            }
            WireType::Array(item) => {
                visit(item, structs, arrays);
                if !arrays.contains(item) {
                    arrays.push(**item);
                }
            }
            _ => {}
        }
    }
    let (mut structs, mut arrays) = (Vec::new(), Vec::new());
    for op in OPERATIONS {
        for p in op.params {
            visit(&p.ty, &mut structs, &mut arrays);
        }
        visit(&op.result, &mut structs, &mut arrays);
    }
    (structs, arrays)
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

fn generate(address: &str) -> String {
    let (structs, arrays) = collect_types();
    let mut out = String::new();
    let _ = writeln!(out, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        out,
        "<!-- Generated from the operation table: extility wsdl > wsdl/extility.wsdl -->"
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
        "The Extility cloud control API. HTTP Basic authentication: customer e-mail and password, or an authentication token (GetAuthenticationToken) as the user name with any password; or the token as `Authorization: Bearer`.",
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
        for f in s.fields {
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

    for op in OPERATIONS {
        let _ = writeln!(out, r#"  <wsdl:message name="{}Request">"#, op.name);
        for p in op.params {
            let _ = writeln!(
                out,
                r#"    <wsdl:part name="{}" type="{}"/>"#,
                p.name,
                p.ty.xsd_name()
            );
        }
        let _ = writeln!(out, "  </wsdl:message>");
        let _ = writeln!(
            out,
            r#"  <wsdl:message name="{0}Response">
    <wsdl:part name="{1}" type="{2}"/>
  </wsdl:message>"#,
            op.name,
            op.result_name,
            op.result.xsd_name()
        );
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
    for op in OPERATIONS {
        let order: Vec<&str> = op.params.iter().map(|p| p.name).collect();
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
    for op in OPERATIONS {
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

/// The URL of the SOAP endpoint as the client sees this server.
fn soap_address(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(url) = &state.config.public_url {
        return format!("{}/", url.trim_end_matches('/'));
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
    format!("{scheme}://{host}/")
}

fn wsdl_response(state: &AppState, headers: &HeaderMap) -> Response {
    (
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        render(&soap_address(state, headers)),
    )
        .into_response()
}

/// `GET /wsdl`
pub async fn serve(State(state): State<AppState>, headers: HeaderMap) -> Response {
    wsdl_response(&state, &headers)
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
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if query.keys().any(|k| k.eq_ignore_ascii_case("wsdl")) {
        return wsdl_response(&state, &headers);
    }
    if from_a_browser(&headers) {
        return axum::response::Redirect::to("/panel/").into_response();
    }
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "Extility control API.\n\
         SOAP 1.1: POST / (WSDL at /?wsdl)\n\
         JSON: POST /api/v1/<Operation> (OpenAPI at /openapi.json)\n",
    )
        .into_response()
}
