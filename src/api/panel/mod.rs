//! The web control panel at `/panel/`: an adapter like SOAP and JSON, for people.
//!
//! Every page and every action calls operations through their typed calls
//! (`crate::ops::call::ListDisks(ctx, args)`), which go through the entry point the SOAP and
//! JSON adapters use, with a `Ctx` whose origin says `via` panel (so the audit trail records
//! panel calls like any other), and renders the typed records they return, or the error's
//! message next to the form that caused it. A form's arguments are built from its (or the
//! query string's) fields by the operation's own parameter list ([`form`]): a field named like
//! a parameter is that argument, converted by its wire type and decoded inside the call, and
//! fields that name no parameter are ignored. An operation that gains an optional argument (a
//! page size, a filter) takes it from a field or query parameter of that name with no change
//! here. The panel has no logic of its own: what may be done, by whom, is the operations'.
//!
//! HTML is rendered on the server with `maud` (templates compiled into the binary); htmx
//! (`assets/htmx.min.js`, served by the binary) swaps a tab's `main` after an action and
//! polls the Jobs tab's rows, and `assets/panel.js` opens and closes the dialogs. Without
//! JavaScript every form still works as an ordinary form.
//!
//! Signing in, sessions and CSRF: [`session`] and [`signin`].

pub mod layout;
pub mod session;

mod console;
mod disks;
mod firewall;
mod images;
mod jobs;
mod servers;
mod signin;
mod usage;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use maud::Markup;
use serde_json::{Map, Value};

use super::auth::ClientAddress;
use crate::error::{ApiError, ApiResult};
use crate::ops::registry::{self, Arguments, Input, Param};
use crate::ops::state::AppState;
use crate::ops::wire::WireType;
use crate::ops::{Ctx, Via, args, call};
use layout::Tab;

/// htmx 2.0.11 (`dist/htmx.min.js` of the npm package `htmx.org`, Zero-Clause BSD licence;
/// see `assets/README.md`), kept in the repository and served from the binary: no CDN.
const HTMX_JS: &[u8] = include_bytes!("../../../assets/htmx.min.js");
/// The panel's style sheet.
const PANEL_CSS: &[u8] = include_bytes!("../../../assets/panel.css");
/// The panel's one script besides htmx: opening and closing dialogs.
const PANEL_JS: &[u8] = include_bytes!("../../../assets/panel.js");

/// What the browser may load and run on panel pages: only the panel's own files.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; \
    frame-ancestors 'none'; base-uri 'none'";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/panel", get(|| async { Redirect::to("/panel/") }))
        .route(
            "/panel/",
            get(|| async { Redirect::to(Tab::Servers.path()) }),
        )
        .route(
            "/panel/assets/htmx.min.js",
            get(|| async { asset("text/javascript; charset=utf-8", HTMX_JS) }),
        )
        .route(
            "/panel/assets/panel.js",
            get(|| async { asset("text/javascript; charset=utf-8", PANEL_JS) }),
        )
        .route(
            "/panel/assets/panel.css",
            get(|| async { asset("text/css; charset=utf-8", PANEL_CSS) }),
        )
        .merge(signin::routes())
        .merge(servers::routes())
        .merge(disks::routes())
        .merge(images::routes())
        .merge(jobs::routes())
        .merge(usage::routes())
        .merge(console::routes())
        .merge(firewall::routes())
        .layer(axum::middleware::map_response(security_headers))
}

fn asset(content_type: &'static str, bytes: &'static [u8]) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        bytes,
    )
        .into_response()
}

/// Headers on every panel response: pages are never cached (they show a customer's things),
/// never framed, and load nothing from elsewhere.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    // A page with a policy of its own (the consoles') keeps it.
    headers
        .entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// Form or query-string fields, in order; a name given several times is a list.
#[derive(Debug, Clone, Default)]
pub struct Fields(Vec<(String, String)>);

/// How many items a list of the panel shows at once (the operations take up to 1,000).
pub const PAGE_SIZE: i64 = 100;

