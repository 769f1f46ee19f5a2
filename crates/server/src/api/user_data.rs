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
//! # POST /_matrix/client/v3/user_directory/search, GET /publicRooms

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post, put};
use haetae_store::Bucket;
use serde::Deserialize;
use serde_json::{Value, json};

use super::account::append_user_entry;
use super::client;
use crate::app::{App, AppState, Caller, JsonBody};
use crate::entry::{Entry, Envelope};
use crate::error::{ApiResult, MatrixError};
use crate::read_model::Membership;
use crate::rooms::{NewEvent, member_content, now_ms, random_string, send_event};

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
    let router = client(router, "/pushrules/global/{kind}/{rule_id}", get(get_push_rule).put(put_push_rule).delete(delete_push_rule));
    let router = client(router, "/pushrules/global/{kind}/{rule_id}/{attribute}", get(get_push_rule_attribute).put(put_push_rule_attribute));
    let router = client(router, "/pushers", get(get_pushers));
    let router = client(router, "/pushers/set", post(set_pusher));
    let router = client(router, "/rooms/{room_id}/receipt/{receipt_type}/{event_id}", post(post_receipt));
    let router = client(router, "/rooms/{room_id}/read_markers", post(read_markers));
    let router = client(router, "/rooms/{room_id}/typing/{user_id}", put(typing));
    let router = client(router, "/user_directory/search", post(user_directory));
    client(router, "/publicRooms", get(public_rooms).post(public_rooms))
}

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

async fn get_profile(State(app): State<AppState>, Path(user_id): Path<String>) -> ApiResult<Json<Value>> {
    if !user_exists(&app, &user_id).await? {
        return Err(MatrixError::not_found("Profile not found"));
    }
    let (displayname, avatar_url) = profile_of(&app, &user_id);
    let mut profile = json!({});
    if let Some(name) = displayname {
        profile["displayname"] = json!(name);
    }
    if let Some(avatar) = avatar_url {
        profile["avatar_url"] = json!(avatar);
    }
    Ok(Json(profile))
}

async fn get_profile_field(State(app): State<AppState>, Path((user_id, field)): Path<(String, String)>) -> ApiResult<Json<Value>> {
    if !user_exists(&app, &user_id).await? {
        return Err(MatrixError::not_found("Profile not found"));
    }
    let (displayname, avatar_url) = profile_of(&app, &user_id);
    let value = match field.as_str() {
        "displayname" => displayname,
        "avatar_url" => avatar_url,
        _ => return Err(MatrixError::unrecognized()),
    };
    match value {
        Some(value) => Ok(Json(json!({ field: value }))),
        None => Err(MatrixError::not_found("Profile field not set")),
    }
}

