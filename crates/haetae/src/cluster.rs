//! `haetae cluster`: run a local multi-DC deployment in the foreground, and inspect or stop one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use haetae_cluster::supervisor::{FireRequest, Supervisor, SupervisorConfig};
use haetae_cluster::{Deployment, DeploymentSpec, Phase, State};
use haetae_store::launcher::{Signal, signal};

#[derive(clap::Subcommand)]
pub enum ClusterCommand {
    /// Start one nats-server and one haetae node per DC and supervise them until Ctrl-C.
    Up(UpArgs),
    /// Show DCs, processes, and where every replica and leader sits.
    Status(DirArgs),
    /// Stop the processes of a deployment started by `up` (by the PIDs in its state file).
    Down(DirArgs),
    /// Burn one DC of a running `up` deployment: the supervisor (`up`) SIGKILLs its processes,
    /// deletes its disks and rebuilds it from nothing. This command only asks, and reports.
    Fire(FireArgs),
}

#[derive(clap::Args)]
pub struct FireArgs {
    /// The deployment's directory (as given to `up`).
    #[arg(long, default_value = "cluster")]
    dir: PathBuf,
    /// The DC to burn.
    #[arg(long)]
    dc: String,
    /// Seconds the DC stays burned before the supervisor rebuilds it.
    #[arg(long, default_value_t = 0.0)]
    hold_s: f64,
    /// Also wait until the DC is back (replicas current, node serving).
    #[arg(long)]
    wait: bool,
}

#[derive(clap::Args, Clone)]
pub struct DeploymentArgs {
    /// DC names, comma-separated (at least three).
    #[arg(long, value_delimiter = ',', default_value = "a,b,c")]
    pub dcs: Vec<String>,
    /// One network namespace per DC (root only), so a DC can be cut off as well as killed.
    #[arg(long)]
    pub netns: bool,
    /// nats-server fsync policy: `always` (fsync every write; no loss on power failure) or
    /// `default` (the server's 2-minute interval).
    #[arg(long, default_value = "always", value_parser = ["always", "default"])]
    pub sync_interval: String,
    /// Event-log partitions (leaders are spread over the DCs).
    #[arg(long, default_value_t = 6)]
    pub partitions: u32,
    /// Matrix server name of the deployment.
    #[arg(long, default_value = "haetae.test")]
    pub server_name: String,
    /// Log filter of the haetae nodes (tracing syntax, e.g. `info` or
    /// `warn,haetae_server::rooms=trace` for each send's append and apply times).
    #[arg(long, default_value = "warn")]
    pub node_log: String,
    /// Plaintext client connections and routes, only to measure what TLS costs (credentials
    /// are still required). By default clients use TLS and routes mutual TLS with the
    /// deployment's own CA (in <dir>/pki).
    #[arg(long)]
    pub no_tls: bool,
    /// Encrypt what JetStream writes to disk (chacha20-poly1305) with a key generated into
    /// <dir>/pki/store.key. Protects disks and their copies; costs CPU on every write and read.
    #[arg(long)]
    pub encrypt_at_rest: bool,
}

impl DeploymentArgs {
    pub fn spec(&self, dir: PathBuf) -> Result<DeploymentSpec, String> {
        let binary = std::env::current_exe().map_err(|e| format!("cannot find the haetae binary: {e}"))?;
        let mut spec = DeploymentSpec::new(dir, binary);
        spec.dcs = self.dcs.clone();
        spec.netns = self.netns;
        spec.sync_always = self.sync_interval == "always";
        spec.partitions = self.partitions;
        spec.server_name = self.server_name.clone();
        spec.node_log = self.node_log.clone();
        spec.tls = !self.no_tls;
        spec.encrypt_at_rest = self.encrypt_at_rest;
        Ok(spec)
    }
}

#[derive(clap::Args)]
pub struct UpArgs {
    /// Directory for the deployment's data, logs and state file.
    #[arg(long, default_value = "cluster")]
    dir: PathBuf,
    /// A serving DC whose replicas stay behind without progress for this long gets its
    /// nats-server restarted on a clean disk.
    #[arg(long, default_value_t = 30)]
    stuck_after_s: u64,
    #[command(flatten)]
    deployment: DeploymentArgs,
}

#[derive(clap::Args)]
pub struct DirArgs {
    /// The deployment's directory (as given to `up`).
    #[arg(long, default_value = "cluster")]
    dir: PathBuf,
}

pub fn run(command: ClusterCommand) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        match command {
            ClusterCommand::Up(args) => up(args).await,
            ClusterCommand::Status(args) => {
                let state = State::load(&args.dir)?;
                print!("{}", haetae_cluster::status::report(&state).await);
                Ok(())
            }
            ClusterCommand::Down(args) => down(args),
            ClusterCommand::Fire(args) => fire(args),
        }
    })
}

