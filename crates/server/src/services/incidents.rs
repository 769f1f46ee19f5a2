//! Incidents: failures of the deployment (a DC unreachable, an asset without a leader, a replica
//! stuck behind, a node's writes failing), detected by every node, recorded once in the replicated
//! incidents bucket, shown on the public status page, and told to every user by server notice
//! when one lasts past `notice_after_s` (and again when it is resolved).
//!
//! No node is special: each checks the engine every `check_interval_ms`. A failure has a
//! deterministic key (`dc/a`, `asset/log/3`, `writes`); the record `("open", key)` names the
//! incident open for it and is only ever written with compare-and-set, so two nodes seeing the
//! same failure converge on one incident. A notice's progress (the last user done, a lease) is
//! one record per (incident, notice), also compare-and-set: a node that dies mid-way leaves the
//! rest to another once its lease expires, and each notice is sent with a transaction id of its
//! own, so a user whose batch is sent twice still gets it once.
//!
//! Each check also writes the node's heartbeat `("node", name)` (the write probe), with its recent
//! throughput and latency for the console (`services::console`).
//!
//! Never renders HTML (the status page is `api::incidents`) and never talks HTTP.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use haetae_store::admin::AssetInfo;
use haetae_store::kv::KeyPath;
use haetae_store::{Bucket, KvError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::rooms::now_ms;
use super::{App, AppState};
use crate::error::{ApiResult, MatrixError};

/// Incidents read for the status page, the admin API and the checks (resolved ones beyond
/// `keep_resolved` are deleted, so this is far above what the bucket holds).
const MAX_LISTED_INCIDENTS: usize = 1000;
/// Timeline entries kept per incident (the first, then the latest).
const MAX_TIMELINE_ENTRIES: usize = 200;
/// DCs, assets or nodes recorded per incident.
const MAX_AFFECTED: usize = 256;
/// Failures a node remembers having seen (for `open_after_s`).
const MAX_TRACKED_FAILURES: usize = 1024;
/// How long a notice waits for a non-empty account listing before it accepts that there is
/// nobody to tell.
const EMPTY_LISTING_PATIENCE: Duration = Duration::from_secs(60);
/// Users told per claimed batch of a notice.
const NOTICE_BATCH_USERS: usize = 50;
/// How long a node's claim on a notice's next batch lasts before another node may take it over.
const NOTICE_LEASE: Duration = Duration::from_secs(60);
/// Accounts read to find whom to tell.
const MAX_NOTIFIED_USERS: usize = 100_000;
/// How long one question to the engine (assets, the write probe) may take in a check.
const ENGINE_TIMEOUT: Duration = Duration::from_secs(3);
/// A replica its leader has not heard from for this long is not current, whatever it last said
/// (the engine's own verdict lags a vanished server by several seconds), s.
const STALE_REPLICA_S: f64 = 3.0;
/// Size of a drill annotation, bytes.
const MAX_ANNOTATION_BYTES: usize = 16 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Open,
    Resolved,
}

/// One incident as the bucket holds it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Incident {
    /// `<opened, UTC>-<failure>-<random>`, e.g. `20261129-221530-dc-a-3f9c`.
    pub id: String,
    /// The failure's key (`dc/a`, `asset/log/3`, `writes`).
    pub failure: String,
    pub title: String,
    pub status: Status,
    pub opened_at_ms: u64,
    pub resolved_at_ms: Option<u64>,
    /// The last time any node saw the failure (it closes `resolve_after_s` after this).
    pub last_failing_ms: u64,
    pub dcs: BTreeSet<String>,
    pub assets: BTreeSet<String>,
    /// Nodes that saw the failure.
    pub nodes: BTreeSet<String>,
    /// Requests the nodes answered with a server error while it was open.
    pub requests_failed: u64,
    pub timeline: Vec<TimelineEntry>,
    /// What a fire drill recorded about it (figures, the fault), when it happened in one.
    #[serde(default)]
    pub drill: Option<Value>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub at_ms: u64,
    /// The node that wrote it.
    pub node: String,
    pub text: String,
}

/// Which of an incident's two notices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoticeKind {
    Opened,
    Resolved,
}

impl NoticeKind {
    fn name(self) -> &'static str {
        match self {
            NoticeKind::Opened => "opened",
            NoticeKind::Resolved => "resolved",
        }
    }
}

/// How far one notice has gone: users are told in the order of their ids, batch by batch.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NoticeProgress {
    /// The last user id told ("" before the first).
    pub after: String,
    pub users: u64,
    pub done: bool,
    pub started_at_ms: u64,
    pub finished_at_ms: Option<u64>,
    /// The node working on the next batch, and until when its claim holds.
    pub lease_node: String,
    pub lease_until_ms: u64,
}

/// A failure seen in one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub key: String,
    pub title: String,
    pub dcs: BTreeSet<String>,
    pub assets: BTreeSet<String>,
    pub detail: String,
}

