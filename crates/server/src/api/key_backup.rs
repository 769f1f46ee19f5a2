//! Server-side key backup: a user's encrypted room keys, kept so that losing every device does
//! not lose encrypted history. The server stores opaque `session_data`; it never decrypts.
//!
//! # POST /_matrix/client/v3/room_keys/version
//! # GET  /_matrix/client/v3/room_keys/version
//! # GET|PUT|DELETE /_matrix/client/v3/room_keys/version/{version}
//! # GET|PUT|DELETE /_matrix/client/v3/room_keys/keys?version=
//! # GET|PUT|DELETE /_matrix/client/v3/room_keys/keys/{roomId}?version=
//! # GET|PUT|DELETE /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}?version=
//!
//! Everything lives in the replicated `RoomKeys` bucket, so a backup written through one DC is
//! there after that DC burns: one record per user naming their versions (key: the user id), and
//! one record per backed-up session (key path: user, version, room, session), replaced only by a
//! better key (compare-and-set). `count` and `etag` are read from the bucket itself (the number of
//! live sessions under the version, and the highest revision written under it), so they are exact
//! whichever node wrote what. Version numbers only grow: a deleted version's number is never
//! reused, so a slow upload to a version deleted meanwhile cannot leak into a new one.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use serde_json::Value;

use super::client;
use crate::app::{AppState, Caller, JsonBody};
use crate::error::ApiResult;
use crate::services::key_backup as service;
use crate::services::key_backup::*;

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    let router = client(router, "/room_keys/version", get(get_latest_version).post(create_version));
    let router = client(router, "/room_keys/version/{version}", get(get_version).put(update_version).delete(delete_version));
    let router = client(router, "/room_keys/keys", get(get_all_keys).put(put_all_keys).delete(delete_all_keys));
    let router = client(router, "/room_keys/keys/{room_id}", get(get_room_keys).put(put_room_keys).delete(delete_room_keys));
    client(router, "/room_keys/keys/{room_id}/{session_id}", get(get_session_key).put(put_session_key).delete(delete_session_key))
}

async fn create_version(
    State(app): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<VersionBody>,
) -> ApiResult<Json<Value>> {
    service::create_version(&app, &caller, body).await.map(Json)
}

async fn get_latest_version(State(app): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    service::get_latest_version(&app, &caller).await.map(Json)
}

async fn get_version(State(app): State<AppState>, caller: Caller, Path(version): Path<String>) -> ApiResult<Json<Value>> {
    service::get_version(&app, &caller, version).await.map(Json)
}

async fn update_version(
    State(app): State<AppState>,
    caller: Caller,
    Path(version): Path<String>,
    JsonBody(body): JsonBody<VersionBody>,
) -> ApiResult<Json<Value>> {
    service::update_version(&app, &caller, version, body).await.map(Json)
}

async fn delete_version(State(app): State<AppState>, caller: Caller, Path(version): Path<String>) -> ApiResult<Json<Value>> {
    service::delete_version(&app, &caller, version).await.map(Json)
}

async fn put_all_keys(
    State(app): State<AppState>,
    caller: Caller,
    Query(query): Query<VersionQuery>,
    JsonBody(body): JsonBody<AllKeysBody>,
) -> ApiResult<Json<Value>> {
    service::put_all_keys(&app, &caller, query, body).await.map(Json)
}

async fn put_room_keys(
    State(app): State<AppState>,
    caller: Caller,
    Path(room_id): Path<String>,
    Query(query): Query<VersionQuery>,
    JsonBody(body): JsonBody<RoomKeysBody>,
) -> ApiResult<Json<Value>> {
    service::put_room_keys(&app, &caller, room_id, query, body).await.map(Json)
}

async fn put_session_key(
    State(app): State<AppState>,
    caller: Caller,
    Path(path): Path<(String, String)>,
    Query(query): Query<VersionQuery>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    service::put_session_key(&app, &caller, path, query, body).await.map(Json)
}

async fn get_all_keys(State(app): State<AppState>, caller: Caller, Query(query): Query<VersionQuery>) -> ApiResult<Json<Value>> {
    service::get_all_keys(&app, &caller, query).await.map(Json)
}

async fn get_room_keys(
    State(app): State<AppState>,
    caller: Caller,
    Path(room_id): Path<String>,
    Query(query): Query<VersionQuery>,
) -> ApiResult<Json<Value>> {
    service::get_room_keys(&app, &caller, room_id, query).await.map(Json)
}

async fn get_session_key(
    State(app): State<AppState>,
    caller: Caller,
    Path(path): Path<(String, String)>,
    Query(query): Query<VersionQuery>,
) -> ApiResult<Json<Value>> {
    service::get_session_key(&app, &caller, path, query).await.map(Json)
}

async fn delete_all_keys(
    State(app): State<AppState>,
    caller: Caller,
    Query(query): Query<VersionQuery>,
) -> ApiResult<Json<Value>> {
    service::delete_all_keys(&app, &caller, query).await.map(Json)
}

async fn delete_room_keys(
    State(app): State<AppState>,
    caller: Caller,
    Path(room_id): Path<String>,
    Query(query): Query<VersionQuery>,
) -> ApiResult<Json<Value>> {
    service::delete_room_keys(&app, &caller, room_id, query).await.map(Json)
}

async fn delete_session_key(
    State(app): State<AppState>,
    caller: Caller,
    Path(path): Path<(String, String)>,
    Query(query): Query<VersionQuery>,
) -> ApiResult<Json<Value>> {
    service::delete_session_key(&app, &caller, path, query).await.map(Json)
}
