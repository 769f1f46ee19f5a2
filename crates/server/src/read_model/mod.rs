//! The node's read model: what it needs to answer fast, rebuilt from the event log (or from a
//! snapshot plus the log after it) and kept current by tailing every partition.
//!
//! Owns applying entries (the authorization rules run here, so every node accepts and rejects
//! exactly the same events in the same order), the per-user wake-ups that long-polling `/sync`
//! waits on, and the applied position of each partition. It never writes to the store.
//!
//! - [`room`]: one room: state, indexes over its history, a window of recent events.
//! - [`cold`]: rooms not used lately, moved out of memory to a spill file and read back on use.
//! - [`history`]: older events read back from the log by position, cached under a byte budget.
//! - [`event_ids`]: event ids derived from positions (finding an event by id needs no index).
//! - [`relations`]: relations by target position and threads by latest reply, per room.
//! - [`recency`]: each user's joined and invited rooms by bump stamp, for sliding sync lists.
//! - [`snapshot`]: the model written to and loaded from the snapshot store.
//!
//! Locks are per room and per user: applying one partition, building one user's sync and
//! answering one room's `/messages` do not wait for each other. The only model-wide lock is the
//! snapshot gate, which a snapshot holds while it copies the model (milliseconds, every few
//! minutes).
//!
//! Bounds (every structure that could grow): room windows, old-history chunks and hot rooms'
//! state and indexes share the node's cache budget (`cache_mb`); a cold room costs its id and a
//! file position; relation indexes grow with relation events only (a position and
//! three interned names each); receipts are the latest per (user, room, type, thread); typing
//! notices are dropped when they expire; the token cache, rejected-event reasons, recent
//! transactions, key changes, blocked rooms and each user's to-device queue have fixed caps below.

pub mod cold;
pub mod event_ids;
pub mod history;
pub mod recency;
pub mod relations;
pub mod room;
pub mod snapshot;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{Notify, watch};

pub use room::{Membership, Receipt, Room, TimelineItem};

use crate::bounded::BoundedMap;
use crate::entry::{Entry, Envelope, Txn};
use event_ids::{event_id_at, position_of};
use history::ChunkCache;

/// Reasons of rejected events kept (for the sender's answer); beyond it the oldest go.
const MAX_REJECTED: usize = 10_000;
/// To-device messages waiting per user; beyond it the oldest go.
const MAX_TO_DEVICE_PER_USER: usize = 10_000;
/// Cached token lookups.
const MAX_CACHED_TOKENS: usize = 100_000;
/// Revoked token hashes remembered (so a slow bucket read cannot re-cache one).
const MAX_REVOKED_TOKENS: usize = 100_000;
/// Transactions remembered to recognise a retry after the log's duplicate window.
const MAX_RECENT_TXNS: usize = 200_000;
/// Key changes remembered per partition; a sync from before them reports every user it shares a
/// room with.
const MAX_KEY_CHANGES: usize = 100_000;
/// Most rooms blocked at once: a block past it is not applied (by every node alike).
pub const MAX_BLOCKED_ROOMS: usize = 100_000;
/// Why a join to a blocked room is refused.
pub const BLOCKED_ROOM: &str = "This room has been blocked on this server";

/// Whether `event` is a join (the one membership a blocked room refuses).
pub fn is_join(event: &Value) -> bool {
    event["type"] == "m.room.member" && event["content"]["membership"] == "join"
}
/// Event types that move a room up a sliding sync list (MSC4186's default bump types).
pub const BUMP_EVENT_TYPES: [&str; 7] =
    ["m.room.create", "m.room.message", "m.room.encrypted", "m.sticker", "m.call.invite", "m.poll.start", "m.beacon_info"];

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ToDevice {
    pub seq: u64,
    pub device_id: String,
    pub event: Value,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct User {
    /// Rooms this user has a membership in, with that membership (rebuilt from the rooms' state
    /// when a snapshot is loaded).
    #[serde(skip)]
    pub rooms: BTreeMap<String, Membership>,
    /// The joined and invited rooms of `rooms` by recency, changed with it (rebuilt like it).
    #[serde(skip)]
    pub recency: recency::RoomRecency,
    pub account_data: HashMap<String, (u64, Value)>,
    pub room_account_data: HashMap<String, HashMap<String, (u64, Value)>>,
    pub to_device: VecDeque<ToDevice>,
    pub filters: HashMap<String, Value>,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
    pub pushers: Vec<Value>,
    /// Rooms the user left and then forgot (until they join again).
    #[serde(default)]
    pub forgotten: std::collections::BTreeSet<String>,
}

impl User {
    pub fn joined_rooms(&self) -> impl Iterator<Item = &String> {
        self.rooms.iter().filter(|(_, m)| **m == Membership::Join).map(|(r, _)| r)
    }
}

/// An access token's owner, as cached from the tokens bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub user_id: String,
    pub device_id: String,
    /// Random per login: distinguishes a re-created device id from the old one.
    pub session: String,
}

