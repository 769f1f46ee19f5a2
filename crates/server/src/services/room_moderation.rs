//! Room moderation by administrators, on Synapse's admin API paths and shapes: blocking a room
//! (nobody may join it) and deleting one (every member made to leave, optionally blocked, moved
//! to a new room, and purged), with the status of each deletion.
//!
//! Everything goes through the log, so every node of every DC ends up agreeing: a block is a
//! `room_blocked` entry on the room's subject (joins after it are rejected when applied, on every
//! node alike), members leave by ordinary `m.room.member` events sent as themselves, and a purge
//! is a `room_purged` entry after which every node drops the room from its read model. The log
//! keeps the room's entries (a node may not purge the log, see ARCHITECTURE.md); a node replaying
//! it rebuilds the room until the purge entry drops it again.
//!
//! A deletion runs within its request; its status is recorded in the replicated `meta` bucket
//! (`("room_delete", delete id)` and `("room_deletes", room id, delete id)`), so any node answers
//! the status endpoints.

use haetae_store::Bucket;
use haetae_store::kv::KeyPath;
use serde::Deserialize;
use serde_json::{Value, json};

use super::membership::{self, Target};
use super::rooms::{NewEvent, knows_room, member_content, random_event_id, random_string, send_event};
use super::{App, Caller, accounts};
use crate::entry::Entry;
use crate::error::{ApiResult, MatrixError};
use crate::read_model::Membership;

const DELETES: &str = "room_delete";
const DELETES_BY_ROOM: &str = "room_deletes";
/// Most deletion records one room's status lists.
const MAX_DELETES_PER_ROOM: usize = 100;
/// Most aliases one deletion looks through (the aliases bucket is read whole).
const MAX_ALIASES: usize = 100_000;
/// The new room's name when the request names none (Synapse's default).
const DEFAULT_NEW_ROOM_NAME: &str = "Content Violation Notification";

fn check_room_id(room_id: &str) -> ApiResult<()> {
    if haetae_matrix::ids::is_valid_room_id(room_id) {
        Ok(())
    } else {
        Err(MatrixError::invalid_param(format!("{room_id} is not a legal room ID")))
    }
}

/// Someone acting in a room on the administrator's behalf (a member leaving, the new room's
/// creator): the user's own authority, no device.
fn acting_as(user_id: &str) -> Caller {
    Caller { user_id: user_id.to_string(), device_id: String::new(), session: String::new(), ip: None }
}

/// # GET /_synapse/admin/v1/rooms/{roomId}/block
pub async fn get_block(app: &App, room_id: &str) -> ApiResult<Value> {
    check_room_id(room_id)?;
    // A block may have been applied through another node a moment ago.
    super::rooms::catch_up(app, app.model.partition_of(room_id)).await?;
    Ok(match app.model.blocked_by(room_id) {
        Some(user_id) => json!({ "block": true, "user_id": user_id }),
        None => json!({ "block": false }),
    })
}

#[derive(Deserialize)]
pub struct BlockRequest {
    block: bool,
}

/// # PUT /_synapse/admin/v1/rooms/{roomId}/block
/// A room this server does not know may be blocked too (before anyone creates or joins it).
pub async fn set_block(app: &App, caller: &Caller, room_id: &str, request: BlockRequest) -> ApiResult<Value> {
    check_room_id(room_id)?;
    block(app, caller, room_id, request.block).await?;
    tracing::info!(admin = %caller.user_id, %room_id, block = request.block, "admin changed a room's block");
    Ok(json!({ "block": request.block }))
}

async fn block(app: &App, caller: &Caller, room_id: &str, blocked: bool) -> ApiResult<()> {
    let entry = Entry::RoomBlocked { blocked, by: caller.user_id.clone() };
    app.append_applied(room_id, entry, &random_event_id()).await
}

