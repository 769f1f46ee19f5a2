//! `haetae bench`: runs the shared workload against homeservers and prints what it measured.
//! Without `--url` it starts a local single-node haetae (embedded nats-server) to measure.

mod history;
mod sliding;
mod synapse;
mod workloads;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use haetae_workload::chat::{self, ChatConfig};

#[derive(clap::Subcommand)]
pub enum Workload {
    /// Users in rooms; senders flat out (or at --rate) while every member long-polls /sync.
    Chat(ChatArgs),
    /// The chat workload on three local DCs (R3) and on one node (R1), and raw JetStream R3
    /// publishes at the same concurrency (the engine's ceiling), in one run, with ratios.
    Compare(CompareArgs),
    /// One room of many members, all long-polling /sync; one sender: delivery to every member.
    BigRoom(workloads::BigRoomArgs),
    /// Password logins as fast as they come back (the server's password hashing settings).
    LoginStorm(workloads::LoginStormArgs),
    /// One user in many rooms: full initial /sync latency and size.
    InitialSync(workloads::InitialSyncArgs),
    /// Many held long-poll /sync connections: server memory per connection, then one message's
    /// delivery to all of them.
    Idle(workloads::IdleArgs),
    /// Grow a server's history (one room to 1M events, or 10,000 rooms × 100) and measure memory,
    /// restart, /sync, /event, /messages, /context and chat latency at checkpoints.
    History(history::HistoryArgs),
    /// Simplified sliding sync: a user in 20 and in 5,000 rooms opening the room list (first
    /// range, fresh connections, then incremental requests), and the chat workload's delivery
    /// over sliding sync beside the same over /sync.
    Sliding(sliding::SlidingArgs),
}

/// The chat workload's shape, shared by `chat` and `compare`.
#[derive(clap::Args)]
pub struct ChatShape {
    #[arg(long, default_value_t = 40)]
    users: usize,
    #[arg(long, default_value_t = 20)]
    rooms: usize,
    #[arg(long, default_value_t = 4)]
    room_size: usize,
    /// Sends (and, in `compare`, raw publishes) in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    #[arg(long, default_value_t = 10)]
    duration_s: u64,
}

impl ChatShape {
    fn config(&self, endpoints: Vec<String>, rate_per_s: Option<f64>) -> ChatConfig {
        ChatConfig {
            endpoints,
            users: self.users,
            rooms: self.rooms,
            room_size: self.room_size,
            concurrency: self.concurrency,
            rate_per_s,
            duration: Duration::from_secs(self.duration_s),
            ..ChatConfig::default()
        }
    }
}

#[derive(clap::Args)]
pub struct CompareArgs {
    #[command(flatten)]
    shape: ChatShape,
    /// Payload of each raw JetStream publish, bytes (about the size of a stored chat message).
    #[arg(long, default_value_t = 512)]
    payload_bytes: usize,
    /// Skip the Synapse row (it is installed from PyPI into .tools/synapse-venv on first use).
    #[arg(long)]
    no_synapse: bool,
    /// Run the three DCs without TLS (credentials still required), to measure what TLS costs.
    #[arg(long)]
    no_tls: bool,
    /// Run the three DCs with JetStream's files encrypted at rest, to measure what that costs.
    #[arg(long)]
    encrypt_at_rest: bool,
}

#[derive(clap::Args)]
pub struct ChatArgs {
    /// Homeserver base URL(s); users are spread over them. Default: start a local haetae node.
    #[arg(long = "url")]
    urls: Vec<String>,
    #[command(flatten)]
    shape: ChatShape,
    /// Total messages per second (default: as fast as acknowledgements come back).
    #[arg(long)]
    rate: Option<f64>,
    /// Write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// A haetae node this command started, stopped (by PID) when dropped.
struct LocalNode {
    child: std::process::Child,
    dir: PathBuf,
    url: String,
}

impl Drop for LocalNode {
    fn drop(&mut self) {
        // SIGTERM lets the node stop its embedded nats-server.
        let _ = std::process::Command::new("kill").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).map_err(|e| e.to_string())
}

async fn start_local_node() -> Result<LocalNode, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = std::env::temp_dir().join(format!("haetae-bench-{}", std::process::id()));
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let log = std::fs::File::create(std::env::temp_dir().join(format!("haetae-bench-{}.log", std::process::id())))
        .map_err(|e| e.to_string())?;
    let child = std::process::Command::new(exe)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--no-rate-limits", "--data-dir"])
        .arg(&dir)
        .stdout(Stdio::from(log.try_clone().map_err(|e| e.to_string())?))
        .stderr(Stdio::from(log))
        .spawn()
        .map_err(|e| format!("cannot start a local node: {e}"))?;
    let node = LocalNode { child, dir, url };
    let http = haetae_workload::client::http_client();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if http.get(format!("{}/_matrix/client/versions", node.url)).send().await.is_ok_and(|r| r.status().is_success()) {
            return Ok(node);
        }
        if Instant::now() > deadline {
            return Err("the local node did not come up within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn run(workload: Workload) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        match workload {
            Workload::Chat(args) => chat_bench(args).await,
            Workload::Compare(args) => compare(args).await,
            Workload::BigRoom(args) => workloads::big_room(args).await,
            Workload::LoginStorm(args) => workloads::login_storm(args).await,
            Workload::InitialSync(args) => workloads::initial_sync(args).await,
            Workload::Idle(args) => workloads::idle(args).await,
            Workload::History(args) => history::history(args).await,
            Workload::Sliding(args) => sliding::sliding(args).await,
        }
    })
}

