//! Presence: whether a user is online, idle or away, and what they say about it.
//!
//! Stored in the replicated presence bucket (one record per user: the state they set, their
//! status message, when they were last active), so it is the same at every node and survives the
//! loss of a DC. Every node watches the bucket and keeps the records in [`PresenceCache`], from
//! which `/sync` takes the presence of the users the caller shares a room with. A record is not
//! rewritten as it ages: the state a reader sees is derived from its age (online for
//! [`IDLE_AFTER`], then unavailable; anything but offline becomes offline after
//! [`OFFLINE_AFTER`]), and each node's sweep announces those transitions to syncs.
//!
//! Why a bucket and not the event log: presence is overwritten many times a minute across all
//! users and only its latest value matters. In the log every update would stay in the user's
//! history forever and be replayed by every starting node; a KV bucket keeps one value per user
//! (history 1) with the same replication (R3, one replica per DC).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use futures::StreamExt;
use haetae_store::Bucket;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::rooms::now_ms;
use super::{App, AppState, Caller};
use crate::error::{ApiResult, MatrixError};

/// An online user without activity for this long is shown as unavailable.
pub const IDLE_AFTER: Duration = Duration::from_secs(5 * 60);
/// A user without activity for this long is shown as offline, whatever they set.
pub const OFFLINE_AFTER: Duration = Duration::from_secs(30 * 60);
/// A sync marks its user active at most this often (each mark is a replicated write).
const SYNC_MARK_INTERVAL: Duration = Duration::from_secs(60);
/// Longest status message, bytes.
const MAX_STATUS_MSG_BYTES: usize = 1024;
/// Most presence events one sync carries.
const MAX_SYNC_EVENTS: usize = 1000;
/// How often each node looks for users whose shown state changed with age.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// One user's stored presence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PresenceRecord {
    /// What the user set: online, unavailable or offline.
    pub presence: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_msg: Option<String>,
    /// When the user was last active (set presence, synced), ms since the epoch.
    pub last_active_ts: u64,
}

impl PresenceRecord {
    /// The state shown at `now_ms`, aged.
    pub fn shown(&self, now_ms: u64) -> &str {
        let idle_ms = now_ms.saturating_sub(self.last_active_ts);
        if self.presence == "offline" || idle_ms >= OFFLINE_AFTER.as_millis() as u64 {
            "offline"
        } else if self.presence == "online" && idle_ms >= IDLE_AFTER.as_millis() as u64 {
            "unavailable"
        } else {
            &self.presence
        }
    }

    /// The spec's presence content at `now_ms`.
    pub fn content(&self, now_ms: u64) -> Value {
        let shown = self.shown(now_ms);
        let mut content = json!({
            "presence": shown,
            "last_active_ago": now_ms.saturating_sub(self.last_active_ts),
            "currently_active": shown == "online",
        });
        if let Some(status_msg) = &self.status_msg {
            content["status_msg"] = json!(status_msg);
        }
        content
    }
}

/// What this node knows of everyone's presence, fed by the bucket's watch.
#[derive(Default)]
pub struct PresenceCache {
    users: Mutex<Known>,
}

/// Everyone's presence as this node knows it, and its announcements by serial (so a sync reads
/// only the announcements after its token, not every user).
#[derive(Default)]
pub struct Known {
    /// user -> (record, the state last announced, the ephemeral serial of that announcement)
    users: HashMap<String, CachedPresence>,
    /// serial -> user: each user's latest announcement.
    by_serial: std::collections::BTreeMap<u64, String>,
}

impl Known {
    fn get(&self, user_id: &str) -> Option<&CachedPresence> {
        self.users.get(user_id)
    }

    fn set(&mut self, user_id: &str, cached: CachedPresence) {
        self.by_serial.insert(cached.serial, user_id.to_string());
        if let Some(old) = self.users.insert(user_id.to_string(), cached) {
            self.by_serial.remove(&old.serial);
        }
    }

    fn remove(&mut self, user_id: &str) -> bool {
        match self.users.remove(user_id) {
            Some(old) => {
                self.by_serial.remove(&old.serial);
                true
            }
            None => false,
        }
    }
}

#[derive(Clone)]
pub struct CachedPresence {
    record: PresenceRecord,
    announced: String,
    serial: u64,
}

impl PresenceCache {
    pub fn get(&self, user_id: &str) -> Option<PresenceRecord> {
        self.users.lock().expect("presence lock").get(user_id).map(|c| c.record.clone())
    }
}