fn incident_key(id: &str) -> KeyPath {
    KeyPath::new(&["incident", id])
}

fn open_key(failure: &str) -> KeyPath {
    KeyPath::new(&["open", failure])
}

fn notice_key(id: &str, kind: NoticeKind) -> KeyPath {
    KeyPath::new(&["notices", id, kind.name()])
}

/// What is wrong with the deployment, from its assets' placement, the replica lag limit and
/// what this node saw of its own writes. A DC whose replicas are not current (or not heard from
/// lately) in more than half the assets is unreachable, and every other symptom of the same check
/// is attributed to it; without one, most assets leaderless is a lost quorum.
pub fn detect(assets: &[AssetInfo], replica_lag_limit: u64, writes_failing: Option<&str>) -> Vec<Failure> {
    let mut listed: HashMap<&str, usize> = HashMap::new();
    let mut behind: HashMap<&str, BTreeSet<String>> = HashMap::new();
    let mut symptoms: Vec<(String, String)> = Vec::new();
    for asset in assets {
        if asset.configured_replicas > 1 && asset.leader.is_none() {
            symptoms.push((asset.label.clone(), format!("{} has no leader", asset.label)));
        }
        for replica in &asset.replicas {
            *listed.entry(replica.server.as_str()).or_default() += 1;
            if !replica.current || replica.seen_ago_s > STALE_REPLICA_S {
                behind.entry(replica.server.as_str()).or_default().insert(asset.label.clone());
            }
            if replica.lag > replica_lag_limit {
                symptoms.push((
                    asset.label.clone(),
                    format!("the replica of {} in DC {} is {} operations behind", asset.label, replica.server, replica.lag),
                ));
            }
        }
    }
    let mut unreachable: Vec<(&str, &BTreeSet<String>)> = behind
        .iter()
        .filter(|(dc, labels)| labels.len() * 2 > listed.get(*dc).copied().unwrap_or(0).max(1))
        .map(|(dc, labels)| (*dc, labels))
        .collect();
    unreachable.sort();
    let mut failures: Vec<Failure> = unreachable
        .iter()
        .map(|(dc, labels)| Failure {
            key: format!("dc/{dc}"),
            title: format!("DC {dc} unreachable"),
            dcs: BTreeSet::from([dc.to_string()]),
            assets: (*labels).clone(),
            detail: format!("the replicas in DC {dc} are not current in {} of {} assets", labels.len(), listed[dc]),
        })
        .collect();
    if let Some(first) = failures.first_mut() {
        for (label, text) in symptoms {
            first.assets.insert(label);
            first.detail.push_str(&format!("; {text}"));
        }
        if let Some(text) = writes_failing {
            first.detail.push_str(&format!("; {text}"));
        }
        return failures;
    }
    let leaderless: BTreeSet<String> =
        assets.iter().filter(|a| a.configured_replicas > 1 && a.leader.is_none()).map(|a| a.label.clone()).collect();
    if leaderless.len() * 2 > assets.len() {
        // Most assets without a leader and no DC to blame: the engine has lost its quorum.
        let detail = format!("{} of {} assets have no leader", leaderless.len(), assets.len());
        let mut failure = Failure {
            key: "quorum".into(),
            title: "Storage without quorum".into(),
            dcs: BTreeSet::new(),
            assets: leaderless,
            detail,
        };
        if let Some(text) = writes_failing {
            failure.detail.push_str(&format!("; {text}"));
        }
        return vec![failure];
    }
    let mut by_asset: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (label, text) in symptoms {
        by_asset.entry(label).or_default().push(text);
    }
    for (label, texts) in by_asset {
        failures.push(Failure {
            key: format!("asset/{label}"),
            title: format!("{label} degraded"),
            dcs: BTreeSet::new(),
            assets: BTreeSet::from([label]),
            detail: texts.join("; "),
        });
    }
    if let Some(text) = writes_failing {
        failures.push(Failure {
            key: "writes".into(),
            title: "Writes failing".into(),
            dcs: BTreeSet::new(),
            assets: BTreeSet::new(),
            detail: text.to_string(),
        });
    }
    failures
}

/// What one node remembers between checks.
#[derive(Default)]
struct Watch {
    /// When this node first saw each failure it still sees (bounded by [`MAX_TRACKED_FAILURES`]).
    first_seen: HashMap<String, Instant>,
    /// The node's failed-request and append-error counters at the last check.
    failed_requests_seen: u64,
    append_errors_seen: u64,
    /// This node's throughput and latency, published with its heartbeat for the console.
    sampler: super::console::Sampler,
    /// Incidents whose notices are all sent, so later checks do not read their progress again
    /// (only incidents the bucket still lists are kept: bounded by what a listing holds).
    told: std::collections::HashSet<String>,
}

