//! The JSON endpoints: client registration, the token endpoint (authorization code, refresh
//! token and device code grants), revocation, device authorization; and how a completed grant
//! becomes a Matrix device with an access token.
//!
//! Token formats (only their SHA-256 hashes are stored):
//! - access token `haeo_<expiry unix seconds>_<256 random bits>`: the expiry is part of the
//!   token, so every node refuses an expired one without a lookup or a cache entry to expire;
//! - refresh token `haer_<family id>_<256 random bits>`: the family names its chain's record;
//! - sign-in access token `haei_<expiry unix seconds>_<family id>_<256 random bits>`, for a
//!   service that asked only who the person is (`openid`, no Matrix scope): it is never written to
//!   the tokens bucket, so no Matrix endpoint accepts it; userinfo checks it against its family.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use haetae_store::Bucket;
use serde_json::{Value, json};

use super::grants::{
    self, Chain, CodeGrant, DeviceGrant, DeviceState, Family, Outcome, Refusal, Scope,
};
use super::records::{self, random_secret};
use super::{Form, OauthError, base_url, no_store, now_ms, now_s, oidc};
use crate::services::accounts as account;
use crate::app::{App, AppState, client_ip};
use crate::services::token_hash;
use crate::error::{ApiResult, MatrixError};

const ACCESS_PREFIX: &str = "haeo_";
const REFRESH_PREFIX: &str = "haer_";
const SIGNIN_PREFIX: &str = "haei_";
/// Characters of a family id (letters only, so it never contains the separator).
const FAMILY_ID_CHARS: usize = 24;

/// Whether `token` is an OAuth access token whose lifetime is over. Tokens of other kinds
/// (password logins) never expire here.
pub fn access_token_expired(token: &str) -> bool {
    crate::services::session_tokens::expired_with_prefix(token, ACCESS_PREFIX)
}

/// The expiry and family of a sign-in access token.
fn parse_signin_token(token: &str) -> Option<(u64, &str)> {
    let rest = token.strip_prefix(SIGNIN_PREFIX)?;
    let (expiry, rest) = rest.split_once('_')?;
    let (family, secret) = rest.split_at_checked(FAMILY_ID_CHARS)?;
    let family_ok = secret.starts_with('_') && family.chars().all(|c| c.is_ascii_alphabetic());
    family_ok.then_some((expiry.parse().ok()?, family))
}

fn family_of_refresh(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(REFRESH_PREFIX)?;
    let (family, secret) = rest.split_at_checked(FAMILY_ID_CHARS)?;
    (secret.starts_with('_') && family.chars().all(|c| c.is_ascii_alphabetic())).then_some(family)
}

/// Per-IP limit on the token, registration, revocation and userinfo endpoints.
pub(super) fn limit(app: &App, parts_ip: Option<std::net::IpAddr>) -> Result<(), OauthError> {
    let limits = &app.config.rate_limits;
    let oauth = &app.config.oauth;
    match parts_ip {
        Some(ip) if limits.enabled => app
            .limiter
            .check(&format!("ot:{ip}"), oauth.token_requests_per_ip_per_s, oauth.token_requests_per_ip_burst)
            .map_err(OauthError::from),
        _ => Ok(()),
    }
}

/// The `(client_id, client_secret)` of an `Authorization: Basic` header, each form-decoded
/// (RFC 6749 section 2.3.1); an empty secret is none.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, Option<String>)> {
    let decode = |text: &str| url::form_urlencoded::parse(format!("v={text}").as_bytes()).next().map(|(_, v)| v.into_owned());
    let pair = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok())?;
    let (id, secret) = pair.split_once(':')?;
    Some((decode(id)?, decode(secret).filter(|s| !s.is_empty())))
}

/// The client id of a token request: the form's `client_id`, or HTTP Basic's.
fn client_id_of(headers: &HeaderMap, form: &Form) -> Result<String, OauthError> {
    if let Some(id) = form.get("client_id") {
        return Ok(id.to_string());
    }
    basic_credentials(headers)
        .map(|(id, _)| id)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| OauthError { status: StatusCode::UNAUTHORIZED, ..OauthError::bad_request("invalid_client", "client_id is required") })
}

async fn known_client(app: &App, client_id: &str) -> Result<grants::Client, OauthError> {
    records::client(app, client_id).await?.ok_or_else(|| {
        OauthError { status: StatusCode::UNAUTHORIZED, ..OauthError::bad_request("invalid_client", "unknown client") }
    })
}

