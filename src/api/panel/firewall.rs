//! The Firewall tab: the caller's firewall templates in a VDC with their rules in order
//! (ListFirewallTemplates); make one (CreateFirewallTemplate), rename or delete it; add a rule
//! at a position (AddFirewallRule), move one up or down (MoveFirewallRule), remove one
//! (RemoveFirewallRule). Templates are applied to servers from their rows on the Servers tab.

use axum::Router;
use axum::extract::{Path, Query};
use axum::response::Response;
use axum::routing::{get, post};
use maud::{Markup, html};
use serde_json::{Value, json};

use super::layout::{
    self, Tab, items, n, outcome_for, post_form, s, select_field, text_field, typed, vdc_options,
    vdc_picker,
};
use super::{Fields, Outcome, Panel, PanelForm, answer, tab_page};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/panel/firewall", get(page))
        .route("/panel/firewall/create", post(create))
        .route(
            "/panel/firewall/{template_id}/{action}",
            post(template_action),
        )
        .route(
            "/panel/firewall/rules/{rule_id}/{action}",
            post(rule_action),
        )
}

const VIEW: &[&str] = &["vdc_id"];

async fn page(panel: Panel, Query(query): Query<Vec<(String, String)>>) -> Response {
    let view = Fields(query).only(VIEW);
    let main = render(&panel, &view, None).await;
    tab_page(&panel, Tab::Firewall, main).await
}

fn choices(values: &[&str]) -> Vec<(String, String)> {
    values
        .iter()
        .map(|v| (v.to_string(), v.to_string()))
        .collect()
}

/// A rule in words: `IN TCP 22 from 10.0.0.0/8: ALLOW`.
fn describe(rule: &Value) -> String {
    let ports = match (n(rule, "port_from"), n(rule, "port_to")) {
        (Some(a), Some(b)) if a == b => format!(" {a}"),
        (Some(a), Some(b)) => format!(" {a}-{b}"),
        _ => String::new(),
    };
    let side = if s(rule, "direction") == "IN" {
        "from"
    } else {
        "to"
    };
    format!(
        "{} {}{ports} {side} {}: {}",
        s(rule, "direction"),
        s(rule, "protocol"),
        s(rule, "cidr"),
        s(rule, "action")
    )
}

async fn render(panel: &Panel, view: &Fields, outcome: Option<&Outcome>) -> Markup {
    let vdcs = match panel.read("ListVDCs", &[]).await {
        Ok(vdcs) => vdcs,
        Err(err) => {
            return layout::main(
                "Firewall",
                html! { p.error role="alert" { (err.public_message()) } },
            );
        }
    };
    let (vdc_choices, chosen) = vdc_options(&vdcs, view);
    let Some(vdc_id) = chosen else {
        return layout::main(
            "Firewall",
            html! { p { "You have no virtual data centre (VDC) yet: make one on the Servers tab." } },
        );
    };
    let templates = panel
        .read(
            "ListFirewallTemplates",
            &[("page_size", json!(super::PAGE_SIZE))],
        )
        .await;
    let csrf = &panel.csrf_token;
    let id = "create-template";
    let policies = choices(&["ALLOW", "DENY"]);
    let inbound = match typed(outcome, id, "default_inbound") {
        "" => "DENY",
        typed => typed,
    };
    let outbound = match typed(outcome, id, "default_outbound") {
        "" => "ALLOW",
        typed => typed,
    };
    layout::main(
        "Firewall",
        html! {
            (vdc_picker(Tab::Firewall.path(), &vdc_choices, chosen))
            p { "A template is a set of rules in order, the first that matches a new connection \
                 deciding, with a default for what no rule matches. Replies to an allowed \
                 connection always pass. Apply a template to a server from its row on the Servers tab." }
            @match &templates {
                Err(err) => p.error role="alert" { (err.public_message()) },
                Ok(list) => {
                    @let mine: Vec<&Value> = items(list).iter()
                        .filter(|t| n(t, "vdc_id") == Some(vdc_id)).collect();
                    @if mine.is_empty() {
                        p { "No firewall templates in this VDC yet." }
                    }
                    @for template in mine {
                        (template_card(csrf, vdc_id, template, outcome))
                    }
                }
            }
            section.card aria-labelledby="create-template-title" {
                h2 #create-template-title { "New firewall template" }
                (post_form(csrf, "/panel/firewall/create", id, "grid", html! {
                    input type="hidden" name="vdc_id" value=(vdc_id);
                    (outcome_for(outcome, id))
                    (text_field(id, "name", "Name", typed(outcome, id, "name"), true, None))
                    (select_field(id, "default_inbound", "Default inbound", &policies, inbound))
                    (select_field(id, "default_outbound", "Default outbound", &policies, outbound))
                    div.submit { button.primary type="submit" { "Create template" } }
                }))
            }
        },
    )
}

