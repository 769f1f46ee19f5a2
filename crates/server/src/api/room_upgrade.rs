//! Room upgrades.
//!
//! # POST /_matrix/client/v3/rooms/{roomId}/upgrade

use axum::Json;
use axum::extract::{Path, State};
use axum::routing::post;
use serde_json::Value;

use super::client;
use crate::app::{AppState, Caller, JsonBody};
use crate::error::ApiResult;
use crate::services::room_upgrade as service;

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    client(router, "/rooms/{room_id}/upgrade", post(upgrade))
}

async fn upgrade(
    State(app): State<AppState>,
    caller: Caller,
    Path(room_id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    service::upgrade(&app, &caller, room_id, body).await.map(Json)
}
