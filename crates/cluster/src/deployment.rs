//! A local multi-DC deployment: per DC one nats-server (tagged `dc:<name>`, one cluster stretched
//! over every DC, replicas spread by `unique_tag: "dc:"`) and one haetae node talking to it.
//!
//! Every nats-server is locked: a client must present a credential (each DC's node its own user,
//! limited to haetae's subjects; the operator's tools an admin user), client connections use TLS,
//! routes use mutual TLS with the deployment's CA plus a route credential. The CA, certificates,
//! credentials and (with encryption at rest) the store key live in `<dir>/pki`, outside every
//! DC's disks: a fire burns a DC's data, not the keys a rebuild needs.
//!
//! Owns process lifetimes (every process it starts is stopped by PID, and killed if the
//! deployment is dropped), the state file other commands read, and the faults a drill injects.
//! Never interprets what the nodes store.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use haetae_store::admin::{Admin, AssetInfo};
use haetae_store::launcher::{ClusterSpec, NatsProcess, NatsUser, ServerSecurity, ServerSpec, Signal, StoreKey, signal};
use haetae_store::pki::{Authority, TlsFiles};
use haetae_store::{Access, Credential};
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};

use crate::netns::Network;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{0}")]
    Invalid(String),
    #[error("DC {dc}: {message}")]
    Dc { dc: String, message: String },
    #[error("network namespaces: {0}")]
    Net(#[from] crate::netns::NetError),
    #[error("cannot write {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A wait that passed its deadline: what it waited for, how long, and what to do about it.
    #[error("timed out after {seconds} s waiting for {what}; {hint}")]
    Timeout { what: String, seconds: u64, hint: String },
    #[error("{0}")]
    Admin(#[from] haetae_store::admin::AdminError),
    /// A DC's replicas made no progress catching up: restarting its server on a clean disk is
    /// the remedy (the supervisor does it by itself).
    #[error(
        "DC {dc}: replicas made no progress catching up for {seconds} s; still behind: {behind}; its nats-server says: {health}; its log: {log}"
    )]
    Stuck { dc: String, seconds: u64, behind: String, health: String, log: PathBuf },
}

/// What to deploy.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeploymentSpec {
    /// Everything the deployment writes lives here: per DC the nats-server data and logs.
    pub dir: PathBuf,
    /// DC names; each becomes a server tag `dc:<name>`.
    pub dcs: Vec<String>,
    /// One network namespace per DC (root only) instead of loopback ports.
    pub netns: bool,
    /// `sync_interval: always` on every nats-server.
    pub sync_always: bool,
    /// Event-log partitions.
    pub partitions: u32,
    /// The `haetae` binary that runs the nodes.
    pub haetae_binary: PathBuf,
    /// Matrix server name shared by every node.
    pub server_name: String,
    /// Log filter for the nodes.
    pub node_log: String,
    /// TLS on client connections and mutual TLS on routes. Off only to measure what TLS costs:
    /// credentials are required either way.
    #[serde(default = "enabled")]
    pub tls: bool,
    /// Encrypt JetStream's files on every server (`cipher: chachapoly`) with the key in
    /// `<dir>/pki/store.key`.
    #[serde(default)]
    pub encrypt_at_rest: bool,
    /// TOML appended to every node's `[homeserver]` section (keys, then sub-tables such as
    /// `[homeserver.incidents]`): what a drill or a test tunes on the nodes.
    #[serde(default)]
    pub homeserver_extra: String,
}

fn enabled() -> bool {
    true
}

impl DeploymentSpec {
    pub fn new(dir: impl Into<PathBuf>, haetae_binary: impl Into<PathBuf>) -> DeploymentSpec {
        DeploymentSpec {
            dir: dir.into(),
            dcs: vec!["a".into(), "b".into(), "c".into()],
            netns: false,
            sync_always: true,
            partitions: 6,
            haetae_binary: haetae_binary.into(),
            server_name: "haetae.test".into(),
            node_log: "warn".into(),
            tls: true,
            encrypt_at_rest: false,
            homeserver_extra: String::new(),
        }
    }
}

/// Where one DC's processes listen, and which of them run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DcPlan {
    pub name: String,
    pub host: String,
    pub client_port: u16,
    pub route_port: u16,
    pub monitor_port: u16,
    pub http_port: u16,
    pub namespace: Option<String>,
    pub nats_pid: Option<u32>,
    pub node_pid: Option<u32>,
    /// What the supervisor is doing with this DC (read by `cluster status` and `cluster fire`).
    #[serde(default)]
    pub phase: Phase,
    /// How many times this DC was burned (its processes killed and disks deleted) by the
    /// supervisor; `cluster fire` watches it grow to know its request was carried out.
    #[serde(default)]
    pub burns: u32,
    /// How many times its nats-server was restarted on a clean disk because its replicas stayed
    /// behind.
    #[serde(default)]
    pub repairs: u32,
}

/// The life of one DC as the supervisor sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Processes starting for the first time.
    #[default]
    Starting,
    /// Processes running, replicas current (as far as the supervisor last looked).
    Serving,
    /// Processes killed, disks deleted, not yet started again.
    Burned,
    /// Starting again (after a fire, a crash or a repair) and catching up.
    Rebuilding,
    /// Stopped on purpose (`cluster down`, or a graceful stop).
    Stopped,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Serving => "serving",
            Phase::Burned => "burned",
            Phase::Rebuilding => "rebuilding",
            Phase::Stopped => "stopped",
        }
    }
}

