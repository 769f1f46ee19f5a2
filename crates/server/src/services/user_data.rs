//! What a user keeps about themselves and tells others in passing: profile, account data,
//! filters, push rules, pushers, receipts, read markers, typing, user directory.
//!

use haetae_store::Bucket;
use serde::Deserialize;
use serde_json::{Value, json};

use super::accounts::append_user_entry;
use super::rooms::{NewEvent, member_content, now_ms, random_string, send_event};
use super::{App, Caller};
use crate::entry::Entry;
use crate::error::{ApiResult, MatrixError};
use crate::read_model::Membership;

fn require_self(caller: &Caller, user_id: &str) -> ApiResult<()> {
    if caller.user_id != user_id {
        return Err(MatrixError::forbidden("You can only change your own data"));
    }
    Ok(())
}

async fn user_exists(app: &App, user_id: &str) -> ApiResult<bool> {
    if haetae_matrix::ids::server_name(user_id) != Some(app.config.server_name.as_str()) {
        return Ok(false);
    }
    let localpart = haetae_matrix::ids::localpart(user_id).unwrap_or_default();
    Ok(app.store.kv().get(Bucket::Accounts, localpart).await?.is_some())
}

fn profile_of(app: &App, user_id: &str) -> (Option<String>, Option<String>) {
    app.model.with_user(user_id, |u| (u.displayname.clone(), u.avatar_url.clone()))
}

pub async fn get_profile(app: &App, user_id: String) -> ApiResult<Value> {
    if !user_exists(app, &user_id).await? {
        return Err(MatrixError::not_found("Profile not found"));
    }
    let (displayname, avatar_url) = profile_of(app, &user_id);
    let mut profile = json!({});
    if let Some(name) = displayname {
        profile["displayname"] = json!(name);
    }
    if let Some(avatar) = avatar_url {
        profile["avatar_url"] = json!(avatar);
    }
    Ok(profile)
}

pub async fn get_profile_field(app: &App, (user_id, field): (String, String)) -> ApiResult<Value> {
    if !user_exists(app, &user_id).await? {
        return Err(MatrixError::not_found("Profile not found"));
    }
    let (displayname, avatar_url) = profile_of(app, &user_id);
    let value = match field.as_str() {
        "displayname" => displayname,
        "avatar_url" => avatar_url,
        _ => return Err(MatrixError::unrecognized()),
    };
    match value {
        Some(value) => Ok(json!({ field: value })),
        None => Err(MatrixError::not_found("Profile field not set")),
    }
}

pub async fn put_profile_field(app: &App, caller: &Caller, (user_id, field): (String, String), body: Value) -> ApiResult<Value> {
    require_self(caller, &user_id)?;
    app.limit_writes(&caller.user_id)?;
    let (mut displayname, mut avatar_url) = profile_of(app, &user_id);
    let value = match &body[&field] {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        _ => return Err(MatrixError::bad_json(format!("{field} must be a string"))),
    };
    if value.as_ref().is_some_and(|v| v.len() > 256 * 4) {
        return Err(MatrixError::too_large("profile field too long"));
    }
    match field.as_str() {
        "displayname" => displayname = value,
        "avatar_url" => avatar_url = value,
        _ => return Err(MatrixError::unrecognized()),
    }
    append_user_entry(app, &user_id, Entry::Profile { displayname, avatar_url }).await?;
    // Members see the new profile in each joined room's member event.
    let rooms: Vec<String> = app.model.with_user(&user_id, |u| u.joined_rooms().cloned().collect());
    for room_id in rooms {
        let content = member_content(app, &user_id, "join", None);
        let sent = send_event(
            app,
            caller,
            NewEvent {
                room_id: &room_id,
                event_type: "m.room.member",
                state_key: Some(&user_id),
                content,
                redacts: None,
                txn_id: None,
            },
        )
        .await;
        if let Err(error) = sent {
            tracing::warn!(room_id, error = %error.message, "could not update the member event");
        }
    }
    Ok(json!({}))
}

