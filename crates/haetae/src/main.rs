//! The `haetae` binary: a thin command-line wrapper around the server and store crates.

mod admin;
mod incident;
mod bench;
mod cluster;
mod deploy;
mod drill;
mod config;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's allocator: a node frees millions of small objects as it evicts
/// cached history, and glibc's heap then fragments, keeps the freed memory and slows down (at
/// 1,000,000 events in 10,000 rooms a third of a node's CPU was in glibc's free-list upkeep).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use haetae_store::launcher::{NatsProcess, STORE_KEY_ENV, StoreKey};

use crate::config::Config;

/// haetae: a Matrix homeserver that keeps running when a data center burns.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a homeserver node (with a private nats-server unless --nats-url is given).
    Serve(ServeArgs),
    /// Measure throughput and latency with the shared Matrix workload.
    Bench {
        #[command(subcommand)]
        workload: bench::Workload,
    },
    /// A local multi-DC deployment: one nats-server and one node per DC.
    Cluster {
        #[command(subcommand)]
        command: cluster::ClusterCommand,
    },
    /// Write the files of a three-DC deployment on real hosts: per DC the nats-server config,
    /// certificates, credentials, haetae config and systemd units.
    Deploy(deploy::DeployArgs),
    /// Fire drill: run the workload on three DCs, inject a fault, check nothing acknowledged was
    /// lost, and write a report (Markdown, JSON, timeline chart).
    Drill(drill::DrillArgs),
    /// The admin API from a terminal: users, devices, rooms (talks HTTP to any node).
    Admin(admin::AdminArgs),
    /// Incidents the nodes detected: list, show, report (talks HTTP to any node).
    Incident(incident::IncidentArgs),
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML configuration file (print an example with `haetae config example`).
    #[arg(long, short, env = "HAETAE_CONFIG")]
    config: Option<PathBuf>,
    /// HTTP listen address, e.g. 127.0.0.1:8008.
    #[arg(long, env = "HAETAE_LISTEN")]
    listen: Option<String>,
    /// Directory for the embedded nats-server's data.
    #[arg(long, env = "HAETAE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// NATS URL(s) of an existing deployment, e.g. nats://user:password@host:4222; without it
    /// haetae starts its own nats-server (loopback only, with a generated credential).
    #[arg(long, env = "HAETAE_NATS_URL")]
    nats_url: Option<String>,
    /// File with the credential for --nats-url: {"user": "...", "password": "..."}.
    #[arg(long, env = "HAETAE_NATS_CREDENTIALS_FILE")]
    nats_credentials_file: Option<PathBuf>,
    /// CA certificate (PEM) of the deployment for --nats-url: NATS connections then require TLS
    /// and trust this CA only.
    #[arg(long, env = "HAETAE_NATS_TLS_CA")]
    nats_tls_ca: Option<PathBuf>,
    /// Matrix server name (the part after ':' in user ids).
    #[arg(long, env = "HAETAE_SERVER_NAME")]
    server_name: Option<String>,
    /// Replicas of every JetStream asset (3 for a three-DC deployment).
    #[arg(long, env = "HAETAE_REPLICAS")]
    replicas: Option<usize>,
    /// Turn rate limiting off (benchmarks, drills).
    #[arg(long)]
    no_rate_limits: bool,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print a commented configuration file with every setting at its default.
    Example,
    /// Print the configuration a `serve` with these arguments would use, as TOML.
    Show(ServeArgs),
}

fn resolve(args: &ServeArgs) -> Result<Config, String> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(listen) = &args.listen {
        config.listen = listen.clone();
    }
    if let Some(dir) = &args.data_dir {
        config.data_dir = dir.clone();
    }
    if let Some(url) = &args.nats_url {
        config.nats.url = url.clone();
    }
    if let Some(path) = &args.nats_credentials_file {
        config.nats.credentials_file = Some(path.clone());
    }
    if let Some(path) = &args.nats_tls_ca {
        config.nats.tls_ca_file = Some(path.clone());
    }
    if let Some(name) = &args.server_name {
        config.homeserver.server_name = name.clone();
    }
    if let Some(replicas) = args.replicas {
        config.nats.replicas = replicas;
    }
    if args.no_rate_limits {
        config.homeserver.rate_limits.enabled = false;
    }
    Ok(config)
}

