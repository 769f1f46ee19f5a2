//! OpenID Connect: haetae as the login provider of other services ("log in with haetae").
//!
//! # GET  /.well-known/openid-configuration   discovery (the same document as auth_metadata)
//! # GET  /oauth2/keys.json                   the JWKS: every signing key a valid id_token may name
//! # GET|POST /oauth2/userinfo                who the bearer of an `openid` access token is
//!
//! It owns the id_token's claims ([`id_token_claims`], pure) and the userinfo answer. Keys and
//! their rotation are [`super::keys`]'s. A relying party verifies id_tokens offline against the
//! JWKS, so a service that already signed someone in does not need any haetae DC to keep them.
//!
//! The subject (`sub`) is the Matrix user id: public, stable, the same for every client.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::grants::{Client, Scope};
use super::keys::{self, Schedule};
use super::{Form, OauthError, no_store, tokens};
use crate::app::{App, AppState, client_ip};
use crate::error::ApiResult;

/// The claims a userinfo answer and an id_token may carry beside the protocol's own.
pub const CLAIMS_SUPPORTED: [&str; 9] = ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "name", "preferred_username"];

/// `at_hash` (OpenID Connect Core 3.1.3.6): the left half of the access token's SHA-256, base64url.
pub fn access_token_hash(access_token: &str) -> String {
    let digest = Sha256::digest(access_token.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..16])
}

/// What an id_token says about one sign-in.
pub struct IdTokenFacts<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub user_id: &'a str,
    pub scope: &'a Scope,
    pub auth_time_s: u64,
    /// Echoed from the authorization request; absent on refresh (OpenID Connect Core 12.2).
    pub nonce: Option<&'a str>,
    pub access_token: &'a str,
    pub now_s: u64,
    pub lifetime_s: u64,
}

