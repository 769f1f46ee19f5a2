//! What a homeserver node can be told. Every field has a default that works on a laptop; the
//! binary's TOML file and flags map onto these structs.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// The Matrix server name: the part after `:` in user ids. Fixed for the life of a deployment.
    pub server_name: String,
    /// The URL clients use to reach this deployment (for `/.well-known/matrix/client`).
    pub public_base_url: Option<String>,
    /// A name for this node in logs and sync tokens (defaults to a random one).
    pub node_name: Option<String>,
    pub registration: RegistrationConfig,
    pub limits: Limits,
    pub rate_limits: RateLimits,
    pub password_hashing: PasswordHashing,
    pub history: HistoryConfig,
    pub oauth: OauthConfig,
    pub login: LoginConfig,
    pub url_preview: UrlPreviewConfig,
    pub metrics: MetricsConfig,
    pub incidents: IncidentsConfig,
    /// Users who are administrators whatever their account says (user ids or localparts): how a
    /// deployment gets its first admin, who can then make others admin through the admin API.
    pub admins: Vec<String>,
}

/// `/metrics` (Prometheus text format) on every node.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve no metrics at all.
    pub disabled: bool,
    /// When set, a scrape must present it as a bearer token (Prometheus `authorization`).
    pub token: Option<String>,
}

/// Incidents: every node checks the deployment's health, opens, updates and closes incidents in
/// a replicated bucket, and tells every user by server notice about one that lasts.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IncidentsConfig {
    /// Detect no incidents (the status page then shows none).
    pub disabled: bool,
    /// How often a node checks the deployment's health, ms.
    pub check_interval_ms: u64,
    /// A failure opens an incident once a node has seen it this long without a break, s.
    pub open_after_s: u64,
    /// An incident closes once no node has seen its failure for this long, s.
    pub resolve_after_s: u64,
    /// An incident open this long sends every user a server notice (and a second one when it is
    /// resolved), s. The default is the legal deadline for telling users of an outage.
    pub notice_after_s: u64,
    /// A replica this many operations behind its leader is stuck behind.
    pub replica_lag_limit: u64,
    /// Resolved incidents kept (the oldest beyond this are deleted).
    pub keep_resolved: usize,
}

impl Default for IncidentsConfig {
    fn default() -> Self {
        IncidentsConfig {
            disabled: false,
            check_interval_ms: 2000,
            open_after_s: 10,
            resolve_after_s: 30,
            notice_after_s: 7200,
            replica_lag_limit: 100_000,
            keep_resolved: 50,
        }
    }
}

/// How much history a node holds in memory, and how it snapshots its read model.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryConfig {
    /// Memory for rooms' recent events and old history read back from the log, MiB. Room state
    /// and indexes come on top (they grow with rooms and members, not with messages).
    pub cache_mb: u64,
    /// How often a node considers writing a read-model snapshot, s.
    pub snapshot_interval_s: u64,
    /// A snapshot is written only when the stored one is this many log entries behind.
    pub snapshot_min_entries: u64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig { cache_mb: 256, snapshot_interval_s: 60, snapshot_min_entries: 10_000 }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            server_name: "localhost".into(),
            public_base_url: None,
            node_name: None,
            registration: RegistrationConfig::default(),
            limits: Limits::default(),
            rate_limits: RateLimits::default(),
            password_hashing: PasswordHashing::default(),
            history: HistoryConfig::default(),
            oauth: OauthConfig::default(),
            login: LoginConfig::default(),
            url_preview: UrlPreviewConfig::default(),
            metrics: MetricsConfig::default(),
            incidents: IncidentsConfig::default(),
            admins: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrationConfig {
    /// Whether anyone may create an account through `/register`.
    pub enabled: bool,
    /// When set, registration requires this token (`m.login.registration_token`).
    pub token: Option<String>,
    /// Registration requires a token made through the admin API
    /// (`/_synapse/admin/v1/registration_tokens`), or `token` when that is set.
    pub requires_token: bool,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        RegistrationConfig { enabled: true, token: None, requires_token: false }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest JSON request body, bytes.
    pub max_body_bytes: usize,
    /// Largest event (the spec's limit is 65536 bytes), bytes.
    pub max_event_bytes: usize,
    /// Largest media upload, bytes.
    pub max_upload_bytes: u64,
    /// Longest `/sync` long-poll a client may ask for, milliseconds.
    pub max_sync_timeout_ms: u64,
    /// Largest filter definition, bytes.
    pub max_filter_bytes: usize,
    /// Most events `/messages` and sync timelines return at once.
    pub max_events_per_response: usize,
    /// How long a request's headers may take to arrive, milliseconds.
    pub header_read_timeout_ms: u64,
    /// How long a request body may stall (no data at all), milliseconds.
    pub body_read_timeout_ms: u64,
    /// Most events one `POST /search` request examines (newest first); a search that stops
    /// there answers a `next_batch` to go on. There is no search index: this bounds its cost.
    pub search_scan_events: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 1024 * 1024,
            max_event_bytes: 65536,
            max_upload_bytes: 50 * 1024 * 1024,
            max_sync_timeout_ms: 60_000,
            max_filter_bytes: 16 * 1024,
            max_events_per_response: 1000,
            header_read_timeout_ms: 30_000,
            body_read_timeout_ms: 30_000,
            search_scan_events: 5_000,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimits {
    /// Turns every limit below off (benchmarks).
    pub enabled: bool,
    /// Requests per second one client IP may make (sustained).
    pub per_ip_per_s: f64,
    /// Requests one client IP may make in a burst.
    pub per_ip_burst: f64,
    /// Writes (sends, state changes, room creation) per second per user (sustained).
    pub writes_per_user_per_s: f64,
    pub writes_per_user_burst: f64,
    /// Login and registration attempts per second per client IP (guards password guessing).
    pub logins_per_ip_per_s: f64,
    pub logins_per_ip_burst: f64,
    /// Connections one client IP may hold open at once (long-polls included).
    pub connections_per_ip: usize,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            enabled: true,
            per_ip_per_s: 100.0,
            per_ip_burst: 500.0,
            writes_per_user_per_s: 20.0,
            writes_per_user_burst: 100.0,
            logins_per_ip_per_s: 5.0,
            logins_per_ip_burst: 30.0,
            connections_per_ip: 500,
        }
    }
}