fn main() {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Serve(args) => match resolve(&args) {
            Ok(config) => serve(config),
            Err(error) => Err(error),
        },
        Command::Bench { workload } => bench::run(workload),
        Command::Cluster { command } => cluster::run(command),
        Command::Drill(args) => drill::run(args),
        Command::Deploy(args) => deploy::run(args),
        Command::Admin(args) => admin::run(args),
        Command::Incident(args) => incident::run(args),
        Command::Config { command: ConfigCommand::Example } => {
            print!("{}", config::EXAMPLE);
            Ok(())
        }
        Command::Config { command: ConfigCommand::Show(args) } => resolve(&args).and_then(|mut config| {
            // A password given in the URL is not printed.
            config.nats.url = haetae_store::redact_url(&config.nats.url);
            toml::to_string(&config).map(|text| print!("{text}")).map_err(|e| e.to_string())
        }),
    };
    if let Err(error) = outcome {
        eprintln!("haetae: {error}");
        std::process::exit(1);
    }
}

fn serve(config: Config) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log).map_err(|e| format!("invalid log filter: {e}"))?;
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let mut embedded = None;
        let mut store_config = config.store_config();
        let url = if config.nats.url.is_empty() {
            if let Some(path) = &config.nats.credentials_file {
                return Err(format!(
                    "nats.credentials_file ({}) is for --nats-url; the private nats-server uses the credential it generates",
                    path.display()
                ));
            }
            if let Some(path) = &config.nats.tls_ca_file {
                return Err(format!(
                    "nats.tls_ca_file ({}) is for --nats-url; the private nats-server listens on loopback without TLS",
                    path.display()
                ));
            }
            let store_key = match (&config.nats.store_key_file, std::env::var(STORE_KEY_ENV)) {
                (Some(path), _) => Some(StoreKey::read(path)?),
                (None, Ok(text)) => Some(StoreKey::new(&text).map_err(|e| format!("{STORE_KEY_ENV}: {e}"))?),
                (None, Err(_)) => None,
            };
            let encrypted = store_key.is_some();
            let (process, credential) = NatsProcess::start_private(
                config.data_dir.join("nats"),
                config.nats.sync_always,
                store_key,
                Duration::from_secs(30),
            )
            .await
            .map_err(|e| e.to_string())?;
            if encrypted {
                tracing::info!("JetStream's files are encrypted at rest");
            }
            tracing::info!(url = process.url(), pid = process.pid(), "started the private nats-server (loopback only, credential required)");
            let url = process.url().to_string();
            store_config.credential = Some(credential);
            embedded = Some(process);
            url
        } else {
            if let Some(path) = &config.nats.credentials_file {
                store_config.credential = Some(haetae_store::Credential::read(path).map_err(|e| e.to_string())?);
            }
            if let Some(path) = &config.nats.store_key_file {
                return Err(format!(
                    "nats.store_key_file ({}) is for the private nats-server; a deployment's servers hold their own key",
                    path.display()
                ));
            }
            tracing::info!(url = %haetae_store::redact_url(&config.nats.url), "connecting to NATS");
            config.nats.url.clone()
        };
        let store = haetae_store::Store::connect(&url, store_config).await.map_err(|e| e.to_string())?;
        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
        let node = haetae_server::Node::start(store, config.homeserver.clone()).await.map_err(|e| e.to_string())?;
        let address = listener.local_addr().map_err(|e| e.to_string())?;
        println!("haetae is serving the Matrix API at http://{address}");
        println!("  server name: {}", config.homeserver.server_name);
        println!("  connect a client (Element, Cinny, Hydrogen) with homeserver URL http://{address}");
        println!("  register a user in the client, or: curl -XPOST http://{address}/_matrix/client/v3/register -d '{{\"username\":\"alice\",\"password\":\"...\",\"auth\":{{\"type\":\"m.login.dummy\"}}}}'");
        println!("  stop with Ctrl-C");
        node.serve(listener, shutdown_signal()).await.map_err(|e| e.to_string())?;
        tracing::info!("stopping");
        if let Some(process) = embedded {
            process.stop(Duration::from_secs(10)).await;
        }
        Ok(())
    })
}

pub(crate) async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => {
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