/// The client of a token or device-authorization request, authenticated when it is confidential.
async fn authenticated_client(app: &App, headers: &HeaderMap, form: &Form) -> Result<grants::Client, OauthError> {
    let client_id = client_id_of(headers, form)?;
    let client = known_client(app, &client_id).await?;
    let basic = basic_credentials(headers).filter(|(id, _)| *id == client_id).and_then(|(_, secret)| secret);
    grants::authenticate_client(&client, basic.as_deref(), form.get("client_secret"))?;
    Ok(client)
}

fn json_no_store(status: StatusCode, body: Value) -> Response {
    let mut response = (status, Json(body)).into_response();
    no_store(&mut response);
    response
}

/// # POST /oauth2/register
pub async fn register_client(State(app): State<AppState>, request: Request) -> Result<Response, OauthError> {
    let (parts, body) = request.into_parts();
    limit(&app, client_ip(&parts))?;
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map_err(|_| OauthError::bad_request("invalid_client_metadata", "the registration is too large"))?;
    let metadata = super::json_body(&bytes)?;
    let mut client = grants::register_client(&metadata)?;
    // A confidential client gets a secret, shown in this response only and stored hashed.
    let secret = (client.token_endpoint_auth_method != grants::AuthMethod::None).then(random_secret);
    if let Some(secret) = &secret {
        client.secret_hash = Some(grants::secret_hash(secret));
        client.client_id = grants::client_id_for(&client);
    }
    records::save_client(&app, &client).await?;
    tracing::info!(client_id = %client.client_id, client_uri = %client.client_uri, "OAuth client registered");
    let mut body = client.to_json(now_s());
    if let Some(secret) = secret {
        body["client_secret"] = json!(secret);
        body["client_secret_expires_at"] = json!(0);
    }
    Ok(json_no_store(StatusCode::CREATED, body))
}

/// # POST /oauth2/token
pub async fn token(State(app): State<AppState>, request: Request) -> Result<Response, OauthError> {
    let (parts, body) = request.into_parts();
    limit(&app, client_ip(&parts))?;
    let form = Form::read(Request::from_parts(parts.clone(), body)).await?;
    let client = authenticated_client(&app, &parts.headers, &form).await?;
    let grant_type = form.require("grant_type")?;
    if ![grants::GRANT_CODE, grants::GRANT_REFRESH, grants::GRANT_DEVICE].contains(&grant_type) {
        return Err(OauthError::bad_request("unsupported_grant_type", "unsupported grant_type"));
    }
    if !client.allows_grant(grant_type) {
        return Err(OauthError::bad_request("unauthorized_client", "the client did not register this grant type"));
    }
    let ip = client_ip(&parts);
    let issuer = super::issuer(&app, &parts.headers);
    let body = match grant_type {
        grants::GRANT_CODE => code_grant(&app, &client, &form, ip, &issuer).await?,
        grants::GRANT_REFRESH => refresh_grant(&app, &client, &form, &issuer).await?,
        _ => device_code_grant(&app, &client, &form, ip, &issuer).await?,
    };
    Ok(json_no_store(StatusCode::OK, body))
}

async fn code_grant(app: &App, client: &grants::Client, form: &Form, ip: Option<std::net::IpAddr>, issuer: &str) -> Result<Value, OauthError> {
    let code = form.require("code")?;
    let redirect_uri = form.require("redirect_uri")?;
    let verifier = form.require("code_verifier")?;
    let Some((grant, revision)) = records::code(app, code).await? else {
        return Err(Refusal::new("invalid_grant", "unknown authorization code").into());
    };
    if let Some(session) = &grant.used_by_session {
        // RFC 6749 section 4.1.2: a code used twice revokes what it was exchanged for.
        tracing::warn!(client_id = %client.client_id, user_id = %grant.user_id, "authorization code reused; revoking its session");
        revoke_family(app, session).await?;
    }
    grants::check_code(&grant, &client.client_id, redirect_uri, verifier, now_ms())?;
    let family_id = crate::services::rooms::random_string(FAMILY_ID_CHARS);
    let used = CodeGrant { used_by_session: Some(family_id.clone()), ..grant.clone() };
    if !records::replace(app, Bucket::OauthGrants, &records::code_key(code), &used, revision).await? {
        return Err(Refusal::new("invalid_grant", "the authorization code was already used").into());
    }
    let grant_facts = Completed { user_id: &grant.user_id, scope: &grant.scope, auth_time_s: grant.auth_time_s, nonce: grant.nonce.as_deref() };
    Ok(start_family(app, client, grant_facts, &family_id, ip, issuer).await?)
}

