//! End-to-end encryption support: the server stores and relays keys and device messages, it never
//! decrypts anything.
//!
//! # POST /_matrix/client/v3/keys/upload, /keys/query, /keys/claim
//! # GET  /_matrix/client/v3/keys/changes
//! # PUT  /_matrix/client/v3/sendToDevice/{eventType}/{txnId}
//! # POST /_matrix/client/v3/keys/device_signing/upload, /keys/signatures/upload
//!
//! Keys live in the replicated keys bucket; a change is announced with a `KeysChanged` entry in the
//! owner's history, which drives `device_lists.changed` in everyone's sync.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post, put};
use serde_json::{Map, Value};

use super::client;
use crate::app::{AppState, Caller, JsonBody};
use crate::error::ApiResult;
use crate::services::keys as service;
use crate::services::keys::*;

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    let router = client(router, "/keys/upload", post(upload));
    let router = client(router, "/keys/query", post(query));
    let router = client(router, "/keys/claim", post(claim));
    let router = client(router, "/keys/changes", get(changes));
    let router = client(router, "/sendToDevice/{event_type}/{txn_id}", put(send_to_device));
    let router = client(router, "/keys/device_signing/upload", post(device_signing_upload));
    client(router, "/keys/signatures/upload", post(signatures_upload))
}

async fn upload(State(app): State<AppState>, caller: Caller, JsonBody(body): JsonBody<UploadRequest>) -> ApiResult<Json<Value>> {
    service::upload(&app, &caller, body).await.map(Json)
}

async fn query(State(app): State<AppState>, caller: Caller, JsonBody(body): JsonBody<QueryRequest>) -> ApiResult<Json<Value>> {
    service::query(&app, &caller, body).await.map(Json)
}

async fn claim(State(app): State<AppState>, _caller: Caller, JsonBody(body): JsonBody<ClaimRequest>) -> ApiResult<Json<Value>> {
    service::claim(&app, &_caller, body).await.map(Json)
}

async fn changes(State(app): State<AppState>, caller: Caller, Query(query): Query<ChangesQuery>) -> ApiResult<Json<Value>> {
    service::changes(&app, &caller, query).await.map(Json)
}

async fn send_to_device(
    State(app): State<AppState>,
    caller: Caller,
    Path(path): Path<(String, String)>,
    JsonBody(body): JsonBody<ToDeviceRequest>,
) -> ApiResult<Json<Value>> {
    service::send_to_device(&app, &caller, path, body).await.map(Json)
}

async fn device_signing_upload(
    State(app): State<AppState>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    // Where an OAuth session's person approves a reset (the `m.oauth` stage).
    let account_base = crate::oauth::base_url(&app, &headers);
    service::device_signing_upload(&app, &caller, &account_base, body).await.map(Json)
}

async fn signatures_upload(
    State(app): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    service::signatures_upload(&app, &caller, body).await.map(Json)
}
