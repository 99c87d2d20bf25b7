//! The HTTP side of the control panel's sessions (the sessions themselves, and the table, are
//! `crate::ops::accounts::session`).
//!
//! - **Cookies.** The session id goes to the browser once, in a cookie (`HttpOnly;
//!   SameSite=Strict; Path=/panel`, and `Secure` when the request came over TLS through a
//!   trusted proxy).
//! - **CSRF.** Each session has its own random anti-forgery token, rendered into every form (a
//!   hidden field) and into htmx's request headers; every POST must carry it back
//!   (`super::PanelForm`). The sign-in form, which has no session yet, carries a token that
//!   must match a short-lived cookie of its own ([`SIGNIN_COOKIE`]).

use axum::http::{HeaderMap, HeaderValue, header};

/// The session cookie's name.
pub const COOKIE: &str = "extility_panel";
/// The sign-in form's anti-forgery cookie (there is no session yet to hold its token).
pub const SIGNIN_COOKIE: &str = "extility_panel_signin";

/// The value of the cookie `name` the request carries.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim().to_string())
}

/// A `Set-Cookie` value for the panel's cookies: `value` for `max_age` seconds (0 deletes it).
pub fn set_cookie(name: &str, value: &str, max_age: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    // The values are our own base64 (or empty): always a valid header.
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/panel; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .expect("cookie values are base64")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_read_by_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; extility_panel=abc; b=2"),
        );
        assert_eq!(cookie(&headers, COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&headers, "c"), None);
    }

    #[test]
    fn session_cookies_are_http_only_strict_and_secure_over_tls() {
        let cookie = set_cookie(
            COOKIE,
            &crate::ops::accounts::secret::random_token(),
            60,
            true,
        );
        let cookie = cookie.to_str().unwrap();
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
        assert!(cookie.contains("Path=/panel") && cookie.ends_with("; Secure"));
    }
}
