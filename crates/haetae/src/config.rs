//! The configuration file: every setting, its default, and the commented example the binary prints.

use std::path::{Path, PathBuf};

use haetae_server::ServerConfig;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP API listens on.
    pub listen: String,
    /// Local directory for the embedded nats-server's data. A node keeps nothing else on disk.
    pub data_dir: PathBuf,
    /// Log filter, e.g. "info" or "haetae_server=debug,info".
    pub log: String,
    pub nats: NatsConfig,
    pub homeserver: ServerConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8008".into(),
            data_dir: PathBuf::from("data"),
            log: "info".into(),
            nats: NatsConfig::default(),
            homeserver: ServerConfig::default(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    /// NATS server URL(s), comma-separated. Empty: start a private nats-server (embedded mode).
    /// May carry the deployment's credential as `nats://user:password@host:port`.
    pub url: String,
    /// With `url`: a file holding the credential to present, `{"user": "...", "password": "..."}`
    /// (keeps the password out of the command line and the config). Embedded mode generates its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<PathBuf>,
    /// With `url`: the deployment's CA certificate (PEM). The connection then requires TLS and
    /// trusts this CA only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
    /// Embedded mode: encrypt JetStream's files with the key in this file (or in the
    /// HAETAE_NATS_STORE_KEY environment variable). Keep it off the data disk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_key_file: Option<PathBuf>,
    /// Replicas of every stream, bucket and object store: 1 on one server, 3 across three DCs.
    pub replicas: usize,
    /// Event-log partitions; fixed once a deployment has started.
    pub partitions: u32,
    /// Embedded mode: fsync every write (`sync_interval: always`). Off trades durability on power
    /// loss for throughput.
    pub sync_always: bool,
    /// One JetStream request's timeout before it is retried, milliseconds.
    pub request_timeout_ms: u64,
    /// How long a write keeps retrying with the same message id, milliseconds.
    pub retry_horizon_ms: u64,
    /// The event log's duplicate window, seconds (must exceed the retry horizon).
    pub dedup_window_s: u64,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: String::new(),
            credentials_file: None,
            tls_ca_file: None,
            store_key_file: None,
            replicas: 1,
            partitions: 4,
            sync_always: true,
            request_timeout_ms: 2000,
            retry_horizon_ms: 20_000,
            dedup_window_s: 120,
        }
    }
}

impl Config {
    pub fn load(path: Option<&Path>) -> Result<Config, String> {
        let Some(path) = path else { return Ok(Config::default()) };
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("invalid config {}: {e}", path.display()))
    }

    pub fn store_config(&self) -> haetae_store::StoreConfig {
        haetae_store::StoreConfig {
            replicas: self.nats.replicas,
            partitions: self.nats.partitions,
            request_timeout: std::time::Duration::from_millis(self.nats.request_timeout_ms),
            retry_horizon: std::time::Duration::from_millis(self.nats.retry_horizon_ms),
            dedup_window: std::time::Duration::from_secs(self.nats.dedup_window_s),
            max_media_bytes: self.homeserver.limits.max_upload_bytes,
            // Set by `serve`: the private server's generated one, or `credentials_file`.
            credential: None,
            tls_ca: if self.nats.url.is_empty() { None } else { self.nats.tls_ca_file.clone() },
        }
    }
}

/// The commented example `haetae config example` prints. A test keeps it equal to the defaults.
pub const EXAMPLE: &str = r#"# haetae configuration. Every setting is optional; shown here with its default.
# Flags (--listen, --data-dir, --nats-url, --server-name) and HAETAE_* variables override this file.

# Address the HTTP API listens on.
listen = "127.0.0.1:8008"
# Local directory for the embedded nats-server's data (embedded mode only).
data_dir = "data"
# Log filter: "info", "debug", or per module, e.g. "haetae_server=debug,info".
log = "info"

[nats]
# NATS server URL(s), comma-separated. Empty: haetae starts a private nats-server, reachable only
# from this machine and only with the credential it generates in <data_dir>/nats/credential.json.
# An existing deployment's credential may go in the URL: "nats://user:password@host:4222".
url = ""
# With url: a file holding the credential, {"user": "...", "password": "..."} (mode 600).
# credentials_file = "/etc/haetae/nats-credential.json"
# With url: the deployment's CA certificate; the connection then requires TLS and trusts it only.
# tls_ca_file = "/etc/haetae/ca.pem"
# Embedded mode: encrypt JetStream's files at rest (chacha20-poly1305) with the key in this file
# (at least 32 letters and digits, starting with a letter), or in HAETAE_NATS_STORE_KEY. Keep the
# key off the data disk: it protects a stolen or discarded disk, not a running, compromised host.
# store_key_file = "/etc/haetae/store.key"
# Replicas of every stream, KV bucket and object store (3 across three DCs).
replicas = 1
# Event-log partitions. Fixed once a deployment has started.
partitions = 4
# Embedded mode: fsync every write (sync_interval: always).
sync_always = true
# Timeout of one JetStream request before it is retried, ms.
request_timeout_ms = 2000
# How long a write keeps retrying with the same message id, ms.
retry_horizon_ms = 20000
# Duplicate window of the event log, s (longer than the retry horizon).
dedup_window_s = 120

[homeserver]
# The server name in user ids (@alice:<server_name>). Fixed for the life of a deployment.
server_name = "localhost"
# URL clients reach this deployment at, for /.well-known/matrix/client (default: from the request).
# public_base_url = "https://matrix.example.org"
# Node name in logs and sync tokens (default: random).
# node_name = "dc-a-1"
# Administrators (user ids or localparts), whatever their accounts say; they can make others
# admin through the admin API (/_synapse/admin/...).
admins = []

