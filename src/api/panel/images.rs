//! The Images tab: the images the caller may use, with owner and visibility (ListImages); the
//! **Fetch Image** dialog (FetchDisk making an image) with **Add Image**; **New Image** from a
//! stopped server's disk (CreateImage); publish to and revoke from a customer uuid, a billing
//! entity uuid or `platform` (PublishImage, RevokeImage, ListImageShares), the publish notice
//! listing what the image's last check found (PublishImage's `hygiene` part); rename
//! (RenameImage); delete (DeleteImage); and, for administrators, the image product offer
//! (SetImageProductOffer); each image's hygiene as a badge (ListImages' `hygiene_status`)
//! with its report's findings as a list (GetImageReport), and **Check** and **Clean**
//! (CheckImage, CleanImage: jobs, followed on the Jobs tab).

use axum::Router;
use axum::extract::{Path, Query};
use axum::response::Response;
use axum::routing::{get, post};
use maud::{Markup, html};
use serde_json::json;

use super::disks::{dialog, dialog_button, fetch_dialog, job_notice};
use super::layout::{
    self, Tab, bytes, items, options, outcome_for, post_form, server_status, text_field, typed,
    vdc_options,
};
use super::{Fields, Outcome, Panel, PanelForm, answer, form, tab_page};
use crate::ops::state::AppState;
use crate::ops::{HygieneReport, Image, ImageShare, args, call};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/panel/images", get(page))
        .route("/panel/images/fetch", post(fetch))
        .route("/panel/images/new", post(new_image))
        .route("/panel/images/{image_id}/{action}", post(action))
}

/// What the tab's page is shown by (and the rest of ListImages' arguments, when it takes more).
const VIEW: &[&str] = &["dialog", "vdc_id", "page_size", "name", "after_id"];

async fn page(panel: Panel, Query(query): Query<Vec<(String, String)>>) -> Response {
    let view = Fields(query).only(VIEW);
    let main = render(&panel, &view, None).await;
    tab_page(&panel, Tab::Images, main).await
}

/// Who owns an image, in words.
fn owner(panel: &Panel, image: &Image) -> String {
    match image.owner.as_str() {
        o if o == panel.ctx.caller.customer_uuid => "you".into(),
        "platform" => "the platform".into(),
        o => format!("customer {o}"),
    }
}

async fn render(panel: &Panel, view: &Fields, outcome: Option<&Outcome>) -> Markup {
    let paged = view.clone().paged();
    let images = call::ListImages(&panel.ctx, form::<args::ListImages>(&paged, &[])).await;
    let vdcs = call::ListVDCs(&panel.ctx, args::ListVDCs::default())
        .await
        .unwrap_or_default();
    let (vdc_choices, chosen) = vdc_options(&vdcs, view);
    let offers_of = |kind: &str| args::ListProductOffers {
        r#type: Some(kind.into()),
        ..Default::default()
    };
    let disk_offers = call::ListProductOffers(&panel.ctx, offers_of("disk")).await;
    let disk_offers = options(&disk_offers, |o| (o.product_offer_id, &o.name));
    let admin = panel.ctx.caller.is_admin;
    let image_offers = if admin {
        let offers = call::ListProductOffers(&panel.ctx, offers_of("image")).await;
        options(&offers, |o| (o.product_offer_id, &o.name))
    } else {
        Vec::new()
    };
    // The disks New Image can copy, by VDC, with their servers' state: every VDC's in one
    // call each.
    let all_disks = call::ListAllDisks(&panel.ctx, args::ListAllDisks::default()).await;
    let all_servers = call::ListAllServers(&panel.ctx, args::ListAllServers::default())
        .await
        .unwrap_or_default();
    let disks: Vec<(String, Vec<(String, String)>)> = match &all_disks {
        Err(_) => Vec::new(),
        Ok(all_disks) => vdcs
            .iter()
            .map(|vdc| {
                let choices = all_disks
                    .iter()
                    .filter(|d| d.vdc_id == vdc.vdc_id)
                    .map(|d| {
                        let server = d
                            .server_id
                            .and_then(|id| all_servers.iter().find(|v| v.server_id == id));
                        let label = match server {
                            Some(v) => format!(
                                "{} (server {}, {})",
                                d.disk_name,
                                v.server_name,
                                server_status(v.status)
                            ),
                            None => format!("{} (no server)", d.disk_name),
                        };
                        (d.disk_id.to_string(), label)
                    })
                    .collect();
                (vdc.vdc_name.clone(), choices)
            })
            .collect(),
    };
    let mut shares = Vec::new();
    for image in items(&images) {
        if image.owner == panel.ctx.caller.customer_uuid {
            let list = call::ListImageShares(
                &panel.ctx,
                args::ListImageShares {
                    image_id: image.image_id,
                    ..Default::default()
                },
            )
            .await;
            if let Ok(list) = list {
                shares.push((image.image_id, list));
            }
        }
    }
    // The reports of the images that were checked, for the lists under their badges.
    let mut reports = Vec::new();
    for image in items(&images) {
        if image.hygiene_status != "not_checked" {
            let report = args::GetImageReport {
                image_id: image.image_id,
            };
            if let Ok(report) = call::GetImageReport(&panel.ctx, report).await {
                reports.push(report);
            }
        }
    }
    let csrf = &panel.csrf_token;
    layout::main(
        "Images",
        html! {
            div.toolbar {
                (dialog_button(Tab::Images.path(), view, "fetch-image", "Fetch Image"))
                (dialog_button(Tab::Images.path(), view, "new-image", "New Image"))
            }
            (outcome_for(outcome, "images"))
            @if let Ok(list) = &images {
                (layout::pager(Tab::Images.path(), &paged, list, |i| i.image_id, "after_id"))
            }
            @match &images {
                Err(err) => p.error role="alert" { (err.public_message()) },
                Ok(list) => {
                    @if list.is_empty() {
                        p { "No images yet." }
                    } @else {
                        div.table-wrap {
                            table.images {
                                thead { tr {
                                    th scope="col" { "Name" }
                                    th scope="col" { "Owner" }
                                    th scope="col" { "Visibility" }
                                    th scope="col" { "Hygiene" }
                                    th scope="col" { "Size" }
                                    th scope="col" { "Created" }
                                    th scope="col" { "Actions" }
                                } }
                                tbody {
                                    @for image in list {
                                        @let own_shares = shares.iter().find(|(i, _)| *i == image.image_id).map(|(_, l)| l.as_slice());
                                        @let report = reports.iter().find(|r| r.image_id == Some(image.image_id));
                                        (image_row(panel, image, own_shares, &image_offers, report, outcome))
                                    }
                                }
                            }
                        }
                    }
                }
            }
            (fetch_dialog(csrf, view, "fetch-image", "Fetch Image", "/panel/images/fetch",
                "Add Image", &vdc_choices, chosen, &disk_offers, outcome))
            (new_image_dialog(csrf, view, &disks, outcome))
        },
    )
}

