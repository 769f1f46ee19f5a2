//! The drill's workload: the chat population (users homed round-robin in the DCs, rooms of a few
//! members), every user sending at a steady rate and long-polling `/sync`, everything recorded
//! into a [`History`] for the checker.
//!
//! Each user is one sequential client, as a person with a phone is: it sends one message at a
//! time (retrying a send with the same txnId at the next DC when its DC stops answering) and keeps
//! one sync token that it carries to whichever DC serves it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::chat::{ChatConfig, ChatError, Population, populate};
use crate::client::Client;
use crate::drill::history::{
    ClientInfo, DcTimeline, History, Mark, Received, RoomInfo, SendRecord, SyncRecord,
    TimelineEvent,
};

#[derive(Clone, Debug)]
pub struct DrillConfig {
    /// (DC name, homeserver base URL), in DC order; user i is homed in DC i mod n.
    pub dcs: Vec<(String, String)>,
    pub users: usize,
    pub rooms: usize,
    pub room_size: usize,
    /// Messages per second over all users.
    pub rate_per_s: f64,
    /// How long one request may hang before the client tries the next DC.
    pub request_timeout: Duration,
    /// Long-poll timeout of each `/sync`, milliseconds.
    pub sync_timeout_ms: u64,
}

impl Default for DrillConfig {
    fn default() -> Self {
        DrillConfig {
            dcs: Vec::new(),
            users: 24,
            rooms: 12,
            room_size: 4,
            rate_per_s: 40.0,
            request_timeout: Duration::from_secs(3),
            sync_timeout_ms: 500,
        }
    }
}

/// Counters for the progress line.
#[derive(Default)]
pub struct Counters {
    pub acknowledged: AtomicU64,
    pub failed: AtomicU64,
    pub retried_elsewhere: AtomicU64,
    pub received: AtomicU64,
}

#[derive(Default)]
struct Recorded {
    sends: Vec<SendRecord>,
    /// Sends under way, by marker: if the drill ends before they do, they are still recorded
    /// (an unfinished send may have been stored, and must not look like a phantom).
    pending: HashMap<String, SendRecord>,
    received: Vec<Received>,
    syncs: Vec<SyncRecord>,
}

