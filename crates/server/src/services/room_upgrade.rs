//! `POST /rooms/{roomId}/upgrade`: replaces a room with a new one of another room version. The
//! new room is created as `/createRoom` would (its create event names the old room as
//! predecessor) with the old room's important state copied, its bans repeated and its local
//! aliases moved; then the old room gets a tombstone pointing at the new one, and its power
//! levels are raised so ordinary members can no longer speak or invite there.
//!
//! Each step is an ordinary write (read-your-writes); an upgrade that fails half way leaves a
//! new room without a tombstone in the old one, which the caller may upgrade again.

use axum::http::StatusCode;
use haetae_store::Bucket;
use serde_json::{Map, Value, json};

use super::rooms::{NewEvent, knows_room, send_event};
use super::{App, Caller};
use crate::error::{ApiResult, MatrixError};

/// State the new room starts with, copied from the old one (the spec's list).
const COPIED_STATE: [&str; 8] = [
    "m.room.server_acl",
    "m.room.encryption",
    "m.room.name",
    "m.room.avatar",
    "m.room.topic",
    "m.room.guest_access",
    "m.room.history_visibility",
    "m.room.join_rules",
];
/// Most bans carried over to the new room.
const MAX_BANS: usize = 10_000;

/// What the upgrade reads of the old room, in one look.
struct OldRoom {
    state: Vec<(String, Value)>,
    power_levels: Value,
    caller_level: i64,
    needed_level: i64,
    may_tombstone: bool,
    room_type: Option<Value>,
    last_event_id: Option<String>,
    bans: Vec<String>,
    canonical_alias: Option<Value>,
    public: bool,
}

