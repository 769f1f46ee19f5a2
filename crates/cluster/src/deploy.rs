//! The files of a deployment on real hosts (one per DC): what `haetae deploy` writes, so that an
//! operator with three machines (or three cloud regions) runs what `cluster up` runs locally.
//!
//! Owns the layout of the output folder and the contents of every file: per DC the nats-server
//! config, its certificate and key, the CA certificate, the node's credential and haetae config,
//! the store key's environment file (with encryption at rest), and two systemd units; for the
//! operator, the CA's key and the admin and route credentials, which no host needs. Never starts
//! anything and never talks to a host: copying the files is the operator's (or a configuration
//! management tool's) business.

use std::path::{Path, PathBuf};

use haetae_store::launcher::{ClusterSpec, NatsUser, STORE_KEY_ENV, ServerSecurity, ServerSpec, StoreKey};
use haetae_store::pki::{Authority, TlsFiles};
use haetae_store::Credential;

use crate::ClusterError;

/// Ports every DC's processes use (the hosts differ, so the ports can be the same).
pub const CLIENT_PORT: u16 = 4222;
pub const ROUTE_PORT: u16 = 6222;
pub const MONITOR_PORT: u16 = 8222;
pub const HTTP_PORT: u16 = 8008;

/// What to generate.
#[derive(Clone, Debug)]
pub struct HostsSpec {
    /// Where the files go: `<out>/dc-<name>/config` (for the host's config folder),
    /// `<out>/dc-<name>/systemd`, and `<out>/operator`.
    pub out: PathBuf,
    /// Per DC: its name and the address (IP or DNS name) the other DCs and the clients reach its
    /// host at.
    pub dcs: Vec<(String, String)>,
    pub server_name: String,
    pub partitions: u32,
    pub sync_always: bool,
    pub encrypt_at_rest: bool,
    /// On the hosts: the folder the config files are copied to. `{dc}` is replaced by the DC's
    /// name (for trying several DCs on one machine).
    pub config_dir: String,
    /// On the hosts: where nats-server keeps its data (`{dc}` as above).
    pub data_dir: String,
    /// On the hosts: the two binaries.
    pub haetae_binary: String,
    pub nats_binary: String,
    /// The system user the services run as.
    pub user: String,
}

impl HostsSpec {
    pub fn new(out: impl Into<PathBuf>, dcs: Vec<(String, String)>) -> HostsSpec {
        HostsSpec {
            out: out.into(),
            dcs,
            server_name: "example.org".into(),
            partitions: 6,
            sync_always: true,
            encrypt_at_rest: false,
            config_dir: "/etc/haetae".into(),
            data_dir: "/var/lib/haetae".into(),
            haetae_binary: "/usr/local/bin/haetae".into(),
            nats_binary: "/usr/local/bin/nats-server".into(),
            user: "haetae".into(),
        }
    }
}

/// The files one DC's host needs, where they were written.
#[derive(Clone, Debug)]
pub struct DcFiles {
    pub name: String,
    pub host: String,
    /// Written here; belongs in `config_dir` on the host.
    pub config: PathBuf,
    /// Written here; belongs in `/etc/systemd/system` on the host.
    pub systemd: PathBuf,
    /// The paths as the host sees them.
    pub nats_config: String,
    pub haetae_config: String,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ClusterError {
    let path = path.to_path_buf();
    move |source| ClusterError::Io { path, source }
}

fn write(path: &Path, text: &str, private: bool) -> Result<(), ClusterError> {
    std::fs::write(path, text).map_err(io(path))?;
    if private {
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).map_err(io(path))?;
    }
    Ok(())
}

