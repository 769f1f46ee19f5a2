//! The admin API on Synapse's paths: only administrators, users and rooms, deactivation.

mod common;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn administrators_manage_users_and_see_rooms() {
    let mut config = test_config();
    config.admins = vec!["boss".into()];
    let server = TestServer::with_config(config).await;
    let c = server.client();
    let boss = c.register_named("boss", "a long password").await;
    let bob = c.register_named("bob", "bob's password").await;
    let room_id = c.create_room(&bob, json!({ "name": "Bob's room" })).await;

    // Not for ordinary users, nor without a token.
    c.get("/_synapse/admin/v2/users", &bob.token).await.expect_err(403, "M_FORBIDDEN");
    let anonymous = reqwest::get(format!("{}/_synapse/admin/v2/users", server.node.base)).await.unwrap();
    assert_eq!(anonymous.status(), 401);

    let users = c.get("/_synapse/admin/v2/users", &boss.token).await.ok();
    let names: Vec<&str> = users["users"].as_array().unwrap().iter().filter_map(|u| u["name"].as_str()).collect();
    assert!(names.contains(&boss.user_id.as_str()) && names.contains(&bob.user_id.as_str()), "{users:#}");
    assert_eq!(users["total"], 2);
    let shown = c.get(&format!("/_synapse/admin/v2/users/{}", enc(&boss.user_id)), &boss.token).await.ok();
    assert_eq!(shown["admin"], true);

