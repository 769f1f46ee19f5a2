//! Server-side key backup: a user's encrypted room keys, kept so that losing every device does
//! not lose encrypted history. The server stores opaque `session_data`; it never decrypts.
//!
//! Everything lives in the replicated `RoomKeys` bucket, so a backup written through one DC is
//! there after that DC burns: one record per user naming their versions (key: the user id), and
//! one record per backed-up session (key path: user, version, room, session), replaced only by a
//! better key (compare-and-set). `count` and `etag` are read from the bucket itself (the number of
//! live sessions under the version, and the highest revision written under it), so they are exact
//! whichever node wrote what. Version numbers only grow: a deleted version's number is never
//! reused, so a slow upload to a version deleted meanwhile cannot leak into a new one.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use futures::StreamExt;
use haetae_store::Bucket;
use haetae_store::kv::{KeyPath, KvError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{App, Caller};
use crate::error::{ApiResult, MatrixError};

/// Sessions one backup version may hold (a listing reads at most this many).
const MAX_SESSIONS_PER_BACKUP: usize = 100_000;
/// Live backup versions per user.
const MAX_VERSIONS: usize = 32;
/// Session writes in flight for one upload.
const WRITES_IN_FLIGHT: usize = 16;
/// Longest room or session id in a path, bytes.
const MAX_ID_BYTES: usize = 255;

/// A user's backup versions (key: the user id).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Versions {
    /// The highest version number ever created (never reused).
    last: u64,
    /// Live versions by number.
    versions: BTreeMap<u64, VersionInfo>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VersionInfo {
    algorithm: String,
    auth_data: Value,
}

impl Versions {
    fn current(&self) -> Option<u64> {
        self.versions.keys().next_back().copied()
    }
}

fn session_path(user_id: &str, version: u64, room_id: &str, session_id: &str) -> KeyPath {
    KeyPath::new(&[user_id, &version.to_string(), room_id, session_id])
}

fn to_bytes<T: Serialize>(value: &T) -> bytes::Bytes {
    serde_json::to_vec(value).unwrap_or_default().into()
}

fn kv_error(error: KvError) -> MatrixError {
    match error {
        KvError::TooMany(max) => MatrixError::too_large(format!("a backup holds at most {max} sessions")),
        other => MatrixError::unavailable(other),
    }
}

async fn load_versions(app: &App, user_id: &str) -> ApiResult<Versions> {
    Ok(app
        .store
        .kv()
        .get(Bucket::RoomKeys, user_id)
        .await?
        .and_then(|v| serde_json::from_slice(&v.value).ok())
        .unwrap_or_default())
}

fn no_backup() -> MatrixError {
    MatrixError::not_found("No such backup version")
}

/// A version named in a path or query, which must exist.
async fn existing_version(app: &App, user_id: &str, version: &str) -> ApiResult<(u64, VersionInfo)> {
    let number: u64 = version.parse().map_err(|_| no_backup())?;
    let versions = load_versions(app, user_id).await?;
    versions.versions.get(&number).cloned().map(|info| (number, info)).ok_or_else(no_backup)
}

/// The version keys are written to: it must exist and be the current one.
async fn writable_version(app: &App, user_id: &str, version: &str) -> ApiResult<u64> {
    let versions = load_versions(app, user_id).await?;
    let current = versions.current().ok_or_else(no_backup)?;
    match version.parse::<u64>() {
        Ok(number) if number == current => Ok(number),
        _ => Err(MatrixError::new(StatusCode::FORBIDDEN, "M_WRONG_ROOM_KEYS_VERSION", "Wrong backup version")
            .with_extra(json!({ "current_version": current.to_string() }))),
    }
}

/// The spec's `count` and `etag` of a version, read from the bucket.
async fn stats(app: &App, user_id: &str, version: u64) -> ApiResult<(usize, String)> {
    let prefix = KeyPath::new(&[user_id, &version.to_string()]);
    let listing = app.store.kv().list(Bucket::RoomKeys, &prefix, MAX_SESSIONS_PER_BACKUP, false).await.map_err(kv_error)?;
    Ok((listing.entries.len(), listing.last_revision.to_string()))
}

// ---- versions ----

#[derive(Deserialize)]
pub struct VersionBody {
    algorithm: String,
    auth_data: Map<String, Value>,
    version: Option<String>,
}

/// The one backup algorithm the spec defines (and the only value its schemas allow).
const BACKUP_ALGORITHM: &str = "m.megolm_backup.v1.curve25519-aes-sha2";

fn check_algorithm(algorithm: &str) -> ApiResult<()> {
    if algorithm != BACKUP_ALGORITHM {
        return Err(MatrixError::invalid_param(format!("unknown backup algorithm; the one supported is {BACKUP_ALGORITHM}")));
    }
    Ok(())
}

pub async fn create_version(app: &App, caller: &Caller, body: VersionBody) -> ApiResult<Value> {
    app.limit_writes(&caller.user_id)?;
    check_algorithm(&body.algorithm)?;
    let info = VersionInfo { algorithm: body.algorithm, auth_data: Value::Object(body.auth_data) };
    let mut created = 0;
    let outcome = app
        .store
        .kv()
        .modify(Bucket::RoomKeys, &caller.user_id, |current| {
            let mut versions: Versions = current.and_then(|c| serde_json::from_slice(c).ok()).unwrap_or_default();
            if versions.versions.len() >= MAX_VERSIONS {
                return Err(MatrixError::invalid_param(format!("at most {MAX_VERSIONS} backup versions; delete one first")));
            }
            versions.last += 1;
            created = versions.last;
            versions.versions.insert(created, info.clone());
            Ok(Some(to_bytes(&versions)))
        })
        .await?;
    outcome?;
    Ok(json!({ "version": created.to_string() }))
}

async fn version_answer(app: &App, user_id: &str, number: u64, info: VersionInfo) -> ApiResult<Value> {
    let (count, etag) = stats(app, user_id, number).await?;
    Ok(json!({
        "version": number.to_string(),
        "algorithm": info.algorithm,
        "auth_data": info.auth_data,
        "count": count,
        "etag": etag,
    }))
}

pub async fn get_latest_version(app: &App, caller: &Caller) -> ApiResult<Value> {
    let versions = load_versions(app, &caller.user_id).await?;
    let current = versions.current().ok_or_else(|| MatrixError::not_found("No current backup version"))?;
    let info = versions.versions[&current].clone();
    version_answer(app, &caller.user_id, current, info).await
}

pub async fn get_version(app: &App, caller: &Caller, version: String) -> ApiResult<Value> {
    let (number, info) = existing_version(app, &caller.user_id, &version).await?;
    version_answer(app, &caller.user_id, number, info).await
}

pub async fn update_version(app: &App, caller: &Caller, version: String, body: VersionBody) -> ApiResult<Value> {
    app.limit_writes(&caller.user_id)?;
    if body.version.as_ref().is_some_and(|v| *v != version) {
        return Err(MatrixError::invalid_param("the version in the body differs from the one in the path"));
    }
    let number: u64 = version.parse().map_err(|_| no_backup())?;
    let auth_data = Value::Object(body.auth_data);
    let outcome = app
        .store
        .kv()
        .modify(Bucket::RoomKeys, &caller.user_id, |current| {
            let mut versions: Versions = current.and_then(|c| serde_json::from_slice(c).ok()).unwrap_or_default();
            let Some(info) = versions.versions.get_mut(&number) else {
                return Err(no_backup());
            };
            if info.algorithm != body.algorithm {
                return Err(MatrixError::invalid_param("a backup's algorithm cannot change"));
            }
            info.auth_data = auth_data.clone();
            Ok(Some(to_bytes(&versions)))
        })
        .await?;
    outcome?;
    Ok(json!({}))
}

pub async fn delete_version(app: &App, caller: &Caller, version: String) -> ApiResult<Value> {
    let number: u64 = version.parse().map_err(|_| no_backup())?;
    let outcome = app
        .store
        .kv()
        .modify(Bucket::RoomKeys, &caller.user_id, |current| {
            let mut versions: Versions = current.and_then(|c| serde_json::from_slice(c).ok()).unwrap_or_default();
            if versions.versions.remove(&number).is_none() {
                return Err(no_backup());
            }
            Ok(Some(to_bytes(&versions)))
        })
        .await?;
    outcome?;
    // The version is gone (no reader or writer accepts it any more); its sessions go after it.
    delete_sessions(app, &caller.user_id, number, None).await?;
    Ok(json!({}))
}

// ---- keys ----

#[derive(Deserialize)]
pub struct VersionQuery {
    version: Option<String>,
}

impl VersionQuery {
    fn version(&self) -> ApiResult<&str> {
        self.version.as_deref().ok_or_else(|| MatrixError::missing_param("version is required"))
    }
}

/// One backed-up session key, as the spec shapes it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct KeyBackupData {
    first_message_index: u64,
    forwarded_count: u64,
    is_verified: bool,
    session_data: Map<String, Value>,
}

