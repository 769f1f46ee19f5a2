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
    /// List registration tokens (only valid ones with --valid, only used-up or expired ones with
    /// --invalid).
    RegistrationTokens {
        #[arg(long, conflicts_with = "invalid")]
        valid: bool,
        #[arg(long)]
        invalid: bool,
    },
    /// Make a registration token (a random one unless --token is given).
    NewRegistrationToken {
        #[arg(long)]
        token: Option<String>,
        /// How many registrations may use it (unlimited when left out).
        #[arg(long)]
        uses_allowed: Option<u64>,
        /// When it stops being valid, milliseconds since 1970 (never when left out).
        #[arg(long)]
        expiry_time: Option<u64>,
        /// Length of a random token.
        #[arg(long)]
        length: Option<u64>,
    },
    /// Show one registration token with its pending and completed uses.
    RegistrationToken { token: String },
    /// Change a registration token's allowed uses or expiry.
    UpdateRegistrationToken {
        token: String,
        #[arg(long)]
        uses_allowed: Option<u64>,
        #[arg(long)]
        expiry_time: Option<u64>,
    },
    /// Delete a registration token.
    DeleteRegistrationToken { token: String },
    /// Block a room (nobody may join it), or lift the block with --unblock.
    BlockRoom {
        room_id: String,
        #[arg(long)]
        unblock: bool,
    },
    /// Delete a room: every member leaves; optionally blocked, moved to a new room; purged from
    /// every node's read model unless --no-purge. Prints the deletion's id and status.
    DeleteRoom {
        room_id: String,
        #[arg(long)]
        block: bool,
        #[arg(long)]
        no_purge: bool,
        /// Create a room owned by this user and move the members there.
        #[arg(long)]
        new_room_user_id: Option<String>,
        /// The first message of the new room.
        #[arg(long)]
        message: Option<String>,
    },
    /// The status of a room deletion.
    DeleteStatus { delete_id: String },
    /// A user's uploaded media, oldest first.
    UserMedia {
        user_id: String,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Quarantine a media file (downloads answer 404), or lift it with --undo. MEDIA is
    /// `mxc://server/id`.
    Quarantine {
        media: String,
        #[arg(long)]
        undo: bool,
    },
    /// Delete a media file from the object store. MEDIA is `mxc://server/id`.
    DeleteMedia { media: String },
    /// After `delete-room` (with purge): remove the room's entries from the event log itself,
    /// keeping its purge entry. Talks to NATS with the deployment's admin credential (a node may
    /// not purge the log); refuses a room whose newest entry is not its purge.
    PurgeRoomLog {
        room_id: String,
        /// Any nats-server of the deployment.
        #[arg(long, env = "HAETAE_NATS_URL")]
        nats_url: String,
        /// The admin credential ({"user", "password"}), e.g. DIR/pki/admin.json.
        #[arg(long)]
        nats_credentials_file: Option<std::path::PathBuf>,
        /// The deployment's CA (PEM), when its servers require TLS.
        #[arg(long)]
        nats_tls_ca_file: Option<std::path::PathBuf>,
    },
}

