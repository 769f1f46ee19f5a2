//! Where the login provider's state lives: replicated KV buckets, read from their leaders, written
//! with create-if-absent or compare-and-set. Nothing here is held in one node's memory, so a flow
//! started at one node (in one DC) is finished by whichever node the next request reaches.
//!
//! - `OauthClients`: client id -> [`Client`].
//! - `OauthGrants` (JetStream drops records after a day): `code:<hash>` -> [`CodeGrant`],
//!   `device:<hash>` -> [`DeviceGrant`], `user:<user code>` -> the device code's hash,
//!   `web:<hash>` -> [`BrowserSession`].
//! - `OauthSessions`: family id -> [`Family`] (refresh-token chains); `signins.<user>.<family>`
//!   -> [`SigninEntry`], the sign-ins to other services a person sees on the account page.
//! - `Meta`: `oauth_secret`, the deployment-wide key that signs CSRF tokens.
//!
//! Codes, tokens and cookies are stored only as SHA-256 hashes. This module is the OAuth
//! provider's only door to the store: the provider's pages and endpoints (`crate::oauth`) reach
//! its buckets, access tokens and devices through these functions.

use base64::Engine;
use haetae_store::{Bucket, KvError};
use rand::Rng;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{App, token_hash};
use crate::error::{ApiResult, MatrixError};
use crate::oauth::grants::{Client, CodeGrant, DeviceGrant, Family};

/// A sign-in on the login pages (the `haetae_login` cookie's record).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BrowserSession {
    pub user_id: String,
    pub auth_time_s: u64,
    pub expires_ms: u64,
}

/// A sign-in to another service (a family without a device), as the account page lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SigninEntry {
    pub client_id: String,
    pub client_name: String,
    pub created_ms: u64,
}

/// Most sign-ins to other services the account page lists for one person.
pub const MAX_SIGNINS_LISTED: usize = 500;

pub fn signin_key(user_id: &str, family_id: &str) -> haetae_store::kv::KeyPath {
    haetae_store::kv::KeyPath::new(&["signins", user_id, family_id])
}

/// The person's sign-ins to other services: (family id, entry), newest first.
pub async fn signins(app: &App, user_id: &str) -> ApiResult<Vec<(String, SigninEntry)>> {
    let prefix = haetae_store::kv::KeyPath::new(&["signins", user_id]);
    let listing = app.store.kv().list(Bucket::OauthSessions, &prefix, MAX_SIGNINS_LISTED, true).await?;
    let mut entries: Vec<(String, SigninEntry)> = listing
        .entries
        .into_iter()
        .filter_map(|(segments, stored)| {
            let family = segments.first()?.clone();
            Some((family, serde_json::from_slice(&stored.value).ok()?))
        })
        .collect();
    entries.sort_by_key(|entry| std::cmp::Reverse(entry.1.created_ms));
    Ok(entries)
}

/// Lists a sign-in to another service under its person.
pub async fn put_signin(app: &App, user_id: &str, family_id: &str, entry: &SigninEntry) -> ApiResult<()> {
    app.store.kv().put(Bucket::OauthSessions, &signin_key(user_id, family_id), to_bytes(entry)).await?;
    Ok(())
}

/// Whether a sign-in is listed under this person (so theirs to end).
pub async fn signin_listed(app: &App, user_id: &str, family_id: &str) -> ApiResult<bool> {
    if family_id.is_empty() || family_id.len() > 64 {
        return Ok(false);
    }
    Ok(app.store.kv().get(Bucket::OauthSessions, &signin_key(user_id, family_id)).await?.is_some())
}

pub async fn delete_signin(app: &App, user_id: &str, family_id: &str) -> ApiResult<()> {
    app.store.kv().delete(Bucket::OauthSessions, &signin_key(user_id, family_id)).await?;
    Ok(())
}

/// The id_token signing key set's record in `Meta` (see `crate::oauth::keys`).
const SIGNING_KEYS_KEY: &str = "oidc_signing_keys";

