//! A running server's interactive consoles in the panel: `/panel/servers/{id}/console` shows
//! its screen in noVNC, with "Send Ctrl-Alt-Del" and "Paste text" (typed into the guest key by
//! key, for a first-boot password), and `?kind=serial` its serial port in xterm.js. Each page
//! load asks GetConsoleAccess for a token (through the operation table, `via` panel) and
//! `assets/console.js` opens the console WebSocket on this server with it.
//!
//! noVNC and xterm.js are served from the binary under `/panel/assets/` with their licences
//! beside them (`assets/README.md`): never from a CDN.

use axum::Router;
use axum::extract::{Path, Query};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, Tab};
use super::{Panel, asset, tab_page};
use crate::ops::state::AppState;
use crate::ops::{args, call};

const NOVNC_JS: &[u8] = include_bytes!("../../../assets/novnc/novnc.min.js");
const NOVNC_LICENCE: &[u8] = include_bytes!("../../../assets/novnc/LICENSE.txt");
const NOVNC_MPL: &[u8] = include_bytes!("../../../assets/novnc/LICENSE.MPL-2.0");
const NOVNC_BSD: &[u8] = include_bytes!("../../../assets/novnc/LICENSE.BSD-3-Clause");
const PAKO_LICENCE: &[u8] = include_bytes!("../../../assets/novnc/LICENSE.pako");
const XTERM_JS: &[u8] = include_bytes!("../../../assets/xterm/xterm.js");
const XTERM_CSS: &[u8] = include_bytes!("../../../assets/xterm/xterm.css");
const XTERM_LICENCE: &[u8] = include_bytes!("../../../assets/xterm/LICENSE");
/// The console pages' own script: connects noVNC or xterm.js to the console WebSocket.
const CONSOLE_JS: &[u8] = include_bytes!("../../../assets/console.js");

/// The panel's policy, but xterm.js and noVNC set styles of their own elements (xterm.js
/// writes a `<style>` element for its theme): inline styles are allowed on these pages, and
/// still no script but the panel's own files.
const CONSOLE_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
    form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn routes() -> Router<AppState> {
    const JS: &str = "text/javascript; charset=utf-8";
    const TEXT: &str = "text/plain; charset=utf-8";
    Router::new()
        .route("/panel/servers/{server_id}/console", get(page))
        .route(
            "/panel/assets/console.js",
            get(|| async { asset(JS, CONSOLE_JS) }),
        )
        .route(
            "/panel/assets/novnc/novnc.min.js",
            get(|| async { asset(JS, NOVNC_JS) }),
        )
        .route(
            "/panel/assets/novnc/LICENSE.txt",
            get(|| async { asset(TEXT, NOVNC_LICENCE) }),
        )
        .route(
            "/panel/assets/novnc/LICENSE.MPL-2.0",
            get(|| async { asset(TEXT, NOVNC_MPL) }),
        )
        .route(
            "/panel/assets/novnc/LICENSE.BSD-3-Clause",
            get(|| async { asset(TEXT, NOVNC_BSD) }),
        )
        .route(
            "/panel/assets/novnc/LICENSE.pako",
            get(|| async { asset(TEXT, PAKO_LICENCE) }),
        )
        .route(
            "/panel/assets/xterm/xterm.js",
            get(|| async { asset(JS, XTERM_JS) }),
        )
        .route(
            "/panel/assets/xterm/xterm.css",
            get(|| async { asset("text/css; charset=utf-8", XTERM_CSS) }),
        )
        .route(
            "/panel/assets/xterm/LICENSE",
            get(|| async { asset(TEXT, XTERM_LICENCE) }),
        )
}

#[derive(Deserialize)]
struct View {
    #[serde(default)]
    kind: Option<String>,
}

async fn page(panel: Panel, Path(server_id): Path<i64>, Query(view): Query<View>) -> Response {
    let kind = match view.kind.as_deref() {
        Some("serial") => "serial",
        _ => "screen",
    };
    let server = call::GetServer(&panel.ctx, args::GetServer { server_id }).await;
    let access = call::GetConsoleAccess(
        &panel.ctx,
        args::GetConsoleAccess {
            server_id,
            kind: kind.to_string(),
        },
    )
    .await;
    let name = server
        .as_ref()
        .map(|s| s.server_name.clone())
        .unwrap_or_else(|_| format!("Server {server_id}"));
    let body = html! {
        p.console-nav {
            a href=(format!("/panel/servers/{server_id}")) { "← " (name) }
            " · "
            (switch(server_id, "screen", "Screen", kind))
            " · "
            (switch(server_id, "serial", "Serial port", kind))
        }
        @match &access {
            Err(err) => p.error role="alert" #console-error { (err.public_message()) },
            Ok(access) => (console(kind, &access.token)),
        }
    };
    let main = layout::main(&format!("Console of {name}"), body);
    let mut response = tab_page(&panel, Tab::Servers, main).await.into_response();
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONSOLE_POLICY),
    );
    response
}

fn switch(server_id: i64, kind: &str, label: &str, shown: &str) -> Markup {
    html! {
        a href=(format!("/panel/servers/{server_id}/console?kind={kind}"))
            aria-current=[(kind == shown).then_some("page")] { (label) }
    }
}

/// The console's element, with the token `console.js` connects with.
fn console(kind: &str, token: &str) -> Markup {
    html! {
        p.console-state role="status" #console-state { "Connecting…" }
        @if kind == "screen" {
            div.console-actions {
                button type="button" #send-cad { "Send Ctrl-Alt-Del" }
                form #paste-form {
                    label for="paste-text" { "Paste text" }
                    input type="text" #paste-text autocomplete="off" spellcheck="false"
                        placeholder="typed into the server, key by key";
                    label.checkbox { input type="checkbox" #paste-enter checked; " then Enter" }
                    button type="submit" { "Type it" }
                }
            }
            div.console-screen #console data-kind="screen" data-token=(token) {}
        } @else {
            link rel="stylesheet" href="/panel/assets/xterm/xterm.css";
            script src="/panel/assets/xterm/xterm.js" {}
            div.console-terminal #console data-kind="serial" data-token=(token) {}
        }
        script type="module" src="/panel/assets/console.js" {}
    }
}