/// `mxc://server/id` (or `server/id`) as path segments.
fn media_path(media: &str) -> Result<String, String> {
    let bare = media.strip_prefix("mxc://").unwrap_or(media);
    match bare.split_once('/') {
        Some((server, id)) if !server.is_empty() && !id.is_empty() => Ok(format!("{}/{}", segment(server), segment(id))),
        _ => Err(format!("{media}: expected mxc://server/media_id")),
    }
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
            AdminCommand::RegistrationTokens { valid, invalid } => {
                let query = match (valid, invalid) {
                    (true, _) => vec![("valid", "true".to_string())],
                    (_, true) => vec![("valid", "false".to_string())],
                    _ => Vec::new(),
                };
                api.call(Method::GET, "/_synapse/admin/v1/registration_tokens", &query, None).await?
            }
            AdminCommand::NewRegistrationToken { token, uses_allowed, expiry_time, length } => {
                let mut body = json!({ "uses_allowed": uses_allowed, "expiry_time": expiry_time });
                if let Some(token) = token {
                    body["token"] = json!(token);
                }
                if let Some(length) = length {
                    body["length"] = json!(length);
                }
                api.call(Method::POST, "/_synapse/admin/v1/registration_tokens/new", &[], Some(body)).await?
            }
            AdminCommand::RegistrationToken { token } => {
                api.call(Method::GET, &format!("/_synapse/admin/v1/registration_tokens/{}", segment(&token)), &[], None).await?
            }
            AdminCommand::UpdateRegistrationToken { token, uses_allowed, expiry_time } => {
                let mut body = json!({});
                if let Some(uses_allowed) = uses_allowed {
                    body["uses_allowed"] = json!(uses_allowed);
                }
                if let Some(expiry_time) = expiry_time {
                    body["expiry_time"] = json!(expiry_time);
                }
                api.call(Method::PUT, &format!("/_synapse/admin/v1/registration_tokens/{}", segment(&token)), &[], Some(body)).await?
            }
            AdminCommand::DeleteRegistrationToken { token } => {
                api.call(Method::DELETE, &format!("/_synapse/admin/v1/registration_tokens/{}", segment(&token)), &[], None).await?
            }
            AdminCommand::BlockRoom { room_id, unblock } => {
                let body = json!({ "block": !unblock });
                api.call(Method::PUT, &format!("/_synapse/admin/v1/rooms/{}/block", segment(&room_id)), &[], Some(body)).await?
            }
            AdminCommand::DeleteRoom { room_id, block, no_purge, new_room_user_id, message } => {
                let mut body = json!({ "block": block, "purge": !no_purge });
                if let Some(user_id) = new_room_user_id {
                    body["new_room_user_id"] = json!(user_id);
                }
                if let Some(message) = message {
                    body["message"] = json!(message);
                }
                let started = api.call(Method::DELETE, &format!("/_synapse/admin/v2/rooms/{}", segment(&room_id)), &[], Some(body)).await?;
                let delete_id = started["delete_id"].as_str().unwrap_or_default().to_string();
                let mut status =
                    api.call(Method::GET, &format!("/_synapse/admin/v2/rooms/delete_status/{}", segment(&delete_id)), &[], None).await?;
                status["delete_id"] = json!(delete_id);
                status
            }
            AdminCommand::DeleteStatus { delete_id } => {
                api.call(Method::GET, &format!("/_synapse/admin/v2/rooms/delete_status/{}", segment(&delete_id)), &[], None).await?
            }
            AdminCommand::UserMedia { user_id, limit } => {
                let query = [("limit", limit.to_string())];
                api.call(Method::GET, &format!("/_synapse/admin/v1/users/{}/media", segment(&user_id)), &query, None).await?
            }
            AdminCommand::Quarantine { media, undo } => {
                let action = if undo { "unquarantine" } else { "quarantine" };
                api.call(Method::POST, &format!("/_synapse/admin/v1/media/{action}/{}", media_path(&media)?), &[], Some(json!({}))).await?
            }
            AdminCommand::DeleteMedia { media } => {
                api.call(Method::DELETE, &format!("/_synapse/admin/v1/media/{}", media_path(&media)?), &[], None).await?
            }
            AdminCommand::PurgeRoomLog { room_id, nats_url, nats_credentials_file, nats_tls_ca_file } => {
                let credential = match nats_credentials_file {
                    Some(path) => Some(haetae_store::Credential::read(&path).map_err(|e| e.to_string())?),
                    None => None,
                };
                let access = haetae_store::Access { credential, tls_ca: nats_tls_ca_file };
                let admin = haetae_store::admin::Admin::connect(&nats_url, &access, std::time::Duration::from_secs(10))
                    .await
                    .map_err(|e| e.to_string())?;
                haetae_server::services::room_moderation::purge_room_log(&admin, &room_id).await?
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
