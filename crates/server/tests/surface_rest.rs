//! The rest of the client surface of issue 13: search, notifications, space hierarchies, events
//! by timestamp. Every test runs against a real nats-server; bad input must get a Matrix error,
//! never a 5xx.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

/// The same request without a token: the spec's 401.
async fn expect_missing_token(c: &Client, method: Method, path: &str, body: Option<Value>) {
    let response = c.request(method, path, None, body.as_ref()).await;
    response.expect_err(401, "M_MISSING_TOKEN");
}

fn room_events(response: &Value) -> &Value {
    &response["search_categories"]["room_events"]
}

fn result_bodies(response: &Value) -> Vec<String> {
    room_events(response)["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["result"]["content"]["body"].as_str().unwrap_or_default().to_string())
        .collect()
}

// ---- search ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_finds_words_in_rooms_the_user_may_read() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let bob = c.register("bob").await;
    let shared = c.create_room(&alice, json!({ "name": "Gardening club" })).await;
    let private = c.create_room(&bob, json!({})).await;
    c.invite(&alice, &shared, &bob.user_id).await;
    c.join(&bob, &shared).await.ok();
    c.send_text(&alice, &shared, "the tomatoes are ripe").await;
    c.send_text(&bob, &shared, "Tomatoes again? I prefer cucumbers").await;
    c.send_text(&alice, &shared, "nothing to see here").await;
    c.send_text(&bob, &private, "secret tomatoes").await;

    let search = |term: &str, extra: Value| {
        let mut room_events = json!({ "search_term": term });
        for (k, v) in extra.as_object().unwrap() {
            room_events[k] = v.clone();
        }
        json!({ "search_categories": { "room_events": room_events } })
    };
    // Case-insensitive, every word must appear; bob's private room is not searched for alice.
    let found = c.post("/search", &alice.token, search("TOMATOES", json!({ "order_by": "recent" }))).await.ok();
    assert_eq!(result_bodies(&found), vec!["Tomatoes again? I prefer cucumbers", "the tomatoes are ripe"]);
    assert_eq!(room_events(&found)["count"], 2);
    assert!(room_events(&found)["results"][0]["rank"].is_number());
    assert_eq!(room_events(&found)["results"][0]["result"]["room_id"], shared.as_str());
    let both = c.post("/search", &alice.token, search("tomatoes cucumbers", json!({}))).await.ok();
    assert_eq!(result_bodies(&both), vec!["Tomatoes again? I prefer cucumbers"]);
    // Bob sees his private room's message too.
    let bobs = c.post("/search", &bob.token, search("tomatoes", json!({}))).await.ok();
    assert_eq!(result_bodies(&bobs).len(), 3);
    // The room name is searchable through content.name; keys restrict where words are looked for.
    let named = c.post("/search", &alice.token, search("gardening", json!({ "keys": ["content.name"] }))).await.ok();
    assert_eq!(room_events(&named)["results"][0]["result"]["type"], "m.room.name");
    let body_only = c.post("/search", &alice.token, search("gardening", json!({ "keys": ["content.body"] }))).await.ok();
    assert_eq!(room_events(&body_only)["results"], json!([]));
    // Filters: senders and rooms.
    let by_bob =
        c.post("/search", &alice.token, search("tomatoes", json!({ "filter": { "senders": [bob.user_id] } }))).await.ok();
    assert_eq!(result_bodies(&by_bob), vec!["Tomatoes again? I prefer cucumbers"]);
    let elsewhere = c.post("/search", &bob.token, search("tomatoes", json!({ "filter": { "not_rooms": [shared] } }))).await.ok();
    assert_eq!(result_bodies(&elsewhere), vec!["secret tomatoes"]);
    // Context around a result, with profiles.
    let with_context = c
        .post(
            "/search",
            &alice.token,
            search("ripe", json!({ "event_context": { "before_limit": 1, "after_limit": 1, "include_profile": true } })),
        )
        .await
        .ok();
    let context = &room_events(&with_context)["results"][0]["context"];
    assert_eq!(context["events_after"][0]["content"]["body"], "Tomatoes again? I prefer cucumbers");
    assert_eq!(context["events_before"].as_array().unwrap().len(), 1);
    assert!(context["start"].is_string() && context["end"].is_string());
    assert!(context["profile_info"][&alice.user_id].is_object());
    // State of the rooms with results.
    let with_state = c.post("/search", &alice.token, search("ripe", json!({ "include_state": true }))).await.ok();
    assert!(room_events(&with_state)["state"][&shared].as_array().unwrap().iter().any(|e| e["type"] == "m.room.create"));

    // A user who left keeps what they could read until leaving, not what came after.
    c.post(&format!("/rooms/{}/leave", enc(&shared)), &bob.token, json!({})).await.ok();
    c.send_text(&alice, &shared, "tomatoes after bob left").await;
    let after_leaving = c.post("/search", &bob.token, search("tomatoes", json!({ "filter": { "rooms": [shared] } }))).await.ok();
    assert_eq!(result_bodies(&after_leaving).len(), 2);

    // Bad input.
    c.post("/search", &alice.token, json!({})).await.expect_err(400, "M_BAD_JSON");
    c.post("/search", &alice.token, json!({ "search_categories": { "room_events": {} } })).await.expect_err(400, "M_BAD_JSON");
    c.post("/search", &alice.token, search("x", json!({ "order_by": "size" }))).await.expect_err(400, "M_INVALID_PARAM");
    c.post("/search", &alice.token, search("x", json!({ "keys": ["content.secret"] }))).await.expect_err(400, "M_INVALID_PARAM");
    c.post("/search", &alice.token, search("x", json!({ "filter": { "senders": 3 } }))).await.expect_err(400, "M_BAD_JSON");
    c.post("/search?next_batch=@@@", &alice.token, search("x", json!({}))).await.expect_err(400, "M_INVALID_PARAM");
    c.raw(Method::POST, "/search", Some(&alice.token), "application/json", b"{nope".to_vec()).await.expect_err(400, "M_NOT_JSON");
    expect_missing_token(&c, Method::POST, "/search", Some(search("x", json!({})))).await;
    // No category haetae knows: an empty answer.
    assert_eq!(
        c.post("/search", &alice.token, json!({ "search_categories": {} })).await.ok(),
        json!({ "search_categories": {} })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_scans_a_bounded_number_of_events_and_pages_on() {
    let mut config = test_config();
    config.limits.search_scan_events = 10;
    let server = TestServer::with_config(config).await;
    let c = server.client();
    let alice = c.register("alice").await;
    let room = c.create_room(&alice, json!({})).await;
    for n in 0..12 {
        c.send_text(&alice, &room, &format!("needle {n}")).await;
        for _ in 0..2 {
            c.send_text(&alice, &room, "hay").await;
        }
    }
    let body = json!({ "search_categories": { "room_events": { "search_term": "needle", "order_by": "recent" } } });
    // Each page examines at most 10 events (so finds at most 4 needles); following next_batch
    // finds every needle exactly once, newest first.
    let mut found = Vec::new();
    let mut next: Option<String> = None;
    for _ in 0..20 {
        let path = match &next {
            Some(token) => format!("/search?next_batch={}", enc(token)),
            None => "/search".to_string(),
        };
        let page = c.post(&path, &alice.token, body.clone()).await.ok();
        let bodies = result_bodies(&page);
        assert!(bodies.len() <= 4, "one page scanned more than the bound: {bodies:?}");
        found.extend(bodies);
        next = room_events(&page)["next_batch"].as_str().map(str::to_string);
        if next.is_none() {
            break;
        }
    }
    assert!(next.is_none(), "the scan never ended");
    let expected: Vec<String> = (0..12).rev().map(|n| format!("needle {n}")).collect();
    assert_eq!(found, expected);
    // A filter limit below the scan bound stops a page early, and the next page goes on.
    let limited = json!({ "search_categories": { "room_events": { "search_term": "needle", "order_by": "recent", "filter": { "limit": 1 } } } });
    let first = c.post("/search", &alice.token, limited.clone()).await.ok();
    assert_eq!(result_bodies(&first), vec!["needle 11"]);
    let token = room_events(&first)["next_batch"].as_str().unwrap().to_string();
    let second = c.post(&format!("/search?next_batch={}", enc(&token)), &alice.token, limited).await.ok();
    assert_eq!(result_bodies(&second), vec!["needle 10"]);
}

// ---- notifications ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_list_what_push_rules_notified() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let bob = c.register("bob").await;
    // A one-to-one room: the default rules notify for every message in it.
    let room = c.create_room(&alice, json!({})).await;
    c.invite(&alice, &room, &bob.user_id).await;
    c.join(&bob, &room).await.ok();
    c.send_text(&bob, &room, "my own message does not notify me").await;
    let first = c.send_text(&alice, &room, "hello bob").await;
    let mention = json!({ "msgtype": "m.text", "body": format!("{} look at this", bob.user_id), "m.mentions": { "user_ids": [bob.user_id] } });
    c.put(&format!("/rooms/{}/send/m.room.message/{}", enc(&room), txn()), &alice.token, mention).await.ok();

    let listed = c.get("/notifications", &bob.token).await.ok();
    let notifications = listed["notifications"].as_array().unwrap();
    let bodies: Vec<&str> = notifications.iter().map(|n| n["event"]["content"]["body"].as_str().unwrap_or("")).collect();
    // Newest first: the mention, the message, and the invite (`.m.rule.invite_for_me`).
    assert_eq!(bodies, vec![format!("{} look at this", bob.user_id).as_str(), "hello bob", ""]);
    assert_eq!(notifications[2]["event"]["content"]["membership"], "invite");
    for n in notifications {
        assert_eq!(n["room_id"], room.as_str());
        assert!(n["ts"].is_u64());
        assert!(n["actions"].as_array().unwrap().iter().any(|a| a == "notify"));
    }
    // Bob's own join marks what came before it (the invite) as read.
    let read: Vec<bool> = notifications.iter().map(|n| n["read"].as_bool().unwrap()).collect();
    assert_eq!(read, vec![false, false, true]);
    assert!(listed.get("next_token").is_none());

    // Only highlights: the mention.
    let highlights = c.get("/notifications?only=highlight", &bob.token).await.ok();
    assert_eq!(highlights["notifications"].as_array().unwrap().len(), 1);

    // Pages: one at a time, the token leads to the older one.
    let page = c.get("/notifications?limit=1", &bob.token).await.ok();
    assert_eq!(page["notifications"].as_array().unwrap().len(), 1);
    let token = page["next_token"].as_str().unwrap().to_string();
    let older = c.get(&format!("/notifications?limit=1&from={}", enc(&token)), &bob.token).await.ok();
    assert_eq!(older["notifications"][0]["event"]["event_id"], first.as_str());

    // A read receipt marks what it covers as read.
    c.post(&format!("/rooms/{}/receipt/m.read/{}", enc(&room), enc(&first)), &bob.token, json!({})).await.ok();
    let after_receipt = c.get("/notifications", &bob.token).await.ok();
    let read: Vec<bool> =
        after_receipt["notifications"].as_array().unwrap().iter().map(|n| n["read"].as_bool().unwrap()).collect();
    assert_eq!(read, vec![false, true, true]);

    // Bad input.
    c.get("/notifications?only=everything", &bob.token).await.expect_err(400, "M_INVALID_PARAM");
    c.get("/notifications?limit=many", &bob.token).await.expect_err(400, "M_INVALID_PARAM");
    c.get("/notifications?from=@@", &bob.token).await.expect_err(400, "M_INVALID_PARAM");
    expect_missing_token(&c, Method::GET, "/notifications", None).await;
}

// ---- space hierarchy ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hierarchy_walks_space_children_the_user_may_see() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let bob = c.register("bob").await;
    let space = c
        .create_room(&alice, json!({ "name": "Space", "creation_content": { "type": "m.space" }, "preset": "public_chat" }))
        .await;
    let general = c.create_room(&alice, json!({ "name": "General", "preset": "public_chat" })).await;
    let sub = c
        .create_room(&alice, json!({ "name": "Subspace", "creation_content": { "type": "m.space" }, "preset": "public_chat" }))
        .await;
    let deep = c.create_room(&alice, json!({ "name": "Deep", "preset": "public_chat" })).await;
    let secret = c.create_room(&alice, json!({ "name": "Secret", "preset": "private_chat" })).await;
    let add_child = |parent: String, child: String, content: Value| {
        let c = c.clone();
        let token = alice.token.clone();
        async move {
            c.put(&format!("/rooms/{}/state/m.space.child/{}", enc(&parent), enc(&child)), &token, content).await.ok();
        }
    };
    add_child(space.clone(), general.clone(), json!({ "via": ["test.local"], "suggested": true, "order": "a" })).await;
    add_child(space.clone(), sub.clone(), json!({ "via": ["test.local"], "order": "b" })).await;
    add_child(space.clone(), secret.clone(), json!({ "via": ["test.local"], "order": "c" })).await;
    add_child(sub.clone(), deep.clone(), json!({ "via": ["test.local"] })).await;
    // A child without `via` is no child.
    add_child(space.clone(), "!gone:test.local".to_string(), json!({})).await;

    let path = |query: &str| format!("/_matrix/client/v1/rooms/{}/hierarchy{query}", enc(&space));
    let names = |response: &Value| -> Vec<String> {
        response["rooms"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap_or_default().to_string()).collect()
    };
    // Alice (a member of all) sees every room, breadth first, children in `order`.
    let all = c.get(&path(""), &alice.token).await.ok();
    assert_eq!(names(&all), vec!["Space", "General", "Subspace", "Secret", "Deep"]);
    let root = &all["rooms"][0];
    assert_eq!(root["room_type"], "m.space");
    assert_eq!(root["children_state"].as_array().unwrap().len(), 3);
    assert_eq!(root["children_state"][0]["state_key"], general.as_str());
    assert!(root["children_state"][0]["origin_server_ts"].is_u64());
    assert_eq!(root["num_joined_members"], 1);
    // Bob, in none of them, sees the public rooms but not the private one.
    let bobs = c.get(&path(""), &bob.token).await.ok();
    assert_eq!(names(&bobs), vec!["Space", "General", "Subspace", "Deep"]);
    // Depth and suggestions.
    assert_eq!(names(&c.get(&path("?max_depth=0"), &alice.token).await.ok()), vec!["Space"]);
    assert_eq!(names(&c.get(&path("?max_depth=1"), &alice.token).await.ok()), vec!["Space", "General", "Subspace", "Secret"]);
    assert_eq!(names(&c.get(&path("?suggested_only=true"), &alice.token).await.ok()), vec!["Space", "General"]);
    // Pages.
    let first = c.get(&path("?limit=2"), &alice.token).await.ok();
    assert_eq!(names(&first), vec!["Space", "General"]);
    let token = first["next_batch"].as_str().unwrap().to_string();
    let second = c.get(&path(&format!("?limit=2&from={}", enc(&token))), &alice.token).await.ok();
    assert_eq!(names(&second), vec!["Subspace", "Secret"]);
    let third = c.get(&path(&format!("?limit=2&from={}", enc(second["next_batch"].as_str().unwrap()))), &alice.token).await.ok();
    assert_eq!(names(&third), vec!["Deep"]);
    assert!(third.get("next_batch").is_none());
    // A token used with other parameters is refused.
    c.get(&path(&format!("?limit=2&max_depth=1&from={}", enc(&token))), &alice.token).await.expect_err(400, "M_INVALID_PARAM");

    // The private room as root: 403 for bob; an unknown room: 404.
    c.get(&format!("/_matrix/client/v1/rooms/{}/hierarchy", enc(&secret)), &bob.token).await.expect_err(403, "M_FORBIDDEN");
    c.get("/_matrix/client/v1/rooms/!nowhere:test.local/hierarchy", &alice.token).await.expect_err(404, "M_NOT_FOUND");
    // Bad input.
    c.get(&path("?limit=0"), &alice.token).await.expect_err(400, "M_INVALID_PARAM");
    c.get(&path("?max_depth=-1"), &alice.token).await.expect_err(400, "M_INVALID_PARAM");
    c.get(&path("?suggested_only=maybe"), &alice.token).await.expect_err(400, "M_INVALID_PARAM");
    c.get(&path("?from=nonsense"), &alice.token).await.expect_err(400, "M_INVALID_PARAM");
    c.get("/_matrix/client/v1/rooms/not-a-room/hierarchy", &alice.token).await.expect_err(400, "M_INVALID_PARAM");
    expect_missing_token(&c, Method::GET, &path(""), None).await;
}

