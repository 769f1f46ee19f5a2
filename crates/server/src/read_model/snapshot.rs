//! Read-model snapshots: the model's derived state with the log positions it reflects, so a
//! starting node loads it and replays only the log after it.
//!
//! Stored format, versioned: `description` (read without the bytes) is JSON `{"format", "positions",
//! "sha256", "bytes"}`; the bytes are the JSON of [`Snapshot`]. A node that finds another format,
//! another partition count or a checksum that does not match says so and replays the log instead.
//! Windows of recent events are not in it: they are a cache, read back from the log on demand.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::room::{Room, RoomSnapshot};
use super::{KeyChanges, ReadModel, User};

/// The snapshot format this version writes and reads. 2: rooms carry their relation index (and
/// directory visibility); a format-1 snapshot has no relation index, so it is refused and the log
/// replayed, rather than loaded with relations missing. 3: the blocked rooms (a format-2 snapshot
/// may have been written by a version that skipped a block entry, so it is replayed instead).
pub const SNAPSHOT_FORMAT: u32 = 3;

#[derive(Serialize, Deserialize)]
struct Snapshot {
    format: u32,
    positions: Vec<u64>,
    rooms: Vec<RoomSnapshot>,
    users: HashMap<String, User>,
    key_changes: Vec<KeyChanges>,
    /// Blocked rooms and the administrator who blocked each (rooms the model may not know).
    #[serde(default)]
    blocked_rooms: HashMap<String, String>,
    /// Rooms' bump stamps (absent from older snapshots: those rooms sort last until their next
    /// bump event).
    #[serde(default)]
    bumps: HashMap<String, u64>,
}

/// What travels beside a snapshot's bytes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub format: u32,
    pub positions: Vec<u64>,
    pub sha256: String,
    pub bytes: usize,
}

impl SnapshotInfo {
    pub fn parse(description: &str) -> Option<SnapshotInfo> {
        serde_json::from_str(description).ok()
    }

    pub fn describe(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Entries the snapshot covers, summed over partitions.
    pub fn entries(&self) -> u64 {
        self.positions.iter().sum()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotLoadError {
    #[error("snapshot format {found} is not the format this version reads ({SNAPSHOT_FORMAT})")]
    Format { found: u32 },
    #[error("the snapshot has {found} partitions, the deployment {expected}")]
    Partitions { found: usize, expected: u32 },
    #[error("the snapshot's checksum does not match its bytes")]
    Checksum,
    #[error("the snapshot cannot be read: {0}")]
    Corrupt(String),
    #[error("the model already applied entries; a snapshot is loaded only into an empty model")]
    NotEmpty,
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

impl ReadModel {
    /// The model as it stands, with the positions it reflects. Applying waits while the model is
    /// copied (not while it is serialized).
    pub fn snapshot(&self) -> (SnapshotInfo, Vec<u8>) {
        let snapshot = {
            let _gate = self.gate.write().expect("snapshot gate");
            let rooms: Vec<RoomSnapshot> = self.all_room_snapshots();
            let users: HashMap<String, User> = self
                .users
                .read()
                .expect("users lock")
                .iter()
                .map(|(id, user)| (id.clone(), user.read().expect("user lock").clone()))
                .collect();
            Snapshot {
                format: SNAPSHOT_FORMAT,
                positions: self.positions(),
                rooms,
                users,
                key_changes: self.key_changes.lock().expect("key changes lock").clone(),
                blocked_rooms: self.blocked_rooms.lock().expect("blocked rooms lock").clone(),
                bumps: self.bumps.read().expect("bumps lock").clone(),
            }
        };
        let bytes = serde_json::to_vec(&snapshot).unwrap_or_default();
        let info = SnapshotInfo {
            format: SNAPSHOT_FORMAT,
            positions: snapshot.positions,
            sha256: sha256_hex(&bytes),
            bytes: bytes.len(),
        };
        (info, bytes)
    }

    /// Loads a snapshot into this (empty) model; afterwards the model is at the snapshot's
    /// positions and the tails continue from there.
    pub fn load_snapshot(&self, info: &SnapshotInfo, bytes: &[u8]) -> Result<(), SnapshotLoadError> {
        if info.format != SNAPSHOT_FORMAT {
            return Err(SnapshotLoadError::Format { found: info.format });
        }
        if info.positions.len() != self.partitions as usize {
            return Err(SnapshotLoadError::Partitions { found: info.positions.len(), expected: self.partitions });
        }
        if sha256_hex(bytes) != info.sha256 {
            return Err(SnapshotLoadError::Checksum);
        }
        let snapshot: Snapshot = serde_json::from_slice(bytes).map_err(|e| SnapshotLoadError::Corrupt(e.to_string()))?;
        if snapshot.format != SNAPSHOT_FORMAT {
            return Err(SnapshotLoadError::Format { found: snapshot.format });
        }
        if snapshot.positions != info.positions || snapshot.key_changes.len() != self.partitions as usize {
            return Err(SnapshotLoadError::Corrupt("positions disagree with the description".into()));
        }
        let _gate = self.gate.write().expect("snapshot gate");
        if self.positions().iter().any(|p| *p > 0) {
            return Err(SnapshotLoadError::NotEmpty);
        }
        let mut users = snapshot.users;
        let mut rooms = HashMap::new();
        let mut room_bytes = 0usize;
        for room in snapshot.rooms {
            let room = Room::from_snapshot(room);
            for member in room.state.member_refs() {
                if let (user_id, Some(membership)) = (member.state_key, member.membership) {
                    let user = users.entry(user_id.to_string()).or_default();
                    if !user.forgotten.contains(&room.room_id) {
                        let membership = super::Membership::parse(membership);
                        user.rooms.insert(room.room_id.clone(), membership);
                        let stamp = snapshot.bumps.get(&room.room_id).copied().unwrap_or(0);
                        super::recency::place_loaded(&mut user.recency, &room, user_id, membership, stamp);
                    }
                }
            }
            room_bytes += room.base_bytes();
            rooms.insert(room.room_id.clone(), Arc::new(RwLock::new(room)));
        }
        self.rooms.write().expect("rooms lock").hot = rooms;
        self.count_room_bytes(room_bytes as isize);
        *self.users.write().expect("users lock") =
            users.into_iter().map(|(id, user)| (id, Arc::new(RwLock::new(user)))).collect();
        *self.key_changes.lock().expect("key changes lock") = snapshot.key_changes;
        *self.blocked_rooms.lock().expect("blocked rooms lock") = snapshot.blocked_rooms;
        *self.bumps.write().expect("bumps lock") = snapshot.bumps;
        for (partition, position) in snapshot.positions.iter().enumerate() {
            self.applied[partition].send_replace(*position);
        }
        *self.loaded_snapshot.lock().expect("snapshot lock") = Some(snapshot.positions);
        Ok(())
    }
}
