//! Server-side search over room events.
//!
//! # POST /_matrix/client/v3/search

use axum::Json;
use axum::extract::{Query, State};
use axum::routing::post;
use serde_json::Value;

use super::client;
use crate::app::{AppState, Caller, JsonBody};
use crate::error::ApiResult;
use crate::services::search::{self as service, SearchQuery};

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    client(router, "/search", post(search))
}

async fn search(
    State(app): State<AppState>,
    caller: Caller,
    Query(query): Query<SearchQuery>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    service::search(&app, &caller, query, body).await.map(Json)
}
