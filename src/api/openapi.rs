//! The OpenAPI 3.0 document of the JSON mirror, generated from the operation table: the
//! current API version, every operation, argument and field.
//!
//! `openapi/openapi.json` in the repository is this output; a test keeps it current
//! (`extility openapi > openapi/openapi.json` regenerates it).

use std::sync::LazyLock;

use axum::Json;
use axum::response::IntoResponse;
use serde_json::{Map, Value, json};

use crate::ops::OPERATIONS;
use crate::ops::registry::CURRENT;
use crate::ops::wire::{StructType, WireType};

static DOCUMENT: LazyLock<Value> = LazyLock::new(generate);

pub fn document() -> &'static Value {
    &DOCUMENT
}

pub async fn serve() -> impl IntoResponse {
    Json(document().clone())
}

fn schema(ty: &WireType, nillable: bool, structs: &mut Map<String, Value>) -> Value {
    let mut schema = match ty {
        WireType::Long => json!({"type": "integer", "format": "int64"}),
        WireType::String => json!({"type": "string"}),
        WireType::Boolean => json!({"type": "boolean"}),
        WireType::DateTime => json!({"type": "string", "format": "date-time"}),
        WireType::Array(item) => json!({"type": "array", "items": schema(item, false, structs)}),
        WireType::Struct(s) => {
            add_struct(s, structs);
            if nillable {
                // OpenAPI 3.0 cannot mark a $ref nullable directly.
                return json!({"allOf": [{"$ref": format!("#/components/schemas/{}", s.name)}], "nullable": true});
            }
            return json!({"$ref": format!("#/components/schemas/{}", s.name)});
        }
    };
    if nillable {
        schema["nullable"] = Value::Bool(true);
    }
    schema
}

fn add_struct(s: &StructType, structs: &mut Map<String, Value>) {
    if structs.contains_key(s.name) {
        return;
    }
    structs.insert(s.name.to_string(), Value::Null);
    let mut properties = Map::new();
    for f in s.fields {
        properties.insert(f.name.to_string(), schema(&f.ty, f.nillable, structs));
    }
    let required: Vec<&str> = s.fields.iter().map(|f| f.name).collect();
    structs.insert(
        s.name.to_string(),
        json!({
            "type": "object",
            "description": s.doc.trim(),
            "properties": properties,
            "required": required,
        }),
    );
}

fn generate() -> Value {
    let mut structs = Map::new();
    let mut paths = Map::new();
    for op in OPERATIONS {
        let mut properties = Map::new();
        let mut required = Vec::new();
        for p in op.params {
            properties.insert(p.name.to_string(), schema(&p.ty, p.optional, &mut structs));
            if !p.optional {
                required.push(p.name);
            }
        }
        let mut request = json!({
            "type": "object",
            "properties": properties,
            "additionalProperties": false,
        });
        if !required.is_empty() {
            request["required"] = json!(required);
        }
        let result = match op.result {
            WireType::Struct(_) | WireType::Array(_) if op.extra_results.is_empty() => {
                schema(&op.result, false, &mut structs)
            }
            // A scalar, and the later parts if any: an object of the parts by name.
            _ => {
                let mut properties = Map::new();
                let mut required = Vec::new();
                for part in op.results_in(CURRENT) {
                    let mut property = schema(&part.ty, false, &mut structs);
                    if part.since > op.since {
                        let since = format!("Since API version {}.", part.since);
                        property = match property {
                            // A description beside a $ref is ignored: wrap it.
                            Value::Object(o) if o.contains_key("$ref") => {
                                json!({"allOf": [o], "description": since})
                            }
                            mut other => {
                                other["description"] = Value::String(since);
                                other
                            }
                        };
                    }
                    properties.insert(part.name.to_string(), property);
                    required.push(part.name);
                }
                json!({
                    "type": "object",
                    "properties": properties,
                    "required": required,
                })
            }
        };
        let doc = op.doc.split_whitespace().collect::<Vec<_>>().join(" ");
        paths.insert(
            format!("/api/v1/{}", op.name),
            json!({
                "post": {
                    "operationId": op.name,
                    "summary": doc,
                    "requestBody": {
                        "required": !required.is_empty(),
                        "content": {"application/json": {"schema": request}},
                    },
                    "responses": {
                        "200": {
                            "description": "The result of the operation.",
                            "content": {"application/json": {"schema": result}},
                        },
                        "default": {"$ref": "#/components/responses/Error"},
                    },
                }
            }),
        );
    }
    structs.insert(
        "Error".into(),
        json!({
            "type": "object",
            "properties": {
                "error": {
                    "type": "object",
                    "properties": {
                        "code": {"type": "string", "description": "A stable code such as NOT_FOUND or INVALID_ARGUMENT."},
                        "message": {"type": "string"},
                    },
                    "required": ["code", "message"],
                }
            },
            "required": ["error"],
        }),
    );
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Extility JSON API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!("The JSON mirror of the Extility SOAP API's current version (version {CURRENT}, WSDL at /v{CURRENT}/?wsdl): every operation, with the same names and arguments, as POST /api/v1/<Operation>. It is not versioned: it takes every argument of the current version, and optional ones may be left out. HTTP Basic authentication with the customer's e-mail and password, or with an authentication token (GetAuthenticationToken) as the user name and any password, or the token as a Bearer token."),
        },
        "security": [{"basic": []}, {"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
            "schemas": structs,
            "responses": {
                "Error": {
                    "description": "The operation failed; the HTTP status says how (400 bad input, 401 no or wrong credentials, 403 not allowed, or over a quota (QUOTA_EXCEEDED), 404 no such resource, 409 wrong state, 413 body too large, 429 a limit reached, too many failed logins (`TOO_MANY_LOGIN_ATTEMPTS` with a `Retry-After` header, no password checked), or too many of the customer's calls in flight (`TOO_MANY_REQUESTS` with a `Retry-After` header, nothing done; safe to retry)).",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                }
            },
        },
    })
}
