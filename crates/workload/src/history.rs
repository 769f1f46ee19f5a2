//! The history workload: grows a homeserver's history through the Client-Server API and measures
//! it at checkpoints, to show whether a request's cost grows with what the server keeps.
//!
//! Owns the growing (many concurrent senders, `PUT /rooms/{id}/send`), the marks it keeps while
//! growing (the first message's id, and a pagination token and event id near the start and the
//! middle of room 0), and every measurement at a checkpoint: the node's resident memory, a
//! restart until serving, incremental and initial `/sync`, `/event`, `/messages` at three depths,
//! `/context`, and the chat workload's latencies with that history underneath.
//!
//! Never starts or stops processes itself: restarting goes through [`NodeControl`], which only
//! the owner of the node (the `haetae bench history` command) can implement. Against a node it
//! does not own, the restart is reported as not measured.
//!
//! Two shapes: one room (two members, `history_visibility: joined`) growing to the largest
//! checkpoint; or many rooms of `events_per_room` messages each, filled one after another (all
//! senders in the same room or two at a time). "Events" are the messages this workload sent;
//! each room's creation state comes on top.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;

use crate::chat::{self, ChatConfig, ChatReport};
use crate::client::{Client, ClientError, encode, http_client};
use crate::setup::{self, PASSWORD, Process, WorkloadError};
use crate::stats::{Summary, summarize};

/// `/messages` page size, events (the page a client shows first).
const PAGE_LIMIT: u32 = 20;
/// `/context` events on each side of the middle event.
const CONTEXT_LIMIT: u32 = 10;
/// How long the node's resident memory may take to stop moving before it is read anyway.
const RSS_SETTLE_LIMIT: Duration = Duration::from_secs(3);
/// Memory readings within this many KiB of each other count as settled.
const RSS_SETTLE_TOLERANCE_KIB: u64 = 1024;
/// Grower user pairs in the many-rooms shape (room r ≥ 1 belongs to pair 1 + (r - 1) mod this).
const GROWER_PAIRS: usize = 16;
/// How often a progress line is printed while growing.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(2);
/// One readiness probe after a restart may wait this long for an answer (a node that has bound
/// its port but is still replaying answers once it serves).
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between readiness probes that were refused.
const PROBE_INTERVAL: Duration = Duration::from_millis(20);

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Shape {
    /// One room, two members, growing to the largest checkpoint.
    OneRoom,
    /// `rooms` rooms of `events_per_room` messages each, filled one after another.
    ManyRooms,
}

#[derive(Clone, Debug)]
pub struct HistoryConfig {
    /// The homeserver's base URL.
    pub endpoint: String,
    pub shape: Shape,
    /// Events (messages sent) to grow to; the run stops at the largest checkpoint ≤ this.
    pub max_events: u64,
    /// Many-rooms shape: rooms, and messages in each.
    pub rooms: usize,
    pub events_per_room: u64,
    /// Event counts at which to measure, ascending.
    pub checkpoints: Vec<u64>,
    /// Sends in flight at once while growing.
    pub concurrency: usize,
    /// Size of each grown message's content (its JSON), bytes.
    pub body_bytes: usize,
    /// Growing stops when this much time has passed since the run began; checkpoints not reached
    /// by then are reported as such.
    pub time_budget: Duration,
    /// Incremental `/sync`s (nothing new, `timeout=0`) per checkpoint.
    pub sync_samples: usize,
    /// Rooms of the initial-sync user, and initial syncs per checkpoint.
    pub initial_sync_rooms: usize,
    pub initial_sync_samples: usize,
    /// Requests per checkpoint for `/event`, each `/messages` page and `/context`.
    pub read_samples: usize,
    /// The chat workload run at each checkpoint (its population is created once).
    pub chat_users: usize,
    pub chat_rooms: usize,
    pub chat_concurrency: usize,
    pub chat_duration: Duration,
    /// Registrations and room creations in flight at once during setup.
    pub setup_concurrency: usize,
    /// How long a restarted node may take to serve before the run gives up.
    pub restart_limit: Duration,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            endpoint: "http://127.0.0.1:8008".into(),
            shape: Shape::OneRoom,
            max_events: 1_000_000,
            rooms: 10_000,
            events_per_room: 100,
            checkpoints: vec![1_000, 10_000, 100_000, 1_000_000],
            concurrency: 64,
            body_bytes: 100,
            time_budget: Duration::from_secs(3600),
            sync_samples: 200,
            initial_sync_rooms: 100,
            initial_sync_samples: 20,
            read_samples: 50,
            chat_users: 10,
            chat_rooms: 5,
            chat_concurrency: 10,
            chat_duration: Duration::from_secs(5),
            setup_concurrency: 16,
            restart_limit: Duration::from_secs(600),
        }
    }
}

impl Shape {
    pub fn name(self) -> &'static str {
        match self {
            Shape::OneRoom => "one-room",
            Shape::ManyRooms => "many-rooms",
        }
    }
}

impl HistoryConfig {
    /// The events the run grows to: `max_events`, capped by the rooms in the many-rooms shape.
    pub fn target_events(&self) -> u64 {
        match self.shape {
            Shape::OneRoom => self.max_events,
            Shape::ManyRooms => self.max_events.min(self.rooms as u64 * self.events_per_room),
        }
    }

