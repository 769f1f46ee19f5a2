//! The sliding-sync workload (simplified sliding sync, MSC4186, as Element X opens its room list).
//!
//! First range: for each room count N, one user in N rooms (created by the user, `setup_concurrency`
//! createRoom calls in flight), then `connections` fresh connections, one after another, each
//! asking for the first 20 rooms by recency with one timeline event and the room name and own
//! membership as state; then `incrementals` times: one new message in the user's least recently
//! bumped room, and the connection's next (incremental) request. The same requests at every N,
//! so the figures at 20 and at 5,000 rooms compare directly.
//!
//! A request's latency runs from sending it to having parsed the whole response.

use std::time::Instant;

use futures::StreamExt;
use serde_json::{Value, json};

use crate::client::{Client, http_client};
use crate::setup::{self, CpuMark, CpuShares, PASSWORD, Process, WorkloadError};
use crate::stats::{Summary, summarize};

/// The first range Element X asks for when it opens the room list.
pub const FIRST_RANGE: (u64, u64) = (0, 19);

#[derive(Clone, Debug)]
pub struct FirstRangeConfig {
    pub endpoints: Vec<String>,
    /// One user per room count.
    pub room_counts: Vec<usize>,
    /// Fresh connections measured per room count, one after another.
    pub connections: usize,
    /// Incremental requests measured per room count, each after one new message.
    pub incrementals: usize,
    /// createRoom calls in flight during setup.
    pub setup_concurrency: usize,
    /// The homeserver process, when it runs on this machine: its CPU use is reported.
    pub server: Option<Process>,
}

impl Default for FirstRangeConfig {
    fn default() -> Self {
        FirstRangeConfig {
            endpoints: vec!["http://127.0.0.1:8008".into()],
            room_counts: vec![20, 5000],
            connections: 50,
            incrementals: 20,
            setup_concurrency: 32,
            server: None,
        }
    }
}

/// What one room count measured.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct FirstRangeRow {
    pub rooms: usize,
    /// Creating the user's rooms.
    pub setup_s: f64,
    pub rooms_per_s: f64,
    /// A fresh connection's first request.
    pub first_range: Summary,
    /// The list count the server answered (the user's rooms).
    pub list_count: u64,
    /// Rooms in one first response (20, or fewer rooms than that).
    pub rooms_returned: usize,
    /// Size of one first response: its JSON re-serialized compactly, bytes.
    pub response_bytes: usize,
    /// A connection's next request after one new message.
    pub incremental: Summary,
    /// Incremental responses that carried the room of the new message.
    pub incremental_with_message: usize,
    pub cpu: CpuShares,
}

/// The request a fresh connection makes (no `pos`).
pub fn first_range_request(conn_id: &str) -> Value {
    json!({
        "conn_id": conn_id,
        "lists": {
            "all": {
                "ranges": [[FIRST_RANGE.0, FIRST_RANGE.1]],
                "timeline_limit": 1,
                "required_state": [["m.room.name", ""], ["m.room.member", "$ME"]],
            }
        },
    })
}

pub async fn run_first_range(
    config: &FirstRangeConfig,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Vec<FirstRangeRow>, WorkloadError> {
    if config.endpoints.is_empty() || config.room_counts.is_empty() || config.connections == 0 {
        return Err(WorkloadError::Invalid("need endpoints, room counts and connections".into()));
    }
    let run = setup::run_id();
    let mut rows = Vec::new();
    for &rooms in &config.room_counts {
        rows.push(measure_rooms(config, &run, rooms, progress).await?);
    }
    Ok(rows)
}

async fn measure_rooms(
    config: &FirstRangeConfig,
    run: &str,
    rooms: usize,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<FirstRangeRow, WorkloadError> {
    let started = Instant::now();
    let mut user = Client::register(http_client(), config.endpoints.clone(), &format!("slide_{run}_{rooms}"), PASSWORD).await?;
    progress(&format!("{rooms} rooms: creating them, {} at once", config.setup_concurrency));
    let step = (rooms / 10).max(1);
    let mut creations = futures::stream::iter(0..rooms)
        .map(|r| {
            let mut user = user.clone();
            async move {
                let body = json!({ "preset": "private_chat", "name": format!("room {r}") });
                let created = user.request("POST", "/_matrix/client/v3/createRoom", Some(&body), None).await?;
                Ok::<_, WorkloadError>(created["room_id"].as_str().unwrap_or_default().to_string())
            }
        })
        .buffered(config.setup_concurrency.max(1));
    // In creation order: the first created is the least recently bumped.
    let mut room_ids = Vec::with_capacity(rooms);
    while let Some(created) = creations.next().await {
        room_ids.push(created?);
        if room_ids.len() % step == 0 || room_ids.len() == rooms {
            progress(&format!("{rooms} rooms: created {}/{rooms} ({:.0} s)", room_ids.len(), started.elapsed().as_secs_f64()));
        }
    }
    drop(creations);
    let setup_s = started.elapsed().as_secs_f64();

    progress(&format!("{rooms} rooms: {} fresh connections, one after another", config.connections));
    let cpu_start = CpuMark::now(config.server);
    let mut latencies = Vec::with_capacity(config.connections);
    let mut last = Value::Null;
    for c in 0..config.connections {
        let body = first_range_request(&format!("bench-{c}"));
        let begun = Instant::now();
        last = user.sliding_sync(&body, None, 0).await?;
        latencies.push(begun.elapsed().as_secs_f64() * 1000.0);
    }
    let list_count = last["lists"]["all"]["count"].as_u64().unwrap_or(0);
    let rooms_returned = last["rooms"].as_object().map_or(0, |r| r.len());
    let response_bytes = serde_json::to_vec(&last).map_or(0, |bytes| bytes.len());

    progress(&format!("{rooms} rooms: {} incremental requests, each after one new message", config.incrementals));
    let body = first_range_request(&format!("bench-{}", config.connections - 1));
    let mut pos = last["pos"].as_str().map(str::to_string);
    let mut incremental = Vec::with_capacity(config.incrementals);
    let mut with_message = 0;
    for k in 0..config.incrementals {
        // The least recently bumped room: the message moves it from the bottom to the top.
        let room_id = &room_ids[k % room_ids.len()];
        user.send(room_id, &format!("incremental-{k}"), &json!({ "msgtype": "m.text", "body": format!("message {k}") })).await?;
        let begun = Instant::now();
        let response = user.sliding_sync(&body, pos.as_deref(), 10_000).await?;
        incremental.push(begun.elapsed().as_secs_f64() * 1000.0);
        if response["rooms"].get(room_id.as_str()).is_some() {
            with_message += 1;
        }
        pos = response["pos"].as_str().map(str::to_string).or(pos);
    }
    let cpu = cpu_start.shares(&CpuMark::now(config.server));
    Ok(FirstRangeRow {
        rooms,
        setup_s,
        rooms_per_s: rooms as f64 / setup_s.max(f64::EPSILON),
        first_range: summarize(&mut latencies),
        list_count,
        rooms_returned,
        response_bytes,
        incremental: summarize(&mut incremental),
        incremental_with_message: with_message,
        cpu,
    })
}
