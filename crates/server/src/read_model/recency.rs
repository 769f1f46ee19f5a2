//! Each user's joined and invited rooms ordered by recency (bump stamp, newest first; ties by room
//! id): what a sliding sync list answers from, so the first rooms of a list cost the same for a
//! user in 5,000 rooms as for one in 20 (no sort of every room per request).
//!
//! The index lives beside the user's room map ([`super::User::recency`], under the user's lock)
//! and changes with it:
//! - a membership change places the room (join: the room's stamp; invite: the later of the
//!   room's stamp and the invite's own time; any other membership takes it out);
//! - a bump event in a room moves it up in the index of each of the room's joined and invited
//!   members ([`ReadModel::bump_members`]);
//! - a purged room leaves every member's index; a loaded snapshot rebuilds the indexes from the
//!   rooms' state and stamps (they are not stored in the snapshot).
//!
//! It never reads a room and never decides what a client is sent: sliding sync asks it for a
//! list's count and the rooms in its ranges.
//!
//! Bound: one entry (a stamp and the room id, held twice) per joined or invited membership, like
//! the user's room map; nothing else grows.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};

use super::{Membership, ReadModel, Room};

/// Entries per block of the ordered index: a block splits past twice this, and one left with
/// fewer than a quarter of it takes in its successor. Moving a room shifts at most one block;
/// finding a rank walks one length per block (n / 64 to n / 128 steps).
const BLOCK_ENTRIES: usize = 64;

/// One room's place: newest stamp first, then room id.
type Place = (Reverse<u64>, String);

/// What a sliding sync list keeps of the caller's rooms.
#[derive(Clone, Copy, Debug, Default)]
pub struct ListFilter<'a> {
    /// Only invites (true) or only joined rooms (false).
    pub is_invite: Option<bool>,
    /// Only rooms in the user's `m.direct` (true) or only the others (false).
    pub is_dm: Option<bool>,
    /// Rooms by their type (`m.room.create`'s `content.type`; None for a room without one).
    pub types: Option<&'a TypeFilter>,
}

/// A list's `room_types` and `not_room_types`.
#[derive(Clone, Debug, Default)]
pub struct TypeFilter {
    /// Only these types, if given.
    pub room_types: Option<Vec<Option<String>>>,
    /// None of these types.
    pub not_room_types: Vec<Option<String>>,
}

impl TypeFilter {
    fn allows(&self, room_type: Option<&str>) -> bool {
        let named = |types: &[Option<String>]| types.iter().any(|t| t.as_deref() == room_type);
        !named(&self.not_room_types) && self.room_types.as_deref().is_none_or(named)
    }
}

/// A list's answer: how many rooms match it and, in order, those in its ranges.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ListView {
    pub count: u64,
    /// Distinct rooms in the ranges, in recency order, at most the `max_rooms` asked for.
    pub rooms: Vec<String>,
}

/// A user's joined and invited rooms by recency.
#[derive(Clone, Debug, Default)]
pub struct RoomRecency {
    /// The order: sorted blocks, none empty, whose concatenation is sorted.
    blocks: Vec<Vec<Place>>,
    /// Each room's stamp and whether it is an invite.
    rooms: HashMap<String, (u64, bool)>,
    /// Invites among `rooms`, so an `is_invite` list counts without a walk.
    invites: usize,
    /// The type of each of those rooms that has one (spaces, mostly: few), so a list filtered by
    /// type counts by walking these, not every room.
    types: HashMap<String, String>,
}

impl RoomRecency {
    /// Joined and invited rooms.
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    pub fn invites(&self) -> usize {
        self.invites
    }

    /// A room's stamp and whether it is an invite; None if the user is not joined or invited.
    pub fn get(&self, room_id: &str) -> Option<(u64, bool)> {
        self.rooms.get(room_id).copied()
    }

    /// Places `room_id` after a membership change to `membership`: `room_stamp` is the room's
    /// bump stamp, `member_ts` the membership event's time (an invite is bumped by itself).
    pub fn place(&mut self, room_id: &str, membership: Membership, room_stamp: u64, member_ts: u64) {
        let (stamp, invite) = match membership {
            Membership::Join => (room_stamp, false),
            Membership::Invite => (room_stamp.max(member_ts), true),
            Membership::Leave | Membership::Ban | Membership::Knock => {
                self.remove(room_id);
                return;
            }
        };
        let room_id = match self.take(room_id) {
            Some((_, taken)) => taken,
            None => room_id.to_string(),
        };
        self.put(room_id, stamp, invite);
    }

