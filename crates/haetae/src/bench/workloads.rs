//! `haetae bench big-room | login-storm | initial-sync | idle`: single-purpose workloads from
//! the workload crate, each printing one Markdown table (and `--json FILE`). With `--url` they
//! measure any homeserver; without, a local haetae node started here (whose PID is known, so its
//! memory and CPU are reported too).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use haetae_workload::setup::Process;
use haetae_workload::{big_room, idle, initial_sync, login_storm};

use super::{LocalNode, start_local_node};

/// Where a workload runs, shared by every workload here.
#[derive(clap::Args)]
pub struct Target {
    /// Homeserver base URL(s); users are spread over them. Default: start a local haetae node.
    #[arg(long = "url")]
    urls: Vec<String>,
    /// With --url: the PID of the homeserver process on this machine, for its memory and CPU
    /// (without it they are reported as unknown).
    #[arg(long, requires = "urls")]
    pid: Option<u32>,
    /// Registrations and joins in flight at once during setup.
    #[arg(long, default_value_t = 16)]
    pub(super) setup_concurrency: usize,
    /// Write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The homeserver a workload talks to; a local node is stopped when this is dropped.
pub(super) struct Server {
    pub(super) endpoints: Vec<String>,
    pub(super) process: Option<Process>,
    _local: Option<LocalNode>,
}

impl Target {
    pub(super) async fn server(&self) -> Result<Server, String> {
        if !self.urls.is_empty() {
            return Ok(Server { endpoints: self.urls.clone(), process: self.pid.map(|pid| Process { pid }), _local: None });
        }
        let hashing = haetae_server::config::PasswordHashing::default();
        eprintln!(
            "bench: starting a local haetae node (embedded nats-server, sync_interval: always, R1; rate limits off; \
             password hashing at its defaults: argon2id {} KiB, {} passes, {} lane)",
            hashing.memory_kib, hashing.iterations, hashing.parallelism
        );
        let node = start_local_node().await?;
        let process = Some(Process { pid: node.child.id() });
        Ok(Server { endpoints: vec![node.url.clone()], process, _local: Some(node) })
    }

