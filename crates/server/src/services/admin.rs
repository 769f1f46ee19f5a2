//! The admin API's work: who is an administrator, and what they may look at and change (users,
//! their devices, rooms). Shapes follow Synapse's admin API, so tools written for it work.
//!
//! An administrator is a user named in `admins` of the configuration, or whose account record
//! says `"admin": true` (set through this API). Both are read at every node from replicated
//! state, so the admin API answers in every DC.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{App, Caller, accounts};
use crate::error::{ApiResult, MatrixError};

/// Most accounts one listing reads.
const MAX_LISTED_ACCOUNTS: usize = 100_000;
/// Largest page of users or rooms.
const MAX_PAGE: usize = 1000;

/// Refuses callers who are not administrators (403 `M_FORBIDDEN`, as Synapse answers).
pub async fn require_admin(app: &App, caller: &Caller) -> ApiResult<()> {
    if is_admin(app, &caller.user_id).await? {
        return Ok(());
    }
    Err(MatrixError::forbidden("You are not a server admin"))
}

async fn is_admin(app: &App, user_id: &str) -> ApiResult<bool> {
    let localpart = haetae_matrix::ids::localpart(user_id).unwrap_or_default();
    if app.config.admins.iter().any(|admin| admin == user_id || admin == localpart) {
        return Ok(true);
    }
    Ok(accounts::load_account(app, localpart).await?.is_some_and(|account| account["admin"] == true))
}

/// The localpart of a user id of this server, or 404.
fn local_user(app: &App, user_id: &str) -> ApiResult<String> {
    match haetae_matrix::ids::localpart(user_id) {
        Some(localpart) if haetae_matrix::ids::server_name(user_id) == Some(app.config.server_name.as_str()) => {
            Ok(localpart.to_string())
        }
        _ => Err(MatrixError::not_found("Not a user of this server")),
    }
}

async fn user_json(app: &App, user_id: &str, account: &Value) -> ApiResult<Value> {
    let (displayname, avatar_url) = app.model.with_user(user_id, |u| (u.displayname.clone(), u.avatar_url.clone()));
    Ok(json!({
        "name": user_id,
        "admin": is_admin(app, user_id).await?,
        "deactivated": account["deactivated"] == true,
        "displayname": displayname,
        "avatar_url": avatar_url,
        "creation_ts": account["created_ts"],
        "user_type": null,
        "is_guest": false,
    }))
}

#[derive(Deserialize)]
pub struct Page {
    from: Option<String>,
    limit: Option<String>,
    name: Option<String>,
    deactivated: Option<String>,
}

impl Page {
    pub fn new(from: Option<String>, limit: Option<String>, name: Option<String>) -> Page {
        Page { from, limit, name, deactivated: None }
    }

    fn bounds(&self) -> ApiResult<(usize, usize)> {
        let number = |text: &Option<String>, default: usize| match text {
            Some(text) => text.parse::<usize>().map_err(|_| MatrixError::invalid_param("from and limit are numbers")),
            None => Ok(default),
        };
        Ok((number(&self.from, 0)?, number(&self.limit, 100)?.clamp(1, MAX_PAGE)))
    }
}

/// # GET /_synapse/admin/v2/users
pub async fn list_users(app: &App, page: Page) -> ApiResult<Value> {
    let (from, limit) = page.bounds()?;
    let mut accounts = accounts::list_accounts(app, MAX_LISTED_ACCOUNTS).await?;
    accounts.sort_by(|a, b| a.0.cmp(&b.0));
    let with_deactivated = page.deactivated.as_deref() == Some("true");
    let name = page.name.as_deref().map(str::to_lowercase);
    let matching: Vec<(String, Value)> = accounts
        .into_iter()
        .filter(|(_, account)| with_deactivated || account["deactivated"] != true)
        .filter(|(localpart, _)| name.as_deref().is_none_or(|n| localpart.contains(n)))
        .collect();
    let total = matching.len();
    let mut users = Vec::new();
    for (localpart, account) in matching.iter().skip(from).take(limit) {
        users.push(user_json(app, &app.user_id(localpart), account).await?);
    }
    let mut answer = json!({ "users": users, "total": total });
    if from + limit < total {
        answer["next_token"] = json!((from + limit).to_string());
    }
    Ok(answer)
}

