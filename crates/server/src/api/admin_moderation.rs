//! The admin API's moderation endpoints, on Synapse's paths and shapes, for administrators only:
//! registration tokens (`services::registration_tokens`), blocking and deleting rooms
//! (`services::room_moderation`), and media (`services::media`).
//!
//! # GET  /_synapse/admin/v1/registration_tokens            ?valid=true|false
//! # POST /_synapse/admin/v1/registration_tokens/new        {token, uses_allowed, expiry_time, length}
//! # GET|PUT|DELETE /_synapse/admin/v1/registration_tokens/{token}
//! # GET|PUT /_synapse/admin/v1/rooms/{roomId}/block        {block}
//! # DELETE /_synapse/admin/v1/rooms/{roomId}               {block, purge, new_room_user_id, room_name, message}
//! # DELETE /_synapse/admin/v2/rooms/{roomId}               the same, answers a delete_id
//! # GET  /_synapse/admin/v2/rooms/{roomId}/delete_status
//! # GET  /_synapse/admin/v2/rooms/delete_status/{deleteId}
//! # GET  /_synapse/admin/v1/users/{userId}/media           ?from, limit, dir
//! # POST /_synapse/admin/v1/media/quarantine/{serverName}/{mediaId}
//! # POST /_synapse/admin/v1/media/unquarantine/{serverName}/{mediaId}
//! # DELETE /_synapse/admin/v1/media/{serverName}/{mediaId}

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::routing::{delete, get, post};
use serde::Deserialize;
use serde_json::Value;

use crate::app::{AppState, Caller, JsonBody};
use crate::error::ApiResult;
use crate::services::admin::require_admin;
use crate::services::media::{self, MediaPage};
use crate::services::registration_tokens as tokens;
use crate::services::room_moderation::{self as rooms, BlockRequest, DeleteRequest};

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    router
        .route("/_synapse/admin/v1/registration_tokens", get(list_tokens))
        .route("/_synapse/admin/v1/registration_tokens/new", post(new_token))
        .route("/_synapse/admin/v1/registration_tokens/{token}", get(get_token).put(update_token).delete(delete_token))
        .route("/_synapse/admin/v1/rooms/{room_id}/block", get(get_block).put(set_block))
        // GET of this path is `admin`'s: axum merges the methods of one path registered twice.
        .route("/_synapse/admin/v1/rooms/{room_id}", delete(delete_room_now))
        .route("/_synapse/admin/v2/rooms/{room_id}", delete(delete_room_tracked))
        .route("/_synapse/admin/v2/rooms/{room_id}/delete_status", get(room_delete_status))
        .route("/_synapse/admin/v2/rooms/delete_status/{delete_id}", get(delete_status))
        .route("/_synapse/admin/v1/users/{user_id}/media", get(user_media))
        .route("/_synapse/admin/v1/media/quarantine/{server}/{media_id}", post(quarantine))
        .route("/_synapse/admin/v1/media/unquarantine/{server}/{media_id}", post(unquarantine))
        .route("/_synapse/admin/v1/media/{server}/{media_id}", delete(delete_media))
}

#[derive(Deserialize)]
struct ValidQuery {
    valid: Option<String>,
}

async fn list_tokens(State(app): State<AppState>, caller: Caller, Query(query): Query<ValidQuery>) -> ApiResult<Json<Value>> {
    require_admin(&app, &caller).await?;
    tokens::list(&app, query.valid.as_deref()).await.map(Json)
}

async fn new_token(State(app): State<AppState>, caller: Caller, JsonBody(body): JsonBody<Value>) -> ApiResult<Json<Value>> {
    require_admin(&app, &caller).await?;
    tokens::create(&app, &body).await.map(Json)
}

async fn get_token(State(app): State<AppState>, caller: Caller, Path(token): Path<String>) -> ApiResult<Json<Value>> {
    require_admin(&app, &caller).await?;
    tokens::get(&app, &token).await.map(Json)
}

async fn update_token(
    State(app): State<AppState>,
    caller: Caller,
    Path(token): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    require_admin(&app, &caller).await?;
    tokens::update(&app, &token, &body).await.map(Json)
}

async fn delete_token(State(app): State<AppState>, caller: Caller, Path(token): Path<String>) -> ApiResult<Json<Value>> {
    require_admin(&app, &caller).await?;
    tokens::delete(&app, &token).await.map(Json)
}

async fn get_block(State(app): State<AppState>, caller: Caller, Path(room_id): Path<String>) -> ApiResult<Json<Value>> {
    require_admin(&app, &caller).await?;
    rooms::get_block(&app, &room_id).await.map(Json)
}

async fn set_block(
    State(app): State<AppState>,
    caller: Caller,
    Path(room_id): Path<String>,
    JsonBody(body): JsonBody<BlockRequest>,
) -> ApiResult<Json<Value>> {
    require_admin(&app, &caller).await?;
    rooms::set_block(&app, &caller, &room_id, body).await.map(Json)
}

async fn delete_room_now(
    State(app): State<AppState>,
    caller: Caller,
    Path(room_id): Path<String>,
    JsonBody(body): JsonBody<DeleteRequest>,
) -> ApiResult<Json<Value>> {
    require_admin(&app, &caller).await?;
    rooms::delete_now(&app, &caller, &room_id, body).await.map(Json)
}

async fn delete_room_tracked(
    State(app): State<AppState>,
    caller: Caller,
    Path(room_id): Path<String>,
    JsonBody(body): JsonBody<DeleteRequest>,
) -> ApiResult<Json<Value>> {
    require_admin(&app, &caller).await?;
    rooms::delete_tracked(&app, &caller, &room_id, body).await.map(Json)
}

async fn room_delete_status(State(app): State<AppState>, caller: Caller, Path(room_id): Path<String>) -> ApiResult<Json<Value>> {
    require_admin(&app, &caller).await?;
    rooms::room_delete_status(&app, &room_id).await.map(Json)
}

async fn delete_status(State(app): State<AppState>, caller: Caller, Path(delete_id): Path<String>) -> ApiResult<Json<Value>> {
    require_admin(&app, &caller).await?;
    rooms::delete_status(&app, &delete_id).await.map(Json)
}

async fn user_media(
    State(app): State<AppState>,
    caller: Caller,
    Path(user_id): Path<String>,
    Query(page): Query<MediaPage>,
) -> ApiResult<Json<Value>> {
    require_admin(&app, &caller).await?;
    media::user_media(&app, &user_id, page).await.map(Json)
}

async fn quarantine(
    State(app): State<AppState>,
    caller: Caller,
    Path((server, media_id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    require_admin(&app, &caller).await?;
    media::set_quarantine(&app, &caller.user_id, &server, &media_id, true).await.map(Json)
}

async fn unquarantine(
    State(app): State<AppState>,
    caller: Caller,
    Path((server, media_id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    require_admin(&app, &caller).await?;
    media::set_quarantine(&app, &caller.user_id, &server, &media_id, false).await.map(Json)
}

async fn delete_media(
    State(app): State<AppState>,
    caller: Caller,
    Path((server, media_id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    require_admin(&app, &caller).await?;
    media::delete(&app, &caller.user_id, &server, &media_id).await.map(Json)
}
