//! One room as a node holds it: its current state, indexes over its history (membership changes,
//! latest receipts, redactions, where each chunk of its timeline starts in the log) and a window
//! of its most recent events. Older events are not held: they are read back from the log by
//! position (`history.rs`).
//!
//! Nothing here grows with the number of messages: the window is trimmed under the node's byte
//! budget, the chunk index holds one position per [`CHUNK_EVENTS`] events, and the other indexes
//! grow with members, state changes and redactions only.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use haetae_matrix::state::RoomState;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::relations::{RelationIndex, RelationSnapshot};
use crate::entry::Txn;

/// Events per chunk of a room's timeline: the unit in which old history is read back from the
/// log and cached. The chunk index costs 8 bytes per chunk.
pub const CHUNK_EVENTS: u64 = 128;
/// Most events a room keeps in its recent window, whatever the byte budget.
pub const MAX_WINDOW_EVENTS: usize = 512;
// The estimates below were calibrated on a release node holding 2,105 rooms of the bench's
// many-rooms shape after a restart (state and indexes only): 22 KB of resident memory a room,
// two and a half times the first, unscaled estimate, which these constants now include.
/// Estimated memory of a room with nothing in it (the struct, its maps' tables).
const ROOM_BYTES: usize = 2560;
/// Estimated memory of one current state event beyond [`STATE_TEXT_FACTOR`] times its text (its
/// key, index entries).
const STATE_EVENT_BYTES: usize = 640;
/// Estimated memory per byte of a current state event's text (shared text, parsed fields).
const STATE_TEXT_FACTOR: usize = 5;
/// Estimated memory one timeline event adds to the indexes (its sender's latest position, its
/// share of the chunk index and relation index).
const EVENT_INDEX_BYTES: usize = 20;

/// A membership, parsed once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Membership {
    Join,
    Invite,
    Leave,
    Ban,
    Knock,
}

impl Membership {
    pub fn parse(text: &str) -> Membership {
        match text {
            "join" => Membership::Join,
            "invite" => Membership::Invite,
            "ban" => Membership::Ban,
            "knock" => Membership::Knock,
            _ => Membership::Leave,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Membership::Join => "join",
            Membership::Invite => "invite",
            Membership::Leave => "leave",
            Membership::Ban => "ban",
            Membership::Knock => "knock",
        }
    }
}

/// One event of a room's timeline: a typed header read once, the event itself kept raw.
#[derive(Clone, Debug)]
pub struct TimelineItem {
    /// Position in the room's partition.
    pub seq: u64,
    pub event_id: Arc<str>,
    pub sender: Arc<str>,
    pub event_type: Arc<str>,
    pub state_key: Option<Arc<str>>,
    /// The event in client format (with `event_id`, without `unsigned`).
    pub event: Arc<Value>,
    /// For state events: the content this event replaced.
    pub prev_content: Option<Arc<Value>>,
    pub txn: Option<Arc<Txn>>,
    /// Set when the event is shown redacted: the redaction event.
    pub redacted_because: Option<Arc<Value>>,
    /// What the item costs in memory, estimated once (see [`TimelineItem::bytes`]).
    estimated_bytes: usize,
    /// Notifies under the default push rules (set for events applied into the window; see
    /// [`Room::notify_mark_at`]).
    pub notify: bool,
}

impl TimelineItem {
    pub fn new(seq: u64, event: Value, prev_content: Option<Value>, txn: Option<Txn>) -> TimelineItem {
        let text = |key: &str| event.get(key).and_then(Value::as_str).unwrap_or("");
        TimelineItem {
            seq,
            event_id: text("event_id").into(),
            sender: text("sender").into(),
            event_type: text("type").into(),
            state_key: event.get("state_key").and_then(Value::as_str).map(Into::into),
            prev_content: prev_content.map(Arc::new),
            txn: txn.map(Arc::new),
            redacted_because: None,
            // A `serde_json::Value` tree of a small event costs about six times its text (maps,
            // key strings, allocator overhead), plus the typed header. Calibrated with
            // `bench history --shape many-rooms`: 1,000 rooms × 100 events held whole cost 2.7 KB
            // of RSS per 400-byte event.
            estimated_bytes: 300 + event.to_string().len() * 6,
            event: Arc::new(event),
            notify: false,
        }
    }

