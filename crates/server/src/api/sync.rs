//! Sync: what changed for a user since a token, answered at once or when something arrives.
//!
//! # GET /_matrix/client/v3/sync
//!
//! A sync token is one position per event-log partition (valid at every node in every DC, since
//! the positions are the log's own sequences) plus this node's typing serial. A node that has not
//! yet applied a token's positions waits until it has before answering.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::routing::get;
use haetae_matrix::filter::Filter;
use haetae_matrix::push::{PushContext, evaluate};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::client;
use super::events::{client_event, stripped};
use crate::app::{App, AppState, Caller, UnreadMemo};
use crate::error::{ApiResult, MatrixError};
use crate::read_model::{Model, Room};

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    client(router, "/sync", get(sync))
}

/// A position in every partition, plus this node's typing serial.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncToken {
    pub positions: Vec<u64>,
    pub node: String,
    pub typing: u64,
}

impl SyncToken {
    pub fn encode(&self) -> String {
        let positions: Vec<String> = self.positions.iter().map(u64::to_string).collect();
        format!("s{}~{}.{}", positions.join("_"), self.node, self.typing)
    }

    pub fn parse(token: &str, partitions: u32) -> Option<SyncToken> {
        let rest = token.strip_prefix('s')?;
        let (positions, typing) = rest.split_once('~').unwrap_or((rest, ""));
        let positions: Vec<u64> = positions.split('_').map(|p| p.parse().ok()).collect::<Option<_>>()?;
        if positions.len() != partitions as usize {
            return None;
        }
        let (node, typing) = typing.rsplit_once('.').unwrap_or(("", "0"));
        Some(SyncToken { positions, node: node.to_string(), typing: typing.parse().unwrap_or(0) })
    }
}

/// A pagination token inside one room: the point just before sequence `position`.
pub fn room_token(position: u64) -> String {
    format!("t{position}")
}

/// The room position a pagination or sync token names, for a room in `partition`.
pub fn position_in(token: &str, partition: u32) -> Option<u64> {
    if let Some(position) = token.strip_prefix('t') {
        return position.parse().ok();
    }
    let rest = token.strip_prefix('s')?;
    let positions = rest.split('~').next()?;
    positions.split('_').nth(partition as usize)?.parse::<u64>().ok().map(|p| p + 1)
}

#[derive(Deserialize)]
struct SyncQuery {
    since: Option<String>,
    timeout: Option<String>,
    #[serde(default)]
    full_state: Option<String>,
    filter: Option<String>,
    #[allow(dead_code)]
    set_presence: Option<String>,
}

fn load_filter(app: &App, user_id: &str, filter: Option<&str>) -> ApiResult<Filter> {
    let Some(filter) = filter else { return Ok(Filter::default()) };
    if filter.len() > app.config.limits.max_filter_bytes {
        return Err(MatrixError::too_large("filter too large"));
    }
    let value: Value = if filter.trim_start().starts_with('{') {
        serde_json::from_str(filter).map_err(|e| MatrixError::not_json(format!("filter: {e}")))?
    } else {
        let model = app.model.model.read().expect("model lock");
        match model.users.get(user_id).and_then(|u| u.filters.get(filter)) {
            Some(value) => value.clone(),
            None => return Err(MatrixError::not_found("Unknown filter")),
        }
    };
    Filter::parse(&value).map_err(|e| MatrixError::bad_json(e.to_string()))
}

async fn sync(State(app): State<AppState>, caller: Caller, Query(query): Query<SyncQuery>) -> ApiResult<Json<Value>> {
    let filter = load_filter(&app, &caller.user_id, query.filter.as_deref())?;
    let since = match &query.since {
        Some(token) => Some(
            SyncToken::parse(token, app.model.partitions())
                .ok_or_else(|| MatrixError::invalid_param("invalid since token"))?,
        ),
        None => None,
    };
    let timeout_ms = match &query.timeout {
        Some(text) => text.parse::<u64>().map_err(|_| MatrixError::invalid_param("timeout must be a number"))?,
        None => 0,
    }
    .min(app.config.limits.max_sync_timeout_ms);
    let full_state = query.full_state.as_deref() == Some("true");
    let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
    if let Some(since) = &since {
        // The token may come from a node further ahead (another DC): catch up before answering.
        let wait = Duration::from_millis(timeout_ms.max(5_000));
        if !app.model.wait_positions(&since.positions, wait).await {
            return Err(MatrixError::unavailable("this node has not caught up with your sync token yet"));
        }
    }
    if let Some(since) = &since {
        acknowledge_to_device(&app, &caller, since).await?;
    }
    let waker = app.model.waker(&caller.user_id);
    loop {
        let notified = waker.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let (response, empty) = build(&app, &caller, since.as_ref(), &filter, full_state).await;
        if !empty || since.is_none() || full_state || tokio::time::Instant::now() >= deadline {
            return Ok(Json(response));
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            // Timed out: answer with the (empty) response as of now.
            let (response, _) = build(&app, &caller, since.as_ref(), &filter, full_state).await;
            return Ok(Json(response));
        }
    }
}