impl DcPlan {
    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", self.host, self.http_port)
    }

    pub fn nats_url(&self) -> String {
        format!("nats://{}:{}", self.host, self.client_port)
    }

    fn monitor_url(&self) -> String {
        format!("http://{}:{}", self.host, self.monitor_port)
    }
}

/// The state file (`cluster.json`) that `haetae cluster status` and `down` read.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct State {
    pub spec: DeploymentSpec,
    pub dcs: Vec<DcPlan>,
    pub network: Option<Network>,
    /// The process supervising the deployment.
    pub supervisor_pid: u32,
    /// What the supervisor is doing now, in a sentence (empty when it only watches).
    #[serde(default)]
    pub activity: String,
}

impl State {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("cluster.json")
    }

    pub fn load(dir: &Path) -> Result<State, String> {
        let path = State::path(dir);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("no deployment at {} ({e}); start one with `haetae cluster up --dir {}`", dir.display(), dir.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{} is not a deployment state file: {e}", path.display()))
    }

    pub fn nats_urls(&self) -> String {
        self.dcs.iter().map(DcPlan::nats_url).collect::<Vec<_>>().join(",")
    }

    /// Where the deployment keeps its CA, certificates, credentials and store key.
    pub fn pki_dir(spec: &DeploymentSpec) -> PathBuf {
        spec.dir.join("pki")
    }

    /// The operator's access (admin credential, CA) for `status` and the drill's observers.
    pub fn admin_access(&self) -> Result<Access, String> {
        let pki = State::pki_dir(&self.spec);
        let credential = Credential::read(&pki.join(ADMIN_CREDENTIAL_FILE)).map_err(|e| e.to_string())?;
        let tls_ca = self.spec.tls.then(|| pki.join(haetae_store::pki::CA_CERT_FILE));
        Ok(Access { credential: Some(credential), tls_ca })
    }

    /// Writes the state file atomically (a temporary file renamed over it), so that `status` and
    /// `fire`, which read it while the supervisor writes, never see half a file.
    pub fn store(&self) -> Result<(), ClusterError> {
        let path = State::path(&self.spec.dir);
        let temporary = self.spec.dir.join(format!(".cluster.json.{}", std::process::id()));
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        std::fs::write(&temporary, text).map_err(|source| ClusterError::Io { path: temporary.clone(), source })?;
        std::fs::rename(&temporary, &path).map_err(|source| ClusterError::Io { path, source })
    }
}

/// How one DC's replicas stand, from one look at every asset.
#[derive(Clone, Debug, Default)]
pub struct DcReplicas {
    /// Assets whose replica in this DC is not current (or missing), with its lag.
    pub behind: Vec<(String, u64)>,
    /// Assets without a leader.
    pub leaderless: Vec<String>,
    /// Assets with fewer than two current replicas outside this DC: losing this DC's copy now
    /// could lose acknowledged writes.
    pub fragile_elsewhere: Vec<String>,
}

impl DcReplicas {
    /// Reads one DC's standing out of the assets' placement.
    pub fn of(dc: &str, assets: &[AssetInfo]) -> DcReplicas {
        let mut standing = DcReplicas::default();
        for asset in assets {
            if asset.leader.is_none() {
                standing.leaderless.push(asset.label.clone());
            }
            match asset.replicas.iter().find(|r| r.server == dc) {
                Some(replica) if replica.current => {}
                Some(replica) => standing.behind.push((asset.label.clone(), replica.lag)),
                None => standing.behind.push((asset.label.clone(), 0)),
            }
            let elsewhere = asset.replicas.iter().filter(|r| r.server != dc && r.current).count();
            if elsewhere < 2 {
                standing.fragile_elsewhere.push(asset.label.clone());
            }
        }
        standing
    }

    /// Every asset has a leader and a current replica in this DC.
    pub fn current(&self) -> bool {
        self.behind.is_empty() && self.leaderless.is_empty()
    }

    /// The lags of the replicas behind, summed: falling means the DC is catching up.
    pub fn total_lag(&self) -> u64 {
        self.behind.iter().map(|(_, lag)| *lag).sum()
    }

    /// `log/1 (lag 37), kv/accounts (lag 0)`, at most `limit` of them.
    pub fn describe_behind(&self, limit: usize) -> String {
        let mut parts: Vec<String> = self.behind.iter().take(limit).map(|(label, lag)| format!("{label} (lag {lag})")).collect();
        if self.behind.len() > limit {
            parts.push(format!("and {} more", self.behind.len() - limit));
        }
        parts.join(", ")
    }
}

/// The admin user's credential file, in the PKI folder.
pub const ADMIN_CREDENTIAL_FILE: &str = "admin.json";
/// The route credential file (every server presents it to its peers), in the PKI folder.
const ROUTE_CREDENTIAL_FILE: &str = "route.json";
/// The common name of a deployment's CA (an existing CA is reloaded under the same name).
const CA_NAME: &str = "haetae deployment CA";
/// The store key file (encryption at rest), in the PKI folder.
pub const STORE_KEY_FILE: &str = "store.key";

/// Everything that locks a deployment, made once by `up` and reused by every restart and rebuild.
struct Locks {
    admin: Credential,
    route: Credential,
    /// Per DC: its node's credential file and credential.
    nodes: Vec<(PathBuf, Credential)>,
    /// Per DC: its server's certificate, key and the CA (None without TLS).
    tls: Vec<Option<TlsFiles>>,
    store_key: Option<StoreKey>,
}

