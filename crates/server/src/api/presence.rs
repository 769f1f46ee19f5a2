//! Presence: whether a user is online, idle or away, and what they say about it.
//!
//! # GET|PUT /_matrix/client/v3/presence/{userId}/status
//!
//! Stored in the replicated presence bucket (one record per user: the state they set, their
//! status message, when they were last active), so it is the same at every node and survives the
//! loss of a DC. Every node watches the bucket and keeps the records in [`PresenceCache`], from
//! which `/sync` takes the presence of the users the caller shares a room with. A record is not
//! rewritten as it ages: the state a reader sees is derived from its age (online for
//! [`IDLE_AFTER`], then unavailable; anything but offline becomes offline after
//! [`OFFLINE_AFTER`]), and each node's sweep announces those transitions to syncs.
//!
//! Why a bucket and not the event log: presence is overwritten many times a minute across all
//! users and only its latest value matters. In the log every update would stay in the user's
//! history forever and be replayed by every starting node; a KV bucket keeps one value per user
//! (history 1) with the same replication (R3, one replica per DC).

use axum::Json;
use axum::extract::{Path, State};
use axum::routing::get;
use serde_json::Value;

use super::client;
use crate::app::{AppState, Caller, JsonBody};
use crate::error::ApiResult;
use crate::services::presence as service;
use crate::services::presence::*;

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    client(router, "/presence/{user_id}/status", get(get_presence).put(put_presence))
}

async fn put_presence(
    State(app): State<AppState>,
    caller: Caller,
    Path(user_id): Path<String>,
    JsonBody(body): JsonBody<PresenceBody>,
) -> ApiResult<Json<Value>> {
    service::put_presence(&app, &caller, user_id, body).await.map(Json)
}

async fn get_presence(State(app): State<AppState>, caller: Caller, Path(user_id): Path<String>) -> ApiResult<Json<Value>> {
    service::get_presence(&app, &caller, user_id).await.map(Json)
}