fn template_card(csrf: &str, vdc_id: i64, template: &Value, outcome: Option<&Outcome>) -> Markup {
    let id = n(template, "firewall_template_id").unwrap_or_default();
    let name = s(template, "name");
    let slot = format!("template-{id}");
    let add = format!("template-{id}-add");
    let rules = template.get("rules").map(items).unwrap_or(&[]);
    let servers = template.get("server_ids").map(items).unwrap_or(&[]);
    let form = |path: &str, form_id: &str, body: Markup| {
        post_form(
            csrf,
            path,
            form_id,
            "inline",
            html! { input type="hidden" name="vdc_id" value=(vdc_id); (body) },
        )
    };
    html! {
        section.card id=(slot) aria-labelledby=(format!("{slot}-title")) {
            h2 id=(format!("{slot}-title")) { (name) }
            (outcome_for(outcome, &slot))
            p.small {
                "Default inbound " strong { (s(template, "default_inbound")) }
                ", default outbound " strong { (s(template, "default_outbound")) } ". "
                @if servers.is_empty() { "Used by no server." }
                @else { "Used by " (servers.len()) " server(s)." }
            }
            @if rules.is_empty() {
                p { "No rules: the defaults decide." }
            } @else {
                ol.rules {
                    @for rule in rules {
                        @let rule_id = n(rule, "firewall_rule_id").unwrap_or_default();
                        @let position = n(rule, "position").unwrap_or(1);
                        @let text = describe(rule);
                        li data-rule-id=(rule_id) {
                            span.rule { (text) } " "
                            @if position > 1 {
                                (form(&format!("/panel/firewall/rules/{rule_id}/move"), &format!("rule-{rule_id}-up"), html! {
                                    input type="hidden" name="position" value=(position - 1);
                                    button.small type="submit" aria-label=(format!("Move up: {text}")) { "Up" }
                                }))
                            }
                            @if (position as usize) < rules.len() {
                                (form(&format!("/panel/firewall/rules/{rule_id}/move"), &format!("rule-{rule_id}-down"), html! {
                                    input type="hidden" name="position" value=(position + 1);
                                    button.small type="submit" aria-label=(format!("Move down: {text}")) { "Down" }
                                }))
                            }
                            (form(&format!("/panel/firewall/rules/{rule_id}/remove"), &format!("rule-{rule_id}-remove"), html! {
                                button.small type="submit" aria-label=(format!("Remove: {text}")) { "Remove" }
                            }))
                        }
                    }
                }
            }
            details open[layout::failed(outcome, &add)] {
                summary { "Add a rule…" }
                (post_form(csrf, &format!("/panel/firewall/{id}/add"), &add, "grid", html! {
                    input type="hidden" name="vdc_id" value=(vdc_id);
                    (outcome_for(outcome, &add))
                    (select_field(&add, "direction", "Direction", &choices(&["IN", "OUT"]), typed(outcome, &add, "direction")))
                    (select_field(&add, "protocol", "Protocol", &choices(&["TCP", "UDP", "ICMP", "ANY"]), typed(outcome, &add, "protocol")))
                    (text_field(&add, "port_from", "First port", typed(outcome, &add, "port_from"), false,
                        Some("TCP and UDP; empty: every port")))
                    (text_field(&add, "port_to", "Last port", typed(outcome, &add, "port_to"), false,
                        Some("empty: the first port alone")))
                    (text_field(&add, "cidr", "Network", match typed(outcome, &add, "cidr") { "" => "0.0.0.0/0", t => t }, true,
                        Some("the source of what comes in, the destination of what goes out")))
                    (select_field(&add, "action", "Action", &choices(&["ALLOW", "DENY"]), typed(outcome, &add, "action")))
                    (text_field(&add, "position", "Position", typed(outcome, &add, "position"), false,
                        Some("1 is first; empty: last")))
                    div.submit { button.primary type="submit" { "Add rule" } }
                }))
            }
            details {
                summary { "Rename or delete…" }
                (form(&format!("/panel/firewall/{id}/rename"), &format!("{slot}-rename"), html! {
                    label.visually-hidden for=(format!("{slot}-name")) { "New name of " (name) }
                    input type="text" id=(format!("{slot}-name")) name="name" value=(name) required;
                    button type="submit" { "Rename" }
                }))
                (form(&format!("/panel/firewall/{id}/delete"), &format!("{slot}-delete"), html! {
                    button.danger type="submit" { "Delete " (name) }
                }))
            }
        }
    }
}