/// Worker: checks the deployment's health every `check_interval_ms`, forever.
pub async fn incidents_worker(app: AppState) {
    let config = &app.config.incidents;
    if config.disabled {
        return;
    }
    let interval = Duration::from_millis(config.check_interval_ms.max(100));
    let mut watch = Watch {
        failed_requests_seen: app.metrics.http_requests_failed.get(),
        append_errors_seen: app.metrics.append_errors.get(),
        ..Default::default()
    };
    loop {
        tokio::time::sleep(interval).await;
        if let Err(error) = check(&app, &mut watch).await {
            tracing::debug!(error = %error.message, "incident check did not finish");
        }
    }
}

fn to_bytes<T: Serialize>(value: &T) -> Bytes {
    serde_json::to_vec(value).unwrap_or_default().into()
}

async fn with_timeout<T>(future: impl std::future::Future<Output = Result<T, KvError>>) -> Result<T, KvError> {
    tokio::time::timeout(ENGINE_TIMEOUT, future)
        .await
        .unwrap_or_else(|_| Err(KvError::Unavailable("the engine did not answer in time".into())))
}

/// One check: probe, detect, record, resolve, tell, prune.
async fn check(app: &App, watch: &mut Watch) -> Result<(), MatrixError> {
    let config = &app.config.incidents;
    let now = now_ms();
    // The write probe: this node's heartbeat, a replicated write like any other.
    let samples = watch.sampler.sample(app);
    let probe =
        json!({ "at_ms": now, "started_ms": now.saturating_sub(app.started.elapsed().as_millis() as u64), "samples": samples });
    let probe = with_timeout(app.store.kv().put(Bucket::Incidents, &KeyPath::new(&["node", &app.node]), to_bytes(&probe))).await;
    let append_errors = app.metrics.append_errors.get();
    let writes_failing = match probe {
        Err(error) => Some(format!("node {} cannot write: {error}", app.node)),
        Ok(_) if append_errors > watch.append_errors_seen => {
            Some(format!("node {} saw {} appends fail", app.node, append_errors - watch.append_errors_seen))
        }
        Ok(_) => None,
    };
    watch.append_errors_seen = append_errors;
    let answers = tokio::time::timeout(ENGINE_TIMEOUT * 2, app.store.assets_each(ENGINE_TIMEOUT))
        .await
        .map_err(|_| MatrixError::unavailable("the engine did not describe the assets in time"))?;
    if !app.store.connected() || answers.iter().all(|(_, answer)| answer.is_err()) {
        // This node is cut off from the engine: it can neither see nor record anything.
        return Err(MatrixError::unavailable("no asset answered"));
    }
    let replicas = app.store.config().replicas;
    let assets: Vec<AssetInfo> = answers
        .into_iter()
        .map(|(label, answer)| {
            // Unanswered: no leader (an election under way, or no quorum).
            answer.unwrap_or_else(|_| AssetInfo {
                stream: label.clone(),
                label,
                configured_replicas: replicas,
                messages: 0,
                leader: None,
                replicas: Vec::new(),
            })
        })
        .collect();
    let failures = detect(&assets, config.replica_lag_limit, writes_failing.as_deref());
    watch.first_seen.retain(|key, _| failures.iter().any(|f| &f.key == key));
    let open_after = Duration::from_secs(config.open_after_s);
    let mut seen = BTreeSet::new();
    for failure in &failures {
        if watch.first_seen.len() >= MAX_TRACKED_FAILURES && !watch.first_seen.contains_key(&failure.key) {
            continue;
        }
        let first = *watch.first_seen.entry(failure.key.clone()).or_insert_with(Instant::now);
        if first.elapsed() >= open_after {
            record(app, failure, now).await?;
            seen.insert(failure.key.clone());
        }
    }
    let failed_requests = app.metrics.http_requests_failed.get();
    let failed_delta = failed_requests.saturating_sub(watch.failed_requests_seen);
    watch.failed_requests_seen = failed_requests;
    let incidents = list(app).await?;
    for incident in incidents.iter().filter(|i| i.status == Status::Open) {
        if failed_delta > 0 {
            change(app, &incident.id, |i| {
                i.requests_failed += failed_delta;
                true
            })
            .await?;
        }
        if !seen.contains(&incident.failure) && now.saturating_sub(incident.last_failing_ms) >= config.resolve_after_s * 1000 {
            resolve(app, &incident.id).await?;
        }
    }
    // Notices, for incidents as they are now.
    let current = list(app).await?;
    watch.told.retain(|id| current.iter().any(|i| &i.id == id));
    for incident in &current {
        if watch.told.contains(&incident.id) {
            continue;
        }
        if notices(app, incident).await? {
            watch.told.insert(incident.id.clone());
        }
    }
    prune(app, incidents).await
}