/// Syncing with `since` acknowledges the to-device messages that token covered: they are dropped
/// (through the log, so every node drops them) and never delivered again.
async fn acknowledge_to_device(app: &App, caller: &Caller, since: &SyncToken) -> ApiResult<()> {
    let partition = app.model.partition_of(&caller.user_id) as usize;
    let upto = since.positions[partition];
    let pending = {
        let model = app.model.model.read().expect("model lock");
        model.users.get(&caller.user_id).is_some_and(|user| {
            user.to_device.iter().any(|m| m.seq <= upto && m.device_id == caller.device_id)
        })
    };
    if pending {
        let entry = crate::entry::Entry::ToDeviceAck { device_id: caller.device_id.clone(), upto };
        super::account::append_user_entry(app, &caller.user_id, entry).await?;
    }
    Ok(())
}

/// Key counts the caller's device needs in every sync (from the keys bucket).
async fn key_counts(app: &App, caller: &Caller) -> (Value, Value) {
    super::keys::counts_for_sync(app, &caller.user_id, &caller.device_id).await
}

async fn build(app: &App, caller: &Caller, since: Option<&SyncToken>, filter: &Filter, full_state: bool) -> (Value, bool) {
    let (otk_counts, fallback_types) = key_counts(app, caller).await;
    // A copy of the (small) typing state, so that syncs do not build one at a time behind its lock.
    let (typing_serial, typing_rooms, typing_room_serial) = {
        let typing = app.model.typing.lock().expect("typing lock");
        (typing.serial, typing.rooms.clone(), typing.room_serial.clone())
    };
    let model = app.model.model.read().expect("model lock");
    let positions = app.model.positions();
    let token = SyncToken { positions: positions.clone(), node: app.node.clone(), typing: typing_serial };
    let same_node = since.is_some_and(|s| s.node == app.node);
    let since_typing = if same_node { since.map(|s| s.typing) } else { None };
    let user_partition = app.model.partition_of(&caller.user_id) as usize;
    let user_low = since.map(|s| s.positions[user_partition]).unwrap_or(0);
    let user_high = positions[user_partition];
    let mut joined = Map::new();
    let mut invited = Map::new();
    let mut left = Map::new();
    let mut changed_users: BTreeSet<String> = BTreeSet::new();
    let user = model.users.get(&caller.user_id);
    if let Some(user) = user {
        for (room_id, membership) in &user.rooms {
            if !filter.room.room_allowed(room_id) {
                continue;
            }
            let Some(room) = model.rooms.get(room_id) else { continue };
            let p = room.partition as usize;
            let context = RoomSync {
                app,
                caller,
                model: &model,
                room,
                low: since.map(|s| s.positions[p]).unwrap_or(0),
                high: positions[p],
                initial: since.is_none(),
                full_state,
                filter,
                typing: typing_rooms.get(room_id).map(|users| users.keys().cloned().collect()).unwrap_or_default(),
                typing_changed: typing_room_serial.get(room_id).is_some_and(|serial| since_typing.is_none_or(|s| *serial > s)),
                user_low,
                user_high,
            };
            match membership.as_str() {
                "join" => {
                    if let Some(section) = context.joined(&mut changed_users) {
                        joined.insert(room_id.clone(), section);
                    }
                }
                "invite" => {
                    if let Some(section) = context.invited() {
                        invited.insert(room_id.clone(), section);
                    }
                }
                "leave" | "ban" => {
                    if let Some(section) = context.left() {
                        left.insert(room_id.clone(), section);
                    }
                }
                _ => {}
            }
        }
    }
    let in_window = |seq: u64| seq > user_low && seq <= user_high;
    let mut account_data: Vec<Value> = user
        .map(|u| {
            u.account_data
                .iter()
                .filter(|(_, (seq, _))| in_window(*seq))
                .map(|(event_type, (_, content))| json!({ "type": event_type, "content": content }))
                .filter(|event| filter.account_data.matches(event))
                .collect()
        })
        .unwrap_or_default();
    if since.is_none() && !user.is_some_and(|u| u.account_data.contains_key("m.push_rules")) {
        account_data.push(json!({ "type": "m.push_rules", "content": *app.default_push_rules.get(&caller.user_id) }));
    }
    let to_device: Vec<Value> = user
        .map(|u| {
            u.to_device
                .iter()
                .filter(|m| (since.is_none() || in_window(m.seq)) && m.seq <= user_high && m.device_id == caller.device_id)
                .map(|m| m.event.clone())
                .collect()
        })
        .unwrap_or_default();
    if let Some(since) = since {
        for (partition, changes) in model.key_changes.iter().enumerate() {
            let low = since.positions[partition];
            let high = positions[partition];
            let start = changes.partition_point(|(seq, _)| *seq <= low);
            for (seq, user_id) in &changes[start..] {
                if *seq > high {
                    break;
                }
                if user_id == &caller.user_id || shares_room(&model, &caller.user_id, user_id) {
                    changed_users.insert(user_id.clone());
                }
            }
        }
    }
    let empty = joined.is_empty() && invited.is_empty() && left.is_empty() && account_data.is_empty()
        && to_device.is_empty() && changed_users.is_empty();
    let response = json!({
        "next_batch": token.encode(),
        "rooms": { "join": joined, "invite": invited, "leave": left, "knock": {} },
        "account_data": { "events": account_data },
        "presence": { "events": [] },
        "to_device": { "events": to_device },
        "device_lists": { "changed": changed_users, "left": [] },
        "device_one_time_keys_count": otk_counts,
        "device_unused_fallback_key_types": fallback_types,
    });
    (response, empty)
}

