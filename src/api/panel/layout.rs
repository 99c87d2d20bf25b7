//! The panel's page shell and the small pieces every tab renders with: the document, the tab
//! bar, forms that carry the anti-forgery token and post through htmx, what an action did
//! (next to the form that did it), and the formatting of sizes, times and statuses. Tabs read
//! the typed records the operations return (`crate::ops::call`), never fields by name.

use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::{Fields, Outcome};
use crate::error::ApiResult;
use crate::ops::Vdc;
use crate::ops::wire::Timestamp;

/// The panel's tabs, in the order the bar shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Servers,
    Disks,
    Images,
    Jobs,
    Usage,
    Firewall,
}

impl Tab {
    pub const ALL: [Tab; 6] = [
        Tab::Servers,
        Tab::Disks,
        Tab::Images,
        Tab::Firewall,
        Tab::Jobs,
        Tab::Usage,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Tab::Servers => "Servers",
            Tab::Disks => "Disks",
            Tab::Images => "Images",
            Tab::Jobs => "Jobs",
            Tab::Usage => "Usage",
            Tab::Firewall => "Firewall",
        }
    }

    pub fn path(self) -> &'static str {
        match self {
            Tab::Servers => "/panel/servers",
            Tab::Disks => "/panel/disks",
            Tab::Images => "/panel/images",
            Tab::Jobs => "/panel/jobs",
            Tab::Usage => "/panel/usage",
            Tab::Firewall => "/panel/firewall",
        }
    }
}

/// htmx's settings: no inline styles (the Content-Security-Policy allows none) and no eval.
const HTMX_CONFIG: &str = r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false,"historyCacheSize":0}"#;

/// The `<head>` every page has.
fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="htmx-config" content=(HTMX_CONFIG);
            title { (title) " · Extility" }
            link rel="icon" href="data:,";
            link rel="stylesheet" href="/panel/assets/panel.css";
            script src="/panel/assets/htmx.min.js" defer {}
            script src="/panel/assets/panel.js" defer {}
        }
    }
}

/// A signed-in page: the tab bar, who is signed in with the sign-out button, and `main`.
pub fn page(tab: Tab, email: &str, csrf_token: &str, main: Markup) -> Markup {
    let hx_headers = serde_json::json!({ "X-CSRF-Token": csrf_token }).to_string();
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(tab.title()))
            body hx-headers=(hx_headers) {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/panel/" { "Extility" }
                    nav aria-label="Sections" {
                        ul.tabs {
                            @for t in Tab::ALL {
                                li {
                                    a href=(t.path())
                                        aria-current=[(t == tab).then_some("page")] { (t.title()) }
                                }
                            }
                        }
                    }
                    div.who {
                        span.email { (email) }
                        form method="post" action="/panel/signout" {
                            input type="hidden" name="_csrf" value=(csrf_token);
                            button.link type="submit" { "Sign out" }
                        }
                    }
                }
                (main)
            }
        }
    }
}

/// A page without the tab bar (signing in, a refused form).
pub fn bare_page(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body.bare {
                main #main { (body) }
            }
        }
    }
}

/// The `main` element of a tab: what htmx swaps after an action.
pub fn main(title: &str, body: Markup) -> Markup {
    html! {
        main #main tabindex="-1" {
            h1 { (title) }
            (body)
        }
    }
}

/// A form that posts to `action` (with the anti-forgery token), through htmx when it runs:
/// the answer is the tab's page again, whose `main` replaces this one, with what the action
/// did next to the form `id`. Without JavaScript it is an ordinary form.
pub fn post_form(csrf_token: &str, action: &str, id: &str, class: &str, body: Markup) -> Markup {
    html! {
        form #(id) class=(class) method="post" action=(action)
            hx-post=(action) hx-target="#main" hx-select="#main" hx-swap="outerHTML"
            hx-disabled-elt="find button[type=submit]" {
            input type="hidden" name="_csrf" value=(csrf_token);
            (body)
        }
    }
}

/// What the last action did, if it was the form `id`'s: an error (with the API's message) or
/// a notice.
pub fn outcome_for(outcome: Option<&Outcome>, id: &str) -> Markup {
    html! {
        @if let Some(o) = outcome.filter(|o| o.form == id) {
            @match &o.result {
                Ok(notice) => p.notice role="status" { (notice) },
                Err(message) => p.error role="alert" id=(format!("{id}-error")) { (message) },
            }
        }
    }
}

/// The value the user typed into field `name` of form `id`, when the last action was that
/// form's and failed (so that a correction does not mean typing everything again).
pub fn typed<'a>(outcome: Option<&'a Outcome>, id: &str, name: &str) -> &'a str {
    outcome
        .filter(|o| o.form == id && o.result.is_err())
        .and_then(|o| o.fields.get(name))
        .unwrap_or("")
}

/// Whether the last action was the form `id`'s and failed (its dialog opens again).
pub fn failed(outcome: Option<&Outcome>, id: &str) -> bool {
    outcome.is_some_and(|o| o.form == id && o.result.is_err())
}

