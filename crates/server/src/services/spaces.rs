//! Spaces: `GET /rooms/{roomId}/hierarchy`, the rooms below a space found by following its
//! `m.space.child` state events breadth first. Every room's details come from this node's read
//! model (no federation: a child this server does not know is left out). The walk is bounded: at
//! most [`MAX_DEPTH`] levels and [`MAX_ROOMS_WALKED`] rooms per request; a page token is the
//! number of rooms already returned (with the parameters it was made for), and the next page
//! walks again from the root.

use serde::Deserialize;
use serde_json::{Value, json};

use super::directory::room_chunk;
use super::rooms::knows_room;
use super::{App, Caller};
use crate::error::{ApiResult, MatrixError};
use crate::read_model::{Membership, Room};

/// Rooms per page when the client names no limit, and at most.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 100;
/// Deepest level the walk goes to (the root is level 0).
const MAX_DEPTH: usize = 10;
/// Most rooms one request looks at, whatever pages it returns.
const MAX_ROOMS_WALKED: usize = 2_000;
/// Most children one room contributes to the walk.
const MAX_CHILDREN: usize = 500;
/// Most rooms of a restricted room's allow list that are checked.
const MAX_ALLOW_ROOMS: usize = 50;

#[derive(Deserialize)]
pub struct HierarchyQuery {
    suggested_only: Option<String>,
    limit: Option<String>,
    max_depth: Option<String>,
    from: Option<String>,
}