// ---- timestamp to event ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamp_to_event_finds_the_nearest_event_either_way() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let bob = c.register("bob").await;
    let room = c.create_room(&alice, json!({})).await;
    // More than two chunks of 128 events, so the search crosses chunk boundaries.
    for n in 0..300 {
        c.send_text(&alice, &room, &format!("m{n}")).await;
    }
    // The whole timeline, oldest first, as the expectation.
    let all = c.get(&format!("/rooms/{}/messages?dir=f&limit=1000", enc(&room)), &alice.token).await.ok();
    let timeline: Vec<(String, u64)> = all["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["event_id"].as_str().unwrap().to_string(), e["origin_server_ts"].as_u64().unwrap()))
        .collect();
    assert!(timeline.len() > 300);
    let path = |ts: u64, dir: &str| format!("/_matrix/client/v1/rooms/{}/timestamp_to_event?ts={ts}&dir={dir}", enc(&room));
    let first_ts = timeline[0].1;
    let last_ts = timeline.last().unwrap().1;
    let probes = [first_ts, timeline[100].1, timeline[129].1, timeline[200].1 + 1, timeline[257].1, last_ts];
    for ts in probes {
        let forward = c.get(&path(ts, "f"), &alice.token).await.ok();
        let expected = timeline.iter().find(|(_, t)| *t >= ts).unwrap();
        assert_eq!(forward["event_id"], expected.0.as_str(), "dir=f at {ts}");
        assert_eq!(forward["origin_server_ts"], expected.1);
        let backward = c.get(&path(ts, "b"), &alice.token).await.ok();
        let expected = timeline.iter().rev().find(|(_, t)| *t <= ts).unwrap();
        assert_eq!(backward["event_id"], expected.0.as_str(), "dir=b at {ts}");
    }
    // Nothing before the room, nothing after its last event.
    c.get(&path(first_ts - 1, "b"), &alice.token).await.expect_err(404, "M_NOT_FOUND");
    c.get(&path(last_ts + 60_000, "f"), &alice.token).await.expect_err(404, "M_NOT_FOUND");
    // Someone outside the room, an unknown room, bad parameters.
    c.get(&path(last_ts, "b"), &bob.token).await.expect_err(403, "M_FORBIDDEN");
    c.get(&format!("/_matrix/client/v1/rooms/{}/timestamp_to_event?ts=1&dir=f", enc("!nowhere:test.local")), &alice.token)
        .await
        .expect_err(404, "M_NOT_FOUND");
    c.get(&path(last_ts, "sideways"), &alice.token).await.expect_err(400, "M_INVALID_PARAM");
    c.get(&format!("/_matrix/client/v1/rooms/{}/timestamp_to_event?dir=f", enc(&room)), &alice.token)
        .await
        .expect_err(400, "M_MISSING_PARAM");
    c.get(&format!("/_matrix/client/v1/rooms/{}/timestamp_to_event?ts=soon&dir=f", enc(&room)), &alice.token)
        .await
        .expect_err(400, "M_INVALID_PARAM");
    expect_missing_token(&c, Method::GET, &path(last_ts, "b"), None).await;
}

