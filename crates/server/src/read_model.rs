//! The node's read model: everything it needs to answer fast, rebuilt from the event log at start
//! and kept current by tailing every partition.
//!
//! Owns applying entries (the authorization rules run here, so every node accepts and rejects
//! exactly the same events in the same order), the per-user wake-ups that long-polling `/sync`
//! waits on, and the applied position of each partition. It never writes to the store.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use haetae_matrix::state::RoomState;
use serde_json::Value;
use tokio::sync::{Notify, watch};

use crate::entry::{Entry, Envelope, Txn};

/// One event in a room's timeline.
#[derive(Clone, Debug)]
pub struct TimelineItem {
    /// Position in the room's partition.
    pub seq: u64,
    pub event: Arc<Value>,
    /// For state events: the content this event replaced.
    pub prev_content: Option<Value>,
    pub txn: Option<Txn>,
    pub redacted_because: Option<Arc<Value>>,
}

#[derive(Clone, Debug)]
pub struct Receipt {
    pub seq: u64,
    pub user_id: String,
    pub receipt_type: String,
    pub event_id: String,
    pub ts: u64,
    pub thread_id: Option<String>,
}

#[derive(Debug)]
pub struct Room {
    pub room_id: String,
    pub partition: u32,
    pub state: RoomState,
    pub timeline: Vec<TimelineItem>,
    /// Sequence of the last entry on this room's subject (for expected-sequence writes).
    pub last_seq: u64,
    pub receipts: Vec<Receipt>,
    /// Sequence of each user's latest membership event.
    pub membership_seq: HashMap<String, u64>,
    /// Sequence of each user's latest event in the room (it marks what they have read).
    pub last_sent: HashMap<String, u64>,
}

impl Room {
    /// Index of the first timeline item with `seq >= position`.
    pub fn index_at(&self, position: u64) -> usize {
        self.timeline.partition_point(|item| item.seq < position)
    }

    pub fn find(&self, event_id: &str) -> Option<&TimelineItem> {
        self.timeline.iter().rev().find(|item| item.event["event_id"].as_str() == Some(event_id))
    }

    /// The first position `user_id` may see under the room's history visibility: everything for
    /// `shared` and `world_readable`; from the start of their current invite-or-join (`invited`)
    /// or join (`joined`) otherwise; `u64::MAX` if they were never admitted.
    pub fn visible_from(&self, user_id: &str) -> u64 {
        let admitted: &[&str] = match self.state.history_visibility() {
            "invited" => &["invite", "join"],
            "joined" => &["join"],
            _ => return 0,
        };
        let mut from = u64::MAX;
        for item in self.timeline.iter().rev() {
            if item.event["type"] != "m.room.member" || item.event["state_key"] != user_id {
                continue;
            }
            let membership = item.event["content"]["membership"].as_str().unwrap_or("");
            if admitted.contains(&membership) {
                from = item.seq;
            } else if from != u64::MAX {
                break;
            }
        }
        from
    }

    /// The members a change in this room must wake: joined and invited users.
    fn audience(&self) -> Vec<String> {
        let mut users = self.state.members_with("join");
        users.extend(self.state.members_with("invite"));
        users
    }
}

#[derive(Clone, Debug)]
pub struct ToDevice {
    pub seq: u64,
    pub device_id: String,
    pub event: Value,
}

#[derive(Debug, Default)]
pub struct User {
    /// Rooms this user has a membership in, with that membership.
    pub rooms: BTreeMap<String, String>,
    pub account_data: HashMap<String, (u64, Value)>,
    pub room_account_data: HashMap<(String, String), (u64, Value)>,
    pub to_device: Vec<ToDevice>,
    pub filters: HashMap<String, Value>,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
    pub pushers: Vec<Value>,
}

/// An access token's owner, as cached from the tokens bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub user_id: String,
    pub device_id: String,
    /// Random per login: distinguishes a re-created device id from the old one.
    pub session: String,
}

