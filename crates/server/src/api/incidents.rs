//! The status page (public, no login, no JavaScript) and the incidents admin API
//! (`services::incidents`).
//!
//! # GET  /status                                      HTML: current and recent incidents
//! # GET  /status.json                                 the same as JSON
//! # GET  /_synapse/admin/v1/incidents                 every incident kept (admins)
//! # GET  /_synapse/admin/v1/incidents/{id}            one, with its notices' progress
//! # GET  /_synapse/admin/v1/incidents/{id}/report     its report, Markdown
//! # PUT  /_synapse/admin/v1/incidents/{id}/drill      a fire drill's figures about it

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use serde_json::{Value, json};

use crate::app::{AppState, Caller, JsonBody};
use crate::error::ApiResult;
use crate::services::admin::require_admin;
use crate::services::incidents::{self as service, Incident, Status, duration_text, utc};

/// Resolved incidents the status page shows.
const RECENT_ON_STATUS_PAGE: usize = 10;

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    router
        .route("/status", get(status_page))
        .route("/status.json", get(status_json))
        .route("/_synapse/admin/v1/incidents", get(list))
        .route("/_synapse/admin/v1/incidents/{id}", get(show))
        .route("/_synapse/admin/v1/incidents/{id}/report", get(report))
        .route("/_synapse/admin/v1/incidents/{id}/drill", put(annotate_drill))
}

/// Open incidents and the latest resolved ones, or None when this node cannot read them.
async fn current(app: &AppState) -> Option<(Vec<Incident>, Vec<Incident>)> {
    let incidents = service::list(app).await.ok()?;
    let (open, resolved): (Vec<Incident>, Vec<Incident>) = incidents.into_iter().partition(|i| i.status == Status::Open);
    Some((open, resolved.into_iter().take(RECENT_ON_STATUS_PAGE).collect()))
}

async fn status_json(State(app): State<AppState>) -> Response {
    let no_store = [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))];
    match current(&app).await {
        Some((open, recent)) => {
            let body = json!({
                "status": if open.is_empty() { "operational" } else { "incident" },
                "server_name": app.config.server_name,
                "node": app.node,
                "open": open.iter().map(service::public).collect::<Vec<_>>(),
                "recent": recent.iter().map(service::public).collect::<Vec<_>>(),
            });
            (no_store, Json(body)).into_response()
        }
        None => {
            let body = json!({ "status": "unknown", "server_name": app.config.server_name, "node": app.node });
            (StatusCode::SERVICE_UNAVAILABLE, no_store, Json(body)).into_response()
        }
    }
}

async fn status_page(State(app): State<AppState>) -> Response {
    let page = render_page(&app.config.server_name, &app.node, current(&app).await);
    let mut response = page.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("refresh", HeaderValue::from_static("30"));
    response
}

async fn list(State(app): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    require_admin(&app, &caller).await?;
    let incidents = service::list(&app).await?;
    Ok(Json(json!({ "incidents": incidents, "total": incidents.len() })))
}

async fn show(State(app): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    require_admin(&app, &caller).await?;
    let incident = service::get(&app, &id).await?;
    let notices: serde_json::Map<String, Value> = service::notice_progress(&app, &id)
        .await?
        .into_iter()
        .map(|(kind, progress)| (kind.to_string(), serde_json::to_value(progress).unwrap_or_default()))
        .collect();
    let mut body = serde_json::to_value(incident).unwrap_or_default();
    body["notices"] = Value::Object(notices);
    Ok(Json(body))
}

async fn report(State(app): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    require_admin(&app, &caller).await?;
    let markdown = service::report(&app, &id).await?;
    let mut response = markdown.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/markdown; charset=utf-8"));
    Ok(response)
}

async fn annotate_drill(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(drill): JsonBody<Value>,
) -> ApiResult<Json<Incident>> {
    require_admin(&app, &caller).await?;
    service::annotate_drill(&app, &id, drill).await.map(Json)
}

use crate::html::escape;

fn incident_card(incident: &Incident) -> String {
    let (badge, class) = match incident.status {
        Status::Open => ("Ongoing", "open"),
        Status::Resolved => ("Resolved", "resolved"),
    };
    let end = incident.resolved_at_ms.unwrap_or_else(crate::services::rooms::now_ms);
    let mut affected = Vec::new();
    if !incident.dcs.is_empty() {
        affected.push(format!("DC {}", incident.dcs.iter().cloned().collect::<Vec<_>>().join(", ")));
    }
    if !incident.assets.is_empty() {
        affected.push(format!("{} storage assets", incident.assets.len()));
    }
    let mut html = format!(
        "<article class=\"incident {class}\" id=\"{id}\"><header><span class=\"badge {class}\">{badge}</span><h3>{title}</h3></header>\
         <p class=\"when\">Began {opened}{resolved} &middot; {duration}{affected}</p><ol class=\"timeline\">",
        id = escape(&incident.id),
        title = escape(&incident.title),
        opened = utc(incident.opened_at_ms),
        resolved = incident.resolved_at_ms.map(|at| format!(", resolved {}", utc(at))).unwrap_or_default(),
        duration = duration_text(end.saturating_sub(incident.opened_at_ms)),
        affected =
            if affected.is_empty() { String::new() } else { format!(" &middot; affects {}", escape(&affected.join(", "))) },
    );
    for entry in incident.timeline.iter().rev() {
        html.push_str(&format!("<li><time>{}</time> {}</li>", utc(entry.at_ms), escape(&entry.text)));
    }
    html.push_str("</ol></article>");
    html
}

