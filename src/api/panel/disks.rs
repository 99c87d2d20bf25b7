//! The Disks tab: a VDC's disks (ListDisks); the **Fetch Disk/Server** dialog with the
//! how-to's fields (URL, optional user name and password, optional checksum, name, VDC, disk
//! product) whose **Add Disk** queues FetchDisk; a blank disk (CreateDisk); delete
//! (DeleteDisk); snapshots (CreateDiskSnapshot, ListSnapshots) and clones of them (CloneDisk).

use axum::Router;
use axum::extract::{Path, Query};
use axum::response::Response;
use axum::routing::{get, post};
use maud::{Markup, html};
use serde_json::json;

use super::layout::{
    self, Tab, bytes, failed, items, opt, options, outcome_for, post_form, select_field,
    text_field, typed, vdc_options, vdc_picker,
};
use super::{Fields, Outcome, Panel, PanelForm, answer, form, tab_page};
use crate::ops::state::AppState;
use crate::ops::{Disk, Snapshot, args, call};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/panel/disks", get(page))
        .route("/panel/disks/fetch", post(fetch))
        .route("/panel/disks/create", post(create))
        .route("/panel/disks/{disk_id}/{action}", post(action))
        .route("/panel/snapshots/{snapshot_id}/clone", post(clone))
}

/// What the tab's page is shown by (and the rest of ListDisks' arguments, when it takes more);
/// `dialog` names a dialog to show open (the Fetch button's link without JavaScript).
const VIEW: &[&str] = &["vdc_id", "dialog", "page_size", "name", "after_id"];

async fn page(panel: Panel, Query(query): Query<Vec<(String, String)>>) -> Response {
    let view = Fields(query).only(VIEW);
    let main = render(&panel, &view, None).await;
    tab_page(&panel, Tab::Disks, main).await
}

/// The button that opens a dialog (with JavaScript; without, a link to the page with the
/// dialog open).
pub(super) fn dialog_button(path: &str, view: &Fields, dialog: &str, text: &str) -> Markup {
    let mut link = view.only(&["vdc_id"]);
    link.0.push(("dialog".into(), dialog.into()));
    html! {
        a.button href=(format!("{path}{}", link.query_string())) data-dialog=(dialog)
            aria-haspopup="dialog" { (text) }
    }
}

/// A dialog: open when the page was asked for with it (`?dialog=`) or its form just failed
/// (with the error in it and what was typed).
pub(super) fn dialog(
    view: &Fields,
    id: &str,
    title: &str,
    outcome: Option<&Outcome>,
    body: Markup,
) -> Markup {
    let open = failed(outcome, id) || view.get("dialog") == Some(id);
    html! {
        dialog id=(id) aria-labelledby=(format!("{id}-title")) open[open] data-open[open] {
            h2 id=(format!("{id}-title")) { (title) }
            (body)
        }
    }
}

/// The Fetch Disk/Server and Fetch Image dialogs: exactly the how-to's fields.
#[allow(clippy::too_many_arguments)]
pub(super) fn fetch_dialog(
    csrf: &str,
    view: &Fields,
    id: &str,
    title: &str,
    action: &str,
    button: &str,
    vdcs: &[(String, String)],
    vdc_id: Option<i64>,
    disk_offers: &[(String, String)],
    outcome: Option<&Outcome>,
) -> Markup {
    let vdc = typed(outcome, id, "vdc_id");
    let vdc = if vdc.is_empty() {
        vdc_id.map(|v| v.to_string()).unwrap_or_default()
    } else {
        vdc.to_string()
    };
    dialog(
        view,
        id,
        title,
        outcome,
        post_form(
            csrf,
            action,
            &format!("{id}-form"),
            "dialog-form",
            html! {
                (outcome_for(outcome, id))
                (text_field(id, "url", "URL", typed(outcome, id, "url"), true,
                    Some("http, https, ftp or ftps; the file may be gzip, xz or zstd compressed")))
                (text_field(id, "conn_user", "User name", typed(outcome, id, "conn_user"), false, None))
                div.field {
                    label for=(format!("{id}-conn_pass")) { "Password" span.optional { " (optional)" } }
                    input type="password" id=(format!("{id}-conn_pass")) name="conn_pass"
                        autocomplete="new-password";
                }
                (text_field(id, "checksum", "Checksum", typed(outcome, id, "checksum"), false,
                    Some("MD5 (as md5sum prints it), SHA-1, SHA-256 or SHA-512 of the file")))
                (text_field(id, "name", "Name", typed(outcome, id, "name"), true, None))
                (select_field(id, "vdc_id", "VDC", vdcs, &vdc))
                (select_field(id, "disk_productoffer_id", "Disk product", disk_offers,
                    typed(outcome, id, "disk_productoffer_id")))
                div.dialog-buttons {
                    button type="button" data-close-dialog { "Cancel" }
                    button.primary type="submit" { (button) }
                }
            },
        ),
    )
}

