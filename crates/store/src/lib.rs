//! The storage layer: the only crate that knows NATS.
//!
//! It owns every durable thing haetae has, all of it in NATS JetStream:
//! - [`log`]: the event log, split into partitions (one stream each). Every
//!   entry belongs to an *entity* (a room or a user); an entity always lands in
//!   the same partition, so each entity has one total order.
//! - [`kv`]: key-value buckets (accounts, devices, tokens, transaction ids,
//!   aliases, keys) with create-if-absent and compare-and-set.
//! - [`media`]: the object store for uploaded files.
//! - [`ephemeral`]: plain NATS subjects for things that are never stored
//!   (typing notifications).
//! - [`launcher`]: starts a private nats-server as a child process.
//! - [`credential`]: the user and password a node presents to NATS (generated for the private
//!   server, read from a file or the URL otherwise), never logged.
//! - [`pki`]: a deployment's certificate authority and its servers' certificates.
//! - [`permissions`]: what a node's NATS user may publish and subscribe to (least privilege).
//!
//! It never interprets what it stores: payloads are bytes, keys are strings.
//! Names of streams, buckets and subjects never leave this crate.

pub mod admin;
pub mod credential;
pub mod ephemeral;
pub mod kv;
pub mod launcher;
pub mod log;
pub mod media;
pub mod permissions;
pub mod pki;
pub mod probe;
pub mod snapshots;

use std::time::Duration;

use async_nats::jetstream;

pub use credential::{Credential, CredentialError, redact_url};
pub use kv::{Bucket, KvError, Versioned};
pub use log::{AppendError, LogEntry, TailError};
pub use media::{MediaError, MediaMeta};

/// How the store lays out and replicates its assets.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Replicas of every stream, bucket and object store (1 on one server, 3 across three DCs).
    pub replicas: usize,
    /// Number of event-log partitions. Fixed for the life of a deployment: sync tokens carry one
    /// position per partition.
    pub partitions: u32,
    /// How long one JetStream request may take before it is retried.
    pub request_timeout: Duration,
    /// How long a write keeps retrying (with the same message id) before giving up.
    pub retry_horizon: Duration,
    /// JetStream's duplicate window for the event log; must be longer than `retry_horizon`.
    pub dedup_window: Duration,
    /// Largest object in the media store, bytes.
    pub max_media_bytes: u64,
    /// The credential to present to NATS; `None` to use the one in the URL, if any.
    pub credential: Option<Credential>,
    /// The CA certificate (PEM file) of a deployment whose servers require TLS: the connection
    /// uses TLS and trusts only this CA. `None`: plaintext (the private server, on loopback).
    pub tls_ca: Option<std::path::PathBuf>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            replicas: 1,
            partitions: 4,
            request_timeout: Duration::from_secs(2),
            retry_horizon: Duration::from_secs(20),
            dedup_window: Duration::from_secs(120),
            max_media_bytes: 50 * 1024 * 1024,
            credential: None,
            tls_ca: None,
        }
    }
}

/// How a client reaches a locked deployment: the credential it presents and the CA it trusts.
/// Used by the operator's tools (admin, probe); a node's [`StoreConfig`] carries the same two.
#[derive(Clone, Debug, Default)]
pub struct Access {
    pub credential: Option<Credential>,
    pub tls_ca: Option<std::path::PathBuf>,
}

/// Errors while connecting to NATS and preparing the streams and buckets.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect { url: String, source: async_nats::ConnectError },
    #[error(
        "NATS at {url} refused haetae's credential ({presented}); give the deployment's user and password with nats.credentials_file or as nats://user:password@host:port"
    )]
    Unauthorized { url: String, presented: String },
    #[error("invalid NATS URL {url}: {message}")]
    Url { url: String, message: String },
    #[error("cannot prepare JetStream asset {name}: {message}")]
    Prepare { name: String, message: String },
    #[error(
        "the deployment was created with {stored} event-log partitions but this node is configured with {configured}; partitions cannot change after creation"
    )]
    PartitionMismatch { stored: u32, configured: u32 },
}

/// A handle on all of haetae's durable state. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    client: async_nats::Client,
    config: StoreConfig,
    log: log::EventLog,
    kv: kv::Buckets,
    media: media::MediaStore,
    snapshots: snapshots::Snapshots,
}