fn new_image_dialog(
    csrf: &str,
    view: &Fields,
    disks: &[(String, Vec<(String, String)>)],
    outcome: Option<&Outcome>,
) -> Markup {
    let id = "new-image";
    let chosen = typed(outcome, id, "disk_id");
    dialog(
        view,
        id,
        "New Image",
        outcome,
        post_form(
            csrf,
            "/panel/images/new",
            "new-image-form",
            "dialog-form",
            html! {
                p.hint { "Copies a disk whose server is stopped into a new private image." }
                (outcome_for(outcome, id))
                div.field {
                    label for="new-image-disk_id" { "Disk" }
                    select #new-image-disk_id name="disk_id" {
                        @for (vdc, choices) in disks {
                            optgroup label=(format!("VDC {vdc}")) {
                                @for (value, text) in choices {
                                    option value=(value) selected[value == chosen] { (text) }
                                }
                            }
                        }
                    }
                }
                (text_field(id, "name", "Name", typed(outcome, id, "name"), true, None))
                (text_field(id, "default_username", "Default user name",
                    typed(outcome, id, "default_username"), false,
                    Some("the user whose password servers made from it set at first boot")))
                div.field {
                    label.check {
                        input type="checkbox" name="generate_password" id="new-image-generate_password";
                        " Generate a first-boot password for each server"
                    }
                }
                div.dialog-buttons {
                    button type="button" data-close-dialog { "Cancel" }
                    button.primary type="submit" { "Create Image" }
                }
            },
        ),
    )
}

