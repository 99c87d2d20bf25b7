//! Answers for requests no route takes: a JSON body that says where things are, never an empty
//! 404 or 405.

use axum::Json;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The JSON mirror's path prefix.
const JSON_PREFIX: &str = "/api/v1/";

fn answer(status: StatusCode, code: &str, message: String) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

/// 404: what exists instead.
pub async fn not_found(uri: Uri) -> Response {
    let path = uri.path();
    let message = if let Some(rest) = path
        .strip_prefix(JSON_PREFIX)
        .or(path.strip_prefix("/api/v1"))
    {
        match rest.trim_matches('/') {
            "" => "the JSON API is POST /api/v1/<Operation> with a JSON object of its arguments; \
                   the operations are listed in /openapi.json"
                .to_string(),
            operation if rest.ends_with('/') && !operation.contains('/') => format!(
                "nothing at {path}: did you mean POST /api/v1/{operation} (no trailing slash)?"
            ),
            _ => format!(
                "nothing at {path}: the JSON API is POST /api/v1/<Operation>; the operations are \
                 listed in /openapi.json"
            ),
        }
    } else {
        format!(
            "nothing at {path}: the JSON API is POST /api/v1/<Operation> (listed in \
             /openapi.json), SOAP is POST / (WSDL at /?wsdl), and the control panel is at /panel/"
        )
    };
    answer(StatusCode::NOT_FOUND, "NOT_FOUND", message)
}

/// 405: which method the path takes.
pub async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let path = uri.path();
    let (message, allow) = if path.starts_with(JSON_PREFIX) {
        (
            format!(
                "{method} is not how operations are called: use POST {path} with a JSON object \
                 of the operation's arguments (for example curl -X POST -H 'Content-Type: \
                 application/json' -d '{{}}' ...)"
            ),
            "POST",
        )
    } else if path == "/" {
        (
            format!("{method} is not allowed here: POST a SOAP envelope to /, or GET /?wsdl"),
            "GET, POST",
        )
    } else {
        (format!("{method} is not allowed at {path}"), "GET")
    };
    let mut response = answer(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        message,
    );
    response
        .headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static(allow));
    response
}
