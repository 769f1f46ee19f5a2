//! Room tags, stored as the room account data `m.tag`.
//!
//! # GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags
//! # PUT|DELETE /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}

use axum::Json;
use axum::extract::{Path, State};
use axum::routing::{get, put};
use serde_json::Value;

use super::client;
use crate::app::{AppState, Caller, JsonBody};
use crate::error::ApiResult;
use crate::services::tags as service;

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    let router = client(router, "/user/{user_id}/rooms/{room_id}/tags", get(get_tags));
    client(router, "/user/{user_id}/rooms/{room_id}/tags/{tag}", put(put_tag).delete(delete_tag))
}

async fn get_tags(State(app): State<AppState>, caller: Caller, Path(path): Path<(String, String)>) -> ApiResult<Json<Value>> {
    service::get_tags(&app, &caller, path).await.map(Json)
}

async fn put_tag(
    State(app): State<AppState>,
    caller: Caller,
    Path(path): Path<(String, String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    service::put_tag(&app, &caller, path, body).await.map(Json)
}

async fn delete_tag(
    State(app): State<AppState>,
    caller: Caller,
    Path(path): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    service::delete_tag(&app, &caller, path).await.map(Json)
}
