//! The live console, for administrators (`services::console`): server-rendered HTML that refreshes
//! itself every 5 s, with charts as inline SVG (no JavaScript).
//!
//! # GET  /console          the console (or its sign-in form): an administrator's access token as
//!                          the `haetae_console` cookie, a bearer token or `?access_token=`
//! # POST /console/login    username and password (form): sets the cookie, back to /console

use axum::body::Bytes;
use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::app::{AppState, access_token, client_ip};
use crate::services::console::{self as service, ConsoleView, NodeView, Sample};
use crate::services::incidents::{Incident, duration_text, utc};

const COOKIE: &str = "haetae_console";
/// Largest sign-in form, bytes.
const MAX_FORM_BYTES: usize = 4096;

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    router.route("/console", get(console)).route("/console/login", post(login))
}

fn cookie_token(parts: &Parts) -> Option<String> {
    let cookies = parts.headers.get(header::COOKIE)?.to_str().ok()?;
    cookies
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
}

fn html(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    response
}

async fn console(State(app): State<AppState>, parts: Parts) -> Response {
    let Some(token) = cookie_token(&parts).or_else(|| access_token(&parts)) else {
        return html(StatusCode::UNAUTHORIZED, sign_in_page(&app.config.server_name, None));
    };
    match service::admin_for_token(&app, &token).await {
        Ok(admin) => {
            let view = service::view(&app).await;
            let mut response = html(StatusCode::OK, console_page(&view, &admin));
            response.headers_mut().insert("refresh", HeaderValue::from_static("5"));
            response
        }
        Err(error) if error.errcode == "M_FORBIDDEN" => {
            html(StatusCode::FORBIDDEN, sign_in_page(&app.config.server_name, Some("That account is not an administrator.")))
        }
        Err(error) if error.status == StatusCode::UNAUTHORIZED => {
            html(StatusCode::UNAUTHORIZED, sign_in_page(&app.config.server_name, Some("Your session has ended; sign in again.")))
        }
        Err(error) => html(error.status, sign_in_page(&app.config.server_name, Some(&error.message))),
    }
}

async fn login(State(app): State<AppState>, parts: Parts, body: Bytes) -> Response {
    let server = app.config.server_name.clone();
    if body.len() > MAX_FORM_BYTES {
        return html(StatusCode::PAYLOAD_TOO_LARGE, sign_in_page(&server, Some("That form is too large.")));
    }
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let field = |name: &str| fields.iter().find(|(key, _)| key == name).map(|(_, value)| value.clone()).unwrap_or_default();
    let (username, password) = (field("username"), field("password"));
    if username.is_empty() || password.is_empty() {
        return html(StatusCode::BAD_REQUEST, sign_in_page(&server, Some("Give a username and a password.")));
    }
    match service::login(&app, client_ip(&parts), &username, &password).await {
        Ok(token) => {
            let secure = app.config.public_base_url.as_deref().is_some_and(|url| url.starts_with("https:"));
            let cookie =
                format!("{COOKIE}={token}; Path=/console; HttpOnly; SameSite=Strict{}", if secure { "; Secure" } else { "" });
            let mut response = StatusCode::SEE_OTHER.into_response();
            let headers = response.headers_mut();
            headers.insert(header::LOCATION, HeaderValue::from_static("/console"));
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                headers.insert(header::SET_COOKIE, value);
            }
            response
        }
        Err(error) if error.errcode == "M_LIMIT_EXCEEDED" => {
            html(StatusCode::TOO_MANY_REQUESTS, sign_in_page(&server, Some("Too many attempts; wait a moment.")))
        }
        Err(error) if error.errcode == "M_FORBIDDEN" => {
            html(StatusCode::FORBIDDEN, sign_in_page(&server, Some("Wrong username or password, or not an administrator.")))
        }
        Err(error) => html(error.status, sign_in_page(&server, Some(&error.message))),
    }
}

use crate::html::escape;

