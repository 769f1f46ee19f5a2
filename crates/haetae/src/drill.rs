//! `haetae drill`: starts a three-DC deployment, runs the Matrix workload through it, injects a
//! fault at a known instant, checks that nothing acknowledged was lost, and writes a report.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use haetae_cluster::{Deployment, deployment::ClusterError};
use haetae_store::admin::Admin;
use haetae_workload::drill::history::EngineFigures;
use haetae_workload::drill::login::{self, LoginConfig, LoginCounters, LoginRunning};
use haetae_workload::drill::workload::{self, DrillConfig, Running};
use haetae_workload::drill::{checker, incidents, report};

use crate::cluster::DeploymentArgs;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// SIGKILL every process of one DC and delete its data, then rebuild it from nothing.
    Fire,
    /// Burn the DC that leads the most event-log partitions.
    LeaderDcFire,
    /// Cut one DC's network (needs --netns), heal it later.
    Partition,
    /// Kill two DCs (power loss, disks kept): writes must be refused; bring one back, then the other.
    TwoDcsLost,
    /// Restart every DC gracefully, one after another.
    RollingRestart,
    /// Rotate every DC's server certificate and node password by a rolling restart.
    Rotate,
    /// No fault: the control run, to compare the others with.
    Baseline,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Fire => "fire",
            Scenario::LeaderDcFire => "leader-dc-fire",
            Scenario::Partition => "partition",
            Scenario::TwoDcsLost => "two-dcs-lost",
            Scenario::RollingRestart => "rolling-restart",
            Scenario::Rotate => "rotate",
            Scenario::Baseline => "baseline",
        }
    }
}

#[derive(clap::Args)]
pub struct DrillArgs {
    /// What goes wrong.
    #[arg(long, value_enum, default_value = "fire")]
    scenario: Scenario,
    /// The DC the fault hits (default: the first; `leader-dc-fire` picks its own).
    #[arg(long)]
    dc: Option<String>,
    /// Folder for the report (default: a fresh folder under ./drill-reports).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Run the scenario this many times, each on a fresh deployment, and print one table.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Users, homed round-robin in the DCs.
    #[arg(long, default_value_t = 24)]
    users: usize,
    /// Rooms, each with --room-size members.
    #[arg(long, default_value_t = 12)]
    rooms: usize,
    /// Members per room.
    #[arg(long, default_value_t = 4)]
    room_size: usize,
    /// Messages per second over all users.
    #[arg(long, default_value_t = 40.0)]
    rate: f64,
    /// Seconds of steady workload before the fault.
    #[arg(long, default_value_t = 5.0)]
    before_s: f64,
    /// Seconds the fault lasts before the rebuild, heal or restart.
    #[arg(long, default_value_t = 15.0)]
    fault_s: f64,
    /// Seconds of workload after recovery.
    #[arg(long, default_value_t = 8.0)]
    after_s: f64,
    /// How long a client waits on one DC before trying the next, seconds.
    #[arg(long, default_value_t = 3.0)]
    request_timeout_s: f64,
    /// Messages of history to grow before the drill (rooms of --history-events-per-room, owned by
    /// users homed in every DC), so that the fault and the rebuild happen with that much history
    /// underneath. 0: none.
    #[arg(long, default_value_t = 0)]
    history_events: u64,
    /// Messages per room of the grown history.
    #[arg(long, default_value_t = 100)]
    history_events_per_room: u64,
    /// Login sessions signed in (through the login pages) before the fault, refreshed through it
    /// and checked after it; 0 runs no login workload.
    #[arg(long, default_value_t = 30)]
    login_sessions: usize,
    /// New logins (the whole authorization code flow) per second over all DCs.
    #[arg(long, default_value_t = 1.5)]
    logins_per_s: f64,
    /// Refreshes of the login sessions per second over all of them.
    #[arg(long, default_value_t = 6.0)]
    refreshes_per_s: f64,
    #[command(flatten)]
    deployment: DeploymentArgs,
}