/// The signing key set as stored, with its revision; None before the first key.
pub async fn signing_key_set(app: &App) -> ApiResult<Option<(bytes::Bytes, u64)>> {
    Ok(app.store.kv().get(Bucket::Meta, SIGNING_KEYS_KEY).await?.map(|stored| (stored.value, stored.revision)))
}

/// Writes the signing key set if nobody changed it since `revision` (None: if it is still
/// absent). Ok(false) when another node wrote first.
pub async fn write_signing_key_set(app: &App, value: bytes::Bytes, revision: Option<u64>) -> ApiResult<bool> {
    let written = match revision {
        None => app.store.kv().create(Bucket::Meta, SIGNING_KEYS_KEY, value).await,
        Some(revision) => app.store.kv().update(Bucket::Meta, SIGNING_KEYS_KEY, value, revision).await,
    };
    match written {
        Ok(_) => Ok(true),
        Err(KvError::Exists | KvError::WrongRevision(_)) => Ok(false),
        Err(other) => Err(other.into()),
    }
}

/// A user's display name as this node knows it (for OpenID Connect profile claims).
pub fn display_name(app: &App, user_id: &str) -> Option<String> {
    app.model.with_user(user_id, |u| u.displayname.clone())
}

/// 256 random bits, base64url.
pub fn random_secret() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn to_bytes<T: Serialize>(value: &T) -> bytes::Bytes {
    serde_json::to_vec(value).unwrap_or_default().into()
}

/// Reads and decodes a record; an undecodable one reads as absent.
pub async fn read<T: DeserializeOwned>(app: &App, bucket: Bucket, key: &str) -> ApiResult<Option<(T, u64)>> {
    let Some(stored) = app.store.kv().get(bucket, key).await? else {
        return Ok(None);
    };
    Ok(serde_json::from_slice(&stored.value).ok().map(|value| (value, stored.revision)))
}

pub async fn create<T: Serialize>(app: &App, bucket: Bucket, key: &str, value: &T) -> Result<u64, KvError> {
    app.store.kv().create(bucket, key, to_bytes(value)).await
}

/// Replaces a record only if it is still at `revision`: Ok(false) when someone else changed it.
pub async fn replace<T: Serialize>(app: &App, bucket: Bucket, key: &str, value: &T, revision: u64) -> ApiResult<bool> {
    match app.store.kv().update(bucket, key, to_bytes(value), revision).await {
        Ok(_) => Ok(true),
        Err(KvError::WrongRevision(_)) => Ok(false),
        Err(other) => Err(other.into()),
    }
}

/// Read-modify-write of a JSON record with compare-and-set, retried on races. `change` returns
/// what to answer and whether to write.
pub async fn modify<T, R>(
    app: &App,
    bucket: Bucket,
    key: &str,
    mut change: impl FnMut(Option<T>) -> (Option<T>, R),
) -> ApiResult<R>
where
    T: Serialize + DeserializeOwned,
{
    let mut answer = None;
    let outcome = app
        .store
        .kv()
        .modify(bucket, key, |current| -> Result<Option<bytes::Bytes>, ()> {
            let current: Option<T> = current.and_then(|c| serde_json::from_slice(c).ok());
            let (next, result) = change(current);
            answer = Some(result);
            Ok(next.map(|n| to_bytes(&n)))
        })
        .await?;
    let _ = outcome;
    answer.ok_or_else(|| MatrixError::unavailable("no answer from a compare-and-set"))
}

pub fn code_key(code: &str) -> String {
    format!("code:{}", token_hash(code))
}

pub fn device_key(device_code: &str) -> String {
    format!("device:{}", token_hash(device_code))
}

pub fn user_code_key(user_code: &str) -> String {
    format!("user:{user_code}")
}

pub fn browser_key(cookie: &str) -> String {
    format!("web:{}", token_hash(cookie))
}

pub async fn client(app: &App, client_id: &str) -> ApiResult<Option<Client>> {
    if client_id.is_empty() || client_id.len() > 64 {
        return Ok(None);
    }
    Ok(read::<Client>(app, Bucket::OauthClients, client_id).await?.map(|(c, _)| c))
}

