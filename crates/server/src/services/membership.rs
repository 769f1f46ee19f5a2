//! Membership changes: joining, inviting, leaving, kicking, banning.
//!
//! Each is an `m.room.member` state event; the authorization rules decide whether it is allowed.

use serde::Deserialize;
use serde_json::{Value, json};

use super::rooms::{NewEvent, member_content, resolve_room, send_event};
use super::{App, Caller};
use crate::error::{ApiResult, MatrixError};

#[derive(Deserialize, Default)]
pub struct Target {
    user_id: Option<String>,
    reason: Option<String>,
}

/// Leaves every room `user_id` is joined to or invited to, as that user (account deactivation).
pub async fn leave_everything(app: &App, user_id: &str) -> ApiResult<()> {
    let rooms: Vec<String> = app.model.with_user(user_id, |user| {
        user.rooms.iter().filter(|(_, m)| matches!(m, crate::read_model::Membership::Join | crate::read_model::Membership::Invite)).map(|(r, _)| r.clone()).collect()
    });
    let as_user = Caller { user_id: user_id.to_string(), device_id: String::new(), session: String::new(), ip: None };
    for room_id in rooms {
        let content = member_content(app, user_id, "leave", None);
        send_event(app, &as_user, NewEvent { room_id: &room_id, event_type: "m.room.member", state_key: Some(user_id), content, redacts: None, txn_id: None })
            .await?;
    }
    Ok(())
}

async fn set_membership(
    app: &App,
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

pub async fn join(app: &App, caller: &Caller, room: String, body: Target) -> ApiResult<Value> {
    let room_id = resolve_room(app, &room).await?;
    // Blocked by an administrator: refused even once the room is deleted (and judged again
    // when the join is applied). A block this node holds may have been lifted a moment ago
    // through another node: catch up before refusing.
    if app.model.blocked_by(&room_id).is_some() {
        super::rooms::catch_up(app, app.model.partition_of(&room_id)).await?;
        if app.model.blocked_by(&room_id).is_some() {
            return Err(MatrixError::forbidden(crate::read_model::BLOCKED_ROOM));
        }
    }
    if !super::rooms::knows_room(app, &room_id).await? {
        return Err(MatrixError::not_found("No such room"));
    }
    // A room everyone has left has nobody left to admit anyone (as on a federated server).
    if app.model.with_room(&room_id, |room| room.state.member_count("join")) == Some(0) {
        return Err(MatrixError::not_found("Nobody is in this room any more"));
    }
    if membership_of(app, &room_id, &caller.user_id).as_deref() != Some("join") {
        set_membership(app, caller, &room_id, &caller.user_id.clone(), "join", body.reason).await?;
    }
    Ok(json!({ "room_id": room_id }))
}

/// `POST /knock/{roomIdOrAlias}`: asks to be let into a room whose join rule is `knock` (or
/// `knock_restricted`). The authorization rules decide; a member answers by inviting (or by
/// kicking, which refuses). Knocking again while knocking changes nothing.
pub async fn knock(app: &App, caller: &Caller, room: String, body: Target) -> ApiResult<Value> {
    let room_id = resolve_room(app, &room).await?;
    if !super::rooms::knows_room(app, &room_id).await? {
        return Err(MatrixError::not_found("No such room"));
    }
    match membership_of(app, &room_id, &caller.user_id).as_deref() {
        Some("knock") => return Ok(json!({ "room_id": room_id })),
        Some("join") => return Err(MatrixError::forbidden("You are already in this room")),
        Some("invite") => return Err(MatrixError::forbidden("You are already invited to this room")),
        Some("ban") => return Err(MatrixError::forbidden("You are banned from this room")),
        _ => {}
    }
    let join_rule = app.model.with_room(&room_id, |room| room.state.join_rule().to_string()).unwrap_or_default();
    if !matches!(join_rule.as_str(), "knock" | "knock_restricted") {
        return Err(MatrixError::forbidden("This room does not allow knocking"));
    }
    set_membership(app, caller, &room_id, &caller.user_id.clone(), "knock", body.reason).await?;
    Ok(json!({ "room_id": room_id }))
}

/// `user_id`'s membership in `room_id` on this node's read model.
fn membership_of(app: &App, room_id: &str, user_id: &str) -> Option<String> {
    app.model.membership(room_id, user_id).map(|m| m.as_str().to_string())
}

fn required_target(body: &Target) -> ApiResult<String> {
    body.user_id.clone().ok_or_else(|| MatrixError::missing_param("user_id is required"))
}

pub async fn invite(app: &App, caller: &Caller, room_id: String, body: Target) -> ApiResult<Value> {
    let target = required_target(&body)?;
    let current = membership_of(app, &room_id, &target);
    if current.as_deref() == Some("join") {
        return Err(MatrixError::forbidden("User is already in the room"));
    }
    if current.as_deref() != Some("invite") {
        set_membership(app, caller, &room_id, &target, "invite", body.reason).await?;
    }
    Ok(json!({}))
}

pub async fn leave(app: &App, caller: &Caller, room_id: String, body: Target) -> ApiResult<Value> {
    let current = membership_of(app, &room_id, &caller.user_id);
    match current.as_deref() {
        Some("join") | Some("invite") | Some("knock") => {
            set_membership(app, caller, &room_id, &caller.user_id.clone(), "leave", body.reason).await?;
        }
        Some("leave") | Some("ban") => {}
        _ => return Err(MatrixError::not_found("You are not in this room")),
    }
    Ok(json!({}))
}

pub async fn forget(app: &App, caller: &Caller, room_id: String) -> ApiResult<Value> {
    let membership = membership_of(app, &room_id, &caller.user_id);
    match membership.as_deref() {
        Some("join") | Some("invite") => {
            Err(MatrixError::new(axum::http::StatusCode::BAD_REQUEST, "M_UNKNOWN", "Leave the room before forgetting it"))
        }
        None => Err(MatrixError::not_found("You are not in this room")),
        _ => {
            let entry = crate::entry::Entry::Forgotten { room_id: room_id.clone() };
            super::accounts::append_user_entry(app, &caller.user_id, entry).await?;
            Ok(json!({}))
        }
    }
}

pub async fn kick(app: &App, caller: &Caller, room_id: String, body: Target) -> ApiResult<Value> {
    let target = required_target(&body)?;
    let current = membership_of(app, &room_id, &target);
    if !matches!(current.as_deref(), Some("join") | Some("invite") | Some("knock")) {
        return Err(MatrixError::forbidden("The user is not in the room"));
    }
    set_membership(app, caller, &room_id, &target, "leave", body.reason).await?;
    Ok(json!({}))
}

pub async fn ban(app: &App, caller: &Caller, room_id: String, body: Target) -> ApiResult<Value> {
    let target = required_target(&body)?;
    set_membership(app, caller, &room_id, &target, "ban", body.reason).await?;
    Ok(json!({}))
}

pub async fn unban(app: &App, caller: &Caller, room_id: String, body: Target) -> ApiResult<Value> {
    let target = required_target(&body)?;
    let current = membership_of(app, &room_id, &target);
    if current.as_deref() != Some("ban") {
        return Err(MatrixError::forbidden("The user is not banned"));
    }
    set_membership(app, caller, &room_id, &target, "leave", body.reason).await?;
    Ok(json!({}))
}
