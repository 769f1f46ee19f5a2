//! Account and profile odds and ends: whether a registration token is valid, deleting a profile
//! field, the rooms two users share.

use std::collections::BTreeSet;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{App, Caller, token_hash};
use crate::error::{ApiResult, MatrixError};

#[derive(Deserialize)]
pub struct TokenQuery {
    token: Option<String>,
}

/// `GET /register/m.login.registration_token/validity`: 403 when registration is closed.
pub async fn registration_token_validity(app: &App, ip: Option<std::net::IpAddr>, query: TokenQuery) -> ApiResult<Value> {
    // Guessing tokens costs what guessing passwords costs.
    app.limit_logins(ip)?;
    if !app.config.registration.enabled {
        return Err(MatrixError::forbidden("Registration is not enabled on this homeserver"));
    }
    let token = query.token.ok_or_else(|| MatrixError::missing_param("token is required"))?;
    // Compared by hash, so the comparison's time says nothing about the configured token.
    let configured = app.config.registration.token.as_deref().is_some_and(|configured| token_hash(configured) == token_hash(&token));
    let valid = configured || super::registration_tokens::is_valid(app, &token).await?;
    Ok(json!({ "valid": valid }))
}

/// Profile keys the spec allows: the two classic fields, `m.tz`, and namespaced keys.
fn valid_profile_key(key: &str) -> bool {
    if matches!(key, "displayname" | "avatar_url" | "m.tz") {
        return true;
    }
    let mut parts = key.split('.');
    let part_ok = |part: &str| {
        let mut chars = part.chars();
        chars.next().is_some_and(|c| c.is_ascii_lowercase()) && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    let first = parts.next().is_some_and(part_ok);
    let rest: Vec<&str> = parts.collect();
    first && !rest.is_empty() && rest.iter().all(|p| part_ok(p)) && key.len() <= 255
}

/// `DELETE /profile/{userId}/{keyName}`: a field that is not set (haetae keeps only the display
/// name and avatar) is deleted already.
pub async fn delete_profile_field(app: &App, caller: &Caller, (user_id, key): (String, String)) -> ApiResult<Value> {
    if !valid_profile_key(&key) {
        return Err(MatrixError::invalid_param("Invalid profile key"));
    }
    if caller.user_id != user_id {
        return Err(MatrixError::forbidden("You can only change your own profile"));
    }
    let set = app.model.with_user(&user_id, |u| match key.as_str() {
        "displayname" => u.displayname.is_some(),
        "avatar_url" => u.avatar_url.is_some(),
        _ => false,
    });
    if set {
        super::user_data::put_profile_field(app, caller, (user_id, key.clone()), json!({ key: null })).await?;
    }
    Ok(json!({}))
}

#[derive(Deserialize)]
pub struct MutualQuery {
    user_id: Option<String>,
    from: Option<String>,
}

/// Rooms per page of `mutual_rooms`.
const MUTUAL_PAGE: usize = 100;

/// `GET /mutual_rooms?user_id=`: rooms both the caller and `user_id` are joined to, by room id,
/// a page at a time (`from` is the offset of the next page).
pub fn mutual_rooms(app: &App, caller: &Caller, query: MutualQuery) -> ApiResult<Value> {
    let other = query.user_id.ok_or_else(|| MatrixError::missing_param("user_id is required"))?;
    if !haetae_matrix::ids::is_valid_user_id(&other) {
        return Err(MatrixError::invalid_param("The user ID provided was invalid"));
    }
    if other == caller.user_id {
        return Err(MatrixError::invalid_param("The user ID is your own"));
    }
    let offset = match query.from.as_deref() {
        None => 0,
        Some(token) => {
            token.strip_prefix('m').and_then(|n| n.parse::<usize>().ok()).ok_or_else(|| MatrixError::invalid_param("Invalid from token"))?
        }
    };
    let mine: BTreeSet<String> = app.model.with_user(&caller.user_id, |u| u.joined_rooms().cloned().collect());
    let shared: Vec<String> = app.model.with_user(&other, |u| u.joined_rooms().filter(|r| mine.contains(*r)).cloned().collect());
    let page: Vec<&String> = shared.iter().skip(offset).take(MUTUAL_PAGE).collect();
    let mut response = json!({ "joined": page, "count": shared.len() });
    if offset.saturating_add(MUTUAL_PAGE) < shared.len() {
        response["next_batch"] = json!(format!("m{}", offset.saturating_add(MUTUAL_PAGE)));
    }
    Ok(response)
}
