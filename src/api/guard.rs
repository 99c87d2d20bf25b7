//! What the SOAP and JSON endpoints refuse before they authenticate or run anything, because a
//! browser can be made to send it from another site:
//!
//! - a body of a type an HTML form or a "simple" `fetch` can send. SOAP takes only `text/xml`
//!   (SOAP 1.1) and `application/soap+xml` (SOAP 1.2); JSON only `application/json`, even
//!   with an empty body (a cross-site `fetch` can POST an empty body with no type at all).
//!   Anything else is 415, with a fault or JSON error whose code is `MALFORMED_REQUEST`;
//! - a request from another site's page that carries credentials (`Authorization`, which a
//!   browser adds by itself once its user typed a Basic password for this server): a request
//!   whose `Origin` is not this server's own (`--public-url`'s, or the scheme and `Host` the
//!   request came with) is 403 `PERMISSION_DENIED`. Clients that are not browsers send no
//!   `Origin`; the control panel has cookies and CSRF tokens of its own and is not guarded here.
//!
//! Handlers take [`SoapGuard`] or [`JsonGuard`] as an extractor, so the check runs first.

use axum::extract::FromRequestParts;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, ORIGIN};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use url::Url;

use crate::error::ApiError;
use crate::ops::state::AppState;

/// The SOAP endpoint's check; its refusal is a SOAP fault.
pub struct SoapGuard;

/// The JSON endpoint's check; its refusal is a JSON error.
pub struct JsonGuard;

const SOAP_TYPES: &[&str] = &["text/xml", "application/soap+xml"];
const JSON_TYPES: &[&str] = &["application/json"];

impl FromRequestParts<AppState> for SoapGuard {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        check(parts, state, SOAP_TYPES)
            .map(|()| SoapGuard)
            .map_err(|(status, err)| with_status(super::soap::fault_response(&err), status))
    }
}

impl FromRequestParts<AppState> for JsonGuard {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        check(parts, state, JSON_TYPES)
            .map(|()| JsonGuard)
            .map_err(|(status, err)| with_status(super::json::error_response(&err), status))
    }
}

fn with_status(mut response: Response, status: StatusCode) -> Response {
    *response.status_mut() = status;
    response
}

fn check(parts: &Parts, state: &AppState, types: &[&str]) -> Result<(), (StatusCode, ApiError)> {
    if !has_content_type(&parts.headers, types) {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::MalformedRequest(format!(
                "the request's Content-Type must be {}; nothing was run",
                types.join(" or ")
            )),
        ));
    }
    if parts.headers.contains_key(AUTHORIZATION)
        && let Some(origin) = parts.headers.get(ORIGIN)
    {
        let origin = origin.to_str().unwrap_or_default();
        let host = parts
            .headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| parts.uri.authority().map(|a| a.as_str()));
        if !is_own_origin(origin, host, state.config.public_url.as_deref()) {
            return Err((
                StatusCode::FORBIDDEN,
                ApiError::PermissionDenied(format!(
                    "a request with credentials from the page of another site ({origin}) is \
                     refused; nothing was run"
                )),
            ));
        }
    }
    Ok(())
}

/// Whether the request's `Content-Type` is one of `types` (parameters such as `charset` aside).
fn has_content_type(headers: &HeaderMap, types: &[&str]) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    types.iter().any(|t| essence.eq_ignore_ascii_case(t))
}

/// Whether `origin` (an `Origin` header) is this server's: `public_url`'s origin, or the
/// request's `Host` over http or https (the server may sit behind a TLS proxy). `null`, and
/// anything that is not a URL, is not.
pub(crate) fn is_own_origin(origin: &str, host: Option<&str>, public_url: Option<&str>) -> bool {
    let Ok(origin) = Url::parse(origin) else {
        return false;
    };
    if !matches!(origin.scheme(), "http" | "https") {
        return false;
    }
    if public_url
        .and_then(|p| Url::parse(p).ok())
        .is_some_and(|p| p.origin() == origin.origin())
    {
        return true;
    }
    let (Some(host), Some(origin_host)) = (host, origin.host_str()) else {
        return false;
    };
    // The Host header is `host[:port]`; parsed as a URL's authority it splits the same way
    // the origin does (brackets of IPv6 addresses included).
    let Ok(request) = Url::parse(&format!("{}://{host}", origin.scheme())) else {
        return false;
    };
    request.host_str() == Some(origin_host)
        && request.port_or_known_default() == origin.port_or_known_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn content_types() {
        let mut headers = HeaderMap::new();
        assert!(!has_content_type(&headers, JSON_TYPES), "none at all");
        for (value, soap, json) in [
            ("text/xml; charset=utf-8", true, false),
            ("Text/XML", true, false),
            (
                "application/soap+xml;charset=UTF-8;action=\"x\"",
                true,
                false,
            ),
            ("application/json", false, true),
            ("application/json; charset=utf-8", false, true),
            ("text/plain", false, false),
            ("application/x-www-form-urlencoded", false, false),
            ("multipart/form-data; boundary=x", false, false),
            ("application/jsonp", false, false),
        ] {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(value));
            assert_eq!(has_content_type(&headers, SOAP_TYPES), soap, "{value}");
            assert_eq!(has_content_type(&headers, JSON_TYPES), json, "{value}");
        }
    }

    #[test]
    fn own_origins() {
        let public = Some("https://cloud.example.com/");
        for (origin, host, own) in [
            ("http://127.0.0.1:8080", Some("127.0.0.1:8080"), true),
            ("http://127.0.0.1:8081", Some("127.0.0.1:8080"), false),
            ("http://localhost:8080", Some("127.0.0.1:8080"), false),
            ("https://cloud.example.com", Some("10.0.0.5:8080"), true),
            ("https://cloud.example.com", Some("cloud.example.com"), true),
            ("http://cloud.example.com", Some("cloud.example.com"), true),
            (
                "https://cloud.example.com:8443",
                Some("cloud.example.com"),
                false,
            ),
            ("https://evil.example.com", Some("cloud.example.com"), false),
            ("http://[::1]:8080", Some("[::1]:8080"), true),
            ("null", Some("127.0.0.1:8080"), false),
            ("file://", Some("127.0.0.1:8080"), false),
            ("http://127.0.0.1:8080", None, false),
        ] {
            assert_eq!(
                is_own_origin(origin, host, public),
                own,
                "{origin} {host:?}"
            );
        }
        assert!(!is_own_origin(
            "https://cloud.example.com",
            Some("10.0.0.5:8080"),
            None
        ));
    }
}
