//! The client surface of issue 13: input that must be refused, presence, server-side key backup.
//! Every test runs against a real nats-server; bad input must get a Matrix error, never a 5xx.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

// ---- input that must be refused ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_to_device_refuses_strings_that_are_not_user_ids() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let bob = c.register("bob").await;
    let bob_since = c.sync(&bob, None, 0).await["next_batch"].as_str().unwrap().to_string();

    for bad in ["not-a-user-id", "@nul\u{0}id:test.local", "@:test.local", ""] {
        // A valid target beside the bad one: nothing of the request is stored.
        let body = json!({ "messages": {
            bob.user_id.clone(): { bob.device_id.clone(): { "n": 1 } },
            bad: { "DEVICE": { "n": 1 } },
        } });
        c.put(&format!("/sendToDevice/m.x/{}", txn()), &alice.token, body).await.expect_err(400, "M_INVALID_PARAM");
    }
    // Device messages must be objects.
    let body = json!({ "messages": { bob.user_id.clone(): { bob.device_id.clone(): 5 } } });
    c.put(&format!("/sendToDevice/m.x/{}", txn()), &alice.token, body).await.expect_err(400, "M_BAD_JSON");

    // Well-formed ids without an account here (or on another server) are skipped, as are
    // devices that do not exist.
    let body = json!({ "messages": {
        "@nobody_here:test.local": { "DEV": { "n": 2 } },
        "@someone:elsewhere.example": { "*": { "n": 2 } },
        bob.user_id.clone(): { "NO_SUCH_DEVICE": { "n": 2 }, bob.device_id.clone(): { "n": 3 } },
    } });
    c.put(&format!("/sendToDevice/m.x/{}", txn()), &alice.token, body).await.ok();

    let (_, seen) = c
        .sync_until(&bob, Some(&bob_since), Duration::from_secs(10), |s| !s["to_device"]["events"].as_array().unwrap().is_empty())
        .await;
    let events: Vec<&Value> = seen.iter().flat_map(|s| s["to_device"]["events"].as_array().unwrap()).collect();
    assert_eq!(events.len(), 1, "only the message to bob's real device: {events:#?}");
    assert_eq!(events[0]["content"]["n"], 3);

    // None of those strings became a user anyone can find.
    let room = c.create_room(&alice, json!({ "preset": "public_chat" })).await;
    c.join(&bob, &room).await.ok();
    for term in ["not-a-user", "nobody_here", "someone", "nul"] {
        let found = c.post("/user_directory/search", &alice.token, json!({ "search_term": term })).await.ok();
        assert_eq!(found["results"], json!([]), "{term}: {found}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_upload_refuses_one_time_keys_that_are_not_key_objects() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let bob = c.register("bob").await;
    let bad_bodies = [
        json!({ "one_time_keys": { "signed_curve25519:AAAAAQ": 5 } }),
        json!({ "one_time_keys": { "signed_curve25519:AAAAAQ": [] } }),
        json!({ "one_time_keys": { "signed_curve25519:AAAAAQ": { "signatures": {} } } }),
        json!({ "one_time_keys": { "signed_curve25519:AAAAAQ": { "key": 7 } } }),
        json!({ "one_time_keys": { "signed_curve25519:AAAAAQ": { "key": "k", "signatures": "x" } } }),
        json!({ "one_time_keys": { "no_colon": { "key": "k" } } }),
        json!({ "fallback_keys": { "signed_curve25519:AAAAAQ": null } }),
        json!({ "one_time_keys": 5 }),
        json!({ "device_keys": [1] }),
    ];
    for body in bad_bodies {
        let response = c.post("/keys/upload", &alice.token, body.clone()).await;
        assert_eq!(response.status, 400, "{body}: {}", response.body);
        assert_eq!(response.errcode(), "M_BAD_JSON", "{body}: {}", response.body);
    }
    // Nothing of them was stored: there is nothing to claim.
    let claim = json!({ "one_time_keys": { alice.user_id.clone(): { alice.device_id.clone(): "signed_curve25519" } } });
    let claimed = c.post("/keys/claim", &bob.token, claim.clone()).await.ok();
    assert_eq!(claimed["one_time_keys"][&alice.user_id], json!({}), "{claimed}");

    // Well-formed keys (signed objects, and unsigned strings) are taken and handed out.
    let good = json!({ "one_time_keys": {
        "signed_curve25519:AAAAAQ": { "key": "abc", "signatures": { alice.user_id.clone(): { "ed25519:X": "sig" } } },
        "curve25519:AAAAAg": "def",
    } });
    let counts = c.post("/keys/upload", &alice.token, good).await.ok();
    assert_eq!(counts["one_time_key_counts"]["signed_curve25519"], 1, "{counts}");
    let claimed = c.post("/keys/claim", &bob.token, claim).await.ok();
    assert_eq!(claimed["one_time_keys"][&alice.user_id][&alice.device_id]["signed_curve25519:AAAAAQ"]["key"], "abc");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushers_set_refuses_wrongly_typed_fields() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let good = json!({
        "pushkey": "pk", "kind": "http", "app_id": "org.example", "app_display_name": "Example",
        "device_display_name": "Phone", "lang": "en", "data": { "url": "https://push.example.org/_matrix/push/v1/notify" },
    });
    let with = |field: &str, value: Value| {
        let mut body = good.clone();
        body[field] = value;
        body
    };
    let without = |field: &str| {
        let mut body = good.clone();
        body.as_object_mut().unwrap().remove(field);
        body
    };
    let cases = [
        (with("kind", json!(7)), "M_BAD_JSON"),
        (with("data", json!(1)), "M_BAD_JSON"),
        (with("data", json!({ "url": 5 })), "M_BAD_JSON"),
        (with("data", json!({ "format": [] })), "M_BAD_JSON"),
        (with("data", json!({})), "M_MISSING_PARAM"),
        (with("pushkey", json!(1)), "M_BAD_JSON"),
        (with("app_id", json!({})), "M_BAD_JSON"),
        (with("lang", json!(null)), "M_BAD_JSON"),
        (with("app_display_name", json!(false)), "M_BAD_JSON"),
        (with("device_display_name", json!(3.5)), "M_BAD_JSON"),
        (with("profile_tag", json!(1)), "M_BAD_JSON"),
        (with("append", json!("yes")), "M_BAD_JSON"),
        (without("kind"), "M_MISSING_PARAM"),
        (without("data"), "M_MISSING_PARAM"),
        (without("lang"), "M_MISSING_PARAM"),
        (json!([1, 2]), "M_BAD_JSON"),
    ];
    for (body, errcode) in cases {
        let response = c.post("/pushers/set", &alice.token, body.clone()).await;
        assert_eq!((response.status, response.errcode()), (400, errcode), "{body}: {}", response.body);
    }
    assert_eq!(c.get("/pushers", &alice.token).await.ok()["pushers"], json!([]));
    c.post("/pushers/set", &alice.token, good).await.ok();
    let pushers = c.get("/pushers", &alice.token).await.ok();
    assert_eq!(pushers["pushers"][0]["kind"], "http", "{pushers}");
    // A deletion needs only the ids.
    c.post("/pushers/set", &alice.token, json!({ "pushkey": "pk", "app_id": "org.example", "kind": null })).await.ok();
    assert_eq!(c.get("/pushers", &alice.token).await.ok()["pushers"], json!([]));
}

/// Reads from `stream` until the server closes it (true) or `limit` passes (false); returns what
/// was read as text too.
fn read_until_closed(stream: &mut std::net::TcpStream, limit: Duration) -> (bool, String) {
    stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let end = std::time::Instant::now() + limit;
    let mut text = Vec::new();
    let mut buffer = [0u8; 4096];
    while std::time::Instant::now() < end {
        match stream.read(&mut buffer) {
            Ok(0) => return (true, String::from_utf8_lossy(&text).into_owned()),
            Ok(n) => text.extend_from_slice(&buffer[..n]),
            Err(error) if matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return (true, String::from_utf8_lossy(&text).into_owned()),
        }
    }
    (false, String::from_utf8_lossy(&text).into_owned())
}

fn address(node: &Node) -> String {
    node.base.trim_start_matches("http://").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_stalled_bodies_lose_their_connection() {
    let mut config = test_config();
    config.limits.header_read_timeout_ms = 500;
    config.limits.body_read_timeout_ms = 500;
    let server = TestServer::with_config(config).await;
    let addr = address(&server.node);
    let (headers_closed, bodies) = tokio::task::spawn_blocking(move || {
        // Headers trickling in: closed once the header timeout passes.
        let mut trickle = std::net::TcpStream::connect(&addr).unwrap();
        trickle.write_all(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n").unwrap();
        let (headers_closed, _) = read_until_closed(&mut trickle, Duration::from_secs(5));
        // A body declared large that never comes, on a JSON endpoint and on media upload.
        let mut bodies = Vec::new();
        for (path, length) in [("/_matrix/client/v3/login", 1000), ("/_matrix/media/v3/upload", 1_000_000_000u64)] {
            let mut stalled = std::net::TcpStream::connect(&addr).unwrap();
            let request = format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n{{}}"
            );
            stalled.write_all(request.as_bytes()).unwrap();
            bodies.push(read_until_closed(&mut stalled, Duration::from_secs(5)));
        }
        (headers_closed, bodies)
    })
    .await
    .unwrap();
    assert!(headers_closed, "a connection trickling its headers stays open");
    // The JSON endpoint reads the body: 408. (Media upload without a token is refused before its
    // body is read; what matters is that the connection does not stay open.)
    assert!(bodies[0].0, "a stalled JSON body keeps its connection");
    assert!(bodies[0].1.starts_with("HTTP/1.1 408"), "{}", bodies[0].1);
    assert!(bodies[1].0, "a stalled upload keeps its connection: {}", bodies[1].1);
    // The node still serves.
    let c = server.client();
    c.register("after").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holds_a_bounded_number_of_connections() {
    let mut config = test_config();
    config.rate_limits.enabled = true;
    config.rate_limits.per_ip_per_s = 10_000.0;
    config.rate_limits.per_ip_burst = 10_000.0;
    config.rate_limits.connections_per_ip = 3;
    let server = TestServer::with_config(config).await;
    let addr = address(&server.node);
    let fourth_closed = tokio::task::spawn_blocking(move || {
        // Three connections, each answered once (so the node has surely accepted it), kept open.
        // The readiness probe's own connection may still count for a moment after the probe
        // dropped it: a connection refused meanwhile is tried again, within a deadline.
        let answered = |addr: &str| -> Option<std::net::TcpStream> {
            let mut stream = std::net::TcpStream::connect(addr).ok()?;
            stream.write_all(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
            stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
            let mut answer = Vec::new();
            let mut buffer = [0u8; 4096];
            while !String::from_utf8_lossy(&answer).contains("versions") {
                let n = stream.read(&mut buffer).ok()?;
                if n == 0 {
                    return None;
                }
                answer.extend_from_slice(&buffer[..n]);
            }
            Some(stream)
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut held: Vec<std::net::TcpStream> = Vec::new();
        while held.len() < 3 {
            match answered(&addr) {
                Some(stream) => held.push(stream),
                None => {
                    assert!(std::time::Instant::now() < deadline, "three connections from one address were not all served");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        let mut fourth = std::net::TcpStream::connect(&addr).unwrap();
        let _ = fourth.write_all(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n\r\n");
        let (closed, text) = read_until_closed(&mut fourth, Duration::from_secs(5));
        drop(held);
        (closed, text)
    })
    .await
    .unwrap();
    assert!(fourth_closed.0 && fourth_closed.1.is_empty(), "a fourth connection from one address was served: {fourth_closed:?}");
    // Once the three are gone, the address is served again.
    let http = reqwest::Client::new();
    let base = server.node.base.clone();
    eventually(Duration::from_secs(10), "the address is served again", || {
        let http = http.clone();
        let base = base.clone();
        async move {
            let response = http.get(format!("{base}/_matrix/client/versions")).send().await.ok()?;
            (response.status() == 200).then_some(())
        }
    })
    .await;
}

// ---- presence ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_stored_for_oneself_and_read_at_every_node() {
    let nats = Nats::start().await;
    let node_a = Node::start(&nats, test_config()).await;
    let node_b = Node::start(&nats, test_config()).await;
    let (a, b) = (node_a.client(), node_b.client());
    let alice = a.register("alice").await;
    let bob = a.register("bob").await;
    let carol = a.register("carol").await;
    let room = a.create_room(&alice, json!({ "preset": "public_chat" })).await;
    a.join(&bob, &room).await.ok();

    let path = |user: &User| format!("/presence/{}/status", enc(&user.user_id));
    // Someone else's presence cannot be set.
    a.put(&path(&bob), &alice.token, json!({ "presence": "online" })).await.expect_err(403, "M_FORBIDDEN");
    a.put(&path(&alice), &alice.token, json!({ "presence": "busy" })).await.expect_err(400, "M_INVALID_PARAM");
    a.put(&path(&alice), &alice.token, json!({ "status_msg": "x" })).await.expect_err(400, "M_MISSING_PARAM");
    a.put(&path(&alice), &alice.token, json!({ "presence": 5 })).await.expect_err(400, "M_BAD_JSON");

    a.put(&path(&alice), &alice.token, json!({ "presence": "unavailable", "status_msg": "lunch" })).await.ok();
    // Read through the other node, by a user sharing a room.
    let seen = b.get(&path(&alice), &bob.token).await.ok();
    assert_eq!(seen["presence"], "unavailable", "{seen}");
    assert_eq!(seen["status_msg"], "lunch");
    assert!(seen["last_active_ago"].as_u64().is_some_and(|ago| ago < 60_000), "{seen}");
    assert_eq!(seen["currently_active"], false);
    // A stranger may not look.
    b.get(&path(&alice), &carol.token).await.expect_err(403, "M_FORBIDDEN");
    // Never set: offline.
    assert_eq!(b.get(&path(&bob), &bob.token).await.ok()["presence"], "offline");
}

/// Needs `api/sync.rs` to call `presence::sync_events` (see the surface report to the lead).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_reaches_room_members_in_sync() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let bob = c.register("bob").await;
    let carol = c.register("carol").await;
    let room = c.create_room(&alice, json!({ "preset": "public_chat" })).await;
    c.join(&bob, &room).await.ok();
    let bob_since = c.sync(&bob, None, 0).await["next_batch"].as_str().unwrap().to_string();
    let carol_since = c.sync(&carol, None, 0).await["next_batch"].as_str().unwrap().to_string();
    let path = format!("/presence/{}/status", enc(&alice.user_id));
    c.put(&path, &alice.token, json!({ "presence": "online", "status_msg": "here" })).await.ok();
    let presence_of = |s: &Value, user: &str| {
        s["presence"]["events"].as_array().unwrap().iter().find(|e| e["sender"] == user).cloned()
    };
    let (_, seen) = c
        .sync_until(&bob, Some(&bob_since), Duration::from_secs(10), |s| presence_of(s, &alice.user_id).is_some())
        .await;
    let event = presence_of(seen.last().unwrap(), &alice.user_id).unwrap();
    assert_eq!(event["type"], "m.presence");
    assert_eq!(event["content"]["status_msg"], "here");
    // Carol shares no room with alice.
    let carol_sync = c.sync(&carol, Some(&carol_since), 0).await;
    assert!(presence_of(&carol_sync, &alice.user_id).is_none(), "{carol_sync}");
}

// ---- server-side key backup ----

fn backup_key(index: u64, forwarded: u64, verified: bool, marker: &str) -> Value {
    json!({
        "first_message_index": index, "forwarded_count": forwarded, "is_verified": verified,
        "session_data": { "ephemeral": "eph", "ciphertext": marker, "mac": "mac" },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_backup_versions_and_keys_across_nodes() {
    let nats = Nats::start().await;
    let node_a = Node::start(&nats, test_config()).await;
    let node_b = Node::start(&nats, test_config()).await;
    let (a, b) = (node_a.client(), node_b.client());
    let alice = a.register("alice").await;
    let bob = a.register("bob").await;
    let algorithm = "m.megolm_backup.v1.curve25519-aes-sha2";

    // No backup yet.
    a.get("/room_keys/version", &alice.token).await.expect_err(404, "M_NOT_FOUND");
    a.get("/room_keys/version/1", &alice.token).await.expect_err(404, "M_NOT_FOUND");
    a.get("/room_keys/keys?version=1", &alice.token).await.expect_err(404, "M_NOT_FOUND");
    a.put("/room_keys/keys?version=1", &alice.token, json!({ "rooms": {} })).await.expect_err(404, "M_NOT_FOUND");
    a.post("/room_keys/version", &alice.token, json!({ "algorithm": algorithm })).await.expect_err(400, "M_MISSING_PARAM");
    a.post("/room_keys/version", &alice.token, json!({ "algorithm": 1, "auth_data": {} })).await.expect_err(400, "M_BAD_JSON");

    // Create through A, read through B.
    let created = a.post("/room_keys/version", &alice.token, json!({ "algorithm": algorithm, "auth_data": { "public_key": "pk1" } })).await.ok();
    let v1 = created["version"].as_str().unwrap().to_string();
    let latest = b.get("/room_keys/version", &alice.token).await.ok();
    assert_eq!((latest["version"].as_str(), latest["algorithm"].as_str(), latest["count"].as_u64()), (Some(v1.as_str()), Some(algorithm), Some(0)), "{latest}");
    assert_eq!(latest["auth_data"]["public_key"], "pk1");
    let empty_etag = latest["etag"].as_str().unwrap().to_string();
    // Bob sees none of it.
    b.get("/room_keys/version", &bob.token).await.expect_err(404, "M_NOT_FOUND");

    // Update: the algorithm cannot change, the version must match.
    b.put(&format!("/room_keys/version/{v1}"), &alice.token, json!({ "algorithm": algorithm, "auth_data": { "public_key": "pk1", "signatures": {} }, "version": v1 })).await.ok();
    b.put(&format!("/room_keys/version/{v1}"), &alice.token, json!({ "algorithm": "other", "auth_data": {} })).await.expect_err(400, "M_INVALID_PARAM");
    b.put(&format!("/room_keys/version/{v1}"), &alice.token, json!({ "algorithm": algorithm, "auth_data": {}, "version": "99" })).await.expect_err(400, "M_INVALID_PARAM");
    b.put("/room_keys/version/99", &alice.token, json!({ "algorithm": algorithm, "auth_data": {} })).await.expect_err(404, "M_NOT_FOUND");
    assert!(a.get(&format!("/room_keys/version/{v1}"), &alice.token).await.ok()["auth_data"]["signatures"].is_object());

    // Keys: all rooms, one room, one session.
    let room1 = "!room1:test.local";
    let room2 = "!room2:test.local";
    let put_all = json!({ "rooms": {
        room1: { "sessions": { "s1": backup_key(5, 0, false, "c1"), "s2": backup_key(0, 0, false, "c2") } },
        room2: { "sessions": { "s3": backup_key(0, 0, true, "c3") } },
    } });
    let stored = a.put(&format!("/room_keys/keys?version={v1}"), &alice.token, put_all).await.ok();
    assert_eq!(stored["count"], 3, "{stored}");
    assert_ne!(stored["etag"].as_str().unwrap(), empty_etag);
    let stored = b.put(&format!("/room_keys/keys/{}?version={v1}", enc(room2)), &alice.token, json!({ "sessions": { "s4": backup_key(0, 0, false, "c4") } })).await.ok();
    assert_eq!(stored["count"], 4);
    // A worse key does not replace a better one; a better one does.
    let session = |room: &str, s: &str| format!("/room_keys/keys/{}/{s}?version={v1}", enc(room));
    let before = a.put(&session(room1, "s1"), &alice.token, backup_key(9, 0, false, "worse")).await.ok();
    assert_eq!(before["count"], 4);
    assert_eq!(b.get(&session(room1, "s1"), &alice.token).await.ok()["session_data"]["ciphertext"], "c1");
    a.put(&session(room1, "s1"), &alice.token, backup_key(1, 0, false, "better")).await.ok();
    let s1 = b.get(&session(room1, "s1"), &alice.token).await.ok();
    assert_eq!((s1["session_data"]["ciphertext"].as_str(), s1["first_message_index"].as_u64()), (Some("better"), Some(1)), "{s1}");
    a.put(&session(room2, "s3"), &alice.token, backup_key(0, 0, false, "unverified")).await.ok();
    assert_eq!(a.get(&session(room2, "s3"), &alice.token).await.ok()["session_data"]["ciphertext"], "c3");

    let all = b.get(&format!("/room_keys/keys?version={v1}"), &alice.token).await.ok();
    assert_eq!(all["rooms"][room1]["sessions"].as_object().unwrap().len(), 2, "{all}");
    assert_eq!(all["rooms"][room2]["sessions"].as_object().unwrap().len(), 2, "{all}");
    let one_room = a.get(&format!("/room_keys/keys/{}?version={v1}", enc(room2)), &alice.token).await.ok();
    assert_eq!(one_room["sessions"]["s4"]["session_data"]["ciphertext"], "c4", "{one_room}");
    let no_room = a.get(&format!("/room_keys/keys/{}?version={v1}", enc("!none:test.local")), &alice.token).await.ok();
    assert_eq!(no_room, json!({ "sessions": {} }));
    a.get(&session(room1, "nope"), &alice.token).await.expect_err(404, "M_NOT_FOUND");

    // Bad input.
    a.put(&session(room1, "s9"), &alice.token, json!({ "first_message_index": "0" })).await.expect_err(400, "M_BAD_JSON");
    a.put(&format!("/room_keys/keys?version={v1}"), &alice.token, json!({ "rooms": { "not-a-room": { "sessions": {} } } })).await.expect_err(400, "M_INVALID_PARAM");
    a.put(&format!("/room_keys/keys?version={v1}"), &alice.token, json!({ "rooms": { room1: { "sessions": 5 } } })).await.expect_err(400, "M_BAD_JSON");
    a.put("/room_keys/keys", &alice.token, json!({ "rooms": {} })).await.expect_err(400, "M_MISSING_PARAM");

    // Deletes answer the new count and etag.
    let after = b.delete(&session(room1, "s2"), &alice.token).await.ok();
    assert_eq!(after["count"], 3, "{after}");
    let after = a.delete(&format!("/room_keys/keys/{}?version={v1}", enc(room2)), &alice.token).await.ok();
    assert_eq!(after["count"], 1, "{after}");
    assert_eq!(a.get("/room_keys/version", &alice.token).await.ok()["count"], 1);

    // A new version becomes current: writes to the old one are refused with the current version.
    let v2 = b.post("/room_keys/version", &alice.token, json!({ "algorithm": algorithm, "auth_data": { "public_key": "pk2" } })).await.ok()["version"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(v1, v2);
    let wrong = a.put(&session(room1, "s1"), &alice.token, backup_key(0, 0, true, "x")).await;
    wrong.expect_err(403, "M_WRONG_ROOM_KEYS_VERSION");
    assert_eq!(wrong.body["current_version"], v2.as_str());
    assert_eq!(a.get("/room_keys/version", &alice.token).await.ok()["version"], v2.as_str());
    // The old version is still readable until deleted.
    assert_eq!(a.get(&format!("/room_keys/keys?version={v1}"), &alice.token).await.ok()["rooms"][room1]["sessions"]["s1"]["first_message_index"], 1);
    let cleared = a.delete(&format!("/room_keys/keys?version={v1}"), &alice.token).await.ok();
    assert_eq!(cleared["count"], 0, "{cleared}");

    // Deleting a version: gone for reads, and the previous one is current again.
    b.delete(&format!("/room_keys/version/{v2}"), &alice.token).await.ok();
    a.get(&format!("/room_keys/version/{v2}"), &alice.token).await.expect_err(404, "M_NOT_FOUND");
    a.delete(&format!("/room_keys/version/{v2}"), &alice.token).await.expect_err(404, "M_NOT_FOUND");
    assert_eq!(a.get("/room_keys/version", &alice.token).await.ok()["version"], v1.as_str());
    b.delete(&format!("/room_keys/version/{v1}"), &alice.token).await.ok();
    a.get("/room_keys/version", &alice.token).await.expect_err(404, "M_NOT_FOUND");
    // Version numbers are not reused.
    let v3 = a.post("/room_keys/version", &alice.token, json!({ "algorithm": algorithm, "auth_data": {} })).await.ok()["version"].as_str().unwrap().to_string();
    assert!(v3 != v1 && v3 != v2, "{v3}");
    assert_eq!(a.get(&format!("/room_keys/keys?version={v3}"), &alice.token).await.ok(), json!({ "rooms": {} }));
}