/// Stores a registration; identical registrations have the same id, so an existing one is fine.
pub async fn save_client(app: &App, client: &Client) -> ApiResult<()> {
    match create(app, Bucket::OauthClients, &client.client_id, client).await {
        Ok(_) | Err(KvError::Exists) => Ok(()),
        Err(other) => Err(other.into()),
    }
}

pub async fn code(app: &App, code: &str) -> ApiResult<Option<(CodeGrant, u64)>> {
    read(app, Bucket::OauthGrants, &code_key(code)).await
}

pub async fn device_grant(app: &App, key: &str) -> ApiResult<Option<(DeviceGrant, u64)>> {
    read(app, Bucket::OauthGrants, key).await
}

pub async fn family(app: &App, id: &str) -> ApiResult<Option<(Family, u64)>> {
    if id.is_empty() || id.len() > 64 {
        return Ok(None);
    }
    read(app, Bucket::OauthSessions, id).await
}

pub async fn browser_session(app: &App, cookie: &str, now_ms: u64) -> ApiResult<Option<BrowserSession>> {
    if cookie.len() != 43 {
        return Ok(None);
    }
    let session = read::<BrowserSession>(app, Bucket::OauthGrants, &browser_key(cookie)).await?;
    Ok(session.map(|(s, _)| s).filter(|s| s.expires_ms > now_ms))
}

/// The deployment-wide secret that signs CSRF tokens: created once by whichever node needs it
/// first (create-if-absent), then read by every node.
pub async fn signing_secret(app: &App) -> ApiResult<Vec<u8>> {
    const KEY: &str = "oauth_secret";
    let decode = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(bytes).ok().filter(|k| k.len() == 32);
    if let Some(stored) = app.store.kv().get(Bucket::Meta, KEY).await?
        && let Some(key) = decode(&stored.value)
    {
        return Ok(key);
    }
    let fresh = random_secret();
    match app.store.kv().create(Bucket::Meta, KEY, fresh.clone().into_bytes().into()).await {
        Ok(_) => Ok(decode(fresh.as_bytes()).unwrap_or_default()),
        Err(KvError::Exists) => {
            let stored = app.store.kv().get(Bucket::Meta, KEY).await?;
            stored.and_then(|s| decode(&s.value)).ok_or_else(|| MatrixError::unavailable("the login secret is unreadable"))
        }
        Err(other) => Err(other.into()),
    }
}

/// Deletes a record of the provider's buckets.
pub async fn delete(app: &App, bucket: Bucket, key: &str) -> ApiResult<()> {
    app.store.kv().delete(bucket, key).await?;
    Ok(())
}

/// Stores an access token's record (hashed) in the tokens bucket, where every Matrix endpoint
/// looks tokens up.
pub async fn put_access_token(app: &App, hash: &str, record: &serde_json::Value) -> ApiResult<()> {
    app.store.kv().put(Bucket::Tokens, hash, to_bytes(record)).await?;
    Ok(())
}

/// Removes an access token from the tokens bucket.
pub async fn delete_access_token(app: &App, hash: &str) -> ApiResult<()> {
    app.store.kv().delete(Bucket::Tokens, hash).await?;
    Ok(())
}

/// An access token's record, if it exists.
pub async fn access_token_record(app: &App, hash: &str) -> ApiResult<Option<serde_json::Value>> {
    Ok(app.store.kv().get(Bucket::Tokens, hash).await?.map(|stored| serde_json::from_slice(&stored.value).unwrap_or_default()))
}

/// Read-modify-write of a user's devices record (device id -> details), with compare-and-set.
/// `change` edits the record in place, or refuses (nothing written) with Err.
pub async fn modify_devices<E>(
    app: &App,
    user_id: &str,
    mut change: impl FnMut(&mut serde_json::Value) -> Result<(), E>,
) -> ApiResult<Result<(), E>> {
    Ok(app
        .store
        .kv()
        .modify(Bucket::Devices, user_id, |current| {
            let mut devices: serde_json::Value =
                current.and_then(|c| serde_json::from_slice(c).ok()).unwrap_or_else(|| serde_json::json!({}));
            change(&mut devices)?;
            Ok(Some(to_bytes(&devices)))
        })
        .await?
        .map(|_| ()))
}