/// Opens the incident for `failure` or brings the open one up to date.
async fn record(app: &App, failure: &Failure, now: u64) -> Result<(), MatrixError> {
    let kv = app.store.kv();
    let pointer_key = open_key(&failure.key);
    for _attempt in 0..8 {
        let pointer = kv.get(Bucket::Incidents, &pointer_key).await?;
        if let Some(pointer) = &pointer {
            let id = String::from_utf8_lossy(&pointer.value).into_owned();
            match get_incident(app, &id).await? {
                Some(incident) if incident.status == Status::Open => return merge(app, &id, failure, now).await,
                // The node that opened it died between the two writes: finish its work.
                None => return create(app, &id, failure, now).await,
                Some(_resolved) => {}
            }
        }
        let id = new_id(&failure.key, now);
        let claimed = match &pointer {
            None => kv.create(Bucket::Incidents, &pointer_key, id.clone().into()).await,
            Some(pointer) => kv.update(Bucket::Incidents, &pointer_key, id.clone().into(), pointer.revision).await,
        };
        match claimed {
            Ok(_) => return create(app, &id, failure, now).await,
            // Another node opened it first: join that one.
            Err(KvError::Exists | KvError::WrongRevision(_)) => continue,
            Err(other) => return Err(other.into()),
        }
    }
    Err(MatrixError::unavailable("too much contention opening an incident"))
}

async fn create(app: &App, id: &str, failure: &Failure, now: u64) -> Result<(), MatrixError> {
    let incident = Incident {
        id: id.to_string(),
        failure: failure.key.clone(),
        title: failure.title.clone(),
        status: Status::Open,
        opened_at_ms: now,
        resolved_at_ms: None,
        last_failing_ms: now,
        dcs: failure.dcs.clone(),
        assets: failure.assets.iter().take(MAX_AFFECTED).cloned().collect(),
        nodes: BTreeSet::from([app.node.clone()]),
        requests_failed: 0,
        timeline: vec![TimelineEntry { at_ms: now, node: app.node.clone(), text: format!("opened: {}", failure.detail) }],
        drill: None,
    };
    match app.store.kv().create(Bucket::Incidents, &incident_key(id), to_bytes(&incident)).await {
        Ok(_) => {
            tracing::warn!(incident = %id, failure = %failure.key, detail = %failure.detail, "incident opened");
            Ok(())
        }
        Err(KvError::Exists) => merge(app, id, failure, now).await,
        Err(other) => Err(other.into()),
    }
}

/// Adds what this node sees of `failure` to the open incident `id`. Writes only when something
/// is new, or when the incident's last sighting is getting old (it closes without sightings).
async fn merge(app: &App, id: &str, failure: &Failure, now: u64) -> Result<(), MatrixError> {
    let refresh_ms = (app.config.incidents.resolve_after_s * 1000 / 4).max(app.config.incidents.check_interval_ms);
    let node = app.node.clone();
    change(app, id, |incident| {
        if incident.status != Status::Open {
            return false;
        }
        let mut news = Vec::new();
        let new_dcs: Vec<String> = failure.dcs.difference(&incident.dcs).cloned().collect();
        if !new_dcs.is_empty() && incident.dcs.len() < MAX_AFFECTED {
            news.push(format!("now also affects DC {}", new_dcs.join(", ")));
            incident.dcs.extend(new_dcs);
        }
        let new_assets: Vec<String> = failure.assets.difference(&incident.assets).cloned().collect();
        if !new_assets.is_empty() && incident.assets.len() < MAX_AFFECTED {
            news.push(format!("now also affects {}", new_assets.join(", ")));
            incident.assets.extend(new_assets.into_iter().take(MAX_AFFECTED));
        }
        if !incident.nodes.contains(&node) && incident.nodes.len() < MAX_AFFECTED {
            news.push(format!("also seen from node {node}: {}", failure.detail));
            incident.nodes.insert(node.clone());
        }
        let stale = now.saturating_sub(incident.last_failing_ms) >= refresh_ms;
        if news.is_empty() && !stale {
            return false;
        }
        incident.last_failing_ms = incident.last_failing_ms.max(now);
        for text in news {
            push_timeline(incident, TimelineEntry { at_ms: now, node: node.clone(), text });
        }
        true
    })
    .await
}

/// Closes `id` if nobody has seen its failure for `resolve_after_s` (checked again under
/// compare-and-set: another node may have just seen it).
async fn resolve(app: &App, id: &str) -> Result<(), MatrixError> {
    let resolve_after_ms = app.config.incidents.resolve_after_s * 1000;
    let node = app.node.clone();
    let now = now_ms();
    change(app, id, |incident| {
        if incident.status != Status::Open || now.saturating_sub(incident.last_failing_ms) < resolve_after_ms {
            return false;
        }
        incident.status = Status::Resolved;
        incident.resolved_at_ms = Some(now);
        let healthy_s = now.saturating_sub(incident.last_failing_ms) / 1000;
        push_timeline(
            incident,
            TimelineEntry {
                at_ms: now,
                node: node.clone(),
                text: format!("resolved: no node has seen the failure for {healthy_s} s"),
            },
        );
        true
    })
    .await?;
    tracing::warn!(incident = %id, "incident resolved");
    Ok(())
}