/// A new access token and its lifetime: a Matrix one, or for a session without a device (a
/// sign-in to another service) one that names its family.
fn new_access_token(app: &App, scope: &Scope, family_id: &str) -> (String, u64) {
    let lifetime_s = app.config.oauth.access_token_lifetime_s.max(1);
    let expiry_s = now_s() + lifetime_s;
    let token = match scope.device_id {
        Some(_) => format!("{ACCESS_PREFIX}{expiry_s}_{}", random_secret()),
        None => format!("{SIGNIN_PREFIX}{expiry_s}_{family_id}_{}", random_secret()),
    };
    (token, lifetime_s)
}

fn new_refresh_token(family_id: &str) -> String {
    refresh_token(family_id, &random_secret())
}

fn refresh_token(family_id: &str, secret: &str) -> String {
    format!("{REFRESH_PREFIX}{family_id}_{secret}")
}

/// Stores an access token the way password-login tokens are stored (hashed, in the tokens
/// bucket), plus its family, so revocation finds the chain.
async fn store_access_token(app: &App, hash: &str, user_id: &str, device_id: &str, family_id: &str) -> ApiResult<()> {
    let record = json!({ "user_id": user_id, "device_id": device_id, "session": family_id, "oauth_family": family_id });
    records::put_access_token(app, hash, &record).await
}

fn token_response(access: &str, expires_in: u64, refresh: &str, scope: &Scope, id_token: Option<String>) -> Value {
    let mut body = json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "refresh_token": refresh,
        "scope": scope.text,
    });
    if let Some(id_token) = id_token {
        body["id_token"] = json!(id_token);
    }
    body
}

/// What a grant established: who signed in, when, for what.
struct Completed<'a> {
    user_id: &'a str,
    scope: &'a Scope,
    auth_time_s: u64,
    nonce: Option<&'a str>,
}

/// The id_token of a token response, when the scope has `openid`.
async fn maybe_id_token(app: &App, client: &grants::Client, issuer: &str, done: &Completed<'_>, access: &str) -> ApiResult<Option<String>> {
    if !done.scope.openid {
        return Ok(None);
    }
    let facts = oidc::IdTokenFacts {
        issuer,
        client_id: &client.client_id,
        user_id: done.user_id,
        scope: done.scope,
        auth_time_s: done.auth_time_s,
        nonce: done.nonce,
        access_token: access,
        now_s: now_s(),
        lifetime_s: app.config.oauth.id_token_lifetime_s.max(1),
    };
    oidc::id_token(app, client, facts).await.map(Some)
}

/// Completes a grant: a new refresh-token family, an access token, the id_token when `openid`
/// was granted, and the device the scope allocated (created, or taken over from an earlier login
/// with the same device id). A sign-in to another service creates no device.
async fn start_family(
    app: &App,
    client: &grants::Client,
    done: Completed<'_>,
    family_id: &str,
    ip: Option<std::net::IpAddr>,
    issuer: &str,
) -> ApiResult<Value> {
    let (user_id, scope) = (done.user_id, done.scope);
    let (access, expires_in) = new_access_token(app, scope, family_id);
    // Signed before anything is written: a key set that cannot be read fails the grant cleanly.
    let id_token = maybe_id_token(app, client, issuer, &done, &access).await?;
    let access_hash = token_hash(&access);
    let refresh = new_refresh_token(family_id);
    let family = Family {
        user_id: user_id.to_string(),
        device_id: scope.device_id.clone(),
        client_id: client.client_id.clone(),
        scope: scope.clone(),
        auth_time_s: done.auth_time_s,
        created_ms: now_ms(),
        chain: Chain::new(token_hash(&refresh)),
        access: vec![access_hash.clone()],
        revoked: false,
    };
    records::create(app, Bucket::OauthSessions, family_id, &family).await?;
    let Some(device_id) = scope.device_id.clone() else {
        let entry = records::SigninEntry { client_id: client.client_id.clone(), client_name: client.display_name(), created_ms: now_ms() };
        records::put_signin(app, user_id, family_id, &entry).await?;
        tracing::info!(%user_id, client_id = %client.client_id, "OpenID Connect sign-in completed");
        return Ok(token_response(&access, expires_in, &refresh, scope, id_token));
    };
    store_access_token(app, &access_hash, user_id, &device_id, family_id).await?;
    let display_name = client.display_name();
    let now = now_ms();
    let mut replaced = None;
    records::modify_devices(app, user_id, |devices| -> Result<(), ()> {
            replaced = devices.get(&device_id).and_then(|old| old["token_hash"].as_str().map(str::to_string));
            let name = devices[&device_id]["display_name"].as_str().map(str::to_string).unwrap_or(display_name.clone());
            devices[&device_id] = json!({
                "display_name": name,
                "token_hash": access_hash,
                "session": family_id,
                "oauth_family": family_id,
                "oauth_client": client.client_id,
                "created_ts": now,
                "last_seen_ts": now,
                "last_seen_ip": ip.map(|ip| ip.to_string()),
            });
            Ok(())
        })
        .await?
        .ok();
    if let Some(old) = replaced.filter(|old| *old != access_hash) {
        account::revoke_tokens(app, user_id, vec![old]).await?;
    }
    tracing::info!(%user_id, %device_id, client_id = %client.client_id, "OAuth grant completed");
    Ok(token_response(&access, expires_in, &refresh, scope, id_token))
}

