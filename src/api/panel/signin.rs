//! Signing in and out. The e-mail and password are checked exactly as an API call's Basic
//! credentials are (`crate::api::auth::authenticate_password`: the login throttle, the
//! argon2 check and its cache, a failed login in the audit trail); a right pair makes a
//! session (`super::session`) whose id goes to the browser in an HttpOnly cookie.

use std::convert::Infallible;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::html;

use super::session::{self, COOKIE, SIGNIN_COOKIE};
use super::{PanelForm, layout, read_fields};
use crate::api::auth::{self, ClientAddress};
use crate::error::ApiError;
use crate::ops::Via;
use crate::ops::accounts::{secret, session as sessions};
use crate::ops::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/panel/signin", get(form).post(submit))
        .route("/panel/signout", post(signout))
}

/// Whether the request came over TLS (through a trusted proxy): the cookies are then `Secure`.
struct Tls(bool);

impl FromRequestParts<AppState> for Tls {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Infallible> {
        Ok(Tls(auth::over_tls(parts, &state.config.trusted_proxies)))
    }
}

/// How long the sign-in form's anti-forgery cookie lives.
const SIGNIN_FORM_SECONDS: u64 = 3600;

/// The sign-in page, with a fresh anti-forgery token (in a cookie of its own and in the form).
fn signin_page(status: StatusCode, tls: bool, email: &str, error: Option<&str>) -> Response {
    let token = secret::random_token();
    let body = html! {
        div.signin {
            h1 { "Sign in to Extility" }
            form method="post" action="/panel/signin" {
                input type="hidden" name="_csrf" value=(token);
                @if let Some(error) = error {
                    p.error role="alert" id="signin-error" { (error) }
                }
                div.field {
                    label for="email" { "E-mail" }
                    input #email type="email" name="email" value=(email) required
                        autocomplete="username" autofocus;
                }
                div.field {
                    label for="password" { "Password" }
                    input #password type="password" name="password" required
                        autocomplete="current-password";
                }
                button.primary type="submit" { "Sign in" }
            }
            p.hint #signin-accounts {
                "Accounts are made by the platform's operator, on the server: "
                code { "extility customer add --email you@example.com --password-stdin" }
                ". The same e-mail and password work for the SOAP and JSON APIs."
            }
        }
    };
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        layout::bare_page("Sign in", body).into_string(),
    )
        .into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        session::set_cookie(SIGNIN_COOKIE, &token, SIGNIN_FORM_SECONDS, tls),
    );
    response
}

async fn form(State(state): State<AppState>, Tls(tls): Tls, headers: HeaderMap) -> Response {
    // Signed in already: straight to the panel.
    if let Some(secret) = session::cookie(&headers, COOKIE)
        && let Ok(Some(_)) = sessions::find(&state.db, &secret).await
    {
        return Redirect::to("/panel/").into_response();
    }
    signin_page(StatusCode::OK, tls, "", None)
}

/// The message for a refused sign-in.
fn refusal(err: &ApiError) -> String {
    match err {
        ApiError::Unauthenticated => "The e-mail address or the password is wrong.".into(),
        other => other.public_message(),
    }
}

async fn submit(
    State(state): State<AppState>,
    Tls(tls): Tls,
    client: ClientAddress,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let fields = match read_fields(body).await {
        Ok(fields) => fields,
        Err(err) => return signin_page(StatusCode::BAD_REQUEST, tls, "", Some(&refusal(&err))),
    };
    let email = fields.get("email").unwrap_or("").trim();
    // The form's token must match its cookie: another site cannot sign a browser in.
    let expected = session::cookie(&headers, SIGNIN_COOKIE);
    let sent = fields.get("_csrf");
    if !matches!((expected, sent), (Some(e), Some(s)) if secret::same_secret(&e, s)) {
        return signin_page(
            StatusCode::FORBIDDEN,
            tls,
            email,
            Some("The sign-in form had expired. Please sign in again."),
        );
    }
    let password = fields.get("password").unwrap_or("");
    let caller =
        match auth::authenticate_password(&state, email, password, client.origin(Via::Panel)).await
        {
            Ok(caller) => caller,
            Err(err) => {
                let status = crate::api::error::http_status(&err);
                return signin_page(status, tls, email, Some(&refusal(&err)));
            }
        };
    let secret = match sessions::create(&state.db, &caller).await {
        Ok(secret) => secret,
        Err(err) => {
            let status = crate::api::error::http_status(&err);
            return signin_page(status, tls, email, Some(&refusal(&err)));
        }
    };
    let mut response = Redirect::to("/panel/").into_response();
    let cookies = response.headers_mut();
    cookies.append(
        header::SET_COOKIE,
        session::set_cookie(COOKIE, &secret, sessions::ABSOLUTE.as_secs(), tls),
    );
    cookies.append(
        header::SET_COOKIE,
        session::set_cookie(SIGNIN_COOKIE, "", 0, tls),
    );
    response
}

async fn signout(Tls(tls): Tls, headers: HeaderMap, PanelForm(panel, _): PanelForm) -> Response {
    if let Some(secret) = session::cookie(&headers, COOKIE)
        && let Err(err) = sessions::delete(&panel.ctx.state.db, &secret).await
    {
        return super::error_page(&err);
    }
    let mut response = Redirect::to("/panel/signin").into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, session::set_cookie(COOKIE, "", 0, tls));
    response
}