impl Locks {
    /// Creates (or, when the folder has them, reuses) the CA, the admin, route and per-node
    /// credentials and the store key, and issues each DC's server a certificate for its address.
    fn prepare(spec: &DeploymentSpec, dcs: &[DcPlan]) -> Result<Locks, ClusterError> {
        let pki = State::pki_dir(spec);
        std::fs::create_dir_all(&pki).map_err(|source| ClusterError::Io { path: pki.clone(), source })?;
        std::fs::set_permissions(&pki, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(|source| ClusterError::Io { path: pki.clone(), source })?;
        let secret = |e: String| ClusterError::Invalid(format!("cannot prepare the deployment's credentials: {e}"));
        let credential = |file: &str, user: &str| Credential::load_or_create_for(&pki.join(file), user).map_err(|e| secret(e.to_string()));
        let admin = credential(ADMIN_CREDENTIAL_FILE, "admin")?;
        let route = credential(ROUTE_CREDENTIAL_FILE, "route")?;
        let mut nodes = Vec::new();
        for dc in dcs {
            let file = format!("node-{}.json", dc.name);
            nodes.push((pki.join(&file), credential(&file, &format!("node-{}", dc.name))?));
        }
        let mut tls = Vec::new();
        if spec.tls {
            let authority = Authority::load_or_create(&pki, CA_NAME).map_err(|e| secret(e.to_string()))?;
            for dc in dcs {
                // Issued afresh on every `up` (the addresses may have changed); the CA stays.
                let files = authority
                    .issue_server(&pki, &format!("dc-{}", dc.name), std::slice::from_ref(&dc.host))
                    .map_err(|e| secret(e.to_string()))?;
                tls.push(Some(files));
            }
        } else {
            tls.resize(dcs.len(), None);
        }
        let store_key = if spec.encrypt_at_rest {
            let path = pki.join(STORE_KEY_FILE);
            if !path.exists() {
                let key = StoreKey::generate();
                std::fs::write(&path, format!("{}\n", key.expose())).map_err(|source| ClusterError::Io { path: path.clone(), source })?;
                std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                    .map_err(|source| ClusterError::Io { path: path.clone(), source })?;
            }
            Some(StoreKey::read(&path).map_err(secret)?)
        } else {
            None
        };
        Ok(Locks { admin, route, nodes, tls, store_key })
    }

    /// Gives DC `i` a new server certificate (new key, same CA) and its node a new password, in
    /// their files. The old ones stay valid wherever they are loaded until those processes
    /// restart: see [`Deployment::rotate_dc`].
    fn rotate(&mut self, spec: &DeploymentSpec, i: usize, dc: &DcPlan) -> Result<(), ClusterError> {
        let pki = State::pki_dir(spec);
        let secret = |e: String| ClusterError::Invalid(format!("cannot rotate DC {}'s credentials: {e}", dc.name));
        if self.tls[i].is_some() {
            let authority = Authority::load_or_create(&pki, CA_NAME).map_err(|e| secret(e.to_string()))?;
            let files = authority
                .issue_server(&pki, &format!("dc-{}", dc.name), std::slice::from_ref(&dc.host))
                .map_err(|e| secret(e.to_string()))?;
            self.tls[i] = Some(files);
        }
        let (path, old) = &self.nodes[i];
        let fresh = Credential::generate_for(old.user());
        haetae_store::credential::write_file(path, &fresh).map_err(|e| secret(e.to_string()))?;
        self.nodes[i].1 = fresh;
        Ok(())
    }

    /// The users every server knows: the admin, and each DC's node limited to haetae's subjects
    /// (a node may reconnect to any DC's server).
    fn users(&self, partitions: u32) -> Vec<NatsUser> {
        let mut users = vec![NatsUser { credential: self.admin.clone(), permissions: None }];
        for (_, credential) in &self.nodes {
            let permissions = haetae_store::permissions::node_permissions(credential.user(), partitions);
            users.push(NatsUser { credential: credential.clone(), permissions: Some(permissions) });
        }
        users
    }
}

/// A running deployment. Dropping it kills every process it started and removes its namespaces.
pub struct Deployment {
    pub state: State,
    locks: Locks,
    nats: Vec<Option<NatsProcess>>,
    nodes: Vec<Option<Child>>,
    /// DCs cut off from the network (netns mode).
    cut: Vec<bool>,
    http: reqwest::Client,
}

/// A path as a TOML string (JSON's escaping is valid TOML).
fn toml_string(path: &Path) -> String {
    serde_json::to_string(&path.display().to_string()).unwrap_or_default()
}

/// A port that is free now, chosen below Linux's ephemeral range (32768 and up) so that outgoing
/// connections, which take their source ports from that range, cannot grab it before the server
/// that was given it binds it.
fn free_port(taken: &mut std::collections::HashSet<u16>) -> Result<u16, ClusterError> {
    for _ in 0..200 {
        let port = 20_000 + (rand_u32() % 12_000) as u16;
        if !taken.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            taken.insert(port);
            return Ok(port);
        }
    }
    Err(ClusterError::Invalid("no free port found between 20000 and 32000".into()))
}

/// A cheap random number (no cryptographic use): clock nanoseconds mixed with a counter.
fn rand_u32() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let mut x = nanos ^ COUNTER.fetch_add(0x9E37_79B9, Ordering::Relaxed) ^ std::process::id().rotate_left(16);
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    x
}

