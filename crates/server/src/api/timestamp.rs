//! Finding an event by time.
//!
//! # GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use serde_json::Value;

use super::account_extras::v1;
use crate::app::{AppState, Caller};
use crate::error::ApiResult;
use crate::services::timestamp::{self as service, TimestampQuery};

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    v1(router, "/rooms/{room_id}/timestamp_to_event", get(timestamp_to_event))
}

async fn timestamp_to_event(
    State(app): State<AppState>,
    caller: Caller,
    Path(room_id): Path<String>,
    Query(query): Query<TimestampQuery>,
) -> ApiResult<Json<Value>> {
    service::timestamp_to_event(&app, &caller, room_id, query).await.map(Json)
}