    /// A bump event in `room_id` at `stamp`: the room moves up if the user is in it. No
    /// allocation; a room already first (the busy room of the moment) is restamped in place.
    pub fn bump(&mut self, room_id: &str, stamp: u64) {
        let Some(entry) = self.rooms.get_mut(room_id) else { return };
        if stamp <= entry.0 {
            return;
        }
        let old = std::mem::replace(&mut entry.0, stamp);
        let (block, at) = self.find(old, room_id);
        let before = match (at, block) {
            (0, 0) => None,
            (0, _) => self.blocks[block - 1].last(),
            _ => self.blocks[block].get(at - 1),
        };
        // Moving up only passes rooms before it: if the one just before still comes first, the
        // room keeps its place.
        if before.is_none_or(|before| (before.0, before.1.as_str()) < (Reverse(stamp), room_id)) {
            self.blocks[block][at].0 = Reverse(stamp);
            return;
        }
        let room_id = self.remove_at(block, at);
        self.insert_place((Reverse(stamp), room_id));
    }

    pub fn remove(&mut self, room_id: &str) {
        self.take(room_id);
    }

    /// Records the type of a room the user is in (None: a room without one).
    pub fn set_type(&mut self, room_id: &str, room_type: Option<&str>) {
        match room_type {
            Some(room_type) if self.rooms.contains_key(room_id) => {
                self.types.insert(room_id.to_string(), room_type.to_string());
            }
            _ => {
                self.types.remove(room_id);
            }
        }
    }

    /// Rooms from rank `rank` on, newest first, with their stamps.
    pub fn iter_from(&self, rank: usize) -> impl Iterator<Item = (&str, u64)> {
        let mut block = 0;
        let mut skip = rank;
        while block < self.blocks.len() && skip >= self.blocks[block].len() {
            skip -= self.blocks[block].len();
            block += 1;
        }
        let first = self.blocks.get(block).map(|entries| &entries[skip..]).unwrap_or(&[]);
        let rest = self.blocks.get(block + 1..).unwrap_or(&[]);
        first.iter().chain(rest.iter().flatten()).map(|(Reverse(stamp), room_id)| (room_id.as_str(), *stamp))
    }

    /// The count of rooms `filter` keeps and the distinct rooms at `ranges` (inclusive, over the
    /// filtered order), at most `max_rooms`. Unfiltered: each range costs its length plus finding
    /// its start. Filtered: a walk in order until the ranges are filled (an `is_dm` count walks
    /// the `direct` set, which is small).
    pub fn list(&self, filter: ListFilter, direct: &HashSet<String>, ranges: &[(u64, u64)], max_rooms: usize) -> ListView {
        let count = self.count(filter, direct);
        let mut wanted: Vec<(usize, usize)> = ranges
            .iter()
            .filter(|(start, end)| start <= end && *start < count)
            .map(|(start, end)| (*start as usize, (*end).min(count - 1) as usize))
            .collect();
        wanted.sort_unstable();
        // Overlapping ranges merged: every room once, in order.
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(wanted.len());
        for (start, end) in wanted {
            match merged.last_mut() {
                Some((_, last_end)) if start <= last_end.saturating_add(1) => *last_end = (*last_end).max(end),
                _ => merged.push((start, end)),
            }
        }
        let mut rooms = Vec::new();
        if filter.is_invite.is_none() && filter.is_dm.is_none() && filter.types.is_none() {
            for (start, end) in merged {
                let room_ids = self.iter_from(start).take(end - start + 1).take(max_rooms - rooms.len().min(max_rooms));
                rooms.extend(room_ids.map(|(room_id, _)| room_id.to_string()));
            }
            return ListView { count, rooms };
        }
        let Some(&(_, last)) = merged.last() else { return ListView { count, rooms } };
        let mut ranges = merged.into_iter().peekable();
        let matching = self.iter_from(0).filter(|(room_id, _)| self.keeps(filter, direct, room_id));
        for (rank, (room_id, _)) in matching.enumerate() {
            if rank > last || rooms.len() >= max_rooms {
                break;
            }
            while ranges.peek().is_some_and(|(_, end)| *end < rank) {
                ranges.next();
            }
            if ranges.peek().is_some_and(|(start, _)| *start <= rank) {
                rooms.push(room_id.to_string());
            }
        }
        ListView { count, rooms }
    }

