//! Read-model snapshots: the model's derived state with the log positions it reflects, so a
//! starting node loads it and replays only the log after it.
//!
//! Stored format, versioned: `description` (read without the bytes) is JSON `{"format", "positions",
//! "sha256", "bytes"}`; the bytes are JSON lines: a [`Header`], then one line per user
//! (`[user_id, user]`), then one line per room ([`RoomSnapshot`]). A node that finds another format,
//! another partition count or a checksum that does not match says so and replays the log instead.
//! Windows of recent events are not in it: they are a cache, read back from the log on demand.
//!
//! Lines, so that neither side holds the whole model twice: the writer copies the hot rooms (at
//! most their share of the cache budget) while the model stands still and streams the cold rooms'
//! bytes from the spill file; the loader reads one room at a time and sends the rooms past the
//! budget straight to the spill file, cold. A node's memory while it writes or loads a snapshot
//! is its budget plus one room, whatever the number of rooms.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::cold::ColdRoom;
use super::room::{Room, RoomSnapshot};
use super::{KeyChanges, ReadModel, User};

/// The snapshot format this version writes and reads. 2: rooms carry their relation index (and
/// directory visibility); a format-1 snapshot has no relation index, so it is refused and the log
/// replayed, rather than loaded with relations missing. 3: the blocked rooms (a format-2 snapshot
/// may have been written by a version that skipped a block entry, so it is replayed instead).
/// 4: JSON lines instead of one document (and every room's bump stamp, which format 3 could
/// lack).
pub const SNAPSHOT_FORMAT: u32 = 4;

/// The first line of a snapshot: everything but the users and the rooms, and how many of each
/// follow.
#[derive(Serialize, Deserialize)]
struct Header {
    format: u32,
    positions: Vec<u64>,
    key_changes: Vec<KeyChanges>,
    /// Blocked rooms and the administrator who blocked each (rooms the model may not know).
    blocked_rooms: HashMap<String, String>,
    /// Rooms' bump stamps.
    bumps: HashMap<String, u64>,
    users: usize,
    rooms: usize,
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

/// A writer that hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    sha: Sha256,
    bytes: usize,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.sha.update(&buf[..written]);
        self.bytes += written;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes what it hands out, line by line.
struct Lines<R> {
    inner: R,
    sha: Sha256,
    line: Vec<u8>,
}

impl<R: BufRead> Lines<R> {
    /// The next line without its newline; None at the end.
    fn next(&mut self) -> Result<Option<&[u8]>, SnapshotLoadError> {
        self.line.clear();
        let read = self.inner.read_until(b'\n', &mut self.line).map_err(|e| SnapshotLoadError::Corrupt(e.to_string()))?;
        if read == 0 {
            return Ok(None);
        }
        self.sha.update(&self.line);
        Ok(Some(self.line.strip_suffix(b"\n").unwrap_or(&self.line)))
    }

    fn expect<T: for<'de> Deserialize<'de>>(&mut self, what: &str) -> Result<T, SnapshotLoadError> {
        let line = self.next()?.ok_or_else(|| SnapshotLoadError::Corrupt(format!("the snapshot ends before {what}")))?;
        serde_json::from_slice(line).map_err(|e| SnapshotLoadError::Corrupt(format!("{what}: {e}")))
    }

    /// The checksum of everything, once the rest is read.
    fn finish(mut self) -> Result<String, SnapshotLoadError> {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            match self.inner.read(&mut buffer) {
                Ok(0) => return Ok(hex(self.sha.finalize().as_slice())),
                Ok(read) => self.sha.update(&buffer[..read]),
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => return Err(SnapshotLoadError::Corrupt(error.to_string())),
            }
        }
    }
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn line<W: Write>(out: &mut W, value: &impl Serialize) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, value).map_err(std::io::Error::other)?;
    out.write_all(b"\n")
}

