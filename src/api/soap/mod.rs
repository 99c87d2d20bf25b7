//! The SOAP adapter: `POST /` (version 1 of the API) and `POST /v{N}/` (version N) take a
//! SOAP 1.1 envelope, call the operation it names with the arguments that version has, and
//! answer with its result, shaped as that version's WSDL says, or a Fault.

pub mod codec;
pub mod xml;

use std::collections::HashMap;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::{auth, guard, read_body};
use crate::error::{ApiError, ApiResult};
use crate::ops::registry::Version;
use crate::ops::state::AppState;
use crate::ops::{Ctx, Origin, Via, registry};

/// `POST /`: version 1, the first release's API.
pub async fn handle(
    checked: guard::SoapGuard,
    state: State<AppState>,
    client: auth::ClientAddress,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle_version(registry::FIRST, checked, state, client, headers, body).await
}

/// `POST /v{version}/`: only with a SOAP content type and, with credentials, from no other
/// origin (`guard::SoapGuard`, which every version's handler takes).
pub async fn handle_version(
    version: Version,
    _checked: guard::SoapGuard,
    State(state): State<AppState>,
    client: auth::ClientAddress,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let origin = client.origin(Via::Soap);
    match call(state, version, origin, &headers, body).await {
        Ok(xml) => xml_response(StatusCode::OK, xml),
        Err(err) => fault_response(&err.classified()),
    }
}

async fn call(
    state: AppState,
    version: Version,
    origin: Origin,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<String> {
    let caller = auth::authenticate(&state, headers, origin).await?;
    let bytes = read_body(body).await?;
    let call = codec::read_call(xml::parse(&bytes)?)?;
    let op = registry::find(&call.operation).ok_or_else(|| registry::unknown(&call.operation))?;
    if !op.in_version(version) {
        return Err(ApiError::NotInVersion {
            operation: op.name,
            version,
            since: op.since,
        });
    }
    let args = codec::decode_args(op, version, &call)?;
    let ctx = Ctx {
        state,
        caller,
        origin,
    };
    let result = (op.call)(&ctx, args).await?;
    Ok(codec::encode_response(op, version, &result))
}

/// Each version's own endpoint: `POST /v{N}/` (SOAP), `GET /v{N}/?wsdl` and `GET /v{N}/wsdl`
/// (its WSDL, whose `soap:address` is `/v{N}/`) and the schema the WSDL imports. Version 1 is
/// also `/`, as it always was.
pub fn version_routes() -> Router<AppState> {
    let mut router = Router::new();
    for version in registry::versions() {
        let endpoint = get(
            move |State(state): State<AppState>,
                  Query(query): Query<HashMap<String, String>>,
                  headers: HeaderMap| {
                super::wsdl::serve_endpoint(version, state, query, headers)
            },
        )
        .post(
            move |checked: guard::SoapGuard,
                  state: State<AppState>,
                  client: auth::ClientAddress,
                  headers: HeaderMap,
                  body: Body| {
                handle_version(version, checked, state, client, headers, body)
            },
        );
        router = router
            .route(&format!("/v{version}"), endpoint.clone())
            .route(&format!("/v{version}/"), endpoint)
            // The WSDL imports the SOAP encoding schema relative to its own URL.
            .route(
                &format!("/v{version}/{}", super::wsdl::SOAP_ENCODING_XSD_PATH),
                get(super::wsdl::serve_soap_encoding),
            )
            .route(
                &format!("/v{version}/wsdl"),
                get(move |State(state): State<AppState>, headers: HeaderMap| {
                    super::wsdl::serve_version(version, state, headers)
                }),
            );
    }
    router
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
/// in the body says the same, with its `errorCode`), and a database out of reach a 503 with
/// `Retry-After` (`SERVICE_UNAVAILABLE`), which load balancers and retrying clients know.
pub fn fault_response(err: &ApiError) -> Response {
    let status = match err {
        ApiError::DatabaseUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        ApiError::CredentialsMissing | ApiError::Unauthenticated => StatusCode::UNAUTHORIZED,
        ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        ApiError::TooManyLoginAttempts { .. } | ApiError::TooManyCalls { .. } => {
            StatusCode::TOO_MANY_REQUESTS
        }
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