fn render_page(server_name: &str, node: &str, incidents: Option<(Vec<Incident>, Vec<Incident>)>) -> String {
    let (banner, body) = match &incidents {
        None => (
            "<div class=\"banner unknown\"><strong>Status unavailable</strong><span>This node cannot read the incident log right now; try another address of this service.</span></div>".to_string(),
            String::new(),
        ),
        Some((open, recent)) => {
            let banner = if open.is_empty() {
                "<div class=\"banner ok\"><strong>All systems operational</strong><span>Messages, sign-in and sync are working in every data centre.</span></div>".to_string()
            } else {
                format!(
                    "<div class=\"banner bad\"><strong>{} ongoing incident{}</strong><span>Some requests may fail or be slow. Your client retries on its own.</span></div>",
                    open.len(),
                    if open.len() == 1 { "" } else { "s" }
                )
            };
            let mut body = String::new();
            if !open.is_empty() {
                body.push_str("<section><h2>Ongoing</h2>");
                body.extend(open.iter().map(incident_card));
                body.push_str("</section>");
            }
            body.push_str("<section><h2>Recent incidents</h2>");
            if recent.is_empty() {
                body.push_str("<p class=\"empty\">No incidents recently.</p>");
            }
            body.extend(recent.iter().map(incident_card));
            body.push_str("</section>");
            (banner, body)
        }
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Service status &middot; {server}</title><style>{STYLE}</style></head><body>\
         <header class=\"site\"><span class=\"brand\">haetae</span> <span class=\"server\">{server}</span> <span class=\"page\">Service status</span></header>\
         <main>{banner}{body}</main>\
         <footer>Answered by node {node} &middot; updated {now} &middot; <a href=\"/status.json\">JSON</a></footer></body></html>",
        server = escape(server_name),
        node = escape(node),
        now = utc(crate::services::rooms::now_ms()),
    )
}

const STYLE: &str = r#"
:root { --bg:#f4f5f7; --card:#fff; --text:#1b1d21; --muted:#5f6672; --line:#d9dce1; --ok:#0b6e4f; --ok-bg:#e7f5ee;
  --bad:#b42318; --bad-bg:#fdecea; --unknown:#8a6100; --unknown-bg:#fff4d6; }
@media (prefers-color-scheme: dark) { :root { --bg:#121417; --card:#1c1f24; --text:#eceef1; --muted:#a3a9b3; --line:#343941;
  --ok:#34c38f; --ok-bg:#16342a; --bad:#ff8a80; --bad-bg:#3a1d1b; --unknown:#f5c04a; --unknown-bg:#3a2f12; } }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--text); font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",sans-serif;
  display:flex; flex-direction:column; align-items:center; padding:24px 16px; }
header.site, main, footer { width:100%; max-width:760px; }
header.site { margin:8px 0 20px; color:var(--muted); }
header.site .brand { font-weight:700; color:var(--text); }
header.site .server { padding:1px 8px; border:1px solid var(--line); border-radius:999px; margin:0 6px; }
.banner { display:flex; flex-direction:column; gap:2px; padding:18px 20px; border-radius:10px; margin-bottom:24px; border:1px solid var(--line); }
.banner strong { font-size:20px; }
.banner.ok { background:var(--ok-bg); } .banner.ok strong { color:var(--ok); }
.banner.bad { background:var(--bad-bg); } .banner.bad strong { color:var(--bad); }
.banner.unknown { background:var(--unknown-bg); } .banner.unknown strong { color:var(--unknown); }
h2 { font-size:15px; text-transform:uppercase; letter-spacing:.06em; color:var(--muted); margin:24px 0 10px; }
.incident { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:16px 20px; margin-bottom:12px; }
.incident header { display:flex; align-items:center; gap:10px; }
.incident h3 { margin:0; font-size:18px; }
.badge { font-size:13px; font-weight:600; padding:2px 10px; border-radius:999px; }
.badge.open { background:var(--bad-bg); color:var(--bad); } .badge.resolved { background:var(--ok-bg); color:var(--ok); }
.when { color:var(--muted); margin:6px 0 10px; font-size:14px; }
.timeline { margin:0; padding-left:18px; font-size:14px; }
.timeline time { color:var(--muted); font-variant-numeric:tabular-nums; margin-right:6px; }
.empty { color:var(--muted); }
footer { color:var(--muted); font-size:13px; margin-top:24px; }
footer a { color:inherit; }
"#;
