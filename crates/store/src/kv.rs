//! Key-value buckets: JetStream KV, one bucket per kind of record.
//!
//! Owns bucket names, key encoding, reads from the stream leader (read-your-writes across nodes)
//! and the rule that a retried create or update that already took effect counts as success.
//! Never interprets values.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;

use crate::{ConnectError, StoreConfig, decode_name, encode_name, retry};

/// The kinds of records haetae keeps in KV.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Bucket {
    /// user localpart -> account (password hash, flags)
    Accounts,
    /// user id -> that user's devices
    Devices,
    /// hash of an access token -> (user, device); `refresh:<session>` -> a login session's
    /// refresh-token chain
    Tokens,
    /// hash of (user, device, room, txn id) -> event id
    Txns,
    /// room alias -> room id
    Aliases,
    /// end-to-end keys: device keys, one-time keys, cross-signing keys
    Keys,
    /// deployment-wide facts (number of partitions), leases, the login provider's secrets
    Meta,
    /// OAuth 2.0 client id -> registered client metadata
    OauthClients,
    /// short-lived OAuth grants: hashed authorization codes, device codes, user codes, browser
    /// sign-ins, login tokens; expired by JetStream after a day whatever their own (shorter) expiry says
    OauthGrants,
    /// OAuth 2.0 sessions: one record per refresh-token family (current and spent token hashes)
    OauthSessions,
    /// user id -> that user's presence (state, status message, last activity)
    Presence,
    /// server-side key backups: user id -> versions; (user, version, room, session) -> session key
    RoomKeys,
    /// reports of events, rooms and users: ("report", time-ordered id) -> the report, for admins
    Reports,
    /// incidents the nodes detected: ("incident", id) -> the incident; ("open", failure) -> the
    /// id of the incident open for that failure; ("notices", id, kind) -> a notice's progress;
    /// ("node", name) -> the node's last health check (its write probe)
    Incidents,
    /// sliding sync connections: (user, device, connection id) -> what the connection has sent
    /// and the positions its `pos` tokens stand for; expired by JetStream after a week unused
    SlidingSync,
}

impl Bucket {
    pub const ALL: [Bucket; 15] = [
        Bucket::Accounts,
        Bucket::Devices,
        Bucket::Tokens,
        Bucket::Txns,
        Bucket::Aliases,
        Bucket::Keys,
        Bucket::Meta,
        Bucket::OauthClients,
        Bucket::OauthGrants,
        Bucket::OauthSessions,
        Bucket::Presence,
        Bucket::RoomKeys,
        Bucket::Reports,
        Bucket::Incidents,
        Bucket::SlidingSync,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Bucket::Accounts => "haetae_accounts",
            Bucket::Devices => "haetae_devices",
            Bucket::Tokens => "haetae_tokens",
            Bucket::Txns => "haetae_txns",
            Bucket::Aliases => "haetae_aliases",
            Bucket::Keys => "haetae_keys",
            Bucket::Meta => "haetae_meta",
            Bucket::OauthClients => "haetae_oauth_clients",
            Bucket::OauthGrants => "haetae_oauth_grants",
            Bucket::OauthSessions => "haetae_oauth_sessions",
            Bucket::Presence => "haetae_presence",
            Bucket::RoomKeys => "haetae_room_keys",
            Bucket::Reports => "haetae_reports",
            Bucket::Incidents => "haetae_incidents",
            Bucket::SlidingSync => "haetae_sliding_sync",
        }
    }

    /// How long JetStream keeps a record of this bucket (zero: forever).
    fn max_age(self) -> Duration {
        match self {
            Bucket::OauthGrants => Duration::from_secs(24 * 3600),
            Bucket::SlidingSync => Duration::from_secs(7 * 24 * 3600),
            _ => Duration::ZERO,
        }
    }
}

/// How a key is named in a bucket. A plain name (`str`, `String`) is one token; a [`KeyPath`] is
/// several, so that everything under a prefix of it can be listed ([`Buckets::list`]).
pub trait KvKey {
    fn encoded(&self) -> String;
}

