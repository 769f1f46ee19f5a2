//! The idle workload: many long-polling `/sync` connections held open on a homeserver at once,
//! what each costs the server in memory, and whether one message still reaches all of them fast.
//!
//! Registering one account per connection would spend most of the run hashing passwords, so
//! `users` accounts hold the connections between them (connection c belongs to user c mod
//! `users`); every user is in one room, and a separate sender posts into it.
//!
//! For each step (a number of connections, ascending; connections from earlier steps stay open):
//! open connections up to that number, wait until this machine holds that many established TCP
//! connections to the server and (when the server's PID is known) its resident memory has stopped
//! moving, read the memory, send one message and time how long each held `/sync` takes to return
//! it. Memory per connection is (held - before any connection) / connections.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::client::{Client, http_client};
use crate::setup::{self, CpuMark, CpuShares, Process, WorkloadError, micros_since, stamped_message, stamps};
use crate::stats::{Summary, summarize};

#[derive(Clone, Debug)]
pub struct IdleConfig {
    pub endpoints: Vec<String>,
    /// Accounts holding the connections.
    pub users: usize,
    /// Connections held at each step, ascending.
    pub steps: Vec<usize>,
    /// Long-poll timeout of each held `/sync`.
    pub poll_timeout: Duration,
    /// Registrations and joins in flight at once during setup.
    pub setup_concurrency: usize,
    /// How long a step may take to get all its connections established.
    pub establish_limit: Duration,
    /// How long to wait for the server's memory to settle.
    pub settle_limit: Duration,
    /// How long to wait for every held connection to return the message.
    pub delivery_limit: Duration,
    /// The homeserver process, when it runs on this machine: memory and CPU are reported.
    pub server: Option<Process>,
}

