//! The workers that keep a node's read model current: one tail per log partition (with a
//! read-ahead while a consumer cannot be created), typing notices, the cache-budget evictor and
//! the snapshot writer; and start-up from the latest snapshot plus the log after it.

use std::io::{BufReader, Seek, SeekFrom};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::task::JoinSet;

use super::{App, AppState};
use crate::StartError;
use crate::read_model::snapshot::{SnapshotInfo, SnapshotLoadError};

/// Loads the latest snapshot, starts every worker into `workers` and returns once the model has
/// applied everything the log held at start (or `catch_up_timeout` passed).
pub async fn start(app: &AppState, workers: &mut JoinSet<()>, catch_up_timeout: Duration) -> Result<(), StartError> {
    let partitions = app.model.partitions();
    let started = Instant::now();
    load_snapshot(app).await;
    let mut targets = Vec::new();
    for partition in 0..partitions {
        targets.push(app.store.log().last_seq(partition).await.map_err(|e| StartError::Log(e.to_string()))?);
    }
    for partition in 0..partitions {
        workers.spawn(tail_partition(app.clone(), partition));
    }
    workers.spawn(typing_listener(app.clone()));
    workers.spawn(typing_expiry(app.clone()));
    workers.spawn(cache_evictor(app.clone()));
    workers.spawn(snapshot_writer(app.clone()));
    workers.spawn(super::presence::presence_worker(app.clone()));
    workers.spawn(super::incidents::incidents_worker(app.clone()));
    let mut last_report = Instant::now();
    loop {
        if app.model.wait_positions(&targets, Duration::from_secs(5)).await {
            break;
        }
        if started.elapsed() > catch_up_timeout {
            return Err(StartError::CatchUp(catch_up_timeout));
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            tracing::info!(applied = ?app.model.positions(), target = ?targets, "replaying the event log");
            last_report = Instant::now();
        }
    }
    tracing::info!(positions = ?app.model.positions(), elapsed_ms = started.elapsed().as_millis() as u64, "read model caught up");
    Ok(())
}

/// How long a tail may stay silent before the node checks whether it is stalled.
const TAIL_STALL_CHECK: Duration = Duration::from_millis(400);
/// How long an entry the log already holds may take to reach a healthy tail.
const TAIL_IN_FLIGHT: Duration = Duration::from_millis(150);

/// Worker: applies partition `partition` of the log to the read model, forever, resuming after
/// errors from the last applied position.
async fn tail_partition(app: AppState, partition: u32) {
    let mut backoff = Duration::from_millis(20);
    loop {
        let from = app.model.applied(partition);
        // Creating a consumer needs the JetStream meta leader; while that is being elected (its
        // DC burned), read what the log holds entry by entry instead, from the stream's leader.
        let created = {
            let mut creating = std::pin::pin!(app.store.log().tail(partition, from));
            loop {
                tokio::select! {
                    created = &mut creating => break created,
                    _ = tokio::time::sleep(TAIL_STALL_CHECK) => read_ahead(&app, partition).await,
                }
            }
        };
        match created {
            Ok(entries) => {
                // A tail that could be created works again: the next failure starts a fresh backoff.
                backoff = Duration::from_millis(20);
                let mut entries = std::pin::pin!(entries);
                loop {
                    match tokio::time::timeout(TAIL_STALL_CHECK, entries.next()).await {
                        Ok(Some(Ok(entry))) => apply_entry(&app, partition, entry),
                        Ok(Some(Err(error))) => {
                            tracing::warn!(partition, %error, "event log tail interrupted");
                            break;
                        }
                        Ok(None) => break,
                        Err(_quiet) => {
                            // Quiet, or stalled: the server holding the consumer may be gone while
                            // the client library has not noticed yet. If the log holds entries this
                            // node has not seen, they must reach the tail soon (an entry appended a
                            // moment ago may still be on its way): keep reading it until then, or
                            // start a fresh tail from where this node is.
                            let Ok(last) = app.store.log().last_seq(partition).await else {
                                continue;
                            };
                            let deadline = tokio::time::Instant::now() + TAIL_IN_FLIGHT;
                            let mut healthy = true;
                            while healthy && app.model.applied(partition) < last {
                                match tokio::time::timeout_at(deadline, entries.next()).await {
                                    Ok(Some(Ok(entry))) => apply_entry(&app, partition, entry),
                                    Ok(Some(Err(error))) => {
                                        tracing::warn!(partition, %error, "event log tail interrupted");
                                        healthy = false;
                                    }
                                    Ok(None) => healthy = false,
                                    Err(_late) => {
                                        tracing::warn!(
                                            partition,
                                            last,
                                            applied = app.model.applied(partition),
                                            "event log tail stalled; recreating it"
                                        );
                                        read_ahead(&app, partition).await;
                                        healthy = false;
                                    }
                                }
                            }
                            if !healthy {
                                break;
                            }
                        }
                    }
                }
            }
            Err(error) => tracing::warn!(partition, %error, "cannot tail the event log"),
        }
        // Short and capped low: while a DC's server is gone, every retry is a quick failed request,
        // and the sooner the tail is back, the sooner this node's sends and syncs are.
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(250));
    }
}