impl Fields {
    pub fn parse(text: &[u8]) -> Fields {
        Fields(
            url::form_urlencoded::parse(text)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Only the fields named `names` (what a page needs to be shown again: the VDC).
    pub fn only(&self, names: &[&str]) -> Fields {
        Fields(
            self.0
                .iter()
                .filter(|(k, _)| names.contains(&k.as_str()))
                .cloned()
                .collect(),
        )
    }

    /// These fields with `name` set to `value` alone (or without `name`, for `None`).
    pub fn set(&self, name: &str, value: Option<&str>) -> Fields {
        let mut fields: Vec<(String, String)> =
            self.0.iter().filter(|(k, _)| k != name).cloned().collect();
        if let Some(value) = value {
            fields.push((name.to_string(), value.to_string()));
        }
        Fields(fields)
    }

    /// A list's view: these fields, with the panel's page size unless they name one.
    pub fn paged(self) -> Fields {
        if self.get("page_size").is_some() {
            self
        } else {
            self.set("page_size", Some(&PAGE_SIZE.to_string()))
        }
    }

    /// `?a=1&b=2`, or nothing.
    pub fn query_string(&self) -> String {
        if self.0.is_empty() {
            return String::new();
        }
        let mut out = url::form_urlencoded::Serializer::new(String::from("?"));
        for (k, v) in &self.0 {
            out.append_pair(k, v);
        }
        out.finish()
    }
}

/// One field's text as the value of a parameter of wire type `ty`. A number that does not
/// parse goes as the text, so that the operation refuses it with its own message.
fn argument(ty: WireType, text: &str) -> Value {
    match ty {
        WireType::Long => text
            .trim()
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(text.to_string())),
        WireType::Boolean => Value::Bool(matches!(text, "on" | "true" | "1" | "yes")),
        _ => Value::String(text.to_string()),
    }
}

/// The arguments of an operation from form or query fields, by its parameters (`params`): a
/// field named like a parameter is that argument (every field of the name, for a list); an
/// empty field of an optional parameter is not given; a boolean parameter without its field
/// (an unticked checkbox) is false. Fields that name no parameter are ignored.
pub fn arguments(params: &[Param], fields: &Fields) -> Map<String, Value> {
    let mut args = Map::new();
    for param in params {
        match param.ty {
            WireType::Array(item) => {
                let values: Vec<Value> = fields
                    .all(param.name)
                    .filter(|v| !v.trim().is_empty())
                    .map(|v| argument(*item, v))
                    .collect();
                if !values.is_empty() || !param.optional {
                    args.insert(param.name.to_string(), Value::Array(values));
                }
            }
            ty => match fields.get(param.name) {
                Some(text) if param.optional && text.trim().is_empty() => {}
                Some(text) => {
                    args.insert(param.name.to_string(), argument(ty, text));
                }
                None if ty == WireType::Boolean && !param.optional => {
                    args.insert(param.name.to_string(), Value::Bool(false));
                }
                None => {}
            },
        }
    }
    args
}

/// A signed-in panel request: the operation context (the session's customer, this client's
/// address, `via` panel) and the session's anti-forgery token.
pub struct Panel {
    pub ctx: Ctx,
    pub csrf_token: String,
    /// Whether htmx made the request (it swaps part of the page).
    pub htmx: bool,
}

/// The arguments of operation `A` as a form gives them ([`arguments`]), then `fixed` ones
/// (from the URL, or what a button means: `make_image`), which win. The typed call decodes
/// them, so that a field it refuses is its error, shown next to the form.
pub fn form<A: Arguments>(fields: &Fields, fixed: &[(&str, Value)]) -> Input<A> {
    let mut raw = arguments(A::PARAMS, fields);
    for (k, v) in fixed {
        raw.insert((*k).to_string(), v.clone());
    }
    Input::Raw(raw)
}

/// Where a signed-out browser goes: the sign-in page (htmx is told to go there whole).
fn to_signin(htmx: bool) -> Response {
    if htmx {
        (
            StatusCode::OK,
            [("hx-redirect", "/panel/signin")],
            "signed out",
        )
            .into_response()
    } else {
        Redirect::to("/panel/signin").into_response()
    }
}

impl FromRequestParts<AppState> for Panel {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let htmx = parts.headers.contains_key("hx-request");
        let Some(secret) = session::cookie(&parts.headers, session::COOKIE) else {
            return Err(to_signin(htmx));
        };
        let session = match crate::ops::accounts::session::find(&state.db, &secret).await {
            Ok(Some(session)) => session,
            Ok(None) => return Err(to_signin(htmx)),
            Err(err) => return Err(error_page(&err)),
        };
        let Ok(client) = ClientAddress::from_request_parts(parts, state).await;
        Ok(Panel {
            ctx: Ctx {
                state: state.clone(),
                caller: session.caller,
                origin: client.origin(Via::Panel),
            },
            csrf_token: session.csrf_token,
            htmx,
        })
    }
}

