//! The initial-sync workload: one user in `rooms` rooms of `events_per_room` events each, then
//! `repeat` full initial `/sync`s (no `since`, no filter: the server's defaults), one after
//! another. The user creates every room (preset `private_chat`, with a name), so a room's first
//! events are its creation state; the user's own messages fill it up to `events_per_room`.
//! A sync's latency runs from sending the request to having parsed the whole response.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;

use crate::client::{Client, encode, http_client};
use crate::setup::{self, CpuMark, CpuShares, PASSWORD, Process, WorkloadError};
use crate::stats::{Summary, summarize};

#[derive(Clone, Debug)]
pub struct InitialSyncConfig {
    pub endpoints: Vec<String>,
    pub rooms: usize,
    /// Events in each room, its creation state events included.
    pub events_per_room: usize,
    /// Initial syncs measured, one after another.
    pub repeat: usize,
    /// Rooms being created and filled at once during setup.
    pub setup_concurrency: usize,
    /// The homeserver process, when it runs on this machine: its CPU use is reported.
    pub server: Option<Process>,
}

impl Default for InitialSyncConfig {
    fn default() -> Self {
        InitialSyncConfig {
            endpoints: vec!["http://127.0.0.1:8008".into()],
            rooms: 100,
            events_per_room: 20,
            repeat: 50,
            setup_concurrency: 16,
            server: None,
        }
    }
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct InitialSyncReport {
    pub rooms: usize,
    pub events_per_room: usize,
    /// Creation state events per room (the same for every room).
    pub state_events_per_room: usize,
    /// Messages the user sent in each room (`events_per_room` minus the creation state).
    pub messages_per_room: usize,
    pub repeat: usize,
    pub latency: Summary,
    /// The first sync alone (nothing about this user cached yet, if a server caches).
    pub first_ms: f64,
    /// Size of one response: its JSON re-serialized compactly, bytes.
    pub response_bytes: usize,
    /// What one response held: joined rooms, timeline events and state events over all rooms.
    pub rooms_returned: usize,
    pub timeline_events_returned: usize,
    pub state_events_returned: usize,
    pub setup_s: f64,
    pub cpu: CpuShares,
}

pub async fn run(config: &InitialSyncConfig, progress: &(dyn Fn(&str) + Sync)) -> Result<InitialSyncReport, WorkloadError> {
    if config.endpoints.is_empty() || config.rooms == 0 || config.repeat == 0 {
        return Err(WorkloadError::Invalid("need endpoints, rooms and repeats".into()));
    }
    let started = Instant::now();
    let run = setup::run_id();
    let mut user = Client::register(http_client(), config.endpoints.clone(), &format!("isync_{run}"), PASSWORD).await?;
    progress(&format!("creating {} rooms and filling each to {} events, {} rooms at once", config.rooms, config.events_per_room, config.setup_concurrency));
    let step = (config.rooms / 10).max(1);
    let mut fills = futures::stream::iter(0..config.rooms)
        .map(|r| {
            let mut user = user.clone();
            let events = config.events_per_room;
            async move { fill_room(&mut user, r, events).await }
        })
        .buffer_unordered(config.setup_concurrency.max(1));
    let mut state_counts = Vec::with_capacity(config.rooms);
    while let Some(filled) = fills.next().await {
        state_counts.push(filled?);
        if state_counts.len() % step == 0 || state_counts.len() == config.rooms {
            progress(&format!("filled {}/{} rooms", state_counts.len(), config.rooms));
        }
    }
    drop(fills);
    let state_events_per_room = state_counts.iter().copied().max().unwrap_or(0);
    let setup_s = started.elapsed().as_secs_f64();

    progress(&format!("{} initial syncs, one after another", config.repeat));
    let cpu_start = CpuMark::now(config.server);
    let mut latencies = Vec::with_capacity(config.repeat);
    let mut last = Value::Null;
    for _ in 0..config.repeat {
        let begun = Instant::now();
        last = user.request("GET", "/_matrix/client/v3/sync", None, Some(Duration::from_secs(60))).await?;
        latencies.push(begun.elapsed().as_secs_f64() * 1000.0);
    }
    let cpu = cpu_start.shares(&CpuMark::now(config.server));
    let first_ms = latencies[0];
    let joined = last["rooms"]["join"].as_object();
    let count = |section: &str| -> usize {
        joined
            .into_iter()
            .flat_map(|rooms| rooms.values())
            .map(|room| room[section]["events"].as_array().map_or(0, Vec::len))
            .sum()
    };
    Ok(InitialSyncReport {
        rooms: config.rooms,
        events_per_room: config.events_per_room,
        state_events_per_room,
        messages_per_room: config.events_per_room.saturating_sub(state_events_per_room),
        repeat: config.repeat,
        latency: summarize(&mut latencies),
        first_ms,
        response_bytes: serde_json::to_vec(&last).map_or(0, |bytes| bytes.len()),
        rooms_returned: joined.map_or(0, |rooms| rooms.len()),
        timeline_events_returned: count("timeline"),
        state_events_returned: count("state"),
        setup_s,
        cpu,
    })
}

/// Creates room `index` and sends messages until it holds `events` events; returns how many
/// creation state events it began with.
async fn fill_room(user: &mut Client, index: usize, events: usize) -> Result<usize, WorkloadError> {
    let body = serde_json::json!({ "preset": "private_chat", "name": format!("room {index}") });
    let created = user.request("POST", "/_matrix/client/v3/createRoom", Some(&body), None).await?;
    let room_id = created["room_id"].as_str().unwrap_or_default().to_string();
    let state = user.request("GET", &format!("/_matrix/client/v3/rooms/{}/state", encode(&room_id)), None, None).await?;
    let state_events = state.as_array().map_or(0, Vec::len);
    for n in state_events..events {
        let content = serde_json::json!({ "msgtype": "m.text", "body": format!("message {n} in room {index}") });
        user.send(&room_id, &format!("fill-{index}-{n}"), &content).await?;
    }
    Ok(state_events)
}