impl Default for IdleConfig {
    fn default() -> Self {
        IdleConfig {
            endpoints: vec!["http://127.0.0.1:8008".into()],
            users: 100,
            steps: vec![10_000],
            poll_timeout: Duration::from_secs(30),
            setup_concurrency: 16,
            establish_limit: Duration::from_secs(60),
            settle_limit: Duration::from_secs(20),
            delivery_limit: Duration::from_secs(20),
            server: None,
        }
    }
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct IdleStep {
    pub connections: usize,
    /// Most connections one user held.
    pub per_user: usize,
    /// From opening this step's connections until enough were established, seconds.
    pub establish_s: f64,
    /// Whether all of them were established within the limit.
    pub established: bool,
    /// The server's resident memory before any connection and with this step's connections
    /// held, KiB (None when the server's PID is not known).
    pub rss_before_kib: Option<u64>,
    pub rss_held_kib: Option<u64>,
    /// Whether the memory had stopped moving when it was read.
    pub rss_settled: bool,
    pub memory_per_connection_bytes: Option<f64>,
    /// Held syncs that returned the message, and how long after the send began.
    pub delivered: usize,
    pub delivery: Summary,
    pub over_1s: usize,
    /// Long-polls that ran out (returned empty) during this step before the message: with
    /// many, the connections were not all idle.
    pub expired_polls: u64,
    pub sync_errors: u64,
    pub send_ms: f64,
    /// CPU from the send until the last delivery (or the limit).
    pub cpu: CpuShares,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct IdleReport {
    pub users: usize,
    pub poll_timeout_s: f64,
    pub steps: Vec<IdleStep>,
    /// The largest step whose every held connection returned the message within 1 s.
    pub largest_within_1s: Option<usize>,
    pub setup_s: f64,
}

/// Shared by every held connection.
struct Tally {
    stop: AtomicBool,
    /// Deliveries per message number (message k is step k's, counted from 1).
    counts: Vec<AtomicUsize>,
    latencies: Mutex<Vec<Vec<f64>>>,
    expired: AtomicU64,
    errors: AtomicU64,
}

pub async fn run(config: &IdleConfig, progress: &(dyn Fn(&str) + Sync)) -> Result<IdleReport, WorkloadError> {
    if config.endpoints.is_empty() || config.users == 0 || config.steps.is_empty() || config.steps.contains(&0) {
        return Err(WorkloadError::Invalid("need endpoints, users and non-zero steps".into()));
    }
    if config.steps.windows(2).any(|w| w[0] > w[1]) {
        return Err(WorkloadError::Invalid("steps must be ascending".into()));
    }
    let ports: Vec<u16> = config.endpoints.iter().filter_map(|url| setup::url_port(url)).collect();
    let started = Instant::now();
    let http = http_client();
    let run = setup::run_id();
    // User 0 sends; users 1..=users hold the connections.
    let mut clients = setup::register_many(&http, &config.endpoints, &format!("idle_{run}"), config.users + 1, config.setup_concurrency, progress).await?;
    let holders_users = clients.split_off(1);
    let mut sender = clients.remove(0);
    let room_id = setup::create_public_room(&mut sender, "idle room").await?;
    setup::join_all(&holders_users, &room_id, config.setup_concurrency, progress).await?;
    let setup_s = started.elapsed().as_secs_f64();

    let rss_before = match config.server {
        Some(server) => {
            progress("waiting for the server's memory to settle before opening connections");
            server.settled_rss_kib(rss_tolerance_kib(0), config.settle_limit).await.map(|(rss, _)| rss)
        }
        None => None,
    };
    let epoch = Instant::now();
    let tally = Arc::new(Tally {
        stop: AtomicBool::new(false),
        counts: (0..=config.steps.len()).map(|_| AtomicUsize::new(0)).collect(),
        latencies: Mutex::new(vec![Vec::new(); config.steps.len() + 1]),
        expired: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    let poll_ms = config.poll_timeout.as_millis() as u64;
    let mut tasks = Vec::new();
    let mut steps = Vec::with_capacity(config.steps.len());
    for (index, &connections) in config.steps.iter().enumerate() {
        let seq = index + 1;
        // New connections start from "now", so the previous steps' messages are not new to them.
        let opened = tasks.len();
        let mut tokens = futures::stream::iter(holders_users.iter().cloned())
            .map(|mut client| async move { setup::current_since(&mut client).await })
            .buffered(config.setup_concurrency.max(1));
        let mut since_tokens = Vec::with_capacity(holders_users.len());
        while let Some(token) = tokens.next().await {
            since_tokens.push(token?);
        }
        drop(tokens);
        let (expired_before, errors_before) = (tally.expired.load(Ordering::Relaxed), tally.errors.load(Ordering::Relaxed));
        progress(&format!(
            "step {seq}: opening {} connections ({} held in all, {} users)",
            connections - opened,
            connections,
            config.users
        ));
        let establish_start = Instant::now();
        for c in opened..connections {
            let user = c % holders_users.len();
            let (client, since, tally, run) = (holders_users[user].clone(), since_tokens[user].clone(), tally.clone(), run.clone());
            tasks.push(tokio::spawn(hold(client, since, poll_ms, epoch, run, tally)));
        }
        let mut established = false;
        let establish_deadline = establish_start + config.establish_limit;
        let mut last_report = Instant::now();
        loop {
            let count = setup::established_to(&ports);
            if count >= connections {
                established = true;
                break;
            }
            if Instant::now() > establish_deadline {
                progress(&format!("step {seq}: only {count}/{connections} connections established after {} s", config.establish_limit.as_secs()));
                break;
            }
            if last_report.elapsed() >= Duration::from_secs(2) {
                progress(&format!("step {seq}: {count}/{connections} connections established"));
                last_report = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let establish_s = establish_start.elapsed().as_secs_f64();
        let (rss_held, rss_settled) = match config.server {
            Some(server) => match server.settled_rss_kib(rss_tolerance_kib(rss_before.unwrap_or(0)), config.settle_limit).await {
                Some((rss, settled)) => (Some(rss), settled),
                None => (None, false),
            },
            None => (None, false),
        };
        progress(&format!(
            "step {seq}: {connections} connections held ({establish_s:.1} s){}; sending one message",
            match (rss_before, rss_held) {
                (Some(before), Some(held)) => format!(", server memory {} -> {} MiB", before / 1024, held / 1024),
                _ => String::new(),
            }
        ));
        let expired_polls = tally.expired.load(Ordering::Relaxed) - expired_before;

        let cpu_start = CpuMark::now(config.server);
        let sent_us = micros_since(epoch);
        let send_start = Instant::now();
        sender.send(&room_id, &format!("{run}-{seq}"), &stamped_message(&run, seq as u64, sent_us)).await?;
        let send_ms = send_start.elapsed().as_secs_f64() * 1000.0;
        let delivery_deadline = send_start + config.delivery_limit;
        while tally.counts[seq].load(Ordering::Relaxed) < connections && Instant::now() < delivery_deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let cpu = cpu_start.shares(&CpuMark::now(config.server));
        let mut latencies = std::mem::take(&mut tally.latencies.lock().expect("latency lock")[seq]);
        let over_1s = latencies.iter().filter(|&&ms| ms > 1000.0).count();
        let step = IdleStep {
            connections,
            per_user: connections.div_ceil(holders_users.len()),
            establish_s,
            established,
            rss_before_kib: rss_before,
            rss_held_kib: rss_held,
            rss_settled,
            memory_per_connection_bytes: match (rss_before, rss_held) {
                (Some(before), Some(held)) => Some((held as f64 - before as f64) * 1024.0 / connections as f64),
                _ => None,
            },
            delivered: latencies.len(),
            delivery: summarize(&mut latencies),
            over_1s,
            expired_polls,
            sync_errors: tally.errors.load(Ordering::Relaxed) - errors_before,
            send_ms,
            cpu,
        };
        progress(&format!(
            "step {seq}: delivered {}/{connections}, p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            step.delivered, step.delivery.p50_ms, step.delivery.p99_ms, step.delivery.max_ms
        ));
        steps.push(step);
    }
    tally.stop.store(true, Ordering::Relaxed);
    for task in &tasks {
        task.abort();
    }
    let largest_within_1s = steps
        .iter()
        .filter(|s| s.delivered == s.connections && s.delivery.max_ms <= 1000.0)
        .map(|s| s.connections)
        .max();
    Ok(IdleReport { users: config.users, poll_timeout_s: config.poll_timeout.as_secs_f64(), steps, largest_within_1s, setup_s })
}

/// Memory counts as settled when it moves less than this over a second: 1 MiB, or 0.5% of a
/// large process.
fn rss_tolerance_kib(rss_kib: u64) -> u64 {
    (rss_kib / 200).max(1024)
}

/// One held connection: long-polls from `since` on, forever, noting every stamped message.
async fn hold(mut client: Client, mut since: String, poll_ms: u64, epoch: Instant, run: String, tally: Arc<Tally>) {
    while !tally.stop.load(Ordering::Relaxed) {
        match client.sync(Some(&since), poll_ms).await {
            Ok(response) => {
                let received_us = micros_since(epoch);
                let mut stamped = false;
                for (seq, sent_us) in stamps(&response, &run) {
                    let Some(count) = tally.counts.get(seq as usize) else { continue };
                    tally.latencies.lock().expect("latency lock")[seq as usize].push(received_us.saturating_sub(sent_us) as f64 / 1000.0);
                    count.fetch_add(1, Ordering::Relaxed);
                    stamped = true;
                }
                if !stamped {
                    tally.expired.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(next) = response["next_batch"].as_str() {
                    since = next.to_string();
                }
            }
            Err(_) => {
                tally.errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
