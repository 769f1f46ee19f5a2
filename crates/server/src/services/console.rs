//! The live console's data: the whole deployment as any node sees it. DCs and their health and
//! each asset's leader and replicas come from the engine (asked at once, each asset bounded, so a
//! burning DC costs the page at most one timeout); nodes and their throughput and latency over the
//! last minutes come from the heartbeats every node writes to the incidents bucket (so a node
//! shows the others' charts, not only its own); incidents from the incidents service.
//!
//! Never renders HTML (that is `api::console`) and keeps no state of its own but the
//! [`Sampler`] the incidents worker feeds.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use haetae_store::Bucket;
use haetae_store::admin::AssetInfo;
use haetae_store::kv::KeyPath;
use prometheus::core::Collector;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::App;
use super::incidents::{self, Incident, Status};
use super::rooms::now_ms;
use crate::error::{ApiResult, MatrixError};

/// Samples a node keeps and publishes (one per incident check: 3 minutes at the default 2 s).
pub const MAX_SAMPLES: usize = 90;
/// Nodes the console lists.
const MAX_NODES: usize = 256;
/// How long the engine gets to describe one asset for the console, per asset.
const ASSET_TIMEOUT: Duration = Duration::from_secs(2);
/// Resolved incidents the console lists.
const RECENT_INCIDENTS: usize = 5;

/// What one node served between two checks.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Sample {
    pub at_ms: u64,
    pub requests_per_s: f64,
    pub failed_per_s: f64,
    /// Mean time to answer a request in the interval (long-polls included), ms.
    pub latency_ms: f64,
}

/// Turns the node's cumulative request metrics into per-interval samples.
#[derive(Default)]
pub struct Sampler {
    /// (at_ms, requests, seconds spent answering, failed) at the last sample.
    last: Option<(u64, u64, f64, u64)>,
    samples: VecDeque<Sample>,
}

impl Sampler {
    /// Takes a sample now; returns the samples kept, oldest first.
    pub fn sample(&mut self, app: &App) -> Vec<Sample> {
        let now = now_ms();
        let (mut count, mut sum) = (0u64, 0f64);
        for family in app.metrics.http_duration.collect() {
            for metric in family.get_metric() {
                let histogram = metric.get_histogram();
                count += histogram.get_sample_count();
                sum += histogram.get_sample_sum();
            }
        }
        let failed = app.metrics.http_requests_failed.get();
        if let Some((at, last_count, last_sum, last_failed)) = self.last
            && now > at
        {
            let seconds = (now - at) as f64 / 1000.0;
            let requests = count.saturating_sub(last_count);
            self.samples.push_back(Sample {
                at_ms: now,
                requests_per_s: requests as f64 / seconds,
                failed_per_s: failed.saturating_sub(last_failed) as f64 / seconds,
                latency_ms: if requests == 0 { 0.0 } else { (sum - last_sum).max(0.0) * 1000.0 / requests as f64 },
            });
            while self.samples.len() > MAX_SAMPLES {
                self.samples.pop_front();
            }
        }
        self.last = Some((now, count, sum, failed));
        self.samples.iter().cloned().collect()
    }
}

/// One node as its heartbeat tells.
#[derive(Clone, Debug, Serialize)]
pub struct NodeView {
    pub name: String,
    pub last_seen_ms: u64,
    pub started_ms: u64,
    pub samples: Vec<Sample>,
}

/// One DC as the engine sees it: its replicas (current or not) and the leaders it holds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DcView {
    pub name: String,
    pub replicas: usize,
    pub current: usize,
    pub leaders: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct ConsoleView {
    pub node: String,
    pub server_name: String,
    pub at_ms: u64,
    pub dcs: Vec<DcView>,
    pub nodes: Vec<NodeView>,
    pub assets: Vec<AssetInfo>,
    /// Assets whose description did not come back in time (no leader, or its DC is unreachable).
    pub unanswered: Vec<String>,
    pub open: Vec<Incident>,
    pub recent: Vec<Incident>,
    /// What could not be read (the page still shows the rest).
    pub problems: Vec<String>,
}