/// # GET /_synapse/admin/v2/users/{userId}
pub async fn get_user(app: &App, user_id: &str) -> ApiResult<Value> {
    let localpart = local_user(app, user_id)?;
    let account = accounts::load_account(app, &localpart).await?.ok_or_else(|| MatrixError::not_found("User not found"))?;
    user_json(app, user_id, &account).await
}

#[derive(Deserialize)]
pub struct UserChange {
    password: Option<String>,
    admin: Option<bool>,
    deactivated: Option<bool>,
    displayname: Option<String>,
    #[serde(default = "yes")]
    logout_devices: bool,
}

fn yes() -> bool {
    true
}

/// # PUT /_synapse/admin/v2/users/{userId}: creates the account (201) or changes it (200).
pub async fn put_user(app: &App, caller: &Caller, user_id: &str, change: UserChange) -> ApiResult<(bool, Value)> {
    let localpart = local_user(app, user_id)?;
    haetae_matrix::ids::validate_user_localpart(&localpart).map_err(|e| MatrixError::invalid_param(e.to_string()))?;
    let existing = accounts::load_account(app, &localpart).await?;
    let created = existing.is_none();
    if created {
        let password = change.password.clone().ok_or_else(|| MatrixError::missing_param("password is required to create a user"))?;
        let hash = accounts::hash_password(app, password).await?;
        if !accounts::create_account(app, &localpart, hash).await? {
            return Err(MatrixError::new(axum::http::StatusCode::CONFLICT, "M_USER_IN_USE", "User ID already taken"));
        }
    } else if let Some(password) = change.password.clone() {
        let hash = accounts::hash_password(app, password).await?;
        accounts::set_password_hash(app, &localpart, hash).await?;
        if change.logout_devices {
            accounts::remove_devices(app, user_id, None, None).await?;
        }
    }
    let mut fields = Map::new();
    if let Some(admin) = change.admin {
        fields.insert("admin".into(), json!(admin));
    }
    if change.deactivated == Some(false) {
        fields.insert("deactivated".into(), json!(false));
    }
    if !fields.is_empty() {
        accounts::update_account(app, &localpart, &fields).await?;
    }
    if change.deactivated == Some(true) {
        accounts::deactivate(app, user_id).await?;
    }
    if let Some(name) = change.displayname {
        // The profile only: the user's member events in rooms keep the name they were sent with.
        let avatar_url = app.model.with_user(user_id, |u| u.avatar_url.clone());
        accounts::append_user_entry(app, user_id, crate::entry::Entry::Profile { displayname: Some(name), avatar_url }).await?;
    }
    tracing::info!(admin = %caller.user_id, %user_id, created, "admin changed a user");
    Ok((created, get_user(app, user_id).await?))
}

/// # POST /_synapse/admin/v1/deactivate/{userId}
pub async fn deactivate(app: &App, caller: &Caller, user_id: &str) -> ApiResult<Value> {
    local_user(app, user_id)?;
    accounts::deactivate(app, user_id).await?;
    tracing::info!(admin = %caller.user_id, %user_id, "admin deactivated a user");
    Ok(json!({ "id_server_unbind_result": "no-support" }))
}

#[derive(Deserialize)]
pub struct PasswordReset {
    new_password: String,
    #[serde(default = "yes")]
    logout_devices: bool,
}

/// # POST /_synapse/admin/v1/reset_password/{userId}
pub async fn reset_password(app: &App, caller: &Caller, user_id: &str, reset: PasswordReset) -> ApiResult<Value> {
    let localpart = local_user(app, user_id)?;
    if accounts::load_account(app, &localpart).await?.is_none() {
        return Err(MatrixError::not_found("User not found"));
    }
    let hash = accounts::hash_password(app, reset.new_password).await?;
    accounts::set_password_hash(app, &localpart, hash).await?;
    if reset.logout_devices {
        accounts::remove_devices(app, user_id, None, None).await?;
    }
    tracing::info!(admin = %caller.user_id, %user_id, "admin reset a password");
    Ok(json!({}))
}

