//! The node: its configuration, its store handle, its read model, and the request extractors every
//! handler shares (who is calling, their JSON body, rate limits).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use haetae_store::{Bucket, Store};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::config::ServerConfig;
use crate::error::{ApiResult, MatrixError};
use crate::read_model::{ReadModel, Session};

pub struct App {
    pub store: Store,
    pub config: ServerConfig,
    pub model: Arc<ReadModel>,
    pub limiter: RateLimiter,
    /// This node's name (logs, typing part of sync tokens).
    pub node: String,
    pub started: Instant,
    /// Each user's default push ruleset, built once: every `/sync` evaluates it for unread counts.
    pub default_push_rules: DefaultPushRules,
    /// Unread counts per (user, room) as last computed, so a sync evaluates each new event once.
    pub unread: UnreadCounts,
    /// Where password hashes are computed: one long-lived thread per core.
    pub password_hashing: HashingPool,
    /// Each device's one-time key counts as last read, for its syncs.
    pub key_counts: crate::api::keys::KeyCounts,
    /// Everyone's presence as this node last learned it from the presence bucket.
    pub presence: crate::api::presence::PresenceCache,
}

pub type AppState = Arc<App>;

/// How long a read that would rather not wait for an election waits for a KV leader before
/// reading from a replica.
pub const LEADER_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

impl App {
    pub fn user_id(&self, localpart: &str) -> String {
        haetae_matrix::ids::user_id(localpart, &self.config.server_name)
    }

    /// Looks an access token up: cache first, then the tokens bucket (from its leader).
    pub async fn session_for_token(&self, token: &str) -> ApiResult<Option<Session>> {
        let hash = token_hash(token);
        if let Some(session) = self.model.cached_session(&hash) {
            return Ok(Some(session));
        }
        let Some(stored) = self.store.kv().get_available(Bucket::Tokens, &hash, LEADER_WAIT).await? else {
            return Ok(None);
        };
        let value: serde_json::Value = serde_json::from_slice(&stored.value).unwrap_or_default();
        let (Some(user_id), Some(device_id)) = (value["user_id"].as_str(), value["device_id"].as_str()) else {
            return Ok(None);
        };
        let session = Session {
            user_id: user_id.to_string(),
            device_id: device_id.to_string(),
            session: value["session"].as_str().unwrap_or_default().to_string(),
        };
        // A revocation applied while we read the bucket must win over our (older) read.
        if !self.model.cache_session(&hash, session.clone()) {
            return Ok(None);
        }
        Ok(Some(session))
    }
}

/// The hash under which an access token is stored; tokens themselves are never stored or logged.
pub fn token_hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The authenticated caller.
#[derive(Clone, Debug)]
pub struct Caller {
    pub user_id: String,
    pub device_id: String,
    pub session: String,
    pub ip: Option<IpAddr>,
}