fn push_timeline(incident: &mut Incident, entry: TimelineEntry) {
    if incident.timeline.len() >= MAX_TIMELINE_ENTRIES {
        // Keep the opening entry; drop the oldest after it.
        incident.timeline.remove(1.min(incident.timeline.len() - 1));
    }
    incident.timeline.push(entry);
}

/// Read-modify-write of one incident: `edit` returns false to leave it as it is.
async fn change(app: &App, id: &str, mut edit: impl FnMut(&mut Incident) -> bool) -> Result<(), MatrixError> {
    let outcome = app
        .store
        .kv()
        .modify(Bucket::Incidents, &incident_key(id), |current| {
            let Some(mut incident) = current.and_then(|bytes| serde_json::from_slice::<Incident>(bytes).ok()) else {
                return Ok::<_, ()>(None);
            };
            Ok(edit(&mut incident).then(|| to_bytes(&incident)))
        })
        .await?;
    outcome.map(|_| ()).map_err(|()| MatrixError::unavailable("cannot change the incident"))
}

fn new_id(failure: &str, now: u64) -> String {
    let slug: String = failure.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    let random: u16 = rand::random();
    format!("{}-{slug}-{random:04x}", compact_utc(now))
}

/// `20261129-221530` for a time in ms since the epoch, UTC.
fn compact_utc(ms: u64) -> String {
    let (year, month, day, hour, minute, second) = civil(ms);
    format!("{year:04}{month:02}{day:02}-{hour:02}{minute:02}{second:02}")
}

/// `2026-11-29 22:15:30 UTC`.
pub fn utc(ms: u64) -> String {
    let (year, month, day, hour, minute, second) = civil(ms);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02} UTC")
}

/// (year, month, day, hour, minute, second) of a time in ms since the epoch, UTC (the civil
/// calendar from a day count, Howard Hinnant's algorithm).
fn civil(ms: u64) -> (i64, u32, u32, u64, u64, u64) {
    let seconds = ms / 1000;
    let days = (seconds / 86_400) as i64;
    let of_day = seconds % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day, of_day / 3600, of_day / 60 % 60, of_day % 60)
}

/// `1 h 05 min`, `3 min 20 s`, `12 s`.
pub fn duration_text(ms: u64) -> String {
    let seconds = ms / 1000;
    match seconds {
        s if s >= 3600 => format!("{} h {:02} min", s / 3600, s / 60 % 60),
        s if s >= 60 => format!("{} min {:02} s", s / 60, s % 60),
        s => format!("{s} s"),
    }
}

async fn get_incident(app: &App, id: &str) -> ApiResult<Option<Incident>> {
    let stored = app.store.kv().get(Bucket::Incidents, &incident_key(id)).await?;
    Ok(stored.and_then(|stored| serde_json::from_slice(&stored.value).ok()))
}

/// Every incident the bucket holds, the most recently opened first.
pub async fn list(app: &App) -> ApiResult<Vec<Incident>> {
    let listing = app.store.kv().list(Bucket::Incidents, &KeyPath::new(&["incident"]), MAX_LISTED_INCIDENTS, true).await?;
    let mut incidents: Vec<Incident> =
        listing.entries.into_iter().filter_map(|(_, stored)| serde_json::from_slice(&stored.value).ok()).collect();
    incidents.sort_by(|a, b| b.opened_at_ms.cmp(&a.opened_at_ms).then_with(|| b.id.cmp(&a.id)));
    Ok(incidents)
}

/// One incident, or M_NOT_FOUND.
pub async fn get(app: &App, id: &str) -> ApiResult<Incident> {
    if id.is_empty() || id.len() > 200 {
        return Err(MatrixError::not_found("No such incident"));
    }
    get_incident(app, id).await?.ok_or_else(|| MatrixError::not_found("No such incident"))
}

/// An incident's notices' progress.
pub async fn notice_progress(app: &App, id: &str) -> ApiResult<Vec<(&'static str, NoticeProgress)>> {
    let mut found = Vec::new();
    for kind in [NoticeKind::Opened, NoticeKind::Resolved] {
        if let Some(stored) = app.store.kv().get(Bucket::Incidents, &notice_key(id, kind)).await?
            && let Ok(progress) = serde_json::from_slice::<NoticeProgress>(&stored.value)
        {
            found.push((kind.name(), progress));
        }
    }
    Ok(found)
}