fn shell(title: &str, server: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} &middot; {server}</title><style>{STYLE}</style></head><body>\
         <header class=\"site\"><span class=\"brand\">haetae</span> <span class=\"server\">{server}</span> <span>{title}</span></header>{body}</body></html>",
        title = escape(title),
        server = escape(server),
    )
}

fn sign_in_page(server: &str, error: Option<&str>) -> String {
    let error = error.map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e))).unwrap_or_default();
    let body = format!(
        "<main class=\"signin\"><h1>Console</h1><p>Administrators only.</p>{error}\
         <form method=\"post\" action=\"/console/login\"><label>Username<input name=\"username\" autocomplete=\"username\" required></label>\
         <label>Password<input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\
         <button type=\"submit\">Sign in</button></form></main>"
    );
    shell("Console", server, &body)
}

/// A line chart of one figure per node over the samples' time span, as inline SVG.
fn chart(title: &str, unit: &str, nodes: &[NodeView], figure: fn(&Sample) -> f64) -> String {
    const WIDTH: f64 = 560.0;
    const HEIGHT: f64 = 150.0;
    const PAD: f64 = 28.0;
    let colors = ["#0b6e4f", "#1d4ed8", "#b45309", "#9333ea", "#be123c", "#0e7490"];
    let all: Vec<&Sample> = nodes.iter().flat_map(|n| n.samples.iter()).collect();
    let (Some(start), Some(end)) = (all.iter().map(|s| s.at_ms).min(), all.iter().map(|s| s.at_ms).max()) else {
        return format!(
            "<figure class=\"chart\"><figcaption>{}</figcaption><p class=\"muted\">No samples yet.</p></figure>",
            escape(title)
        );
    };
    let span = (end.saturating_sub(start)).max(1) as f64;
    let top = all.iter().map(|s| figure(s)).fold(0.0f64, f64::max).max(1e-9) * 1.1;
    let mut svg = format!(
        "<svg viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"{title}\"><line x1=\"{PAD}\" y1=\"{y0}\" x2=\"{WIDTH}\" y2=\"{y0}\" class=\"axis\"/>\
         <text x=\"2\" y=\"12\" class=\"tick\">{top:.1}</text><text x=\"2\" y=\"{y0}\" class=\"tick\">0</text>",
        title = escape(title),
        y0 = HEIGHT - PAD,
    );
    for (index, node) in nodes.iter().enumerate() {
        let points: Vec<String> = node
            .samples
            .iter()
            .map(|s| {
                let x = PAD + (s.at_ms.saturating_sub(start)) as f64 / span * (WIDTH - PAD);
                let y = (HEIGHT - PAD) - figure(s) / top * (HEIGHT - PAD - 8.0);
                format!("{x:.1},{y:.1}")
            })
            .collect();
        let color = colors[index % colors.len()];
        svg.push_str(&format!("<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>", points.join(" ")));
        svg.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" fill=\"{color}\" class=\"legend\">{}</text>",
            PAD + 4.0 + index as f64 * 90.0,
            HEIGHT - 8.0,
            escape(&node.name)
        ));
    }
    svg.push_str(&format!(
        "<text x=\"{}\" y=\"{}\" class=\"tick\" text-anchor=\"end\">last {}</text></svg>",
        WIDTH - 2.0,
        HEIGHT - 8.0,
        duration_text(end - start)
    ));
    format!(
        "<figure class=\"chart\"><figcaption>{} <span class=\"muted\">({})</span></figcaption>{svg}</figure>",
        escape(title),
        escape(unit)
    )
}

fn incident_row(incident: &Incident, now_ms: u64) -> String {
    let end = incident.resolved_at_ms.unwrap_or(now_ms);
    format!(
        "<tr><td><span class=\"badge {class}\">{status}</span></td><td>{title}</td><td>{dcs}</td><td>{opened}</td><td>{duration}</td><td><code>{id}</code></td></tr>",
        class = if incident.resolved_at_ms.is_none() { "bad" } else { "ok" },
        status = if incident.resolved_at_ms.is_none() { "open" } else { "resolved" },
        title = escape(&incident.title),
        dcs = escape(&incident.dcs.iter().cloned().collect::<Vec<_>>().join(", ")),
        opened = utc(incident.opened_at_ms),
        duration = duration_text(end.saturating_sub(incident.opened_at_ms)),
        id = escape(&incident.id),
    )
}

