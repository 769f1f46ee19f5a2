//! Sync: what changed for a user since a token, answered at once or when something arrives.
//!
//! A sync token is one position per event-log partition (valid at every node in every DC, since
//! the positions are the log's own sequences) plus this node's typing serial. A node that has not
//! yet applied a token's positions waits until it has before answering.

use std::collections::BTreeSet;
use std::time::Duration;

use haetae_matrix::filter::Filter;
use haetae_matrix::push::{PushContext, evaluate};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::caches::UnreadMemo;
use super::events::{client_event, stripped};
use super::{App, Caller};
use crate::error::{ApiResult, MatrixError};
use crate::read_model::Membership;
use crate::read_model::event_ids::position_of;

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
    positions.split('_').nth(partition as usize)?.parse::<u64>().ok()?.checked_add(1)
}

#[derive(Deserialize)]
pub struct SyncQuery {
    since: Option<String>,
    timeout: Option<String>,
    #[serde(default)]
    full_state: Option<String>,
    filter: Option<String>,
    set_presence: Option<String>,
}

fn load_filter(app: &App, user_id: &str, filter: Option<&str>) -> ApiResult<Filter> {
    let Some(filter) = filter else {
        return Ok(Filter::default());
    };
    if filter.len() > app.config.limits.max_filter_bytes {
        return Err(MatrixError::too_large("filter too large"));
    }
    let value: Value = if filter.trim_start().starts_with('{') {
        serde_json::from_str(filter).map_err(|e| MatrixError::not_json(format!("filter: {e}")))?
    } else {
        match app.model.with_user(user_id, |user| user.filters.get(filter).cloned()) {
            Some(value) => value,
            None => return Err(MatrixError::not_found("Unknown filter")),
        }
    };
    Filter::parse(&value).map_err(|e| MatrixError::bad_json(e.to_string()))
}

impl SyncQuery {
    /// A query from another service (the deprecated event stream and initial syncs).
    pub fn new(since: Option<String>, timeout: Option<String>, filter: Option<String>) -> SyncQuery {
        SyncQuery { since, timeout, full_state: None, filter, set_presence: Some("offline".into()) }
    }
}

pub async fn sync(app: &App, caller: &Caller, query: SyncQuery) -> ApiResult<Value> {
    let filter = load_filter(app, &caller.user_id, query.filter.as_deref())?;
    super::presence::on_sync(app, &caller.user_id, query.set_presence.as_deref()).await;
    let since = match &query.since {
        Some(token) => Some(
            SyncToken::parse(token, app.model.partitions()).ok_or_else(|| MatrixError::invalid_param("invalid since token"))?,
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
        acknowledge_to_device(app, caller, since).await?;
    }
    let waker = app.model.waker(&caller.user_id);
    let mut waiting = None;
    loop {
        let notified = waker.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let (response, empty) = build(app, caller, since.as_ref(), &filter, full_state).await;
        if !empty || since.is_none() || full_state || tokio::time::Instant::now() >= deadline {
            return Ok(response);
        }
        waiting.get_or_insert_with(|| super::metrics::WaitingSync::new(&app.metrics.sync_waiting));
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            // Timed out: answer with the (empty) response as of now.
            let (response, _) = build(app, caller, since.as_ref(), &filter, full_state).await;
            return Ok(response);
        }
    }
}

/// Syncing with `since` acknowledges the to-device messages that token covered: they are dropped
/// (through the log, so every node drops them) and never delivered again.
async fn acknowledge_to_device(app: &App, caller: &Caller, since: &SyncToken) -> ApiResult<()> {
    let partition = app.model.partition_of(&caller.user_id) as usize;
    acknowledge_to_device_upto(app, caller, since.positions[partition]).await
}

