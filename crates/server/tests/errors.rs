//! Error responses: every failure is a Matrix error (`errcode` + `error`) with the spec's status,
//! plus a deterministic fuzz run that throws junk at the JSON endpoints and expects no 5xx.

mod common;

use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{Map, Number, Value, json};

async fn raw_json(c: &Client, method: Method, path: &str, token: Option<&str>, body: &[u8]) -> Resp {
    c.raw(method, path, token, "application/json", body.to_vec()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_wrongly_shaped_bodies() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let room_id = c.create_room(&alice, json!({})).await;
    let send = format!("/rooms/{}/send/m.room.message/{}", enc(&room_id), txn());

    // Not JSON at all.
    for (method, path) in [
        (Method::POST, "/createRoom".to_string()),
        (Method::PUT, send.clone()),
        (Method::POST, "/keys/query".to_string()),
        (Method::POST, format!("/user/{}/filter", enc(&alice.user_id))),
    ] {
        raw_json(&c, method.clone(), &path, Some(&alice.token), b"{not json").await.expect_err(400, "M_NOT_JSON");
        raw_json(&c, method, &path, Some(&alice.token), b"{\"a\": 1,}").await.expect_err(400, "M_NOT_JSON");
    }
    raw_json(&c, Method::POST, "/login", None, b"\xff\xfe garbage").await.expect_err(400, "M_NOT_JSON");

    // JSON of the wrong shape.
    raw_json(&c, Method::POST, "/login", None, br#"{"type": 5, "password": "x"}"#).await.expect_err(400, "M_BAD_JSON");
    raw_json(&c, Method::PUT, &send, Some(&alice.token), b"[1, 2, 3]").await.expect_err(400, "M_BAD_JSON");
    raw_json(&c, Method::PUT, &send, Some(&alice.token), b"\"a string\"").await.expect_err(400, "M_BAD_JSON");
    raw_json(&c, Method::POST, "/createRoom", Some(&alice.token), b"[]").await.expect_err(400, "M_BAD_JSON");
    raw_json(&c, Method::POST, "/keys/query", Some(&alice.token), br#"{"device_keys": "everyone"}"#).await.expect_err(400, "M_BAD_JSON");
    let typing = format!("/rooms/{}/typing/{}", enc(&room_id), enc(&alice.user_id));
    let wrong_type = raw_json(&c, Method::PUT, &typing, Some(&alice.token), br#"{"typing": "yes"}"#).await;
    assert!(matches!(wrong_type.errcode(), "M_BAD_JSON" | "M_MISSING_PARAM" | "M_INVALID_PARAM"), "{}", wrong_type.body);
    assert_eq!(wrong_type.status, 400);
    let bad_filter = c.post(&format!("/user/{}/filter", enc(&alice.user_id)), &alice.token, json!({ "room": { "timeline": { "limit": "ten" } } })).await;
    bad_filter.expect_err(400, "M_BAD_JSON");
    let bad_create = c.post("/createRoom", &alice.token, json!({ "invite": "not a list" })).await;
    assert_eq!(bad_create.status, 400, "{}", bad_create.body);
    assert!(matches!(bad_create.errcode(), "M_BAD_JSON" | "M_INVALID_PARAM"), "{}", bad_create.body);

    // Missing required fields.
    let missing = raw_json(&c, Method::POST, "/login", None, br#"{"password": "x"}"#).await;
    assert_eq!(missing.status, 400);
    assert!(matches!(missing.errcode(), "M_MISSING_PARAM" | "M_BAD_JSON"), "{}", missing.body);
    c.post(&format!("/rooms/{}/invite", enc(&room_id)), &alice.token, json!({})).await.expect_err(400, "M_MISSING_PARAM");
    let missing = c.post("/keys/claim", &alice.token, json!({})).await;
    assert_eq!(missing.status, 400);
    assert!(matches!(missing.errcode(), "M_MISSING_PARAM" | "M_BAD_JSON"), "{}", missing.body);
    let missing = c.put(&format!("/sendToDevice/m.x/{}", txn()), &alice.token, json!({})).await;
    assert!(matches!(missing.errcode(), "M_MISSING_PARAM" | "M_BAD_JSON"), "{}", missing.body);

    // Query-string errors the handlers check themselves.
    let bad_limit = c.get(&format!("/rooms/{}/messages?dir=b&limit=lots", enc(&room_id)), &alice.token).await;
    bad_limit.expect_err(400, "M_INVALID_PARAM");
    c.get("/sync?since=nonsense", &alice.token).await.expect_err(400, "M_INVALID_PARAM");
    c.get("/sync?timeout=soon", &alice.token).await.expect_err(400, "M_INVALID_PARAM");
    c.get("/sync?filter=%7B%22room%22%3A5%7D", &alice.token).await.expect_err(400, "M_BAD_JSON");
    c.get("/sync?filter=no_such_filter", &alice.token).await.expect_err(404, "M_NOT_FOUND");
}

/// Every error response must be a Matrix error: a JSON object with `errcode` and `error`. axum's own
/// extractor rejections (query string, path segments) answer in plain text instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_and_path_errors_are_matrix_errors() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let room_id = c.create_room(&alice, json!({})).await;
    let cases = [
        // A required query parameter is missing.
        (Method::GET, "/register/available".to_string()),
        (Method::GET, "/keys/changes".to_string()),
        // A query parameter of the wrong type.
        (Method::GET, "/_matrix/client/v1/media/thumbnail/test.local/abc?width=big&height=1".to_string()),
        (Method::GET, format!("/rooms/{}/context/%24x?limit=abc", enc(&room_id))),
        // A path segment that is not UTF-8.
        (Method::GET, "/rooms/%FF%FE/state".to_string()),
        (Method::PUT, format!("/rooms/{}/send/m.room.message/%FF", enc(&room_id))),
    ];
    let mut wrong = Vec::new();
    for (method, path) in cases {
        let body = (method == Method::PUT).then(|| json!({}));
        let response = c.request(method.clone(), &path, Some(&alice.token), body.as_ref()).await;
        if response.status != 400 || !response.errcode().starts_with("M_") {
            wrong.push(format!("{method} {path} -> {} {:?}", response.status, String::from_utf8_lossy(&response.raw)));
        }
    }
    assert!(wrong.is_empty(), "non-Matrix error responses:\n{}", wrong.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_errors() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;

    let none = c.request(Method::GET, "/account/whoami", None, None).await;
    none.expect_err(401, "M_MISSING_TOKEN");
    assert!(none.body["error"].is_string());
    let bad = c.get("/account/whoami", "hae_not_a_real_token").await;
    bad.expect_err(401, "M_UNKNOWN_TOKEN");
    assert_eq!(bad.body["soft_logout"], false);
    c.request(Method::POST, "/createRoom", None, Some(&json!({}))).await.expect_err(401, "M_MISSING_TOKEN");
    let empty = c.get("/sync", "").await;
    assert_eq!(empty.status, 401, "an empty token: {}", empty.body);
    assert!(matches!(empty.errcode(), "M_MISSING_TOKEN" | "M_UNKNOWN_TOKEN"), "{}", empty.body);
    let not_bearer = c.http.get(c.url("/account/whoami")).header("authorization", format!("Basic {}", alice.token));
    Client::finish(not_bearer).await.expect_err(401, "M_MISSING_TOKEN");
    // The token also works as a query parameter.
    let by_query = c.request(Method::GET, &format!("/account/whoami?access_token={}", alice.token), None, None).await.ok();
    assert_eq!(by_query["user_id"], alice.user_id.as_str());

    let login = |user: &str, password: &str| {
        json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": user }, "password": password })
    };
    c.request(Method::POST, "/login", None, Some(&login(&alice.localpart, "wrong"))).await.expect_err(403, "M_FORBIDDEN");
    c.request(Method::POST, "/login", None, Some(&login("nobody_by_that_name", "wrong"))).await.expect_err(403, "M_FORBIDDEN");
    // A full user id works as the identifier.
    c.request(Method::POST, "/login", None, Some(&login(&alice.user_id, &alice.password))).await.ok();
    let unsupported = c.request(Method::POST, "/login", None, Some(&json!({ "type": "m.login.sso", "token": "x" }))).await;
    assert_eq!(unsupported.status, 400, "{}", unsupported.body);
    assert!(unsupported.errcode().starts_with("M_"));
    // An unknown login token is the spec's 403.
    let token = c.request(Method::POST, "/login", None, Some(&json!({ "type": "m.login.token", "token": "x" }))).await;
    token.expect_err(403, "M_FORBIDDEN");
    let flows = c.request(Method::GET, "/login", None, None).await.ok();
    assert!(flows["flows"].as_array().unwrap().iter().any(|f| f["type"] == "m.login.password"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_errors() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;

    // Taken.
    let session = c.register_start(&alice.localpart, "whatever").await.body["session"].clone();
    let taken = c
        .request(
            Method::POST,
            "/register",
            None,
            Some(&json!({ "username": alice.localpart, "password": "whatever", "auth": { "type": "m.login.dummy", "session": session } })),
        )
        .await;
    taken.expect_err(400, "M_USER_IN_USE");
    let available = c.request(Method::GET, &format!("/register/available?username={}", alice.localpart), None, None).await;
    available.expect_err(400, "M_USER_IN_USE");
    let free = c.request(Method::GET, &format!("/register/available?username={}", unique_name("free")), None, None).await.ok();
    assert_eq!(free["available"], true);

    // Invalid names.
    for name in ["Bad Name!", "has space", "émoji", ""] {
        let response = c
            .request(Method::POST, "/register", None, Some(&json!({ "username": name, "password": "x", "auth": { "type": "m.login.dummy" } })))
            .await;
        if name.is_empty() {
            // An empty username may be refused or replaced by a generated one; it must not crash.
            assert!(response.status == 400 || response.status == 200 || response.status == 401, "{}", response.body);
            continue;
        }
        response.expect_err(400, "M_INVALID_USERNAME");
    }
    c.request(Method::GET, "/register/available?username=Bad%20Name!", None, None).await.expect_err(400, "M_INVALID_USERNAME");
    // Guests are not supported.
    let guest = c.request(Method::POST, "/register?kind=guest", None, Some(&json!({}))).await;
    guest.expect_err(403, "M_GUEST_ACCESS_FORBIDDEN");
    // An unknown auth type gets the flows again.
    let unknown = c
        .request(Method::POST, "/register", None, Some(&json!({ "username": unique_name("x"), "password": "x", "auth": { "type": "m.login.magic" } })))
        .await;
    assert_eq!(unknown.status, 401, "{}", unknown.body);
    assert!(unknown.body["flows"].is_array());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_permission_errors() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let mallory = c.register("mallory").await;
    let room_id = c.create_room(&alice, json!({ "preset": "private_chat" })).await;

    c.send_with_txn(&mallory, &room_id, "let me in", &txn()).await.expect_err(403, "M_FORBIDDEN");
    c.join(&mallory, &room_id).await.expect_err(403, "M_FORBIDDEN");
    c.get(&format!("/rooms/{}/messages?dir=b", enc(&room_id)), &mallory.token).await.expect_err(403, "M_FORBIDDEN");
    c.get(&format!("/rooms/{}/state", enc(&room_id)), &mallory.token).await.expect_err(403, "M_FORBIDDEN");
    c.get(&format!("/rooms/{}/joined_members", enc(&room_id)), &mallory.token).await.expect_err(403, "M_FORBIDDEN");
    c.put(&format!("/rooms/{}/state/m.room.topic/", enc(&room_id)), &mallory.token, json!({ "topic": "x" }))
        .await
        .expect_err(403, "M_FORBIDDEN");
    // A room that does not exist.
    let nowhere = c.send_with_txn(&alice, "!nowhere:test.local", "hello?", &txn()).await;
    assert!(nowhere.status == 403 || nowhere.status == 404, "{}", nowhere.body);
    c.join(&alice, "!nowhere:test.local").await.expect_err(404, "M_NOT_FOUND");
    c.join(&alice, "#nowhere:test.local").await.expect_err(404, "M_NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit() {
    let mut config = test_config();
    config.limits.max_body_bytes = 4096;
    let server = TestServer::with_config(config).await;
    let c = server.client();
    let alice = c.register("alice").await;
    let room_id = c.create_room(&alice, json!({})).await;

    let big = json!({ "name": "x".repeat(8000) });
    c.post("/createRoom", &alice.token, big.clone()).await.expect_err(413, "M_TOO_LARGE");
    c.post(&format!("/user/{}/filter", enc(&alice.user_id)), &alice.token, big.clone()).await.expect_err(413, "M_TOO_LARGE");
    c.post("/keys/query", &alice.token, json!({ "device_keys": {}, "pad": "x".repeat(8000) })).await.expect_err(413, "M_TOO_LARGE");
    // Events have their own limit (65536 bytes by default).
    let event = json!({ "msgtype": "m.text", "body": "x".repeat(70_000) });
    let path = format!("/rooms/{}/send/m.room.message/{}", enc(&room_id), txn());
    c.put(&path, &alice.token, event).await.expect_err(413, "M_TOO_LARGE");
    // The server is fine afterwards.
    c.send_text(&alice, &room_id, "still works").await;
}

/// A body far over the limit: the server answers M_TOO_LARGE and reads the rest of the body (up to
/// a bound) so that the client, still sending, gets the answer instead of a reset connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_bodies_far_over_the_limit_are_matrix_errors() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let room_id = c.create_room(&alice, json!({})).await;
    // Far over every limit.
    let huge = json!({ "msgtype": "m.text", "body": "x".repeat(3 * 1024 * 1024) });
    let path = format!("/rooms/{}/send/m.room.message/{}", enc(&room_id), txn());
    let response = c.put(&path, &alice.token, huge).await;
    assert_eq!(response.status, 413);
    assert_eq!(response.errcode(), "M_TOO_LARGE", "body: {:?}", String::from_utf8_lossy(&response.raw));
    let state = format!("/rooms/{}/state/m.room.topic/", enc(&room_id));
    let response = c.put(&state, &alice.token, json!({ "topic": "x".repeat(3 * 1024 * 1024) })).await;
    assert_eq!(response.status, 413);
    assert_eq!(response.errcode(), "M_TOO_LARGE", "body: {:?}", String::from_utf8_lossy(&response.raw));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn to_device_message_over_the_log_limit_is_too_large() {
    // NATS refuses messages over 1 MiB (its default max_payload); a to-device message whose request
    // body fits max_body_bytes but whose log entry does not is the client's fault: 413, not 503.
    let mut config = test_config();
    config.limits.max_body_bytes = 4 * 1024 * 1024;
    let server = TestServer::with_config(config).await;
    let c = server.client();
    let alice = c.register("alice").await;
    let bob = c.register("bob").await;
    let body = json!({ "messages": { bob.user_id.clone(): { bob.device_id.clone(): { "blob": "x".repeat(2 * 1024 * 1024) } } } });
    let response = c.put(&format!("/sendToDevice/m.x/{}", txn()), &alice.token, body).await;
    response.expect_err(413, "M_TOO_LARGE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_ip_rate_limit() {
    let mut config = test_config();
    config.rate_limits.enabled = true;
    config.rate_limits.per_ip_per_s = 0.5;
    config.rate_limits.per_ip_burst = 5.0;
    let server = TestServer::with_config(config).await;
    let c = server.client();
    let mut limited = None;
    for _ in 0..20 {
        let response = c.request(Method::GET, "/_matrix/client/versions", None, None).await;
        if response.status == 429 {
            limited = Some(response);
            break;
        }
        assert_eq!(response.status, 200);
    }
    let limited = limited.expect("a burst over the per-IP limit gets 429");
    limited.expect_err(429, "M_LIMIT_EXCEEDED");
    assert!(limited.body["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0), "{}", limited.body);
    assert!(limited.headers.contains_key("retry-after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_and_write_rate_limits() {
    let mut config = test_config();
    config.rate_limits.enabled = true;
    config.rate_limits.per_ip_per_s = 1000.0;
    config.rate_limits.per_ip_burst = 1000.0;
    config.rate_limits.logins_per_ip_per_s = 0.01;
    config.rate_limits.logins_per_ip_burst = 6.0;
    config.rate_limits.writes_per_user_per_s = 0.01;
    config.rate_limits.writes_per_user_burst = 5.0;
    let server = TestServer::with_config(config).await;
    let c = server.client();
    let alice = c.register("alice").await; // two login-limit tokens

    let bad_login = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": alice.localpart }, "password": "guess" });
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..10 {
        let response = c.request(Method::POST, "/login", None, Some(&bad_login)).await;
        statuses.push(response.status);
        if response.status == 429 {
            limited = Some(response);
            break;
        }
        response.expect_err(403, "M_FORBIDDEN");
    }
    let limited = limited.unwrap_or_else(|| panic!("password guessing is limited: {statuses:?}"));
    limited.expect_err(429, "M_LIMIT_EXCEEDED");
    assert!(limited.body["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0));

    // Writes per user.
    let room_id = c.create_room(&alice, json!({})).await;
    let mut limited = None;
    for i in 0..10 {
        let response = c.send_with_txn(&alice, &room_id, &format!("m{i}"), &txn()).await;
        if response.status == 429 {
            limited = Some(response);
            break;
        }
        assert_eq!(response.status, 200, "{}", response.body);
    }
    let limited = limited.expect("a burst of sends is limited");
    limited.expect_err(429, "M_LIMIT_EXCEEDED");
    assert!(limited.body["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0));
    // Reads are not writes.
    c.get("/account/whoami", &alice.token).await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_disabled() {
    let mut config = test_config();
    config.registration.enabled = false;
    let server = TestServer::with_config(config).await;
    let c = server.client();
    let response = c.register_start(&unique_name("nobody"), "pw").await;
    response.expect_err(403, "M_FORBIDDEN");
    let response = c
        .request(Method::POST, "/register", None, Some(&json!({ "username": unique_name("x"), "password": "pw", "auth": { "type": "m.login.dummy" } })))
        .await;
    response.expect_err(403, "M_FORBIDDEN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_token() {
    let mut config = test_config();
    config.registration.token = Some("open sesame".into());
    let server = TestServer::with_config(config).await;
    let c = server.client();
    let name = unique_name("invited");

    let first = c.register_start(&name, "pw").await;
    assert_eq!(first.status, 401, "{}", first.body);
    assert!(first.body["flows"].to_string().contains("m.login.registration_token"), "{}", first.body);
    let session = first.body["session"].clone();
    let attempt = |auth: Value| json!({ "username": name, "password": "pw", "auth": auth });

    // The dummy stage is not enough, and a wrong token fails.
    let dummy = c.request(Method::POST, "/register", None, Some(&attempt(json!({ "type": "m.login.dummy", "session": session })))).await;
    assert_eq!(dummy.status, 401, "{}", dummy.body);
    let wrong = c
        .request(Method::POST, "/register", None, Some(&attempt(json!({ "type": "m.login.registration_token", "token": "nope", "session": session }))))
        .await;
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert_eq!(wrong.errcode(), "M_FORBIDDEN");
    assert!(wrong.body["flows"].is_array());
    let missing = c
        .request(Method::POST, "/register", None, Some(&attempt(json!({ "type": "m.login.registration_token", "session": session }))))
        .await;
    assert!(missing.status == 401 || missing.status == 400, "{}", missing.body);
    // The right token works.
    let done = c
        .request(
            Method::POST,
            "/register",
            None,
            Some(&attempt(json!({ "type": "m.login.registration_token", "token": "open sesame", "session": session }))),
        )
        .await
        .ok();
    let token = done["access_token"].as_str().unwrap();
    assert_eq!(c.get("/account/whoami", token).await.ok()["user_id"], done["user_id"]);
    // Validity check endpoint, if offered, must not crash.
    let validity = c
        .request(Method::GET, "/_matrix/client/v1/register/m.login.registration_token/validity?token=nope", None, None)
        .await;
    assert!(validity.status < 500);
}

// ---- fuzzing ----

/// Field names the endpoints care about, so random objects sometimes hit real fields.
const VOCABULARY: &[&str] = &[
    "type", "auth", "session", "username", "password", "identifier", "user", "device_id", "initial_device_display_name",
    "inhibit_login", "preset", "name", "topic", "invite", "room_alias_name", "is_direct", "initial_state", "room_version",
    "creation_content", "power_level_content_override", "visibility", "msgtype", "body", "user_id", "reason", "room",
    "timeline", "limit", "types", "not_types", "senders", "rooms", "state", "lazy_load_members", "event_fields",
    "account_data", "presence", "device_keys", "one_time_keys", "fallback_keys", "keys", "signatures", "algorithms",
    "messages", "timeout", "typing", "thread_id", "actions", "conditions", "pattern", "kind", "key", "content",
    "state_key", "m.relates_to", "rel_type", "event_id", "token", "new_password", "logout_devices", "third_party_invite",
];

struct Fuzzer {
    rng: StdRng,
}

impl Fuzzer {
    fn string(&mut self) -> String {
        match self.rng.random_range(0..12) {
            0 => String::new(),
            1 => "x".repeat(self.rng.random_range(1000..20_000)),
            2 => "\u{0}\u{1}\u{7f}\u{feff}".into(),
            3 => "@user:test.local".into(),
            4 => "!room:test.local".into(),
            5 => "$event".into(),
            6 => "#alias:test.local".into(),
            7 => "🦀 ünïcödé 中文 \u{202e}".into(),
            8 => VOCABULARY[self.rng.random_range(0..VOCABULARY.len())].into(),
            9 => "m.login.dummy".into(),
            10 => format!("{}", self.rng.random::<i64>()),
            _ => {
                let len = self.rng.random_range(0..20);
                (0..len).map(|_| char::from(self.rng.random_range(0x20u8..0x7f))).collect()
            }
        }
    }

    fn number(&mut self) -> Value {
        match self.rng.random_range(0..7) {
            0 => json!(0),
            1 => json!(-1),
            2 => json!(u64::MAX),
            3 => json!(i64::MIN),
            4 => Number::from_f64(1e308).map(Value::Number).unwrap_or(Value::Null),
            5 => Number::from_f64(self.rng.random::<f64>() * 1000.0 - 500.0).map(Value::Number).unwrap_or(Value::Null),
            _ => json!(self.rng.random_range(0..100_000)),
        }
    }

    fn value(&mut self, depth: u32) -> Value {
        let leaf = depth >= 4 || self.rng.random_bool(0.4);
        if leaf {
            return match self.rng.random_range(0..5) {
                0 => Value::Null,
                1 => Value::Bool(self.rng.random()),
                2 => self.number(),
                _ => Value::String(self.string()),
            };
        }
        if self.rng.random_bool(0.5) {
            let len = self.rng.random_range(0..6);
            Value::Array((0..len).map(|_| self.value(depth + 1)).collect())
        } else {
            Value::Object(self.object(depth + 1))
        }
    }

    fn key(&mut self) -> String {
        if self.rng.random_bool(0.7) { VOCABULARY[self.rng.random_range(0..VOCABULARY.len())].to_string() } else { self.string() }
    }

    fn object(&mut self, depth: u32) -> Map<String, Value> {
        let len = self.rng.random_range(0..6);
        (0..len).map(|_| (self.key(), self.value(depth + 1))).collect()
    }

    /// Replaces, removes or adds fields somewhere in `value`.
    fn mutate(&mut self, value: &mut Value, depth: u32) {
        match value {
            Value::Object(map) if !map.is_empty() && depth < 5 => {
                let keys: Vec<String> = map.keys().cloned().collect();
                let key = keys[self.rng.random_range(0..keys.len())].clone();
                match self.rng.random_range(0..4) {
                    0 => {
                        map.remove(&key);
                    }
                    1 => {
                        map.insert(key, self.value(depth + 1));
                    }
                    2 => {
                        let new_key = self.key();
                        map.insert(new_key, self.value(depth + 1));
                    }
                    _ => self.mutate(map.get_mut(&key).unwrap(), depth + 1),
                }
            }
            Value::Array(items) if !items.is_empty() && depth < 5 => {
                let index = self.rng.random_range(0..items.len());
                self.mutate(&mut items[index], depth + 1);
            }
            other => *other = self.value(depth + 1),
        }
    }

    /// One body for an endpoint whose well-formed body is `template`.
    fn body(&mut self, template: &Value) -> Vec<u8> {
        match self.rng.random_range(0..10) {
            0 => {
                let len = self.rng.random_range(0..200);
                (0..len).map(|_| self.rng.random::<u8>()).collect()
            }
            1 => {
                // Deep nesting, beyond what a JSON parser should recurse into.
                let depth = self.rng.random_range(50..400);
                let mut text = "[".repeat(depth);
                if self.rng.random_bool(0.5) {
                    text.push_str(&"]".repeat(depth));
                }
                text.into_bytes()
            }
            2 => serde_json::to_vec(&self.value(0)).unwrap(),
            3 | 4 => serde_json::to_vec(&Value::Object(self.object(0))).unwrap(),
            5..=7 => {
                let mut body = template.clone();
                for _ in 0..self.rng.random_range(1..4) {
                    self.mutate(&mut body, 0);
                }
                serde_json::to_vec(&body).unwrap()
            }
            _ => {
                let mut text = serde_json::to_vec(template).unwrap();
                let cut = self.rng.random_range(0..text.len().max(1));
                text.truncate(cut);
                text
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzed_bodies_never_cause_server_errors() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let bob = c.register("bob").await;
    let room_id = c.create_room(&alice, json!({ "preset": "public_chat" })).await;
    c.join(&bob, &room_id).await.ok();
    let event_id = c.send_text(&bob, &room_id, "target").await;
    let uid = enc(&alice.user_id);
    let room = enc(&room_id);

    let device_keys = json!({
        "user_id": alice.user_id, "device_id": alice.device_id, "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
        "keys": { format!("curve25519:{}", alice.device_id): "c", format!("ed25519:{}", alice.device_id): "e" },
        "signatures": { alice.user_id.clone(): { format!("ed25519:{}", alice.device_id): "s" } },
    });
    // (method, path, token?, well-formed body). Paths with {txn} get a fresh transaction id per call.
    let endpoints: Vec<(Method, String, bool, Value)> = vec![
        (Method::POST, "/register".into(), false,
            json!({ "username": "fuzz_user", "password": "pw", "auth": { "type": "m.login.dummy", "session": "s" }, "inhibit_login": false })),
        (Method::POST, "/login".into(), false,
            json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": alice.localpart }, "password": alice.password })),
        (Method::POST, "/createRoom".into(), true, json!({
            "preset": "private_chat", "name": "n", "topic": "t", "invite": [bob.user_id], "room_alias_name": "fuzz_alias",
            "is_direct": false, "room_version": "10", "creation_content": { "m.federate": false },
            "initial_state": [{ "type": "m.room.guest_access", "state_key": "", "content": { "guest_access": "can_join" } }],
            "power_level_content_override": { "users_default": 0 },
        })),
        (Method::PUT, format!("/rooms/{room}/send/m.room.message/{{txn}}"), true, json!({ "msgtype": "m.text", "body": "hi", "m.relates_to": { "rel_type": "m.thread", "event_id": event_id } })),
        (Method::PUT, format!("/rooms/{room}/state/m.room.topic/"), true, json!({ "topic": "t" })),
        (Method::POST, format!("/rooms/{room}/invite"), true, json!({ "user_id": bob.user_id, "reason": "r" })),
        (Method::POST, format!("/join/{room}"), true, json!({ "reason": "r" })),
        (Method::POST, format!("/user/{uid}/filter"), true,
            json!({ "room": { "timeline": { "limit": 5, "types": ["m.room.message"] }, "state": { "lazy_load_members": true } }, "event_fields": ["content.body"] })),
        (Method::PUT, format!("/user/{uid}/account_data/com.example.fuzz"), true, json!({ "k": "v" })),
        (Method::POST, "/keys/upload".into(), true, json!({
            "device_keys": device_keys,
            "one_time_keys": { "signed_curve25519:AAAA": { "key": "k", "signatures": {} } },
            "fallback_keys": { "signed_curve25519:FFFF": { "key": "f", "fallback": true } },
        })),
        (Method::POST, "/keys/query".into(), true, json!({ "device_keys": { alice.user_id.clone(): [], bob.user_id.clone(): [bob.device_id] }, "timeout": 1000 })),
        (Method::POST, "/keys/claim".into(), true, json!({ "one_time_keys": { alice.user_id.clone(): { alice.device_id.clone(): "signed_curve25519" } } })),
        (Method::PUT, "/sendToDevice/m.test/{txn}".into(), true, json!({ "messages": { bob.user_id.clone(): { bob.device_id.clone(): { "a": 1 } } } })),
        (Method::POST, format!("/rooms/{room}/receipt/m.read/{}", enc(&event_id)), true, json!({ "thread_id": "main" })),
        (Method::POST, format!("/rooms/{room}/read_markers"), true, json!({ "m.fully_read": event_id, "m.read": event_id })),
        (Method::PUT, format!("/rooms/{room}/typing/{uid}"), true, json!({ "typing": true, "timeout": 1000 })),
        (Method::PUT, "/pushrules/global/override/fuzz_rule".into(), true,
            json!({ "actions": ["notify", { "set_tweak": "highlight" }], "conditions": [{ "kind": "event_match", "key": "content.body", "pattern": "x" }] })),
        (Method::PUT, "/pushrules/global/content/fuzz_content".into(), true, json!({ "actions": ["notify"], "pattern": "cake" })),
        (Method::PUT, "/pushrules/global/override/fuzz_rule/actions".into(), true, json!({ "actions": ["dont_notify"] })),
        (Method::POST, "/pushers/set".into(), true, json!({
            "pushkey": "k", "kind": "http", "app_id": "a", "app_display_name": "A", "device_display_name": "D", "lang": "en",
            "data": { "url": "https://example.com/_matrix/push/v1/notify" },
        })),
        (Method::POST, "/keys/device_signing/upload".into(), true,
            json!({ "master_key": { "user_id": alice.user_id, "usage": ["master"], "keys": { "ed25519:M": "M" } } })),
        (Method::POST, "/keys/signatures/upload".into(), true,
            json!({ alice.user_id.clone(): { alice.device_id.clone(): { "signatures": { alice.user_id.clone(): { "ed25519:M": "s" } } } } })),
    ];

    let mut fuzzer = Fuzzer { rng: StdRng::seed_from_u64(0x4861_6574_6165) };
    let mut failures = Vec::new();
    let mut requests = 0;
    let mut statuses: std::collections::BTreeMap<(String, u16), usize> = std::collections::BTreeMap::new();
    for round in 0..30 {
        for (method, path, authed, template) in &endpoints {
            let body = if round == 0 { serde_json::to_vec(template).unwrap() } else { fuzzer.body(template) };
            let path = path.replace("{txn}", &txn());
            let token = authed.then_some(alice.token.as_str());
            let response = c.raw(method.clone(), &path, token, "application/json", body.clone()).await;
            requests += 1;
            *statuses.entry((format!("{method} {}", path.split('/').take(3).collect::<Vec<_>>().join("/")), response.status)).or_default() += 1;
            let shown = String::from_utf8_lossy(&body).chars().take(300).collect::<String>();
            let answer = String::from_utf8_lossy(&response.raw).chars().take(300).collect::<String>();
            if response.status >= 500 {
                failures.push(format!("{method} {path} -> {} {answer}\n    body: {shown}", response.status));
            } else if (400..500).contains(&response.status) {
                let is_uia = response.status == 401 && response.body["flows"].is_array();
                let errcode_ok = response.body["errcode"].as_str().is_some_and(|e| e.starts_with("M_"));
                if !errcode_ok && !is_uia {
                    failures.push(format!("{method} {path} -> {} without a Matrix errcode: {answer}\n    body: {shown}", response.status));
                }
            } else if !(200..300).contains(&response.status) {
                failures.push(format!("{method} {path} -> unexpected {} {answer}\n    body: {shown}", response.status));
            } else if !response.body.is_object() {
                failures.push(format!("{method} {path} -> {} with a non-JSON-object body: {answer}", response.status));
            }
        }
    }
    eprintln!("fuzz statuses (endpoint, status) -> count: {statuses:#?}");
    assert!(requests >= 400, "{requests}");
    // The run must reach the handlers, not only the JSON parser.
    assert!(statuses.iter().filter(|((_, status), _)| *status == 200).count() >= 15, "{statuses:?}");
    assert!(failures.is_empty(), "{} of {requests} fuzzed requests misbehaved:\n{}", failures.len(), failures.join("\n"));

    // The server still works for everyone.
    c.request(Method::GET, "/_matrix/client/versions", None, None).await.ok();
    c.get("/account/whoami", &alice.token).await.ok();
    c.send_text(&alice, &room_id, "after the storm").await;
    let sync = c.sync(&bob, None, 0).await;
    assert!(sync["rooms"]["join"].get(&room_id).is_some());
    let fresh = c.register("after").await;
    c.get("/account/whoami", &fresh.token).await.ok();
}
