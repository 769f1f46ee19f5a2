//! What a user keeps about themselves and tells others in passing: profile, account data,
//! filters, push rules, pushers, receipts, read markers, typing, user directory.
//!
//! # GET|PUT /_matrix/client/v3/profile/{userId}[/displayname|/avatar_url]
//! # GET|PUT /_matrix/client/v3/user/{userId}/account_data/{type}
//! # GET|PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}
//! # POST /_matrix/client/v3/user/{userId}/filter, GET /user/{userId}/filter/{filterId}
//! # GET|PUT|DELETE /_matrix/client/v3/pushrules/...
//! # GET /_matrix/client/v3/pushers, POST /pushers/set
//! # POST /_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}, /read_markers
//! # PUT  /_matrix/client/v3/rooms/{roomId}/typing/{userId}
//! # POST /_matrix/client/v3/user_directory/search (`/publicRooms` is in `directory`)

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post, put};
use serde_json::Value;

use super::client;
use crate::app::{AppState, Caller, JsonBody};
use crate::error::ApiResult;
use crate::services::user_data as service;
use crate::services::user_data::*;

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    let router = client(router, "/profile/{user_id}", get(get_profile));
    let router = client(router, "/profile/{user_id}/{field}", get(get_profile_field).put(put_profile_field));
    let router = client(router, "/user/{user_id}/account_data/{event_type}", get(get_account_data).put(put_account_data));
    let router = client(
        router,
        "/user/{user_id}/rooms/{room_id}/account_data/{event_type}",
        get(get_room_account_data).put(put_room_account_data),
    );
    let router = client(router, "/user/{user_id}/filter", post(create_filter));
    let router = client(router, "/user/{user_id}/filter/{filter_id}", get(get_filter));
    let router = client(router, "/pushrules/", get(get_push_rules));
    let router = client(router, "/pushrules", get(get_push_rules));
    let router = client(router, "/pushrules/global/", get(get_global_push_rules));
    let router =
        client(router, "/pushrules/global/{kind}/{rule_id}", get(get_push_rule).put(put_push_rule).delete(delete_push_rule));
    let router = client(
        router,
        "/pushrules/global/{kind}/{rule_id}/{attribute}",
        get(get_push_rule_attribute).put(put_push_rule_attribute),
    );
    let router = client(router, "/pushers", get(get_pushers));
    let router = client(router, "/pushers/set", post(set_pusher));
    let router = client(router, "/rooms/{room_id}/receipt/{receipt_type}/{event_id}", post(post_receipt));
    let router = client(router, "/rooms/{room_id}/read_markers", post(read_markers));
    let router = client(router, "/rooms/{room_id}/typing/{user_id}", put(typing));
    client(router, "/user_directory/search", post(user_directory))
}

async fn get_profile(State(app): State<AppState>, Path(user_id): Path<String>) -> ApiResult<Json<Value>> {
    service::get_profile(&app, user_id).await.map(Json)
}

async fn get_profile_field(State(app): State<AppState>, Path(path): Path<(String, String)>) -> ApiResult<Json<Value>> {
    service::get_profile_field(&app, path).await.map(Json)
}

async fn put_profile_field(
    State(app): State<AppState>,
    caller: Caller,
    Path(path): Path<(String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    service::put_profile_field(&app, &caller, path, body).await.map(Json)
}

async fn get_account_data(
    State(app): State<AppState>,
    caller: Caller,
    Path(path): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    service::get_account_data(&app, &caller, path).await.map(Json)
}

async fn put_account_data(
    State(app): State<AppState>,
    caller: Caller,
    Path(path): Path<(String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    service::put_account_data(&app, &caller, path, body).await.map(Json)
}

async fn get_room_account_data(
    State(app): State<AppState>,
    caller: Caller,
    Path(path): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    service::get_room_account_data(&app, &caller, path).await.map(Json)
}

async fn put_room_account_data(
    State(app): State<AppState>,
    caller: Caller,
    Path(path): Path<(String, String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    service::put_room_account_data(&app, &caller, path, body).await.map(Json)
}

async fn create_filter(
    State(app): State<AppState>,
    caller: Caller,
    Path(user_id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    service::create_filter(&app, &caller, user_id, body).await.map(Json)
}

async fn get_filter(State(app): State<AppState>, caller: Caller, Path(path): Path<(String, String)>) -> ApiResult<Json<Value>> {
    service::get_filter(&app, &caller, path).await.map(Json)
}

async fn get_push_rules(State(app): State<AppState>, caller: Caller) -> Json<Value> {
    Json(service::get_push_rules(&app, &caller).await)
}

async fn get_global_push_rules(State(app): State<AppState>, caller: Caller) -> Json<Value> {
    Json(service::get_global_push_rules(&app, &caller).await)
}

async fn get_push_rule(
    State(app): State<AppState>,
    caller: Caller,
    Path(path): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    service::get_push_rule(&app, &caller, path).await.map(Json)
}

async fn put_push_rule(
    State(app): State<AppState>,
    caller: Caller,
    Path(path): Path<(String, String)>,
    Query(placement): Query<Placement>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    service::put_push_rule(&app, &caller, path, placement, body).await.map(Json)
}

async fn delete_push_rule(
    State(app): State<AppState>,
    caller: Caller,
    Path(path): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    service::delete_push_rule(&app, &caller, path).await.map(Json)
}

async fn get_push_rule_attribute(
    State(app): State<AppState>,
    caller: Caller,
    Path(path): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    service::get_push_rule_attribute(&app, &caller, path).await.map(Json)
}

async fn put_push_rule_attribute(
    State(app): State<AppState>,
    caller: Caller,
    Path(path): Path<(String, String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    service::put_push_rule_attribute(&app, &caller, path, body).await.map(Json)
}

async fn get_pushers(State(app): State<AppState>, caller: Caller) -> Json<Value> {
    Json(service::get_pushers(&app, &caller).await)
}

async fn set_pusher(State(app): State<AppState>, caller: Caller, JsonBody(body): JsonBody<Value>) -> ApiResult<Json<Value>> {
    service::set_pusher(&app, &caller, body).await.map(Json)
}

async fn post_receipt(
    State(app): State<AppState>,
    caller: Caller,
    Path(path): Path<(String, String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    service::post_receipt(&app, &caller, path, body).await.map(Json)
}

async fn read_markers(
    State(app): State<AppState>,
    caller: Caller,
    Path(room_id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    service::read_markers(&app, &caller, room_id, body).await.map(Json)
}

async fn typing(
    State(app): State<AppState>,
    caller: Caller,
    Path(path): Path<(String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    service::typing(&app, &caller, path, body).await.map(Json)
}

async fn user_directory(State(app): State<AppState>, caller: Caller, JsonBody(body): JsonBody<Value>) -> ApiResult<Json<Value>> {
    service::user_directory(&app, &caller, body).await.map(Json)
}
