//! Membership changes: joining, inviting, leaving, kicking, banning.
//!
//! # POST /_matrix/client/v3/join/{roomIdOrAlias}
//! # POST /_matrix/client/v3/rooms/{roomId}/join, /invite, /leave, /forget, /kick, /ban, /unban
//!
//! Each is an `m.room.member` state event; the authorization rules decide whether it is allowed.

use axum::Json;
use axum::extract::{Path, State};
use axum::routing::post;
use serde::Deserialize;
use serde_json::{Value, json};

use super::client;
use crate::app::{AppState, Caller, JsonBody};
use crate::error::{ApiResult, MatrixError};
use crate::rooms::{NewEvent, member_content, resolve_room, send_event};

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    let router = client(router, "/join/{room}", post(join));
    let router = client(router, "/rooms/{room}/join", post(join));
    let router = client(router, "/rooms/{room}/invite", post(invite));
    let router = client(router, "/rooms/{room}/leave", post(leave));
    let router = client(router, "/rooms/{room}/forget", post(forget));
    let router = client(router, "/rooms/{room}/kick", post(kick));
    let router = client(router, "/rooms/{room}/ban", post(ban));
    client(router, "/rooms/{room}/unban", post(unban))
}

#[derive(Deserialize, Default)]
struct Target {
    user_id: Option<String>,
    reason: Option<String>,
}

async fn set_membership(
    app: &crate::app::App,
    caller: &Caller,
    room_id: &str,
    target: &str,
    membership: &str,
    reason: Option<String>,
) -> ApiResult<String> {
    app.limit_writes(&caller.user_id)?;
    if !haetae_matrix::ids::is_valid_user_id(target) {
        return Err(MatrixError::invalid_param("Invalid user id"));
    }
    let mut content = member_content(app, target, membership, None);
    if let Some(reason) = reason {
        content["reason"] = json!(reason);
    }
    send_event(
        app,
        caller,
        NewEvent { room_id, event_type: "m.room.member", state_key: Some(target), content, redacts: None, txn_id: None },
    )
    .await
}

async fn join(State(app): State<AppState>, caller: Caller, Path(room): Path<String>, JsonBody(body): JsonBody<Target>) -> ApiResult<Json<Value>> {
    let room_id = resolve_room(&app, &room).await?;
    if !crate::rooms::knows_room(&app, &room_id).await? {
        return Err(MatrixError::not_found("No such room"));
    }
    if membership_of(&app, &room_id, &caller.user_id).as_deref() != Some("join") {
        set_membership(&app, &caller, &room_id, &caller.user_id.clone(), "join", body.reason).await?;
    }
    Ok(Json(json!({ "room_id": room_id })))
}

/// `user_id`'s membership in `room_id` on this node's read model.
fn membership_of(app: &crate::app::App, room_id: &str, user_id: &str) -> Option<String> {
    app.model.membership(room_id, user_id).map(|m| m.as_str().to_string())
}

fn required_target(body: &Target) -> ApiResult<String> {
    body.user_id.clone().ok_or_else(|| MatrixError::missing_param("user_id is required"))
}

async fn invite(State(app): State<AppState>, caller: Caller, Path(room_id): Path<String>, JsonBody(body): JsonBody<Target>) -> ApiResult<Json<Value>> {
    let target = required_target(&body)?;
    let current = membership_of(&app, &room_id, &target);
    if current.as_deref() == Some("join") {
        return Err(MatrixError::forbidden("User is already in the room"));
    }
    if current.as_deref() != Some("invite") {
        set_membership(&app, &caller, &room_id, &target, "invite", body.reason).await?;
    }
    Ok(Json(json!({})))
}

async fn leave(State(app): State<AppState>, caller: Caller, Path(room_id): Path<String>, JsonBody(body): JsonBody<Target>) -> ApiResult<Json<Value>> {
    let current = membership_of(&app, &room_id, &caller.user_id);
    match current.as_deref() {
        Some("join") | Some("invite") | Some("knock") => {
            set_membership(&app, &caller, &room_id, &caller.user_id.clone(), "leave", body.reason).await?;
        }
        Some("leave") | Some("ban") => {}
        _ => return Err(MatrixError::not_found("You are not in this room")),
    }
    Ok(Json(json!({})))
}

async fn forget(State(app): State<AppState>, caller: Caller, Path(room_id): Path<String>) -> ApiResult<Json<Value>> {
    let membership = membership_of(&app, &room_id, &caller.user_id);
    match membership.as_deref() {
        Some("join") | Some("invite") => Err(MatrixError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "M_UNKNOWN",
            "Leave the room before forgetting it",
        )),
        None => Err(MatrixError::not_found("You are not in this room")),
        _ => {
            let entry = crate::entry::Entry::Forgotten { room_id: room_id.clone() };
            super::account::append_user_entry(&app, &caller.user_id, entry).await?;
            Ok(Json(json!({})))
        }
    }
}

async fn kick(State(app): State<AppState>, caller: Caller, Path(room_id): Path<String>, JsonBody(body): JsonBody<Target>) -> ApiResult<Json<Value>> {
    let target = required_target(&body)?;
    let current = membership_of(&app, &room_id, &target);
    if !matches!(current.as_deref(), Some("join") | Some("invite") | Some("knock")) {
        return Err(MatrixError::forbidden("The user is not in the room"));
    }
    set_membership(&app, &caller, &room_id, &target, "leave", body.reason).await?;
    Ok(Json(json!({})))
}

async fn ban(State(app): State<AppState>, caller: Caller, Path(room_id): Path<String>, JsonBody(body): JsonBody<Target>) -> ApiResult<Json<Value>> {
    let target = required_target(&body)?;
    set_membership(&app, &caller, &room_id, &target, "ban", body.reason).await?;
    Ok(Json(json!({})))
}

async fn unban(State(app): State<AppState>, caller: Caller, Path(room_id): Path<String>, JsonBody(body): JsonBody<Target>) -> ApiResult<Json<Value>> {
    let target = required_target(&body)?;
    let current = membership_of(&app, &room_id, &target);
    if current.as_deref() != Some("ban") {
        return Err(MatrixError::forbidden("The user is not banned"));
    }
    set_membership(&app, &caller, &room_id, &target, "leave", body.reason).await?;
    Ok(Json(json!({})))
}