/// Records what a fire drill measured about incident `id` (shown in its report).
pub async fn annotate_drill(app: &App, id: &str, drill: Value) -> ApiResult<Incident> {
    if !drill.is_object() {
        return Err(MatrixError::bad_json("the drill annotation must be a JSON object"));
    }
    if serde_json::to_vec(&drill).map_or(0, |b| b.len()) > MAX_ANNOTATION_BYTES {
        return Err(MatrixError::too_large(format!("a drill annotation is limited to {MAX_ANNOTATION_BYTES} bytes")));
    }
    get(app, id).await?;
    let node = app.node.clone();
    change(app, id, |incident| {
        incident.drill = Some(drill.clone());
        push_timeline(
            incident,
            TimelineEntry { at_ms: now_ms(), node: node.clone(), text: "a fire drill recorded its figures".into() },
        );
        true
    })
    .await?;
    get(app, id).await
}

/// Sends the notices `incident` is due, as far as this node may (see the module's docs); true
/// once nothing more will ever be sent for it (resolved, and told or never due).
async fn notices(app: &App, incident: &Incident) -> Result<bool, MatrixError> {
    let notice_after_ms = app.config.incidents.notice_after_s * 1000;
    let lasted_ms = incident.resolved_at_ms.unwrap_or_else(now_ms).saturating_sub(incident.opened_at_ms);
    if lasted_ms < notice_after_ms {
        return Ok(incident.status == Status::Resolved);
    }
    if !tell(app, incident, NoticeKind::Opened).await? || incident.status != Status::Resolved {
        return Ok(false);
    }
    tell(app, incident, NoticeKind::Resolved).await
}

fn notice_text(app: &App, incident: &Incident, kind: NoticeKind) -> String {
    let status = match &app.config.public_base_url {
        Some(base) => format!("{}/status", base.trim_end_matches('/')),
        None => "the status page (/status)".into(),
    };
    match kind {
        NoticeKind::Opened => format!(
            "Service incident: {}. Since {}, some requests may fail or be slow. The operators are working on it; follow it on {status}.",
            incident.title,
            utc(incident.opened_at_ms)
        ),
        NoticeKind::Resolved => {
            let resolved = incident.resolved_at_ms.unwrap_or(incident.opened_at_ms);
            format!(
                "Resolved: {}. The incident that began at {} ended at {} ({}). Details on {status}.",
                incident.title,
                utc(incident.opened_at_ms),
                utc(resolved),
                duration_text(resolved.saturating_sub(incident.opened_at_ms))
            )
        }
    }
}

/// Works through `kind` of `incident`'s notices, batch by batch, while this node holds the claim;
/// returns whether every user has been told.
async fn tell(app: &App, incident: &Incident, kind: NoticeKind) -> Result<bool, MatrixError> {
    let kv = app.store.kv();
    let key = notice_key(&incident.id, kind);
    // `haetae.incident` lets a client (or the fire drill) tell which incident a notice is about.
    let content = json!({
        "msgtype": "m.server_notice",
        "body": notice_text(app, incident, kind),
        "haetae.incident": { "id": incident.id, "notice": kind.name() },
    });
    let txn_id = format!("incident-{}-{}", incident.id, kind.name());
    let mut users: Option<Vec<String>> = None;
    loop {
        let stored = kv.get(Bucket::Incidents, &key).await?;
        let mut progress: NoticeProgress =
            stored.as_ref().and_then(|s| serde_json::from_slice(&s.value).ok()).unwrap_or_default();
        if progress.done {
            return Ok(true);
        }
        let now = now_ms();
        if progress.lease_node != app.node && progress.lease_until_ms > now {
            return Ok(false);
        }
        // Claim the next batch.
        if progress.started_at_ms == 0 {
            progress.started_at_ms = now;
        }
        progress.lease_node = app.node.clone();
        progress.lease_until_ms = now + NOTICE_LEASE.as_millis() as u64;
        let claimed = match &stored {
            None => kv.create(Bucket::Incidents, &key, to_bytes(&progress)).await,
            Some(stored) => kv.update(Bucket::Incidents, &key, to_bytes(&progress), stored.revision).await,
        };
        let revision = match claimed {
            Ok(revision) => revision,
            Err(KvError::Exists | KvError::WrongRevision(_)) => return Ok(false),
            Err(other) => return Err(other.into()),
        };
        if users.is_none() {
            let listed = recipients(app).await?;
            // An empty account listing while an election is under way is not the truth: a notice
            // told to nobody would be marked done for good. Try again at the next check, for a
            // while (a deployment with no users at all finishes after that).
            if listed.is_empty() && now.saturating_sub(progress.started_at_ms) < EMPTY_LISTING_PATIENCE.as_millis() as u64 {
                tracing::warn!(incident = %incident.id, notice = kind.name(), "the account listing came back empty; retrying the notice");
                return Ok(false);
            }
            users = Some(listed);
        }
        let batch: Vec<&String> =
            users.iter().flatten().filter(|user| user.as_str() > progress.after.as_str()).take(NOTICE_BATCH_USERS).collect();
        for user in &batch {
            match super::notices::send_once(app, user, content.clone(), &txn_id).await {
                Ok(_) => {}
                // Deactivated or gone since the listing.
                Err(error) if error.errcode == "M_NOT_FOUND" => {}
                Err(error) => return Err(error),
            }
        }
        if let Some(last) = batch.last() {
            progress.after = (*last).clone();
        }
        progress.users += batch.len() as u64;
        if batch.len() < NOTICE_BATCH_USERS {
            progress.done = true;
            progress.finished_at_ms = Some(now_ms());
            progress.lease_node.clear();
            progress.lease_until_ms = 0;
        }
        match kv.update(Bucket::Incidents, &key, to_bytes(&progress), revision).await {
            Ok(_) => {}
            // Our claim ran out and another node took the batch over.
            Err(KvError::WrongRevision(_)) => return Ok(false),
            Err(other) => return Err(other.into()),
        }
        tracing::info!(incident = %incident.id, notice = kind.name(), users = progress.users, done = progress.done, "incident notice progress");
        if progress.done {
            let node = app.node.clone();
            let text = format!("{} notice sent to {} users", kind.name(), progress.users);
            change(app, &incident.id, |i| {
                push_timeline(i, TimelineEntry { at_ms: now_ms(), node: node.clone(), text: text.clone() });
                true
            })
            .await?;
            return Ok(true);
        }
    }
}

