//! Cold rooms: a room nobody has read or written for a while leaves memory. Its state and
//! indexes are written (as the room's snapshot JSON) to the node's spill file, and read back the
//! next time anything asks for the room. The spill file is a cache like the windows: an unlinked
//! temporary file, gone when the node stops, rebuilt with the rest of the model from JetStream.
//!
//! Hot rooms' state and indexes are counted against their share of the cache budget
//! (`CacheBudget::room_bytes`); when they pass it, the least recently used rooms are frozen until
//! they fit again. A cold room costs its id and a file position in memory.
//!
//! A room is frozen only while nothing but the table holds it (no reader or writer has its
//! handle), under the table's write lock, so no change can land in a copy that is being frozen.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use super::ReadModel;
use super::room::{Room, RoomSnapshot};

/// Rooms frozen per hold of the table's write lock (readers wait at most this many rooms'
/// serialisation).
const FREEZE_BATCH: usize = 64;
/// The spill file is rewritten when it holds more than this many bytes and less than half of
/// them are live.
const SPILL_COMPACT_BYTES: u64 = 64 * 1024 * 1024;

/// A room out of memory: where its snapshot sits in the spill file.
#[derive(Clone, Copy, Debug)]
pub struct ColdRoom {
    offset: u64,
    len: u32,
    /// Published in the directory or joinable by anyone: what the directory and the user
    /// directory look for without reading every cold room back.
    listed: bool,
}

/// Every room the node knows, in memory or cold.
#[derive(Default)]
pub struct RoomTable {
    pub hot: HashMap<String, Arc<RwLock<Room>>>,
    pub cold: HashMap<String, ColdRoom>,
}

/// The spill file (created on first use).
pub struct Spill {
    dir: Option<PathBuf>,
    file: Option<File>,
    end: u64,
    live: u64,
}

impl Spill {
    pub fn new(dir: Option<PathBuf>) -> Spill {
        Spill { dir, file: None, end: 0, live: 0 }
    }

    fn open(&self) -> std::io::Result<File> {
        match &self.dir {
            Some(dir) => tempfile::tempfile_in(dir),
            None => tempfile::tempfile(),
        }
    }

    fn append(&mut self, bytes: &[u8]) -> std::io::Result<u64> {
        if self.file.is_none() {
            self.file = Some(self.open()?);
        }
        let file = self.file.as_mut().expect("spill file just opened");
        file.write_all_at(bytes, self.end)?;
        let offset = self.end;
        self.end += bytes.len() as u64;
        self.live += bytes.len() as u64;
        Ok(offset)
    }

    fn read(&self, cold: &ColdRoom) -> std::io::Result<Vec<u8>> {
        let file = self.file.as_ref().ok_or_else(|| std::io::Error::other("no spill file"))?;
        let mut bytes = vec![0u8; cold.len as usize];
        file.read_exact_at(&mut bytes, cold.offset)?;
        Ok(bytes)
    }

    fn release(&mut self, cold: &ColdRoom) {
        self.live = self.live.saturating_sub(cold.len as u64);
    }

    /// Bytes in the spill file, and how many of them belong to cold rooms.
    pub fn sizes(&self) -> (u64, u64) {
        (self.end, self.live)
    }
}

/// Whether the directories must see `room`: published, or joinable by anyone.
pub(super) fn listed(room: &Room) -> bool {
    room.published || room.state.join_rule() == "public"
}

impl ReadModel {
    /// The handle of `room_id`, reading it back into memory if it is cold.
    pub(super) fn room_handle(&self, room_id: &str) -> Option<Arc<RwLock<Room>>> {
        {
            let table = self.rooms.read().expect("rooms lock");
            if let Some(room) = table.hot.get(room_id) {
                return Some(room.clone());
            }
            if !table.cold.contains_key(room_id) {
                return None;
            }
        }
        let mut table = self.rooms.write().expect("rooms lock");
        if let Some(room) = table.hot.get(room_id) {
            return Some(room.clone());
        }
        self.thaw(&mut table, room_id)
    }