pub async fn get_account_data(app: &App, caller: &Caller, (user_id, event_type): (String, String)) -> ApiResult<Value> {
    require_self(caller, &user_id)?;
    match app.model.with_user(&user_id, |u| u.account_data.get(&event_type).cloned()) {
        Some((_, content)) => Ok(content),
        None => Err(MatrixError::not_found("Account data not found")),
    }
}

fn object_body(body: &Value) -> ApiResult<()> {
    if !body.is_object() {
        return Err(MatrixError::bad_json("content must be a JSON object"));
    }
    Ok(())
}

pub async fn put_account_data(
    app: &App,
    caller: &Caller,
    (user_id, event_type): (String, String),
    body: Value,
) -> ApiResult<Value> {
    require_self(caller, &user_id)?;
    object_body(&body)?;
    if event_type == "m.fully_read" || event_type == "m.push_rules" {
        return Err(MatrixError::new(axum::http::StatusCode::BAD_REQUEST, "M_BAD_JSON", "This type is set through its own API"));
    }
    append_user_entry(app, &user_id, Entry::AccountData { room_id: None, event_type, content: body }).await?;
    Ok(json!({}))
}

pub async fn get_room_account_data(
    app: &App,
    caller: &Caller,
    (user_id, room_id, event_type): (String, String, String),
) -> ApiResult<Value> {
    require_self(caller, &user_id)?;
    match app.model.with_user(&user_id, |u| u.room_account_data.get(&room_id).and_then(|r| r.get(&event_type)).cloned()) {
        Some((_, content)) => Ok(content),
        None => Err(MatrixError::not_found("Account data not found")),
    }
}

pub async fn put_room_account_data(
    app: &App,
    caller: &Caller,
    (user_id, room_id, event_type): (String, String, String),
    body: Value,
) -> ApiResult<Value> {
    require_self(caller, &user_id)?;
    object_body(&body)?;
    if !haetae_matrix::ids::is_valid_room_id(&room_id) {
        return Err(MatrixError::invalid_param("Invalid room id"));
    }
    append_user_entry(app, &user_id, Entry::AccountData { room_id: Some(room_id), event_type, content: body }).await?;
    Ok(json!({}))
}

pub async fn create_filter(app: &App, caller: &Caller, user_id: String, body: Value) -> ApiResult<Value> {
    require_self(caller, &user_id)?;
    if serde_json::to_vec(&body).map(|b| b.len()).unwrap_or(0) > app.config.limits.max_filter_bytes {
        return Err(MatrixError::too_large("filter too large"));
    }
    haetae_matrix::filter::Filter::parse(&body).map_err(|e| MatrixError::bad_json(e.to_string()))?;
    let filter_id = random_string(12);
    append_user_entry(app, &user_id, Entry::Filter { filter_id: filter_id.clone(), filter: body }).await?;
    Ok(json!({ "filter_id": filter_id }))
}

pub async fn get_filter(app: &App, caller: &Caller, (user_id, filter_id): (String, String)) -> ApiResult<Value> {
    require_self(caller, &user_id)?;
    match app.model.with_user(&user_id, |u| u.filters.get(&filter_id).cloned()) {
        Some(filter) => Ok(filter),
        None => Err(MatrixError::not_found("Filter not found")),
    }
}

// ---- push rules: the ruleset lives in the `m.push_rules` account data ----

fn push_rules(app: &App, user_id: &str) -> Value {
    app.model
        .with_user(user_id, |u| u.account_data.get("m.push_rules").map(|(_, content)| content.clone()))
        .unwrap_or_else(|| (*app.default_push_rules.get(user_id)).clone())
}

async fn save_push_rules(app: &App, user_id: &str, rules: Value) -> ApiResult<()> {
    append_user_entry(app, user_id, Entry::AccountData { room_id: None, event_type: "m.push_rules".into(), content: rules }).await
}

pub async fn get_push_rules(app: &App, caller: &Caller) -> Value {
    push_rules(app, &caller.user_id)
}

pub async fn get_global_push_rules(app: &App, caller: &Caller) -> Value {
    push_rules(app, &caller.user_id)["global"].clone()
}

const KINDS: [&str; 5] = ["override", "content", "room", "sender", "underride"];

fn check_kind(kind: &str) -> ApiResult<()> {
    if KINDS.contains(&kind) { Ok(()) } else { Err(MatrixError::invalid_param("Unknown push rule kind")) }
}

