//! The SOAP adapter: `POST /` takes a SOAP 1.1 envelope, calls the operation it names and
//! answers with its result or a Fault.

pub mod codec;
pub mod xml;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{auth, guard, read_body};
use crate::error::{ApiError, ApiResult};
use crate::ops::{Ctx, Origin, Via, registry};
use crate::state::AppState;

pub async fn handle(
    _checked: guard::SoapGuard,
    State(state): State<AppState>,
    client: auth::ClientAddress,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let origin = client.origin(Via::Soap);
    match call(state, origin, &headers, body).await {
        Ok(xml) => xml_response(StatusCode::OK, xml),
        Err(err) => fault_response(&err),
    }
}

async fn call(
    state: AppState,
    origin: Origin,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<String> {
    let caller = auth::authenticate(&state, headers, origin).await?;
    let bytes = read_body(body).await?;
    let call = codec::read_call(xml::parse(&bytes)?)?;
    let op = registry::find(&call.operation)
        .ok_or_else(|| ApiError::UnknownOperation(call.operation.clone()))?;
    let args = codec::decode_args(op, &call)?;
    let ctx = Ctx {
        state,
        caller,
        origin,
    };
    let result = (op.call)(&ctx, args).await?;
    Ok(codec::encode_response(op, &result))
}

fn xml_response(status: StatusCode, xml: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        xml,
    )
        .into_response()
}

/// SOAP 1.1 sends every fault with HTTP 500, except that a missing or wrong password is a
/// plain 401 challenge, which HTTP clients (and PHP's SoapClient) understand, and a refused
/// login a 429 with `Retry-After`, which HTTP clients and proxies understand too (the fault
/// in the body says the same, with its `errorCode`).
pub fn fault_response(err: &ApiError) -> Response {
    let status = match err {
        ApiError::Unauthenticated => StatusCode::UNAUTHORIZED,
        ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        ApiError::TooManyLoginAttempts { .. } => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let mut response = xml_response(status, codec::encode_fault(err));
    if status == StatusCode::UNAUTHORIZED {
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