#[derive(Debug, Default)]
pub struct Model {
    pub rooms: HashMap<String, Room>,
    pub users: HashMap<String, User>,
    /// event id -> room id, for every accepted event.
    pub event_rooms: HashMap<String, String>,
    /// Events the authorization rules rejected, with the reason (bounded).
    pub rejected: HashMap<String, String>,
    /// Per partition: (seq, user) of each end-to-end key change, in order.
    pub key_changes: Vec<Vec<(u64, String)>>,
    /// Token hash -> session: positive cache; revocations arrive through the log.
    pub tokens: HashMap<String, Session>,
    /// Hashes of revoked tokens (bounded), so a slow bucket read cannot re-cache one.
    pub revoked_tokens: std::collections::HashSet<String>,
}

const MAX_REJECTED: usize = 10_000;
const MAX_TO_DEVICE_PER_USER: usize = 10_000;

/// Typing notifications: ephemeral, per node, fed by every node over NATS.
#[derive(Debug, Default)]
pub struct Typing {
    /// room -> user -> expiry
    pub rooms: HashMap<String, HashMap<String, tokio::time::Instant>>,
    /// Bumped on every change; carried in sync tokens.
    pub serial: u64,
    /// room -> serial of its last change.
    pub room_serial: HashMap<String, u64>,
}

pub struct ReadModel {
    pub model: RwLock<Model>,
    pub typing: Mutex<Typing>,
    applied: Vec<watch::Sender<u64>>,
    wakers: Mutex<HashMap<String, Arc<Notify>>>,
    partitions: u32,
}

impl ReadModel {
    pub fn new(partitions: u32) -> ReadModel {
        let model = Model { key_changes: vec![Vec::new(); partitions as usize], ..Default::default() };
        ReadModel {
            model: RwLock::new(model),
            typing: Mutex::new(Typing::default()),
            applied: (0..partitions).map(|_| watch::channel(0).0).collect(),
            wakers: Mutex::new(HashMap::new()),
            partitions,
        }
    }

    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    pub fn partition_of(&self, entity: &str) -> u32 {
        haetae_store::log::partition_of(entity, self.partitions)
    }

    /// The applied position of every partition: what a sync token records.
    pub fn positions(&self) -> Vec<u64> {
        self.applied.iter().map(|sender| *sender.borrow()).collect()
    }

    pub fn applied(&self, partition: u32) -> u64 {
        *self.applied[partition as usize].borrow()
    }

    /// Waits until `partition` has applied `seq` (the node's own write, or a position a client saw
    /// at another node). False on timeout.
    pub async fn wait_applied(&self, partition: u32, seq: u64, timeout: Duration) -> bool {
        let mut receiver = self.applied[partition as usize].subscribe();
        tokio::time::timeout(timeout, receiver.wait_for(|applied| *applied >= seq)).await.is_ok_and(|r| r.is_ok())
    }