fn shares_room(model: &Model, a: &str, b: &str) -> bool {
    let (Some(user_a), Some(user_b)) = (model.users.get(a), model.users.get(b)) else { return false };
    user_a.rooms.iter().any(|(room, membership)| membership == "join" && user_b.rooms.get(room).is_some_and(|m| m == "join"))
}

/// Everything needed to build one room's section of a sync response.
struct RoomSync<'a> {
    app: &'a App,
    caller: &'a Caller,
    model: &'a Model,
    room: &'a Room,
    /// Room window: entries with `low < seq <= high`.
    low: u64,
    high: u64,
    initial: bool,
    full_state: bool,
    filter: &'a Filter,
    typing: Vec<String>,
    typing_changed: bool,
    /// The user's own window (for per-room account data).
    user_low: u64,
    user_high: u64,
}

impl RoomSync<'_> {
    fn window(&self, high: u64) -> &[crate::read_model::TimelineItem] {
        let visible_from = self.room.visible_from(&self.caller.user_id);
        let start = self.room.index_at((self.low + 1).max(visible_from));
        let end = self.room.index_at(high.saturating_add(1));
        &self.room.timeline[start..end.max(start)]
    }

    /// Did the caller's membership change inside the window?
    fn membership_changed(&self) -> bool {
        self.room.membership_seq.get(&self.caller.user_id).is_some_and(|seq| *seq > self.low && *seq <= self.high)
    }

    fn joined(&self, changed_users: &mut BTreeSet<String>) -> Option<Value> {
        let window = self.window(self.high);
        let newly_joined = self.membership_changed();
        let receipts: Vec<&crate::read_model::Receipt> = self
            .room
            .receipts
            .iter()
            .filter(|r| r.seq > self.low && r.seq <= self.high)
            .collect();
        let account_data = self.room_account_data();
        let typing_news = self.typing_changed;
        if !self.initial && !self.full_state && window.is_empty() && receipts.is_empty() && account_data.is_empty() && !typing_news {
            return None;
        }
        for item in window {
            if item.event["type"] == "m.room.member" && item.event["content"]["membership"] == "join" {
                if let Some(user) = item.event["state_key"].as_str() {
                    if !self.initial && user != self.caller.user_id {
                        changed_users.insert(user.to_string());
                    }
                }
            }
        }
        let from_start = self.initial || self.full_state || newly_joined;
        let (timeline, state) = self.timeline_and_state(window, from_start);
        let mut ephemeral = Vec::new();
        if self.initial {
            ephemeral.extend(self.receipt_event(self.room.receipts.iter().collect()));
        } else if !receipts.is_empty() {
            ephemeral.extend(self.receipt_event(receipts));
        }
        if typing_news || (self.initial && !self.typing.is_empty()) {
            ephemeral.push(json!({ "type": "m.typing", "content": { "user_ids": self.typing } }));
        }
        let ephemeral: Vec<Value> = ephemeral.into_iter().filter(|e| self.filter.room.ephemeral.matches(e)).collect();
        let (notifications, highlights) = self.unread_counts();
        let room_state = &self.room.state;
        let heroes: Vec<&str> = room_state.members("join").filter(|u| *u != self.caller.user_id).take(5).collect();
        Some(json!({
            "timeline": timeline,
            "state": { "events": state },
            "ephemeral": { "events": ephemeral },
            "account_data": { "events": account_data },
            "unread_notifications": { "notification_count": notifications, "highlight_count": highlights },
            "summary": {
                "m.heroes": heroes,
                "m.joined_member_count": room_state.member_count("join"),
                "m.invited_member_count": room_state.member_count("invite"),
            },
        }))
    }

    fn room_account_data(&self) -> Vec<Value> {
        let Some(user) = self.model.users.get(&self.caller.user_id) else { return Vec::new() };
        user.room_account_data
            .iter()
            .filter(|((room_id, _), (seq, _))| {
                room_id == &self.room.room_id && (self.initial || (*seq > self.user_low && *seq <= self.user_high))
            })
            .map(|((_, event_type), (_, content))| json!({ "type": event_type, "content": content }))
            .filter(|e| self.filter.room.account_data.matches(e))
            .collect()
    }

    /// The timeline (last `limit` events of the window) and the state before it.
    fn timeline_and_state(&self, window: &[crate::read_model::TimelineItem], from_start: bool) -> (Value, Vec<Value>) {
        let timeline_filter = &self.filter.room.timeline;
        let limit = self.filter.timeline_limit(10).min(self.app.config.limits.max_events_per_response).max(1);
        let matching: Vec<&crate::read_model::TimelineItem> =
            window.iter().filter(|item| timeline_filter.matches(&item.event)).collect();
        let limited = matching.len() > limit;
        let shown = &matching[matching.len().saturating_sub(limit)..];
        let first_seq = shown.first().map(|i| i.seq).unwrap_or(self.high + 1);
        let events: Vec<Value> = shown.iter().map(|item| client_event(item, Some(self.caller))).collect();
        let shown_ids: std::collections::HashSet<&str> =
            shown.iter().filter_map(|item| item.event["event_id"].as_str()).collect();
        let state_filter = &self.filter.room.state;
        let lazy = state_filter.lazy_load_members;
        let senders: std::collections::HashSet<&str> =
            shown.iter().filter_map(|item| item.event["sender"].as_str()).collect();
        let wanted = |event: &Value| {
            if !state_filter.matches(event) {
                return false;
            }
            if lazy && event["type"] == "m.room.member" {
                let member = event["state_key"].as_str().unwrap_or("");
                return member == self.caller.user_id || senders.contains(member);
            }
            true
        };
        let state: Vec<Value> = if from_start {
            self.room
                .state
                .iter()
                .filter(|event| !event["event_id"].as_str().is_some_and(|id| shown_ids.contains(id)))
                .filter(|event| wanted(event))
                .cloned()
                .collect()
        } else if limited {
            // State changes that fell into the gap: their latest versions.
            let mut latest: HashMap<(String, String), Value> = HashMap::new();
            for item in window.iter().filter(|item| item.seq < first_seq) {
                if let (Some(t), Some(k)) = (item.event["type"].as_str(), item.event["state_key"].as_str()) {
                    latest.insert((t.to_string(), k.to_string()), client_event(item, Some(self.caller)));
                }
            }
            latest.into_values().filter(|e| wanted(e)).collect()
        } else {
            Vec::new()
        };
        let timeline = json!({
            "events": events,
            "limited": limited,
            "prev_batch": room_token(first_seq),
        });
        (timeline, state)
    }

    fn receipt_event(&self, receipts: Vec<&crate::read_model::Receipt>) -> Option<Value> {
        if receipts.is_empty() {
            return None;
        }
        let mut content = Map::new();
        for receipt in receipts {
            let mut body = json!({ "ts": receipt.ts });
            if let Some(thread) = &receipt.thread_id {
                body["thread_id"] = json!(thread);
            }
            // Private receipts are shown only to their owner.
            if receipt.receipt_type == "m.read.private" && receipt.user_id != self.caller.user_id {
                continue;
            }
            let entry = content.entry(receipt.event_id.clone()).or_insert_with(|| json!({}));
            entry[&receipt.receipt_type][&receipt.user_id] = body;
        }
        if content.is_empty() {
            return None;
        }
        Some(json!({ "type": "m.receipt", "content": content }))
    }

    /// Notifications and highlights after the caller's read receipt (bounded scan).
    fn unread_counts(&self) -> (u64, u64) {
        const MAX_SCAN: usize = 1000;
        let me = self.caller.user_id.as_str();
        let read_seq = self
            .room
            .receipts
            .iter()
            .rev()
            .filter(|r| r.user_id == me && (r.receipt_type == "m.read" || r.receipt_type == "m.read.private"))
            .find_map(|r| self.room.find(&r.event_id).map(|item| item.seq))
            .unwrap_or(0);
        // The caller's own latest event also marks everything before it as read.
        let own_seq = self.room.last_sent.get(me).copied().unwrap_or(0);
        let after = read_seq.max(own_seq);
        let user = self.model.users.get(me);
        let stored_rules = user.and_then(|u| u.account_data.get("m.push_rules"));
        let rules_seq = stored_rules.map_or(0, |(seq, _)| *seq);
        // Counted before (same read position and rules): only the events since then are new.
        let memo_key = (me.to_string(), self.room.room_id.clone());
        let memo = self.app.unread.get(&memo_key).filter(|m| m.after == after && m.rules_seq == rules_seq && m.upto <= self.high);
        let (from_seq, mut notifications, mut highlights) = match memo {
            Some(m) => (m.upto + 1, m.notifications, m.highlights),
            None => (after + 1, 0, 0),
        };
        let start = self.room.index_at(from_seq).max(self.room.timeline.len().saturating_sub(MAX_SCAN));
        let end = self.room.index_at(self.high.saturating_add(1)).max(start);
        if start < end {
            let default_rules;
            let rules = match stored_rules {
                Some((_, stored)) => stored,
                None => {
                    default_rules = self.app.default_push_rules.get(me);
                    default_rules.as_ref()
                }
            };
            let display_name = self.room.state.content("m.room.member", me).and_then(|c| c["displayname"].as_str());
            let power_levels = self.room.state.power_levels();
            let context = PushContext {
                user_id: me,
                display_name,
                member_count: self.room.state.joined_count(),
                power_levels: &power_levels,
            };
            for item in &self.room.timeline[start..end] {
                if item.event["sender"] == me {
                    continue;
                }
                let outcome = evaluate(rules, &item.event, &context);
                notifications += u64::from(outcome.notify);
                highlights += u64::from(outcome.highlight);
            }
        }
        self.app.unread.put(memo_key, UnreadMemo { after, rules_seq, upto: self.high, notifications, highlights });
        (notifications, highlights)
    }

    fn invited(&self) -> Option<Value> {
        if !self.initial && !self.membership_changed() {
            return None;
        }
        let mut events: Vec<Value> = ["m.room.create", "m.room.join_rules", "m.room.name", "m.room.avatar", "m.room.canonical_alias", "m.room.encryption", "m.room.topic"]
            .iter()
            .filter_map(|t| self.room.state.get(t, ""))
            .map(stripped)
            .collect();
        if let Some(invite) = self.room.state.get("m.room.member", &self.caller.user_id) {
            if let Some(inviter) = invite["sender"].as_str() {
                if let Some(member) = self.room.state.get("m.room.member", inviter) {
                    events.push(stripped(member));
                }
            }
            events.push(stripped(invite));
        }
        Some(json!({ "invite_state": { "events": events } }))
    }

    fn left(&self) -> Option<Value> {
        let changed = self.membership_changed();
        if !changed && !(self.initial && self.filter.room.include_leave) {
            return None;
        }
        let leave_seq = self.room.membership_seq.get(&self.caller.user_id).copied().unwrap_or(self.high);
        let window = self.window(self.high.min(leave_seq));
        let (timeline, state) = self.timeline_and_state(window, false);
        Some(json!({ "timeline": timeline, "state": { "events": state }, "account_data": { "events": [] } }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_tokens_round_trip() {
        let token = SyncToken { positions: vec![1, 0, 42], node: "abc".into(), typing: 7 };
        assert_eq!(SyncToken::parse(&token.encode(), 3), Some(token.clone()));
        assert_eq!(SyncToken::parse(&token.encode(), 4), None);
        assert_eq!(SyncToken::parse("garbage", 3), None);
        assert_eq!(SyncToken::parse("s1_x_3", 3), None);
    }

    #[test]
    fn pagination_positions_from_either_token() {
        assert_eq!(position_in("t17", 2), Some(17));
        let token = SyncToken { positions: vec![5, 9], node: "n".into(), typing: 0 };
        assert_eq!(position_in(&token.encode(), 1), Some(10));
        assert_eq!(position_in("bogus", 0), None);
    }
}
