//! `haetae admin`: the admin API (`/_synapse/admin/...`) from a terminal. It talks to any node of
//! any DC over HTTP with an administrator's access token, so it works from whichever DC still
//! stands; it never touches NATS itself.

use clap::Subcommand;
use serde_json::{Value, json};

#[derive(clap::Args)]
pub struct AdminArgs {
    /// Base URL of any node of the deployment.
    #[arg(long, env = "HAETAE_URL", default_value = "http://127.0.0.1:8008")]
    url: String,
    /// An administrator's access token (a user named in `[homeserver] admins`, or made admin).
    #[arg(long, env = "HAETAE_ADMIN_TOKEN", hide_env_values = true)]
    token: String,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand)]
pub enum AdminCommand {
    /// List users (deactivated ones only with --deactivated).
    Users {
        /// Only users whose localpart contains this.
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        deactivated: bool,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show one user.
    User { user_id: String },
    /// Create a user, or set an existing user's password.
    CreateUser {
        user_id: String,
        /// The password (or set HAETAE_NEW_PASSWORD to keep it out of the shell history).
        #[arg(long, env = "HAETAE_NEW_PASSWORD", hide_env_values = true)]
        password: String,
        /// Make the user an administrator.
        #[arg(long)]
        admin: bool,
    },
    /// Deactivate a user: no more logins, every device signed out, every room left.
    Deactivate { user_id: String },
    /// Set a user's password (signing out their devices unless --keep-devices).
    ResetPassword {
        user_id: String,
        #[arg(long, env = "HAETAE_NEW_PASSWORD", hide_env_values = true)]
        password: String,
        #[arg(long)]
        keep_devices: bool,
    },
    /// Make a user an administrator (or take it back with --revoke).
    MakeAdmin {
        user_id: String,
        #[arg(long)]
        revoke: bool,
    },
    /// A user's devices.
    Devices { user_id: String },
    /// List rooms, most members first.
    Rooms {
        /// Only rooms whose name or id contains this.
        #[arg(long)]
        search: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show one room, with its members.
    Room { room_id: String },
    /// Send a user a server notice (a message from the operators, in a room of its own).
    Notice { user_id: String, text: String },
}

/// Percent-encodes one path segment (user and room ids hold `@`, `!`, `:`).
fn segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

struct Api {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, query: &[(&str, String)], body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.url.trim_end_matches('/'));
        let mut request = self.http.request(method, &url).bearer_auth(&self.token).query(query);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| format!("cannot reach {url}: {e}"))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let errcode = body["errcode"].as_str().unwrap_or("?");
        let message = body["error"].as_str().unwrap_or("");
        let hint = match status.as_u16() {
            401 => " (is the token an access token of this deployment?)",
            403 => " (is the token's user an administrator?)",
            _ => "",
        };
        Err(format!("{path}: {status} {errcode} {message}{hint}"))
    }
}

pub fn run(args: AdminArgs) -> Result<(), String> {
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build().map_err(|e| e.to_string())?;
        let api = Api { http, url: args.url, token: args.token };
        use reqwest::Method;
        let answer = match args.command {
            AdminCommand::Users { name, deactivated, limit } => {
                let mut query = vec![("limit", limit.to_string()), ("deactivated", deactivated.to_string())];
                if let Some(name) = name {
                    query.push(("name", name));
                }
                api.call(Method::GET, "/_synapse/admin/v2/users", &query, None).await?
            }
            AdminCommand::User { user_id } => api.call(Method::GET, &format!("/_synapse/admin/v2/users/{}", segment(&user_id)), &[], None).await?,
            AdminCommand::CreateUser { user_id, password, admin } => {
                let body = json!({ "password": password, "admin": admin });
                api.call(Method::PUT, &format!("/_synapse/admin/v2/users/{}", segment(&user_id)), &[], Some(body)).await?
            }
            AdminCommand::Deactivate { user_id } => {
                api.call(Method::POST, &format!("/_synapse/admin/v1/deactivate/{}", segment(&user_id)), &[], Some(json!({}))).await?
            }
            AdminCommand::ResetPassword { user_id, password, keep_devices } => {
                let body = json!({ "new_password": password, "logout_devices": !keep_devices });
                api.call(Method::POST, &format!("/_synapse/admin/v1/reset_password/{}", segment(&user_id)), &[], Some(body)).await?
            }
            AdminCommand::MakeAdmin { user_id, revoke } => {
                let body = json!({ "admin": !revoke });
                api.call(Method::PUT, &format!("/_synapse/admin/v1/users/{}/admin", segment(&user_id)), &[], Some(body)).await?
            }
            AdminCommand::Devices { user_id } => {
                api.call(Method::GET, &format!("/_synapse/admin/v2/users/{}/devices", segment(&user_id)), &[], None).await?
            }
            AdminCommand::Rooms { search, limit } => {
                let mut query = vec![("limit", limit.to_string())];
                if let Some(term) = search {
                    query.push(("search_term", term));
                }
                api.call(Method::GET, "/_synapse/admin/v1/rooms", &query, None).await?
            }
            AdminCommand::Notice { user_id, text } => {
                let body = json!({ "user_id": user_id, "content": { "msgtype": "m.server_notice", "body": text } });
                api.call(Method::POST, "/_synapse/admin/v1/send_server_notice", &[], Some(body)).await?
            }
            AdminCommand::Room { room_id } => {
                let mut room = api.call(Method::GET, &format!("/_synapse/admin/v1/rooms/{}", segment(&room_id)), &[], None).await?;
                let members = api.call(Method::GET, &format!("/_synapse/admin/v1/rooms/{}/members", segment(&room_id)), &[], None).await?;
                room["members"] = members["members"].clone();
                room
            }
        };
        println!("{}", serde_json::to_string_pretty(&answer).unwrap_or_default());
        Ok(())
    })
}