    fn thaw(&self, table: &mut RoomTable, room_id: &str) -> Option<Arc<RwLock<Room>>> {
        let cold = *table.cold.get(room_id)?;
        let mut spill = self.spill.lock().expect("spill lock");
        let read = spill.read(&cold).map_err(|e| e.to_string());
        let snapshot = read.and_then(|bytes| serde_json::from_slice::<RoomSnapshot>(&bytes).map_err(|e| e.to_string()));
        match snapshot {
            Ok(snapshot) => {
                spill.release(&cold);
                drop(spill);
                let room = Room::from_snapshot(snapshot);
                room.touch(self.tick());
                self.room_bytes.fetch_add(room.base_bytes() as i64, Ordering::Relaxed);
                table.cold.remove(room_id);
                let handle = Arc::new(RwLock::new(room));
                table.hot.insert(room_id.to_string(), handle.clone());
                Some(handle)
            }
            Err(error) => {
                // The spill file is this process's own; failing to read it back is a bug or a
                // broken disk. The room stays cold (and unanswerable) rather than wrong.
                tracing::error!(%room_id, %error, "cannot read a cold room back from the spill file");
                None
            }
        }
    }

    /// A cold room read back without making it hot (for scans over many rooms). The position was
    /// read earlier, outside the table's lock: if the file was compacted since, the bytes there
    /// are not this room's, which the id check catches (the room is then left out of the scan).
    fn peek_cold(&self, room_id: &str, cold: &ColdRoom) -> Option<Room> {
        let bytes = self.spill.lock().expect("spill lock").read(cold).ok()?;
        let room = serde_json::from_slice::<RoomSnapshot>(&bytes).ok().map(Room::from_snapshot)?;
        (room.room_id == room_id).then_some(room)
    }

    /// Runs `visit` on every room (cold ones read back one at a time, not kept) until it returns
    /// false. `listed_only`: of the cold rooms, only those published or joinable by anyone.
    pub(super) fn visit_table(&self, listed_only: bool, mut visit: impl FnMut(&Room) -> bool) {
        let (hot, cold): (Vec<Arc<RwLock<Room>>>, Vec<(String, ColdRoom)>) = {
            let table = self.rooms.read().expect("rooms lock");
            let cold = table.cold.iter().filter(|(_, c)| c.listed || !listed_only).map(|(id, c)| (id.clone(), *c)).collect();
            (table.hot.values().cloned().collect(), cold)
        };
        for room in hot {
            if !visit(&room.read().expect("room lock")) {
                return;
            }
        }
        for (room_id, cold) in cold {
            if let Some(room) = self.peek_cold(&room_id, &cold)
                && !visit(&room)
            {
                return;
            }
        }
    }

    /// Whether hot rooms' state and indexes hold more than their budget.
    pub(super) fn rooms_over_budget(&self) -> bool {
        self.room_bytes.load(Ordering::Relaxed) > self.budget.room_bytes as i64
    }

    /// Freezes the least recently used rooms until hot rooms fit nine tenths of their budget.
    pub(super) fn freeze_cold_rooms(&self) {
        if !self.rooms_over_budget() {
            return;
        }
        let target = (self.budget.room_bytes / 10 * 9) as i64;
        let mut candidates: Vec<(u64, String)> = {
            let table = self.rooms.read().expect("rooms lock");
            table.hot.iter().map(|(id, room)| (room.read().expect("room lock").last_used(), id.clone())).collect()
        };
        candidates.sort_unstable();
        for batch in candidates.chunks(FREEZE_BATCH) {
            if self.room_bytes.load(Ordering::Relaxed) <= target {
                break;
            }
            let mut table = self.rooms.write().expect("rooms lock");
            for (_, room_id) in batch {
                if self.room_bytes.load(Ordering::Relaxed) <= target {
                    break;
                }
                if let Err(error) = self.freeze(&mut table, room_id) {
                    tracing::warn!(%error, "cannot write a cold room to the spill file; keeping rooms in memory");
                    return;
                }
            }
            self.compact_spill(&mut table);
        }
    }

    /// Moves one room out of memory, if nothing but the table holds it.
    fn freeze(&self, table: &mut RoomTable, room_id: &str) -> std::io::Result<()> {
        let Some(handle) = table.hot.get(room_id) else { return Ok(()) };
        if Arc::strong_count(handle) > 1 {
            return Ok(());
        }
        let room = handle.read().expect("room lock");
        let bytes = serde_json::to_vec(&room.to_snapshot()).map_err(std::io::Error::other)?;
        let listed = listed(&room);
        let (window, base) = (room.window_bytes(), room.base_bytes());
        drop(room);
        let len = u32::try_from(bytes.len()).map_err(std::io::Error::other)?;
        let offset = self.spill.lock().expect("spill lock").append(&bytes)?;
        table.hot.remove(room_id);
        table.cold.insert(room_id.to_string(), ColdRoom { offset, len, listed });
        self.window_bytes.fetch_sub(window as i64, Ordering::Relaxed);
        self.room_bytes.fetch_sub(base as i64, Ordering::Relaxed);
        Ok(())
    }