impl ReadModel {
    /// Writes the model as it stands, with the positions it reflects, to `out`. Applying waits
    /// while the hot rooms and the users are copied (not while anything is serialized).
    pub fn write_snapshot(&self, out: impl Write) -> std::io::Result<SnapshotInfo> {
        let (header, users, hot, cold) = {
            let _gate = self.gate.write().expect("snapshot gate");
            let (hot, cold) = self.room_table_for_snapshot()?;
            let users: Vec<(String, User)> = self
                .users
                .read()
                .expect("users lock")
                .iter()
                .map(|(id, user)| (id.clone(), user.read().expect("user lock").clone()))
                .collect();
            let header = Header {
                format: SNAPSHOT_FORMAT,
                positions: self.positions(),
                key_changes: self.key_changes.lock().expect("key changes lock").clone(),
                blocked_rooms: self.blocked_rooms.lock().expect("blocked rooms lock").clone(),
                bumps: self.bumps.read().expect("bumps lock").clone(),
                users: users.len(),
                rooms: hot.len() + cold.len(),
            };
            (header, users, hot, cold)
        };
        let mut out = Hashing { inner: std::io::BufWriter::new(out), sha: Sha256::new(), bytes: 0 };
        line(&mut out, &header)?;
        for user in users {
            line(&mut out, &user)?;
        }
        for room in hot {
            line(&mut out, &room)?;
        }
        for bytes in cold.bytes() {
            out.write_all(&bytes?)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        Ok(SnapshotInfo { format: SNAPSHOT_FORMAT, positions: header.positions, sha256: hex(out.sha.finalize().as_slice()), bytes: out.bytes })
    }

    /// The model as it stands, in memory (tests and small models).
    pub fn snapshot(&self) -> (SnapshotInfo, Vec<u8>) {
        let mut bytes = Vec::new();
        let info = self.write_snapshot(&mut bytes).expect("writing to memory");
        (info, bytes)
    }

    /// Loads a snapshot held in memory; see [`ReadModel::load_snapshot_from`].
    pub fn load_snapshot(&self, info: &SnapshotInfo, bytes: &[u8]) -> Result<(), SnapshotLoadError> {
        self.load_snapshot_from(info, bytes)
    }

    /// Loads a snapshot into this (empty) model, reading it one line at a time; afterwards the
    /// model is at the snapshot's positions and the tails continue from there. Rooms beyond the
    /// hot rooms' budget go to the spill file as they are read. Nothing is installed unless the
    /// whole snapshot was read and its checksum matches.
    pub fn load_snapshot_from(&self, info: &SnapshotInfo, reader: impl BufRead) -> Result<(), SnapshotLoadError> {
        if info.format != SNAPSHOT_FORMAT {
            return Err(SnapshotLoadError::Format { found: info.format });
        }
        if info.positions.len() != self.partitions as usize {
            return Err(SnapshotLoadError::Partitions { found: info.positions.len(), expected: self.partitions });
        }
        if self.positions().iter().any(|p| *p > 0) {
            return Err(SnapshotLoadError::NotEmpty);
        }
        let mut lines = Lines { inner: reader, sha: Sha256::new(), line: Vec::new() };
        let mut cold = HashMap::new();
        let read = self.read_snapshot(info, &mut lines, &mut cold);
        // A damaged snapshot is called so, whatever part of it failed to parse.
        let checked = match lines.finish() {
            Ok(sum) if sum != info.sha256 => Err(SnapshotLoadError::Checksum),
            Ok(_) => read,
            Err(error) => read.and(Err(error)),
        };
        let (header, users, hot, hot_bytes) = match checked {
            Ok(loaded) => loaded,
            Err(error) => {
                self.release_spilled(cold.values());
                return Err(error);
            }
        };
        let _gate = self.gate.write().expect("snapshot gate");
        if self.positions().iter().any(|p| *p > 0) {
            self.release_spilled(cold.values());
            return Err(SnapshotLoadError::NotEmpty);
        }
        {
            let mut table = self.rooms.write().expect("rooms lock");
            table.hot = hot;
            table.cold = cold;
        }
        self.count_room_bytes(hot_bytes as isize);
        *self.users.write().expect("users lock") =
            users.into_iter().map(|(id, user)| (id, Arc::new(RwLock::new(user)))).collect();
        *self.key_changes.lock().expect("key changes lock") = header.key_changes;
        *self.blocked_rooms.lock().expect("blocked rooms lock") = header.blocked_rooms;
        *self.bumps.write().expect("bumps lock") = header.bumps;
        for (partition, position) in header.positions.iter().enumerate() {
            self.applied[partition].send_replace(*position);
        }
        *self.loaded_snapshot.lock().expect("snapshot lock") = Some(header.positions);
        Ok(())
    }

    /// Reads the snapshot's lines: the header, the users, and the rooms (into memory while they
    /// fit nine tenths of the hot rooms' budget, to the spill file, `cold`, past it).
    #[allow(clippy::type_complexity)]
    fn read_snapshot(
        &self,
        info: &SnapshotInfo,
        lines: &mut Lines<impl BufRead>,
        cold: &mut HashMap<String, ColdRoom>,
    ) -> Result<(Header, HashMap<String, User>, HashMap<String, Arc<RwLock<Room>>>, usize), SnapshotLoadError> {
        let header: Header = lines.expect("the header")?;
        if header.format != SNAPSHOT_FORMAT {
            return Err(SnapshotLoadError::Format { found: header.format });
        }
        if header.positions != info.positions || header.key_changes.len() != self.partitions as usize {
            return Err(SnapshotLoadError::Corrupt("positions disagree with the description".into()));
        }
        let mut users: HashMap<String, User> = HashMap::with_capacity(header.users);
        for _ in 0..header.users {
            let (user_id, user): (String, User) = lines.expect("a user")?;
            users.insert(user_id, user);
        }
        let mut hot = HashMap::new();
        let mut hot_bytes = 0usize;
        let hot_budget = self.budget.room_bytes / 10 * 9;
        for _ in 0..header.rooms {
            let line = lines.next()?.ok_or_else(|| SnapshotLoadError::Corrupt("the snapshot ends before its last room".into()))?;
            let snapshot: RoomSnapshot = serde_json::from_slice(line).map_err(|e| SnapshotLoadError::Corrupt(format!("a room: {e}")))?;
            let room = Room::from_snapshot(snapshot);
            for member in room.state.member_refs() {
                if let (user_id, Some(membership)) = (member.state_key, member.membership) {
                    let user = users.entry(user_id.to_string()).or_default();
                    if !user.forgotten.contains(&room.room_id) {
                        let membership = super::Membership::parse(membership);
                        user.rooms.insert(room.room_id.clone(), membership);
                        let stamp = header.bumps.get(&room.room_id).copied().unwrap_or(0);
                        super::recency::place_loaded(&mut user.recency, &room, user_id, membership, stamp);
                    }
                }
            }
            let bytes = room.base_bytes();
            if hot_bytes + bytes <= hot_budget {
                hot_bytes += bytes;
                hot.insert(room.room_id.clone(), Arc::new(RwLock::new(room)));
            } else {
                let place = self
                    .spill_room(line, super::cold::listed(&room))
                    .map_err(|e| SnapshotLoadError::Corrupt(format!("cannot write a cold room to the spill file: {e}")))?;
                cold.insert(room.room_id.clone(), place);
            }
        }
        Ok((header, users, hot, hot_bytes))
    }
}
