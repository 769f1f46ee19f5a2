//! Test harness: a private nats-server, haetae nodes on top of it, and a small Matrix client.
//!
//! Every test starts its own nats-server (in a temporary directory) and its own node(s), so tests
//! are independent and can run in parallel. Nothing here sleeps for a fixed time: readiness and
//! eventual conditions are polled with deadlines.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use haetae_server::ServerConfig;
use haetae_store::launcher::{NatsProcess, ServerSpec};
use haetae_store::{Store, StoreConfig};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Upper bound for any single HTTP request a test makes (long-polls set their own, shorter, timeout).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound for starting nats-server, connecting the store, or starting a node.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A private nats-server, killed (and its directory removed) when dropped.
pub struct Nats {
    process: NatsProcess,
    _dir: tempfile::TempDir,
}

impl Nats {
    pub async fn start() -> Nats {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut spec = ServerSpec::single(dir.path());
        // Tests do not need every write fsynced; it only makes them slower.
        spec.sync_always = false;
        let process = NatsProcess::start(spec, START_TIMEOUT).await.expect("nats-server starts");
        Nats { process, _dir: dir }
    }

    pub fn url(&self) -> &str {
        self.process.url()
    }

    pub async fn store(&self) -> Store {
        let connect = Store::connect(self.url(), StoreConfig { replicas: 1, partitions: 4, ..Default::default() });
        tokio::time::timeout(START_TIMEOUT, connect).await.expect("store connects in time").expect("store connects")
    }
}

/// The configuration tests use: fast password hashing, no rate limits.
pub fn test_config() -> ServerConfig {
    let mut config = ServerConfig { server_name: "test.local".into(), ..ServerConfig::default() };
    config.password_hashing.memory_kib = 64;
    config.password_hashing.iterations = 1;
    config.password_hashing.parallelism = 1;
    config.rate_limits.enabled = false;
    config.limits.max_sync_timeout_ms = 30_000;
    config
}

/// One running haetae node serving HTTP on a local port.
pub struct Node {
    pub base: String,
    pub server_name: String,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Node {
    /// Connects a fresh store to `nats`, starts a node and waits until it answers HTTP.
    pub async fn start(nats: &Nats, config: ServerConfig) -> Node {
        let store = nats.store().await;
        let server_name = config.server_name.clone();
        let node = tokio::time::timeout(START_TIMEOUT, haetae_server::Node::start(store, config))
            .await
            .expect("node starts in time")
            .expect("node starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("local addr"));
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = rx.await;
            };
            if let Err(error) = node.serve(listener, shutdown).await {
                eprintln!("node stopped with an error: {error}");
            }
        });
        let node = Node { base, server_name, shutdown: Some(tx), task: Some(task) };
        node.wait_ready().await;
        node
    }

    async fn wait_ready(&self) {
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let answered = http
                .get(format!("{}/_matrix/client/versions", self.base))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if answered {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "node at {} did not become ready", self.base);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops serving: graceful shutdown first, then the task is aborted if connections linger.
    pub async fn stop(mut self) {
        self.halt().await;
    }

    async fn halt(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(Duration::from_secs(3), &mut task).await.is_err()
        {
            task.abort();
            let _ = task.await;
        }
    }

    pub fn client(&self) -> Client {
        Client::new(&self.base, &self.server_name)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A nats-server with one node on it: what most tests need.
pub struct TestServer {
    pub node: Node,
    pub nats: Nats,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::with_config(test_config()).await
    }

    pub async fn with_config(config: ServerConfig) -> TestServer {
        let nats = Nats::start().await;
        let node = Node::start(&nats, config).await;
        TestServer { node, nats }
    }

    pub fn client(&self) -> Client {
        self.node.client()
    }
}

/// A response: status, headers and the body parsed as JSON (Null when it is not JSON).
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub raw: Vec<u8>,
}

impl Resp {
    pub fn errcode(&self) -> &str {
        self.body["errcode"].as_str().unwrap_or("")
    }

    /// Asserts a 200 and returns the body.
    #[track_caller]
    pub fn ok(self) -> Value {
        assert_eq!(self.status, 200, "expected 200, got {}: {}", self.status, self.body);
        self.body
    }

