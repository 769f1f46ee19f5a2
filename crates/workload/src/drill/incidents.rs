//! The fire drill's incident check: the nodes must open an incident for the fault, close it after
//! the repair, and tell every user (homed in every DC, the rebuilt one included) twice by server
//! notice, once per notice. Asked of the nodes over HTTP (the incidents admin API with an
//! administrator of the drill's own, every user's `/sync` and `/messages` at their home DC);
//! records [`IncidentFigures`] in the history and annotates the incident with the drill's figures.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::client::{Client, ClientError, encode, http_client};
use crate::drill::history::History;

/// The administrator the drill registers to read and annotate incidents.
pub const ADMIN_LOCALPART: &str = "drill-admin";
/// Node settings for a drill: quick detection, notices after two seconds instead of two hours.
pub const NODE_CONFIG: &str = "admins = [\"drill-admin\"]\n\n[homeserver.incidents]\ncheck_interval_ms = 500\nopen_after_s = 1\nresolve_after_s = 2\nnotice_after_s = 2\n";
/// Users listed by name in the figures when they missed a notice.
const MAX_LISTED_USERS: usize = 20;

/// What the drill saw of the incident its fault caused.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct IncidentFigures {
    /// Whether the scenario must open (and close) an incident.
    pub expected: bool,
    /// Incidents opened during the drill.
    pub incidents: usize,
    pub id: Option<String>,
    pub title: Option<String>,
    /// When it was opened and closed, ms after the fault.
    pub opened_after_fault_ms: Option<f64>,
    pub closed_after_fault_ms: Option<f64>,
    /// Users whose home DC showed exactly one notice of each kind for it, per DC:
    /// (DC, users homed there, told of the opening once, told of the resolution once).
    pub notices_by_dc: Vec<(String, usize, usize, usize)>,
    /// Users who did not get exactly one of each, with what they got.
    pub users_missing: Vec<String>,
    /// The incident's report, as the nodes write it, in the report folder.
    pub report_file: Option<String>,
    /// The live console, looked at through a surviving DC's node before, during and after the
    /// fault (with a headless Chromium screenshot each, when Chromium is installed).
    #[serde(default)]
    pub console: Vec<ConsoleShot>,
    /// Why the incident check failed; empty when it passed (or nothing was expected).
    pub problems: Vec<String>,
}

/// One look at the console.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ConsoleShot {
    /// `before`, `during`, `after`.
    pub label: String,
    /// The DC whose node answered.
    pub dc: String,
    /// HTTP status of `/console` (0: no answer), and how long it took, ms.
    pub status: u16,
    pub answer_ms: f64,
    /// Whether the page showed the deployment (its DCs and assets sections).
    pub complete: bool,
    /// The screenshot's file in the report folder.
    pub screenshot: Option<String>,
    /// Why there is no screenshot.
    pub note: Option<String>,
}

/// How long the console may take to answer, and Chromium to take its screenshot.
const CONSOLE_TIMEOUT: Duration = Duration::from_secs(20);
const SCREENSHOT_TIMEOUT: Duration = Duration::from_secs(60);