/// A job's notice, with the way to the Jobs tab.
pub(super) fn job_notice(what: Markup, job_id: i64) -> Markup {
    html! {
        (what) ": job " (job_id) " queued. "
        a href=(Tab::Jobs.path()) { "Follow it on the Jobs tab" } "."
    }
}

async fn render(panel: &Panel, view: &Fields, outcome: Option<&Outcome>) -> Markup {
    let vdcs = match call::ListVDCs(&panel.ctx, args::ListVDCs::default()).await {
        Ok(vdcs) => vdcs,
        Err(err) => {
            return layout::main(
                "Disks",
                html! { p.error role="alert" { (err.public_message()) } },
            );
        }
    };
    let (vdc_choices, chosen) = vdc_options(&vdcs, view);
    let Some(vdc_id) = chosen else {
        return layout::main(
            "Disks",
            html! { p { "You have no VDC yet: make one on the " a href=(Tab::Servers.path()) { "Servers" } " tab." } },
        );
    };
    let paged = view.clone().paged();
    let disks = call::ListDisks(
        &panel.ctx,
        form::<args::ListDisks>(&paged, &[("vdc_id", json!(vdc_id))]),
    )
    .await;
    let servers = call::ListServers(
        &panel.ctx,
        args::ListServers {
            vdc_id,
            ..Default::default()
        },
    )
    .await;
    let disk_offers = call::ListProductOffers(
        &panel.ctx,
        args::ListProductOffers {
            r#type: Some("disk".into()),
            ..Default::default()
        },
    )
    .await;
    let disk_offers = options(&disk_offers, |o| (o.product_offer_id, &o.name));
    let mut snapshots = Vec::new();
    for disk in items(&disks) {
        let list = call::ListSnapshots(
            &panel.ctx,
            args::ListSnapshots {
                disk_id: disk.disk_id,
                ..Default::default()
            },
        )
        .await
        .unwrap_or_default();
        snapshots.push((disk.disk_id, list));
    }
    let server_name = |server_id: i64| -> String {
        items(&servers)
            .iter()
            .find(|v| v.server_id == server_id)
            .map(|v| v.server_name.clone())
            .unwrap_or_else(|| format!("server {server_id}"))
    };
    let csrf = &panel.csrf_token;
    layout::main(
        "Disks",
        html! {
            (vdc_picker(Tab::Disks.path(), &vdc_choices, chosen))
            div.toolbar {
                (dialog_button(Tab::Disks.path(), view, "fetch-disk", "Fetch Disk/Server"))
            }
            (outcome_for(outcome, "disks"))
            @if let Ok(list) = &disks {
                (layout::pager(Tab::Disks.path(), &paged, list, |d| d.disk_id, "after_id"))
            }
            @match &disks {
                Err(err) => p.error role="alert" { (err.public_message()) },
                Ok(list) => {
                    @if list.is_empty() {
                        p { "No disks in this VDC yet." }
                    } @else {
                        div.table-wrap {
                            table.disks {
                                thead { tr {
                                    th scope="col" { "Name" }
                                    th scope="col" { "Size" }
                                    th scope="col" { "Status" }
                                    th scope="col" { "Media" }
                                    th scope="col" { "Created" }
                                    th scope="col" { "Actions" }
                                } }
                                tbody {
                                    @for disk in list {
                                        @let snaps = snapshots.iter().find(|(d, _)| *d == disk.disk_id).map(|(_, l)| l.as_slice());
                                        (disk_row(csrf, vdc_id, disk, snaps, &vdc_choices, &disk_offers, &server_name, outcome))
                                    }
                                }
                            }
                        }
                    }
                }
            }
            section.card aria-labelledby="create-disk-title" {
                h2 #create-disk-title { "New blank disk" }
                (post_form(csrf, "/panel/disks/create", "create-disk", "grid", html! {
                    input type="hidden" name="vdc_id" value=(vdc_id);
                    input type="hidden" name="image_id" value="0";
                    (outcome_for(outcome, "create-disk"))
                    (text_field("create-disk", "name", "Name", typed(outcome, "create-disk", "name"), true, None))
                    (select_field("create-disk", "disk_productoffer_id", "Disk product", &disk_offers,
                        typed(outcome, "create-disk", "disk_productoffer_id")))
                    div.submit { button.primary type="submit" { "Create disk" } }
                }))
            }
            (fetch_dialog(csrf, view, "fetch-disk", "Fetch Disk/Server", "/panel/disks/fetch",
                "Add Disk", &vdc_choices, chosen, &disk_offers, outcome))
        },
    )
}

