//! The event log: `partitions` JetStream streams, each the total order of the entities (rooms,
//! users) that hash to it.
//!
//! Owns stream names, subjects, message ids and the retry-with-the-same-id rule for appends.
//! Never interprets payloads: the server decides what an entry means.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, context::PublishErrorKind, stream};
use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::{ConnectError, StoreConfig, decode_name, encode_name, retry};

pub(crate) const SUBJECT_ROOT: &str = "haetae.log";

/// How long one pull of a tail waits on the server; the idle heartbeat is half of it.
const TAIL_PULL_EXPIRY: Duration = Duration::from_millis(500);
/// Most entries one range read asks for (the server's own cap on a direct-get batch is larger).
pub const MAX_RANGE_BATCH: usize = 1024;
/// How long a range read waits for each reply.
const RANGE_REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// One entry of one partition.
#[derive(Clone, Debug)]
pub struct LogEntry {
    pub partition: u32,
    /// Position in the partition; the partition's total order.
    pub seq: u64,
    /// The room or user this entry belongs to.
    pub entity: String,
    pub payload: Bytes,
}

/// Where an append landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub partition: u32,
    pub seq: u64,
    /// The log already held an entry with this message id (a retried write); `seq` is the original.
    pub duplicate: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Another entry was appended to the entity since the expected sequence.
    #[error("the entity changed since sequence {expected}")]
    Conflict { expected: u64 },
    /// No quorum answered within the retry horizon: the write may or may not be stored; a retry
    /// with the same message id is safe.
    #[error("the event log is unavailable: {0}")]
    Unavailable(String),
    #[error("entry too large: {0}")]
    TooLarge(String),
}

/// Where a range read is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeSource {
    /// One batched direct get: any current replica may answer, so the caller checks what it got
    /// against what it knows the range holds.
    AnyReplica,
    /// The stream leader, one entry at a time: slower, never behind.
    Leader,
}

#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error("cannot read partition {partition}: {message}")]
    Read { partition: u32, message: String },
}

#[derive(Clone)]
pub struct EventLog {
    js: jetstream::Context,
    client: async_nats::Client,
    streams: Vec<stream::Stream>,
    retry_horizon: Duration,
}

pub(crate) fn stream_name(partition: u32) -> String {
    format!("HAETAE_LOG_{partition}")
}

pub(crate) fn subject(partition: u32, entity: &str) -> String {
    format!("{SUBJECT_ROOT}.{partition}.{}", encode_name(entity))
}

/// FNV-1a: stable across builds and platforms, so every node maps an entity to the same partition.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf29ce484222325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x100000001b3);
    }
    hash
}

/// True when an existing partition stream already has every setting `open` would give it.
fn matches_log_config(existing: &stream::Config, wanted: &stream::Config) -> bool {
    existing.subjects == wanted.subjects
        && existing.num_replicas == wanted.num_replicas
        && existing.duplicate_window == wanted.duplicate_window
        && existing.allow_direct == wanted.allow_direct
        && existing.max_message_size == wanted.max_message_size
}

pub fn partition_of(entity: &str, partitions: u32) -> u32 {
    (fnv1a(entity.as_bytes()) % u64::from(partitions.max(1))) as u32
}

impl EventLog {
    pub(crate) async fn open(
        client: &async_nats::Client,
        js: &jetstream::Context,
        config: &StoreConfig,
    ) -> Result<EventLog, ConnectError> {
        let mut streams = Vec::new();
        for partition in 0..config.partitions {
            let name = stream_name(partition);
            let stream_config = stream::Config {
                name: name.clone(),
                subjects: vec![format!("{SUBJECT_ROOT}.{partition}.>")],
                num_replicas: config.replicas,
                storage: stream::StorageType::File,
                duplicate_window: config.dedup_window,
                allow_direct: true,
                max_message_size: 1024 * 1024,
                ..Default::default()
            };
            let prepared = crate::kv::with_retry(config, || async {
                match js.get_stream(&name).await {
                    // Updated only when something differs: a deployment's node may not update
                    // streams (only the admin user may), and needs to only when settings change.
                    Ok(existing) if matches_log_config(&existing.cached_info().config, &stream_config) => Ok(existing),
                    Ok(existing) => {
                        let mut wanted = stream_config.clone();
                        // Keep placement the server chose; only replicas/dedup are ours to change.
                        wanted.placement = existing.cached_info().config.placement.clone();
                        js.update_stream(wanted).await.map_err(|e| e.to_string())?;
                        js.get_stream(&name).await.map_err(|e| e.to_string())
                    }
                    Err(_) => js.get_or_create_stream(stream_config.clone()).await.map_err(|e| e.to_string()),
                }
            })
            .await
            .map_err(|message| ConnectError::Prepare { name: name.clone(), message })?;
            streams.push(prepared);
        }
        Ok(EventLog { js: js.clone(), client: client.clone(), streams, retry_horizon: config.retry_horizon })
    }

