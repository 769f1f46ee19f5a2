//! OpenID tokens for widgets and calls (Element Call): a short-lived token a user hands to a
//! third party, which asks any node who it belongs to. Kept in the replicated meta bucket as
//! a hash, so a token issued in one DC is answered in every DC.

use haetae_store::Bucket;
use serde_json::{Value, json};

use super::{App, Caller, token_hash};
use crate::error::{ApiResult, MatrixError};

/// How long an OpenID token is valid, s.
const OPENID_TOKEN_LIFETIME_S: u64 = 3600;

fn key(hash: &str) -> String {
    format!("openid_token\u{0}{hash}")
}

/// `POST /user/{userId}/openid/request_token`, for the caller only.
pub async fn request_token(app: &App, caller: &Caller, user_id: &str) -> ApiResult<Value> {
    if user_id != caller.user_id {
        return Err(MatrixError::forbidden("You may only request OpenID tokens for yourself"));
    }
    let token = super::oauth_records::random_secret();
    let expires_ms = super::rooms::now_ms() + OPENID_TOKEN_LIFETIME_S * 1000;
    let record = json!({ "user_id": caller.user_id, "expires_ms": expires_ms });
    app.store.kv().put(Bucket::Meta, &key(&token_hash(&token)), serde_json::to_vec(&record).unwrap_or_default().into()).await?;
    Ok(json!({
        "access_token": token,
        "token_type": "Bearer",
        "matrix_server_name": app.config.server_name,
        "expires_in": OPENID_TOKEN_LIFETIME_S,
    }))
}

/// `GET /_matrix/federation/v1/openid/userinfo`: whose token this is, while it is valid.
pub async fn userinfo(app: &App, token: &str) -> ApiResult<Value> {
    let unknown = || MatrixError::new(axum::http::StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN", "Unknown or expired OpenID token");
    let stored = app.store.kv().get(Bucket::Meta, &key(&token_hash(token))).await?.ok_or_else(unknown)?;
    let record: Value = serde_json::from_slice(&stored.value).unwrap_or_default();
    if record["expires_ms"].as_u64().unwrap_or(0) < super::rooms::now_ms() {
        return Err(unknown());
    }
    Ok(json!({ "sub": record["user_id"] }))
}