#[allow(clippy::too_many_arguments)]
fn disk_row(
    csrf: &str,
    vdc_id: i64,
    disk: &Disk,
    snapshots: Option<&[Snapshot]>,
    vdcs: &[(String, String)],
    disk_offers: &[(String, String)],
    server_name: &dyn Fn(i64) -> String,
    outcome: Option<&Outcome>,
) -> Markup {
    let id = disk.disk_id;
    let name = disk.disk_name.as_str();
    let slot = format!("disk-{id}");
    let form = |action: &str, body: Markup| {
        post_form(
            csrf,
            &format!("/panel/disks/{id}/{action}"),
            &format!("disk-{id}-{action}"),
            "inline",
            html! { input type="hidden" name="vdc_id" value=(vdc_id); (body) },
        )
    };
    let snapshots = snapshots.unwrap_or(&[]);
    html! {
        tr id=(slot) {
            th scope="row" { (name) }
            td.nowrap { (bytes(disk.capacity)) }
            td {
                @match disk.server_id {
                    Some(server) => { "attached to " (server_name(server)) },
                    None => "available",
                }
            }
            td {
                (disk.media)
                @let format = opt(&disk.source_format);
                @if !format.is_empty() { br; small { "fetched as " (format) } }
            }
            td { (layout::time(disk.created)) }
            td.actions {
                (outcome_for(outcome, &slot))
                (form("snapshot", html! {
                    label.visually-hidden for=(format!("snapshot-name-{id}")) { "Name of the snapshot of " (name) }
                    input type="text" id=(format!("snapshot-name-{id}")) name="name"
                        placeholder="snapshot name" required;
                    button type="submit" aria-label=(format!("Snapshot {name}")) { "Snapshot" }
                }))
                @if !snapshots.is_empty() {
                    details {
                        summary { "Snapshots (" (snapshots.len()) ")" }
                        ul.plain {
                            @for snap in snapshots {
                                @let snap_id = snap.snapshot_id;
                                li {
                                    (snap.snapshot_name) " " small { (layout::time(snap.created)) }
                                    (post_form(csrf, &format!("/panel/snapshots/{snap_id}/clone"),
                                        &format!("snapshot-{snap_id}-clone"), "inline", html! {
                                        input type="hidden" name="from_disk" value=(id);
                                        label.visually-hidden for=(format!("clone-name-{snap_id}")) { "Name of the clone" }
                                        input type="text" id=(format!("clone-name-{snap_id}")) name="new_disk_name"
                                            placeholder="new disk name" required;
                                        label.visually-hidden for=(format!("clone-vdc-{snap_id}")) { "VDC of the clone" }
                                        select id=(format!("clone-vdc-{snap_id}")) name="vdc_id" {
                                            @for (value, text) in vdcs {
                                                option value=(value) selected[*value == vdc_id.to_string()] { (text) }
                                            }
                                        }
                                        button type="submit" { "Clone" }
                                    }))
                                }
                            }
                        }
                    }
                }
                details {
                    summary { "Rename or grow…" }
                    (form("rename", html! {
                        label.visually-hidden for=(format!("rename-{id}")) { "New name of " (name) }
                        input type="text" id=(format!("rename-{id}")) name="name" value=(name) required;
                        button type="submit" { "Rename" }
                    }))
                    (form("resize", html! {
                        label.visually-hidden for=(format!("resize-{id}")) { "Disk product to grow " (name) " to" }
                        select id=(format!("resize-{id}")) name="disk_productoffer_id" {
                            @for (value, text) in disk_offers {
                                option value=(value) { (text) }
                            }
                        }
                        button type="submit" { "Grow" }
                    }))
                }
                @if disk.server_id.is_none() {
                    details.danger {
                        summary { "Delete…" }
                        (form("delete", html! {
                            p.small { "Deletes " (name) " and its snapshots." }
                            button.danger type="submit" { "Delete " (name) }
                        }))
                    }
                }
            }
        }
    }
}