[homeserver.registration]
# Whether anyone may register.
enabled = true
# When set, registering needs this token (m.login.registration_token).
# token = "secret"
# Registering needs a token made with the admin API (`haetae admin registration-tokens`).
requires_token = false

[homeserver.limits]
max_body_bytes = 1048576
max_event_bytes = 65536
max_upload_bytes = 52428800
max_sync_timeout_ms = 60000
max_filter_bytes = 16384
max_events_per_response = 1000
# How long a request's headers may take to arrive, and a request body may stall, ms.
header_read_timeout_ms = 30000
body_read_timeout_ms = 30000
# Most events one POST /search request examines (there is no index; it pages on with next_batch).
search_scan_events = 5000

[homeserver.rate_limits]
# Set false for benchmarks.
enabled = true
per_ip_per_s = 100.0
per_ip_burst = 500.0
writes_per_user_per_s = 20.0
writes_per_user_burst = 100.0
logins_per_ip_per_s = 5.0
logins_per_ip_burst = 30.0
# Connections one client IP may hold open at once.
connections_per_ip = 500

[homeserver.history]
# Memory for rooms' recent events (half), older history read back from the log (a quarter) and
# the state of the rooms in use (a quarter; the others wait in a temporary spill file), MiB. A
# node's memory stays near this, whatever the number of messages and rooms stored.
cache_mb = 256
# How often a node considers writing a read-model snapshot (a starting node loads the newest and
# replays only the log after it), s.
snapshot_interval_s = 60
# A snapshot is written only when the stored one is at least this many log entries behind.
snapshot_min_entries = 10000

[homeserver.password_hashing]
# argon2id parameters.
memory_kib = 19456
iterations = 2
parallelism = 1

[homeserver.oauth]
# The OAuth 2.0 API and login pages (password login works either way).
enabled = true
# Lifetimes, seconds: access tokens (clients refresh after), authorization codes, device codes,
# sign-ins on the login pages.
access_token_lifetime_s = 300
code_lifetime_s = 600
device_code_lifetime_s = 1800
device_poll_interval_s = 5
browser_session_lifetime_s = 43200
# Token endpoint requests per client IP.
token_requests_per_ip_per_s = 10.0
token_requests_per_ip_burst = 60.0
# OpenID Connect: id_token lifetime; the signing key is replaced every rotation period, and each
# new key is published in the JWKS this long before it signs. Seconds.
id_token_lifetime_s = 600
signing_key_rotation_s = 2592000
signing_key_publish_ahead_s = 172800
# For this long after a refresh token is replaced, presenting it again changes nothing (the
# previous token yields the same successor, a spent one is refused without ending the session):
# a request a client gave up on during a DC outage can still arrive. After it, a spent refresh
# token presented again revokes the session. Seconds.
refresh_grace_s = 120

[homeserver.login]
# Logins and registrations through the Matrix API (not OAuth) that ask for a refresh token
# (refresh_token: true) get access tokens that expire after this long; other logins keep tokens
# that do not expire. Seconds. Their refresh tokens rotate with oauth.refresh_grace_s.
refreshable_access_token_lifetime_s = 300
# Lifetime of a token from POST /login/get_token (single use, for m.login.token), s.
login_token_lifetime_s = 120

[homeserver.url_preview]
# GET /_matrix/client/v1/media/preview_url: the node fetches pages users name. Off by default.
# Loopback, private, link-local, CGNAT, multicast and documentation addresses are always
# refused (checked after DNS resolution, on every redirect), whatever the lists say.
enabled = false
# When not empty, only these hosts and their subdomains, e.g. ["example.org", "wikipedia.org"].
allowed_hosts = []
# Hosts (and their subdomains) never previewed.
denied_hosts = []
# Most bytes of a page read (only text/html is previewed; its og:image, up to 5 MiB, is copied
# into the media repository), a fetch's time limit (ms), how long an answer is kept per URL (s).
max_page_bytes = 1048576
fetch_timeout_ms = 10000
cache_ttl_s = 3600

[homeserver.metrics]
# GET /metrics (Prometheus text format) on every node.
disabled = false
# When set, a scrape must send it as a bearer token.
# token = "secret"

[homeserver.incidents]
# Every node checks the deployment's health (DCs, each asset's leader and replicas, its own
# writes) and records incidents in a replicated bucket, shown on the public /status page.
disabled = false
# How often a node checks, ms.
check_interval_ms = 2000
# A failure opens an incident once seen this long without a break; an incident closes once no
# node has seen its failure for resolve_after_s. Seconds.
open_after_s = 10
resolve_after_s = 30
# An incident open this long sends every user a server notice, and a second one when it is
# resolved, s (7200: the two hours within which users must be told of an outage).
notice_after_s = 7200
# A replica this many operations behind its leader counts as stuck behind.
replica_lag_limit = 100000
# Resolved incidents kept.
keep_resolved = 50
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_is_the_defaults() {
        let parsed: Config = toml::from_str(EXAMPLE).unwrap();
        let defaults = Config::default();
        assert_eq!(serde_json::to_value(&parsed).unwrap(), serde_json::to_value(&defaults).unwrap());
    }

    #[test]
    fn unknown_settings_are_refused() {
        assert!(toml::from_str::<Config>("listen = \"x\"\nnonsense = 1\n").is_err());
    }
}