/// Applies one entry the tail delivered. An ordered consumer never repeats or skips; guard anyway
/// (a fresh tail after a read-ahead starts where the model is).
fn apply_entry(app: &App, partition: u32, entry: haetae_store::LogEntry) {
    if entry.seq > app.model.applied(partition) {
        app.model.apply(partition, entry.seq, &entry.entity, &entry.payload);
        app.metrics.entries_applied.inc();
    }
}

/// Applies the entries the log holds past this node's position by reading them one at a time
/// (`STREAM.MSG.GET` from the partition's leader): no consumer needed. Stops at the first read
/// that fails; the tail takes over once it exists again.
async fn read_ahead(app: &App, partition: u32) {
    let Ok(Ok(last)) = tokio::time::timeout(Duration::from_secs(1), app.store.log().last_seq(partition)).await else {
        return;
    };
    let mut seq = app.model.applied(partition) + 1;
    while seq <= last {
        match tokio::time::timeout(Duration::from_secs(1), app.store.log().get(partition, seq)).await {
            Ok(Ok(Some(entry))) => {
                if entry.seq > app.model.applied(partition) {
                    app.model.apply(partition, entry.seq, &entry.entity, &entry.payload);
                    app.metrics.entries_applied.inc();
                }
            }
            Ok(Ok(None)) => {}
            _ => return,
        }
        seq += 1;
    }
}

