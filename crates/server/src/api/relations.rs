//! Relations and threads.
//!
//! # GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]
//! # GET /_matrix/client/v1/rooms/{roomId}/threads

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use serde_json::Value;

use super::account_extras::v1;
use super::client;
use crate::app::{AppState, Caller};
use crate::error::ApiResult;
use crate::services::relations::{self as service, RelationsQuery, ThreadsQuery};

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    let mut router = router;
    for register in [v1, client] {
        router = register(router, "/rooms/{room_id}/relations/{event_id}", get(relations));
        router = register(router, "/rooms/{room_id}/relations/{event_id}/{rel_type}", get(relations_of_type));
        router = register(router, "/rooms/{room_id}/relations/{event_id}/{rel_type}/{event_type}", get(relations_of_types));
        router = register(router, "/rooms/{room_id}/threads", get(threads));
    }
    router
}

async fn relations(
    State(app): State<AppState>,
    caller: Caller,
    Path(path): Path<(String, String)>,
    Query(query): Query<RelationsQuery>,
) -> ApiResult<Json<Value>> {
    service::relations(&app, &caller, path, None, None, query).await.map(Json)
}

async fn relations_of_type(
    State(app): State<AppState>,
    caller: Caller,
    Path((room_id, event_id, rel_type)): Path<(String, String, String)>,
    Query(query): Query<RelationsQuery>,
) -> ApiResult<Json<Value>> {
    service::relations(&app, &caller, (room_id, event_id), Some(rel_type), None, query).await.map(Json)
}

async fn relations_of_types(
    State(app): State<AppState>,
    caller: Caller,
    Path((room_id, event_id, rel_type, event_type)): Path<(String, String, String, String)>,
    Query(query): Query<RelationsQuery>,
) -> ApiResult<Json<Value>> {
    service::relations(&app, &caller, (room_id, event_id), Some(rel_type), Some(event_type), query).await.map(Json)
}

async fn threads(
    State(app): State<AppState>,
    caller: Caller,
    Path(room_id): Path<String>,
    Query(query): Query<ThreadsQuery>,
) -> ApiResult<Json<Value>> {
    service::threads(&app, &caller, room_id, query).await.map(Json)
}