fn image_row(
    panel: &Panel,
    image: &Image,
    shares: Option<&[ImageShare]>,
    image_offers: &[(String, String)],
    report: Option<&HygieneReport>,
    outcome: Option<&Outcome>,
) -> Markup {
    let csrf = &panel.csrf_token;
    let id = image.image_id;
    let name = image.image_name.as_str();
    let slot = format!("image-{id}");
    let mine = image.owner == panel.ctx.caller.customer_uuid;
    let form = |action: &str, body: Markup| {
        post_form(
            csrf,
            &format!("/panel/images/{id}/{action}"),
            &format!("image-{id}-{action}"),
            "inline",
            body,
        )
    };
    let offer = image.product_offer_id;
    html! {
        tr id=(slot) {
            th scope="row" { (name) }
            td { (owner(panel, image)) }
            td { (image.visibility) }
            td { (hygiene(image, report)) }
            td.nowrap { (bytes(image.size)) br; small { (image.media) } }
            td { (layout::time(image.created)) }
            td.actions {
                (outcome_for(outcome, &slot))
                @if mine || panel.ctx.caller.is_admin {
                    details open[outcome.is_some_and(|o| o.form == slot)] {
                        summary { "Manage " (name) }
                        @if mine {
                            (form("rename", html! {
                                label for=(format!("rename-{id}")) { "New name" }
                                input type="text" id=(format!("rename-{id}")) name="name" value=(name) required;
                                button type="submit" { "Rename" }
                            }))
                            @if image.media == "disk" {
                                (form("check", html! {
                                    button type="submit" aria-label=(format!("Check {name}")) { "Check" }
                                    span.hint { " reads its file systems for what it would give away" }
                                }))
                                (form("clean", html! {
                                    label for=(format!("clean-{id}")) { "Cleaned copy's name" }
                                    input type="text" id=(format!("clean-{id}")) name="name"
                                        placeholder=(format!("{name} (cleaned)"));
                                    label for=(format!("clean-paths-{id}")) { "Also remove" }
                                    input type="text" id=(format!("clean-paths-{id}")) name="remove_paths"
                                        placeholder="/root/test.sh /opt/scratch";
                                    label.check {
                                        input type="checkbox" name="remove_authorized_keys" checked;
                                        " remove authorized_keys"
                                    }
                                    button type="submit" aria-label=(format!("Clean {name}")) { "Clean" }
                                }))
                            }
                            (form("publish", html! {
                                label for=(format!("publish-{id}")) { "Publish to" }
                                input type="text" id=(format!("publish-{id}")) name="publish_to"
                                    placeholder="customer uuid, billing entity uuid or platform" required;
                                label.check {
                                    input type="checkbox" name="allow_republish";
                                    " may republish"
                                }
                                button type="submit" { "Publish" }
                            }))
                            @if let Some(shares) = shares && !shares.is_empty() {
                                p.small { "Published to:" }
                                ul.plain {
                                    @for share in shares {
                                        li {
                                            (share.kind) " " code { (share.uuid) }
                                            (form("revoke", html! {
                                                input type="hidden" name="publish_to" value=(share.uuid);
                                                button.small type="submit"
                                                    aria-label=(format!("Revoke {name} from {}", share.uuid)) { "Revoke" }
                                            }))
                                        }
                                    }
                                }
                            }
                        }
                        @if panel.ctx.caller.is_admin {
                            (form("offer", html! {
                                label for=(format!("offer-{id}")) { "Image product offer" }
                                select id=(format!("offer-{id}")) name="product_offer_id" {
                                    option value="0" selected[offer.is_none()] { "None" }
                                    @for (value, text) in image_offers {
                                        option value=(value) selected[offer.map(|o| o.to_string()).as_deref() == Some(value.as_str())] { (text) }
                                    }
                                }
                                button type="submit" { "Set offer" }
                            }))
                        }
                        @if mine {
                            details.danger {
                                summary { "Delete…" }
                                (form("delete", html! {
                                    button.danger type="submit" { "Delete " (name) }
                                }))
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The image's hygiene badge and, once checked, its report as a list to act on.
fn hygiene(image: &Image, report: Option<&HygieneReport>) -> Markup {
    let status = image.hygiene_status.as_str();
    let severity = image.hygiene_severity.as_deref().unwrap_or("none");
    let label = match status {
        "clean" => "clean".to_string(),
        "findings" => format!("findings ({severity})"),
        "unreadable" => "unreadable".to_string(),
        _ => "not checked".to_string(),
    };
    html! {
        span.badge class=(format!("h-{status} sev-{severity}")) data-hygiene=(status) { (label) }
        @if let Some(report) = report {
            @if let Some(checked) = report.checked {
                br; small { "checked " (layout::time(checked)) }
            }
            @if let Some(reason) = &report.reason {
                p.small { (reason) }
            }
            @if !report.findings.is_empty() {
                details {
                    summary { (report.findings.len()) " to fix" }
                    ul.report {
                        @for finding in &report.findings {
                            li {
                                strong { (finding.severity) } " " code { (finding.code) } ": "
                                (finding.detail)
                                @if !finding.paths.is_empty() {
                                    br; small { (finding.paths.join(", ")) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// What the image's last check found, as PublishImage answered it, for the publisher: what
/// the recipients now receive, each finding with its severity, code and paths (inline: the
/// notice is a paragraph).
fn publish_note(report: &HygieneReport) -> Markup {
    html! {
        span.hygiene data-hygiene=(report.status) {
            @match report.status.as_str() {
                "clean" => "Its last check found nothing to clean.",
                "findings" => {
                    "Its last check found what the recipients now receive: "
                    @for (i, finding) in report.findings.iter().enumerate() {
                        @if i > 0 { "; " }
                        span.finding data-code=(finding.code) {
                            strong { (finding.severity) } " " code { (finding.code) }
                            @if !finding.paths.is_empty() {
                                " (" (finding.paths.join(", ")) ")"
                            }
                        }
                    }
                    ". Clean makes a cleaned copy to publish instead."
                }
                "unreadable" => "Its last check could not read it.",
                _ => "It was never checked: Check it to see what it gives away.",
            }
        }
    }
}

/// CleanImage's arguments from the row's form: the how-to's steps (every step when
/// authorized_keys go too), and the paths to remove, separated by spaces or commas.
fn clean_arguments(image_id: i64, fields: &Fields) -> Vec<(&'static str, serde_json::Value)> {
    let paths: Vec<&str> = fields
        .get("remove_paths")
        .unwrap_or("")
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|p| !p.is_empty())
        .collect();
    let mut arguments = vec![
        ("image_id", json!(image_id)),
        ("remove_paths", json!(paths)),
    ];
    if fields.get("remove_authorized_keys").is_some() {
        let every = crate::ops::storage::hygiene::OPERATION_NAMES;
        arguments.push(("operations", json!(every)));
    }
    arguments
}

/// Check and Clean: each queues a job, followed on the Jobs tab. Publish: says what the
/// image's last check found, so that its owner publishes knowing it.
async fn hygiene_action(panel: Panel, image_id: i64, action: &str, fields: Fields) -> Response {
    let ctx = &panel.ctx;
    let image = [("image_id", json!(image_id))];
    let result = if action == "publish" {
        call::PublishImage(ctx, form(&fields, &image))
            .await
            .map(|published| html! { "Published. " (publish_note(&published.hygiene)) })
    } else if action == "check" {
        call::CheckImage(ctx, form(&fields, &image))
            .await
            .map(|job| job_notice(html! { "Checking the image" }, job))
    } else {
        call::CleanImage(ctx, form(&fields, &clean_arguments(image_id, &fields)))
            .await
            .map(|job| job_notice(html! { "Making a cleaned copy" }, job))
    };
    answer(
        &panel,
        Tab::Images,
        Fields::default(),
        format!("image-{image_id}"),
        fields,
        result,
        render,
    )
    .await
}

async fn fetch(PanelForm(panel, fields): PanelForm) -> Response {
    let result = call::FetchDisk(
        &panel.ctx,
        form::<args::FetchDisk>(&fields, &[("make_image", json!(true))]),
    )
    .await
    .map(|job| {
        job_notice(
            html! { "Fetching image " (fields.get("name").unwrap_or("")) },
            job,
        )
    });
    let slot = if result.is_ok() {
        "images"
    } else {
        "fetch-image"
    };
    answer(
        &panel,
        Tab::Images,
        Fields::default(),
        slot.into(),
        fields,
        result,
        render,
    )
    .await
}

async fn new_image(PanelForm(panel, fields): PanelForm) -> Response {
    let result = call::CreateImage(&panel.ctx, form::<args::CreateImage>(&fields, &[]))
        .await
        .map(|job| {
            job_notice(
                html! { "Making image " (fields.get("name").unwrap_or("")) },
                job,
            )
        });
    let slot = if result.is_ok() {
        "images"
    } else {
        "new-image"
    };
    answer(
        &panel,
        Tab::Images,
        Fields::default(),
        slot.into(),
        fields,
        result,
        render,
    )
    .await
}

async fn action(
    Path((image_id, action)): Path<(i64, String)>,
    PanelForm(panel, fields): PanelForm,
) -> Response {
    if action == "check" || action == "clean" || action == "publish" {
        return hygiene_action(panel, image_id, &action, fields).await;
    }
    let image = [("image_id", json!(image_id))];
    let ctx = &panel.ctx;
    let (result, done) = match action.as_str() {
        "rename" => (
            call::RenameImage(ctx, form(&fields, &image))
                .await
                .map(drop),
            "Renamed.",
        ),
        "revoke" => (
            call::RevokeImage(ctx, form(&fields, &image))
                .await
                .map(drop),
            "Revoked.",
        ),
        "delete" => (
            call::DeleteImage(ctx, form(&fields, &image))
                .await
                .map(drop),
            "Image deleted.",
        ),
        "offer" => (
            call::SetImageProductOffer(ctx, form(&fields, &image))
                .await
                .map(drop),
            "Product offer set.",
        ),
        _ => return super::not_found(),
    };
    let result = result.map(|()| html! { (done) });
    let slot = if action == "delete" && result.is_ok() {
        "images".to_string()
    } else {
        format!("image-{image_id}")
    };
    answer(
        &panel,
        Tab::Images,
        Fields::default(),
        slot,
        fields,
        result,
        render,
    )
    .await
}
