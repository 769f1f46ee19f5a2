//! The notifications the caller's push rules raised.
//!
//! # GET /_matrix/client/v3/notifications

use axum::Json;
use axum::extract::{Query, State};
use axum::routing::get;
use serde_json::Value;

use super::client;
use crate::app::{AppState, Caller};
use crate::error::ApiResult;
use crate::services::notifications::{self as service, NotificationsQuery};

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    client(router, "/notifications", get(notifications))
}

async fn notifications(
    State(app): State<AppState>,
    caller: Caller,
    Query(query): Query<NotificationsQuery>,
) -> ApiResult<Json<Value>> {
    service::notifications(&app, &caller, query).await.map(Json)
}
