//! End-to-end encryption support: the server stores and relays keys and device messages, it never
//! decrypts anything.
//!
//! Keys live in the replicated keys bucket; a change is announced with a `KeysChanged` entry in the
//! owner's history, which drives `device_lists.changed` in everyone's sync.

use std::collections::BTreeSet;

use haetae_store::Bucket;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::accounts::append_user_entry;
use super::{App, Caller};
use crate::entry::Entry;
use crate::error::{ApiResult, MatrixError};

fn device_key(user_id: &str, device_id: &str) -> String {
    format!("dev\u{0}{user_id}\u{0}{device_id}")
}
fn otk_key(user_id: &str, device_id: &str) -> String {
    format!("otk\u{0}{user_id}\u{0}{device_id}")
}
fn cross_signing_key(user_id: &str) -> String {
    format!("xsign\u{0}{user_id}")
}

async fn read_json(app: &App, key: &str) -> ApiResult<Option<Value>> {
    Ok(app.store.kv().get(Bucket::Keys, key).await?.and_then(|v| serde_json::from_slice(&v.value).ok()))
}

fn to_bytes(value: &Value) -> bytes::Bytes {
    serde_json::to_vec(value).unwrap_or_default().into()
}

/// Counts of unclaimed one-time keys per algorithm.
fn count_keys(record: &Value) -> Value {
    let mut counts = Map::new();
    if let Some(keys) = record["keys"].as_object() {
        for key_id in keys.keys() {
            let algorithm = key_id.split(':').next().unwrap_or_default().to_string();
            let count = counts.entry(algorithm).or_insert(json!(0));
            *count = json!(count.as_u64().unwrap_or(0) + 1);
        }
    }
    Value::Object(counts)
}