impl Store {
    /// Connects to NATS at `url` (comma-separated list allowed) and creates or updates every
    /// stream and bucket haetae needs, with `config.replicas` replicas.
    ///
    /// The credential is `config.credential`, or the `user:password@` of the URLs (not both).
    /// Errors and logs show the URL with its password redacted. A server that refuses the
    /// credential ends the attempt at once with [`ConnectError::Unauthorized`].
    pub async fn connect(url: &str, config: StoreConfig) -> Result<Store, ConnectError> {
        let shown_url = redact_url(url);
        let (addrs, url_credential) =
            server_addrs(url).map_err(|message| ConnectError::Url { url: shown_url.clone(), message })?;
        let credential = match (&config.credential, url_credential) {
            (Some(_), Some(_)) => {
                return Err(ConnectError::Url {
                    url: shown_url,
                    message: "the URL carries a user and password and a credentials file is configured too; give one".into(),
                });
            }
            (Some(credential), None) => Some(credential.clone()),
            (None, from_url) => from_url,
        };
        let presented = match &credential {
            Some(credential) => format!("user {}", credential.user()),
            None => "no credential".into(),
        };
        let unauthorized = || ConnectError::Unauthorized { url: shown_url.clone(), presented: presented.clone() };
        // With retry_on_initial_connect the client connects in the background and retries a
        // refused credential forever; this channel lets the first refusal end `connect`.
        let (refused_sender, mut refused) = tokio::sync::mpsc::channel::<()>(1);
        let refusal = async_nats::ConnectErrorKind::AuthorizationViolation.to_string();
        let options = async_nats::ConnectOptions::new()
            .name("haetae")
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(config.request_timeout))
            .event_callback(move |event| {
                let refused = matches!(&event, async_nats::Event::ClientError(async_nats::ClientError::Other(e)) if *e == refusal);
                // A request the server refuses goes unanswered (the caller sees a timeout): the
                // server's reason is only here, so it goes to the log.
                if let async_nats::Event::ServerError(async_nats::ServerError::Other(message)) = &event {
                    if message.contains("Permissions Violation") {
                        tracing::warn!(%message, "NATS refused an operation: this node's NATS user lacks the permission");
                    }
                }
                let sender = refused_sender.clone();
                async move {
                    if refused {
                        let _ = sender.try_send(());
                    }
                }
            });
        let access = Access { credential: credential.clone(), tls_ca: config.tls_ca.clone() };
        let client = with_access(options, &access).connect(addrs).await.map_err(|source| match source.kind() {
            async_nats::ConnectErrorKind::AuthorizationViolation => unauthorized(),
            _ => ConnectError::Connect { url: shown_url.clone(), source },
        })?;
        let js = jetstream::ContextBuilder::new()
            .timeout(config.request_timeout)
            .max_ack_inflight(4096)
            .backpressure_on_inflight(true)
            .build(client.clone());
        let prepare = async {
            let kv = kv::Buckets::open(&js, &config).await?;
            kv::check_partitions(&kv, config.partitions).await?;
            let log = log::EventLog::open(&client, &js, &config).await?;
            let media = media::MediaStore::open(&js, &config).await?;
            let snapshots = snapshots::Snapshots::open(&js, &config).await?;
            Ok::<_, ConnectError>((kv, log, media, snapshots))
        };
        let (kv, log, media, snapshots) = tokio::select! {
            prepared = prepare => prepared?,
            Some(()) = refused.recv() => return Err(unauthorized()),
        };
        Ok(Store { client, config, log, kv, media, snapshots })
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    pub fn log(&self) -> &log::EventLog {
        &self.log
    }

    pub fn kv(&self) -> &kv::Buckets {
        &self.kv
    }

    pub fn media(&self) -> &media::MediaStore {
        &self.media
    }

    pub fn snapshots(&self) -> &snapshots::Snapshots {
        &self.snapshots
    }

    pub fn ephemeral(&self) -> ephemeral::Ephemeral {
        ephemeral::Ephemeral::new(self.client.clone())
    }

    /// Every asset of this deployment with its leader and replicas, asked over this node's own
    /// connection (with a node's permissions: `STREAM.INFO` of each known stream).
    pub async fn assets(&self, timeout: std::time::Duration) -> Result<Vec<admin::AssetInfo>, admin::AdminError> {
        let names: Vec<String> = permissions::streams(self.log.partitions()).into_iter().map(|(name, _, _)| name).collect();
        admin::Admin::from_client(self.client.clone(), timeout).assets_named(&names).await
    }

    /// Like [`Store::assets`], every asset asked at once; one that does not answer within
    /// `timeout` (no leader during an election) is an error of its own (the incident checks).
    pub async fn assets_each(&self, timeout: std::time::Duration) -> Vec<(String, Result<admin::AssetInfo, admin::AdminError>)> {
        let names: Vec<String> = permissions::streams(self.log.partitions()).into_iter().map(|(name, _, _)| name).collect();
        admin::Admin::from_client(self.client.clone(), timeout).assets_each(&names).await
    }

    /// True while the connection to NATS is up.
    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }
}