// ---- knocking ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knocking_asks_to_join_and_an_invite_lets_in() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let bob = c.register("bob").await;
    let carol = c.register("carol").await;
    let room = c
        .create_room(
            &alice,
            json!({ "name": "Knock knock", "room_alias_name": unique_name("knock"), "initial_state": [
                { "type": "m.room.join_rules", "state_key": "", "content": { "join_rule": "knock" } }
            ] }),
        )
        .await;
    let closed = c.create_room(&alice, json!({ "preset": "private_chat" })).await;
    let bob_since = c.sync(&bob, None, 0).await["next_batch"].as_str().unwrap().to_string();

    // Joining without an invite is refused; knocking is allowed, and again is harmless.
    c.join(&bob, &room).await.expect_err(403, "M_FORBIDDEN");
    let knocked = c.post(&format!("/knock/{}", enc(&room)), &bob.token, json!({ "reason": "let me in" })).await.ok();
    assert_eq!(knocked["room_id"], room.as_str());
    c.post(&format!("/knock/{}", enc(&room)), &bob.token, json!({})).await.ok();

    // Bob's sync: the room under rooms.knock with stripped state and his knock.
    let (_, syncs) = c
        .sync_until(&bob, Some(&bob_since), std::time::Duration::from_secs(10), |s| s["rooms"]["knock"][&room].is_object())
        .await;
    let knock_state = &syncs.last().unwrap()["rooms"]["knock"][&room]["knock_state"]["events"];
    let events = knock_state.as_array().unwrap();
    assert!(events.iter().any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Knock knock"));
    assert!(events.iter().any(|e| e["type"] == "m.room.join_rules" && e["content"]["join_rule"] == "knock"));
    let own = events.iter().find(|e| e["type"] == "m.room.member").unwrap();
    assert_eq!(own["state_key"], bob.user_id.as_str());
    assert_eq!(own["content"]["membership"], "knock");
    assert_eq!(own["content"]["reason"], "let me in");

    // Alice sees the knock in the room's state and lets bob in with an invite.
    let member = c.get(&format!("/rooms/{}/state/m.room.member/{}", enc(&room), enc(&bob.user_id)), &alice.token).await.ok();
    assert_eq!(member["membership"], "knock");
    c.invite(&alice, &room, &bob.user_id).await;
    c.join(&bob, &room).await.ok();
    let joined = c.get("/joined_rooms", &bob.token).await.ok();
    assert!(joined["joined_rooms"].as_array().unwrap().iter().any(|r| r == room.as_str()));
    // Knocking while in the room is refused.
    c.post(&format!("/knock/{}", enc(&room)), &bob.token, json!({})).await.expect_err(403, "M_FORBIDDEN");

    // Carol knocks, alice refuses by kicking: carol is out, and may knock again.
    c.post(&format!("/knock/{}", enc(&room)), &carol.token, json!({})).await.ok();
    c.post(&format!("/rooms/{}/kick", enc(&room)), &alice.token, json!({ "user_id": carol.user_id })).await.ok();
    let member = c.get(&format!("/rooms/{}/state/m.room.member/{}", enc(&room), enc(&carol.user_id)), &alice.token).await.ok();
    assert_eq!(member["membership"], "leave");

    // A room that does not allow knocking, an unknown room, bad input.
    c.post(&format!("/knock/{}", enc(&closed)), &carol.token, json!({})).await.expect_err(403, "M_FORBIDDEN");
    c.post(&format!("/knock/{}", enc("!nowhere:test.local")), &carol.token, json!({})).await.expect_err(404, "M_NOT_FOUND");
    c.post(&format!("/knock/{}", enc("#nowhere:test.local")), &carol.token, json!({})).await.expect_err(404, "M_NOT_FOUND");
    c.post("/knock/not-a-room", &carol.token, json!({})).await.expect_err(400, "M_INVALID_PARAM");
    c.post(&format!("/knock/{}", enc(&room)), &carol.token, json!({ "reason": 5 })).await.expect_err(400, "M_BAD_JSON");
    expect_missing_token(&c, Method::POST, &format!("/knock/{}", enc(&room)), Some(json!({}))).await;
}