/// # GET /_synapse/admin/v2/users/{userId}/devices
pub async fn user_devices(app: &App, user_id: &str) -> ApiResult<Value> {
    local_user(app, user_id)?;
    let devices = accounts::load_devices(app, user_id).await?;
    let list: Vec<Value> = devices
        .as_object()
        .map(|map| {
            map.iter()
                .map(|(id, d)| {
                    json!({
                        "device_id": id,
                        "display_name": d["display_name"],
                        "last_seen_ip": d["last_seen_ip"],
                        "last_seen_ts": d["last_seen_ts"],
                        "user_id": user_id,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(json!({ "total": list.len(), "devices": list }))
}

/// # GET|PUT /_synapse/admin/v1/users/{userId}/admin
pub async fn admin_flag(app: &App, user_id: &str) -> ApiResult<Value> {
    local_user(app, user_id)?;
    Ok(json!({ "admin": is_admin(app, user_id).await? }))
}

pub async fn set_admin_flag(app: &App, caller: &Caller, user_id: &str, admin: bool) -> ApiResult<Value> {
    let localpart = local_user(app, user_id)?;
    if user_id == caller.user_id && !admin {
        return Err(MatrixError::invalid_param("You may not demote yourself"));
    }
    let mut fields = Map::new();
    fields.insert("admin".into(), json!(admin));
    if !accounts::update_account(app, &localpart, &fields).await? {
        return Err(MatrixError::not_found("User not found"));
    }
    Ok(json!({}))
}

fn room_json(room: &crate::read_model::Room) -> Value {
    let state = &room.state;
    let text = |event_type: &str, field: &str| state.content(event_type, "").and_then(|c| c[field].as_str().map(str::to_string));
    json!({
        "room_id": room.room_id,
        "name": text("m.room.name", "name"),
        "topic": text("m.room.topic", "topic"),
        "canonical_alias": text("m.room.canonical_alias", "alias"),
        "joined_members": state.member_count("join"),
        "joined_local_members": state.member_count("join"),
        "version": state.room_version(),
        "creator": state.creator(),
        "encryption": text("m.room.encryption", "algorithm"),
        "federatable": false,
        "public": state.join_rule() == "public",
        "join_rules": state.join_rule(),
        "guest_access": state.guest_access(),
        "history_visibility": state.history_visibility(),
        "state_events": state.len(),
    })
}

/// # GET /_synapse/admin/v1/rooms
pub async fn list_rooms(app: &App, page: Page) -> ApiResult<Value> {
    let (from, limit) = page.bounds()?;
    let term = page.name.as_deref().map(str::to_lowercase);
    let mut rooms = Vec::new();
    app.model.visit_rooms(|room| {
        let mut entry = room_json(room);
        entry["blocked"] = json!(app.model.blocked_by(&room.room_id).is_some());
        let matches = term.as_deref().is_none_or(|term| {
            entry["name"].as_str().is_some_and(|n| n.to_lowercase().contains(term)) || room.room_id.to_lowercase().contains(term)
        });
        if matches {
            rooms.push(entry);
        }
        true
    });
    rooms.sort_by(|a, b| b["joined_members"].as_u64().cmp(&a["joined_members"].as_u64()).then(a["room_id"].as_str().cmp(&b["room_id"].as_str())));
    let total = rooms.len();
    let page: Vec<Value> = rooms.into_iter().skip(from).take(limit).collect();
    let mut answer = json!({ "rooms": page, "offset": from, "total_rooms": total });
    if from + limit < total {
        answer["next_batch"] = json!(from + limit);
    }
    Ok(answer)
}

/// # GET /_synapse/admin/v1/rooms/{roomId}
pub async fn get_room(app: &App, room_id: &str) -> ApiResult<Value> {
    let mut room = app.model.with_room(room_id, room_json).ok_or_else(|| MatrixError::not_found("Room not found"))?;
    room["blocked"] = json!(app.model.blocked_by(room_id).is_some());
    Ok(room)
}

/// # GET /_synapse/admin/v1/rooms/{roomId}/members
pub async fn room_members(app: &App, room_id: &str) -> ApiResult<Value> {
    let members = app.model.with_room(room_id, |room| room.state.members_with("join")).ok_or_else(|| MatrixError::not_found("Room not found"))?;
    Ok(json!({ "total": members.len(), "members": members }))
}

/// # GET /_synapse/admin/v1/rooms/{roomId}/state
pub async fn room_state(app: &App, room_id: &str) -> ApiResult<Value> {
    let state: Vec<Value> = app.model.with_room(room_id, |room| room.state.iter().collect()).ok_or_else(|| MatrixError::not_found("Room not found"))?;
    Ok(json!({ "state": state }))
}
