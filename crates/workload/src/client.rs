//! A small Matrix client speaking the real Client-Server API, for workloads: register, create and
//! join rooms, send with transaction ids (retried unchanged, moving to the next endpoint when one
//! stops answering), and long-poll sync.

use std::time::Duration;

use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{method} {path}: HTTP {status} {errcode}: {error}")]
    Matrix { method: &'static str, path: String, status: u16, errcode: String, error: String },
    #[error("{method} {path}: no endpoint answered: {message}")]
    Unreachable { method: &'static str, path: String, message: String },
}

/// One logged-in user, with an ordered list of endpoints (its home DC first).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    endpoints: Vec<String>,
    current: usize,
    pub user_id: String,
    pub access_token: String,
    /// How long one request may take before the client tries the next endpoint.
    pub request_timeout: Duration,
    /// Endpoint indexes the last request tried, in order (more than one after a failover).
    pub tried: Vec<usize>,
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .build()
        .expect("a plain HTTP client builds")
}

impl Client {
    /// Registers `localpart` with `password` (user-interactive auth with m.login.dummy).
    pub async fn register(http: reqwest::Client, endpoints: Vec<String>, localpart: &str, password: &str) -> Result<Client, ClientError> {
        let mut client = Client {
            http,
            endpoints,
            current: 0,
            user_id: String::new(),
            access_token: String::new(),
            request_timeout: Duration::from_secs(30),
            tried: Vec::new(),
        };
        let body = json!({ "username": localpart, "password": password, "auth": { "type": "m.login.dummy" } });
        let response = client.request("POST", "/_matrix/client/v3/register", Some(&body), None).await?;
        client.user_id = response["user_id"].as_str().unwrap_or_default().to_string();
        client.access_token = response["access_token"].as_str().unwrap_or_default().to_string();
        Ok(client)
    }

    /// The endpoint this client currently talks to.
    pub fn endpoint(&self) -> &str {
        &self.endpoints[self.current]
    }

    pub fn endpoint_index(&self) -> usize {
        self.current
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The same user talking to one endpoint only (no failover): to read one DC's view.
    pub fn pinned(&self, endpoint: &str) -> Client {
        Client { endpoints: vec![endpoint.to_string()], current: 0, tried: Vec::new(), ..self.clone() }
    }

    /// Sends one request, moving on to the next endpoint when the current one does not answer
    /// (connection refused, timeout, 5xx). The same request (same txn id) is re-sent unchanged.
    pub async fn request(&mut self, method: &'static str, path: &str, body: Option<&Value>, timeout: Option<Duration>) -> Result<Value, ClientError> {
        let timeout = timeout.unwrap_or(self.request_timeout);
        let attempts = self.endpoints.len() * 3;
        let mut last_error = String::new();
        self.tried.clear();
        for attempt in 0..attempts {
            self.tried.push(self.current);
            let url = format!("{}{}", self.endpoints[self.current], path);
            let mut request = match method {
                "GET" => self.http.get(&url),
                "PUT" => self.http.put(&url),
                _ => self.http.post(&url),
            }
            .timeout(timeout);
            if !self.access_token.is_empty() {
                request = request.bearer_auth(&self.access_token);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let value: Value = response.json().await.unwrap_or(Value::Null);
                    if status < 400 {
                        return Ok(value);
                    }
                    if status >= 500 {
                        last_error = format!("HTTP {status} {value}");
                    } else if status == 429 {
                        last_error = format!("rate-limited (HTTP 429 {value})");
                        let wait_ms = value["retry_after_ms"].as_u64().unwrap_or(100).min(5_000);
                        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
                        continue;
                    } else {
                        return Err(ClientError::Matrix {
                            method,
                            path: path.to_string(),
                            status,
                            errcode: value["errcode"].as_str().unwrap_or_default().to_string(),
                            error: value["error"].as_str().unwrap_or_default().to_string(),
                        });
                    }
                }
                Err(error) => last_error = error.to_string(),
            }
            // This endpoint failed: try the next one in the list.
            self.current = (self.current + 1) % self.endpoints.len();
            if attempt + 1 >= self.endpoints.len() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Err(ClientError::Unreachable { method, path: path.to_string(), message: last_error })
    }

    pub async fn create_room(&mut self, invite: &[String]) -> Result<String, ClientError> {
        let body = json!({ "preset": "private_chat", "invite": invite, "name": "workload" });
        let response = self.request("POST", "/_matrix/client/v3/createRoom", Some(&body), None).await?;
        Ok(response["room_id"].as_str().unwrap_or_default().to_string())
    }

    pub async fn join(&mut self, room_id: &str) -> Result<(), ClientError> {
        self.request("POST", &format!("/_matrix/client/v3/join/{}", encode(room_id)), Some(&json!({})), None).await?;
        Ok(())
    }

    /// Sends a message with a caller-chosen txn id; returns the event id.
    pub async fn send(&mut self, room_id: &str, txn_id: &str, content: &Value) -> Result<String, ClientError> {
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{}", encode(room_id), encode(txn_id));
        let response = self.request("PUT", &path, Some(content), None).await?;
        Ok(response["event_id"].as_str().unwrap_or_default().to_string())
    }

    /// One page of a room's history, newest first (`dir=b`), from `from` (or the end).
    pub async fn messages(&mut self, room_id: &str, from: Option<&str>, limit: u32) -> Result<Value, ClientError> {
        let mut path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit={limit}", encode(room_id));
        if let Some(from) = from {
            path.push_str(&format!("&from={}", encode(from)));
        }
        self.request("GET", &path, None, None).await
    }

    /// One long-poll sync.
    pub async fn sync(&mut self, since: Option<&str>, timeout_ms: u64) -> Result<Value, ClientError> {
        // A large timeline limit: the workload wants every event, not a gap to paginate.
        let filter = encode(r#"{"room":{"timeline":{"limit":1000}}}"#);
        let mut path = format!("/_matrix/client/v3/sync?timeout={timeout_ms}&filter={filter}");
        if let Some(since) = since {
            path.push_str(&format!("&since={}", encode(since)));
        }
        self.request("GET", &path, None, Some(Duration::from_millis(timeout_ms) + self.request_timeout)).await
    }

    /// One simplified sliding sync request (MSC4186, the path matrix-rust-sdk uses): `body` names
    /// the connection (`conn_id`), lists and room subscriptions; `pos` continues a connection.
    pub async fn sliding_sync(&mut self, body: &Value, pos: Option<&str>, timeout_ms: u64) -> Result<Value, ClientError> {
        let mut path = format!("{SLIDING_SYNC_PATH}?timeout={timeout_ms}");
        if let Some(pos) = pos {
            path.push_str(&format!("&pos={}", encode(pos)));
        }
        self.request("POST", &path, Some(body), Some(Duration::from_millis(timeout_ms) + self.request_timeout)).await
    }
}

/// Where simplified sliding sync is served (the unstable path clients use today).
pub const SLIDING_SYNC_PATH: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

/// Percent-encodes a path segment.
pub fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