/// Every user to tell, by id: active accounts, the notices user aside.
async fn recipients(app: &App) -> ApiResult<Vec<String>> {
    let accounts = super::accounts::list_accounts(app, MAX_NOTIFIED_USERS).await?;
    let mut users: Vec<String> = accounts
        .into_iter()
        .filter(|(localpart, account)| account["deactivated"] != true && localpart != super::notices::NOTICES_LOCALPART)
        .map(|(localpart, _)| app.user_id(&localpart))
        .collect();
    users.sort();
    Ok(users)
}

/// Deletes the oldest resolved incidents beyond `keep_resolved`, with their notices' progress.
async fn prune(app: &App, incidents: Vec<Incident>) -> Result<(), MatrixError> {
    // Kept well under what a listing may hold.
    let keep = app.config.incidents.keep_resolved.min(MAX_LISTED_INCIDENTS / 2);
    // `list` sorts the newest first.
    for incident in incidents.iter().filter(|i| i.status == Status::Resolved).skip(keep) {
        for kind in [NoticeKind::Opened, NoticeKind::Resolved] {
            app.store.kv().delete(Bucket::Incidents, &notice_key(&incident.id, kind)).await?;
        }
        app.store.kv().delete(Bucket::Incidents, &incident_key(&incident.id)).await?;
        tracing::info!(incident = %incident.id, "deleted an old resolved incident");
    }
    Ok(())
}

/// The public view of the incidents (no node names, no counts of failed requests).
pub fn public(incident: &Incident) -> Value {
    json!({
        "id": incident.id,
        "title": incident.title,
        "status": incident.status,
        "opened_at_ms": incident.opened_at_ms,
        "resolved_at_ms": incident.resolved_at_ms,
        "dcs": incident.dcs,
        "assets": incident.assets,
        "timeline": incident.timeline.iter().map(|e| json!({ "at_ms": e.at_ms, "text": e.text })).collect::<Vec<_>>(),
    })
}

/// An incident's report in Markdown: what happened when, what it touched, what failed, whom it
/// told, and the drill's figures when it happened in one.
pub async fn report(app: &App, id: &str) -> ApiResult<String> {
    let incident = get(app, id).await?;
    let progress = notice_progress(app, id).await?;
    Ok(report_markdown(&incident, &progress))
}