/// Takes the next serial of the node's ephemeral counter (the one sync tokens carry after the
/// node name), so a sync from this node's token knows which announcements it has seen.
fn next_serial(app: &App) -> u64 {
    let mut ephemeral = app.model.typing.lock().expect("typing lock");
    ephemeral.serial += 1;
    ephemeral.serial
}

/// Everyone who shares a joined room with `user_id`, and the user.
fn audience(app: &App, user_id: &str) -> Vec<String> {
    let rooms: Vec<String> = app.model.with_user(user_id, |user| user.joined_rooms().cloned().collect());
    let mut users = vec![user_id.to_string()];
    for room_id in rooms {
        users.extend(app.model.with_room(&room_id, |room| room.state.members_with("join")).unwrap_or_default());
    }
    users.sort();
    users.dedup();
    users
}

/// A record arrived from the bucket (or was removed): remember it and wake who should see it.
fn learn(app: &App, user_id: &str, record: Option<PresenceRecord>) {
    let changed = {
        let mut users = app.presence.users.lock().expect("presence lock");
        match record {
            Some(record) => {
                let shown = record.shown(now_ms()).to_string();
                match users.users.get_mut(user_id) {
                    Some(cached) if cached.record == record => false,
                    // Only newer activity (a sync's mark): nothing others would see changed, so
                    // no announcement wakes the user's rooms.
                    Some(cached) if cached.announced == shown && cached.record.status_msg == record.status_msg => {
                        cached.record = record;
                        false
                    }
                    _ => {
                        users.set(user_id, CachedPresence { record, announced: shown, serial: next_serial(app) });
                        true
                    }
                }
            }
            None => users.remove(user_id),
        }
    };
    if changed {
        app.model.wake(&audience(app, user_id));
    }
}

/// Announces users whose shown state changed with age since it was last announced.
fn sweep(app: &App) {
    let now = now_ms();
    let mut aged = Vec::new();
    {
        let mut known = app.presence.users.lock().expect("presence lock");
        let Known { users, by_serial } = &mut *known;
        for (user_id, cached) in users.iter_mut() {
            let shown = cached.record.shown(now);
            if shown != cached.announced {
                cached.announced = shown.to_string();
                by_serial.remove(&cached.serial);
                cached.serial = next_serial(app);
                by_serial.insert(cached.serial, user_id.clone());
                aged.push(user_id.clone());
            }
        }
    }
    for user_id in aged {
        app.model.wake(&audience(app, &user_id));
    }
}

