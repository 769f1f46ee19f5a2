//! Finding rooms: the published room directory and room previews.
//!
//! # GET|PUT /_matrix/client/v3/directory/list/room/{roomId}
//! # GET|POST /_matrix/client/v3/publicRooms
//! # GET /_matrix/client/v1/room_summary/{roomIdOrAlias}
//! # GET /_matrix/client/unstable/im.nheko.summary/rooms/{roomIdOrAlias}/summary (and /summary/{roomIdOrAlias})

use axum::Json;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::routing::get;
use serde_json::Value;

use super::account_extras::v1;
use super::client;
use crate::app::{AppState, Caller, JsonBody, access_token};
use crate::error::{ApiResult, MatrixError};
use crate::services::directory::{self as service, DirectoryGetQuery, DirectoryQuery, VisibilityBody};

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    let router = client(router, "/directory/list/room/{room_id}", get(get_visibility).put(set_visibility));
    let router = client(router, "/publicRooms", get(public_rooms_get).post(public_rooms_post));
    let router = v1(router, "/room_summary/{room}", get(room_summary));
    let router = router.route("/_matrix/client/unstable/im.nheko.summary/rooms/{room}/summary", get(room_summary));
    router.route("/_matrix/client/unstable/im.nheko.summary/summary/{room}", get(room_summary))
}

/// The caller when the request carries a token (which must then be valid), None without one.
pub struct OptionalCaller(pub Option<Caller>);

impl FromRequestParts<AppState> for OptionalCaller {
    type Rejection = MatrixError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Self::Rejection> {
        if access_token(parts).is_none() {
            return Ok(OptionalCaller(None));
        }
        Caller::from_request_parts(parts, app).await.map(|caller| OptionalCaller(Some(caller)))
    }
}

async fn get_visibility(State(app): State<AppState>, Path(room_id): Path<String>) -> ApiResult<Json<Value>> {
    service::get_visibility(&app, room_id).await.map(Json)
}

async fn set_visibility(
    State(app): State<AppState>,
    caller: Caller,
    Path(room_id): Path<String>,
    JsonBody(body): JsonBody<VisibilityBody>,
) -> ApiResult<Json<Value>> {
    service::set_visibility(&app, &caller, room_id, body).await.map(Json)
}

async fn public_rooms_get(State(app): State<AppState>, Query(query): Query<DirectoryGetQuery>) -> ApiResult<Json<Value>> {
    service::public_rooms(&app, query.into_query()?).await.map(Json)
}

async fn public_rooms_post(
    State(app): State<AppState>,
    _caller: Caller,
    Query(query): Query<DirectoryGetQuery>,
    JsonBody(mut body): JsonBody<DirectoryQuery>,
) -> ApiResult<Json<Value>> {
    // The server to ask is a query parameter even for POST.
    body.set_server(query.into_query()?.server());
    service::public_rooms(&app, body).await.map(Json)
}

async fn room_summary(State(app): State<AppState>, OptionalCaller(caller): OptionalCaller, Path(room): Path<String>) -> ApiResult<Json<Value>> {
    service::room_summary(&app, caller.as_ref(), room).await.map(Json)
}