impl KeyBackupData {
    fn parse(value: &Value) -> ApiResult<KeyBackupData> {
        serde_json::from_value(value.clone()).map_err(|e| MatrixError::bad_json(format!("key backup data: {e}")))
    }

    /// Whether `self` should replace `stored` (the spec's order: verified, then lower first
    /// message index, then lower forwarded count).
    fn better_than(&self, stored: &KeyBackupData) -> bool {
        if self.is_verified != stored.is_verified {
            return self.is_verified;
        }
        if self.first_message_index != stored.first_message_index {
            return self.first_message_index < stored.first_message_index;
        }
        self.forwarded_count < stored.forwarded_count
    }
}

fn check_id(what: &str, id: &str) -> ApiResult<()> {
    if id.is_empty() || id.len() > MAX_ID_BYTES {
        return Err(MatrixError::invalid_param(format!("{what} must be 1 to {MAX_ID_BYTES} bytes")));
    }
    Ok(())
}

fn check_room(room_id: &str) -> ApiResult<()> {
    if !haetae_matrix::ids::is_valid_room_id(room_id) {
        return Err(MatrixError::invalid_param("not a room id"));
    }
    check_id("room id", room_id)
}

/// Parses `{roomId: {sessions: {sessionId: KeyBackupData}}}` (all checked before anything is
/// stored) into (room, session, key) triples.
fn parse_rooms(rooms: &Map<String, Value>) -> ApiResult<Vec<(String, String, KeyBackupData)>> {
    let mut keys = Vec::new();
    for (room_id, room) in rooms {
        check_room(room_id)?;
        let sessions =
            room.get("sessions").and_then(Value::as_object).ok_or_else(|| MatrixError::bad_json("sessions must be an object"))?;
        keys.extend(parse_sessions(room_id, sessions)?);
    }
    Ok(keys)
}

