//! The deprecated API from before `/sync`, for old clients.
//!
//! # GET /_matrix/client/v3/events
//! # GET /_matrix/client/v3/events/{eventId}
//! # GET /_matrix/client/v3/initialSync
//! # GET /_matrix/client/v3/rooms/{roomId}/initialSync

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use serde_json::Value;

use super::client;
use crate::app::{AppState, Caller};
use crate::error::ApiResult;
use crate::services::legacy::{self as service, EventsQuery, InitialSyncQuery};

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    let router = client(router, "/events", get(events));
    let router = client(router, "/events/{event_id}", get(event));
    let router = client(router, "/initialSync", get(initial_sync));
    client(router, "/rooms/{room_id}/initialSync", get(room_initial_sync))
}

async fn events(State(app): State<AppState>, caller: Caller, Query(query): Query<EventsQuery>) -> ApiResult<Json<Value>> {
    service::events(&app, &caller, query).await.map(Json)
}

async fn event(State(app): State<AppState>, caller: Caller, Path(event_id): Path<String>) -> ApiResult<Json<Value>> {
    service::event(&app, &caller, event_id).await.map(Json)
}

async fn initial_sync(
    State(app): State<AppState>,
    caller: Caller,
    Query(query): Query<InitialSyncQuery>,
) -> ApiResult<Json<Value>> {
    service::initial_sync(&app, &caller, query).await.map(Json)
}

async fn room_initial_sync(State(app): State<AppState>, caller: Caller, Path(room_id): Path<String>) -> ApiResult<Json<Value>> {
    service::room_initial_sync(&app, &caller, room_id).await.map(Json)
}
