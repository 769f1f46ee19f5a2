//! Account and profile odds and ends.
//!
//! # GET /_matrix/client/v1/register/m.login.registration_token/validity
//! # DELETE /_matrix/client/v3/profile/{userId}/{keyName}
//! # GET /_matrix/client/v1/mutual_rooms, /unstable/uk.half-shot.msc2666/user/mutual_rooms

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::request::Parts;
use axum::routing::{MethodRouter, delete, get};
use serde_json::Value;

use super::client;
use crate::app::{AppState, Caller, client_ip};
use crate::error::ApiResult;
use crate::services::account_extras::{self as service, MutualQuery, TokenQuery};

/// Registers `route` under the v1 prefix (endpoints added to the spec after v3).
pub(crate) fn v1(router: axum::Router<AppState>, path: &str, route: MethodRouter<AppState>) -> axum::Router<AppState> {
    router.route(&format!("/_matrix/client/v1{path}"), route)
}

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    let validity = "/register/m.login.registration_token/validity";
    let router = v1(router, validity, get(token_validity));
    let router = client(router, validity, get(token_validity));
    let router = v1(router, "/mutual_rooms", get(mutual_rooms));
    let router = router.route("/_matrix/client/unstable/uk.half-shot.msc2666/user/mutual_rooms", get(mutual_rooms));
    // GET and PUT of this path are `user_data`'s: axum merges the methods of one path (spelled
    // the same) registered twice.
    client(router, "/profile/{user_id}/{field}", delete(delete_profile))
}

async fn token_validity(State(app): State<AppState>, parts: Parts, Query(query): Query<TokenQuery>) -> ApiResult<Json<Value>> {
    service::registration_token_validity(&app, client_ip(&parts), query).await.map(Json)
}

async fn delete_profile(State(app): State<AppState>, caller: Caller, Path(path): Path<(String, String)>) -> ApiResult<Json<Value>> {
    service::delete_profile_field(&app, &caller, path).await.map(Json)
}

async fn mutual_rooms(State(app): State<AppState>, caller: Caller, Query(query): Query<MutualQuery>) -> ApiResult<Json<Value>> {
    service::mutual_rooms(&app, &caller, query).map(Json)
}
