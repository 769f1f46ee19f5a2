//! Third-party networks: no bridges, so empty answers.
//!
//! # GET /_matrix/client/v3/thirdparty/protocols, /thirdparty/protocol/{protocol}
//! # GET /_matrix/client/v3/thirdparty/location/{protocol}, /thirdparty/user/{protocol}
//! # GET /_matrix/client/v3/thirdparty/location?alias=, /thirdparty/user?userid=

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query};
use axum::routing::get;
use serde_json::Value;

use super::client;
use crate::app::{AppState, Caller};
use crate::error::ApiResult;
use crate::services::thirdparty as service;

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    let router = client(router, "/thirdparty/protocols", get(protocols));
    let router = client(router, "/thirdparty/protocol/{protocol}", get(protocol));
    let router = client(router, "/thirdparty/location/{protocol}", get(by_protocol));
    let router = client(router, "/thirdparty/user/{protocol}", get(by_protocol));
    let router = client(router, "/thirdparty/location", get(location));
    client(router, "/thirdparty/user", get(user))
}

async fn protocols(_caller: Caller) -> Json<Value> {
    Json(service::protocols())
}

async fn protocol(_caller: Caller, Path(protocol): Path<String>) -> ApiResult<Json<Value>> {
    service::protocol(&protocol).map(Json)
}

async fn by_protocol(_caller: Caller, Path(_protocol): Path<String>) -> Json<Value> {
    Json(service::by_protocol())
}

async fn location(_caller: Caller, Query(query): Query<HashMap<String, String>>) -> ApiResult<Json<Value>> {
    service::reverse("alias", query.get("alias").map(String::as_str)).map(Json)
}

async fn user(_caller: Caller, Query(query): Query<HashMap<String, String>>) -> ApiResult<Json<Value>> {
    service::reverse("userid", query.get("userid").map(String::as_str)).map(Json)
}