/// Drops the caller's device's to-device messages up to position `upto` (shared with sliding
/// sync's `to_device` extension), if any are left.
pub(super) async fn acknowledge_to_device_upto(app: &App, caller: &Caller, upto: u64) -> ApiResult<()> {
    let pending = app
        .model
        .with_user(&caller.user_id, |user| user.to_device.iter().any(|m| m.seq <= upto && m.device_id == caller.device_id));
    if pending {
        let entry = crate::entry::Entry::ToDeviceAck { device_id: caller.device_id.clone(), upto };
        super::accounts::append_user_entry(app, &caller.user_id, entry).await?;
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
    // Positions first: everything up to them is applied; anything applied later waits for the
    // next sync (windows below are cut at these positions).
    let positions = app.model.positions();
    let token = SyncToken { positions: positions.clone(), node: app.node.clone(), typing: typing_serial };
    let same_node = since.is_some_and(|s| s.node == app.node);
    let since_typing = if same_node { since.map(|s| s.typing) } else { None };
    let presence = super::presence::sync_events(app, &caller.user_id, since_typing, typing_serial);
    let user_partition = app.model.partition_of(&caller.user_id) as usize;
    let user_low = since.map(|s| s.positions[user_partition]).unwrap_or(0);
    let user_high = positions[user_partition];
    let mut joined = Map::new();
    let mut invited = Map::new();
    let mut knocked = Map::new();
    let mut left = Map::new();
    let mut changed_users: BTreeSet<String> = BTreeSet::new();
    let memberships: Vec<(String, Membership)> =
        app.model.with_user(&caller.user_id, |user| user.rooms.iter().map(|(r, m)| (r.clone(), *m)).collect());
    for (room_id, membership) in &memberships {
        if !filter.room.room_allowed(room_id) {
            continue;
        }
        let p = app.model.partition_of(room_id) as usize;
        let context = RoomSync {
            app,
            caller,
            room_id,
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
        let section = match membership {
            Membership::Join => context.joined(&mut changed_users).await.map(|s| (&mut joined, s)),
            Membership::Invite => context.stripped_state("invite_state").map(|s| (&mut invited, s)),
            Membership::Leave | Membership::Ban => context.left().await.map(|s| (&mut left, s)),
            Membership::Knock => context.stripped_state("knock_state").map(|s| (&mut knocked, s)),
        };
        if let Some((sections, section)) = section {
            sections.insert(room_id.clone(), section);
        }
    }
    let in_window = |seq: u64| seq > user_low && seq <= user_high;
    let (mut account_data, has_push_rules, to_device) = app.model.with_user(&caller.user_id, |user| {
        let account_data: Vec<Value> = user
            .account_data
            .iter()
            .filter(|(_, (seq, _))| in_window(*seq))
            .map(|(event_type, (_, content))| json!({ "type": event_type, "content": content }))
            .filter(|event| filter.account_data.matches(event))
            .collect();
        let to_device: Vec<Value> = user
            .to_device
            .iter()
            .filter(|m| (since.is_none() || in_window(m.seq)) && m.seq <= user_high && m.device_id == caller.device_id)
            .map(|m| m.event.clone())
            .collect();
        (account_data, user.account_data.contains_key("m.push_rules"), to_device)
    });
    if since.is_none() && !has_push_rules {
        account_data.push(json!({ "type": "m.push_rules", "content": *app.default_push_rules.get(&caller.user_id) }));
    }
    if let Some(since) = since {
        match app.model.key_changes_between(&since.positions, &positions) {
            Some(users) => {
                for user_id in users {
                    if user_id == caller.user_id || app.model.share_a_room(&caller.user_id, &user_id) {
                        changed_users.insert(user_id);
                    }
                }
            }
            // This node no longer remembers that far back: everyone the caller shares a room
            // with may have changed (the client re-reads their keys).
            None => {
                changed_users.insert(caller.user_id.clone());
                for (room_id, membership) in &memberships {
                    if *membership == Membership::Join {
                        changed_users
                            .extend(app.model.with_room(room_id, |room| room.state.members_with("join")).unwrap_or_default());
                    }
                }
            }
        }
    }
    let left_users: Vec<String> = match since {
        Some(since) => app.model.users_left_between(&caller.user_id, &since.positions, &positions),
        None => Vec::new(),
    };
    for user_id in &left_users {
        changed_users.remove(user_id);
    }
    let empty = joined.is_empty()
        && invited.is_empty()
        && knocked.is_empty()
        && left.is_empty()
        && account_data.is_empty()
        && to_device.is_empty()
        && changed_users.is_empty()
        && left_users.is_empty()
        && presence.is_empty();
    let response = json!({
        "next_batch": token.encode(),
        "rooms": { "join": joined, "invite": invited, "leave": left, "knock": knocked },
        "account_data": { "events": account_data },
        "presence": { "events": presence },
        "to_device": { "events": to_device },
        "device_lists": { "changed": changed_users, "left": left_users },
        "device_one_time_keys_count": otk_counts,
        "device_unused_fallback_key_types": fallback_types,
    });
    (response, empty)
}

/// Everything needed to build one room's section of a sync response.
pub struct RoomSync<'a> {
    app: &'a App,
    caller: &'a Caller,
    room_id: &'a str,
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

/// What a room's section needs from the room, read in one short look.
pub struct RoomNews {
    timeline: bool,
    receipts: Vec<crate::read_model::Receipt>,
    membership_changed: bool,
    joined_since: Vec<String>,
    visible_from: u64,
    /// The caller was not joined at the window's start: their client has no history of the room.
    newly_joined: bool,
}

impl RoomSync<'_> {
    fn news(&self) -> Option<RoomNews> {
        let me = self.caller.user_id.as_str();
        self.app.model.with_room(self.room_id, |room| {
            let timeline = room.window_between(self.low, self.high).next().is_some()
                || (room.evicted_upto() > self.low && room.evicted_upto() <= self.high);
            let changes = room.membership_changes_between(self.low, self.high);
            RoomNews {
                timeline,
                receipts: room.receipts_between(self.low, self.high).into_iter().cloned().collect(),
                membership_changed: changes.iter().any(|(_, user, _)| *user == me),
                joined_since: changes
                    .iter()
                    .filter(|(_, user, m)| *m == Membership::Join && *user != me)
                    .map(|(_, user, _)| user.to_string())
                    .collect(),
                visible_from: room.visible_from(me),
                newly_joined: room
                    .membership_history(me)
                    .iter()
                    .rev()
                    .find(|(seq, _)| *seq <= self.low)
                    .is_none_or(|(_, membership)| *membership != Membership::Join),
            }
        })
    }

    async fn joined(&self, changed_users: &mut BTreeSet<String>) -> Option<Value> {
        let news = self.news()?;
        let account_data = self.room_account_data();
        let typing_news = self.typing_changed;
        if !self.initial
            && !self.full_state
            && !news.timeline
            && news.receipts.is_empty()
            && account_data.is_empty()
            && !typing_news
        {
            return None;
        }
        if !self.initial {
            changed_users.extend(news.joined_since.iter().cloned());
        }
        let from_start = self.initial || self.full_state || news.membership_changed;
        // A room the caller has just joined shows its recent history (what they may see of it),
        // not only the events since their last sync, as for a first sync.
        let floor = if news.newly_joined { news.visible_from } else { (self.low + 1).max(news.visible_from) };
        let (timeline, state) = self.timeline_and_state(self.high, floor, from_start).await;
        let mut ephemeral = Vec::new();
        if self.initial {
            let all = self
                .app
                .model
                .with_room(self.room_id, |room| room.receipts_between(0, self.high).into_iter().cloned().collect::<Vec<_>>());
            ephemeral.extend(self.receipt_event(all.unwrap_or_default()));
        } else if !news.receipts.is_empty() {
            ephemeral.extend(self.receipt_event(news.receipts));
        }
        if typing_news || (self.initial && !self.typing.is_empty()) {
            ephemeral.push(json!({ "type": "m.typing", "content": { "user_ids": self.typing } }));
        }
        let ephemeral: Vec<Value> = ephemeral.into_iter().filter(|e| self.filter.room.ephemeral.matches(e)).collect();
        let (notifications, highlights) = self.unread_counts();
        let (heroes, joined_count, invited_count) = self.app.model.with_room(self.room_id, |room| {
            let state = &room.state;
            let heroes: Vec<String> =
                state.members("join").filter(|u| *u != self.caller.user_id).take(5).map(str::to_string).collect();
            (heroes, state.member_count("join"), state.member_count("invite"))
        })?;
        Some(json!({
            "timeline": timeline,
            "state": { "events": state },
            "ephemeral": { "events": ephemeral },
            "account_data": { "events": account_data },
            "unread_notifications": { "notification_count": notifications, "highlight_count": highlights },
            "summary": {
                "m.heroes": heroes,
                "m.joined_member_count": joined_count,
                "m.invited_member_count": invited_count,
            },
        }))
    }

    fn room_account_data(&self) -> Vec<Value> {
        self.app.model.with_user(&self.caller.user_id, |user| {
            let Some(events) = user.room_account_data.get(self.room_id) else {
                return Vec::new();
            };
            events
                .iter()
                .filter(|(_, (seq, _))| self.initial || (*seq > self.user_low && *seq <= self.user_high))
                .map(|(event_type, (_, content))| json!({ "type": event_type, "content": content }))
                .filter(|e| self.filter.room.account_data.matches(e))
                .collect()
        })
    }

    /// The timeline (last `limit` events with `low < seq <= high` the caller may see) and the
    /// state before it.
    /// `floor`: the lowest position the timeline may show.
    async fn timeline_and_state(&self, high: u64, floor: u64, from_start: bool) -> (Value, Vec<Value>) {
        let timeline_filter = &self.filter.room.timeline;
        let limit = self.filter.timeline_limit(10).min(self.app.config.limits.max_events_per_response).max(1);
        let page = self
            .app
            .model
            .page_back(self.app.store.log(), self.room_id, high.saturating_add(1), floor, limit + 1, |item| {
                timeline_filter.matches(&item.event)
            })
            .await;
        let mut shown = match page {
            Ok(page) => page.items,
            Err(error) => {
                tracing::warn!(room_id = self.room_id, %error, "sync timeline incomplete");
                Vec::new()
            }
        };
        let limited = shown.len() > limit;
        shown.truncate(limit);
        shown.reverse();
        let first_seq = shown.first().map(|i| i.seq).unwrap_or(high + 1);
        let events: Vec<Value> = shown.iter().map(|item| client_event(item, Some(self.caller))).collect();
        let shown_ids: std::collections::HashSet<&str> = shown.iter().map(|item| &*item.event_id).collect();
        let state_filter = &self.filter.room.state;
        let lazy = state_filter.lazy_load_members;
        let senders: std::collections::HashSet<&str> = shown.iter().map(|item| &*item.sender).collect();
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
        let low = self.low;
        let state: Vec<Value> = self
            .app
            .model
            .with_room(self.room_id, |room| {
                // Chosen by key and id first: only the events sent are parsed.
                room.state
                    .refs()
                    .filter(|event| !event.event_id.is_some_and(|id| shown_ids.contains(id)))
                    .filter(|event| {
                        if from_start {
                            return true;
                        }
                        if !limited {
                            return false;
                        }
                        // State changes that fell into the gap before the shown timeline.
                        let seq = event.event_id.and_then(position_of).map(|(_, seq)| seq);
                        seq.is_some_and(|seq| seq > low && seq < first_seq)
                    })
                    .filter(|event| {
                        !lazy || event.event_type != "m.room.member" || event.state_key == self.caller.user_id || senders.contains(event.state_key)
                    })
                    .map(|event| event.parse())
                    .filter(|event| wanted(event))
                    .collect()
            })
            .unwrap_or_default();
        let timeline = json!({
            "events": events,
            "limited": limited,
            "prev_batch": room_token(first_seq),
        });
        (timeline, state)
    }

    fn receipt_event(&self, receipts: Vec<crate::read_model::Receipt>) -> Option<Value> {
        receipt_event_for(receipts, &self.caller.user_id)
    }

    /// Notifications and highlights after the caller's read receipt. The window's events are
    /// evaluated under the caller's push rules; older ones are counted from the room's
    /// notification marks when the caller has the default rules (highlights, and every count
    /// under rules of their own, look at the window only).
    fn unread_counts(&self) -> (u64, u64) {
        let me = self.caller.user_id.as_str();
        let (stored_rules, rules_seq) = self.app.model.with_user(me, |user| match user.account_data.get("m.push_rules") {
            Some((seq, rules)) => (Some(rules.clone()), *seq),
            None => (None, 0),
        });
        let counted = self.app.model.with_room(self.room_id, |room| {
            let read = room
                .receipts_of(me)
                .filter(|r| r.receipt_type == "m.read" || r.receipt_type == "m.read.private")
                .filter_map(|r| match position_of(&r.event_id) {
                    Some((_, seq)) => Some((seq, r.notify_mark)),
                    None => room.window_find(&r.event_id).map(|item| (item.seq, r.notify_mark)),
                })
                .max_by_key(|(seq, _)| *seq);
            // The caller's own latest event also marks everything before it as read.
            let own = room.last_sent_mark(me).map(|(seq, mark)| (seq, Some(mark)));
            let (after, after_mark) = read.into_iter().chain(own).max_by_key(|(seq, _)| *seq).unwrap_or((0, Some(0)));
            // Counted before (same read position and rules): only the events since then are new.
            let memo_key = (me.to_string(), self.room_id.to_string());
            let memo =
                self.app.unread.get(&memo_key).filter(|m| m.after == after && m.rules_seq == rules_seq && m.upto <= self.high);
            let (from_seq, mut notifications, mut highlights) = match memo {
                Some(m) => (m.upto + 1, m.notifications, m.highlights),
                None => {
                    let evicted = room.evicted_upto();
                    let before_window = match after_mark {
                        Some(mark) if stored_rules.is_none() && after < evicted && self.high >= evicted => {
                            room.notifications_before_window(mark)
                        }
                        _ => 0,
                    };
                    (after + 1, before_window, 0)
                }
            };
            let mut new_events =
                room.window_between(from_seq.saturating_sub(1), self.high).filter(|item| &*item.sender != me).peekable();
            if new_events.peek().is_some() {
                let default_rules;
                let rules = match &stored_rules {
                    Some(stored) => stored,
                    None => {
                        default_rules = self.app.default_push_rules.get(me);
                        default_rules.as_ref()
                    }
                };
                let member = room.state.content("m.room.member", me);
                let display_name = member.as_ref().and_then(|c| c["displayname"].as_str());
                let power_levels = room.state.power_levels();
                let context = PushContext { user_id: me, display_name, member_count: room.state.joined_count(), power_levels };
                for item in new_events {
                    let outcome = evaluate(rules, &item.event, &context);
                    notifications += u64::from(outcome.notify);
                    highlights += u64::from(outcome.highlight);
                }
            }
            (memo_key, UnreadMemo { after, rules_seq, upto: self.high, notifications, highlights })
        });
        match counted {
            Some((key, memo)) => {
                self.app.unread.put(key, memo);
                (memo.notifications, memo.highlights)
            }
            None => (0, 0),
        }
    }

    /// An invited or knocking user's view of a room they are not in: some of its state,
    /// stripped, with their own membership event (and an inviter's), under `key`
    /// (`invite_state` or `knock_state`).
    fn stripped_state(&self, key: &str) -> Option<Value> {
        self.app.model.with_room(self.room_id, |room| {
            let changed =
                room.membership_changes_between(self.low, self.high).iter().any(|(_, user, _)| *user == self.caller.user_id);
            if !self.initial && !changed {
                return None;
            }
            let events = invite_state_of(room, &self.caller.user_id);
            Some(json!({ key: { "events": events } }))
        })?
    }

    async fn left(&self) -> Option<Value> {
        let news = self.news()?;
        if !news.membership_changed && !(self.initial && self.filter.room.include_leave) {
            return None;
        }
        let leave_seq = self
            .app
            .model
            .with_room(self.room_id, |room| room.membership_seq(&self.caller.user_id))
            .flatten()
            .unwrap_or(self.high);
        let (timeline, state) = self.timeline_and_state(self.high.min(leave_seq), (self.low + 1).max(news.visible_from), false).await;
        Some(json!({ "timeline": timeline, "state": { "events": state }, "account_data": { "events": [] } }))
    }
}

/// The `m.receipt` event `viewer` sees of `receipts` (private ones only their owner's).
pub(super) fn receipt_event_for(receipts: Vec<crate::read_model::Receipt>, viewer: &str) -> Option<Value> {
    let mut content = Map::new();
    for receipt in receipts {
        let mut body = json!({ "ts": receipt.ts });
        if let Some(thread) = &receipt.thread_id {
            body["thread_id"] = json!(thread);
        }
        // Private receipts are shown only to their owner.
        if receipt.receipt_type == "m.read.private" && receipt.user_id != viewer {
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

/// What an invited (or knocking) user sees of a room they are not in: some of its state,
/// stripped, with their own membership event (and their inviter's).
pub(super) fn invite_state_of(room: &crate::read_model::Room, user_id: &str) -> Vec<Value> {
    let mut events: Vec<Value> = [
        "m.room.create",
        "m.room.join_rules",
        "m.room.name",
        "m.room.avatar",
        "m.room.canonical_alias",
        "m.room.encryption",
        "m.room.topic",
    ]
    .iter()
    .filter_map(|t| room.state.get(t, ""))
    .map(|event| stripped(&event))
    .collect();
    if let Some(invite) = room.state.get("m.room.member", user_id) {
        if let Some(inviter) = invite["sender"].as_str()
            && inviter != user_id
            && let Some(member) = room.state.get("m.room.member", inviter)
        {
            events.push(stripped(&member));
        }
        events.push(stripped(&invite));
    }
    events
}

/// The caller's unread notification and highlight counts in `room_id` up to position `high`
/// (as `/sync` counts them, sharing its memo).
pub(super) fn unread_counts_of(app: &App, caller: &Caller, room_id: &str, high: u64) -> (u64, u64) {
    let filter = Filter::default();
    let context = RoomSync {
        app,
        caller,
        room_id,
        low: 0,
        high,
        initial: true,
        full_state: false,
        filter: &filter,
        typing: Vec::new(),
        typing_changed: false,
        user_low: 0,
        user_high: 0,
    };
    context.unread_counts()
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
