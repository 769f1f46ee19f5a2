//! `haetae deploy`: writes the files of a three-DC deployment on real hosts (see
//! `haetae_cluster::deploy`), and says where each goes.

use std::path::PathBuf;

use haetae_cluster::deploy::{HTTP_PORT, HostsSpec};

#[derive(clap::Args)]
pub struct DeployArgs {
    /// Where to write the files: dc-<name>/config (for the host's config folder),
    /// dc-<name>/systemd (for /etc/systemd/system), operator/ (the CA key and the admin
    /// credential: keep them off the hosts).
    #[arg(long, default_value = "deploy")]
    out: PathBuf,
    /// A DC and the address its host is reached at, NAME=ADDRESS (IP or DNS name); give three.
    #[arg(long = "dc", value_name = "NAME=ADDRESS", required = true)]
    dcs: Vec<String>,
    /// Matrix server name (the part after ':' in user ids). Fixed for the deployment's life.
    #[arg(long)]
    server_name: String,
    /// Event-log partitions. Fixed for the deployment's life.
    #[arg(long, default_value_t = 6)]
    partitions: u32,
    /// nats-server fsync policy: `always` (no loss on power failure) or `default` (2 minutes).
    #[arg(long, default_value = "always", value_parser = ["always", "default"])]
    sync_interval: String,
    /// Encrypt JetStream's files (chacha20-poly1305); the key goes to each host's store.env.
    #[arg(long)]
    encrypt_at_rest: bool,
    /// The config folder on the hosts (`{dc}` is replaced by the DC's name).
    #[arg(long, default_value = "/etc/haetae")]
    config_dir: String,
    /// The data folder on the hosts (`{dc}` as above).
    #[arg(long, default_value = "/var/lib/haetae")]
    data_dir: String,
    /// The haetae binary on the hosts.
    #[arg(long, default_value = "/usr/local/bin/haetae")]
    haetae_binary: String,
    /// The nats-server binary on the hosts.
    #[arg(long, default_value = "/usr/local/bin/nats-server")]
    nats_binary: String,
    /// The system user the services run as.
    #[arg(long, default_value = "haetae")]
    user: String,
}

pub fn run(args: DeployArgs) -> Result<(), String> {
    let mut dcs = Vec::new();
    for entry in &args.dcs {
        let (name, address) = entry.split_once('=').ok_or_else(|| format!("--dc takes NAME=ADDRESS, e.g. a=10.0.1.10; got {entry}"))?;
        dcs.push((name.trim().to_string(), address.trim().to_string()));
    }
    let mut spec = HostsSpec::new(args.out.clone(), dcs);
    spec.server_name = args.server_name;
    spec.partitions = args.partitions;
    spec.sync_always = args.sync_interval == "always";
    spec.encrypt_at_rest = args.encrypt_at_rest;
    spec.config_dir = args.config_dir;
    spec.data_dir = args.data_dir;
    spec.haetae_binary = args.haetae_binary;
    spec.nats_binary = args.nats_binary;
    spec.user = args.user;
    let written = haetae_cluster::deploy::generate(&spec).map_err(|e| e.to_string())?;
    let out = args.out.display();
    println!("wrote the files of {} DCs to {out}:", written.len());
    for dc in &written {
        println!(
            "  DC {} ({}): copy {}/ to {} and {}/ to /etc/systemd/system, then\n    systemctl daemon-reload && systemctl enable --now haetae-nats haetae",
            dc.name,
            dc.host,
            dc.config.display(),
            spec.config_dir.replace("{dc}", &dc.name),
            dc.systemd.display()
        );
    }
    println!("  operator: {out}/operator holds the CA's key and the admin credential; keep them off the hosts.");
    println!("Start the nats-servers of all three DCs first, then the nodes (the first one creates the streams).");
    println!("Each node serves the Matrix API on port {HTTP_PORT} of its host; put a TLS reverse proxy in front.");
    Ok(())
}