    /// Waits until every partition has applied at least `positions`.
    pub async fn wait_positions(&self, positions: &[u64], timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        for (partition, seq) in positions.iter().enumerate().take(self.partitions as usize) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if !self.wait_applied(partition as u32, *seq, left).await {
                return false;
            }
        }
        true
    }

    /// The wake-up a long-poll for `user_id` waits on.
    pub fn waker(&self, user_id: &str) -> Arc<Notify> {
        let mut wakers = self.wakers.lock().expect("wakers lock");
        wakers.entry(user_id.to_string()).or_default().clone()
    }

    pub fn wake(&self, users: &[String]) {
        let wakers = self.wakers.lock().expect("wakers lock");
        for user in users {
            if let Some(notify) = wakers.get(user) {
                notify.notify_waiters();
            }
        }
    }

    /// Applies one log entry. Entries of a partition must arrive in order, each once.
    pub fn apply(&self, partition: u32, seq: u64, entity: &str, payload: &[u8]) {
        let parsed = serde_json::from_slice::<Envelope>(payload);
        let mut model = self.model.write().expect("model lock");
        let woken = match parsed {
            Ok(envelope) => model.apply(partition, seq, entity, envelope.entry),
            Err(error) => {
                // A newer node may write entries this one does not know; skipping keeps order.
                tracing::warn!(partition, seq, %error, "skipping an entry this version cannot read");
                Vec::new()
            }
        };
        // Inside the lock: a reader holding the lock sees positions that match the model exactly.
        self.applied[partition as usize].send_replace(seq);
        drop(model);
        self.wake(&woken);
    }

    /// Typing changed in `room_id`: wake its members.
    pub fn set_typing(&self, room_id: &str, user_id: &str, typing: bool, timeout: Duration) {
        {
            let mut state = self.typing.lock().expect("typing lock");
            let users = state.rooms.entry(room_id.to_string()).or_default();
            let changed = if typing {
                users.insert(user_id.to_string(), tokio::time::Instant::now() + timeout).is_none()
            } else {
                users.remove(user_id).is_some()
            };
            if !changed && typing {
                return; // an extension of an ongoing typing notice is not news
            }
            state.serial += 1;
            let serial = state.serial;
            state.room_serial.insert(room_id.to_string(), serial);
        }
        let audience = self.model.read().expect("model lock").rooms.get(room_id).map(Room::audience);
        if let Some(audience) = audience {
            self.wake(&audience);
        }
    }

    /// Drops expired typing notices (called periodically).
    pub fn expire_typing(&self) {
        let now = tokio::time::Instant::now();
        let mut expired_rooms = Vec::new();
        {
            let mut state = self.typing.lock().expect("typing lock");
            for (room, users) in state.rooms.iter_mut() {
                let before = users.len();
                users.retain(|_, expiry| *expiry > now);
                if users.len() != before {
                    expired_rooms.push(room.clone());
                }
            }
            for room in &expired_rooms {
                state.serial += 1;
                let serial = state.serial;
                state.room_serial.insert(room.clone(), serial);
            }
        }
        for room in expired_rooms {
            let audience = self.model.read().expect("model lock").rooms.get(&room).map(Room::audience);
            if let Some(audience) = audience {
                self.wake(&audience);
            }
        }
    }
}

impl Model {
    /// Applies an entry and returns the users to wake.
    fn apply(&mut self, partition: u32, seq: u64, entity: &str, entry: Entry) -> Vec<String> {
        match entry {
            Entry::Event { event, txn } => self.apply_event(partition, seq, entity, event, txn),
            Entry::Receipt { user_id, receipt_type, event_id, ts, thread_id } => {
                let Some(room) = self.rooms.get_mut(entity) else { return Vec::new() };
                room.last_seq = seq;
                if room.state.membership(&user_id) != Some("join") {
                    return Vec::new();
                }
                room.receipts.push(Receipt { seq, user_id, receipt_type, event_id, ts, thread_id });
                room.audience()
            }
            user_entry => {
                let user = self.users.entry(entity.to_string()).or_default();
                match user_entry {
                    Entry::AccountData { room_id: None, event_type, content } => {
                        user.account_data.insert(event_type, (seq, content));
                    }
                    Entry::AccountData { room_id: Some(room_id), event_type, content } => {
                        user.room_account_data.insert((room_id, event_type), (seq, content));
                    }
                    Entry::ToDevice { sender, device_id, event_type, content } => {
                        user.to_device.push(ToDevice {
                            seq,
                            device_id,
                            event: serde_json::json!({ "sender": sender, "type": event_type, "content": content }),
                        });
                        if user.to_device.len() > MAX_TO_DEVICE_PER_USER {
                            let excess = user.to_device.len() - MAX_TO_DEVICE_PER_USER;
                            user.to_device.drain(..excess);
                        }
                    }
                    Entry::ToDeviceAck { device_id, upto } => {
                        user.to_device.retain(|m| !(m.device_id == device_id && m.seq <= upto));
                    }
                    Entry::KeysChanged => {
                        if let Some(changes) = self.key_changes.get_mut(partition as usize) {
                            changes.push((seq, entity.to_string()));
                        }
                        // Everyone sharing a room with this user should learn of it.
                        let mut audience = vec![entity.to_string()];
                        if let Some(user) = self.users.get(entity) {
                            for (room_id, membership) in &user.rooms {
                                if membership == "join" {
                                    if let Some(room) = self.rooms.get(room_id) {
                                        audience.extend(room.state.members_with("join"));
                                    }
                                }
                            }
                        }
                        audience.sort();
                        audience.dedup();
                        return audience;
                    }
                    Entry::TokensRevoked { token_hashes } => {
                        if self.revoked_tokens.len() > MAX_REJECTED * 10 {
                            self.revoked_tokens.clear();
                        }
                        for hash in token_hashes {
                            self.tokens.remove(&hash);
                            self.revoked_tokens.insert(hash);
                        }
                    }
                    Entry::Filter { filter_id, filter } => {
                        user.filters.insert(filter_id, filter);
                    }
                    Entry::Profile { displayname, avatar_url } => {
                        user.displayname = displayname;
                        user.avatar_url = avatar_url;
                    }
                    Entry::Pushers { pushers } => {
                        user.pushers = pushers;
                    }
                    Entry::Event { .. } | Entry::Receipt { .. } => unreachable!("handled above"),
                }
                vec![entity.to_string()]
            }
        }
    }