#[derive(Deserialize)]
pub struct DeleteRequest {
    #[serde(default)]
    block: bool,
    #[serde(default = "yes")]
    purge: bool,
    new_room_user_id: Option<String>,
    room_name: Option<String>,
    message: Option<String>,
}

fn yes() -> bool {
    true
}

/// What a deletion did, in Synapse's `shutdown_room` shape.
#[derive(Default)]
struct Shutdown {
    kicked_users: Vec<String>,
    failed_to_kick_users: Vec<String>,
    local_aliases: Vec<String>,
    new_room_id: Option<String>,
}

impl Shutdown {
    fn to_json(&self) -> Value {
        json!({
            "kicked_users": self.kicked_users,
            "failed_to_kick_users": self.failed_to_kick_users,
            "local_aliases": self.local_aliases,
            "new_room_id": self.new_room_id,
        })
    }
}

/// # DELETE /_synapse/admin/v1/rooms/{roomId}
/// Deletes the room and answers what it did (`kicked_users`, `failed_to_kick_users`,
/// `local_aliases`, `new_room_id`).
pub async fn delete_now(app: &App, caller: &Caller, room_id: &str, request: DeleteRequest) -> ApiResult<Value> {
    check_room_id(room_id)?;
    Ok(delete_room(app, caller, room_id, request).await?.to_json())
}

/// # DELETE /_synapse/admin/v2/rooms/{roomId}
/// Deletes the room and answers its `delete_id`, whose status the status endpoints give. The
/// deletion is done when this answers (its status is `complete` or `failed`).
pub async fn delete_tracked(app: &App, caller: &Caller, room_id: &str, request: DeleteRequest) -> ApiResult<Value> {
    check_room_id(room_id)?;
    if !request.block && !knows_room(app, room_id).await? {
        return Err(MatrixError::not_found("Room not found"));
    }
    let delete_id = random_string(16);
    record_status(app, &delete_id, room_id, json!({ "status": "shutting_down" })).await?;
    let status = match delete_room(app, caller, room_id, request).await {
        Ok(shutdown) => json!({ "status": "complete", "shutdown_room": shutdown.to_json() }),
        Err(error) => json!({ "status": "failed", "error": error.message }),
    };
    record_status(app, &delete_id, room_id, status).await?;
    Ok(json!({ "delete_id": delete_id }))
}

async fn record_status(app: &App, delete_id: &str, room_id: &str, mut status: Value) -> ApiResult<()> {
    status["delete_id"] = json!(delete_id);
    status["room_id"] = json!(room_id);
    if status.get("shutdown_room").is_none() {
        status["shutdown_room"] = Shutdown::default().to_json();
    }
    let bytes: bytes::Bytes = serde_json::to_vec(&status).unwrap_or_default().into();
    let kv = app.store.kv();
    kv.put(Bucket::Meta, &KeyPath::new(&[DELETES, delete_id]), bytes.clone()).await?;
    kv.put(Bucket::Meta, &KeyPath::new(&[DELETES_BY_ROOM, room_id, delete_id]), bytes).await?;
    Ok(())
}

/// The shape both status endpoints answer for one deletion.
fn shown_status(mut status: Value) -> Value {
    if let Some(map) = status.as_object_mut() {
        map.remove("room_id");
    }
    status
}

/// # GET /_synapse/admin/v2/rooms/{roomId}/delete_status
pub async fn room_delete_status(app: &App, room_id: &str) -> ApiResult<Value> {
    check_room_id(room_id)?;
    let listing =
        app.store.kv().list(Bucket::Meta, &KeyPath::new(&[DELETES_BY_ROOM, room_id]), MAX_DELETES_PER_ROOM, true).await?;
    let mut results: Vec<Value> =
        listing.entries.iter().filter_map(|(_, stored)| serde_json::from_slice(&stored.value).ok()).collect();
    if results.is_empty() {
        return Err(MatrixError::not_found("No deletion of this room is known"));
    }
    results.sort_by(|a: &Value, b: &Value| a["delete_id"].as_str().cmp(&b["delete_id"].as_str()));
    Ok(json!({ "results": results.into_iter().map(shown_status).collect::<Vec<_>>() }))
}