/// A signed-in POST whose anti-forgery token is right (the form's `_csrf` field or htmx's
/// `X-CSRF-Token` header), with its form fields. Anything else is refused with 403 before
/// any operation is called.
pub struct PanelForm(pub Panel, pub Fields);

impl FromRequest<AppState> for PanelForm {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let panel = Panel::from_request_parts(&mut parts, state).await?;
        let bytes = super::read_body(body)
            .await
            .map_err(|err| error_page(&err))?;
        let fields = Fields::parse(&bytes);
        let sent = fields.get("_csrf").map(str::to_string).or_else(|| {
            parts
                .headers
                .get("x-csrf-token")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        });
        match sent {
            Some(token) if crate::ops::accounts::secret::same_secret(&token, &panel.csrf_token) => {
                Ok(PanelForm(panel, fields))
            }
            _ => Err(forbidden()),
        }
    }
}

/// The answer to a POST without the session's anti-forgery token: nothing was done.
pub fn forbidden() -> Response {
    let body = layout::bare_page(
        "Refused",
        maud::html! {
            h1 { "Refused" }
            p { "This form did not come from this panel session (its security token is missing \
                 or out of date), so nothing was done." }
            p { a href="/panel/" { "Back to the panel" } }
        },
    );
    (StatusCode::FORBIDDEN, html(body)).into_response()
}

/// The answer to a panel URL that names nothing.
pub fn not_found() -> Response {
    error_page(&registry::unknown("this panel action"))
}

/// A page saying what went wrong when there is no tab to show it on.
fn error_page(err: &ApiError) -> Response {
    let body = layout::bare_page(
        "Error",
        maud::html! {
            h1 { "Something went wrong" }
            p.error role="alert" { (err.public_message()) }
            p { a href="/panel/" { "Back to the panel" } }
        },
    );
    let mut response = (super::error::http_status(err), html(body)).into_response();
    if let Some(seconds) = err.retry_after() {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

fn html(markup: Markup) -> ([(header::HeaderName, &'static str); 1], String) {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
}

/// What an action did, shown on the page it answers with: next to the form `form`.
pub struct Outcome {
    /// The id of the form (or of the row whose buttons) that made the call.
    pub form: String,
    /// A notice, or the API's error message.
    pub result: Result<Markup, String>,
    /// What the form sent (to fill it again after an error).
    pub fields: Fields,
}

/// A full page of tab `tab` with `main` in it (the header names who is signed in).
pub async fn tab_page(panel: &Panel, tab: Tab, main: Markup) -> Response {
    // The e-mail of who is signed in; only a label, so a failure shows none.
    let email = call::GetCustomer(&panel.ctx, args::GetCustomer::default())
        .await
        .map(|c| c.email)
        .unwrap_or_default();
    html(layout::page(tab, &email, &panel.csrf_token, main)).into_response()
}

/// The answer to an action on tab `tab` whose page is `view` (its query: the VDC shown):
/// with htmx, or after an error, the tab's page with what happened next to the form that did
/// it (the status is the error's without htmx, 200 with it so that htmx swaps it in); after a
/// success without htmx, a redirect to the page (so that reloading it does not post again).
pub async fn answer<F>(
    panel: &Panel,
    tab: Tab,
    view: Fields,
    form: String,
    fields: Fields,
    result: ApiResult<Markup>,
    render: F,
) -> Response
where
    F: AsyncFnOnce(&Panel, &Fields, Option<&Outcome>) -> Markup,
{
    let url = format!("{}{}", tab.path(), view.query_string());
    if result.is_ok() && !panel.htmx {
        return Redirect::to(&url).into_response();
    }
    let status = result
        .as_ref()
        .err()
        .map_or(StatusCode::OK, super::error::http_status);
    let outcome = Outcome {
        form,
        result: result.map_err(|e| e.public_message()),
        fields,
    };
    let main = render(panel, &view, Some(&outcome)).await;
    let mut response = tab_page(panel, tab, main).await;
    if panel.htmx {
        if let Ok(url) = HeaderValue::from_str(&url) {
            response.headers_mut().insert("hx-replace-url", url);
        }
    } else {
        *response.status_mut() = status;
    }
    response
}

/// The form fields `Body` of a request, for handlers that read it themselves.
pub async fn read_fields(body: Body) -> ApiResult<Fields> {
    Ok(Fields::parse(&super::read_body(body).await?))
}