fn console_page(view: &ConsoleView, admin: &str) -> String {
    let mut body = String::from("<main class=\"wide\">");
    body.push_str(&format!(
        "<p class=\"muted\">Answered by node <strong>{}</strong> at {} for {} &middot; refreshes every 5 s</p>",
        escape(&view.node),
        utc(view.at_ms),
        escape(admin)
    ));
    for problem in &view.problems {
        body.push_str(&format!("<p class=\"error\">Could not read {}</p>", escape(problem)));
    }
    // DCs.
    body.push_str("<section><h2>Data centres</h2><div class=\"cards\">");
    for dc in &view.dcs {
        let healthy = dc.current * 2 > dc.replicas;
        body.push_str(&format!(
            "<div class=\"card dc {class}\"><h3>DC {name}</h3><p class=\"state\">{state}</p><p>{current} of {replicas} replicas current &middot; leads {leaders}</p></div>",
            class = if healthy { "ok" } else { "bad" },
            name = escape(&dc.name),
            state = if healthy { "healthy" } else { "unreachable" },
            current = dc.current,
            replicas = dc.replicas,
            leaders = dc.leaders,
        ));
    }
    body.push_str("</div></section>");
    // Incidents.
    body.push_str("<section><h2>Incidents</h2>");
    if view.open.is_empty() && view.recent.is_empty() {
        body.push_str("<p class=\"muted\">None.</p>");
    } else {
        body.push_str("<table><thead><tr><th>Status</th><th>What</th><th>DCs</th><th>Opened</th><th>Duration</th><th>Id</th></tr></thead><tbody>");
        for incident in view.open.iter().chain(&view.recent) {
            body.push_str(&incident_row(incident, view.at_ms));
        }
        body.push_str("</tbody></table>");
    }
    body.push_str("</section>");
    // Nodes and charts.
    body.push_str("<section><h2>Nodes</h2><table><thead><tr><th>Node</th><th>Last heartbeat</th><th>Up for</th><th>Requests/s</th><th>Latency ms</th><th>Errors/s</th></tr></thead><tbody>");
    for node in &view.nodes {
        let ago = view.at_ms.saturating_sub(node.last_seen_ms);
        let last = node.samples.last().cloned().unwrap_or_default();
        body.push_str(&format!(
            "<tr class=\"{class}\"><td>{name}</td><td>{ago} ago</td><td>{up}</td><td>{rps:.1}</td><td>{latency:.1}</td><td>{failed:.1}</td></tr>",
            class = if ago > 10_000 { "stale" } else { "" },
            name = escape(&node.name),
            ago = duration_text(ago),
            up = duration_text(node.last_seen_ms.saturating_sub(node.started_ms)),
            rps = last.requests_per_s,
            latency = last.latency_ms,
            failed = last.failed_per_s,
        ));
    }
    body.push_str("</tbody></table><div class=\"charts\">");
    body.push_str(&chart("Throughput", "requests/s", &view.nodes, |s| s.requests_per_s));
    body.push_str(&chart("Latency", "mean ms per request, long-polls included", &view.nodes, |s| s.latency_ms));
    body.push_str("</div></section>");
    // Assets.
    body.push_str("<section><h2>Assets</h2><table><thead><tr><th>Asset</th><th>Leader</th><th>Replicas (lag, last heard)</th><th>Messages</th></tr></thead><tbody>");
    for asset in &view.assets {
        let replicas: Vec<String> = asset
            .replicas
            .iter()
            .filter(|r| !r.leader)
            .map(|r| {
                let class = if r.current && r.seen_ago_s <= 3.0 { "ok" } else { "bad" };
                format!("<span class=\"{class}\">{} ({}, {:.1} s)</span>", escape(&r.server), r.lag, r.seen_ago_s)
            })
            .collect();
        body.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&asset.label),
            asset.leader.as_deref().map(escape).unwrap_or_else(|| "<span class=\"bad\">none</span>".into()),
            replicas.join(" "),
            asset.messages
        ));
    }
    for label in &view.unanswered {
        body.push_str(&format!(
            "<tr><td>{}</td><td><span class=\"bad\">no answer</span></td><td></td><td></td></tr>",
            escape(label)
        ));
    }
    body.push_str("</tbody></table></section></main>");
    shell("Console", &view.server_name, &body)
}