pub fn run(args: DrillArgs) -> Result<(), String> {
    if args.scenario == Scenario::Partition && !args.deployment.netns {
        return Err("the partition scenario cuts a DC's network: run it with --netns (as root, with iproute2)".into());
    }
    if args.repeat == 0 {
        return Err("--repeat must be at least 1".into());
    }
    if args.users == 0 || args.rooms == 0 || args.room_size == 0 || args.room_size > args.users || args.rate <= 0.0 {
        return Err("--users, --rooms, --room-size and --rate must be positive, and a room cannot be larger than --users".into());
    }
    if !(args.logins_per_s >= 0.0 && args.refreshes_per_s >= 0.0) {
        return Err("--logins-per-s and --refreshes-per-s cannot be negative".into());
    }
    let out = match &args.out {
        Some(out) => out.clone(),
        None => fresh_dir(args.scenario)?,
    };
    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    let mut failures = 0;
    for round in 1..=args.repeat {
        let dir = if args.repeat == 1 { out.clone() } else { out.join(format!("run-{round:02}")) };
        eprintln!("drill {}: run {round}/{} writing to {}", args.scenario.name(), args.repeat, dir.display());
        let outcome = runtime.block_on(drill_once(&args, &dir))?;
        if !outcome.passed {
            failures += 1;
        }
        rows.push(outcome.row);
        println!("{}", outcome.summary);
    }
    if args.repeat > 1 {
        let mut table = format!("{}\n", report::summary_header());
        for row in &rows {
            table.push_str(row);
            table.push('\n');
        }
        let path = out.join("summary.md");
        std::fs::write(&path, format!("# {} drills: {} runs\n\n{table}", args.scenario.name(), args.repeat))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!("\n{table}\n{} of {} runs passed; table in {}", args.repeat - failures, args.repeat, path.display());
    }
    if failures > 0 {
        return Err(format!("{failures} of {} drill runs FAILED the checks (see the reports)", args.repeat));
    }
    Ok(())
}

fn fresh_dir(scenario: Scenario) -> Result<PathBuf, String> {
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    for k in 0..1000 {
        let dir = PathBuf::from("drill-reports").join(format!("{}-{stamp}-{k}", scenario.name()));
        if !dir.exists() {
            return Ok(dir);
        }
    }
    Err("cannot find a fresh report folder under drill-reports".into())
}

struct Outcome {
    passed: bool,
    summary: String,
    row: String,
}

fn progress(line: &str) {
    eprintln!("drill: {line}");
}