pub fn access_token(parts: &Parts) -> Option<String> {
    if let Some(header) = parts.headers.get(axum::http::header::AUTHORIZATION) {
        let value = header.to_str().ok()?;
        return value.strip_prefix("Bearer ").map(|t| t.trim().to_string());
    }
    let query = parts.uri.query()?;
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == "access_token").then(|| percent_decode(value))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        // Hex digits read as bytes: slicing the text could split a multi-byte character.
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((high * 16 + low) as u8);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn client_ip(parts: &Parts) -> Option<IpAddr> {
    parts.extensions.get::<ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = MatrixError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Self::Rejection> {
        let token = access_token(parts).ok_or_else(|| {
            MatrixError::new(axum::http::StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN", "Missing access token")
        })?;
        if crate::oauth::tokens::access_token_expired(&token) {
            return Err(MatrixError::new(axum::http::StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN", "Access token expired")
                .with_extra(serde_json::json!({"soft_logout": true})));
        }
        let session = app.session_for_token(&token).await?.ok_or_else(|| {
            MatrixError::new(axum::http::StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN", "Unknown access token")
                .with_extra(serde_json::json!({"soft_logout": false}))
        })?;
        Ok(Caller {
            user_id: session.user_id,
            device_id: session.device_id,
            session: session.session,
            ip: client_ip(parts),
        })
    }
}

/// A map for caches that are cheap to refill: once it holds `limit` entries it starts over.
pub struct BoundedMap<K, V> {
    entries: Mutex<HashMap<K, V>>,
    limit: usize,
}

impl<K: std::hash::Hash + Eq, V: Clone> BoundedMap<K, V> {
    pub fn new(limit: usize) -> BoundedMap<K, V> {
        BoundedMap { entries: Mutex::new(HashMap::new()), limit }
    }

    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.entries.lock().expect("cache lock").get(key).cloned()
    }

    pub fn put(&self, key: K, value: V) {
        let mut entries = self.entries.lock().expect("cache lock");
        if entries.len() >= self.limit {
            entries.clear();
        }
        entries.insert(key, value);
    }

    pub fn remove<Q>(&self, key: &Q)
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.entries.lock().expect("cache lock").remove(key);
    }
}

/// The spec's default push ruleset per user (it names the user), built on first use.
pub struct DefaultPushRules(BoundedMap<String, Arc<serde_json::Value>>);

impl Default for DefaultPushRules {
    fn default() -> Self {
        DefaultPushRules(BoundedMap::new(100_000))
    }
}

impl DefaultPushRules {
    pub fn get(&self, user_id: &str) -> Arc<serde_json::Value> {
        if let Some(rules) = self.0.get(user_id) {
            return rules;
        }
        let rules = Arc::new(haetae_matrix::push::default_ruleset(user_id));
        self.0.put(user_id.to_string(), rules.clone());
        rules
    }
}

/// A user's unread counts in one room: `notifications` and `highlights` among the events after
/// `after` (their read position) up to `upto`, under the push rules of revision `rules_seq`.
#[derive(Clone, Copy, Debug)]
pub struct UnreadMemo {
    pub after: u64,
    pub rules_seq: u64,
    pub upto: u64,
    pub notifications: u64,
    pub highlights: u64,
}

/// Unread counts as last computed, per (user, room).
pub type UnreadCounts = BoundedMap<(String, String), UnreadMemo>;

/// A fixed set of threads for password hashing. Each argon2id hash needs its memory cost (19 MiB
/// by default) while it runs: on the shared blocking pool a login storm held that much per
/// concurrent request, and the allocator kept it afterwards in one arena per thread that had
/// hashed (1.5 GB resident after 100 concurrent registrations). One thread per core bounds both.
pub struct HashingPool {
    jobs: Mutex<std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>>,
}

impl HashingPool {
    pub fn new(threads: usize) -> HashingPool {
        let (sender, receiver) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..threads.max(1) {
            let receiver = receiver.clone();
            let spawned = std::thread::Builder::new().name(format!("password-hash-{index}")).spawn(move || {
                loop {
                    let job = receiver.lock().expect("hashing queue lock").recv();
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                }
            });
            if let Err(error) = spawned {
                tracing::error!(%error, "cannot start a password hashing thread");
            }
        }
        HashingPool { jobs: Mutex::new(sender) }
    }

    /// Runs `work` on a hashing thread; None if the pool is gone.
    pub async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Box<dyn FnOnce() + Send> = Box::new(move || {
            let _ = done.send(work());
        });
        self.jobs.lock().expect("hashing queue lock").send(job).ok()?;
        result.await.ok()
    }
}

