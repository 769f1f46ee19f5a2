//! Rooms: creating them, sending into them, reading their state and history (through the read
//! model's windows and chunk cache, never a walk of the timeline), aliases.

use axum::body::Bytes;
use axum::http::StatusCode;
use haetae_matrix::filter::RoomEventFilter;
use haetae_store::{Bucket, KvError};
use serde::Deserialize;
use serde_json::{Value, json};

use super::events::client_event;
use super::rooms::{self, NewEvent, member_content, readable_until, send_event};
use super::{App, Caller};
use crate::error::parse_json;
use crate::error::{ApiResult, MatrixError};
use crate::read_model::{Membership, TimelineItem};

pub async fn create_room(app: &App, caller: &Caller, body: Value) -> ApiResult<Value> {
    app.limit_writes(&caller.user_id)?;
    if !body.is_object() {
        return Err(MatrixError::bad_json("request body must be an object"));
    }
    let plan =
        haetae_matrix::room_creation::plan_create_room(&caller.user_id, &app.config.server_name, &body).map_err(|error| {
            use haetae_matrix::room_creation::CreateRoomError;
            match error {
                CreateRoomError::UnsupportedRoomVersion(v) => MatrixError::new(
                    StatusCode::BAD_REQUEST,
                    "M_UNSUPPORTED_ROOM_VERSION",
                    format!("Unsupported room version {v}"),
                ),
                CreateRoomError::InvalidParam(m) => MatrixError::invalid_param(m),
                other => MatrixError::bad_json(other.to_string()),
            }
        })?;
    let room_id = rooms::new_room_id(&app.config.server_name);
    if let Some(localpart) = &plan.alias_localpart {
        let alias = format!("#{localpart}:{}", app.config.server_name);
        if !haetae_matrix::ids::is_valid_room_alias(&alias) {
            return Err(MatrixError::new(StatusCode::BAD_REQUEST, "M_INVALID_PARAM", "Invalid room alias"));
        }
        match app.store.kv().create(Bucket::Aliases, &alias, room_id.clone().into()).await {
            Ok(_) => {}
            Err(KvError::Exists) => {
                return Err(MatrixError::new(StatusCode::BAD_REQUEST, "M_ROOM_IN_USE", "Room alias already taken"));
            }
            Err(error) => return Err(error.into()),
        }
    }
    for planned in &plan.events {
        let mut content = planned.content.clone();
        if planned.event_type == "m.room.member" && planned.state_key == caller.user_id {
            content = member_content(app, &caller.user_id, "join", Some(&planned.content));
        }
        send_event(
            app,
            caller,
            NewEvent {
                room_id: &room_id,
                event_type: &planned.event_type,
                state_key: Some(&planned.state_key),
                content,
                redacts: None,
                txn_id: None,
            },
        )
        .await?;
    }
    for invitee in &plan.invites {
        let extra = plan.is_direct.then(|| json!({ "is_direct": true }));
        let content = member_content(app, invitee, "invite", extra.as_ref());
        send_event(
            app,
            caller,
            NewEvent {
                room_id: &room_id,
                event_type: "m.room.member",
                state_key: Some(invitee),
                content,
                redacts: None,
                txn_id: None,
            },
        )
        .await?;
    }
    if plan.publish_to_directory {
        super::directory::publish(app, &room_id, "public").await?;
    }
    Ok(json!({ "room_id": room_id }))
}

/// An event's content from a raw body: within the event size limit and a JSON object.
fn content_object(app: &App, body: &Bytes) -> ApiResult<Value> {
    if body.len() > app.config.limits.max_event_bytes {
        return Err(MatrixError::too_large("event too large"));
    }
    let content: Value = parse_json(body)?;
    if !content.is_object() {
        return Err(MatrixError::bad_json("event content must be a JSON object"));
    }
    Ok(content)
}

pub async fn send_message(
    app: &App,
    caller: &Caller,
    (room_id, event_type, txn_id): (String, String, String),
    body: Bytes,
) -> ApiResult<Value> {
    app.limit_writes(&caller.user_id)?;
    let content = content_object(app, &body)?;
    let event_id = send_event(
        app,
        caller,
        NewEvent { room_id: &room_id, event_type: &event_type, state_key: None, content, redacts: None, txn_id: Some(&txn_id) },
    )
    .await?;
    Ok(json!({ "event_id": event_id }))
}

pub async fn put_state(
    app: &App,
    caller: &Caller,
    (room_id, event_type, state_key): (String, String, String),
    body: Bytes,
) -> ApiResult<Value> {
    app.limit_writes(&caller.user_id)?;
    let content = content_object(app, &body)?;
    if event_type == "m.room.canonical_alias" {
        check_canonical_alias(app, &room_id, &content).await?;
    }
    let event_id = send_event(
        app,
        caller,
        NewEvent {
            room_id: &room_id,
            event_type: &event_type,
            state_key: Some(&state_key),
            content,
            redacts: None,
            txn_id: None,
        },
    )
    .await?;
    Ok(json!({ "event_id": event_id }))
}

