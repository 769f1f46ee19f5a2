//! Membership changes: joining, inviting, leaving, kicking, banning.
//!
//! # POST /_matrix/client/v3/join/{roomIdOrAlias}
//! # POST /_matrix/client/v3/knock/{roomIdOrAlias}
//! # POST /_matrix/client/v3/rooms/{roomId}/join, /invite, /leave, /forget, /kick, /ban, /unban
//!
//! Each is an `m.room.member` state event; the authorization rules decide whether it is allowed.

use axum::Json;
use axum::extract::{Path, State};
use axum::routing::post;
use serde_json::Value;

use super::client;
use crate::app::{AppState, Caller, JsonBody};
use crate::error::ApiResult;
use crate::services::membership as service;
use crate::services::membership::*;

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    let router = client(router, "/join/{room}", post(join));
    let router = client(router, "/rooms/{room}/join", post(join));
    let router = client(router, "/knock/{room}", post(knock));
    let router = client(router, "/rooms/{room}/invite", post(invite));
    let router = client(router, "/rooms/{room}/leave", post(leave));
    let router = client(router, "/rooms/{room}/forget", post(forget));
    let router = client(router, "/rooms/{room}/kick", post(kick));
    let router = client(router, "/rooms/{room}/ban", post(ban));
    client(router, "/rooms/{room}/unban", post(unban))
}

async fn join(
    State(app): State<AppState>,
    caller: Caller,
    Path(room): Path<String>,
    JsonBody(body): JsonBody<Target>,
) -> ApiResult<Json<Value>> {
    service::join(&app, &caller, room, body).await.map(Json)
}

async fn knock(
    State(app): State<AppState>,
    caller: Caller,
    Path(room): Path<String>,
    JsonBody(body): JsonBody<Target>,
) -> ApiResult<Json<Value>> {
    service::knock(&app, &caller, room, body).await.map(Json)
}

async fn invite(
    State(app): State<AppState>,
    caller: Caller,
    Path(room_id): Path<String>,
    JsonBody(body): JsonBody<Target>,
) -> ApiResult<Json<Value>> {
    service::invite(&app, &caller, room_id, body).await.map(Json)
}

async fn leave(
    State(app): State<AppState>,
    caller: Caller,
    Path(room_id): Path<String>,
    JsonBody(body): JsonBody<Target>,
) -> ApiResult<Json<Value>> {
    service::leave(&app, &caller, room_id, body).await.map(Json)
}

async fn forget(State(app): State<AppState>, caller: Caller, Path(room_id): Path<String>) -> ApiResult<Json<Value>> {
    service::forget(&app, &caller, room_id).await.map(Json)
}

async fn kick(
    State(app): State<AppState>,
    caller: Caller,
    Path(room_id): Path<String>,
    JsonBody(body): JsonBody<Target>,
) -> ApiResult<Json<Value>> {
    service::kick(&app, &caller, room_id, body).await.map(Json)
}

async fn ban(
    State(app): State<AppState>,
    caller: Caller,
    Path(room_id): Path<String>,
    JsonBody(body): JsonBody<Target>,
) -> ApiResult<Json<Value>> {
    service::ban(&app, &caller, room_id, body).await.map(Json)
}

async fn unban(
    State(app): State<AppState>,
    caller: Caller,
    Path(room_id): Path<String>,
    JsonBody(body): JsonBody<Target>,
) -> ApiResult<Json<Value>> {
    service::unban(&app, &caller, room_id, body).await.map(Json)
}