async fn create(PanelForm(panel, fields): PanelForm) -> Response {
    let result = panel
        .call_with("CreateFirewallTemplate", &fields, &[])
        .await
        .map(|t| html! { "Template " (s(&t, "name")) " created." });
    let view = fields.only(VIEW);
    answer(
        &panel,
        Tab::Firewall,
        view,
        "create-template".into(),
        fields,
        result,
        render,
    )
    .await
}

async fn template_action(
    Path((template_id, action)): Path<(i64, String)>,
    PanelForm(panel, fields): PanelForm,
) -> Response {
    let (operation, done, form) = match action.as_str() {
        "add" => (
            "AddFirewallRule",
            "Rule added.",
            format!("template-{template_id}-add"),
        ),
        "rename" => (
            "RenameFirewallTemplate",
            "Template renamed.",
            format!("template-{template_id}"),
        ),
        "delete" => (
            "DeleteFirewallTemplate",
            "Template deleted.",
            format!("template-{template_id}"),
        ),
        _ => return super::not_found(),
    };
    let result = panel
        .call_with(operation, &fields, &[("template_id", json!(template_id))])
        .await
        .map(|_| html! { (done) });
    // A deleted template's card is gone: its notice goes with the new-template form.
    let form = if action == "delete" && result.is_ok() {
        "create-template".to_string()
    } else {
        form
    };
    let view = fields.only(VIEW);
    answer(&panel, Tab::Firewall, view, form, fields, result, render).await
}

async fn rule_action(
    Path((rule_id, action)): Path<(i64, String)>,
    PanelForm(panel, fields): PanelForm,
) -> Response {
    let (operation, done) = match action.as_str() {
        "move" => ("MoveFirewallRule", "Rule moved."),
        "remove" => ("RemoveFirewallRule", "Rule removed."),
        _ => return super::not_found(),
    };
    // The answer goes on the rule's template card, found before the rule may be gone.
    let templates = panel
        .read(
            "ListFirewallTemplates",
            &[("page_size", json!(super::PAGE_SIZE))],
        )
        .await
        .unwrap_or(Value::Null);
    let template_id = items(&templates)
        .iter()
        .find(|t| {
            t.get("rules")
                .map(items)
                .unwrap_or(&[])
                .iter()
                .any(|r| n(r, "firewall_rule_id") == Some(rule_id))
        })
        .and_then(|t| n(t, "firewall_template_id"))
        .unwrap_or_default();
    let result = panel
        .call_with(operation, &fields, &[("rule_id", json!(rule_id))])
        .await
        .map(|_| html! { (done) });
    let view = fields.only(VIEW);
    answer(
        &panel,
        Tab::Firewall,
        view,
        format!("template-{template_id}"),
        fields,
        result,
        render,
    )
    .await
}