/// Headless Chromium: `HAETAE_CHROMIUM`, or the first of the usual names on the PATH.
fn chromium() -> Option<std::path::PathBuf> {
    if let Some(path) = std::env::var_os("HAETAE_CHROMIUM") {
        return Some(path.into());
    }
    let paths = std::env::var_os("PATH")?;
    for name in ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"] {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// Loads the console at `endpoint` as `token`'s administrator, then has headless Chromium take a
/// screenshot of it into `dir/console-<label>.png`.
pub async fn console_shot(label: &str, dc: &str, endpoint: &str, token: &str, dir: &std::path::Path) -> ConsoleShot {
    let mut shot = ConsoleShot { label: label.into(), dc: dc.into(), ..Default::default() };
    let started = Instant::now();
    let answer = http_client().get(format!("{endpoint}/console")).bearer_auth(token).timeout(CONSOLE_TIMEOUT).send().await;
    if let Ok(response) = answer {
        shot.status = response.status().as_u16();
        let page = response.text().await.unwrap_or_default();
        shot.complete = page.contains("Data centres") && page.contains("Assets");
    }
    shot.answer_ms = started.elapsed().as_secs_f64() * 1000.0;
    let Some(chromium) = chromium() else {
        shot.note = Some("no Chromium found (set HAETAE_CHROMIUM)".into());
        return shot;
    };
    let file = format!("console-{label}.png");
    let mut command = tokio::process::Command::new(chromium);
    command
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,1500"])
        .arg(format!("--screenshot={}", dir.join(&file).display()))
        .arg(format!("{endpoint}/console?access_token={}", encode(token)))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    match tokio::time::timeout(SCREENSHOT_TIMEOUT, command.status()).await {
        Ok(Ok(status)) if status.success() && dir.join(&file).is_file() => shot.screenshot = Some(file),
        Ok(Ok(status)) => shot.note = Some(format!("Chromium exited with {status}")),
        Ok(Err(error)) => shot.note = Some(format!("cannot run Chromium: {error}")),
        Err(_) => shot.note = Some("Chromium took too long".into()),
    }
    shot
}

/// Registers the drill's administrator (named in [`NODE_CONFIG`]).
pub async fn register_admin(endpoints: Vec<String>) -> Result<Client, ClientError> {
    let password: String = format!("drill-{:016x}", rand::random::<u64>());
    Client::register(http_client(), endpoints, ADMIN_LOCALPART, &password).await
}

async fn incidents(admin: &mut Client) -> Result<Vec<Value>, ClientError> {
    let body = admin.request("GET", "/_synapse/admin/v1/incidents", None, Some(Duration::from_secs(10))).await?;
    Ok(body["incidents"].as_array().cloned().unwrap_or_default())
}

fn notices_done(incident: &Value) -> bool {
    ["opened", "resolved"].iter().all(|kind| incident["notices"][kind]["done"] == true)
}

/// The console shots' problems: the console must answer, complete, from a surviving DC throughout.
pub fn console_problems(shots: &[ConsoleShot]) -> Vec<String> {
    shots
        .iter()
        .filter(|shot| shot.status != 200 || !shot.complete)
        .map(|shot| {
            format!("the console at DC {} did not answer completely {} the fault (HTTP {})", shot.dc, shot.label, shot.status)
        })
        .collect()
}

/// Waits (up to `limit`) until the incident opened after the fault is resolved and both its
/// notices went out, then counts every user's notices at their home DC and annotates the
/// incident with `drill` figures. `homes[i]` is the home endpoint of `clients[i]`.
#[allow(clippy::too_many_arguments)]
pub async fn observe(
    admin: &mut Client,
    history: &History,
    clients: &[Client],
    dcs: &[(String, String)],
    expected: bool,
    drill: Value,
    dir: &std::path::Path,
    limit: Duration,
) -> IncidentFigures {
    let mut figures = IncidentFigures { expected, ..Default::default() };
    let fault_unix_ms = history
        .marks
        .iter()
        .find(|m| m.label.starts_with("fault"))
        .map(|m| history.started_unix_ms as f64 + m.at_ms)
        .unwrap_or(history.started_unix_ms as f64);
    let started = Instant::now();
    let mut during: Vec<Value>;
    let mut chosen: Option<Value> = None;
    loop {
        during = match incidents(admin).await {
            Ok(all) => {
                all.into_iter().filter(|i| i["opened_at_ms"].as_f64().unwrap_or(0.0) >= history.started_unix_ms as f64).collect()
            }
            Err(_) => Vec::new(),
        };
        // The first incident opened after the fault is the fault's.
        let first = during
            .iter()
            .filter(|i| i["opened_at_ms"].as_f64().unwrap_or(0.0) >= fault_unix_ms - 1000.0)
            .min_by(|a, b| {
                a["opened_at_ms"].as_f64().partial_cmp(&b["opened_at_ms"].as_f64()).unwrap_or(std::cmp::Ordering::Equal)
            })
            .cloned();
        if let Some(first) = first {
            let id = first["id"].as_str().unwrap_or_default().to_string();
            let detailed = admin.request("GET", &format!("/_synapse/admin/v1/incidents/{}", encode(&id)), None, None).await.ok();
            let settled = detailed.as_ref().is_some_and(|d| d["status"] == "resolved" && notices_done(d));
            chosen = detailed.or(Some(first));
            if settled {
                break;
            }
        }
        if !expected || started.elapsed() > limit {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    figures.incidents = during.len();
    let Some(incident) = chosen else {
        if expected {
            figures.problems.push("no incident was opened for the fault".into());
        }
        return figures;
    };
    let id = incident["id"].as_str().unwrap_or_default().to_string();
    figures.id = Some(id.clone());
    figures.title = incident["title"].as_str().map(str::to_string);
    figures.opened_after_fault_ms = incident["opened_at_ms"].as_f64().map(|at| at - fault_unix_ms);
    figures.closed_after_fault_ms = incident["resolved_at_ms"].as_f64().map(|at| at - fault_unix_ms);
    if expected && figures.closed_after_fault_ms.is_none() {
        figures.problems.push(format!("incident {id} was not closed within {} s", limit.as_secs()));
    }
    if expected && !notices_done(&incident) {
        figures.problems.push(format!("incident {id}'s notices were not all sent within {} s", limit.as_secs()));
    }

    // Every user, at their home DC.
    let mut by_dc: Vec<(String, usize, usize, usize)> = dcs.iter().map(|(name, _)| (name.clone(), 0, 0, 0)).collect();
    for (index, client) in clients.iter().enumerate() {
        let home = history.clients.get(index).map(|c| c.home_dc.clone()).unwrap_or_default();
        let Some(endpoint) = dcs.iter().find(|(name, _)| *name == home).map(|(_, url)| url.clone()) else { continue };
        let mut pinned = client.pinned(&endpoint);
        let (opened, resolved) = match count_notices(&mut pinned, &id).await {
            Ok(counts) => counts,
            Err(error) => {
                if figures.users_missing.len() < MAX_LISTED_USERS {
                    figures.users_missing.push(format!("{} (DC {home}): unreadable: {error}", client.user_id));
                }
                (0, 0)
            }
        };
        if let Some(row) = by_dc.iter_mut().find(|(name, ..)| *name == home) {
            row.1 += 1;
            row.2 += usize::from(opened == 1);
            row.3 += usize::from(resolved == 1);
        }
        if (opened, resolved) != (1, 1) && figures.users_missing.len() < MAX_LISTED_USERS {
            figures
                .users_missing
                .push(format!("{} (DC {home}): {opened} opening and {resolved} resolution notices", client.user_id));
        }
    }
    if expected {
        for (dc, users, opened, resolved) in &by_dc {
            if *users == 0 {
                continue;
            }
            if opened != users || resolved != users {
                figures.problems.push(format!(
                    "DC {dc}: {opened} of {users} users got the opening notice once, {resolved} the resolution notice once"
                ));
            }
        }
    }
    figures.notices_by_dc = by_dc;

    // The drill's figures go into the incident, and its report into the folder.
    let annotation = json!({
        "scenario": history.scenario,
        "fault_dc": history.fault_dc,
        "opened_after_fault_s": figures.opened_after_fault_ms.map(|ms| (ms / 100.0).round() / 10.0),
        "closed_after_fault_s": figures.closed_after_fault_ms.map(|ms| (ms / 100.0).round() / 10.0),
        "figures": drill,
    });
    let path = format!("/_synapse/admin/v1/incidents/{}/drill", encode(&id));
    if admin.request("PUT", &path, Some(&annotation), None).await.is_ok()
        && let Some(markdown) = report_text(admin, &id).await
    {
        let file = format!("incident-{id}.md");
        if std::fs::write(dir.join(&file), markdown).is_ok() {
            figures.report_file = Some(file);
        }
    }
    figures
}

/// The incident's Markdown report (the admin API answers it as text, not JSON).
async fn report_text(admin: &Client, id: &str) -> Option<String> {
    for endpoint in admin.endpoints() {
        let url = format!("{endpoint}/_synapse/admin/v1/incidents/{}/report", encode(id));
        let response = http_client().get(&url).bearer_auth(&admin.access_token).timeout(Duration::from_secs(10)).send().await;
        if let Ok(response) = response
            && response.status().is_success()
            && let Ok(text) = response.text().await
        {
            return Some(text);
        }
    }
    None
}

/// How many notices of incident `id` the user sees, (opening, resolution): joins the rooms the
/// server notices user invited them to, then reads those rooms' history.
pub async fn count_notices(client: &mut Client, id: &str) -> Result<(usize, usize), ClientError> {
    let sync = client.sync(None, 0).await?;
    let server_prefix = "@server:";
    let mut rooms: Vec<String> = Vec::new();
    for (room_id, invited) in sync["rooms"]["invite"].as_object().into_iter().flatten() {
        let from_server = invited["invite_state"]["events"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["sender"].as_str().is_some_and(|s| s.starts_with(server_prefix)));
        if from_server {
            client.join(room_id).await?;
            rooms.push(room_id.clone());
        }
    }
    for (room_id, joined) in sync["rooms"]["join"].as_object().into_iter().flatten() {
        let tagged = joined["account_data"]["events"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["content"]["tags"]["m.server_notice"].is_object());
        if tagged {
            rooms.push(room_id.clone());
        }
    }
    let (mut opened, mut resolved) = (0, 0);
    for room_id in rooms {
        let page = client.messages(&room_id, None, 100).await?;
        for event in page["chunk"].as_array().into_iter().flatten() {
            let about = &event["content"]["haetae.incident"];
            if event["type"] != "m.room.message" || about["id"] != id {
                continue;
            }
            match about["notice"].as_str() {
                Some("opened") => opened += 1,
                Some("resolved") => resolved += 1,
                _ => {}
            }
        }
    }
    Ok((opened, resolved))
}

/// The incident section of the drill's report.
pub fn markdown(figures: &IncidentFigures) -> String {
    let mut out = String::from("\n## Incident\n\n");
    let verdict = if figures.problems.is_empty() { "PASS" } else { "FAIL" };
    if !figures.expected && figures.id.is_none() {
        out.push_str(&format!("No incident was expected; {} opened during the drill.\n", figures.incidents));
        out.push_str(&console_markdown(&figures.console));
        return out;
    }
    out.push_str(&format!(
        "**{verdict}**{}\n\n",
        if figures.problems.is_empty() { String::new() } else { format!(": {}", figures.problems.join("; ")) }
    ));
    let seconds = |ms: Option<f64>| ms.map_or_else(|| "never".to_string(), |ms| format!("{:+.1} s", ms / 1000.0));
    out.push_str(&format!(
        "- incident: {} ({}); {} opened during the drill\n- opened {} after the fault, closed {} after the fault\n",
        figures.id.as_deref().unwrap_or("none"),
        figures.title.as_deref().unwrap_or("-"),
        figures.incidents,
        seconds(figures.opened_after_fault_ms),
        seconds(figures.closed_after_fault_ms)
    ));
    if let Some(file) = &figures.report_file {
        out.push_str(&format!("- the incident's own report: [{file}]({file})\n"));
    }
    out.push_str("\n| home DC | users | told of the opening once | told of the resolution once |\n|---|---:|---:|---:|\n");
    for (dc, users, opened, resolved) in &figures.notices_by_dc {
        out.push_str(&format!("| {dc} | {users} | {opened} | {resolved} |\n"));
    }
    for user in &figures.users_missing {
        out.push_str(&format!("\n- {user}"));
    }
    out.push('\n');
    out.push_str(&console_markdown(&figures.console));
    out
}

/// The console shots as a Markdown table with the screenshots.
fn console_markdown(shots: &[ConsoleShot]) -> String {
    let mut out = String::new();
    if !shots.is_empty() {
        out.push_str(
            "\n### Console\n\n| when | DC | HTTP | answered in ms | complete | screenshot |\n|---|---|---:|---:|---|---|\n",
        );
        for shot in shots {
            let picture = match (&shot.screenshot, &shot.note) {
                (Some(file), _) => format!("![console {label}]({file})", label = shot.label),
                (None, Some(note)) => note.clone(),
                (None, None) => "-".into(),
            };
            out.push_str(&format!(
                "| {} | {} | {} | {:.0} | {} | {picture} |\n",
                shot.label, shot.dc, shot.status, shot.answer_ms, shot.complete
            ));
        }
        out.push('\n');
    }
    out
}
