//! The chat workload: `users` users in `rooms` rooms of `room_size` members; `concurrency` senders
//! send as fast as acknowledgements come back (or at `rate_per_s` in total) for `duration`; every
//! member long-polls `/sync` (or simplified sliding sync, [`Receiver`]) and records when each
//! message reaches it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::client::{Client, ClientError, http_client};
use crate::stats::{Summary, process_cpu_seconds, summarize};

#[derive(Clone, Debug)]
pub struct ChatConfig {
    /// Homeserver base URLs; user i is homed at endpoint i mod len and fails over in list order.
    pub endpoints: Vec<String>,
    pub users: usize,
    pub rooms: usize,
    pub room_size: usize,
    /// Sends in flight at once.
    pub concurrency: usize,
    /// Total send rate, messages per second; None: as fast as acknowledgements allow.
    pub rate_per_s: Option<f64>,
    pub duration: Duration,
    /// Size of each message body, bytes.
    pub body_bytes: usize,
    /// How members receive.
    pub receiver: Receiver,
}

/// How the members of the chat workload receive messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Receiver {
    /// Long-polling `/sync` with a `since` token.
    #[default]
    Sync,
    /// Long-polling simplified sliding sync (MSC4186) with one list over all their rooms.
    SlidingSync,
}

impl Receiver {
    pub fn name(self) -> &'static str {
        match self {
            Receiver::Sync => "/sync",
            Receiver::SlidingSync => "sliding sync",
        }
    }
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            endpoints: vec!["http://127.0.0.1:8008".into()],
            users: 20,
            rooms: 10,
            room_size: 4,
            concurrency: 32,
            rate_per_s: None,
            duration: Duration::from_secs(10),
            body_bytes: 64,
            receiver: Receiver::Sync,
        }
    }
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ChatReport {
    pub acknowledged: u64,
    pub failed: u64,
    pub duration_s: f64,
    pub acknowledged_per_s: f64,
    pub send_latency: Summary,
    pub delivery_latency: Summary,
    /// Deliveries seen by receivers vs. expected (acknowledged x other members).
    pub delivered: u64,
    pub expected_deliveries: u64,
    /// CPU the load generator itself used, as a share of one core.
    pub client_cpu_share: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("setting up the workload failed: {0}")]
    Setup(#[from] ClientError),
    #[error("invalid workload: {0}")]
    Invalid(String),
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// Users and rooms, created through the API.
pub struct Population {
    pub clients: Vec<Client>,
    /// room id -> member indexes into `clients`
    pub rooms: Vec<(String, Vec<usize>)>,
}

/// Registers users and creates rooms with their members joined. Progress goes to `progress`.
pub async fn populate(config: &ChatConfig, progress: &(dyn Fn(&str) + Sync)) -> Result<Population, ChatError> {
    if config.endpoints.is_empty() || config.users == 0 || config.rooms == 0 || config.room_size == 0 {
        return Err(ChatError::Invalid("endpoints, users, rooms and room size must be non-empty".into()));
    }
    if config.room_size > config.users {
        return Err(ChatError::Invalid(format!("room size {} exceeds users {}", config.room_size, config.users)));
    }
    let http = http_client();
    let prefix = format!("load_{}", crate::setup::run_id());
    let mut clients = crate::setup::register_many(&http, &config.endpoints, &prefix, config.users, 16, progress).await?;
    let mut rooms = Vec::with_capacity(config.rooms);
    for r in 0..config.rooms {
        let members: Vec<usize> = (0..config.room_size).map(|k| (r * config.room_size + k) % config.users).collect();
        let invites: Vec<String> = members[1..].iter().map(|&m| clients[m].user_id.clone()).collect();
        let room_id = clients[members[0]].create_room(&invites).await?;
        let joins = members[1..].iter().map(|&m| {
            let mut client = clients[m].clone();
            let room_id = room_id.clone();
            async move { client.join(&room_id).await }
        });
        for joined in futures::future::join_all(joins).await {
            joined?;
        }
        rooms.push((room_id, members));
        if (r + 1) % 10 == 0 || r + 1 == config.rooms {
            progress(&format!("created {}/{} rooms", r + 1, config.rooms));
        }
    }
    Ok(Population { clients, rooms })
}

/// Runs the chat workload on a population and reports what it measured.
pub async fn run(config: &ChatConfig, population: &Population, progress: &(dyn Fn(&str) + Sync)) -> ChatReport {
    let stop = Arc::new(AtomicBool::new(false));
    // Transaction ids are unique per run: a second run on the same population sends anew rather
    // than being answered as a retry of the first.
    let run_tag = now_us();
    let delivery_ms: Arc<Mutex<Vec<f64>>> = Arc::new(Mutex::new(Vec::new()));
    let delivered = Arc::new(AtomicU64::new(0));
    // Receivers: every member of some room long-polls sync.
    let mut receivers = Vec::new();
    let mut in_rooms = vec![false; population.clients.len()];
    for (_, members) in &population.rooms {
        for &m in members {
            in_rooms[m] = true;
        }
    }
    for (index, client) in population.clients.iter().enumerate().filter(|(i, _)| in_rooms[*i]) {
        let mut client = client.clone();
        let stop = stop.clone();
        let delivery_ms = delivery_ms.clone();
        let delivered = delivered.clone();
        if config.receiver == Receiver::SlidingSync {
            receivers.push(tokio::spawn(receive_by_sliding_sync(client, stop, delivery_ms, delivered, run_tag)));
            continue;
        }
        receivers.push(tokio::spawn(async move {
            let mut since = match client.sync(None, 0).await {
                Ok(response) => response["next_batch"].as_str().map(str::to_string),
                Err(_) => None,
            };
            let _ = index;
            let me = client.user_id.clone();
            while !stop.load(Ordering::Relaxed) {
                let Ok(response) = client.sync(since.as_deref(), 1000).await else { continue };
                let received_us = now_us();
                if let Some(rooms) = response["rooms"]["join"].as_object() {
                    let mut latencies = Vec::new();
                    for room in rooms.values() {
                        for event in room["timeline"]["events"].as_array().into_iter().flatten() {
                            if event["sender"] == me.as_str() {
                                continue;
                            }
                            if let Some(sent_us) = event["content"]["haetae_sent_us"].as_u64() {
                                latencies.push(received_us.saturating_sub(sent_us) as f64 / 1000.0);
                            }
                        }
                    }
                    delivered.fetch_add(latencies.len() as u64, Ordering::Relaxed);
                    delivery_ms.lock().expect("latency lock").extend(latencies);
                }
                since = response["next_batch"].as_str().map(str::to_string).or(since);
            }
        }));
    }
    // Let receivers take their initial sync before measuring.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cpu_before = process_cpu_seconds();
    let started = Instant::now();
    let deadline = started + config.duration;
    let acknowledged = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let send_ms: Arc<Mutex<Vec<f64>>> = Arc::new(Mutex::new(Vec::new()));
    let expected = Arc::new(AtomicU64::new(0));
    let body = "x".repeat(config.body_bytes);
    let interval = config.rate_per_s.map(|rate| Duration::from_secs_f64(config.concurrency as f64 / rate.max(0.001)));
    let mut senders = Vec::new();
    let concurrency = config.concurrency.max(1);
    for worker in 0..config.concurrency {
        let mut clients: HashMap<usize, Client> = HashMap::new();
        let rooms = population.rooms.clone();
        let population_clients = population.clients.clone();
        let (acknowledged, failed, send_ms, expected) = (acknowledged.clone(), failed.clone(), send_ms.clone(), expected.clone());
        let body = body.clone();
        senders.push(tokio::spawn(async move {
            let mut sequence = 0u64;
            // Workers start spread over one interval, so that a fixed rate arrives evenly rather
            // than as one burst of `concurrency` sends per interval.
            let mut next_send = Instant::now() + interval.map_or(Duration::ZERO, |i| i.mul_f64(worker as f64 / concurrency as f64));
            while Instant::now() < deadline {
                if let Some(interval) = interval {
                    if Instant::now() < next_send {
                        tokio::time::sleep_until(next_send.into()).await;
                    }
                    next_send += interval;
                }
                let (room_id, members) = &rooms[(worker + sequence as usize * config_step(worker)) % rooms.len()];
                let sender = members[sequence as usize % members.len()];
                let client = clients.entry(sender).or_insert_with(|| population_clients[sender].clone());
                let txn_id = format!("r{run_tag}-w{worker}-{sequence}");
                sequence += 1;
                let content = json!({ "msgtype": "m.text", "body": body, "haetae_sent_us": now_us() });
                let start = Instant::now();
                match client.send(room_id, &txn_id, &content).await {
                    Ok(_) => {
                        acknowledged.fetch_add(1, Ordering::Relaxed);
                        expected.fetch_add(members.len() as u64 - 1, Ordering::Relaxed);
                        send_ms.lock().expect("latency lock").push(start.elapsed().as_secs_f64() * 1000.0);
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let mut last_report = Instant::now();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if last_report.elapsed() >= Duration::from_secs(2) {
            let elapsed = started.elapsed().as_secs_f64();
            progress(&format!(
                "{:.0}s: {} acknowledged ({:.0}/s), {} failed, {} delivered",
                elapsed,
                acknowledged.load(Ordering::Relaxed),
                acknowledged.load(Ordering::Relaxed) as f64 / elapsed,
                failed.load(Ordering::Relaxed),
                delivered.load(Ordering::Relaxed)
            ));
            last_report = Instant::now();
        }
    }
    for sender in senders {
        let _ = sender.await;
    }
    let duration_s = started.elapsed().as_secs_f64();
    let cpu_used = process_cpu_seconds() - cpu_before;
    // Give receivers a moment to collect the last deliveries, bounded.
    let drain_deadline = Instant::now() + Duration::from_secs(5);
    while delivered.load(Ordering::Relaxed) < expected.load(Ordering::Relaxed) && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for receiver in receivers {
        receiver.abort();
    }
    let acknowledged = acknowledged.load(Ordering::Relaxed);
    let mut send = std::mem::take(&mut *send_ms.lock().expect("latency lock"));
    let mut delivery = std::mem::take(&mut *delivery_ms.lock().expect("latency lock"));
    ChatReport {
        acknowledged,
        failed: failed.load(Ordering::Relaxed),
        duration_s,
        acknowledged_per_s: acknowledged as f64 / duration_s,
        send_latency: summarize(&mut send),
        delivery_latency: summarize(&mut delivery),
        delivered: delivered.load(Ordering::Relaxed),
        expected_deliveries: expected.load(Ordering::Relaxed),
        client_cpu_share: cpu_used / duration_s,
    }
}

/// A member receiving over simplified sliding sync: one connection with one list over all its
/// rooms (a chat member is in a few), long-polled with `pos`; each message's latency is taken
/// when the response carrying it is read. A new connection's first response shows each room's
/// latest events, so only messages sent since this run began (`run_started_us`) count.
async fn receive_by_sliding_sync(
    mut client: Client,
    stop: Arc<AtomicBool>,
    delivery_ms: Arc<Mutex<Vec<f64>>>,
    delivered: Arc<AtomicU64>,
    run_started_us: u64,
) {
    let body = json!({
        "conn_id": format!("chat-{run_started_us}"),
        "lists": { "all": { "ranges": [[0, 99]], "timeline_limit": 100, "required_state": [] } },
    });
    let me = client.user_id.clone();
    let mut pos: Option<String> = None;
    while !stop.load(Ordering::Relaxed) {
        let timeout_ms = if pos.is_some() { 1000 } else { 0 };
        let Ok(response) = client.sliding_sync(&body, pos.as_deref(), timeout_ms).await else {
            // An unknown position (or a failed request): start the connection over.
            pos = None;
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let received_us = now_us();
        let mut latencies = Vec::new();
        for room in response["rooms"].as_object().into_iter().flat_map(|rooms| rooms.values()) {
            for event in room["timeline"].as_array().into_iter().flatten() {
                if event["sender"] == me.as_str() {
                    continue;
                }
                if let Some(sent_us) = event["content"]["haetae_sent_us"].as_u64().filter(|sent_us| *sent_us >= run_started_us) {
                    latencies.push(received_us.saturating_sub(sent_us) as f64 / 1000.0);
                }
            }
        }
        delivered.fetch_add(latencies.len() as u64, Ordering::Relaxed);
        delivery_ms.lock().expect("latency lock").extend(latencies);
        pos = response["pos"].as_str().map(str::to_string).or(pos);
    }
}

/// Spreads workers over rooms: each worker walks the rooms with its own stride.
fn config_step(worker: usize) -> usize {
    1 + worker % 7
}