// ---- room upgrades ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrading_a_room_replaces_it_with_a_tombstone() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let bob = c.register("bob").await;
    let mallory = c.register("mallory").await;
    let alias_name = unique_name("upgraded");
    let old = c
        .create_room(&alice, json!({ "room_version": "10", "name": "Old name", "topic": "Topic", "preset": "public_chat", "room_alias_name": alias_name }))
        .await;
    let alias = format!("#{alias_name}:test.local");
    c.join(&bob, &old).await.ok();
    c.join(&mallory, &old).await.ok();
    c.post(&format!("/rooms/{}/ban", enc(&old)), &alice.token, json!({ "user_id": mallory.user_id })).await.ok();
    let last_before = c.send_text(&alice, &old, "last words").await;

    // Bob (power 0) may not upgrade; unsupported versions and bad bodies are refused.
    let path = format!("/rooms/{}/upgrade", enc(&old));
    c.post(&path, &bob.token, json!({ "new_version": "11" })).await.expect_err(403, "M_FORBIDDEN");
    c.post(&path, &alice.token, json!({ "new_version": "999" })).await.expect_err(400, "M_UNSUPPORTED_ROOM_VERSION");
    c.post(&path, &alice.token, json!({})).await.expect_err(400, "M_BAD_JSON");
    c.post(&path, &alice.token, json!({ "new_version": 11 })).await.expect_err(400, "M_BAD_JSON");
    c.post("/rooms/not-a-room/upgrade", &alice.token, json!({ "new_version": "11" })).await.expect_err(400, "M_INVALID_PARAM");
    c.post(&format!("/rooms/{}/upgrade", enc("!nowhere:test.local")), &alice.token, json!({ "new_version": "11" }))
        .await
        .expect_err(403, "M_FORBIDDEN");
    expect_missing_token(&c, Method::POST, &path, Some(json!({ "new_version": "11" }))).await;

    let upgraded = c.post(&path, &alice.token, json!({ "new_version": "11" })).await.ok();
    let new = upgraded["replacement_room"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    let state = |room: &str, event_type: &str| format!("/rooms/{}/state/{event_type}/", enc(room));
    // The new room: version, predecessor, copied state, the ban, the alias.
    let create = c.get(&state(&new, "m.room.create"), &alice.token).await.ok();
    assert_eq!(create["room_version"], "11");
    assert_eq!(create["predecessor"]["room_id"], old.as_str());
    assert_eq!(create["predecessor"]["event_id"], last_before.as_str());
    assert_eq!(c.get(&state(&new, "m.room.name"), &alice.token).await.ok()["name"], "Old name");
    assert_eq!(c.get(&state(&new, "m.room.topic"), &alice.token).await.ok()["topic"], "Topic");
    assert_eq!(c.get(&state(&new, "m.room.join_rules"), &alice.token).await.ok()["join_rule"], "public");
    let old_levels = c.get(&state(&old, "m.room.power_levels"), &alice.token).await.ok();
    let new_levels = c.get(&state(&new, "m.room.power_levels"), &alice.token).await.ok();
    assert_eq!(new_levels["users"], json!({ (alice.user_id.clone()): 100 }));
    let ban = c.get(&format!("/rooms/{}/state/m.room.member/{}", enc(&new), enc(&mallory.user_id)), &alice.token).await.ok();
    assert_eq!(ban["membership"], "ban");
    let resolved = c.get(&format!("/directory/room/{}", enc(&alias)), &alice.token).await.ok();
    assert_eq!(resolved["room_id"], new.as_str());
    assert_eq!(c.get(&state(&new, "m.room.canonical_alias"), &alice.token).await.ok()["alias"], alias.as_str());

    // The old room: the tombstone, and ordinary members silenced.
    let tombstone = c.get(&state(&old, "m.room.tombstone"), &alice.token).await.ok();
    assert_eq!(tombstone["replacement_room"], new.as_str());
    assert_eq!(old_levels["events_default"], 50);
    assert_eq!(old_levels["invite"], 50);
    let refused = c
        .request(
            Method::PUT,
            &format!("/rooms/{}/send/m.room.message/{}", enc(&old), txn()),
            Some(&bob.token),
            Some(&json!({ "msgtype": "m.text", "body": "hi" })),
        )
        .await;
    refused.expect_err(403, "M_FORBIDDEN");
    // Bob follows to the new room and may speak there.
    c.join(&bob, &new).await.ok();
    c.send_text(&bob, &new, "hello new room").await;
    // Mallory stays banned.
    c.join(&mallory, &new).await.expect_err(403, "M_FORBIDDEN");
}