impl KvKey for str {
    fn encoded(&self) -> String {
        encode_name(self)
    }
}

impl KvKey for String {
    fn encoded(&self) -> String {
        encode_name(self)
    }
}

impl<T: KvKey + ?Sized> KvKey for &T {
    fn encoded(&self) -> String {
        (**self).encoded()
    }
}

/// A key of several segments (any text each), e.g. (user, backup version, room, session).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPath(pub Vec<String>);

impl KeyPath {
    pub fn new<S: AsRef<str>>(segments: &[S]) -> KeyPath {
        KeyPath(segments.iter().map(|s| s.as_ref().to_string()).collect())
    }
}

impl KvKey for KeyPath {
    fn encoded(&self) -> String {
        self.0.iter().map(|segment| encode_name(segment)).collect::<Vec<_>>().join(".")
    }
}

/// What [`Buckets::list`] found under a prefix.
#[derive(Clone, Debug, Default)]
pub struct Listing {
    /// Live keys (the segments after the prefix) with their values, in no particular order.
    pub entries: Vec<(Vec<String>, Versioned)>,
    /// The highest revision of any key under the prefix, deletions included: it changes with
    /// every write under the prefix (0: nothing was ever written there).
    pub last_revision: u64,
}

/// A value with the revision it was read at (for compare-and-set).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    pub value: Bytes,
    pub revision: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KvError {
    #[error("the key already exists")]
    Exists,
    /// Someone else wrote the key since the revision the caller read: re-read and retry.
    #[error("the key changed since revision {0}")]
    WrongRevision(u64),
    #[error("the key-value store is unavailable: {0}")]
    Unavailable(String),
    /// A listing found more keys than the caller allows.
    #[error("more than {0} keys")]
    TooMany(usize),
}

#[derive(Clone)]
pub struct Buckets {
    stores: Vec<(Bucket, kv::Store)>,
    retry_horizon: Duration,
}

/// Retries preparing an asset while the cluster elects leaders or peers come up.
pub(crate) async fn with_retry<T, F, Fut>(config: &StoreConfig, attempt: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    retry(config.retry_horizon.max(Duration::from_secs(30)), attempt, |_| false).await
}

impl Buckets {
    pub(crate) async fn open(js: &jetstream::Context, config: &StoreConfig) -> Result<Buckets, ConnectError> {
        let mut stores = Vec::new();
        for bucket in Bucket::ALL {
            let kv_config = kv::Config {
                bucket: bucket.name().to_string(),
                history: 1,
                num_replicas: config.replicas,
                storage: jetstream::stream::StorageType::File,
                max_value_size: 1024 * 1024,
                max_age: bucket.max_age(),
                ..Default::default()
            };
            let store = with_retry(config, || async {
                // Updated only when something differs (a deployment's node may not update
                // streams; see permissions.rs).
                match js.get_stream(format!("KV_{}", bucket.name())).await {
                    Ok(stream) => {
                        let existing = &stream.cached_info().config;
                        let same = existing.num_replicas == kv_config.num_replicas
                            && existing.max_age == kv_config.max_age
                            && existing.max_message_size == kv_config.max_value_size
                            && existing.max_messages_per_subject == kv_config.history;
                        if same {
                            js.get_key_value(bucket.name()).await.map_err(|e| e.to_string())
                        } else {
                            js.create_or_update_key_value(kv_config.clone()).await.map_err(|e| e.to_string())
                        }
                    }
                    // Missing (or not answering: the retry asks again): create, which an
                    // existing bucket with the same settings also accepts.
                    Err(_) => js.create_key_value(kv_config.clone()).await.map_err(|e| e.to_string()),
                }
            })
            .await
            .map_err(|message| ConnectError::Prepare { name: bucket.name().to_string(), message })?;
            stores.push((bucket, store));
        }
        Ok(Buckets { stores, retry_horizon: config.retry_horizon })
    }

