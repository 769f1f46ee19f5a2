//! The last pieces of the client surface of issue 13: refresh tokens for Matrix API logins
//! (`POST /refresh`), login tokens (`POST /v1/login/get_token`, `m.login.token`) and URL previews.
//! Every test runs against a real nats-server; the cross-DC cases start a second node on the same
//! NATS, as a node of another DC would be. Bad input must get a Matrix error, never a 5xx.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

/// Registers with `refresh_token: true` (through the user-interactive auth dance).
async fn register_refreshable(c: &Client, prefix: &str) -> (User, Value) {
    let localpart = unique_name(prefix);
    let body = json!({
        "username": localpart,
        "password": PASSWORD,
        "refresh_token": true,
        "auth": { "type": "m.login.dummy" },
    });
    let done = c.request(Method::POST, "/register", None, Some(&body)).await.ok();
    let user = User {
        user_id: done["user_id"].as_str().unwrap().to_string(),
        localpart,
        password: PASSWORD.to_string(),
        token: done["access_token"].as_str().unwrap().to_string(),
        device_id: done["device_id"].as_str().unwrap().to_string(),
    };
    (user, done)
}

async fn login_body(c: &Client, body: Value) -> Resp {
    c.request(Method::POST, "/login", None, Some(&body)).await
}

fn password_login(user: &User, extra: Value) -> Value {
    let mut body = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": user.localpart },
        "password": user.password,
    });
    for (key, value) in extra.as_object().unwrap() {
        body[key] = value.clone();
    }
    body
}

async fn refresh(c: &Client, refresh_token: &str) -> Resp {
    c.request(Method::POST, "/refresh", None, Some(&json!({ "refresh_token": refresh_token }))).await
}

fn text(body: &Value, key: &str) -> String {
    body[key].as_str().unwrap_or_else(|| panic!("no {key} in {body}")).to_string()
}

#[track_caller]
fn expect_logged_out(response: &Resp) {
    response.expect_err(401, "M_UNKNOWN_TOKEN");
    assert_eq!(response.body["soft_logout"], false, "{}", response.body);
}