    /// What the item costs in memory, roughly (estimated when it was made: the window and the
    /// chunk cache count it on every push and eviction).
    pub fn bytes(&self) -> usize {
        self.estimated_bytes
    }

    /// The item as shown after `redaction` (under room version `version`).
    pub fn redacted(&self, redaction: &Arc<Value>, version: &str) -> TimelineItem {
        let mut item = self.clone();
        item.event = Arc::new(haetae_matrix::redaction::redact(&self.event, version));
        item.redacted_because = Some(redaction.clone());
        item
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReceiptKey {
    pub user_id: String,
    pub receipt_type: String,
    pub thread_id: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Receipt {
    /// Position of the receipt entry (what syncs window on).
    pub seq: u64,
    pub user_id: String,
    pub receipt_type: String,
    pub event_id: String,
    pub ts: u64,
    pub thread_id: Option<String>,
    /// Events up to the receipt's target that notify under the default push rules, when the
    /// target was in the window as the receipt was applied (see [`Room::notify_mark_at`]).
    #[serde(default)]
    pub notify_mark: Option<u64>,
}

pub struct Room {
    pub room_id: String,
    pub partition: u32,
    pub state: RoomState,
    /// Sequence of the last entry on this room's subject (for expected-sequence writes).
    pub last_seq: u64,
    /// Each user's membership changes, oldest first: (position, membership). Grows with
    /// membership events only.
    memberships: HashMap<String, Vec<(u64, Membership)>>,
    /// The same changes by position: (user, membership). Grows with membership events only.
    membership_changes: BTreeMap<u64, (String, Membership)>,
    /// Positions of the state events that became current, per (type, state key), oldest first:
    /// the state at any earlier position is found from them. Grows with state changes only.
    state_history: HashMap<(String, String), Vec<u64>>,
    /// Each user's latest event in the room (it marks what they have read): its position, and
    /// the room's events up to it that notify under the default push rules.
    last_sent: HashMap<String, (u64, u64)>,
    /// The latest receipt per (user, type, thread), and the same keyed by position.
    receipts: HashMap<ReceiptKey, Receipt>,
    receipts_by_seq: BTreeMap<u64, ReceiptKey>,
    /// Redacted events (by position) and the redaction that hit them. Grows with redactions.
    redactions: HashMap<u64, Arc<Value>>,
    /// Event entries of this room that are not in its timeline (rejected, or a retried
    /// transaction seen before): reading history back from the log skips them.
    skipped: BTreeSet<u64>,
    /// Position of timeline event number `k * CHUNK_EVENTS`, for every k.
    chunk_starts: Vec<u64>,
    /// Timeline events ever accepted.
    count: u64,
    /// Position of the newest timeline event (0: none).
    last_event_seq: u64,
    /// The most recent timeline events, oldest first; every event after `evicted_upto` is here.
    window: VecDeque<TimelineItem>,
    window_bytes: usize,
    /// Position of the newest timeline event no longer in the window (0: none).
    evicted_upto: u64,
    /// Timeline events that notify under the default push rules: all of them, and those up to
    /// `evicted_upto`. With the marks in `last_sent` and the receipts they count a user's unread
    /// notifications beyond the window without reading it back (`notifications_since`).
    notify_total: u64,
    notify_evicted: u64,
    /// Clock tick of the last read or write, for the window evictor (least recently used first).
    last_used: AtomicU64,
    /// Listed in the published room directory (`/publicRooms`).
    pub published: bool,
    /// Relations by target position, threads by latest reply (`relations.rs`).
    pub relations: RelationIndex,
    /// What the room's state and indexes cost in memory, estimated (the window not included):
    /// counted against the rooms' share of the cache budget (`cold.rs`).
    base_bytes: usize,
}

/// Where one chunk of a room's timeline sits in the log, and what it must hold.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ChunkRef {
    pub index: usize,
    pub partition: u32,
    /// Positions of its first and last timeline events.
    pub from: u64,
    pub to: u64,
    /// Timeline events in it.
    pub events: u64,
}

impl Room {
    pub fn new(room_id: &str, partition: u32) -> Room {
        Room {
            room_id: room_id.to_string(),
            partition,
            state: RoomState::default(),
            last_seq: 0,
            memberships: HashMap::new(),
            membership_changes: BTreeMap::new(),
            state_history: HashMap::new(),
            last_sent: HashMap::new(),
            receipts: HashMap::new(),
            receipts_by_seq: BTreeMap::new(),
            redactions: HashMap::new(),
            skipped: BTreeSet::new(),
            chunk_starts: Vec::new(),
            count: 0,
            last_event_seq: 0,
            window: VecDeque::new(),
            window_bytes: 0,
            evicted_upto: 0,
            notify_total: 0,
            notify_evicted: 0,
            last_used: AtomicU64::new(0),
            published: false,
            relations: RelationIndex::default(),
            base_bytes: 0,
        }
    }

    /// What the room's state and indexes cost in memory, estimated.
    pub fn base_bytes(&self) -> usize {
        self.base_bytes
    }

    pub(super) fn set_base_bytes(&mut self, bytes: usize) {
        self.base_bytes = bytes;
    }

    /// Estimates the room's cost from what it holds (made once when the room enters memory;
    /// then each event adds its share in `push_event`). Calibrated against the RSS of
    /// `bench history --shape many-rooms` after a restart.
    pub fn estimate_bytes(&self) -> usize {
        let state: usize = self.state.texts().map(|text| STATE_EVENT_BYTES + STATE_TEXT_FACTOR * text.len()).sum();
        let members: usize = self.memberships.values().map(|changes| 240 + 120 * changes.len()).sum();
        let history: usize = self.state_history.values().map(|seqs| 240 + 20 * seqs.len()).sum();
        let (relations, threads) = self.relations.stats();
        ROOM_BYTES
            + state
            + members
            + history
            + 160 * self.last_sent.len()
            + 640 * self.receipts.len()
            + 640 * self.redactions.len()
            + 40 * self.skipped.len()
            + 20 * self.chunk_starts.len()
            + 160 * (relations + threads)
    }

    pub fn touch(&self, tick: u64) {
        self.last_used.store(tick, Ordering::Relaxed);
    }

    pub fn last_used(&self) -> u64 {
        self.last_used.load(Ordering::Relaxed)
    }

    // ---- applying (the partition's applier only) ----

    /// Adds an accepted event to the timeline; returns the bytes the window grew by.
    pub(super) fn push_event(&mut self, item: TimelineItem) -> isize {
        if self.count % CHUNK_EVENTS == 0 {
            self.chunk_starts.push(item.seq);
        }
        self.count += 1;
        self.last_event_seq = item.seq;
        if let Some(state_key) = &item.state_key
            && &*item.event_type == "m.room.member"
        {
            let membership = Membership::parse(item.event["content"]["membership"].as_str().unwrap_or("leave"));
            self.memberships.entry(state_key.to_string()).or_default().push((item.seq, membership));
            self.membership_changes.insert(item.seq, (state_key.to_string(), membership));
        }
        if let Some(state_key) = &item.state_key {
            self.state_history.entry((item.event_type.to_string(), state_key.to_string())).or_default().push(item.seq);
            // An item's estimate is 300 + 6 × its text.
            self.base_bytes += STATE_EVENT_BYTES + STATE_TEXT_FACTOR * item.bytes() / 6;
        }
        self.base_bytes += EVENT_INDEX_BYTES;
        self.notify_total += u64::from(item.notify);
        self.last_sent.insert(item.sender.to_string(), (item.seq, self.notify_total));
        self.index_relation(&item);
        let added = item.bytes();
        self.window_bytes += added;
        self.window.push_back(item);
        let mut delta = added as isize;
        while self.window.len() > MAX_WINDOW_EVENTS {
            delta -= self.evict_oldest() as isize;
        }
        delta
    }

    /// Indexes `item` if it relates to an earlier event of this room (`m.relates_to` with a
    /// `rel_type`; replies without one are not relations).
    fn index_relation(&mut self, item: &TimelineItem) {
        let relates_to = &item.event["content"]["m.relates_to"];
        let (Some(rel_type), Some(target_id)) = (relates_to["rel_type"].as_str(), relates_to["event_id"].as_str()) else {
            return;
        };
        if let Some(target) = self.position_in_room(target_id) {
            self.relations.record(target, item.seq, rel_type, &item.event_type, &item.sender);
        }
    }

    /// Where `event_id` would sit in this room: its position if it names one of this partition,
    /// or the window event with that (older-style) id.
    fn position_in_room(&self, event_id: &str) -> Option<u64> {
        match super::event_ids::position_of(event_id) {
            Some((partition, seq)) if partition == self.partition => Some(seq),
            Some(_) => None,
            None => self.window_find(event_id).map(|target| target.seq),
        }
    }

    /// The event at `seq`, which related to `relates_to` (an event id), was redacted: it relates
    /// to nothing any more.
    pub(super) fn unindex_relation(&mut self, seq: u64, relates_to: &str) {
        if let Some(target) = self.position_in_room(relates_to) {
            self.relations.remove(target, seq);
        }
    }

    pub(super) fn skip(&mut self, seq: u64) {
        self.skipped.insert(seq);
    }

    pub(super) fn record_redaction(&mut self, target_seq: u64, redaction: Arc<Value>) {
        self.redactions.insert(target_seq, redaction);
    }

    /// Keeps the latest receipt per (user, type, thread).
    pub(super) fn record_receipt(&mut self, receipt: Receipt) {
        let key = ReceiptKey {
            user_id: receipt.user_id.clone(),
            receipt_type: receipt.receipt_type.clone(),
            thread_id: receipt.thread_id.clone(),
        };
        if let Some(previous) = self.receipts.insert(key.clone(), receipt.clone()) {
            self.receipts_by_seq.remove(&previous.seq);
        }
        self.receipts_by_seq.insert(receipt.seq, key);
    }

    /// Drops the oldest window event; returns its bytes.
    pub(super) fn evict_oldest(&mut self) -> usize {
        match self.window.pop_front() {
            Some(item) => {
                let bytes = item.bytes();
                self.window_bytes = self.window_bytes.saturating_sub(bytes);
                self.evicted_upto = item.seq;
                self.notify_evicted += u64::from(item.notify);
                bytes
            }
            None => 0,
        }
    }

    pub fn window_bytes(&self) -> usize {
        self.window_bytes
    }

    // ---- queries ----

    /// The first position `user_id` may see under the room's history visibility: everything for
    /// `shared` and `world_readable`; from the start of their current invite-or-join (`invited`)
    /// or join (`joined`) otherwise; `u64::MAX` if they were never admitted. Walks only this
    /// user's membership changes.
    pub fn visible_from(&self, user_id: &str) -> u64 {
        let admitted: &[Membership] = match self.state.history_visibility() {
            "invited" => &[Membership::Invite, Membership::Join],
            "joined" => &[Membership::Join],
            _ => return 0,
        };
        let mut from = u64::MAX;
        for (seq, membership) in self.membership_history(user_id).iter().rev() {
            if admitted.contains(membership) {
                from = *seq;
            } else if from != u64::MAX {
                break;
            }
        }
        from
    }

    pub fn membership_history(&self, user_id: &str) -> &[(u64, Membership)] {
        self.memberships.get(user_id).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Position of `user_id`'s latest membership event.
    pub fn membership_seq(&self, user_id: &str) -> Option<u64> {
        self.membership_history(user_id).last().map(|(seq, _)| *seq)
    }

    /// Where the state event current at `position` sits, per (type, state key) that had one then.
    pub fn state_positions_at(&self, position: u64) -> Vec<u64> {
        self.state_history
            .values()
            .filter_map(|changes| changes[..changes.partition_point(|seq| *seq <= position)].last().copied())
            .collect()
    }

    /// Membership changes at positions `low < seq <= high`: (position, user, membership).
    pub fn membership_changes_between(&self, low: u64, high: u64) -> Vec<(u64, &str, Membership)> {
        if low >= high {
            return Vec::new();
        }
        self.membership_changes.range(low + 1..=high).map(|(seq, (user, m))| (*seq, user.as_str(), *m)).collect()
    }

    pub fn was_ever(&self, user_id: &str, membership: Membership) -> bool {
        self.membership_history(user_id).iter().any(|(_, m)| *m == membership)
    }

    pub fn last_sent(&self, user_id: &str) -> Option<u64> {
        self.last_sent.get(user_id).map(|(seq, _)| *seq)
    }

    /// The room's type (`m.room.create`'s `content.type`, e.g. `m.space`), if it has one.
    pub fn room_type(&self) -> Option<String> {
        self.state.content("m.room.create", "").and_then(|content| content["type"].as_str().map(str::to_string))
    }

    /// `user_id`'s latest event and its notification mark (see [`Room::notify_mark_at`]).
    pub fn last_sent_mark(&self, user_id: &str) -> Option<(u64, u64)> {
        self.last_sent.get(user_id).copied()
    }

    /// How many timeline events at or before `seq` notify under the default push rules, if the
    /// window reaches back to `seq` (the only events whose flags the room holds).
    pub fn notify_mark_at(&self, seq: u64) -> Option<u64> {
        if seq < self.evicted_upto {
            return None;
        }
        let later = self.window_between(seq, u64::MAX).filter(|item| item.notify).count() as u64;
        Some(self.notify_total.saturating_sub(later))
    }

    /// Events after a read position whose mark is `mark` and up to the window's start that
    /// notify under the default push rules (the window's own events are counted by the caller,
    /// under the user's rules).
    pub fn notifications_before_window(&self, mark: u64) -> u64 {
        self.notify_evicted.saturating_sub(mark)
    }

    /// Receipts recorded at positions `low < seq <= high` (latest per user, type and thread).
    pub fn receipts_between(&self, low: u64, high: u64) -> Vec<&Receipt> {
        if low >= high {
            return Vec::new();
        }
        self.receipts_by_seq
            .range(low + 1..=high)
            .filter_map(|(_, key)| self.receipts.get(key))
            .collect()
    }

    pub fn receipts_of(&self, user_id: &str) -> impl Iterator<Item = &Receipt> {
        self.receipts.values().filter(move |r| r.user_id == user_id)
    }

    pub fn redaction_of(&self, seq: u64) -> Option<&Arc<Value>> {
        self.redactions.get(&seq)
    }

    /// `item` as a client sees it (redacted if it was).
    pub fn shown(&self, item: &TimelineItem) -> TimelineItem {
        match self.redactions.get(&item.seq) {
            Some(redaction) => item.redacted(redaction, self.state.room_version()),
            None => item.clone(),
        }
    }

    /// Window events with `low < seq <= high`, oldest first (as shown).
    pub fn window_between(&self, low: u64, high: u64) -> impl DoubleEndedIterator<Item = &TimelineItem> {
        let start = self.window.partition_point(|item| item.seq <= low);
        let end = self.window.partition_point(|item| item.seq <= high).max(start);
        self.window.range(start..end)
    }

    /// The window event with id `event_id` (events stored with their own id are found only here).
    pub fn window_find(&self, event_id: &str) -> Option<&TimelineItem> {
        self.window.iter().rev().find(|item| &*item.event_id == event_id)
    }

    pub fn window_at(&self, seq: u64) -> Option<&TimelineItem> {
        let index = self.window.partition_point(|item| item.seq < seq);
        self.window.get(index).filter(|item| item.seq == seq)
    }

    /// Position of the newest event not in the window (0: the window holds the whole timeline).
    pub fn evicted_upto(&self) -> u64 {
        self.evicted_upto
    }

    pub fn last_event_seq(&self) -> u64 {
        self.last_event_seq
    }

    pub fn is_skipped(&self, seq: u64) -> bool {
        self.skipped.contains(&seq)
    }

    /// The chunk holding position `seq` (the last chunk starting at or before it).
    pub fn chunk_of(&self, seq: u64) -> Option<usize> {
        self.chunk_starts.partition_point(|start| *start <= seq).checked_sub(1)
    }

    /// Chunk `index`, as it stands now (the last chunk grows until it is full).
    pub fn chunk_ref(&self, index: usize) -> Option<ChunkRef> {
        let from = *self.chunk_starts.get(index)?;
        let (to, events) = match self.chunk_starts.get(index + 1) {
            Some(next) => (next - 1, CHUNK_EVENTS),
            None => (self.last_event_seq, self.count - index as u64 * CHUNK_EVENTS),
        };
        Some(ChunkRef { index, partition: self.partition, from, to, events })
    }

    /// Entries this room skipped at positions `from..=to`.
    pub fn skipped_between(&self, from: u64, to: u64) -> Vec<u64> {
        self.skipped.range(from..=to).copied().collect()
    }

    /// The members a change in this room must wake: joined and invited users.
    pub fn audience(&self) -> Vec<String> {
        let mut users = self.state.members_with("join");
        users.extend(self.state.members_with("invite"));
        users
    }

    // ---- snapshots ----

    pub(super) fn to_snapshot(&self) -> RoomSnapshot {
        RoomSnapshot {
            room_id: self.room_id.clone(),
            partition: self.partition,
            state: self.state.texts().map(RawEvent).collect(),
            last_seq: self.last_seq,
            memberships: self.memberships.clone(),
            state_history: self.state_history.iter().map(|((t, k), seqs)| (t.clone(), k.clone(), seqs.clone())).collect(),
            last_sent: self.last_sent.clone(),
            receipts: self.receipts.values().cloned().collect(),
            redactions: self.redactions.iter().map(|(seq, r)| (*seq, (**r).clone())).collect(),
            skipped: self.skipped.iter().copied().collect(),
            chunk_starts: self.chunk_starts.clone(),
            count: self.count,
            last_event_seq: self.last_event_seq,
            published: self.published,
            relations: self.relations.to_snapshot(),
            notify_total: self.notify_total,
        }
    }

    pub(super) fn from_snapshot(snapshot: RoomSnapshot) -> Room {
        let mut room = Room::new(&snapshot.room_id, snapshot.partition);
        room.state = RoomState::from_texts(snapshot.state.into_iter().map(|raw| raw.0));
        room.last_seq = snapshot.last_seq;
        room.membership_changes = snapshot
            .memberships
            .iter()
            .flat_map(|(user, changes)| changes.iter().map(move |(seq, m)| (*seq, (user.clone(), *m))))
            .collect();
        room.memberships = snapshot.memberships;
        room.state_history = snapshot.state_history.into_iter().map(|(t, k, seqs)| ((t, k), seqs)).collect();
        room.last_sent = snapshot.last_sent;
        for receipt in snapshot.receipts {
            room.record_receipt(receipt);
        }
        room.redactions = snapshot.redactions.into_iter().map(|(seq, r)| (seq, Arc::new(r))).collect();
        room.skipped = snapshot.skipped.into_iter().collect();
        room.chunk_starts = snapshot.chunk_starts;
        room.count = snapshot.count;
        room.last_event_seq = snapshot.last_event_seq;
        room.published = snapshot.published;
        room.relations = RelationIndex::from_snapshot(snapshot.relations);
        // Nothing in memory yet: everything up to the snapshot is read back from the log.
        room.evicted_upto = snapshot.last_event_seq;
        room.notify_total = snapshot.notify_total;
        room.notify_evicted = snapshot.notify_total;
        room.base_bytes = room.estimate_bytes();
        room
    }
}

/// A state event in a snapshot: written and read as the JSON object it is, without building a
/// `serde_json::Value` tree on either side (a snapshot of 10,000 rooms used to parse every state
/// event into one, a peak of about 140 MB that the allocator then kept).
pub struct RawEvent(Arc<str>);

impl Serialize for RawEvent {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw: &serde_json::value::RawValue = serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for RawEvent {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<serde_json::value::RawValue>::deserialize(deserializer)?;
        Ok(RawEvent(Arc::from(raw.get())))
    }
}

/// A room in a read-model snapshot.
#[derive(Serialize, Deserialize)]
pub struct RoomSnapshot {
    room_id: String,
    partition: u32,
    state: Vec<RawEvent>,
    last_seq: u64,
    memberships: HashMap<String, Vec<(u64, Membership)>>,
    #[serde(default)]
    state_history: Vec<(String, String, Vec<u64>)>,
    last_sent: HashMap<String, (u64, u64)>,
    receipts: Vec<Receipt>,
    redactions: Vec<(u64, Value)>,
    skipped: Vec<u64>,
    chunk_starts: Vec<u64>,
    count: u64,
    last_event_seq: u64,
    #[serde(default)]
    published: bool,
    #[serde(default)]
    relations: Vec<RelationSnapshot>,
    #[serde(default)]
    notify_total: u64,
}
