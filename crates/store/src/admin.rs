//! Operator's view of the JetStream assets: where each stream's replicas and leader sit, how far
//! behind each replica is, and moving a leader to a preferred DC.
//!
//! Used by the cluster tools and the drill, never by request handling. Asset names stay inside
//! this crate's vocabulary: the caller sees them only as labels to print.

use std::time::Duration;

use async_nats::jetstream;
use futures::TryStreamExt;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot connect to NATS at {url}: {message}")]
    Connect { url: String, message: String },
    #[error("JetStream request failed: {0}")]
    Request(String),
}

/// One replica of one asset.
#[derive(Clone, Debug, Serialize)]
pub struct ReplicaInfo {
    /// nats-server name (the cluster tools name servers after their DC).
    pub server: String,
    pub leader: bool,
    /// False while the replica is catching up or unreachable.
    pub current: bool,
    /// Operations the replica is behind the leader.
    pub lag: u64,
    /// Seconds since the leader last heard from the replica.
    pub seen_ago_s: f64,
}

/// A stream, KV bucket or object store with its placement.
#[derive(Clone, Debug, Serialize)]
pub struct AssetInfo {
    /// `log/3`, `kv/accounts`, `media`, `snapshots`.
    pub label: String,
    /// The JetStream stream name.
    pub stream: String,
    pub configured_replicas: usize,
    pub messages: u64,
    /// None while no leader is elected.
    pub leader: Option<String>,
    pub replicas: Vec<ReplicaInfo>,
}

impl AssetInfo {
    /// The partition number when this asset is an event-log partition.
    pub fn log_partition(&self) -> Option<u32> {
        self.label.strip_prefix("log/")?.parse().ok()
    }
}

/// A connection for administration. Cheap to clone.
#[derive(Clone)]
pub struct Admin {
    client: async_nats::Client,
    js: jetstream::Context,
}

fn label_of(stream: &str) -> Option<String> {
    if let Some(partition) = stream.strip_prefix("HAETAE_LOG_") {
        return Some(format!("log/{partition}"));
    }
    if let Some(bucket) = stream.strip_prefix("KV_haetae_") {
        return Some(format!("kv/{bucket}"));
    }
    if let Some(store) = stream.strip_prefix("OBJ_haetae_") {
        // `media` for uploads, `snapshots` for read-model snapshots.
        return Some(store.to_string());
    }
    None
}

impl Admin {
    /// Connects to the given NATS URL(s) (comma-separated); any server of the cluster will do.
    /// `access` is the deployment's admin credential and CA (a credential in the URL also works).
    pub async fn connect(url: &str, access: &crate::Access, timeout: Duration) -> Result<Admin, AdminError> {
        let shown_url = crate::redact_url(url);
        let (servers, credential) =
            crate::server_addrs(url).map_err(|message| AdminError::Connect { url: shown_url.clone(), message })?;
        let access =
            crate::merge_access(credential, access).map_err(|message| AdminError::Connect { url: shown_url.clone(), message })?;
        let options = async_nats::ConnectOptions::new()
            .name("haetae-admin")
            .connection_timeout(timeout)
            .request_timeout(Some(timeout));
        let client = crate::with_access(options, &access)
            .connect(servers)
            .await
            .map_err(|e| AdminError::Connect { url: shown_url, message: e.to_string() })?;
        let js = jetstream::ContextBuilder::new().timeout(timeout).build(client.clone());
        Ok(Admin { client, js })
    }

    /// An administration handle on an existing connection (a node reporting its assets).
    pub fn from_client(client: async_nats::Client, timeout: Duration) -> Admin {
        let js = jetstream::ContextBuilder::new().timeout(timeout).build(client.clone());
        Admin { client, js }
    }

    /// The named assets with their placement (`STREAM.INFO` only: a node may not list streams),
    /// sorted by label; names that are not haetae's are left out.
    pub async fn assets_named(&self, streams: &[String]) -> Result<Vec<AssetInfo>, AdminError> {
        let mut assets = Vec::new();
        for name in streams {
            let Some(label) = label_of(name) else { continue };
            assets.push(self.asset(name, label).await?);
        }
        assets.sort_by_key(|a| natural_key(&a.label));
        Ok(assets)
    }

    /// Each named asset's placement, every one asked at once and answering for itself: an asset
    /// whose question fails (no leader while an election runs) is an error of its own, not the
    /// whole answer's. Sorted by label; names that are not haetae's are left out.
    pub async fn assets_each(&self, streams: &[String]) -> Vec<(String, Result<AssetInfo, AdminError>)> {
        let questions = streams.iter().filter_map(|name| Some((name.clone(), label_of(name)?))).map(|(name, label)| async move {
            let answer = self.asset(&name, label.clone()).await;
            (label, answer)
        });
        let mut answers = futures::future::join_all(questions).await;
        answers.sort_by_key(|(label, _)| natural_key(label));
        answers
    }

