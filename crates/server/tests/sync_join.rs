//! Joining a room as clients see it through `/sync`: the recent history arrives with the join,
//! a second join after leaving reaches a waiting long-poll, and a room nobody is in cannot be
//! joined.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_brings_the_recent_history_with_it() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let bob = c.register("bob").await;
    let room_id = c.create_room(&alice, json!({ "preset": "public_chat" })).await;
    let mut sent = Vec::new();
    for i in 0..15 {
        sent.push(c.send_text(&alice, &room_id, &format!("before bob {i}")).await);
    }
    let first = c.sync(&bob, None, 0).await;
    let since = first["next_batch"].as_str().unwrap().to_string();
    c.join(&bob, &room_id).await.ok();
    let response = c.sync(&bob, Some(&since), 0).await;
    let room = &response["rooms"]["join"][&room_id];
    let events = timeline(&response, &room_id);
    let bodies: Vec<&str> = events.iter().filter_map(|e| e["content"]["body"].as_str()).collect();
    assert!(bodies.contains(&"before bob 14"), "the newest message before the join is shown: {room:#}");
    assert_eq!(events.last().unwrap()["type"], "m.room.member", "the join ends the timeline");
    assert_eq!(room["timeline"]["limited"], true, "more history than the timeline holds: {room:#}");
    let prev_batch = room["timeline"]["prev_batch"].as_str().expect("prev_batch");
    // The state before the timeline includes the room's creation and name-giving events.
    let state_types: Vec<&str> = room["state"]["events"].as_array().unwrap().iter().filter_map(|e| e["type"].as_str()).collect();
    assert!(state_types.contains(&"m.room.create"), "state carries the room's creation: {state_types:?}");
    // prev_batch continues where the timeline starts: /messages backwards reaches the first message.
    let path = format!("/rooms/{}/messages?dir=b&limit=50&from={}", enc(&room_id), enc(prev_batch));
    let page = c.get(&path, &bob.token).await.ok();
    let older: Vec<&str> = page["chunk"].as_array().unwrap().iter().filter_map(|e| e["content"]["body"].as_str()).collect();
    assert!(older.contains(&"before bob 0"), "prev_batch reaches the oldest message: {older:?}");
    for body in &bodies {
        assert!(!older.contains(body), "nothing shown twice: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_join_reaches_a_waiting_long_poll() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let bob = c.register("bob").await;
    let room_id = c.create_room(&alice, json!({ "preset": "public_chat" })).await;
    c.join(&bob, &room_id).await.ok();
    let (since, _) = c.sync_until(&bob, None, Duration::from_secs(10), |s| !s["rooms"]["join"][&room_id].is_null()).await;
    c.post(&format!("/rooms/{}/leave", enc(&room_id)), &bob.token, json!({})).await.ok();
    let (since, _) = c.sync_until(&bob, Some(&since), Duration::from_secs(10), |s| !s["rooms"]["leave"][&room_id].is_null()).await;
    // Bob's client is already waiting when he joins again (from another device, say).
    let waiting = {
        let c = c.clone();
        let bob = bob.clone();
        let since = since.clone();
        tokio::spawn(async move { c.sync(&bob, Some(&since), 20_000).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = tokio::time::Instant::now();
    c.join(&bob, &room_id).await.ok();
    let response = waiting.await.unwrap();
    assert!(!response["rooms"]["join"][&room_id].is_null(), "the rejoin is delivered: {response:#}");
    assert!(started.elapsed() < Duration::from_secs(15), "delivered when it happened, not at the timeout");
    let events = timeline(&response, &room_id);
    assert!(events.iter().any(|e| e["type"] == "m.room.member" && e["content"]["membership"] == "join"));
    // And a later long-poll sees new messages as usual.
    let next = response["next_batch"].as_str().unwrap().to_string();
    c.send_text(&alice, &room_id, "welcome back").await;
    let (_, seen) = c
        .sync_until(&bob, Some(&next), Duration::from_secs(10), |s| {
            timeline(s, &room_id).iter().any(|e| e["content"]["body"] == "welcome back")
        })
        .await;
    assert!(!seen.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_everyone_left_cannot_be_joined() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let bob = c.register("bob").await;
    let room_id = c.create_room(&alice, json!({ "preset": "public_chat" })).await;
    c.post(&format!("/rooms/{}/leave", enc(&room_id)), &alice.token, json!({})).await.ok();
    c.join(&bob, &room_id).await.expect_err(404, "M_NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_account_has_its_localpart_as_display_name() {
    let server = TestServer::start().await;
    let c = server.client();
    let carol = c.register_named("carol", "a long password").await;
    let answer = c.get(&format!("/profile/{}/displayname", enc(&carol.user_id)), &carol.token).await.ok();
    assert_eq!(answer["displayname"], "carol");
    let room_id = c.create_room(&carol, json!({})).await;
    let member = c.get(&format!("/rooms/{}/state/m.room.member/{}", enc(&room_id), enc(&carol.user_id)), &carol.token).await.ok();
    assert_eq!(member["displayname"], "carol", "the join carries the display name");
}
