//! The services: everything a request does once HTTP is out of the way. Handlers (`api/`,
//! `oauth/`) call these functions and never reach the store or the read model themselves: the
//! node's store handle and read model are private fields of [`App`], visible only inside this
//! module tree.
//!
//! - [`accounts`]: accounts, passwords, devices, access tokens, user-interactive auth, the
//!   user's own log entries; [`account_extras`]: registration token validity, deleting a
//!   profile field, mutual rooms; [`session_tokens`]: refresh-token chains and login tokens of
//!   Matrix API logins (formats and records).
//! - [`rooms`]: writing into rooms (event ids, idempotency, expected-sequence writes).
//! - [`room_ops`]: what each room endpoint does: creating rooms, sending, state, single events,
//!   context, history pages, members, aliases; [`membership`]: joins, invites, leaves, bans.
//! - [`events`]: how stored events are shown to a client.
//! - [`sync`]: `/sync` and its tokens; [`sliding_sync`]: simplified sliding sync (MSC4186), its
//!   connections kept in a replicated bucket.
//! - [`keys`], [`key_backup`]: end-to-end encryption keys and their server-side backup.
//! - [`user_data`]: profiles, account data, filters, push rules, pushers, receipts, typing,
//!   directories.
//! - [`presence`], [`media`]: presence and the media repository; [`url_preview`]: URL previews
//!   (fetching only what may be fetched).
//! - [`admin`]: the admin API's work (users, devices, rooms), for administrators only;
//!   [`registration_tokens`]: the tokens registration may require; [`room_moderation`]:
//!   blocking and deleting rooms (through the log, so every node agrees);
//!   [`notices`]: server notices to users; [`incidents`]: failures detected by every node, the
//!   status page's data, notices about lasting incidents; [`openid`]: OpenID tokens for widgets and calls.
//! - [`directory`]: the published room directory (visibility, `/publicRooms`), room summaries.
//! - [`relations`]: `/relations` and `/threads`, from the rooms' relation indexes.
//! - [`notifications`]: `GET /notifications`, from push rule evaluation over recent windows.
//! - [`spaces`]: `/hierarchy`, the rooms below a space (a bounded breadth-first walk).
//! - [`timestamp`]: `/timestamp_to_event`, a binary search over a room's chunk index.
//! - [`room_upgrade`]: replacing a room with one of a new room version (tombstone, predecessor).
//! - [`legacy`]: the deprecated `/events`, `/events/{eventId}` and `/initialSync`, over sync.
//! - [`media_pending`]: asynchronous uploads (reserved media ids, filled once).
//! - [`search`]: `POST /search` over room events, a bounded scan (no index).
//! - [`tags`]: room tags (the `m.tag` room account data); [`reports`]: reported events, rooms
//!   and users, kept for administrators; [`thirdparty`]: third-party lookups (no bridges).
//! - [`console`]: the live console's view of the whole deployment (engine, node heartbeats,
//!   incidents).
//! - [`follower`]: the workers that keep the read model current (log tails, snapshots, eviction).
//! - [`caches`], [`limits`], [`metrics`]: the node's bounded caches, rate limits and metrics.
//! - [`oauth_records`]: the only door the OAuth provider has to the store (its own buckets).
//!
//! Services depend on the read model, the store, the Matrix rules and each other (without
//! cycles: accounts <- keys <- sync, presence <- sync, rooms <- room_ops, events <- sync), never on
//! `api`, `oauth` or `app`.

pub mod account_extras;
pub mod accounts;
pub mod admin;
pub mod caches;
pub mod console;
pub mod directory;
pub mod events;
pub mod follower;
pub mod incidents;
pub mod key_backup;
pub mod keys;
pub mod legacy;
pub mod limits;
pub mod media;
pub mod media_pending;
pub mod metrics;
pub mod notices;
pub mod notifications;
pub mod openid;
pub mod membership;
pub mod oauth_records;
pub mod oauth_uia;
pub mod presence;
pub mod relations;
pub mod registration_tokens;
pub mod reports;
pub mod room_moderation;
pub mod room_ops;
pub mod room_upgrade;
pub mod rooms;
pub mod search;
pub mod session_tokens;
pub mod sliding_sync;
pub mod spaces;
pub mod sync;
pub mod tags;
pub mod thirdparty;
pub mod timestamp;
pub mod url_preview;
pub mod user_data;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use haetae_store::{Bucket, Store};
use sha2::{Digest, Sha256};

