//! The admin API's moderation endpoints on Synapse's paths: registration tokens (and registering
//! with them, across nodes), blocking and deleting rooms (applied by every node through the log),
//! media (a user's uploads, quarantine, deletion). Only administrators may use any of them.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

fn admin_config() -> haetae_server::ServerConfig {
    let mut config = test_config();
    config.admins = vec!["boss".into()];
    config
}

/// Every endpoint refuses a user who is not an administrator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_administrators_moderate() {
    let server = TestServer::with_config(admin_config()).await;
    let c = server.client();
    let bob = c.register_named("bob", "bob's password").await;
    let room = enc("!room:test.local");
    let endpoints: Vec<(Method, String)> = vec![
        (Method::GET, "/_synapse/admin/v1/registration_tokens".into()),
        (Method::POST, "/_synapse/admin/v1/registration_tokens/new".into()),
        (Method::GET, "/_synapse/admin/v1/registration_tokens/abc".into()),
        (Method::PUT, "/_synapse/admin/v1/registration_tokens/abc".into()),
        (Method::DELETE, "/_synapse/admin/v1/registration_tokens/abc".into()),
        (Method::GET, format!("/_synapse/admin/v1/rooms/{room}/block")),
        (Method::PUT, format!("/_synapse/admin/v1/rooms/{room}/block")),
        (Method::DELETE, format!("/_synapse/admin/v1/rooms/{room}")),
        (Method::DELETE, format!("/_synapse/admin/v2/rooms/{room}")),
        (Method::GET, format!("/_synapse/admin/v2/rooms/{room}/delete_status")),
        (Method::GET, "/_synapse/admin/v2/rooms/delete_status/abc".into()),
        (Method::GET, format!("/_synapse/admin/v1/users/{}/media", enc(&bob.user_id))),
        (Method::POST, "/_synapse/admin/v1/media/quarantine/test.local/abc".into()),
        (Method::POST, "/_synapse/admin/v1/media/unquarantine/test.local/abc".into()),
        (Method::DELETE, "/_synapse/admin/v1/media/test.local/abc".into()),
    ];
    let body = json!({ "block": true });
    for (method, path) in endpoints {
        let answer = c.request(method.clone(), &path, Some(&bob.token), Some(&body)).await;
        assert_eq!((answer.status, answer.errcode()), (403, "M_FORBIDDEN"), "{method} {path}: {:?}", answer.body);
    }
}

