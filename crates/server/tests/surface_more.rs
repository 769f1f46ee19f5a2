//! More of the client surface of issue 13: room tags, reporting, third-party lookups, account and
//! profile odds and ends, room previews, the room directory, relations and threads. Every test
//! runs against a real nats-server; bad input must get a Matrix error, never a 5xx.

mod common;

use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

/// The same request without a token: the spec's 401.
async fn expect_missing_token(c: &Client, method: Method, path: &str, body: Option<Value>) {
    let response = c.request(method, path, None, body.as_ref()).await;
    response.expect_err(401, "M_MISSING_TOKEN");
}

// ---- room tags ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_tags_are_room_account_data_and_reach_sync() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let bob = c.register("bob").await;
    let room = c.create_room(&alice, json!({})).await;
    let since = c.sync(&alice, None, 0).await["next_batch"].as_str().unwrap().to_string();
    let tags = |user: &User| format!("/user/{}/rooms/{}/tags", enc(&user.user_id), enc(&room));

    assert_eq!(c.get(&tags(&alice), &alice.token).await.ok(), json!({ "tags": {} }));
    c.put(&format!("{}/m.favourite", tags(&alice)), &alice.token, json!({ "order": 0.25 })).await.ok();
    c.put(&format!("{}/u.work", tags(&alice)), &alice.token, json!({})).await.ok();
    let listed = c.get(&tags(&alice), &alice.token).await.ok();
    assert_eq!(listed, json!({ "tags": { "m.favourite": { "order": 0.25 }, "u.work": {} } }));

    // The same data is the room's `m.tag` account data, and a sync carries it.
    let account_data = c.get(&format!("/user/{}/rooms/{}/account_data/m.tag", enc(&alice.user_id), enc(&room)), &alice.token).await.ok();
    assert_eq!(account_data["tags"]["m.favourite"]["order"], 0.25);
    let (_, seen) = c
        .sync_until(&alice, Some(&since), Duration::from_secs(10), |s| {
            s["rooms"]["join"][&room]["account_data"]["events"].as_array().is_some_and(|events| {
                events.iter().any(|e| e["type"] == "m.tag" && e["content"]["tags"]["u.work"].is_object())
            })
        })
        .await;
    assert!(!seen.is_empty());

    // Removing: gone from the list; removing a tag the room does not carry is fine.
    c.delete(&format!("{}/u.work", tags(&alice)), &alice.token).await.ok();
    c.delete(&format!("{}/u.never", tags(&alice)), &alice.token).await.ok();
    assert_eq!(c.get(&tags(&alice), &alice.token).await.ok(), json!({ "tags": { "m.favourite": { "order": 0.25 } } }));

    // Someone else's tags: 403 for reading and writing.
    c.get(&tags(&alice), &bob.token).await.expect_err(403, "M_FORBIDDEN");
    c.put(&format!("{}/m.lowpriority", tags(&alice)), &bob.token, json!({})).await.expect_err(403, "M_FORBIDDEN");
    c.delete(&format!("{}/m.favourite", tags(&alice)), &bob.token).await.expect_err(403, "M_FORBIDDEN");

    // Bad input.
    let put = format!("{}/m.lowpriority", tags(&alice));
    c.put(&put, &alice.token, json!({ "order": "high" })).await.expect_err(400, "M_BAD_JSON");
    c.put(&put, &alice.token, json!({ "order": 7 })).await.expect_err(400, "M_INVALID_PARAM");
    c.put(&put, &alice.token, json!([1])).await.expect_err(400, "M_BAD_JSON");
    c.raw(Method::PUT, &put, Some(&alice.token), "application/json", b"{nope".to_vec()).await.expect_err(400, "M_NOT_JSON");
    let long = "t".repeat(300);
    c.put(&format!("{}/{long}", tags(&alice)), &alice.token, json!({})).await.expect_err(400, "M_INVALID_PARAM");
    c.get(&format!("/user/{}/rooms/not-a-room/tags", enc(&alice.user_id)), &alice.token).await.expect_err(400, "M_INVALID_PARAM");
    expect_missing_token(&c, Method::GET, &tags(&alice), None).await;
    expect_missing_token(&c, Method::PUT, &put, Some(json!({}))).await;
}