fn parse_sessions(room_id: &str, sessions: &Map<String, Value>) -> ApiResult<Vec<(String, String, KeyBackupData)>> {
    let mut keys = Vec::new();
    for (session_id, data) in sessions {
        check_id("session id", session_id)?;
        keys.push((room_id.to_string(), session_id.clone(), KeyBackupData::parse(data)?));
    }
    Ok(keys)
}

/// Stores keys into `version` (each replaced only by a better key) and answers count and etag.
async fn store_keys(app: &App, caller: &Caller, version: &str, keys: Vec<(String, String, KeyBackupData)>) -> ApiResult<Value> {
    app.limit_writes(&caller.user_id)?;
    let number = writable_version(app, &caller.user_id, version).await?;
    let (count, _) = stats(app, &caller.user_id, number).await?;
    if count + keys.len() > MAX_SESSIONS_PER_BACKUP {
        return Err(MatrixError::too_large(format!("a backup holds at most {MAX_SESSIONS_PER_BACKUP} sessions")));
    }
    let user_id = caller.user_id.as_str();
    let writes = futures::stream::iter(keys.into_iter().map(|(room_id, session_id, data)| async move {
        let path = session_path(user_id, number, &room_id, &session_id);
        app.store
            .kv()
            .modify(Bucket::RoomKeys, &path, |current| -> Result<Option<bytes::Bytes>, ()> {
                let stored = current.and_then(|c| serde_json::from_slice::<KeyBackupData>(c).ok());
                match stored {
                    Some(stored) if !data.better_than(&stored) => Ok(None),
                    _ => Ok(Some(to_bytes(&data))),
                }
            })
            .await
    }));
    let results: Vec<_> = writes.buffer_unordered(WRITES_IN_FLIGHT).collect().await;
    for result in results {
        result?.ok();
    }
    let (count, etag) = stats(app, &caller.user_id, number).await?;
    Ok(json!({ "count": count, "etag": etag }))
}