// ---- the deprecated event stream and initial syncs ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deprecated_events_and_initial_sync_wrap_sync() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let bob = c.register("bob").await;
    let room = c.create_room(&alice, json!({ "name": "Old API" })).await;
    let first = c.send_text(&alice, &room, "before the stream").await;

    // The stream starts now: a first call gives a token, the next one what came after it.
    let start = c.get("/events?timeout=0", &alice.token).await.ok();
    let from = start["end"].as_str().unwrap().to_string();
    let sent = c.send_text(&alice, &room, "in the stream").await;
    let streamed = c.get(&format!("/events?timeout=5000&from={}", enc(&from)), &alice.token).await.ok();
    assert_eq!(streamed["start"], from.as_str());
    assert!(streamed["end"].is_string());
    let chunk = streamed["chunk"].as_array().unwrap();
    let event = chunk.iter().find(|e| e["event_id"] == sent.as_str()).expect("the new event is streamed");
    assert_eq!(event["room_id"], room.as_str());
    assert!(!chunk.iter().any(|e| e["event_id"] == first.as_str()));

    // One event by id, for members only.
    let found = c.get(&format!("/events/{}", enc(&first)), &alice.token).await.ok();
    assert_eq!(found["content"]["body"], "before the stream");
    assert_eq!(found["room_id"], room.as_str());
    c.get(&format!("/events/{}", enc(&first)), &bob.token).await.expect_err(404, "M_NOT_FOUND");
    c.get("/events/$nonsense", &alice.token).await.expect_err(404, "M_NOT_FOUND");

    // Initial sync: the room with its state and latest messages.
    let initial = c.get("/initialSync?limit=5", &alice.token).await.ok();
    assert!(initial["end"].is_string());
    let rooms = initial["rooms"].as_array().unwrap();
    let snapshot = rooms.iter().find(|r| r["room_id"] == room.as_str()).unwrap();
    assert_eq!(snapshot["membership"], "join");
    assert_eq!(snapshot["visibility"], "private");
    let messages = snapshot["messages"]["chunk"].as_array().unwrap();
    assert!(messages.len() <= 5 && messages.iter().any(|e| e["event_id"] == sent.as_str()));
    assert!(
        snapshot["state"].as_array().unwrap().iter().any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Old API")
    );
    let one = c.get(&format!("/rooms/{}/initialSync", enc(&room)), &alice.token).await.ok();
    assert_eq!(one["room_id"], room.as_str());
    assert_eq!(one["membership"], "join");
    assert!(one["messages"]["chunk"].as_array().unwrap().iter().any(|e| e["event_id"] == sent.as_str()));
    assert!(one["state"].as_array().unwrap().iter().any(|e| e["type"] == "m.room.create"));

    // Bad input and strangers.
    c.get(&format!("/rooms/{}/initialSync", enc(&room)), &bob.token).await.expect_err(403, "M_FORBIDDEN");
    c.get("/rooms/not-a-room/initialSync", &alice.token).await.expect_err(400, "M_INVALID_PARAM");
    c.get("/initialSync?limit=lots", &alice.token).await.expect_err(400, "M_INVALID_PARAM");
    c.get("/events?timeout=soon", &alice.token).await.expect_err(400, "M_INVALID_PARAM");
    c.get("/events?from=garbage", &alice.token).await.expect_err(400, "M_INVALID_PARAM");
    c.get(&format!("/events?room_id={}", enc(&room)), &bob.token).await.expect_err(403, "M_FORBIDDEN");
    expect_missing_token(&c, Method::GET, "/events", None).await;
    expect_missing_token(&c, Method::GET, "/initialSync", None).await;
}

