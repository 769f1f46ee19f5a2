//! Room tags (favourites, low priority, the user's own): kept as the room account data `m.tag`,
//! so they reach the user's other devices through `/sync` like any account data. Each change is
//! one log entry naming one tag, merged into `m.tag` when applied: two devices tagging the same
//! room at once both land.

use serde_json::{Value, json};

use super::accounts::append_user_entry;
use super::{App, Caller};
use crate::entry::Entry;
use crate::error::{ApiResult, MatrixError};

/// Longest tag name, bytes (the spec's limit on event types and state keys).
const MAX_TAG_BYTES: usize = 255;
/// Most tags one room may carry for one user.
const MAX_TAGS_PER_ROOM: usize = 100;
/// Largest tag content, bytes of JSON.
const MAX_TAG_CONTENT_BYTES: usize = 1024;
/// Most rooms one user may tag (each tagged room costs the user's record some memory on every
/// node).
const MAX_TAGGED_ROOMS: usize = 10_000;

fn require_self(caller: &Caller, user_id: &str) -> ApiResult<()> {
    if caller.user_id != user_id {
        return Err(MatrixError::forbidden("You can only read and change your own tags"));
    }
    Ok(())
}

fn check_room_id(room_id: &str) -> ApiResult<()> {
    if !haetae_matrix::ids::is_valid_room_id(room_id) {
        return Err(MatrixError::invalid_param("Invalid room id"));
    }
    Ok(())
}

fn current_tags(app: &App, user_id: &str, room_id: &str) -> serde_json::Map<String, Value> {
    app.model.with_user(user_id, |user| {
        user.room_account_data
            .get(room_id)
            .and_then(|data| data.get("m.tag"))
            .and_then(|(_, content)| content["tags"].as_object().cloned())
            .unwrap_or_default()
    })
}

pub async fn get_tags(app: &App, caller: &Caller, (user_id, room_id): (String, String)) -> ApiResult<Value> {
    require_self(caller, &user_id)?;
    check_room_id(&room_id)?;
    Ok(json!({ "tags": current_tags(app, &user_id, &room_id) }))
}

pub async fn put_tag(app: &App, caller: &Caller, (user_id, room_id, tag): (String, String, String), body: Value) -> ApiResult<Value> {
    require_self(caller, &user_id)?;
    check_room_id(&room_id)?;
    app.limit_writes(&caller.user_id)?;
    if tag.is_empty() || tag.len() > MAX_TAG_BYTES {
        return Err(MatrixError::invalid_param(format!("a tag is 1 to {MAX_TAG_BYTES} bytes")));
    }
    let Some(content) = body.as_object() else {
        return Err(MatrixError::bad_json("the tag's content must be a JSON object"));
    };
    match content.get("order") {
        None => {}
        Some(order) => match order.as_f64() {
            Some(order) if (0.0..=1.0).contains(&order) => {}
            Some(_) => return Err(MatrixError::invalid_param("order must be between 0 and 1")),
            None => return Err(MatrixError::bad_json("order must be a number")),
        },
    }
    if serde_json::to_vec(&body).map_or(0, |b| b.len()) > MAX_TAG_CONTENT_BYTES {
        return Err(MatrixError::too_large(format!("a tag's content is at most {MAX_TAG_CONTENT_BYTES} bytes")));
    }
    let tags = current_tags(app, &user_id, &room_id);
    if !tags.contains_key(&tag) && tags.len() >= MAX_TAGS_PER_ROOM {
        return Err(MatrixError::invalid_param(format!("a room carries at most {MAX_TAGS_PER_ROOM} tags")));
    }
    let tagged_rooms = app.model.with_user(&user_id, |user| {
        user.room_account_data.iter().filter(|(room, data)| **room != room_id && data.contains_key("m.tag")).count()
    });
    if tags.is_empty() && tagged_rooms >= MAX_TAGGED_ROOMS {
        return Err(MatrixError::invalid_param(format!("at most {MAX_TAGGED_ROOMS} rooms can be tagged")));
    }
    append_user_entry(app, &user_id, Entry::RoomTag { room_id, tag, content: Some(body) }).await?;
    Ok(json!({}))
}

pub async fn delete_tag(app: &App, caller: &Caller, (user_id, room_id, tag): (String, String, String)) -> ApiResult<Value> {
    require_self(caller, &user_id)?;
    check_room_id(&room_id)?;
    app.limit_writes(&caller.user_id)?;
    // Removing a tag the room does not carry is a success with nothing to store.
    if current_tags(app, &user_id, &room_id).contains_key(&tag) {
        append_user_entry(app, &user_id, Entry::RoomTag { room_id, tag, content: None }).await?;
    }
    Ok(json!({}))
}
