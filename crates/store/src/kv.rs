//! Key-value buckets: JetStream KV, one bucket per kind of record.
//!
//! Owns bucket names, key encoding, reads from the stream leader (read-your-writes across nodes)
//! and the rule that a retried create or update that already took effect counts as success.
//! Never interprets values.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;

use crate::{ConnectError, StoreConfig, encode_name, retry};

/// The kinds of records haetae keeps in KV.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Bucket {
    /// user localpart -> account (password hash, flags)
    Accounts,
    /// user id -> that user's devices
    Devices,
    /// hash of an access token -> (user, device)
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
    /// sign-ins; expired by JetStream after a day whatever their own (shorter) expiry says
    OauthGrants,
    /// OAuth 2.0 sessions: one record per refresh-token family (current and spent token hashes)
    OauthSessions,
}

impl Bucket {
    pub const ALL: [Bucket; 10] = [
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
    ];

    fn name(self) -> &'static str {
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
        }
    }

    /// How long JetStream keeps a record of this bucket (zero: forever).
    fn max_age(self) -> Duration {
        match self {
            Bucket::OauthGrants => Duration::from_secs(24 * 3600),
            _ => Duration::ZERO,
        }
    }
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
                js.create_or_update_key_value(kv_config.clone()).await.map_err(|e| e.to_string())
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
    pub async fn get(&self, bucket: Bucket, key: &str) -> Result<Option<Versioned>, KvError> {
        let store = self.store(bucket);
        let subject = format!("$KV.{}.{}", bucket.name(), encode_name(key));
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
    pub async fn get_available(&self, bucket: Bucket, key: &str, leader_wait: Duration) -> Result<Option<Versioned>, KvError> {
        if let Ok(result) = tokio::time::timeout(leader_wait, self.get(bucket, key)).await {
            return result;
        }
        let store = self.store(bucket);
        match tokio::time::timeout(Duration::from_secs(2), store.entry(encode_name(key))).await {
            Ok(Ok(Some(entry))) if entry.operation == kv::Operation::Put => {
                Ok(Some(Versioned { value: entry.value, revision: entry.revision }))
            }
            Ok(Ok(_)) => Err(KvError::Unavailable("the leader is unreachable and no replica has the key".into())),
            Ok(Err(error)) => Err(KvError::Unavailable(error.to_string())),
            Err(_) => Err(KvError::Unavailable("neither the leader nor a replica answered".into())),
        }
    }

    /// Creates `key` only if it does not exist (or was deleted).
    pub async fn create(&self, bucket: Bucket, key: &str, value: Bytes) -> Result<u64, KvError> {
        let store = self.store(bucket);
        let encoded = encode_name(key);
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
    pub async fn update(&self, bucket: Bucket, key: &str, value: Bytes, revision: u64) -> Result<u64, KvError> {
        let store = self.store(bucket);
        let encoded = encode_name(key);
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
    pub async fn put(&self, bucket: Bucket, key: &str, value: Bytes) -> Result<u64, KvError> {
        let store = self.store(bucket);
        let encoded = encode_name(key);
        retry(
            self.retry_horizon,
            || async { store.put(&encoded, value.clone()).await.map_err(|e| KvError::Unavailable(e.to_string())) },
            |_| false,
        )
        .await
    }

    /// Deletes `key`; deleting a missing key is not an error.
    pub async fn delete(&self, bucket: Bucket, key: &str) -> Result<(), KvError> {
        let store = self.store(bucket);
        let encoded = encode_name(key);
        retry(
            self.retry_horizon,
            || async { store.delete(&encoded).await.map_err(|e| KvError::Unavailable(e.to_string())) },
            |_| false,
        )
        .await
    }

    /// Read-modify-write with compare-and-set: `change` gets the current value (if any) and returns
    /// the new one, or `None` to leave the key as it is. Retries on concurrent writers.
    pub async fn modify<F, E>(&self, bucket: Bucket, key: &str, mut change: F) -> Result<Result<Bytes, E>, KvError>
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
        Err(KvError::Unavailable(format!("too much contention on {key}")))
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
