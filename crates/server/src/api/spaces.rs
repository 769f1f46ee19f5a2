//! Spaces.
//!
//! # GET /_matrix/client/v1/rooms/{roomId}/hierarchy

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use serde_json::Value;

use super::account_extras::v1;
use crate::app::{AppState, Caller};
use crate::error::ApiResult;
use crate::services::spaces::{self as service, HierarchyQuery};

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    v1(router, "/rooms/{room_id}/hierarchy", get(hierarchy))
}

async fn hierarchy(
    State(app): State<AppState>,
    caller: Caller,
    Path(room_id): Path<String>,
    Query(query): Query<HierarchyQuery>,
) -> ApiResult<Json<Value>> {
    service::hierarchy(&app, &caller, room_id, query).await.map(Json)
}