    pub(super) fn write_json(&self, report: &impl serde::Serialize) -> Result<(), String> {
        if let Some(path) = &self.json {
            let text = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
            std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        Ok(())
    }
}

pub(super) fn progress(line: &str) {
    eprintln!("bench: {line}");
}

#[derive(clap::Args)]
pub struct BigRoomArgs {
    #[command(flatten)]
    target: Target,
    /// Members of the room, the sender included; every one long-polls /sync.
    #[arg(long, default_value_t = 1000)]
    members: usize,
    /// Messages measured (after one warm-up message).
    #[arg(long, default_value_t = 20)]
    messages: usize,
    /// From the start of one send to the start of the next, ms.
    #[arg(long, default_value_t = 500)]
    interval_ms: u64,
    /// Long-poll timeout of every member's /sync, seconds.
    #[arg(long, default_value_t = 30)]
    poll_timeout_s: u64,
}

pub async fn big_room(args: BigRoomArgs) -> Result<(), String> {
    let started = Instant::now();
    let server = args.target.server().await?;
    let config = big_room::BigRoomConfig {
        endpoints: server.endpoints.clone(),
        members: args.members,
        messages: args.messages,
        interval: Duration::from_millis(args.interval_ms),
        setup_concurrency: args.target.setup_concurrency,
        poll_timeout: Duration::from_secs(args.poll_timeout_s),
        server: server.process,
        ..big_room::BigRoomConfig::default()
    };
    let report = big_room::run(&config, &progress).await.map_err(|e| e.to_string())?;
    println!("| workload | delivered/expected | delivery p50 ms | delivery p99 ms | delivery max ms | within 1 s | last member of a message p50 / max ms | send p50 ms | p99 ≤ 1 s | notes |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---|---|");
    println!(
        "| big-room {} members, {} msgs {} ms apart | {}/{} | {:.1} | {:.1} | {:.1} | {:.1}% | {:.1} / {:.1} | {:.1} | {} | {} receivers per message; {} messages not fully delivered; {} sync errors; CPU: {}; setup: register {:.0} s, join {:.0} s; whole run {:.0} s |",
        report.members, report.messages, args.interval_ms,
        report.delivered, report.expected_deliveries,
        report.delivery.p50_ms, report.delivery.p99_ms, report.delivery.max_ms,
        report.within_1s * 100.0,
        report.slowest_per_message.p50_ms, report.slowest_per_message.max_ms,
        report.send.p50_ms,
        verdict(report.delivered == report.expected_deliveries && report.delivery.p99_ms <= 1000.0),
        report.receivers, report.incomplete_messages, report.sync_errors, report.cpu.describe(),
        report.register_s, report.join_s, started.elapsed().as_secs_f64(),
    );
    args.target.write_json(&report)
}

#[derive(clap::Args)]
pub struct LoginStormArgs {
    #[command(flatten)]
    target: Target,
    /// Accounts the logins cycle through.
    #[arg(long, default_value_t = 50)]
    users: usize,
    /// Logins in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    #[arg(long, default_value_t = 10)]
    duration_s: u64,
}

pub async fn login_storm(args: LoginStormArgs) -> Result<(), String> {
    let started = Instant::now();
    let server = args.target.server().await?;
    let config = login_storm::LoginStormConfig {
        endpoints: server.endpoints.clone(),
        users: args.users,
        concurrency: args.concurrency,
        duration: Duration::from_secs(args.duration_s),
        setup_concurrency: args.target.setup_concurrency,
        server: server.process,
    };
    let report = login_storm::run(&config, &progress).await.map_err(|e| e.to_string())?;
    let hashing = if args.target.urls.is_empty() {
        let h = haetae_server::config::PasswordHashing::default();
        format!("argon2id {} KiB, {} passes, {} lane (server defaults); login rate limits off", h.memory_kib, h.iterations, h.parallelism)
    } else {
        "the server's own settings".to_string()
    };
    println!("| workload | logins/s | p50 ms | p99 ms | max ms | succeeded | 429 | failed | notes |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---|");
    println!(
        "| login-storm {} users, {} at once, {} s | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {hashing}; CPU: {}; whole run {:.0} s{} |",
        report.users, report.concurrency, args.duration_s,
        report.logins_per_s, report.latency.p50_ms, report.latency.p99_ms, report.latency.max_ms,
        report.succeeded, report.rate_limited, report.failed,
        report.cpu.describe(), started.elapsed().as_secs_f64(),
        report.first_failure.as_deref().map(|f| format!("; first failure: {f}")).unwrap_or_default(),
    );
    args.target.write_json(&report)
}

#[derive(clap::Args)]
pub struct InitialSyncArgs {
    #[command(flatten)]
    target: Target,
    /// Rooms the user is in (it creates them).
    #[arg(long, default_value_t = 100)]
    rooms: usize,
    /// Events in each room, its creation state included; the rest are the user's messages.
    #[arg(long, default_value_t = 20)]
    events_per_room: usize,
    /// Initial syncs measured, one after another.
    #[arg(long, default_value_t = 50)]
    repeat: usize,
}

pub async fn initial_sync(args: InitialSyncArgs) -> Result<(), String> {
    let started = Instant::now();
    let server = args.target.server().await?;
    let config = initial_sync::InitialSyncConfig {
        endpoints: server.endpoints.clone(),
        rooms: args.rooms,
        events_per_room: args.events_per_room,
        repeat: args.repeat,
        setup_concurrency: args.target.setup_concurrency,
        server: server.process,
    };
    let report = initial_sync::run(&config, &progress).await.map_err(|e| e.to_string())?;
    println!("| workload | p50 ms | p99 ms | max ms | first ms | response bytes | p50 ≤ 50 ms | notes |");
    println!("|---|---:|---:|---:|---:|---:|---|---|");
    println!(
        "| initial-sync {} rooms × {} events ({} creation state + {} messages each), {} syncs, no filter | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} | latency includes parsing the response here; each response: {} rooms, {} timeline and {} state events; CPU: {}; setup {:.0} s, whole run {:.0} s |",
        report.rooms, report.events_per_room, report.state_events_per_room, report.messages_per_room, report.repeat,
        report.latency.p50_ms, report.latency.p99_ms, report.latency.max_ms, report.first_ms, report.response_bytes,
        verdict(report.latency.p50_ms <= 50.0),
        report.rooms_returned, report.timeline_events_returned, report.state_events_returned,
        report.cpu.describe(), report.setup_s, started.elapsed().as_secs_f64(),
    );
    args.target.write_json(&report)
}

#[derive(clap::Args)]
pub struct IdleArgs {
    #[command(flatten)]
    target: Target,
    /// Long-polling /sync connections held at once.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Accounts holding them (each holds connections/users).
    #[arg(long, default_value_t = 100)]
    users: usize,
    /// Ramp up: hold connections/10, /4, /2, then all, measuring at each step (the connections of
    /// a step stay open for the next).
    #[arg(long)]
    ramp: bool,
    /// Long-poll timeout of every held /sync, seconds.
    #[arg(long, default_value_t = 30)]
    poll_timeout_s: u64,
}

pub async fn idle(args: IdleArgs) -> Result<(), String> {
    let started = Instant::now();
    let mut steps: Vec<usize> =
        if args.ramp { vec![args.connections / 10, args.connections / 4, args.connections / 2, args.connections] } else { vec![args.connections] };
    steps.retain(|&n| n > 0);
    steps.dedup();
    // The held connections, the server's side too when it is a child of this process.
    ensure_open_files(args.connections as u64 + 1024)?;
    let server = args.target.server().await?;
    let config = idle::IdleConfig {
        endpoints: server.endpoints.clone(),
        users: args.users,
        steps,
        poll_timeout: Duration::from_secs(args.poll_timeout_s),
        setup_concurrency: args.target.setup_concurrency,
        server: server.process,
        ..idle::IdleConfig::default()
    };
    let report = idle::run(&config, &progress).await.map_err(|e| e.to_string())?;
    println!("| workload | server memory before → held MiB | per connection | delivered | p50 ms | p99 ms | max ms | over 1 s | ≤ 32 KB and all within 1 s | notes |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---|---|");
    for step in &report.steps {
        let memory = match (step.rss_before_kib, step.rss_held_kib) {
            (Some(before), Some(held)) => format!("{:.0} → {:.0}", before as f64 / 1024.0, held as f64 / 1024.0),
            _ => "unknown".into(),
        };
        let per_connection = step.memory_per_connection_bytes.map(|b| format!("{:.1} KB", b / 1000.0)).unwrap_or_else(|| "unknown".into());
        let target = match step.memory_per_connection_bytes {
            Some(bytes) => verdict(bytes <= 32_000.0 && step.delivered == step.connections && step.delivery.max_ms <= 1000.0),
            None => "memory unknown",
        };
        println!(
            "| idle {} held /sync ({} users × {}), {} s polls | {memory}{} | {per_connection} | {}/{} | {:.1} | {:.1} | {:.1} | {} | {target} | established in {:.1} s{}; {} polls expired before the message; {} sync errors; send {:.0} ms; CPU from send to last delivery: {} |",
            step.connections, report.users, step.per_user, args.poll_timeout_s,
            if step.rss_settled || step.rss_held_kib.is_none() { "" } else { " (not settled)" },
            step.delivered, step.connections,
            step.delivery.p50_ms, step.delivery.p99_ms, step.delivery.max_ms, step.over_1s,
            step.establish_s, if step.established { "" } else { " (not all)" },
            step.expired_polls, step.sync_errors, step.send_ms, step.cpu.describe(),
        );
    }
    println!();
    println!(
        "Largest number of held connections that all received the message within 1 s: {}. Whole run {:.0} s.",
        report.largest_within_1s.map(|n| n.to_string()).unwrap_or_else(|| "none of the steps".into()),
        started.elapsed().as_secs_f64()
    );
    args.target.write_json(&report)
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "missed" }
}

/// Makes sure this process (and a node it starts, which inherits the limit) may open `needed`
/// files: raises the soft limit to the hard one with `prlimit` when it is too low.
fn ensure_open_files(needed: u64) -> Result<(), String> {
    let Some((soft, hard)) = haetae_workload::setup::open_files_limit() else { return Ok(()) };
    if soft >= needed {
        return Ok(());
    }
    if hard < needed {
        return Err(format!("this needs about {needed} open files, but the hard limit is {hard}: raise it (ulimit -Hn) or hold fewer connections"));
    }
    let limit = if hard == u64::MAX { "unlimited".to_string() } else { hard.to_string() };
    let status = std::process::Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--nofile={limit}:{limit}"))
        .status()
        .map_err(|e| format!("the open-files limit is {soft}, about {needed} are needed, and prlimit could not run: {e}"))?;
    if !status.success() {
        return Err(format!("the open-files limit is {soft}, about {needed} are needed, and prlimit failed"));
    }
    eprintln!("bench: raised the open-files limit from {soft} to {limit}");
    Ok(())
}
