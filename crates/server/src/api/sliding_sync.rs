//! Simplified sliding sync (MSC4186), the sync Element X and matrix-rust-sdk clients use.
//!
//! # POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync
//!
//! Lists of the caller's rooms by recency, room subscriptions and extensions; `pos` and
//! `timeout` in the query. The work is in `services::sliding_sync`.

use axum::Json;
use axum::extract::{Query, State};
use axum::routing::post;
use serde_json::Value;

use crate::app::{AppState, Caller, JsonBody};
use crate::error::ApiResult;
use crate::services::sliding_sync as service;

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    router.route("/_matrix/client/unstable/org.matrix.simplified_msc3575/sync", post(sync))
}

async fn sync(
    State(app): State<AppState>,
    caller: Caller,
    Query(query): Query<service::SlidingQuery>,
    JsonBody(body): JsonBody<service::SlidingRequest>,
) -> ApiResult<Json<Value>> {
    service::sync(&app, &caller, query, body).await.map(Json)
}