/// Deletes the sessions of `version` (those of `room_id` only, when given).
async fn delete_sessions(app: &App, user_id: &str, version: u64, room_id: Option<&str>) -> ApiResult<()> {
    let mut prefix = vec![user_id.to_string(), version.to_string()];
    prefix.extend(room_id.map(str::to_string));
    let prefix = KeyPath(prefix);
    let listing = app.store.kv().list(Bucket::RoomKeys, &prefix, MAX_SESSIONS_PER_BACKUP, false).await.map_err(kv_error)?;
    let deletes = futures::stream::iter(listing.entries.into_iter().map(|(rest, _)| {
        let mut path = prefix.0.clone();
        path.extend(rest);
        async move { app.store.kv().delete(Bucket::RoomKeys, &KeyPath(path)).await }
    }));
    let results: Vec<_> = deletes.buffer_unordered(WRITES_IN_FLIGHT).collect().await;
    for result in results {
        result?;
    }
    Ok(())
}

/// Reads the sessions of `version` as `{roomId: {sessions: {sessionId: data}}}`.
async fn read_sessions(app: &App, user_id: &str, version: u64, room_id: Option<&str>) -> ApiResult<Map<String, Value>> {
    let mut prefix = vec![user_id.to_string(), version.to_string()];
    prefix.extend(room_id.map(str::to_string));
    let listing =
        app.store.kv().list(Bucket::RoomKeys, &KeyPath(prefix), MAX_SESSIONS_PER_BACKUP, true).await.map_err(kv_error)?;
    let mut rooms = Map::new();
    for (rest, stored) in listing.entries {
        let (room, session) = match (room_id, rest.as_slice()) {
            (Some(room), [session]) => (room.to_string(), session.clone()),
            (None, [room, session]) => (room.clone(), session.clone()),
            _ => continue,
        };
        let Ok(data) = serde_json::from_slice::<Value>(&stored.value) else {
            continue;
        };
        let entry = rooms.entry(room).or_insert_with(|| json!({ "sessions": {} }));
        entry["sessions"][session] = data;
    }
    Ok(rooms)
}

#[derive(Deserialize)]
pub struct AllKeysBody {
    rooms: Map<String, Value>,
}

#[derive(Deserialize)]
pub struct RoomKeysBody {
    sessions: Map<String, Value>,
}

pub async fn put_all_keys(app: &App, caller: &Caller, query: VersionQuery, body: AllKeysBody) -> ApiResult<Value> {
    let keys = parse_rooms(&body.rooms)?;
    store_keys(app, caller, query.version()?, keys).await
}

pub async fn put_room_keys(
    app: &App,
    caller: &Caller,
    room_id: String,
    query: VersionQuery,
    body: RoomKeysBody,
) -> ApiResult<Value> {
    check_room(&room_id)?;
    let keys = parse_sessions(&room_id, &body.sessions)?;
    store_keys(app, caller, query.version()?, keys).await
}