async fn drill_once(args: &DrillArgs, dir: &Path) -> Result<Outcome, String> {
    let mut spec = args.deployment.spec(dir.join("deployment"))?;
    spec.homeserver_extra = incidents::NODE_CONFIG.to_string();
    let partitions = spec.partitions;
    let mut deployment = Deployment::up(spec, &progress).await.map_err(|e| e.to_string())?;
    let dcs: Vec<(String, String)> =
        deployment.state.dcs.iter().map(|dc| dc.name.clone()).zip(deployment.endpoints()).collect();
    let config = DrillConfig {
        dcs: dcs.clone(),
        users: args.users,
        rooms: args.rooms,
        room_size: args.room_size,
        rate_per_s: args.rate,
        request_timeout: Duration::from_secs_f64(args.request_timeout_s),
        ..DrillConfig::default()
    };
    let grown = if args.history_events > 0 {
        let endpoints: Vec<String> = dcs.iter().map(|(_, url)| url.clone()).collect();
        let grown = haetae_workload::history::grow(&endpoints, args.history_events, args.history_events_per_room, 64, &|line| progress(line))
            .await
            .map_err(|e| format!("growing the history before the drill: {e}"))?;
        progress(&format!(
            "history grown: {} events in {} rooms in {:.0} s ({:.0}/s)",
            grown.events_acknowledged,
            grown.rooms,
            grown.seconds,
            grown.events_acknowledged as f64 / grown.seconds.max(1e-9)
        ));
        Some(grown)
    } else {
        None
    };
    let population = workload::prepare(&config, &|line| progress(line)).await.map_err(|e| e.to_string())?;
    let login_config = LoginConfig {
        dcs: dcs.clone(),
        sessions: args.login_sessions,
        logins_per_s: args.logins_per_s,
        refreshes_per_s: args.refreshes_per_s,
        request_timeout: config.request_timeout,
        refresh_grace: Duration::from_secs(haetae_server::config::OauthConfig::default().refresh_grace_s),
        ..LoginConfig::default()
    };
    let logins = match args.login_sessions {
        0 => None,
        _ => Some(login::prepare(login_config.clone(), &|line| progress(line)).await.map_err(|e| e.to_string())?),
    };
    let mut incident_admin = incidents::register_admin(dcs.iter().map(|(_, url)| url.clone()).collect())
        .await
        .map_err(|e| format!("cannot register the drill's administrator: {e}"))?;
    let target = match (args.scenario, &args.dc) {
        (Scenario::LeaderDcFire, _) => most_leaders(&deployment).await?,
        (_, Some(name)) => deployment.dc_index(name).ok_or_else(|| format!("no DC named {name}"))?,
        (_, None) => 0,
    };
    let mut running = Running::start(config.clone(), population).await;
    let logins = logins.map(|population| LoginRunning::start(population, running.started_at()));
    let ticker = Ticker::start(running.counters.clone(), logins.as_ref().map(|l| l.counters.clone()), args.scenario.name());
    wait_s(args.before_s).await;

    // Who leads what, just before the fault.
    let leaders = deployment.assets().await.map_err(|e| e.to_string())?;
    let partition_leader: Vec<Option<String>> = (0..partitions)
        .map(|p| leaders.iter().find(|a| a.log_partition() == Some(p)).and_then(|a| a.leader.clone()))
        .collect();
    let mut engine = EngineFigures::default();
    // The live console, from a DC the fault spares, before and while it hits.
    let token = incident_admin.access_token.clone();
    // (`two-dcs-lost` takes the target and the next DC: the one before is spared by every fault.)
    let (spared, spared_url) = dcs[(target + dcs.len() - 1) % dcs.len()].clone();
    let mut console = vec![incidents::console_shot("before", &spared, &spared_url, &token, dir).await];
    let during = async {
        wait_s(args.fault_s / 2.0).await;
        incidents::console_shot("during", &spared, &spared_url, &token, dir).await
    };
    let (fault_dc, during) = tokio::join!(inject(args, &mut deployment, &mut running, target, &leaders, &mut engine), during);
    let fault_dc = fault_dc?;
    console.push(during);
    wait_s(args.after_s).await;
    let login_history = match logins {
        Some(logins) => {
            progress("stopping the logins; refreshing every login session at a DC other than its home");
            Some(logins.finish(Duration::from_secs(10)).await)
        }
        None => None,
    };
    progress("stopping the workload; letting every client sync to the end");
    let (mut history, population) = running.finish(args.scenario.name(), fault_dc, Duration::from_secs(20)).await;
    ticker.stop();
    for room in &mut history.rooms {
        let p = haetae_store::log::partition_of(&room.room_id, partitions) as usize;
        room.leader_dc_at_fault = partition_leader.get(p).cloned().flatten();
    }
    let live: Vec<bool> = (0..deployment.dc_count()).map(|i| deployment.running(i)).collect();
    progress("reading every room's timeline at every DC");
    if !workload::wait_caught_up(&population, &dcs, &live, Duration::from_secs(30)).await {
        progress("warning: a DC did not catch up within 30 s; its timelines may be short");
    }
    history.timelines = workload::read_timelines(&dcs, &population, &live).await;
    engine.notes.push(format!(
        "{} DCs ({}), R3 with one replica per DC, sync_interval: {}, {} log partitions, NATS {}{}",
        dcs.len(),
        if args.deployment.netns { "network namespaces" } else { "loopback" },
        args.deployment.sync_interval,
        partitions,
        if args.deployment.no_tls { "without TLS (credentials required)" } else { "with TLS and credentials" },
        if args.deployment.encrypt_at_rest { ", encrypted at rest" } else { "" }
    ));
    engine.notes.push(format!(
        "workload: {} users, {} rooms of {}, {} msg/s, client request timeout {} s, sync long-poll 500 ms",
        args.users, args.rooms, args.room_size, args.rate, args.request_timeout_s
    ));
    if let Some(grown) = &grown {
        engine.notes.push(format!(
            "history underneath: {} messages in {} rooms grown before the drill ({:.0} s, {:.0}/s)",
            grown.events_acknowledged,
            grown.rooms,
            grown.seconds,
            grown.events_acknowledged as f64 / grown.seconds.max(1e-9)
        ));
    }
    if login_history.is_some() {
        engine.notes.push(format!(
            "logins: {} sessions prepared (+{} set aside for the reuse check), {} logins/s, {} refreshes/s",
            login_config.sessions, login_config.reuse_sessions, args.logins_per_s, args.refreshes_per_s
        ));
    }
    history.engine = engine;
    history.login = login_history;
    let check = checker::check(&history);
    let figures = report::figures(&history);
    // A DC's fire must open an incident, close it after the rebuild and tell every user twice.
    let expected = matches!(args.scenario, Scenario::Fire | Scenario::LeaderDcFire);
    progress("checking the incident and every user's notices");
    let drill_figures = serde_json::json!({
        "acknowledged": figures.acknowledged,
        "failed_sends": figures.failed,
        "lost": check.lost.len(),
        "rebuild_catch_up_ms": history.engine.rebuild_catch_up_ms,
        "election_ms": history.engine.election_ms,
    });
    let incident = incidents::observe(
        &mut incident_admin,
        &history,
        &population.clients,
        &dcs,
        expected,
        drill_figures,
        dir,
        Duration::from_secs(90),
    )
    .await;
    // And after, from the DC the fault hit (rebuilt, healed or restarted).
    let (hit, hit_url) = dcs[target].clone();
    console.push(incidents::console_shot("after", &hit, &hit_url, &token, dir).await);
    let mut incident = incident;
    if expected {
        incident.problems.extend(incidents::console_problems(&console));
    }
    incident.console = console;
    deployment.down().await;

    let mut written = report::write_all(dir, &history, &check, &figures).map_err(|e| format!("cannot write the report: {e}"))?;
    let mut markdown = report::markdown(&history, &check, &figures);
    let section = incidents::markdown(&incident);
    markdown.push_str(&section);
    append_incident(dir, &section, &incident, &mut written)?;
    let mut summary = markdown.clone();
    summary.push_str("\nreport files:\n");
    for path in &written {
        summary.push_str(&format!("  {}\n", path.display()));
    }
    Ok(Outcome { passed: check.ok() && incident.problems.is_empty(), summary, row: report::summary_row(&history, &check, &figures) })
}

