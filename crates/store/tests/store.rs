//! The storage layer's semantics, against a real nats-server.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use haetae_store::launcher::{NatsProcess, ServerSpec};
use haetae_store::{AppendError, Bucket, KvError, MediaMeta, Store, StoreConfig};

async fn store() -> (Store, NatsProcess, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsProcess::start(ServerSpec::single(dir.path().join("nats")), Duration::from_secs(30)).await.unwrap();
    let config = StoreConfig { partitions: 3, retry_horizon: Duration::from_secs(5), ..StoreConfig::default() };
    let store = Store::connect(nats.url(), config).await.unwrap();
    (store, nats, dir)
}

#[tokio::test]
async fn appends_with_one_message_id_are_stored_once() {
    let (store, _nats, _dir) = store().await;
    let first = store.log().append("!room:x", Bytes::from_static(b"one"), "m1", None).await.unwrap();
    let retry = store.log().append("!room:x", Bytes::from_static(b"one"), "m1", None).await.unwrap();
    assert!(!first.duplicate);
    assert!(retry.duplicate);
    assert_eq!(first.seq, retry.seq);
    assert_eq!(store.log().last_seq(first.partition).await.unwrap(), first.seq);
}

#[tokio::test]
async fn expected_entity_sequence_is_a_compare_and_set() {
    let (store, _nats, _dir) = store().await;
    let log = store.log();
    let first = log.append("!a:x", Bytes::from_static(b"1"), "a1", Some(0)).await.unwrap();
    // Another entity in the same partition does not disturb the room's expectation.
    let second = log.append("!a:x", Bytes::from_static(b"2"), "a2", Some(first.seq)).await.unwrap();
    let stale = log.append("!a:x", Bytes::from_static(b"3"), "a3", Some(first.seq)).await;
    assert!(matches!(stale, Err(AppendError::Conflict { .. })), "{stale:?}");
    let fresh = log.append("!a:x", Bytes::from_static(b"3"), "a3", Some(second.seq)).await.unwrap();
    assert!(fresh.seq > second.seq);
    assert!(matches!(log.append("!b:x", Bytes::from_static(b"x"), "b1", Some(99)).await, Err(AppendError::Conflict { .. })));
}