/// Whether the user's device still belongs to this family (a device deleted or logged out
/// through the Matrix API, or taken over by a newer login, ends the family).
async fn device_bound(app: &App, user_id: &str, device_id: &str, family_id: &str) -> ApiResult<bool> {
    let devices = account::load_devices(app, user_id).await?;
    Ok(devices[device_id]["oauth_family"].as_str() == Some(family_id))
}

async fn refresh_grant(app: &App, client: &grants::Client, form: &Form, issuer: &str) -> Result<Value, OauthError> {
    let presented = form.require("refresh_token")?;
    let invalid = || OauthError::from(Refusal::new("invalid_grant", "the refresh token is not valid"));
    let family_id = family_of_refresh(presented).ok_or_else(invalid)?.to_string();
    let Some((family, _)) = records::family(app, &family_id).await? else { return Err(invalid()) };
    if family.client_id != client.client_id || family.revoked {
        return Err(invalid());
    }
    if let Some(device_id) = &family.device_id
        && !device_bound(app, &family.user_id, device_id, &family_id).await?
    {
        revoke_family(app, &family_id).await?;
        return Err(Refusal::new("invalid_grant", "the session has ended").into());
    }
    let presented_hash = token_hash(presented);
    let grace_ms = app.config.oauth.refresh_grace_s.saturating_mul(1000);
    let (access, expires_in) = new_access_token(app, &family.scope, &family_id);
    let access_hash = token_hash(&access);
    // OpenID Connect Core 12.2: the same subject, audience and auth_time; no nonce.
    let done = Completed { user_id: &family.user_id, scope: &family.scope, auth_time_s: family.auth_time_s, nonce: None };
    let id_token = maybe_id_token(app, client, issuer, &done, &access).await?;
    let (outcome, replaced_access, refresh) = records::modify::<Family, _>(app, Bucket::OauthSessions, &family_id, |current| {
        let Some(mut family) = current else { return (None, (Outcome::Invalid, None, None)) };
        let now = now_ms();
        let outcome = family.outcome(&presented_hash, now, grace_ms);
        let refresh = family.chain.advance(outcome, presented, random_secret(), now, |secret| refresh_token(&family_id, secret));
        let Some(refresh) = refresh else {
            let revoked = outcome == Outcome::Reused && !family.revoked;
            family.revoked |= revoked;
            return (revoked.then_some(family), (outcome, None, None));
        };
        // A successor handed out again: the access token the client may hold stays valid.
        let replaced = if outcome == Outcome::Retry { None } else { family.access.last().cloned() };
        family.issued_access(access_hash.clone());
        (Some(family), (outcome, replaced, Some(refresh)))
    })
    .await?;
    match (outcome, refresh) {
        (Outcome::Reused, _) => {
            tracing::warn!(user_id = %family.user_id, device_id = ?family.device_id, "a spent refresh token was used again; the session is revoked");
            revoke_family(app, &family_id).await?;
            Err(Refusal::new("invalid_grant", "the refresh token was already used; the session is revoked").into())
        }
        (Outcome::Stale, _) => {
            tracing::info!(user_id = %family.user_id, device_id = ?family.device_id, "a refresh token replaced moments ago was presented again (a late copy of a request?); refused, the session stays");
            Err(invalid())
        }
        (_, None) => Err(invalid()),
        (_, Some(refresh)) => {
            // A sign-in without a device: the family's record is all there is to rotate.
            let Some(device_id) = family.device_id.clone() else {
                return Ok(token_response(&access, expires_in, &refresh, &family.scope, id_token));
            };
            store_access_token(app, &access_hash, &family.user_id, &device_id, &family_id).await?;
            let bound = records::modify_devices(app, &family.user_id, |devices| -> Result<(), ()> {
                    if devices[&device_id]["oauth_family"].as_str() != Some(family_id.as_str()) {
                        return Err(());
                    }
                    devices[&device_id]["token_hash"] = json!(access_hash);
                    devices[&device_id]["last_seen_ts"] = json!(now_ms());
                    Ok(())
                })
                .await?;
            if bound.is_err() {
                records::delete_access_token(app, &access_hash).await?;
                revoke_family(app, &family_id).await?;
                return Err(Refusal::new("invalid_grant", "the session has ended").into());
            }
            // The access token this one replaces stops working at nodes that have not cached
            // it; nodes that have refuse it once it expires (at most one lifetime later).
            if let Some(old) = replaced_access.filter(|old| *old != access_hash) {
                records::delete_access_token(app, &old).await?;
            }
            Ok(token_response(&access, expires_in, &refresh, &family.scope, id_token))
        }
    }
}