/// Parses a comma-separated list of NATS URLs into addresses without user information, and the
/// credential they carry (every URL that carries one must carry the same). Errors name URLs with
/// their passwords redacted.
pub(crate) fn server_addrs(urls: &str) -> Result<(Vec<async_nats::ServerAddr>, Option<Credential>), String> {
    let mut addrs = Vec::new();
    let mut found: Option<Credential> = None;
    for url in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let shown = redact_url(url);
        let addr = url.parse::<async_nats::ServerAddr>().map_err(|e| format!("{shown}: {e}"))?;
        let Some(user) = addr.username() else {
            addrs.push(addr);
            continue;
        };
        let decode = |part: &str| credential::percent_decode(part).ok_or_else(|| format!("{shown}: bad %-escape in the user information"));
        let credential = Credential::new(decode(user)?, decode(addr.password().unwrap_or_default())?)
            .ok_or_else(|| format!("{shown}: a user in a NATS URL needs a password (nats://user:password@host:port)"))?;
        if found.as_ref().is_some_and(|other| *other != credential) {
            return Err(format!("{shown}: the URLs carry different credentials; haetae presents one"));
        }
        found = Some(credential);
        // The address keeps no user information: async-nats would ignore it, and logs it in Debug.
        let mut bare = addr.into_inner();
        let _ = bare.set_username("");
        let _ = bare.set_password(None);
        addrs.push(async_nats::ServerAddr::from_url(bare).map_err(|e| format!("{shown}: {e}"))?);
    }
    Ok((addrs, found))
}

/// `options` presenting `access`'s credential, if any (replies then arrive under the user's own
/// inbox prefix, see [`permissions::inbox_prefix`]), and requiring TLS with its CA, if any.
pub(crate) fn with_access(options: async_nats::ConnectOptions, access: &Access) -> async_nats::ConnectOptions {
    let options = match &access.credential {
        Some(credential) => options
            .user_and_password(credential.user().to_string(), credential.password().to_string())
            .custom_inbox_prefix(permissions::inbox_prefix(credential.user())),
        None => options,
    };
    match &access.tls_ca {
        Some(ca) => options.add_root_certificates(ca.clone()).require_tls(true),
        None => options,
    }
}

/// The credential and CA a caller gives, with the credential a URL carries: a URL credential is
/// used when `access` has none; both at once is an error.
pub(crate) fn merge_access(url_credential: Option<Credential>, access: &Access) -> Result<Access, String> {
    match (&access.credential, url_credential) {
        (Some(_), Some(_)) => Err("the URL carries a user and password and a credential is given too; give one".into()),
        (Some(_), None) => Ok(access.clone()),
        (None, from_url) => Ok(Access { credential: from_url, tls_ca: access.tls_ca.clone() }),
    }
}

/// Keys and entity names are arbitrary strings (user ids contain `@` and `:`); NATS subjects and
/// KV keys allow only a small alphabet, so every name is stored base64url-encoded.
pub(crate) fn encode_name(name: &str) -> String {
    use base64::Engine;
    // The leading letter keeps the empty name a valid, non-empty token.
    format!("k{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(name.as_bytes()))
}

pub(crate) fn decode_name(encoded: &str) -> Option<String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded.strip_prefix('k')?).ok()?;
    String::from_utf8(bytes).ok()
}

/// Retries `attempt` until it succeeds, fails with an error `is_final` says is final, or
/// `horizon` passes. Every attempt must be idempotent (same message id, same expected revision).
pub(crate) async fn retry<T, E, F, Fut>(
    horizon: Duration,
    mut attempt: F,
    is_final: impl Fn(&E) -> bool,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + horizon;
    let mut backoff = Duration::from_millis(20);
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) if is_final(&error) || tokio::time::Instant::now() + backoff >= deadline => {
                return Err(error);
            }
            Err(_) => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(200));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_the_subject_alphabet() {
        for name in ["@alice:example.org", "!room:x", "a.b c*>", ""] {
            let encoded = encode_name(name);
            assert!(encoded.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
            assert_eq!(decode_name(&encoded).as_deref(), Some(name));
        }
    }

    #[test]
    fn urls_give_up_their_credentials() {
        let (addrs, credential) = server_addrs("nats://haetae:p%40ss@a:4222, nats://b:4223").unwrap();
        assert_eq!(credential, Credential::new("haetae", "p@ss"));
        let shown: Vec<String> = addrs.iter().map(|a| a.as_url_str().to_string()).collect();
        assert_eq!(shown, ["nats://a:4222", "nats://b:4223"]);
        assert_eq!(server_addrs("nats://a:4222").unwrap().1, None);
        let error = server_addrs("nats://u:one@a:1,nats://u:two@b:2").unwrap_err();
        assert!(!error.contains("two") || error.contains("***"), "{error}");
        assert!(server_addrs("nats://u@a:1").is_err());
    }
}
