//! Reports of events, rooms and users, kept for the server's administrators in the replicated
//! `Reports` bucket (one record per report, under a time-ordered id, so a listing of the bucket
//! reads them oldest first). Nothing is sent to anyone: an admin API reads them later.

use haetae_store::Bucket;
use haetae_store::kv::KeyPath;
use serde::Deserialize;
use serde_json::{Value, json};

use super::rooms::{find_event, knows_room, random_string, readable_until};
use super::{App, Caller};
use crate::error::{ApiResult, MatrixError};
use crate::read_model::Membership;

/// Longest reason kept, bytes.
const MAX_REASON_BYTES: usize = 4096;
/// The first key segment of every report (a listing reads everything under it).
pub const REPORTS_PREFIX: &str = "report";

#[derive(Deserialize)]
pub struct EventReport {
    #[serde(default)]
    reason: Option<String>,
}

/// The room and user reports require a reason (which may be blank).
#[derive(Deserialize)]
pub struct Reason {
    reason: String,
}

fn check_reason(reason: Option<&str>) -> ApiResult<()> {
    if reason.is_some_and(|r| r.len() > MAX_REASON_BYTES) {
        return Err(MatrixError::invalid_param(format!("a reason is at most {MAX_REASON_BYTES} bytes")));
    }
    Ok(())
}

/// Stores one report under a new, time-ordered id.
async fn store_report(app: &App, caller: &Caller, mut report: Value) -> ApiResult<()> {
    // The microseconds after the millisecond too: two reports made one after the other in the
    // same millisecond still list in the order they were made (ids stay ordered by millisecond
    // first, as before).
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let (ts, micros) = (now.as_millis() as u64, now.subsec_micros() % 1000);
    let id = format!("{ts:016}{micros:03}_{}", random_string(12));
    report["id"] = json!(id);
    report["reporter"] = json!(caller.user_id);
    report["received_ts"] = json!(ts);
    let bytes = serde_json::to_vec(&report).unwrap_or_default();
    app.store.kv().create(Bucket::Reports, &KeyPath::new(&[REPORTS_PREFIX, &id]), bytes.into()).await?;
    Ok(())
}

/// `POST /rooms/{roomId}/report/{eventId}`: the caller must be joined and able to see the event;
/// otherwise 404, like an event that does not exist.
pub async fn report_event(app: &App, caller: &Caller, (room_id, event_id): (String, String), body: EventReport) -> ApiResult<Value> {
    app.limit_writes(&caller.user_id)?;
    check_reason(body.reason.as_deref())?;
    let not_found = || MatrixError::not_found("The event was not found or you are not joined to the room");
    if !haetae_matrix::ids::is_valid_room_id(&room_id) || app.model.membership(&room_id, &caller.user_id) != Some(Membership::Join) {
        return Err(not_found());
    }
    let until = readable_until(app, &caller.user_id, &room_id).map_err(|_| not_found())?;
    let visible_from = app.model.with_room(&room_id, |room| room.visible_from(&caller.user_id)).unwrap_or(u64::MAX);
    let item = match find_event(app, &room_id, &event_id).await? {
        Some(item) if item.seq <= until && item.seq >= visible_from => item,
        _ => return Err(not_found()),
    };
    let report = json!({
        "kind": "event",
        "room_id": room_id,
        "event_id": event_id,
        "sender": &*item.sender,
        "reason": body.reason,
    });
    store_report(app, caller, report).await?;
    Ok(json!({}))
}

/// `POST /rooms/{roomId}/report`: any user may report a room this server knows.
pub async fn report_room(app: &App, caller: &Caller, room_id: String, body: Reason) -> ApiResult<Value> {
    app.limit_writes(&caller.user_id)?;
    check_reason(Some(&body.reason))?;
    if !haetae_matrix::ids::is_valid_room_id(&room_id) || !knows_room(app, &room_id).await? {
        return Err(MatrixError::not_found("The room was not found"));
    }
    store_report(app, caller, json!({ "kind": "room", "room_id": room_id, "reason": body.reason })).await?;
    Ok(json!({}))
}

/// `POST /users/{userId}/report`: any user may report a user of this server.
pub async fn report_user(app: &App, caller: &Caller, user_id: String, body: Reason) -> ApiResult<Value> {
    app.limit_writes(&caller.user_id)?;
    check_reason(Some(&body.reason))?;
    if !haetae_matrix::ids::is_valid_user_id(&user_id) {
        return Err(MatrixError::invalid_param("Not a user id"));
    }
    let local = haetae_matrix::ids::server_name(&user_id) == Some(app.config.server_name.as_str());
    let localpart = haetae_matrix::ids::localpart(&user_id).unwrap_or_default();
    if !local || app.store.kv().get(Bucket::Accounts, localpart).await?.is_none() {
        return Err(MatrixError::not_found("The user was not found"));
    }
    store_report(app, caller, json!({ "kind": "user", "user_id": user_id, "reason": body.reason })).await?;
    Ok(json!({}))
}

/// Every stored report, oldest first (at most `max`): what an admin API will serve.
pub async fn list_reports(app: &App, max: usize) -> ApiResult<Vec<Value>> {
    let listing = app.store.kv().list(Bucket::Reports, &KeyPath::new(&[REPORTS_PREFIX]), max, true).await?;
    let mut reports: Vec<(String, Value)> = listing
        .entries
        .into_iter()
        .filter_map(|(key, stored)| Some((key.join("."), serde_json::from_slice(&stored.value).ok()?)))
        .collect();
    reports.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(reports.into_iter().map(|(_, report)| report).collect())
}
