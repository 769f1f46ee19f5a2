//! `haetae bench history`: grows a homeserver's history (one big room, or many rooms) and
//! measures it at checkpoints; prints one Markdown table and writes `--json FILE`.
//!
//! Owns the node when no `--url` is given: a private nats-server and a haetae node as a child
//! process (`haetae serve --nats-url ...`, the same binary), so restarting the node leaves NATS
//! running and the restart time is the node's own. Both are stopped by PID when the command
//! ends, fails or is interrupted. With `--synapse` it owns a local Synapse instead (installed as
//! for `bench compare`, restarted the same way). The growing and every measurement are `haetae_workload::history`'s.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use haetae_store::launcher::{self, NatsProcess, Signal};
use haetae_workload::history::{self, HistoryConfig, NodeControl, Remote, Restarting, Shape};
use haetae_workload::setup::Process;

use super::{free_port, synapse};

/// How long the private nats-server may take to listen.
const NATS_START_LIMIT: Duration = Duration::from_secs(30);
/// How long a node (or Synapse) may take to exit after SIGTERM before it is killed.
const STOP_LIMIT: Duration = Duration::from_secs(30);
/// How long the first start of the node may take to answer `/versions`.
const FIRST_START_LIMIT: Duration = Duration::from_secs(60);
/// Pause between checks of a process's exit or a port's answer.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ShapeArg {
    /// One room (`history_visibility: joined`, two members) growing to --max-events.
    OneRoom,
    /// --rooms rooms of --events-per-room messages each, filled one after another.
    ManyRooms,
}

/// Grows a server's history and measures it at each checkpoint.
///
/// At each checkpoint: the node's resident memory; a restart until serving (SIGTERM, start again,
/// until /versions answers and the measuring user's /sync returns) and the replay rate that
/// implies; incremental /sync with nothing new (p50/p99); full initial /sync of a user in 100
/// rooms; GET /event of the first message; one /messages page (limit 20, backwards) at the start,
/// middle and end of the room; /context of the middle event (limit 10); and the chat workload's
/// send and delivery latency with that history underneath. Then the ratio of each figure at the
/// last reached checkpoint to the first.
///
/// Without --url it starts a private nats-server and a haetae node (rate limits off) and owns
/// them; with --url the target must have its rate limits off, memory needs --pid, and the
/// restart is not measured. "Events" are the messages the run sends; rooms' creation state comes
/// on top.
#[derive(clap::Args)]
pub struct HistoryArgs {
    #[arg(long, value_enum, default_value = "one-room")]
    shape: ShapeArg,
    /// Events to grow to; the run stops at the largest checkpoint ≤ this (many-rooms: also at
    /// most --rooms × --events-per-room).
    #[arg(long, default_value_t = 1_000_000)]
    max_events: u64,
    /// Many-rooms shape: rooms grown.
    #[arg(long, default_value_t = 10_000)]
    rooms: usize,
    /// Many-rooms shape: messages per room.
    #[arg(long, default_value_t = 100)]
    events_per_room: u64,
    /// Event counts at which to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000,1000000")]
    checkpoints: Vec<u64>,
    /// Sends in flight at once while growing.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Size of each grown message's content JSON, bytes.
    #[arg(long, default_value_t = 100)]
    message_bytes: usize,
    /// Growing stops after this many seconds from the start; checkpoints not reached by then
    /// are reported as not reached.
    #[arg(long, default_value_t = 3600)]
    time_budget_s: u64,
    /// Incremental /sync requests (nothing new, timeout=0) per checkpoint.
    #[arg(long, default_value_t = 200)]
    sync_samples: usize,
    /// Rooms of the initial-sync user (created once at the start).
    #[arg(long, default_value_t = 100)]
    initial_sync_rooms: usize,
    /// Full initial /sync requests per checkpoint.
    #[arg(long, default_value_t = 20)]
    initial_sync_samples: usize,
    /// Requests per checkpoint for /event, each /messages page and /context.
    #[arg(long, default_value_t = 50)]
    read_samples: usize,
    /// Chat workload at each checkpoint: users (rooms of two), rooms, sends in flight, seconds.
    #[arg(long, default_value_t = 10)]
    chat_users: usize,
    #[arg(long, default_value_t = 5)]
    chat_rooms: usize,
    #[arg(long, default_value_t = 10)]
    chat_concurrency: usize,
    #[arg(long, default_value_t = 5)]
    chat_duration_s: u64,
    /// How long a restarted node may take to serve before the run fails, seconds.
    #[arg(long, default_value_t = 600)]
    restart_limit_s: u64,
    /// Homeserver base URL to measure instead of a local node (its rate limits must be off).
    #[arg(long, conflicts_with = "synapse")]
    url: Option<String>,
    /// With --url: the PID of the homeserver process on this machine, for its memory.
    #[arg(long, requires = "url")]
    pid: Option<u32>,
    /// Measure a local Synapse (SQLite, rate limits raised; installed from PyPI into
    /// .tools/synapse-venv on first use) instead of haetae, as far as --time-budget-s allows.
    #[arg(long)]
    synapse: bool,
    /// Write the whole report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn progress(line: &str) {
    eprintln!("bench history: {line}");
}

