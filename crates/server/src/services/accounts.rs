//! Accounts, logins, devices: everything about who a caller is.
//!
//! Accounts, devices and tokens live in replicated KV; a token is stored only as its hash.
//! A login that asks for a refresh token gets an expiring access token and a refresh-token chain
//! ([`super::session_tokens`] holds their formats and records); `POST /refresh` rotates both.

use argon2::password_hash::{PasswordHasher, PasswordVerifier, SaltString};
use axum::http::StatusCode;
use base64::Engine;
use haetae_store::{Bucket, KvError};
use rand::Rng;
use serde::Deserialize;
use serde_json::{Value, json};

use super::rooms::{now_ms, random_string};
use super::{App, Caller, token_hash};
use super::session_tokens;
use crate::entry::Entry;
use crate::error::{ApiResult, MatrixError};
use crate::refresh_chain::Outcome;

fn hasher(app: &App) -> argon2::Argon2<'static> {
    let settings = &app.config.password_hashing;
    let params = argon2::Params::new(settings.memory_kib, settings.iterations, settings.parallelism, None).unwrap_or_default();
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}

pub async fn hash_password(app: &App, password: String) -> ApiResult<String> {
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
pub struct RegisterRequest {
    auth: Option<Value>,
    username: Option<String>,
    password: Option<String>,
    device_id: Option<String>,
    initial_device_display_name: Option<String>,
    #[serde(default)]
    inhibit_login: bool,
    /// The client supports refresh tokens: its access token will expire.
    #[serde(default)]
    refresh_token: bool,
}

#[derive(Deserialize)]
pub struct RegisterQuery {
    kind: Option<String>,
}

pub async fn register(app: &App, query: RegisterQuery, ip: Option<std::net::IpAddr>, body: RegisterRequest) -> ApiResult<Value> {
    app.limit_logins(ip)?;
    if query.kind.as_deref() == Some("guest") {
        return Err(MatrixError::new(StatusCode::FORBIDDEN, "M_GUEST_ACCESS_FORBIDDEN", "Guest access is disabled"));
    }
    if !app.config.registration.enabled {
        return Err(MatrixError::forbidden("Registration is disabled"));
    }
    let needs_token = app.config.registration.token.is_some() || app.config.registration.requires_token;
    let stage = if needs_token { "m.login.registration_token" } else { "m.login.dummy" };
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
    let invalid_token = || uia_required(&[stage], session, Some(MatrixError::forbidden("Invalid registration token")));
    // A token of the admin API whose use this registration must take, then settle.
    let mut admin_token = None;
    match auth["type"].as_str() {
        Some("m.login.dummy") if stage == "m.login.dummy" => {}
        Some("m.login.registration_token") if stage == "m.login.registration_token" => {
            let given = auth["token"].as_str().unwrap_or_default();
            if app.config.registration.token.as_deref() != Some(given) {
                if !super::registration_tokens::is_valid(app, given).await? {
                    return Err(invalid_token());
                }
                admin_token = Some(given.to_string());
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
    let password_hash = hash_password(app, password).await?;
    if let Some(token) = &admin_token
        && !super::registration_tokens::take_use(app, token).await?
    {
        // Its last use went to another registration since the first look.
        return Err(invalid_token());
    }
    let created = create_account(app, &localpart, password_hash).await;
    if let Some(token) = &admin_token {
        super::registration_tokens::settle_use(app, token, matches!(created, Ok(true))).await?;
    }
    let outcome = match &created {
        Ok(true) => "ok",
        Ok(false) => "taken",
        Err(_) => "error",
    };
    app.metrics.logins.with_label_values(&["register", outcome]).inc();
    if !created? {
        return Err(MatrixError::new(StatusCode::BAD_REQUEST, "M_USER_IN_USE", "User ID already taken"));
    }
    let user_id = app.user_id(&localpart);
    tracing::info!(%user_id, "registered");
    if body.inhibit_login {
        return Ok(json!({ "user_id": user_id }));
    }
    let device = NewDevice { device_id: body.device_id, display_name: body.initial_device_display_name, refreshable: body.refresh_token };
    start_session(app, &user_id, device, ip).await
}

/// Creates an account (password hash already computed); false when the name is taken. A new
/// account's display name is its localpart: clients show display names, and users of other
/// servers expect one.
pub async fn create_account(app: &App, localpart: &str, password_hash: String) -> ApiResult<bool> {
    // The server notices user is the deployment's own: nobody may register it.
    if localpart == super::notices::NOTICES_LOCALPART {
        return Ok(false);
    }
    let account = json!({ "password_hash": password_hash, "created_ts": now_ms() });
    match app.store.kv().create(Bucket::Accounts, localpart, serde_json::to_vec(&account).unwrap_or_default().into()).await {
        Ok(_) => {}
        Err(KvError::Exists) => return Ok(false),
        Err(error) => return Err(error.into()),
    }
    let profile = Entry::Profile { displayname: Some(localpart.to_string()), avatar_url: None };
    append_user_entry(app, &app.user_id(localpart), profile).await?;
    Ok(true)
}

#[derive(Deserialize)]
pub struct AvailableQuery {
    username: String,
}

pub async fn register_available(app: &App, query: AvailableQuery) -> ApiResult<Value> {
    haetae_matrix::ids::validate_user_localpart(&query.username)
        .map_err(|e| MatrixError::new(StatusCode::BAD_REQUEST, "M_INVALID_USERNAME", e.to_string()))?;
    if app.store.kv().get(Bucket::Accounts, &query.username).await?.is_some() {
        return Err(MatrixError::new(StatusCode::BAD_REQUEST, "M_USER_IN_USE", "User ID already taken"));
    }
    Ok(json!({ "available": true }))
}

#[derive(Deserialize)]
pub struct LoginRequest {
    #[serde(rename = "type")]
    login_type: String,
    identifier: Option<Value>,
    user: Option<String>,
    password: Option<String>,
    /// The login token of `m.login.token`.
    token: Option<String>,
    device_id: Option<String>,
    initial_device_display_name: Option<String>,
    /// The client supports refresh tokens: its access token will expire.
    #[serde(default)]
    refresh_token: bool,
}

/// The localpart named by a login or UIA identifier (`m.id.user`, or the legacy `user` field).
pub fn identified_localpart(app: &App, identifier: Option<&Value>, user: Option<&str>) -> ApiResult<String> {
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

pub async fn check_password(app: &App, localpart: &str, password: &str) -> ApiResult<()> {
    let account = load_account(app, localpart).await?;
    // A deactivated account never logs in again.
    let stored_hash = account.filter(|a| a["deactivated"] != true).and_then(|a| a["password_hash"].as_str().map(str::to_string));
    match stored_hash {
        Some(hash) if verify_password(app, password.to_string(), hash.clone()).await => Ok(()),
        _ => Err(MatrixError::forbidden("Invalid username or password")),
    }
}

pub async fn login(app: &App, ip: Option<std::net::IpAddr>, body: LoginRequest) -> ApiResult<Value> {
    app.limit_logins(ip)?;
    match body.login_type.as_str() {
        "m.login.password" => {}
        "m.login.token" => return token_login(app, ip, body).await,
        _ => return Err(MatrixError::new(StatusCode::BAD_REQUEST, "M_UNKNOWN", "Unsupported login type")),
    }
    let localpart = identified_localpart(app, body.identifier.as_ref(), body.user.as_deref())?;
    let password = body.password.ok_or_else(|| MatrixError::missing_param("password is required"))?;
    let checked = check_password(app, &localpart, &password).await;
    let outcome = match &checked {
        Ok(()) => "ok",
        Err(error) if error.errcode == "M_FORBIDDEN" => "refused",
        Err(_) => "error",
    };
    app.metrics.logins.with_label_values(&["password", outcome]).inc();
    checked?;
    let user_id = app.user_id(&localpart);
    let device = NewDevice { device_id: body.device_id, display_name: body.initial_device_display_name, refreshable: body.refresh_token };
    start_session(app, &user_id, device, ip).await
}

/// `m.login.token`: a login token from `POST /login/get_token`, spent by this login (403
/// `M_FORBIDDEN` when it is unknown, expired or already spent, as the spec says).
async fn token_login(app: &App, ip: Option<std::net::IpAddr>, body: LoginRequest) -> ApiResult<Value> {
    let token = body.token.ok_or_else(|| MatrixError::missing_param("token is required"))?;
    let spent = session_tokens::spend_login_token(app, &token).await;
    let outcome = match &spent {
        Ok(Some(_)) => "ok",
        Ok(None) => "refused",
        Err(_) => "error",
    };
    app.metrics.logins.with_label_values(&["token", outcome]).inc();
    let user_id = spent?.ok_or_else(|| MatrixError::forbidden("Invalid login token"))?;
    let localpart = haetae_matrix::ids::localpart(&user_id).unwrap_or_default().to_string();
    let active = load_account(app, &localpart).await?.is_some_and(|account| account["deactivated"] != true);
    if !active {
        return Err(MatrixError::forbidden("Invalid login token"));
    }
    let device = NewDevice { device_id: body.device_id, display_name: body.initial_device_display_name, refreshable: body.refresh_token };
    start_session(app, &user_id, device, ip).await
}

/// The device a login creates or takes over.
struct NewDevice {
    device_id: Option<String>,
    display_name: Option<String>,
    /// The client supports refresh tokens: an expiring access token and a refresh-token chain.
    refreshable: bool,
}

/// Creates (or takes over) a device and issues it a fresh access token (and, when the client
/// supports them, a refresh token).
async fn start_session(app: &App, user_id: &str, new: NewDevice, ip: Option<std::net::IpAddr>) -> ApiResult<Value> {
    let device_id = new.device_id.filter(|d| !d.is_empty() && d.len() <= 255).unwrap_or_else(|| random_string(10).to_uppercase());
    let (access_token, expires_in_ms) = if new.refreshable {
        let (token, lifetime_ms) = session_tokens::new_access_token(app);
        (token, Some(lifetime_ms))
    } else {
        let token_bytes: [u8; 32] = rand::rng().random();
        (format!("hae_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token_bytes)), None)
    };
    let hash = token_hash(&access_token);
    let session = session_tokens::new_session_id();
    let record = json!({ "user_id": user_id, "device_id": device_id, "session": session });
    app.store.kv().put(Bucket::Tokens, &hash, serde_json::to_vec(&record).unwrap_or_default().into()).await?;
    let refresh_token = match new.refreshable {
        true => Some(session_tokens::begin(app, user_id, &device_id, &session, &hash).await?),
        false => None,
    };
    let mut replaced = None;
    let mut device = json!({
        "display_name": new.display_name,
        "token_hash": hash,
        "session": session,
        "created_ts": now_ms(),
        "last_seen_ts": now_ms(),
        "last_seen_ip": ip.map(|ip| ip.to_string()),
    });
    if new.refreshable {
        device["refresh"] = json!(true);
    }
    app.store
        .kv()
        .modify(Bucket::Devices, user_id, |current| -> Result<Option<bytes::Bytes>, ()> {
            let mut devices: Value = current.and_then(|c| serde_json::from_slice(c).ok()).unwrap_or_else(|| json!({}));
            replaced = devices.get(&device_id).cloned();
            let mut new_device = device.clone();
            if new_device["display_name"].is_null() {
                new_device["display_name"] = devices[&device_id]["display_name"].clone();
            }
            devices[&device_id] = new_device;
            Ok(Some(serde_json::to_vec(&devices).unwrap_or_default().into()))
        })
        .await?
        .ok();
    // The spec: a login naming an existing device invalidates the tokens it had, refresh
    // tokens included.
    if let Some(old) = replaced {
        let mut revoked: Vec<String> = old["token_hash"].as_str().map(str::to_string).into_iter().collect();
        if old["refresh"] == true
            && let Some(old_session) = old["session"].as_str()
        {
            revoked.extend(session_tokens::end(app, old_session).await?);
        }
        revoke_tokens(app, user_id, revoked).await?;
    }
    let mut answer = json!({
        "user_id": user_id,
        "access_token": access_token,
        "device_id": device_id,
        "home_server": app.config.server_name,
    });
    if let (Some(refresh_token), Some(expires_in_ms)) = (refresh_token, expires_in_ms) {
        answer["refresh_token"] = json!(refresh_token);
        answer["expires_in_ms"] = json!(expires_in_ms);
    }
    Ok(answer)
}

#[derive(Deserialize)]
pub struct RefreshRequest {
    refresh_token: String,
}

/// 401 `M_UNKNOWN_TOKEN` for a refresh token that cannot be used (the session is over: the
/// client must log in again).
fn refresh_refused(message: &str) -> MatrixError {
    MatrixError::new(StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN", message).with_extra(json!({ "soft_logout": false }))
}

/// Whether the user's device still belongs to this login session (a logout, a device deletion
/// or a newer login with the same device id ends it).
async fn device_bound(app: &App, user_id: &str, device_id: &str, session: &str) -> ApiResult<bool> {
    let devices = load_devices(app, user_id).await?;
    Ok(devices[device_id]["session"].as_str() == Some(session))
}

/// `POST /refresh`: a new access token and a new refresh token for a login that supports
/// them, by one compare-and-set on the session's chain (any node, any DC). The replaced access
/// token stops working at every node. The rules are [`crate::refresh_chain`]'s: within
/// `oauth.refresh_grace_s` of a rotation the previous refresh token yields the same successor
/// again and a spent one is refused; after it, a spent one logs the device out.
pub async fn refresh(app: &App, body: RefreshRequest) -> ApiResult<Value> {
    let presented = body.refresh_token;
    let unknown = || refresh_refused("Unknown refresh token");
    let session = session_tokens::session_of_refresh(&presented).ok_or_else(unknown)?.to_string();
    let Some(record) = session_tokens::session(app, &session).await? else { return Err(unknown()) };
    if record.revoked {
        return Err(unknown());
    }
    let (user_id, device_id) = (record.user_id.clone(), record.device_id.clone());
    if !device_bound(app, &user_id, &device_id, &session).await? {
        let access = session_tokens::end(app, &session).await?;
        revoke_tokens(app, &user_id, access).await?;
        return Err(refresh_refused("The session has ended"));
    }
    let (access_token, expires_in_ms) = session_tokens::new_access_token(app);
    let access_hash = token_hash(&access_token);
    let grace_ms = app.config.oauth.refresh_grace_s.saturating_mul(1000);
    let rotation = session_tokens::rotate(app, &session, &presented, &access_hash, grace_ms).await?;
    let refresh_token = match (rotation.outcome, rotation.refresh_token) {
        (Outcome::Reused, _) => {
            tracing::warn!(%user_id, %device_id, "a spent refresh token was used again; the device is logged out");
            remove_devices_where(app, &user_id, |id, device| id == device_id && device["session"].as_str() == Some(session.as_str())).await?;
            let access = session_tokens::end(app, &session).await?;
            revoke_tokens(app, &user_id, access).await?;
            return Err(refresh_refused("The refresh token was already used; the session is logged out"));
        }
        (Outcome::Stale, _) => {
            tracing::info!(%user_id, %device_id, "a refresh token replaced moments ago was presented again (a late copy of a request?); refused, the session stays");
            return Err(unknown());
        }
        (_, None) => return Err(unknown()),
        (_, Some(refresh_token)) => refresh_token,
    };
    let record = json!({ "user_id": user_id, "device_id": device_id, "session": session });
    app.store.kv().put(Bucket::Tokens, &access_hash, serde_json::to_vec(&record).unwrap_or_default().into()).await?;
    let bound = app
        .store
        .kv()
        .modify(Bucket::Devices, &user_id, |current| -> Result<Option<bytes::Bytes>, ()> {
            let mut devices: Value = current.and_then(|c| serde_json::from_slice(c).ok()).unwrap_or_else(|| json!({}));
            if devices[&device_id]["session"].as_str() != Some(session.as_str()) {
                return Err(());
            }
            devices[&device_id]["token_hash"] = json!(access_hash);
            devices[&device_id]["last_seen_ts"] = json!(now_ms());
            Ok(Some(serde_json::to_vec(&devices).unwrap_or_default().into()))
        })
        .await?;
    if bound.is_err() {
        // Logged out while this refresh ran: the new token goes with the rest.
        let mut access = session_tokens::end(app, &session).await?;
        access.push(access_hash);
        revoke_tokens(app, &user_id, access).await?;
        return Err(refresh_refused("The session has ended"));
    }
    revoke_tokens(app, &user_id, rotation.replaced_access.into_iter().filter(|old| *old != access_hash).collect()).await?;
    Ok(json!({ "access_token": access_token, "refresh_token": refresh_token, "expires_in_ms": expires_in_ms }))
}

#[derive(Deserialize)]
pub struct LoginTokenRequest {
    auth: Option<Value>,
}

/// `POST /v1/login/get_token`: after the password again (every time, as the spec requires), a
/// single-use login token for another device of the same user. Rate-limited like logins.
pub async fn get_login_token(app: &App, caller: &Caller, body: LoginTokenRequest) -> ApiResult<Value> {
    app.limit_logins(caller.ip)?;
    require_password(app, caller, body.auth.as_ref()).await?;
    let (login_token, expires_in_ms) = session_tokens::issue_login_token(app, &caller.user_id).await?;
    tracing::info!(user_id = %caller.user_id, device_id = %caller.device_id, "login token issued");
    Ok(json!({ "login_token": login_token, "expires_in_ms": expires_in_ms }))
}

/// Deletes tokens from the bucket and tells every node to drop them from its cache.
pub async fn revoke_tokens(app: &App, user_id: &str, token_hashes: Vec<String>) -> ApiResult<()> {
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
    app.append_applied(user_id, entry, &super::rooms::random_event_id()).await
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
pub async fn remove_devices(app: &App, user_id: &str, device_ids: Option<&[String]>, keep: Option<&str>) -> ApiResult<()> {
    remove_devices_where(app, user_id, |id, _| device_ids.is_none_or(|wanted| wanted.iter().any(|w| w == id)) && Some(id) != keep).await
}

/// Removes the devices `selected` picks and revokes their tokens (refresh chains included) and
/// keys.
async fn remove_devices_where(app: &App, user_id: &str, selected: impl Fn(&str, &Value) -> bool) -> ApiResult<()> {
    let mut revoked = Vec::new();
    let mut removed = Vec::new();
    let mut sessions = Vec::new();
    app.store
        .kv()
        .modify(Bucket::Devices, user_id, |current| -> Result<Option<bytes::Bytes>, ()> {
            revoked.clear();
            removed.clear();
            sessions.clear();
            let mut devices: Value = current.and_then(|c| serde_json::from_slice(c).ok()).unwrap_or_else(|| json!({}));
            let Some(map) = devices.as_object_mut() else {
                return Ok(None);
            };
            let ids: Vec<String> = map.keys().cloned().collect();
            for id in ids {
                if map.get(&id).is_some_and(|device| selected(&id, device))
                    && let Some(device) = map.remove(&id)
                {
                    if let Some(hash) = device["token_hash"].as_str() {
                        revoked.push(hash.to_string());
                    }
                    if device["refresh"] == true
                        && let Some(session) = device["session"].as_str()
                    {
                        sessions.push(session.to_string());
                    }
                    removed.push(id);
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
    for session in &sessions {
        revoked.extend(session_tokens::end(app, session).await?);
    }
    revoked.sort();
    revoked.dedup();
    revoke_tokens(app, user_id, revoked).await
}

pub async fn logout(app: &App, caller: &Caller) -> ApiResult<Value> {
    remove_devices(app, &caller.user_id, Some(std::slice::from_ref(&caller.device_id)), None).await?;
    Ok(json!({}))
}

pub async fn logout_all(app: &App, caller: &Caller) -> ApiResult<Value> {
    remove_devices(app, &caller.user_id, None, None).await?;
    Ok(json!({}))
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
    check_password(app, &localpart, password).await.map_err(|error| uia_required(&["m.login.password"], session, Some(error)))
}

#[derive(Deserialize)]
pub struct PasswordRequest {
    auth: Option<Value>,
    new_password: String,
    #[serde(default = "yes")]
    logout_devices: bool,
}

fn yes() -> bool {
    true
}

pub async fn change_password(app: &App, caller: &Caller, body: PasswordRequest) -> ApiResult<Value> {
    require_password(app, caller, body.auth.as_ref()).await?;
    let localpart = haetae_matrix::ids::localpart(&caller.user_id).unwrap_or_default().to_string();
    let password_hash = hash_password(app, body.new_password).await?;
    set_password_hash(app, &localpart, password_hash).await?;
    if body.logout_devices {
        remove_devices(app, &caller.user_id, None, Some(&caller.device_id)).await?;
    }
    Ok(json!({}))
}

/// An account's record (`password_hash`, `created_ts`, `admin`, `deactivated`), if it exists.
pub async fn load_account(app: &App, localpart: &str) -> ApiResult<Option<Value>> {
    Ok(app.store.kv().get(Bucket::Accounts, localpart).await?.and_then(|a| serde_json::from_slice::<Value>(&a.value).ok()))
}

/// Sets fields of an existing account's record (compare-and-set); false when there is none.
pub async fn update_account(app: &App, localpart: &str, fields: &serde_json::Map<String, Value>) -> ApiResult<bool> {
    let outcome = app
        .store
        .kv()
        .modify(Bucket::Accounts, localpart, |current| {
            let Some(mut account) = current.and_then(|c| serde_json::from_slice::<Value>(c).ok()) else { return Err(()) };
            for (key, value) in fields {
                account[key] = value.clone();
            }
            Ok(Some(serde_json::to_vec(&account).unwrap_or_default().into()))
        })
        .await?;
    Ok(outcome.is_ok())
}

/// Every account's localpart and record, at most `max` of them (the listing reads the whole
/// bucket's keys: an operator's question, not a request path).
pub async fn list_accounts(app: &App, max: usize) -> ApiResult<Vec<(String, Value)>> {
    let listing = app.store.kv().list_all(Bucket::Accounts, max, true).await?;
    Ok(listing
        .entries
        .into_iter()
        .filter_map(|(key, stored)| Some((key.into_iter().next()?, serde_json::from_slice(&stored.value).ok()?)))
        .collect())
}

/// Deactivates an account: it can no longer log in, every device and token is gone, and it
/// leaves every room it was in or invited to.
pub async fn deactivate(app: &App, user_id: &str) -> ApiResult<()> {
    let localpart = haetae_matrix::ids::localpart(user_id).unwrap_or_default().to_string();
    let mut fields = serde_json::Map::new();
    fields.insert("deactivated".into(), json!(true));
    if !update_account(app, &localpart, &fields).await? {
        return Err(MatrixError::not_found("No such user"));
    }
    remove_devices(app, user_id, None, None).await?;
    super::membership::leave_everything(app, user_id).await?;
    tracing::info!(%user_id, "deactivated");
    Ok(())
}

#[derive(Deserialize)]
pub struct DeactivateRequest {
    auth: Option<Value>,
}

/// `POST /account/deactivate`: the caller deactivates their own account, after proving their
/// password.
pub async fn deactivate_own(app: &App, caller: &Caller, body: DeactivateRequest) -> ApiResult<Value> {
    require_password(app, caller, body.auth.as_ref()).await?;
    deactivate(app, &caller.user_id).await?;
    Ok(json!({ "id_server_unbind_result": "no-support" }))
}

/// Replaces an account's password hash.
pub async fn set_password_hash(app: &App, localpart: &str, password_hash: String) -> ApiResult<()> {
    app.store
        .kv()
        .modify(Bucket::Accounts, localpart, |current| -> Result<Option<bytes::Bytes>, ()> {
            let mut account: Value = current.and_then(|c| serde_json::from_slice(c).ok()).unwrap_or_else(|| json!({}));
            account["password_hash"] = json!(password_hash);
            Ok(Some(serde_json::to_vec(&account).unwrap_or_default().into()))
        })
        .await?
        .ok();
    Ok(())
}

/// A device as the API shows it: fields the device does not have are left out (the spec types
/// them as strings and integers, never null).
fn device_json(device_id: &str, device: &Value) -> Value {
    let mut shown = json!({ "device_id": device_id });
    for key in ["display_name", "last_seen_ip", "last_seen_ts"] {
        if !device[key].is_null() {
            shown[key] = device[key].clone();
        }
    }
    shown
}

pub async fn list_devices(app: &App, caller: &Caller) -> ApiResult<Value> {
    let devices = load_devices(app, &caller.user_id).await?;
    let list: Vec<Value> =
        devices.as_object().map(|map| map.iter().map(|(id, device)| device_json(id, device)).collect()).unwrap_or_default();
    Ok(json!({ "devices": list }))
}

pub async fn get_device(app: &App, caller: &Caller, device_id: String) -> ApiResult<Value> {
    let devices = load_devices(app, &caller.user_id).await?;
    match devices.get(&device_id) {
        Some(device) => Ok(device_json(&device_id, device)),
        None => Err(MatrixError::not_found("Device not found")),
    }
}

#[derive(Deserialize)]
pub struct UpdateDevice {
    display_name: Option<String>,
}

pub async fn update_device(app: &App, caller: &Caller, device_id: String, body: UpdateDevice) -> ApiResult<Value> {
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
    append_user_entry(app, &caller.user_id, Entry::KeysChanged).await?;
    Ok(json!({}))
}

#[derive(Deserialize)]
pub struct DeleteDevice {
    auth: Option<Value>,
}

pub async fn delete_device(app: &App, caller: &Caller, device_id: String, body: DeleteDevice) -> ApiResult<Value> {
    let devices = load_devices(app, &caller.user_id).await?;
    if devices.get(&device_id).is_none() {
        return Err(MatrixError::not_found("Device not found"));
    }
    require_password(app, caller, body.auth.as_ref()).await?;
    remove_devices(app, &caller.user_id, Some(std::slice::from_ref(&device_id)), None).await?;
    Ok(json!({}))
}

#[derive(Deserialize)]
pub struct DeleteDevices {
    auth: Option<Value>,
    devices: Vec<String>,
}

pub async fn delete_devices(app: &App, caller: &Caller, body: DeleteDevices) -> ApiResult<Value> {
    require_password(app, caller, body.auth.as_ref()).await?;
    remove_devices(app, &caller.user_id, Some(&body.devices), None).await?;
    Ok(json!({}))
}

/// Password user-interactive auth, for other endpoint groups (cross-signing key replacement).
pub async fn require_password_public(app: &App, caller: &Caller, auth: Option<&Value>) -> ApiResult<()> {
    require_password(app, caller, auth).await
}
