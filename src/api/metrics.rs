//! `GET /metrics`: this node's metrics in the Prometheus text format, for the clients of
//! `--metrics-allow` (loopback unless the operator says otherwise).

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::auth::ClientAddress;
use crate::ops;
use crate::ops::state::AppState;

/// The content type of the Prometheus text format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

pub async fn serve(
    State(state): State<AppState>,
    ClientAddress(client): ClientAddress,
) -> Response {
    let client = client.to_canonical();
    if !state
        .config
        .metrics_allow
        .iter()
        .any(|net| net.contains(&client))
    {
        return (
            StatusCode::FORBIDDEN,
            "metrics are for the addresses of --metrics-allow\n",
        )
            .into_response();
    }
    match ops::platform::metrics::render(&state).await {
        Ok(text) => ([(header::CONTENT_TYPE, TEXT_FORMAT)], text).into_response(),
        Err(err) => {
            tracing::error!(error = %err, "reading the metrics failed");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}
