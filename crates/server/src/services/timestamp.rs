//! `GET /v1/rooms/{roomId}/timestamp_to_event`: the event closest to a point in time, in one
//! direction. The room's chunk index (one position per 128 events) is searched by the time of
//! each chunk's first event, so the cost is about log2(events / 128) chunk reads plus the page
//! that finds the event in (at most) two chunks, never a walk through the history.

use serde::Deserialize;
use serde_json::{Value, json};

use super::rooms::{knows_room, readable_until};
use super::{App, Caller};
use crate::error::{ApiResult, MatrixError};
use crate::read_model::TimelineItem;

#[derive(Deserialize)]
pub struct TimestampQuery {
    ts: Option<String>,
    dir: Option<String>,
}

fn ts_of(item: &TimelineItem) -> u64 {
    item.event["origin_server_ts"].as_u64().unwrap_or(0)
}

pub async fn timestamp_to_event(app: &App, caller: &Caller, room_id: String, query: TimestampQuery) -> ApiResult<Value> {
    let Some(ts) = query.ts.as_deref() else { return Err(MatrixError::missing_param("ts is required")) };
    let ts: u64 = ts.parse().map_err(|_| MatrixError::invalid_param("ts must be a non-negative integer"))?;
    let forward = match query.dir.as_deref() {
        Some("f") => true,
        Some("b") => false,
        None => return Err(MatrixError::missing_param("dir is required")),
        Some(_) => return Err(MatrixError::invalid_param("dir must be 'f' or 'b'")),
    };
    if !haetae_matrix::ids::is_valid_room_id(&room_id) {
        return Err(MatrixError::invalid_param("Invalid room id"));
    }
    if !knows_room(app, &room_id).await? {
        return Err(MatrixError::not_found("Room not found"));
    }
    let until = readable_until(app, &caller.user_id, &room_id)?;
    let partition = app.model.partition_of(&room_id);
    let applied = app.model.applied(partition);
    let visible_from = app.model.with_room(&room_id, |room| room.visible_from(&caller.user_id)).unwrap_or(u64::MAX);
    let ceiling = until.min(applied);
    let log = app.store.log();
    // Going forward, events sent at `ts` itself may end the chunk before the first one starting
    // at `ts`: start from the last chunk starting strictly before it.
    let near = app.model.chunk_near_ts(log, &room_id, ts, forward).await.map_err(MatrixError::unavailable)?;
    let found = if forward {
        // The first event at or after `ts`: in the chunk found or at the start of the next one.
        let start = near.map_or(0, |(start, _)| start).max(visible_from);
        let page = app
            .model
            .page_forward(log, &room_id, start, ceiling, 1, |item| ts_of(item) >= ts)
            .await
            .map_err(MatrixError::unavailable)?;
        page.items.into_iter().next()
    } else {
        // The last event at or before `ts`: in the chunk found (whose first event qualifies).
        match near {
            None => None,
            Some((_, next)) => {
                let before = next.unwrap_or(u64::MAX).min(ceiling.saturating_add(1));
                // The chunk's first event qualifies, so the page stops there at the latest.
                let page = app
                    .model
                    .page_back(log, &room_id, before, visible_from, 1, |item| ts_of(item) <= ts)
                    .await
                    .map_err(MatrixError::unavailable)?;
                page.items.into_iter().next()
            }
        }
    };
    match found {
        Some(item) => Ok(json!({ "event_id": &*item.event_id, "origin_server_ts": ts_of(&item) })),
        None => Err(MatrixError::not_found("No event found in that direction")),
    }
}
