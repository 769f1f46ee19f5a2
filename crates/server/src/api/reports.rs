//! Reporting events, rooms and users to the server's administrators.
//!
//! # POST /_matrix/client/v3/rooms/{roomId}/report/{eventId}
//! # POST /_matrix/client/v3/rooms/{roomId}/report
//! # POST /_matrix/client/v3/users/{userId}/report

use axum::Json;
use axum::extract::{Path, State};
use axum::routing::post;
use serde_json::Value;

use super::client;
use crate::app::{AppState, Caller, JsonBody};
use crate::error::ApiResult;
use crate::services::reports::{self as service, EventReport, Reason};

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    let router = client(router, "/rooms/{room_id}/report/{event_id}", post(report_event));
    let router = client(router, "/rooms/{room_id}/report", post(report_room));
    client(router, "/users/{user_id}/report", post(report_user))
}

async fn report_event(
    State(app): State<AppState>,
    caller: Caller,
    Path(path): Path<(String, String)>,
    JsonBody(body): JsonBody<EventReport>,
) -> ApiResult<Json<Value>> {
    service::report_event(&app, &caller, path, body).await.map(Json)
}

async fn report_room(
    State(app): State<AppState>,
    caller: Caller,
    Path(room_id): Path<String>,
    JsonBody(body): JsonBody<Reason>,
) -> ApiResult<Json<Value>> {
    service::report_room(&app, &caller, room_id, body).await.map(Json)
}

async fn report_user(
    State(app): State<AppState>,
    caller: Caller,
    Path(user_id): Path<String>,
    JsonBody(body): JsonBody<Reason>,
) -> ApiResult<Json<Value>> {
    service::report_user(&app, &caller, user_id, body).await.map(Json)
}