/// Adds the incident section to `report.md` and writes `incident.json`.
fn append_incident(dir: &Path, section: &str, incident: &incidents::IncidentFigures, written: &mut Vec<PathBuf>) -> Result<(), String> {
    let report_md = dir.join("report.md");
    let mut text = std::fs::read_to_string(&report_md).map_err(|e| format!("cannot read {}: {e}", report_md.display()))?;
    text.push_str(section);
    std::fs::write(&report_md, text).map_err(|e| format!("cannot write {}: {e}", report_md.display()))?;
    let path = dir.join("incident.json");
    let json = serde_json::to_string_pretty(incident).unwrap_or_default();
    std::fs::write(&path, json).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    written.push(path);
    Ok(())
}

async fn wait_s(seconds: f64) {
    tokio::time::sleep(Duration::from_secs_f64(seconds.max(0.0))).await;
}

/// The DC leading the most event-log partitions now.
async fn most_leaders(deployment: &Deployment) -> Result<usize, String> {
    let assets = deployment.assets().await.map_err(|e| e.to_string())?;
    let mut counts = vec![0usize; deployment.dc_count()];
    for asset in assets.iter().filter(|a| a.log_partition().is_some()) {
        if let Some(i) = asset.leader.as_deref().and_then(|l| deployment.dc_index(l)) {
            counts[i] += 1;
        }
    }
    Ok(counts.iter().enumerate().max_by_key(|(_, n)| **n).map(|(i, _)| i).unwrap_or(0))
}