use haetae_matrix::push::find_rule;

pub async fn get_push_rule(app: &App, caller: &Caller, (kind, rule_id): (String, String)) -> ApiResult<Value> {
    check_kind(&kind)?;
    let rules = push_rules(app, &caller.user_id);
    find_rule(&rules, &kind, &rule_id).cloned().ok_or_else(|| MatrixError::not_found("Push rule not found"))
}

#[derive(Deserialize)]
pub struct Placement {
    before: Option<String>,
    after: Option<String>,
}

pub async fn put_push_rule(
    app: &App,
    caller: &Caller,
    (kind, rule_id): (String, String),
    placement: Placement,
    body: Value,
) -> ApiResult<Value> {
    check_kind(&kind)?;
    let rule = haetae_matrix::push::validate_rule(&kind, &rule_id, &body).map_err(push_error)?;
    let mut rules = push_rules(app, &caller.user_id);
    haetae_matrix::push::put_rule(&mut rules, &kind, rule, placement.before.as_deref(), placement.after.as_deref())
        .map_err(push_error)?;
    save_push_rules(app, &caller.user_id, rules).await?;
    Ok(json!({}))
}

fn push_error(error: haetae_matrix::push::PushRuleError) -> MatrixError {
    use haetae_matrix::push::PushRuleError;
    match error {
        PushRuleError::NotFound(_) | PushRuleError::UnknownRelativeRule(_) => MatrixError::not_found(error.to_string()),
        PushRuleError::ReservedRuleId(_) => MatrixError::invalid_param(error.to_string()),
        other => MatrixError::bad_json(other.to_string()),
    }
}

pub async fn delete_push_rule(app: &App, caller: &Caller, (kind, rule_id): (String, String)) -> ApiResult<Value> {
    check_kind(&kind)?;
    let mut rules = push_rules(app, &caller.user_id);
    if find_rule(&rules, &kind, &rule_id).is_none() {
        return Err(MatrixError::not_found("Push rule not found"));
    }
    haetae_matrix::push::remove_rule(&mut rules, &kind, &rule_id).map_err(push_error)?;
    save_push_rules(app, &caller.user_id, rules).await?;
    Ok(json!({}))
}

pub async fn get_push_rule_attribute(
    app: &App,
    caller: &Caller,
    (kind, rule_id, attribute): (String, String, String),
) -> ApiResult<Value> {
    check_kind(&kind)?;
    let rules = push_rules(app, &caller.user_id);
    let rule = find_rule(&rules, &kind, &rule_id).ok_or_else(|| MatrixError::not_found("Push rule not found"))?;
    match attribute.as_str() {
        "enabled" => Ok(json!({ "enabled": rule["enabled"] })),
        "actions" => Ok(json!({ "actions": rule["actions"] })),
        _ => Err(MatrixError::unrecognized()),
    }
}

pub async fn put_push_rule_attribute(
    app: &App,
    caller: &Caller,
    (kind, rule_id, attribute): (String, String, String),
    body: Value,
) -> ApiResult<Value> {
    check_kind(&kind)?;
    let mut rules = push_rules(app, &caller.user_id);
    match attribute.as_str() {
        "enabled" => {
            let enabled = body["enabled"].as_bool().ok_or_else(|| MatrixError::bad_json("enabled must be a boolean"))?;
            haetae_matrix::push::set_enabled(&mut rules, &kind, &rule_id, enabled).map_err(push_error)?;
        }
        "actions" => {
            haetae_matrix::push::set_actions(&mut rules, &kind, &rule_id, &body["actions"]).map_err(push_error)?;
        }
        _ => return Err(MatrixError::unrecognized()),
    }
    save_push_rules(app, &caller.user_id, rules).await?;
    Ok(json!({}))
}

pub async fn get_pushers(app: &App, caller: &Caller) -> Value {
    let pushers = app.model.with_user(&caller.user_id, |u| u.pushers.clone());
    json!({ "pushers": pushers })
}

