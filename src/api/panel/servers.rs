//! The Servers tab: a VDC's servers with their status (ListServers); create one from an image,
//! a server offer and disk offers (CreateServer); start, stop either way, destroy; attach and
//! detach disks; and a server's page with its console log (GetConsoleLog) and its first-boot
//! user and password (GetServer). A customer with no VDC can make one here (CreateVDC).

use axum::Router;
use axum::extract::{Path, Query};
use axum::response::Response;
use axum::routing::{get, post};
use maud::{Markup, html};
use serde_json::json;

use super::layout::{
    self, Tab, bytes, items, opt, options, outcome_for, post_form, select_field, server_status,
    text_field, typed, vdc_options, vdc_picker,
};
use super::{Fields, Outcome, Panel, PanelForm, answer, form, tab_page};
use crate::error::ApiResult;
use crate::ops::state::AppState;
use crate::ops::{Image, ProductOffer, Server, SshKey, Vlan, args, call};

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

fn offer_options(offers: &ApiResult<Vec<ProductOffer>>) -> Vec<(String, String)> {
    options(offers, |o| (o.product_offer_id, &o.name))
}

/// ListProductOffers of one type.
async fn offers(panel: &Panel, kind: &str) -> ApiResult<Vec<ProductOffer>> {
    let of_kind = args::ListProductOffers {
        r#type: Some(kind.into()),
        ..Default::default()
    };
    call::ListProductOffers(&panel.ctx, of_kind).await
}