/// Writes every file. Running it again reuses the CA, the credentials and the store key in
/// `<out>/operator` and reissues the server certificates (so a changed address is picked up).
pub fn generate(spec: &HostsSpec) -> Result<Vec<DcFiles>, ClusterError> {
    if spec.dcs.len() < 3 {
        return Err(ClusterError::Invalid(format!("three DCs are the minimum for R3 with one replica per DC; got {}", spec.dcs.len())));
    }
    for (name, host) in &spec.dcs {
        let valid_name = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !valid_name || host.is_empty() || host.contains(['/', ' ', '"']) {
            return Err(ClusterError::Invalid(format!("a DC is NAME=ADDRESS with an alphanumeric name and a host address; got {name}={host}")));
        }
    }
    let operator = spec.out.join("operator");
    let secret = |e: String| ClusterError::Invalid(format!("cannot prepare the deployment's credentials: {e}"));
    let authority = Authority::load_or_create(&operator, "haetae deployment CA").map_err(|e| secret(e.to_string()))?;
    let credential = |file: &str, user: &str| {
        Credential::load_or_create_for(&operator.join(file), user).map_err(|e| secret(e.to_string()))
    };
    let admin = credential("admin.json", "admin")?;
    let route = credential("route.json", "route")?;
    let mut nodes = Vec::new();
    for (name, _) in &spec.dcs {
        nodes.push(credential(&format!("node-{name}.json"), &format!("node-{name}"))?);
    }
    let store_key = if spec.encrypt_at_rest {
        let path = operator.join("store.key");
        if !path.exists() {
            write(&path, &format!("{}\n", StoreKey::generate().expose()), true)?;
        }
        Some(StoreKey::read(&path).map_err(secret)?)
    } else {
        None
    };
    let mut users = vec![NatsUser { credential: admin, permissions: None }];
    for node in &nodes {
        let permissions = haetae_store::permissions::node_permissions(node.user(), spec.partitions);
        users.push(NatsUser { credential: node.clone(), permissions: Some(permissions) });
    }

    let mut written = Vec::new();
    for (i, (name, host)) in spec.dcs.iter().enumerate() {
        let on_host = |template: &str| template.replace("{dc}", name);
        let config_dir = on_host(&spec.config_dir);
        let data_dir = on_host(&spec.data_dir);
        let local = spec.out.join(format!("dc-{name}"));
        let config = local.join("config");
        let systemd = local.join("systemd");
        for dir in [&config, &systemd] {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o700)).map_err(io(&config))?;
        // Issued for the DC's address, then named as its config names it.
        let issued =
            authority.issue_server(&config, &format!("dc-{name}"), std::slice::from_ref(host)).map_err(|e| secret(e.to_string()))?;
        std::fs::rename(&issued.cert, config.join("server.pem")).map_err(io(&issued.cert))?;
        std::fs::rename(&issued.key, config.join("server-key.pem")).map_err(io(&issued.key))?;
        std::fs::copy(authority.cert_path(), config.join("ca.pem")).map_err(io(&config.join("ca.pem")))?;
        let on_host_path = |file: &str| format!("{config_dir}/{file}");
        let tls = TlsFiles {
            cert: on_host_path("server.pem").into(),
            key: on_host_path("server-key.pem").into(),
            ca: on_host_path("ca.pem").into(),
        };
        let server = ServerSpec {
            name: name.clone(),
            host: host.clone(),
            client_port: CLIENT_PORT,
            dir: format!("{data_dir}/nats").into(),
            sync_always: spec.sync_always,
            cluster: Some(ClusterSpec {
                name: "haetae".into(),
                route_port: ROUTE_PORT,
                routes: spec
                    .dcs
                    .iter()
                    .filter(|(other, _)| other != name)
                    .map(|(_, other_host)| format!("nats-route://{other_host}:{ROUTE_PORT}"))
                    .collect(),
                unique_tag: Some("dc:".into()),
            }),
            tags: vec![format!("dc:{name}")],
            monitor_port: MONITOR_PORT,
            monitor_host: Some("127.0.0.1".into()),
            netns: None,
            security: ServerSecurity { users: users.clone(), tls: Some(tls), route_credential: Some(route.clone()) },
            store_key: store_key.clone(),
        };
        write(&config.join("nats.conf"), &server.config_text(), true)?;
        haetae_store::credential::write_file(&config.join("node.json"), &nodes[i]).map_err(|e| secret(e.to_string()))?;
        write(&config.join("haetae.toml"), &haetae_config(spec, name, host, &config_dir), false)?;
        if let Some(key) = &store_key {
            write(&config.join("store.env"), &format!("{STORE_KEY_ENV}={}\n", key.expose()), true)?;
        }
        write(&systemd.join("haetae-nats.service"), &nats_unit(spec, name, &config_dir), false)?;
        write(&systemd.join("haetae.service"), &haetae_unit(spec, name, &config_dir), false)?;
        written.push(DcFiles {
            name: name.clone(),
            host: host.clone(),
            config,
            systemd,
            nats_config: on_host_path("nats.conf"),
            haetae_config: on_host_path("haetae.toml"),
        });
    }
    Ok(written)
}