/// argon2id parameters. The defaults are OWASP's recommendation (19 MiB, 2 passes, 1 lane).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PasswordHashing {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for PasswordHashing {
    fn default() -> Self {
        PasswordHashing { memory_kib: 19 * 1024, iterations: 2, parallelism: 1 }
    }
}

/// The OAuth 2.0 login provider (`crate::oauth`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OauthConfig {
    /// Whether the OAuth 2.0 API and the login pages are served (password login works either way).
    pub enabled: bool,
    /// Lifetime of an access token issued through OAuth, seconds; clients refresh after it.
    pub access_token_lifetime_s: u64,
    /// Lifetime of an authorization code, seconds.
    pub code_lifetime_s: u64,
    /// Lifetime of a device code and its user code (device authorization grant), seconds.
    pub device_code_lifetime_s: u64,
    /// Shortest interval between two polls of one device code, seconds.
    pub device_poll_interval_s: u64,
    /// How long a sign-in on the login pages lasts, seconds.
    pub browser_session_lifetime_s: u64,
    /// Token endpoint requests per second per client IP (sustained), and in a burst.
    pub token_requests_per_ip_per_s: f64,
    pub token_requests_per_ip_burst: f64,
    /// Lifetime of an OpenID Connect id_token, seconds. A replaced signing key stays in the JWKS
    /// this long (plus a minute) after its successor starts signing.
    pub id_token_lifetime_s: u64,
    /// How often the id_token signing key is replaced, seconds.
    pub signing_key_rotation_s: u64,
    /// How long a new signing key is published in the JWKS before it signs, seconds (at most
    /// the rotation period; relying parties are told to cache the JWKS for half of it, at most
    /// an hour).
    pub signing_key_publish_ahead_s: u64,
    /// For this long after a refresh token is replaced, presenting it again changes nothing: the
    /// token before the current one yields the same successor, a spent one is refused without
    /// ending the session. A request a client gave up on during a DC outage can reach a node
    /// that long after (see `refresh_chain`); after it, reuse of a spent token revokes the session.
    pub refresh_grace_s: u64,
}

impl Default for OauthConfig {
    fn default() -> Self {
        OauthConfig {
            enabled: true,
            access_token_lifetime_s: 300,
            code_lifetime_s: 600,
            device_code_lifetime_s: 1800,
            device_poll_interval_s: 5,
            browser_session_lifetime_s: 12 * 3600,
            token_requests_per_ip_per_s: 10.0,
            token_requests_per_ip_burst: 60.0,
            id_token_lifetime_s: 600,
            signing_key_rotation_s: 30 * 24 * 3600,
            signing_key_publish_ahead_s: 2 * 24 * 3600,
            refresh_grace_s: 120,
        }
    }
}

/// Logins through the Matrix API's own endpoints (`/login`, `/register`, `/refresh`,
/// `/login/get_token`), as opposed to the OAuth 2.0 provider. A refresh token's grace period is
/// `oauth.refresh_grace_s`, shared with OAuth sessions.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoginConfig {
    /// Lifetime of an access token from a login or registration whose client asked for a refresh
    /// token (`refresh_token: true`), seconds; the client refreshes after it. Logins without it
    /// keep access tokens that do not expire.
    pub refreshable_access_token_lifetime_s: u64,
    /// Lifetime of a login token from `POST /login/get_token`, seconds (the spec suggests 120).
    pub login_token_lifetime_s: u64,
}

impl Default for LoginConfig {
    fn default() -> Self {
        LoginConfig { refreshable_access_token_lifetime_s: 300, login_token_lifetime_s: 120 }
    }
}

/// URL previews (`GET /_matrix/client/v1/media/preview_url`): the node fetches a page a user
/// names and answers its OpenGraph tags. Off by default: it makes the node fetch from other
/// sites on users' behalf. Addresses on loopback, link-local, private, shared (CGNAT),
/// multicast, documentation and other special-purpose networks are always refused, checked
/// after name resolution and on every redirect, whatever the lists below say.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UrlPreviewConfig {
    /// Whether previews are served (404 `M_UNRECOGNIZED` when not, as for an unknown endpoint).
    pub enabled: bool,
    /// When not empty, only these hosts (and their subdomains) are previewed.
    pub allowed_hosts: Vec<String>,
    /// Hosts (and their subdomains) never previewed.
    pub denied_hosts: Vec<String>,
    /// Most bytes of a page read; the tags are looked for in that much, bytes. (A page's image
    /// is copied into the media repository whole, up to 5 MiB and the upload limit.)
    pub max_page_bytes: usize,
    /// Longest a fetch may take, redirects included, ms.
    pub fetch_timeout_ms: u64,
    /// How long a preview (or a failure to get one) is kept and answered again, s.
    pub cache_ttl_s: u64,
}

impl Default for UrlPreviewConfig {
    fn default() -> Self {
        UrlPreviewConfig {
            enabled: false,
            allowed_hosts: Vec::new(),
            denied_hosts: Vec::new(),
            max_page_bytes: 1024 * 1024,
            fetch_timeout_ms: 10_000,
            cache_ttl_s: 3600,
        }
    }
}