/// Runs the scenario's fault (and its repair) while the workload keeps going. Returns the DC hit.
async fn inject(
    args: &DrillArgs,
    deployment: &mut Deployment,
    running: &mut Running,
    target: usize,
    leaders: &[haetae_store::admin::AssetInfo],
    engine: &mut EngineFigures,
) -> Result<Option<String>, String> {
    let name = deployment.state.dcs[target].name.clone();
    let err = |e: ClusterError| e.to_string();
    match args.scenario {
        Scenario::Fire | Scenario::LeaderDcFire => {
            let watcher = ElectionWatch::start(deployment, target, leaders, is_log_partition).await;
            let login_watcher = ElectionWatch::start(deployment, target, leaders, is_login_bucket).await;
            progress(&format!("FIRE in DC {name}: SIGKILL its nats-server and node, delete its disks"));
            running.mark(format!("fault: fire in DC {name}"));
            let fault_at = Instant::now();
            deployment.kill_dc(target, true).await.map_err(err)?;
            wait_s(args.fault_s).await;
            engine.election_ms = watcher.finish(fault_at).await;
            engine.login_election_ms = login_watcher.finish(fault_at).await;
            progress(&format!("rebuilding DC {name} from empty disks"));
            running.mark(format!("rebuild of DC {name} started"));
            let started = Instant::now();
            deployment.start_dc(target).await.map_err(err)?;
            engine.rebuild_catch_up_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
            running.mark(format!("DC {name} rebuilt and serving"));
        }
        Scenario::Partition => {
            let watcher = ElectionWatch::start(deployment, target, leaders, is_log_partition).await;
            let login_watcher = ElectionWatch::start(deployment, target, leaders, is_login_bucket).await;
            progress(&format!("PARTITION: cutting DC {name}'s network"));
            running.mark(format!("fault: DC {name} cut off"));
            let fault_at = Instant::now();
            deployment.cut(target).map_err(err)?;
            wait_s(args.fault_s).await;
            engine.election_ms = watcher.finish(fault_at).await;
            engine.login_election_ms = login_watcher.finish(fault_at).await;
            progress(&format!("healing DC {name}'s network"));
            running.mark(format!("DC {name} healed"));
            deployment.heal(target).map_err(err)?;
            let caught_up = deployment.wait_replicas_current(Duration::from_secs(120)).await.map_err(err)?;
            engine.rebuild_catch_up_ms = Some(caught_up.as_secs_f64() * 1000.0);
            running.mark(format!("DC {name} caught up"));
        }
        Scenario::TwoDcsLost => {
            let other = (target + 1) % deployment.dc_count();
            let other_name = deployment.state.dcs[other].name.clone();
            progress(&format!("TWO DCs LOST: killing DCs {name} and {other_name} (disks kept)"));
            running.mark(format!("fault: DCs {name} and {other_name} lost"));
            deployment.kill_dc(target, false).await.map_err(err)?;
            deployment.kill_dc(other, false).await.map_err(err)?;
            wait_s(args.fault_s).await;
            progress(&format!("DC {other_name} returns"));
            running.mark(format!("DC {other_name} returning"));
            let started = Instant::now();
            deployment.start_dc(other).await.map_err(err)?;
            running.mark(format!("DC {other_name} serving"));
            wait_s(args.fault_s / 2.0).await;
            progress(&format!("DC {name} returns"));
            running.mark(format!("DC {name} returning"));
            deployment.start_dc(target).await.map_err(err)?;
            engine.rebuild_catch_up_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
            running.mark(format!("DC {name} serving"));
        }
        Scenario::Baseline => {
            wait_s(args.fault_s).await;
            return Ok(None);
        }
        Scenario::RollingRestart | Scenario::Rotate => {
            let rotate = args.scenario == Scenario::Rotate;
            for i in 0..deployment.dc_count() {
                let dc = deployment.state.dcs[i].name.clone();
                if rotate {
                    progress(&format!("rotation: restarting DC {dc} gracefully with a new certificate and node password"));
                    running.mark(format!("fault: rotation of DC {dc}"));
                    deployment.rotate_dc(i).await.map_err(err)?;
                } else {
                    progress(&format!("rolling restart: stopping DC {dc} gracefully"));
                    running.mark(format!("fault: restart of DC {dc}"));
                    deployment.stop_dc(i).await.map_err(err)?;
                    deployment.start_dc(i).await.map_err(err)?;
                }
                deployment.balance_leaders(Duration::from_secs(10)).await.map_err(err)?;
                running.mark(format!("DC {dc} back"));
                wait_s(args.fault_s / 3.0).await;
            }
            return Ok(None);
        }
    }
    Ok(Some(name))
}