/// The claims of an id_token, profile claims included when the scope asked for them.
pub fn id_token_claims(facts: &IdTokenFacts, profile: &Value) -> Value {
    let mut claims = json!({
        "iss": facts.issuer,
        "sub": facts.user_id,
        "aud": facts.client_id,
        "iat": facts.now_s,
        "exp": facts.now_s + facts.lifetime_s,
        "auth_time": facts.auth_time_s,
        "at_hash": access_token_hash(facts.access_token),
    });
    if let Some(nonce) = facts.nonce {
        claims["nonce"] = json!(nonce);
    }
    if facts.scope.profile
        && let (Some(claims), Some(profile)) = (claims.as_object_mut(), profile.as_object())
    {
        claims.extend(profile.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    claims
}

/// The profile claims of a user: their username and, if set, their display name.
fn profile_claims(app: &App, user_id: &str) -> Value {
    let mut claims = json!({});
    if let Some(localpart) = haetae_matrix::ids::localpart(user_id) {
        claims["preferred_username"] = json!(localpart);
    }
    if let Some(name) = super::records::display_name(app, user_id) {
        claims["name"] = json!(name);
    }
    claims
}

/// A signed id_token for a completed grant or a refresh.
pub async fn id_token(app: &App, client: &Client, facts: IdTokenFacts<'_>) -> ApiResult<String> {
    let set = keys::current(app).await?;
    let signer = set.signing_key(facts.now_s).ok_or_else(|| crate::error::MatrixError::unavailable("no signing key"))?;
    let profile = if facts.scope.profile { profile_claims(app, facts.user_id) } else { json!({}) };
    let claims = id_token_claims(&IdTokenFacts { client_id: &client.client_id, ..facts }, &profile);
    keys::sign_jwt(signer, &claims)
}

/// # GET /oauth2/keys.json
pub async fn jwks(State(app): State<AppState>) -> Result<Response, OauthError> {
    let set = keys::current(&app).await?;
    let mut response = Json(keys::jwks(&set)).into_response();
    let max_age_s = Schedule::from_config(&app.config.oauth).jwks_max_age_s();
    if let Ok(value) = HeaderValue::from_str(&format!("public, max-age={max_age_s}")) {
        response.headers_mut().insert(header::CACHE_CONTROL, value);
    }
    Ok(response)
}

/// The bearer token of a userinfo request: the Authorization header, or (POST) the form's
/// `access_token` (RFC 6750 section 2.2).
fn bearer(headers: &HeaderMap, form: Option<&Form>) -> Option<String> {
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
        .map(|t| t.trim().to_string());
    from_header.or_else(|| form.and_then(|f| f.get("access_token")).map(str::to_string)).filter(|t| !t.is_empty() && t.len() <= 512)
}

/// A refusal of a protected resource (RFC 6750 section 3): status, `WWW-Authenticate`, JSON body.
fn bearer_error(status: StatusCode, error: &'static str, description: &str) -> Response {
    let mut response = (status, Json(json!({ "error": error, "error_description": description }))).into_response();
    no_store(&mut response);
    if let Ok(value) = HeaderValue::from_str(&format!("Bearer error=\"{error}\"")) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// # GET|POST /oauth2/userinfo
pub async fn userinfo(State(app): State<AppState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if let Err(error) = tokens::limit(&app, client_ip(&parts)) {
        return error.into_response();
    }
    let form = if parts.method == axum::http::Method::POST {
        match Form::read(Request::from_parts(parts.clone(), body)).await {
            Ok(form) => Some(form),
            Err(error) => return error.into_response(),
        }
    } else {
        None
    };
    let Some(token) = bearer(&parts.headers, form.as_ref()) else {
        let mut response = bearer_error(StatusCode::UNAUTHORIZED, "invalid_request", "an access token is required");
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    };
    let family = match tokens::family_of_access(&app, &token).await {
        Ok(Some(family)) => family,
        Ok(None) => return bearer_error(StatusCode::UNAUTHORIZED, "invalid_token", "the access token is not valid"),
        Err(error) => return OauthError::from(error).into_response(),
    };
    if !family.scope.openid {
        return bearer_error(StatusCode::FORBIDDEN, "insufficient_scope", "the access token was not granted the openid scope");
    }
    let mut claims = if family.scope.profile { profile_claims(&app, &family.user_id) } else { json!({}) };
    claims["sub"] = json!(family.user_id);
    let mut response = Json(claims).into_response();
    no_store(&mut response);
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::grants::parse_scope;

    #[test]
    fn id_token_claims_follow_openid_connect_core() {
        let scope = parse_scope("openid").unwrap();
        let facts = IdTokenFacts {
            issuer: "https://haetae.example/",
            client_id: "c1",
            user_id: "@alice:haetae.example",
            scope: &scope,
            auth_time_s: 90,
            nonce: Some("n-0S6_WzA2Mj"),
            access_token: "haei_token",
            now_s: 100,
            lifetime_s: 600,
        };
        let profile = json!({"name": "Alice", "preferred_username": "alice"});
        let claims = id_token_claims(&facts, &profile);
        assert_eq!(claims["iss"], "https://haetae.example/");
        assert_eq!(claims["sub"], "@alice:haetae.example");
        assert_eq!(claims["aud"], "c1");
        assert_eq!((claims["iat"].as_u64(), claims["exp"].as_u64(), claims["auth_time"].as_u64()), (Some(100), Some(700), Some(90)));
        assert_eq!(claims["nonce"], "n-0S6_WzA2Mj");
        assert_eq!(claims["at_hash"].as_str().unwrap().len(), 22);
        // Without the profile scope, no profile claims; without a nonce, no nonce claim.
        assert!(claims.get("name").is_none());
        let with_profile = parse_scope("openid profile").unwrap();
        let claims = id_token_claims(&IdTokenFacts { scope: &with_profile, nonce: None, ..facts }, &profile);
        assert_eq!((claims["name"].as_str(), claims["preferred_username"].as_str()), (Some("Alice"), Some("alice")));
        assert!(claims.get("nonce").is_none());
    }

    #[test]
    fn at_hash_matches_the_openid_connect_example() {
        // OpenID Connect Core, appendix A.3 (RS256, so SHA-256 as for ES256).
        assert_eq!(access_token_hash("jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"), "77QmUPtjPfzWtF2AnpK9RQ");
    }
}