fn haetae_config(spec: &HostsSpec, name: &str, host: &str, config_dir: &str) -> String {
    format!(
        "# haetae node of DC {name}; generated by `haetae deploy`. Every setting: `haetae config example`.\n\
         # Clients should reach it through a TLS-terminating reverse proxy (HTTPS on 443).\n\
         listen = \"{host}:{HTTP_PORT}\"\n\
         log = \"info\"\n\n\
         [nats]\n\
         # This DC's nats-server; TLS with the deployment's CA, this node's own user.\n\
         url = \"nats://{host}:{CLIENT_PORT}\"\n\
         credentials_file = \"{config_dir}/node.json\"\n\
         tls_ca_file = \"{config_dir}/ca.pem\"\n\
         replicas = 3\n\
         partitions = {partitions}\n\n\
         [homeserver]\n\
         server_name = \"{server_name}\"\n\
         node_name = \"{name}\"\n",
        partitions = spec.partitions,
        server_name = spec.server_name,
    )
}

fn nats_unit(spec: &HostsSpec, name: &str, config_dir: &str) -> String {
    let environment = if spec.encrypt_at_rest {
        format!("# The key JetStream encrypts its files with; keep this file off the data disk.\nEnvironmentFile={config_dir}/store.env\n")
    } else {
        String::new()
    };
    format!(
        "# nats-server of haetae's DC {name}; generated by `haetae deploy`.\n\
         [Unit]\n\
         Description=nats-server for haetae (DC {name})\n\
         Wants=network-online.target\n\
         After=network-online.target\n\n\
         [Service]\n\
         User={user}\n\
         ExecStart={nats} -c {config_dir}/nats.conf\n\
         # Reloads certificates and users without a restart.\n\
         ExecReload=/bin/kill -HUP $MAINPID\n\
         # Lame duck: hand JetStream leaderships to the other DCs, then exit.\n\
         KillSignal=SIGUSR2\n\
         TimeoutStopSec=60\n\
         {environment}\
         Restart=on-failure\n\
         LimitNOFILE=65536\n\n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        user = spec.user,
        nats = spec.nats_binary,
    )
}

fn haetae_unit(spec: &HostsSpec, name: &str, config_dir: &str) -> String {
    format!(
        "# haetae node of DC {name}; generated by `haetae deploy`.\n\
         [Unit]\n\
         Description=haetae Matrix homeserver (DC {name})\n\
         Wants=haetae-nats.service\n\
         After=haetae-nats.service\n\n\
         [Service]\n\
         User={user}\n\
         ExecStart={haetae} serve --config {config_dir}/haetae.toml\n\
         # SIGTERM: finish in-flight requests, then exit.\n\
         TimeoutStopSec=40\n\
         Restart=on-failure\n\
         LimitNOFILE=65536\n\n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        user = spec.user,
        haetae = spec.haetae_binary,
    )
}
