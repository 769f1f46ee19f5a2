//! The room service: turning a client's intent into an event in a room's history.
//!
//! Owns event ids, transaction idempotency, the pre-check against the read model, the
//! expected-sequence append for state events (one serial history per room, no leader of our own),
//! and waiting until this node has applied its own write (read-your-writes).

use std::time::Duration;

use base64::Engine;
use haetae_store::{AppendError, Bucket};
use rand::Rng;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{App, Caller};
use crate::entry::{Entry, Envelope, Txn};
use crate::error::{ApiResult, MatrixError};
use crate::read_model::event_ids::{event_id_at, position_of};
use crate::read_model::{Membership, TimelineItem};

/// How long a write waits for this node to apply it before answering anyway.
const APPLY_WAIT: Duration = Duration::from_secs(15);
/// A send slower than this is logged with its append and apply times.
const SLOW_SEND_MS: u64 = 1000;
/// Attempts of a state write that keeps losing races with other writers to the same room.
const MAX_STATE_ATTEMPTS: usize = 16;

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn hash_id(sigil: char, input: &[u8]) -> String {
    let digest = Sha256::digest(input);
    format!("{sigil}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest))
}

pub fn random_string(length: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut rng = rand::rng();
    (0..length).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

pub fn random_event_id() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    hash_id('$', &bytes)
}

/// The key a (device, room, txn id) is remembered under; the same on every node.
fn txn_key(caller: &Caller, room_id: &str, txn_id: &str) -> String {
    let input = format!("{}\u{0}{}\u{0}{}\u{0}{}\u{0}{}", caller.user_id, caller.device_id, caller.session, room_id, txn_id);
    hash_id('t', input.as_bytes())
}

/// What to append.
pub struct NewEvent<'a> {
    pub room_id: &'a str,
    pub event_type: &'a str,
    pub state_key: Option<&'a str>,
    pub content: Value,
    /// For redactions: the redacted event.
    pub redacts: Option<&'a str>,
    pub txn_id: Option<&'a str>,
}

/// Appends an event from `caller` and returns its id once this node has applied it.
/// The spec's size limit on event types and state keys, bytes.
const MAX_TYPE_OR_KEY_BYTES: usize = 255;