pub fn report_markdown(incident: &Incident, progress: &[(&'static str, NoticeProgress)]) -> String {
    let mut md = format!("# Incident {}: {}\n\n", incident.id, incident.title);
    let status = match incident.status {
        Status::Open => "open".to_string(),
        Status::Resolved => "resolved".to_string(),
    };
    let end = incident.resolved_at_ms.unwrap_or_else(now_ms);
    md.push_str(&format!("- Status: {status}\n- Failure: `{}`\n- Opened: {}\n", incident.failure, utc(incident.opened_at_ms)));
    if let Some(resolved) = incident.resolved_at_ms {
        md.push_str(&format!("- Resolved: {}\n", utc(resolved)));
    }
    md.push_str(&format!(
        "- Duration: {}{}\n",
        duration_text(end.saturating_sub(incident.opened_at_ms)),
        if incident.resolved_at_ms.is_none() { " so far" } else { "" }
    ));
    md.push_str(&format!("- Last seen failing: {}\n", utc(incident.last_failing_ms)));
    let list = |set: &BTreeSet<String>| {
        if set.is_empty() { "none".to_string() } else { set.iter().cloned().collect::<Vec<_>>().join(", ") }
    };
    md.push_str(&format!(
        "\n## Affected\n\n- DCs: {}\n- Assets: {}\n- Seen from nodes: {}\n",
        list(&incident.dcs),
        list(&incident.assets),
        list(&incident.nodes)
    ));
    md.push_str(&format!(
        "- Requests failed (server errors answered by the nodes while it was open): {}\n",
        incident.requests_failed
    ));
    md.push_str("\n## Notices to users\n\n");
    if progress.is_empty() {
        md.push_str("None sent (the incident did not last past the notice threshold).\n");
    }
    for (kind, notice) in progress {
        let finished = notice.finished_at_ms.map_or_else(|| "in progress".to_string(), |at| format!("finished {}", utc(at)));
        md.push_str(&format!("- {kind}: {} users told, started {}, {finished}\n", notice.users, utc(notice.started_at_ms)));
    }
    md.push_str("\n## Timeline\n\n| Time (UTC) | + since opened | Node | What |\n|---|---|---|---|\n");
    for entry in &incident.timeline {
        md.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            utc(entry.at_ms),
            duration_text(entry.at_ms.saturating_sub(incident.opened_at_ms)),
            entry.node,
            entry.text.replace('|', "\\|")
        ));
    }
    if let Some(drill) = &incident.drill {
        md.push_str("\n## Fire drill\n\nThis incident happened during a fire drill, which recorded:\n\n");
        if let Some(fields) = drill.as_object() {
            for (name, value) in fields {
                let shown = value.as_str().map_or_else(|| value.to_string(), str::to_string);
                md.push_str(&format!("- {name}: {}\n", shown.replace('\n', " ")));
            }
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use haetae_store::admin::ReplicaInfo;

    fn asset(label: &str, leader: Option<&str>, replicas: &[(&str, bool, u64)]) -> AssetInfo {
        AssetInfo {
            label: label.into(),
            stream: label.into(),
            configured_replicas: 3,
            messages: 0,
            leader: leader.map(str::to_string),
            replicas: replicas
                .iter()
                .map(|(server, current, lag)| ReplicaInfo {
                    server: server.to_string(),
                    leader: Some(*server) == leader,
                    current: *current,
                    lag: *lag,
                    seen_ago_s: 0.0,
                })
                .collect(),
        }
    }

    #[test]
    fn a_dc_behind_in_most_assets_is_one_failure_that_takes_the_other_symptoms() {
        let assets = vec![
            asset("log/0", Some("b"), &[("b", true, 0), ("a", false, 0), ("c", true, 0)]),
            asset("log/1", None, &[("a", false, 0), ("c", true, 0)]),
            asset("kv/meta", Some("c"), &[("c", true, 0), ("a", false, 0), ("b", true, 0)]),
        ];
        let failures = detect(&assets, 1000, Some("node b saw 2 appends fail"));
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert_eq!(failures[0].key, "dc/a");
        assert!(failures[0].assets.contains("log/1"));
        assert!(failures[0].detail.contains("no leader") && failures[0].detail.contains("appends fail"));
    }

    #[test]
    fn without_a_dc_down_symptoms_are_per_asset_and_healthy_is_silent() {
        let healthy = vec![asset("log/0", Some("a"), &[("a", true, 0), ("b", true, 3), ("c", true, 0)])];
        assert!(detect(&healthy, 1000, None).is_empty());
        let lagging = vec![
            asset("log/0", Some("a"), &[("a", true, 0), ("b", true, 5000), ("c", true, 0)]),
            asset("log/1", Some("a"), &[("a", true, 0), ("b", true, 0), ("c", true, 0)]),
        ];
        let failures = detect(&lagging, 1000, Some("node a cannot write"));
        let keys: Vec<&str> = failures.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(keys, ["asset/log/0", "writes"]);
    }

    #[test]
    fn most_assets_leaderless_without_a_dc_to_blame_is_a_lost_quorum() {
        let assets = vec![
            asset("log/0", None, &[]),
            asset("log/1", None, &[]),
            asset("kv/meta", Some("a"), &[("a", true, 0), ("b", true, 0), ("c", true, 0)]),
        ];
        let failures = detect(&assets, 1000, None);
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert_eq!(failures[0].key, "quorum");
        // A replica not heard from for a while counts as not current.
        let mut silent = vec![asset("log/0", Some("b"), &[("b", true, 0), ("a", true, 0), ("c", true, 0)])];
        silent[0].replicas[1].seen_ago_s = 10.0;
        assert_eq!(detect(&silent, 1000, None)[0].key, "dc/a");
    }

    #[test]
    fn times_read_as_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_796_077_530_000), "2026-11-30 22:25:30 UTC");
        assert_eq!(compact_utc(951_782_400_000), "20000229-000000");
        assert_eq!(duration_text(3_725_000), "1 h 02 min");
    }
}