/// A private nats-server and a haetae node started by this command, stopped by PID when dropped
/// (the nats-server through its own guard).
struct OwnedNode {
    exe: PathBuf,
    dir: PathBuf,
    port: u16,
    nats: NatsProcess,
    node: Option<Child>,
}

impl OwnedNode {
    async fn start() -> Result<OwnedNode, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let dir = std::env::temp_dir().join(format!("haetae-history-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // Locked like `haetae serve`'s own engine: loopback only, a credential the node reads from
        // the file the launcher keeps (mode 0600).
        let (nats, _credential) = NatsProcess::start_private(dir.join("nats"), true, None, NATS_START_LIMIT).await.map_err(|e| e.to_string())?;
        let mut owned = OwnedNode { exe, dir, port: free_port()?, nats, node: None };
        owned.spawn()?;
        let http = haetae_workload::client::http_client();
        let deadline = Instant::now() + FIRST_START_LIMIT;
        loop {
            let answered = http.get(format!("{}/_matrix/client/versions", owned.url())).send().await;
            if answered.is_ok_and(|r| r.status().is_success()) {
                return Ok(owned);
            }
            if let Some(Ok(Some(status))) = owned.node.as_mut().map(Child::try_wait) {
                return Err(format!("the local node exited ({status}); its log: {}", owned.log().display()));
            }
            if Instant::now() > deadline {
                return Err(format!("the local node did not answer within {} s; its log: {}", FIRST_START_LIMIT.as_secs(), owned.log().display()));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> PathBuf {
        self.dir.join("node.log")
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log()).map_err(|e| format!("cannot open the node's log: {e}"))?;
        let child = Command::new(&self.exe)
            .args(["serve", "--no-rate-limits", "--listen", &format!("127.0.0.1:{}", self.port), "--nats-url", self.nats.url()])
            .arg("--nats-credentials-file")
            .arg(self.dir.join("nats").join(launcher::CREDENTIAL_FILE))
            .arg("--data-dir")
            .arg(self.dir.join("node"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().map_err(|e| e.to_string())?))
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| format!("cannot start a local node: {e}"))?;
        self.node = Some(child);
        Ok(())
    }

    /// SIGTERM, then waits for the exit (SIGKILL after [`STOP_LIMIT`]); returns how long it took.
    async fn stop(&mut self) -> Duration {
        let begun = Instant::now();
        let Some(mut child) = self.node.take() else { return Duration::ZERO };
        launcher::signal(child.id(), Signal::Terminate);
        while begun.elapsed() < STOP_LIMIT {
            if let Ok(Some(_)) = child.try_wait() {
                return begun.elapsed();
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        progress(&format!("the node did not exit within {} s of SIGTERM; killing it", STOP_LIMIT.as_secs()));
        let _ = child.kill();
        let _ = child.wait();
        begun.elapsed()
    }
}

impl NodeControl for OwnedNode {
    fn process(&self) -> Option<Process> {
        self.node.as_ref().map(|child| Process { pid: child.id() })
    }

    fn restart(&mut self) -> Restarting<'_> {
        Box::pin(async move {
            let stopped = self.stop().await;
            self.spawn()?;
            Ok(stopped)
        })
    }
}

impl Drop for OwnedNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.node.take() {
            launcher::signal(child.id(), Signal::Terminate);
            let deadline = Instant::now() + STOP_LIMIT;
            while Instant::now() < deadline && !matches!(child.try_wait(), Ok(Some(_))) {
                std::thread::sleep(POLL_INTERVAL);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // The nats-server's guard kills it when `self.nats` drops, after this.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Synapse started here (stopped by PID when dropped).
struct OwnedSynapse {
    server: synapse::Synapse,
}

impl NodeControl for OwnedSynapse {
    fn process(&self) -> Option<Process> {
        Some(Process { pid: self.server.pid() })
    }

    fn restart(&mut self) -> Restarting<'_> {
        Box::pin(self.server.restart())
    }
}

pub async fn history(args: HistoryArgs) -> Result<(), String> {
    tokio::select! {
        result = run(args) => result,
        // Returning drops the run, whose guards stop every process it started.
        _ = crate::shutdown_signal() => Err("interrupted; stopped the processes this run started".into()),
    }
}

async fn run(args: HistoryArgs) -> Result<(), String> {
    let mut config = HistoryConfig {
        endpoint: String::new(),
        shape: match args.shape {
            ShapeArg::OneRoom => Shape::OneRoom,
            ShapeArg::ManyRooms => Shape::ManyRooms,
        },
        max_events: args.max_events,
        rooms: args.rooms,
        events_per_room: args.events_per_room,
        checkpoints: args.checkpoints.clone(),
        concurrency: args.concurrency,
        body_bytes: args.message_bytes,
        time_budget: Duration::from_secs(args.time_budget_s),
        sync_samples: args.sync_samples,
        initial_sync_rooms: args.initial_sync_rooms,
        initial_sync_samples: args.initial_sync_samples,
        read_samples: args.read_samples,
        chat_users: args.chat_users,
        chat_rooms: args.chat_rooms,
        chat_concurrency: args.chat_concurrency,
        chat_duration: Duration::from_secs(args.chat_duration_s),
        restart_limit: Duration::from_secs(args.restart_limit_s),
        ..HistoryConfig::default()
    };
    if config.effective_checkpoints().is_empty() {
        return Err(format!("no checkpoint in {:?} is ≤ the {} events this run grows to", args.checkpoints, config.target_events()));
    }
    let build = if cfg!(debug_assertions) { "dev build" } else { "release build" };
    let (mut node, target): (Box<dyn NodeControl>, String) = if let Some(url) = &args.url {
        config.endpoint = url.clone();
        (Box::new(Remote { process: args.pid.map(|pid| Process { pid }) }), url.clone())
    } else if args.synapse {
        progress(&format!("starting Synapse {} (SQLite, rate limits raised)", synapse::SYNAPSE_VERSION));
        let work = std::env::temp_dir().join(format!("haetae-history-synapse-{}", std::process::id()));
        let server = synapse::start(&work, &progress).await?;
        config.endpoint = server.url.clone();
        (Box::new(OwnedSynapse { server }), format!("Synapse {}, SQLite", synapse::SYNAPSE_VERSION))
    } else {
        progress("starting a private nats-server (sync_interval: always) and a haetae node (rate limits off) as a child process");
        let owned = OwnedNode::start().await?;
        config.endpoint = owned.url();
        (Box::new(owned), format!("haetae, 1 node, R1 ({build})"))
    };
    let report = history::run(&config, node.as_mut(), &progress).await.map_err(|e| e.to_string())?;
    drop(node);

    let shape = match config.shape {
        Shape::OneRoom => "one room, 2 members, history_visibility joined".to_string(),
        Shape::ManyRooms => format!("{} rooms × {} events", config.rooms, config.events_per_room),
    };
    println!(
        "history: {target}; {shape}; {}-byte messages, {} in flight; chat {} users in {} rooms for {} s; {} events sent, {} acknowledged, {} failed; whole run {:.0} s",
        config.body_bytes, config.concurrency, config.chat_users, config.chat_rooms, args.chat_duration_s,
        report.events_sent, report.events_acknowledged, report.events_failed, report.total_s
    );
    println!();
    print!("{}", history::markdown(&report));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}
