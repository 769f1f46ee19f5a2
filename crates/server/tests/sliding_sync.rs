//! Simplified sliding sync (MSC4186) over HTTP, with the request and response shapes
//! matrix-rust-sdk sends and reads: lists by recency, incremental responses after a `pos`, long
//! polls, invites, lazy-loaded members, the to-device and e2ee extensions, unknown positions, and
//! a connection continued at a second node.

mod common;

use std::time::Duration;

use common::{Client, Node, TestServer, User, enc, txn};
use reqwest::Method;
use serde_json::{Value, json};

const PATH: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

/// One sliding sync request; the response as it came.
async fn sliding(c: &Client, user: &User, pos: Option<&str>, timeout_ms: u64, body: &Value) -> common::Resp {
    let mut path = format!("{PATH}?timeout={timeout_ms}");
    if let Some(pos) = pos {
        path.push_str(&format!("&pos={}", enc(pos)));
    }
    c.request(Method::POST, &path, Some(&user.token), Some(body)).await
}

/// The body the SDK's room list sends: one list over everything, by recency.
fn all_rooms(range_end: u64, timeline_limit: u64) -> Value {
    json!({
        "conn_id": "room-list",
        "lists": {
            "all_rooms": {
                "ranges": [[0, range_end]],
                "timeline_limit": timeline_limit,
                "required_state": [["m.room.name", ""], ["m.room.member", "$ME"]],
            }
        },
    })
}

fn pos_of(response: &Value) -> String {
    response["pos"].as_str().expect("pos").to_string()
}

/// Room ids of a response ordered as a client orders them: by bump stamp, most recent first.
fn by_bump(response: &Value) -> Vec<String> {
    let rooms = response["rooms"].as_object().cloned().unwrap_or_default();
    let mut rooms: Vec<(u64, String)> =
        rooms.iter().map(|(id, room)| (room["bump_stamp"].as_u64().unwrap_or(0), id.clone())).collect();
    rooms.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    rooms.into_iter().map(|(_, id)| id).collect()
}

