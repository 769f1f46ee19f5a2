//! The tokens of Matrix API logins beyond the plain access token: refresh-token chains of logins
//! that asked for them (`refresh_token: true`), and single-use login tokens
//! (`POST /login/get_token`, spent by `m.login.token`). Their formats and their records; what a
//! login, a refresh or a logout does with them is [`super::accounts`]'s.
//!
//! Token formats (only SHA-256 hashes are stored):
//! - access token of a refreshable login `haex_<expiry unix seconds>_<256 random bits>`: like an
//!   OAuth access token it carries its expiry, so every node refuses an expired one without a
//!   lookup (`M_UNKNOWN_TOKEN` with `soft_logout: true`);
//! - refresh token `haes_<session>_<256 random bits>`: the login session names its record;
//! - login token: 256 random bits.
//!
//! Records, all replicated (every DC can refresh or spend):
//! - tokens bucket, `refresh:<session>` -> [`RefreshSession`]: the chain (rules in
//!   [`crate::refresh_chain`]), rotated by compare-and-set; deleted when its device logs out;
//! - OAuth grants bucket (records dropped by JetStream after a day), `login:<hash>` ->
//!   [`LoginToken`]: spent by one compare-and-set, so two DCs cannot both accept it.

use haetae_store::{Bucket, KvError};
use serde::{Deserialize, Serialize};

use super::rooms::random_string;
use super::{App, token_hash};
use crate::error::ApiResult;
use crate::refresh_chain::{Chain, Outcome};

const ACCESS_PREFIX: &str = "haex_";
const REFRESH_PREFIX: &str = "haes_";
/// Characters of a login session id in a refresh token (letters only, never the separator).
pub const SESSION_ID_CHARS: usize = 16;
/// Access tokens remembered per refresh session (the newest last): one handed out with a
/// successor given again stays valid, so a logout revokes each of them.
pub const MAX_SESSION_ACCESS: usize = 3;

/// Whether `token` is an expiring login access token whose lifetime is over. Other tokens never
/// expire here.
pub fn access_token_expired(token: &str) -> bool {
    expired_with_prefix(token, ACCESS_PREFIX)
}

/// Whether `token`, of the form `<prefix><unix s>_<secret>`, has passed its expiry (an
/// unreadable expiry counts as passed); false for a token without `prefix`. Shared with the
/// OAuth provider's access tokens.
pub fn expired_with_prefix(token: &str, prefix: &str) -> bool {
    let Some(rest) = token.strip_prefix(prefix) else { return false };
    match rest.split_once('_').and_then(|(expiry, _)| expiry.parse::<u64>().ok()) {
        Some(expiry_s) => now_s() >= expiry_s,
        None => true,
    }
}

fn now_s() -> u64 {
    super::rooms::now_ms() / 1000
}

/// A new login session id (letters only: it is one field of a refresh token).
pub fn new_session_id() -> String {
    random_string(SESSION_ID_CHARS)
}

/// A new expiring access token and its lifetime in ms.
pub fn new_access_token(app: &App) -> (String, u64) {
    let lifetime_s = app.config.login.refreshable_access_token_lifetime_s.max(1);
    (format!("{ACCESS_PREFIX}{}_{}", now_s() + lifetime_s, super::oauth_records::random_secret()), lifetime_s * 1000)
}

fn refresh_token(session: &str, secret: &str) -> String {
    format!("{REFRESH_PREFIX}{session}_{secret}")
}

/// The login session a refresh token names, if it is one.
pub fn session_of_refresh(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(REFRESH_PREFIX)?;
    let (session, secret) = rest.split_at_checked(SESSION_ID_CHARS)?;
    (secret.starts_with('_') && session.chars().all(|c| c.is_ascii_alphabetic())).then_some(session)
}

/// A login session's refresh chain as stored under `refresh:<session>` (token hashes only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshSession {
    pub user_id: String,
    pub device_id: String,
    pub created_ms: u64,
    /// The refresh tokens (hashes), flat beside the other fields.
    #[serde(flatten)]
    pub chain: Chain,
    /// Hashes of the access tokens issued lately, newest last (bounded).
    pub access: Vec<String>,
    /// Set when a spent refresh token came back after the grace period: the chain leaked.
    #[serde(default)]
    pub revoked: bool,
}

