//! `GET /notifications`: the events that notified the caller, newest first, found by the same
//! push rule evaluation that gives sync its unread counts. Like those counts, it looks at the
//! rooms' recent windows only (see ARCHITECTURE.md, "Unread counts look at the window"): at most
//! [`MAX_EVENTS_PER_ROOM`] events of each of the caller's [`MAX_ROOMS`] most recently active
//! joined rooms are evaluated per request.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use haetae_matrix::push::{PushContext, first_match, outcome};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::events::client_event;
use super::{App, Caller};
use crate::error::{ApiResult, MatrixError};
use crate::read_model::TimelineItem;
use crate::read_model::event_ids::position_of;

/// Notifications per page when the client names no limit, and at most.
const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 100;
/// Most rooms one request looks at (the most recently active of the caller's joined rooms).
const MAX_ROOMS: usize = 500;
/// Most events of one room's recent window one request evaluates (newest first).
const MAX_EVENTS_PER_ROOM: usize = 100;

#[derive(Deserialize)]
pub struct NotificationsQuery {
    from: Option<String>,
    limit: Option<String>,
    only: Option<String>,
}

/// Notifications are ordered by (timestamp, room, position), newest first; a page token is the
/// last one a page returned.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Key {
    ts: u64,
    room: String,
    seq: u64,
}

struct Notification {
    key: Key,
    item: TimelineItem,
    actions: Value,
    read: bool,
}

pub async fn notifications(app: &App, caller: &Caller, query: NotificationsQuery) -> ApiResult<Value> {
    let limit = match query.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(text) => text.parse::<usize>().map_err(|_| MatrixError::invalid_param("limit must be a non-negative integer"))?,
    }
    .clamp(1, MAX_LIMIT);
    let only_highlight = match query.only.as_deref() {
        None | Some("") => false,
        Some("highlight") => true,
        Some(_) => return Err(MatrixError::invalid_param("only must be 'highlight'")),
    };
    let from: Option<Key> = match query.from.as_deref() {
        None => None,
        Some(token) => {
            let invalid = || MatrixError::invalid_param("invalid from token");
            let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
            Some(serde_json::from_slice(&bytes).map_err(|_| invalid())?)
        }
    };
    let me = caller.user_id.as_str();
    let (stored_rules, rooms) = app.model.with_user(me, |user| {
        (user.account_data.get("m.push_rules").map(|(_, rules)| rules.clone()), user.joined_rooms().cloned().collect::<Vec<_>>())
    });
    let rules = match stored_rules {
        Some(rules) => std::sync::Arc::new(rules),
        None => app.default_push_rules.get(me),
    };
    // The most recently active rooms first, at most MAX_ROOMS of them.
    let mut rooms: Vec<(u64, String)> = rooms
        .into_iter()
        .filter_map(|room_id| {
            let ts = app.model.with_room(&room_id, |room| room.window_between(0, u64::MAX).next_back().map(event_ts))??;
            Some((ts, room_id))
        })
        .collect();
    rooms.sort_unstable_by(|a, b| b.cmp(a));
    rooms.truncate(MAX_ROOMS);
    let mut found: Vec<Notification> = Vec::new();
    for (_, room_id) in &rooms {
        let notified = app.model.with_room(room_id, |room| {
            let read_seq = room
                .receipts_of(me)
                .filter(|r| r.receipt_type == "m.read" || r.receipt_type == "m.read.private")
                .filter_map(|r| match position_of(&r.event_id) {
                    Some((_, seq)) => Some(seq),
                    None => room.window_find(&r.event_id).map(|item| item.seq),
                })
                .max()
                .unwrap_or(0)
                .max(room.last_sent(me).unwrap_or(0));
            let member = room.state.content("m.room.member", me);
            let display_name = member.as_ref().and_then(|c| c["displayname"].as_str());
            let context = PushContext {
                user_id: me,
                display_name,
                member_count: room.state.joined_count(),
                power_levels: room.state.power_levels(),
            };
            let mut notified = Vec::new();
            let key_of = |item: &TimelineItem| Key { ts: event_ts(item), room: room_id.clone(), seq: item.seq };
            let after_token = |item: &&TimelineItem| from.as_ref().is_none_or(|from| key_of(item) < *from);
            for item in room.window_between(0, u64::MAX).rev().filter(after_token).take(MAX_EVENTS_PER_ROOM) {
                let key = key_of(item);
                if room.redaction_of(item.seq).is_some() {
                    continue;
                }
                let Some((_, rule)) = first_match(&rules, &item.event, &context) else { continue };
                let actions = rule.get("actions").cloned().unwrap_or_else(|| json!([]));
                let result = outcome(&actions);
                if !result.notify || (only_highlight && !result.highlight) {
                    continue;
                }
                notified.push(Notification { key, item: item.clone(), actions, read: item.seq <= read_seq });
            }
            notified
        });
        found.extend(notified.unwrap_or_default());
    }
    found.sort_unstable_by(|a, b| b.key.cmp(&a.key));
    let more = found.len() > limit;
    found.truncate(limit);
    let mut response = json!({
        "notifications": found.iter().map(|n| json!({
            "actions": n.actions,
            "event": client_event(&n.item, Some(caller)),
            "read": n.read,
            "room_id": n.key.room,
            "ts": n.key.ts,
        })).collect::<Vec<_>>(),
    });
    if more && let Some(last) = found.last() {
        response["next_token"] = json!(URL_SAFE_NO_PAD.encode(serde_json::to_vec(&last.key).unwrap_or_default()));
    }
    Ok(response)
}

fn event_ts(item: &TimelineItem) -> u64 {
    item.event["origin_server_ts"].as_u64().unwrap_or(0)
}