fn timeline_ids(response: &Value, room_id: &str) -> Vec<String> {
    response["rooms"][room_id]["timeline"]
        .as_array()
        .map(|events| events.iter().map(|e| e["event_id"].as_str().unwrap_or_default().to_string()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_by_recency_and_incremental_responses() {
    let server = TestServer::start().await;
    let c = server.client();
    let versions = c.request(Method::GET, "/_matrix/client/versions", None, None).await.ok();
    assert_eq!(versions["unstable_features"]["org.matrix.simplified_msc3575"], true, "{versions}");

    let alice = c.register("alice").await;
    let mut rooms = Vec::new();
    for name in ["first", "second", "third"] {
        let room_id = c.create_room(&alice, json!({ "name": name })).await;
        c.send_text(&alice, &room_id, &format!("hello {name}")).await;
        rooms.push(room_id);
    }
    // The first range holds the two most recent rooms, newest first; the count holds all three.
    let first = sliding(&c, &alice, None, 0, &all_rooms(1, 5)).await.ok();
    assert_eq!(first["lists"]["all_rooms"]["count"], 3, "{first}");
    assert_eq!(by_bump(&first), vec![rooms[2].clone(), rooms[1].clone()], "{first}");
    let third = &first["rooms"][&rooms[2]];
    assert_eq!(third["initial"], true);
    assert_eq!(third["name"], "third");
    assert_eq!(third["joined_count"], 1);
    assert_eq!(third["timeline"].as_array().unwrap().last().unwrap()["content"]["body"], "hello third");
    let required: Vec<&str> = third["required_state"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(required.contains(&"m.room.name") && required.contains(&"m.room.member"), "{third}");
    assert!(!required.contains(&"m.room.create"), "only the required state: {third}");

    // Catch up on the whole list, then a message in the oldest room moves it to the top: the
    // next response carries only that room, with only the new event.
    let all = sliding(&c, &alice, Some(&pos_of(&first)), 0, &all_rooms(9, 5)).await.ok();
    assert_eq!(by_bump(&all), vec![rooms[0].clone()], "the room not sent yet, and only it: {all}");
    let quiet = sliding(&c, &alice, Some(&pos_of(&all)), 0, &all_rooms(9, 5)).await.ok();
    assert!(quiet["rooms"].as_object().unwrap().is_empty(), "nothing changed: {quiet}");
    let event_id = c.send_text(&alice, &rooms[0], "bump").await;
    let next = sliding(&c, &alice, Some(&pos_of(&quiet)), 0, &all_rooms(9, 5)).await.ok();
    assert_eq!(by_bump(&next), vec![rooms[0].clone()], "{next}");
    let moved = &next["rooms"][&rooms[0]];
    assert_eq!(timeline_ids(&next, &rooms[0]), vec![event_id.clone()]);
    assert_eq!(moved["num_live"], 1);
    assert_eq!(moved["limited"], false);
    assert!(moved.get("initial").is_none(), "incremental: {moved}");
    let newest_before = first["rooms"][&rooms[2]]["bump_stamp"].as_u64().unwrap();
    assert!(moved["bump_stamp"].as_u64().unwrap() >= newest_before, "{next}");
    // And a fresh connection lists it first.
    let fresh = sliding(&c, &alice, None, 0, &all_rooms(0, 1)).await.ok();
    assert_eq!(by_bump(&fresh), vec![rooms[0].clone()], "{fresh}");
    // The prev_batch paginates back from the timeline with /messages.
    let prev_batch = fresh["rooms"][&rooms[0]]["prev_batch"].as_str().expect("prev_batch").to_string();
    let path = format!("/rooms/{}/messages?dir=b&limit=5&from={}", enc(&rooms[0]), enc(&prev_batch));
    let page = c.get(&path, &alice.token).await.ok();
    let bodies: Vec<&str> = page["chunk"].as_array().unwrap().iter().filter_map(|e| e["content"]["body"].as_str()).collect();
    assert_eq!(bodies.first(), Some(&"hello first"), "{page}");

    // A position the server does not know.
    sliding(&c, &alice, Some("1_99"), 0, &all_rooms(9, 5)).await.expect_err(400, "M_UNKNOWN_POS");
    sliding(&c, &alice, Some("garbage"), 0, &all_rooms(9, 5)).await.expect_err(400, "M_UNKNOWN_POS");
    // A restarted connection forgets the old positions.
    let restarted = sliding(&c, &alice, None, 0, &all_rooms(9, 5)).await.ok();
    assert_eq!(restarted["rooms"].as_object().unwrap().len(), 3);
    sliding(&c, &alice, Some(&pos_of(&next)), 0, &all_rooms(9, 5)).await.expect_err(400, "M_UNKNOWN_POS");
    // A list with more ranges than the server walks is refused, not served.
    let mut many_ranges = all_rooms(9, 5);
    many_ranges["lists"]["all_rooms"]["ranges"] = json!((0..101).map(|i| [i, i]).collect::<Vec<_>>());
    sliding(&c, &alice, None, 0, &many_ranges).await.expect_err(400, "M_INVALID_PARAM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_wakes_when_a_message_arrives() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let bob = c.register("bob").await;
    let room_id = c.create_room(&alice, json!({ "preset": "public_chat" })).await;
    c.join(&bob, &room_id).await.ok();
    let first = sliding(&c, &bob, None, 0, &all_rooms(9, 5)).await.ok();
    let pos = pos_of(&first);

    let poller = {
        let (c, bob) = (c.clone(), bob.clone());
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let response = sliding(&c, &bob, Some(&pos), 25_000, &all_rooms(9, 5)).await.ok();
            (response, started.elapsed())
        })
    };
    let event_id = c.send_text(&alice, &room_id, "wake up").await;
    let (response, elapsed) = tokio::time::timeout(Duration::from_secs(20), poller).await.expect("long poll returns").unwrap();
    assert!(elapsed < Duration::from_secs(15), "the long poll returns when the event arrives, not at its timeout");
    assert!(timeline_ids(&response, &room_id).contains(&event_id), "{response}");
    // With nothing happening, a short long poll times out with no rooms.
    let idle = sliding(&c, &bob, Some(&pos_of(&response)), 200, &all_rooms(9, 5)).await.ok();
    assert!(idle["rooms"].as_object().unwrap().is_empty(), "{idle}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invites_lazy_members_and_dms() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let bob = c.register("bob").await;
    let carol = c.register("carol").await;
    let room_id = c.create_room(&alice, json!({ "preset": "public_chat", "name": "party" })).await;
    c.join(&bob, &room_id).await.ok();
    c.join(&carol, &room_id).await.ok();
    c.send_text(&bob, &room_id, "from bob").await;
    let dm = c.create_room(&alice, json!({ "preset": "trusted_private_chat", "is_direct": true })).await;
    c.invite(&alice, &dm, &carol.user_id).await;
    c.put(
        &format!("/user/{}/account_data/m.direct", enc(&carol.user_id)),
        &carol.token,
        json!({ alice.user_id.clone(): [dm.clone()] }),
    )
    .await
    .ok();

    let body = json!({
        "conn_id": "lists",
        "lists": {
            "invites": { "ranges": [[0, 9]], "timeline_limit": 1, "filters": { "is_invite": true } },
            "dms": { "ranges": [[0, 9]], "timeline_limit": 1, "filters": { "is_dm": true } },
            "rooms": {
                "ranges": [[0, 9]],
                "timeline_limit": 1,
                "required_state": [["m.room.member", "$LAZY"]],
                "filters": { "is_invite": false },
            },
        },
    });
    let response = sliding(&c, &carol, None, 0, &body).await.ok();
    assert_eq!(response["lists"]["invites"]["count"], 1, "{response}");
    assert_eq!(response["lists"]["dms"]["count"], 1, "{response}");
    assert_eq!(response["lists"]["rooms"]["count"], 1, "{response}");
    let invite = &response["rooms"][&dm];
    let invite_state = invite["invite_state"].as_array().expect("invite_state");
    let mine = invite_state.iter().find(|e| e["type"] == "m.room.member" && e["state_key"] == carol.user_id.as_str());
    assert_eq!(mine.expect("the invite itself")["content"]["membership"], "invite", "{invite}");
    assert!(invite.get("timeline").is_none(), "no timeline for an invite: {invite}");
    // $LAZY: the member events of the timeline's senders only (bob), not every member.
    let party = &response["rooms"][&room_id];
    let members: Vec<&str> = party["required_state"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .map(|e| e["state_key"].as_str().unwrap())
        .collect();
    assert_eq!(members, vec![bob.user_id.as_str()], "{party}");
    assert_eq!(party["joined_count"], 3);
    assert_eq!(party["notification_count"], 1, "bob's message is unread: {party}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn to_device_and_e2ee_extensions() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let bob = c.register("bob").await;
    let room_id = c.create_room(&alice, json!({ "preset": "public_chat" })).await;
    c.join(&bob, &room_id).await.ok();
    let otk = |user: &User, id: &str| json!({ format!("signed_curve25519:{id}"): { "key": format!("otk-{id}"), "signatures": { user.user_id.clone(): { format!("ed25519:{}", user.device_id): "s" } } } });
    c.post("/keys/upload", &alice.token, json!({ "one_time_keys": otk(&alice, "AAAA") })).await.ok();
    let body = |since: Option<&str>| {
        let mut to_device = json!({ "enabled": true });
        if let Some(since) = since {
            to_device["since"] = json!(since);
        }
        json!({ "conn_id": "encryption", "extensions": { "to_device": to_device, "e2ee": { "enabled": true } } })
    };
    let first = sliding(&c, &alice, None, 0, &body(None)).await.ok();
    assert_eq!(first["extensions"]["e2ee"]["device_one_time_keys_count"]["signed_curve25519"], 1, "{first}");
    let since = first["extensions"]["to_device"]["next_batch"].as_str().expect("next_batch").to_string();

    // Bob sends a to-device message and uploads device keys: both reach alice's next response.
    let message = json!({ "messages": { alice.user_id.clone(): { alice.device_id.clone(): { "secret": 42 } } } });
    c.put(&format!("/sendToDevice/m.test/{}", txn()), &bob.token, message).await.ok();
    let keys = json!({ "device_keys": {
        "user_id": bob.user_id, "device_id": bob.device_id, "algorithms": ["m.megolm.v1.aes-sha2"],
        "keys": { format!("ed25519:{}", bob.device_id): "ed" }, "signatures": {},
    } });
    c.post("/keys/upload", &bob.token, keys).await.ok();
    let next = sliding(&c, &alice, Some(&pos_of(&first)), 10_000, &body(Some(&since))).await.ok();
    let events = next["extensions"]["to_device"]["events"].as_array().expect("to-device events");
    assert_eq!(events.len(), 1, "{next}");
    assert_eq!(events[0]["content"]["secret"], 42);
    assert_eq!(events[0]["sender"], bob.user_id.as_str());
    let changed: Vec<&str> =
        next["extensions"]["e2ee"]["device_lists"]["changed"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(changed.contains(&bob.user_id.as_str()), "{next}");

    // Acknowledged by the next `since`: never delivered again.
    let since = next["extensions"]["to_device"]["next_batch"].as_str().unwrap().to_string();
    let after = sliding(&c, &alice, Some(&pos_of(&next)), 0, &body(Some(&since))).await.ok();
    assert!(after["extensions"]["to_device"]["events"].as_array().unwrap().is_empty(), "{after}");
    let restart = sliding(&c, &alice, None, 0, &body(None)).await.ok();
    assert!(restart["extensions"]["to_device"]["events"].as_array().unwrap().is_empty(), "deleted once delivered: {restart}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_continues_at_another_node() {
    let server = TestServer::start().await;
    let other = Node::start(&server.nats, common::test_config()).await;
    let a = server.client();
    let b = a.at(&other.base);
    let alice = a.register("alice").await;
    let room_id = a.create_room(&alice, json!({ "name": "travelling" })).await;
    a.send_text(&alice, &room_id, "before").await;
    let first = sliding(&a, &alice, None, 0, &all_rooms(9, 5)).await.ok();
    assert_eq!(first["rooms"][&room_id]["initial"], true, "{first}");

    let event_id = a.send_text(&alice, &room_id, "after").await;
    let next = sliding(&b, &alice, Some(&pos_of(&first)), 10_000, &all_rooms(9, 5)).await.ok();
    let room = &next["rooms"][&room_id];
    assert!(room.get("initial").is_none(), "incremental at the second node: {next}");
    assert_eq!(timeline_ids(&next, &room_id), vec![event_id], "{next}");
    // And back at the first node with the second node's position.
    let back = sliding(&a, &alice, Some(&pos_of(&next)), 0, &all_rooms(9, 5)).await.ok();
    assert!(back["rooms"].as_object().unwrap().is_empty(), "{back}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_and_typing_extensions() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let bob = c.register("bob").await;
    let room_id = c.create_room(&alice, json!({ "preset": "public_chat" })).await;
    c.join(&bob, &room_id).await.ok();
    let event_id = c.send_text(&alice, &room_id, "read me").await;
    let mut body = all_rooms(9, 1);
    body["extensions"] = json!({ "receipts": { "enabled": true }, "typing": { "enabled": true } });
    let first = sliding(&c, &alice, None, 0, &body).await.ok();
    assert!(first["extensions"]["receipts"]["rooms"].as_object().unwrap().is_empty(), "{first}");

    c.post(&format!("/rooms/{}/receipt/m.read/{}", enc(&room_id), enc(&event_id)), &bob.token, json!({})).await.ok();
    let next = sliding(&c, &alice, Some(&pos_of(&first)), 10_000, &body).await.ok();
    let receipt = &next["extensions"]["receipts"]["rooms"][&room_id];
    assert_eq!(receipt["type"], "m.receipt", "{next}");
    assert!(receipt["content"][&event_id]["m.read"][&bob.user_id]["ts"].is_u64(), "{next}");

    let typing_path = format!("/rooms/{}/typing/{}", enc(&room_id), enc(&bob.user_id));
    c.put(&typing_path, &bob.token, json!({ "typing": true, "timeout": 20_000 })).await.ok();
    let typing = sliding(&c, &alice, Some(&pos_of(&next)), 10_000, &body).await.ok();
    let typists = &typing["extensions"]["typing"]["rooms"][&room_id]["content"]["user_ids"];
    assert_eq!(typists, &json!([bob.user_id]), "{typing}");
    assert!(typing["extensions"]["receipts"]["rooms"].as_object().unwrap().is_empty(), "no repeat: {typing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_back_in_range_has_no_gap_and_a_retried_pos_is_answered_again() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let mut rooms = Vec::new();
    for name in ["a", "b", "c"] {
        let room_id = c.create_room(&alice, json!({ "name": name })).await;
        c.send_text(&alice, &room_id, &format!("in {name}")).await;
        rooms.push(room_id);
    }
    let (a, b) = (rooms[0].clone(), rooms[1].clone());
    // The range holds c and b; a message in a pushes b out of it.
    let first = sliding(&c, &alice, None, 0, &all_rooms(1, 5)).await.ok();
    assert_eq!(by_bump(&first), vec![rooms[2].clone(), b.clone()], "{first}");
    c.send_text(&alice, &a, "a to the top").await;
    let second = sliding(&c, &alice, Some(&pos_of(&first)), 0, &all_rooms(1, 5)).await.ok();
    assert_eq!(by_bump(&second), vec![a.clone()], "{second}");
    // Out of range, b changes its topic (state does not bump), then a message brings it back:
    // its timeline holds both, from where the connection last showed it.
    let topic =
        c.put(&format!("/rooms/{}/state/m.room.topic/", enc(&b)), &alice.token, json!({ "topic": "meanwhile" })).await.ok();
    let topic_id = topic["event_id"].as_str().unwrap().to_string();
    let third = sliding(&c, &alice, Some(&pos_of(&second)), 0, &all_rooms(1, 5)).await.ok();
    assert!(third["rooms"].get(&b).is_none(), "b is out of range: {third}");
    let message_id = c.send_text(&alice, &b, "b is back").await;
    let fourth = sliding(&c, &alice, Some(&pos_of(&third)), 0, &all_rooms(1, 5)).await.ok();
    assert_eq!(timeline_ids(&fourth, &b), vec![topic_id.clone(), message_id.clone()], "{fourth}");
    assert!(fourth["rooms"][&b].get("initial").is_none(), "{fourth}");

    // The client lost that answer (or cancelled the request, as matrix-rust-sdk does when it
    // changes its room subscriptions) and asks again from the same pos: b comes again from where
    // that pos had it, the same events and not in full (a room sent in full again showed the
    // SDK's timeline an event twice).
    let retried = sliding(&c, &alice, Some(&pos_of(&third)), 0, &all_rooms(1, 5)).await.ok();
    assert_eq!(timeline_ids(&retried, &b), vec![topic_id.clone(), message_id.clone()], "{retried}");
    assert!(retried["rooms"][&b].get("initial").is_none(), "{retried}");
    assert_eq!(retried["rooms"][&b]["limited"], false, "{retried}");
    // And once more from the pos before: b was out of range there too, so the same again.
    let again = sliding(&c, &alice, Some(&pos_of(&second)), 0, &all_rooms(1, 5)).await.ok();
    assert_eq!(timeline_ids(&again, &b), vec![topic_id, message_id.clone()], "{again}");

    // Leaving a room the connection has shown: it comes once more, up to the leave, and the list
    // no longer counts it; then it is gone.
    c.post(&format!("/rooms/{}/leave", enc(&a)), &alice.token, json!({})).await.ok();
    let left = sliding(&c, &alice, Some(&pos_of(&retried)), 0, &all_rooms(1, 5)).await.ok();
    assert_eq!(left["lists"]["all_rooms"]["count"], 2, "{left}");
    let last = left["rooms"][&a]["timeline"].as_array().and_then(|t| t.last().cloned()).unwrap_or_default();
    assert_eq!((last["type"].as_str(), last["content"]["membership"].as_str()), (Some("m.room.member"), Some("leave")), "{left}");
    let after = sliding(&c, &alice, Some(&pos_of(&left)), 0, &all_rooms(1, 5)).await.ok();
    assert!(after["rooms"].get(&a).is_none(), "{after}");
}

/// Lists filtered by room type: `not_room_types` leaves spaces out of a room list (counted and
/// ranged), `room_types` keeps only them, and `null` names rooms without a type; an invite to a
/// space counts as a space.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_filtered_by_room_type() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let bob = c.register("bob").await;
    let space = c.create_room(&alice, json!({ "name": "a space", "creation_content": { "type": "m.space" } })).await;
    let chat = c.create_room(&alice, json!({ "name": "a chat" })).await;
    let other = c.create_room(&bob, json!({ "name": "bob's space", "creation_content": { "type": "m.space" } })).await;
    c.invite(&bob, &other, &alice.user_id).await;
    let list = |filters: Value| {
        json!({
            "conn_id": "types",
            "lists": { "rooms": { "ranges": [[0, 9]], "timeline_limit": 1, "filters": filters } },
        })
    };
    let names = |response: &Value| {
        let mut ids: Vec<String> = response["rooms"].as_object().unwrap().keys().cloned().collect();
        ids.sort();
        ids
    };
    let sorted = |mut ids: Vec<String>| {
        ids.sort();
        ids
    };
    let no_spaces = sliding(&c, &alice, None, 0, &list(json!({ "not_room_types": ["m.space"] }))).await.ok();
    assert_eq!(no_spaces["lists"]["rooms"]["count"], 1, "{no_spaces}");
    assert_eq!(names(&no_spaces), vec![chat.clone()]);
    let spaces = sliding(&c, &alice, None, 0, &list(json!({ "room_types": ["m.space"] }))).await.ok();
    assert_eq!(spaces["lists"]["rooms"]["count"], 2, "{spaces}");
    assert_eq!(names(&spaces), sorted(vec![space.clone(), other.clone()]));
    let untyped = sliding(&c, &alice, None, 0, &list(json!({ "room_types": [null] }))).await.ok();
    assert_eq!(untyped["lists"]["rooms"]["count"], 1, "{untyped}");
    assert_eq!(names(&untyped), vec![chat.clone()]);
    let space_invites = sliding(&c, &alice, None, 0, &list(json!({ "room_types": ["m.space"], "is_invite": true }))).await.ok();
    assert_eq!(space_invites["lists"]["rooms"]["count"], 1, "{space_invites}");
    assert_eq!(names(&space_invites), vec![other.clone()]);
    let everything = sliding(&c, &alice, None, 0, &list(json!({}))).await.ok();
    assert_eq!(everything["lists"]["rooms"]["count"], 3, "{everything}");
    // Joining the space keeps it a space; leaving takes it out of every list.
    c.join(&alice, &other).await.ok();
    let joined = sliding(&c, &alice, None, 0, &list(json!({ "not_room_types": ["m.space"] }))).await.ok();
    assert_eq!(joined["lists"]["rooms"]["count"], 1, "{joined}");
    let too_many: Vec<Value> = (0..51).map(|i| json!(format!("t{i}"))).collect();
    sliding(&c, &alice, None, 0, &list(json!({ "not_room_types": too_many }))).await.expect_err(400, "M_INVALID_PARAM");
}