/// A labelled text input.
pub fn text_field(
    form: &str,
    name: &str,
    label: &str,
    value: &str,
    required: bool,
    hint: Option<&str>,
) -> Markup {
    let id = format!("{form}-{name}");
    html! {
        div.field {
            label for=(id) { (label) @if !required { span.optional { " (optional)" } } }
            input type="text" id=(id) name=(name) value=(value) required[required]
                autocomplete="off" aria-describedby=[hint.map(|_| format!("{id}-hint"))];
            @if let Some(hint) = hint { small.hint id=(format!("{id}-hint")) { (hint) } }
        }
    }
}

/// A labelled select of `(value, text)` options, `selected` chosen.
pub fn select_field(
    form: &str,
    name: &str,
    label: &str,
    options: &[(String, String)],
    selected: &str,
) -> Markup {
    let id = format!("{form}-{name}");
    html! {
        div.field {
            label for=(id) { (label) }
            select id=(id) name=(name) {
                @for (value, text) in options {
                    option value=(value) selected[value == selected] { (text) }
                }
            }
        }
    }
}

/// An optional text of a record, or nothing.
pub fn opt(text: &Option<String>) -> &str {
    text.as_deref().unwrap_or("")
}

/// The items of a list an operation returned, or none when it failed.
pub fn items<T>(list: &ApiResult<Vec<T>>) -> &[T] {
    list.as_ref().map(Vec::as_slice).unwrap_or(&[])
}

/// `(id, name)` options of a list an operation returned (none when it failed).
pub fn options<T>(
    list: &ApiResult<Vec<T>>,
    option: impl Fn(&T) -> (i64, &str),
) -> Vec<(String, String)> {
    items(list)
        .iter()
        .map(|item| {
            let (id, name) = option(item);
            (id.to_string(), name.to_string())
        })
        .collect()
}

/// Bytes for people: `512 MiB`, `1.5 GiB`.
pub fn bytes(n: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n.max(0) as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value >= 100.0 || value.fract() < 0.05 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A time as `2024-05-01 12:34` (UTC), in a `time` element whose `datetime` is RFC 3339, as
/// the API shows it.
pub fn time(at: Timestamp) -> Markup {
    let at = chrono::DateTime::from_timestamp_millis(at.0).unwrap_or_default();
    let rfc3339 = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let shown = at.format("%Y-%m-%d %H:%M").to_string();
    html! { time datetime=(rfc3339) { (shown) } }
}

/// A server's status in words.
pub fn server_status(status: i64) -> &'static str {
    match status {
        1 => "error",
        2 => "running",
        3 => "starting",
        4 => "stopping",
        5 => "stopped",
        _ => "unknown",
    }
}

/// A job's status in words.
pub fn job_status(status: i64) -> &'static str {
    match status {
        1 => "done",
        2 => "running",
        3 => "failed",
        4 => "cancelled",
        6 => "queued",
        7 => "waiting",
        _ => "unknown",
    }
}

/// The options of the VDC picker, and the VDC shown (`vdc_id` in the view, else the first).
pub fn vdc_options(vdcs: &[Vdc], view: &Fields) -> (Vec<(String, String)>, Option<i64>) {
    let options: Vec<(String, String)> = vdcs
        .iter()
        .map(|v| (v.vdc_id.to_string(), v.vdc_name.clone()))
        .collect();
    let chosen = view
        .get("vdc_id")
        .and_then(|v| v.trim().parse().ok())
        .or_else(|| options.first().and_then(|(id, _)| id.parse().ok()));
    (options, chosen)
}

/// The VDC picker: a GET form that shows another VDC's things.
pub fn vdc_picker(path: &str, options: &[(String, String)], chosen: Option<i64>) -> Markup {
    let chosen = chosen.map(|c| c.to_string()).unwrap_or_default();
    html! {
        form.picker method="get" action=(path) {
            (select_field("picker", "vdc_id", "VDC", options, &chosen))
            button type="submit" { "Show" }
        }
    }
}

/// Text that is already HTML (the few fixed strings that carry a link).
pub fn raw(html: &'static str) -> PreEscaped<&'static str> {
    PreEscaped(html)
}

/// The links under a paged list at `path` (shown with `view`): to the next page, after the
/// last item's id (`id`), when the page is full, and back to the first when this is not it.
/// `cursor` is the list operation's cursor argument (`after_id`, or `before_id` for the
/// newest-first lists).
pub fn pager<T>(
    path: &str,
    view: &super::Fields,
    list: &[T],
    id: impl Fn(&T) -> i64,
    cursor: &str,
) -> Markup {
    let page_size = view
        .get("page_size")
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(super::PAGE_SIZE as usize);
    let next = (list.len() >= page_size)
        .then(|| list.last().map(id))
        .flatten();
    let first = view.get(cursor).is_some();
    html! {
        @if next.is_some() || first {
            nav.pager aria-label="Pages" {
                @if first {
                    a href=(format!("{path}{}", view.set(cursor, None).query_string())) { "First page" }
                }
                @if let Some(last) = next {
                    a href=(format!("{path}{}", view.set(cursor, Some(&last.to_string())).query_string())) {
                        "Next page"
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1 << 30), "1 GiB");
        assert_eq!(bytes(3 << 29), "1.5 GiB");
        assert_eq!(bytes(20 << 30), "20 GiB");
    }

    #[test]
    fn text_is_escaped() {
        let page = main("<b>", html! { ("<script>") });
        let page = page.into_string();
        assert!(page.contains("&lt;b&gt;") && page.contains("&lt;script&gt;"));
    }
}
