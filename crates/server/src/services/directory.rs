//! Finding rooms: the published room directory (visibility per room, `/publicRooms` with search
//! and pagination) and room previews (`room_summary`).
//!
//! A room's visibility is a room log entry ([`Entry::DirectoryVisibility`]), so every node's read
//! model knows which rooms are published and a listing is a walk of the model, not of the log.

use haetae_store::Bucket;
use serde::Deserialize;
use serde_json::{Value, json};

use super::rooms::{knows_room, random_event_id, resolve_room};
use super::{App, Caller};
use crate::entry::Entry;
use crate::error::{ApiResult, MatrixError};
use crate::read_model::Room;

/// Rooms per `/publicRooms` page when the client names no limit, and the most it may ask for.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 500;
/// Longest search term, bytes.
const MAX_SEARCH_BYTES: usize = 256;

fn check_room_id(room_id: &str) -> ApiResult<()> {
    if !haetae_matrix::ids::is_valid_room_id(room_id) {
        return Err(MatrixError::invalid_param("Invalid room id"));
    }
    Ok(())
}

/// Records `room_id`'s directory visibility in the room's history (read-your-writes).
pub async fn publish(app: &App, room_id: &str, visibility: &str) -> ApiResult<()> {
    let entry = Entry::DirectoryVisibility { visibility: visibility.to_string() };
    app.append_applied(room_id, entry, &random_event_id()).await
}

/// `GET /directory/list/room/{roomId}`.
pub async fn get_visibility(app: &App, room_id: String) -> ApiResult<Value> {
    check_room_id(&room_id)?;
    if !knows_room(app, &room_id).await? {
        return Err(MatrixError::not_found("Room not found"));
    }
    let published = app.model.with_room(&room_id, |room| room.published).unwrap_or(false);
    Ok(json!({ "visibility": if published { "public" } else { "private" } }))
}

#[derive(Deserialize)]
pub struct VisibilityBody {
    visibility: Option<String>,
}

/// `PUT /directory/list/room/{roomId}`: members who may change the room's canonical alias may
/// publish it (the same power Synapse asks for).
pub async fn set_visibility(app: &App, caller: &Caller, room_id: String, body: VisibilityBody) -> ApiResult<Value> {
    check_room_id(&room_id)?;
    app.limit_writes(&caller.user_id)?;
    let visibility = body.visibility.unwrap_or_else(|| "public".to_string());
    if visibility != "public" && visibility != "private" {
        return Err(MatrixError::invalid_param("visibility must be 'public' or 'private'"));
    }
    if !knows_room(app, &room_id).await? {
        return Err(MatrixError::not_found("Room not found"));
    }
    let (allowed, published) = app
        .model
        .with_room(&room_id, |room| {
            let levels = room.state.power_levels();
            let allowed = room.state.membership(&caller.user_id) == Some("join")
                && levels.user_level(&caller.user_id) >= levels.event_level("m.room.canonical_alias", true);
            (allowed, room.published)
        })
        .unwrap_or((false, false));
    if !allowed {
        return Err(MatrixError::forbidden("You may not change this room's visibility in the directory"));
    }
    if published != (visibility == "public") {
        publish(app, &room_id, &visibility).await?;
    }
    Ok(json!({}))
}

/// The directory's view of a room (the spec's `PublishedRoomsChunk`), absent fields left out.
pub(super) fn room_chunk(room: &Room) -> Value {
    let state = &room.state;
    let text = |event_type: &str, field: &str| state.content(event_type, "").and_then(|c| c[field].as_str().map(str::to_string));
    let mut chunk = json!({
        "room_id": room.room_id,
        "num_joined_members": state.joined_count(),
        "world_readable": state.history_visibility() == "world_readable",
        "guest_can_join": state.guest_access() == "can_join",
        "join_rule": state.join_rule(),
    });
    let fields = [
        ("name", text("m.room.name", "name")),
        ("topic", text("m.room.topic", "topic")),
        ("canonical_alias", text("m.room.canonical_alias", "alias")),
        ("avatar_url", text("m.room.avatar", "url")),
        ("room_type", text("m.room.create", "type")),
    ];
    for (key, value) in fields {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            chunk[key] = json!(value);
        }
    }
    chunk
}

/// Whether `chunk` matches a lowercase search term (name, topic, aliases, room id).
fn matches_term(room: &Room, chunk: &Value, term: &str) -> bool {
    if term.is_empty() {
        return true;
    }
    let mut haystacks: Vec<String> = ["name", "topic", "canonical_alias", "room_id"]
        .iter()
        .filter_map(|key| chunk[*key].as_str().map(str::to_lowercase))
        .collect();
    let alias_content = room.state.content("m.room.canonical_alias", "");
    if let Some(alt) = alias_content.as_ref().and_then(|c| c["alt_aliases"].as_array()) {
        haystacks.extend(alt.iter().filter_map(Value::as_str).map(str::to_lowercase));
    }
    haystacks.iter().any(|h| h.contains(term))
}

/// What a `/publicRooms` request asks for, from the query (GET) or the body (POST).
#[derive(Deserialize, Default)]
pub struct DirectoryQuery {
    #[serde(default)]
    limit: Option<Value>,
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    server: Option<String>,
    #[serde(default)]
    filter: Option<DirectoryFilter>,
    /// A third-party network's rooms: haetae bridges none.
    #[serde(default)]
    third_party_instance_id: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct DirectoryFilter {
    #[serde(default)]
    generic_search_term: Option<String>,
    /// Room types to include (`null` for rooms without one); absent: all.
    #[serde(default)]
    room_types: Option<Vec<Option<String>>>,
}

impl DirectoryQuery {
    pub fn server(&self) -> Option<String> {
        self.server.clone()
    }

