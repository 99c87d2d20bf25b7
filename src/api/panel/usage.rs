//! The Usage tab: the caller's usage lines (ListUsage), between two optional times.

use axum::Router;
use axum::extract::Query;
use axum::response::Response;
use axum::routing::get;
use maud::{Markup, html};

use super::layout::{self, Tab, bytes, opt, text_field};
use super::{Fields, Panel, form, tab_page};
use crate::ops::state::AppState;
use crate::ops::{UsageRecord, args, call};

pub fn routes() -> Router<AppState> {
    Router::new().route("/panel/usage", get(page))
}

/// ListUsage's arguments (and what it may take later).
const VIEW: &[&str] = &["from", "to", "page_size", "after_id"];

async fn page(panel: Panel, Query(query): Query<Vec<(String, String)>>) -> Response {
    let view = Fields(query).only(VIEW);
    let main = render(&panel, &view).await;
    tab_page(&panel, Tab::Usage, main).await
}

fn quantity(line: &UsageRecord) -> String {
    match line.kind.as_str() {
        "bytes_fetched" => bytes(line.quantity),
        _ => line.quantity.to_string(),
    }
}

fn id(id: Option<i64>) -> String {
    id.map(|v| v.to_string()).unwrap_or_default()
}

async fn render(panel: &Panel, view: &Fields) -> Markup {
    let usage = call::ListUsage(&panel.ctx, form::<args::ListUsage>(view, &[])).await;
    layout::main(
        "Usage",
        html! {
            form.picker method="get" action=(Tab::Usage.path()) {
                (text_field("usage", "from", "From", view.get("from").unwrap_or(""), false,
                    Some("an RFC 3339 time, such as 2024-05-01T00:00:00Z")))
                (text_field("usage", "to", "Until", view.get("to").unwrap_or(""), false, None))
                button type="submit" { "Show" }
            }
            @match &usage {
                Err(err) => p.error role="alert" id="usage-error" { (err.public_message()) },
                Ok(list) => {
                    @if list.is_empty() {
                        p { "No usage recorded in this period." }
                    } @else {
                        div.table-wrap {
                            table.usage {
                                thead { tr {
                                    th scope="col" { "When" }
                                    th scope="col" { "Kind" }
                                    th scope="col" { "Image" }
                                    th scope="col" { "Offer" }
                                    th scope="col" { "Server" }
                                    th scope="col" { "Disk" }
                                    th scope="col" { "Job" }
                                    th scope="col" { "Quantity" }
                                } }
                                tbody {
                                    @for line in list {
                                        tr {
                                            td { (layout::time(line.created)) }
                                            td { (line.kind.replace('_', " ")) }
                                            td { (opt(&line.image_name)) }
                                            td.num { (id(line.product_offer_id)) }
                                            td.num { (id(line.server_id)) }
                                            td.num { (id(line.disk_id)) }
                                            td.num { (id(line.job_id)) }
                                            td.num { (quantity(line)) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}