async fn put_profile_field(
    State(app): State<AppState>,
    caller: Caller,
    Path((user_id, field)): Path<(String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    require_self(&caller, &user_id)?;
    app.limit_writes(&caller.user_id)?;
    let (mut displayname, mut avatar_url) = profile_of(&app, &user_id);
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
    append_user_entry(&app, &user_id, Entry::Profile { displayname, avatar_url }).await?;
    // Members see the new profile in each joined room's member event.
    let rooms: Vec<String> = app.model.with_user(&user_id, |u| u.joined_rooms().cloned().collect());
    for room_id in rooms {
        let content = member_content(&app, &user_id, "join", None);
        let sent = send_event(
            &app,
            &caller,
            NewEvent { room_id: &room_id, event_type: "m.room.member", state_key: Some(&user_id), content, redacts: None, txn_id: None },
        )
        .await;
        if let Err(error) = sent {
            tracing::warn!(room_id, error = %error.message, "could not update the member event");
        }
    }
    Ok(Json(json!({})))
}

async fn get_account_data(
    State(app): State<AppState>,
    caller: Caller,
    Path((user_id, event_type)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    require_self(&caller, &user_id)?;
    match app.model.with_user(&user_id, |u| u.account_data.get(&event_type).cloned()) {
        Some((_, content)) => Ok(Json(content)),
        None => Err(MatrixError::not_found("Account data not found")),
    }
}

fn object_body(body: &Value) -> ApiResult<()> {
    if !body.is_object() {
        return Err(MatrixError::bad_json("content must be a JSON object"));
    }
    Ok(())
}

async fn put_account_data(
    State(app): State<AppState>,
    caller: Caller,
    Path((user_id, event_type)): Path<(String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    require_self(&caller, &user_id)?;
    object_body(&body)?;
    if event_type == "m.fully_read" || event_type == "m.push_rules" {
        return Err(MatrixError::new(axum::http::StatusCode::BAD_REQUEST, "M_BAD_JSON", "This type is set through its own API"));
    }
    append_user_entry(&app, &user_id, Entry::AccountData { room_id: None, event_type, content: body }).await?;
    Ok(Json(json!({})))
}

async fn get_room_account_data(
    State(app): State<AppState>,
    caller: Caller,
    Path((user_id, room_id, event_type)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    require_self(&caller, &user_id)?;
    match app.model.with_user(&user_id, |u| u.room_account_data.get(&room_id).and_then(|r| r.get(&event_type)).cloned()) {
        Some((_, content)) => Ok(Json(content)),
        None => Err(MatrixError::not_found("Account data not found")),
    }
}

async fn put_room_account_data(
    State(app): State<AppState>,
    caller: Caller,
    Path((user_id, room_id, event_type)): Path<(String, String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    require_self(&caller, &user_id)?;
    object_body(&body)?;
    if !haetae_matrix::ids::is_valid_room_id(&room_id) {
        return Err(MatrixError::invalid_param("Invalid room id"));
    }
    append_user_entry(&app, &user_id, Entry::AccountData { room_id: Some(room_id), event_type, content: body }).await?;
    Ok(Json(json!({})))
}

async fn create_filter(
    State(app): State<AppState>,
    caller: Caller,
    Path(user_id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    require_self(&caller, &user_id)?;
    if serde_json::to_vec(&body).map(|b| b.len()).unwrap_or(0) > app.config.limits.max_filter_bytes {
        return Err(MatrixError::too_large("filter too large"));
    }
    haetae_matrix::filter::Filter::parse(&body).map_err(|e| MatrixError::bad_json(e.to_string()))?;
    let filter_id = random_string(12);
    append_user_entry(&app, &user_id, Entry::Filter { filter_id: filter_id.clone(), filter: body }).await?;
    Ok(Json(json!({ "filter_id": filter_id })))
}

async fn get_filter(
    State(app): State<AppState>,
    caller: Caller,
    Path((user_id, filter_id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    require_self(&caller, &user_id)?;
    match app.model.with_user(&user_id, |u| u.filters.get(&filter_id).cloned()) {
        Some(filter) => Ok(Json(filter)),
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

async fn get_push_rules(State(app): State<AppState>, caller: Caller) -> Json<Value> {
    Json(push_rules(&app, &caller.user_id))
}

async fn get_global_push_rules(State(app): State<AppState>, caller: Caller) -> Json<Value> {
    Json(push_rules(&app, &caller.user_id)["global"].clone())
}

const KINDS: [&str; 5] = ["override", "content", "room", "sender", "underride"];

fn check_kind(kind: &str) -> ApiResult<()> {
    if KINDS.contains(&kind) { Ok(()) } else { Err(MatrixError::invalid_param("Unknown push rule kind")) }
}

use haetae_matrix::push::find_rule;

async fn get_push_rule(State(app): State<AppState>, caller: Caller, Path((kind, rule_id)): Path<(String, String)>) -> ApiResult<Json<Value>> {
    check_kind(&kind)?;
    let rules = push_rules(&app, &caller.user_id);
    find_rule(&rules, &kind, &rule_id).cloned().map(Json).ok_or_else(|| MatrixError::not_found("Push rule not found"))
}

#[derive(Deserialize)]
struct Placement {
    before: Option<String>,
    after: Option<String>,
}

async fn put_push_rule(
    State(app): State<AppState>,
    caller: Caller,
    Path((kind, rule_id)): Path<(String, String)>,
    Query(placement): Query<Placement>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    check_kind(&kind)?;
    let rule = haetae_matrix::push::validate_rule(&kind, &rule_id, &body).map_err(push_error)?;
    let mut rules = push_rules(&app, &caller.user_id);
    haetae_matrix::push::put_rule(&mut rules, &kind, rule, placement.before.as_deref(), placement.after.as_deref())
        .map_err(push_error)?;
    save_push_rules(&app, &caller.user_id, rules).await?;
    Ok(Json(json!({})))
}

fn push_error(error: haetae_matrix::push::PushRuleError) -> MatrixError {
    use haetae_matrix::push::PushRuleError;
    match error {
        PushRuleError::NotFound(_) | PushRuleError::UnknownRelativeRule(_) => MatrixError::not_found(error.to_string()),
        PushRuleError::ReservedRuleId(_) => MatrixError::invalid_param(error.to_string()),
        other => MatrixError::bad_json(other.to_string()),
    }
}

async fn delete_push_rule(State(app): State<AppState>, caller: Caller, Path((kind, rule_id)): Path<(String, String)>) -> ApiResult<Json<Value>> {
    check_kind(&kind)?;
    let mut rules = push_rules(&app, &caller.user_id);
    if find_rule(&rules, &kind, &rule_id).is_none() {
        return Err(MatrixError::not_found("Push rule not found"));
    }
    haetae_matrix::push::remove_rule(&mut rules, &kind, &rule_id).map_err(push_error)?;
    save_push_rules(&app, &caller.user_id, rules).await?;
    Ok(Json(json!({})))
}

async fn get_push_rule_attribute(
    State(app): State<AppState>,
    caller: Caller,
    Path((kind, rule_id, attribute)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    check_kind(&kind)?;
    let rules = push_rules(&app, &caller.user_id);
    let rule = find_rule(&rules, &kind, &rule_id).ok_or_else(|| MatrixError::not_found("Push rule not found"))?;
    match attribute.as_str() {
        "enabled" => Ok(Json(json!({ "enabled": rule["enabled"] }))),
        "actions" => Ok(Json(json!({ "actions": rule["actions"] }))),
        _ => Err(MatrixError::unrecognized()),
    }
}

async fn put_push_rule_attribute(
    State(app): State<AppState>,
    caller: Caller,
    Path((kind, rule_id, attribute)): Path<(String, String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    check_kind(&kind)?;
    let mut rules = push_rules(&app, &caller.user_id);
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
    save_push_rules(&app, &caller.user_id, rules).await?;
    Ok(Json(json!({})))
}

async fn get_pushers(State(app): State<AppState>, caller: Caller) -> Json<Value> {
    let pushers = app.model.with_user(&caller.user_id, |u| u.pushers.clone());
    Json(json!({ "pushers": pushers }))
}

/// Checks a `pushers/set` body field by field: what is stored is served back by `GET /pushers`
/// to clients that expect the spec's types. Missing -> M_MISSING_PARAM, wrong type -> M_BAD_JSON.
fn check_pusher(body: &Value) -> ApiResult<()> {
    let Some(object) = body.as_object() else { return Err(MatrixError::bad_json("the body must be an object")) };
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
        None => return Err(MatrixError::missing_param("kind is required (null deletes the pusher)")),
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

async fn set_pusher(State(app): State<AppState>, caller: Caller, JsonBody(body): JsonBody<Value>) -> ApiResult<Json<Value>> {
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
    append_user_entry(&app, &caller.user_id, Entry::Pushers { pushers }).await?;
    Ok(Json(json!({})))
}

/// Appends a receipt to the room's history (it is part of the room's replicated state).
async fn store_receipt(app: &App, caller: &Caller, room_id: &str, receipt_type: &str, event_id: &str, thread_id: Option<String>) -> ApiResult<()> {
    if app.model.membership(room_id, &caller.user_id) != Some(Membership::Join) {
        return Err(MatrixError::forbidden("You are not in this room"));
    }
    if crate::rooms::find_event(app, room_id, event_id).await?.is_none() {
        return Err(MatrixError::not_found("Event not found"));
    }
    let entry = Entry::Receipt {
        user_id: caller.user_id.clone(),
        receipt_type: receipt_type.to_string(),
        event_id: event_id.to_string(),
        ts: now_ms(),
        thread_id,
    };
    let payload = Envelope::new(entry).to_bytes();
    let appended = app
        .store
        .log()
        .append(room_id, payload, &crate::rooms::random_event_id(), None)
        .await
        .map_err(MatrixError::unavailable)?;
    // Read-your-writes: the caller's next sync may be answered from this node's model.
    if !app.model.wait_applied(appended.partition, appended.seq, std::time::Duration::from_secs(15)).await {
        return Err(MatrixError::unavailable("this node is behind the event log"));
    }
    Ok(())
}

async fn post_receipt(
    State(app): State<AppState>,
    caller: Caller,
    Path((room_id, receipt_type, event_id)): Path<(String, String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    match receipt_type.as_str() {
        "m.read" | "m.read.private" => {
            store_receipt(&app, &caller, &room_id, &receipt_type, &event_id, body["thread_id"].as_str().map(str::to_string)).await?
        }
        "m.fully_read" => {
            append_user_entry(
                &app,
                &caller.user_id,
                Entry::AccountData { room_id: Some(room_id), event_type: "m.fully_read".into(), content: json!({ "event_id": event_id }) },
            )
            .await?
        }
        _ => return Err(MatrixError::invalid_param("Unknown receipt type")),
    }
    Ok(Json(json!({})))
}

async fn read_markers(
    State(app): State<AppState>,
    caller: Caller,
    Path(room_id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    if let Some(event_id) = body["m.fully_read"].as_str() {
        append_user_entry(
            &app,
            &caller.user_id,
            Entry::AccountData { room_id: Some(room_id.clone()), event_type: "m.fully_read".into(), content: json!({ "event_id": event_id }) },
        )
        .await?;
    }
    for receipt_type in ["m.read", "m.read.private"] {
        if let Some(event_id) = body[receipt_type].as_str() {
            store_receipt(&app, &caller, &room_id, receipt_type, event_id, None).await?;
        }
    }
    Ok(Json(json!({})))
}

/// Longest typing notice a client may ask for.
const MAX_TYPING_MS: u64 = 120_000;

async fn typing(
    State(app): State<AppState>,
    caller: Caller,
    Path((room_id, user_id)): Path<(String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    require_self(&caller, &user_id)?;
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
    Ok(Json(json!({})))
}

async fn user_directory(State(app): State<AppState>, caller: Caller, JsonBody(body): JsonBody<Value>) -> ApiResult<Json<Value>> {
    let term = body["search_term"].as_str().ok_or_else(|| MatrixError::missing_param("search_term is required"))?.to_lowercase();
    let limit = body["limit"].as_u64().unwrap_or(10).min(50) as usize;
    // Whom the caller may find: users they share a room with, and members of public rooms.
    let my_rooms: std::collections::HashSet<String> = app.model.with_user(&caller.user_id, |u| u.joined_rooms().cloned().collect());
    let mut candidates = std::collections::BTreeSet::new();
    app.model.visit_rooms(|room| {
        let public = room.state.join_rule() == "public";
        if public || my_rooms.contains(&room.room_id) {
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
        let (displayname, avatar_url) = profile_of(&app, &user_id);
        let matches = user_id.to_lowercase().contains(&term) || displayname.as_ref().is_some_and(|n| n.to_lowercase().contains(&term));
        if matches {
            results.push(json!({ "user_id": user_id, "display_name": displayname, "avatar_url": avatar_url }));
        }
    }
    let limited = results.len() > limit;
    results.truncate(limit);
    Ok(Json(json!({ "results": results, "limited": limited })))
}

async fn public_rooms(State(app): State<AppState>) -> Json<Value> {
    let mut chunk: Vec<Value> = Vec::new();
    app.model.visit_rooms(|room| {
        let listed = room.state.content("m.room.join_rules", "").and_then(|c| c["join_rule"].as_str()) == Some("public")
            && room.state.get("m.room.canonical_alias", "").is_some();
        if listed {
            chunk.push(json!({
                "room_id": room.room_id,
                "name": room.state.content("m.room.name", "").and_then(|c| c["name"].as_str()),
                "topic": room.state.content("m.room.topic", "").and_then(|c| c["topic"].as_str()),
                "canonical_alias": room.state.content("m.room.canonical_alias", "").and_then(|c| c["alias"].as_str()),
                "num_joined_members": room.state.joined_count(),
                "world_readable": false,
                "guest_can_join": false,
            }));
        }
        chunk.len() < 100
    });
    let total = chunk.len();
    Json(json!({ "chunk": chunk, "total_room_count_estimate": total }))
}