pub async fn upgrade(app: &App, caller: &Caller, room_id: String, body: Value) -> ApiResult<Value> {
    let Some(body) = body.as_object() else { return Err(MatrixError::bad_json("request body must be an object")) };
    let new_version = match body.get("new_version") {
        Some(Value::String(version)) => version.clone(),
        None => return Err(MatrixError::bad_json("new_version is required")),
        Some(_) => return Err(MatrixError::bad_json("new_version must be a string")),
    };
    if !haetae_matrix::is_supported_room_version(&new_version) {
        return Err(MatrixError::new(
            StatusCode::BAD_REQUEST,
            "M_UNSUPPORTED_ROOM_VERSION",
            format!("Unsupported room version {new_version}"),
        ));
    }
    if !haetae_matrix::ids::is_valid_room_id(&room_id) {
        return Err(MatrixError::invalid_param("Invalid room id"));
    }
    if !knows_room(app, &room_id).await? {
        return Err(MatrixError::forbidden("You are not in this room"));
    }
    let old = app
        .model
        .with_room(&room_id, |room| {
            let state = &room.state;
            if state.membership(&caller.user_id) != Some("join") {
                return None;
            }
            let levels = state.power_levels();
            let copied: Vec<(String, Value)> =
                COPIED_STATE.iter().filter_map(|t| state.content(t, "").map(|content| (t.to_string(), content))).collect();
            let needed_level = copied
                .iter()
                .map(|(t, _)| levels.event_level(t, true))
                .chain([levels.event_level("m.room.power_levels", true), levels.event_level("m.room.canonical_alias", true)])
                .max()
                .unwrap_or(0);
            Some(OldRoom {
                state: copied,
                power_levels: state.content("m.room.power_levels", "").unwrap_or_else(|| levels.to_content()),
                caller_level: levels.user_level(&caller.user_id),
                needed_level,
                may_tombstone: levels.can_send(&caller.user_id, "m.room.tombstone", true),
                room_type: state.create_event().and_then(|create| create["content"].get("type").cloned()),
                last_event_id: room.window_between(0, u64::MAX).next_back().map(|item| item.event_id.to_string()),
                bans: state.members("ban").take(MAX_BANS).map(str::to_string).collect(),
                canonical_alias: state.content("m.room.canonical_alias", ""),
                public: state.join_rule() == "public",
            })
        })
        .flatten()
        .ok_or_else(|| MatrixError::forbidden("You are not in this room"))?;
    if !old.may_tombstone {
        return Err(MatrixError::forbidden("You may not upgrade this room"));
    }

    // The new room. The caller needs enough power to set the copied state; when the old levels
    // do not give it, it is raised for the creation and the old levels are restored afterwards.
    let mut predecessor = json!({ "room_id": room_id });
    if let Some(event_id) = &old.last_event_id {
        predecessor["event_id"] = json!(event_id);
    }
    let mut creation_content = json!({ "predecessor": predecessor });
    if let Some(room_type) = &old.room_type {
        creation_content["type"] = room_type.clone();
    }
    let mut power_levels = old.power_levels.clone();
    let raised = old.caller_level < old.needed_level;
    if raised {
        power_levels["users"][&caller.user_id] = json!(old.needed_level);
    }
    let initial_state: Vec<Value> =
        old.state.iter().map(|(t, content)| json!({ "type": t, "state_key": "", "content": content })).collect();
    let create = json!({
        "room_version": new_version,
        "preset": if old.public { "public_chat" } else { "private_chat" },
        "creation_content": creation_content,
        "initial_state": initial_state,
        "power_level_content_override": power_levels,
    });
    let created = super::room_ops::create_room(app, caller, create).await?;
    let new_room = created["room_id"].as_str().unwrap_or_default().to_string();
    let send_state = |target: String, event_type: &'static str, state_key: String, content: Value| async move {
        let new = NewEvent { room_id: &target, event_type, state_key: Some(&state_key), content, redacts: None, txn_id: None };
        send_event(app, caller, new).await
    };
    for banned in &old.bans {
        let content = json!({ "membership": "ban" });
        send_state(new_room.clone(), "m.room.member", banned.clone(), content).await?;
    }
    // Local aliases follow the room.
    if let Some(alias_content) = &old.canonical_alias {
        let mut aliases: Vec<&str> = alias_content["alias"].as_str().into_iter().collect();
        aliases.extend(alias_content["alt_aliases"].as_array().into_iter().flatten().filter_map(Value::as_str));
        let suffix = format!(":{}", app.config.server_name);
        for alias in aliases.iter().filter(|a| a.ends_with(&suffix)) {
            let Some(stored) = app.store.kv().get(Bucket::Aliases, *alias).await? else { continue };
            if stored.value.as_ref() == room_id.as_bytes() {
                app.store.kv().update(Bucket::Aliases, *alias, new_room.clone().into(), stored.revision).await?;
            }
        }
        send_state(new_room.clone(), "m.room.canonical_alias", String::new(), alias_content.clone()).await?;
        send_state(room_id.clone(), "m.room.canonical_alias", String::new(), json!({})).await?;
    }
    if raised {
        send_state(new_room.clone(), "m.room.power_levels", String::new(), old.power_levels.clone()).await?;
    }

    // The old room points at the new one, and ordinary members may no longer speak or invite.
    let tombstone = json!({ "body": "This room has been replaced", "replacement_room": new_room });
    send_state(room_id.clone(), "m.room.tombstone", String::new(), tombstone).await?;
    let mut restricted = old.power_levels.clone();
    if let Some(levels) = restricted.as_object_mut() {
        let users_default = levels.get("users_default").and_then(Value::as_i64).unwrap_or(0);
        let level = (users_default + 1).max(50);
        for key in ["events_default", "invite"] {
            let current = levels.get(key).and_then(Value::as_i64).unwrap_or(0);
            levels.insert(key.to_string(), json!(current.max(level)));
        }
    } else {
        restricted = Value::Object(Map::new());
    }
    if restricted != old.power_levels {
        // Refused when the caller may not change the levels: the room is upgraded all the same.
        let _ = send_state(room_id.clone(), "m.room.power_levels", String::new(), restricted).await;
    }
    Ok(json!({ "replacement_room": new_room }))
}
