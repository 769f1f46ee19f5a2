//! OpenID tokens for widgets and calls.
//!
//! # POST /_matrix/client/v3/user/{userId}/openid/request_token
//! # GET  /_matrix/federation/v1/openid/userinfo?access_token=...

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::Value;

use super::client;
use crate::app::{AppState, Caller, JsonBody};
use crate::error::{ApiResult, MatrixError};
use crate::services::openid as service;

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    let router = client(router, "/user/{user_id}/openid/request_token", post(request_token));
    router.route("/_matrix/federation/v1/openid/userinfo", get(userinfo))
}

async fn request_token(
    State(app): State<AppState>,
    caller: Caller,
    Path(user_id): Path<String>,
    JsonBody(_body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    service::request_token(&app, &caller, &user_id).await.map(Json)
}

#[derive(Deserialize)]
struct UserinfoQuery {
    access_token: Option<String>,
}

async fn userinfo(State(app): State<AppState>, Query(query): Query<UserinfoQuery>) -> ApiResult<Json<Value>> {
    let token = query.access_token.ok_or_else(|| MatrixError::missing_param("access_token is required"))?;
    service::userinfo(&app, &token).await.map(Json)
}
