//! The JSON mirror: `POST /api/v1/<Operation>` with the operation's arguments as a JSON object.
//! Lists come back as arrays, records as objects, and a scalar as an object with one field
//! named after the operation's result (`{"job_id": 42}`), beside the operation's later result
//! parts if it has any (`{"result": 1, "hygiene": {...}}`: `ops::registry`, "Result parts").

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::{auth, guard, read_body};
use crate::error::{ApiError, ApiResult};
use crate::ops::state::AppState;
use crate::ops::wire::WireType;
use crate::ops::{Ctx, Origin, Via, registry};

pub async fn handle(
    _checked: guard::JsonGuard,
    State(state): State<AppState>,
    Path(operation): Path<String>,
    client: auth::ClientAddress,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let origin = client.origin(Via::Json);
    match call(state, &operation, origin, &headers, body).await {
        Ok(value) => Json(value).into_response(),
        Err(err) => error_response(&err.classified()),
    }
}

async fn call(
    state: AppState,
    operation: &str,
    origin: Origin,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Value> {
    let caller = auth::authenticate(&state, headers, origin).await?;
    let op = registry::find_or_suggest(operation)?;
    let bytes = read_body(body).await?;
    let args = if bytes.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(args)) => args,
            Ok(_) => {
                return Err(ApiError::MalformedRequest(
                    "the body must be a JSON object of named arguments".into(),
                ));
            }
            Err(e) => return Err(ApiError::MalformedRequest(format!("invalid JSON: {e}"))),
        }
    };
    let ctx = Ctx {
        state,
        caller,
        origin,
    };
    let result = (op.call)(&ctx, args).await?;
    Ok(match op.result {
        // An operation of several parts returns them as an object by name already.
        _ if !op.extra_results.is_empty() => result,
        WireType::Struct(_) | WireType::Array(_) => result,
        _ => json!({ op.result_name: result }),
    })
}

pub fn error_response(err: &ApiError) -> Response {
    let body = json!({"error": {"code": err.code(), "message": err.public_message()}});
    let mut response = (super::error::http_status(err), Json(body)).into_response();
    if matches!(
        err,
        ApiError::CredentialsMissing | ApiError::Unauthenticated
    ) {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(auth::WWW_AUTHENTICATE),
        );
    }
    if let Some(seconds) = err.retry_after() {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}