    fn reject(&mut self, event_id: &str, reason: String) {
        if self.rejected.len() >= MAX_REJECTED {
            self.rejected.clear();
        }
        self.rejected.insert(event_id.to_string(), reason);
    }

    fn apply_event(&mut self, partition: u32, seq: u64, room_id: &str, event: Value, txn: Option<Txn>) -> Vec<String> {
        let event_id = event["event_id"].as_str().unwrap_or_default().to_string();
        if let Some(room) = self.rooms.get_mut(room_id) {
            room.last_seq = seq;
        }
        if self.event_rooms.contains_key(&event_id) {
            return Vec::new(); // a retry that outlived the dedup window
        }
        if event["room_id"].as_str() != Some(room_id) {
            self.reject(&event_id, "event filed under another room".into());
            return Vec::new();
        }
        if event["type"] == "m.room.create" && !self.rooms.contains_key(room_id) {
            self.rooms.insert(
                room_id.to_string(),
                Room {
                    room_id: room_id.to_string(),
                    partition,
                    state: RoomState::default(),
                    timeline: Vec::new(),
                    last_seq: seq,
                    receipts: Vec::new(),
                    membership_seq: HashMap::new(),
                    last_sent: HashMap::new(),
                },
            );
        }
        let Some(room) = self.rooms.get_mut(room_id) else {
            self.reject(&event_id, "no such room".into());
            return Vec::new();
        };
        if let Err(error) = haetae_matrix::auth::check(&room.state, &event) {
            self.reject(&event_id, error.to_string());
            return Vec::new();
        }
        if event["type"] == "m.room.redaction" {
            let target_id = event["redacts"].as_str().or(event["content"]["redacts"].as_str()).unwrap_or_default();
            let target = room.find(target_id).map(|item| item.event.clone());
            if let Err(error) = haetae_matrix::auth::check_redaction(&room.state, &event, target.as_deref()) {
                self.reject(&event_id, error.to_string());
                return Vec::new();
            }
            let version = room.state.room_version().to_string();
            let redaction = Arc::new(event.clone());
            if let Some(item) = room.timeline.iter_mut().rev().find(|i| i.event["event_id"].as_str() == Some(target_id)) {
                item.event = Arc::new(haetae_matrix::redaction::redact(&item.event, &version));
                item.redacted_because = Some(redaction);
                if item.event.get("state_key").is_some() {
                    let key = (item.event["type"].as_str().unwrap_or(""), item.event["state_key"].as_str().unwrap_or(""));
                    if room.state.get(key.0, key.1).and_then(|e| e["event_id"].as_str()) == Some(target_id) {
                        room.state.insert((*item.event).clone());
                    }
                }
            }
        }
        let mut prev_content = None;
        let mut membership_change = None;
        if let (Some(event_type), Some(state_key)) = (event["type"].as_str(), event["state_key"].as_str()) {
            prev_content = room.state.content(event_type, state_key).cloned();
            if event_type == "m.room.member" {
                let membership = event["content"]["membership"].as_str().unwrap_or("leave").to_string();
                room.membership_seq.insert(state_key.to_string(), seq);
                membership_change = Some((state_key.to_string(), membership));
            }
            room.state.insert(event.clone());
        }
        // Wake everyone who could see the room before or after this event.
        let mut audience = room.audience();
        if let Some(sender) = event["sender"].as_str() {
            room.last_sent.insert(sender.to_string(), seq);
        }
        room.timeline.push(TimelineItem { seq, event: Arc::new(event), prev_content, txn, redacted_because: None });
        self.event_rooms.insert(event_id, room_id.to_string());
        if let Some((user_id, membership)) = membership_change {
            self.users.entry(user_id.clone()).or_default().rooms.insert(room_id.to_string(), membership);
            audience.push(user_id);
        }
        audience
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event_entry(event: Value) -> Vec<u8> {
        Envelope::new(Entry::Event { event, txn: None }).to_bytes().to_vec()
    }

    fn ev(id: &str, event_type: &str, sender: &str, state_key: Option<&str>, content: Value) -> Value {
        let mut event = json!({"event_id": id, "type": event_type, "sender": sender, "room_id": "!r:x",
            "content": content, "origin_server_ts": 1});
        if let Some(key) = state_key {
            event["state_key"] = json!(key);
        }
        event
    }

    fn created_room(model: &ReadModel) -> u64 {
        let p = model.partition_of("!r:x");
        model.apply(p, 1, "!r:x", &event_entry(ev("$1", "m.room.create", "@a:x", Some(""), json!({"room_version": "11"}))));
        model.apply(p, 2, "!r:x", &event_entry(ev("$2", "m.room.member", "@a:x", Some("@a:x"), json!({"membership": "join"}))));
        2
    }

    #[test]
    fn applies_events_in_order_and_ignores_duplicates() {
        let model = ReadModel::new(4);
        let p = model.partition_of("!r:x");
        let last = created_room(&model);
        let message = event_entry(ev("$3", "m.room.message", "@a:x", None, json!({"body": "hi"})));
        model.apply(p, last + 1, "!r:x", &message);
        model.apply(p, last + 2, "!r:x", &message);
        let inner = model.model.read().unwrap();
        let room = &inner.rooms["!r:x"];
        assert_eq!(room.timeline.len(), 3);
        assert_eq!(room.last_seq, last + 2);
        assert_eq!(model.applied(p), last + 2);
        assert_eq!(inner.users["@a:x"].rooms["!r:x"], "join");
    }

    #[test]
    fn rejects_what_the_authorization_rules_forbid() {
        let model = ReadModel::new(4);
        let p = model.partition_of("!r:x");
        let last = created_room(&model);
        let intruder = event_entry(ev("$4", "m.room.message", "@mallory:x", None, json!({"body": "hi"})));
        model.apply(p, last + 1, "!r:x", &intruder);
        let inner = model.model.read().unwrap();
        assert_eq!(inner.rooms["!r:x"].timeline.len(), 2);
        assert!(inner.rejected.contains_key("$4"));
    }

    #[test]
    fn redaction_strips_the_target() {
        let model = ReadModel::new(4);
        let p = model.partition_of("!r:x");
        let last = created_room(&model);
        model.apply(p, last + 1, "!r:x", &event_entry(ev("$5", "m.room.message", "@a:x", None, json!({"body": "secret"}))));
        let mut redaction = ev("$6", "m.room.redaction", "@a:x", None, json!({"redacts": "$5"}));
        redaction["redacts"] = json!("$5");
        model.apply(p, last + 2, "!r:x", &event_entry(redaction));
        let inner = model.model.read().unwrap();
        let item = inner.rooms["!r:x"].find("$5").unwrap();
        assert!(item.event["content"].get("body").is_none());
        assert!(item.redacted_because.is_some());
    }

    #[test]
    fn unreadable_entries_are_skipped_but_advance_the_position() {
        let model = ReadModel::new(1);
        model.apply(0, 7, "!r:x", b"not json");
        assert_eq!(model.applied(0), 7);
    }
}