/// Worker: follows the presence bucket (every record at start, then each change) and ages
/// records; restarts the watch when it breaks (a DC lost, a leader elected).
pub async fn presence_worker(app: AppState) {
    let mut ticker = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        match app.store.kv().watch(Bucket::Presence).await {
            Ok(changes) => {
                let mut changes = std::pin::pin!(changes);
                loop {
                    tokio::select! {
                        change = changes.next() => match change {
                            Some((user_id, value)) => {
                                let record = value.and_then(|v| serde_json::from_slice::<PresenceRecord>(&v).ok());
                                learn(&app, &user_id, record);
                            }
                            None => break,
                        },
                        _ = ticker.tick() => sweep(&app),
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "cannot watch the presence bucket"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Stores `record` for `user_id` and applies it here at once (read-your-writes in this node's
/// syncs; the watch brings the same record again, which changes nothing).
async fn store(app: &App, user_id: &str, record: PresenceRecord) -> ApiResult<()> {
    let bytes = serde_json::to_vec(&record).unwrap_or_default();
    app.store.kv().put(Bucket::Presence, user_id, bytes.into()).await?;
    learn(app, user_id, Some(record));
    Ok(())
}

async fn read(app: &App, user_id: &str) -> ApiResult<Option<PresenceRecord>> {
    Ok(app.store.kv().get(Bucket::Presence, user_id).await?.and_then(|v| serde_json::from_slice(&v.value).ok()))
}

#[derive(Deserialize)]
pub struct PresenceBody {
    presence: String,
    status_msg: Option<String>,
}

pub async fn put_presence(app: &App, caller: &Caller, user_id: String, body: PresenceBody) -> ApiResult<Value> {
    if caller.user_id != user_id {
        return Err(MatrixError::forbidden("You can only set your own presence"));
    }
    if !["online", "unavailable", "offline"].contains(&body.presence.as_str()) {
        return Err(MatrixError::invalid_param("presence must be online, unavailable or offline"));
    }
    if body.status_msg.as_ref().is_some_and(|m| m.len() > MAX_STATUS_MSG_BYTES) {
        return Err(MatrixError::too_large(format!("status_msg is limited to {MAX_STATUS_MSG_BYTES} bytes")));
    }
    app.limit_writes(&caller.user_id)?;
    store(app, &user_id, PresenceRecord { presence: body.presence, status_msg: body.status_msg, last_active_ts: now_ms() })
        .await?;
    Ok(json!({}))
}

pub async fn get_presence(app: &App, caller: &Caller, user_id: String) -> ApiResult<Value> {
    if !haetae_matrix::ids::is_valid_user_id(&user_id) {
        return Err(MatrixError::invalid_param("not a user id"));
    }
    // Presence is for people who can see each other: oneself and those one shares a room with.
    if caller.user_id != user_id && !app.model.share_a_room(&caller.user_id, &user_id) {
        return Err(MatrixError::forbidden("You do not share a room with this user"));
    }
    match read(app, &user_id).await? {
        Some(record) => Ok(record.content(now_ms())),
        // Never seen: offline, as long ago as anyone can tell.
        None => Ok(json!({ "presence": "offline" })),
    }
}

/// Marks `user_id` active from a sync with `set_presence` (default online, per the spec): stored
/// at most once a minute while nothing changes. `offline` leaves the presence as it is.
pub async fn on_sync(app: &App, user_id: &str, set_presence: Option<&str>) {
    let presence = match set_presence.unwrap_or("online") {
        state @ ("online" | "unavailable") => state,
        _ => return,
    };
    let now = now_ms();
    let cached = app.presence.get(user_id);
    if let Some(cached) = &cached {
        let fresh = now.saturating_sub(cached.last_active_ts) < SYNC_MARK_INTERVAL.as_millis() as u64;
        if cached.presence == presence && fresh {
            return;
        }
    }
    let status_msg = cached.and_then(|c| c.status_msg);
    let record = PresenceRecord { presence: presence.to_string(), status_msg, last_active_ts: now };
    if let Err(error) = store(app, user_id, record).await {
        // A sync must not fail over presence: the next one tries again.
        tracing::debug!(error = %error.message, "presence not stored");
    }
}

/// The `presence.events` of a sync for `user_id`: announcements with `since < serial <= upto`
/// (the ephemeral serials of the since token, when it is this node's, and of the new token), or
/// everyone's current presence when `since` is None (initial sync, or a token of another node).
/// Only users the caller shares a room with, and the caller.
pub fn sync_events(app: &App, user_id: &str, since: Option<u64>, upto: u64) -> Vec<Value> {
    let now = now_ms();
    let candidates: Vec<(String, PresenceRecord)> = {
        let users = app.presence.users.lock().expect("presence lock");
        match since {
            Some(since) if since >= upto => Vec::new(),
            Some(since) => users
                .by_serial
                .range(since + 1..=upto)
                .filter_map(|(_, u)| users.get(u).map(|c| (u.clone(), c.record.clone())))
                .collect(),
            None => {
                drop(users);
                let visible = audience(app, user_id);
                let users = app.presence.users.lock().expect("presence lock");
                visible.into_iter().filter_map(|u| users.get(&u).map(|c| (u.clone(), c.record.clone()))).collect()
            }
        }
    };
    candidates
        .into_iter()
        .filter(|(other, _)| since.is_none() || other == user_id || app.model.share_a_room(user_id, other))
        .take(MAX_SYNC_EVENTS)
        .map(|(other, record)| json!({ "type": "m.presence", "sender": other, "content": record.content(now) }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_ages_to_unavailable_then_offline() {
        let record = PresenceRecord { presence: "online".into(), status_msg: None, last_active_ts: 1_000_000 };
        assert_eq!(record.shown(1_000_000), "online");
        assert_eq!(record.shown(1_000_000 + IDLE_AFTER.as_millis() as u64), "unavailable");
        assert_eq!(record.shown(1_000_000 + OFFLINE_AFTER.as_millis() as u64), "offline");
        let away = PresenceRecord { presence: "unavailable".into(), ..record.clone() };
        assert_eq!(away.shown(1_000_000 + IDLE_AFTER.as_millis() as u64), "unavailable");
        let content = record.content(1_000_000 + IDLE_AFTER.as_millis() as u64);
        assert_eq!(content["presence"], "unavailable");
        assert_eq!(content["currently_active"], false);
        assert_eq!(content["last_active_ago"], IDLE_AFTER.as_millis() as u64);
    }
}