    /// Asserts a status and errcode.
    #[track_caller]
    pub fn expect_err(&self, status: u16, errcode: &str) {
        assert_eq!((self.status, self.errcode()), (status, errcode), "unexpected response: {}", self.body);
    }
}

/// A small Matrix client: one HTTP connection pool, one base URL.
#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub server_name: String,
    pub http: reqwest::Client,
}

static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// A unique, valid username with a readable prefix.
pub fn unique_name(prefix: &str) -> String {
    let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}_{}_{n}_{nanos:x}", std::process::id())
}

/// A unique transaction id.
pub fn txn() -> String {
    unique_name("txn")
}

/// Percent-encodes a path segment (room ids, aliases, user ids and event ids hold `!#@:$`).
pub fn enc(segment: &str) -> String {
    let mut out = String::new();
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A logged-in user.
#[derive(Clone, Debug)]
pub struct User {
    pub user_id: String,
    pub localpart: String,
    pub password: String,
    pub token: String,
    pub device_id: String,
}

impl Client {
    pub fn new(base: &str, server_name: &str) -> Client {
        Client {
            base: base.to_string(),
            server_name: server_name.to_string(),
            http: reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build().expect("http client"),
        }
    }

    /// The same client pointed at another node.
    pub fn at(&self, base: &str) -> Client {
        Client { base: base.to_string(), ..self.clone() }
    }

    pub fn url(&self, path: &str) -> String {
        if path.starts_with("/_matrix") || path.starts_with("/_synapse") || path.starts_with("/.well-known") || path.starts_with("/health") {
            format!("{}{path}", self.base)
        } else {
            format!("{}/_matrix/client/v3{path}", self.base)
        }
    }

    /// A request with an optional token and an optional JSON body.
    pub async fn request(&self, method: Method, path: &str, token: Option<&str>, body: Option<&Value>) -> Resp {
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        Self::finish(request).await
    }

    /// A request with raw bytes as the body.
    pub async fn raw(&self, method: Method, path: &str, token: Option<&str>, content_type: &str, body: Vec<u8>) -> Resp {
        let mut request = self.http.request(method, self.url(path)).header("content-type", content_type).body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        Self::finish(request).await
    }

    pub async fn finish(request: reqwest::RequestBuilder) -> Resp {
        let response = request.send().await.expect("request is answered");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let raw = response.bytes().await.expect("response body").to_vec();
        let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        Resp { status, headers, body, raw }
    }

    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.request(Method::GET, path, Some(token), None).await
    }
    pub async fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.request(Method::POST, path, Some(token), Some(&body)).await
    }
    pub async fn put(&self, path: &str, token: &str, body: Value) -> Resp {
        self.request(Method::PUT, path, Some(token), Some(&body)).await
    }
    pub async fn delete(&self, path: &str, token: &str) -> Resp {
        self.request(Method::DELETE, path, Some(token), None).await
    }

    /// The first step of registration (no auth): the server's 401 with flows and a session.
    pub async fn register_start(&self, localpart: &str, password: &str) -> Resp {
        let body = json!({ "username": localpart, "password": password });
        self.request(Method::POST, "/register", None, Some(&body)).await
    }

    /// Registers through the user-interactive auth dance (m.login.dummy) and returns the user.
    pub async fn register(&self, prefix: &str) -> User {
        self.register_named(&unique_name(prefix), "correct horse battery").await
    }

    pub async fn register_named(&self, localpart: &str, password: &str) -> User {
        let first = self.register_start(localpart, password).await;
        assert_eq!(first.status, 401, "first register step: {}", first.body);
        let session = first.body["session"].as_str().expect("UIA session").to_string();
        let body = json!({
            "username": localpart,
            "password": password,
            "auth": { "type": "m.login.dummy", "session": session },
        });
        let done = self.request(Method::POST, "/register", None, Some(&body)).await.ok();
        User {
            user_id: done["user_id"].as_str().expect("user_id").to_string(),
            localpart: localpart.to_string(),
            password: password.to_string(),
            token: done["access_token"].as_str().expect("access_token").to_string(),
            device_id: done["device_id"].as_str().expect("device_id").to_string(),
        }
    }

    /// Logs in again (a new device) with the password.
    pub async fn login(&self, user: &User) -> User {
        let body = json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": user.localpart },
            "password": user.password,
        });
        let done = self.request(Method::POST, "/login", None, Some(&body)).await.ok();
        User {
            token: done["access_token"].as_str().expect("access_token").to_string(),
            device_id: done["device_id"].as_str().expect("device_id").to_string(),
            ..user.clone()
        }
    }

    pub async fn create_room(&self, user: &User, body: Value) -> String {
        let done = self.post("/createRoom", &user.token, body).await.ok();
        done["room_id"].as_str().expect("room_id").to_string()
    }

    pub async fn send_text(&self, user: &User, room_id: &str, text: &str) -> String {
        self.send_with_txn(user, room_id, text, &txn()).await.ok()["event_id"].as_str().expect("event_id").to_string()
    }

    pub async fn send_with_txn(&self, user: &User, room_id: &str, text: &str, txn_id: &str) -> Resp {
        let path = format!("/rooms/{}/send/m.room.message/{}", enc(room_id), enc(txn_id));
        self.put(&path, &user.token, json!({ "msgtype": "m.text", "body": text })).await
    }

    pub async fn invite(&self, user: &User, room_id: &str, target: &str) {
        self.post(&format!("/rooms/{}/invite", enc(room_id)), &user.token, json!({ "user_id": target })).await.ok();
    }

    pub async fn join(&self, user: &User, room_id_or_alias: &str) -> Resp {
        self.post(&format!("/join/{}", enc(room_id_or_alias)), &user.token, json!({})).await
    }

    /// One /sync call (timeout in ms), bounded by a client-side deadline.
    pub async fn sync(&self, user: &User, since: Option<&str>, timeout_ms: u64) -> Value {
        self.sync_query(user, since, timeout_ms, &[]).await
    }

    pub async fn sync_query(&self, user: &User, since: Option<&str>, timeout_ms: u64, extra: &[(&str, &str)]) -> Value {
        let mut query: Vec<(String, String)> = vec![("timeout".into(), timeout_ms.to_string())];
        if let Some(since) = since {
            query.push(("since".into(), since.to_string()));
        }
        for (k, v) in extra {
            query.push((k.to_string(), v.to_string()));
        }
        let request = self.http.get(self.url("/sync")).bearer_auth(&user.token).query(&query);
        let limit = Duration::from_millis(timeout_ms) + Duration::from_secs(15);
        let response = tokio::time::timeout(limit, Self::finish(request)).await.expect("/sync answers in time");
        response.ok()
    }

    /// Syncs (incrementally, from `since`) until `check` holds for some response; returns the
    /// accumulated responses' next_batch and every response seen. Bounded by `deadline`.
    pub async fn sync_until(
        &self,
        user: &User,
        since: Option<&str>,
        deadline: Duration,
        mut check: impl FnMut(&Value) -> bool,
    ) -> (String, Vec<Value>) {
        let end = tokio::time::Instant::now() + deadline;
        let mut since = since.map(str::to_string);
        let mut seen = Vec::new();
        loop {
            let left = end.saturating_duration_since(tokio::time::Instant::now());
            let timeout_ms = if since.is_none() { 0 } else { left.as_millis().min(5_000) as u64 };
            let response = self.sync(user, since.as_deref(), timeout_ms).await;
            since = Some(response["next_batch"].as_str().expect("next_batch").to_string());
            let done = check(&response);
            seen.push(response);
            if done {
                return (since.unwrap(), seen);
            }
            assert!(tokio::time::Instant::now() < end, "condition not reached in sync within {deadline:?}: {seen:#?}");
        }
    }
}

/// The timeline events of `room_id` in a sync response.
pub fn timeline<'a>(sync: &'a Value, room_id: &str) -> Vec<&'a Value> {
    sync["rooms"]["join"][room_id]["timeline"]["events"].as_array().map(|a| a.iter().collect()).unwrap_or_default()
}

/// Event ids of a list of events.
pub fn ids(events: &[&Value]) -> Vec<String> {
    events.iter().map(|e| e["event_id"].as_str().unwrap_or_default().to_string()).collect()
}

/// Polls `f` until it returns Some, up to `deadline`.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = f().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < end, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