async fn register_with_token(c: &Client, localpart: &str, token: &str) -> Resp {
    let body = json!({
        "username": localpart,
        "password": "a long password",
        "auth": { "type": "m.login.registration_token", "token": token },
    });
    c.request(Method::POST, "/register", None, Some(&body)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_tokens_are_managed_and_gate_registration_on_every_node() {
    let server = TestServer::with_config(admin_config()).await;
    let c = server.client();
    let boss = c.register_named("boss", "a long password").await;
    let tokens = "/_synapse/admin/v1/registration_tokens";

    // Made with defaults, with a name of our own, twice the same name.
    let made = c.post(&format!("{tokens}/new"), &boss.token, json!({})).await.ok();
    assert_eq!(made["token"].as_str().unwrap().len(), 16, "{made}");
    assert_eq!((made["uses_allowed"].clone(), made["pending"].clone(), made["completed"].clone()), (Value::Null, json!(0), json!(0)));
    let once = c.post(&format!("{tokens}/new"), &boss.token, json!({ "token": "once", "uses_allowed": 1 })).await.ok();
    assert_eq!(once["uses_allowed"], 1);
    c.post(&format!("{tokens}/new"), &boss.token, json!({ "token": "once" })).await.expect_err(400, "M_INVALID_PARAM");
    c.post(&format!("{tokens}/new"), &boss.token, json!({ "token": "no spaces" })).await.expect_err(400, "M_INVALID_PARAM");
    c.post(&format!("{tokens}/new"), &boss.token, json!({ "uses_allowed": -1 })).await.expect_err(400, "M_INVALID_PARAM");
    c.post(&format!("{tokens}/new"), &boss.token, json!({ "expiry_time": 1000 })).await.expect_err(400, "M_INVALID_PARAM");
    c.post(&format!("{tokens}/new"), &boss.token, json!({ "length": 65 })).await.expect_err(400, "M_INVALID_PARAM");
    let short = c.post(&format!("{tokens}/new"), &boss.token, json!({ "length": 5 })).await.ok();
    assert_eq!(short["token"].as_str().unwrap().len(), 5);

    // Changed, listed by validity, shown, deleted.
    let spent = c.post(&format!("{tokens}/new"), &boss.token, json!({ "token": "spent" })).await.ok();
    assert_eq!(spent["uses_allowed"], Value::Null);
    let changed = c.put(&format!("{tokens}/spent"), &boss.token, json!({ "uses_allowed": 0 })).await.ok();
    assert_eq!(changed["uses_allowed"], 0);
    c.put(&format!("{tokens}/nope"), &boss.token, json!({ "uses_allowed": 0 })).await.expect_err(404, "M_NOT_FOUND");
    let names = |listing: &Value| -> Vec<String> {
        listing["registration_tokens"].as_array().unwrap().iter().map(|t| t["token"].as_str().unwrap().to_string()).collect()
    };
    let all = names(&c.get(tokens, &boss.token).await.ok());
    assert_eq!(all.len(), 4, "{all:?}");
    let valid = names(&c.get(&format!("{tokens}?valid=true"), &boss.token).await.ok());
    assert!(valid.contains(&"once".to_string()) && !valid.contains(&"spent".to_string()), "{valid:?}");
    assert_eq!(names(&c.get(&format!("{tokens}?valid=false"), &boss.token).await.ok()), vec!["spent".to_string()]);
    c.get(&format!("{tokens}?valid=maybe"), &boss.token).await.expect_err(400, "M_INVALID_PARAM");
    c.delete(&format!("{tokens}/spent"), &boss.token).await.ok();
    c.get(&format!("{tokens}/spent"), &boss.token).await.expect_err(404, "M_NOT_FOUND");
    c.delete(&format!("{tokens}/spent"), &boss.token).await.expect_err(404, "M_NOT_FOUND");

    // Two more nodes on the same engine that require a token to register.
    let mut gated = admin_config();
    gated.registration.requires_token = true;
    let (second, third) = (Node::start(&server.nats, gated.clone()).await, Node::start(&server.nats, gated).await);
    let (c2, c3) = (second.client(), third.client());
    let first_step = c2.register_start("carol", "a long password").await;
    assert_eq!(first_step.status, 401);
    assert_eq!(first_step.body["flows"][0]["stages"], json!(["m.login.registration_token"]), "{:?}", first_step.body);
    let validity = |token: &str| format!("/_matrix/client/v1/register/m.login.registration_token/validity?token={token}");
    let valid_at = |c: &Client, token: &str| {
        let (c, path) = (c.clone(), validity(token));
        async move { c.request(Method::GET, &path, None, None).await.ok()["valid"].clone() }
    };
    assert_eq!(valid_at(&c2, "once").await, true);
    assert_eq!(valid_at(&c2, "unknown").await, false);
    let refused = register_with_token(&c2, "carol", "unknown").await;
    assert_eq!((refused.status, refused.errcode()), (401, "M_FORBIDDEN"), "{:?}", refused.body);

    // The single-use token, spent from two nodes at once: exactly one registration gets it.
    let (at_second, at_third) = tokio::join!(register_with_token(&c2, "carol", "once"), register_with_token(&c3, "dave", "once"));
    let statuses = [at_second.status, at_third.status];
    assert!(statuses.contains(&200) && statuses.contains(&401), "one of two registrations with a single-use token: {statuses:?}");
    let used = c.get(&format!("{tokens}/once"), &boss.token).await.ok();
    assert_eq!((used["pending"].clone(), used["completed"].clone()), (json!(0), json!(1)), "{used}");
    assert_eq!(valid_at(&c3, "once").await, false);
    let again = register_with_token(&c3, "erin", "once").await;
    assert_eq!(again.status, 401, "a spent token registers nobody: {:?}", again.body);

    // A registration that fails (the name is taken) gives its use back.
    c.post(&format!("{tokens}/new"), &boss.token, json!({ "token": "twice", "uses_allowed": 2 })).await.ok();
    let taken = register_with_token(&c2, "boss", "twice").await;
    assert_eq!((taken.status, taken.errcode()), (400, "M_USER_IN_USE"), "{:?}", taken.body);
    let twice = c.get(&format!("{tokens}/twice"), &boss.token).await.ok();
    assert_eq!((twice["pending"].clone(), twice["completed"].clone()), (json!(0), json!(0)), "{twice}");
    register_with_token(&c3, "frank", "twice").await.ok();
}

fn joined(c: &Client, user: &User) -> impl std::future::Future<Output = Vec<String>> {
    let (c, token) = (c.clone(), user.token.clone());
    async move {
        let answer = c.get("/joined_rooms", &token).await.ok();
        answer["joined_rooms"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_room_refuses_joins_and_a_deleted_room_is_purged_on_every_node() {
    let server = TestServer::with_config(admin_config()).await;
    let c = server.client();
    let boss = c.register_named("boss", "a long password").await;
    let bob = c.register_named("bob", "bob's password").await;
    let carol = c.register_named("carol", "carol's password").await;
    let dave = c.register_named("dave", "dave's password").await;
    let room_id = c.create_room(&bob, json!({ "preset": "public_chat", "name": "Trouble", "room_alias_name": "trouble" })).await;
    c.send_text(&bob, &room_id, "hello").await;
    c.join(&carol, &room_id).await.ok();
    let other = Node::start(&server.nats, admin_config()).await;
    let c2 = other.client();

    // Block: nobody joins, at either node; shown in the room list; lifted again.
    let block = format!("/_synapse/admin/v1/rooms/{}/block", enc(&room_id));
    assert_eq!(c.get(&block, &boss.token).await.ok(), json!({ "block": false }));
    assert_eq!(c.put(&block, &boss.token, json!({ "block": true })).await.ok(), json!({ "block": true }));
    assert_eq!(c2.get(&block, &boss.token).await.ok(), json!({ "block": true, "user_id": boss.user_id }));
    c.join(&dave, &room_id).await.expect_err(403, "M_FORBIDDEN");
    c2.join(&dave, &room_id).await.expect_err(403, "M_FORBIDDEN");
    let shown = c.get(&format!("/_synapse/admin/v1/rooms/{}", enc(&room_id)), &boss.token).await.ok();
    assert_eq!(shown["blocked"], true);
    c.put(&block, &boss.token, json!({ "block": false })).await.ok();
    c2.join(&dave, &room_id).await.ok();
    c.put(&block, &boss.token, json!({})).await.expect_err(400, "M_MISSING_PARAM");
    c.get("/_synapse/admin/v1/rooms/not-a-room/block", &boss.token).await.expect_err(400, "M_INVALID_PARAM");

    // Delete (v2) with block, purge and a new room for the members.
    let deleted = c
        .request(
            Method::DELETE,
            &format!("/_synapse/admin/v2/rooms/{}", enc(&room_id)),
            Some(&boss.token),
            Some(&json!({ "block": true, "purge": true, "new_room_user_id": boss.user_id, "message": "This room broke the rules." })),
        )
        .await
        .ok();
    let delete_id = deleted["delete_id"].as_str().expect("a delete id").to_string();
    let status = c2.get(&format!("/_synapse/admin/v2/rooms/delete_status/{delete_id}"), &boss.token).await.ok();
    assert_eq!(status["status"], "complete", "{status}");
    let mut kicked: Vec<String> =
        status["shutdown_room"]["kicked_users"].as_array().unwrap().iter().map(|u| u.as_str().unwrap().to_string()).collect();
    kicked.sort();
    assert_eq!(kicked, vec![bob.user_id.clone(), carol.user_id.clone(), dave.user_id.clone()]);
    assert_eq!(status["shutdown_room"]["failed_to_kick_users"], json!([]));
    assert_eq!(status["shutdown_room"]["local_aliases"], json!(["#trouble:test.local"]));
    let new_room_id = status["shutdown_room"]["new_room_id"].as_str().expect("a new room").to_string();
    let by_room = c.get(&format!("/_synapse/admin/v2/rooms/{}/delete_status", enc(&room_id)), &boss.token).await.ok();
    assert_eq!(by_room["results"][0]["delete_id"], delete_id.as_str());
    assert_eq!(by_room["results"][0]["status"], "complete");

    // Purged at both nodes: no room, no event, members elsewhere; still blocked; the alias moved.
    for (client, node) in [(&c, "first"), (&c2, "second")] {
        let gone = eventually(REQUEST_TIMEOUT, "the purge and the move reach every node", || async {
            let answer = client.get(&format!("/_synapse/admin/v1/rooms/{}", enc(&room_id)), &boss.token).await;
            let rooms = joined(client, &bob).await;
            (answer.status == 404 && !rooms.contains(&room_id) && rooms.contains(&new_room_id)).then_some(())
        });
        gone.await;
        assert_eq!(client.get(&block, &boss.token).await.ok()["block"], true, "{node}");
        client.join(&carol, &room_id).await.expect_err(403, "M_FORBIDDEN");
    }
    let alias = c.get(&format!("/directory/room/{}", enc("#trouble:test.local")), &bob.token).await.ok();
    assert_eq!(alias["room_id"], new_room_id.as_str());
    let listed = c.get("/_synapse/admin/v1/rooms", &boss.token).await.ok();
    assert!(listed["rooms"].as_array().unwrap().iter().all(|r| r["room_id"] != room_id.as_str()), "{listed}");

    // Delete (v1) without purge: the room stays, empty; other rooms are untouched.
    let kept = c.create_room(&carol, json!({ "name": "Kept" })).await;
    let quiet = c.create_room(&carol, json!({ "name": "Quiet" })).await;
    let answer = c
        .request(Method::DELETE, &format!("/_synapse/admin/v1/rooms/{}", enc(&kept)), Some(&boss.token), Some(&json!({ "purge": false })))
        .await
        .ok();
    assert_eq!(answer["kicked_users"], json!([carol.user_id]));
    assert_eq!(answer["new_room_id"], Value::Null);
    let members = c.get(&format!("/_synapse/admin/v1/rooms/{}/members", enc(&kept)), &boss.token).await.ok();
    assert_eq!(members["total"], 0);
    let carols = joined(&c, &carol).await;
    assert!(carols.contains(&quiet) && !carols.contains(&kept), "{carols:?}");
    let unknown = c.request(Method::DELETE, "/_synapse/admin/v1/rooms/!unknown:test.local", Some(&boss.token), None).await;
    unknown.expect_err(404, "M_NOT_FOUND");
    c.get("/_synapse/admin/v2/rooms/delete_status/nope", &boss.token).await.expect_err(404, "M_NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn administrators_list_quarantine_and_delete_media() {
    let server = TestServer::with_config(admin_config()).await;
    let c = server.client();
    let boss = c.register_named("boss", "a long password").await;
    let bob = c.register_named("bob", "bob's password").await;
    let mut uris = Vec::new();
    for (name, bytes) in [("first.txt", b"first file".to_vec()), ("second.txt", b"the second file".to_vec())] {
        let uploaded =
            c.raw(Method::POST, &format!("/_matrix/media/v3/upload?filename={name}"), Some(&bob.token), "text/plain", bytes).await.ok();
        uris.push(uploaded["content_uri"].as_str().unwrap().to_string());
    }
    let media_ids: Vec<String> = uris.iter().map(|uri| uri.rsplit('/').next().unwrap().to_string()).collect();
    let download = |media_id: &str| format!("/_matrix/client/v1/media/download/test.local/{media_id}");

    let listing_path = format!("/_synapse/admin/v1/users/{}/media", enc(&bob.user_id));
    let listing = c.get(&listing_path, &boss.token).await.ok();
    assert_eq!(listing["total"], 2, "{listing}");
    let listed = |listing: &Value, media_id: &str| -> Value {
        listing["media"].as_array().unwrap().iter().find(|m| m["media_id"] == media_id).cloned().expect("listed")
    };
    let first = listed(&listing, &media_ids[0]);
    assert_eq!(first["upload_name"], "first.txt");
    assert_eq!((first["media_length"].clone(), first["media_type"].clone()), (json!(10), json!("text/plain")));
    assert_eq!(first["quarantined_by"], Value::Null);
    // Pages, both ways (two uploads in the same millisecond may come in either order).
    let forwards = c.get(&format!("{listing_path}?limit=1"), &boss.token).await.ok();
    let backwards = c.get(&format!("{listing_path}?limit=1&dir=b"), &boss.token).await.ok();
    assert_eq!((forwards["media"].as_array().unwrap().len(), forwards["next_token"].clone()), (1, json!(1)));
    assert_ne!(forwards["media"][0]["media_id"], backwards["media"][0]["media_id"]);
    c.get(&format!("{listing_path}?dir=x"), &boss.token).await.expect_err(400, "M_INVALID_PARAM");
    c.get(&format!("/_synapse/admin/v1/users/{}/media", enc("@nobody:test.local")), &boss.token).await.expect_err(404, "M_NOT_FOUND");

    // Quarantined: 404 to downloads, shown in the listing; released again.
    let quarantine = format!("/_synapse/admin/v1/media/quarantine/test.local/{}", media_ids[0]);
    c.post(&quarantine, &boss.token, json!({})).await.ok();
    c.get(&download(&media_ids[0]), &bob.token).await.expect_err(404, "M_NOT_FOUND");
    assert_eq!(c.get(&download(&media_ids[1]), &bob.token).await.status, 200);
    let listing = c.get(&listing_path, &boss.token).await.ok();
    assert_eq!(listed(&listing, &media_ids[0])["quarantined_by"], boss.user_id.as_str());
    c.post(&format!("/_synapse/admin/v1/media/unquarantine/test.local/{}", media_ids[0]), &boss.token, json!({})).await.ok();
    assert_eq!(c.get(&download(&media_ids[0]), &bob.token).await.raw, b"first file");

    // Deleted: gone from downloads, thumbnails and the listing; a second delete finds nothing.
    let delete = format!("/_synapse/admin/v1/media/test.local/{}", media_ids[1]);
    let deleted = c.delete(&delete, &boss.token).await.ok();
    assert_eq!(deleted, json!({ "deleted_media": [media_ids[1]], "total": 1 }));
    c.get(&download(&media_ids[1]), &bob.token).await.expect_err(404, "M_NOT_FOUND");
    let thumbnail = format!("/_matrix/client/v1/media/thumbnail/test.local/{}?width=32&height=32", media_ids[1]);
    c.get(&thumbnail, &bob.token).await.expect_err(404, "M_NOT_FOUND");
    assert_eq!(c.get(&listing_path, &boss.token).await.ok()["total"], 1);
    c.delete(&delete, &boss.token).await.expect_err(404, "M_NOT_FOUND");
    c.post("/_synapse/admin/v1/media/quarantine/elsewhere.org/abc", &boss.token, json!({})).await.expect_err(400, "M_INVALID_PARAM");
}

/// The operator's step after a purge: the room's entries leave the event log itself (its purge
/// entry stays), other rooms' entries stay, and a node started afterwards replays the log with
/// the gap and never sees the room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purged_rooms_entries_leave_the_event_log() {
    let server = TestServer::with_config(admin_config()).await;
    let c = server.client();
    let boss = c.register_named("boss", "a long password").await;
    let bob = c.register_named("bob", "bob's password").await;
    let doomed = c.create_room(&bob, json!({ "name": "Doomed" })).await;
    let kept = c.create_room(&bob, json!({ "name": "Kept" })).await;
    for n in 0..5 {
        c.send_text(&bob, &doomed, &format!("doomed {n}")).await;
        c.send_text(&bob, &kept, &format!("kept {n}")).await;
    }
    let admin = haetae_store::admin::Admin::connect(server.nats.url(), &haetae_store::Access::default(), REQUEST_TIMEOUT).await.unwrap();
    use haetae_server::services::room_moderation::purge_room_log;
    let refused = purge_room_log(&admin, &doomed).await.expect_err("a room that was not purged keeps its entries");
    assert!(refused.contains("not its purge"), "{refused}");

    let path = format!("/_synapse/admin/v2/rooms/{}", enc(&doomed));
    c.request(Method::DELETE, &path, Some(&boss.token), Some(&json!({ "purge": true }))).await.ok();
    let purge_entry = admin.last_entry_of(&doomed).await.unwrap().expect("the purge entry");
    let purged = purge_room_log(&admin, &doomed).await.unwrap();
    let removed = purged["removed_entries"].as_u64().unwrap();
    assert!(removed >= 12, "the room's creation, five messages and bob's leave: {purged}");
    let left = admin.last_entry_of(&doomed).await.unwrap().expect("the purge entry stays");
    assert_eq!(left.seq, purge_entry.seq);
    assert_eq!(purge_room_log(&admin, &doomed).await.unwrap()["removed_entries"], 0);

    // A node started now replays the log with the gap: the room does not exist, the other room
    // is whole.
    let fresh = Node::start(&server.nats, admin_config()).await;
    let c2 = fresh.client();
    c2.get(&format!("/_synapse/admin/v1/rooms/{}", enc(&doomed)), &boss.token).await.expect_err(404, "M_NOT_FOUND");
    assert_eq!(joined(&c2, &bob).await, vec![kept.clone()]);
    let messages = c2.get(&format!("/rooms/{}/messages?dir=b&limit=50", enc(&kept)), &bob.token).await.ok();
    let bodies: Vec<&str> = messages["chunk"].as_array().unwrap().iter().filter_map(|e| e["content"]["body"].as_str()).collect();
    assert_eq!(bodies, ["kept 4", "kept 3", "kept 2", "kept 1", "kept 0"]);
    c.send_text(&bob, &kept, "still writable").await;
    c2.send_text(&bob, &kept, "from the fresh node too").await;
}

/// A snapshot taken before a purge does not bring the room back: a node started from it replays
/// the purge entry, before and after the operator removed the room's entries from the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_from_before_a_purge_does_not_bring_the_room_back() {
    let mut snapshotting = admin_config();
    snapshotting.history.snapshot_interval_s = 1;
    snapshotting.history.snapshot_min_entries = 20;
    let mut quiet = admin_config();
    quiet.history.snapshot_min_entries = u64::MAX;
    let nats = Nats::start().await;
    let first = Node::start(&nats, snapshotting).await;
    let c = first.client();
    let boss = c.register_named("boss", "a long password").await;
    let bob = c.register_named("bob", "bob's password").await;
    let doomed = c.create_room(&bob, json!({ "name": "Doomed" })).await;
    for n in 0..30 {
        c.send_text(&bob, &doomed, &format!("message {n}")).await;
    }
    let positions: u64 = c.request(Method::GET, "/health", None, None).await.ok()["positions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap())
        .sum();
    let store = nats.store().await;
    eventually(REQUEST_TIMEOUT, "a snapshot with the room", || {
        let store = store.clone();
        async move {
            let description = store.snapshots().description().await.ok().flatten()?;
            let covers = haetae_server::read_model::snapshot::SnapshotInfo::parse(&description)?.entries();
            (covers >= positions).then_some(())
        }
    })
    .await;
    first.stop().await;

    let second = Node::start(&nats, quiet.clone()).await;
    let c = second.client();
    let started = c.request(Method::GET, "/health", None, None).await.ok();
    assert!(started["started_from_snapshot"].is_array(), "{started}");
    c.get(&format!("/_synapse/admin/v1/rooms/{}", enc(&doomed)), &boss.token).await.ok();
    let path = format!("/_synapse/admin/v1/rooms/{}", enc(&doomed));
    c.request(Method::DELETE, &path, Some(&boss.token), Some(&json!({ "purge": true }))).await.ok();
    second.stop().await;

    let third = Node::start(&nats, quiet.clone()).await;
    let c = third.client();
    assert!(c.request(Method::GET, "/health", None, None).await.ok()["started_from_snapshot"].is_array());
    c.get(&path, &boss.token).await.expect_err(404, "M_NOT_FOUND");
    assert_eq!(joined(&c, &bob).await, Vec::<String>::new());
    third.stop().await;

    let admin = haetae_store::admin::Admin::connect(nats.url(), &haetae_store::Access::default(), REQUEST_TIMEOUT).await.unwrap();
    haetae_server::services::room_moderation::purge_room_log(&admin, &doomed).await.unwrap();
    let fourth = Node::start(&nats, quiet).await;
    let c = fourth.client();
    assert!(c.request(Method::GET, "/health", None, None).await.ok()["started_from_snapshot"].is_array());
    c.get(&path, &boss.token).await.expect_err(404, "M_NOT_FOUND");
    assert_eq!(joined(&c, &bob).await, Vec::<String>::new());
    let other = c.create_room(&bob, json!({ "name": "Afterwards" })).await;
    assert_eq!(joined(&c, &bob).await, vec![other]);
}