impl RefreshSession {
    fn issued_access(&mut self, access_hash: String) {
        self.access.push(access_hash);
        if self.access.len() > MAX_SESSION_ACCESS {
            let excess = self.access.len() - MAX_SESSION_ACCESS;
            self.access.drain(..excess);
        }
    }
}

fn refresh_key(session: &str) -> String {
    format!("refresh:{session}")
}

fn to_bytes<T: Serialize>(value: &T) -> bytes::Bytes {
    serde_json::to_vec(value).unwrap_or_default().into()
}

/// Starts a session's chain; returns its first refresh token.
pub async fn begin(app: &App, user_id: &str, device_id: &str, session: &str, access_hash: &str) -> ApiResult<String> {
    let token = refresh_token(session, &super::oauth_records::random_secret());
    let record = RefreshSession {
        user_id: user_id.to_string(),
        device_id: device_id.to_string(),
        created_ms: super::rooms::now_ms(),
        chain: Chain::new(token_hash(&token)),
        access: vec![access_hash.to_string()],
        revoked: false,
    };
    app.store.kv().create(Bucket::Tokens, &refresh_key(session), to_bytes(&record)).await?;
    Ok(token)
}

pub async fn session(app: &App, session: &str) -> ApiResult<Option<RefreshSession>> {
    let stored = app.store.kv().get(Bucket::Tokens, &refresh_key(session)).await?;
    Ok(stored.and_then(|stored| serde_json::from_slice(&stored.value).ok()))
}

/// What a refresh did to the chain.
pub struct Rotation {
    pub outcome: Outcome,
    /// The refresh token to hand out (None: refused).
    pub refresh_token: Option<String>,
    /// The access tokens the new one replaces, to revoke: every one issued before, once a
    /// rotation shows where the client is; none for a successor handed out again (the client may
    /// hold the access token issued with it).
    pub replaced_access: Vec<String>,
}

/// Presents `presented` to its session's chain at `now_ms` and moves the chain on by one
/// compare-and-set, remembering `access_hash` as the session's newest access token when a
/// refresh token is handed out. A spent token after the grace period marks the chain revoked.
pub async fn rotate(app: &App, session: &str, presented: &str, access_hash: &str, grace_ms: u64) -> ApiResult<Rotation> {
    let presented_hash = token_hash(presented);
    let mut rotation = None;
    let outcome = app
        .store
        .kv()
        .modify(Bucket::Tokens, &refresh_key(session), |current| -> Result<Option<bytes::Bytes>, ()> {
            let Some(mut record) = current.and_then(|c| serde_json::from_slice::<RefreshSession>(c).ok()) else {
                rotation = Some(Rotation { outcome: Outcome::Invalid, refresh_token: None, replaced_access: Vec::new() });
                return Ok(None);
            };
            let now = super::rooms::now_ms();
            let outcome = if record.revoked { Outcome::Invalid } else { record.chain.outcome(&presented_hash, now, grace_ms) };
            let fresh_salt = super::oauth_records::random_secret();
            let token = record.chain.advance(outcome, presented, fresh_salt, now, |secret| refresh_token(session, secret));
            let Some(token) = token else {
                let revoke = outcome == Outcome::Reused;
                record.revoked |= revoke;
                rotation = Some(Rotation { outcome, refresh_token: None, replaced_access: Vec::new() });
                return Ok(revoke.then(|| to_bytes(&record)));
            };
            let replaced_access = if outcome == Outcome::Retry { Vec::new() } else { std::mem::take(&mut record.access) };
            record.issued_access(access_hash.to_string());
            rotation = Some(Rotation { outcome, refresh_token: Some(token), replaced_access });
            Ok(Some(to_bytes(&record)))
        })
        .await?;
    let _ = outcome;
    Ok(rotation.unwrap_or(Rotation { outcome: Outcome::Invalid, refresh_token: None, replaced_access: Vec::new() }))
}