pub async fn send_event(app: &App, caller: &Caller, new: NewEvent<'_>) -> ApiResult<String> {
    if new.event_type.len() > MAX_TYPE_OR_KEY_BYTES || new.state_key.is_some_and(|k| k.len() > MAX_TYPE_OR_KEY_BYTES) {
        return Err(MatrixError::invalid_param(format!("event type and state key are limited to {MAX_TYPE_OR_KEY_BYTES} bytes")));
    }
    let txn_key = new.txn_id.map(|txn| txn_key(caller, new.room_id, txn));
    // The append's message id: for a transaction, the same on every node, so the log's duplicate
    // window stores a retried send once (and answers the retry with the original position).
    let message_id = match &txn_key {
        Some(key) => hash_id('$', key.as_bytes()),
        None => random_event_id(),
    };
    if let Some(key) = &txn_key {
        // A retried transaction whose event this node already applied: answer from the read
        // model without touching the store.
        if let Some((room_id, event_id)) = app.model.transaction_event(key)
            && room_id == new.room_id
        {
            return Ok(event_id);
        }
    }
    let mut event = json!({
        "type": new.event_type,
        "sender": caller.user_id,
        "room_id": new.room_id,
        "content": new.content,
        "origin_server_ts": now_ms(),
    });
    if let Some(state_key) = new.state_key {
        event["state_key"] = json!(state_key);
    }
    if let Some(redacts) = new.redacts {
        event["redacts"] = json!(redacts);
    }
    let redacts_target = match new.redacts {
        Some(target_id) => redaction_target(app, new.room_id, target_id).await?,
        None => None,
    };
    let txn = new.txn_id.map(|txn_id| Txn {
        device_id: caller.device_id.clone(),
        txn_id: txn_id.to_string(),
        key: txn_key.clone().unwrap_or_default(),
    });
    let is_state = new.state_key.is_some();
    let partition = app.model.partition_of(new.room_id);
    for _attempt in 0..MAX_STATE_ATTEMPTS {
        let checked = match precheck(app, new.room_id, &event) {
            Ok(checked) => checked,
            // Refused on this node's view, which may lag the log (an invite accepted a moment ago
            // through another DC): catch up with the room's partition once and judge again.
            Err(_) => {
                catch_up(app, partition).await?;
                precheck(app, new.room_id, &event)?
            }
        };
        let entry = Entry::Event {
            event: event.clone(),
            txn: txn.clone(),
            prev_content: checked.prev_content,
            redacts_target: redacts_target.clone(),
        };
        let payload = Envelope::new(entry).to_bytes();
        if payload.len() > app.config.limits.max_event_bytes {
            return Err(MatrixError::too_large(format!("event larger than {} bytes", app.config.limits.max_event_bytes)));
        }
        let started = std::time::Instant::now();
        let appended = app.store.log().append(new.room_id, payload, &message_id, is_state.then_some(checked.last_seq)).await;
        let append_ms = started.elapsed().as_millis() as u64;
        app.metrics.append_duration.observe(started.elapsed().as_secs_f64());
        if matches!(appended, Err(AppendError::Unavailable(_))) {
            app.metrics.append_errors.inc();
        }
        match appended {
            Ok(appended) => {
                let applied = app.model.wait_applied(partition, appended.seq, APPLY_WAIT).await;
                let total_ms = started.elapsed().as_millis() as u64;
                tracing::trace!(partition, append_ms, apply_ms = total_ms - append_ms, "send");
                if total_ms > SLOW_SEND_MS {
                    // The drill's timeline shows that a send was slow; this says where.
                    tracing::warn!(partition, append_ms, apply_ms = total_ms - append_ms, seq = appended.seq, "slow send");
                }
                if !applied {
                    return Err(MatrixError::unavailable("this node is behind the event log"));
                }
                let event_id = event_id_at(partition, appended.seq);
                if let Some(reason) = app.model.rejection(&event_id) {
                    return Err(MatrixError::forbidden(reason));
                }
                app.metrics.events_sent.inc();
                // A retry stored again after the duplicate window was skipped: the first is the one.
                if let Some((_, first)) = txn_key.as_deref().and_then(|key| app.model.transaction_event(key)) {
                    return Ok(first);
                }
                return Ok(event_id);
            }
            Err(AppendError::Conflict { .. }) => {
                // Another write reached the room first: catch up with it and check again.
                catch_up(app, partition).await?;
            }
            Err(AppendError::TooLarge(message)) => return Err(MatrixError::too_large(message)),
            Err(AppendError::Unavailable(message)) => {
                return Err(MatrixError::unavailable(message));
            }
        }
    }
    Err(MatrixError::unavailable("too many concurrent changes to this room; retry"))
}

/// The target of a redaction as the authorization rules need it (id, sender, room, type), or
/// None if the room has no such event.
async fn redaction_target(app: &App, room_id: &str, target_id: &str) -> ApiResult<Option<Value>> {
    let Some(item) = find_event(app, room_id, target_id).await? else {
        return Ok(None);
    };
    let mut target = json!({
        "event_id": &*item.event_id,
        "sender": &*item.sender,
        "room_id": room_id,
        "type": &*item.event_type,
    });
    if let Some(state_key) = &item.state_key {
        target["state_key"] = json!(&**state_key);
    }
    // What the target relates to, so every node drops it from the room's relation index.
    let relates_to = &item.event["content"]["m.relates_to"];
    if let (Some(_), Some(relates_to)) = (relates_to["rel_type"].as_str(), relates_to["event_id"].as_str()) {
        target["relates_to"] = json!(relates_to);
    }
    Ok(Some(target))
}

/// The event `event_id` of `room_id` as stored (redacted if it was), wherever it is: this
/// node's window or the log. O(1): the id names the position.
pub async fn find_event(app: &App, room_id: &str, event_id: &str) -> ApiResult<Option<TimelineItem>> {
    match position_of(event_id) {
        Some((partition, seq)) if partition == app.model.partition_of(room_id) => {
            Ok(app.model.item_at(app.store.log(), room_id, seq).await.map_err(MatrixError::unavailable)?)
        }
        Some(_) => Ok(None),
        // Ids stored by earlier versions are found while they are in the room's window.
        None => Ok(app.model.with_room(room_id, |room| room.window_find(event_id).map(|i| room.shown(i))).flatten()),
    }
}

/// Waits until this node has applied everything `partition` holds now.
pub(super) async fn catch_up(app: &App, partition: u32) -> ApiResult<()> {
    let last = app.store.log().last_seq(partition).await.map_err(MatrixError::unavailable)?;
    if app.model.wait_applied(partition, last, APPLY_WAIT).await {
        Ok(())
    } else {
        Err(MatrixError::unavailable("this node is behind the event log"))
    }
}

