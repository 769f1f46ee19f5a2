//! The admin API, on Synapse's paths and shapes (so admin tools written for Synapse work), for
//! administrators only (`services::admin`).
//!
//! # GET  /_synapse/admin/v1/server_version
//! # GET  /_synapse/admin/v2/users                       ?from, limit, name, deactivated
//! # GET|PUT /_synapse/admin/v2/users/{userId}           PUT creates (201) or changes (200)
//! # GET  /_synapse/admin/v2/users/{userId}/devices
//! # GET|PUT /_synapse/admin/v1/users/{userId}/admin
//! # POST /_synapse/admin/v1/deactivate/{userId}
//! # POST /_synapse/admin/v1/reset_password/{userId}
//! # GET  /_synapse/admin/v1/rooms                       ?from, limit, search_term
//! # GET  /_synapse/admin/v1/rooms/{roomId}, /members, /state
//! # POST /_synapse/admin/v1/send_server_notice           {user_id, content}

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::{AppState, Caller, JsonBody};
use crate::error::ApiResult;
use crate::services::admin::{self as service, Page, PasswordReset, UserChange, require_admin};

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    router
        .route("/_synapse/admin/v1/server_version", get(server_version))
        .route("/_synapse/admin/v2/users", get(list_users))
        .route("/_synapse/admin/v2/users/{user_id}", get(get_user).put(put_user))
        .route("/_synapse/admin/v2/users/{user_id}/devices", get(user_devices))
        .route("/_synapse/admin/v1/users/{user_id}/admin", get(admin_flag).put(set_admin_flag))
        .route("/_synapse/admin/v1/deactivate/{user_id}", post(deactivate))
        .route("/_synapse/admin/v1/reset_password/{user_id}", post(reset_password))
        .route("/_synapse/admin/v1/rooms", get(list_rooms))
        .route("/_synapse/admin/v1/rooms/{room_id}", get(get_room))
        .route("/_synapse/admin/v1/rooms/{room_id}/members", get(room_members))
        .route("/_synapse/admin/v1/rooms/{room_id}/state", get(room_state))
        .route("/_synapse/admin/v1/send_server_notice", post(send_server_notice))
}

async fn server_version(State(app): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    require_admin(&app, &caller).await?;
    Ok(Json(json!({ "server_version": format!("haetae {}", env!("CARGO_PKG_VERSION")) })))
}

async fn list_users(State(app): State<AppState>, caller: Caller, Query(page): Query<Page>) -> ApiResult<Json<Value>> {
    require_admin(&app, &caller).await?;
    service::list_users(&app, page).await.map(Json)
}

async fn get_user(State(app): State<AppState>, caller: Caller, Path(user_id): Path<String>) -> ApiResult<Json<Value>> {
    require_admin(&app, &caller).await?;
    service::get_user(&app, &user_id).await.map(Json)
}

async fn put_user(
    State(app): State<AppState>,
    caller: Caller,
    Path(user_id): Path<String>,
    JsonBody(change): JsonBody<UserChange>,
) -> ApiResult<Response> {
    require_admin(&app, &caller).await?;
    let (created, user) = service::put_user(&app, &caller, &user_id, change).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(user)).into_response())
}

async fn user_devices(State(app): State<AppState>, caller: Caller, Path(user_id): Path<String>) -> ApiResult<Json<Value>> {
    require_admin(&app, &caller).await?;
    service::user_devices(&app, &user_id).await.map(Json)
}

async fn admin_flag(State(app): State<AppState>, caller: Caller, Path(user_id): Path<String>) -> ApiResult<Json<Value>> {
    require_admin(&app, &caller).await?;
    service::admin_flag(&app, &user_id).await.map(Json)
}

#[derive(Deserialize)]
struct AdminFlag {
    admin: bool,
}

async fn set_admin_flag(
    State(app): State<AppState>,
    caller: Caller,
    Path(user_id): Path<String>,
    JsonBody(body): JsonBody<AdminFlag>,
) -> ApiResult<Json<Value>> {
    require_admin(&app, &caller).await?;
    service::set_admin_flag(&app, &caller, &user_id, body.admin).await.map(Json)
}

async fn deactivate(State(app): State<AppState>, caller: Caller, Path(user_id): Path<String>) -> ApiResult<Json<Value>> {
    require_admin(&app, &caller).await?;
    service::deactivate(&app, &caller, &user_id).await.map(Json)
}

async fn reset_password(
    State(app): State<AppState>,
    caller: Caller,
    Path(user_id): Path<String>,
    JsonBody(body): JsonBody<PasswordReset>,
) -> ApiResult<Json<Value>> {
    require_admin(&app, &caller).await?;
    service::reset_password(&app, &caller, &user_id, body).await.map(Json)
}

#[derive(Deserialize)]
struct RoomQuery {
    from: Option<String>,
    limit: Option<String>,
    search_term: Option<String>,
}

async fn list_rooms(State(app): State<AppState>, caller: Caller, Query(query): Query<RoomQuery>) -> ApiResult<Json<Value>> {
    require_admin(&app, &caller).await?;
    let page = Page::new(query.from, query.limit, query.search_term);
    service::list_rooms(&app, page).await.map(Json)
}

async fn get_room(State(app): State<AppState>, caller: Caller, Path(room_id): Path<String>) -> ApiResult<Json<Value>> {
    require_admin(&app, &caller).await?;
    service::get_room(&app, &room_id).await.map(Json)
}

async fn room_members(State(app): State<AppState>, caller: Caller, Path(room_id): Path<String>) -> ApiResult<Json<Value>> {
    require_admin(&app, &caller).await?;
    service::room_members(&app, &room_id).await.map(Json)
}

async fn room_state(State(app): State<AppState>, caller: Caller, Path(room_id): Path<String>) -> ApiResult<Json<Value>> {
    require_admin(&app, &caller).await?;
    service::room_state(&app, &room_id).await.map(Json)
}

#[derive(Deserialize)]
struct ServerNotice {
    user_id: String,
    content: Value,
}

async fn send_server_notice(State(app): State<AppState>, caller: Caller, JsonBody(body): JsonBody<ServerNotice>) -> ApiResult<Json<Value>> {
    require_admin(&app, &caller).await?;
    let event_id = crate::services::notices::send(&app, &body.user_id, body.content).await?;
    tracing::info!(admin = %caller.user_id, user_id = %body.user_id, "admin sent a server notice");
    Ok(Json(json!({ "event_id": event_id })))
}