use crate::config::ServerConfig;
use crate::error::ApiResult;
use crate::read_model::{CacheBudget, ReadModel, Session};
use caches::{BoundedMap, DefaultPushRules, HashingPool, UnreadCounts};
use limits::RateLimiter;

/// One node's services: its configuration and the state every request shares.
pub struct App {
    /// The engine: the event log, KV buckets, object stores. Private: only services reach it.
    store: Store,
    /// What the node knows of rooms and users, rebuilt from the log. Private like the store.
    model: Arc<ReadModel>,
    pub config: ServerConfig,
    pub limiter: RateLimiter,
    /// This node's name (logs, typing part of sync tokens).
    pub node: String,
    pub started: Instant,
    /// Each user's default push ruleset, built once: every `/sync` evaluates it for unread counts.
    default_push_rules: DefaultPushRules,
    /// Unread counts per (user, room) as last computed, so a sync evaluates each new event once.
    unread: UnreadCounts,
    /// Where password hashes are computed: one long-lived thread per core.
    password_hashing: HashingPool,
    /// Each device's one-time key counts as last read, for its syncs.
    key_counts: keys::KeyCounts,
    /// Everyone's presence as this node last learned it from the presence bucket.
    presence: presence::PresenceCache,
    /// What this node counts for `/metrics`.
    pub metrics: metrics::Metrics,
    /// URL previews: answers cached per URL (bounded), fetch slots, TLS settings.
    url_previews: url_preview::Previews,
}

pub type AppState = Arc<App>;

/// Bound on cached one-time key counts (one per device that synced lately).
const MAX_KEY_COUNT_ENTRIES: usize = 100_000;
/// Bound on cached unread counts (one per user and room).
const MAX_UNREAD_ENTRIES: usize = 1_000_000;

/// How long a write waits for this node to apply it before answering 503.
const APPLY_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// How long a read that would rather not wait for an election waits for a KV leader before
/// reading from a replica.
pub const LEADER_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

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

impl App {
    pub fn new(store: Store, config: ServerConfig, node: String) -> App {
        let partitions = store.log().partitions();
        App {
            model: Arc::new(ReadModel::with_budget(partitions, CacheBudget::from_mb(config.history.cache_mb))),
            store,
            config,
            limiter: RateLimiter::new(),
            node,
            started: Instant::now(),
            default_push_rules: Default::default(),
            key_counts: BoundedMap::new(MAX_KEY_COUNT_ENTRIES),
            password_hashing: HashingPool::new(std::thread::available_parallelism().map_or(2, |n| n.get())),
            unread: BoundedMap::new(MAX_UNREAD_ENTRIES),
            presence: Default::default(),
            metrics: Default::default(),
            url_previews: Default::default(),
        }
    }

    /// Appends `entry` to `entity`'s history (deduplicated by `message_id`) and waits until this
    /// node has applied it, so the caller's next request sees it (read-your-writes).
    async fn append_applied(&self, entity: &str, entry: crate::entry::Entry, message_id: &str) -> ApiResult<()> {
        let payload = crate::entry::Envelope::new(entry).to_bytes();
        let started = Instant::now();
        let appended = self.store.log().append(entity, payload, message_id, None).await;
        self.metrics.append_duration.observe(started.elapsed().as_secs_f64());
        let appended = appended.inspect_err(|_| self.metrics.append_errors.inc()).map_err(|error| match error {
            // Over the log's message size: the client's fault, not an outage.
            haetae_store::AppendError::TooLarge(message) => crate::error::MatrixError::too_large(message),
            other => crate::error::MatrixError::unavailable(other),
        })?;
        if !self.model.wait_applied(appended.partition, appended.seq, APPLY_WAIT).await {
            return Err(crate::error::MatrixError::unavailable("this node is behind the event log"));
        }
        Ok(())
    }

    /// What `/health` reports of this node.
    pub fn health(&self) -> serde_json::Value {
        let cache = self.model.cache_stats();
        let rooms = self.model.room_counts();
        serde_json::json!({
            "node": self.node,
            "nats_connected": self.store.connected(),
            "positions": self.model.positions(),
            "started_from_snapshot": self.model.loaded_snapshot(),
            "history_cache": {
                "window_bytes": cache.0,
                "chunk_bytes": cache.1,
                "chunk_hits": cache.2,
                "chunk_misses": cache.3,
                "room_bytes": self.model.room_bytes(),
            },
            "rooms": { "hot": rooms.0, "cold": rooms.1, "spill_bytes": rooms.2 },
            "uptime_s": self.started.elapsed().as_secs(),
        })
    }

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