    fn keeps(&self, filter: ListFilter, direct: &HashSet<String>, room_id: &str) -> bool {
        let invite = self.rooms.get(room_id).is_some_and(|(_, invite)| *invite);
        filter.is_invite.is_none_or(|want| want == invite)
            && filter.is_dm.is_none_or(|want| want == direct.contains(room_id))
            && filter.types.is_none_or(|types| types.allows(self.types.get(room_id).map(String::as_str)))
    }

    fn count(&self, filter: ListFilter, direct: &HashSet<String>) -> u64 {
        let Some(types) = filter.types else { return self.count_untyped(filter, direct) };
        let others = ListFilter { types: None, ..filter };
        // Rooms with a type are few: count them one by one, and the rooms without one as the
        // rest of the count.
        let typed = |allowed: bool| {
            self.types
                .iter()
                .filter(|(room_id, room_type)| {
                    types.allows(Some(room_type.as_str())) == allowed && self.keeps(others, direct, room_id)
                })
                .count() as u64
        };
        if types.allows(None) { self.count_untyped(others, direct) - typed(false) } else { typed(true) }
    }

    fn count_untyped(&self, filter: ListFilter, direct: &HashSet<String>) -> u64 {
        let by_invite = match filter.is_invite {
            None => self.rooms.len(),
            Some(true) => self.invites,
            Some(false) => self.rooms.len() - self.invites,
        };
        let count = match filter.is_dm {
            None => by_invite,
            Some(want_dm) => {
                let keep_invite = ListFilter { is_invite: filter.is_invite, is_dm: None, types: None };
                let dms = direct
                    .iter()
                    .filter(|room_id| self.rooms.contains_key(*room_id) && self.keeps(keep_invite, direct, room_id))
                    .count();
                if want_dm { dms } else { by_invite - dms }
            }
        };
        count as u64
    }

    /// Takes `room_id` out; returns its entry (the id's allocation is reused when it moves).
    fn take(&mut self, room_id: &str) -> Option<(bool, String)> {
        let (stamp, invite) = self.rooms.remove(room_id)?;
        if invite {
            self.invites -= 1;
        }
        self.types.remove(room_id);
        let (block, at) = self.find(stamp, room_id);
        Some((invite, self.remove_at(block, at)))
    }

    /// Where a room of the map sits in the order: (block, index in it).
    fn find(&self, stamp: u64, room_id: &str) -> (usize, usize) {
        let key = (Reverse(stamp), room_id);
        let block = self.blocks.partition_point(|entries| entries.last().is_some_and(|last| (last.0, last.1.as_str()) < key));
        let at = self
            .blocks
            .get(block)
            .and_then(|entries| entries.binary_search_by(|entry| (entry.0, entry.1.as_str()).cmp(&key)).ok());
        (block, at.expect("a room in the map is in the order"))
    }

    /// Takes the entry at (`block`, `at`) out of the order; returns its room id.
    fn remove_at(&mut self, block: usize, at: usize) -> String {
        let entries = &mut self.blocks[block];
        let (_, taken) = entries.remove(at);
        if entries.is_empty() {
            self.blocks.remove(block);
        } else if entries.len() < BLOCK_ENTRIES / 4 && block + 1 < self.blocks.len() {
            let next = self.blocks.remove(block + 1);
            self.blocks[block].extend(next);
            self.split(block);
        }
        taken
    }

    fn put(&mut self, room_id: String, stamp: u64, invite: bool) {
        self.rooms.insert(room_id.clone(), (stamp, invite));
        if invite {
            self.invites += 1;
        }
        self.insert_place((Reverse(stamp), room_id));
    }

    fn insert_place(&mut self, place: Place) {
        if self.blocks.is_empty() {
            self.blocks.push(vec![place]);
            return;
        }
        let block = self.block_of(&place);
        let entries = &mut self.blocks[block];
        let at = entries.partition_point(|entry| *entry < place);
        entries.insert(at, place);
        self.split(block);
    }

    /// The block `place` is in or belongs in: the first whose last entry is not before it.
    fn block_of(&self, place: &Place) -> usize {
        let block = self.blocks.partition_point(|entries| entries.last().is_some_and(|last| last < place));
        block.min(self.blocks.len().saturating_sub(1))
    }