    pub fn partitions(&self) -> u32 {
        self.streams.len() as u32
    }

    pub fn partition_of(&self, entity: &str) -> u32 {
        partition_of(entity, self.partitions())
    }

    /// Appends `payload` to `entity`'s history and returns once a quorum of replicas holds it.
    ///
    /// `message_id` makes the append idempotent: a retry (by this call, another node, or a client
    /// retrying through another DC) within the dedup window returns the original position.
    /// With `expected_entity_seq`, the append fails with [`AppendError::Conflict`] unless the
    /// entity's last entry is at that sequence (0: the entity has no entry yet).
    pub async fn append(
        &self,
        entity: &str,
        payload: Bytes,
        message_id: &str,
        expected_entity_seq: Option<u64>,
    ) -> Result<Appended, AppendError> {
        let partition = self.partition_of(entity);
        let subject = subject(partition, entity);
        retry(
            self.retry_horizon,
            || async {
                let mut message = jetstream::message::PublishMessage::build()
                    .payload(payload.clone())
                    .message_id(message_id);
                if let Some(expected) = expected_entity_seq {
                    message = message.expected_last_subject_sequence(expected);
                }
                let ack_future = self.js.send_publish(subject.clone(), message).await.map_err(publish_error)?;
                let ack = ack_future.await.map_err(publish_error)?;
                Ok(Appended { partition, seq: ack.sequence, duplicate: ack.duplicate })
            },
            |error| !matches!(error, AppendError::Unavailable(_)),
        )
        .await
        .map_err(|error| match error {
            AppendError::Conflict { .. } => AppendError::Conflict { expected: expected_entity_seq.unwrap_or(0) },
            other => other,
        })
    }

    /// The sequence of the last entry in `partition`, asked of the stream leader.
    pub async fn last_seq(&self, partition: u32) -> Result<u64, TailError> {
        let stream = self.stream(partition)?;
        retry(
            self.retry_horizon,
            || async {
                stream
                    .get_info()
                    .await
                    .map(|info| info.state.last_sequence)
                    .map_err(|e| TailError::Read { partition, message: e.to_string() })
            },
            |_| false,
        )
        .await
    }

    /// The entry at `seq`, asked of the stream leader; `None` if there is none.
    pub async fn get(&self, partition: u32, seq: u64) -> Result<Option<LogEntry>, TailError> {
        let stream = self.stream(partition)?;
        match stream.get_raw_message(seq).await {
            Ok(message) => Ok(entry_of(partition, &message.subject, message.sequence, message.payload)),
            Err(error) if error.to_string().contains("no message found") => Ok(None),
            Err(error) => Err(TailError::Read { partition, message: error.to_string() }),
        }
    }

