//! A room's relations (reactions, edits, thread replies, references) indexed by the position of
//! the event they point at, and its threads by the position of their latest reply, so
//! `/relations` and `/threads` find their events without walking the timeline: they read them
//! back by position (window or chunk).
//!
//! Built as events are applied (only accepted events are indexed), carried in snapshots. Grows
//! with relation events (about 40 bytes each: a position and three shared names); the names
//! (relation types, event types, senders) are interned per room, up to [`MAX_INTERNED`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// Distinct names a room interns; past it, names are stored unshared (correct, larger).
const MAX_INTERNED: usize = 4096;

/// One event relating to another.
#[derive(Clone, Debug)]
pub struct Relation {
    /// Position of the relating event.
    pub seq: u64,
    pub rel_type: Arc<str>,
    pub event_type: Arc<str>,
    pub sender: Arc<str>,
}

/// The relation as a snapshot stores it: (target, position, rel_type, event type, sender).
pub type RelationSnapshot = (u64, u64, String, String, String);

#[derive(Default)]
pub struct RelationIndex {
    /// Relating events per target position, oldest first.
    by_target: HashMap<u64, Vec<Relation>>,
    /// Thread roots by the position of their latest reply: (latest reply, root).
    threads_by_latest: BTreeMap<u64, u64>,
    /// Each thread root's latest reply.
    latest_of: HashMap<u64, u64>,
    names: HashSet<Arc<str>>,
}

impl RelationIndex {
    fn intern(&mut self, name: &str) -> Arc<str> {
        if let Some(shared) = self.names.get(name) {
            return shared.clone();
        }
        let shared: Arc<str> = name.into();
        if self.names.len() < MAX_INTERNED {
            self.names.insert(shared.clone());
        }
        shared
    }

    /// Records that the event at `seq` relates to the event at `target` (an earlier position).
    pub fn record(&mut self, target: u64, seq: u64, rel_type: &str, event_type: &str, sender: &str) {
        if target >= seq {
            return; // a relation points back in time; anything else is noise
        }
        let relation =
            Relation { seq, rel_type: self.intern(rel_type), event_type: self.intern(event_type), sender: self.intern(sender) };
        self.by_target.entry(target).or_default().push(relation);
        if rel_type == "m.thread" {
            if let Some(previous) = self.latest_of.insert(target, seq) {
                self.threads_by_latest.remove(&previous);
            }
            self.threads_by_latest.insert(seq, target);
        }
    }

    /// Forgets that the event at `seq` relates to `target` (it was redacted): a thread whose
    /// last reply goes ends, and its latest reply is the one before.
    pub fn remove(&mut self, target: u64, seq: u64) {
        let Some(relations) = self.by_target.get_mut(&target) else { return };
        relations.retain(|r| r.seq != seq);
        let latest_reply = relations.iter().rev().find(|r| &*r.rel_type == "m.thread").map(|r| r.seq);
        if relations.is_empty() {
            self.by_target.remove(&target);
        }
        if self.latest_of.get(&target) == Some(&seq) {
            self.threads_by_latest.remove(&seq);
            self.latest_of.remove(&target);
            if let Some(latest) = latest_reply {
                self.latest_of.insert(target, latest);
                self.threads_by_latest.insert(latest, target);
            }
        }
    }

    /// The events relating to `target`, oldest first.
    pub fn children(&self, target: u64) -> &[Relation] {
        self.by_target.get(&target).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Thread roots whose latest reply is before position `before`, most recently active first:
    /// (latest reply, root).
    pub fn threads_before(&self, before: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.threads_by_latest.range(..before).rev().map(|(latest, root)| (*latest, *root))
    }

    pub fn to_snapshot(&self) -> Vec<RelationSnapshot> {
        let mut out: Vec<RelationSnapshot> = self
            .by_target
            .iter()
            .flat_map(|(target, relations)| {
                relations.iter().map(move |r| (*target, r.seq, r.rel_type.to_string(), r.event_type.to_string(), r.sender.to_string()))
            })
            .collect();
        out.sort_by_key(|r| r.1);
        out
    }

    pub fn from_snapshot(relations: Vec<RelationSnapshot>) -> RelationIndex {
        let mut index = RelationIndex::default();
        for (target, seq, rel_type, event_type, sender) in relations {
            index.record(target, seq, &rel_type, &event_type, &sender);
        }
        index
    }
}

impl RelationIndex {
    /// (targets with relations, threads).
    pub fn stats(&self) -> (usize, usize) {
        (self.by_target.len(), self.latest_of.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relations_and_threads_are_indexed_by_position() {
        let mut index = RelationIndex::default();
        index.record(10, 11, "m.annotation", "m.reaction", "@a:x");
        index.record(10, 12, "m.thread", "m.room.message", "@b:x");
        index.record(20, 21, "m.thread", "m.room.message", "@a:x");
        index.record(10, 30, "m.thread", "m.room.message", "@a:x");
        index.record(40, 40, "m.thread", "m.room.message", "@a:x"); // points at itself: ignored
        index.record(50, 45, "m.thread", "m.room.message", "@a:x"); // points ahead: ignored
        assert_eq!(index.children(10).iter().map(|r| r.seq).collect::<Vec<_>>(), [11, 12, 30]);
        assert_eq!(index.threads_before(u64::MAX).collect::<Vec<_>>(), [(30, 10), (21, 20)]);
        assert_eq!(index.threads_before(30).collect::<Vec<_>>(), [(21, 20)]);
        assert!(Arc::ptr_eq(&index.children(10)[1].event_type, &index.children(10)[2].event_type));
        let mut redacted = RelationIndex::from_snapshot(index.to_snapshot());
        redacted.remove(10, 30);
        assert_eq!(redacted.threads_before(u64::MAX).collect::<Vec<_>>(), [(21, 20), (12, 10)]);
        redacted.remove(10, 12);
        redacted.remove(20, 21);
        assert_eq!(redacted.threads_before(u64::MAX).count(), 0);
        assert_eq!(redacted.stats(), (1, 0));
        let again = RelationIndex::from_snapshot(index.to_snapshot());
        assert_eq!(again.threads_before(u64::MAX).collect::<Vec<_>>(), [(30, 10), (21, 20)]);
        assert_eq!(again.stats(), (2, 2));
    }
}