fn is_log_partition(asset: &haetae_store::admin::AssetInfo) -> bool {
    asset.log_partition().is_some()
}

/// The key-value buckets a login writes (sign-in, code, session, access token, device).
fn is_login_bucket(asset: &haetae_store::admin::AssetInfo) -> bool {
    ["kv/oauth_grants", "kv/oauth_sessions", "kv/tokens", "kv/devices"].contains(&asset.label.as_str())
}

/// Polls, from a surviving DC, the leaders of the streams (`which`: the event-log partitions, or
/// the login's buckets) the hit DC led, and notes when each had a new leader elsewhere: the
/// engine's own election time.
struct ElectionWatch {
    task: Option<tokio::task::JoinHandle<Option<Instant>>>,
}

impl ElectionWatch {
    async fn start(
        deployment: &Deployment,
        target: usize,
        leaders: &[haetae_store::admin::AssetInfo],
        which: fn(&haetae_store::admin::AssetInfo) -> bool,
    ) -> ElectionWatch {
        let dead = deployment.state.dcs[target].name.clone();
        let streams: Vec<String> = leaders
            .iter()
            .filter(|a| which(a) && a.leader.as_deref() == Some(dead.as_str()))
            .map(|a| a.stream.clone())
            .collect();
        let urls: Vec<String> =
            deployment.state.dcs.iter().enumerate().filter(|(i, _)| *i != target).map(|(_, dc)| dc.nats_url()).collect();
        let Ok(admin) = Admin::connect(&urls.join(","), &deployment.admin_access(), Duration::from_millis(300)).await else {
            return ElectionWatch { task: None };
        };
        let task = tokio::spawn(async move {
            let mut waiting = streams;
            // Let the fault happen first: only leaders seen after it count.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let deadline = Instant::now() + Duration::from_secs(120);
            while !waiting.is_empty() && Instant::now() < deadline {
                let mut still = Vec::new();
                for stream in waiting {
                    match admin.leader_of(&stream).await {
                        Ok(Some(leader)) if leader != dead => {}
                        _ => still.push(stream),
                    }
                }
                waiting = still;
                if !waiting.is_empty() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            waiting.is_empty().then(Instant::now)
        });
        ElectionWatch { task: Some(task) }
    }

    async fn finish(self, fault_at: Instant) -> Option<f64> {
        let done = self.task?.await.ok()??;
        Some(done.saturating_duration_since(fault_at).as_secs_f64() * 1000.0)
    }
}

/// Prints a progress line every second while the workload runs.
struct Ticker {
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Ticker {
    fn start(counters: Arc<workload::Counters>, logins: Option<Arc<LoginCounters>>, scenario: &'static str) -> Ticker {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let login = logins.as_ref().map_or(String::new(), |l| {
                    format!(
                        " logins {}/{} failed refreshes {}/{} failed",
                        l.logins_ok.load(Ordering::Relaxed),
                        l.logins_failed.load(Ordering::Relaxed),
                        l.refreshes_ok.load(Ordering::Relaxed),
                        l.refreshes_failed.load(Ordering::Relaxed)
                    )
                });
                eprintln!(
                    "drill {scenario}: t={:>5.1}s acknowledged {} failed {} retried-elsewhere {} received {}{login}",
                    started.elapsed().as_secs_f64(),
                    counters.acknowledged.load(Ordering::Relaxed),
                    counters.failed.load(Ordering::Relaxed),
                    counters.retried_elsewhere.load(Ordering::Relaxed),
                    counters.received.load(Ordering::Relaxed),
                );
            }
        });
        Ticker { stop }
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