/// Checks a `pushers/set` body field by field: what is stored is served back by `GET /pushers`
/// to clients that expect the spec's types. Missing -> M_MISSING_PARAM, wrong type -> M_BAD_JSON.
fn check_pusher(body: &Value) -> ApiResult<()> {
    let Some(object) = body.as_object() else {
        return Err(MatrixError::bad_json("the body must be an object"));
    };
    let string = |field: &str, required: bool| -> ApiResult<()> {
        match object.get(field) {
            Some(Value::String(_)) => Ok(()),
            None if !required => Ok(()),
            None => Err(MatrixError::missing_param(format!("{field} is required"))),
            Some(_) => Err(MatrixError::bad_json(format!("{field} must be a string"))),
        }
    };
    string("pushkey", true)?;
    string("app_id", true)?;
    match object.get("kind") {
        None => {
            return Err(MatrixError::missing_param("kind is required (null deletes the pusher)"));
        }
        Some(Value::Null) => return Ok(()), // a deletion needs nothing else
        Some(Value::String(_)) => {}
        Some(_) => return Err(MatrixError::bad_json("kind must be a string or null")),
    }
    for field in ["app_display_name", "device_display_name", "lang"] {
        string(field, true)?;
    }
    string("profile_tag", false)?;
    if object.get("append").is_some_and(|v| !v.is_boolean()) {
        return Err(MatrixError::bad_json("append must be a boolean"));
    }
    let data = match object.get("data") {
        Some(Value::Object(data)) => data,
        None => return Err(MatrixError::missing_param("data is required")),
        Some(_) => return Err(MatrixError::bad_json("data must be an object")),
    };
    for field in ["url", "format"] {
        if data.get(field).is_some_and(|v| !v.is_string()) {
            return Err(MatrixError::bad_json(format!("data.{field} must be a string")));
        }
    }
    if object["kind"] == "http" && !data.contains_key("url") {
        return Err(MatrixError::missing_param("data.url is required for an http pusher"));
    }
    Ok(())
}

pub async fn set_pusher(app: &App, caller: &Caller, body: Value) -> ApiResult<Value> {
    check_pusher(&body)?;
    let (Some(pushkey), Some(app_id)) = (body["pushkey"].as_str(), body["app_id"].as_str()) else {
        return Err(MatrixError::missing_param("pushkey and app_id are required"));
    };
    let mut pushers = app.model.with_user(&caller.user_id, |u| u.pushers.clone());
    let append = body["append"].as_bool().unwrap_or(false);
    if body["kind"].is_null() {
        pushers.retain(|p| !(p["pushkey"] == pushkey && p["app_id"] == app_id));
    } else {
        if !append {
            pushers.retain(|p| !(p["pushkey"] == pushkey && p["app_id"] == app_id));
        }
        let mut pusher = body.clone();
        if let Some(object) = pusher.as_object_mut() {
            object.remove("append");
        }
        pushers.push(pusher);
    }
    append_user_entry(app, &caller.user_id, Entry::Pushers { pushers }).await?;
    Ok(json!({}))
}

/// Appends a receipt to the room's history (it is part of the room's replicated state).
async fn store_receipt(
    app: &App,
    caller: &Caller,
    room_id: &str,
    receipt_type: &str,
    event_id: &str,
    thread_id: Option<String>,
) -> ApiResult<()> {
    if app.model.membership(room_id, &caller.user_id) != Some(Membership::Join) {
        return Err(MatrixError::forbidden("You are not in this room"));
    }
    if super::rooms::find_event(app, room_id, event_id).await?.is_none() {
        return Err(MatrixError::not_found("Event not found"));
    }
    let entry = Entry::Receipt {
        user_id: caller.user_id.clone(),
        receipt_type: receipt_type.to_string(),
        event_id: event_id.to_string(),
        ts: now_ms(),
        thread_id,
    };
    // Read-your-writes: the caller's next sync may be answered from this node's model.
    app.append_applied(room_id, entry, &super::rooms::random_event_id()).await
}