/// True when this node knows `room_id`. A room this node has not seen may have been created a
/// moment ago through another node: before answering "no such room", catch up with the room's
/// log partition as it is now, so every node gives the same answer.
pub async fn knows_room(app: &App, room_id: &str) -> ApiResult<bool> {
    if app.model.knows_room(room_id) {
        return Ok(true);
    }
    catch_up(app, app.model.partition_of(room_id)).await?;
    Ok(app.model.knows_room(room_id))
}

/// What a pre-check found: the room's last sequence (the expected sequence of a state write)
/// and, for a state event, the content it replaces.
struct Checked {
    last_seq: u64,
    prev_content: Option<Value>,
}

/// Checks `event` against the room's current state on this node.
fn precheck(app: &App, room_id: &str, event: &Value) -> ApiResult<Checked> {
    // Judged again when the entry is applied (`read_model`): a block may land first.
    if crate::read_model::is_join(event) && app.model.blocked_by(room_id).is_some() {
        return Err(MatrixError::forbidden(crate::read_model::BLOCKED_ROOM));
    }
    let checked = app.model.with_room(room_id, |room| {
        haetae_matrix::auth::check(&room.state, event).map_err(|e| MatrixError::forbidden(e.to_string()))?;
        let prev_content = match (event["type"].as_str(), event["state_key"].as_str()) {
            (Some(event_type), Some(state_key)) => room.state.content(event_type, state_key),
            _ => None,
        };
        Ok(Checked { last_seq: room.last_seq, prev_content })
    });
    match checked {
        Some(checked) => checked,
        None if event["type"] == "m.room.create" => Ok(Checked { last_seq: 0, prev_content: None }),
        None => Err(MatrixError::forbidden("You are not in this room (or it does not exist)")),
    }
}

pub fn new_room_id(server_name: &str) -> String {
    format!("!{}:{server_name}", random_string(18))
}

/// The content of a membership event, with the target's profile for joins.
pub fn member_content(app: &App, user_id: &str, membership: &str, extra: Option<&Value>) -> Value {
    let mut content = json!({ "membership": membership });
    if membership == "join" || membership == "invite" {
        let (name, avatar) = app.model.with_user(user_id, |user| (user.displayname.clone(), user.avatar_url.clone()));
        if let Some(name) = name {
            content["displayname"] = json!(name);
        }
        if let Some(avatar) = avatar {
            content["avatar_url"] = json!(avatar);
        }
    }
    if let Some(Value::Object(extra)) = extra {
        for (key, value) in extra {
            if key != "membership" {
                content[key] = value.clone();
            }
        }
    }
    content
}

/// Resolves a room id or alias to a room id.
pub async fn resolve_room(app: &App, room_id_or_alias: &str) -> ApiResult<String> {
    if room_id_or_alias.starts_with('#') {
        match app.store.kv().get(Bucket::Aliases, room_id_or_alias).await? {
            Some(stored) => Ok(String::from_utf8_lossy(&stored.value).into_owned()),
            None => Err(MatrixError::not_found("Room alias not found")),
        }
    } else if haetae_matrix::ids::is_valid_room_id(room_id_or_alias) {
        Ok(room_id_or_alias.to_string())
    } else {
        Err(MatrixError::invalid_param("Not a room id or alias"))
    }
}

/// Whether `user_id` may read `room_id`'s history, and up to which position (inclusive):
/// members read everything; former members read up to their departure. Walks only the user's
/// own membership changes.
pub fn readable_until(app: &App, user_id: &str, room_id: &str) -> ApiResult<u64> {
    let not_in_room = || MatrixError::forbidden("You are not in this room");
    let forgotten = app.model.with_user(user_id, |user| user.forgotten.contains(room_id));
    app.model
        .with_room(room_id, |room| {
            let world_readable = room.state.history_visibility() == "world_readable";
            if room.visible_from(user_id) == u64::MAX && !world_readable {
                return Err(not_in_room());
            }
            match room.state.membership(user_id) {
                Some("join") => Ok(u64::MAX),
                Some("leave") | Some("ban") if room.was_ever(user_id, Membership::Join) && !forgotten => {
                    Ok(room.membership_seq(user_id).unwrap_or(0))
                }
                _ if world_readable => Ok(u64::MAX),
                _ => Err(not_in_room()),
            }
        })
        .unwrap_or_else(|| Err(not_in_room()))
}
