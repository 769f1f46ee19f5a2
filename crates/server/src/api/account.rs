//! Accounts, logins, devices: everything about who a caller is.
//!
//! # POST /_matrix/client/v3/register
//! # GET  /_matrix/client/v3/register/available
//! # GET|POST /_matrix/client/v3/login
//! # POST /_matrix/client/v3/refresh (and /_matrix/client/v1/refresh)
//! # POST /_matrix/client/v1/login/get_token
//! # POST /_matrix/client/v3/logout, /logout/all
//! # GET  /_matrix/client/v3/account/whoami
//! # POST /_matrix/client/v3/account/password
//! # GET  /_matrix/client/v3/devices, GET|PUT|DELETE /devices/{deviceId}, POST /delete_devices
//!
//! Accounts, devices and tokens live in replicated KV; a token is stored only as its hash.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use serde_json::Value;

use super::client;
use axum::http::request::Parts;
use serde_json::json;

use crate::app::{AppState, Caller, JsonBody, client_ip};
use crate::error::ApiResult;
use crate::services::accounts as service;
use crate::services::accounts::*;

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    let router = client(router, "/register", post(register));
    let router = client(router, "/register/available", get(register_available));
    let router = client(router, "/login", get(login_flows).post(login));
    let router = client(router, "/refresh", post(refresh));
    let router = router
        .route("/_matrix/client/v1/refresh", post(refresh))
        .route("/_matrix/client/v1/login/get_token", post(get_login_token));
    let router = client(router, "/logout", post(logout));
    let router = client(router, "/logout/all", post(logout_all));
    let router = client(router, "/account/whoami", get(whoami));
    let router = client(router, "/account/password", post(change_password));
    let router = client(router, "/account/deactivate", post(deactivate));
    let router = client(router, "/devices", get(list_devices));
    let router = client(router, "/delete_devices", post(delete_devices));
    client(router, "/devices/{device_id}", get(get_device).put(update_device).delete(delete_device))
}

async fn register(
    State(app): State<AppState>,
    Query(query): Query<RegisterQuery>,
    parts: Parts,
    JsonBody(body): JsonBody<RegisterRequest>,
) -> ApiResult<Json<Value>> {
    service::register(&app, query, client_ip(&parts), body).await.map(Json)
}

async fn register_available(State(app): State<AppState>, Query(query): Query<AvailableQuery>) -> ApiResult<Json<Value>> {
    service::register_available(&app, query).await.map(Json)
}

async fn login(State(app): State<AppState>, parts: Parts, JsonBody(body): JsonBody<LoginRequest>) -> ApiResult<Json<Value>> {
    service::login(&app, client_ip(&parts), body).await.map(Json)
}

async fn refresh(State(app): State<AppState>, JsonBody(body): JsonBody<RefreshRequest>) -> ApiResult<Json<Value>> {
    service::refresh(&app, body).await.map(Json)
}

async fn get_login_token(
    State(app): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<LoginTokenRequest>,
) -> ApiResult<Json<Value>> {
    service::get_login_token(&app, &caller, body).await.map(Json)
}

async fn logout(State(app): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    service::logout(&app, &caller).await.map(Json)
}

async fn logout_all(State(app): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    service::logout_all(&app, &caller).await.map(Json)
}

async fn change_password(
    State(app): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<PasswordRequest>,
) -> ApiResult<Json<Value>> {
    service::change_password(&app, &caller, body).await.map(Json)
}

async fn list_devices(State(app): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    service::list_devices(&app, &caller).await.map(Json)
}

async fn get_device(State(app): State<AppState>, caller: Caller, Path(device_id): Path<String>) -> ApiResult<Json<Value>> {
    service::get_device(&app, &caller, device_id).await.map(Json)
}

async fn update_device(
    State(app): State<AppState>,
    caller: Caller,
    Path(device_id): Path<String>,
    JsonBody(body): JsonBody<UpdateDevice>,
) -> ApiResult<Json<Value>> {
    service::update_device(&app, &caller, device_id, body).await.map(Json)
}

async fn delete_device(
    State(app): State<AppState>,
    caller: Caller,
    Path(device_id): Path<String>,
    JsonBody(body): JsonBody<DeleteDevice>,
) -> ApiResult<Json<Value>> {
    service::delete_device(&app, &caller, device_id, body).await.map(Json)
}

async fn delete_devices(
    State(app): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<DeleteDevices>,
) -> ApiResult<Json<Value>> {
    service::delete_devices(&app, &caller, body).await.map(Json)
}

async fn login_flows() -> Json<Value> {
    Json(json!({ "flows": [{ "type": "m.login.password" }, { "type": "m.login.token", "get_login_token": true }] }))
}

async fn whoami(caller: Caller) -> Json<Value> {
    Json(json!({ "user_id": caller.user_id, "device_id": caller.device_id, "is_guest": false }))
}

async fn deactivate(State(app): State<AppState>, caller: Caller, JsonBody(body): JsonBody<DeactivateRequest>) -> ApiResult<Json<Value>> {
    service::deactivate_own(&app, &caller, body).await.map(Json)
}