fn unused_fallback_types(record: &Value) -> Value {
    let types: BTreeSet<String> = record["fallback"]
        .as_object()
        .map(|keys| {
            keys.keys()
                .filter(|_| record["fallback_used"] != true)
                .map(|k| k.split(':').next().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default();
    json!(types)
}

/// Key counts are advisory (a client re-uploads when they look low): a sync waits this long for
/// the keys bucket's leader before taking a replica's answer.
const SYNC_LEADER_WAIT: std::time::Duration = std::time::Duration::from_millis(150);
/// How long a device's counts read from the keys bucket serve its syncs. A busy device syncs many
/// times a second; its counts change only when it uploads (here: the entry is dropped at once) or
/// another device claims one of its keys (seen at most this late; the next sync corrects it).
const KEY_COUNTS_TTL: std::time::Duration = std::time::Duration::from_secs(1);
/// Each device's key counts as last read (when, counts, unused fallback key types), so that a
/// sync does not read the keys bucket each time.
pub type KeyCounts = super::caches::BoundedMap<String, (std::time::Instant, Value, Value)>;

/// The key counts a device's sync carries.
pub async fn counts_for_sync(app: &App, user_id: &str, device_id: &str) -> (Value, Value) {
    let key = otk_key(user_id, device_id);
    let cached = app.key_counts.get(&key);
    if let Some((read, counts, fallback)) = &cached
        && read.elapsed() < KEY_COUNTS_TTL
    {
        return (counts.clone(), fallback.clone());
    }
    // A sync must not wait out an election of the keys bucket: read a replica if need be.
    let counts = match app.store.kv().get_available(Bucket::Keys, &key, SYNC_LEADER_WAIT).await {
        Ok(stored) => match stored.and_then(|v| serde_json::from_slice::<Value>(&v.value).ok()) {
            Some(record) => (count_keys(&record), unused_fallback_types(&record)),
            None => (json!({}), json!([])),
        },
        // Unreadable right now: the last counts read are better than none.
        Err(_) => {
            return cached.map_or_else(|| (json!({}), json!([])), |(_, counts, fallback)| (counts, fallback));
        }
    };
    app.key_counts.put(key, (std::time::Instant::now(), counts.0.clone(), counts.1.clone()));
    counts
}

/// Drops a deleted device's keys.
pub async fn forget_device_keys(app: &App, user_id: &str, device_id: &str) -> ApiResult<()> {
    app.store.kv().delete(Bucket::Keys, &device_key(user_id, device_id)).await?;
    app.store.kv().delete(Bucket::Keys, &otk_key(user_id, device_id)).await?;
    app.key_counts.remove(&otk_key(user_id, device_id));
    Ok(())
}

#[derive(Deserialize)]
pub struct UploadRequest {
    device_keys: Option<Value>,
    one_time_keys: Option<Map<String, Value>>,
    fallback_keys: Option<Map<String, Value>>,
}

/// Checks one-time or fallback keys as the spec shapes them: `<algorithm>:<key id>` mapping to a
/// key object (`key` a string, `signatures` an object if present) or, for unsigned keys, a
/// string. Anything else would be handed to other users' clients by `/keys/claim`.
fn check_one_time_keys(field: &str, keys: &Map<String, Value>) -> ApiResult<()> {
    for (key_id, value) in keys {
        if !key_id.split_once(':').is_some_and(|(algorithm, id)| !algorithm.is_empty() && !id.is_empty()) {
            return Err(MatrixError::bad_json(format!("{field}: {key_id:?} is not <algorithm>:<key id>")));
        }
        let well_formed = match value {
            Value::String(_) => true,
            Value::Object(object) => {
                object.get("key").is_some_and(Value::is_string) && object.get("signatures").is_none_or(Value::is_object)
            }
            _ => false,
        };
        if !well_formed {
            return Err(MatrixError::bad_json(format!("{field}: {key_id:?} must be a key object with a string `key`")));
        }
    }
    Ok(())
}

pub async fn upload(app: &App, caller: &Caller, body: UploadRequest) -> ApiResult<Value> {
    if let Some(keys) = &body.one_time_keys {
        check_one_time_keys("one_time_keys", keys)?;
    }
    if let Some(keys) = &body.fallback_keys {
        check_one_time_keys("fallback_keys", keys)?;
    }
    if body.device_keys.as_ref().is_some_and(|keys| !keys.is_object()) {
        return Err(MatrixError::bad_json("device_keys must be an object"));
    }
    let mut changed = false;
    if let Some(device_keys) = body.device_keys {
        if device_keys["user_id"] != caller.user_id.as_str() || device_keys["device_id"] != caller.device_id.as_str() {
            return Err(MatrixError::bad_json("device_keys must be for the calling device"));
        }
        let key = device_key(&caller.user_id, &caller.device_id);
        let current = read_json(app, &key).await?;
        if current.as_ref() != Some(&device_keys) {
            app.store.kv().put(Bucket::Keys, &key, to_bytes(&device_keys)).await?;
            changed = true;
        }
    }
    let key = otk_key(&caller.user_id, &caller.device_id);
    let record = app
        .store
        .kv()
        .modify(Bucket::Keys, &key, |current| -> Result<Option<bytes::Bytes>, ()> {
            let mut record: Value =
                current.and_then(|c| serde_json::from_slice(c).ok()).unwrap_or_else(|| json!({"keys": {}, "fallback": {}}));
            let mut touched = false;
            if let Some(keys) = &body.one_time_keys {
                for (id, value) in keys {
                    record["keys"][id] = value.clone();
                    touched = true;
                }
            }
            if let Some(keys) = &body.fallback_keys
                && !keys.is_empty()
            {
                record["fallback"] = Value::Object(keys.clone());
                record["fallback_used"] = json!(false);
                touched = true;
            }
            Ok(touched.then(|| to_bytes(&record)))
        })
        .await?
        .unwrap_or_default();
    app.key_counts.remove(&key);
    if changed {
        append_user_entry(app, &caller.user_id, Entry::KeysChanged).await?;
    }
    let record: Value = serde_json::from_slice(&record).unwrap_or_else(|_| json!({}));
    Ok(json!({ "one_time_key_counts": count_keys(&record) }))
}

#[derive(Deserialize)]
pub struct QueryRequest {
    device_keys: Map<String, Value>,
}

pub async fn query(app: &App, caller: &Caller, body: QueryRequest) -> ApiResult<Value> {
    if body.device_keys.len() > 1000 {
        return Err(MatrixError::too_large("too many users in one query"));
    }
    let mut device_keys = Map::new();
    let mut master_keys = Map::new();
    let mut self_signing_keys = Map::new();
    let mut user_signing_keys = Map::new();
    for (user_id, wanted) in &body.device_keys {
        let wanted: Vec<&str> = wanted.as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        let devices = super::accounts::load_devices(app, user_id).await?;
        let mut keys = Map::new();
        if let Some(devices) = devices.as_object() {
            for (device_id, device) in devices {
                if !wanted.is_empty() && !wanted.contains(&device_id.as_str()) {
                    continue;
                }
                if let Some(mut stored) = read_json(app, &device_key(user_id, device_id)).await? {
                    stored["unsigned"] = json!({ "device_display_name": device["display_name"] });
                    keys.insert(device_id.clone(), stored);
                }
            }
        }
        device_keys.insert(user_id.clone(), Value::Object(keys));
        if let Some(cross) = read_json(app, &cross_signing_key(user_id)).await? {
            if !cross["master_key"].is_null() {
                master_keys.insert(user_id.clone(), cross["master_key"].clone());
            }
            if !cross["self_signing_key"].is_null() {
                self_signing_keys.insert(user_id.clone(), cross["self_signing_key"].clone());
            }
            if user_id == &caller.user_id && !cross["user_signing_key"].is_null() {
                user_signing_keys.insert(user_id.clone(), cross["user_signing_key"].clone());
            }
        }
    }
    Ok(json!({
        "device_keys": device_keys,
        "master_keys": master_keys,
        "self_signing_keys": self_signing_keys,
        "user_signing_keys": user_signing_keys,
        "failures": {},
    }))
}

#[derive(Deserialize)]
pub struct ClaimRequest {
    one_time_keys: Map<String, Value>,
}

pub async fn claim(app: &App, _caller: &Caller, body: ClaimRequest) -> ApiResult<Value> {
    let mut claimed = Map::new();
    for (user_id, devices) in &body.one_time_keys {
        let Some(devices) = devices.as_object() else {
            continue;
        };
        let mut user_keys = Map::new();
        for (device_id, algorithm) in devices {
            let Some(algorithm) = algorithm.as_str() else {
                continue;
            };
            let prefix = format!("{algorithm}:");
            let mut taken: Option<(String, Value)> = None;
            app.store
                .kv()
                .modify(Bucket::Keys, &otk_key(user_id, device_id), |current| -> Result<Option<bytes::Bytes>, ()> {
                    taken = None;
                    let Some(mut record) = current.and_then(|c| serde_json::from_slice::<Value>(c).ok()) else {
                        return Ok(None);
                    };
                    // One-time keys first, each handed out once; then the fallback key (reused).
                    let one_time =
                        record["keys"].as_object().and_then(|keys| keys.keys().find(|k| k.starts_with(&prefix)).cloned());
                    if let Some(key_id) = one_time {
                        let value = record["keys"][&key_id].take();
                        if let Some(keys) = record["keys"].as_object_mut() {
                            keys.remove(&key_id);
                        }
                        taken = Some((key_id, value));
                        return Ok(Some(to_bytes(&record)));
                    }
                    let fallback = record["fallback"]
                        .as_object()
                        .and_then(|keys| keys.iter().find(|(k, _)| k.starts_with(&prefix)).map(|(k, v)| (k.clone(), v.clone())));
                    if let Some(found) = fallback {
                        taken = Some(found);
                        record["fallback_used"] = json!(true);
                        return Ok(Some(to_bytes(&record)));
                    }
                    Ok(None)
                })
                .await?
                .ok();
            app.key_counts.remove(&otk_key(user_id, device_id));
            if let Some((key_id, value)) = taken {
                user_keys.insert(device_id.clone(), json!({ key_id: value }));
            }
        }
        claimed.insert(user_id.clone(), Value::Object(user_keys));
    }
    Ok(json!({ "one_time_keys": claimed, "failures": {} }))
}

#[derive(Deserialize)]
pub struct ChangesQuery {
    from: String,
    to: String,
}

pub async fn changes(app: &App, caller: &Caller, query: ChangesQuery) -> ApiResult<Value> {
    let partitions = app.model.partitions();
    let parse = |t: &str| super::sync::SyncToken::parse(t, partitions).ok_or_else(|| MatrixError::invalid_param("invalid token"));
    let (from, to) = (parse(&query.from)?, parse(&query.to)?);
    let mut changed = BTreeSet::new();
    let users = app
        .model
        .key_changes_between(&from.positions, &to.positions)
        .ok_or_else(|| MatrixError::invalid_param("the from token is older than this server remembers; do a full sync"))?;
    for user_id in users {
        if user_id == caller.user_id || app.model.share_a_room(&caller.user_id, &user_id) {
            changed.insert(user_id);
        }
    }
    let left = app.model.users_left_between(&caller.user_id, &from.positions, &to.positions);
    for user_id in &left {
        changed.remove(user_id);
    }
    Ok(json!({ "changed": changed, "left": left }))
}

#[derive(Deserialize)]
pub struct ToDeviceRequest {
    messages: Map<String, Value>,
}

pub async fn send_to_device(
    app: &App,
    caller: &Caller,
    (event_type, txn_id): (String, String),
    body: ToDeviceRequest,
) -> ApiResult<Value> {
    app.limit_writes(&caller.user_id)?;
    // The whole request is checked before anything is stored: a malformed target refuses it all
    // (the sender learns of its mistake) rather than delivering part of it.
    for (user_id, devices) in &body.messages {
        if !haetae_matrix::ids::is_valid_user_id(user_id) {
            return Err(MatrixError::invalid_param(format!("not a user id: {user_id:?}")));
        }
        let Some(devices) = devices.as_object() else {
            return Err(MatrixError::bad_json("messages must map users to devices"));
        };
        if let Some((device_id, _)) = devices.iter().find(|(_, content)| !content.is_object()) {
            return Err(MatrixError::bad_json(format!("the message for device {device_id:?} is not an object")));
        }
    }
    for (user_id, devices) in &body.messages {
        let Some(devices) = devices.as_object() else {
            continue;
        };
        // Only devices that exist receive anything: a user of another server (no federation) or
        // without an account has none, so nothing about them reaches the log or any index.
        if haetae_matrix::ids::server_name(user_id) != Some(app.config.server_name.as_str()) {
            continue;
        }
        let existing = super::accounts::load_devices(app, user_id).await?;
        let Some(existing) = existing.as_object().filter(|d| !d.is_empty()) else {
            continue;
        };
        // "*" means every device the user has now: expanded here so each device acknowledges its own copy.
        let mut targets: Vec<(String, &Value)> = Vec::new();
        for (device_id, content) in devices {
            if device_id == "*" {
                targets.extend(existing.keys().map(|d| (d.clone(), content)));
            } else if existing.contains_key(device_id) {
                targets.push((device_id.clone(), content));
            }
        }
        for (device_id, content) in targets {
            let device_id = &device_id;
            let entry = Entry::ToDevice {
                sender: caller.user_id.clone(),
                device_id: device_id.clone(),
                event_type: event_type.clone(),
                content: content.clone(),
            };
            // Idempotent per (sending device, txn, target): a retry is stored once.
            let identity = format!(
                "{}\u{0}{}\u{0}{}\u{0}{txn_id}\u{0}{user_id}\u{0}{device_id}",
                caller.user_id, caller.device_id, caller.session
            );
            let message_id = format!("td{:x}", Sha256::digest(identity.as_bytes()));
            // Read-your-writes: the caller's next request may be answered from this node's model.
            app.append_applied(user_id, entry, &message_id).await?;
        }
    }
    Ok(json!({}))
}

/// `account_base`: where the person's browser reaches the account page, for the `m.oauth` stage.
pub async fn device_signing_upload(app: &App, caller: &Caller, account_base: &str, body: Value) -> ApiResult<Value> {
    let key = cross_signing_key(&caller.user_id);
    let current = read_json(app, &key).await?.unwrap_or_else(|| json!({}));
    let replacing = ["master_key", "self_signing_key", "user_signing_key"]
        .iter()
        .any(|k| !current[*k].is_null() && !body[*k].is_null() && current[*k] != body[*k]);
    if replacing {
        super::oauth_uia::require_for_cross_signing(app, caller, account_base, body.get("auth")).await?;
    }
    let mut next = current.clone();
    for field in ["master_key", "self_signing_key", "user_signing_key"] {
        if !body[field].is_null() {
            next[field] = body[field].clone();
        }
    }
    app.store.kv().put(Bucket::Keys, &key, to_bytes(&next)).await?;
    append_user_entry(app, &caller.user_id, Entry::KeysChanged).await?;
    Ok(json!({}))
}

/// Merges the `signatures` of `signed` into `target`.
/// Adds `signer`'s signatures in `signed` to the stored key `target`. Stored keys whose
/// `signatures` are not objects (written by a careless client) are repaired, never indexed into.
fn merge_signatures(target: &mut Value, signed: &Value, signer: &str) {
    let Some(keys) = signed["signatures"][signer].as_object() else {
        return;
    };
    let Some(target) = target.as_object_mut() else {
        return;
    };
    let signatures = target.entry("signatures").or_insert_with(|| json!({}));
    if !signatures.is_object() {
        *signatures = json!({});
    }
    let Some(signatures) = signatures.as_object_mut() else {
        return;
    };
    let by_signer = signatures.entry(signer.to_string()).or_insert_with(|| json!({}));
    if !by_signer.is_object() {
        *by_signer = json!({});
    }
    if let Some(by_signer) = by_signer.as_object_mut() {
        for (key_id, signature) in keys {
            if signature.is_string() {
                by_signer.insert(key_id.clone(), signature.clone());
            }
        }
    }
}

pub async fn signatures_upload(app: &App, caller: &Caller, body: Map<String, Value>) -> ApiResult<Value> {
    let mut failures = Map::new();
    let mut changed_users = BTreeSet::new();
    for (user_id, keys) in &body {
        let Some(keys) = keys.as_object() else {
            continue;
        };
        for (key_id, signed) in keys {
            // A device id names device keys; otherwise it is a cross-signing public key.
            let device = device_key(user_id, key_id);
            // Only the caller's own signatures are taken; of another user's keys, only their
            // master key may be signed (with the caller's user-signing key).
            let own = user_id == &caller.user_id;
            if own && let Some(mut stored) = read_json(app, &device).await? {
                merge_signatures(&mut stored, signed, &caller.user_id);
                app.store.kv().put(Bucket::Keys, &device, to_bytes(&stored)).await?;
                changed_users.insert(user_id.clone());
                continue;
            }
            let cross_key = cross_signing_key(user_id);
            let mut cross = read_json(app, &cross_key).await?.unwrap_or_else(|| json!({}));
            let field = ["master_key", "self_signing_key", "user_signing_key"].into_iter().find(|field| {
                cross[*field]["keys"].as_object().is_some_and(|k| k.values().any(|v| v.as_str() == Some(key_id.as_str())))
            });
            match field {
                Some(field) if own || field == "master_key" => {
                    merge_signatures(&mut cross[field], signed, &caller.user_id);
                    app.store.kv().put(Bucket::Keys, &cross_key, to_bytes(&cross)).await?;
                    changed_users.insert(user_id.clone());
                }
                Some(_) => {
                    failures.entry(user_id.clone()).or_insert_with(|| json!({}))[key_id] =
                        json!({ "errcode": "M_FORBIDDEN", "error": "Only another user's master key may be signed" });
                }
                None => {
                    failures.entry(user_id.clone()).or_insert_with(|| json!({}))[key_id] =
                        json!({ "errcode": "M_NOT_FOUND", "error": "Unknown key" });
                }
            }
        }
    }
    for user_id in changed_users {
        if user_id == caller.user_id || app.store.kv().get(Bucket::Devices, &user_id).await?.is_some() {
            append_user_entry(app, &user_id, Entry::KeysChanged).await?;
        }
    }
    Ok(json!({ "failures": failures }))
}