    fn store(&self, bucket: Bucket) -> &kv::Store {
        // Every variant is opened in `open`, so the lookup cannot miss.
        &self.stores.iter().find(|(b, _)| *b == bucket).expect("every bucket is opened").1
    }

    /// Reads `key` from the bucket's stream leader, so a write acknowledged anywhere is seen.
    pub async fn get<K: KvKey + ?Sized>(&self, bucket: Bucket, key: &K) -> Result<Option<Versioned>, KvError> {
        let store = self.store(bucket);
        let subject = format!("$KV.{}.{}", bucket.name(), key.encoded());
        retry(
            self.retry_horizon,
            || async {
                match store.stream.get_last_raw_message_by_subject(&subject).await {
                    Ok(message) => {
                        let deleted = message
                            .headers
                            .get("KV-Operation")
                            .map(|op| op.as_str() == "DEL" || op.as_str() == "PURGE")
                            .unwrap_or(false);
                        if deleted {
                            Ok(None)
                        } else {
                            Ok(Some(Versioned { value: message.payload, revision: message.sequence }))
                        }
                    }
                    Err(error) => {
                        use async_nats::jetstream::stream::LastRawMessageErrorKind;
                        match error.kind() {
                            LastRawMessageErrorKind::NoMessageFound => Ok(None),
                            _ => Err(KvError::Unavailable(error.to_string())),
                        }
                    }
                }
            },
            |_| false,
        )
        .await
    }

    /// Reads `key` from the leader when it answers within `leader_wait`; otherwise (the leader's
    /// DC is gone and an election is under way) from any replica. A replica may lag the leader,
    /// so a key a replica does not have is reported as unavailable, never as absent: the caller
    /// retries rather than concluding the key does not exist.
    pub async fn get_available<K: KvKey + ?Sized>(&self, bucket: Bucket, key: &K, leader_wait: Duration) -> Result<Option<Versioned>, KvError> {
        if let Ok(result) = tokio::time::timeout(leader_wait, self.get(bucket, key)).await {
            return result;
        }
        let store = self.store(bucket);
        match tokio::time::timeout(Duration::from_secs(2), store.entry(key.encoded())).await {
            Ok(Ok(Some(entry))) if entry.operation == kv::Operation::Put => {
                Ok(Some(Versioned { value: entry.value, revision: entry.revision }))
            }
            Ok(Ok(_)) => Err(KvError::Unavailable("the leader is unreachable and no replica has the key".into())),
            Ok(Err(error)) => Err(KvError::Unavailable(error.to_string())),
            Err(_) => Err(KvError::Unavailable("neither the leader nor a replica answered".into())),
        }
    }

    /// Creates `key` only if it does not exist (or was deleted).
    pub async fn create<K: KvKey + ?Sized>(&self, bucket: Bucket, key: &K, value: Bytes) -> Result<u64, KvError> {
        let store = self.store(bucket);
        let encoded = key.encoded();
        let outcome = retry(
            self.retry_horizon,
            || async {
                store.create(&encoded, value.clone()).await.map_err(|error| match error.kind() {
                    kv::CreateErrorKind::AlreadyExists => KvError::Exists,
                    _ => KvError::Unavailable(error.to_string()),
                })
            },
            |error| *error == KvError::Exists,
        )
        .await;
        match outcome {
            // An earlier attempt whose acknowledgement was lost may have created it with our value.
            Err(KvError::Exists) => match self.get(bucket, key).await? {
                Some(current) if current.value == value => Ok(current.revision),
                _ => Err(KvError::Exists),
            },
            other => other,
        }
    }

