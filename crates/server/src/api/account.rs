//! Accounts, logins, devices: everything about who a caller is.
//!
//! # POST /_matrix/client/v3/register
//! # GET  /_matrix/client/v3/register/available
//! # GET|POST /_matrix/client/v3/login
//! # POST /_matrix/client/v3/logout, /logout/all
//! # GET  /_matrix/client/v3/account/whoami
//! # POST /_matrix/client/v3/account/password
//! # GET  /_matrix/client/v3/devices, GET|PUT|DELETE /devices/{deviceId}, POST /delete_devices
//!
//! Accounts, devices and tokens live in replicated KV; a token is stored only as its hash.

use argon2::password_hash::{PasswordHasher, PasswordVerifier, SaltString};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::{get, post};
use base64::Engine;
use haetae_store::{Bucket, KvError};
use rand::Rng;
use serde::Deserialize;
use serde_json::{Value, json};

use super::client;
use crate::app::{App, AppState, Caller, JsonBody, client_ip, token_hash};
use crate::entry::{Entry, Envelope};
use crate::error::{ApiResult, MatrixError};
use crate::rooms::{now_ms, random_string};

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    let router = client(router, "/register", post(register));
    let router = client(router, "/register/available", get(register_available));
    let router = client(router, "/login", get(login_flows).post(login));
    let router = client(router, "/logout", post(logout));
    let router = client(router, "/logout/all", post(logout_all));
    let router = client(router, "/account/whoami", get(whoami));
    let router = client(router, "/account/password", post(change_password));
    let router = client(router, "/devices", get(list_devices));
    let router = client(router, "/delete_devices", post(delete_devices));
    client(router, "/devices/{device_id}", get(get_device).put(update_device).delete(delete_device))
}

fn hasher(app: &App) -> argon2::Argon2<'static> {
    let settings = &app.config.password_hashing;
    let params = argon2::Params::new(settings.memory_kib, settings.iterations, settings.parallelism, None)
        .unwrap_or_default();
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}

pub(crate) async fn hash_password(app: &App, password: String) -> ApiResult<String> {
    let hasher = hasher(app);
    app.password_hashing
        .run(move || {
            let salt_bytes: [u8; 16] = rand::rng().random();
            let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| e.to_string())?;
            hasher.hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
        })
        .await
        .ok_or_else(|| MatrixError::unavailable("password hashing is not available"))?
        .map_err(|e| MatrixError::new(StatusCode::INTERNAL_SERVER_ERROR, "M_UNKNOWN", e))
}

