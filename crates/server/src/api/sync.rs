//! Sync: what changed for a user since a token, answered at once or when something arrives.
//!
//! # GET /_matrix/client/v3/sync
//!
//! A sync token is one position per event-log partition (valid at every node in every DC, since
//! the positions are the log's own sequences) plus this node's typing serial. A node that has not
//! yet applied a token's positions waits until it has before answering.

use axum::Json;
use axum::extract::{Query, State};
use axum::routing::get;
use serde_json::Value;

use super::client;
use crate::app::{AppState, Caller};
use crate::error::ApiResult;
use crate::services::sync as service;
use crate::services::sync::*;

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    client(router, "/sync", get(sync))
}

async fn sync(State(app): State<AppState>, caller: Caller, Query(query): Query<SyncQuery>) -> ApiResult<Json<Value>> {
    service::sync(&app, &caller, query).await.map(Json)
}