/// A canonical alias must point at this room (spec: M_BAD_ALIAS otherwise).
async fn check_canonical_alias(app: &App, room_id: &str, content: &Value) -> ApiResult<()> {
    let mut aliases: Vec<&str> =
        content["alt_aliases"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    if let Some(alias) = content["alias"].as_str() {
        aliases.push(alias);
    }
    for alias in aliases {
        let target = app.store.kv().get(Bucket::Aliases, alias).await?;
        if target.map(|t| t.value) != Some(room_id.as_bytes().to_vec().into()) {
            return Err(MatrixError::new(StatusCode::BAD_REQUEST, "M_BAD_ALIAS", format!("{alias} does not point to this room")));
        }
    }
    Ok(())
}

pub async fn get_full_state(app: &App, caller: &Caller, room_id: String) -> ApiResult<Value> {
    Ok(Value::Array(readable_state(app, caller, &room_id).await?))
}

/// The room state `caller` may read: the current state for members, the state as it was when
/// they left for former members.
async fn readable_state(app: &App, caller: &Caller, room_id: &str) -> ApiResult<Vec<Value>> {
    let until = readable_until(app, &caller.user_id, room_id)?;
    if until == u64::MAX {
        return app
            .model
            .with_room(room_id, |room| room.state.iter().collect())
            .ok_or_else(|| MatrixError::forbidden("You are not in this room"));
    }
    app.model.state_at(app.store.log(), room_id, until).await.map_err(MatrixError::unavailable)
}

#[derive(Deserialize)]
pub struct FormatQuery {
    format: Option<String>,
}

pub async fn get_state(
    app: &App,
    caller: &Caller,
    (room_id, event_type, state_key): (String, String, String),
    query: FormatQuery,
) -> ApiResult<Value> {
    let until = readable_until(app, &caller.user_id, &room_id)?;
    let event = if until == u64::MAX {
        app.model
            .with_room(&room_id, |room| room.state.get(&event_type, &state_key))
            .ok_or_else(|| MatrixError::forbidden("You are not in this room"))?
    } else {
        readable_state(app, caller, &room_id)
            .await?
            .into_iter()
            .find(|e| e["type"] == event_type.as_str() && e["state_key"] == state_key.as_str())
    }
    .ok_or_else(|| MatrixError::not_found("Event not found"))?;
    if query.format.as_deref() == Some("event") {
        return Ok(event);
    }
    Ok(event["content"].clone())
}

pub async fn get_event(app: &App, caller: &Caller, (room_id, event_id): (String, String)) -> ApiResult<Value> {
    let until = readable_until(app, &caller.user_id, &room_id)?;
    let visible_from = app.model.with_room(&room_id, |room| room.visible_from(&caller.user_id)).unwrap_or(u64::MAX);
    match rooms::find_event(app, &room_id, &event_id).await? {
        Some(item) if item.seq <= until && item.seq >= visible_from => Ok(client_event(&item, Some(caller))),
        _ => Err(MatrixError::not_found("Event not found")),
    }
}

#[derive(Deserialize)]
pub struct ContextQuery {
    limit: Option<usize>,
    filter: Option<String>,
}

fn parse_room_event_filter(text: Option<&str>) -> ApiResult<RoomEventFilter> {
    match text {
        None => Ok(RoomEventFilter::default()),
        Some(text) => {
            let value: Value = serde_json::from_str(text).map_err(|e| MatrixError::not_json(format!("filter: {e}")))?;
            serde_json::from_value(value).map_err(|e| MatrixError::bad_json(format!("filter: {e}")))
        }
    }
}

pub async fn get_context(
    app: &App,
    caller: &Caller,
    (room_id, event_id): (String, String),
    query: ContextQuery,
) -> ApiResult<Value> {
    let until = readable_until(app, &caller.user_id, &room_id)?;
    let filter = parse_room_event_filter(query.filter.as_deref())?;
    let limit = query.limit.unwrap_or(10).min(app.config.limits.max_events_per_response);
    let visible_from = app.model.with_room(&room_id, |room| room.visible_from(&caller.user_id)).unwrap_or(u64::MAX);
    let item = match rooms::find_event(app, &room_id, &event_id).await? {
        Some(item) if item.seq <= until && item.seq >= visible_from => item,
        _ => return Err(MatrixError::not_found("Event not found")),
    };
    let half = limit / 2;
    let log = app.store.log();
    let keep = |i: &TimelineItem| filter.matches(&i.event);
    let before = app
        .model
        .page_back(log, &room_id, item.seq, visible_from, limit - half.min(limit), keep)
        .await
        .map_err(MatrixError::unavailable)?
        .items;
    let after = app
        .model
        .page_forward(log, &room_id, item.seq + 1, until.min(app.model.applied(app.model.partition_of(&room_id))), half, keep)
        .await
        .map_err(MatrixError::unavailable)?
        .items;
    let start = before.last().map(|i| i.seq).unwrap_or(item.seq);
    let end = after.last().map(|i| i.seq + 1).unwrap_or(item.seq + 1);
    let state: Vec<Value> = app.model.with_room(&room_id, |room| room.state.iter().collect()).unwrap_or_default();
    Ok(json!({
        "event": client_event(&item, Some(caller)),
        "events_before": before.iter().map(|i| client_event(i, Some(caller))).collect::<Vec<_>>(),
        "events_after": after.iter().map(|i| client_event(i, Some(caller))).collect::<Vec<_>>(),
        "state": state,
        "start": super::sync::room_token(start),
        "end": super::sync::room_token(end),
    }))
}

#[derive(Deserialize)]
pub struct MessagesQuery {
    from: Option<String>,
    to: Option<String>,
    dir: Option<String>,
    limit: Option<String>,
    filter: Option<String>,
}

pub async fn get_messages(app: &App, caller: &Caller, room_id: String, query: MessagesQuery) -> ApiResult<Value> {
    let until = readable_until(app, &caller.user_id, &room_id)?;
    let backwards = match query.dir.as_deref() {
        Some("b") => true,
        Some("f") => false,
        _ => return Err(MatrixError::invalid_param("dir must be 'b' or 'f'")),
    };
    let limit = match &query.limit {
        Some(text) => text.parse::<usize>().map_err(|_| MatrixError::invalid_param("limit must be a number"))?,
        None => 10,
    }
    .clamp(1, app.config.limits.max_events_per_response);
    let filter = parse_room_event_filter(query.filter.as_deref())?;
    let partition = app.model.partition_of(&room_id);
    let parse = |token: &str| {
        super::sync::position_in(token, partition).ok_or_else(|| MatrixError::invalid_param("invalid pagination token"))
    };
    let from = query.from.as_deref().map(parse).transpose()?;
    let to = query.to.as_deref().map(parse).transpose()?;
    let (visible_from, last_seq) = app
        .model
        .with_room(&room_id, |room| (room.visible_from(&caller.user_id), room.last_event_seq()))
        .ok_or_else(|| MatrixError::forbidden("You are not in this room"))?;
    let applied = app.model.applied(partition);
    let keep = |item: &TimelineItem| filter.matches(&item.event);
    let log = app.store.log();
    let mut next = None;
    let items = if backwards {
        // Events strictly before `from` (a token names the point just before a position).
        let before = from.unwrap_or(u64::MAX).min(until.saturating_add(1)).min(applied.saturating_add(1));
        let floor = visible_from.max(to.unwrap_or(0));
        let page = app.model.page_back(log, &room_id, before, floor, limit, keep).await.map_err(MatrixError::unavailable)?;
        if page.full {
            next = page.items.last().map(|item| item.seq).filter(|seq| *seq > floor);
        }
        page.items
    } else {
        let start = from.unwrap_or(0).max(visible_from);
        let ceiling = until.min(applied).min(to.map_or(u64::MAX, |to| to.saturating_sub(1)));
        let page = app.model.page_forward(log, &room_id, start, ceiling, limit, keep).await.map_err(MatrixError::unavailable)?;
        next = Some(page.items.last().map(|item| item.seq + 1).unwrap_or(start));
        page.items
    };
    let chunk: Vec<Value> = items.iter().map(|item| client_event(item, Some(caller))).collect();
    let start = query.from.clone().unwrap_or_else(|| super::sync::room_token(if backwards { last_seq + 1 } else { 0 }));
    let mut state = Vec::new();
    if filter.lazy_load_members {
        let mut senders: Vec<&str> = items.iter().map(|item| &*item.sender).collect();
        senders.sort();
        senders.dedup();
        state = app
            .model
            .with_room(&room_id, |room| {
                senders.iter().filter_map(|sender| room.state.get("m.room.member", sender)).collect()
            })
            .unwrap_or_default();
    }
    let mut response = json!({ "start": start, "chunk": chunk, "state": state });
    if let Some(next) = next {
        response["end"] = json!(super::sync::room_token(next));
    }
    Ok(response)
}

#[derive(Deserialize)]
pub struct MembersQuery {
    membership: Option<String>,
    not_membership: Option<String>,
}

pub async fn get_members(app: &App, caller: &Caller, room_id: String, query: MembersQuery) -> ApiResult<Value> {
    readable_until(app, &caller.user_id, &room_id)?;
    let chunk: Vec<Value> = app
        .model
        .with_room(&room_id, |room| {
            room.state
                .member_refs()
                .filter(|e| {
                    let membership = e.membership.unwrap_or("");
                    query.membership.as_deref().is_none_or(|m| m == membership)
                        && query.not_membership.as_deref().is_none_or(|m| m != membership)
                })
                .map(|e| e.parse())
                .collect()
        })
        .ok_or_else(|| MatrixError::forbidden("You are not in this room"))?;
    Ok(json!({ "chunk": chunk }))
}

pub async fn get_joined_members(app: &App, caller: &Caller, room_id: String) -> ApiResult<Value> {
    let joined = app
        .model
        .with_room(&room_id, |room| {
            // Anyone may see who is in a world-readable room (as they may read its history).
            let world_readable = room.state.history_visibility() == "world_readable";
            if room.state.membership(&caller.user_id) != Some("join") && !world_readable {
                return None;
            }
            let mut joined = serde_json::Map::new();
            for member in room.state.member_refs().filter(|e| e.membership == Some("join")) {
                let event = member.parse();
                joined.insert(
                    member.state_key.to_string(),
                    json!({ "display_name": event["content"]["displayname"], "avatar_url": event["content"]["avatar_url"] }),
                );
            }
            Some(joined)
        })
        .flatten()
        .ok_or_else(|| MatrixError::forbidden("You are not in this room"))?;
    Ok(json!({ "joined": joined }))
}

pub async fn joined_rooms(app: &App, caller: &Caller) -> Value {
    let rooms: Vec<String> = app.model.with_user(&caller.user_id, |user| user.joined_rooms().cloned().collect());
    json!({ "joined_rooms": rooms })
}

#[derive(Deserialize)]
pub struct RedactBody {
    reason: Option<String>,
}

pub async fn redact(
    app: &App,
    caller: &Caller,
    (room_id, event_id, txn_id): (String, String, String),
    body: RedactBody,
) -> ApiResult<Value> {
    app.limit_writes(&caller.user_id)?;
    let mut content = json!({ "redacts": event_id });
    if let Some(reason) = body.reason {
        content["reason"] = json!(reason);
    }
    let event_id = send_event(
        app,
        caller,
        NewEvent {
            room_id: &room_id,
            event_type: "m.room.redaction",
            state_key: None,
            content,
            redacts: Some(&event_id),
            txn_id: Some(&txn_id),
        },
    )
    .await?;
    Ok(json!({ "event_id": event_id }))
}

fn check_alias(app: &App, alias: &str) -> ApiResult<()> {
    if !haetae_matrix::ids::is_valid_room_alias(alias) {
        return Err(MatrixError::invalid_param("Invalid room alias"));
    }
    if haetae_matrix::ids::server_name(alias) != Some(app.config.server_name.as_str()) {
        return Err(MatrixError::invalid_param("Alias is not on this server"));
    }
    Ok(())
}

pub async fn get_alias(app: &App, alias: String) -> ApiResult<Value> {
    check_alias(app, &alias)?;
    let room_id = rooms::resolve_room(app, &alias).await?;
    Ok(json!({ "room_id": room_id, "servers": [app.config.server_name] }))
}

#[derive(Deserialize)]
pub struct PutAlias {
    room_id: String,
}

pub async fn put_alias(app: &App, caller: &Caller, alias: String, body: PutAlias) -> ApiResult<Value> {
    check_alias(app, &alias)?;
    match app.model.membership(&body.room_id, &caller.user_id) {
        Some(Membership::Join) => {}
        _ if !app.model.knows_room(&body.room_id) => {
            return Err(MatrixError::not_found("Room not found"));
        }
        _ => return Err(MatrixError::forbidden("You are not in this room")),
    }
    match app.store.kv().create(Bucket::Aliases, &alias, body.room_id.into()).await {
        Ok(_) => Ok(json!({})),
        Err(KvError::Exists) => Err(MatrixError::new(StatusCode::CONFLICT, "M_UNKNOWN", "Room alias already exists")),
        Err(error) => Err(error.into()),
    }
}

pub async fn delete_alias(app: &App, caller: &Caller, alias: String) -> ApiResult<Value> {
    check_alias(app, &alias)?;
    let room_id = rooms::resolve_room(app, &alias).await?;
    let allowed = app
        .model
        .with_room(&room_id, |room| {
            let levels = room.state.power_levels();
            room.state.membership(&caller.user_id) == Some("join")
                && levels.user_level(&caller.user_id) >= levels.event_level("m.room.canonical_alias", true)
        })
        .unwrap_or(false);
    if !allowed {
        return Err(MatrixError::forbidden("Not allowed to remove this alias"));
    }
    app.store.kv().delete(Bucket::Aliases, &alias).await?;
    Ok(json!({}))
}