async fn verify_password(app: &App, password: String, stored_hash: String) -> bool {
    let hasher = hasher(app);
    app.password_hashing
        .run(move || {
            argon2::PasswordHash::new(&stored_hash)
                .map(|parsed| hasher.verify_password(password.as_bytes(), &parsed).is_ok())
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false)
}

fn uia_flows(stages: &[&str], session: &str) -> Value {
    json!({
        "flows": [{ "stages": stages }],
        "params": {},
        "session": session,
    })
}

fn uia_required(stages: &[&str], session: Option<&str>, error: Option<MatrixError>) -> MatrixError {
    let session = session.map(str::to_string).unwrap_or_else(|| random_string(24));
    let mut extra = uia_flows(stages, &session);
    let (errcode, message) = match &error {
        Some(error) => {
            extra["errcode"] = json!(error.errcode);
            extra["error"] = json!(error.message);
            (error.errcode, error.message.clone())
        }
        None => ("M_FORBIDDEN", "Additional authentication required".to_string()),
    };
    // The first 401 of user-interactive auth carries only flows: an empty errcode leaves it out.
    let errcode = if error.is_none() { "" } else { errcode };
    MatrixError::new(StatusCode::UNAUTHORIZED, errcode, message).with_extra(extra)
}

#[derive(Deserialize)]
struct RegisterRequest {
    auth: Option<Value>,
    username: Option<String>,
    password: Option<String>,
    device_id: Option<String>,
    initial_device_display_name: Option<String>,
    #[serde(default)]
    inhibit_login: bool,
}

#[derive(Deserialize)]
struct RegisterQuery {
    kind: Option<String>,
}

async fn register(
    State(app): State<AppState>,
    Query(query): Query<RegisterQuery>,
    parts: Parts,
    JsonBody(body): JsonBody<RegisterRequest>,
) -> ApiResult<Json<Value>> {
    app.limit_logins(client_ip(&parts))?;
    if query.kind.as_deref() == Some("guest") {
        return Err(MatrixError::new(StatusCode::FORBIDDEN, "M_GUEST_ACCESS_FORBIDDEN", "Guest access is disabled"));
    }
    if !app.config.registration.enabled {
        return Err(MatrixError::forbidden("Registration is disabled"));
    }
    let stage = if app.config.registration.token.is_some() { "m.login.registration_token" } else { "m.login.dummy" };
    // Validate the username before the auth dance so clients learn early.
    let localpart = match &body.username {
        Some(name) => {
            let name = name.strip_prefix('@').and_then(|n| n.split(':').next()).unwrap_or(name).to_string();
            haetae_matrix::ids::validate_user_localpart(&name)
                .map_err(|e| MatrixError::new(StatusCode::BAD_REQUEST, "M_INVALID_USERNAME", e.to_string()))?;
            name
        }
        None => random_string(12).to_lowercase(),
    };
    let Some(auth) = body.auth else {
        return Err(uia_required(&[stage], None, None));
    };
    let session = auth["session"].as_str();
    match auth["type"].as_str() {
        Some("m.login.dummy") if stage == "m.login.dummy" => {}
        Some("m.login.registration_token") if stage == "m.login.registration_token" => {
            if auth["token"].as_str() != app.config.registration.token.as_deref() {
                return Err(uia_required(
                    &[stage],
                    session,
                    Some(MatrixError::forbidden("Invalid registration token")),
                ));
            }
        }
        _ => return Err(uia_required(&[stage], session, None)),
    }
    let Some(password) = body.password else {
        return Err(MatrixError::missing_param("password is required"));
    };
    if password.len() > 512 {
        return Err(MatrixError::invalid_param("password too long"));
    }
    let password_hash = hash_password(&app, password).await?;
    let account = json!({ "password_hash": password_hash, "created_ts": now_ms() });
    match app.store.kv().create(Bucket::Accounts, &localpart, serde_json::to_vec(&account).unwrap_or_default().into()).await {
        Ok(_) => {}
        Err(KvError::Exists) => {
            return Err(MatrixError::new(StatusCode::BAD_REQUEST, "M_USER_IN_USE", "User ID already taken"));
        }
        Err(error) => return Err(error.into()),
    }
    let user_id = app.user_id(&localpart);
    tracing::info!(%user_id, "registered");
    if body.inhibit_login {
        return Ok(Json(json!({ "user_id": user_id })));
    }
    let login = start_session(&app, &user_id, body.device_id, body.initial_device_display_name, client_ip(&parts)).await?;
    Ok(Json(login))
}

#[derive(Deserialize)]
struct AvailableQuery {
    username: String,
}

async fn register_available(
    State(app): State<AppState>,
    Query(query): Query<AvailableQuery>,
) -> ApiResult<Json<Value>> {
    haetae_matrix::ids::validate_user_localpart(&query.username)
        .map_err(|e| MatrixError::new(StatusCode::BAD_REQUEST, "M_INVALID_USERNAME", e.to_string()))?;
    if app.store.kv().get(Bucket::Accounts, &query.username).await?.is_some() {
        return Err(MatrixError::new(StatusCode::BAD_REQUEST, "M_USER_IN_USE", "User ID already taken"));
    }
    Ok(Json(json!({ "available": true })))
}

async fn login_flows() -> Json<Value> {
    Json(json!({ "flows": [{ "type": "m.login.password" }] }))
}

#[derive(Deserialize)]
struct LoginRequest {
    #[serde(rename = "type")]
    login_type: String,
    identifier: Option<Value>,
    user: Option<String>,
    password: Option<String>,
    device_id: Option<String>,
    initial_device_display_name: Option<String>,
}

/// The localpart named by a login or UIA identifier (`m.id.user`, or the legacy `user` field).
pub(crate) fn identified_localpart(app: &App, identifier: Option<&Value>, user: Option<&str>) -> ApiResult<String> {
    let name = match identifier {
        Some(identifier) => {
            if identifier["type"] != "m.id.user" {
                return Err(MatrixError::new(StatusCode::BAD_REQUEST, "M_UNKNOWN", "Only m.id.user identifiers are supported"));
            }
            identifier["user"].as_str().ok_or_else(|| MatrixError::missing_param("identifier.user is required"))?
        }
        None => user.ok_or_else(|| MatrixError::missing_param("identifier is required"))?,
    };
    let name = name.to_lowercase();
    if name.starts_with('@') {
        if haetae_matrix::ids::server_name(&name) != Some(app.config.server_name.as_str()) {
            return Err(MatrixError::forbidden("Invalid username or password"));
        }
        return Ok(haetae_matrix::ids::localpart(&name).unwrap_or_default().to_string());
    }
    Ok(name)
}

pub(crate) async fn check_password(app: &App, localpart: &str, password: &str) -> ApiResult<()> {
    let account = app.store.kv().get(Bucket::Accounts, localpart).await?;
    let stored_hash = account
        .and_then(|a| serde_json::from_slice::<Value>(&a.value).ok())
        .and_then(|a| a["password_hash"].as_str().map(str::to_string));
    match stored_hash {
        Some(hash) if verify_password(app, password.to_string(), hash.clone()).await => Ok(()),
        _ => Err(MatrixError::forbidden("Invalid username or password")),
    }
}

async fn login(State(app): State<AppState>, parts: Parts, JsonBody(body): JsonBody<LoginRequest>) -> ApiResult<Json<Value>> {
    app.limit_logins(client_ip(&parts))?;
    if body.login_type != "m.login.password" {
        return Err(MatrixError::new(StatusCode::BAD_REQUEST, "M_UNKNOWN", "Unsupported login type"));
    }
    let localpart = identified_localpart(&app, body.identifier.as_ref(), body.user.as_deref())?;
    let password = body.password.ok_or_else(|| MatrixError::missing_param("password is required"))?;
    check_password(&app, &localpart, &password).await?;
    let user_id = app.user_id(&localpart);
    Ok(Json(start_session(&app, &user_id, body.device_id, body.initial_device_display_name, client_ip(&parts)).await?))
}

/// Creates (or takes over) a device and issues it a fresh access token.
async fn start_session(
    app: &App,
    user_id: &str,
    device_id: Option<String>,
    display_name: Option<String>,
    ip: Option<std::net::IpAddr>,
) -> ApiResult<Value> {
    let device_id = device_id.filter(|d| !d.is_empty() && d.len() <= 255).unwrap_or_else(|| random_string(10).to_uppercase());
    let token_bytes: [u8; 32] = rand::rng().random();
    let access_token = format!("hae_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token_bytes));
    let hash = token_hash(&access_token);
    let session = random_string(16);
    let record = json!({ "user_id": user_id, "device_id": device_id, "session": session });
    app.store.kv().put(Bucket::Tokens, &hash, serde_json::to_vec(&record).unwrap_or_default().into()).await?;
    let mut replaced_token = None;
    let device = json!({
        "display_name": display_name,
        "token_hash": hash,
        "session": session,
        "created_ts": now_ms(),
        "last_seen_ts": now_ms(),
        "last_seen_ip": ip.map(|ip| ip.to_string()),
    });
    app.store
        .kv()
        .modify(Bucket::Devices, user_id, |current| -> Result<Option<bytes::Bytes>, ()> {
            let mut devices: Value = current.and_then(|c| serde_json::from_slice(c).ok()).unwrap_or_else(|| json!({}));
            if let Some(old) = devices.get(&device_id) {
                replaced_token = old["token_hash"].as_str().map(str::to_string);
            }
            let mut new_device = device.clone();
            if new_device["display_name"].is_null() {
                new_device["display_name"] = devices[&device_id]["display_name"].clone();
            }
            devices[&device_id] = new_device;
            Ok(Some(serde_json::to_vec(&devices).unwrap_or_default().into()))
        })
        .await?
        .ok();
    if let Some(old) = replaced_token {
        revoke_tokens(app, user_id, vec![old]).await?;
    }
    Ok(json!({
        "user_id": user_id,
        "access_token": access_token,
        "device_id": device_id,
        "home_server": app.config.server_name,
    }))
}

/// Deletes tokens from the bucket and tells every node to drop them from its cache.
pub(crate) async fn revoke_tokens(app: &App, user_id: &str, token_hashes: Vec<String>) -> ApiResult<()> {
    if token_hashes.is_empty() {
        return Ok(());
    }
    for hash in &token_hashes {
        app.store.kv().delete(Bucket::Tokens, hash).await?;
    }
    append_user_entry(app, user_id, Entry::TokensRevoked { token_hashes }).await
}

/// Appends an entry to a user's history and waits until this node has applied it.
pub async fn append_user_entry(app: &App, user_id: &str, entry: Entry) -> ApiResult<()> {
    let payload = Envelope::new(entry).to_bytes();
    let message_id = crate::rooms::random_event_id();
    let appended = app
        .store
        .log()
        .append(user_id, payload, &message_id, None)
        .await
        .map_err(|e| match e {
            haetae_store::AppendError::TooLarge(m) => MatrixError::too_large(m),
            other => MatrixError::unavailable(other),
        })?;
    if !app.model.wait_applied(appended.partition, appended.seq, std::time::Duration::from_secs(15)).await {
        return Err(MatrixError::unavailable("this node is behind the event log"));
    }
    Ok(())
}

/// A user's devices record (device id -> details), empty when none.
pub async fn load_devices(app: &App, user_id: &str) -> ApiResult<Value> {
    Ok(app
        .store
        .kv()
        .get(Bucket::Devices, user_id)
        .await?
        .and_then(|v| serde_json::from_slice(&v.value).ok())
        .unwrap_or_else(|| json!({})))
}

/// Removes devices (all when `device_ids` is None) and revokes their tokens and keys.
pub(crate) async fn remove_devices(app: &App, user_id: &str, device_ids: Option<&[String]>, keep: Option<&str>) -> ApiResult<()> {
    let mut revoked = Vec::new();
    let mut removed = Vec::new();
    app.store
        .kv()
        .modify(Bucket::Devices, user_id, |current| -> Result<Option<bytes::Bytes>, ()> {
            revoked.clear();
            removed.clear();
            let mut devices: Value = current.and_then(|c| serde_json::from_slice(c).ok()).unwrap_or_else(|| json!({}));
            let Some(map) = devices.as_object_mut() else { return Ok(None) };
            let ids: Vec<String> = map.keys().cloned().collect();
            for id in ids {
                let selected = device_ids.is_none_or(|wanted| wanted.contains(&id));
                if selected && Some(id.as_str()) != keep {
                    if let Some(device) = map.remove(&id) {
                        if let Some(hash) = device["token_hash"].as_str() {
                            revoked.push(hash.to_string());
                        }
                        removed.push(id);
                    }
                }
            }
            Ok(Some(serde_json::to_vec(&devices).unwrap_or_default().into()))
        })
        .await?
        .ok();
    for device_id in &removed {
        super::keys::forget_device_keys(app, user_id, device_id).await?;
    }
    if !removed.is_empty() {
        append_user_entry(app, user_id, Entry::KeysChanged).await?;
    }
    revoke_tokens(app, user_id, revoked).await
}

async fn logout(State(app): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    remove_devices(&app, &caller.user_id, Some(std::slice::from_ref(&caller.device_id)), None).await?;
    Ok(Json(json!({})))
}

async fn logout_all(State(app): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    remove_devices(&app, &caller.user_id, None, None).await?;
    Ok(Json(json!({})))
}

async fn whoami(caller: Caller) -> Json<Value> {
    Json(json!({ "user_id": caller.user_id, "device_id": caller.device_id, "is_guest": false }))
}

/// User-interactive auth by password for sensitive operations on the caller's own account.
async fn require_password(app: &App, caller: &Caller, auth: Option<&Value>) -> ApiResult<()> {
    let Some(auth) = auth else {
        return Err(uia_required(&["m.login.password"], None, None));
    };
    let session = auth["session"].as_str();
    if auth["type"] != "m.login.password" {
        return Err(uia_required(&["m.login.password"], session, None));
    }
    let localpart = identified_localpart(app, auth.get("identifier"), auth["user"].as_str())?;
    if app.user_id(&localpart) != caller.user_id {
        return Err(uia_required(&["m.login.password"], session, Some(MatrixError::forbidden("Wrong user"))));
    }
    let password = auth["password"].as_str().unwrap_or_default();
    check_password(app, &localpart, password)
        .await
        .map_err(|error| uia_required(&["m.login.password"], session, Some(error)))
}

#[derive(Deserialize)]
struct PasswordRequest {
    auth: Option<Value>,
    new_password: String,
    #[serde(default = "yes")]
    logout_devices: bool,
}

fn yes() -> bool {
    true
}

async fn change_password(
    State(app): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<PasswordRequest>,
) -> ApiResult<Json<Value>> {
    require_password(&app, &caller, body.auth.as_ref()).await?;
    let localpart = haetae_matrix::ids::localpart(&caller.user_id).unwrap_or_default().to_string();
    let password_hash = hash_password(&app, body.new_password).await?;
    app.store
        .kv()
        .modify(Bucket::Accounts, &localpart, |current| -> Result<Option<bytes::Bytes>, ()> {
            let mut account: Value = current.and_then(|c| serde_json::from_slice(c).ok()).unwrap_or_else(|| json!({}));
            account["password_hash"] = json!(password_hash);
            Ok(Some(serde_json::to_vec(&account).unwrap_or_default().into()))
        })
        .await?
        .ok();
    if body.logout_devices {
        remove_devices(&app, &caller.user_id, None, Some(&caller.device_id)).await?;
    }
    Ok(Json(json!({})))
}

fn device_json(device_id: &str, device: &Value) -> Value {
    json!({
        "device_id": device_id,
        "display_name": device["display_name"],
        "last_seen_ip": device["last_seen_ip"],
        "last_seen_ts": device["last_seen_ts"],
    })
}

async fn list_devices(State(app): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let devices = load_devices(&app, &caller.user_id).await?;
    let list: Vec<Value> = devices
        .as_object()
        .map(|map| map.iter().map(|(id, device)| device_json(id, device)).collect())
        .unwrap_or_default();
    Ok(Json(json!({ "devices": list })))
}

async fn get_device(State(app): State<AppState>, caller: Caller, Path(device_id): Path<String>) -> ApiResult<Json<Value>> {
    let devices = load_devices(&app, &caller.user_id).await?;
    match devices.get(&device_id) {
        Some(device) => Ok(Json(device_json(&device_id, device))),
        None => Err(MatrixError::not_found("Device not found")),
    }
}

#[derive(Deserialize)]
struct UpdateDevice {
    display_name: Option<String>,
}

async fn update_device(
    State(app): State<AppState>,
    caller: Caller,
    Path(device_id): Path<String>,
    JsonBody(body): JsonBody<UpdateDevice>,
) -> ApiResult<Json<Value>> {
    let outcome = app
        .store
        .kv()
        .modify(Bucket::Devices, &caller.user_id, |current| {
            let mut devices: Value = current.and_then(|c| serde_json::from_slice(c).ok()).unwrap_or_else(|| json!({}));
            if devices.get(&device_id).is_none() {
                return Err(MatrixError::not_found("Device not found"));
            }
            devices[&device_id]["display_name"] = json!(body.display_name);
            Ok(Some(serde_json::to_vec(&devices).unwrap_or_default().into()))
        })
        .await?;
    outcome?;
    append_user_entry(&app, &caller.user_id, Entry::KeysChanged).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct DeleteDevice {
    auth: Option<Value>,
}

async fn delete_device(
    State(app): State<AppState>,
    caller: Caller,
    Path(device_id): Path<String>,
    JsonBody(body): JsonBody<DeleteDevice>,
) -> ApiResult<Json<Value>> {
    let devices = load_devices(&app, &caller.user_id).await?;
    if devices.get(&device_id).is_none() {
        return Err(MatrixError::not_found("Device not found"));
    }
    require_password(&app, &caller, body.auth.as_ref()).await?;
    remove_devices(&app, &caller.user_id, Some(std::slice::from_ref(&device_id)), None).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct DeleteDevices {
    auth: Option<Value>,
    devices: Vec<String>,
}

async fn delete_devices(
    State(app): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<DeleteDevices>,
) -> ApiResult<Json<Value>> {
    require_password(&app, &caller, body.auth.as_ref()).await?;
    remove_devices(&app, &caller.user_id, Some(&body.devices), None).await?;
    Ok(Json(json!({})))
}

/// Password user-interactive auth, for other endpoint groups (cross-signing key replacement).
pub async fn require_password_public(app: &App, caller: &Caller, auth: Option<&Value>) -> ApiResult<()> {
    require_password(app, caller, auth).await
}