/// Typing notifications: ephemeral, per node, fed by every node over NATS.
#[derive(Debug, Default)]
pub struct Typing {
    /// room -> user -> expiry (expired notices are dropped every half second)
    pub rooms: HashMap<String, HashMap<String, tokio::time::Instant>>,
    /// Bumped on every change; carried in sync tokens.
    pub serial: u64,
    /// room -> serial of its last change (dropped with the room's last notice, see `expire`).
    pub room_serial: HashMap<String, u64>,
}

/// Key changes of one partition: (position, user), oldest first, and the position before which
/// they were forgotten.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct KeyChanges {
    pub forgotten_upto: u64,
    pub entries: VecDeque<(u64, String)>,
}

/// Transactions seen recently: txn key -> (room, position of its event).
#[derive(Default)]
struct RecentTxns {
    by_key: HashMap<String, (String, u64)>,
    order: VecDeque<String>,
}

/// How the node's memory for history is split.
#[derive(Clone, Copy, Debug)]
pub struct CacheBudget {
    /// Recent windows of all rooms, bytes.
    pub window_bytes: usize,
    /// Old-history chunks read back from the log, bytes.
    pub chunk_bytes: usize,
    /// Hot rooms' state and indexes, bytes (beyond it, rooms go cold: `cold.rs`).
    pub room_bytes: usize,
}

impl CacheBudget {
    /// Half for recent windows, a quarter for old history, a quarter for rooms' state.
    pub fn from_mb(cache_mb: u64) -> CacheBudget {
        let total = (cache_mb as usize).max(8) * 1024 * 1024;
        CacheBudget { window_bytes: total / 2, chunk_bytes: total / 4, room_bytes: total / 4 }
    }
}

pub struct ReadModel {
    partitions: u32,
    applied: Vec<watch::Sender<u64>>,
    wakers: Mutex<HashMap<String, Arc<Notify>>>,
    rooms: RwLock<cold::RoomTable>,
    /// Where cold rooms are kept.
    spill: Mutex<cold::Spill>,
    /// Estimated bytes of the hot rooms' state and indexes.
    room_bytes: AtomicI64,
    users: RwLock<HashMap<String, Arc<RwLock<User>>>>,
    pub typing: Mutex<Typing>,
    tokens: BoundedMap<String, Session>,
    revoked_tokens: Mutex<HashSet<String>>,
    rejected: Mutex<(HashMap<String, String>, VecDeque<String>)>,
    recent_txns: Mutex<RecentTxns>,
    key_changes: Mutex<Vec<KeyChanges>>,
    /// Rooms an administrator blocked (nobody may join), with who blocked each; at most
    /// [`MAX_BLOCKED_ROOMS`]. Kept apart from the rooms, so a block outlives a purge.
    blocked_rooms: Mutex<HashMap<String, String>>,
    chunks: Mutex<ChunkCache>,
    budget: CacheBudget,
    /// Bytes held by all rooms' windows.
    window_bytes: AtomicI64,
    /// A logical clock for least-recently-used decisions.
    clock: AtomicU64,
    /// Held (shared) while applying an entry, (exclusively) while a snapshot copies the model.
    gate: RwLock<()>,
    /// The positions of the snapshot this model started from, if it did.
    loaded_snapshot: Mutex<Option<Vec<u64>>>,
    /// Each room's bump stamp: the `origin_server_ts` of its latest event of a
    /// [`BUMP_EVENT_TYPES`] type. Sliding sync orders a user's rooms by it without reading cold
    /// rooms back. Bounded like the room table: one number per room the node knows.
    bumps: RwLock<HashMap<String, u64>>,
}

impl ReadModel {
    pub fn new(partitions: u32) -> ReadModel {
        ReadModel::with_budget(partitions, CacheBudget::from_mb(256))
    }

