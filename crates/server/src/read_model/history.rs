//! Reading a room's older events back from the log: by chunk (the events between two entries of
//! the room's chunk index), checked against what the node knows the chunk holds, and cached under
//! a byte budget (least recently used chunk out first).
//!
//! A range read may be answered by any replica; one that lags would return fewer events than
//! the chunk holds, so a short answer is asked again of the stream leader. Entries that are not
//! timeline events (receipts) or that the room skipped (rejected, retried) are left out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use haetae_store::log::{EventLog, RangeSource};

use super::event_ids::event_id_at;
use super::room::{ChunkRef, TimelineItem};
use super::ReadModel;
use crate::entry::{Entry, Envelope};

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("cannot read the room's history from the event log: {0}")]
    Unavailable(String),
}

/// A chunk is cached under where it sits and how many events it held when read: the last chunk
/// of a room grows, and a longer read of it is a different entry.
type ChunkKey = (String, ChunkRef);

/// Chunks of old history read back from the log, least recently used out first.
pub struct ChunkCache {
    chunks: HashMap<ChunkKey, (Arc<Vec<TimelineItem>>, usize, u64)>,
    bytes: usize,
    tick: u64,
    /// The bound, bytes.
    pub budget_bytes: usize,
    pub hits: u64,
    pub misses: u64,
}

impl ChunkCache {
    pub fn new(budget_bytes: usize) -> ChunkCache {
        ChunkCache { chunks: HashMap::new(), bytes: 0, tick: 0, budget_bytes, hits: 0, misses: 0 }
    }

    fn get(&mut self, key: &ChunkKey) -> Option<Arc<Vec<TimelineItem>>> {
        self.tick += 1;
        let tick = self.tick;
        match self.chunks.get_mut(key) {
            Some((chunk, _, used)) => {
                *used = tick;
                self.hits += 1;
                Some(chunk.clone())
            }
            None => {
                self.misses += 1;
                None
            }
        }
    }

