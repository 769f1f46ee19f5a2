//! End-to-end Client-Server API flows against a real node on a private nats-server.

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

fn messages_path(room_id: &str) -> String {
    format!("/rooms/{}/messages", enc(room_id))
}

/// One /messages page.
async fn messages(c: &Client, user: &User, room_id: &str, dir: &str, from: Option<&str>, limit: usize) -> Value {
    let mut query = vec![("dir", dir.to_string()), ("limit", limit.to_string())];
    if let Some(from) = from {
        query.push(("from", from.to_string()));
    }
    let request = c.http.get(c.url(&messages_path(room_id))).bearer_auth(&user.token).query(&query);
    Client::finish(request).await.ok()
}

/// Every message body in the room, oldest first, read by paginating backwards from the end.
async fn all_bodies(c: &Client, user: &User, room_id: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..100 {
        let page = messages(c, user, room_id, "b", from.as_deref(), 50).await;
        for event in page["chunk"].as_array().unwrap() {
            if event["type"] == "m.room.message" {
                bodies.push(event["content"]["body"].as_str().unwrap_or_default().to_string());
            }
        }
        match page["end"].as_str() {
            Some(end) => from = Some(end.to_string()),
            None => break,
        }
    }
    bodies.reverse();
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_login_whoami_logout() {
    let server = TestServer::start().await;
    let c = server.client();
    let name = unique_name("alice");

    // User-interactive auth: the first call gets the flows and a session.
    let first = c.register_start(&name, "pw-alice-1").await;
    assert_eq!(first.status, 401, "{}", first.body);
    let flows = first.body["flows"].as_array().expect("flows");
    assert!(
        flows.iter().any(|f| f["stages"].as_array().is_some_and(|s| s.iter().any(|st| st == "m.login.dummy"))),
        "flows should offer m.login.dummy: {}",
        first.body
    );
    let session = first.body["session"].as_str().expect("session").to_string();
    let registered = c
        .request(
            Method::POST,
            "/register",
            None,
            Some(&json!({
                "username": name, "password": "pw-alice-1",
                "auth": { "type": "m.login.dummy", "session": session },
                "initial_device_display_name": "first device",
            })),
        )
        .await
        .ok();
    let user_id = registered["user_id"].as_str().unwrap().to_string();
    assert_eq!(user_id, format!("@{name}:test.local"));
    let token1 = registered["access_token"].as_str().unwrap().to_string();

    let who = c.get("/account/whoami", &token1).await.ok();
    assert_eq!(who["user_id"], user_id.as_str());
    assert_eq!(who["device_id"], registered["device_id"]);

    // Log in with the password and an m.id.user identifier: a second device.
    let login = c
        .request(
            Method::POST,
            "/login",
            None,
            Some(&json!({
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": name },
                "password": "pw-alice-1",
            })),
        )
        .await
        .ok();
    assert_eq!(login["user_id"], user_id.as_str());
    let token2 = login["access_token"].as_str().unwrap().to_string();
    assert_ne!(token1, token2);
    assert_ne!(login["device_id"], registered["device_id"]);
    let who2 = c.get("/account/whoami", &token2).await.ok();
    assert_eq!(who2["device_id"], login["device_id"]);

    // Logging out the second device revokes only its token.
    c.post("/logout", &token2, json!({})).await.ok();
    c.get("/account/whoami", &token2).await.expect_err(401, "M_UNKNOWN_TOKEN");
    c.get("/account/whoami", &token1).await.ok();

    // logout/all revokes every token of the user.
    let user = User { user_id, localpart: name, password: "pw-alice-1".into(), token: token1.clone(), device_id: String::new() };
    let third = c.login(&user).await;
    c.post("/logout/all", &token1, json!({})).await.ok();
    c.get("/account/whoami", &token1).await.expect_err(401, "M_UNKNOWN_TOKEN");
    c.get("/account/whoami", &third.token).await.expect_err(401, "M_UNKNOWN_TOKEN");
    // The account itself still works.
    let again = c.login(&user).await;
    c.get("/account/whoami", &again.token).await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_invite_join_send_sync_redact_leave() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let bob = c.register("bob").await;

    let room_id = c
        .create_room(&alice, json!({ "preset": "private_chat", "name": "Test room", "topic": "Testing things" }))
        .await;

    // Bob's sync before the invite, so the invite arrives incrementally.
    let bob_initial = c.sync(&bob, None, 0).await;
    assert!(bob_initial["rooms"]["invite"].get(&room_id).is_none());
    let bob_since = bob_initial["next_batch"].as_str().unwrap().to_string();

    c.invite(&alice, &room_id, &bob.user_id).await;
    let (bob_since, _) = c
        .sync_until(&bob, Some(&bob_since), Duration::from_secs(10), |s| {
            let Some(invite) = s["rooms"]["invite"].get(&room_id) else { return false };
            let events = invite["invite_state"]["events"].as_array().unwrap();
            assert!(events.iter().any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Test room"), "{invite}");
            events.iter().any(|e| {
                e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str() && e["content"]["membership"] == "invite"
            })
        })
        .await;
    // An initial sync also shows the pending invite.
    assert!(c.sync(&bob, None, 0).await["rooms"]["invite"].get(&room_id).is_some());

    // Bob joins; before that, he may not send.
    c.send_with_txn(&bob, &room_id, "too early", &txn()).await.expect_err(403, "M_FORBIDDEN");
    let joined = c.join(&bob, &room_id).await.ok();
    assert_eq!(joined["room_id"], room_id.as_str());
    let (bob_since, _) = c
        .sync_until(&bob, Some(&bob_since), Duration::from_secs(10), |s| s["rooms"]["join"].get(&room_id).is_some())
        .await;
    let joined_rooms = c.get("/joined_rooms", &bob.token).await.ok();
    assert!(joined_rooms["joined_rooms"].as_array().unwrap().iter().any(|r| r == room_id.as_str()));

    // Messages, including a retried transaction id.
    let mut sent = Vec::new();
    let mut received: Vec<String> = Vec::new();
    let mut since = bob_since;
    for round in 0..3 {
        for i in 0..3 {
            let text = format!("message {round}.{i}");
            let txn_id = txn();
            let first = c.send_with_txn(&alice, &room_id, &text, &txn_id).await.ok();
            let event_id = first["event_id"].as_str().unwrap().to_string();
            if i == 1 {
                let retry = c.send_with_txn(&alice, &room_id, &text, &txn_id).await.ok();
                assert_eq!(retry["event_id"], event_id.as_str(), "a retried txnId must return the same event id");
            }
            sent.push(event_id);
        }
        let response = c.sync(&bob, Some(&since), 0).await;
        since = response["next_batch"].as_str().unwrap().to_string();
        let timeline = timeline(&response, &room_id);
        assert_eq!(response["rooms"]["join"][&room_id]["timeline"]["limited"], false);
        received.extend(ids(&timeline).into_iter().filter(|id| sent.contains(id)));
    }
    // Nothing more comes once everything was seen.
    let quiet = c.sync(&bob, Some(&since), 0).await;
    assert!(timeline(&quiet, &room_id).is_empty(), "no events should repeat: {quiet}");
    assert_eq!(received, sent, "incremental sync must deliver each event once, in order");

    // The room holds the retried message once.
    let bodies = all_bodies(&c, &bob, &room_id).await;
    let expected: Vec<String> = (0..3).flat_map(|r| (0..3).map(move |i| format!("message {r}.{i}"))).collect();
    assert_eq!(bodies, expected);

    // The sender's own view carries the transaction id.
    let alice_view = c.sync(&alice, None, 0).await;
    let own = timeline(&alice_view, &room_id);
    assert!(own.iter().any(|e| e["unsigned"]["transaction_id"].is_string()), "sender should see transaction_id");

    // State.
    let state = c.get(&format!("/rooms/{}/state", enc(&room_id)), &bob.token).await.ok();
    let state = state.as_array().unwrap();
    for wanted in ["m.room.create", "m.room.power_levels", "m.room.join_rules", "m.room.name", "m.room.topic"] {
        assert!(state.iter().any(|e| e["type"] == wanted), "state should hold {wanted}");
    }
    let name = c.get(&format!("/rooms/{}/state/m.room.name/", enc(&room_id)), &bob.token).await.ok();
    assert_eq!(name, json!({ "name": "Test room" }));
    let topic = c.get(&format!("/rooms/{}/state/m.room.topic", enc(&room_id)), &bob.token).await.ok();
    assert_eq!(topic["topic"], "Testing things");
    let join_rules = c.get(&format!("/rooms/{}/state/m.room.join_rules/", enc(&room_id)), &bob.token).await.ok();
    assert_eq!(join_rules["join_rule"], "invite");
    let member = c
        .get(&format!("/rooms/{}/state/m.room.member/{}", enc(&room_id), enc(&bob.user_id)), &alice.token)
        .await
        .ok();
    assert_eq!(member["membership"], "join");
    c.get(&format!("/rooms/{}/state/m.room.nothing/", enc(&room_id)), &bob.token).await.expect_err(404, "M_NOT_FOUND");
    // A state event set by a client reads back.
    c.put(&format!("/rooms/{}/state/m.room.topic/", enc(&room_id)), &alice.token, json!({ "topic": "New topic" }))
        .await
        .ok();
    let topic = c.get(&format!("/rooms/{}/state/m.room.topic/", enc(&room_id)), &bob.token).await.ok();
    assert_eq!(topic["topic"], "New topic");

    // Members.
    let members = c.get(&format!("/rooms/{}/members", enc(&room_id)), &bob.token).await.ok();
    let members: Vec<(&str, &str)> = members["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["state_key"].as_str().unwrap(), e["content"]["membership"].as_str().unwrap()))
        .collect();
    assert!(members.contains(&(alice.user_id.as_str(), "join")), "{members:?}");
    assert!(members.contains(&(bob.user_id.as_str(), "join")), "{members:?}");
    let joined = c.get(&format!("/rooms/{}/joined_members", enc(&room_id)), &bob.token).await.ok();
    let joined = joined["joined"].as_object().unwrap();
    assert_eq!(joined.len(), 2);
    assert!(joined.contains_key(&alice.user_id) && joined.contains_key(&bob.user_id));

    // Redaction removes the body.
    let target = sent[0].clone();
    let redaction = c
        .put(
            &format!("/rooms/{}/redact/{}/{}", enc(&room_id), enc(&target), txn()),
            &alice.token,
            json!({ "reason": "oops" }),
        )
        .await
        .ok();
    assert!(redaction["event_id"].is_string());
    let redacted = c.get(&format!("/rooms/{}/event/{}", enc(&room_id), enc(&target)), &bob.token).await.ok();
    assert!(redacted["content"].get("body").is_none(), "redacted content must be empty: {redacted}");
    assert_eq!(redacted["unsigned"]["redacted_because"]["event_id"], redaction["event_id"]);
    // Bob cannot redact Alice's message (default power levels).
    c.put(&format!("/rooms/{}/redact/{}/{}", enc(&room_id), enc(&sent[1]), txn()), &bob.token, json!({}))
        .await
        .expect_err(403, "M_FORBIDDEN");

    // Bob leaves; sending then fails.
    c.post(&format!("/rooms/{}/leave", enc(&room_id)), &bob.token, json!({})).await.ok();
    c.send_with_txn(&bob, &room_id, "after leaving", &txn()).await.expect_err(403, "M_FORBIDDEN");
    let left = c.sync(&bob, Some(&since), 0).await;
    assert!(left["rooms"]["leave"].get(&room_id).is_some(), "the leave shows in sync: {left}");
    let joined_rooms = c.get("/joined_rooms", &bob.token).await.ok();
    assert!(!joined_rooms["joined_rooms"].as_array().unwrap().iter().any(|r| r == room_id.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_sync_returns_when_a_message_arrives() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let bob = c.register("bob").await;
    let room_id = c.create_room(&alice, json!({ "preset": "public_chat" })).await;
    c.join(&bob, &room_id).await.ok();
    let since = c.sync(&bob, None, 0).await["next_batch"].as_str().unwrap().to_string();
    // Catch up so the long-poll below starts with nothing pending.
    let since = c.sync(&bob, Some(&since), 0).await["next_batch"].as_str().unwrap().to_string();

    let poller = {
        let c = c.clone();
        let bob = bob.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let response = c.sync(&bob, Some(&since), 20_000).await;
            (response, started.elapsed())
        })
    };
    // Give the poll a moment to start waiting, then send; the poll must return with the event.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let event_id = c.send_text(&alice, &room_id, "wake up").await;
    let (response, elapsed) = tokio::time::timeout(Duration::from_secs(15), poller).await.expect("long-poll returns").unwrap();
    assert!(elapsed < Duration::from_secs(10), "long-poll took {elapsed:?}: it should return when the event arrives");
    assert!(ids(&timeline(&response, &room_id)).contains(&event_id), "the long-poll answer carries the event: {response}");

    // With nothing happening, a short long-poll times out with an empty answer.
    let since = response["next_batch"].as_str().unwrap().to_string();
    let started = Instant::now();
    let empty = c.sync(&bob, Some(&since), 500).await;
    assert!(started.elapsed() >= Duration::from_millis(450), "an idle long-poll waits for its timeout");
    assert!(timeline(&empty, &room_id).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_pagination_and_context() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let room_id = c.create_room(&alice, json!({ "preset": "private_chat" })).await;
    let mut sent = Vec::new();
    for i in 0..23 {
        sent.push(c.send_text(&alice, &room_id, &format!("m{i}")).await);
    }

    // Backwards from the end, 7 at a time, following `end` until it is omitted.
    let mut backwards: Vec<String> = Vec::new();
    let mut from: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = messages(&c, &alice, &room_id, "b", from.as_deref(), 7).await;
        let chunk = page["chunk"].as_array().unwrap();
        assert!(chunk.len() <= 7);
        backwards.extend(chunk.iter().map(|e| e["event_id"].as_str().unwrap().to_string()));
        pages += 1;
        assert!(pages < 50, "pagination does not terminate");
        match page["end"].as_str() {
            Some(end) => from = Some(end.to_string()),
            None => break,
        }
    }
    let mut unique = backwards.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), backwards.len(), "backwards pagination repeated an event");
    let messages_back: Vec<&String> = backwards.iter().filter(|id| sent.contains(id)).collect();
    let expected_back: Vec<&String> = sent.iter().rev().collect();
    assert_eq!(messages_back, expected_back, "dir=b must cover every message once, newest first");
    // The room creation events come last (oldest), so the create event is the final one.
    let last = c.get(&format!("/rooms/{}/event/{}", enc(&room_id), enc(backwards.last().unwrap())), &alice.token).await.ok();
    assert_eq!(last["type"], "m.room.create");

    // Forwards from the beginning, 5 at a time.
    let mut forwards: Vec<String> = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..50 {
        let page = messages(&c, &alice, &room_id, "f", from.as_deref(), 5).await;
        let chunk = page["chunk"].as_array().unwrap();
        forwards.extend(chunk.iter().map(|e| e["event_id"].as_str().unwrap().to_string()));
        match page["end"].as_str() {
            Some(end) if !chunk.is_empty() => from = Some(end.to_string()),
            _ => break,
        }
    }
    let mut all_back = backwards.clone();
    all_back.reverse();
    assert_eq!(forwards, all_back, "dir=f must give the same events as dir=b, oldest first");

    // Backwards from a sync token's prev_batch continues seamlessly.
    let filter = json!({ "room": { "timeline": { "limit": 4 } } }).to_string();
    let synced = c.sync_query(&alice, None, 0, &[("filter", &filter)]).await;
    let tl = &synced["rooms"]["join"][&room_id]["timeline"];
    assert_eq!(tl["limited"], true);
    let tail = ids(&timeline(&synced, &room_id));
    assert_eq!(tail, sent[sent.len() - 4..].to_vec());
    let page = messages(&c, &alice, &room_id, "b", tl["prev_batch"].as_str(), 3).await;
    let page_ids: Vec<&str> = page["chunk"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    assert_eq!(page_ids, vec![sent[18].as_str(), sent[17].as_str(), sent[16].as_str()]);

    // Context around the 10th message.
    let context = c.get(&format!("/rooms/{}/context/{}?limit=4", enc(&room_id), enc(&sent[10])), &alice.token).await.ok();
    assert_eq!(context["event"]["event_id"], sent[10].as_str());
    let before: Vec<&str> = context["events_before"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    let after: Vec<&str> = context["events_after"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    assert_eq!(before, vec![sent[9].as_str(), sent[8].as_str()], "events_before is newest first");
    assert_eq!(after, vec![sent[11].as_str(), sent[12].as_str()]);
    assert!(context["start"].is_string() && context["end"].is_string());
    assert!(context["state"].as_array().unwrap().iter().any(|e| e["type"] == "m.room.create"));
    // Continuing backwards from the context's start token yields the messages before it.
    let page = messages(&c, &alice, &room_id, "b", context["start"].as_str(), 2).await;
    let page_ids: Vec<&str> = page["chunk"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    assert_eq!(page_ids, vec![sent[7].as_str(), sent[6].as_str()]);
    // ... and forwards from its end token, the ones after.
    let page = messages(&c, &alice, &room_id, "f", context["end"].as_str(), 2).await;
    let page_ids: Vec<&str> = page["chunk"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    assert_eq!(page_ids, vec![sent[13].as_str(), sent[14].as_str()]);

    c.get(&format!("/rooms/{}/context/%24nope", enc(&room_id)), &alice.token).await.expect_err(404, "M_NOT_FOUND");
    let request = c.http.get(c.url(&messages_path(&room_id))).bearer_auth(&alice.token).query(&[("dir", "x")]);
    let bad = Client::finish(request).await;
    assert_eq!(bad.status, 400, "{}", bad.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_list_rename_delete() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let second = c.login(&alice).await;

    let list = c.get("/devices", &alice.token).await.ok();
    let ids: Vec<&str> = list["devices"].as_array().unwrap().iter().map(|d| d["device_id"].as_str().unwrap()).collect();
    assert!(ids.contains(&alice.device_id.as_str()) && ids.contains(&second.device_id.as_str()), "{list}");

    let path = format!("/devices/{}", enc(&second.device_id));
    c.put(&path, &alice.token, json!({ "display_name": "My phone" })).await.ok();
    let device = c.get(&path, &alice.token).await.ok();
    assert_eq!(device["display_name"], "My phone");
    assert_eq!(device["device_id"], second.device_id.as_str());
    c.get("/devices/NOPE", &alice.token).await.expect_err(404, "M_NOT_FOUND");

    // Deleting needs password user-interactive auth.
    let first = c.request(Method::DELETE, &path, Some(&alice.token), Some(&json!({}))).await;
    assert_eq!(first.status, 401, "{}", first.body);
    assert!(first.body["flows"].to_string().contains("m.login.password"), "{}", first.body);
    let session = first.body["session"].as_str().unwrap().to_string();
    let wrong = c
        .request(
            Method::DELETE,
            &path,
            Some(&alice.token),
            Some(&json!({ "auth": {
                "type": "m.login.password", "session": session,
                "identifier": { "type": "m.id.user", "user": alice.localpart }, "password": "wrong password",
            }})),
        )
        .await;
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert_eq!(wrong.errcode(), "M_FORBIDDEN");
    c.get("/account/whoami", &second.token).await.ok();
    c.request(
        Method::DELETE,
        &path,
        Some(&alice.token),
        Some(&json!({ "auth": {
            "type": "m.login.password", "session": session,
            "identifier": { "type": "m.id.user", "user": alice.localpart }, "password": alice.password,
        }})),
    )
    .await
    .ok();
    c.get("/account/whoami", &second.token).await.expect_err(401, "M_UNKNOWN_TOKEN");
    let list = c.get("/devices", &alice.token).await.ok();
    let ids: Vec<&str> = list["devices"].as_array().unwrap().iter().map(|d| d["device_id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![alice.device_id.as_str()]);
    c.get(&path, &alice.token).await.expect_err(404, "M_NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_change_logs_out_other_devices() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let other = c.login(&alice).await;

    let body = |password: &str| {
        json!({
            "new_password": "a brand new password",
            "auth": { "type": "m.login.password", "identifier": { "type": "m.id.user", "user": alice.localpart }, "password": password },
        })
    };
    let first = c.post("/account/password", &alice.token, json!({ "new_password": "x" })).await;
    assert_eq!(first.status, 401, "password change needs UIA: {}", first.body);
    c.get("/account/whoami", &other.token).await.ok();
    c.post("/account/password", &alice.token, body(&alice.password)).await.ok();

    c.get("/account/whoami", &alice.token).await.ok();
    c.get("/account/whoami", &other.token).await.expect_err(401, "M_UNKNOWN_TOKEN");
    let old = c
        .request(
            Method::POST,
            "/login",
            None,
            Some(&json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": alice.localpart }, "password": alice.password })),
        )
        .await;
    old.expect_err(403, "M_FORBIDDEN");
    let renewed = User { password: "a brand new password".into(), ..alice.clone() };
    let fresh = c.login(&renewed).await;
    c.get("/account/whoami", &fresh.token).await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_data_and_filters() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let room_id = c.create_room(&alice, json!({})).await;
    for i in 0..5 {
        c.send_text(&alice, &room_id, &format!("m{i}")).await;
    }
    let since = c.sync(&alice, None, 0).await["next_batch"].as_str().unwrap().to_string();
    let uid = enc(&alice.user_id);

    let global = format!("/user/{uid}/account_data/com.example.settings");
    c.get(&global, &alice.token).await.expect_err(404, "M_NOT_FOUND");
    c.put(&global, &alice.token, json!({ "theme": "dark", "n": 3 })).await.ok();
    assert_eq!(c.get(&global, &alice.token).await.ok(), json!({ "theme": "dark", "n": 3 }));
    let per_room = format!("/user/{uid}/rooms/{}/account_data/com.example.room", enc(&room_id));
    c.put(&per_room, &alice.token, json!({ "pinned": true })).await.ok();
    assert_eq!(c.get(&per_room, &alice.token).await.ok(), json!({ "pinned": true }));

    // Both show in an incremental sync, in the right sections.
    let response = c.sync(&alice, Some(&since), 0).await;
    let globals = response["account_data"]["events"].as_array().unwrap();
    assert!(globals.iter().any(|e| e["type"] == "com.example.settings" && e["content"]["theme"] == "dark"), "{response}");
    let rooms = response["rooms"]["join"][&room_id]["account_data"]["events"].as_array().expect("room account data");
    assert!(rooms.iter().any(|e| e["type"] == "com.example.room" && e["content"]["pinned"] == true), "{response}");
    // ... and in an initial sync.
    let initial = c.sync(&alice, None, 0).await;
    assert!(initial["account_data"]["events"].as_array().unwrap().iter().any(|e| e["type"] == "com.example.settings"));
    // Another user's account data is not writable.
    let bob = c.register("bob").await;
    c.put(&global, &bob.token, json!({})).await.expect_err(403, "M_FORBIDDEN");

    // Filters round-trip and apply to sync.
    let filter = json!({ "room": { "timeline": { "limit": 2 } } });
    let created = c.post(&format!("/user/{uid}/filter"), &alice.token, filter.clone()).await.ok();
    let filter_id = created["filter_id"].as_str().unwrap().to_string();
    let stored = c.get(&format!("/user/{uid}/filter/{}", enc(&filter_id)), &alice.token).await.ok();
    assert_eq!(stored, filter);
    c.get(&format!("/user/{uid}/filter/nope"), &alice.token).await.expect_err(404, "M_NOT_FOUND");
    let filtered = c.sync_query(&alice, None, 0, &[("filter", &filter_id)]).await;
    let tl = &filtered["rooms"]["join"][&room_id]["timeline"];
    assert_eq!(tl["events"].as_array().unwrap().len(), 2, "{tl}");
    assert_eq!(tl["limited"], true);
    // A filter that selects a type excludes the others.
    let only_topics = json!({ "room": { "timeline": { "types": ["m.room.topic"] } } }).to_string();
    let response = c.sync_query(&alice, None, 0, &[("filter", &only_topics)]).await;
    assert!(timeline(&response, &room_id).iter().all(|e| e["type"] == "m.room.topic"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_displayname_and_avatar() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let room_id = c.create_room(&alice, json!({})).await;
    let uid = enc(&alice.user_id);

    c.put(&format!("/profile/{uid}/displayname"), &alice.token, json!({ "displayname": "Alice A." })).await.ok();
    c.put(&format!("/profile/{uid}/avatar_url"), &alice.token, json!({ "avatar_url": "mxc://test.local/abc" })).await.ok();
    let name = c.get(&format!("/profile/{uid}/displayname"), &alice.token).await.ok();
    assert_eq!(name, json!({ "displayname": "Alice A." }));
    let avatar = c.get(&format!("/profile/{uid}/avatar_url"), &alice.token).await.ok();
    assert_eq!(avatar, json!({ "avatar_url": "mxc://test.local/abc" }));
    // The whole profile is public (no token needed).
    let profile = c.request(Method::GET, &format!("/profile/{uid}"), None, None).await.ok();
    assert_eq!(profile["displayname"], "Alice A.");
    assert_eq!(profile["avatar_url"], "mxc://test.local/abc");
    // The room member event follows.
    let member = c.get(&format!("/rooms/{}/state/m.room.member/{uid}", enc(&room_id)), &alice.token).await.ok();
    assert_eq!(member["displayname"], "Alice A.");
    assert_eq!(member["avatar_url"], "mxc://test.local/abc");
    // Others may not change it; unknown users have no profile.
    let bob = c.register("bob").await;
    c.put(&format!("/profile/{uid}/displayname"), &bob.token, json!({ "displayname": "x" })).await.expect_err(403, "M_FORBIDDEN");
    c.get(&format!("/profile/{}", enc("@nobody_here:test.local")), &alice.token).await.expect_err(404, "M_NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_and_receipts_reach_the_other_user() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let bob = c.register("bob").await;
    let room_id = c.create_room(&alice, json!({ "preset": "public_chat" })).await;
    c.join(&bob, &room_id).await.ok();
    let event_id = c.send_text(&alice, &room_id, "read me").await;
    let bob_since = c.sync(&bob, None, 0).await["next_batch"].as_str().unwrap().to_string();
    let alice_since = c.sync(&alice, None, 0).await["next_batch"].as_str().unwrap().to_string();

    // Typing.
    c.put(&format!("/rooms/{}/typing/{}", enc(&room_id), enc(&alice.user_id)), &alice.token, json!({ "typing": true, "timeout": 10000 }))
        .await
        .ok();
    let has_typing = |s: &Value, who: &str| {
        s["rooms"]["join"][&room_id]["ephemeral"]["events"].as_array().is_some_and(|events| {
            events.iter().any(|e| e["type"] == "m.typing" && e["content"]["user_ids"].as_array().unwrap().iter().any(|u| u == who))
        })
    };
    let (bob_since, _) = c.sync_until(&bob, Some(&bob_since), Duration::from_secs(10), |s| has_typing(s, &alice.user_id)).await;
    // Stopping typing shows as an m.typing without Alice.
    c.put(&format!("/rooms/{}/typing/{}", enc(&room_id), enc(&alice.user_id)), &alice.token, json!({ "typing": false }))
        .await
        .ok();
    c.sync_until(&bob, Some(&bob_since), Duration::from_secs(10), |s| {
        s["rooms"]["join"][&room_id]["ephemeral"]["events"].as_array().is_some_and(|events| {
            events.iter().any(|e| e["type"] == "m.typing" && e["content"]["user_ids"].as_array().unwrap().is_empty())
        })
    })
    .await;
    // Typing for someone else is refused.
    c.put(&format!("/rooms/{}/typing/{}", enc(&room_id), enc(&alice.user_id)), &bob.token, json!({ "typing": true }))
        .await
        .expect_err(403, "M_FORBIDDEN");

    // Receipts.
    c.post(&format!("/rooms/{}/receipt/m.read/{}", enc(&room_id), enc(&event_id)), &bob.token, json!({})).await.ok();
    c.sync_until(&alice, Some(&alice_since), Duration::from_secs(10), |s| {
        s["rooms"]["join"][&room_id]["ephemeral"]["events"].as_array().is_some_and(|events| {
            events.iter().any(|e| e["type"] == "m.receipt" && e["content"][&event_id]["m.read"][&bob.user_id]["ts"].is_u64())
        })
    })
    .await;
    // A receipt for an unknown event is refused.
    let unknown = c.post(&format!("/rooms/{}/receipt/m.read/%24nope", enc(&room_id)), &bob.token, json!({})).await;
    unknown.expect_err(404, "M_NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_rules_and_pushers() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;

    let rules = c.get("/pushrules/", &alice.token).await.ok();
    let overrides = rules["global"]["override"].as_array().expect("override rules");
    assert!(overrides.iter().any(|r| r["rule_id"] == ".m.rule.master"), "default ruleset has .m.rule.master: {rules}");
    for kind in ["override", "content", "room", "sender", "underride"] {
        assert!(rules["global"][kind].is_array(), "{kind} missing");
    }
    let master = c.get("/pushrules/global/override/.m.rule.master", &alice.token).await.ok();
    assert_eq!(master["enabled"], false);

    let rule = "/pushrules/global/content/cake_rule";
    c.get(rule, &alice.token).await.expect_err(404, "M_NOT_FOUND");
    c.put(rule, &alice.token, json!({ "pattern": "cake", "actions": ["notify"] })).await.ok();
    let stored = c.get(rule, &alice.token).await.ok();
    assert_eq!(stored["pattern"], "cake");
    assert_eq!(stored["enabled"], true);
    assert_eq!(stored["default"], false);
    assert_eq!(stored["actions"], json!(["notify"]));

    c.put(&format!("{rule}/enabled"), &alice.token, json!({ "enabled": false })).await.ok();
    assert_eq!(c.get(&format!("{rule}/enabled"), &alice.token).await.ok(), json!({ "enabled": false }));
    let actions = json!(["notify", { "set_tweak": "sound", "value": "default" }]);
    c.put(&format!("{rule}/actions"), &alice.token, json!({ "actions": actions })).await.ok();
    assert_eq!(c.get(&format!("{rule}/actions"), &alice.token).await.ok(), json!({ "actions": actions }));
    // The user's rule sits in the ruleset, which also shows in account data.
    let rules = c.get("/pushrules/", &alice.token).await.ok();
    assert!(rules["global"]["content"].as_array().unwrap().iter().any(|r| r["rule_id"] == "cake_rule"));
    let sync = c.sync(&alice, None, 0).await;
    let push = sync["account_data"]["events"].as_array().unwrap().iter().find(|e| e["type"] == "m.push_rules").cloned();
    assert!(push.is_some_and(|p| p["content"]["global"]["content"].to_string().contains("cake_rule")));

    c.delete(rule, &alice.token).await.ok();
    c.get(rule, &alice.token).await.expect_err(404, "M_NOT_FOUND");
    // Server-default rules cannot be deleted, but can be disabled.
    let deleted = c.delete("/pushrules/global/override/.m.rule.master", &alice.token).await;
    assert!(deleted.status >= 400 && deleted.status < 500, "{}", deleted.body);
    c.put("/pushrules/global/override/.m.rule.suppress_notices/enabled", &alice.token, json!({ "enabled": false })).await.ok();
    let suppress = c.get("/pushrules/global/override/.m.rule.suppress_notices/enabled", &alice.token).await.ok();
    assert_eq!(suppress["enabled"], false);

    // Pushers.
    assert_eq!(c.get("/pushers", &alice.token).await.ok()["pushers"], json!([]));
    let pusher = json!({
        "pushkey": "pk-1", "kind": "http", "app_id": "com.example.app",
        "app_display_name": "Example", "device_display_name": "Phone", "lang": "en",
        "data": { "url": "https://push.example.com/_matrix/push/v1/notify" },
    });
    c.post("/pushers/set", &alice.token, pusher).await.ok();
    let pushers = c.get("/pushers", &alice.token).await.ok();
    let list = pushers["pushers"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{pushers}");
    assert_eq!(list[0]["pushkey"], "pk-1");
    assert_eq!(list[0]["app_id"], "com.example.app");
    assert_eq!(list[0]["data"]["url"], "https://push.example.com/_matrix/push/v1/notify");
    c.post("/pushers/set", &alice.token, json!({ "pushkey": "pk-1", "app_id": "com.example.app", "kind": null })).await.ok();
    assert_eq!(c.get("/pushers", &alice.token).await.ok()["pushers"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misc_endpoints_and_unknown_paths() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;

    c.get("/room_keys/version", &alice.token).await.expect_err(404, "M_NOT_FOUND");
    assert_eq!(c.get("/voip/turnServer", &alice.token).await.ok(), json!({}));
    let versions = c.request(Method::GET, "/_matrix/client/versions", None, None).await.ok();
    assert!(versions["versions"].as_array().unwrap().iter().any(|v| v == "v1.11"));
    let caps = c.get("/capabilities", &alice.token).await.ok();
    assert!(caps["capabilities"]["m.room_versions"]["default"].is_string());

    c.get("/this/does/not/exist", &alice.token).await.expect_err(404, "M_UNRECOGNIZED");
    c.request(Method::GET, "/_matrix/client/v3/nothing_here", None, None).await.expect_err(404, "M_UNRECOGNIZED");
    // A known path with a method it does not take.
    c.request(Method::DELETE, "/account/whoami", Some(&alice.token), None).await.expect_err(405, "M_UNRECOGNIZED");
    c.request(Method::GET, "/createRoom", Some(&alice.token), None).await.expect_err(405, "M_UNRECOGNIZED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_aliases() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let bob = c.register("bob").await;
    let local = unique_name("lobby");
    let alias = format!("#{local}:test.local");

    let room_id = c.create_room(&alice, json!({ "preset": "public_chat", "room_alias_name": local })).await;
    let resolved = c.get(&format!("/directory/room/{}", enc(&alias)), &bob.token).await.ok();
    assert_eq!(resolved["room_id"], room_id.as_str());
    assert!(resolved["servers"].as_array().unwrap().iter().any(|s| s == "test.local"));
    // The same alias again is refused.
    let again = c.post("/createRoom", &alice.token, json!({ "room_alias_name": local })).await;
    again.expect_err(400, "M_ROOM_IN_USE");

    // Join by alias.
    let joined = c.join(&bob, &alias).await.ok();
    assert_eq!(joined["room_id"], room_id.as_str());
    let members = c.get(&format!("/rooms/{}/joined_members", enc(&room_id)), &bob.token).await.ok();
    assert!(members["joined"].get(&bob.user_id).is_some());

    // A second alias set by a member, then removed by the creator.
    let second = format!("#{}:test.local", unique_name("other"));
    c.put(&format!("/directory/room/{}", enc(&second)), &alice.token, json!({ "room_id": room_id })).await.ok();
    assert_eq!(c.get(&format!("/directory/room/{}", enc(&second)), &bob.token).await.ok()["room_id"], room_id.as_str());
    c.delete(&format!("/directory/room/{}", enc(&second)), &alice.token).await.ok();
    c.get(&format!("/directory/room/{}", enc(&second)), &bob.token).await.expect_err(404, "M_NOT_FOUND");
    c.join(&bob, &second).await.expect_err(404, "M_NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kick_ban_unban_power_checks() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let bob = c.register("bob").await;
    let carol = c.register("carol").await;
    let room_id = c.create_room(&alice, json!({ "preset": "public_chat" })).await;
    c.join(&bob, &room_id).await.ok();
    c.join(&carol, &room_id).await.ok();
    let path = |action: &str| format!("/rooms/{}/{action}", enc(&room_id));
    let membership = |user: &User| format!("/rooms/{}/state/m.room.member/{}", enc(&room_id), enc(&user.user_id));

    // A normal member (power 0) may neither kick nor ban.
    c.post(&path("kick"), &bob.token, json!({ "user_id": carol.user_id })).await.expect_err(403, "M_FORBIDDEN");
    c.post(&path("ban"), &bob.token, json!({ "user_id": carol.user_id })).await.expect_err(403, "M_FORBIDDEN");
    assert_eq!(c.get(&membership(&carol), &alice.token).await.ok()["membership"], "join");

    // The creator (power 100) may.
    c.post(&path("kick"), &alice.token, json!({ "user_id": carol.user_id, "reason": "calm down" })).await.ok();
    let kicked = c.get(&membership(&carol), &alice.token).await.ok();
    assert_eq!(kicked["membership"], "leave");
    assert_eq!(kicked["reason"], "calm down");
    c.send_with_txn(&carol, &room_id, "still here?", &txn()).await.expect_err(403, "M_FORBIDDEN");
    c.join(&carol, &room_id).await.ok();

    c.post(&path("ban"), &alice.token, json!({ "user_id": carol.user_id })).await.ok();
    assert_eq!(c.get(&membership(&carol), &alice.token).await.ok()["membership"], "ban");
    c.join(&carol, &room_id).await.expect_err(403, "M_FORBIDDEN");
    // Bob cannot unban; Alice can.
    c.post(&path("unban"), &bob.token, json!({ "user_id": carol.user_id })).await.expect_err(403, "M_FORBIDDEN");
    c.post(&path("unban"), &alice.token, json!({ "user_id": carol.user_id })).await.ok();
    assert_eq!(c.get(&membership(&carol), &alice.token).await.ok()["membership"], "leave");
    c.join(&carol, &room_id).await.ok();

    // A member cannot kick someone with a higher power level.
    c.post(&path("kick"), &bob.token, json!({ "user_id": alice.user_id })).await.expect_err(403, "M_FORBIDDEN");
    // Missing user_id.
    c.post(&path("kick"), &alice.token, json!({})).await.expect_err(400, "M_MISSING_PARAM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limited_sync_carries_gap_state_and_unread_counts() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let bob = c.register("bob").await;
    let room_id = c.create_room(&alice, json!({ "preset": "public_chat" })).await;
    c.join(&bob, &room_id).await.ok();
    let since = c.sync(&bob, None, 0).await["next_batch"].as_str().unwrap().to_string();

    // A state change, then more messages than the default timeline limit (10).
    c.put(&format!("/rooms/{}/state/m.room.topic/", enc(&room_id)), &alice.token, json!({ "topic": "gap topic" })).await.ok();
    let mut sent = Vec::new();
    for i in 0..12 {
        sent.push(c.send_text(&alice, &room_id, &format!("gap {i}")).await);
    }
    let response = c.sync(&bob, Some(&since), 0).await;
    let room = &response["rooms"]["join"][&room_id];
    assert_eq!(room["timeline"]["limited"], true, "{room}");
    assert_eq!(ids(&timeline(&response, &room_id)), sent[2..].to_vec(), "the newest 10 events");
    let state = room["state"]["events"].as_array().unwrap();
    assert!(
        state.iter().any(|e| e["type"] == "m.room.topic" && e["content"]["topic"] == "gap topic"),
        "a state change in the gap must be in `state`: {state:?}"
    );
    // The gap can be filled from prev_batch.
    let page = messages(&c, &bob, &room_id, "b", room["timeline"]["prev_batch"].as_str(), 2).await;
    let page_ids: Vec<&str> = page["chunk"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    assert_eq!(page_ids, vec![sent[1].as_str(), sent[0].as_str()]);

    // Unread counts: every message notifies in a one-to-one room; a mention highlights.
    assert_eq!(room["unread_notifications"]["notification_count"], 12, "{}", room["unread_notifications"]);
    assert_eq!(room["unread_notifications"]["highlight_count"], 0);
    let mention = c
        .put(
            &format!("/rooms/{}/send/m.room.message/{}", enc(&room_id), txn()),
            &alice.token,
            json!({ "msgtype": "m.text", "body": "hey bob", "m.mentions": { "user_ids": [bob.user_id] } }),
        )
        .await
        .ok()["event_id"]
        .as_str()
        .unwrap()
        .to_string();
    let since = response["next_batch"].as_str().unwrap().to_string();
    let response = c.sync(&bob, Some(&since), 0).await;
    let counts = &response["rooms"]["join"][&room_id]["unread_notifications"];
    assert_eq!(counts["notification_count"], 13, "{counts}");
    assert_eq!(counts["highlight_count"], 1, "{counts}");
    // A read receipt on the newest event clears them.
    c.post(&format!("/rooms/{}/receipt/m.read/{}", enc(&room_id), enc(&mention)), &bob.token, json!({})).await.ok();
    let since = response["next_batch"].as_str().unwrap().to_string();
    let response = c.sync(&bob, Some(&since), 0).await;
    let counts = &response["rooms"]["join"][&room_id]["unread_notifications"];
    assert_eq!(counts["notification_count"], 0, "{counts}");
    assert_eq!(counts["highlight_count"], 0, "{counts}");
    // The sender's own messages never count.
    let alice_view = c.sync(&alice, None, 0).await;
    assert_eq!(alice_view["rooms"]["join"][&room_id]["unread_notifications"]["notification_count"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_ids_are_scoped_to_the_device() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let other_device = c.login(&alice).await;
    let room_id = c.create_room(&alice, json!({})).await;
    let other_room = c.create_room(&alice, json!({})).await;

    let txn_id = txn();
    let one = c.send_with_txn(&alice, &room_id, "from device one", &txn_id).await.ok();
    let two = c.send_with_txn(&other_device, &room_id, "from device two", &txn_id).await.ok();
    assert_ne!(one["event_id"], two["event_id"], "the same txnId on two devices is two messages");
    let elsewhere = c.send_with_txn(&alice, &other_room, "other room", &txn_id).await.ok();
    assert_ne!(one["event_id"], elsewhere["event_id"]);
    let again = c.send_with_txn(&alice, &room_id, "from device one", &txn_id).await.ok();
    assert_eq!(one["event_id"], again["event_id"]);
    assert_eq!(all_bodies(&c, &alice, &room_id).await, vec!["from device one", "from device two"]);

    // A redaction retried with its txnId is one redaction.
    let target = one["event_id"].as_str().unwrap();
    let redact_txn = txn();
    let path = format!("/rooms/{}/redact/{}/{}", enc(&room_id), enc(target), redact_txn);
    let r1 = c.put(&path, &alice.token, json!({})).await.ok();
    let r2 = c.put(&path, &alice.token, json!({})).await.ok();
    assert_eq!(r1["event_id"], r2["event_id"]);
    let page = messages(&c, &alice, &room_id, "b", None, 50).await;
    let redactions = page["chunk"].as_array().unwrap().iter().filter(|e| e["type"] == "m.room.redaction").count();
    assert_eq!(redactions, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn former_members_see_history_only_until_they_left() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let bob = c.register("bob").await;
    let room_id = c.create_room(&alice, json!({ "preset": "public_chat" })).await;
    c.join(&bob, &room_id).await.ok();
    c.send_text(&alice, &room_id, "while bob was here").await;
    c.post(&format!("/rooms/{}/leave", enc(&room_id)), &bob.token, json!({})).await.ok();
    let secret = c.send_text(&alice, &room_id, "after bob left").await;

    assert_eq!(all_bodies(&c, &bob, &room_id).await, vec!["while bob was here"]);
    c.get(&format!("/rooms/{}/event/{}", enc(&room_id), enc(&secret)), &bob.token).await.expect_err(404, "M_NOT_FOUND");
    let forwards = messages(&c, &bob, &room_id, "f", None, 100).await;
    assert!(!forwards["chunk"].as_array().unwrap().iter().any(|e| e["event_id"] == secret.as_str()));
    c.get(&format!("/rooms/{}/context/{}", enc(&room_id), enc(&secret)), &bob.token).await.expect_err(404, "M_NOT_FOUND");
    // Forgetting works once left; a stranger cannot read at all.
    c.post(&format!("/rooms/{}/forget", enc(&room_id)), &bob.token, json!({})).await.ok();
    // Once forgotten, the room is gone from Bob's syncs and its history from his reach.
    let filter = json!({ "room": { "include_leave": true } }).to_string();
    let sync = c.sync_query(&bob, None, 0, &[("filter", filter.as_str())]).await;
    assert!(sync["rooms"]["leave"].get(&room_id).is_none(), "{}", sync["rooms"]["leave"]);
    c.get(&format!("/rooms/{}/messages?dir=b", enc(&room_id)), &bob.token).await.expect_err(403, "M_FORBIDDEN");
    let stranger = c.register("stranger").await;
    c.get(&format!("/rooms/{}/messages?dir=b", enc(&room_id)), &stranger.token).await.expect_err(403, "M_FORBIDDEN");
}

/// Spec (GET /rooms/{roomId}/state and /state/{eventType}/{stateKey}): "If the user has left the
/// room then the state is taken from the state of the room when they left."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn former_members_read_the_state_as_it_was_when_they_left() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let bob = c.register("bob").await;
    let room_id = c.create_room(&alice, json!({ "preset": "public_chat", "topic": "old topic" })).await;
    c.join(&bob, &room_id).await.ok();
    c.post(&format!("/rooms/{}/leave", enc(&room_id)), &bob.token, json!({})).await.ok();
    c.put(&format!("/rooms/{}/state/m.room.topic/", enc(&room_id)), &alice.token, json!({ "topic": "new topic" })).await.ok();

    let topic = c.get(&format!("/rooms/{}/state/m.room.topic/", enc(&room_id)), &bob.token).await.ok();
    assert_eq!(topic["topic"], "old topic");
    let state = c.get(&format!("/rooms/{}/state", enc(&room_id)), &bob.token).await.ok();
    let topic = state.as_array().unwrap().iter().find(|e| e["type"] == "m.room.topic").cloned().unwrap();
    assert_eq!(topic["content"]["topic"], "old topic");
}

/// Spec (end-to-end encryption, device_lists.left): "List of users with whom we do not share any
/// encrypted rooms anymore since the previous sync response." Clients rely on it to stop tracking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_lists_left_names_users_no_longer_sharing_a_room() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let bob = c.register("bob").await;
    let room_id = c
        .create_room(
            &alice,
            json!({ "preset": "public_chat", "initial_state": [{ "type": "m.room.encryption", "state_key": "", "content": { "algorithm": "m.megolm.v1.aes-sha2" } }] }),
        )
        .await;
    c.join(&bob, &room_id).await.ok();
    let since = c.sync(&alice, None, 0).await["next_batch"].as_str().unwrap().to_string();
    c.post(&format!("/rooms/{}/leave", enc(&room_id)), &bob.token, json!({})).await.ok();
    let (until, _) = c
        .sync_until(&alice, Some(&since), Duration::from_secs(10), |s| {
            s["device_lists"]["left"].as_array().unwrap().iter().any(|u| u == bob.user_id.as_str())
        })
        .await;
    let changes = c
        .get(&format!("/keys/changes?from={}&to={}", enc(&since), enc(&until)), &alice.token)
        .await
        .ok();
    assert!(changes["left"].as_array().unwrap().iter().any(|u| u == bob.user_id.as_str()), "{changes}");
}

/// Spec (Room History Visibility): with `joined`, "events are accessible to newly joined members
/// from the point they joined the room onwards"; the visibility in force when an event was sent
/// decides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_visibility_joined_hides_earlier_events() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let bob = c.register("bob").await;
    let room_id = c
        .create_room(
            &alice,
            json!({ "preset": "public_chat", "initial_state": [
                { "type": "m.room.history_visibility", "state_key": "", "content": { "history_visibility": "joined" } }
            ] }),
        )
        .await;
    c.send_text(&alice, &room_id, "before bob").await;
    c.join(&bob, &room_id).await.ok();
    c.send_text(&alice, &room_id, "after bob").await;

    assert_eq!(all_bodies(&c, &bob, &room_id).await, vec!["after bob"], "/messages");
    let sync = c.sync(&bob, None, 0).await;
    let bodies: Vec<&str> = timeline(&sync, &room_id).iter().filter_map(|e| e["content"]["body"].as_str()).collect();
    assert_eq!(bodies, vec!["after bob"], "initial /sync");
}

/// Spec (Size limits): "`state_key` MUST NOT exceed 255 bytes. `type` MUST NOT exceed 255 bytes."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_type_and_state_key_size_limits() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let room_id = c.create_room(&alice, json!({})).await;
    let long = "k".repeat(256);
    let state = c.put(&format!("/rooms/{}/state/m.room.topic/{long}", enc(&room_id)), &alice.token, json!({ "topic": "x" })).await;
    assert_eq!(state.status, 400, "state_key of 256 bytes: {}", state.body);
    let send = c.put(&format!("/rooms/{}/send/{long}/{}", enc(&room_id), txn()), &alice.token, json!({})).await;
    assert_eq!(send.status, 400, "type of 256 bytes: {}", send.body);
}
