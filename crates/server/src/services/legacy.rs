//! The deprecated API from before `/sync`: `GET /events` (an event stream), `GET /events/{eventId}`,
//! `GET /initialSync` and `GET /rooms/{roomId}/initialSync`. Thin wrappers: the streams and
//! snapshots are `/sync` answers reshaped, and an event is found by the position its id names.
//! No peeking: a room the caller is not in answers as `/sync` would not show it.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::events::client_event;
use super::rooms::readable_until;
use super::sync::{SyncQuery, sync};
use super::{App, Caller};
use crate::error::{ApiResult, MatrixError};
use crate::read_model::event_ids::position_of;

/// Most of the caller's rooms `GET /events/{eventId}` looks in (those on the event's partition).
const MAX_ROOMS_LOOKED_IN: usize = 1_000;
/// Timeline events per room in an initial sync when the client names no limit, and at most.
const DEFAULT_INITIAL_LIMIT: u64 = 10;
const MAX_INITIAL_LIMIT: u64 = 100;

/// A filter that selects nothing: a sync with it only yields the current token.
fn nothing() -> String {
    json!({ "room": { "rooms": [] }, "presence": { "types": [] }, "account_data": { "types": [] } }).to_string()
}

#[derive(Deserialize)]
pub struct EventsQuery {
    from: Option<String>,
    timeout: Option<String>,
    room_id: Option<String>,
}

/// `GET /events`: what happened since `from` (now, without one), waiting up to `timeout`.
pub async fn events(app: &App, caller: &Caller, query: EventsQuery) -> ApiResult<Value> {
    if let Some(timeout) = &query.timeout {
        timeout.parse::<u64>().map_err(|_| MatrixError::invalid_param("timeout must be a non-negative integer"))?;
    }
    let from = match query.from {
        Some(from) => from,
        None => current_token(app, caller).await?,
    };
    let filter = match &query.room_id {
        Some(room_id) => {
            readable_until(app, &caller.user_id, room_id)?;
            Some(json!({ "room": { "rooms": [room_id] }, "account_data": { "types": [] } }).to_string())
        }
        None => None,
    };
    let synced = sync(app, caller, SyncQuery::new(Some(from.clone()), query.timeout, filter)).await?;
    let mut chunk = Vec::new();
    if let Some(rooms) = synced["rooms"]["join"].as_object() {
        for (room_id, room) in rooms {
            for event in room["timeline"]["events"].as_array().into_iter().flatten() {
                let mut event = event.clone();
                event["room_id"] = json!(room_id);
                chunk.push(event);
            }
        }
    }
    if query.room_id.is_none() {
        chunk.extend(synced["presence"]["events"].as_array().into_iter().flatten().cloned());
    }
    Ok(json!({ "start": from, "end": synced["next_batch"], "chunk": chunk }))
}

async fn current_token(app: &App, caller: &Caller) -> ApiResult<String> {
    let now = sync(app, caller, SyncQuery::new(None, None, Some(nothing()))).await?;
    Ok(now["next_batch"].as_str().unwrap_or_default().to_string())
}

/// `GET /events/{eventId}`: the event, if it is in a room the caller may read.
pub async fn event(app: &App, caller: &Caller, event_id: String) -> ApiResult<Value> {
    let not_found = || MatrixError::not_found("Event not found");
    let (partition, seq) = position_of(&event_id).ok_or_else(not_found)?;
    let rooms: Vec<String> = app.model.with_user(&caller.user_id, |user| {
        user.rooms.keys().filter(|room| app.model.partition_of(room) == partition).take(MAX_ROOMS_LOOKED_IN).cloned().collect()
    });
    let log = app.store.log();
    for room_id in rooms {
        let Ok(until) = readable_until(app, &caller.user_id, &room_id) else { continue };
        let visible_from = app.model.with_room(&room_id, |room| room.visible_from(&caller.user_id)).unwrap_or(u64::MAX);
        if seq > until || seq < visible_from {
            continue;
        }
        if let Some(item) = app.model.item_at(log, &room_id, seq).await.map_err(MatrixError::unavailable)? {
            let mut event = client_event(&item, Some(caller));
            event["room_id"] = json!(room_id);
            return Ok(event);
        }
    }
    Err(not_found())
}

#[derive(Deserialize)]
pub struct InitialSyncQuery {
    limit: Option<String>,
    archived: Option<String>,
}