/// # GET /_synapse/admin/v2/rooms/delete_status/{deleteId}
pub async fn delete_status(app: &App, delete_id: &str) -> ApiResult<Value> {
    let not_found = || MatrixError::not_found("No such deletion");
    if delete_id.is_empty() || delete_id.len() > 64 || !delete_id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(not_found());
    }
    let stored = app.store.kv().get(Bucket::Meta, &KeyPath::new(&[DELETES, delete_id])).await?.ok_or_else(not_found)?;
    let mut status: Value = serde_json::from_slice(&stored.value).map_err(|_| not_found())?;
    if let Some(map) = status.as_object_mut() {
        map.remove("delete_id");
    }
    Ok(shown_status(status))
}

/// The deletion itself: block first (so nobody joins while members leave), the new room, every
/// member out (and into the new room), the aliases, then the purge.
async fn delete_room(app: &App, caller: &Caller, room_id: &str, request: DeleteRequest) -> ApiResult<Shutdown> {
    let mut shutdown = Shutdown::default();
    let known = knows_room(app, room_id).await?;
    if !known {
        if request.block {
            // Synapse's answer for a room it does not know: blocked, nothing else to do.
            block(app, caller, room_id, true).await?;
            return Ok(shutdown);
        }
        return Err(MatrixError::not_found("Room not found"));
    }
    if let Some(owner) = &request.new_room_user_id {
        check_new_room_owner(app, owner).await?;
    }
    if request.block {
        block(app, caller, room_id, true).await?;
    }
    if let Some(owner) = &request.new_room_user_id {
        shutdown.new_room_id = Some(new_room(app, owner, &request).await?);
    }
    let members: Vec<(String, Membership)> = app
        .model
        .with_room(room_id, |room| {
            room.state
                .member_refs()
                .filter_map(|member| Some((member.state_key.to_string(), Membership::parse(member.membership?))))
                .filter(|(_, membership)| matches!(membership, Membership::Join | Membership::Invite | Membership::Knock))
                .collect()
        })
        .unwrap_or_default();
    for (user_id, membership) in members {
        let as_user = acting_as(&user_id);
        let content = member_content(app, &user_id, "leave", None);
        let left = send_event(
            app,
            &as_user,
            NewEvent { room_id, event_type: "m.room.member", state_key: Some(&user_id), content, redacts: None, txn_id: None },
        )
        .await;
        match left {
            Ok(_) => {
                if let (Some(new_room_id), Membership::Join) = (&shutdown.new_room_id, membership)
                    && let Err(error) = membership::join(app, &as_user, new_room_id.clone(), Target::default()).await
                {
                    tracing::warn!(%user_id, error = %error.message, "could not move a member into the new room");
                }
                shutdown.kicked_users.push(user_id);
            }
            Err(error) => {
                tracing::warn!(%room_id, %user_id, error = %error.message, "could not make a member leave a deleted room");
                shutdown.failed_to_kick_users.push(user_id);
            }
        }
    }
    shutdown.local_aliases = move_aliases(app, room_id, shutdown.new_room_id.as_deref()).await?;
    if app.model.with_room(room_id, |room| room.published).unwrap_or(false) {
        super::directory::publish(app, room_id, "private").await?;
    }
    if request.purge {
        app.append_applied(room_id, Entry::RoomPurged { by: caller.user_id.clone() }, &random_event_id()).await?;
    }
    tracing::info!(
        admin = %caller.user_id, %room_id, block = request.block, purge = request.purge,
        left = shutdown.kicked_users.len(), failed = shutdown.failed_to_kick_users.len(), "admin deleted a room"
    );
    Ok(shutdown)
}