pub async fn put_session_key(
    app: &App,
    caller: &Caller,
    (room_id, session_id): (String, String),
    query: VersionQuery,
    body: Value,
) -> ApiResult<Value> {
    check_room(&room_id)?;
    check_id("session id", &session_id)?;
    let data = KeyBackupData::parse(&body)?;
    store_keys(app, caller, query.version()?, vec![(room_id, session_id, data)]).await
}

pub async fn get_all_keys(app: &App, caller: &Caller, query: VersionQuery) -> ApiResult<Value> {
    let (number, _) = existing_version(app, &caller.user_id, query.version()?).await?;
    let rooms = read_sessions(app, &caller.user_id, number, None).await?;
    Ok(json!({ "rooms": rooms }))
}

pub async fn get_room_keys(app: &App, caller: &Caller, room_id: String, query: VersionQuery) -> ApiResult<Value> {
    check_room(&room_id)?;
    let (number, _) = existing_version(app, &caller.user_id, query.version()?).await?;
    let mut rooms = read_sessions(app, &caller.user_id, number, Some(&room_id)).await?;
    Ok(rooms.remove(&room_id).unwrap_or_else(|| json!({ "sessions": {} })))
}

pub async fn get_session_key(
    app: &App,
    caller: &Caller,
    (room_id, session_id): (String, String),
    query: VersionQuery,
) -> ApiResult<Value> {
    check_room(&room_id)?;
    let (number, _) = existing_version(app, &caller.user_id, query.version()?).await?;
    let path = session_path(&caller.user_id, number, &room_id, &session_id);
    match app.store.kv().get(Bucket::RoomKeys, &path).await? {
        Some(stored) => Ok(serde_json::from_slice(&stored.value).unwrap_or_else(|_| json!({}))),
        None => Err(MatrixError::not_found("No such session in this backup")),
    }
}

async fn deleted(app: &App, caller: &Caller, version: &str, room_id: Option<&str>, session_id: Option<&str>) -> ApiResult<Value> {
    let (number, _) = existing_version(app, &caller.user_id, version).await?;
    match (room_id, session_id) {
        (Some(room_id), Some(session_id)) => {
            app.store.kv().delete(Bucket::RoomKeys, &session_path(&caller.user_id, number, room_id, session_id)).await?;
        }
        _ => delete_sessions(app, &caller.user_id, number, room_id).await?,
    }
    let (count, etag) = stats(app, &caller.user_id, number).await?;
    Ok(json!({ "count": count, "etag": etag }))
}

pub async fn delete_all_keys(app: &App, caller: &Caller, query: VersionQuery) -> ApiResult<Value> {
    deleted(app, caller, query.version()?, None, None).await
}

pub async fn delete_room_keys(app: &App, caller: &Caller, room_id: String, query: VersionQuery) -> ApiResult<Value> {
    check_room(&room_id)?;
    deleted(app, caller, query.version()?, Some(&room_id), None).await
}

pub async fn delete_session_key(
    app: &App,
    caller: &Caller,
    (room_id, session_id): (String, String),
    query: VersionQuery,
) -> ApiResult<Value> {
    check_room(&room_id)?;
    deleted(app, caller, query.version()?, Some(&room_id), Some(&session_id)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(verified: bool, index: u64, forwarded: u64) -> KeyBackupData {
        KeyBackupData { first_message_index: index, forwarded_count: forwarded, is_verified: verified, session_data: Map::new() }
    }

    #[test]
    fn a_stored_key_is_replaced_only_by_a_better_one() {
        assert!(data(true, 9, 9).better_than(&data(false, 0, 0)));
        assert!(!data(false, 0, 0).better_than(&data(true, 9, 9)));
        assert!(data(false, 1, 9).better_than(&data(false, 2, 0)));
        assert!(data(false, 2, 0).better_than(&data(false, 2, 1)));
        assert!(!data(false, 2, 1).better_than(&data(false, 2, 1)));
    }
}