// ---- asynchronous uploads ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_media_ids_take_one_upload() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let bob = c.register("bob").await;
    let created = c.post("/_matrix/media/v1/create", &alice.token, json!({})).await.ok();
    let uri = created["content_uri"].as_str().unwrap().to_string();
    assert!(created["unused_expires_at"].as_u64().unwrap() > 0);
    let media_id = uri.strip_prefix("mxc://test.local/").expect("an mxc URI of this server").to_string();
    let upload = format!("/_matrix/media/v3/upload/test.local/{media_id}");
    let download = format!("/_matrix/client/v1/media/download/test.local/{media_id}");

    // Before the file: downloads say it is not there yet.
    c.get(&download, &alice.token).await.expect_err(504, "M_NOT_YET_UPLOADED");
    // Only the one who reserved it may fill it.
    c.raw(Method::PUT, &upload, Some(&bob.token), "text/plain", b"bob's".to_vec()).await.expect_err(403, "M_FORBIDDEN");
    c.raw(Method::PUT, &upload, Some(&alice.token), "text/plain", b"hello".to_vec()).await.ok();
    let fetched = c.http.get(c.url(&download)).bearer_auth(&alice.token).send().await.unwrap();
    assert_eq!(fetched.status(), 200);
    assert_eq!(fetched.bytes().await.unwrap().as_ref(), b"hello");
    // Once only.
    c.raw(Method::PUT, &upload, Some(&alice.token), "text/plain", b"again".to_vec())
        .await
        .expect_err(409, "M_CANNOT_OVERWRITE_MEDIA");
    // Ids nobody reserved, other servers, bad ids.
    c.raw(Method::PUT, "/_matrix/media/v3/upload/test.local/neverreserved", Some(&alice.token), "text/plain", b"x".to_vec())
        .await
        .expect_err(404, "M_NOT_FOUND");
    c.raw(
        Method::PUT,
        &format!("/_matrix/media/v3/upload/elsewhere.org/{media_id}"),
        Some(&alice.token),
        "text/plain",
        b"x".to_vec(),
    )
    .await
    .expect_err(404, "M_NOT_FOUND");
    // At most ten reservations wait at once per user.
    for _ in 0..10 {
        c.post("/_matrix/media/v1/create", &bob.token, json!({})).await.ok();
    }
    c.post("/_matrix/media/v1/create", &bob.token, json!({})).await.expect_err(429, "M_LIMIT_EXCEEDED");
    expect_missing_token(&c, Method::POST, "/_matrix/media/v1/create", Some(json!({}))).await;
}