/// Ends a session's chain: deletes its record and returns the access tokens it issued lately
/// (to revoke). Nothing when there is none.
pub async fn end(app: &App, session: &str) -> ApiResult<Vec<String>> {
    let Some(record) = self::session(app, session).await? else { return Ok(Vec::new()) };
    app.store.kv().delete(Bucket::Tokens, &refresh_key(session)).await?;
    Ok(record.access)
}

/// A login token as stored under `login:<hash>` in the grants bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginToken {
    pub user_id: String,
    pub expires_ms: u64,
    /// A random id of the login that spent it. Unique per attempt: the store counts an update
    /// that finds its own value already written as a retry that landed, so two logins writing
    /// the same "spent" record would both win.
    pub spent_by: Option<String>,
}

fn login_key(token: &str) -> String {
    format!("login:{}", token_hash(token))
}

/// Issues a single-use login token for `user_id`; returns it and its lifetime in ms.
pub async fn issue_login_token(app: &App, user_id: &str) -> ApiResult<(String, u64)> {
    let lifetime_ms = app.config.login.login_token_lifetime_s.max(1) * 1000;
    let token = super::oauth_records::random_secret();
    let record = LoginToken { user_id: user_id.to_string(), expires_ms: super::rooms::now_ms() + lifetime_ms, spent_by: None };
    app.store.kv().create(Bucket::OauthGrants, &login_key(&token), to_bytes(&record)).await?;
    Ok((token, lifetime_ms))
}

/// Spends a login token: the user it logs in, or None when it is unknown, expired or spent
/// (here or by a concurrent request at any node: one compare-and-set decides).
pub async fn spend_login_token(app: &App, token: &str) -> ApiResult<Option<String>> {
    if token.is_empty() || token.len() > 256 {
        return Ok(None);
    }
    let key = login_key(token);
    let Some(stored) = app.store.kv().get(Bucket::OauthGrants, &key).await? else { return Ok(None) };
    let Ok(record) = serde_json::from_slice::<LoginToken>(&stored.value) else { return Ok(None) };
    if record.spent_by.is_some() || record.expires_ms <= super::rooms::now_ms() {
        return Ok(None);
    }
    let spent = LoginToken { spent_by: Some(super::oauth_records::random_secret()), ..record.clone() };
    match app.store.kv().update(Bucket::OauthGrants, &key, to_bytes(&spent), stored.revision).await {
        Ok(_) => Ok(Some(record.user_id)),
        Err(KvError::WrongRevision(_)) => Ok(None),
        Err(other) => Err(other.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_tokens_carry_their_expiry() {
        assert!(!access_token_expired("hae_passwordlogin"));
        assert!(access_token_expired(&format!("{ACCESS_PREFIX}{}_abc", now_s() - 1)));
        assert!(!access_token_expired(&format!("{ACCESS_PREFIX}{}_abc", now_s() + 60)));
        assert!(access_token_expired(&format!("{ACCESS_PREFIX}garbage")));
    }

    #[test]
    fn refresh_tokens_name_their_session() {
        let session = new_session_id();
        let token = refresh_token(&session, "secret");
        assert_eq!(session_of_refresh(&token), Some(session.as_str()));
        assert_eq!(session_of_refresh("haes_short_x"), None);
        assert_eq!(session_of_refresh("haer_abcdefghijklmnop_x"), None);
        assert_eq!(session_of_refresh(&format!("{REFRESH_PREFIX}{}", "a".repeat(SESSION_ID_CHARS))), None);
        assert_eq!(session_of_refresh(&format!("{REFRESH_PREFIX}{}_x", "1".repeat(SESSION_ID_CHARS))), None);
    }

    #[test]
    fn the_record_stores_the_chain_flat() {
        let record = RefreshSession {
            user_id: "@a:x".into(),
            device_id: "D".into(),
            created_ms: 1,
            chain: Chain::new("h1".into()),
            access: vec!["a1".into()],
            revoked: false,
        };
        let stored = serde_json::to_value(&record).unwrap();
        assert_eq!(stored["current"], "h1");
        let back: RefreshSession = serde_json::from_value(stored).unwrap();
        assert_eq!(back, record);
    }
}
