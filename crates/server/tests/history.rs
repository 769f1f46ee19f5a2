//! History deeper than a node keeps in memory: a room with more events than its recent window is
//! read back from the log (pagination both ways, `/event`, `/context`, redactions of evicted
//! events), and a node started after a snapshot serves the same history from it.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// More than a room's recent window holds (`read_model::room::MAX_WINDOW_EVENTS`).
const MESSAGES: usize = 700;

fn history_config() -> haetae_server::ServerConfig {
    let mut config = test_config();
    config.rate_limits.enabled = false;
    config.history.snapshot_interval_s = 1;
    config.history.snapshot_min_entries = 50;
    config
}

/// Sends `MESSAGES` messages, a few at a time; returns (event id, body) in the room's order (the
/// log's: concurrent sends land in any order, and an event id names its position).
async fn fill(c: &Client, user: &User, room_id: &str) -> Vec<(String, String)> {
    let mut sent = Vec::new();
    for batch in (0..MESSAGES).collect::<Vec<_>>().chunks(16) {
        let texts: Vec<String> = batch.iter().map(|i| format!("m{i:04}")).collect();
        let sends = texts.iter().map(|text| c.send_text(user, room_id, text));
        sent.extend(futures::future::join_all(sends).await.into_iter().zip(texts));
    }
    sent.sort_by_key(|(id, _)| haetae_server::read_model::event_ids::position_of(id).expect("ids name positions").1);
    sent
}

fn bodies(chunk: &Value) -> Vec<String> {
    chunk
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["content"]["body"].as_str().unwrap_or("<redacted>").to_string())
        .collect()
}

/// Every message body, paginating backwards from the end, oldest first.
async fn page_back_all(c: &Client, user: &User, room_id: &str) -> Vec<String> {
    let mut all = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..100 {
        let query = match &from {
            Some(token) => format!("/rooms/{}/messages?dir=b&limit=50&from={}", enc(room_id), enc(token)),
            None => format!("/rooms/{}/messages?dir=b&limit=50", enc(room_id)),
        };
        let page = c.get(&query, &user.token).await.ok();
        all.extend(bodies(&page["chunk"]));
        match page["end"].as_str() {
            Some(end) => from = Some(end.to_string()),
            None => break,
        }
    }
    all.reverse();
    all
}

/// Every message body, paginating forwards from the start.
async fn page_forward_all(c: &Client, user: &User, room_id: &str) -> Vec<String> {
    let mut all = Vec::new();
    let mut from = "t0".to_string();
    for _ in 0..100 {
        let page = c.get(&format!("/rooms/{}/messages?dir=f&limit=64&from={}", enc(room_id), enc(&from)), &user.token).await.ok();
        let chunk = bodies(&page["chunk"]);
        if page["chunk"].as_array().unwrap().is_empty() {
            break;
        }
        all.extend(chunk);
        from = page["end"].as_str().unwrap().to_string();
    }
    all
}