/// Two uploads racing for one reserved id at two nodes: one stores its file, the other is told
/// the id is taken; never both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_uploads_racing_for_a_reserved_id_at_two_nodes_store_one_file() {
    let server = TestServer::start().await;
    let other = Node::start(&server.nats, test_config()).await;
    let (a, b) = (server.client(), other.client());
    let alice = a.register("alice").await;
    for round in 0..5 {
        let created = a.post("/_matrix/media/v1/create", &alice.token, json!({})).await.ok();
        let uri = created["content_uri"].as_str().unwrap().to_string();
        let media_id = uri.strip_prefix("mxc://test.local/").expect("an mxc URI of this server").to_string();
        let upload = format!("/_matrix/media/v3/upload/test.local/{media_id}");
        let (first, second) = tokio::join!(
            a.raw(Method::PUT, &upload, Some(&alice.token), "text/plain", format!("a{round}").into_bytes()),
            b.raw(Method::PUT, &upload, Some(&alice.token), "text/plain", format!("b{round}").into_bytes()),
        );
        let statuses = [first.status, second.status];
        assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "round {round}: {statuses:?}");
        let refused = if first.status == 200 { &second } else { &first };
        assert!(matches!(refused.errcode(), "M_CANNOT_OVERWRITE_MEDIA" | "M_NOT_FOUND"), "round {round}: {}", refused.errcode());
    }
}