    // Create a user; they can log in; make them admin.
    let carol_id = format!("@carol:{}", server.node.server_name);
    let path = format!("/_synapse/admin/v2/users/{}", enc(&carol_id));
    let created = c.put(&path, &boss.token, json!({ "password": "carol's password", "displayname": "Carol" })).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let login = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "carol" }, "password": "carol's password" });
    let carol = c.request(reqwest::Method::POST, "/login", None, Some(&login)).await.ok();
    let carol_token = carol["access_token"].as_str().unwrap().to_string();
    c.get("/_synapse/admin/v2/users", &carol_token).await.expect_err(403, "M_FORBIDDEN");
    c.put(&format!("/_synapse/admin/v1/users/{}/admin", enc(&carol_id)), &boss.token, json!({ "admin": true })).await.ok();
    c.get("/_synapse/admin/v2/users", &carol_token).await.ok();

    // Rooms.
    let rooms = c.get("/_synapse/admin/v1/rooms", &boss.token).await.ok();
    let listed = rooms["rooms"].as_array().unwrap().iter().find(|r| r["room_id"] == room_id.as_str()).expect("bob's room listed");
    assert_eq!(listed["name"], "Bob's room");
    assert_eq!(listed["joined_members"], 1);
    let members = c.get(&format!("/_synapse/admin/v1/rooms/{}/members", enc(&room_id)), &boss.token).await.ok();
    assert_eq!(members["members"], json!([bob.user_id]));
    c.get("/_synapse/admin/v1/rooms/!nope:test.local", &boss.token).await.expect_err(404, "M_NOT_FOUND");

    // Deactivation: tokens stop working, login is refused, bob left his room.
    c.post(&format!("/_synapse/admin/v1/deactivate/{}", enc(&bob.user_id)), &boss.token, json!({})).await.ok();
    c.get("/account/whoami", &bob.token).await.expect_err(401, "M_UNKNOWN_TOKEN");
    let again = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "bob" }, "password": "bob's password" });
    c.request(reqwest::Method::POST, "/login", None, Some(&again)).await.expect_err(403, "M_FORBIDDEN");
    let members = c.get(&format!("/_synapse/admin/v1/rooms/{}/members", enc(&room_id)), &boss.token).await.ok();
    assert_eq!(members["total"], 0);
    let shown = c.get(&format!("/_synapse/admin/v2/users/{}", enc(&bob.user_id)), &boss.token).await.ok();
    assert_eq!(shown["deactivated"], true);
    let active = c.get("/_synapse/admin/v2/users", &boss.token).await.ok();
    assert_eq!(active["total"], 2, "deactivated users are listed only when asked: {active:#}");
    let all = c.get("/_synapse/admin/v2/users?deactivated=true", &boss.token).await.ok();
    assert_eq!(all["total"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_deactivates_their_own_account_with_their_password() {
    let server = TestServer::start().await;
    let c = server.client();
    let dave = c.register_named("dave", "dave's password").await;
    let first = c.post("/account/deactivate", &dave.token, json!({})).await;
    assert_eq!(first.status, 401, "user-interactive auth first: {:?}", first.body);
    assert!(first.body["flows"].is_array());
    let wrong = json!({ "auth": { "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "dave" }, "password": "nope" } });
    assert_eq!(c.post("/account/deactivate", &dave.token, wrong).await.status, 401);
    let right = json!({ "auth": { "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "dave" }, "password": "dave's password" } });
    c.post("/account/deactivate", &dave.token, right).await.ok();
    c.get("/account/whoami", &dave.token).await.expect_err(401, "M_UNKNOWN_TOKEN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_notice_reaches_the_user_in_a_tagged_room() {
    let mut config = test_config();
    config.admins = vec!["boss".into()];
    let server = TestServer::with_config(config).await;
    let c = server.client();
    let boss = c.register_named("boss", "a long password").await;
    let erin = c.register_named("erin", "erin's password").await;
    let first = c.sync(&erin, None, 0).await;
    let since = first["next_batch"].as_str().unwrap().to_string();
    let notice = json!({ "user_id": erin.user_id, "content": { "body": "DC b is down; your messages are safe." } });
    let sent = c.post("/_synapse/admin/v1/send_server_notice", &boss.token, notice.clone()).await.ok();
    assert!(sent["event_id"].is_string());
    c.post("/_synapse/admin/v1/send_server_notice", &erin.token, notice).await.expect_err(403, "M_FORBIDDEN");
    let unknown = json!({ "user_id": "@nobody:test.local", "content": { "body": "x" } });
    c.post("/_synapse/admin/v1/send_server_notice", &boss.token, unknown).await.expect_err(404, "M_NOT_FOUND");
    // Nobody can register the notices user.
    let body = json!({ "username": "server", "password": "a long password", "auth": { "type": "m.login.dummy" } });
    c.request(reqwest::Method::POST, "/register", None, Some(&body)).await.expect_err(400, "M_USER_IN_USE");
    // Erin is invited to the notices room, tagged m.server_notice; joining shows the notice.
    let (_, seen) = c.sync_until(&erin, Some(&since), std::time::Duration::from_secs(10), |s| {
        s["rooms"]["invite"].as_object().is_some_and(|rooms| !rooms.is_empty())
    }).await;
    let invite = seen.last().unwrap();
    let room_id = invite["rooms"]["invite"].as_object().unwrap().keys().next().unwrap().clone();
    let tags = c.get(&format!("/user/{}/rooms/{}/tags", enc(&erin.user_id), enc(&room_id)), &erin.token).await.ok();
    assert!(tags["tags"]["m.server_notice"].is_object(), "{tags:#}");
    c.join(&erin, &room_id).await.ok();
    let page = c.get(&format!("/rooms/{}/messages?dir=b&limit=5", enc(&room_id)), &erin.token).await.ok();
    let notice = page["chunk"].as_array().unwrap().iter().find(|e| e["type"] == "m.room.message").expect("the notice").clone();
    assert_eq!(notice["content"]["msgtype"], "m.server_notice");
    assert_eq!(notice["sender"], format!("@server:{}", server.node.server_name));
    // Only the server speaks in it; the next notice lands in the same room.
    c.send_with_txn(&erin, &room_id, "hello?", "t1").await.expect_err(403, "M_FORBIDDEN");
    let again = json!({ "user_id": erin.user_id, "content": { "body": "DC b is back." } });
    c.post("/_synapse/admin/v1/send_server_notice", &boss.token, again).await.ok();
    let page = c.get(&format!("/rooms/{}/messages?dir=b&limit=5", enc(&room_id)), &erin.token).await.ok();
    assert!(page["chunk"].as_array().unwrap().iter().any(|e| e["content"]["body"] == "DC b is back."));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openid_token_tells_a_widget_who_the_user_is() {
    let server = TestServer::start().await;
    let c = server.client();
    let fay = c.register_named("fay", "fay's password").await;
    let other = c.register_named("gus", "gus's password").await;
    let path = format!("/user/{}/openid/request_token", enc(&fay.user_id));
    c.post(&path, &other.token, json!({})).await.expect_err(403, "M_FORBIDDEN");
    let token = c.post(&path, &fay.token, json!({})).await.ok();
    assert_eq!(token["token_type"], "Bearer");
    assert_eq!(token["matrix_server_name"], server.node.server_name.as_str());
    assert!(token["expires_in"].as_u64().unwrap() > 0);
    let access = token["access_token"].as_str().unwrap();
    let info = c.request(reqwest::Method::GET, &format!("/_matrix/federation/v1/openid/userinfo?access_token={}", enc(access)), None, None).await.ok();
    assert_eq!(info["sub"], fay.user_id.as_str());
    c.request(reqwest::Method::GET, "/_matrix/federation/v1/openid/userinfo?access_token=guessed", None, None)
        .await
        .expect_err(401, "M_UNKNOWN_TOKEN");
    // The OpenID token is not an access token for the client API.
    c.get("/account/whoami", access).await.expect_err(401, "M_UNKNOWN_TOKEN");
}