async fn chat_bench(args: ChatArgs) -> Result<(), String> {
    let mut local = None;
    let endpoints = if args.urls.is_empty() {
        eprintln!("bench: starting a local haetae node (embedded nats-server, sync_interval: always, R1)");
        let node = start_local_node().await?;
        let url = node.url.clone();
        local = Some(node);
        vec![url]
    } else {
        args.urls.clone()
    };
    let config = args.shape.config(endpoints, args.rate);
    let progress = |line: &str| eprintln!("bench: {line}");
    let population = chat::populate(&config, &progress).await.map_err(|e| e.to_string())?;
    progress(&format!("running chat for {} s with {} sends in flight", args.shape.duration_s, args.shape.concurrency));
    let report = chat::run(&config, &population, &progress).await;
    println!("| workload | acknowledged msg/s | send p50 ms | send p99 ms | delivery p50 ms | delivery p99 ms | delivered/expected | failed | bench CPU |");
    println!("|---|---|---|---|---|---|---|---|---|");
    println!(
        "| chat {}u/{}r/{}m c{} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {}/{} | {} | {:.0}% |",
        config.users, config.rooms, config.room_size, config.concurrency,
        report.acknowledged_per_s, report.send_latency.p50_ms, report.send_latency.p99_ms,
        report.delivery_latency.p50_ms, report.delivery_latency.p99_ms,
        report.delivered, report.expected_deliveries, report.failed, report.client_cpu_share * 100.0
    );
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    drop(local);
    Ok(())
}

/// One row of the side-by-side table.
struct Row {
    setup: String,
    per_s: f64,
    send: haetae_workload::stats::Summary,
    delivery: Option<haetae_workload::stats::Summary>,
    note: String,
}

async fn chat_row(setup: &str, endpoints: Vec<String>, args: &CompareArgs, rate_per_s: Option<f64>) -> Result<Row, String> {
    let config = args.shape.config(endpoints, rate_per_s);
    let progress = |line: &str| eprintln!("bench {setup}: {line}");
    let population = chat::populate(&config, &progress).await.map_err(|e| e.to_string())?;
    let report = chat::run(&config, &population, &progress).await;
    Ok(Row {
        setup: setup.to_string(),
        per_s: report.acknowledged_per_s,
        send: report.send_latency,
        delivery: Some(report.delivery_latency),
        note: format!(
            "delivered {}/{}, {} failed, bench CPU {:.0}%",
            report.delivered,
            report.expected_deliveries,
            report.failed,
            report.client_cpu_share * 100.0
        ),
    })
}

/// Raw JetStream R3 publishes on the deployment's cluster, spread over `streams` streams.
async fn raw_row(nats_urls: &str, access: &haetae_store::Access, args: &CompareArgs, streams: usize) -> Result<Row, String> {
    let shape = &args.shape;
    eprintln!("bench: raw JetStream R3 publishes, {} in flight over {streams} stream(s)", shape.concurrency);
    let probe = haetae_store::probe::ProbeConfig {
        replicas: 3,
        concurrency: shape.concurrency,
        payload_bytes: args.payload_bytes,
        duration: Duration::from_secs(shape.duration_s),
        streams,
    };
    let mut raw = haetae_store::probe::publish_ceiling(nats_urls, access, &probe).await?;
    let plural = if streams == 1 { "" } else { "s" };
    Ok(Row {
        setup: format!("raw JetStream, R3, {streams} stream{plural}"),
        per_s: raw.acknowledged as f64 / raw.duration_s,
        send: haetae_workload::stats::summarize(&mut raw.latencies_ms),
        delivery: None,
        note: format!("{} B payloads, {} failed", args.payload_bytes, raw.failed),
    })
}