    pub fn with_budget(partitions: u32, budget: CacheBudget) -> ReadModel {
        ReadModel {
            partitions,
            applied: (0..partitions).map(|_| watch::channel(0).0).collect(),
            wakers: Mutex::new(HashMap::new()),
            rooms: RwLock::new(cold::RoomTable::default()),
            spill: Mutex::new(cold::Spill::new(None)),
            room_bytes: AtomicI64::new(0),
            users: RwLock::new(HashMap::new()),
            typing: Mutex::new(Typing::default()),
            tokens: BoundedMap::new(MAX_CACHED_TOKENS),
            revoked_tokens: Mutex::new(HashSet::new()),
            rejected: Mutex::new((HashMap::new(), VecDeque::new())),
            recent_txns: Mutex::new(RecentTxns::default()),
            key_changes: Mutex::new(vec![KeyChanges::default(); partitions as usize]),
            blocked_rooms: Mutex::new(HashMap::new()),
            chunks: Mutex::new(ChunkCache::new(budget.chunk_bytes)),
            budget,
            window_bytes: AtomicI64::new(0),
            clock: AtomicU64::new(0),
            gate: RwLock::new(()),
            loaded_snapshot: Mutex::new(None),
            bumps: RwLock::new(HashMap::new()),
        }
    }

