//! The big-room workload: one public room of `members` users, every member long-polling `/sync`,
//! one of them (the creator) sending `messages` messages `interval` apart. For each message and
//! each other member: the time from the start of the send until that member's `/sync` returned it.
//!
//! A warm-up message (not counted) goes first; measuring starts once every member has received
//! it, so every member is known to be long-polling.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::client::{Client, http_client};
use crate::setup::{self, CpuMark, CpuShares, Process, WorkloadError, micros_since, stamped_message, stamps};
use crate::stats::{Summary, summarize};

#[derive(Clone, Debug)]
pub struct BigRoomConfig {
    /// Homeserver base URLs; member i is homed at endpoint i mod len.
    pub endpoints: Vec<String>,
    /// Members of the room, the sender included.
    pub members: usize,
    /// Measured messages (after the warm-up).
    pub messages: usize,
    /// From the start of one send to the start of the next (the next starts at once if a send
    /// took longer).
    pub interval: Duration,
    /// Registrations and joins in flight at once.
    pub setup_concurrency: usize,
    /// Long-poll timeout of each member's `/sync`.
    pub poll_timeout: Duration,
    /// How long to wait for the last deliveries after the last send.
    pub drain: Duration,
    /// The homeserver process, when it runs on this machine: its CPU use is reported.
    pub server: Option<Process>,
}