/// How long `fire` waits for the supervisor to take its request (it waits while another DC
/// catches up), then to burn the DC, then (with `--wait`) for the DC to be back.
const FIRE_TAKE_DEADLINE: Duration = Duration::from_secs(300);
const FIRE_BURN_DEADLINE: Duration = Duration::from_secs(30);
const FIRE_BACK_DEADLINE: Duration = Duration::from_secs(300);
/// How long `down` waits for the supervisor to stop everything before it kills by PID.
const DOWN_DEADLINE: Duration = Duration::from_secs(20);

/// `HH:MM:SS` (UTC) for log lines.
fn clock() -> String {
    let seconds = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    format!("{:02}:{:02}:{:02}", seconds / 3600 % 24, seconds / 60 % 60, seconds % 60)
}

fn say(line: &str) {
    eprintln!("cluster {}: {line}", clock());
}

async fn up(args: UpArgs) -> Result<(), String> {
    if let Ok(state) = State::load(&args.dir) {
        if haetae_cluster::status::alive(Some(state.supervisor_pid)) && state.supervisor_pid != std::process::id() {
            return Err(format!("a deployment in {} is already running (supervisor PID {})", args.dir.display(), state.supervisor_pid));
        }
    }
    let spec = args.deployment.spec(args.dir.clone())?;
    // The stop signal is listened for from the first moment: SIGTERM (`cluster down`) or Ctrl-C
    // while starting must stop the processes started so far, not orphan them.
    let (stop_sender, mut stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        crate::shutdown_signal().await;
        say("stop requested");
        let _ = stop_sender.send(true);
        // Keep the sender alive: a dropped sender would read as a stop too, which it is anyway.
        std::future::pending::<()>().await;
    });
    let progress = |line: &str| say(line);
    let deployment = tokio::select! {
        biased;
        _ = stop.wait_for(|stopped| *stopped) => {
            // Dropping the half-started deployment SIGKILLs every process it had started.
            say("stopped while starting; every process started so far is killed");
            return Ok(());
        }
        started = Deployment::up(spec, &progress) => started.map_err(|e| e.to_string())?,
    };
    print!("{}", haetae_cluster::status::report(&deployment.state).await);
    println!("\nMatrix endpoints (any of them serves everything):");
    for (dc, endpoint) in deployment.state.dcs.iter().zip(deployment.endpoints()) {
        println!("  DC {}: {endpoint}", dc.name);
    }
    let dir = args.dir.display();
    let pki = State::pki_dir(&deployment.state.spec);
    println!(
        "NATS (TLS, credentials required): CA {}, admin credential {}",
        pki.join(haetae_store::pki::CA_CERT_FILE).display(),
        pki.join(haetae_cluster::deployment::ADMIN_CREDENTIAL_FILE).display()
    );
    println!("status: haetae cluster status --dir {dir}   fire: haetae cluster fire --dc NAME --dir {dir}");
    println!("stop: Ctrl-C here, or haetae cluster down --dir {dir}");
    let config = SupervisorConfig { stuck_after: Duration::from_secs(args.stuck_after_s.max(1)) };
    Supervisor::new(deployment, config, Arc::new(say)).run(stop).await;
    Ok(())
}