async fn fetch(PanelForm(panel, fields): PanelForm) -> Response {
    let result = call::FetchDisk(
        &panel.ctx,
        form::<args::FetchDisk>(&fields, &[("make_image", json!(false))]),
    )
    .await
    .map(|job| {
        job_notice(
            html! { "Fetching disk " (fields.get("name").unwrap_or("")) },
            job,
        )
    });
    // Done, the dialog closes and the notice shows above the table; failed, the dialog shows
    // the error.
    let slot = if result.is_ok() {
        "disks"
    } else {
        "fetch-disk"
    };
    let view = fields.only(&["vdc_id"]);
    answer(
        &panel,
        Tab::Disks,
        view,
        slot.into(),
        fields,
        result,
        render,
    )
    .await
}

async fn create(PanelForm(panel, fields): PanelForm) -> Response {
    let result = call::CreateDisk(&panel.ctx, form::<args::CreateDisk>(&fields, &[]))
        .await
        .map(|disk| html! { "Disk " (disk.disk_name) " created." });
    let view = fields.only(&["vdc_id"]);
    answer(
        &panel,
        Tab::Disks,
        view,
        "create-disk".into(),
        fields,
        result,
        render,
    )
    .await
}

async fn action(
    Path((disk_id, action)): Path<(i64, String)>,
    PanelForm(panel, fields): PanelForm,
) -> Response {
    let disk = [("disk_id", json!(disk_id))];
    let result = match action.as_str() {
        "snapshot" => call::CreateDiskSnapshot(&panel.ctx, form(&fields, &disk))
            .await
            .map(|snap| html! { "Snapshot " (snap.snapshot_name) " taken." }),
        "delete" => call::DeleteDisk(&panel.ctx, form(&fields, &disk))
            .await
            .map(|_| html! { "Disk deleted." }),
        "rename" => call::RenameDisk(&panel.ctx, form(&fields, &disk))
            .await
            .map(|d| html! { "Disk renamed " (d.disk_name) "." }),
        "resize" => call::ResizeDisk(&panel.ctx, form(&fields, &disk))
            .await
            .map(|d| html! { "Disk grown to " (bytes(d.capacity)) "." }),
        _ => return super::not_found(),
    };
    // A deleted disk's row is gone: its message shows above the table.
    let slot = if action == "delete" && result.is_ok() {
        "disks".to_string()
    } else {
        format!("disk-{disk_id}")
    };
    let view = fields.only(&["vdc_id"]);
    answer(&panel, Tab::Disks, view, slot, fields, result, render).await
}

async fn clone(Path(snapshot_id): Path<i64>, PanelForm(panel, fields): PanelForm) -> Response {
    let result = call::CloneDisk(
        &panel.ctx,
        form(&fields, &[("snapshot_id", json!(snapshot_id))]),
    )
    .await
    .map(|disk| html! { "Disk " (disk.disk_name) " cloned." });
    let slot = match fields.get("from_disk") {
        Some(disk) if result.is_err() => format!("disk-{disk}"),
        _ => "disks".to_string(),
    };
    let view = fields.only(&["vdc_id"]);
    answer(&panel, Tab::Disks, view, slot, fields, result, render).await
}
