//! The Jobs tab: the caller's jobs, newest first (ListJobs), with their phase, a progress bar
//! with bytes done of total and percent, errors in words and Cancel (CancelJob). The rows are
//! a fragment htmx fetches again every second while a job is unfinished (every five seconds
//! otherwise), so they move without the page being reloaded.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde_json::json;

use super::layout::{self, Tab, bytes, job_status, opt, post_form};
use super::{Fields, Outcome, Panel, PanelForm, answer, form, tab_page};
use crate::ops::state::AppState;
use crate::ops::{Job, args, call};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/panel/jobs", get(page))
        .route("/panel/jobs/rows", get(rows))
        .route("/panel/jobs/{job_id}/cancel", post(cancel))
}

/// The query parameters the Jobs tab keeps (and passes to ListJobs when it takes them).
const VIEW: &[&str] = &["page_size", "status", "job_type", "before_id"];

async fn page(panel: Panel, Query(query): Query<Vec<(String, String)>>) -> Response {
    let view = Fields(query).only(VIEW);
    let main = render(&panel, &view, None).await;
    tab_page(&panel, Tab::Jobs, main).await
}

/// Where the cancel buttons' messages appear: above the table, which polling redraws.
const ACTIONS: &str = "job-actions";

async fn render(panel: &Panel, view: &Fields, outcome: Option<&Outcome>) -> Markup {
    let view = &view.clone().paged();
    let jobs = call::ListJobs(&panel.ctx, form::<args::ListJobs>(view, &[])).await;
    layout::main(
        "Jobs",
        html! {
            p.lead {
                "Fetches, images and server power run as jobs. This list follows them as they \
                 run; nothing here needs a reload."
            }
            // What a Cancel did, above the table (which polling redraws), naming the job.
            @if let Some(o) = outcome {
                @let job = o.form.strip_prefix(ACTIONS).unwrap_or("").trim_start_matches('-');
                @match &o.result {
                    Ok(notice) => p.notice role="status" { (notice) },
                    Err(message) => p.error role="alert" id=(format!("job-{job}-error")) {
                        "Job " (job) ": " (message)
                    },
                }
            }
            @if let Ok(list) = &jobs {
                (layout::pager(Tab::Jobs.path(), view, list, |j| j.job_id, "before_id"))
            }
            @match &jobs {
                Err(err) => p.error role="alert" { (err.public_message()) },
                Ok(jobs) => div.table-wrap {
                    table.jobs {
                        colgroup {
                            col.c-id; col.c-type; col.c-name; col.c-status; col.c-progress;
                            col.c-error; col.c-time; col.c-action;
                        }
                        thead {
                            tr {
                                th scope="col" { "Job" }
                                th scope="col" { "Type" }
                                th scope="col" { "Name" }
                                th scope="col" { "Status" }
                                th scope="col" { "Progress" }
                                th scope="col" { "Error" }
                                th scope="col" { "Created" }
                                th scope="col" { span.visually-hidden { "Action" } }
                            }
                        }
                        (job_rows(panel, view, jobs))
                    }
                },
            }
        },
    )
}

fn unfinished(status: i64) -> bool {
    matches!(status, 2 | 6 | 7)
}

/// The rows, as the fragment htmx polls.
fn job_rows(panel: &Panel, view: &Fields, list: &[Job]) -> Markup {
    let busy = list.iter().any(|j| unfinished(j.status));
    let every = if busy { "every 1s" } else { "every 5s" };
    html! {
        tbody #job-rows hx-get=(format!("/panel/jobs/rows{}", view.query_string()))
            hx-trigger=(every) hx-swap="outerHTML" {
            @if list.is_empty() {
                tr { td colspan="8" { "No jobs yet." } }
            }
            @for job in list { (job_row(panel, job)) }
        }
    }
}

fn job_row(panel: &Panel, job: &Job) -> Markup {
    let id = job.job_id;
    let status = job.status;
    let done = job.bytes_done;
    let total = job.bytes_total;
    let percent = job.progress.clamp(0, 100);
    let figures = match total {
        Some(total) if total > 0 => format!("{} of {} · {percent}%", bytes(done), bytes(total)),
        _ if done > 0 => format!("{} · {percent}%", bytes(done)),
        _ => format!("{percent}%"),
    };
    let phase = opt(&job.phase);
    let error = opt(&job.error_message);
    html! {
        tr id=(format!("job-{id}")) data-status=(job_status(status)) {
            td.num { (id) }
            td { (job.job_type) }
            td.name {
                (job.name)
                @if let (Some(kind), Some(item)) = (&job.item_type, job.item_id) {
                    br; small { (kind) " " (item) }
                }
            }
            td {
                span class=(format!("status s-{}", job_status(status))) { (job_status(status)) }
                @if !phase.is_empty() { br; small.phase { (phase) } }
            }
            td {
                div.progress {
                    progress max="100" value=(percent) aria-label=(format!("Job {id} progress")) {
                        (percent) "%"
                    }
                    span.figures { (figures) }
                }
            }
            td.error-text {
                @if !error.is_empty() {
                    (error)
                    @let code = opt(&job.error_code);
                    @if !code.is_empty() { br; small { (code) } }
                }
            }
            td { (layout::time(job.created)) }
            td {
                @if unfinished(status) {
                    (post_form(&panel.csrf_token, &format!("/panel/jobs/{id}/cancel"),
                        &format!("cancel-form-{id}"), "inline", html! {
                        button #(format!("cancel-{id}")) type="submit"
                            aria-label=(format!("Cancel job {id}")) { "Cancel" }
                    }))
                }
            }
        }
    }
}

async fn rows(
    State(_): State<AppState>,
    panel: Panel,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let view = Fields(query).only(VIEW).paged();
    let markup = match call::ListJobs(&panel.ctx, form::<args::ListJobs>(&view, &[])).await {
        Ok(jobs) => job_rows(&panel, &view, &jobs),
        // Keep polling; say what is wrong in the table.
        Err(err) => html! {
            tbody #job-rows hx-get=(format!("/panel/jobs/rows{}", view.query_string()))
                hx-trigger="every 5s" hx-swap="outerHTML" {
                tr { td colspan="8" { p.error role="alert" { (err.public_message()) } } }
            }
        },
    };
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

async fn cancel(Path(job_id): Path<i64>, PanelForm(panel, fields): PanelForm) -> Response {
    let result = call::CancelJob(&panel.ctx, form(&fields, &[("job_id", json!(job_id))]))
        .await
        .map(|job| html! { "Job " (job_id) " (" (job.name) "): cancelling." });
    let view = fields.only(VIEW);
    answer(
        &panel,
        Tab::Jobs,
        view,
        format!("{ACTIONS}-{job_id}"),
        fields,
        result,
        render,
    )
    .await
}