/// Reads the state file, retrying briefly: it is replaced atomically, but may be missing for a
/// moment on some filesystems.
fn load_state(dir: &Path) -> Result<State, String> {
    let mut last = String::new();
    for _ in 0..20 {
        match State::load(dir) {
            Ok(state) => return Ok(state),
            Err(error) => last = error,
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(last)
}

fn fire(args: FireArgs) -> Result<(), String> {
    let state = State::load(&args.dir)?;
    let index = state.dcs.iter().position(|dc| dc.name == args.dc).ok_or_else(|| {
        let names: Vec<&str> = state.dcs.iter().map(|dc| dc.name.as_str()).collect();
        format!("no DC named {} (the deployment has {})", args.dc, names.join(", "))
    })?;
    if !haetae_cluster::status::alive(Some(state.supervisor_pid)) {
        return Err(format!(
            "the deployment in {} is not running (no supervisor); start it with `haetae cluster up --dir {}`",
            args.dir.display(),
            args.dir.display()
        ));
    }
    if !args.hold_s.is_finite() || args.hold_s < 0.0 {
        return Err("--hold-s must be a number of seconds, 0 or more".into());
    }
    let burns_before = state.dcs[index].burns;
    let request = haetae_cluster::supervisor::request_fire(&args.dir, &FireRequest { dc: args.dc.clone(), hold_s: args.hold_s })?;
    println!("asked the supervisor (PID {}) to burn DC {}", state.supervisor_pid, args.dc);

    // 1. The supervisor takes the request (it may wait until every other DC is current).
    let started = Instant::now();
    let mut told = String::new();
    while request.exists() {
        let state = load_state(&args.dir)?;
        if !haetae_cluster::status::alive(Some(state.supervisor_pid)) {
            haetae_cluster::supervisor::withdraw(&request);
            return Err("the supervisor stopped before taking the request; nothing was burned".into());
        }
        if !state.activity.is_empty() && state.activity != told {
            println!("supervisor: {}", state.activity);
            told = state.activity.clone();
        }
        if started.elapsed() > FIRE_TAKE_DEADLINE {
            if haetae_cluster::supervisor::withdraw(&request) {
                return Err(format!(
                    "the supervisor did not take the request within {} s (it says: {}); request withdrawn, nothing was burned; see `haetae cluster status --dir {}`",
                    FIRE_TAKE_DEADLINE.as_secs(),
                    if told.is_empty() { "nothing" } else { &told },
                    args.dir.display()
                ));
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    // 2. It burns the DC.
    let taken = Instant::now();
    loop {
        let state = load_state(&args.dir)?;
        if state.dcs[index].burns > burns_before {
            break;
        }
        if taken.elapsed() > FIRE_BURN_DEADLINE || !haetae_cluster::status::alive(Some(state.supervisor_pid)) {
            return Err(format!(
                "the supervisor took the request but did not report DC {} burned within {} s; see its output and `haetae cluster status --dir {}`",
                args.dc,
                FIRE_BURN_DEADLINE.as_secs(),
                args.dir.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let data = Deployment::dc_data_dir(&state, &args.dc);
    println!("DC {} burned: processes SIGKILLed, {} deleted; the supervisor rebuilds it", args.dc, data.display());
    if !args.wait {
        println!("watch it come back: haetae cluster status --dir {}", args.dir.display());
        return Ok(());
    }

    // 3. With --wait: it is back.
    let burned = Instant::now();
    let deadline = FIRE_BACK_DEADLINE + Duration::from_secs_f64(args.hold_s);
    loop {
        let state = load_state(&args.dir)?;
        let dc = &state.dcs[index];
        if dc.phase == Phase::Serving {
            println!("DC {} is back: replicas current, node serving, {:.1} s after the burn", args.dc, burned.elapsed().as_secs_f64());
            return Ok(());
        }
        if !haetae_cluster::status::alive(Some(state.supervisor_pid)) {
            return Err(format!("the supervisor stopped before DC {} was back", args.dc));
        }
        if !state.activity.is_empty() && state.activity != told {
            println!("supervisor: {}", state.activity);
            told = state.activity.clone();
        }
        if burned.elapsed() > deadline {
            return Err(format!(
                "DC {} is not back {} s after the burn (phase: {}; supervisor: {}); the supervisor keeps trying, see `haetae cluster status --dir {}`",
                args.dc,
                deadline.as_secs(),
                dc.phase.as_str(),
                state.activity,
                args.dir.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// True when `pid` runs a command line holding every one of `needles`: a PID from the state file
/// is signalled only if it is still the process the deployment started (PIDs get reused).
fn runs(pid: u32, needles: &[&str]) -> bool {
    let Ok(bytes) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let cmdline = String::from_utf8_lossy(&bytes).replace('\0', " ");
    needles.iter().all(|needle| cmdline.contains(needle))
}

/// The deployment's DC processes still alive, by the PIDs in the state file: (pid, what).
fn leftover_processes(state: &State) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for dc in &state.dcs {
        let folder = format!("dc-{}", dc.name);
        for (pid, file, what) in [(dc.nats_pid, "nats.conf", "nats-server"), (dc.node_pid, "node.toml", "node")] {
            if let Some(pid) = pid.filter(|pid| runs(*pid, &[&folder, file])) {
                found.push((pid, format!("the {what} of DC {} (PID {pid})", dc.name)));
            }
        }
    }
    found
}

fn down(args: DirArgs) -> Result<(), String> {
    let state = State::load(&args.dir)?;
    let supervisor = state.supervisor_pid;
    let started = Instant::now();
    if haetae_cluster::status::alive(Some(supervisor)) && runs(supervisor, &["cluster", "up"]) {
        // The supervisor stops every DC on SIGTERM, in whatever state it is.
        signal(supervisor, Signal::Terminate);
        println!("asked the supervisor (PID {supervisor}) to stop the deployment");
        while haetae_cluster::status::alive(Some(supervisor)) && started.elapsed() < DOWN_DEADLINE {
            std::thread::sleep(Duration::from_millis(50));
        }
        if haetae_cluster::status::alive(Some(supervisor)) {
            println!(
                "the supervisor did not stop within {} s; killing it and the deployment's processes by PID",
                DOWN_DEADLINE.as_secs()
            );
            signal(supervisor, Signal::Kill);
        }
    } else {
        println!("the supervisor of {} is not running", args.dir.display());
    }
    let state = load_state(&args.dir).unwrap_or(state);
    let leftovers = leftover_processes(&state);
    for (pid, what) in &leftovers {
        println!("killing {what}, left running");
        signal(*pid, Signal::Kill);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while leftovers.iter().any(|(pid, _)| haetae_cluster::status::alive(Some(*pid))) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let survivors: Vec<&str> =
        leftovers.iter().filter(|(pid, _)| haetae_cluster::status::alive(Some(*pid))).map(|(_, what)| what.as_str()).collect();
    if !survivors.is_empty() {
        return Err(format!("still running after SIGKILL: {}", survivors.join(", ")));
    }
    println!("deployment in {} stopped ({:.1} s)", args.dir.display(), started.elapsed().as_secs_f64());
    Ok(())
}