/// Worker: applies typing notices that any node publishes.
async fn typing_listener(app: AppState) {
    loop {
        match app.store.ephemeral().subscribe().await {
            Ok(notices) => {
                let mut notices = std::pin::pin!(notices);
                while let Some(payload) = notices.next().await {
                    let Ok(notice) = serde_json::from_slice::<serde_json::Value>(&payload) else {
                        continue;
                    };
                    let (Some(room_id), Some(user_id)) = (notice["room_id"].as_str(), notice["user_id"].as_str()) else {
                        continue;
                    };
                    let typing = notice["typing"].as_bool().unwrap_or(false);
                    let timeout = Duration::from_millis(notice["timeout_ms"].as_u64().unwrap_or(30_000));
                    app.model.set_typing(room_id, user_id, typing, timeout);
                }
            }
            Err(error) => tracing::warn!(%error, "cannot subscribe to typing notices"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Worker: expires typing notices whose timeout passed.
async fn typing_expiry(app: AppState) {
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    loop {
        ticker.tick().await;
        app.model.expire_typing();
    }
}

/// Loads the deployment's read-model snapshot, if there is a usable one; otherwise the node
/// replays the log from the start (and says why).
async fn load_snapshot(app: &App) {
    let started = Instant::now();
    let snapshots = app.store.snapshots();
    let info = match snapshots.description().await {
        Ok(Some(description)) => SnapshotInfo::parse(&description),
        Ok(None) => {
            tracing::info!("no read-model snapshot yet; replaying the event log from the start");
            return;
        }
        Err(error) => {
            tracing::warn!(%error, "cannot read the read-model snapshot; replaying the event log from the start");
            return;
        }
    };
    let Some(info) = info else {
        tracing::warn!("the read-model snapshot has an unreadable description; replaying the event log from the start");
        return;
    };
    // Through a temporary file: the snapshot is read one room at a time, never held whole.
    let file = match tempfile::tempfile() {
        Ok(file) => file,
        Err(error) => {
            tracing::warn!(%error, "cannot create a temporary file for the read-model snapshot; replaying the event log from the start");
            return;
        }
    };
    let mut download = tokio::fs::File::from_std(file);
    match snapshots.get_into(&mut download).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(error) => {
            tracing::warn!(%error, "cannot read the read-model snapshot; replaying the event log from the start");
            return;
        }
    }
    let mut file = download.into_std().await;
    let model = app.model.clone();
    let load_info = info.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        file.seek(SeekFrom::Start(0)).map_err(|e| SnapshotLoadError::Corrupt(e.to_string()))?;
        model.load_snapshot_from(&load_info, BufReader::with_capacity(256 * 1024, file))
    })
    .await
    .unwrap_or_else(|error| Err(SnapshotLoadError::Corrupt(error.to_string())));
    match loaded {
        Ok(()) => tracing::info!(
            positions = ?info.positions,
            bytes = info.bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "loaded the read-model snapshot; replaying the event log after it"
        ),
        Err(error) => {
            tracing::warn!(%error, "read-model snapshot not used; replaying the event log from the start")
        }
    }
}

/// How often the window evictor checks the cache budget.
const EVICTION_INTERVAL: Duration = Duration::from_millis(200);

/// Worker: keeps rooms' recent windows within the node's cache budget.
async fn cache_evictor(app: AppState) {
    let mut ticker = tokio::time::interval(EVICTION_INTERVAL);
    loop {
        ticker.tick().await;
        if !app.model.over_budget() {
            continue;
        }
        let model = app.model.clone();
        // Sorting rooms by last use is CPU work: off the async threads.
        let _ = tokio::task::spawn_blocking(move || model.enforce_budget()).await;
    }
}

/// Worker: writes a read-model snapshot when the stored one is far enough behind this node.
/// Every node may write one (no node is special); a node that finds a recent enough snapshot
/// from another node leaves it.
async fn snapshot_writer(app: AppState) {
    let interval = Duration::from_secs(app.config.history.snapshot_interval_s.max(1));
    // Nodes started together should not all write at the same moment.
    let jitter_ms = rand::random::<u64>() % (interval.as_millis() as u64 / 2 + 1);
    tokio::time::sleep(interval + Duration::from_millis(jitter_ms)).await;
    loop {
        write_snapshot_if_behind(&app).await;
        tokio::time::sleep(interval).await;
    }
}

/// Writes a read-model snapshot if the stored one is at least `snapshot_min_entries` behind
/// this node's model.
pub async fn write_snapshot_if_behind(app: &AppState) {
    let mine: u64 = app.model.positions().iter().sum();
    let stored = match app.store.snapshots().description().await {
        Ok(description) => description.as_deref().and_then(SnapshotInfo::parse).map_or(0, |info| info.entries()),
        Err(error) => {
            tracing::warn!(%error, "cannot read the snapshot store");
            return;
        }
    };
    if mine < stored.saturating_add(app.config.history.snapshot_min_entries) {
        return;
    }
    let started = Instant::now();
    let model = app.model.clone();
    // Written to a temporary file and streamed from it: never a second copy of the model in memory.
    let written = tokio::task::spawn_blocking(move || -> std::io::Result<(SnapshotInfo, std::fs::File)> {
        let mut file = tempfile::tempfile()?;
        let info = model.write_snapshot(&mut file)?;
        file.seek(SeekFrom::Start(0))?;
        Ok((info, file))
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|written| written);
    match written {
        Ok((info, file)) => {
            let mut reader = tokio::fs::File::from_std(file);
            match app.store.snapshots().put(&mut reader, &info.describe()).await {
                Ok(()) => tracing::info!(
                    positions = ?info.positions,
                    bytes = info.bytes,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "wrote a read-model snapshot"
                ),
                Err(error) => tracing::warn!(%error, "cannot write a read-model snapshot"),
            }
        }
        Err(error) => tracing::warn!(%error, "cannot write a read-model snapshot"),
    }
}
