//! The Servers tab: a VDC's servers with their status (ListServers); create one from an image,
//! a server offer and disk offers (CreateServer); start, stop either way, destroy; attach and
//! detach disks; and a server's page with its console log (GetConsoleLog) and its first-boot
//! user and password (GetServer). A customer with no VDC can make one here (CreateVDC).

use axum::Router;
use axum::extract::{Path, Query};
use axum::response::Response;
use axum::routing::{get, post};
use maud::{Markup, html};
use serde_json::{Value, json};

use super::layout::{
    self, Tab, bytes, items, n, outcome_for, post_form, s, select_field, server_status, text_field,
    typed, vdc_options, vdc_picker,
};
use super::{Fields, Outcome, Panel, PanelForm, answer, tab_page};
use crate::error::ApiResult;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/panel/servers", get(page))
        .route("/panel/servers/{server_id}", get(server_page))
        .route("/panel/servers/create", post(create))
        .route("/panel/vdcs/create", post(create_vdc))
        .route("/panel/servers/{server_id}/{action}", post(action))
}

/// What the tab's page is shown by (and the rest of ListServers' arguments, when it takes
/// more).
const VIEW: &[&str] = &["vdc_id", "page_size", "name", "after_id"];

async fn page(panel: Panel, Query(query): Query<Vec<(String, String)>>) -> Response {
    let view = Fields(query).only(VIEW);
    let main = render(&panel, &view, None).await;
    tab_page(&panel, Tab::Servers, main).await
}