    /// The checkpoints the run measures: ascending, deduplicated, none above the target.
    pub fn effective_checkpoints(&self) -> Vec<u64> {
        let target = self.target_events();
        let mut checkpoints: Vec<u64> = self.checkpoints.iter().copied().filter(|&c| c > 0 && c <= target).collect();
        checkpoints.sort_unstable();
        checkpoints.dedup();
        checkpoints
    }

    fn room_of(&self, index: u64) -> usize {
        match self.shape {
            Shape::OneRoom => 0,
            Shape::ManyRooms => (index / self.events_per_room.max(1)) as usize,
        }
    }

    /// Messages room 0 holds once the run has grown to `events`.
    fn room0_events(&self, events: u64) -> u64 {
        match self.shape {
            Shape::OneRoom => events,
            Shape::ManyRooms => events.min(self.events_per_room),
        }
    }
}

/// A restart in progress: resolves to how long the stop took, or why there is no restart.
pub type Restarting<'a> = Pin<Box<dyn Future<Output = Result<Duration, String>> + Send + 'a>>;

/// What the workload may do to the node beyond HTTP. Only the process that started the node can
/// restart it; [`Remote`] is the implementation for a node reached by URL.
pub trait NodeControl: Send {
    /// The node's process on this machine, for its memory (None: unknown). It changes on restart.
    fn process(&self) -> Option<Process>;
    /// Stops the node (SIGTERM, waiting until it exited) and starts it again; returns once the
    /// new process runs, with how long the stop took. Serving is the caller's to poll. Err with
    /// the reason when this node cannot be restarted from here.
    fn restart(&mut self) -> Restarting<'_>;
}

/// A node this process did not start: memory only with a known PID, no restart.
pub struct Remote {
    pub process: Option<Process>,
}

impl NodeControl for Remote {
    fn process(&self) -> Option<Process> {
        self.process
    }