/// The operator's step after a purge (`haetae admin purge-room-log`), never a request's: removes
/// a purged room's entries from the event log itself, with the deployment's admin credential (a
/// node's may not purge the log). Refuses unless the room's newest entry is its `room_purged`
/// entry, which stays, so a node replaying from a snapshot taken before the purge still drops
/// the room. Every other entity's entries, before and after, stay where they are.
pub async fn purge_room_log(admin: &haetae_store::admin::Admin, room_id: &str) -> Result<Value, String> {
    if !haetae_matrix::ids::is_valid_room_id(room_id) {
        return Err(format!("{room_id} is not a room id"));
    }
    let last = admin.last_entry_of(room_id).await.map_err(|e| e.to_string())?.ok_or_else(|| format!("{room_id} has no entries in the event log"))?;
    let newest = serde_json::from_slice::<crate::entry::Envelope>(&last.payload).ok().map(|envelope| envelope.entry);
    if !matches!(newest, Some(Entry::RoomPurged { .. })) {
        return Err(format!("the newest log entry of {room_id} is not its purge: delete the room with purge first"));
    }
    let removed = admin.purge_entity_before(room_id, last.partition, last.seq).await.map_err(|e| e.to_string())?;
    tracing::info!(%room_id, removed, partition = last.partition, kept_seq = last.seq, "purged a deleted room's entries from the event log");
    Ok(json!({ "room_id": room_id, "removed_entries": removed, "purge_entry": { "partition": last.partition, "seq": last.seq } }))
}

/// The new room's creator must be an account of this server.
async fn check_new_room_owner(app: &App, user_id: &str) -> ApiResult<()> {
    let localpart = haetae_matrix::ids::localpart(user_id).unwrap_or_default();
    let local = haetae_matrix::ids::server_name(user_id) == Some(app.config.server_name.as_str());
    if !local || accounts::load_account(app, localpart).await?.is_none() {
        return Err(MatrixError::invalid_param("new_room_user_id must be a user of this server"));
    }
    Ok(())
}

/// The room members are moved to: public, its creator the only one who may speak, with the
/// administrator's message.
async fn new_room(app: &App, owner: &str, request: &DeleteRequest) -> ApiResult<String> {
    let as_owner = acting_as(owner);
    let name = request.room_name.clone().unwrap_or_else(|| DEFAULT_NEW_ROOM_NAME.to_string());
    let body = json!({
        "preset": "public_chat",
        "name": name,
        "power_level_content_override": { "users_default": -10 },
    });
    let created = super::room_ops::create_room(app, &as_owner, body).await?;
    let new_room_id = created["room_id"].as_str().unwrap_or_default().to_string();
    if let Some(message) = &request.message {
        let content = json!({ "msgtype": "m.text", "body": message });
        send_event(
            app,
            &as_owner,
            NewEvent {
                room_id: &new_room_id,
                event_type: "m.room.message",
                state_key: None,
                content,
                redacts: None,
                txn_id: None,
            },
        )
        .await?;
    }
    Ok(new_room_id)
}

/// The local aliases of the deleted room: pointed at the new room, or removed.
async fn move_aliases(app: &App, room_id: &str, new_room_id: Option<&str>) -> ApiResult<Vec<String>> {
    let kv = app.store.kv();
    let listing = kv.list_all(Bucket::Aliases, MAX_ALIASES, true).await?;
    let mut moved = Vec::new();
    for (segments, stored) in listing.entries {
        let Some(alias) = segments.into_iter().next() else { continue };
        if stored.value != room_id.as_bytes() {
            continue;
        }
        match new_room_id {
            Some(new_room_id) => {
                kv.put(Bucket::Aliases, &alias, new_room_id.to_string().into()).await?;
            }
            None => kv.delete(Bucket::Aliases, &alias).await?,
        }
        moved.push(alias);
    }
    moved.sort();
    Ok(moved)
}
