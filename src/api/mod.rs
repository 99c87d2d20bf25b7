//! HTTP: the SOAP endpoint, the JSON mirror, the WSDL and OpenAPI documents, and the web
//! control panel (`panel`).

pub mod auth;
pub mod console;
pub mod error;
pub mod fallback;
pub mod guard;
pub mod health;
pub mod internal;
pub mod json;
pub mod metadata;
pub mod metrics;
pub mod nocloud;
pub mod openapi;
pub mod panel;
pub mod reference;
pub mod soap;
pub mod wsdl;

use axum::Router;
use axum::body::Body;
use axum::routing::{get, post};
use tower_http::trace::TraceLayer;

use crate::error::{ApiError, ApiResult};
use crate::ops::state::AppState;

/// Requests larger than this are refused before they are parsed.
pub const MAX_BODY_BYTES: usize = 1 << 20;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(wsdl::serve_root).post(soap::handle))
        .route("/wsdl", get(wsdl::serve))
        .merge(soap::version_routes())
        .route("/schemas/soap-encoding.xsd", get(wsdl::serve_soap_encoding))
        .route("/api/v1/{operation}", post(json::handle))
        .route("/openapi.json", get(openapi::serve))
        .merge(metadata::api_routes())
        .merge(panel::routes())
        .merge(internal::routes())
        .merge(console::routes())
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/metrics", get(metrics::serve))
        .fallback(fallback::not_found)
        .method_not_allowed_fallback(fallback::method_not_allowed)
        // SOAP faults travel as HTTP 500 by the standard: they are not server failures to log.
        // Spans name the path, never the query: a console's one-time token travels in it.
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &axum::http::Request<axum::body::Body>| {
                    tracing::debug_span!(
                        "request",
                        method = %request.method(),
                        path = %request.uri().path(),
                    )
                })
                .on_failure(()),
        )
        .with_state(state)
}

/// Reads a request body of at most [`MAX_BODY_BYTES`].
pub async fn read_body(body: Body) -> ApiResult<axum::body::Bytes> {
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError::PayloadTooLarge(MAX_BODY_BYTES))
}