    pub fn set_server(&mut self, server: Option<String>) {
        if server.is_some() {
            self.server = server;
        }
    }
}

/// The query string of `GET /publicRooms`.
#[derive(Deserialize)]
pub struct DirectoryGetQuery {
    limit: Option<String>,
    since: Option<String>,
    server: Option<String>,
}

impl DirectoryGetQuery {
    pub fn into_query(self) -> ApiResult<DirectoryQuery> {
        let limit = match self.limit {
            Some(text) => Some(json!(text.parse::<u64>().map_err(|_| MatrixError::invalid_param("limit must be a number"))?)),
            None => None,
        };
        Ok(DirectoryQuery { limit, since: self.since, server: self.server, filter: None, third_party_instance_id: None })
    }
}

/// `GET|POST /publicRooms`: published rooms, most members first (then by room id), a page at a
/// time; `since` is the offset of the page (`p{n}`).
pub async fn public_rooms(app: &App, query: DirectoryQuery) -> ApiResult<Value> {
    let limit = match &query.limit {
        None | Some(Value::Null) => DEFAULT_PAGE,
        Some(value) => match value.as_u64() {
            Some(n) => (n as usize).clamp(1, MAX_PAGE),
            None => return Err(MatrixError::bad_json("limit must be a non-negative integer")),
        },
    };
    let offset = match query.since.as_deref() {
        None | Some("") => 0,
        Some(token) => token
            .strip_prefix('p')
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| MatrixError::invalid_param("Invalid pagination token"))?,
    };
    // Another server's directory would need federation, which haetae does not speak; a
    // third-party network's, a bridge.
    if query.server.as_deref().is_some_and(|server| server != app.config.server_name) || query.third_party_instance_id.is_some() {
        return Ok(json!({ "chunk": [], "total_room_count_estimate": 0 }));
    }
    let filter = query.filter.unwrap_or_default();
    let term = filter.generic_search_term.unwrap_or_default().to_lowercase();
    if term.len() > MAX_SEARCH_BYTES {
        return Err(MatrixError::invalid_param(format!("the search term is at most {MAX_SEARCH_BYTES} bytes")));
    }
    let mut listed: Vec<(u64, String, Value)> = Vec::new();
    app.model.visit_listed_rooms(|room| {
        if room.published {
            let chunk = room_chunk(room);
            let room_type = chunk["room_type"].as_str().map(str::to_string);
            let type_ok = filter.room_types.as_ref().is_none_or(|types| types.contains(&room_type));
            if type_ok && matches_term(room, &chunk, &term) {
                listed.push((room.state.joined_count(), room.room_id.clone(), chunk));
            }
        }
        true
    });
    listed.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let total = listed.len();
    let page: Vec<Value> = listed.into_iter().skip(offset).take(limit).map(|(_, _, chunk)| chunk).collect();
    let mut response = json!({ "chunk": page, "total_room_count_estimate": total });
    if offset.saturating_add(limit) < total {
        response["next_batch"] = json!(format!("p{}", offset.saturating_add(limit)));
    }
    if offset > 0 {
        response["prev_batch"] = json!(format!("p{}", offset.saturating_sub(limit)));
    }
    Ok(response)
}

/// `GET /room_summary/{roomIdOrAlias}`: members (and invitees, knockers) see it; anyone sees it
/// when the room is world readable or may be joined or knocked on without an invite. Otherwise
/// 404, as for a room that does not exist.
pub async fn room_summary(app: &App, caller: Option<&Caller>, room_id_or_alias: String) -> ApiResult<Value> {
    let not_found = || MatrixError::not_found("Room not found or not visible to you");
    let room_id = if room_id_or_alias.starts_with('#') {
        if !haetae_matrix::ids::is_valid_room_alias(&room_id_or_alias) {
            return Err(MatrixError::invalid_param("Invalid room alias"));
        }
        match app.store.kv().get(Bucket::Aliases, &room_id_or_alias).await? {
            Some(_) => resolve_room(app, &room_id_or_alias).await?,
            None => return Err(not_found()),
        }
    } else {
        resolve_room(app, &room_id_or_alias).await?
    };
    if !knows_room(app, &room_id).await? {
        return Err(not_found());
    }
    let summary = app
        .model
        .with_room(&room_id, |room| {
            let membership = caller.and_then(|c| room.state.membership(&c.user_id)).map(str::to_string);
            let open = matches!(room.state.join_rule(), "public" | "knock" | "knock_restricted")
                || room.state.history_visibility() == "world_readable";
            let member = matches!(membership.as_deref(), Some("join" | "invite" | "knock"));
            if !open && !member {
                return None;
            }
            let mut summary = room_chunk(room);
            summary["room_version"] = json!(room.state.room_version());
            let encryption = room.state.content("m.room.encryption", "");
            if let Some(algorithm) = encryption.as_ref().and_then(|c| c["algorithm"].as_str()) {
                summary["encryption"] = json!(algorithm);
            }
            let join_rules = room.state.content("m.room.join_rules", "");
            if let Some(allow) = join_rules.as_ref().and_then(|c| c["allow"].as_array()) {
                let rooms: Vec<&str> = allow.iter().filter(|a| a["type"] == "m.room_membership").filter_map(|a| a["room_id"].as_str()).collect();
                if !rooms.is_empty() {
                    summary["allowed_room_ids"] = json!(rooms);
                }
            }
            if caller.is_some() {
                summary["membership"] = json!(membership.unwrap_or_else(|| "leave".to_string()));
            }
            Some(summary)
        })
        .flatten();
    summary.ok_or_else(not_found)
}