/// The session an access token belongs to, if the token is an OAuth one that is valid now: a
/// sign-in token that is its family's newest, or a Matrix token still in the tokens bucket.
pub async fn family_of_access(app: &App, token: &str) -> ApiResult<Option<Family>> {
    let hash = token_hash(token);
    let family_id = if let Some((expiry_s, family_id)) = parse_signin_token(token) {
        if now_s() >= expiry_s {
            return Ok(None);
        }
        family_id.to_string()
    } else if token.starts_with(ACCESS_PREFIX) && !access_token_expired(token) {
        let Some(record) = records::access_token_record(app, &hash).await? else { return Ok(None) };
        let Some(family_id) = record["oauth_family"].as_str() else { return Ok(None) };
        family_id.to_string()
    } else {
        return Ok(None);
    };
    let Some((family, _)) = records::family(app, &family_id).await? else { return Ok(None) };
    let newest = family.access.last().is_some_and(|last| grants::constant_time_eq(last.as_bytes(), hash.as_bytes()));
    Ok((newest && !family.revoked).then_some(family))
}

/// Ends a family: marks it revoked, deletes its device (if the device is still its own), and
/// revokes every access token it issued lately on every node. Idempotent.
pub async fn revoke_family(app: &App, family_id: &str) -> ApiResult<()> {
    let family = records::modify::<Family, Option<Family>>(app, Bucket::OauthSessions, family_id, |current| match current {
        Some(mut family) => {
            let was = family.revoked;
            family.revoked = true;
            let snapshot = Some(family.clone());
            (if was { None } else { Some(family) }, snapshot)
        }
        None => (None, None),
    })
    .await?;
    let Some(family) = family else { return Ok(()) };
    match &family.device_id {
        Some(device_id) => {
            if device_bound(app, &family.user_id, device_id, family_id).await? {
                account::remove_devices(app, &family.user_id, Some(std::slice::from_ref(device_id)), None).await?;
            }
            account::revoke_tokens(app, &family.user_id, family.access.clone()).await?;
        }
        None => records::delete_signin(app, &family.user_id, family_id).await?,
    }
    tracing::info!(user_id = %family.user_id, device_id = ?family.device_id, "OAuth session revoked");
    Ok(())
}