impl Default for BigRoomConfig {
    fn default() -> Self {
        BigRoomConfig {
            endpoints: vec!["http://127.0.0.1:8008".into()],
            members: 1000,
            messages: 20,
            interval: Duration::from_millis(500),
            setup_concurrency: 16,
            poll_timeout: Duration::from_secs(30),
            drain: Duration::from_secs(15),
            server: None,
        }
    }
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct BigRoomReport {
    pub members: usize,
    /// Members other than the sender: deliveries per message.
    pub receivers: usize,
    pub messages: usize,
    pub delivered: u64,
    pub expected_deliveries: u64,
    /// Every (message, receiver) delivery.
    pub delivery: Summary,
    /// Share of expected deliveries that arrived within 1 s of the send's start.
    pub within_1s: f64,
    /// Per message every receiver got, the delivery to its last receiver.
    pub slowest_per_message: Summary,
    /// Acknowledged messages some receiver did not get before the drain ended.
    pub incomplete_messages: usize,
    pub send_failed: usize,
    pub send: Summary,
    /// Syncs that failed during the measurement (they are retried).
    pub sync_errors: u64,
    pub register_s: f64,
    pub join_s: f64,
    /// From the warm-up send until every member had it.
    pub warm_up_s: f64,
    pub measure_s: f64,
    /// CPU during the measurement.
    pub cpu: CpuShares,
}

pub async fn run(config: &BigRoomConfig, progress: &(dyn Fn(&str) + Sync)) -> Result<BigRoomReport, WorkloadError> {
    if config.endpoints.is_empty() || config.members < 2 || config.messages == 0 {
        return Err(WorkloadError::Invalid("need endpoints, at least 2 members and 1 message".into()));
    }
    let http = http_client();
    let run = setup::run_id();
    let started = Instant::now();
    let clients = setup::register_many(&http, &config.endpoints, &format!("big_{run}"), config.members, config.setup_concurrency, progress).await?;
    let register_s = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut sender = clients[0].clone();
    let room_id = setup::create_public_room(&mut sender, "big room").await?;
    progress(&format!("created {room_id}; {} members joining, {} at once", config.members - 1, config.setup_concurrency));
    setup::join_all(&clients[1..], &room_id, config.setup_concurrency, progress).await?;
    let join_s = started.elapsed().as_secs_f64();

    // Every receiver starts from a token taken after all joins, so only the messages are new.
    let mut tokens = futures::stream::iter(clients[1..].iter().cloned())
        .map(|mut client| async move { setup::current_since(&mut client).await })
        .buffered(config.setup_concurrency.max(1));
    let mut since_tokens = Vec::with_capacity(config.members - 1);
    while let Some(token) = tokens.next().await {
        since_tokens.push(token?);
    }
    drop(tokens);

    let receivers = config.members - 1;
    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    // Message 0 is the warm-up; 1..=messages are measured.
    let counts: Arc<Vec<AtomicUsize>> = Arc::new((0..=config.messages).map(|_| AtomicUsize::new(0)).collect());
    let latencies: Arc<Mutex<Vec<Vec<f64>>>> = Arc::new(Mutex::new(vec![Vec::new(); config.messages + 1]));
    let sync_errors = Arc::new(AtomicU64::new(0));
    let poll_ms = config.poll_timeout.as_millis() as u64;
    let mut tasks = Vec::with_capacity(receivers);
    for (client, since) in clients[1..].iter().cloned().zip(since_tokens) {
        let (stop, counts, latencies, sync_errors, run) = (stop.clone(), counts.clone(), latencies.clone(), sync_errors.clone(), run.clone());
        tasks.push(tokio::spawn(receive(client, since, poll_ms, epoch, run, stop, counts, latencies, sync_errors)));
    }

    progress(&format!("{receivers} members long-polling; warm-up message"));
    let warm_up = Instant::now();
    sender.send(&room_id, &format!("{run}-0"), &stamped_message(&run, 0, micros_since(epoch))).await?;
    let warm_up_deadline = Instant::now() + config.poll_timeout + config.drain;
    while counts[0].load(Ordering::Relaxed) < receivers {
        if Instant::now() > warm_up_deadline {
            stop.store(true, Ordering::Relaxed);
            tasks.iter().for_each(|t| t.abort());
            return Err(WorkloadError::Invalid(format!(
                "only {}/{receivers} members received the warm-up message",
                counts[0].load(Ordering::Relaxed)
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let warm_up_s = warm_up.elapsed().as_secs_f64();
    progress(&format!("every member has the warm-up message ({warm_up_s:.2} s); sending {} messages {} ms apart", config.messages, config.interval.as_millis()));

    let cpu_start = CpuMark::now(config.server);
    let measure_start = Instant::now();
    let mut send_ms = Vec::with_capacity(config.messages);
    let mut send_failed = 0;
    for seq in 1..=config.messages {
        let due = measure_start + config.interval * (seq as u32 - 1);
        tokio::time::sleep_until(due.into()).await;
        let sent_us = micros_since(epoch);
        let start = Instant::now();
        match sender.send(&room_id, &format!("{run}-{seq}"), &stamped_message(&run, seq as u64, sent_us)).await {
            Ok(_) => send_ms.push(start.elapsed().as_secs_f64() * 1000.0),
            Err(error) => {
                send_failed += 1;
                progress(&format!("send {seq} failed: {error}"));
            }
        }
    }
    let expected = ((config.messages - send_failed) * receivers) as u64;
    let measured_total = || (1..=config.messages).map(|s| counts[s].load(Ordering::Relaxed) as u64).sum::<u64>();
    let drain_deadline = Instant::now() + config.drain;
    while measured_total() < expected && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu_end = CpuMark::now(config.server);
    let measure_s = measure_start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for task in &tasks {
        task.abort();
    }

    let per_message = std::mem::take(&mut *latencies.lock().expect("latency lock"));
    let mut all: Vec<f64> = per_message[1..].iter().flatten().copied().collect();
    let within = all.iter().filter(|&&ms| ms <= 1000.0).count();
    // The slowest delivery of each message every receiver got; the others are counted apart.
    let complete: Vec<&Vec<f64>> = per_message[1..].iter().filter(|l| l.len() >= receivers).collect();
    let incomplete_messages = config.messages - send_failed - complete.len();
    let mut slowest: Vec<f64> = complete.iter().map(|l| l.iter().copied().fold(0.0, f64::max)).collect();
    Ok(BigRoomReport {
        members: config.members,
        receivers,
        messages: config.messages,
        delivered: all.len() as u64,
        expected_deliveries: expected,
        delivery: summarize(&mut all),
        within_1s: if expected == 0 { 0.0 } else { within as f64 / expected as f64 },
        slowest_per_message: summarize(&mut slowest),
        incomplete_messages,
        send_failed,
        send: summarize(&mut send_ms),
        sync_errors: sync_errors.load(Ordering::Relaxed),
        register_s,
        join_s,
        warm_up_s,
        measure_s,
        cpu: cpu_start.shares(&cpu_end),
    })
}

#[allow(clippy::too_many_arguments)]
async fn receive(
    mut client: Client,
    mut since: String,
    poll_ms: u64,
    epoch: Instant,
    run: String,
    stop: Arc<AtomicBool>,
    counts: Arc<Vec<AtomicUsize>>,
    latencies: Arc<Mutex<Vec<Vec<f64>>>>,
    sync_errors: Arc<AtomicU64>,
) {
    while !stop.load(Ordering::Relaxed) {
        match client.sync(Some(&since), poll_ms).await {
            Ok(response) => {
                let received_us = micros_since(epoch);
                for (seq, sent_us) in stamps(&response, &run) {
                    let Some(count) = counts.get(seq as usize) else { continue };
                    latencies.lock().expect("latency lock")[seq as usize].push(received_us.saturating_sub(sent_us) as f64 / 1000.0);
                    count.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(next) = response["next_batch"].as_str() {
                    since = next.to_string();
                }
            }
            Err(_) => {
                sync_errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
