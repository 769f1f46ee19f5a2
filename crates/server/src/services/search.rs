//! Server-side search (`POST /search`, the `room_events` category): events whose `content.body`,
//! `content.name` or `content.topic` hold every word of the search term, in the rooms the caller
//! may read. There is no full-text index: the read model keeps recent windows and reads older
//! history back from the log, so a search *scans*. Its cost is bounded: one request examines at
//! most `limits.search_scan_events` events (newest first, room after room) and, when it stopped
//! before the end, answers a `next_batch` that continues the scan where it stopped.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use haetae_matrix::filter::RoomEventFilter;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::events::client_event;
use super::rooms::readable_until;
use super::sync::room_token;
use super::{App, Caller};
use crate::error::{ApiResult, MatrixError};
use crate::read_model::TimelineItem;

/// Results per page when the filter names no limit.
const DEFAULT_LIMIT: usize = 10;
/// Most results one page returns, whatever the filter asks.
const MAX_LIMIT: usize = 100;
/// Events read from the history per step of a scan.
const SCAN_STEP: usize = 200;
/// Most events of context before or after one result.
const MAX_CONTEXT: usize = 20;
/// Longest search term, characters, and most words in it.
const MAX_TERM_CHARS: usize = 1000;
const MAX_TERM_WORDS: usize = 16;

/// The searchable keys, as the spec names them.
const KEYS: [&str; 3] = ["content.body", "content.name", "content.topic"];

#[derive(Deserialize)]
pub struct SearchQuery {
    next_batch: Option<String>,
}

/// Where a scan stopped: the room (rooms are scanned in id order) and the position below which
/// it goes on. Carried to the client as base64url JSON in `next_batch`.
#[derive(Serialize, Deserialize)]
struct Cursor {
    room: String,
    before: u64,
}

fn encode_cursor(cursor: &Cursor) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(cursor).unwrap_or_default())
}

fn decode_cursor(token: &str) -> ApiResult<Cursor> {
    let invalid = || MatrixError::invalid_param("invalid next_batch token");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    serde_json::from_slice(&bytes).map_err(|_| invalid())
}

/// What the client asked for, checked.
struct Request {
    words: Vec<String>,
    keys: Vec<&'static str>,
    filter: RoomEventFilter,
    by_rank: bool,
    context: Option<(usize, usize, bool)>,
    include_state: bool,
}

/// None when the client asks for no category haetae searches (`room_events` is the only one).
fn parse_request(body: &Value) -> ApiResult<Option<Request>> {
    let bad = |message: &str| MatrixError::bad_json(message.to_string());
    let categories =
        body.get("search_categories").and_then(Value::as_object).ok_or_else(|| bad("search_categories must be an object"))?;
    let Some(room_events) = categories.get("room_events") else { return Ok(None) };
    let room_events = room_events.as_object().ok_or_else(|| bad("room_events must be an object"))?;
    let term = room_events.get("search_term").and_then(Value::as_str).ok_or_else(|| bad("search_term must be a string"))?;
    if term.chars().count() > MAX_TERM_CHARS {
        return Err(MatrixError::invalid_param(format!("search_term is longer than {MAX_TERM_CHARS} characters")));
    }
    let words: Vec<String> = term.split_whitespace().map(str::to_lowercase).take(MAX_TERM_WORDS).collect();
    let keys = match room_events.get("keys") {
        None | Some(Value::Null) => KEYS.to_vec(),
        Some(Value::Array(keys)) => {
            let mut chosen = Vec::new();
            for key in keys {
                let key = key.as_str().ok_or_else(|| bad("keys must be strings"))?;
                let known =
                    KEYS.iter().find(|k| **k == key).ok_or_else(|| MatrixError::invalid_param(format!("unknown key {key}")))?;
                chosen.push(*known);
            }
            chosen
        }
        Some(_) => return Err(bad("keys must be an array")),
    };
    let filter = match room_events.get("filter") {
        None | Some(Value::Null) => RoomEventFilter::default(),
        Some(filter @ Value::Object(_)) => {
            serde_json::from_value(filter.clone()).map_err(|e| MatrixError::bad_json(format!("filter: {e}")))?
        }
        Some(_) => return Err(bad("filter must be an object")),
    };
    let by_rank = match room_events.get("order_by") {
        None | Some(Value::Null) => true,
        Some(Value::String(order)) if order == "rank" => true,
        Some(Value::String(order)) if order == "recent" => false,
        Some(_) => return Err(MatrixError::invalid_param("order_by must be 'recent' or 'rank'")),
    };
    let context = match room_events.get("event_context") {
        None | Some(Value::Null) => None,
        Some(Value::Object(context)) => {
            let count = |name: &str| -> ApiResult<usize> {
                match context.get(name) {
                    None | Some(Value::Null) => Ok(5),
                    Some(value) => value
                        .as_u64()
                        .map(|n| (n as usize).min(MAX_CONTEXT))
                        .ok_or_else(|| MatrixError::bad_json(format!("{name} must be a non-negative integer"))),
                }
            };
            let profile = match context.get("include_profile") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(bad("include_profile must be a boolean")),
            };
            Some((count("before_limit")?, count("after_limit")?, profile))
        }
        Some(_) => return Err(bad("event_context must be an object")),
    };
    let include_state = match room_events.get("include_state") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad("include_state must be a boolean")),
    };
    if let Some(groupings) = room_events.get("groupings")
        && !groupings.is_object()
        && !groupings.is_null()
    {
        return Err(bad("groupings must be an object"));
    }
    Ok(Some(Request { words, keys, filter, by_rank, context, include_state }))
}

