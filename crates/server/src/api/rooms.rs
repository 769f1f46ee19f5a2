//! Rooms: creating them, sending into them, reading their state and history, aliases.
//!
//! # POST /_matrix/client/v3/createRoom
//! # PUT  /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}
//! # GET|PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}
//! # GET  /_matrix/client/v3/rooms/{roomId}/state
//! # GET  /_matrix/client/v3/rooms/{roomId}/event/{eventId}
//! # GET  /_matrix/client/v3/rooms/{roomId}/context/{eventId}
//! # GET  /_matrix/client/v3/rooms/{roomId}/messages
//! # GET  /_matrix/client/v3/rooms/{roomId}/members, /joined_members
//! # GET  /_matrix/client/v3/joined_rooms
//! # PUT  /_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}
//! # GET|PUT|DELETE /_matrix/client/v3/directory/room/{roomAlias}

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post, put};
use serde_json::Value;

use super::client;
use crate::app::{AppState, Caller, JsonBody, RawBody};
use crate::error::ApiResult;
use crate::services::room_ops as service;
use crate::services::room_ops::*;

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    let router = client(router, "/createRoom", post(create_room));
    let router = client(router, "/rooms/{room_id}/send/{event_type}/{txn_id}", put(send_message));
    let router = client(router, "/rooms/{room_id}/state", get(get_full_state));
    let router = client(router, "/rooms/{room_id}/state/{event_type}", get(get_state_empty_key).put(put_state_empty_key));
    let router = client(router, "/rooms/{room_id}/state/{event_type}/", get(get_state_empty_key).put(put_state_empty_key));
    let router = client(router, "/rooms/{room_id}/state/{event_type}/{state_key}", get(get_state).put(put_state));
    let router = client(router, "/rooms/{room_id}/event/{event_id}", get(get_event));
    let router = client(router, "/rooms/{room_id}/context/{event_id}", get(get_context));
    let router = client(router, "/rooms/{room_id}/messages", get(get_messages));
    let router = client(router, "/rooms/{room_id}/members", get(get_members));
    let router = client(router, "/rooms/{room_id}/joined_members", get(get_joined_members));
    let router = client(router, "/joined_rooms", get(joined_rooms));
    let router = client(router, "/rooms/{room_id}/redact/{event_id}/{txn_id}", put(redact));
    client(router, "/directory/room/{alias}", get(get_alias).put(put_alias).delete(delete_alias))
}

async fn create_room(State(app): State<AppState>, caller: Caller, JsonBody(body): JsonBody<Value>) -> ApiResult<Json<Value>> {
    service::create_room(&app, &caller, body).await.map(Json)
}

async fn send_message(
    State(app): State<AppState>,
    caller: Caller,
    Path(path): Path<(String, String, String)>,
    RawBody(body): RawBody,
) -> ApiResult<Json<Value>> {
    service::send_message(&app, &caller, path, body).await.map(Json)
}

async fn put_state(
    State(app): State<AppState>,
    caller: Caller,
    Path(path): Path<(String, String, String)>,
    RawBody(body): RawBody,
) -> ApiResult<Json<Value>> {
    service::put_state(&app, &caller, path, body).await.map(Json)
}

async fn get_full_state(State(app): State<AppState>, caller: Caller, Path(room_id): Path<String>) -> ApiResult<Json<Value>> {
    service::get_full_state(&app, &caller, room_id).await.map(Json)
}

async fn get_state(
    State(app): State<AppState>,
    caller: Caller,
    Path(path): Path<(String, String, String)>,
    Query(query): Query<FormatQuery>,
) -> ApiResult<Json<Value>> {
    service::get_state(&app, &caller, path, query).await.map(Json)
}

async fn get_event(State(app): State<AppState>, caller: Caller, Path(path): Path<(String, String)>) -> ApiResult<Json<Value>> {
    service::get_event(&app, &caller, path).await.map(Json)
}

async fn get_context(
    State(app): State<AppState>,
    caller: Caller,
    Path(path): Path<(String, String)>,
    Query(query): Query<ContextQuery>,
) -> ApiResult<Json<Value>> {
    service::get_context(&app, &caller, path, query).await.map(Json)
}

async fn get_messages(
    State(app): State<AppState>,
    caller: Caller,
    Path(room_id): Path<String>,
    Query(query): Query<MessagesQuery>,
) -> ApiResult<Json<Value>> {
    service::get_messages(&app, &caller, room_id, query).await.map(Json)
}

async fn get_members(
    State(app): State<AppState>,
    caller: Caller,
    Path(room_id): Path<String>,
    Query(query): Query<MembersQuery>,
) -> ApiResult<Json<Value>> {
    service::get_members(&app, &caller, room_id, query).await.map(Json)
}

async fn get_joined_members(State(app): State<AppState>, caller: Caller, Path(room_id): Path<String>) -> ApiResult<Json<Value>> {
    service::get_joined_members(&app, &caller, room_id).await.map(Json)
}

async fn joined_rooms(State(app): State<AppState>, caller: Caller) -> Json<Value> {
    Json(service::joined_rooms(&app, &caller).await)
}

async fn redact(
    State(app): State<AppState>,
    caller: Caller,
    Path(path): Path<(String, String, String)>,
    JsonBody(body): JsonBody<RedactBody>,
) -> ApiResult<Json<Value>> {
    service::redact(&app, &caller, path, body).await.map(Json)
}

async fn get_alias(State(app): State<AppState>, Path(alias): Path<String>) -> ApiResult<Json<Value>> {
    service::get_alias(&app, alias).await.map(Json)
}

async fn put_alias(
    State(app): State<AppState>,
    caller: Caller,
    Path(alias): Path<String>,
    JsonBody(body): JsonBody<PutAlias>,
) -> ApiResult<Json<Value>> {
    service::put_alias(&app, &caller, alias, body).await.map(Json)
}

async fn delete_alias(State(app): State<AppState>, caller: Caller, Path(alias): Path<String>) -> ApiResult<Json<Value>> {
    service::delete_alias(&app, &caller, alias).await.map(Json)
}

async fn put_state_empty_key(
    state: State<AppState>,
    caller: Caller,
    Path((room_id, event_type)): Path<(String, String)>,
    RawBody(body): RawBody,
) -> ApiResult<Json<Value>> {
    put_state(state, caller, Path((room_id, event_type, String::new())), RawBody(body)).await
}

async fn get_state_empty_key(
    state: State<AppState>,
    caller: Caller,
    Path((room_id, event_type)): Path<(String, String)>,
    query: Query<FormatQuery>,
) -> ApiResult<Json<Value>> {
    get_state(state, caller, Path((room_id, event_type, String::new())), query).await
}