/// Waits until the stored snapshot covers at least `entries` log entries (30 s at most).
async fn wait_for_snapshot(nats: &Nats, entries: u64) {
    let store = nats.store().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let description = store.snapshots().description().await.unwrap();
        let covers = description
            .as_deref()
            .and_then(haetae_server::read_model::snapshot::SnapshotInfo::parse)
            .map_or(0, |info| info.entries());
        if covers >= entries {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "no snapshot covering the history was written");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn expected(sent: &[(String, String)], redacted: Option<usize>) -> Vec<String> {
    sent.iter().enumerate().map(|(i, (_, body))| if Some(i) == redacted { "<redacted>".to_string() } else { body.clone() }).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_beyond_the_window_reads_back_from_the_log_and_survives_a_snapshot_restart() {
    let nats = Nats::start().await;
    let node = Node::start(&nats, history_config()).await;
    let c = node.client();
    let alice = c.register("alice").await;
    let room_id = c.create_room(&alice, json!({ "preset": "private_chat" })).await;
    let sent = fill(&c, &alice, &room_id).await;
    let ids: Vec<String> = sent.iter().map(|(id, _)| id.clone()).collect();
    let body = |i: usize| sent[i].1.clone();

    // Both directions, through evicted and windowed events, with no gap and no repeat.
    assert_eq!(page_back_all(&c, &alice, &room_id).await, expected(&sent, None));
    assert_eq!(page_forward_all(&c, &alice, &room_id).await, expected(&sent, None));

    // The first message is long out of the window: found by id, with its context.
    let first = c.get(&format!("/rooms/{}/event/{}", enc(&room_id), enc(&ids[0])), &alice.token).await.ok();
    assert_eq!(first["content"]["body"], body(0));
    let context = c.get(&format!("/rooms/{}/context/{}?limit=6", enc(&room_id), enc(&ids[10])), &alice.token).await.ok();
    assert_eq!(context["event"]["content"]["body"], body(10));
    assert_eq!(bodies(&context["events_before"]), vec![body(9), body(8), body(7)]);
    assert_eq!(bodies(&context["events_after"]), vec![body(11), body(12), body(13)]);
    // Ids that name no event of this room: past the end of the log, and another room's create.
    let nowhere = haetae_server::read_model::event_ids::event_id_at(0, 10_000_000);
    c.get(&format!("/rooms/{}/event/{}", enc(&room_id), enc(&nowhere)), &alice.token).await.expect_err(404, "M_NOT_FOUND");
    let other_room = c.create_room(&alice, json!({ "preset": "private_chat" })).await;
    let other_first = c.get(&format!("/rooms/{}/messages?dir=f&limit=1", enc(&other_room)), &alice.token).await.ok();
    let other_id = other_first["chunk"][0]["event_id"].as_str().unwrap().to_string();
    c.get(&format!("/rooms/{}/event/{}", enc(&room_id), enc(&other_id)), &alice.token).await.expect_err(404, "M_NOT_FOUND");

    // Redacting an evicted event: shown redacted wherever it is read.
    let redaction = c.put(&format!("/rooms/{}/redact/{}/{}", enc(&room_id), enc(&ids[3]), txn()), &alice.token, json!({})).await.ok();
    assert!(redaction["event_id"].is_string());
    let redacted = c.get(&format!("/rooms/{}/event/{}", enc(&room_id), enc(&ids[3])), &alice.token).await.ok();
    assert!(redacted["content"].get("body").is_none(), "{redacted}");
    assert_eq!(redacted["unsigned"]["redacted_because"]["event_id"], redaction["event_id"]);
    assert_eq!(page_back_all(&c, &alice, &room_id).await, expected(&sent, Some(3)));

    // A snapshot is written (every second here, once 50 entries are new): wait for it.
    wait_for_snapshot(&nats, MESSAGES as u64).await;
    c.send_text(&alice, &room_id, "after the snapshot").await;
    node.stop().await;

    // A new node starts from the snapshot, replays the rest, and serves the same history.
    let node = Node::start(&nats, history_config()).await;
    let c = node.client();
    let health = c.request(reqwest::Method::GET, "/health", None, None).await.ok();
    assert!(health["started_from_snapshot"].is_array(), "{health}");
    let alice = c.login(&alice).await;
    let mut with_last = expected(&sent, Some(3));
    with_last.push("after the snapshot".into());
    assert_eq!(page_back_all(&c, &alice, &room_id).await, with_last);
    let first = c.get(&format!("/rooms/{}/event/{}", enc(&room_id), enc(&ids[0])), &alice.token).await.ok();
    assert_eq!(first["content"]["body"], body(0));
    // An initial sync shows the latest events, limited, with a token that pages further back.
    let sync = c.sync(&alice, None, 0).await;
    let timeline = &sync["rooms"]["join"][&room_id]["timeline"];
    assert_eq!(timeline["limited"], true);
    assert_eq!(bodies(&timeline["events"]).last().map(String::as_str), Some("after the snapshot"));
    let prev = timeline["prev_batch"].as_str().unwrap();
    let older = c.get(&format!("/rooms/{}/messages?dir=b&limit=5&from={}", enc(&room_id), enc(prev)), &alice.token).await.ok();
    assert_eq!(bodies(&older["chunk"]).len(), 5);
    node.stop().await;
}

/// More rooms than a node keeps in memory under a small cache: the least recently used go cold
/// (out to the node's spill file) and come back transparently, through sync, messages, state,
/// new events and a restart from a snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_beyond_the_budget_go_cold_and_come_back() {
    const ROOMS: usize = 400;
    let mut config = history_config();
    // 8 MB in all: 2 MB for hot rooms' state and indexes, about 200 small rooms.
    config.history.cache_mb = 8;
    let nats = Nats::start().await;
    let node = Node::start(&nats, config.clone()).await;
    let c = node.client();
    let alice = c.register("alice").await;
    let bob = c.register("bob").await;
    let mut rooms = Vec::new();
    for batch in (0..ROOMS).collect::<Vec<_>>().chunks(16) {
        let made = batch.iter().map(|i| {
            let body = json!({ "preset": "private_chat", "name": format!("room {i}"), "invite": [bob.user_id] });
            c.create_room(&alice, body)
        });
        rooms.extend(futures::future::join_all(made).await);
    }
    for (i, room_id) in rooms.iter().enumerate() {
        c.send_text(&alice, room_id, &format!("hello {i}")).await;
    }
    // The evictor runs every 200 ms: wait until rooms have gone cold.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let health = c.request(reqwest::Method::GET, "/health", None, None).await.ok();
        if health["rooms"]["cold"].as_u64().is_some_and(|n| n > 0) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no room went cold: {health}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every room answers as before: its name, its last message, and bob's invite in his sync.
    for (i, room_id) in rooms.iter().enumerate() {
        let name = c.get(&format!("/rooms/{}/state/m.room.name/", enc(room_id)), &alice.token).await.ok();
        assert_eq!(name["name"], format!("room {i}"));
        let last = c.get(&format!("/rooms/{}/messages?dir=b&limit=1", enc(room_id)), &alice.token).await.ok();
        assert_eq!(bodies(&last["chunk"]), vec![format!("hello {i}")]);
    }
    let sync = c.sync(&bob, None, 0).await;
    assert_eq!(sync["rooms"]["invite"].as_object().map(|o| o.len()), Some(ROOMS), "bob sees every invite");
    let sync = c.sync(&alice, None, 0).await;
    assert_eq!(sync["rooms"]["join"].as_object().map(|o| o.len()), Some(ROOMS), "alice sees every room");
    let grown = c.request(reqwest::Method::GET, "/health", None, None).await.ok();
    let grown: u64 = grown["positions"].as_array().map_or(0, |p| p.iter().filter_map(Value::as_u64).sum());
    // A cold room takes a join and a message.
    let first = &rooms[0];
    c.post(&format!("/rooms/{}/join", enc(first)), &bob.token, json!({})).await.ok();
    c.send_text(&bob, first, "bob was here").await;
    let last = c.get(&format!("/rooms/{}/messages?dir=b&limit=1", enc(first)), &alice.token).await.ok();
    assert_eq!(bodies(&last["chunk"]), vec!["bob was here".to_string()]);

    // Restarted from a snapshot (cold rooms are in it), the node serves the same.
    let store = nats.store().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    // (The snapshot need not hold the last few entries: the restarted node replays them.)
    let positions = loop {
        let description = store.snapshots().description().await.unwrap();
        let covers = description.as_deref().and_then(haetae_server::read_model::snapshot::SnapshotInfo::parse).map_or(0, |i| i.entries());
        if grown > 0 && covers >= grown {
            break covers;
        }
        assert!(tokio::time::Instant::now() < deadline, "no snapshot covering the rooms was written");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(positions > 0);
    node.stop().await;
    let node = Node::start(&nats, config).await;
    let c = node.client();
    let alice = c.login(&alice).await;
    for (i, room_id) in rooms.iter().enumerate().step_by(37) {
        let name = c.get(&format!("/rooms/{}/state/m.room.name/", enc(room_id)), &alice.token).await.ok();
        assert_eq!(name["name"], format!("room {i}"));
    }
    let last = c.get(&format!("/rooms/{}/messages?dir=b&limit=1", enc(first)), &alice.token).await.ok();
    assert_eq!(bodies(&last["chunk"]), vec!["bob was here".to_string()]);
}

/// The unread notification count of `user` in `room_id`, from an initial sync.
async fn notification_count(c: &Client, user: &User, room_id: &str) -> Value {
    let sync = c.sync(user, None, 0).await;
    sync["rooms"]["join"][room_id]["unread_notifications"]["notification_count"].clone()
}

/// Unread counts past a room's window: a member who read the room long ago (a read receipt) and
/// one who only sent long ago see every message since counted, on the node that applied them,
/// on a node started later from a snapshot, and after one more message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_counts_reach_past_the_window_and_survive_a_restart() {
    let nats = Nats::start().await;
    let node = Node::start(&nats, history_config()).await;
    let c = node.client();
    let alice = c.register("alice").await;
    let bob = c.register("bob").await;
    let carol = c.register("carol").await;
    let room_id = c.create_room(&alice, json!({ "preset": "public_chat" })).await;
    c.join(&bob, &room_id).await.ok();
    c.join(&carol, &room_id).await.ok();
    // Bob reads up to his own first message; Carol says something and never reads.
    let read_upto = c.send_text(&bob, &room_id, "bob was here").await;
    c.post(&format!("/rooms/{}/receipt/m.read/{}", enc(&room_id), enc(&read_upto)), &bob.token, json!({})).await.ok();
    c.send_text(&carol, &room_id, "carol was here").await;
    let sent = fill(&c, &alice, &room_id).await;
    assert_eq!(sent.len(), MESSAGES);
    // Bob: everything after his receipt (Carol's message and Alice's); Carol: Alice's.
    let (bob_unread, carol_unread) = (MESSAGES as u64 + 1, MESSAGES as u64);
    assert_eq!(notification_count(&c, &bob, &room_id).await, json!(bob_unread));
    assert_eq!(notification_count(&c, &carol, &room_id).await, json!(carol_unread));

    // From a snapshot, on a node whose windows start empty.
    wait_for_snapshot(&nats, MESSAGES as u64).await;
    node.stop().await;
    let node = Node::start(&nats, history_config()).await;
    let c = node.client();
    let health = c.request(reqwest::Method::GET, "/health", None, None).await.ok();
    assert!(health["started_from_snapshot"].is_array(), "{health}");
    let (bob, carol) = (c.login(&bob).await, c.login(&carol).await);
    assert_eq!(notification_count(&c, &bob, &room_id).await, json!(bob_unread));
    assert_eq!(notification_count(&c, &carol, &room_id).await, json!(carol_unread));
    c.send_text(&alice, &room_id, "one more").await;
    assert_eq!(notification_count(&c, &bob, &room_id).await, json!(bob_unread + 1));
    // Reading the latest message clears the count.
    let latest = c.send_text(&alice, &room_id, "the latest").await;
    c.post(&format!("/rooms/{}/receipt/m.read/{}", enc(&room_id), enc(&latest)), &carol.token, json!({})).await.ok();
    assert_eq!(notification_count(&c, &carol, &room_id).await, json!(0));
    assert_eq!(notification_count(&c, &bob, &room_id).await, json!(bob_unread + 2));
    node.stop().await;
}