/// How well `event` matches: the number of occurrences of the words in the chosen keys, or None
/// when a word is missing from all of them.
fn rank(event: &Value, request: &Request) -> Option<usize> {
    if request.words.is_empty() {
        return None;
    }
    let texts: Vec<String> = request
        .keys
        .iter()
        .filter_map(|key| event["content"][key.trim_start_matches("content.")].as_str())
        .map(str::to_lowercase)
        .collect();
    let mut score = 0;
    for word in &request.words {
        let found: usize = texts.iter().map(|text| text.matches(word.as_str()).count()).sum();
        if found == 0 {
            return None;
        }
        score += found;
    }
    Some(score)
}

struct Hit {
    room_id: String,
    item: TimelineItem,
    rank: usize,
}

/// `POST /search`.
pub async fn search(app: &App, caller: &Caller, query: SearchQuery, body: Value) -> ApiResult<Value> {
    let Some(request) = parse_request(&body)? else { return Ok(json!({ "search_categories": {} })) };
    let cursor = query.next_batch.as_deref().map(decode_cursor).transpose()?;
    let limit = request.filter.limit_or(DEFAULT_LIMIT).min(MAX_LIMIT);
    let scan_budget = app.config.limits.search_scan_events.max(1);
    // Every room the caller has been in, in id order: each is checked for what the caller may
    // still read (joined: everything visible; left: up to leaving).
    let mut rooms: Vec<String> = app.model.with_user(&caller.user_id, |user| user.rooms.keys().cloned().collect());
    rooms.sort();
    rooms.retain(|room| request.filter.room_allowed(room));
    if let Some(cursor) = &cursor {
        rooms.retain(|room| *room >= cursor.room);
    }
    let log = app.store.log();
    let mut hits: Vec<Hit> = Vec::new();
    let mut scanned = 0usize;
    let mut next: Option<Cursor> = None;
    'rooms: for room_id in &rooms {
        let Ok(until) = readable_until(app, &caller.user_id, room_id) else { continue };
        let partition = app.model.partition_of(room_id);
        let Some(visible_from) = app.model.with_room(room_id, |room| room.visible_from(&caller.user_id)) else { continue };
        let applied = app.model.applied(partition);
        let mut before = until.saturating_add(1).min(applied.saturating_add(1));
        if let Some(cursor) = &cursor
            && cursor.room == *room_id
        {
            before = before.min(cursor.before);
        }
        loop {
            if scanned >= scan_budget || hits.len() >= limit {
                next = Some(Cursor { room: room_id.clone(), before });
                break 'rooms;
            }
            let step = SCAN_STEP.min(scan_budget - scanned);
            let page = app
                .model
                .page_back(log, room_id, before, visible_from, step, |_| true)
                .await
                .map_err(MatrixError::unavailable)?;
            scanned += page.items.len();
            let Some(last) = page.items.last().map(|item| item.seq) else { break };
            for item in page.items {
                if hits.len() >= limit {
                    // The rest of this step is scanned again on the next page.
                    before = item.seq + 1;
                    next = Some(Cursor { room: room_id.clone(), before });
                    break 'rooms;
                }
                if item.redacted_because.is_some() || !request.filter.matches(&item.event) {
                    continue;
                }
                if let Some(rank) = rank(&item.event, &request) {
                    hits.push(Hit { room_id: room_id.clone(), item, rank });
                }
            }
            before = last;
            if !page.full {
                break;
            }
        }
    }
    if request.by_rank {
        hits.sort_by(|a, b| b.rank.cmp(&a.rank).then_with(|| event_ts(&b.item).cmp(&event_ts(&a.item))));
    } else {
        hits.sort_by(|a, b| event_ts(&b.item).cmp(&event_ts(&a.item)));
    }
    let mut results = Vec::new();
    for hit in &hits {
        let mut result = json!({ "rank": hit.rank as f64, "result": client_event(&hit.item, Some(caller)) });
        if let Some((before_limit, after_limit, include_profile)) = request.context {
            result["context"] = context(app, caller, hit, before_limit, after_limit, include_profile).await?;
        }
        results.push(result);
    }
    let mut room_events = json!({
        "count": results.len(),
        "highlights": request.words,
        "results": results,
    });
    if request.include_state {
        let mut state = serde_json::Map::new();
        for hit in &hits {
            if state.contains_key(&hit.room_id) {
                continue;
            }
            let events: Vec<Value> = app.model.with_room(&hit.room_id, |room| room.state.iter().collect()).unwrap_or_default();
            state.insert(hit.room_id.clone(), Value::Array(events));
        }
        room_events["state"] = Value::Object(state);
    }
    if let Some(next) = next {
        room_events["next_batch"] = json!(encode_cursor(&next));
    }
    Ok(json!({ "search_categories": { "room_events": room_events } }))
}