#[tokio::test]
async fn tail_delivers_every_entry_in_order_then_new_ones() {
    let (store, _nats, _dir) = store().await;
    let log = store.log();
    let entity = "@user:x";
    let partition = log.partition_of(entity);
    let mut seqs = Vec::new();
    for i in 0..20 {
        seqs.push(log.append(entity, Bytes::from(format!("{i}")), &format!("t{i}"), None).await.unwrap().seq);
    }
    let mut tail = Box::pin(log.tail(partition, 0).await.unwrap());
    for (i, seq) in seqs.iter().enumerate() {
        let entry = tokio::time::timeout(Duration::from_secs(10), tail.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(entry.seq, *seq);
        assert_eq!(entry.entity, entity);
        assert_eq!(entry.payload, Bytes::from(format!("{i}")));
    }
    let late = log.append(entity, Bytes::from_static(b"late"), "late", None).await.unwrap();
    let entry = tokio::time::timeout(Duration::from_secs(10), tail.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(entry.seq, late.seq);
    // Tailing from the middle starts after the given sequence.
    let mut from_middle = Box::pin(log.tail(partition, seqs[9]).await.unwrap());
    let entry = tokio::time::timeout(Duration::from_secs(10), from_middle.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(entry.seq, seqs[10]);
    assert!(log.get(partition, seqs[3]).await.unwrap().is_some_and(|e| e.payload == Bytes::from("3")));
}

#[tokio::test]
async fn kv_create_update_and_modify_follow_revisions() {
    let (store, _nats, _dir) = store().await;
    let kv = store.kv();
    let key = "@alice:example.org";
    let revision = kv.create(Bucket::Accounts, key, Bytes::from_static(b"v1")).await.unwrap();
    assert_eq!(kv.create(Bucket::Accounts, key, Bytes::from_static(b"other")).await, Err(KvError::Exists));
    // A retried create with the same value counts as done.
    assert_eq!(kv.create(Bucket::Accounts, key, Bytes::from_static(b"v1")).await, Ok(revision));
    let read = kv.get(Bucket::Accounts, key).await.unwrap().unwrap();
    assert_eq!((read.value.clone(), read.revision), (Bytes::from_static(b"v1"), revision));
    let updated = kv.update(Bucket::Accounts, key, Bytes::from_static(b"v2"), revision).await.unwrap();
    assert_eq!(
        kv.update(Bucket::Accounts, key, Bytes::from_static(b"v3"), revision).await,
        Err(KvError::WrongRevision(revision))
    );
    assert!(updated > revision);
    let result = kv
        .modify(Bucket::Accounts, key, |current| -> Result<Option<Bytes>, ()> {
            let mut next = current.unwrap().to_vec();
            next.extend_from_slice(b"+");
            Ok(Some(Bytes::from(next)))
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(result, Bytes::from_static(b"v2+"));
    kv.delete(Bucket::Accounts, key).await.unwrap();
    assert_eq!(kv.get(Bucket::Accounts, key).await.unwrap(), None);
    kv.delete(Bucket::Accounts, key).await.unwrap();
    // A deleted key can be created again.
    kv.create(Bucket::Accounts, key, Bytes::from_static(b"again")).await.unwrap();
}

#[tokio::test]
async fn concurrent_modifies_lose_no_update() {
    let (store, _nats, _dir) = store().await;
    let writers = (0..8).map(|i| {
        let store = store.clone();
        async move {
            store
                .kv()
                .modify(Bucket::Meta, "counter", |current| -> Result<Option<Bytes>, ()> {
                    let mut list: Vec<u32> = current.map(|c| serde_json::from_slice(c).unwrap()).unwrap_or_default();
                    list.push(i);
                    Ok(Some(Bytes::from(serde_json::to_vec(&list).unwrap())))
                })
                .await
                .unwrap()
                .unwrap()
        }
    });
    futures::future::join_all(writers).await;
    let stored = store.kv().get(Bucket::Meta, "counter").await.unwrap().unwrap();
    let mut list: Vec<u32> = serde_json::from_slice(&stored.value).unwrap();
    list.sort();
    assert_eq!(list, (0..8).collect::<Vec<_>>());
}

#[tokio::test]
async fn media_round_trips_byte_identical_and_enforces_its_limit() {
    let (store, _nats, _dir) = store().await;
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let meta = MediaMeta { content_type: Some("image/png".into()), filename: Some("a.png".into()) };
    store.media().put("abc", Bytes::from(bytes.clone()), &meta).await.unwrap();
    let (read, read_meta) = store.media().get("abc").await.unwrap().unwrap();
    assert_eq!(read.as_ref(), bytes.as_slice());
    assert_eq!(read_meta, meta);
    assert!(store.media().get("missing").await.unwrap().is_none());
}

#[tokio::test]
async fn a_deployment_refuses_a_different_partition_count() {
    let (_store, nats, _dir) = store().await;
    let other = StoreConfig { partitions: 5, ..StoreConfig::default() };
    match Store::connect(nats.url(), other).await {
        Err(haetae_store::ConnectError::PartitionMismatch { stored: 3, configured: 5 }) => {}
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("connected with a different partition count"),
    }
}

#[tokio::test]
async fn a_tail_passes_every_position_even_a_foreign_entry() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsProcess::start(ServerSpec::single(dir.path().join("nats")), Duration::from_secs(30)).await.unwrap();
    let config = StoreConfig { partitions: 1, retry_horizon: Duration::from_secs(5), ..StoreConfig::default() };
    let store = Store::connect(nats.url(), config).await.unwrap();
    // Someone with a node's rights publishes under the log's subjects what haetae never encodes
    // (`ktest` is not base64url of UTF-8 text).
    let raw = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(raw);
    js.publish("haetae.log.0.ktest", "not haetae's".into()).await.unwrap().await.unwrap();
    let appended = store.log().append("!room:x", Bytes::from_static(b"after"), "m1", None).await.unwrap();
    assert_eq!(appended.seq, 2);
    let mut tail = Box::pin(store.log().tail(0, 0).await.unwrap());
    let foreign = tokio::time::timeout(Duration::from_secs(10), tail.next()).await.unwrap().unwrap().unwrap();
    assert_eq!((foreign.seq, foreign.entity.as_str(), foreign.payload.len()), (1, "", 0));
    let ours = tokio::time::timeout(Duration::from_secs(10), tail.next()).await.unwrap().unwrap().unwrap();
    assert_eq!((ours.seq, ours.entity.as_str()), (2, "!room:x"));
}