async fn compare(args: CompareArgs) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("haetae-compare-{}", std::process::id()));
    let binary = std::env::current_exe().map_err(|e| e.to_string())?;
    let shape = &args.shape;

    let mut spec = haetae_cluster::DeploymentSpec::new(dir.join("three-dcs"), binary);
    spec.tls = !args.no_tls;
    spec.encrypt_at_rest = args.encrypt_at_rest;
    eprintln!(
        "bench: starting three local DCs (R3, sync_interval: always, {}{})",
        if spec.tls { "TLS" } else { "no TLS" },
        if spec.encrypt_at_rest { ", encrypted at rest" } else { "" }
    );
    let partitions = spec.partitions as usize;
    let progress = |line: &str| eprintln!("bench: {line}");
    let (spec_tls, spec_encrypted) = (spec.tls, spec.encrypt_at_rest);
    let deployment = haetae_cluster::Deployment::up(spec, &progress).await.map_err(|e| e.to_string())?;
    let locks = format!("{}{}", if spec_tls { "TLS" } else { "no TLS" }, if spec_encrypted { ", encrypted at rest" } else { "" });
    let three = chat_row(&format!("haetae, 3 DCs, R3, {locks}"), deployment.endpoints(), &args, None).await?;
    // The delivery-latency target is set at half the maximum throughput.
    let half_rate = (three.per_s / 2.0).max(1.0);
    let half = chat_row(&format!("haetae, 3 DCs, R3, {locks}, at half that rate ({half_rate:.0}/s)"), deployment.endpoints(), &args, Some(half_rate)).await?;
    let nats_urls = deployment.state.nats_urls();
    let access = deployment.admin_access();
    let raw_one = raw_row(&nats_urls, &access, &args, 1).await?;
    let raw_partitioned = raw_row(&nats_urls, &access, &args, partitions).await?;
    deployment.down().await;

    eprintln!("bench: starting one local node (R1, embedded nats-server, sync_interval: always)");
    let node = start_local_node().await?;
    let one = chat_row("haetae, 1 node, R1", vec![node.url.clone()], &args, None).await?;
    drop(node);

    let synapse = if args.no_synapse {
        Err("skipped (--no-synapse)".to_string())
    } else {
        eprintln!("bench: starting Synapse {} (SQLite, rate limits raised)", synapse::SYNAPSE_VERSION);
        match synapse::start(&dir, &progress).await {
            Ok(server) => {
                let row = chat_row(&format!("Synapse {}, SQLite", synapse::SYNAPSE_VERSION), vec![server.url.clone()], &args, None).await;
                drop(server);
                row
            }
            Err(error) => Err(error),
        }
    };
    let _ = std::fs::remove_dir_all(&dir);

    let ceiling = raw_one.per_s;
    let three_per_s = three.per_s;
    let mut rows = vec![three, half, one];
    let synapse_per_s = match synapse {
        Ok(row) => {
            let per_s = row.per_s;
            rows.push(row);
            Some(per_s)
        }
        Err(error) => {
            eprintln!("bench: no Synapse row: {error}");
            None
        }
    };
    rows.push(raw_one);
    rows.push(raw_partitioned);
    println!(
        "| setup ({}u/{}r/{}m, {} in flight, {} s) | acknowledged/s | vs raw JetStream R3 (1 stream) | send p50 ms | send p99 ms | delivery p50 ms | delivery p99 ms | notes |",
        shape.users, shape.rooms, shape.room_size, shape.concurrency, shape.duration_s
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---|");
    for row in &rows {
        let (d50, d99) = row
            .delivery
            .as_ref()
            .map(|d| (format!("{:.1}", d.p50_ms), format!("{:.1}", d.p99_ms)))
            .unwrap_or_else(|| ("–".into(), "–".into()));
        println!(
            "| {} | {:.0} | {:.0}% | {:.1} | {:.1} | {d50} | {d99} | {} |",
            row.setup,
            row.per_s,
            if ceiling > 0.0 { row.per_s / ceiling * 100.0 } else { 0.0 },
            row.send.p50_ms,
            row.send.p99_ms,
            row.note
        );
    }
    match synapse_per_s {
        Some(per_s) if per_s > 0.0 => println!("\nhaetae on 3 DCs / Synapse: {:.1}x acknowledged messages per second", three_per_s / per_s),
        _ => println!("\nSynapse: not measured in this run"),
    }
    Ok(())
}