// ---- what Schemathesis found ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_leave_out_absent_fields_and_refuse_unknown_backup_algorithms() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    // A device without a display name: the field is absent, never null.
    let devices = c.get("/devices", &alice.token).await.ok();
    for device in devices["devices"].as_array().unwrap() {
        for key in ["display_name", "last_seen_ip", "last_seen_ts"] {
            assert!(device.get(key).is_none_or(|v| !v.is_null()), "{key} is null in {device}");
        }
    }
    let one = c.get(&format!("/devices/{}", enc(&alice.device_id)), &alice.token).await.ok();
    assert!(one.get("display_name").is_none_or(|v| v.is_string()), "{one}");
    // A user without an avatar in the user directory: no null avatar_url.
    let bob = c.register("bob").await;
    let room = c.create_room(&alice, json!({ "preset": "public_chat" })).await;
    c.join(&bob, &room).await.ok();
    let found = c.post("/user_directory/search", &bob.token, json!({ "search_term": alice.user_id })).await.ok();
    let results = found["results"].as_array().unwrap();
    let listed = results.iter().find(|r| r["user_id"] == alice.user_id.as_str()).expect("alice is found");
    assert!(listed.get("avatar_url").is_none(), "{listed}");
    // Key backups: only the spec's algorithm.
    c.post("/room_keys/version", &alice.token, json!({ "algorithm": "AAA", "auth_data": {} }))
        .await
        .expect_err(400, "M_INVALID_PARAM");
    c.post("/room_keys/version", &alice.token, json!({ "algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": {} }))
        .await
        .ok();
}