/// # POST /oauth2/revoke
pub async fn revoke(State(app): State<AppState>, request: Request) -> Result<Response, OauthError> {
    let (parts, body) = request.into_parts();
    limit(&app, client_ip(&parts))?;
    let form = Form::read(Request::from_parts(parts, body)).await?;
    let token = form.require("token")?;
    if let Some(hint) = form.get("token_type_hint")
        && !["access_token", "refresh_token"].contains(&hint)
    {
        return Err(OauthError::bad_request("unsupported_token_type", "token_type_hint must be access_token or refresh_token"));
    }
    // Whoever holds a token may revoke it, whichever client_id they name (the spec asks so, for
    // secret scanners); an unknown or already revoked token is answered 200 as well.
    if let Some(family_id) = family_of_refresh(token) {
        if let Some((family, _)) = records::family(&app, family_id).await? {
            let hash = token_hash(token);
            if family.chain.knows(&hash) {
                revoke_family(&app, family_id).await?;
            }
        }
    } else if let Some((_, family_id)) = parse_signin_token(token) {
        if let Some((family, _)) = records::family(&app, family_id).await?
            && family.access.contains(&token_hash(token))
        {
            revoke_family(&app, family_id).await?;
        }
    } else if let Some(record) = records::access_token_record(&app, &token_hash(token)).await? {
        if let Some(family_id) = record["oauth_family"].as_str() {
            revoke_family(&app, family_id).await?;
        } else if let (Some(user_id), Some(device_id)) = (record["user_id"].as_str(), record["device_id"].as_str()) {
            // A password-login token: revoking it logs its device out, as /logout would.
            account::remove_devices(&app, user_id, Some(&[device_id.to_string()]), None).await?;
        }
    }
    Ok(json_no_store(StatusCode::OK, json!({})))
}

/// # POST /oauth2/device_authorization
pub async fn device_authorization(State(app): State<AppState>, request: Request) -> Result<Response, OauthError> {
    let (parts, body) = request.into_parts();
    limit(&app, client_ip(&parts))?;
    let form = Form::read(Request::from_parts(parts.clone(), body)).await?;
    let client = authenticated_client(&app, &parts.headers, &form).await?;
    if !client.allows_grant(grants::GRANT_DEVICE) {
        return Err(OauthError::bad_request("unauthorized_client", "the client did not register the device code grant"));
    }
    let scope = grants::parse_scope(form.require("scope")?)?;
    let device_code = random_secret();
    let key = records::device_key(&device_code);
    let lifetime_s = app.config.oauth.device_code_lifetime_s;
    let mut user_code = grants::new_user_code();
    let mut attempts = 0;
    loop {
        match records::create(&app, Bucket::OauthGrants, &records::user_code_key(&user_code), &json!({ "device": key })).await {
            Ok(_) => break,
            Err(haetae_store::KvError::Exists) if attempts < 8 => {
                attempts += 1;
                user_code = grants::new_user_code();
            }
            Err(other) => return Err(other.into()),
        }
    }
    let grant = DeviceGrant {
        client_id: client.client_id.clone(),
        scope,
        user_code: user_code.clone(),
        expires_ms: now_ms() + lifetime_s * 1000,
        last_poll_ms: 0,
        state: DeviceState::Pending,
    };
    records::create(&app, Bucket::OauthGrants, &key, &grant).await?;
    let base = base_url(&app, &parts.headers);
    let verification_uri = format!("{base}/device");
    let complete = format!("{verification_uri}?{}", serde_urlencoded::to_string([("user_code", &user_code)]).unwrap_or_default());
    Ok(json_no_store(
        StatusCode::OK,
        json!({
            "device_code": device_code,
            "user_code": user_code,
            "verification_uri": verification_uri,
            "verification_uri_complete": complete,
            "expires_in": lifetime_s,
            "interval": app.config.oauth.device_poll_interval_s,
        }),
    ))
}

async fn device_code_grant(app: &App, client: &grants::Client, form: &Form, ip: Option<std::net::IpAddr>, issuer: &str) -> Result<Value, OauthError> {
    let device_code = form.require("device_code")?;
    let key = records::device_key(device_code);
    let Some((grant, revision)) = records::device_grant(app, &key).await? else {
        return Err(Refusal::new("invalid_grant", "unknown device code").into());
    };
    let now = now_ms();
    let interval_ms = app.config.oauth.device_poll_interval_s * 1000;
    match grants::device_poll(&grant, &client.client_id, now, interval_ms) {
        Ok((user_id, auth_time_s)) => {
            let family_id = crate::services::rooms::random_string(FAMILY_ID_CHARS);
            let used = DeviceGrant { state: DeviceState::Used { session: family_id.clone() }, ..grant.clone() };
            if !records::replace(app, Bucket::OauthGrants, &key, &used, revision).await? {
                return Err(Refusal::new("invalid_grant", "the device code was already used").into());
            }
            let done = Completed { user_id: &user_id, scope: &grant.scope, auth_time_s, nonce: None };
            Ok(start_family(app, client, done, &family_id, ip, issuer).await?)
        }
        Err(refusal) => {
            if matches!(refusal.error, "authorization_pending" | "slow_down") {
                // Losing this race to another poll is fine: either write records the poll.
                let polled = DeviceGrant { last_poll_ms: now, ..grant };
                let _ = records::replace(app, Bucket::OauthGrants, &key, &polled, revision).await;
            }
            Err(refusal.into())
        }
    }
}