    fn put(&mut self, key: ChunkKey, chunk: Arc<Vec<TimelineItem>>) {
        let bytes: usize = chunk.iter().map(TimelineItem::bytes).sum();
        self.tick += 1;
        if let Some((_, old, _)) = self.chunks.insert(key, (chunk, bytes, self.tick)) {
            self.bytes -= old;
        }
        self.bytes += bytes;
        while self.bytes > self.budget_bytes && self.chunks.len() > 1 {
            let Some(oldest) = self.chunks.iter().min_by_key(|(_, (_, _, used))| *used).map(|(k, _)| k.clone()) else { break };
            if let Some((_, bytes, _)) = self.chunks.remove(&oldest) {
                self.bytes -= bytes;
            }
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// Window events copied per hold of a room's lock while a page is gathered.
const MAX_BATCH: usize = 128;

/// A page of timeline events.
#[derive(Debug, Default)]
pub struct Page {
    /// In the order asked for (newest first going back, oldest first going forward), as shown.
    pub items: Vec<TimelineItem>,
    /// The page stopped because it was full: more may follow.
    pub full: bool,
}

impl Page {
    /// Adds `item` if `keep` says so; true once the page is full.
    fn offer(&mut self, item: TimelineItem, limit: usize, keep: &impl Fn(&TimelineItem) -> bool) -> bool {
        if keep(&item) {
            self.items.push(item);
        }
        self.full = self.items.len() >= limit;
        self.full
    }
}

impl ReadModel {
    /// Chunk `k` of `room_id`'s timeline as stored (not redacted); None if the room has no such
    /// chunk.
    async fn chunk(&self, log: &EventLog, room_id: &str, k: usize) -> Result<Option<Arc<Vec<TimelineItem>>>, HistoryError> {
        let Some(Some((chunk, skipped))) =
            self.with_room(room_id, |room| room.chunk_ref(k).map(|c| (c.clone(), room.skipped_between(c.from, c.to))))
        else {
            return Ok(None);
        };
        let key = (room_id.to_string(), chunk.clone());
        if let Some(items) = self.chunks.lock().expect("chunk cache lock").get(&key) {
            return Ok(Some(items));
        }
        let mut items = read_range(log, room_id, &chunk, &skipped, RangeSource::AnyReplica).await?;
        if items.len() as u64 != chunk.events {
            // A replica behind the leader answered: ask the leader.
            items = read_range(log, room_id, &chunk, &skipped, RangeSource::Leader).await?;
        }
        if items.len() as u64 != chunk.events {
            return Err(HistoryError::Unavailable(format!(
                "chunk {k} of {room_id} holds {} events, expected {}",
                items.len(),
                chunk.events
            )));
        }
        let items = Arc::new(items);
        self.chunks.lock().expect("chunk cache lock").put(key, items.clone());
        Ok(Some(items))
    }

    /// Up to `limit` timeline events with `floor <= seq < before` that pass `keep`, newest first.
    pub async fn page_back(
        &self,
        log: &EventLog,
        room_id: &str,
        before: u64,
        floor: u64,
        limit: usize,
        keep: impl Fn(&TimelineItem) -> bool,
    ) -> Result<Page, HistoryError> {
        let mut page = Page::default();
        if limit == 0 || before <= floor {
            return Ok(page);
        }
        // The window newest first, a page's worth at a time (`keep` runs outside the room's
        // lock): a page costs what it shows, not the window's size.
        let mut below = before;
        let evicted_upto = loop {
            let batch_size = limit.clamp(8, MAX_BATCH);
            let Some((batch, evicted_upto)) = self.with_room(room_id, |room| {
                let batch: Vec<TimelineItem> =
                    room.window_between(floor.saturating_sub(1), below - 1).rev().take(batch_size).map(|i| room.shown(i)).collect();
                (batch, room.evicted_upto())
            }) else {
                return Ok(page);
            };
            let Some(last) = batch.last().map(|item| item.seq) else { break evicted_upto };
            for item in batch {
                if page.offer(item, limit, &keep) {
                    return Ok(page);
                }
            }
            below = last;
            if below <= floor {
                return Ok(page);
            }
        };
        // Below what the window gave (it may have lost events to eviction meanwhile).
        let upper = (below - 1).min(evicted_upto);
        if evicted_upto == 0 || upper < floor {
            return Ok(page);
        }
        let Some(mut k) = self.with_room(room_id, |room| room.chunk_of(upper)).flatten() else { return Ok(page) };
        loop {
            let Some(chunk) = self.chunk(log, room_id, k).await? else { return Ok(page) };
            let shown = self.shown_items(room_id, chunk.iter().rev().filter(|i| i.seq <= upper && i.seq >= floor));
            for item in shown {
                if page.offer(item, limit, &keep) {
                    return Ok(page);
                }
            }
            if k == 0 || chunk.first().is_none_or(|first| first.seq <= floor) {
                return Ok(page);
            }
            k -= 1;
        }
    }

    /// Where a search by time starts: the last chunk whose first event was sent at or before
    /// `ts` (strictly before with `strictly`; by `origin_server_ts`), as (its first position,
    /// the next chunk's first position), or None when no chunk starts that early. A binary
    /// search over the chunk index: one chunk read per step (cached like any other), so about
    /// log2(events / 128) reads.
    pub async fn chunk_near_ts(
        &self,
        log: &EventLog,
        room_id: &str,
        ts: u64,
        strictly: bool,
    ) -> Result<Option<(u64, Option<u64>)>, HistoryError> {
        let Some(Some(last)) = self.with_room(room_id, |room| room.chunk_of(room.last_event_seq())) else { return Ok(None) };
        let first_ts = |items: &Vec<TimelineItem>| items.first().and_then(|i| i.event["origin_server_ts"].as_u64()).unwrap_or(0);
        // Invariant: every chunk below `low` starts early enough; every chunk from `high` on
        // does not.
        let (mut low, mut high) = (0usize, last + 1);
        while low < high {
            let middle = low + (high - low) / 2;
            let Some(chunk) = self.chunk(log, room_id, middle).await? else { break };
            let first = first_ts(&chunk);
            if first < ts || (first == ts && !strictly) {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        let Some(found) = low.checked_sub(1) else { return Ok(None) };
        Ok(self.with_room(room_id, |room| {
            let start = room.chunk_ref(found)?.from;
            Some((start, room.chunk_ref(found + 1).map(|next| next.from)))
        })
        .flatten())
    }

    /// Up to `limit` timeline events with `from <= seq <= ceiling` that pass `keep`, oldest first.
    pub async fn page_forward(
        &self,
        log: &EventLog,
        room_id: &str,
        from: u64,
        ceiling: u64,
        limit: usize,
        keep: impl Fn(&TimelineItem) -> bool,
    ) -> Result<Page, HistoryError> {
        let mut page = Page::default();
        if limit == 0 || from > ceiling {
            return Ok(page);
        }
        // Everything up to `after` is offered (or is not in the page's range). Events the window
        // no longer holds come from chunks, the rest from the window a page's worth at a time;
        // if the window evicts meanwhile, the next turn reads what it lost from chunks.
        let mut after = from.saturating_sub(1);
        loop {
            let batch_size = limit.clamp(8, MAX_BATCH);
            let Some((batch, evicted_upto, first_chunk)) = self.with_room(room_id, |room| {
                let evicted_upto = room.evicted_upto();
                if after < evicted_upto {
                    (Vec::new(), evicted_upto, room.chunk_of(after + 1).unwrap_or(0))
                } else {
                    let batch: Vec<TimelineItem> =
                        room.window_between(after, ceiling).take(batch_size).map(|i| room.shown(i)).collect();
                    (batch, evicted_upto, 0)
                }
            }) else {
                return Ok(page);
            };
            if after < evicted_upto {
                let top = ceiling.min(evicted_upto);
                let mut k = first_chunk;
                while let Some(chunk) = self.chunk(log, room_id, k).await? {
                    if chunk.first().is_none_or(|first| first.seq > top) {
                        break;
                    }
                    let shown = self.shown_items(room_id, chunk.iter().filter(|i| i.seq > after && i.seq <= top));
                    for item in shown {
                        if page.offer(item, limit, &keep) {
                            return Ok(page);
                        }
                    }
                    k += 1;
                }
                if top >= ceiling {
                    return Ok(page);
                }
                after = top;
                continue;
            }
            let Some(last) = batch.last().map(|item| item.seq) else { return Ok(page) };
            for item in batch {
                if page.offer(item, limit, &keep) {
                    return Ok(page);
                }
            }
            after = last;
        }
    }

    /// The timeline event at `seq` in `room_id`, as shown; None if there is none.
    pub async fn item_at(&self, log: &EventLog, room_id: &str, seq: u64) -> Result<Option<TimelineItem>, HistoryError> {
        let Some((in_window, evicted_upto, skipped, k)) = self.with_room(room_id, |room| {
            (room.window_at(seq).map(|i| room.shown(i)), room.evicted_upto(), room.is_skipped(seq), room.chunk_of(seq))
        }) else {
            return Ok(None);
        };
        if in_window.is_some() || seq > evicted_upto || skipped {
            return Ok(in_window);
        }
        let Some(k) = k else { return Ok(None) };
        let Some(chunk) = self.chunk(log, room_id, k).await? else { return Ok(None) };
        let found = chunk.iter().find(|i| i.seq == seq);
        Ok(self.shown_items(room_id, found.into_iter()).into_iter().next())
    }

    /// The room's state as it was at `position` (a former member's view), read back from the log
    /// for the keys that changed since.
    pub async fn state_at(&self, log: &EventLog, room_id: &str, position: u64) -> Result<Vec<serde_json::Value>, HistoryError> {
        let Some((current, positions)) = self.with_room(room_id, |room| {
            let current: HashMap<u64, serde_json::Value> = room
                .state
                .iter()
                .filter_map(|event| {
                    let seq = event["event_id"].as_str().and_then(super::event_ids::position_of).map(|(_, seq)| seq)?;
                    (seq <= position).then(|| (seq, event.clone()))
                })
                .collect();
            (current, room.state_positions_at(position))
        }) else {
            return Ok(Vec::new());
        };
        let mut state = Vec::new();
        for seq in positions {
            match current.get(&seq) {
                Some(event) => state.push(event.clone()),
                None => {
                    if let Some(item) = self.item_at(log, room_id, seq).await? {
                        state.push((*item.event).clone());
                    }
                }
            }
        }
        Ok(state)
    }

    fn shown_items<'a>(&self, room_id: &str, items: impl Iterator<Item = &'a TimelineItem>) -> Vec<TimelineItem> {
        self.with_room(room_id, |room| items.map(|i| room.shown(i)).collect()).unwrap_or_default()
    }

    pub fn chunk_cache_stats(&self) -> (usize, u64, u64) {
        let cache = self.chunks.lock().expect("chunk cache lock");
        (cache.bytes(), cache.hits, cache.misses)
    }
}

/// Reads the timeline events of `room_id` in `chunk`, leaving out the positions in `skipped`.
async fn read_range(
    log: &EventLog,
    room_id: &str,
    chunk: &ChunkRef,
    skipped: &[u64],
    source: RangeSource,
) -> Result<Vec<TimelineItem>, HistoryError> {
    let mut items = Vec::new();
    let mut next = chunk.from;
    while next <= chunk.to {
        let batch = haetae_store::log::MAX_RANGE_BATCH;
        let entries = log
            .entity_range(room_id, next, chunk.to, batch, source)
            .await
            .map_err(|e| HistoryError::Unavailable(e.to_string()))?;
        let Some(last) = entries.last().map(|e| e.seq) else { break };
        for entry in &entries {
            if skipped.binary_search(&entry.seq).is_ok() {
                continue;
            }
            let Ok(envelope) = serde_json::from_slice::<Envelope>(&entry.payload) else { continue };
            if let Entry::Event { mut event, txn, prev_content, .. } = envelope.entry {
                if event.get("event_id").and_then(|v| v.as_str()).is_none() {
                    event["event_id"] = serde_json::Value::String(event_id_at(chunk.partition, entry.seq));
                }
                items.push(TimelineItem::new(entry.seq, event, prev_content, txn));
            }
        }
        if entries.len() < batch {
            break;
        }
        next = last + 1;
    }
    Ok(items)
}

/// The shared cache handle type.
pub type SharedChunkCache = Mutex<ChunkCache>;