const STYLE: &str = r#"
:root { --bg:#f4f5f7; --card:#fff; --text:#1b1d21; --muted:#5f6672; --line:#d9dce1; --ok:#0b6e4f; --ok-bg:#e7f5ee; --bad:#b42318; --bad-bg:#fdecea; }
@media (prefers-color-scheme: dark) { :root { --bg:#121417; --card:#1c1f24; --text:#eceef1; --muted:#a3a9b3; --line:#343941;
  --ok:#34c38f; --ok-bg:#16342a; --bad:#ff8a80; --bad-bg:#3a1d1b; } }
* { box-sizing:border-box; }
body { margin:0; background:var(--bg); color:var(--text); font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",sans-serif; padding:20px; }
header.site { color:var(--muted); margin-bottom:12px; } header.site .brand { font-weight:700; color:var(--text); }
header.site .server { padding:1px 8px; border:1px solid var(--line); border-radius:999px; margin:0 6px; }
main.signin { max-width:380px; margin:40px auto; background:var(--card); border:1px solid var(--line); border-radius:10px; padding:24px; }
main.signin form { display:flex; flex-direction:column; gap:12px; } main.signin label { display:flex; flex-direction:column; gap:4px; }
main.signin input { font:inherit; padding:8px 10px; border:1px solid var(--line); border-radius:6px; background:var(--bg); color:var(--text); }
main.signin button { font:inherit; padding:9px; border:0; border-radius:6px; background:var(--ok); color:#fff; font-weight:600; }
main.wide { max-width:1200px; margin:0 auto; }
h2 { font-size:13px; text-transform:uppercase; letter-spacing:.06em; color:var(--muted); margin:22px 0 8px; }
.cards { display:flex; gap:12px; flex-wrap:wrap; }
.card { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:12px 16px; min-width:220px; }
.card h3 { margin:0; } .card p { margin:2px 0; }
.card.ok .state { color:var(--ok); font-weight:600; } .card.bad { background:var(--bad-bg); } .card.bad .state { color:var(--bad); font-weight:600; }
table { width:100%; border-collapse:collapse; background:var(--card); border:1px solid var(--line); border-radius:10px; font-size:14px; }
th, td { text-align:left; padding:6px 10px; border-bottom:1px solid var(--line); } th { color:var(--muted); font-weight:600; }
tr.stale td { color:var(--muted); }
.ok { color:var(--ok); } .bad { color:var(--bad); } .muted { color:var(--muted); }
.badge { padding:1px 8px; border-radius:999px; font-size:12px; font-weight:600; }
.badge.ok { background:var(--ok-bg); } .badge.bad { background:var(--bad-bg); }
.error { color:var(--bad); background:var(--bad-bg); padding:8px 12px; border-radius:6px; }
.charts { display:flex; gap:12px; flex-wrap:wrap; margin-top:12px; }
figure.chart { margin:0; background:var(--card); border:1px solid var(--line); border-radius:10px; padding:10px; flex:1; min-width:320px; }
figure.chart svg { width:100%; height:auto; } .axis { stroke:var(--line); } .tick { font-size:11px; fill:var(--muted); } .legend { font-size:11px; font-weight:600; }
"#;