/// Approves or denies a pending device authorization (from the `/device` page).
pub async fn answer_device(app: &App, user_code: &str, approve: Option<(String, u64)>) -> ApiResult<Result<DeviceGrant, &'static str>> {
    let Some((pointer, _)) = records::read::<Value>(app, Bucket::OauthGrants, &records::user_code_key(user_code)).await? else {
        return Ok(Err("That code is not valid. Check it and try again."));
    };
    let Some(key) = pointer["device"].as_str() else { return Ok(Err("That code is not valid.")) };
    let now = now_ms();
    records::modify::<DeviceGrant, Result<DeviceGrant, &'static str>>(app, Bucket::OauthGrants, key, |current| {
        let Some(mut grant) = current else { return (None, Err("That code is not valid.")) };
        if grant.expires_ms <= now {
            return (None, Err("That code has expired. Start again on your device."));
        }
        if grant.state != DeviceState::Pending {
            return (None, Err("That code was already used."));
        }
        grant.state = match &approve {
            Some((user_id, auth_time_s)) => DeviceState::Approved { user_id: user_id.clone(), auth_time_s: *auth_time_s },
            None => DeviceState::Denied,
        };
        (Some(grant.clone()), Ok(grant))
    })
    .await
}

/// Looks a pending device authorization up by user code, for the confirmation page.
pub async fn pending_device(app: &App, user_code: &str) -> ApiResult<Option<DeviceGrant>> {
    let Some((pointer, _)) = records::read::<Value>(app, Bucket::OauthGrants, &records::user_code_key(user_code)).await? else {
        return Ok(None);
    };
    let Some(key) = pointer["device"].as_str() else { return Ok(None) };
    let grant = records::device_grant(app, key).await?.map(|(g, _)| g);
    Ok(grant.filter(|g| g.state == DeviceState::Pending && g.expires_ms > now_ms()))
}

/// Issues an authorization code for a consented request; returns the code.
pub async fn issue_code(app: &App, grant: &CodeGrant) -> ApiResult<String> {
    let code = random_secret();
    records::create(app, Bucket::OauthGrants, &records::code_key(&code), grant).await.map_err(MatrixError::from)?;
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_tokens_carry_their_expiry() {
        assert!(!access_token_expired("hae_passwordlogin"));
        assert!(access_token_expired(&format!("{ACCESS_PREFIX}{}_abc", now_s() - 1)));
        assert!(!access_token_expired(&format!("{ACCESS_PREFIX}{}_abc", now_s() + 60)));
        assert!(access_token_expired(&format!("{ACCESS_PREFIX}garbage")));
    }

    #[test]
    fn sign_in_tokens_name_their_expiry_and_family() {
        let family = crate::services::rooms::random_string(FAMILY_ID_CHARS);
        let token = format!("{SIGNIN_PREFIX}{}_{family}_{}", now_s() + 60, random_secret());
        assert_eq!(parse_signin_token(&token).map(|(_, f)| f), Some(family.as_str()));
        assert_eq!(parse_signin_token(&format!("{SIGNIN_PREFIX}x_{family}_y")), None);
        assert_eq!(parse_signin_token(&format!("{SIGNIN_PREFIX}1_short_y")), None);
        // A sign-in token is not a Matrix access token: it never counts as one that expired.
        assert!(!access_token_expired(&token));
    }

    #[test]
    fn refresh_tokens_name_their_family() {
        let family = crate::services::rooms::random_string(FAMILY_ID_CHARS);
        let token = new_refresh_token(&family);
        assert_eq!(family_of_refresh(&token), Some(family.as_str()));
        assert_eq!(family_of_refresh("haer_short_x"), None);
        assert_eq!(family_of_refresh("hae_whatever"), None);
        assert_eq!(family_of_refresh(&format!("haer_{}", "a".repeat(FAMILY_ID_CHARS))), None);
    }
}