    /// Replaces `key` only if it is still at `revision`.
    pub async fn update<K: KvKey + ?Sized>(&self, bucket: Bucket, key: &K, value: Bytes, revision: u64) -> Result<u64, KvError> {
        let store = self.store(bucket);
        let encoded = key.encoded();
        let outcome = retry(
            self.retry_horizon,
            || async {
                store.update(&encoded, value.clone(), revision).await.map_err(|error| match error.kind() {
                    kv::UpdateErrorKind::WrongLastRevision => KvError::WrongRevision(revision),
                    _ => KvError::Unavailable(error.to_string()),
                })
            },
            |error| matches!(error, KvError::WrongRevision(_)),
        )
        .await;
        match outcome {
            Err(KvError::WrongRevision(_)) => match self.get(bucket, key).await? {
                Some(current) if current.value == value => Ok(current.revision),
                _ => Err(KvError::WrongRevision(revision)),
            },
            other => other,
        }
    }

    /// Writes `key` unconditionally.
    pub async fn put<K: KvKey + ?Sized>(&self, bucket: Bucket, key: &K, value: Bytes) -> Result<u64, KvError> {
        let store = self.store(bucket);
        let encoded = key.encoded();
        retry(
            self.retry_horizon,
            || async { store.put(&encoded, value.clone()).await.map_err(|e| KvError::Unavailable(e.to_string())) },
            |_| false,
        )
        .await
    }

    /// Deletes `key`; deleting a missing key is not an error.
    pub async fn delete<K: KvKey + ?Sized>(&self, bucket: Bucket, key: &K) -> Result<(), KvError> {
        let store = self.store(bucket);
        let encoded = key.encoded();
        retry(
            self.retry_horizon,
            || async { store.delete(&encoded).await.map_err(|e| KvError::Unavailable(e.to_string())) },
            |_| false,
        )
        .await
    }

    /// Read-modify-write with compare-and-set: `change` gets the current value (if any) and returns
    /// the new one, or `None` to leave the key as it is. Retries on concurrent writers.
    pub async fn modify<K: KvKey + ?Sized, F, E>(&self, bucket: Bucket, key: &K, mut change: F) -> Result<Result<Bytes, E>, KvError>
    where
        F: FnMut(Option<&Bytes>) -> Result<Option<Bytes>, E>,
    {
        for _attempt in 0..64 {
            let current = self.get(bucket, key).await?;
            let next = match change(current.as_ref().map(|c| &c.value)) {
                Ok(Some(next)) => next,
                Ok(None) => return Ok(Ok(current.map(|c| c.value).unwrap_or_default())),
                Err(error) => return Ok(Err(error)),
            };
            let written = match &current {
                Some(current) => self.update(bucket, key, next.clone(), current.revision).await,
                None => self.create(bucket, key, next.clone()).await,
            };
            match written {
                Ok(_) => return Ok(Ok(next)),
                Err(KvError::Exists | KvError::WrongRevision(_)) => continue,
                Err(other) => return Err(other),
            }
        }
        Err(KvError::Unavailable(format!("too much contention on {}", key.encoded())))
    }
}

/// How long a listing waits for each entry before giving up.
const LIST_ENTRY_TIMEOUT: Duration = Duration::from_secs(5);

impl Buckets {
    /// Every live key under `prefix` (at most `max`: more is an error, the caller's bound) and
    /// the highest revision under it. Read through a consumer on the bucket's stream (served by
    /// the stream leader), last value per key.
    /// With `values` false only keys and revisions are read (values come back empty).
    /// Every key of a bucket (keys of one segment), like [`Buckets::list`].
    pub async fn list_all(&self, bucket: Bucket, max: usize, values: bool) -> Result<Listing, KvError> {
        self.list_filtered(bucket, format!("$KV.{}.>", bucket.name()), 0, max, values).await
    }

    pub async fn list(&self, bucket: Bucket, prefix: &KeyPath, max: usize, values: bool) -> Result<Listing, KvError> {
        let filter = format!("$KV.{}.{}.>", bucket.name(), prefix.encoded());
        self.list_filtered(bucket, filter, prefix.0.len(), max, values).await
    }