    /// Every entry of `partition` after `after_seq`, in order, then new entries as they are
    /// appended. Survives leader changes and reconnects (an ordered consumer recreates itself).
    /// Every position comes out once, in order: one whose subject is not haetae's has an empty
    /// entity and payload (its reader skips it).
    pub async fn tail(
        &self,
        partition: u32,
        after_seq: u64,
    ) -> Result<impl Stream<Item = Result<LogEntry, TailError>> + Send + 'static + use<>, TailError> {
        let stream = self.stream(partition)?;
        let config = consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence: after_seq + 1 },
            // Short pull expiry, hence a short idle heartbeat: when the server holding this
            // consumer dies (its DC burned), two missed heartbeats recreate it elsewhere within
            // half a second instead of the client library's default half minute.
            max_expires: TAIL_PULL_EXPIRY,
            ..Default::default()
        };
        let consumer = retry(
            self.retry_horizon,
            || async { stream.create_consumer(config.clone()).await },
            |_| false,
        )
        .await
        .map_err(|e| TailError::Read { partition, message: e.to_string() })?;
        let messages = consumer.messages().await.map_err(|e| TailError::Read { partition, message: e.to_string() })?;
        Ok(messages.filter_map(move |item| async move {
            match item {
                Ok(message) => {
                    let seq = message.info().map(|info| info.stream_sequence).unwrap_or(0);
                    // Every position is passed on, so a reader's applied position can reach the
                    // end: an entry under a subject haetae did not encode (written by hand, or by
                    // anyone with a node's credential) comes with no entity and no payload.
                    let entry = entry_of(partition, &message.subject, seq, message.payload.clone())
                        .unwrap_or(LogEntry { partition, seq, entity: String::new(), payload: Bytes::new() });
                    Some(Ok(entry))
                }
                Err(error) => Some(Err(TailError::Read { partition, message: error.to_string() })),
            }
        }))
    }

    /// The entries of `entity` with `from_seq <= seq <= up_to_seq`, in order, at most `max`,
    /// read as `source` says.
    pub async fn entity_range(
        &self,
        entity: &str,
        from_seq: u64,
        up_to_seq: u64,
        max: usize,
        source: RangeSource,
    ) -> Result<Vec<LogEntry>, TailError> {
        match source {
            RangeSource::AnyReplica => self.entity_range_batched(entity, from_seq, up_to_seq, max).await,
            RangeSource::Leader => self.entity_range_from_leader(entity, from_seq, up_to_seq, max).await,
        }
    }

    async fn entity_range_batched(
        &self,
        entity: &str,
        from_seq: u64,
        up_to_seq: u64,
        max: usize,
    ) -> Result<Vec<LogEntry>, TailError> {
        let partition = self.partition_of(entity);
        let read_error = |message: String| TailError::Read { partition, message };
        if from_seq > up_to_seq || max == 0 {
            return Ok(Vec::new());
        }
        let inbox = self.client.new_inbox();
        let mut replies = self.client.subscribe(inbox.clone()).await.map_err(|e| read_error(e.to_string()))?;
        let request = serde_json::json!({
            "seq": from_seq,
            "next_by_subj": subject(partition, entity),
            "batch": max.min(MAX_RANGE_BATCH),
            "up_to_seq": up_to_seq,
        });
        self.client
            .publish_with_reply(
                format!("$JS.API.DIRECT.GET.{}", stream_name(partition)),
                inbox,
                Bytes::from(request.to_string()),
            )
            .await
            .map_err(|e| read_error(e.to_string()))?;
        let mut entries = Vec::new();
        loop {
            let message = match tokio::time::timeout(RANGE_REPLY_TIMEOUT, replies.next()).await {
                Ok(Some(message)) => message,
                Ok(None) => return Err(read_error("reply subscription closed".into())),
                Err(_) => return Err(read_error("no reply to a range read".into())),
            };
            if let Some(status) = message.status {
                match status.as_u16() {
                    // End of batch, or nothing in the range.
                    204 | 404 => return Ok(entries),
                    other => {
                        return Err(read_error(format!("range read answered {other} {}", message.description.unwrap_or_default())));
                    }
                }
            }
            let headers = message.headers.as_ref();
            let header = |name: &str| headers.and_then(|h| h.get(name)).map(|v| v.as_str().to_string());
            let seq = header("Nats-Sequence").and_then(|s| s.parse::<u64>().ok());
            let subject = header("Nats-Subject");
            let (Some(seq), Some(subject)) = (seq, subject) else {
                return Err(read_error("range read reply without sequence or subject".into()));
            };
            if let Some(entry) = entry_of(partition, &subject, seq, message.payload) {
                entries.push(entry);
            }
            if entries.len() >= max.min(MAX_RANGE_BATCH) {
                // The server sends its end-of-batch marker next; no need to wait for it.
                return Ok(entries);
            }
        }
    }

    async fn entity_range_from_leader(
        &self,
        entity: &str,
        from_seq: u64,
        up_to_seq: u64,
        max: usize,
    ) -> Result<Vec<LogEntry>, TailError> {
        let partition = self.partition_of(entity);
        let stream = self.stream(partition)?;
        let subject = subject(partition, entity);
        let mut entries = Vec::new();
        let mut next = from_seq;
        while next <= up_to_seq && entries.len() < max {
            match stream.get_first_raw_message_by_subject(&subject, next).await {
                Ok(message) => {
                    if message.sequence > up_to_seq {
                        break;
                    }
                    next = message.sequence + 1;
                    if let Some(entry) = entry_of(partition, &message.subject, message.sequence, message.payload) {
                        entries.push(entry);
                    }
                }
                Err(error) if error.to_string().contains("no message found") => break,
                Err(error) => return Err(TailError::Read { partition, message: error.to_string() }),
            }
        }
        Ok(entries)
    }

    fn stream(&self, partition: u32) -> Result<&stream::Stream, TailError> {
        self.streams
            .get(partition as usize)
            .ok_or(TailError::Read { partition, message: "no such partition".into() })
    }
}

fn entry_of(partition: u32, subject: &str, seq: u64, payload: Bytes) -> Option<LogEntry> {
    let encoded = subject.rsplit('.').next()?;
    Some(LogEntry { partition, seq, entity: decode_name(encoded)?, payload })
}

fn publish_error(error: jetstream::context::PublishError) -> AppendError {
    match error.kind() {
        PublishErrorKind::WrongLastSequence => AppendError::Conflict { expected: 0 },
        PublishErrorKind::MaxPayloadExceeded => AppendError::TooLarge(error.to_string()),
        _ => AppendError::Unavailable(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_stable_and_spread() {
        assert_eq!(partition_of("!a:x", 4), partition_of("!a:x", 4));
        let mut seen = [0u32; 4];
        for i in 0..400 {
            seen[partition_of(&format!("!room{i}:example.org"), 4) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
        assert_eq!(partition_of("anything", 1), 0);
    }
}
