//! `haetae incident`: the incidents the nodes detected, from a terminal (list, show, report). Like
//! `haetae admin`, it talks HTTP to any node with an administrator's access token, so it works
//! from whichever DC still stands.

use clap::Subcommand;
use serde_json::Value;

#[derive(clap::Args)]
pub struct IncidentArgs {
    /// Base URL of any node of the deployment.
    #[arg(long, env = "HAETAE_URL", default_value = "http://127.0.0.1:8008")]
    url: String,
    /// An administrator's access token.
    #[arg(long, env = "HAETAE_ADMIN_TOKEN", hide_env_values = true)]
    token: String,
    #[command(subcommand)]
    command: IncidentCommand,
}

#[derive(Subcommand)]
pub enum IncidentCommand {
    /// Every incident kept, the most recent first.
    List,
    /// One incident as JSON: timeline, affected DCs and assets, notices.
    Show { id: String },
    /// An incident's report in Markdown: timeline, affected DCs and assets, requests failed, notices
    /// and, for an incident during a fire drill, the drill's figures.
    Report {
        id: String,
        /// Write the report to this file instead of the terminal.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
}

/// Percent-encodes one path segment.
fn segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// GET `path` with the admin token: the body as text, or an error naming the Matrix error.
async fn get(http: &reqwest::Client, args: &IncidentArgs, path: &str) -> Result<String, String> {
    let url = format!("{}{path}", args.url.trim_end_matches('/'));
    let response = http.get(&url).bearer_auth(&args.token).send().await.map_err(|e| format!("cannot reach {url}: {e}"))?;
    let status = response.status();
    let text = response.text().await.map_err(|e| format!("{url}: {e}"))?;
    if status.is_success() {
        return Ok(text);
    }
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let hint = match status.as_u16() {
        401 => " (is the token an access token of this deployment?)",
        403 => " (is the token's user an administrator?)",
        _ => "",
    };
    Err(format!("{path}: {status} {} {}{hint}", body["errcode"].as_str().unwrap_or("?"), body["error"].as_str().unwrap_or("")))
}

fn utc(ms: u64) -> String {
    let seconds = ms / 1000;
    let (days, of_day) = ((seconds / 86_400) as i64, seconds % 86_400);
    // Civil date from a day count (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let (era, day_of_era) = (z.div_euclid(146_097), z.rem_euclid(146_097));
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}", of_day / 3600, of_day / 60 % 60, of_day % 60)
}

pub fn run(args: IncidentArgs) -> Result<(), String> {
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build().map_err(|e| e.to_string())?;
        match &args.command {
            IncidentCommand::List => {
                let text = get(&http, &args, "/_synapse/admin/v1/incidents").await?;
                let body: Value = serde_json::from_str(&text).map_err(|e| format!("unreadable answer: {e}"))?;
                let incidents = body["incidents"].as_array().cloned().unwrap_or_default();
                if incidents.is_empty() {
                    println!("no incidents");
                }
                for incident in incidents {
                    let resolved = incident["resolved_at_ms"].as_u64().map_or_else(|| "-".to_string(), utc);
                    println!(
                        "{:<40} {:<9} opened {}  resolved {}  {}",
                        incident["id"].as_str().unwrap_or("?"),
                        incident["status"].as_str().unwrap_or("?"),
                        utc(incident["opened_at_ms"].as_u64().unwrap_or(0)),
                        resolved,
                        incident["title"].as_str().unwrap_or("")
                    );
                }
                Ok(())
            }
            IncidentCommand::Show { id } => {
                let text = get(&http, &args, &format!("/_synapse/admin/v1/incidents/{}", segment(id))).await?;
                let body: Value = serde_json::from_str(&text).map_err(|e| format!("unreadable answer: {e}"))?;
                println!("{}", serde_json::to_string_pretty(&body).unwrap_or_default());
                Ok(())
            }
            IncidentCommand::Report { id, out } => {
                let markdown = get(&http, &args, &format!("/_synapse/admin/v1/incidents/{}/report", segment(id))).await?;
                match out {
                    Some(path) => {
                        std::fs::write(path, &markdown).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                        eprintln!("wrote {}", path.display());
                    }
                    None => print!("{markdown}"),
                }
                Ok(())
            }
        }
    })
}
