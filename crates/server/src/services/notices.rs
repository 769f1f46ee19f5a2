//! Server notices: messages from the deployment to a user (`m.server_notice`), in a room the
//! server notices user shares with them alone, tagged `m.server_notice` so clients show it apart.
//!
//! Which room serves a user is one record in the replicated meta bucket, created if absent: two
//! nodes sending a user's first notice at once agree on one room (the loser's room stays empty).
//! A user who left their notices room gets a new one with the next notice.

use haetae_store::{Bucket, KvError};
use serde_json::{Value, json};

use super::rooms::{NewEvent, send_event};
use super::{App, Caller};
use crate::error::{ApiResult, MatrixError};
use crate::read_model::Membership;

/// The localpart of the user notices come from.
pub const NOTICES_LOCALPART: &str = "server";

fn notices_key(user_id: &str) -> String {
    format!("server_notices_room\u{0}{user_id}")
}

fn system(app: &App) -> Caller {
    Caller { user_id: app.user_id(NOTICES_LOCALPART), device_id: String::new(), session: String::new(), ip: None }
}

/// Sends `content` (an `m.room.message` content; `msgtype` defaults to `m.server_notice`) to
/// `user_id` as a server notice; returns the event id.
pub async fn send(app: &App, user_id: &str, content: Value) -> ApiResult<String> {
    send_with_txn(app, user_id, content, None).await
}

/// Like [`send`], at most once per `txn_id` and notices room, whichever node sends it and however
/// often (incident notices: a batch retried by another node tells nobody twice).
pub async fn send_once(app: &App, user_id: &str, content: Value, txn_id: &str) -> ApiResult<String> {
    send_with_txn(app, user_id, content, Some(txn_id)).await
}

async fn send_with_txn(app: &App, user_id: &str, mut content: Value, txn_id: Option<&str>) -> ApiResult<String> {
    let localpart = haetae_matrix::ids::localpart(user_id).unwrap_or_default();
    if haetae_matrix::ids::server_name(user_id) != Some(app.config.server_name.as_str())
        || super::accounts::load_account(app, localpart).await?.is_none()
    {
        return Err(MatrixError::not_found("No such user on this server"));
    }
    if !content.is_object() || !content["body"].is_string() {
        return Err(MatrixError::bad_json("content must be an object with a string body"));
    }
    if content.get("msgtype").is_none() {
        content["msgtype"] = json!("m.server_notice");
    }
    let system = system(app);
    let room_id = notices_room(app, &system, user_id).await?;
    send_event(app, &system, NewEvent { room_id: &room_id, event_type: "m.room.message", state_key: None, content, redacts: None, txn_id })
        .await
}

/// The user's notices room: the recorded one while they are invited or joined, else a new one.
async fn notices_room(app: &App, system: &Caller, user_id: &str) -> ApiResult<String> {
    let key = notices_key(user_id);
    let recorded = app.store.kv().get(Bucket::Meta, &key).await?;
    if let Some(stored) = &recorded {
        let room_id = String::from_utf8_lossy(&stored.value).into_owned();
        if matches!(app.model.membership(&room_id, user_id), Some(Membership::Invite | Membership::Join)) {
            return Ok(room_id);
        }
    }
    let body = json!({
        "preset": "private_chat",
        "name": "Server notices",
        "topic": "Messages from the operators of this server",
        "invite": [user_id],
        // Only the server speaks here.
        "power_level_content_override": { "events_default": 100, "invite": 100 },
    });
    let created = super::room_ops::create_room(app, system, body).await?;
    let room_id = created["room_id"].as_str().unwrap_or_default().to_string();
    let written = match &recorded {
        None => app.store.kv().create(Bucket::Meta, &key, room_id.clone().into()).await,
        Some(stored) => app.store.kv().update(Bucket::Meta, &key, room_id.clone().into(), stored.revision).await,
    };
    match written {
        Ok(_) => {}
        // Another node recorded a room first: use that one.
        Err(KvError::Exists | KvError::WrongRevision(_)) => {
            if let Some(stored) = app.store.kv().get(Bucket::Meta, &key).await? {
                return Ok(String::from_utf8_lossy(&stored.value).into_owned());
            }
        }
        Err(other) => return Err(other.into()),
    }
    // Clients show rooms tagged m.server_notice apart from the user's own rooms.
    let entry = crate::entry::Entry::RoomTag {
        room_id: room_id.clone(),
        tag: "m.server_notice".into(),
        content: Some(json!({ "order": 0.5 })),
    };
    super::accounts::append_user_entry(app, user_id, entry).await?;
    tracing::info!(%user_id, %room_id, "created a server notices room");
    Ok(room_id)
}