/// The deployment now, as this node can see it; parts it cannot read are named in `problems`.
pub async fn view(app: &App) -> ConsoleView {
    let mut problems = Vec::new();
    let answers = app.store.assets_each(ASSET_TIMEOUT).await;
    let mut assets = Vec::new();
    let mut unanswered = Vec::new();
    for (label, answer) in answers {
        match answer {
            Ok(asset) => assets.push(asset),
            Err(_) => unanswered.push(label),
        }
    }
    let mut dcs: BTreeMap<String, DcView> = BTreeMap::new();
    for asset in &assets {
        for replica in &asset.replicas {
            let dc = dcs
                .entry(replica.server.clone())
                .or_insert_with(|| DcView { name: replica.server.clone(), ..Default::default() });
            dc.replicas += 1;
            dc.current += usize::from(replica.current && replica.seen_ago_s <= 3.0);
            dc.leaders += usize::from(replica.leader);
        }
    }
    let nodes = match app.store.kv().list(Bucket::Incidents, &KeyPath::new(&["node"]), MAX_NODES, true).await {
        Ok(listing) => {
            let mut nodes: Vec<NodeView> = listing
                .entries
                .into_iter()
                .filter_map(|(key, stored)| {
                    let value: Value = serde_json::from_slice(&stored.value).ok()?;
                    Some(NodeView {
                        name: key.into_iter().next()?,
                        last_seen_ms: value["at_ms"].as_u64().unwrap_or(0),
                        started_ms: value["started_ms"].as_u64().unwrap_or(0),
                        samples: serde_json::from_value(value["samples"].clone()).unwrap_or_default(),
                    })
                })
                .collect();
            nodes.sort_by(|a, b| a.name.cmp(&b.name));
            nodes
        }
        Err(error) => {
            problems.push(format!("nodes: {error}"));
            Vec::new()
        }
    };
    let (open, recent) = match incidents::list(app).await {
        Ok(all) => {
            let (open, resolved): (Vec<Incident>, Vec<Incident>) = all.into_iter().partition(|i| i.status == Status::Open);
            (open, resolved.into_iter().take(RECENT_INCIDENTS).collect())
        }
        Err(error) => {
            problems.push(format!("incidents: {}", error.message));
            (Vec::new(), Vec::new())
        }
    };
    ConsoleView {
        node: app.node.clone(),
        server_name: app.config.server_name.clone(),
        at_ms: now_ms(),
        dcs: dcs.into_values().collect(),
        nodes,
        assets,
        unanswered,
        open,
        recent,
        problems,
    }
}

/// Signs an administrator in to the console with their password: a new access token (device
/// "console"), or M_FORBIDDEN for a wrong password or a user who is not an administrator.
pub async fn login(app: &App, ip: Option<std::net::IpAddr>, username: &str, password: &str) -> ApiResult<String> {
    let request = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": username },
        "password": password,
        "initial_device_display_name": "haetae console",
    });
    let request = serde_json::from_value(request).map_err(|_| MatrixError::bad_json("invalid login"))?;
    let session = super::accounts::login(app, ip, request).await?;
    let (Some(token), Some(user_id), Some(device_id)) =
        (session["access_token"].as_str(), session["user_id"].as_str(), session["device_id"].as_str())
    else {
        return Err(MatrixError::unavailable("the login did not return a session"));
    };
    let caller = super::Caller { user_id: user_id.to_string(), device_id: device_id.to_string(), session: String::new(), ip };
    if super::admin::require_admin(app, &caller).await.is_err() {
        // Not an administrator: the session it just opened goes again.
        let _ = super::accounts::remove_devices(app, user_id, Some(&[device_id.to_string()]), None).await;
        return Err(MatrixError::forbidden("You are not a server admin"));
    }
    Ok(token.to_string())
}

/// The administrator an access token belongs to, or M_FORBIDDEN / M_UNKNOWN_TOKEN.
pub async fn admin_for_token(app: &App, token: &str) -> ApiResult<String> {
    let session = app
        .session_for_token(token)
        .await?
        .ok_or_else(|| MatrixError::new(axum::http::StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN", "Unknown access token"))?;
    let caller =
        super::Caller { user_id: session.user_id.clone(), device_id: session.device_id, session: session.session, ip: None };
    super::admin::require_admin(app, &caller).await?;
    Ok(session.user_id)
}