pub async fn post_receipt(
    app: &App,
    caller: &Caller,
    (room_id, receipt_type, event_id): (String, String, String),
    body: Value,
) -> ApiResult<Value> {
    match receipt_type.as_str() {
        "m.read" | "m.read.private" => {
            store_receipt(app, caller, &room_id, &receipt_type, &event_id, body["thread_id"].as_str().map(str::to_string)).await?
        }
        "m.fully_read" => {
            append_user_entry(
                app,
                &caller.user_id,
                Entry::AccountData {
                    room_id: Some(room_id),
                    event_type: "m.fully_read".into(),
                    content: json!({ "event_id": event_id }),
                },
            )
            .await?
        }
        _ => return Err(MatrixError::invalid_param("Unknown receipt type")),
    }
    Ok(json!({}))
}

pub async fn read_markers(app: &App, caller: &Caller, room_id: String, body: Value) -> ApiResult<Value> {
    if let Some(event_id) = body["m.fully_read"].as_str() {
        append_user_entry(
            app,
            &caller.user_id,
            Entry::AccountData {
                room_id: Some(room_id.clone()),
                event_type: "m.fully_read".into(),
                content: json!({ "event_id": event_id }),
            },
        )
        .await?;
    }
    for receipt_type in ["m.read", "m.read.private"] {
        if let Some(event_id) = body[receipt_type].as_str() {
            store_receipt(app, caller, &room_id, receipt_type, event_id, None).await?;
        }
    }
    Ok(json!({}))
}

/// Longest typing notice a client may ask for.
const MAX_TYPING_MS: u64 = 120_000;

pub async fn typing(app: &App, caller: &Caller, (room_id, user_id): (String, String), body: Value) -> ApiResult<Value> {
    require_self(caller, &user_id)?;
    let typing = body["typing"].as_bool().ok_or_else(|| MatrixError::missing_param("typing is required"))?;
    if app.model.membership(&room_id, &user_id) != Some(Membership::Join) {
        return Err(MatrixError::forbidden("You are not in this room"));
    }
    let timeout_ms = body["timeout"].as_u64().unwrap_or(30_000).min(MAX_TYPING_MS);
    let notice = json!({ "room_id": room_id, "user_id": user_id, "typing": typing, "timeout_ms": timeout_ms });
    // Every node (this one included) learns of it through the ephemeral subject.
    if app.store.ephemeral().publish(serde_json::to_vec(&notice).unwrap_or_default().into()).await.is_err() {
        app.model.set_typing(&room_id, &user_id, typing, std::time::Duration::from_millis(timeout_ms));
    }
    Ok(json!({}))
}

pub async fn user_directory(app: &App, caller: &Caller, body: Value) -> ApiResult<Value> {
    let term = body["search_term"].as_str().ok_or_else(|| MatrixError::missing_param("search_term is required"))?.to_lowercase();
    let limit = body["limit"].as_u64().unwrap_or(10).min(50) as usize;
    // Whom the caller may find: users they share a room with, and members of public rooms.
    let my_rooms: std::collections::HashSet<String> =
        app.model.with_user(&caller.user_id, |u| u.joined_rooms().cloned().collect());
    let mut candidates = std::collections::BTreeSet::new();
    for room_id in &my_rooms {
        app.model.with_room(room_id, |room| candidates.extend(room.state.members("join").map(str::to_string)));
    }
    app.model.visit_listed_rooms(|room| {
        if room.state.join_rule() == "public" {
            candidates.extend(room.state.members("join").map(str::to_string));
        }
        candidates.len() < 100_000
    });
    let mut results: Vec<Value> = Vec::new();
    for user_id in candidates {
        if results.len() > limit {
            break;
        }
        if !haetae_matrix::ids::is_valid_user_id(&user_id) {
            continue;
        }
        let (displayname, avatar_url) = profile_of(app, &user_id);
        let matches =
            user_id.to_lowercase().contains(&term) || displayname.as_ref().is_some_and(|n| n.to_lowercase().contains(&term));
        if matches {
            // Absent profile fields are left out: the spec types them as strings, never null.
            let mut result = json!({ "user_id": user_id });
            if let Some(name) = displayname {
                result["display_name"] = json!(name);
            }
            if let Some(avatar) = avatar_url {
                result["avatar_url"] = json!(avatar);
            }
            results.push(result);
        }
    }
    let limited = results.len() > limit;
    results.truncate(limit);
    Ok(json!({ "results": results, "limited": limited }))
}