/// A JSON request body with the spec's errors: too large -> M_TOO_LARGE, not JSON -> M_NOT_JSON,
/// wrong shape -> M_BAD_JSON, missing field -> M_MISSING_PARAM. An empty body reads as `{}`.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = MatrixError;

    async fn from_request(request: Request, app: &AppState) -> Result<Self, Self::Rejection> {
        let limit = app.config.limits.max_body_bytes;
        let bytes = axum::body::to_bytes(request.into_body(), limit)
            .await
            .map_err(|error| body_error(&error, format!("request body larger than {limit} bytes")))?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// A body that could not be read: it stalled (408) or was larger than allowed (413).
pub fn body_error(error: &axum::Error, too_large: String) -> MatrixError {
    if crate::http_server::is_body_timeout(error) {
        MatrixError::new(axum::http::StatusCode::REQUEST_TIMEOUT, "M_UNKNOWN", "the request body stopped arriving")
    } else {
        MatrixError::too_large(too_large)
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    let value: serde_json::Value = if bytes.iter().all(u8::is_ascii_whitespace) {
        serde_json::json!({})
    } else {
        serde_json::from_slice(bytes).map_err(|e| MatrixError::not_json(format!("Content not JSON: {e}")))?
    };
    serde_json::from_value(value).map_err(|e| {
        let message = e.to_string();
        if message.starts_with("missing field") {
            MatrixError::missing_param(message)
        } else {
            MatrixError::bad_json(message)
        }
    })
}

/// Token buckets keyed by client IP or user.
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

/// Bound on remembered keys; beyond it the oldest-idle state is forgotten (a fresh, full bucket).
const MAX_RATE_KEYS: usize = 100_000;

impl RateLimiter {
    pub fn new() -> RateLimiter {
        RateLimiter { buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token from `key`'s bucket or says how long to wait.
    pub fn check(&self, key: &str, per_s: f64, burst: f64) -> Result<(), MatrixError> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("limiter lock");
        if buckets.len() > MAX_RATE_KEYS {
            buckets.retain(|_, (tokens, last)| now.duration_since(*last).as_secs_f64() * per_s + *tokens < burst);
        }
        let (tokens, last) = buckets.entry(key.to_string()).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * per_s).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait_ms = ((1.0 - *tokens) / per_s.max(1e-9) * 1000.0).ceil() as u64;
            Err(MatrixError::limit_exceeded(wait_ms.max(1)))
        }
    }
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl App {
    /// Per-user limit on writes (sends, state changes, room creation).
    pub fn limit_writes(&self, user_id: &str) -> ApiResult<()> {
        let limits = &self.config.rate_limits;
        if !limits.enabled {
            return Ok(());
        }
        self.limiter.check(&format!("w:{user_id}"), limits.writes_per_user_per_s, limits.writes_per_user_burst)
    }

    /// Per-IP limit on logins and registrations.
    pub fn limit_logins(&self, ip: Option<IpAddr>) -> ApiResult<()> {
        let limits = &self.config.rate_limits;
        match ip {
            Some(ip) if limits.enabled => {
                self.limiter.check(&format!("l:{ip}"), limits.logins_per_ip_per_s, limits.logins_per_ip_burst)
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_map_to_the_spec_errors() {
        #[derive(serde::Deserialize, Debug)]
        struct Body {
            #[allow(dead_code)]
            name: String,
        }
        assert_eq!(parse_json::<Body>(b"{not json").unwrap_err().errcode, "M_NOT_JSON");
        assert_eq!(parse_json::<Body>(b"{\"name\": 3}").unwrap_err().errcode, "M_BAD_JSON");
        assert_eq!(parse_json::<Body>(b"{}").unwrap_err().errcode, "M_MISSING_PARAM");
        assert_eq!(parse_json::<Body>(b"[]").unwrap_err().errcode, "M_BAD_JSON");
        assert!(parse_json::<Body>(b"{\"name\": \"x\"}").is_ok());
    }

    #[test]
    fn rate_limiter_allows_a_burst_then_refuses() {
        let limiter = RateLimiter::new();
        for _ in 0..3 {
            limiter.check("k", 0.001, 3.0).unwrap();
        }
        let error = limiter.check("k", 0.001, 3.0).unwrap_err();
        assert_eq!(error.errcode, "M_LIMIT_EXCEEDED");
        assert!(error.retry_after_ms.unwrap() > 0);
        limiter.check("other", 0.001, 3.0).unwrap();
    }

    #[test]
    fn token_query_parameter_is_decoded() {
        assert_eq!(percent_decode("a%2Bb+c"), "a+b c");
        assert_eq!(percent_decode("%"), "%");
        // Non-ASCII after a percent sign once panicked (a slice inside a character).
        assert_eq!(percent_decode("%é1"), "%é1");
        assert_eq!(percent_decode("a%€"), "a%€");
    }
}