async fn render(panel: &Panel, view: &Fields, outcome: Option<&Outcome>) -> Markup {
    let vdcs = match call::ListVDCs(&panel.ctx, args::ListVDCs::default()).await {
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
    let paged = view.clone().paged();
    let ctx = &panel.ctx;
    let servers = call::ListServers(
        ctx,
        form::<args::ListServers>(&paged, &[("vdc_id", json!(vdc_id))]),
    )
    .await;
    let disks = call::ListDisks(
        ctx,
        args::ListDisks {
            vdc_id,
            ..Default::default()
        },
    )
    .await;
    let images = call::ListImages(ctx, args::ListImages::default()).await;
    let server_offers = offers(panel, "server").await;
    let sizes = offer_options(&server_offers);
    let disk_offers = offers(panel, "disk").await;
    let vlans = call::ListVLANs(
        ctx,
        args::ListVLANs {
            vdc_id,
            ..Default::default()
        },
    )
    .await;
    let keys = call::ListSSHKeys(ctx, args::ListSSHKeys::default()).await;
    let firewalls = firewall_options(panel, vdc_id).await;
    let available: Vec<(String, String)> = items(&disks)
        .iter()
        .filter(|d| d.status == "available")
        .map(|d| {
            (
                d.disk_id.to_string(),
                format!("{} ({})", d.disk_name, bytes(d.capacity)),
            )
        })
        .collect();
    let csrf = &panel.csrf_token;
    layout::main(
        "Servers",
        html! {
            (vdc_picker(Tab::Servers.path(), &vdc_choices, chosen))
            @if let Ok(list) = &servers {
                (layout::pager(Tab::Servers.path(), &paged, list, |s| s.server_id, "after_id"))
            }
            @match &servers {
                Err(err) => p.error role="alert" { (err.public_message()) },
                Ok(list) => {
                    @if list.is_empty() {
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
                                    @for server in list {
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
    let templates = call::ListFirewallTemplates(
        &panel.ctx,
        args::ListFirewallTemplates {
            page_size: Some(super::PAGE_SIZE),
            ..Default::default()
        },
    )
    .await;
    if let Ok(list) = templates {
        options.extend(
            list.iter()
                .filter(|t| t.vdc_id == vdc_id)
                .map(|t| (t.firewall_template_id.to_string(), t.name.clone())),
        );
    }
    options
}

#[allow(clippy::too_many_arguments)]
fn server_row(
    csrf: &str,
    vdc_id: i64,
    server: &Server,
    available: &[(String, String)],
    sizes: &[(String, String)],
    firewalls: &[(String, String)],
    outcome: Option<&Outcome>,
) -> Markup {
    let id = server.server_id;
    let name = server.server_name.as_str();
    let status = server.status;
    let template = server.firewall_template_id.unwrap_or(-1).to_string();
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
                @let reason = opt(&server.status_reason);
                @if !reason.is_empty() { br; small { (reason) } }
            }
            td.nowrap {
                (server.processors) " CPU · "
                (bytes(server.memory << 20))
            }
            td {
                ul.plain {
                    @for disk in &server.disks {
                        li {
                            (disk.disk_name) " "
                            small { (bytes(disk.capacity)) }
                            (form("detach", html! {
                                input type="hidden" name="disk_id" value=(disk.disk_id);
                                button.small type="submit"
                                    aria-label=(format!("Detach {} from {name}", disk.disk_name)) { "Detach" }
                            }))
                        }
                    }
                }
            }
            td { (opt(&server.ip_address)) }
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
                    @if server_status(status) == "running" {
                        a.button href=(format!("/panel/servers/{id}/console"))
                            aria-label=(format!("Console of {name}")) { "Console" }
                    }
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
                                    selected[*value == server.product_offer_id.to_string()] { (text) }
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
    images: &ApiResult<Vec<Image>>,
    server_offers: &ApiResult<Vec<ProductOffer>>,
    disk_offers: &ApiResult<Vec<ProductOffer>>,
    vlans: &ApiResult<Vec<Vlan>>,
    keys: &ApiResult<Vec<SshKey>>,
    outcome: Option<&Outcome>,
) -> Markup {
    let id = "create-server";
    let images = options(images, |i| (i.image_id, &i.image_name));
    let disk_offers = offer_options(disk_offers);
    let mut extra = vec![(String::new(), "None".to_string())];
    extra.extend(disk_offers.iter().cloned());
    let mut vlan_options = vec![("-1".to_string(), "No network".to_string())];
    vlan_options.extend(options(vlans, |v| (v.vlan_id, &v.vlan_name)));
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
            @if !items(keys).is_empty() {
                fieldset.field {
                    legend { "SSH keys for the first boot" span.optional { " (optional)" } }
                    @for key in items(keys) {
                        label.check {
                            input type="checkbox" name="ssh_key_ids" value=(key.ssh_key_id);
                            " " (key.name)
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
    let server = call::GetServer(&panel.ctx, args::GetServer { server_id }).await;
    let console = call::GetConsoleLog(&panel.ctx, args::GetConsoleLog { server_id }).await;
    let main = match &server {
        Err(err) => layout::main(
            "Server",
            html! {
                p.error role="alert" { (err.public_message()) }
                p { a href=(Tab::Servers.path()) { "Back to servers" } }
            },
        ),
        Ok(server) => {
            let vdc_id = server.vdc_id;
            let status = server.status;
            layout::main(
                &server.server_name,
                html! {
                    p { a href=(format!("{}?vdc_id={vdc_id}", Tab::Servers.path())) { "← Servers" } }
                    dl.facts {
                        dt { "Status" } dd { span class=(format!("status s-{}", server_status(status))) { (server_status(status)) } }
                        dt { "Size" } dd { (server.processors) " CPU · " (bytes(server.memory << 20)) }
                        dt { "Address" } dd { (opt(&server.ip_address)) }
                        dt { "Disks" } dd {
                            @for disk in &server.disks {
                                (disk.disk_name) " (" (bytes(disk.capacity)) ") "
                            }
                        }
                    }
                    @if server_status(status) == "running" {
                        p { a.button href=(format!("/panel/servers/{server_id}/console")) { "Console" } }
                    }
                    section.card aria-labelledby="first-boot-title" {
                        h2 #first-boot-title { "First-boot login" }
                        @let user = opt(&server.initial_user);
                        @let password = opt(&server.initial_password);
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
                                (log)
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
    let result = call::CreateServer(&panel.ctx, form::<args::CreateServer>(&fields, &[]))
        .await
        .map(|server| html! { "Server " (server.server_name) " created (stopped)." });
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
    let result = call::CreateVDC(&panel.ctx, form::<args::CreateVDC>(&fields, &[]))
        .await
        .map(|vdc| html! { "VDC " (vdc.vdc_name) " created." });
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
fn job_notice(what: &str, job_id: i64) -> Markup {
    html! {
        (what) ": job " (job_id) " queued. "
        a href=(Tab::Jobs.path()) { "Follow it on the Jobs tab" } "."
    }
}

async fn action(
    Path((server_id, action)): Path<(i64, String)>,
    PanelForm(panel, fields): PanelForm,
) -> Response {
    let server = [("server_id", json!(server_id))];
    let ctx = &panel.ctx;
    fn job(what: &'static str) -> impl FnOnce(i64) -> Markup {
        move |job_id| job_notice(what, job_id)
    }
    fn done<T>(what: &'static str) -> impl FnOnce(T) -> Markup {
        move |_| html! { (what) "." }
    }
    let result = match action.as_str() {
        "start" => call::StartServer(ctx, form(&fields, &server))
            .await
            .map(job("Starting")),
        "stop" => call::StopServer(ctx, form(&fields, &server))
            .await
            .map(job("Stopping")),
        "destroy" => call::DestroyServer(ctx, form(&fields, &server))
            .await
            .map(job("Destroying")),
        "attach" => call::AttachDisk(ctx, form(&fields, &server))
            .await
            .map(done("Disk attached")),
        "detach" => call::DetachDisk(ctx, form(&fields, &server))
            .await
            .map(done("Disk detached")),
        "rename" => call::RenameServer(ctx, form(&fields, &server))
            .await
            .map(done("Server renamed")),
        "resize" => call::ChangeServerProductOffer(ctx, form(&fields, &server))
            .await
            .map(done("Server size changed")),
        "firewall" => call::ApplyFirewallTemplate(ctx, form(&fields, &server))
            .await
            .map(done("Firewall template applied")),
        _ => return super::not_found(),
    };
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