fn initial_limit(limit: Option<&str>) -> ApiResult<u64> {
    match limit {
        None => Ok(DEFAULT_INITIAL_LIMIT),
        Some(text) => text
            .parse::<u64>()
            .map(|n| n.clamp(1, MAX_INITIAL_LIMIT))
            .map_err(|_| MatrixError::invalid_param("limit must be a non-negative integer")),
    }
}

/// One room of an initial sync, reshaped: `messages` from the timeline, `state` from the state
/// section and the timeline's state events.
/// `end` is the sync token the snapshot was taken at.
fn room_snapshot(room_id: &str, membership: &str, room: &Value, visibility: &str, end: &str) -> Value {
    let timeline: Vec<Value> = room["timeline"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|event| {
            let mut event = event.clone();
            event["room_id"] = json!(room_id);
            event
        })
        .collect();
    let mut state: Vec<Value> = room["state"]["events"].as_array().cloned().unwrap_or_default();
    state.extend(timeline.iter().filter(|e| e.get("state_key").is_some()).cloned());
    for event in &mut state {
        event["room_id"] = json!(room_id);
    }
    let snapshot = json!({
        "room_id": room_id,
        "membership": membership,
        "messages": { "chunk": timeline, "start": room["timeline"]["prev_batch"].as_str().unwrap_or(end), "end": end },
        "state": state,
        "visibility": visibility,
        "account_data": room["account_data"]["events"].as_array().cloned().unwrap_or_default(),
    });
    snapshot
}

fn visibility(app: &App, room_id: &str) -> &'static str {
    let public = app.model.with_room(room_id, |room| room.state.join_rule() == "public").unwrap_or(false);
    if public { "public" } else { "private" }
}

/// `GET /initialSync`: every room with its state and latest messages, presence, account data.
pub async fn initial_sync(app: &App, caller: &Caller, query: InitialSyncQuery) -> ApiResult<Value> {
    let limit = initial_limit(query.limit.as_deref())?;
    let archived = match query.archived.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(MatrixError::invalid_param("archived must be true or false")),
    };
    let filter = json!({ "room": { "timeline": { "limit": limit }, "include_leave": archived } }).to_string();
    let synced = sync(app, caller, SyncQuery::new(None, None, Some(filter))).await?;
    let end = synced["next_batch"].clone();
    let mut rooms = Vec::new();
    for (section, membership) in [("join", "join"), ("invite", "invite"), ("leave", "leave")] {
        for (room_id, room) in synced["rooms"][section].as_object().cloned().unwrap_or_default() {
            let mut snapshot = room_snapshot(&room_id, membership, &room, visibility(app, &room_id), end.as_str().unwrap_or(""));
            if section == "invite" {
                snapshot["invite"] = room["invite_state"].clone();
            }
            rooms.push(snapshot);
        }
    }
    Ok(json!({
        "end": end,
        "rooms": rooms,
        "presence": synced["presence"]["events"],
        "account_data": synced["account_data"]["events"],
    }))
}

/// `GET /rooms/{roomId}/initialSync`: one room's state and latest messages.
pub async fn room_initial_sync(app: &App, caller: &Caller, room_id: String) -> ApiResult<Value> {
    if !haetae_matrix::ids::is_valid_room_id(&room_id) {
        return Err(MatrixError::invalid_param("Invalid room id"));
    }
    readable_until(app, &caller.user_id, &room_id)?;
    let membership = app.model.membership(&room_id, &caller.user_id).map(|m| m.as_str().to_string());
    let filter = json!({
        "room": { "rooms": [room_id], "timeline": { "limit": DEFAULT_INITIAL_LIMIT }, "include_leave": true },
        "presence": { "types": [] },
    })
    .to_string();
    let synced = sync(app, caller, SyncQuery::new(None, None, Some(filter))).await?;
    let empty = Value::Object(Map::new());
    let room = ["join", "leave"].iter().find_map(|section| synced["rooms"][section].get(&room_id)).unwrap_or(&empty);
    let end = synced["next_batch"].as_str().unwrap_or("");
    let mut snapshot = room_snapshot(&room_id, membership.as_deref().unwrap_or("leave"), room, visibility(app, &room_id), end);
    if let Some(object) = snapshot.as_object_mut() {
        object.insert("presence".into(), json!([]));
    }
    Ok(snapshot)
}