    /// Every haetae asset with its placement, sorted by label.
    pub async fn assets(&self) -> Result<Vec<AssetInfo>, AdminError> {
        let names: Vec<String> =
            self.js.stream_names().try_collect().await.map_err(|e| AdminError::Request(e.to_string()))?;
        let mut assets = Vec::new();
        for name in names {
            let Some(label) = label_of(&name) else { continue };
            assets.push(self.asset(&name, label).await?);
        }
        assets.sort_by_key(|a| natural_key(&a.label));
        Ok(assets)
    }

    async fn asset(&self, stream: &str, label: String) -> Result<AssetInfo, AdminError> {
        let mut handle = self.js.get_stream(stream).await.map_err(|e| AdminError::Request(e.to_string()))?;
        let info = handle.info().await.map_err(|e| AdminError::Request(e.to_string()))?;
        let mut replicas = Vec::new();
        let mut leader = None;
        if let Some(cluster) = &info.cluster {
            leader = cluster.leader.clone().filter(|l| !l.is_empty());
            if let Some(name) = &leader {
                replicas.push(ReplicaInfo { server: name.clone(), leader: true, current: true, lag: 0, seen_ago_s: 0.0 });
            }
            for peer in &cluster.replicas {
                replicas.push(ReplicaInfo {
                    server: peer.name.clone(),
                    leader: false,
                    current: peer.current,
                    lag: peer.lag.unwrap_or(0),
                    seen_ago_s: peer.active.as_secs_f64(),
                });
            }
        }
        Ok(AssetInfo {
            label,
            stream: stream.to_string(),
            configured_replicas: info.config.num_replicas,
            messages: info.state.messages,
            leader,
            replicas,
        })
    }

    /// The current leader of one stream, None while it has none.
    pub async fn leader_of(&self, stream: &str) -> Result<Option<String>, AdminError> {
        Ok(self.asset(stream, String::new()).await?.leader)
    }

    /// Asks the asset's leader to step down in favour of a replica on a server with `tag`
    /// (e.g. `dc:b`). The engine elects the new leader; this only states a preference.
    pub async fn prefer_leader(&self, stream: &str, tag: &str) -> Result<(), AdminError> {
        let subject = format!("$JS.API.STREAM.LEADER.STEPDOWN.{stream}");
        let body = serde_json::json!({ "placement": { "tags": [tag] } });
        let reply = self
            .client
            .request(subject, serde_json::to_vec(&body).unwrap_or_default().into())
            .await
            .map_err(|e| AdminError::Request(e.to_string()))?;
        let value: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap_or_default();
        if let Some(error) = value.get("error") {
            return Err(AdminError::Request(format!("step-down of {stream}: {error}")));
        }
        Ok(())
    }
}

/// The newest log entry of one entity, as [`Admin::last_entry_of`] finds it.
#[derive(Clone, Debug)]
pub struct EntityEntry {
    pub partition: u32,
    pub seq: u64,
    pub payload: bytes::Bytes,
}

impl Admin {
    /// How many partitions the event log has (the `HAETAE_LOG_*` streams).
    async fn log_partitions(&self) -> Result<u32, AdminError> {
        let names: Vec<String> = self.js.stream_names().try_collect().await.map_err(|e| AdminError::Request(e.to_string()))?;
        Ok(names.iter().filter(|name| name.starts_with("HAETAE_LOG_")).count() as u32)
    }

    /// The newest entry of `entity` (a room or user id) in the event log, None if it has none.
    pub async fn last_entry_of(&self, entity: &str) -> Result<Option<EntityEntry>, AdminError> {
        let partitions = self.log_partitions().await?;
        if partitions == 0 {
            return Err(AdminError::Request("no event log streams found".into()));
        }
        let partition = crate::log::partition_of(entity, partitions);
        let stream = self.js.get_stream(crate::log::stream_name(partition)).await.map_err(|e| AdminError::Request(e.to_string()))?;
        match stream.get_last_raw_message_by_subject(&crate::log::subject(partition, entity)).await {
            Ok(message) => Ok(Some(EntityEntry { partition, seq: message.sequence, payload: message.payload })),
            Err(error) if matches!(error.kind(), jetstream::stream::LastRawMessageErrorKind::NoMessageFound) => Ok(None),
            Err(error) => Err(AdminError::Request(error.to_string())),
        }
    }

    /// Removes `entity`'s entries before `before_seq` from its log partition (JetStream purge by
    /// subject); the entry at `before_seq` and every other entity's entries stay. Returns how many
    /// were removed. Irreversible: only for an entity the caller has checked (a purged room).
    pub async fn purge_entity_before(&self, entity: &str, partition: u32, before_seq: u64) -> Result<u64, AdminError> {
        let stream = self.js.get_stream(crate::log::stream_name(partition)).await.map_err(|e| AdminError::Request(e.to_string()))?;
        let purged = stream
            .purge()
            .filter(crate::log::subject(partition, entity))
            .sequence(before_seq)
            .await
            .map_err(|e| AdminError::Request(e.to_string()))?;
        Ok(purged.purged)
    }
}

/// Sorts `log/10` after `log/9`.
fn natural_key(label: &str) -> (String, u64) {
    match label.rsplit_once('/') {
        Some((prefix, number)) if number.parse::<u64>().is_ok() => (prefix.to_string(), number.parse().unwrap_or(0)),
        _ => (label.to_string(), 0),
    }
}