// ---- refresh tokens ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_tokens_rotate_and_access_tokens_expire_into_soft_logout() {
    // Node A gives refreshable logins 2 s access tokens; node B (another DC) the default 300 s,
    // so that the rotation checks below never race an expiry.
    let mut config = test_config();
    config.login.refreshable_access_token_lifetime_s = 2;
    let server = TestServer::with_config(config).await;
    let other = Node::start(&server.nats, test_config()).await;
    let c = server.client();
    let b = c.at(&other.base);
    let (user, registered) = register_refreshable(&c, "fresh").await;
    assert_eq!(registered["expires_in_ms"], 2000);
    let refresh1 = text(&registered, "refresh_token");
    assert_eq!(c.get("/account/whoami", &user.token).await.ok()["device_id"], user.device_id.as_str());

    // A login without refresh_token keeps a token that does not expire, and gets no refresh token.
    let plain = login_body(&c, password_login(&user, json!({}))).await.ok();
    assert!(plain.get("refresh_token").is_none() && plain.get("expires_in_ms").is_none(), "{plain}");

    // The access token expires: M_UNKNOWN_TOKEN with soft_logout, the session is not over.
    let expired = eventually(Duration::from_secs(10), "the access token expires", || async {
        let response = c.get("/account/whoami", &user.token).await;
        (response.status == 401).then_some(response)
    })
    .await;
    expired.expect_err(401, "M_UNKNOWN_TOKEN");
    assert_eq!(expired.body["soft_logout"], true, "{}", expired.body);
    assert_eq!(c.get("/account/whoami", &text(&plain, "access_token")).await.status, 200);

    // Refreshing rotates both tokens; the new access token belongs to the same device.
    let second = refresh(&b, &refresh1).await.ok();
    let (access2, refresh2) = (text(&second, "access_token"), text(&second, "refresh_token"));
    assert_eq!(second["expires_in_ms"], 300_000);
    assert_ne!(refresh2, refresh1);
    assert_eq!(b.get("/account/whoami", &access2).await.ok()["device_id"], user.device_id.as_str());

    // Within the grace period the previous refresh token yields the same successor again (a
    // client that lost the answer), with a fresh access token.
    let again = refresh(&b, &refresh1).await.ok();
    assert_eq!(text(&again, "refresh_token"), refresh2);
    let access3 = text(&again, "access_token");
    assert_eq!(b.get("/account/whoami", &access3).await.status, 200);

    // Using the successor spends the first token; the access tokens issued before stop working.
    let third =
        b.request(Method::POST, "/_matrix/client/v1/refresh", None, Some(&json!({ "refresh_token": refresh2 }))).await.ok();
    let (access4, refresh3) = (text(&third, "access_token"), text(&third, "refresh_token"));
    for old in [&access2, &access3] {
        expect_logged_out(&b.get("/account/whoami", old).await);
    }
    // A spent token within the grace period (a late copy of an old request): refused, and the
    // session goes on.
    expect_logged_out(&refresh(&b, &refresh1).await);
    assert_eq!(b.get("/account/whoami", &access4).await.status, 200);
    assert_eq!(refresh(&b, &refresh3).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_refresh_token_after_the_grace_period_logs_the_device_out() {
    let mut config = test_config();
    config.oauth.refresh_grace_s = 1;
    let server = TestServer::with_config(config).await;
    let c = server.client();
    let user = c.register("reuse").await;
    let login = login_body(&c, password_login(&user, json!({ "refresh_token": true, "device_id": "REUSED" }))).await.ok();
    let second = refresh(&c, &text(&login, "refresh_token")).await.ok();
    let third = refresh(&c, &text(&second, "refresh_token")).await.ok();
    // The first token was spent while this refresh ran, so before this instant.
    let spent_at = std::time::Instant::now();
    let access = text(&third, "access_token");
    assert_eq!(c.get("/account/whoami", &access).await.status, 200);
    eventually(Duration::from_secs(5), "the grace period passes", || async {
        (spent_at.elapsed() > Duration::from_millis(1500)).then_some(())
    })
    .await;
    // The first token, spent long enough ago, comes back: someone else holds the chain.
    expect_logged_out(&refresh(&c, &text(&login, "refresh_token")).await);
    expect_logged_out(&c.get("/account/whoami", &access).await);
    expect_logged_out(&refresh(&c, &text(&third, "refresh_token")).await);
    let devices = c.get("/devices", &user.token).await.ok();
    assert!(!devices["devices"].as_array().unwrap().iter().any(|d| d["device_id"] == "REUSED"), "{devices}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_at_one_node_is_used_at_another() {
    let server = TestServer::start().await;
    let other = Node::start(&server.nats, test_config()).await;
    let at_a = server.client();
    let at_b = at_a.at(&other.base);
    let (user, registered) = register_refreshable(&at_a, "twodc").await;
    // Node B caches the first access token.
    assert_eq!(at_b.get("/account/whoami", &user.token).await.status, 200);

    let second = refresh(&at_a, &text(&registered, "refresh_token")).await.ok();
    let access2 = text(&second, "access_token");
    assert_eq!(at_b.get("/account/whoami", &access2).await.ok()["device_id"], user.device_id.as_str());
    // The replaced token stops working at B too (B drops it from its cache).
    eventually(Duration::from_secs(10), "node B refuses the replaced access token", || async {
        (at_b.get("/account/whoami", &user.token).await.status == 401).then_some(())
    })
    .await;

    // The next refresh at B; a late copy of it at A gets the same successor.
    let third = refresh(&at_b, &text(&second, "refresh_token")).await.ok();
    let retried = refresh(&at_a, &text(&second, "refresh_token")).await.ok();
    assert_eq!(text(&retried, "refresh_token"), text(&third, "refresh_token"));
    assert_eq!(at_a.get("/account/whoami", &text(&third, "access_token")).await.ok()["user_id"], user.user_id.as_str());
    let fourth = refresh(&at_a, &text(&third, "refresh_token")).await.ok();
    assert_eq!(at_b.get("/account/whoami", &text(&fourth, "access_token")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_device_deletion_and_a_new_login_end_the_refresh_chain() {
    let server = TestServer::start().await;
    let c = server.client();
    let user = c.register("ends").await;
    let refreshable = |device: &str| password_login(&user, json!({ "refresh_token": true, "device_id": device }));

    let one = login_body(&c, refreshable("ONE")).await.ok();
    c.post("/logout", &text(&one, "access_token"), json!({})).await.ok();
    expect_logged_out(&refresh(&c, &text(&one, "refresh_token")).await);

    let two = login_body(&c, refreshable("TWO")).await.ok();
    let first_auth = c.request(Method::DELETE, "/devices/TWO", Some(&user.token), Some(&json!({}))).await;
    assert_eq!(first_auth.status, 401, "{}", first_auth.body);
    let auth = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": user.localpart },
        "password": user.password,
        "session": first_auth.body["session"],
    });
    c.request(Method::DELETE, "/devices/TWO", Some(&user.token), Some(&json!({ "auth": auth }))).await.ok();
    expect_logged_out(&refresh(&c, &text(&two, "refresh_token")).await);

    // Logging in again with the same device id replaces the device's tokens, refresh token too.
    let three = login_body(&c, refreshable("THREE")).await.ok();
    let replaced = login_body(&c, refreshable("THREE")).await.ok();
    expect_logged_out(&refresh(&c, &text(&three, "refresh_token")).await);
    expect_logged_out(&c.get("/account/whoami", &text(&three, "access_token")).await);
    let refreshed = refresh(&c, &text(&replaced, "refresh_token")).await.ok();

    // Logging out everywhere ends the rest.
    c.post("/logout/all", &text(&refreshed, "access_token"), json!({})).await.ok();
    expect_logged_out(&refresh(&c, &text(&refreshed, "refresh_token")).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_refuses_bad_input_with_matrix_errors() {
    let server = TestServer::start().await;
    let c = server.client();
    c.request(Method::POST, "/refresh", None, Some(&json!({}))).await.expect_err(400, "M_MISSING_PARAM");
    c.request(Method::POST, "/refresh", None, Some(&json!({ "refresh_token": 7 }))).await.expect_err(400, "M_BAD_JSON");
    c.raw(Method::POST, "/refresh", None, "application/json", b"{not json".to_vec()).await.expect_err(400, "M_NOT_JSON");
    for token in ["", "nonsense", "haes_ABCDEFGHIJKLMNOP_secret", "haes_short_secret", "haer_ABCDEFGHIJKLMNOPQRSTUVWX_y"] {
        expect_logged_out(&refresh(&c, token).await);
    }
}

// ---- login tokens ----

async fn get_login_token(c: &Client, user: &User, base: Option<&str>) -> Value {
    let c = match base {
        Some(base) => c.at(base),
        None => c.clone(),
    };
    let path = "/_matrix/client/v1/login/get_token";
    let first = c.post(path, &user.token, json!({})).await;
    assert_eq!(first.status, 401, "{}", first.body);
    let auth = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": user.localpart },
        "password": user.password,
        "session": first.body["session"],
    });
    c.post(path, &user.token, json!({ "auth": auth })).await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_tokens_log_another_device_in_once() {
    let server = TestServer::start().await;
    let mut short = test_config();
    short.login.login_token_lifetime_s = 1;
    let other = Node::start(&server.nats, short).await;
    let c = server.client();
    let user = c.register("qr").await;

    let flows = c.request(Method::GET, "/login", None, None).await.ok();
    assert!(flows["flows"].as_array().unwrap().contains(&json!({ "type": "m.login.token", "get_login_token": true })), "{flows}");
    let capabilities = c.get("/capabilities", &user.token).await.ok();
    assert_eq!(capabilities["capabilities"]["m.get_login_token"]["enabled"], true);

    // User-interactive auth, every time: the flows first, a wrong password refused.
    let path = "/_matrix/client/v1/login/get_token";
    c.request(Method::POST, path, None, Some(&json!({}))).await.expect_err(401, "M_MISSING_TOKEN");
    let first = c.post(path, &user.token, json!({})).await;
    assert_eq!(first.status, 401);
    assert_eq!(first.body["flows"], json!([{ "stages": ["m.login.password"] }]));
    let wrong = json!({ "auth": {
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": user.localpart },
        "password": "wrong",
        "session": first.body["session"],
    }});
    let refused = c.post(path, &user.token, wrong).await;
    refused.expect_err(401, "M_FORBIDDEN");
    assert!(refused.body.get("flows").is_some());

    let issued = get_login_token(&c, &user, None).await;
    assert_eq!(issued["expires_in_ms"], 120_000);
    let token = text(&issued, "login_token");
    let login = |token: String, extra: Value| {
        let mut body = json!({ "type": "m.login.token", "token": token });
        for (key, value) in extra.as_object().unwrap() {
            body[key] = value.clone();
        }
        body
    };
    let done = login_body(&c, login(token.clone(), json!({ "refresh_token": true }))).await.ok();
    assert_eq!(done["user_id"], user.user_id.as_str());
    assert_ne!(done["device_id"], user.device_id.as_str());
    assert!(done["refresh_token"].is_string(), "{done}");
    assert_eq!(c.get("/account/whoami", &text(&done, "access_token")).await.ok()["user_id"], user.user_id.as_str());
    // Single use, at every node.
    login_body(&c, login(token.clone(), json!({}))).await.expect_err(403, "M_FORBIDDEN");
    login_body(&c.at(&other.base), login(token, json!({}))).await.expect_err(403, "M_FORBIDDEN");

    // Two nodes racing for one token: exactly one login.
    let raced = text(&get_login_token(&c, &user, None).await, "login_token");
    let at_other = c.at(&other.base);
    let (a, b) = tokio::join!(login_body(&c, login(raced.clone(), json!({}))), login_body(&at_other, login(raced, json!({}))));
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(statuses, [200, 403], "{} / {}", a.body, b.body);

    // A token from the node configured with one second expires.
    let expiring = get_login_token(&c, &user, Some(&other.base)).await;
    assert_eq!(expiring["expires_in_ms"], 1000);
    let issued_at = std::time::Instant::now();
    eventually(Duration::from_secs(5), "the login token expires", || async {
        (issued_at.elapsed() > Duration::from_millis(1200)).then_some(())
    })
    .await;
    login_body(&c, login(text(&expiring, "login_token"), json!({}))).await.expect_err(403, "M_FORBIDDEN");

    // Bad input.
    login_body(&c, json!({ "type": "m.login.token" })).await.expect_err(400, "M_MISSING_PARAM");
    login_body(&c, login("garbage".into(), json!({}))).await.expect_err(403, "M_FORBIDDEN");
    login_body(&c, login("x".repeat(5000), json!({}))).await.expect_err(403, "M_FORBIDDEN");
}

// ---- URL previews ----

/// A page server on 127.0.0.1 (a minimal HTTP/1.1 responder) that counts the requests it gets.
async fn page_server() -> (String, u16, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(serve_pages(listener, hits.clone()));
    (format!("http://127.0.0.1:{port}"), port, hits)
}

async fn serve_pages(listener: tokio::net::TcpListener, hits: Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    while let Ok((mut socket, _)) = listener.accept().await {
        hits.fetch_add(1, Ordering::SeqCst);
        let mut buffer = [0u8; 4096];
        let _ = socket.read(&mut buffer).await;
        let body = r#"<html><head><meta property="og:title" content="Local"></head></html>"#;
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = socket.write_all(answer.as_bytes()).await;
    }
}

fn preview_path(url: &str) -> String {
    format!("/_matrix/client/v1/media/preview_url?url={}", enc(url))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_previews_are_off_by_default() {
    let server = TestServer::start().await;
    let c = server.client();
    let user = c.register("nopreview").await;
    c.get(&preview_path("https://example.org/"), &user.token).await.expect_err(404, "M_UNRECOGNIZED");
    c.get(&format!("/_matrix/media/v3/preview_url?url={}", enc("https://example.org/")), &user.token)
        .await
        .expect_err(404, "M_UNRECOGNIZED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_previews_never_reach_loopback_or_private_networks() {
    let mut config = test_config();
    config.url_preview.enabled = true;
    config.url_preview.denied_hosts = vec!["denied.example".into()];
    let server = TestServer::with_config(config).await;
    let c = server.client();
    let user = c.register("preview").await;
    let (base, port, hits) = page_server().await;

    c.request(Method::GET, &preview_path(&format!("{base}/")), None, None).await.expect_err(401, "M_MISSING_TOKEN");
    c.get("/_matrix/client/v1/media/preview_url", &user.token).await.expect_err(400, "M_MISSING_PARAM");
    for bad in ["not a url", "ftp://example.org/file", "file:///etc/passwd", "mailto:someone@example.org"] {
        c.get(&preview_path(bad), &user.token).await.expect_err(400, "M_INVALID_PARAM");
    }
    c.get(&preview_path(&format!("https://example.org/{}", "a".repeat(3000))), &user.token)
        .await
        .expect_err(400, "M_INVALID_PARAM");
    let refused = [
        format!("{base}/page"),
        format!("http://localhost:{port}/page"),
        format!("http://[::1]:{port}/page"),
        format!("http://[::ffff:127.0.0.1]:{port}/page"),
        format!("http://0.0.0.0:{port}/page"),
        "http://10.0.0.1/".to_string(),
        "http://192.168.1.1/".to_string(),
        "http://172.16.5.4/".to_string(),
        "http://100.64.0.1/".to_string(),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://[fd00::1]/".to_string(),
        "http://[fe80::1]/".to_string(),
        "http://224.0.0.1/".to_string(),
        "http://192.0.2.1/".to_string(),
        "https://denied.example/".to_string(),
        "https://www.denied.example/".to_string(),
    ];
    for url in &refused {
        c.get(&preview_path(url), &user.token).await.expect_err(403, "M_FORBIDDEN");
    }
    // The deprecated path answers the same way.
    c.get(&format!("/_matrix/media/v3/preview_url?url={}", enc(&format!("{base}/"))), &user.token)
        .await
        .expect_err(403, "M_FORBIDDEN");
    assert_eq!(hits.load(Ordering::SeqCst), 0, "no request reached the local server");
}