fn offer_options(offers: &ApiResult<Value>) -> Vec<(String, String)> {
    offers
        .as_ref()
        .map(|o| {
            items(o)
                .iter()
                .map(|o| {
                    (
                        n(o, "product_offer_id").unwrap_or_default().to_string(),
                        s(o, "name").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn render(panel: &Panel, view: &Fields, outcome: Option<&Outcome>) -> Markup {
    let vdcs = match panel.read("ListVDCs", &[]).await {
        Ok(vdcs) => vdcs,
        Err(err) => {
            return layout::main(
                "Servers",
                html! { p.error role="alert" { (err.public_message()) } },
            );
        }
    };
    let (vdc_choices, chosen) = vdc_options(&vdcs, view);
    let Some(vdc_id) = chosen else {
        return layout::main("Servers", no_vdc(panel, outcome));
    };
    let vdc = [("vdc_id", json!(vdc_id))];
    let paged = view.clone().paged();
    let servers = panel.call_with("ListServers", &paged, &vdc).await;
    let disks = panel.read("ListDisks", &vdc).await;
    let images = panel.read("ListImages", &[]).await;
    let server_offers = panel
        .read("ListProductOffers", &[("type", json!("server"))])
        .await;
    let sizes = offer_options(&server_offers);
    let disk_offers = panel
        .read("ListProductOffers", &[("type", json!("disk"))])
        .await;
    let vlans = panel.read("ListVLANs", &vdc).await;
    let keys = panel.read("ListSSHKeys", &[]).await;
    let firewalls = firewall_options(panel, vdc_id).await;
    let available: Vec<(String, String)> = disks
        .as_ref()
        .map(|d| {
            items(d)
                .iter()
                .filter(|d| s(d, "status") == "available")
                .map(|d| {
                    (
                        n(d, "disk_id").unwrap_or_default().to_string(),
                        format!(
                            "{} ({})",
                            s(d, "disk_name"),
                            bytes(n(d, "capacity").unwrap_or(0))
                        ),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let csrf = &panel.csrf_token;
    layout::main(
        "Servers",
        html! {
            (vdc_picker(Tab::Servers.path(), &vdc_choices, chosen))
            @if let Ok(list) = &servers {
                (layout::pager(Tab::Servers.path(), &paged, items(list), "server_id", "after_id"))
            }
            @match &servers {
                Err(err) => p.error role="alert" { (err.public_message()) },
                Ok(list) => {
                    @if items(list).is_empty() {
                        p { "No servers in this VDC yet." }
                    } @else {
                        div.table-wrap {
                            table.servers {
                                thead { tr {
                                    th scope="col" { "Name" }
                                    th scope="col" { "Status" }
                                    th scope="col" { "Size" }
                                    th scope="col" { "Disks" }
                                    th scope="col" { "Address" }
                                    th scope="col" { "Firewall" }
                                    th scope="col" { "Actions" }
                                } }
                                tbody {
                                    @for server in items(list) {
                                        (server_row(csrf, vdc_id, server, &available, &sizes, &firewalls, outcome))
                                    }
                                }
                            }
                        }
                    }
                }
            }
            section.card aria-labelledby="create-server-title" {
                h2 #create-server-title { "New server" }
                (create_form(csrf, vdc_id, &images, &server_offers, &disk_offers, &vlans, &keys, outcome))
            }
        },
    )
}

fn no_vdc(panel: &Panel, outcome: Option<&Outcome>) -> Markup {
    html! {
        p { "You have no virtual data centre (VDC) yet: make one to hold your servers and disks." }
        (post_form(&panel.csrf_token, "/panel/vdcs/create", "create-vdc", "row", html! {
            (outcome_for(outcome, "create-vdc"))
            (text_field("create-vdc", "vdc_name", "VDC name", typed(outcome, "create-vdc", "vdc_name"), true, None))
            button.primary type="submit" { "Create VDC" }
        }))
    }
}

/// The firewall templates of the VDC as the options of a server's row: none (`-1`) first.
async fn firewall_options(panel: &Panel, vdc_id: i64) -> Vec<(String, String)> {
    let mut options = vec![("-1".to_string(), "None".to_string())];
    if let Ok(list) = panel
        .read(
            "ListFirewallTemplates",
            &[("page_size", json!(super::PAGE_SIZE))],
        )
        .await
    {
        options.extend(
            items(&list)
                .iter()
                .filter(|t| n(t, "vdc_id") == Some(vdc_id))
                .map(|t| {
                    (
                        n(t, "firewall_template_id").unwrap_or_default().to_string(),
                        s(t, "name").to_string(),
                    )
                }),
        );
    }
    options
}

#[allow(clippy::too_many_arguments)]
fn server_row(
    csrf: &str,
    vdc_id: i64,
    server: &Value,
    available: &[(String, String)],
    sizes: &[(String, String)],
    firewalls: &[(String, String)],
    outcome: Option<&Outcome>,
) -> Markup {
    let template = n(server, "firewall_template_id").unwrap_or(-1).to_string();
    let id = n(server, "server_id").unwrap_or_default();
    let name = s(server, "server_name");
    let status = n(server, "status").unwrap_or_default();
    let slot = format!("server-{id}");
    let form = |action: &str, body: Markup| {
        post_form(
            csrf,
            &format!("/panel/servers/{id}/{action}"),
            &format!("server-{id}-{action}"),
            "inline",
            html! { input type="hidden" name="vdc_id" value=(vdc_id); (body) },
        )
    };
    html! {
        tr id=(slot) data-status=(server_status(status)) {
            th scope="row" { a href=(format!("/panel/servers/{id}")) { (name) } }
            td {
                span class=(format!("status s-{}", server_status(status))) { (server_status(status)) }
                @let reason = s(server, "status_reason");
                @if !reason.is_empty() { br; small { (reason) } }
            }
            td.nowrap {
                (n(server, "processors").unwrap_or(0)) " CPU · "
                (bytes(n(server, "memory").unwrap_or(0) << 20))
            }
            td {
                ul.plain {
                    @for disk in server.get("disks").map(items).unwrap_or(&[]) {
                        @let disk_id = n(disk, "disk_id").unwrap_or_default();
                        li {
                            (s(disk, "disk_name")) " "
                            small { (bytes(n(disk, "capacity").unwrap_or(0))) }
                            (form("detach", html! {
                                input type="hidden" name="disk_id" value=(disk_id);
                                button.small type="submit"
                                    aria-label=(format!("Detach {} from {name}", s(disk, "disk_name"))) { "Detach" }
                            }))
                        }
                    }
                }
            }
            td { (s(server, "ip_address")) }
            td.firewall {
                (form("firewall", html! {
                    label.visually-hidden for=(format!("firewall-{id}")) { "Firewall template of " (name) }
                    select id=(format!("firewall-{id}")) name="template_id" {
                        @for (value, text) in firewalls {
                            option value=(value) selected[*value == template] { (text) }
                        }
                    }
                    button type="submit" aria-label=(format!("Apply the firewall template to {name}")) { "Apply" }
                }))
            }
            td.actions {
                (outcome_for(outcome, &slot))
                div.buttons {
                    (form("start", html! {
                        button type="submit" aria-label=(format!("Start {name}")) { "Start" }
                    }))
                    (form("stop", html! {
                        label.visually-hidden for=(format!("stop-method-{id}")) { "How to stop " (name) }
                        select id=(format!("stop-method-{id}")) name="stop_method" {
                            option value="1" { "Shut down" }
                            option value="2" { "Power off" }
                        }
                        button type="submit" aria-label=(format!("Stop {name}")) { "Stop" }
                    }))
                }
                @if !available.is_empty() {
                    (form("attach", html! {
                        label.visually-hidden for=(format!("attach-disk-{id}")) { "Disk to attach to " (name) }
                        select id=(format!("attach-disk-{id}")) name="disk_id" {
                            @for (value, text) in available { option value=(value) { (text) } }
                        }
                        button type="submit" aria-label=(format!("Attach the disk to {name}")) { "Attach" }
                    }))
                }
                details {
                    summary { "Rename or resize…" }
                    (form("rename", html! {
                        label.visually-hidden for=(format!("rename-{id}")) { "New name of " (name) }
                        input type="text" id=(format!("rename-{id}")) name="server_name" value=(name) required;
                        button type="submit" { "Rename" }
                    }))
                    (form("resize", html! {
                        label.visually-hidden for=(format!("size-{id}")) { "Server size of " (name) " (stopped servers)" }
                        select id=(format!("size-{id}")) name="server_productoffer_id" {
                            @for (value, text) in sizes {
                                option value=(value)
                                    selected[*value == n(server, "product_offer_id").unwrap_or_default().to_string()] { (text) }
                            }
                        }
                        button type="submit" { "Change size" }
                    }))
                }
                details.danger {
                    summary { "Destroy…" }
                    (form("destroy", html! {
                        p.small { "Destroys " (name) " and the disks made with it." }
                        button.danger type="submit" { "Destroy " (name) }
                    }))
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn create_form(
    csrf: &str,
    vdc_id: i64,
    images: &ApiResult<Value>,
    server_offers: &ApiResult<Value>,
    disk_offers: &ApiResult<Value>,
    vlans: &ApiResult<Value>,
    keys: &ApiResult<Value>,
    outcome: Option<&Outcome>,
) -> Markup {
    let id = "create-server";
    let images: Vec<(String, String)> = images
        .as_ref()
        .map(|i| {
            items(i)
                .iter()
                .map(|i| {
                    (
                        n(i, "image_id").unwrap_or_default().to_string(),
                        s(i, "image_name").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let disk_offers = offer_options(disk_offers);
    let mut extra = vec![(String::new(), "None".to_string())];
    extra.extend(disk_offers.iter().cloned());
    let mut vlan_options = vec![("-1".to_string(), "No network".to_string())];
    if let Ok(v) = vlans {
        vlan_options.extend(items(v).iter().map(|v| {
            (
                n(v, "vlan_id").unwrap_or_default().to_string(),
                s(v, "vlan_name").to_string(),
            )
        }));
    }
    let typed_list: Vec<&str> = outcome
        .filter(|o| o.form == id && o.result.is_err())
        .map(|o| o.fields.all("disk_productoffer_ids").collect())
        .unwrap_or_default();
    let chosen_boot = typed_list.first().copied().unwrap_or("");
    let chosen_extra = typed_list.get(1).copied().unwrap_or("");
    html! {
        (post_form(csrf, "/panel/servers/create", id, "grid", html! {
            input type="hidden" name="vdc_id" value=(vdc_id);
            (outcome_for(outcome, id))
            (text_field(id, "server_name", "Name", typed(outcome, id, "server_name"), true, None))
            (select_field(id, "image_id", "Image", &images, typed(outcome, id, "image_id")))
            (select_field(id, "server_productoffer_id", "Server size", &offer_options(server_offers),
                typed(outcome, id, "server_productoffer_id")))
            div.field {
                label for="create-server-boot-disk" { "Boot disk size" }
                select #create-server-boot-disk name="disk_productoffer_ids" {
                    @for (value, text) in &disk_offers {
                        option value=(value) selected[value == chosen_boot] { (text) }
                    }
                }
            }
            div.field {
                label for="create-server-extra-disk" { "Extra blank disk" span.optional { " (optional)" } }
                select #create-server-extra-disk name="disk_productoffer_ids" {
                    @for (value, text) in &extra {
                        option value=(value) selected[value == chosen_extra] { (text) }
                    }
                }
            }
            (select_field(id, "vlan_id", "Network (VLAN)", &vlan_options, typed(outcome, id, "vlan_id")))
            @if let Ok(keys) = keys && !items(keys).is_empty() {
                fieldset.field {
                    legend { "SSH keys for the first boot" span.optional { " (optional)" } }
                    @for key in items(keys) {
                        @let key_id = n(key, "ssh_key_id").unwrap_or_default();
                        label.check {
                            input type="checkbox" name="ssh_key_ids" value=(key_id);
                            " " (s(key, "name"))
                        }
                    }
                }
            }
            div.submit { button.primary type="submit" { "Create server" } }
        }))
    }
}

/// One server: its disks, address, first-boot login and console log.
async fn server_page(panel: Panel, Path(server_id): Path<i64>) -> Response {
    let id = [("server_id", json!(server_id))];
    let server = panel.read("GetServer", &id).await;
    let console = panel.read("GetConsoleLog", &id).await;
    let main = match &server {
        Err(err) => layout::main(
            "Server",
            html! {
                p.error role="alert" { (err.public_message()) }
                p { a href=(Tab::Servers.path()) { "Back to servers" } }
            },
        ),
        Ok(server) => {
            let vdc_id = n(server, "vdc_id").unwrap_or_default();
            let status = n(server, "status").unwrap_or_default();
            layout::main(
                s(server, "server_name"),
                html! {
                    p { a href=(format!("{}?vdc_id={vdc_id}", Tab::Servers.path())) { "← Servers" } }
                    dl.facts {
                        dt { "Status" } dd { span class=(format!("status s-{}", server_status(status))) { (server_status(status)) } }
                        dt { "Size" } dd { (n(server, "processors").unwrap_or(0)) " CPU · " (bytes(n(server, "memory").unwrap_or(0) << 20)) }
                        dt { "Address" } dd { (s(server, "ip_address")) }
                        dt { "Disks" } dd {
                            @for disk in server.get("disks").map(items).unwrap_or(&[]) {
                                (s(disk, "disk_name")) " (" (bytes(n(disk, "capacity").unwrap_or(0))) ") "
                            }
                        }
                    }
                    section.card aria-labelledby="first-boot-title" {
                        h2 #first-boot-title { "First-boot login" }
                        @let user = s(server, "initial_user");
                        @let password = s(server, "initial_password");
                        @if user.is_empty() && password.is_empty() {
                            p { "This server's image sets no first-boot login." }
                        } @else {
                            dl.facts {
                                dt { "User" } dd { code #initial-user { (user) } }
                                dt { "Password" } dd { code #initial-password { (password) } }
                            }
                        }
                    }
                    section.card aria-labelledby="console-title" {
                        h2 #console-title { "Console log" }
                        p { a href=(format!("/panel/servers/{server_id}")) { "Refresh" } }
                        @match &console {
                            Ok(log) => pre.console tabindex="0" aria-label="Console log" {
                                (log.as_str().unwrap_or(""))
                            },
                            Err(err) => p.error role="alert" { (err.public_message()) },
                        }
                    }
                },
            )
        }
    };
    let mut response = tab_page(&panel, Tab::Servers, main).await;
    if let Err(err) = &server {
        *response.status_mut() = crate::api::error::http_status(err);
    }
    response
}

async fn create(PanelForm(panel, fields): PanelForm) -> Response {
    let result = panel
        .call_with("CreateServer", &fields, &[])
        .await
        .map(|server| html! { "Server " (s(&server, "server_name")) " created (stopped)." });
    let view = fields.only(&["vdc_id"]);
    answer(
        &panel,
        Tab::Servers,
        view,
        "create-server".into(),
        fields,
        result,
        render,
    )
    .await
}

async fn create_vdc(PanelForm(panel, fields): PanelForm) -> Response {
    let result = panel
        .call_with("CreateVDC", &fields, &[])
        .await
        .map(|vdc| html! { "VDC " (s(&vdc, "vdc_name")) " created." });
    answer(
        &panel,
        Tab::Servers,
        Fields::default(),
        "create-vdc".into(),
        fields,
        result,
        render,
    )
    .await
}

/// A job's notice, with the way to the Jobs tab.
fn job_notice(what: &str, job: &Value) -> Markup {
    html! {
        (what) ": job " (job.as_i64().unwrap_or_default()) " queued. "
        a href=(Tab::Jobs.path()) { "Follow it on the Jobs tab" } "."
    }
}

async fn action(
    Path((server_id, action)): Path<(i64, String)>,
    PanelForm(panel, fields): PanelForm,
) -> Response {
    let (operation, what) = match action.as_str() {
        "start" => ("StartServer", "Starting"),
        "stop" => ("StopServer", "Stopping"),
        "destroy" => ("DestroyServer", "Destroying"),
        "attach" => ("AttachDisk", "Disk attached"),
        "detach" => ("DetachDisk", "Disk detached"),
        "rename" => ("RenameServer", "Server renamed"),
        "resize" => ("ChangeServerProductOffer", "Server size changed"),
        "firewall" => ("ApplyFirewallTemplate", "Firewall template applied"),
        _ => return super::not_found(),
    };
    let result = panel
        .call_with(operation, &fields, &[("server_id", json!(server_id))])
        .await
        .map(|v| match action.as_str() {
            "attach" | "detach" | "rename" | "resize" | "firewall" => html! { (what) "." },
            _ => job_notice(what, &v),
        });
    let view = fields.only(&["vdc_id"]);
    answer(
        &panel,
        Tab::Servers,
        view,
        format!("server-{server_id}"),
        fields,
        result,
        render,
    )
    .await
}