/// Whether `user_id` may see `room`'s details: a member or invitee, or anyone when the room is
/// world readable or may be joined (or knocked on) without an invite. A restricted room is seen
/// by members of a room its join rules allow: those rooms are returned for the caller to check
/// outside this room's lock (the read model's locks are taken one at a time).
fn may_see(room: &Room, user_id: &str) -> Result<bool, Vec<String>> {
    let state = &room.state;
    if matches!(state.membership(user_id), Some("join" | "invite" | "knock")) || state.history_visibility() == "world_readable" {
        return Ok(true);
    }
    match state.join_rule() {
        "public" | "knock" => Ok(true),
        "restricted" | "knock_restricted" => Err(state
            .content("m.room.join_rules", "")
            .and_then(|c| c["allow"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter(|a| a["type"] == "m.room_membership")
            .filter_map(|a| a["room_id"].as_str().map(str::to_string))
            .filter(|other| *other != room.room_id)
            .take(MAX_ALLOW_ROOMS)
            .collect()),
        _ => Ok(false),
    }
}

/// Whether the caller is joined to one of `rooms` (a restricted room's allow list).
fn joined_one_of(app: &App, rooms: &[String], user_id: &str) -> bool {
    rooms.iter().any(|other| app.model.membership(other, user_id) == Some(Membership::Join))
}

/// A room's valid `m.space.child` events (non-empty `via`), in the spec's order: by `order`
/// when it is a valid one, then by timestamp, then by room id.
fn children(room: &Room, suggested_only: bool) -> Vec<Value> {
    let mut children: Vec<Value> = room
        .state
        .refs()
        .filter(|r| r.event_type == "m.space.child")
        .map(|r| r.parse())
        .filter(|event| event["content"]["via"].as_array().is_some_and(|via| !via.is_empty()))
        .filter(|event| !suggested_only || event["content"]["suggested"] == true)
        .take(MAX_CHILDREN)
        .collect();
    let order_of = |event: &Value| {
        event["content"]["order"]
            .as_str()
            .filter(|o| o.len() <= 50 && o.bytes().all(|b| (0x20..=0x7e).contains(&b)))
            .map(str::to_string)
    };
    children.sort_by(|a, b| {
        // Children with an order come first.
        let key = |e: &Value| {
            let order = order_of(e);
            (
                order.is_none(),
                order,
                e["origin_server_ts"].as_u64().unwrap_or(0),
                e["state_key"].as_str().unwrap_or("").to_string(),
            )
        };
        key(a).cmp(&key(b))
    });
    children
}

/// The stripped form of a child event the hierarchy shows.
fn stripped_child(event: &Value) -> Value {
    json!({
        "type": event["type"],
        "state_key": event["state_key"],
        "content": event["content"],
        "sender": event["sender"],
        "origin_server_ts": event["origin_server_ts"],
    })
}

fn parse_bool(value: Option<&str>, name: &str) -> ApiResult<bool> {
    match value {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(MatrixError::invalid_param(format!("{name} must be true or false"))),
    }
}

fn parse_count(value: Option<&str>, name: &str) -> ApiResult<Option<usize>> {
    value
        .map(|text| {
            text.parse::<usize>().map_err(|_| MatrixError::invalid_param(format!("{name} must be a non-negative integer")))
        })
        .transpose()
}

/// `GET /v1/rooms/{roomId}/hierarchy`.
pub async fn hierarchy(app: &App, caller: &Caller, room_id: String, query: HierarchyQuery) -> ApiResult<Value> {
    if !haetae_matrix::ids::is_valid_room_id(&room_id) {
        return Err(MatrixError::invalid_param("Invalid room id"));
    }
    let suggested_only = parse_bool(query.suggested_only.as_deref(), "suggested_only")?;
    let limit = match parse_count(query.limit.as_deref(), "limit")? {
        Some(0) => return Err(MatrixError::invalid_param("limit must be positive")),
        Some(n) => n.min(MAX_LIMIT),
        None => DEFAULT_LIMIT,
    };
    let max_depth = parse_count(query.max_depth.as_deref(), "max_depth")?.unwrap_or(MAX_DEPTH).min(MAX_DEPTH);
    // A token carries the parameters it was made for: the spec asks to refuse a change of them.
    let fingerprint = format!("{}.{max_depth}", u8::from(suggested_only));
    let skip = match query.from.as_deref() {
        None => 0,
        Some(token) => {
            let invalid = || MatrixError::invalid_param("invalid or mismatching from token");
            let (offset, made_for) = token.strip_prefix('h').and_then(|t| t.split_once('_')).ok_or_else(invalid)?;
            if made_for != fingerprint {
                return Err(invalid());
            }
            offset.parse::<usize>().map_err(|_| invalid())?
        }
    };
    if !knows_room(app, &room_id).await? {
        return Err(MatrixError::not_found("Room not found"));
    }
    let visible = match app.model.with_room(&room_id, |room| may_see(room, &caller.user_id)) {
        None => false,
        Some(Ok(visible)) => visible,
        Some(Err(allow)) => joined_one_of(app, &allow, &caller.user_id),
    };
    if !visible {
        return Err(MatrixError::forbidden("You may not see this room"));
    }
    // Breadth first from the root; each room once.
    let mut rooms = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut queue = std::collections::VecDeque::from([(room_id.clone(), 0usize)]);
    seen.insert(room_id.clone());
    let mut walked = 0;
    let mut more = false;
    while let Some((current, depth)) = queue.pop_front() {
        if walked >= MAX_ROOMS_WALKED {
            break;
        }
        walked += 1;
        let entry = app
            .model
            .with_room(&current, |room| {
                let visible = may_see(room, &caller.user_id);
                if visible == Ok(false) {
                    return None;
                }
                let children = children(room, suggested_only);
                let mut chunk = room_chunk(room);
                chunk["children_state"] = Value::Array(children.iter().map(stripped_child).collect());
                let child_ids: Vec<String> =
                    children.iter().filter_map(|c| c["state_key"].as_str().map(str::to_string)).collect();
                Some((chunk, child_ids, visible.err()))
            })
            .flatten();
        let Some((chunk, child_ids, allow)) = entry else { continue };
        if let Some(allow) = allow
            && !joined_one_of(app, &allow, &caller.user_id)
        {
            continue;
        }
        if depth < max_depth {
            for child in child_ids {
                if seen.insert(child.clone()) {
                    queue.push_back((child, depth + 1));
                }
            }
        }
        if rooms.len() == skip + limit {
            more = true;
            break;
        }
        rooms.push(chunk);
    }
    let page: Vec<Value> = rooms.into_iter().skip(skip).collect();
    let mut response = json!({ "rooms": page });
    if more {
        response["next_batch"] = json!(format!("h{}_{fingerprint}", skip + limit));
    }
    Ok(response)
}