// ---- reporting ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_are_validated_and_stored_replicated() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let bob = c.register("bob").await;
    let room = c.create_room(&alice, json!({})).await;
    let event = c.send_text(&alice, &room, "rude words").await;

    // An event: the reporter must be in the room; the event must exist there.
    let event_path = format!("/rooms/{}/report/{}", enc(&room), enc(&event));
    c.post(&event_path, &bob.token, json!({ "reason": "spam" })).await.expect_err(404, "M_NOT_FOUND");
    c.post(&event_path, &alice.token, json!({ "reason": "spam" })).await.ok();
    c.post(&event_path, &alice.token, json!({})).await.ok(); // the reason is optional here
    let missing = format!("/rooms/{}/report/{}", enc(&room), enc("$nosuchevent"));
    c.post(&missing, &alice.token, json!({ "reason": "x" })).await.expect_err(404, "M_NOT_FOUND");
    c.post(&format!("/rooms/{}/report/{}", enc("!nosuch:test.local"), enc(&event)), &alice.token, json!({})).await.expect_err(404, "M_NOT_FOUND");
    c.post(&event_path, &alice.token, json!({ "reason": 5 })).await.expect_err(400, "M_BAD_JSON");
    c.raw(Method::POST, &event_path, Some(&alice.token), "application/json", b"not json".to_vec()).await.expect_err(400, "M_NOT_JSON");

    // A room: anyone may report a room the server knows; a reason is required.
    let room_path = format!("/rooms/{}/report", enc(&room));
    c.post(&room_path, &bob.token, json!({ "reason": "" })).await.ok();
    c.post(&room_path, &bob.token, json!({})).await.expect_err(400, "M_MISSING_PARAM");
    c.post(&format!("/rooms/{}/report", enc("!nosuch:test.local")), &bob.token, json!({ "reason": "x" })).await.expect_err(404, "M_NOT_FOUND");
    c.post(&room_path, &bob.token, json!({ "reason": "x".repeat(5000) })).await.expect_err(400, "M_INVALID_PARAM");

    // A user: must exist here.
    let user_path = format!("/users/{}/report", enc(&alice.user_id));
    c.post(&user_path, &bob.token, json!({ "reason": "harassment" })).await.ok();
    c.post(&format!("/users/{}/report", enc("@nobody:test.local")), &bob.token, json!({ "reason": "x" })).await.expect_err(404, "M_NOT_FOUND");
    c.post(&format!("/users/{}/report", enc("not-a-user")), &bob.token, json!({ "reason": "x" })).await.expect_err(400, "M_INVALID_PARAM");
    expect_missing_token(&c, Method::POST, &user_path, Some(json!({ "reason": "x" }))).await;

    // Stored in the replicated reports bucket, oldest first, with who reported what.
    let store = server.nats.store().await;
    let listing = store
        .kv()
        .list(haetae_store::Bucket::Reports, &haetae_store::kv::KeyPath::new(&["report"]), 100, true)
        .await
        .expect("the reports bucket lists");
    let mut reports: Vec<(String, Value)> =
        listing.entries.iter().map(|(key, v)| (key.join("."), serde_json::from_slice(&v.value).unwrap())).collect();
    reports.sort_by(|a, b| a.0.cmp(&b.0));
    let kinds: Vec<&str> = reports.iter().map(|(_, r)| r["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["event", "event", "room", "user"], "{reports:#?}");
    assert_eq!(reports[0].1["event_id"], event.as_str());
    assert_eq!(reports[0].1["reporter"], alice.user_id.as_str());
    assert_eq!(reports[0].1["reason"], "spam");
    assert_eq!(reports[2].1["room_id"], room.as_str());
    assert_eq!(reports[3].1["user_id"], alice.user_id.as_str());
    assert_eq!(reports[3].1["reporter"], bob.user_id.as_str());
}

// ---- third-party lookups ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirdparty_lookups_answer_empty() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    assert_eq!(c.get("/thirdparty/protocols", &alice.token).await.ok(), json!({}));
    c.get("/thirdparty/protocol/irc", &alice.token).await.expect_err(404, "M_NOT_FOUND");
    assert_eq!(c.get("/thirdparty/location/irc?channel=x", &alice.token).await.ok(), json!([]));
    assert_eq!(c.get("/thirdparty/user/irc", &alice.token).await.ok(), json!([]));
    assert_eq!(c.get("/thirdparty/location?alias=%23a%3Atest.local", &alice.token).await.ok(), json!([]));
    assert_eq!(c.get("/thirdparty/user?userid=%40a%3Atest.local", &alice.token).await.ok(), json!([]));
    c.get("/thirdparty/location", &alice.token).await.expect_err(400, "M_MISSING_PARAM");
    c.get("/thirdparty/user", &alice.token).await.expect_err(400, "M_MISSING_PARAM");
    for path in ["/thirdparty/protocols", "/thirdparty/protocol/irc", "/thirdparty/location/irc", "/thirdparty/user?userid=x"] {
        expect_missing_token(&c, Method::GET, path, None).await;
    }
}

// ---- registration token validity, profile field deletion, mutual rooms ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_token_validity_follows_the_configuration() {
    let path = "/_matrix/client/v1/register/m.login.registration_token/validity";
    let server = TestServer::start().await;
    let c = server.client();
    let open = c.request(Method::GET, &format!("{path}?token=abc"), None, None).await.ok();
    assert_eq!(open, json!({ "valid": false }), "no token is configured");
    c.request(Method::GET, path, None, None).await.expect_err(400, "M_MISSING_PARAM");
    drop(c);
    drop(server);

    let mut config = test_config();
    config.registration.token = Some("s3cret".into());
    let server = TestServer::with_config(config).await;
    let c = server.client();
    assert_eq!(c.request(Method::GET, &format!("{path}?token=s3cret"), None, None).await.ok(), json!({ "valid": true }));
    assert_eq!(c.request(Method::GET, &format!("{path}?token=other"), None, None).await.ok(), json!({ "valid": false }));
    drop(c);
    drop(server);

    let mut config = test_config();
    config.registration.enabled = false;
    let server = TestServer::with_config(config).await;
    server.client().request(Method::GET, &format!("{path}?token=x"), None, None).await.expect_err(403, "M_FORBIDDEN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_fields_can_be_deleted_by_their_owner() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let bob = c.register("bob").await;
    let room = c.create_room(&alice, json!({})).await;
    let name = format!("/profile/{}/displayname", enc(&alice.user_id));
    c.put(&name, &alice.token, json!({ "displayname": "Alice" })).await.ok();
    assert_eq!(c.get(&name, &alice.token).await.ok()["displayname"], "Alice");

    c.delete(&name, &bob.token).await.expect_err(403, "M_FORBIDDEN");
    c.delete(&name, &alice.token).await.ok();
    c.get(&name, &alice.token).await.expect_err(404, "M_NOT_FOUND");
    // The room's member event follows the profile.
    let member = c.get(&format!("/rooms/{}/state/m.room.member/{}", enc(&room), enc(&alice.user_id)), &alice.token).await.ok();
    assert!(member.get("displayname").is_none(), "{member}");
    // Deleting what is not set, and namespaced keys haetae does not keep, is a success.
    c.delete(&name, &alice.token).await.ok();
    c.delete(&format!("/profile/{}/m.tz", enc(&alice.user_id)), &alice.token).await.ok();
    c.delete(&format!("/profile/{}/org.example.field", enc(&alice.user_id)), &alice.token).await.ok();
    c.delete(&format!("/profile/{}/Not_A_Key", enc(&alice.user_id)), &alice.token).await.expect_err(400, "M_INVALID_PARAM");
    expect_missing_token(&c, Method::DELETE, &name, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_rooms_lists_rooms_both_users_joined() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let bob = c.register("bob").await;
    let shared = c.create_room(&alice, json!({ "preset": "public_chat" })).await;
    let invited_only = c.create_room(&alice, json!({ "preset": "public_chat" })).await;
    let _alone = c.create_room(&alice, json!({})).await;
    c.join(&bob, &shared).await.ok();
    c.invite(&alice, &invited_only, &bob.user_id).await;

    for path in ["/_matrix/client/v1/mutual_rooms", "/_matrix/client/unstable/uk.half-shot.msc2666/user/mutual_rooms"] {
        let found = c.get(&format!("{path}?user_id={}", enc(&bob.user_id)), &alice.token).await.ok();
        assert_eq!(found, json!({ "joined": [shared.clone()], "count": 1 }), "{path}");
        let none = c.get(&format!("{path}?user_id={}", enc("@nobody:test.local")), &alice.token).await.ok();
        assert_eq!(none, json!({ "joined": [], "count": 0 }));
        c.get(path, &alice.token).await.expect_err(400, "M_MISSING_PARAM");
        c.get(&format!("{path}?user_id=bob"), &alice.token).await.expect_err(400, "M_INVALID_PARAM");
        c.get(&format!("{path}?user_id={}", enc(&alice.user_id)), &alice.token).await.expect_err(400, "M_INVALID_PARAM");
        c.get(&format!("{path}?user_id={}&from=zz", enc(&bob.user_id)), &alice.token).await.expect_err(400, "M_INVALID_PARAM");
        let far = c.get(&format!("{path}?user_id={}&from=m{}", enc(&bob.user_id), usize::MAX), &alice.token).await.ok();
        assert_eq!(far["joined"], json!([]));
        expect_missing_token(&c, Method::GET, &format!("{path}?user_id={}", enc(&bob.user_id)), None).await;
    }
}

// ---- room previews and the room directory ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_summary_shows_open_rooms_to_anyone_and_closed_rooms_to_members() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let bob = c.register("bob").await;
    let public = c
        .create_room(&alice, json!({ "preset": "public_chat", "name": "Cheese", "topic": "Tasty", "room_alias_name": unique_name("cheese") }))
        .await;
    let private = c.create_room(&alice, json!({ "name": "Secret" })).await;
    let alias = c.get(&format!("/rooms/{}/state/m.room.canonical_alias", enc(&public)), &alice.token).await.ok()["alias"]
        .as_str()
        .unwrap()
        .to_string();

    for prefix in ["/_matrix/client/v1/room_summary/", "/_matrix/client/unstable/im.nheko.summary/summary/"] {
        let by_alias = c.get(&format!("{prefix}{}", enc(&alias)), &bob.token).await.ok();
        assert_eq!(by_alias["room_id"], public.as_str());
        assert_eq!(by_alias["name"], "Cheese");
        assert_eq!(by_alias["topic"], "Tasty");
        assert_eq!(by_alias["join_rule"], "public");
        assert_eq!(by_alias["num_joined_members"], 1);
        assert_eq!(by_alias["membership"], "leave");
        assert!(by_alias["room_version"].is_string());
        // Unauthenticated: allowed for an open room, without `membership`.
        let anonymous = c.request(Method::GET, &format!("{prefix}{}", enc(&public)), None, None).await.ok();
        assert!(anonymous.get("membership").is_none(), "{anonymous}");
        // A closed room: its members see it, nobody else does.
        let mine = c.get(&format!("{prefix}{}", enc(&private)), &alice.token).await.ok();
        assert_eq!((mine["membership"].as_str(), mine["join_rule"].as_str()), (Some("join"), Some("invite")));
        c.get(&format!("{prefix}{}", enc(&private)), &bob.token).await.expect_err(404, "M_NOT_FOUND");
        c.request(Method::GET, &format!("{prefix}{}", enc(&private)), None, None).await.expect_err(404, "M_NOT_FOUND");
        c.get(&format!("{prefix}{}", enc("!nosuch:test.local")), &bob.token).await.expect_err(404, "M_NOT_FOUND");
        c.get(&format!("{prefix}{}", enc("#nosuch:test.local")), &bob.token).await.expect_err(404, "M_NOT_FOUND");
        c.get(&format!("{prefix}not-a-room"), &bob.token).await.expect_err(400, "M_INVALID_PARAM");
        c.get(&format!("{prefix}{}", enc(&public)), "not-a-token").await.expect_err(401, "M_UNKNOWN_TOKEN");
    }
    let unstable = c.get(&format!("/_matrix/client/unstable/im.nheko.summary/rooms/{}/summary", enc(&public)), &bob.token).await.ok();
    assert_eq!(unstable["room_id"], public.as_str());

    // Joined members of a world-readable room are visible to non-members; of other rooms not.
    let readable = c.create_room(&alice, json!({ "initial_state": [
        { "type": "m.room.history_visibility", "state_key": "", "content": { "history_visibility": "world_readable" } }
    ] }))
    .await;
    let joined = c.get(&format!("/rooms/{}/joined_members", enc(&readable)), &bob.token).await.ok();
    assert!(joined["joined"][&alice.user_id].is_object(), "{joined}");
    c.get(&format!("/rooms/{}/joined_members", enc(&private)), &bob.token).await.expect_err(403, "M_FORBIDDEN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_directory_publishes_searches_and_pages() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let bob = c.register("bob").await;
    // Published at creation, published later, and never published.
    let at_creation = c.create_room(&alice, json!({ "visibility": "public", "name": "Gardening club", "topic": "roses" })).await;
    let later = c.create_room(&alice, json!({ "preset": "public_chat", "name": "Chess" })).await;
    let never = c.create_room(&alice, json!({ "preset": "public_chat", "name": "Hidden garden" })).await;
    c.join(&bob, &later).await.ok();
    let visibility = |room: &str| format!("/directory/list/room/{}", enc(room));

    let anonymous = |path: String| {
        let c = c.clone();
        async move { c.request(Method::GET, &path, None, None).await }
    };
    assert_eq!(anonymous(visibility(&at_creation)).await.ok(), json!({ "visibility": "public" }));
    assert_eq!(anonymous(visibility(&later)).await.ok(), json!({ "visibility": "private" }));
    anonymous(visibility("!nosuch:test.local")).await.expect_err(404, "M_NOT_FOUND");

    // Only those with power over the room's aliases may publish it.
    c.put(&visibility(&later), &bob.token, json!({ "visibility": "public" })).await.expect_err(403, "M_FORBIDDEN");
    c.put(&visibility(&later), &alice.token, json!({ "visibility": "sideways" })).await.expect_err(400, "M_INVALID_PARAM");
    c.put(&visibility(&later), &alice.token, json!({ "visibility": 1 })).await.expect_err(400, "M_BAD_JSON");
    c.put(&visibility("!nosuch:test.local"), &alice.token, json!({ "visibility": "public" })).await.expect_err(404, "M_NOT_FOUND");
    expect_missing_token(&c, Method::PUT, &visibility(&later), Some(json!({ "visibility": "public" }))).await;
    c.put(&visibility(&later), &alice.token, json!({})).await.ok(); // defaults to public
    assert_eq!(anonymous(visibility(&later)).await.ok(), json!({ "visibility": "public" }));

    // The listing: published rooms only, most members first.
    let listed = anonymous("/_matrix/client/v3/publicRooms".into()).await.ok();
    let ids: Vec<&str> = listed["chunk"].as_array().unwrap().iter().map(|r| r["room_id"].as_str().unwrap()).collect();
    assert_eq!(ids, [later.as_str(), at_creation.as_str()], "{listed}");
    assert_eq!(listed["total_room_count_estimate"], 2);
    assert_eq!(listed["chunk"][0]["num_joined_members"], 2);
    assert_eq!(listed["chunk"][1]["topic"], "roses");
    assert!(listed["chunk"][1].get("canonical_alias").is_none(), "absent fields are left out: {listed}");
    assert!(!ids.contains(&never.as_str()));

    // Pages.
    let first = anonymous("/_matrix/client/v3/publicRooms?limit=1".into()).await.ok();
    assert_eq!(first["chunk"].as_array().unwrap().len(), 1);
    let next = first["next_batch"].as_str().expect("a next page").to_string();
    let second = anonymous(format!("/_matrix/client/v3/publicRooms?limit=1&since={next}")).await.ok();
    assert_eq!(second["chunk"][0]["room_id"], at_creation.as_str());
    assert!(second.get("next_batch").is_none() && second["prev_batch"].is_string(), "{second}");
    anonymous("/_matrix/client/v3/publicRooms?since=garbage".into()).await.expect_err(400, "M_INVALID_PARAM");
    let far = anonymous(format!("/_matrix/client/v3/publicRooms?limit=500&since=p{}", usize::MAX)).await.ok();
    assert_eq!(far["chunk"], json!([]));
    anonymous("/_matrix/client/v3/publicRooms?limit=many".into()).await.expect_err(400, "M_INVALID_PARAM");

    // Search (POST): name, topic, case-insensitive; POST needs a token.
    let search = |term: &str| json!({ "filter": { "generic_search_term": term } });
    let found = c.post("/publicRooms", &bob.token, search("GARDEN")).await.ok();
    assert_eq!(found["chunk"].as_array().unwrap().len(), 1, "the hidden garden is not published: {found}");
    assert_eq!(found["chunk"][0]["room_id"], at_creation.as_str());
    let found = c.post("/publicRooms", &bob.token, search("roses")).await.ok();
    assert_eq!(found["chunk"][0]["room_id"], at_creation.as_str());
    let found = c.post("/publicRooms", &bob.token, json!({ "limit": 1, "filter": { "room_types": [null] } })).await.ok();
    assert_eq!(found["chunk"].as_array().unwrap().len(), 1);
    assert_eq!(found["total_room_count_estimate"], 2);
    let found = c.post("/publicRooms", &bob.token, json!({ "filter": { "room_types": ["m.space"] } })).await.ok();
    assert_eq!(found["chunk"], json!([]));
    // Other servers' and third-party networks' directories: nothing (no federation, no bridges).
    let elsewhere = c.post("/publicRooms?server=elsewhere.example", &bob.token, json!({})).await.ok();
    assert_eq!(elsewhere["chunk"], json!([]));
    let bridged = c.post("/publicRooms", &bob.token, json!({ "third_party_instance_id": "irc" })).await.ok();
    assert_eq!(bridged["chunk"], json!([]));
    c.post("/publicRooms", &bob.token, json!({ "limit": "ten" })).await.expect_err(400, "M_BAD_JSON");
    c.post("/publicRooms", &bob.token, json!({ "filter": { "generic_search_term": 3 } })).await.expect_err(400, "M_BAD_JSON");
    expect_missing_token(&c, Method::POST, "/publicRooms", Some(json!({}))).await;

    // Unpublishing.
    c.put(&visibility(&at_creation), &alice.token, json!({ "visibility": "private" })).await.ok();
    let listed = anonymous("/_matrix/client/v3/publicRooms".into()).await.ok();
    assert_eq!(listed["chunk"].as_array().unwrap().len(), 1, "{listed}");
}

// ---- relations and threads ----

/// More than a room's recent window holds, so related events are read back from the log.
const FILLER: usize = 520;

async fn send(c: &Client, user: &User, room: &str, event_type: &str, content: Value) -> String {
    let path = format!("/rooms/{}/send/{}/{}", enc(room), event_type, txn());
    c.put(&path, &user.token, content).await.ok()["event_id"].as_str().unwrap().to_string()
}

fn relates(rel_type: &str, target: &str, body: &str) -> Value {
    json!({ "msgtype": "m.text", "body": body, "m.relates_to": { "rel_type": rel_type, "event_id": target } })
}

fn chunk_ids(response: &Value) -> Vec<String> {
    response["chunk"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relations_and_threads_come_from_the_index_and_survive_a_snapshot_restart() {
    let mut config = test_config();
    config.history.snapshot_interval_s = 1;
    config.history.snapshot_min_entries = 50;
    let nats = Nats::start().await;
    let node = Node::start(&nats, config.clone()).await;
    let c = node.client();
    let alice = c.register("alice").await;
    let bob = c.register("bob").await;
    let carol = c.register("carol").await;
    let room = c.create_room(&alice, json!({ "preset": "private_chat" })).await;
    c.invite(&alice, &room, &bob.user_id).await;
    c.join(&bob, &room).await.ok();

    let root = c.send_text(&alice, &room, "root").await;
    let like = send(&c, &bob, &room, "m.reaction", json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": root, "key": "+1" } })).await;
    let laugh = send(&c, &alice, &room, "m.reaction", json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": root, "key": "ha" } })).await;
    let edit = send(&c, &alice, &room, "m.room.message", relates("m.replace", &root, "* root")).await;
    let reply1 = send(&c, &bob, &room, "m.room.message", relates("m.thread", &root, "reply 1")).await;
    let reply2 = send(&c, &alice, &room, "m.room.message", relates("m.thread", &root, "reply 2")).await;
    let reply3 = send(&c, &bob, &room, "m.room.message", relates("m.thread", &root, "reply 3")).await;
    // A relation of a relation (found only when recursing), and a reply that is not a relation.
    let nested = send(&c, &alice, &room, "m.reaction", json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": reply1, "key": "ok" } })).await;
    send(&c, &alice, &room, "m.room.message", json!({ "msgtype": "m.text", "body": "re", "m.relates_to": { "m.in_reply_to": { "event_id": root } } })).await;
    let root2 = c.send_text(&alice, &room, "second root").await;
    let reply4 = send(&c, &alice, &room, "m.room.message", relates("m.thread", &root2, "reply 4")).await;
    // Push all of that out of the room's recent window.
    for batch in (0..FILLER).collect::<Vec<_>>().chunks(16) {
        let texts: Vec<String> = batch.iter().map(|i| format!("filler {i}")).collect();
        futures::future::join_all(texts.iter().map(|text| c.send_text(&alice, &room, text))).await;
    }

    let relations = |path: String, user: User| {
        let c = c.clone();
        let room = room.clone();
        async move { c.get(&format!("/_matrix/client/v1/rooms/{}/relations/{path}", enc(&room)), &user.token).await }
    };
    let direct = [like.clone(), laugh.clone(), edit.clone(), reply1.clone(), reply2.clone(), reply3.clone()];
    let newest_first: Vec<String> = direct.iter().rev().cloned().collect();
    let all = relations(enc(&root), bob.clone()).await.ok();
    assert_eq!(chunk_ids(&all), newest_first, "{all}");
    assert!(all.get("next_batch").is_none() && all.get("recursion_depth").is_none(), "{all}");
    let threads_only = relations(format!("{}/m.thread", enc(&root)), bob.clone()).await.ok();
    assert_eq!(chunk_ids(&threads_only), [reply3.clone(), reply2.clone(), reply1.clone()]);
    assert_eq!(threads_only["chunk"][0]["content"]["body"], "reply 3");
    let reactions = relations(format!("{}/m.annotation/m.reaction", enc(&root)), bob.clone()).await.ok();
    assert_eq!(chunk_ids(&reactions), [laugh.clone(), like.clone()]);
    let none = relations(format!("{}/m.annotation/m.room.message", enc(&root)), bob.clone()).await.ok();
    assert_eq!(chunk_ids(&none), Vec::<String>::new());
    // Recursing finds the reaction to a thread reply.
    let deep = relations(format!("{}?recurse=true", enc(&root)), bob.clone()).await.ok();
    assert_eq!(chunk_ids(&deep)[0], nested);
    assert_eq!((chunk_ids(&deep).len(), deep["recursion_depth"].as_u64()), (7, Some(3)));

    // Pages, both ways, with no gap and no repeat.
    let mut seen = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let query = match &from { Some(token) => format!("?limit=4&from={}", enc(token)), None => "?limit=4".into() };
        let page = relations(format!("{}{query}", enc(&root)), bob.clone()).await.ok();
        seen.extend(chunk_ids(&page));
        match page["next_batch"].as_str() {
            Some(next) => from = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, newest_first);
    let first = relations(format!("{}?dir=f&limit=4", enc(&root)), bob.clone()).await.ok();
    assert_eq!(chunk_ids(&first), direct[..4].to_vec());
    let next = first["next_batch"].as_str().unwrap().to_string();
    let second = relations(format!("{}?dir=f&limit=4&from={}", enc(&root), enc(&next)), bob.clone()).await.ok();
    assert_eq!(chunk_ids(&second), direct[4..].to_vec());
    assert!(second.get("next_batch").is_none(), "{second}");

    // A redacted relation relates to nothing any more.
    c.put(&format!("/rooms/{}/redact/{}/{}", enc(&room), enc(&like), txn()), &bob.token, json!({})).await.ok();
    let reactions = relations(format!("{}/m.annotation", enc(&root)), bob.clone()).await.ok();
    assert_eq!(chunk_ids(&reactions), [laugh.as_str()]);

    // What may not be seen, and bad input.
    relations(enc(&root), carol.clone()).await.expect_err(404, "M_NOT_FOUND");
    relations(enc("$nosuchevent"), bob.clone()).await.expect_err(404, "M_NOT_FOUND");
    relations(format!("{}?dir=x", enc(&root)), bob.clone()).await.expect_err(400, "M_INVALID_PARAM");
    relations(format!("{}?limit=0", enc(&root)), bob.clone()).await.expect_err(400, "M_INVALID_PARAM");
    relations(format!("{}?limit=lots", enc(&root)), bob.clone()).await.expect_err(400, "M_INVALID_PARAM");
    relations(format!("{}?from=garbage", enc(&root)), bob.clone()).await.expect_err(400, "M_INVALID_PARAM");
    for huge in [format!("s{}_{}_{}_{}", u64::MAX, u64::MAX, u64::MAX, u64::MAX), format!("t{}", u64::MAX)] {
        let response = relations(format!("{}?from={}", enc(&root), enc(&huge)), bob.clone()).await;
        assert!(response.status == 200 || response.errcode() == "M_INVALID_PARAM", "{huge}: {}", response.body);
        let response = c.get(&format!("/_matrix/client/v1/rooms/{}/threads?from={}", enc(&room), enc(&huge)), &bob.token).await;
        assert!(response.status == 200 || response.errcode() == "M_INVALID_PARAM", "{huge}: {}", response.body);
    }
    relations(format!("{}?recurse=maybe", enc(&root)), bob.clone()).await.expect_err(400, "M_INVALID_PARAM");
    expect_missing_token(&c, Method::GET, &format!("/_matrix/client/v1/rooms/{}/relations/{}", enc(&room), enc(&root)), None).await;

    // Threads: most recently active first, with their bundled summary.
    let threads_path = format!("/_matrix/client/v1/rooms/{}/threads", enc(&room));
    let check_threads = |c: Client, alice: User, bob: User| {
        let threads_path = threads_path.clone();
        let (root, root2, reply3, reply4) = (root.clone(), root2.clone(), reply3.clone(), reply4.clone());
        async move {
            let threads = c.get(&threads_path, &alice.token).await.ok();
            assert_eq!(chunk_ids(&threads), [root2.clone(), root.clone()], "{threads}");
            let summary = &threads["chunk"][1]["unsigned"]["m.relations"]["m.thread"];
            assert_eq!(summary["count"], 3, "{threads}");
            assert_eq!(summary["latest_event"]["event_id"], reply3.as_str());
            assert_eq!(summary["current_user_participated"], true);
            assert_eq!(threads["chunk"][0]["unsigned"]["m.relations"]["m.thread"]["latest_event"]["event_id"], reply4.as_str());
            // Bob took part in the first thread only.
            let bobs = c.get(&format!("{threads_path}?include=participated"), &bob.token).await.ok();
            assert_eq!(chunk_ids(&bobs), [root.as_str()]);
            let page = c.get(&format!("{threads_path}?limit=1"), &bob.token).await.ok();
            assert_eq!(chunk_ids(&page), [root2.as_str()]);
            let next = page["next_batch"].as_str().expect("a next page").to_string();
            let page = c.get(&format!("{threads_path}?limit=1&from={}", enc(&next)), &bob.token).await.ok();
            assert_eq!(chunk_ids(&page), [root.as_str()]);
            assert!(page.get("next_batch").is_none(), "{page}");
        }
    };
    check_threads(c.clone(), alice.clone(), bob.clone()).await;
    c.get(&threads_path, &carol.token).await.expect_err(403, "M_FORBIDDEN");
    c.get(&format!("{threads_path}?include=some"), &bob.token).await.expect_err(400, "M_INVALID_PARAM");
    c.get(&format!("{threads_path}?limit=-1"), &bob.token).await.expect_err(400, "M_INVALID_PARAM");
    c.get(&format!("{threads_path}?from=nope"), &bob.token).await.expect_err(400, "M_INVALID_PARAM");
    expect_missing_token(&c, Method::GET, &threads_path, None).await;

    // A node started from a snapshot answers the same from the snapshot's index.
    let store = nats.store().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let description = store.snapshots().description().await.unwrap();
        let covers = description.as_deref().and_then(haetae_server::read_model::snapshot::SnapshotInfo::parse).map_or(0, |i| i.entries());
        if covers as usize >= FILLER + 12 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no snapshot was written");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    node.stop().await;
    let node = Node::start(&nats, config).await;
    let c = node.client();
    let health = c.request(Method::GET, "/health", None, None).await.ok();
    assert!(health["started_from_snapshot"].is_array(), "{health}");
    let alice = c.login(&alice).await;
    let bob = c.login(&bob).await;
    let after = c.get(&format!("/_matrix/client/v1/rooms/{}/relations/{}/m.thread", enc(&room), enc(&root)), &bob.token).await.ok();
    assert_eq!(chunk_ids(&after), [reply3.clone(), reply2.clone(), reply1.clone()]);
    check_threads(c.clone(), alice.clone(), bob.clone()).await;

    // Redacted replies leave their threads: the latest is the one before, and a thread whose
    // only reply goes is no thread any more.
    for reply in [&reply3, &reply4] {
        c.put(&format!("/rooms/{}/redact/{}/{}", enc(&room), enc(reply), txn()), &alice.token, json!({})).await.ok();
    }
    let threads = c.get(&threads_path, &alice.token).await.ok();
    assert_eq!(chunk_ids(&threads), [root.as_str()], "{threads}");
    let summary = &threads["chunk"][0]["unsigned"]["m.relations"]["m.thread"];
    assert_eq!((summary["count"].as_u64(), summary["latest_event"]["event_id"].as_str()), (Some(2), Some(reply2.as_str())));
    let after = c.get(&format!("/_matrix/client/v1/rooms/{}/relations/{}/m.thread", enc(&room), enc(&root)), &bob.token).await.ok();
    assert_eq!(chunk_ids(&after), [reply2.clone(), reply1.clone()]);
}

// ---- every node answers the same ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_directory_and_relations_written_at_one_node_are_read_at_another() {
    let server = TestServer::start().await;
    let other = Node::start(&server.nats, test_config()).await;
    let (a, b) = (server.client(), other.client());
    let alice = a.register("alice").await;
    let room = a.create_room(&alice, json!({ "visibility": "public", "name": "Everywhere" })).await;
    a.put(&format!("/user/{}/rooms/{}/tags/m.favourite", enc(&alice.user_id), enc(&room)), &alice.token, json!({ "order": 1 }))
        .await
        .ok();
    let root = a.send_text(&alice, &room, "root").await;
    let reply = send(&a, &alice, &room, "m.room.message", relates("m.thread", &root, "reply")).await;

    // The other node learns of each write by tailing the log.
    let tags_path = format!("/user/{}/rooms/{}/tags", enc(&alice.user_id), enc(&room));
    let tags = eventually(Duration::from_secs(10), "the tag at the other node", || async {
        let tags = b.get(&tags_path, &alice.token).await.ok();
        tags["tags"]["m.favourite"].is_object().then_some(tags)
    })
    .await;
    assert_eq!(tags["tags"]["m.favourite"]["order"], 1);
    let listed = eventually(Duration::from_secs(10), "the room in the other node's directory", || async {
        let listed = b.request(Method::GET, "/_matrix/client/v3/publicRooms", None, None).await.ok();
        (listed["chunk"][0]["room_id"] == room.as_str()).then_some(listed)
    })
    .await;
    assert_eq!(listed["chunk"][0]["name"], "Everywhere");
    let path = format!("/_matrix/client/v1/rooms/{}/relations/{}", enc(&room), enc(&root));
    let relations = eventually(Duration::from_secs(10), "the relation at the other node", || async {
        let relations = b.get(&path, &alice.token).await.ok();
        (!relations["chunk"].as_array().unwrap().is_empty()).then_some(relations)
    })
    .await;
    assert_eq!(chunk_ids(&relations), [reply.as_str()]);
    let summary = b.get(&format!("/_matrix/client/v1/room_summary/{}", enc(&room)), &alice.token).await.ok();
    assert_eq!(summary["membership"], "join");
}