    fn split(&mut self, block: usize) {
        if self.blocks[block].len() > 2 * BLOCK_ENTRIES {
            let tail = self.blocks[block].split_off(BLOCK_ENTRIES);
            self.blocks.insert(block + 1, tail);
        }
    }
}

impl ReadModel {
    /// A bump event at `stamp` in `room_id`: each of `members` (the room's joined and invited
    /// members, as the room's audience) moves it up in their index. Cost per event: per member,
    /// one user lookup and lock and one move (binary searches and a shift of at most one block
    /// of 128 entries; none when the room is already first, as a room in conversation is). On
    /// the 2-core development machine, under load: about 0.2-0.5 us per member for a room
    /// already first, 4-8 us for one coming up from the bottom of 500-5,000 rooms, so a message
    /// in a 1,000-member room costs 0.2-0.5 ms here (up to 8 ms for the first after a long
    /// quiet), beside waking the same 1,000 members, which the event costs anyway.
    pub(super) fn bump_members(&self, room_id: &str, stamp: u64, members: &[String]) {
        let handles: Vec<_> = {
            let users = self.users.read().expect("users lock");
            members.iter().filter_map(|user_id| users.get(user_id).cloned()).collect()
        };
        for user in handles {
            user.write().expect("user lock").recency.bump(room_id, stamp);
        }
    }

    /// The room's bump stamp (0 before its first bump event).
    pub(super) fn bump_stamp(&self, room_id: &str) -> u64 {
        self.bumps.read().expect("bumps lock").get(room_id).copied().unwrap_or(0)
    }
}