    fn restart(&mut self) -> Restarting<'_> {
        Box::pin(async { Err("not measured: the bench did not start this node".to_string()) })
    }
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Restart {
    /// From SIGTERM until the old process exited, seconds.
    pub stop_s: f64,
    /// From starting the new process until `/versions` answered, seconds.
    pub start_to_versions_s: f64,
    /// From starting the new process until `/versions` answered and the measuring user's sync
    /// returned, seconds.
    pub start_to_serving_s: f64,
    /// From SIGTERM until serving again, seconds.
    pub total_s: f64,
    /// Events in the history (grown messages, rooms' creation state and the setup's events, as
    /// far as this workload made them) over the start-to-serving time.
    pub replay_events_per_s: f64,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Checkpoint {
    /// The checkpoint: events (messages) grown.
    pub events: u64,
    pub reached: bool,
    /// Why it was not reached, if it was not.
    pub not_reached: Option<String>,
    /// Messages acknowledged when measuring (= `events` when reached).
    pub events_acknowledged: u64,
    /// Events this workload put into the server, creation state and setup included.
    pub history_events: u64,
    pub rooms_grown: usize,
    /// Growing from the previous checkpoint to this one.
    pub grow_s: f64,
    pub grow_events_per_s: f64,
    /// The node's resident memory after growing, and after the restart, KiB.
    pub rss_kib: Option<u64>,
    pub rss_settled: bool,
    pub rss_after_restart_kib: Option<u64>,
    pub restart: Option<Restart>,
    /// Why there is no restart figure, if there is none.
    pub restart_note: Option<String>,
    pub incremental_sync: Option<Summary>,
    pub initial_sync: Option<Summary>,
    pub event_first: Option<Summary>,
    pub messages_start: Option<Summary>,
    pub messages_middle: Option<Summary>,
    pub messages_end: Option<Summary>,
    pub context_middle: Option<Summary>,
    pub chat: Option<ChatReport>,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct HistoryReport {
    pub endpoint: String,
    pub shape: Option<Shape>,
    pub concurrency: usize,
    pub body_bytes: usize,
    /// Rooms of the user whose initial `/sync` is measured.
    pub initial_sync_rooms: usize,
    /// Many-rooms shape: messages per room.
    pub events_per_room: u64,
    /// Messages whose send finished (acknowledged or failed after the client's retries).
    pub events_sent: u64,
    pub events_acknowledged: u64,
    pub events_failed: u64,
    pub first_failure: Option<String>,
    pub checkpoints: Vec<Checkpoint>,
    /// Each figure at the largest reached checkpoint over the same figure at the first.
    pub ratios: BTreeMap<String, f64>,
    pub setup_s: f64,
    pub total_s: f64,
}

/// A position in room 0 remembered while growing.
#[derive(Clone, Debug)]
struct Mark {
    event_id: String,
    /// A `/messages` token just after the event (the room's end right after its send).
    token: String,
}

/// The users and rooms the growing goes through.
struct Growth {
    /// Room owners: pair 0 (the measuring user and a partner) owns room 0; in the many-rooms
    /// shape, the grower pairs share the other rooms.
    pairs: Vec<(Client, Client)>,
    /// Room ids, created on first use.
    rooms: Vec<tokio::sync::OnceCell<String>>,
    run: String,
    body: String,
    /// Message indexes at which to remember a mark, and the marks taken.
    mark_at: Vec<u64>,
    marks: Mutex<BTreeMap<u64, Mark>>,
    /// Messages still to send before the current checkpoint (a failed send gives its slot back).
    budget: AtomicI64,
    next_index: AtomicU64,
    sent: AtomicU64,
    acknowledged: AtomicU64,
    failed: AtomicU64,
    first_failure: Mutex<Option<String>>,
    /// Creation-state events of the rooms created so far.
    state_events: AtomicU64,
}

impl Growth {
    fn pair_of(&self, room: usize) -> usize {
        if room == 0 || self.pairs.len() == 1 { 0 } else { 1 + (room - 1) % (self.pairs.len() - 1) }
    }

    /// Room `room`'s id, creating the room (owner's preset, `history_visibility: joined`, the
    /// partner invited and joined) when it does not exist yet.
    async fn room(&self, room: usize) -> Result<String, ClientError> {
        let cell = &self.rooms[room];
        let id = cell
            .get_or_try_init(|| async {
                let (owner, partner) = &self.pairs[self.pair_of(room)];
                let (mut owner, mut partner) = (owner.clone(), partner.clone());
                let body = json!({
                    "preset": "private_chat",
                    "name": format!("history {} room {room}", self.run),
                    "invite": [partner.user_id],
                    "initial_state": [{ "type": "m.room.history_visibility", "state_key": "", "content": { "history_visibility": "joined" } }],
                });
                let created = owner.request("POST", "/_matrix/client/v3/createRoom", Some(&body), None).await?;
                let id = created["room_id"].as_str().unwrap_or_default().to_string();
                partner.join(&id).await?;
                // create, owner's member, power levels, join rules, history visibility, guest
                // access, name, the partner's invite and join: counted as the room's state.
                self.state_events.fetch_add(9, Ordering::Relaxed);
                Ok::<String, ClientError>(id)
            })
            .await?;
        Ok(id.clone())
    }

    /// Takes one message slot of the current checkpoint; false when none is left.
    fn take_slot(&self) -> bool {
        self.budget.fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| (left > 0).then_some(left - 1)).is_ok()
    }

    /// One sender: sends messages while the checkpoint has slots left.
    async fn send_loop(self: Arc<Self>, config: Arc<HistoryConfig>) {
        while self.take_slot() {
            let index = self.next_index.fetch_add(1, Ordering::Relaxed);
            let room = config.room_of(index).min(self.rooms.len() - 1);
            let outcome = self.send_one(room, index).await;
            self.sent.fetch_add(1, Ordering::Relaxed);
            match outcome {
                Ok(()) => {
                    self.acknowledged.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => {
                    self.failed.fetch_add(1, Ordering::Relaxed);
                    self.first_failure.lock().expect("failure lock").get_or_insert_with(|| error.to_string());
                    self.budget.fetch_add(1, Ordering::AcqRel);
                }
            }
        }
    }

    async fn send_one(&self, room: usize, index: u64) -> Result<(), ClientError> {
        let room_id = self.room(room).await?;
        let (owner, partner) = &self.pairs[self.pair_of(room)];
        let mut sender = if index.is_multiple_of(2) { owner.clone() } else { partner.clone() };
        let content = json!({ "msgtype": "m.text", "body": self.body });
        let event_id = sender.send(&room_id, &format!("h{}-{index}", self.run), &content).await?;
        if room == 0 && self.mark_at.binary_search(&index).is_ok() {
            // The room's end right now: a token from which a backwards page starts at (about)
            // this event, whatever the server's token format.
            let page = sender.messages(&room_id, None, 1).await?;
            let token = page["start"].as_str().unwrap_or_default().to_string();
            self.marks.lock().expect("marks lock").insert(index, Mark { event_id, token });
        }
        Ok(())
    }
}

fn summary_of(samples: &mut [f64]) -> Option<Summary> {
    (!samples.is_empty()).then(|| summarize(samples))
}

/// Times `count` sequential requests `GET path` as `client`; None when any failed (the first
/// error is reported through `progress`).
async fn time_gets(client: &mut Client, path: &str, count: usize, what: &str, progress: &(dyn Fn(&str) + Sync)) -> Option<Summary> {
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let begun = Instant::now();
        if let Err(error) = client.request("GET", path, None, Some(Duration::from_secs(120))).await {
            progress(&format!("{what} failed: {error}"));
            return None;
        }
        samples.push(begun.elapsed().as_secs_f64() * 1000.0);
    }
    summary_of(&mut samples)
}

/// Polls until the node serves again: `/versions` answers, then the measuring user's sync
/// returns. Returns (time to versions, time to serving), both from `started`.
async fn wait_serving(http: &reqwest::Client, user: &Client, since: &str, started: Instant, limit: Duration) -> Result<(f64, f64), String> {
    let deadline = started + limit;
    let endpoint = user.endpoint().to_string();
    let probe = |request: reqwest::RequestBuilder| async move {
        let remaining = deadline.saturating_duration_since(Instant::now());
        request.timeout(PROBE_TIMEOUT.min(remaining).max(Duration::from_millis(1))).send().await.is_ok_and(|r| r.status().is_success())
    };
    while !probe(http.get(format!("{endpoint}/_matrix/client/versions"))).await {
        if Instant::now() >= deadline {
            return Err(format!("the restarted node did not answer /versions within {} s", limit.as_secs()));
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
    let versions_s = started.elapsed().as_secs_f64();
    let sync = format!("{endpoint}/_matrix/client/v3/sync?timeout=0&since={}", encode(since));
    while !probe(http.get(&sync).bearer_auth(&user.access_token)).await {
        if Instant::now() >= deadline {
            return Err(format!("the restarted node answered /versions but not the measuring user's /sync within {} s", limit.as_secs()));
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
    Ok((versions_s, started.elapsed().as_secs_f64()))
}

/// Restarts the node and waits until it serves: Ok(Ok((stop, start to versions, start to
/// serving))), or Ok(Err(why)) when this node cannot be restarted from here.
async fn restart_until_serving(
    node: &mut dyn NodeControl,
    http: &reqwest::Client,
    user: &Client,
    since: &str,
    limit: Duration,
) -> Result<Result<(Duration, f64, f64), String>, WorkloadError> {
    match node.restart().await {
        Ok(stop) => {
            let begun = Instant::now();
            let (versions_s, serving_s) = wait_serving(http, user, since, begun, limit).await.map_err(WorkloadError::Invalid)?;
            Ok(Ok((stop, versions_s, serving_s)))
        }
        Err(reason) => Ok(Err(reason)),
    }
}

/// Creates the initial-sync user and its rooms (each a private room with a name: its creation
/// state only).
async fn initial_sync_user(config: &HistoryConfig, run: &str, progress: &(dyn Fn(&str) + Sync)) -> Result<Client, WorkloadError> {
    let user = Client::register(http_client(), vec![config.endpoint.clone()], &format!("hist_{run}_isync"), PASSWORD).await?;
    progress(&format!("creating the initial-sync user's {} rooms", config.initial_sync_rooms));
    let mut creations = futures::stream::iter(0..config.initial_sync_rooms)
        .map(|r| {
            let mut user = user.clone();
            async move {
                let body = json!({ "preset": "private_chat", "name": format!("initial-sync room {r}") });
                user.request("POST", "/_matrix/client/v3/createRoom", Some(&body), None).await
            }
        })
        .buffer_unordered(config.setup_concurrency.max(1));
    while let Some(created) = creations.next().await {
        created?;
    }
    drop(creations);
    Ok(user)
}

/// Grows the history and measures it at every checkpoint. `node` restarts the node (when this
/// process owns it) and names its process.
pub async fn run(config: &HistoryConfig, node: &mut dyn NodeControl, progress: &(dyn Fn(&str) + Sync)) -> Result<HistoryReport, WorkloadError> {
    let checkpoints = config.effective_checkpoints();
    if checkpoints.is_empty() {
        return Err(WorkloadError::Invalid(format!("no checkpoint is ≤ the {} events the run grows to", config.target_events())));
    }
    if config.concurrency == 0 || config.events_per_room == 0 || config.rooms == 0 {
        return Err(WorkloadError::Invalid("concurrency, rooms and events per room must be at least 1".into()));
    }
    let started = Instant::now();
    let budget_deadline = started + config.time_budget;
    let run = setup::run_id();
    let http = http_client();
    let endpoints = vec![config.endpoint.clone()];

    // Users: pair 0 (the measuring user and its partner), grower pairs for many rooms.
    let pairs_wanted = match config.shape {
        Shape::OneRoom => 1,
        Shape::ManyRooms => 1 + GROWER_PAIRS.min(config.rooms.saturating_sub(1)),
    };
    let users = setup::register_many(&http, &endpoints, &format!("hist_{run}"), pairs_wanted * 2, config.setup_concurrency, progress).await?;
    let pairs: Vec<(Client, Client)> = users.chunks(2).map(|pair| (pair[0].clone(), pair[1].clone())).collect();
    let measuring = pairs[0].0.clone();
    let isync_user = initial_sync_user(config, &run, progress).await?;
    let chat_config = ChatConfig {
        endpoints: endpoints.clone(),
        users: config.chat_users,
        rooms: config.chat_rooms,
        room_size: 2.min(config.chat_users),
        concurrency: config.chat_concurrency,
        rate_per_s: None,
        duration: config.chat_duration,
        body_bytes: config.body_bytes,
        ..ChatConfig::default()
    };
    // Events the setup made: the initial-sync rooms' creation state (about seven per room).
    // Grows with each checkpoint's chat (its rooms' creation state and its messages).
    let mut other_events = config.initial_sync_rooms as u64 * 7;

    let room_count = match config.shape {
        Shape::OneRoom => 1,
        Shape::ManyRooms => config.rooms,
    };
    let start_mark = (PAGE_LIMIT as u64 - 1).min(config.room0_events(checkpoints[0]).saturating_sub(1));
    let mut mark_at: Vec<u64> = vec![0, start_mark];
    mark_at.extend(checkpoints.iter().map(|&c| config.room0_events(c) / 2));
    mark_at.sort_unstable();
    mark_at.dedup();
    let growth = Arc::new(Growth {
        pairs,
        rooms: (0..room_count).map(|_| tokio::sync::OnceCell::new()).collect(),
        run: run.clone(),
        // `{"msgtype":"m.text","body":""}` is 30 bytes of the content.
        body: "x".repeat(config.body_bytes.saturating_sub(30).max(1)),
        mark_at,
        marks: Mutex::new(BTreeMap::new()),
        budget: AtomicI64::new(0),
        next_index: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        acknowledged: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        first_failure: Mutex::new(None),
        state_events: AtomicU64::new(0),
    });
    let room0 = growth.room(0).await?;
    // Registering hashes passwords, and the memory that takes would count against the first
    // checkpoint: a node this process owns starts growing freshly restarted.
    let mut user = measuring.clone();
    let since = setup::current_since(&mut user).await?;
    if restart_until_serving(node, &http, &user, &since, config.restart_limit).await?.is_ok() {
        progress("restarted the node after setup, so that setup's memory does not count");
    }
    let setup_s = started.elapsed().as_secs_f64();
    progress(&format!("setup done in {setup_s:.1} s; growing to {} events ({}), checkpoints {checkpoints:?}", checkpoints[checkpoints.len() - 1], config.shape.name()));

    let config_shared = Arc::new(config.clone());
    let mut report = HistoryReport {
        endpoint: config.endpoint.clone(),
        shape: Some(config.shape),
        concurrency: config.concurrency,
        body_bytes: config.body_bytes,
        initial_sync_rooms: config.initial_sync_rooms,
        events_per_room: config.events_per_room,
        setup_s,
        ..HistoryReport::default()
    };
    let mut out_of_time = false;
    for &target in &checkpoints {
        let mut checkpoint = Checkpoint { events: target, ..Checkpoint::default() };
        if out_of_time {
            checkpoint.not_reached = Some("time budget spent".into());
            checkpoint.events_acknowledged = growth.acknowledged.load(Ordering::Relaxed);
            report.checkpoints.push(checkpoint);
            continue;
        }
        // Grow until `target` messages are acknowledged, or the time budget is spent.
        let grow_started = Instant::now();
        let acknowledged_before = growth.acknowledged.load(Ordering::Relaxed);
        while growth.acknowledged.load(Ordering::Relaxed) < target {
            let missing = target - growth.acknowledged.load(Ordering::Relaxed);
            growth.budget.store(missing as i64, Ordering::Release);
            let senders: Vec<_> = (0..config.concurrency).map(|_| tokio::spawn(growth.clone().send_loop(config_shared.clone()))).collect();
            let mut all_done = std::pin::pin!(futures::future::join_all(senders));
            let mut last_line = Instant::now();
            loop {
                tokio::select! {
                    _ = &mut all_done => break,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
                if Instant::now() >= budget_deadline {
                    // Let the senders finish what they have in flight, take nothing new.
                    growth.budget.store(0, Ordering::Release);
                    out_of_time = true;
                }
                if last_line.elapsed() >= PROGRESS_INTERVAL {
                    last_line = Instant::now();
                    let acknowledged = growth.acknowledged.load(Ordering::Relaxed);
                    let rate = (acknowledged - acknowledged_before) as f64 / grow_started.elapsed().as_secs_f64().max(1e-9);
                    let last = checkpoints[checkpoints.len() - 1];
                    let eta = |to: u64| if rate > 0.0 { format!("{:.0} s", to.saturating_sub(acknowledged) as f64 / rate) } else { "?".into() };
                    let etas = if target == last { format!("ETA {}", eta(last)) } else { format!("ETA {target}: {}, {last}: {}", eta(target), eta(last)) };
                    progress(&format!(
                        "{acknowledged}/{last} events acknowledged, {rate:.0}/s, {} failed; {etas} (at this rate); {:.0} s of the {} s budget used",
                        growth.failed.load(Ordering::Relaxed),
                        started.elapsed().as_secs_f64(),
                        config.time_budget.as_secs()
                    ));
                }
            }
            if out_of_time {
                break;
            }
            let failed = growth.failed.load(Ordering::Relaxed);
            if failed > target / 10 + 100 {
                let first = growth.first_failure.lock().expect("failure lock").clone().unwrap_or_default();
                return Err(WorkloadError::Invalid(format!("{failed} sends failed while growing; the first: {first}")));
            }
        }
        let acknowledged = growth.acknowledged.load(Ordering::Relaxed);
        checkpoint.events_acknowledged = acknowledged;
        checkpoint.grow_s = grow_started.elapsed().as_secs_f64();
        checkpoint.grow_events_per_s = (acknowledged - acknowledged_before) as f64 / checkpoint.grow_s.max(1e-9);
        checkpoint.rooms_grown = growth.rooms.iter().filter(|cell| cell.initialized()).count();
        checkpoint.history_events = acknowledged + growth.state_events.load(Ordering::Relaxed) + other_events;
        if acknowledged < target {
            checkpoint.not_reached = Some(format!("time budget spent at {acknowledged} events"));
            report.checkpoints.push(checkpoint);
            continue;
        }
        checkpoint.reached = true;
        progress(&format!("checkpoint {target}: grown in {:.1} s ({:.0} events/s); measuring", checkpoint.grow_s, checkpoint.grow_events_per_s));
        let marks = growth.marks.lock().expect("marks lock").clone();
        measure(config, &mut checkpoint, node, &http, &measuring, &isync_user, &room0, &marks, &chat_config, progress).await?;
        other_events += chat_events(&chat_config, checkpoint.chat.as_ref());
        report.checkpoints.push(checkpoint);
    }
    report.events_sent = growth.sent.load(Ordering::Relaxed);
    report.events_acknowledged = growth.acknowledged.load(Ordering::Relaxed);
    report.events_failed = growth.failed.load(Ordering::Relaxed);
    report.first_failure = growth.first_failure.lock().expect("failure lock").clone();
    report.ratios = ratios(&report.checkpoints);
    report.total_s = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Every figure of one checkpoint, in an order that keeps them apart: memory first (nothing
/// else running), then the reads, the chat workload, and the restart last (so the reads never
/// measure a node that has just started, and the next growth starts on the restarted node).
#[allow(clippy::too_many_arguments)]
async fn measure(
    config: &HistoryConfig,
    checkpoint: &mut Checkpoint,
    node: &mut dyn NodeControl,
    http: &reqwest::Client,
    measuring: &Client,
    isync_user: &Client,
    room0: &str,
    marks: &BTreeMap<u64, Mark>,
    chat_config: &ChatConfig,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<(), WorkloadError> {
    if let Some(process) = node.process()
        && let Some((rss, settled)) = process.settled_rss_kib(RSS_SETTLE_TOLERANCE_KIB, RSS_SETTLE_LIMIT).await
    {
        checkpoint.rss_kib = Some(rss);
        checkpoint.rss_settled = settled;
    }
    let mut user = measuring.clone();
    let since = setup::current_since(&mut user).await?;
    let sync_path = format!("/_matrix/client/v3/sync?timeout=0&since={}", encode(&since));
    checkpoint.incremental_sync = time_gets(&mut user, &sync_path, config.sync_samples, "incremental /sync", progress).await;
    let mut isync = isync_user.clone();
    checkpoint.initial_sync = time_gets(&mut isync, "/_matrix/client/v3/sync", config.initial_sync_samples, "initial /sync", progress).await;

    let room = encode(room0);
    let room0_events = config.room0_events(checkpoint.events);
    let first = marks.get(&0);
    let start = marks.range(..PAGE_LIMIT as u64).next_back().map(|(_, mark)| mark);
    let middle = marks.get(&(room0_events / 2));
    let samples = config.read_samples;
    if let Some(first) = first {
        let path = format!("/_matrix/client/v3/rooms/{room}/event/{}", encode(&first.event_id));
        checkpoint.event_first = time_gets(&mut user, &path, samples, "/event", progress).await;
    }
    let page = |from: Option<&Mark>| {
        let mut path = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit={PAGE_LIMIT}");
        if let Some(mark) = from {
            path.push_str(&format!("&from={}", encode(&mark.token)));
        }
        path
    };
    if let Some(start) = start {
        checkpoint.messages_start = time_gets(&mut user, &page(Some(start)), samples, "/messages at the start", progress).await;
    }
    if let Some(middle) = middle {
        checkpoint.messages_middle = time_gets(&mut user, &page(Some(middle)), samples, "/messages in the middle", progress).await;
        let path = format!("/_matrix/client/v3/rooms/{room}/context/{}?limit={CONTEXT_LIMIT}", encode(&middle.event_id));
        checkpoint.context_middle = time_gets(&mut user, &path, samples, "/context", progress).await;
    }
    checkpoint.messages_end = time_gets(&mut user, &page(None), samples, "/messages at the end", progress).await;

    // A fresh population each time: the chat workload's txn ids repeat from run to run, and a
    // server answers a repeated txn id from what it already stored, without a new event.
    let chat_progress = |line: &str| progress(&format!("chat: {line}"));
    let population = chat::populate(chat_config, &chat_progress).await.map_err(|e| WorkloadError::Invalid(e.to_string()))?;
    progress(&format!("chat workload for {} s with this history underneath", config.chat_duration.as_secs_f64()));
    checkpoint.chat = Some(chat::run(chat_config, &population, &chat_progress).await);

    // The chat's events are history too, from here on.
    let since = setup::current_since(&mut user).await?;
    match restart_until_serving(node, http, &user, &since, config.restart_limit).await? {
        Ok((stop, versions_s, serving_s)) => {
            let history = checkpoint.history_events + chat_events(chat_config, checkpoint.chat.as_ref());
            let restart = Restart {
                stop_s: stop.as_secs_f64(),
                start_to_versions_s: versions_s,
                start_to_serving_s: serving_s,
                total_s: stop.as_secs_f64() + serving_s,
                replay_events_per_s: history as f64 / serving_s.max(1e-9),
            };
            progress(&format!("restarted: stopped in {:.2} s, serving {:.2} s after start", restart.stop_s, restart.start_to_serving_s));
            checkpoint.restart = Some(restart);
            if let Some(process) = node.process() {
                checkpoint.rss_after_restart_kib = process.settled_rss_kib(RSS_SETTLE_TOLERANCE_KIB, RSS_SETTLE_LIMIT).await.map(|(rss, _)| rss);
            }
        }
        Err(reason) => checkpoint.restart_note = Some(reason),
    }
    Ok(())
}

/// Events one chat run added: its rooms' creation state (private, named, one invite and join
/// each) and its acknowledged messages.
fn chat_events(chat_config: &ChatConfig, chat: Option<&ChatReport>) -> u64 {
    chat_config.rooms as u64 * 9 + chat.map_or(0, |chat| chat.acknowledged)
}

/// The figures compared between checkpoints, by name, as numbers.
pub fn figures(checkpoint: &Checkpoint) -> Vec<(&'static str, Option<f64>)> {
    let p50 = |s: &Option<Summary>| s.as_ref().map(|s| s.p50_ms);
    let p99 = |s: &Option<Summary>| s.as_ref().map(|s| s.p99_ms);
    let chat = checkpoint.chat.as_ref();
    vec![
        ("rss_mib", checkpoint.rss_kib.map(|kib| kib as f64 / 1024.0)),
        ("restart_s", checkpoint.restart.as_ref().map(|r| r.total_s)),
        ("replay_events_per_s", checkpoint.restart.as_ref().map(|r| r.replay_events_per_s)),
        ("incremental_sync_p50_ms", p50(&checkpoint.incremental_sync)),
        ("incremental_sync_p99_ms", p99(&checkpoint.incremental_sync)),
        ("initial_sync_p50_ms", p50(&checkpoint.initial_sync)),
        ("event_first_p50_ms", p50(&checkpoint.event_first)),
        ("messages_start_p50_ms", p50(&checkpoint.messages_start)),
        ("messages_middle_p50_ms", p50(&checkpoint.messages_middle)),
        ("messages_end_p50_ms", p50(&checkpoint.messages_end)),
        ("context_middle_p50_ms", p50(&checkpoint.context_middle)),
        ("chat_send_p50_ms", chat.map(|c| c.send_latency.p50_ms)),
        ("chat_send_p99_ms", chat.map(|c| c.send_latency.p99_ms)),
        ("chat_delivery_p50_ms", chat.map(|c| c.delivery_latency.p50_ms)),
        ("chat_delivery_p99_ms", chat.map(|c| c.delivery_latency.p99_ms)),
    ]
}

/// Each figure at the largest reached checkpoint over the same figure at the first (only when
/// two checkpoints were reached and both have the figure).
pub fn ratios(checkpoints: &[Checkpoint]) -> BTreeMap<String, f64> {
    let reached: Vec<&Checkpoint> = checkpoints.iter().filter(|c| c.reached).collect();
    let (Some(first), Some(last)) = (reached.first(), reached.last()) else { return BTreeMap::new() };
    if reached.len() < 2 {
        return BTreeMap::new();
    }
    figures(first)
        .into_iter()
        .zip(figures(last))
        .filter_map(|((name, a), (_, b))| match (a, b) {
            (Some(a), Some(b)) if a > 0.0 => Some((name.to_string(), b / a)),
            _ => None,
        })
        .collect()
}

/// The Markdown table: a row per checkpoint, then the ratio of the last reached to the first.
pub fn markdown(report: &HistoryReport) -> String {
    let mut out = String::new();
    out.push_str(&format!("| events | grow events/s | node RSS MiB | restart until serving s | replay events/s | incremental /sync p50 ms | incremental /sync p99 ms | initial /sync ({} rooms) p50 ms | /event first p50 ms | /messages start p50 ms | /messages middle p50 ms | /messages end p50 ms | /context middle p50 ms | chat send p50 ms | chat send p99 ms | chat delivery p50 ms | chat delivery p99 ms |\n", report.initial_sync_rooms));
    out.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let columns = figures(&Checkpoint::default()).len();
    for checkpoint in &report.checkpoints {
        if !checkpoint.reached {
            let why = checkpoint.not_reached.as_deref().unwrap_or("not reached");
            out.push_str(&format!("| {} | not reached ({why}) |{}\n", thousands(checkpoint.events), " |".repeat(columns)));
            continue;
        }
        let cells: Vec<String> = figures(checkpoint)
            .into_iter()
            .map(|(name, value)| match value {
                None if name.starts_with("restart") || name.starts_with("replay") => "not measured".into(),
                None => "unknown".into(),
                Some(v) if name == "replay_events_per_s" => format!("{v:.0}"),
                Some(v) if name == "rss_mib" => format!("{v:.0}"),
                Some(v) if v >= 100.0 => format!("{v:.0}"),
                Some(v) => format!("{v:.2}"),
            })
            .collect();
        out.push_str(&format!("| {} | {:.0} | {} |\n", thousands(checkpoint.events), checkpoint.grow_events_per_s, cells.join(" | ")));
    }
    let reached: Vec<&Checkpoint> = report.checkpoints.iter().filter(|c| c.reached).collect();
    if let (Some(first), Some(last)) = (reached.first(), reached.last())
        && reached.len() >= 2
    {
        let cells: Vec<String> = figures(first)
            .into_iter()
            .map(|(name, _)| report.ratios.get(name).map_or("–".into(), |r| format!("{r:.2}×")))
            .collect();
        out.push_str(&format!(
            "| ratio {} / {} | – | {} |\n",
            thousands(last.events),
            thousands(first.events),
            cells.join(" | ")
        ));
    }
    out
}

/// 1000000 → "1,000,000".
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_stop_at_the_largest_within_the_target() {
        let config = HistoryConfig { max_events: 50_000, checkpoints: vec![100_000, 1_000, 10_000, 1_000], ..HistoryConfig::default() };
        assert_eq!(config.effective_checkpoints(), vec![1_000, 10_000]);
        let many = HistoryConfig { shape: Shape::ManyRooms, rooms: 20, events_per_room: 100, max_events: 1_000_000, checkpoints: vec![200, 2000, 5000], ..HistoryConfig::default() };
        assert_eq!(many.target_events(), 2000);
        assert_eq!(many.effective_checkpoints(), vec![200, 2000]);
        assert_eq!(many.room_of(199), 1);
        assert_eq!(many.room0_events(2000), 100);
    }

    #[test]
    fn numbers_get_thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_000_000), "1,000,000");
    }

    #[test]
    fn ratios_compare_the_last_reached_checkpoint_with_the_first() {
        let at = |events, p50| Checkpoint {
            events,
            reached: true,
            incremental_sync: Some(Summary { count: 1, p50_ms: p50, p99_ms: p50, max_ms: p50 }),
            ..Checkpoint::default()
        };
        let unreached = Checkpoint { events: 1_000_000, not_reached: Some("time budget spent".into()), ..Checkpoint::default() };
        let checkpoints = vec![at(1000, 2.0), at(10_000, 3.0), at(100_000, 5.0), unreached];
        let ratios = ratios(&checkpoints);
        assert_eq!(ratios.get("incremental_sync_p50_ms"), Some(&2.5));
        assert!(!ratios.contains_key("rss_mib"));
        let table = markdown(&HistoryReport { checkpoints, ratios, ..HistoryReport::default() });
        assert_eq!(table.lines().count(), 2 + 4 + 1, "{table}");
        assert!(table.contains("| 1,000,000 | not reached (time budget spent) |"), "{table}");
        assert!(table.contains("| ratio 100,000 / 1,000 |"), "{table}");
        let columns = |line: &str| line.matches('|').count();
        let header = columns(table.lines().next().unwrap());
        assert!(table.lines().all(|line| columns(line) == header), "{table}");
    }
}

/// What [`grow`] did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Grown {
    pub events_acknowledged: u64,
    pub events_failed: u64,
    pub rooms: usize,
    pub seconds: f64,
}

/// Grows `events` messages of history (many-rooms shape: rooms of `events_per_room` messages,
/// filled one after another, owned by grower pairs homed round-robin in `endpoints`) and
/// measures nothing: history for another workload to run on top of, such as a drill.
pub async fn grow(
    endpoints: &[String],
    events: u64,
    events_per_room: u64,
    concurrency: usize,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Grown, WorkloadError> {
    if endpoints.is_empty() || events_per_room == 0 || concurrency == 0 {
        return Err(WorkloadError::Invalid("growing history needs an endpoint, rooms of at least one message and a sender".into()));
    }
    let started = Instant::now();
    let config = HistoryConfig {
        endpoint: endpoints[0].clone(),
        shape: Shape::ManyRooms,
        max_events: events,
        rooms: events.div_ceil(events_per_room).max(1) as usize,
        events_per_room,
        concurrency,
        ..HistoryConfig::default()
    };
    let run = setup::run_id();
    let http = http_client();
    let pairs = 1 + GROWER_PAIRS.min(config.rooms);
    let users = setup::register_many(&http, endpoints, &format!("grow_{run}"), pairs * 2, config.setup_concurrency, progress).await?;
    let growth = Arc::new(Growth {
        pairs: users.chunks(2).map(|pair| (pair[0].clone(), pair[1].clone())).collect(),
        rooms: (0..config.rooms).map(|_| tokio::sync::OnceCell::new()).collect(),
        run,
        body: "x".repeat(config.body_bytes.saturating_sub(30).max(1)),
        mark_at: Vec::new(),
        marks: Mutex::new(BTreeMap::new()),
        budget: AtomicI64::new(events as i64),
        next_index: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        acknowledged: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        first_failure: Mutex::new(None),
        state_events: AtomicU64::new(0),
    });
    let config = Arc::new(config);
    let senders: Vec<_> = (0..concurrency).map(|_| tokio::spawn(growth.clone().send_loop(config.clone()))).collect();
    let mut all_done = std::pin::pin!(futures::future::join_all(senders));
    loop {
        tokio::select! {
            _ = &mut all_done => break,
            _ = tokio::time::sleep(PROGRESS_INTERVAL) => {}
        }
        let acknowledged = growth.acknowledged.load(Ordering::Relaxed);
        let rate = acknowledged as f64 / started.elapsed().as_secs_f64().max(1e-9);
        let eta = if rate > 0.0 { format!("{:.0} s", events.saturating_sub(acknowledged) as f64 / rate) } else { "?".into() };
        progress(&format!(
            "growing history: {acknowledged}/{events} events acknowledged, {rate:.0}/s, {} failed; ETA {eta}",
            growth.failed.load(Ordering::Relaxed)
        ));
        let failed = growth.failed.load(Ordering::Relaxed);
        if failed > events / 10 + 100 {
            growth.budget.store(0, Ordering::Release);
            let first = growth.first_failure.lock().expect("failure lock").clone().unwrap_or_default();
            return Err(WorkloadError::Invalid(format!("{failed} sends failed while growing history; the first: {first}")));
        }
    }
    Ok(Grown {
        events_acknowledged: growth.acknowledged.load(Ordering::Relaxed),
        events_failed: growth.failed.load(Ordering::Relaxed),
        rooms: growth.rooms.iter().filter(|cell| cell.initialized()).count(),
        seconds: started.elapsed().as_secs_f64(),
    })
}
