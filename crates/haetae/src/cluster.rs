//! `haetae cluster`: run a local multi-DC deployment in the foreground, and inspect or stop one.

use std::path::PathBuf;
use std::time::Duration;

use haetae_cluster::{Deployment, DeploymentSpec, State};

#[derive(clap::Subcommand)]
pub enum ClusterCommand {
    /// Start one nats-server and one haetae node per DC and supervise them until Ctrl-C.
    Up(UpArgs),
    /// Show DCs, processes, and where every replica and leader sits.
    Status(DirArgs),
    /// Stop the processes of a deployment started by `up` (by the PIDs in its state file).
    Down(DirArgs),
    /// Burn one DC of a running `up` deployment: SIGKILL its processes and delete its disks.
    /// The supervisor (`up`) notices and rebuilds it from nothing.
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
        Ok(spec)
    }
}

#[derive(clap::Args)]
pub struct UpArgs {
    /// Directory for the deployment's data, logs and state file.
    #[arg(long, default_value = "cluster")]
    dir: PathBuf,
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

async fn up(args: UpArgs) -> Result<(), String> {
    if let Ok(state) = State::load(&args.dir) {
        if haetae_cluster::status::alive(Some(state.supervisor_pid)) && state.supervisor_pid != std::process::id() {
            return Err(format!("a deployment in {} is already running (supervisor PID {})", args.dir.display(), state.supervisor_pid));
        }
    }
    let spec = args.deployment.spec(args.dir.clone())?;
    let progress = |line: &str| eprintln!("cluster: {line}");
    let mut deployment = Deployment::up(spec, &progress).await.map_err(|e| e.to_string())?;
    print!("{}", haetae_cluster::status::report(&deployment.state).await);
    println!("\nMatrix endpoints (any of them serves everything):");
    for (dc, endpoint) in deployment.state.dcs.iter().zip(deployment.endpoints()) {
        println!("  DC {}: {endpoint}", dc.name);
    }
    println!("status: haetae cluster status --dir {}   stop: Ctrl-C here, or haetae cluster down --dir {}", args.dir.display(), args.dir.display());
    let mut interrupt = std::pin::pin!(crate::shutdown_signal());
    loop {
        tokio::select! {
            _ = &mut interrupt => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                // A node that died on its own (or was killed) is started again: the supervisor
                // is the "no command needed" rebuild path.
                for i in deployment.exited() {
                    let name = deployment.state.dcs[i].name.clone();
                    eprintln!("cluster: a process of DC {name} exited; restarting the DC (on whatever its disks still hold)");
                    let started = std::time::Instant::now();
                    match deployment.start_dc(i).await {
                        Ok(_) => eprintln!("cluster: DC {name} is back, replicas current and node serving, after {:.1} s", started.elapsed().as_secs_f64()),
                        Err(error) => eprintln!("cluster: restarting DC {name} failed: {error}"),
                    }
                }
            }
        }
    }
    eprintln!("cluster: stopping");
    deployment.down().await;
    Ok(())
}

fn down(args: DirArgs) -> Result<(), String> {
    let state = State::load(&args.dir)?;
    if haetae_cluster::status::alive(Some(state.supervisor_pid)) {
        // The supervisor stops its DCs gracefully on SIGTERM.
        haetae_store::launcher::signal(state.supervisor_pid, haetae_store::launcher::Signal::Terminate);
        println!("asked the supervisor (PID {}) to stop the deployment", state.supervisor_pid);
    } else {
        println!("the deployment in {} is not running", args.dir.display());
    }
    Ok(())
}

fn fire(args: FireArgs) -> Result<(), String> {
    let state = State::load(&args.dir)?;
    let dc = state.dcs.iter().find(|dc| dc.name == args.dc).ok_or_else(|| {
        let names: Vec<&str> = state.dcs.iter().map(|dc| dc.name.as_str()).collect();
        format!("no DC named {} (the deployment has {})", args.dc, names.join(", "))
    })?;
    if !haetae_cluster::status::alive(Some(state.supervisor_pid)) {
        return Err(format!("the deployment in {} is not running", args.dir.display()));
    }
    for pid in [dc.node_pid, dc.nats_pid].into_iter().flatten() {
        if haetae_cluster::status::alive(Some(pid)) {
            haetae_store::launcher::signal(pid, haetae_store::launcher::Signal::Kill);
        }
    }
    let data = Deployment::dc_data_dir(&state, &dc.name);
    // The processes are gone a moment after SIGKILL; the disks go with them.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while [dc.node_pid, dc.nats_pid].iter().any(|pid| haetae_cluster::status::alive(*pid)) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if data.exists() {
        std::fs::remove_dir_all(&data).map_err(|e| format!("cannot delete {}: {e}", data.display()))?;
    }
    println!("DC {} burned: processes killed, {} deleted; the supervisor rebuilds it (watch `haetae cluster status --dir {}`)", dc.name, data.display(), args.dir.display());
    Ok(())
}