const START_TIMEOUT: Duration = Duration::from_secs(60);
/// A DC catching up that shows no progress (fewer replicas behind, or less lag) for this long is
/// stuck; one that progresses may take up to `CATCH_UP_LIMIT`.
pub const CATCH_UP_NO_PROGRESS: Duration = Duration::from_secs(30);
pub const CATCH_UP_LIMIT: Duration = Duration::from_secs(180);
/// How long `down` waits for processes to exit after SIGTERM before it SIGKILLs them.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

impl Deployment {
    /// Starts every DC, waits until JetStream has a leader and every node serves, then spreads
    /// the assets' leaders over the DCs.
    pub async fn up(spec: DeploymentSpec, progress: &(dyn Fn(&str) + Sync)) -> Result<Deployment, ClusterError> {
        let mut attempt = 1;
        loop {
            match Deployment::up_once(spec.clone(), progress).await {
                // On loopback another program may take a chosen port before our server binds it:
                // choose new ports and start again.
                Err(ClusterError::Dc { dc, message }) if !spec.netns && attempt < 3 && message.contains("exited") => {
                    progress(&format!("DC {dc} could not start ({message}); retrying from scratch with other ports"));
                    // The failed attempt's processes are gone (dropped); so must its data be.
                    for name in &spec.dcs {
                        let _ = std::fs::remove_dir_all(spec.dir.join(format!("dc-{name}")));
                    }
                    attempt += 1;
                }
                outcome => return outcome,
            }
        }
    }