/// A workload under way.
pub struct Running {
    config: DrillConfig,
    population: Population,
    started: Instant,
    started_unix_ms: u64,
    stop_sending: Arc<AtomicBool>,
    stop_syncing: Arc<AtomicBool>,
    recorded: Arc<Mutex<Recorded>>,
    pub counters: Arc<Counters>,
    tasks: JoinSet<()>,
    marks: Vec<Mark>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Registers the users and creates the rooms (through the DCs round-robin).
pub async fn prepare(
    config: &DrillConfig,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Population, ChatError> {
    let chat = ChatConfig {
        endpoints: config.dcs.iter().map(|(_, url)| url.clone()).collect(),
        users: config.users,
        rooms: config.rooms,
        room_size: config.room_size,
        ..ChatConfig::default()
    };
    let mut population = populate(&chat, progress).await?;
    for client in &mut population.clients {
        client.request_timeout = config.request_timeout;
    }
    Ok(population)
}

impl Running {
    /// Starts every user's receiver, waits until each has its first sync token, then starts the
    /// senders. Time zero of the history is when sending starts.
    pub async fn start(config: DrillConfig, population: Population) -> Running {
        let recorded = Arc::new(Mutex::new(Recorded::default()));
        let counters = Arc::new(Counters::default());
        let stop_sending = Arc::new(AtomicBool::new(false));
        let stop_syncing = Arc::new(AtomicBool::new(false));
        let started = Instant::now() + Duration::from_secs(3600);
        let mut running = Running {
            config,
            population,
            started,
            started_unix_ms: 0,
            stop_sending,
            stop_syncing,
            recorded,
            counters,
            tasks: JoinSet::new(),
            marks: Vec::new(),
        };
        let room_index: Arc<HashMap<String, usize>> = Arc::new(
            running
                .population
                .rooms
                .iter()
                .enumerate()
                .map(|(i, (id, _))| (id.clone(), i))
                .collect(),
        );
        let dcs: Arc<Vec<(String, String)>> = Arc::new(running.config.dcs.clone());
        // Initial syncs first, so every receiver holds a token before the first send.
        let mut first_tokens = JoinSet::new();
        for (index, client) in running.population.clients.iter().enumerate() {
            let mut client = client.clone();
            first_tokens.spawn(async move {
                let token = client
                    .sync(None, 0)
                    .await
                    .ok()
                    .and_then(|r| r["next_batch"].as_str().map(str::to_string));
                (index, client, token)
            });
        }
        let mut receivers = Vec::new();
        while let Some(joined) = first_tokens.join_next().await {
            if let Ok(receiver) = joined {
                receivers.push(receiver);
            }
        }
        running.started = Instant::now();
        running.started_unix_ms = unix_ms();
        for (index, client, token) in receivers {
            running.tasks.spawn(receive(ReceiverContext {
                index,
                client,
                since: token,
                started: running.started,
                timeout_ms: running.config.sync_timeout_ms,
                stop: running.stop_syncing.clone(),
                recorded: running.recorded.clone(),
                counters: running.counters.clone(),
                room_index: room_index.clone(),
                dcs: dcs.clone(),
            }));
        }
        let users = running.population.clients.len().max(1);
        let interval = Duration::from_secs_f64(users as f64 / running.config.rate_per_s.max(0.01));
        for (index, client) in running.population.clients.iter().enumerate() {
            let rooms: Vec<usize> = running
                .population
                .rooms
                .iter()
                .enumerate()
                .filter(|(_, (_, members))| members.contains(&index))
                .map(|(r, _)| r)
                .collect();
            if rooms.is_empty() {
                continue;
            }
            // Spread the first sends over one interval so users do not send in lockstep.
            let offset = interval.mul_f64(index as f64 / users as f64);
            running.tasks.spawn(send_loop(SenderContext {
                index,
                client: client.clone(),
                rooms,
                room_ids: running
                    .population
                    .rooms
                    .iter()
                    .map(|(id, _)| id.clone())
                    .collect(),
                interval,
                first_at: running.started + offset,
                started: running.started,
                stop: running.stop_sending.clone(),
                recorded: running.recorded.clone(),
                counters: running.counters.clone(),
                dcs: dcs.clone(),
            }));
        }
        running
    }

    /// Time zero of the history (when sending started).
    pub fn started_at(&self) -> Instant {
        self.started
    }

    /// Milliseconds since sending started.
    pub fn now_ms(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * 1000.0
    }

    /// Marks an instant on the timeline (a fault, a rebuild...).
    pub fn mark(&mut self, label: impl Into<String>) -> f64 {
        let at_ms = self.now_ms();
        self.marks.push(Mark {
            at_ms,
            label: label.into(),
        });
        at_ms
    }

    /// Stops sending, lets every receiver sync at least twice more (bounded by `drain`), stops
    /// the receivers and returns what was recorded. Timelines are read separately.
    pub async fn finish(
        mut self,
        scenario: &str,
        fault_dc: Option<String>,
        drain: Duration,
    ) -> (History, Population) {
        self.stop_sending.store(true, Ordering::Relaxed);
        let stopped_ms = self.now_ms();
        let duration_ms = stopped_ms;
        // Wait for in-flight sends to end (their tasks return once the current send is done).
        let deadline = Instant::now() + drain;
        loop {
            let pending = {
                let recorded = self.recorded.lock().expect("recorder lock");
                let mut seen: HashMap<usize, usize> = HashMap::new();
                for sync in recorded
                    .syncs
                    .iter()
                    .filter(|s| s.error.is_none() && s.at_ms > stopped_ms)
                {
                    *seen.entry(sync.client).or_default() += 1;
                }
                (0..self.population.clients.len()).any(|c| seen.get(&c).copied().unwrap_or(0) < 2)
            };
            if !pending || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Senders still stuck in a request past the drain are recorded as they are.
        self.stop_syncing.store(true, Ordering::Relaxed);
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        let mut recorded = std::mem::take(&mut *self.recorded.lock().expect("recorder lock"));
        let now_ms = self.now_ms();
        for (_, mut send) in recorded.pending.drain() {
            send.end_ms = now_ms;
            recorded.sends.push(send);
        }
        recorded.sends.sort_by(|a, b| a.start_ms.total_cmp(&b.start_ms));
        let dc_of = |client: &Client| endpoint_dc(client, 0, &self.config.dcs);
        let history = History {
            scenario: scenario.to_string(),
            dcs: self
                .config
                .dcs
                .iter()
                .map(|(name, _)| name.clone())
                .collect(),
            fault_dc,
            started_unix_ms: self.started_unix_ms,
            duration_ms,
            marks: self.marks.clone(),
            clients: self
                .population
                .clients
                .iter()
                .map(|c| ClientInfo {
                    user_id: c.user_id.clone(),
                    home_dc: dc_of(c),
                })
                .collect(),
            rooms: self
                .population
                .rooms
                .iter()
                .map(|(id, members)| RoomInfo {
                    room_id: id.clone(),
                    members: members.clone(),
                    leader_dc_at_fault: None,
                })
                .collect(),
            sends: recorded.sends,
            received: recorded.received,
            syncs: recorded.syncs,
            timelines: Vec::new(),
            engine: Default::default(),
            login: None,
        };
        (history, self.population)
    }
}

struct SenderContext {
    index: usize,
    client: Client,
    rooms: Vec<usize>,
    room_ids: Vec<String>,
    interval: Duration,
    first_at: Instant,
    started: Instant,
    stop: Arc<AtomicBool>,
    recorded: Arc<Mutex<Recorded>>,
    counters: Arc<Counters>,
    dcs: Arc<Vec<(String, String)>>,
}

fn ms_since(started: Instant) -> f64 {
    Instant::now()
        .saturating_duration_since(started)
        .as_secs_f64()
        * 1000.0
}

async fn send_loop(mut ctx: SenderContext) {
    let mut next = ctx.first_at;
    let mut sequence = 0usize;
    while !ctx.stop.load(Ordering::Relaxed) {
        tokio::time::sleep_until(next.into()).await;
        if ctx.stop.load(Ordering::Relaxed) {
            break;
        }
        // A stalled send delays this user's next message, as it would on a phone; no catch-up burst.
        next = (next + ctx.interval).max(Instant::now());
        let room = ctx.rooms[sequence % ctx.rooms.len()];
        let marker = format!("{}-{sequence}", ctx.index);
        let txn_id = format!("drill-{marker}");
        sequence += 1;
        let content = json!({ "msgtype": "m.text", "body": format!("drill message {marker}"), "drill_marker": marker });
        let start_ms = ms_since(ctx.started);
        let outcome = ctx
            .client
            .send(&ctx.room_ids[room], &txn_id, &content)
            .await;
        let end_ms = ms_since(ctx.started);
        let dcs_tried: Vec<String> = ctx
            .client
            .tried
            .iter()
            .map(|&i| endpoint_dc(&ctx.client, i, &ctx.dcs))
            .collect();
        if dcs_tried.len() > 1 {
            ctx.counters
                .retried_elsewhere
                .fetch_add(1, Ordering::Relaxed);
        }
        let (event_id, error) = match outcome {
            Ok(event_id) => {
                ctx.counters.acknowledged.fetch_add(1, Ordering::Relaxed);
                (Some(event_id), None)
            }
            Err(error) => {
                ctx.counters.failed.fetch_add(1, Ordering::Relaxed);
                (None, Some(error.to_string()))
            }
        };
        ctx.recorded
            .lock()
            .expect("recorder lock")
            .sends
            .push(SendRecord {
                client: ctx.index,
                room,
                txn_id,
                marker,
                start_ms,
                end_ms,
                event_id,
                error,
                dcs_tried,
            });
    }
}

/// The DC name of a client's endpoint `i`, found by its URL.
fn endpoint_dc(client: &Client, i: usize, dcs: &[(String, String)]) -> String {
    let url = client
        .endpoints()
        .get(i)
        .map(String::as_str)
        .unwrap_or_default();
    dcs.iter()
        .find(|(_, u)| u == url)
        .map(|(name, _)| name.clone())
        .unwrap_or_default()
}

struct ReceiverContext {
    index: usize,
    client: Client,
    since: Option<String>,
    started: Instant,
    timeout_ms: u64,
    stop: Arc<AtomicBool>,
    recorded: Arc<Mutex<Recorded>>,
    counters: Arc<Counters>,
    room_index: Arc<HashMap<String, usize>>,
    dcs: Arc<Vec<(String, String)>>,
}

async fn receive(mut ctx: ReceiverContext) {
    while !ctx.stop.load(Ordering::Relaxed) {
        let outcome = ctx.client.sync(ctx.since.as_deref(), ctx.timeout_ms).await;
        let at_ms = ms_since(ctx.started);
        let dc = endpoint_dc(&ctx.client, ctx.client.endpoint_index(), &ctx.dcs);
        let failed = outcome.is_err();
        {
            let mut recorded = ctx.recorded.lock().expect("recorder lock");
            match outcome {
                Ok(response) => {
                    let mut limited = false;
                    for (room_id, joined) in
                        response["rooms"]["join"].as_object().into_iter().flatten()
                    {
                        let Some(&room) = ctx.room_index.get(room_id) else {
                            continue;
                        };
                        limited |= joined["timeline"]["limited"].as_bool().unwrap_or(false);
                        for event in joined["timeline"]["events"]
                            .as_array()
                            .into_iter()
                            .flatten()
                        {
                            if event["type"] != "m.room.message" {
                                continue;
                            }
                            ctx.counters.received.fetch_add(1, Ordering::Relaxed);
                            recorded.received.push(Received {
                                client: ctx.index,
                                room,
                                event_id: event["event_id"]
                                    .as_str()
                                    .unwrap_or_default()
                                    .to_string(),
                                marker: marker_of(event),
                                at_ms,
                                dc: dc.clone(),
                            });
                        }
                    }
                    recorded.syncs.push(SyncRecord {
                        client: ctx.index,
                        at_ms,
                        dc,
                        error: None,
                        limited,
                    });
                    if let Some(next) = response["next_batch"].as_str() {
                        ctx.since = Some(next.to_string());
                    }
                }
                Err(error) => {
                    recorded.syncs.push(SyncRecord {
                        client: ctx.index,
                        at_ms,
                        dc,
                        error: Some(error.to_string()),
                        limited: false,
                    });
                }
            }
        }
        if failed {
            // Every DC refused or was unreachable: do not spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn marker_of(event: &Value) -> Option<String> {
    event["content"]["drill_marker"]
        .as_str()
        .map(str::to_string)
}

/// Reads every room's `m.room.message` events at each DC, through that DC's node only, after
/// making sure the node has caught up with `since` (a sync token taken after the workload ended).
pub async fn read_timelines(
    dcs: &[(String, String)],
    population: &Population,
    live: &[bool],
) -> Vec<DcTimeline> {
    let mut timelines = Vec::new();
    for (d, (dc, url)) in dcs.iter().enumerate() {
        for (r, (room_id, members)) in population.rooms.iter().enumerate() {
            let mut timeline = DcTimeline {
                dc: dc.clone(),
                room: r,
                events: Vec::new(),
                error: None,
            };
            if !live.get(d).copied().unwrap_or(false) {
                timeline.error = Some("DC down".into());
                timelines.push(timeline);
                continue;
            }
            let Some(&member) = members.first() else {
                continue;
            };
            let mut client = population.clients[member].pinned(url);
            match read_room(&mut client, room_id).await {
                Ok(events) => timeline.events = events,
                Err(error) => timeline.error = Some(error),
            }
            timelines.push(timeline);
        }
    }
    timelines
}

async fn read_room(client: &mut Client, room_id: &str) -> Result<Vec<TimelineEvent>, String> {
    let mut events = Vec::new();
    let mut from: Option<String> = None;
    for _page in 0..10_000 {
        let page = client
            .messages(room_id, from.as_deref(), 500)
            .await
            .map_err(|e| e.to_string())?;
        let chunk = page["chunk"].as_array().cloned().unwrap_or_default();
        for event in &chunk {
            if event["type"] == "m.room.message" {
                events.push(TimelineEvent {
                    event_id: event["event_id"].as_str().unwrap_or_default().to_string(),
                    sender: event["sender"].as_str().unwrap_or_default().to_string(),
                    marker: marker_of(event),
                });
            }
        }
        match page["end"].as_str() {
            Some(end) if !chunk.is_empty() => from = Some(end.to_string()),
            _ => break,
        }
    }
    events.reverse();
    Ok(events)
}

/// Waits until the node at `url` has applied everything up to the newest position any live DC
/// reports, by syncing there with a token taken from another DC (a node answers a token only
/// once it has caught up with it).
pub async fn wait_caught_up(
    population: &Population,
    dcs: &[(String, String)],
    live: &[bool],
    timeout: Duration,
) -> bool {
    let Some(client) = population.clients.first() else {
        return true;
    };
    let deadline = Instant::now() + timeout;
    let mut tokens = Vec::new();
    for (d, (_, url)) in dcs.iter().enumerate() {
        if live.get(d).copied().unwrap_or(false) {
            if let Ok(response) = client.pinned(url).sync(None, 0).await {
                if let Some(token) = response["next_batch"].as_str() {
                    tokens.push(token.to_string());
                }
            }
        }
    }
    for (d, (_, url)) in dcs.iter().enumerate() {
        if !live.get(d).copied().unwrap_or(false) {
            continue;
        }
        for token in &tokens {
            loop {
                let mut pinned = client.pinned(url);
                if pinned.sync(Some(token), 0).await.is_ok() {
                    break;
                }
                if Instant::now() > deadline {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    true
}