    /// The positions of the snapshot this model started from, if it did.
    pub fn loaded_snapshot(&self) -> Option<Vec<u64>> {
        self.loaded_snapshot.lock().expect("snapshot lock").clone()
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
        if wakers.len() > 100_000 {
            // Nobody waits on a waker only the map holds.
            wakers.retain(|_, notify| Arc::strong_count(notify) > 1);
        }
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

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    // ---- queries ----

    /// Runs `read` on `room_id` if this node knows the room.
    pub fn with_room<T>(&self, room_id: &str, read: impl FnOnce(&Room) -> T) -> Option<T> {
        let room = self.room_handle(room_id)?;
        let room = room.read().expect("room lock");
        room.touch(self.tick());
        Some(read(&room))
    }

    /// The administrator who blocked `room_id`, if it is blocked.
    pub fn blocked_by(&self, room_id: &str) -> Option<String> {
        self.blocked_rooms.lock().expect("blocked rooms lock").get(room_id).cloned()
    }

    pub fn knows_room(&self, room_id: &str) -> bool {
        let table = self.rooms.read().expect("rooms lock");
        table.hot.contains_key(room_id) || table.cold.contains_key(room_id)
    }

    /// Runs `read` on `user_id`'s data (an empty user if this node has none).
    pub fn with_user<T>(&self, user_id: &str, read: impl FnOnce(&User) -> T) -> T {
        let user = self.users.read().expect("users lock").get(user_id).cloned();
        match user {
            Some(user) => read(&user.read().expect("user lock")),
            None => read(&User::default()),
        }
    }

    /// Runs `visit` on every room this node knows (each under its own lock, one at a time; cold
    /// rooms read back one at a time and not kept) until it returns false.
    pub fn visit_rooms(&self, visit: impl FnMut(&Room) -> bool) {
        self.visit_table(false, visit);
    }

    /// Like [`ReadModel::visit_rooms`], but of the cold rooms only those published in the
    /// directory or joinable by anyone (the rooms in memory are all visited).
    pub fn visit_listed_rooms(&self, visit: impl FnMut(&Room) -> bool) {
        self.visit_table(true, visit);
    }

    /// The bump stamp of each of `room_ids` (0: no bump event applied on this node), in one look
    /// that reads no room.
    pub fn bump_stamps(&self, room_ids: &[String]) -> Vec<u64> {
        let bumps = self.bumps.read().expect("bumps lock");
        room_ids.iter().map(|room_id| bumps.get(room_id).copied().unwrap_or(0)).collect()
    }

    /// `user_id`'s membership in `room_id`.
    pub fn membership(&self, room_id: &str, user_id: &str) -> Option<Membership> {
        self.with_room(room_id, |room| room.state.membership(user_id).map(Membership::parse)).flatten()
    }

    /// Whether `a` and `b` are both joined to some room.
    pub fn share_a_room(&self, a: &str, b: &str) -> bool {
        let rooms_of_a: Vec<String> = self.with_user(a, |user| user.joined_rooms().cloned().collect());
        self.with_user(b, |user| rooms_of_a.iter().any(|room| user.rooms.get(room) == Some(&Membership::Join)))
    }

    /// Users `user_id` stopped sharing every room with at positions `since < seq <= upto` (per
    /// partition): they left or were removed from a shared room, or `user_id` left theirs. Walks
    /// only the membership changes of `user_id`'s rooms in that window.
    pub fn users_left_between(&self, user_id: &str, since: &[u64], upto: &[u64]) -> Vec<String> {
        let rooms: Vec<String> = self.with_user(user_id, |user| user.rooms.keys().cloned().collect());
        let mut candidates = std::collections::BTreeSet::new();
        for room_id in rooms {
            let p = self.partition_of(&room_id) as usize;
            let (Some(low), Some(high)) = (since.get(p).copied(), upto.get(p).copied()) else { continue };
            self.with_room(&room_id, |room| {
                for (_, member, membership) in room.membership_changes_between(low, high) {
                    if !matches!(membership, Membership::Leave | Membership::Ban) {
                        continue;
                    }
                    if member == user_id {
                        candidates.extend(room.state.members("join").map(str::to_string));
                    } else {
                        candidates.insert(member.to_string());
                    }
                }
            });
        }
        candidates.into_iter().filter(|other| other != user_id && !self.share_a_room(user_id, other)).collect()
    }

    /// Why the authorization rules rejected `event_id`, if they did.
    pub fn rejection(&self, event_id: &str) -> Option<String> {
        self.rejected.lock().expect("rejected lock").0.get(event_id).cloned()
    }

    /// The event id a transaction produced, if this node has seen it.
    pub fn transaction_event(&self, key: &str) -> Option<(String, String)> {
        let txns = self.recent_txns.lock().expect("txns lock");
        let (room_id, seq) = txns.by_key.get(key)?;
        Some((room_id.clone(), event_id_at(self.partition_of(room_id), *seq)))
    }

    pub fn cached_session(&self, token_hash: &str) -> Option<Session> {
        self.tokens.get(token_hash)
    }

    /// Caches a session read from the tokens bucket, unless it was revoked meanwhile.
    pub fn cache_session(&self, token_hash: &str, session: Session) -> bool {
        let revoked = self.revoked_tokens.lock().expect("revoked lock");
        if revoked.contains(token_hash) {
            return false;
        }
        self.tokens.put(token_hash.to_string(), session);
        true
    }

    /// Users whose keys changed at positions `since < seq <= upto` (per partition), or None if
    /// this node no longer remembers that far back.
    pub fn key_changes_between(&self, since: &[u64], upto: &[u64]) -> Option<Vec<String>> {
        let changes = self.key_changes.lock().expect("key changes lock");
        let mut users = Vec::new();
        for (partition, list) in changes.iter().enumerate() {
            let (low, high) = (since.get(partition).copied()?, upto.get(partition).copied()?);
            if low >= high {
                continue;
            }
            if low < list.forgotten_upto {
                return None;
            }
            let start = list.entries.partition_point(|(seq, _)| *seq <= low);
            for (seq, user_id) in list.entries.range(start..) {
                if *seq > high {
                    break;
                }
                users.push(user_id.clone());
            }
        }
        Some(users)
    }

    /// Memory the history caches hold: (window bytes, chunk bytes, chunk hits, chunk misses).
    pub fn cache_stats(&self) -> (usize, usize, u64, u64) {
        let (chunk_bytes, hits, misses) = self.chunk_cache_stats();
        (self.window_bytes.load(Ordering::Relaxed).max(0) as usize, chunk_bytes, hits, misses)
    }

    /// Whether the rooms' windows, or their state and indexes, hold more than their budget.
    pub fn over_budget(&self) -> bool {
        self.window_bytes.load(Ordering::Relaxed) > self.budget.window_bytes as i64 || self.rooms_over_budget()
    }

    /// Trims the least recently used rooms' windows until all windows fit the budget.
    pub fn enforce_budget(&self) {
        self.trim_windows();
        self.freeze_cold_rooms();
    }

    fn trim_windows(&self) {
        let budget = self.budget.window_bytes as i64;
        if self.window_bytes.load(Ordering::Relaxed) <= budget {
            return;
        }
        let mut rooms: Vec<(u64, Arc<RwLock<Room>>)> = self
            .rooms
            .read()
            .expect("rooms lock")
            .hot
            .values()
            .filter_map(|room| {
                let guard = room.read().expect("room lock");
                (guard.window_bytes() > 0).then(|| (guard.last_used(), room.clone()))
            })
            .collect();
        rooms.sort_by_key(|(used, _)| *used);
        let target = budget / 10 * 9;
        for (_, room) in rooms {
            if self.window_bytes.load(Ordering::Relaxed) <= target {
                break;
            }
            let mut room = room.write().expect("room lock");
            while room.window_bytes() > 0 && self.window_bytes.load(Ordering::Relaxed) > target {
                let freed = room.evict_oldest();
                if freed == 0 {
                    break;
                }
                self.window_bytes.fetch_sub(freed as i64, Ordering::Relaxed);
            }
        }
    }

    // ---- applying ----

    /// Applies one log entry. Entries of a partition must arrive in order, each once.
    pub fn apply(&self, partition: u32, seq: u64, entity: &str, payload: &[u8]) {
        let gate = self.gate.read().expect("snapshot gate");
        let woken = match serde_json::from_slice::<Envelope>(payload) {
            Ok(envelope) => self.apply_entry(partition, seq, entity, envelope.entry),
            Err(error) => {
                // A newer node may write entries this one does not know; skipping keeps order.
                tracing::warn!(partition, seq, %error, "skipping an entry this version cannot read");
                Vec::new()
            }
        };
        self.applied[partition as usize].send_replace(seq);
        drop(gate);
        self.wake(&woken);
    }

    fn user_handle(&self, user_id: &str) -> Arc<RwLock<User>> {
        if let Some(user) = self.users.read().expect("users lock").get(user_id) {
            return user.clone();
        }
        self.users.write().expect("users lock").entry(user_id.to_string()).or_default().clone()
    }

    /// Applies an entry and returns the users to wake.
    fn apply_entry(&self, partition: u32, seq: u64, entity: &str, entry: Entry) -> Vec<String> {
        match entry {
            Entry::Event { event, txn, prev_content, redacts_target } => {
                self.apply_event(partition, seq, entity, event, txn, prev_content, redacts_target)
            }
            Entry::Receipt { user_id, receipt_type, event_id, ts, thread_id } => {
                let Some(room) = self.room_handle(entity) else { return Vec::new() };
                let mut room = room.write().expect("room lock");
                room.last_seq = seq;
                if room.state.membership(&user_id) != Some("join") {
                    return Vec::new();
                }
                let target = match position_of(&event_id) {
                    Some((p, target)) if p == room.partition => Some(target),
                    Some(_) => None,
                    None => room.window_find(&event_id).map(|item| item.seq),
                };
                let notify_mark = target.and_then(|target| room.notify_mark_at(target));
                room.record_receipt(Receipt { seq, user_id, receipt_type, event_id, ts, thread_id, notify_mark });
                room.audience()
            }
            Entry::DirectoryVisibility { visibility } => {
                let Some(room) = self.room_handle(entity) else { return Vec::new() };
                let mut room = room.write().expect("room lock");
                room.last_seq = seq;
                room.published = visibility == "public";
                Vec::new()
            }
            Entry::RoomBlocked { blocked, by } => {
                // State events are appended against the room's last sequence, this entry's now.
                if let Some(room) = self.room_handle(entity) {
                    room.write().expect("room lock").last_seq = seq;
                }
                let mut blocked_rooms = self.blocked_rooms.lock().expect("blocked rooms lock");
                if !blocked {
                    blocked_rooms.remove(entity);
                } else if blocked_rooms.len() < MAX_BLOCKED_ROOMS || blocked_rooms.contains_key(entity) {
                    blocked_rooms.insert(entity.to_string(), by);
                } else {
                    tracing::warn!(room_id = entity, "a room block past the bound of blocked rooms was not applied");
                }
                Vec::new()
            }
            Entry::RoomPurged { by } => self.purge_room(entity, &by),
            Entry::KeysChanged => {
                {
                    let mut changes = self.key_changes.lock().expect("key changes lock");
                    if let Some(list) = changes.get_mut(partition as usize) {
                        list.entries.push_back((seq, entity.to_string()));
                        while list.entries.len() > MAX_KEY_CHANGES {
                            if let Some((forgotten, _)) = list.entries.pop_front() {
                                list.forgotten_upto = forgotten;
                            }
                        }
                    }
                }
                // Everyone sharing a room with this user should learn of it.
                let rooms: Vec<String> = self.with_user(entity, |user| user.joined_rooms().cloned().collect());
                let mut audience = vec![entity.to_string()];
                for room_id in rooms {
                    if let Some(members) = self.with_room(&room_id, |room| room.state.members_with("join")) {
                        audience.extend(members);
                    }
                }
                audience.sort();
                audience.dedup();
                audience
            }
            Entry::TokensRevoked { token_hashes } => {
                let mut revoked = self.revoked_tokens.lock().expect("revoked lock");
                if revoked.len() > MAX_REVOKED_TOKENS {
                    revoked.clear();
                }
                for hash in token_hashes {
                    self.tokens.remove(&hash);
                    revoked.insert(hash);
                }
                vec![entity.to_string()]
            }
            user_entry => {
                let user = self.user_handle(entity);
                let mut user = user.write().expect("user lock");
                match user_entry {
                    Entry::AccountData { room_id: None, event_type, content } => {
                        user.account_data.insert(event_type, (seq, content));
                    }
                    Entry::AccountData { room_id: Some(room_id), event_type, content } => {
                        user.room_account_data.entry(room_id).or_default().insert(event_type, (seq, content));
                    }
                    Entry::ToDevice { sender, device_id, event_type, content } => {
                        user.to_device.push_back(ToDevice {
                            seq,
                            device_id,
                            event: serde_json::json!({ "sender": sender, "type": event_type, "content": content }),
                        });
                        while user.to_device.len() > MAX_TO_DEVICE_PER_USER {
                            user.to_device.pop_front();
                        }
                    }
                    Entry::ToDeviceAck { device_id, upto } => {
                        user.to_device.retain(|m| !(m.device_id == device_id && m.seq <= upto));
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
                    Entry::Forgotten { room_id } => {
                        if matches!(user.rooms.get(&room_id), Some(Membership::Leave | Membership::Ban)) {
                            user.rooms.remove(&room_id);
                            user.forgotten.insert(room_id);
                        }
                    }
                    Entry::RoomTag { room_id, tag, content } => {
                        let tags = user.room_account_data.entry(room_id).or_default();
                        let mut current = tags.remove("m.tag").map(|(_, c)| c).unwrap_or_default();
                        if !current["tags"].is_object() {
                            current = serde_json::json!({ "tags": {} });
                        }
                        if let Some(map) = current["tags"].as_object_mut() {
                            match content {
                                Some(content) => {
                                    map.insert(tag, content);
                                }
                                None => {
                                    map.remove(&tag);
                                }
                            }
                        }
                        tags.insert("m.tag".to_string(), (seq, current));
                    }
                    Entry::Event { .. }
                    | Entry::Receipt { .. }
                    | Entry::DirectoryVisibility { .. }
                    | Entry::RoomBlocked { .. }
                    | Entry::RoomPurged { .. }
                    | Entry::KeysChanged
                    | Entry::TokensRevoked { .. } => {
                        unreachable!("handled above")
                    }
                }
                vec![entity.to_string()]
            }
        }
    }

    /// Drops a room an administrator deleted with `purge`: its state, indexes and window, and its
    /// place in every user's room list (and their account data for it). Its entries stay in the
    /// log (a node may not purge the log); replaying them rebuilds the room until this entry drops
    /// it again, and entries after it find no room. Returns the users to wake.
    fn purge_room(&self, room_id: &str, by: &str) -> Vec<String> {
        // A cold room is read back first: its members are needed below.
        if self.room_handle(room_id).is_none() {
            return Vec::new();
        }
        let Some(room) = self.rooms.write().expect("rooms lock").hot.remove(room_id) else { return Vec::new() };
        let (users, freed, base) = {
            let room = room.read().expect("room lock");
            let users: Vec<String> = room.state.member_refs().map(|member| member.state_key.to_string()).collect();
            (users, room.window_bytes(), room.base_bytes())
        };
        self.window_bytes.fetch_sub(freed as i64, Ordering::Relaxed);
        self.count_room_bytes(-(base as isize));
        self.bumps.write().expect("bumps lock").remove(room_id);
        for user_id in &users {
            let user = self.user_handle(user_id);
            let mut user = user.write().expect("user lock");
            user.rooms.remove(room_id);
            user.recency.remove(room_id);
            user.forgotten.remove(room_id);
            user.room_account_data.remove(room_id);
        }
        tracing::info!(%room_id, admin = %by, "purged a deleted room from the read model");
        users
    }

    fn reject(&self, event_id: &str, reason: String) {
        let mut rejected = self.rejected.lock().expect("rejected lock");
        let (reasons, order) = &mut *rejected;
        if reasons.insert(event_id.to_string(), reason).is_none() {
            order.push_back(event_id.to_string());
        }
        while order.len() > MAX_REJECTED {
            if let Some(oldest) = order.pop_front() {
                reasons.remove(&oldest);
            }
        }
    }

    fn remember_txn(&self, key: &str, room_id: &str, seq: u64) {
        let mut txns = self.recent_txns.lock().expect("txns lock");
        if txns.by_key.insert(key.to_string(), (room_id.to_string(), seq)).is_none() {
            txns.order.push_back(key.to_string());
        }
        while txns.order.len() > MAX_RECENT_TXNS {
            if let Some(oldest) = txns.order.pop_front() {
                txns.by_key.remove(&oldest);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_event(
        &self,
        partition: u32,
        seq: u64,
        room_id: &str,
        mut event: Value,
        txn: Option<Txn>,
        prev_content: Option<Value>,
        redacts_target: Option<Value>,
    ) -> Vec<String> {
        // Events stored since entry version 2 are named by their position.
        let event_id = match event.get("event_id").and_then(Value::as_str) {
            Some(id) => id.to_string(),
            None => {
                let id = event_id_at(partition, seq);
                event["event_id"] = Value::String(id.clone());
                id
            }
        };
        let existing = self.room_handle(room_id);
        if let Some(room) = &existing {
            room.write().expect("room lock").last_seq = seq;
        }
        let skip = |reason: Option<String>| {
            if let Some(room) = self.room_handle(room_id) {
                room.write().expect("room lock").skip(seq);
            }
            if let Some(reason) = reason {
                self.reject(&event_id, reason);
            }
            Vec::new()
        };
        if let Some(txn) = txn.as_ref().filter(|t| !t.key.is_empty()) {
            if self.recent_txns.lock().expect("txns lock").by_key.contains_key(&txn.key) {
                return skip(None); // a retry that outlived the log's duplicate window
            }
        }
        if event["room_id"].as_str() != Some(room_id) {
            return skip(Some("event filed under another room".into()));
        }
        let room = match existing {
            Some(room) => room,
            None if event["type"] == "m.room.create" => {
                let mut new_room = Room::new(room_id, partition);
                new_room.last_seq = seq;
                new_room.set_base_bytes(new_room.estimate_bytes());
                self.count_room_bytes(new_room.base_bytes() as isize);
                let room = Arc::new(RwLock::new(new_room));
                self.rooms.write().expect("rooms lock").hot.insert(room_id.to_string(), room.clone());
                room
            }
            None => {
                self.reject(&event_id, "no such room".into());
                return Vec::new();
            }
        };
        let mut room = room.write().expect("room lock");
        if let Err(error) = haetae_matrix::auth::check(&room.state, &event) {
            room.skip(seq);
            drop(room);
            self.reject(&event_id, error.to_string());
            return Vec::new();
        }
        if is_join(&event) && self.blocked_by(room_id).is_some() {
            room.skip(seq);
            drop(room);
            self.reject(&event_id, BLOCKED_ROOM.into());
            return Vec::new();
        }
        if event["type"] == "m.room.redaction" {
            let target_id = event["redacts"].as_str().or(event["content"]["redacts"].as_str()).unwrap_or_default().to_string();
            // The target as the appending node found it; for entries from before version 2, this
            // node's window.
            let target = redacts_target.or_else(|| room.window_find(&target_id).map(|item| (*item.event).clone()));
            if let Err(error) = haetae_matrix::auth::check_redaction(&room.state, &event, target.as_ref()) {
                room.skip(seq);
                drop(room);
                self.reject(&event_id, error.to_string());
                return Vec::new();
            }
            let target_seq = position_of(&target_id)
                .filter(|(p, _)| *p == partition)
                .map(|(_, s)| s)
                .or_else(|| room.window_find(&target_id).map(|item| item.seq));
            if let Some(target_seq) = target_seq {
                room.record_redaction(target_seq, Arc::new(event.clone()));
                // A redacted relation relates to nothing (the appending node says what it related to).
                let relates_to = target.as_ref().and_then(|t| {
                    let relation = &t["content"]["m.relates_to"]; // a whole event (entries before `relates_to`)
                    t["relates_to"].as_str().or(relation["rel_type"].as_str().and(relation["event_id"].as_str()))
                });
                if let Some(relates_to) = relates_to {
                    room.unindex_relation(target_seq, relates_to);
                }
            }
            // A redacted state event that is current state is replaced by its redacted form.
            let version = room.state.room_version().to_string();
            let current = room.state.find_by_id(&target_id);
            if let Some(current) = current {
                room.state.insert(haetae_matrix::redaction::redact(&current, &version));
            }
        }
        let mut prev = prev_content;
        let mut membership_change = None;
        let member_ts = event["origin_server_ts"].as_u64().unwrap_or(0);
        if let (Some(event_type), Some(state_key)) = (event["type"].as_str(), event["state_key"].as_str()) {
            if prev.is_none() {
                prev = room.state.content(event_type, state_key);
            }
            if event_type == "m.room.member" {
                let membership = Membership::parse(event["content"]["membership"].as_str().unwrap_or("leave"));
                membership_change = Some((state_key.to_string(), membership));
            }
            room.state.insert(event.clone());
        }
        let mut bumped = None;
        if let Some(event_type) = event["type"].as_str()
            && BUMP_EVENT_TYPES.contains(&event_type)
        {
            let stamp = event["origin_server_ts"].as_u64().unwrap_or(0);
            let mut bumps = self.bumps.write().expect("bumps lock");
            let bump = bumps.entry(room_id.to_string()).or_insert(0);
            *bump = (*bump).max(stamp);
            bumped = Some(*bump);
        }
        // Wake everyone who could see the room before or after this event.
        let mut audience = room.audience();
        let txn_key = txn.as_ref().map(|t| t.key.clone()).filter(|k| !k.is_empty());
        let base_before = room.base_bytes();
        let mut item = TimelineItem::new(seq, event, prev, txn);
        item.notify = notifies_by_default(&item.event, &room.state);
        let grown = room.push_event(item);
        self.window_bytes.fetch_add(grown as i64, Ordering::Relaxed);
        self.count_room_bytes(room.base_bytes() as isize - base_before as isize);
        room.touch(self.tick());
        let room_type = if membership_change.is_some() { room.room_type() } else { None };
        drop(room);
        if let Some(stamp) = bumped {
            self.bump_members(room_id, stamp, &audience);
        }
        if let Some(key) = txn_key {
            self.remember_txn(&key, room_id, seq);
        }
        if let Some((user_id, membership)) = membership_change {
            let room_stamp = self.bump_stamp(room_id);
            let user = self.user_handle(&user_id);
            let mut user = user.write().expect("user lock");
            if membership != Membership::Leave || !user.forgotten.contains(room_id) {
                user.rooms.insert(room_id.to_string(), membership);
            }
            user.recency.place(room_id, membership, room_stamp, member_ts);
            user.recency.set_type(room_id, room_type.as_deref());
            if matches!(membership, Membership::Join | Membership::Invite) {
                user.forgotten.remove(room_id);
            }
            drop(user);
            audience.push(user_id);
        }
        audience
    }

    // ---- typing ----

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
        if let Some(audience) = self.with_room(room_id, Room::audience) {
            self.wake(&audience);
        }
    }

    /// Drops expired typing notices (called periodically), and rooms nobody types in.
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
            state.rooms.retain(|_, users| !users.is_empty());
            for room in &expired_rooms {
                state.serial += 1;
                let serial = state.serial;
                state.room_serial.insert(room.clone(), serial);
            }
            // A room's serial only matters to syncs from before it; keep a bounded number.
            if state.room_serial.len() > 100_000 {
                let keep: HashSet<String> = state.rooms.keys().cloned().collect();
                state.room_serial.retain(|room, _| keep.contains(room));
            }
        }
        for room in expired_rooms {
            if let Some(audience) = self.with_room(&room, Room::audience) {
                self.wake(&audience);
            }
        }
    }
}

#[cfg(test)]
mod tests;

/// Whether `event` notifies a member other than its sender under the default push rules. Their
/// notify outcome depends on who is asked only for an invite of that user and for mentions in
/// events no other rule covers; it is evaluated once per event, for a user who is nobody, and
/// counts unread notifications beyond a room's window (`Room::notify_mark_at`).
fn notifies_by_default(event: &Value, state: &haetae_matrix::state::RoomState) -> bool {
    const NOBODY: &str = "@\u{0}:.";
    static RULES: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    let rules = RULES.get_or_init(|| haetae_matrix::push::default_ruleset(NOBODY));
    let context = haetae_matrix::push::PushContext {
        user_id: NOBODY,
        display_name: None,
        member_count: state.joined_count(),
        power_levels: state.power_levels(),
    };
    haetae_matrix::push::evaluate(rules, event, &context).notify
}