fn event_ts(item: &TimelineItem) -> u64 {
    item.event["origin_server_ts"].as_u64().unwrap_or(0)
}

/// The events around one result, within what the caller may read.
async fn context(
    app: &App,
    caller: &Caller,
    hit: &Hit,
    before_limit: usize,
    after_limit: usize,
    include_profile: bool,
) -> ApiResult<Value> {
    let room_id = &hit.room_id;
    let until = readable_until(app, &caller.user_id, room_id)?;
    let visible_from = app.model.with_room(room_id, |room| room.visible_from(&caller.user_id)).unwrap_or(u64::MAX);
    let applied = app.model.applied(app.model.partition_of(room_id));
    let log = app.store.log();
    let seq = hit.item.seq;
    let before =
        app.model.page_back(log, room_id, seq, visible_from, before_limit, |_| true).await.map_err(MatrixError::unavailable)?;
    let ceiling = until.min(applied);
    let after =
        app.model.page_forward(log, room_id, seq + 1, ceiling, after_limit, |_| true).await.map_err(MatrixError::unavailable)?;
    let start = before.items.last().map_or(seq, |item| item.seq);
    let end = after.items.last().map_or(seq + 1, |item| item.seq + 1);
    let mut context = json!({
        "start": room_token(start),
        "end": room_token(end),
        "events_before": before.items.iter().map(|item| client_event(item, Some(caller))).collect::<Vec<_>>(),
        "events_after": after.items.iter().map(|item| client_event(item, Some(caller))).collect::<Vec<_>>(),
    });
    if include_profile {
        let mut senders: Vec<&str> = before.items.iter().chain(after.items.iter()).map(|item| &*item.sender).collect();
        senders.push(&hit.item.sender);
        senders.sort_unstable();
        senders.dedup();
        let profiles: serde_json::Map<String, Value> = app
            .model
            .with_room(room_id, |room| {
                senders
                    .iter()
                    .filter_map(|sender| {
                        let member = room.state.get("m.room.member", sender)?;
                        let content = &member["content"];
                        let mut profile = serde_json::Map::new();
                        if let Some(name) = content["displayname"].as_str() {
                            profile.insert("displayname".into(), json!(name));
                        }
                        if let Some(avatar) = content["avatar_url"].as_str() {
                            profile.insert("avatar_url".into(), json!(avatar));
                        }
                        Some((sender.to_string(), Value::Object(profile)))
                    })
                    .collect()
            })
            .unwrap_or_default();
        context["profile_info"] = Value::Object(profiles);
    }
    Ok(context)
}