    /// The keys under `filter_subject` (their first `skip` segments left out), at most `max`.
    async fn list_filtered(&self, bucket: Bucket, filter_subject: String, skip: usize, max: usize, values: bool) -> Result<Listing, KvError> {
        use futures::StreamExt;
        let store = self.store(bucket);
        let unavailable = |error: String| KvError::Unavailable(error);
        let config = jetstream::consumer::pull::OrderedConfig {
            filter_subject,
            deliver_policy: jetstream::consumer::DeliverPolicy::LastPerSubject,
            headers_only: !values,
            ..Default::default()
        };
        let consumer = retry(self.retry_horizon, || async { store.stream.create_consumer(config.clone()).await }, |_| false)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let mut listing = Listing::default();
        if consumer.cached_info().num_pending == 0 {
            return Ok(listing);
        }
        let mut messages = consumer.messages().await.map_err(|e| unavailable(e.to_string()))?;
        loop {
            let message = match tokio::time::timeout(LIST_ENTRY_TIMEOUT, messages.next()).await {
                Ok(Some(Ok(message))) => message,
                Ok(Some(Err(error))) => return Err(unavailable(error.to_string())),
                Ok(None) | Err(_) => return Err(unavailable("a listing stopped before its end".into())),
            };
            let info = message.info().map_err(|e| unavailable(e.to_string()))?;
            let (revision, pending) = (info.stream_sequence, info.pending);
            listing.last_revision = listing.last_revision.max(revision);
            let deleted = message
                .headers
                .as_ref()
                .and_then(|h| h.get("KV-Operation"))
                .is_some_and(|op| op.as_str() == "DEL" || op.as_str() == "PURGE");
            if !deleted {
                let tokens: Vec<&str> = message.subject.split('.').skip(2).collect();
                let segments: Option<Vec<String>> = tokens.iter().skip(skip).map(|t| decode_name(t)).collect();
                if let Some(segments) = segments {
                    if listing.entries.len() >= max {
                        return Err(KvError::TooMany(max));
                    }
                    listing.entries.push((segments, Versioned { value: message.payload.clone(), revision }));
                }
            }
            if pending == 0 {
                return Ok(listing);
            }
        }
    }

    /// Every key's current value, then every change as it happens: (key, Some(value)) for a
    /// write, (key, None) for a deletion. Plain names only. Ends when the watch breaks (the
    /// caller starts a new one).
    pub async fn watch(
        &self,
        bucket: Bucket,
    ) -> Result<impl futures::Stream<Item = (String, Option<Bytes>)> + Send + 'static + use<>, KvError> {
        use futures::StreamExt;
        let store = self.store(bucket);
        let watch = store.watch_with_history(">").await.map_err(|e| KvError::Unavailable(e.to_string()))?;
        Ok(watch.take_while(|entry| futures::future::ready(entry.is_ok())).filter_map(|entry| async move {
            let entry = entry.ok()?;
            let key = decode_name(&entry.key)?;
            match entry.operation {
                kv::Operation::Put => Some((key, Some(entry.value))),
                kv::Operation::Delete | kv::Operation::Purge => Some((key, None)),
            }
        }))
    }
}

const PARTITIONS_KEY: &str = "partitions";

/// Records the number of partitions on first start and refuses a node configured differently.
pub(crate) async fn check_partitions(buckets: &Buckets, configured: u32) -> Result<(), ConnectError> {
    let value = Bytes::from(configured.to_string());
    let prepare = |message: String| ConnectError::Prepare { name: Bucket::Meta.name().into(), message };
    match buckets.create(Bucket::Meta, PARTITIONS_KEY, value).await {
        Ok(_) => Ok(()),
        Err(KvError::Exists) => {
            let stored = buckets
                .get(Bucket::Meta, PARTITIONS_KEY)
                .await
                .map_err(|e| prepare(e.to_string()))?
                .and_then(|v| std::str::from_utf8(&v.value).ok().and_then(|s| s.parse::<u32>().ok()))
                .ok_or_else(|| prepare("unreadable partition count".into()))?;
            if stored == configured { Ok(()) } else { Err(ConnectError::PartitionMismatch { stored, configured }) }
        }
        Err(other) => Err(prepare(other.to_string())),
    }
}