    async fn up_once(spec: DeploymentSpec, progress: &(dyn Fn(&str) + Sync)) -> Result<Deployment, ClusterError> {
        if spec.dcs.len() < 3 {
            return Err(ClusterError::Invalid(format!(
                "a deployment needs at least three DCs for R3 with one replica per DC; got {}",
                spec.dcs.len()
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for name in &spec.dcs {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') || !seen.insert(name) {
                return Err(ClusterError::Invalid(format!("DC names must be distinct and alphanumeric; got {:?}", spec.dcs)));
            }
        }
        if !spec.haetae_binary.is_file() {
            return Err(ClusterError::Invalid(format!("no haetae binary at {}", spec.haetae_binary.display())));
        }
        std::fs::create_dir_all(&spec.dir).map_err(|source| ClusterError::Io { path: spec.dir.clone(), source })?;
        let network = if spec.netns {
            if !crate::netns::available() {
                return Err(ClusterError::Invalid("network namespaces need root and `ip` (iproute2)".into()));
            }
            Some(Network::create(std::process::id(), &spec.dcs)?)
        } else {
            None
        };
        let mut dcs = Vec::new();
        let mut taken = std::collections::HashSet::new();
        for (i, name) in spec.dcs.iter().enumerate() {
            let plan = match &network {
                Some(network) => DcPlan {
                    name: name.clone(),
                    host: network.dcs[i].address.clone(),
                    client_port: 4222,
                    route_port: 6222,
                    monitor_port: 8222,
                    http_port: 8008,
                    namespace: Some(network.dcs[i].namespace.clone()),
                    nats_pid: None,
                    node_pid: None,
                    phase: Phase::Starting,
                    burns: 0,
                    repairs: 0,
                },
                None => DcPlan {
                    name: name.clone(),
                    host: "127.0.0.1".into(),
                    client_port: free_port(&mut taken)?,
                    route_port: free_port(&mut taken)?,
                    monitor_port: free_port(&mut taken)?,
                    http_port: free_port(&mut taken)?,
                    namespace: None,
                    nats_pid: None,
                    node_pid: None,
                    phase: Phase::Starting,
                    burns: 0,
                    repairs: 0,
                },
            };
            dcs.push(plan);
        }
        let count = dcs.len();
        let locks = Locks::prepare(&spec, &dcs)?;
        let mut deployment = Deployment {
            locks,
            state: State { spec, dcs, network, supervisor_pid: std::process::id(), activity: String::new() },
            nats: (0..count).map(|_| None).collect(),
            nodes: (0..count).map(|_| None).collect(),
            cut: vec![false; count],
            http: reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap_or_default(),
        };
        progress(&format!(
            "starting {} nats-servers ({}; sync_interval: {}; {}{})",
            count,
            if deployment.state.network.is_some() { "one network namespace per DC" } else { "loopback ports" },
            if deployment.state.spec.sync_always { "always" } else { "server default" },
            if deployment.state.spec.tls { "TLS, credentials required" } else { "NO TLS (measurement only), credentials required" },
            if deployment.state.spec.encrypt_at_rest { ", encrypted at rest" } else { "" }
        ));
        let starts = (0..count).map(|i| NatsProcess::start(deployment.nats_spec(i), START_TIMEOUT));
        for (i, started) in futures::future::join_all(starts).await.into_iter().enumerate() {
            let process = started.map_err(|e| deployment.dc_error(i, e.to_string()))?;
            deployment.state.dcs[i].nats_pid = process.pid();
            deployment.nats[i] = Some(process);
        }
        for i in 0..count {
            deployment.wait_nats_healthy(i, START_TIMEOUT).await?;
        }
        progress("JetStream cluster formed; starting the haetae nodes");
        // The first node creates the streams and buckets; the others find them.
        deployment.start_node(0).await?;
        let rest: Vec<usize> = (1..count).collect();
        for &i in &rest {
            deployment.spawn_node(i)?;
        }
        for &i in &rest {
            deployment.wait_node_ready(i, START_TIMEOUT).await?;
        }
        deployment.save()?;
        progress("nodes serving; spreading leaders over the DCs");
        deployment.balance_leaders(Duration::from_secs(20)).await?;
        deployment.wait_replicas_current(START_TIMEOUT).await?;
        for dc in &mut deployment.state.dcs {
            dc.phase = Phase::Serving;
        }
        deployment.save()?;
        Ok(deployment)
    }

    fn dc_error(&self, i: usize, message: String) -> ClusterError {
        ClusterError::Dc { dc: self.state.dcs[i].name.clone(), message }
    }

    pub fn dc_count(&self) -> usize {
        self.state.dcs.len()
    }

    pub fn dc_index(&self, name: &str) -> Option<usize> {
        self.state.dcs.iter().position(|dc| dc.name == name)
    }

    /// Every DC's client endpoint, in DC order.
    pub fn endpoints(&self) -> Vec<String> {
        self.state.dcs.iter().map(DcPlan::endpoint).collect()
    }

    fn dc_dir(&self, i: usize) -> PathBuf {
        Deployment::dc_data_dir(&self.state, &self.state.dcs[i].name)
    }

    fn nats_spec(&self, i: usize) -> ServerSpec {
        let plan = &self.state.dcs[i];
        ServerSpec {
            name: plan.name.clone(),
            host: plan.host.clone(),
            client_port: plan.client_port,
            dir: self.dc_dir(i).join("nats"),
            sync_always: self.state.spec.sync_always,
            cluster: Some(ClusterSpec {
                name: "haetae".into(),
                route_port: plan.route_port,
                routes: self
                    .state
                    .dcs
                    .iter()
                    .filter(|other| other.name != plan.name)
                    .map(|other| format!("nats-route://{}:{}", other.host, other.route_port))
                    .collect(),
                unique_tag: Some("dc:".into()),
            }),
            tags: vec![format!("dc:{}", plan.name)],
            monitor_port: plan.monitor_port,
            monitor_host: None,
            netns: plan.namespace.clone(),
            security: ServerSecurity {
                users: self.locks.users(self.state.spec.partitions),
                tls: self.locks.tls[i].clone(),
                route_credential: Some(self.locks.route.clone()),
            },
            store_key: self.locks.store_key.clone(),
        }
    }

    /// The operator's access to the deployment: the admin credential and the CA.
    pub fn admin_access(&self) -> Access {
        let tls_ca = self.locks.tls.iter().flatten().next().map(|files| files.ca.clone());
        Access { credential: Some(self.locks.admin.clone()), tls_ca }
    }

    /// What DC `i`'s node presents to NATS: its credential file and the CA (if TLS).
    pub fn node_access(&self, i: usize) -> (PathBuf, Option<PathBuf>) {
        (self.locks.nodes[i].0.clone(), self.locks.tls[i].as_ref().map(|files| files.ca.clone()))
    }

    fn node_config(&self, i: usize) -> String {
        let plan = &self.state.dcs[i];
        let spec = &self.state.spec;
        let (credentials_file, tls_ca) = self.node_access(i);
        let tls_ca = match tls_ca {
            Some(path) => format!("tls_ca_file = {}\n", toml_string(&path)),
            None => String::new(),
        };
        format!(
            "listen = \"{host}:{http}\"\nlog = \"{log}\"\n\n[nats]\nurl = \"{nats}\"\ncredentials_file = {credentials_file}\n{tls_ca}replicas = 3\npartitions = {partitions}\nrequest_timeout_ms = 500\nretry_horizon_ms = 15000\n\n[homeserver]\nserver_name = \"{server_name}\"\nnode_name = \"{name}\"\n{extra}\n[homeserver.rate_limits]\nenabled = false\n",
            host = plan.host,
            http = plan.http_port,
            log = spec.node_log,
            nats = plan.nats_url(),
            credentials_file = toml_string(&credentials_file),
            partitions = spec.partitions,
            server_name = spec.server_name,
            name = plan.name,
            extra = spec.homeserver_extra,
        )
    }

    fn spawn_node(&mut self, i: usize) -> Result<(), ClusterError> {
        let dir = self.dc_dir(i).join("node");
        std::fs::create_dir_all(&dir).map_err(|source| ClusterError::Io { path: dir.clone(), source })?;
        let config_path = dir.join("node.toml");
        std::fs::write(&config_path, self.node_config(i)).map_err(|source| ClusterError::Io { path: config_path.clone(), source })?;
        let log_path = dir.join("node.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|source| ClusterError::Io { path: log_path.clone(), source })?;
        let log_err = log.try_clone().map_err(|source| ClusterError::Io { path: log_path.clone(), source })?;
        let binary = &self.state.spec.haetae_binary;
        let mut command = match &self.state.dcs[i].namespace {
            Some(namespace) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", namespace]).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        let child = command
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env_remove("HAETAE_NATS_URL")
            .env_remove("HAETAE_LISTEN")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| self.dc_error(i, format!("cannot start {}: {e}", binary.display())))?;
        self.state.dcs[i].node_pid = child.id();
        self.nodes[i] = Some(child);
        Ok(())
    }

    async fn start_node(&mut self, i: usize) -> Result<(), ClusterError> {
        self.spawn_node(i)?;
        self.wait_node_ready(i, START_TIMEOUT).await
    }

    /// Polls the node's `/versions` until it answers (it answers once its read model caught up).
    pub async fn wait_node_ready(&mut self, i: usize, timeout: Duration) -> Result<(), ClusterError> {
        let url = format!("{}/_matrix/client/versions", self.state.dcs[i].endpoint());
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.nodes[i].as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    let log = self.dc_dir(i).join("node/node.log");
                    return Err(self.dc_error(i, format!("the haetae node exited ({status}); its log: {}", log.display())));
                }
            }
            if self.http.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log = self.dc_dir(i).join("node/node.log");
                return Err(ClusterError::Timeout {
                    what: format!("the haetae node of DC {} to answer {url}", self.state.dcs[i].name),
                    seconds: timeout.as_secs(),
                    hint: format!("it replays the whole log before it answers; see its log {}", log.display()),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls the nats-server's `/healthz` (JetStream current) until it says ok.
    async fn wait_nats_healthy(&self, i: usize, timeout: Duration) -> Result<(), ClusterError> {
        let url = format!("{}/healthz", self.state.dcs[i].monitor_url());
        let deadline = Instant::now() + timeout;
        loop {
            if self.http.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log = self.dc_dir(i).join("nats/nats.log");
                return Err(ClusterError::Timeout {
                    what: format!("the nats-server of DC {} to report healthy at {url}", self.state.dcs[i].name),
                    seconds: timeout.as_secs(),
                    hint: format!("is the JetStream cluster formed (are the other DCs up)? see its log {}", log.display()),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Writes the state file (atomically).
    pub fn save(&self) -> Result<(), ClusterError> {
        self.state.store()
    }

    /// DCs whose processes run and whose network is up.
    pub fn live(&self) -> Vec<usize> {
        (0..self.dc_count()).filter(|&i| self.nats[i].is_some() && !self.cut[i]).collect()
    }

    /// An admin connection through any live DC.
    pub async fn admin(&self) -> Result<Admin, ClusterError> {
        let urls: Vec<String> = self.live().into_iter().map(|i| self.state.dcs[i].nats_url()).collect();
        if urls.is_empty() {
            return Err(ClusterError::Invalid("no DC is up".into()));
        }
        Ok(Admin::connect(&urls.join(","), &self.admin_access(), Duration::from_secs(2)).await?)
    }

    /// Asks JetStream to move leaders so that log partition p is led from DC p mod n and the
    /// other assets round-robin after them; waits (bounded) until it happened.
    pub async fn balance_leaders(&self, timeout: Duration) -> Result<(), ClusterError> {
        let admin = self.admin().await?;
        let deadline = Instant::now() + timeout;
        let live = self.live();
        loop {
            let assets = admin.assets().await?;
            let mut misplaced = 0;
            for (k, asset) in assets.iter().enumerate() {
                let slot = asset.log_partition().map(|p| p as usize).unwrap_or(k);
                let wanted = &self.state.dcs[live[slot % live.len()]].name;
                if asset.leader.as_deref() != Some(wanted.as_str()) {
                    misplaced += 1;
                    // A refused step-down (no leader yet, election under way) is retried next round.
                    let _ = admin.prefer_leader(&asset.stream, &format!("dc:{wanted}")).await;
                }
            }
            if misplaced == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                tracing::warn!(misplaced, "some leaders could not be moved to their preferred DC");
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Waits until every asset has a leader and all its replicas current, and every live DC's
    /// nats-server reports healthy. Returns how long that took.
    pub async fn wait_replicas_current(&self, timeout: Duration) -> Result<Duration, ClusterError> {
        let started = Instant::now();
        let deadline = started + timeout;
        let want = self.live().len().min(3);
        loop {
            let settled = match self.admin().await {
                Ok(admin) => match admin.assets().await {
                    Ok(assets) => {
                        !assets.is_empty()
                            && assets.iter().all(|a| a.leader.is_some() && a.replicas.iter().filter(|r| r.current).count() >= want)
                    }
                    Err(_) => false,
                },
                Err(_) => false,
            };
            if settled {
                let mut healthy = true;
                for i in self.live() {
                    let url = format!("{}/healthz", self.state.dcs[i].monitor_url());
                    healthy &= self.http.get(&url).send().await.is_ok_and(|r| r.status().is_success());
                }
                if healthy {
                    return Ok(started.elapsed());
                }
            }
            if Instant::now() > deadline {
                return Err(ClusterError::Timeout {
                    what: "every asset to have a leader and every replica to be current".into(),
                    seconds: timeout.as_secs(),
                    hint: format!("`haetae cluster status --dir {}` shows which replica lags", self.state.spec.dir.display()),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Asset placement as JetStream reports it now.
    pub async fn assets(&self) -> Result<Vec<AssetInfo>, ClusterError> {
        Ok(self.admin().await?.assets().await?)
    }

    /// SIGKILLs every process of DC `i`; with `burn_disks` also deletes its data, as a fire would.
    pub async fn kill_dc(&mut self, i: usize, burn_disks: bool) -> Result<(), ClusterError> {
        if let Some(mut node) = self.nodes[i].take() {
            let _ = node.kill().await;
        }
        if let Some(nats) = self.nats[i].take() {
            nats.kill().await;
        }
        self.state.dcs[i].nats_pid = None;
        self.state.dcs[i].node_pid = None;
        if burn_disks {
            let dir = self.dc_dir(i);
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|source| ClusterError::Io { path: dir.clone(), source })?;
            }
        }
        self.save()
    }

    /// Rotates DC `i`'s secrets by a graceful restart: stops the DC (its node first, then its
    /// server after handing its leaderships over), issues its server a new certificate and its
    /// node a new password, and starts both again with them. Run it for every DC in turn (a
    /// rolling restart): until every server has restarted, the others still hold the node's old
    /// password, which the node no longer uses (it connects to its own DC's server). The CA,
    /// the admin and the route credential stay (see ARCHITECTURE.md for rotating those).
    pub async fn rotate_dc(&mut self, i: usize) -> Result<Duration, ClusterError> {
        self.stop_dc(i).await?;
        let (spec, dc) = (self.state.spec.clone(), self.state.dcs[i].clone());
        self.locks.rotate(&spec, i, &dc)?;
        self.start_dc(i).await
    }

    /// Stops DC `i` gracefully: the node first (clients move on), then the nats-server in
    /// lame-duck mode (it hands its leaderships to the other DCs before exiting).
    pub async fn stop_dc(&mut self, i: usize) -> Result<(), ClusterError> {
        self.stop_node(i, Duration::from_secs(30)).await;
        // Hand every leadership this DC holds to the others before its server goes: an explicit
        // step-down moves a leader in milliseconds, where a vanished one costs an election.
        self.move_leaders_off(i, Duration::from_secs(10)).await;
        if let Some(nats) = self.nats[i].take() {
            if let Some(pid) = nats.pid() {
                signal(pid, Signal::LameDuck);
            }
            nats.stop(Duration::from_secs(45)).await;
        }
        self.state.dcs[i].nats_pid = None;
        self.state.dcs[i].node_pid = None;
        self.save()
    }

    /// Stops DC `i`'s node with SIGTERM (it finishes in-flight requests), killing it after `grace`.
    async fn stop_node(&mut self, i: usize, grace: Duration) {
        if let Some(mut node) = self.nodes[i].take() {
            if let Some(pid) = node.id() {
                signal(pid, Signal::Terminate);
            }
            if tokio::time::timeout(grace, node.wait()).await.is_err() {
                let _ = node.kill().await;
            }
        }
    }

    /// Asks every asset led from DC `i` to move its leader to another live DC; waits (bounded)
    /// until none is led from there.
    async fn move_leaders_off(&self, i: usize, timeout: Duration) {
        let Ok(admin) = self.admin().await else { return };
        let name = self.state.dcs[i].name.clone();
        let others: Vec<usize> = self.live().into_iter().filter(|&k| k != i).collect();
        if others.is_empty() {
            return;
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let Ok(assets) = admin.assets().await else { return };
            let led: Vec<&AssetInfo> = assets.iter().filter(|a| a.leader.as_deref() == Some(name.as_str())).collect();
            if led.is_empty() {
                return;
            }
            for (k, asset) in led.iter().enumerate() {
                let to = &self.state.dcs[others[k % others.len()]].name;
                let _ = admin.prefer_leader(&asset.stream, &format!("dc:{to}")).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts DC `i`'s nats-server (with whatever its disk holds: nothing after a fire), waits
    /// until it has caught up, then starts its node. Returns the time until its replicas were
    /// current.
    pub async fn start_dc(&mut self, i: usize) -> Result<Duration, ClusterError> {
        let started = Instant::now();
        if self.nats[i].is_none() {
            let process = NatsProcess::start(self.nats_spec(i), START_TIMEOUT).await.map_err(|e| self.dc_error(i, e.to_string()))?;
            self.state.dcs[i].nats_pid = process.pid();
            self.nats[i] = Some(process);
        }
        self.wait_dc_current(i, CATCH_UP_NO_PROGRESS, CATCH_UP_LIMIT).await?;
        let caught_up = started.elapsed();
        if self.nodes[i].is_none() {
            self.start_node(i).await?;
        }
        self.save()?;
        Ok(caught_up)
    }

    /// What DC `i`'s nats-server says at `/healthz`: None when healthy, else its error (or why it
    /// did not answer).
    pub async fn health_problem(&self, i: usize) -> Option<String> {
        let url = format!("{}/healthz", self.state.dcs[i].monitor_url());
        match self.http.get(&url).send().await {
            Ok(response) if response.status().is_success() => None,
            Ok(response) => {
                let status = response.status();
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                Some(body["error"].as_str().map(str::to_string).unwrap_or_else(|| format!("HTTP {status}")))
            }
            Err(error) => Some(format!("no answer ({error})")),
        }
    }

    /// Waits until every asset has a leader and a current replica in DC `i`, and DC `i`'s
    /// nats-server reports healthy. Fails with [`ClusterError::Stuck`] when nothing improved
    /// (fewer replicas behind, or less lag) for `no_progress`, and with a timeout after `limit`
    /// even if it kept improving. Returns how long it took.
    pub async fn wait_dc_current(&self, i: usize, no_progress: Duration, limit: Duration) -> Result<Duration, ClusterError> {
        let started = Instant::now();
        let name = self.state.dcs[i].name.clone();
        // (replicas behind, their total lag): a new low in either is progress.
        let mut best: Option<(usize, u64)> = None;
        let mut progressed_at = started;
        let mut last = DcReplicas::default();
        loop {
            let assets = match self.admin().await {
                Ok(admin) => admin.assets().await.ok(),
                Err(_) => None,
            };
            let health = self.health_problem(i).await;
            if let Some(assets) = assets.filter(|a| !a.is_empty()) {
                last = DcReplicas::of(&name, &assets);
                if last.current() && health.is_none() {
                    return Ok(started.elapsed());
                }
                let now = (last.behind.len() + last.leaderless.len(), last.total_lag());
                let improved = match best {
                    None => true,
                    Some((count, lag)) => now.0 < count || now.1 < lag,
                };
                if improved {
                    best = Some((best.map_or(now.0, |b| b.0.min(now.0)), best.map_or(now.1, |b| b.1.min(now.1))));
                    progressed_at = Instant::now();
                }
            }
            let log = self.dc_dir(i).join("nats/nats.log");
            if progressed_at.elapsed() > no_progress {
                let mut behind = last.describe_behind(5);
                if !last.leaderless.is_empty() {
                    behind.push_str(&format!("; without a leader: {}", last.leaderless.join(", ")));
                }
                return Err(ClusterError::Stuck {
                    dc: name,
                    seconds: no_progress.as_secs(),
                    behind: if behind.is_empty() { "nothing reported (JetStream did not answer)".into() } else { behind },
                    health: health.unwrap_or_else(|| "healthy".into()),
                    log,
                });
            }
            if started.elapsed() > limit {
                return Err(ClusterError::Timeout {
                    what: format!("DC {name}'s replicas to be current (still behind: {})", last.describe_behind(5)),
                    seconds: limit.as_secs(),
                    hint: format!("it kept catching up but did not finish; see `haetae cluster status` and {}", log.display()),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Restarts DC `i`'s nats-server on a clean disk: SIGKILLs its processes, keeps the server's
    /// old log beside the DC's directory (the evidence of what went wrong), deletes the server's
    /// data. The DC is started again with [`Deployment::start_dc`].
    pub async fn wipe_server(&mut self, i: usize) -> Result<PathBuf, ClusterError> {
        self.kill_dc(i, false).await?;
        let nats_dir = self.dc_dir(i).join("nats");
        let kept = self.dc_dir(i).join(format!("nats-before-repair-{}.log", self.state.dcs[i].repairs + 1));
        let _ = std::fs::rename(nats_dir.join("nats.log"), &kept);
        if nats_dir.exists() {
            std::fs::remove_dir_all(&nats_dir).map_err(|source| ClusterError::Io { path: nats_dir.clone(), source })?;
        }
        Ok(kept)
    }

    /// Which of DC `i`'s processes this deployment holds: (nats-server, node).
    pub fn processes(&self, i: usize) -> (bool, bool) {
        (self.nats[i].is_some(), self.nodes[i].is_some())
    }

    /// Cuts DC `i` off the network (netns mode only).
    pub fn cut(&mut self, i: usize) -> Result<(), ClusterError> {
        let network = self.state.network.as_ref().ok_or_else(|| ClusterError::Invalid("cutting a DC off needs network namespaces (--netns)".into()))?;
        network.cut(i)?;
        self.cut[i] = true;
        Ok(())
    }

    pub fn heal(&mut self, i: usize) -> Result<(), ClusterError> {
        let network = self.state.network.as_ref().ok_or_else(|| ClusterError::Invalid("healing needs network namespaces (--netns)".into()))?;
        network.heal(i)?;
        self.cut[i] = false;
        Ok(())
    }

    /// True when DC `i`'s processes are running.
    pub fn running(&self, i: usize) -> bool {
        self.nats[i].is_some()
    }

    /// Checks the processes: returns the DCs with a process that exited on its own (crashed,
    /// killed from outside); those processes are forgotten, so `start_dc` starts them again.
    pub fn exited(&mut self) -> Vec<usize> {
        let mut exited = Vec::new();
        for i in 0..self.dc_count() {
            let mut gone = false;
            if let Some(node) = self.nodes[i].as_mut() {
                if matches!(node.try_wait(), Ok(Some(_))) {
                    self.nodes[i] = None;
                    gone = true;
                }
            }
            if let Some(nats) = self.nats[i].as_mut() {
                if nats.has_exited() {
                    self.nats[i] = None;
                    gone = true;
                }
            }
            if gone {
                exited.push(i);
            }
        }
        exited
    }

    /// Where DC `i` keeps its disks.
    pub fn dc_data_dir(state: &State, name: &str) -> PathBuf {
        state.spec.dir.join(format!("dc-{name}"))
    }

    /// Stops every process at once (SIGTERM: nodes finish in-flight requests, servers flush),
    /// SIGKILLs whatever still runs after [`STOP_GRACE`], and removes the namespaces: bounded to
    /// a few seconds whatever state the DCs are in.
    pub async fn down(mut self) {
        let nodes: Vec<Child> = self.nodes.iter_mut().filter_map(Option::take).collect();
        let servers: Vec<NatsProcess> = self.nats.iter_mut().filter_map(Option::take).collect();
        let node_stops = nodes.into_iter().map(|mut node| async move {
            if let Some(pid) = node.id() {
                signal(pid, Signal::Terminate);
            }
            if tokio::time::timeout(STOP_GRACE, node.wait()).await.is_err() {
                let _ = node.kill().await;
            }
        });
        let server_stops = servers.into_iter().map(|server| server.stop(STOP_GRACE));
        futures::future::join(futures::future::join_all(node_stops), futures::future::join_all(server_stops)).await;
        for dc in &mut self.state.dcs {
            dc.nats_pid = None;
            dc.node_pid = None;
            dc.phase = Phase::Stopped;
        }
        self.state.activity = "stopped".into();
        let _ = self.save();
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        // Children are killed on drop (kill_on_drop); the namespaces must go after them.
        for node in self.nodes.iter_mut().flatten() {
            let _ = node.start_kill();
        }
        self.nodes.clear();
        self.nats.clear();
        if let Some(network) = &self.state.network {
            network.destroy();
        }
    }
}