    /// Rewrites the spill file with only the cold rooms' bytes once it is mostly dead.
    fn compact_spill(&self, table: &mut RoomTable) {
        let mut spill = self.spill.lock().expect("spill lock");
        let (end, live) = spill.sizes();
        if end < SPILL_COMPACT_BYTES || live * 2 > end {
            return;
        }
        let mut fresh = Spill::new(spill.dir.clone());
        let mut moved = HashMap::with_capacity(table.cold.len());
        for (room_id, cold) in &table.cold {
            let copied = spill.read(cold).and_then(|bytes| fresh.append(&bytes));
            match copied {
                Ok(offset) => {
                    moved.insert(room_id.clone(), ColdRoom { offset, ..*cold });
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot compact the spill file; keeping the old one");
                    return;
                }
            }
        }
        table.cold = moved;
        *spill = fresh;
    }

    /// Estimated bytes of the hot rooms' state and indexes.
    pub fn room_bytes(&self) -> usize {
        self.room_bytes.load(Ordering::Relaxed).max(0) as usize
    }

    /// Rooms in memory and cold, and the spill file's (bytes, live bytes).
    pub fn room_counts(&self) -> (usize, usize, u64, u64) {
        let (hot, cold) = {
            let table = self.rooms.read().expect("rooms lock");
            (table.hot.len(), table.cold.len())
        };
        let (end, live) = self.spill.lock().expect("spill lock").sizes();
        (hot, cold, end, live)
    }

    /// Counts what a room's state and indexes grew by (or a room new in memory).
    pub(super) fn count_room_bytes(&self, grown: isize) {
        self.room_bytes.fetch_add(grown as i64, Ordering::Relaxed);
    }

    /// What a snapshot needs of the room table, taken while the model stands still (under the
    /// snapshot gate): a copy of every hot room (at most their share of the cache budget) and
    /// where each cold room's bytes sit, in a handle of the spill file as it is now. The spill
    /// file is append-only and its compaction writes a new file, so those bytes stay as they
    /// were while the snapshot is written after the gate is released.
    pub(super) fn room_table_for_snapshot(&self) -> std::io::Result<(Vec<RoomSnapshot>, ColdRooms)> {
        let table = self.rooms.read().expect("rooms lock");
        let hot: Vec<RoomSnapshot> = table.hot.values().map(|room| room.read().expect("room lock").to_snapshot()).collect();
        let places: Vec<(u64, u32)> = table.cold.values().map(|cold| (cold.offset, cold.len)).collect();
        let file = match &self.spill.lock().expect("spill lock").file {
            Some(file) => Some(file.try_clone()?),
            None => None,
        };
        if file.is_none() && !places.is_empty() {
            return Err(std::io::Error::other("cold rooms without a spill file"));
        }
        Ok((hot, ColdRooms { file, places }))
    }

    /// Writes `bytes` (a room's snapshot JSON) to the spill file as a cold room; for loading a
    /// snapshot whose rooms do not all fit the budget.
    pub(super) fn spill_room(&self, bytes: &[u8], listed: bool) -> std::io::Result<ColdRoom> {
        let len = u32::try_from(bytes.len()).map_err(std::io::Error::other)?;
        let offset = self.spill.lock().expect("spill lock").append(bytes)?;
        Ok(ColdRoom { offset, len, listed })
    }
}

impl ReadModel {
    /// Marks spilled rooms' bytes dead (a snapshot load that did not complete).
    pub(super) fn release_spilled<'a>(&self, rooms: impl Iterator<Item = &'a ColdRoom>) {
        let mut spill = self.spill.lock().expect("spill lock");
        for cold in rooms {
            spill.release(cold);
        }
    }
}

/// The cold rooms' bytes as they were when a snapshot was taken.
pub(super) struct ColdRooms {
    file: Option<File>,
    places: Vec<(u64, u32)>,
}

impl ColdRooms {
    pub fn len(&self) -> usize {
        self.places.len()
    }

    /// Each cold room's snapshot JSON, one at a time.
    pub fn bytes(&self) -> impl Iterator<Item = std::io::Result<Vec<u8>>> + '_ {
        self.places.iter().map(|(offset, len)| {
            let file = self.file.as_ref().ok_or_else(|| std::io::Error::other("no spill file"))?;
            let mut bytes = vec![0u8; *len as usize];
            file.read_exact_at(&mut bytes, *offset)?;
            Ok(bytes)
        })
    }
}
