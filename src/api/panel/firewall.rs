//! The Firewall tab: the caller's firewall templates in a VDC with their rules in order
//! (ListFirewallTemplates); make one (CreateFirewallTemplate), rename or delete it; add a rule
//! at a position (AddFirewallRule), move one up or down (MoveFirewallRule), remove one
//! (RemoveFirewallRule). Templates are applied to servers from their rows on the Servers tab.

use axum::Router;
use axum::extract::{Path, Query};
use axum::response::Response;
use axum::routing::{get, post};
use maud::{Markup, html};
use serde_json::json;

use super::layout::{
    self, Tab, outcome_for, post_form, select_field, text_field, typed, vdc_options, vdc_picker,
};
use super::{Fields, Outcome, Panel, PanelForm, answer, form, tab_page};
use crate::error::ApiResult;
use crate::ops::state::AppState;
use crate::ops::{FirewallRule, FirewallTemplate, args, call};

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
fn describe(rule: &FirewallRule) -> String {
    let ports = match (rule.port_from, rule.port_to) {
        (Some(a), Some(b)) if a == b => format!(" {a}"),
        (Some(a), Some(b)) => format!(" {a}-{b}"),
        _ => String::new(),
    };
    let side = if rule.direction == "IN" { "from" } else { "to" };
    format!(
        "{} {}{ports} {side} {}: {}",
        rule.direction, rule.protocol, rule.cidr, rule.action
    )
}

async fn render(panel: &Panel, view: &Fields, outcome: Option<&Outcome>) -> Markup {
    let vdcs = match call::ListVDCs(&panel.ctx, args::ListVDCs::default()).await {
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
    let templates = all_templates(panel).await;
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
                    @let mine: Vec<&FirewallTemplate> = list.iter()
                        .filter(|t| t.vdc_id == vdc_id).collect();
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

fn template_card(
    csrf: &str,
    vdc_id: i64,
    template: &FirewallTemplate,
    outcome: Option<&Outcome>,
) -> Markup {
    let id = template.firewall_template_id;
    let name = template.name.as_str();
    let slot = format!("template-{id}");
    let add = format!("template-{id}-add");
    let rules = &template.rules;
    let servers = &template.server_ids;
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
                "Default inbound " strong { (template.default_inbound) }
                ", default outbound " strong { (template.default_outbound) } ". "
                @if servers.is_empty() { "Used by no server." }
                @else { "Used by " (servers.len()) " server(s)." }
            }
            @if rules.is_empty() {
                p { "No rules: the defaults decide." }
            } @else {
                ol.rules {
                    @for rule in rules {
                        @let rule_id = rule.firewall_rule_id;
                        @let position = rule.position;
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
    let result = call::CreateFirewallTemplate(&panel.ctx, form(&fields, &[]))
        .await
        .map(|t| html! { "Template " (t.name) " created." });
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
    let ctx = &panel.ctx;
    let fixed = [("template_id", json!(template_id))];
    let (result, done, card): (ApiResult<()>, &str, String) = match action.as_str() {
        "add" => (
            call::AddFirewallRule(ctx, form(&fields, &fixed))
                .await
                .map(drop),
            "Rule added.",
            format!("template-{template_id}-add"),
        ),
        "rename" => (
            call::RenameFirewallTemplate(ctx, form(&fields, &fixed))
                .await
                .map(drop),
            "Template renamed.",
            format!("template-{template_id}"),
        ),
        "delete" => (
            call::DeleteFirewallTemplate(ctx, form(&fields, &fixed))
                .await
                .map(drop),
            "Template deleted.",
            format!("template-{template_id}"),
        ),
        _ => return super::not_found(),
    };
    let result = result.map(|()| html! { (done) });
    // A deleted template's card is gone: its notice goes with the new-template form.
    let card = if action == "delete" && result.is_ok() {
        "create-template".to_string()
    } else {
        card
    };
    let view = fields.only(VIEW);
    answer(&panel, Tab::Firewall, view, card, fields, result, render).await
}

async fn rule_action(
    Path((rule_id, action)): Path<(i64, String)>,
    PanelForm(panel, fields): PanelForm,
) -> Response {
    if !matches!(action.as_str(), "move" | "remove") {
        return super::not_found();
    }
    // The answer goes on the rule's template card, found before the rule may be gone.
    let template_id = all_templates(&panel)
        .await
        .unwrap_or_default()
        .iter()
        .find(|t| t.rules.iter().any(|r| r.firewall_rule_id == rule_id))
        .map_or(0, |t| t.firewall_template_id);
    let ctx = &panel.ctx;
    let fixed = [("rule_id", json!(rule_id))];
    let result = if action == "move" {
        call::MoveFirewallRule(ctx, form(&fields, &fixed))
            .await
            .map(|_| html! { "Rule moved." })
    } else {
        call::RemoveFirewallRule(ctx, form(&fields, &fixed))
            .await
            .map(|_| html! { "Rule removed." })
    };
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

/// The caller's firewall templates (the first page, which holds them all within the quota).
async fn all_templates(panel: &Panel) -> ApiResult<Vec<FirewallTemplate>> {
    call::ListFirewallTemplates(
        &panel.ctx,
        args::ListFirewallTemplates {
            page_size: Some(super::PAGE_SIZE),
            ..Default::default()
        },
    )
    .await
}