/// When a snapshot is loaded: places `room` in the index of a `user_id` with `membership` in it.
pub(super) fn place_loaded(recency: &mut RoomRecency, room: &Room, user_id: &str, membership: Membership, room_stamp: u64) {
    let member_ts = room.state.get("m.room.member", user_id).and_then(|event| event["origin_server_ts"].as_u64()).unwrap_or(0);
    recency.place(&room.room_id, membership, room_stamp, member_ts);
    recency.set_type(&room.room_id, room.room_type().as_deref());
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::entry::{Entry, Envelope};

    fn order(recency: &RoomRecency) -> Vec<(String, u64)> {
        recency.iter_from(0).map(|(room_id, stamp)| (room_id.to_string(), stamp)).collect()
    }

    #[test]
    fn rooms_follow_their_bumps_and_memberships() {
        let mut recency = RoomRecency::default();
        let none = HashSet::new();
        recency.place("!a", Membership::Join, 10, 0);
        recency.place("!b", Membership::Join, 30, 0);
        recency.place("!c", Membership::Join, 20, 0);
        recency.place("!d", Membership::Invite, 5, 25);
        let room = |name: &str, stamp: u64| (name.to_string(), stamp);
        assert_eq!(order(&recency), vec![room("!b", 30), room("!d", 25), room("!c", 20), room("!a", 10)]);
        recency.bump("!a", 40);
        recency.bump("!c", 15); // older than its stamp: no move
        recency.bump("!x", 99); // not the user's room
        assert_eq!(order(&recency), vec![room("!a", 40), room("!b", 30), room("!d", 25), room("!c", 20)]);
        // The first room is restamped in place.
        recency.bump("!a", 45);
        assert_eq!(order(&recency)[..2], [room("!a", 45), room("!b", 30)]);
        // Ties are ordered by room id.
        recency.bump("!c", 30);
        assert_eq!(order(&recency)[1..3], [room("!b", 30), room("!c", 30)]);
        // Accepting the invite: the room's own stamp from then on.
        recency.place("!d", Membership::Join, 5, 50);
        assert_eq!(recency.get("!a"), Some((45, false)));
        assert_eq!(order(&recency).last(), Some(&room("!d", 5)));
        assert_eq!((recency.len(), recency.invites()), (4, 0));
        recency.place("!b", Membership::Leave, 0, 0);
        assert_eq!(recency.get("!b"), None);
        assert_eq!(order(&recency).iter().map(|(r, _)| r.as_str()).collect::<Vec<_>>(), ["!a", "!c", "!d"]);
        recency.place("!e", Membership::Invite, 0, 60);
        let view = recency.list(ListFilter { is_invite: Some(true), ..ListFilter::default() }, &none, &[(0, 9)], 500);
        assert_eq!(view, ListView { count: 1, rooms: vec!["!e".to_string()] });
        let view = recency.list(ListFilter { is_invite: Some(false), ..ListFilter::default() }, &none, &[(1, 1)], 500);
        assert_eq!(view, ListView { count: 3, rooms: vec!["!c".to_string()] });
    }

    #[test]
    fn lists_answer_ranges_and_counts_at_any_size() {
        let mut recency = RoomRecency::default();
        // Enough rooms for many blocks; room i has stamp i, so rank r holds room 999 - r.
        for i in 0..1000u64 {
            recency.place(&format!("!{i:04}"), if i % 10 == 0 { Membership::Invite } else { Membership::Join }, i, 0);
        }
        // Move rooms about (splits and merges of blocks), then put them back.
        for i in (0..1000u64).step_by(3) {
            recency.remove(&format!("!{i:04}"));
        }
        for i in (0..1000u64).step_by(3) {
            recency.place(&format!("!{i:04}"), if i % 10 == 0 { Membership::Invite } else { Membership::Join }, i, 0);
        }
        let stamps: Vec<u64> = recency.iter_from(0).map(|(_, stamp)| stamp).collect();
        assert_eq!(stamps, (0..1000).rev().collect::<Vec<u64>>());
        let name = |i: u64| format!("!{i:04}");
        let all = ListFilter::default();
        let view = recency.list(all, &HashSet::new(), &[(0, 2), (500, 501), (1, 3), (998, 5000)], 500);
        assert_eq!(view.count, 1000);
        assert_eq!(view.rooms, [999, 998, 997, 996, 499, 498, 1, 0].map(name));
        assert_eq!(recency.list(all, &HashSet::new(), &[(0, 999)], 20).rooms.len(), 20, "at most max_rooms");
        assert_eq!(recency.list(all, &HashSet::new(), &[(1000, 1010), (5, 2)], 20).rooms, Vec::<String>::new());
        let invites = recency.list(ListFilter { is_invite: Some(true), ..ListFilter::default() }, &HashSet::new(), &[(1, 2)], 500);
        assert_eq!((invites.count, invites.rooms), (100, vec![name(980), name(970)]));
        let direct: HashSet<String> = ["!0990", "!0500", "!0003", "!9999"].iter().map(|r| r.to_string()).collect();
        let dms = recency.list(ListFilter { is_invite: None, is_dm: Some(true), types: None }, &direct, &[(0, 1)], 500);
        assert_eq!((dms.count, dms.rooms), (3, vec![name(990), name(500)]));
        let joined_dms = recency.list(ListFilter { is_invite: Some(false), is_dm: Some(true), types: None }, &direct, &[(0, 9)], 500);
        assert_eq!((joined_dms.count, joined_dms.rooms), (1, vec![name(3)]), "!0990 and !0500 are invites");
        let others = recency.list(ListFilter { is_invite: None, is_dm: Some(false), types: None }, &direct, &[(0, 0)], 500);
        assert_eq!((others.count, others.rooms), (997, vec![name(999)]));

        // Three spaces, one of them an invite: counted from the typed rooms alone.
        for i in [999, 980, 3] {
            recency.set_type(&name(i), Some("m.space"));
        }
        let spaces = TypeFilter { room_types: Some(vec![Some("m.space".into())]), not_room_types: Vec::new() };
        let no_spaces = TypeFilter { room_types: None, not_room_types: vec![Some("m.space".into())] };
        let list = |filter: ListFilter, ranges: &[(u64, u64)]| recency.list(filter, &direct, ranges, 500);
        let view = list(ListFilter { types: Some(&no_spaces), ..ListFilter::default() }, &[(0, 499)]);
        assert_eq!(view.count, 997);
        assert_eq!(view.rooms.len(), 500);
        assert!(![name(999), name(980), name(3)].iter().any(|space| view.rooms.contains(space)));
        let view = list(ListFilter { types: Some(&spaces), ..ListFilter::default() }, &[(0, 9)]);
        assert_eq!((view.count, view.rooms), (3, vec![name(999), name(980), name(3)]));
        let view = list(ListFilter { is_invite: Some(true), types: Some(&spaces), ..ListFilter::default() }, &[(0, 9)]);
        assert_eq!((view.count, view.rooms), (1, vec![name(980)]));
        let view = list(ListFilter { is_dm: Some(true), types: Some(&no_spaces), ..ListFilter::default() }, &[(0, 9)]);
        assert_eq!((view.count, view.rooms), (2, vec![name(990), name(500)]), "!0003 is a space");
        // A room the user leaves takes its type with it.
        recency.remove(&name(999));
        recency.set_type(&name(999), Some("m.space"));
        let view = recency.list(ListFilter { types: Some(&spaces), ..ListFilter::default() }, &direct, &[(0, 9)], 500);
        assert_eq!(view.count, 2);
    }

    fn apply(model: &ReadModel, room_id: &str, event: Value) {
        let mut event = event;
        event["room_id"] = json!(room_id);
        let p = model.partition_of(room_id);
        let seq = model.applied(p) + 1;
        let entry = Envelope::new(Entry::Event { event, txn: None, prev_content: None, redacts_target: None });
        model.apply(p, seq, room_id, &entry.to_bytes());
    }

    fn event(event_type: &str, sender: &str, state_key: Option<&str>, content: Value, ts: u64) -> Value {
        let mut event = json!({"type": event_type, "sender": sender, "content": content, "origin_server_ts": ts});
        if let Some(key) = state_key {
            event["state_key"] = json!(key);
        }
        event
    }

    fn rooms_of(model: &ReadModel, user_id: &str) -> Vec<(String, u64, bool)> {
        model.with_user(user_id, |user| {
            user.recency.iter_from(0).map(|(r, s)| (r.to_string(), s, user.recency.get(r).is_some_and(|(_, i)| i))).collect()
        })
    }

    #[test]
    fn the_model_keeps_each_users_index_through_events_and_snapshots() {
        let model = ReadModel::new(2);
        for (room_id, created) in [("!one:x", 10), ("!two:x", 20)] {
            apply(&model, room_id, event("m.room.create", "@a:x", Some(""), json!({"room_version": "11"}), created));
            apply(&model, room_id, event("m.room.member", "@a:x", Some("@a:x"), json!({"membership": "join"}), created));
        }
        let row = |room_id: &str, stamp: u64, invite: bool| (room_id.to_string(), stamp, invite);
        assert_eq!(rooms_of(&model, "@a:x"), vec![row("!two:x", 20, false), row("!one:x", 10, false)]);
        // A message moves its room up; state does not.
        apply(&model, "!one:x", event("m.room.message", "@a:x", None, json!({"body": "hi"}), 30));
        apply(&model, "!two:x", event("m.room.topic", "@a:x", Some(""), json!({"topic": "t"}), 40));
        assert_eq!(rooms_of(&model, "@a:x"), vec![row("!one:x", 30, false), row("!two:x", 20, false)]);
        // An invite is placed by its own time, and bumped like the room after it.
        apply(&model, "!two:x", event("m.room.member", "@a:x", Some("@b:x"), json!({"membership": "invite"}), 50));
        assert_eq!(rooms_of(&model, "@b:x"), vec![row("!two:x", 50, true)]);
        apply(&model, "!two:x", event("m.room.message", "@a:x", None, json!({"body": "hey"}), 60));
        assert_eq!(rooms_of(&model, "@b:x"), vec![row("!two:x", 60, true)]);
        assert_eq!(rooms_of(&model, "@a:x")[0], row("!two:x", 60, false));
        // Joining keeps the room's stamp; a snapshot rebuilds the same order.
        apply(&model, "!two:x", event("m.room.member", "@b:x", Some("@b:x"), json!({"membership": "join"}), 70));
        assert_eq!(rooms_of(&model, "@b:x"), vec![row("!two:x", 60, false)]);
        let (info, bytes) = model.snapshot();
        let restored = ReadModel::new(2);
        restored.load_snapshot(&info, &bytes).unwrap();
        for user_id in ["@a:x", "@b:x"] {
            assert_eq!(rooms_of(&restored, user_id), rooms_of(&model, user_id), "{user_id} after a snapshot");
        }
        // Leaving takes the room out.
        apply(&model, "!two:x", event("m.room.member", "@b:x", Some("@b:x"), json!({"membership": "leave"}), 80));
        assert_eq!(rooms_of(&model, "@b:x"), vec![]);
        // A purge takes the room out of every member's index.
        let p = model.partition_of("!one:x");
        let seq = model.applied(p) + 1;
        model.apply(p, seq, "!one:x", &Envelope::new(Entry::RoomPurged { by: "@admin:x".into() }).to_bytes());
        assert_eq!(rooms_of(&model, "@a:x"), vec![row("!two:x", 60, false)]);
    }
}
