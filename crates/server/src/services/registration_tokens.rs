//! Registration tokens: what an administrator hands out so that people may register when
//! `registration.requires_token` is on (the `m.login.registration_token` stage), managed on
//! Synapse's admin API paths and shapes.
//!
//! One record per token in the replicated `meta` bucket, `("registration_token", token)`, so every
//! node of every DC sees the same tokens and counts. A registration takes a use by compare-and-set
//! (`pending` + 1, refused once `pending + completed` reaches `uses_allowed`), then settles it
//! (`pending` - 1, and `completed` + 1 if the account was created): two registrations racing
//! through two DCs for the last use of a token cannot both get it. A node that dies between
//! taking and settling a use leaves it pending, which keeps the token on the safe side (an
//! administrator sees the pending use and may raise `uses_allowed`).

use haetae_store::Bucket;
use haetae_store::kv::{KeyPath, KvError};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::App;
use super::rooms::now_ms;
use crate::error::{ApiResult, MatrixError};

/// The prefix of the records in the `meta` bucket.
const TOKENS: &str = "registration_token";
/// Most tokens a deployment keeps (a listing reads them all).
pub const MAX_TOKENS: usize = 10_000;
/// Longest token, characters (Synapse's limit too).
const MAX_TOKEN_CHARS: usize = 64;
/// Length of a generated token when the request names none, characters.
const DEFAULT_TOKEN_CHARS: usize = 16;
/// Attempts at a generated token that is not taken yet.
const MAX_GENERATE_ATTEMPTS: usize = 8;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct TokenRecord {
    token: String,
    uses_allowed: Option<u64>,
    pending: u64,
    completed: u64,
    expiry_time: Option<u64>,
    /// A fresh random value on every write. The store counts a compare-and-set that lost its
    /// race as done when the key already holds the bytes it meant to write (a retry whose first
    /// attempt landed); two registrations taking the same use would write the same counts, so
    /// without it both would be told they took it.
    #[serde(default)]
    write_id: String,
}

impl TokenRecord {
    /// Whether a registration may still use the token at `now_ms`.
    fn valid(&self, now_ms: u64) -> bool {
        self.expiry_time.is_none_or(|expiry| expiry > now_ms)
            && self.uses_allowed.is_none_or(|allowed| self.pending + self.completed < allowed)
    }

    /// The record as stored, marked as this write's own.
    fn to_bytes(&self) -> bytes::Bytes {
        let written = TokenRecord { write_id: super::rooms::random_string(16), ..self.clone() };
        serde_json::to_vec(&written).unwrap_or_default().into()
    }

    /// The admin API's view (Synapse's shape).
    fn to_json(&self) -> Value {
        json!({
            "token": self.token,
            "uses_allowed": self.uses_allowed,
            "pending": self.pending,
            "completed": self.completed,
            "expiry_time": self.expiry_time,
        })
    }
}

fn key(token: &str) -> KeyPath {
    KeyPath::new(&[TOKENS, token])
}

/// Tokens are at most 64 of `A-Z a-z 0-9 . _ ~ -` (the spec's alphabet for this stage).
fn well_formed(token: &str) -> bool {
    !token.is_empty()
        && token.chars().count() <= MAX_TOKEN_CHARS
        && token.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '~' | '-'))
}

fn generate(length: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-";
    let mut rng = rand::rng();
    (0..length).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

async fn load(app: &App, token: &str) -> ApiResult<Option<TokenRecord>> {
    if !well_formed(token) {
        return Ok(None);
    }
    let stored = app.store.kv().get(Bucket::Meta, &key(token)).await?;
    Ok(stored.and_then(|stored| serde_json::from_slice(&stored.value).ok()))
}

/// A field of a request body that may be absent (None), null (Some(None)) or a count or time.
fn optional_number(body: &Map<String, Value>, field: &str) -> ApiResult<Option<Option<u64>>> {
    match body.get(field) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(value) => value
            .as_u64()
            .map(|n| Some(Some(n)))
            .ok_or_else(|| MatrixError::invalid_param(format!("{field} must be a non-negative integer or null"))),
    }
}

fn body_object(body: &Value) -> ApiResult<&Map<String, Value>> {
    body.as_object().ok_or_else(|| MatrixError::bad_json("the body must be a JSON object"))
}

fn expiry(body: &Map<String, Value>) -> ApiResult<Option<Option<u64>>> {
    let expiry = optional_number(body, "expiry_time")?;
    if let Some(Some(time)) = expiry
        && time <= now_ms()
    {
        return Err(MatrixError::invalid_param("expiry_time must be in the future"));
    }
    Ok(expiry)
}

/// # GET /_synapse/admin/v1/registration_tokens ?valid=true|false
pub async fn list(app: &App, valid: Option<&str>) -> ApiResult<Value> {
    let wanted = match valid {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return Err(MatrixError::invalid_param("valid must be true or false")),
    };
    let listing = app.store.kv().list(Bucket::Meta, &KeyPath::new(&[TOKENS]), MAX_TOKENS, true).await?;
    let now = now_ms();
    let mut tokens: Vec<TokenRecord> = listing
        .entries
        .iter()
        .filter_map(|(_, stored)| serde_json::from_slice::<TokenRecord>(&stored.value).ok())
        .filter(|record| wanted.is_none_or(|wanted| record.valid(now) == wanted))
        .collect();
    tokens.sort_by(|a, b| a.token.cmp(&b.token));
    Ok(json!({ "registration_tokens": tokens.iter().map(TokenRecord::to_json).collect::<Vec<_>>() }))
}

/// # POST /_synapse/admin/v1/registration_tokens/new
/// `{token?, uses_allowed?, expiry_time?, length?}`: a token given is taken as it is, otherwise
/// one of `length` characters (16) is generated.
pub async fn create(app: &App, body: &Value) -> ApiResult<Value> {
    let body = body_object(body)?;
    let uses_allowed = optional_number(body, "uses_allowed")?.flatten();
    let expiry_time = expiry(body)?.flatten();
    let given = match body.get("token") {
        None | Some(Value::Null) => None,
        Some(Value::String(token)) if well_formed(token) => Some(token.clone()),
        Some(_) => {
            return Err(MatrixError::invalid_param(format!("token must be 1 to {MAX_TOKEN_CHARS} of A-Z a-z 0-9 . _ ~ -")));
        }
    };
    let length = match optional_number(body, "length")?.flatten() {
        None => DEFAULT_TOKEN_CHARS,
        Some(length) if (1..=MAX_TOKEN_CHARS as u64).contains(&length) => length as usize,
        Some(_) => return Err(MatrixError::invalid_param(format!("length must be between 1 and {MAX_TOKEN_CHARS}"))),
    };
    let existing = app.store.kv().list(Bucket::Meta, &KeyPath::new(&[TOKENS]), MAX_TOKENS, false).await?;
    if existing.entries.len() >= MAX_TOKENS {
        return Err(MatrixError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "M_LIMIT_EXCEEDED",
            format!("at most {MAX_TOKENS} registration tokens"),
        ));
    }
    let attempts = if given.is_some() { 1 } else { MAX_GENERATE_ATTEMPTS };
    for _ in 0..attempts {
        let token = given.clone().unwrap_or_else(|| generate(length));
        let record = TokenRecord { token: token.clone(), uses_allowed, pending: 0, completed: 0, expiry_time, write_id: String::new() };
        match app.store.kv().create(Bucket::Meta, &key(&token), record.to_bytes()).await {
            Ok(_) => return Ok(record.to_json()),
            Err(KvError::Exists) => continue,
            Err(error) => return Err(error.into()),
        }
    }
    Err(MatrixError::invalid_param("This registration token already exists"))
}

fn not_found() -> MatrixError {
    MatrixError::not_found("No such registration token")
}

/// # GET /_synapse/admin/v1/registration_tokens/{token}
pub async fn get(app: &App, token: &str) -> ApiResult<Value> {
    load(app, token).await?.map(|record| record.to_json()).ok_or_else(not_found)
}

/// # PUT /_synapse/admin/v1/registration_tokens/{token}
/// `{uses_allowed?, expiry_time?}`: a field left out stays, null removes the limit.
pub async fn update(app: &App, token: &str, body: &Value) -> ApiResult<Value> {
    let body = body_object(body)?;
    let uses_allowed = optional_number(body, "uses_allowed")?;
    let expiry_time = expiry(body)?;
    if !well_formed(token) {
        return Err(not_found());
    }
    let changed = app
        .store
        .kv()
        .modify(Bucket::Meta, &key(token), |current| {
            let mut record: TokenRecord = current.and_then(|c| serde_json::from_slice(c).ok()).ok_or(())?;
            if let Some(uses_allowed) = uses_allowed {
                record.uses_allowed = uses_allowed;
            }
            if let Some(expiry_time) = expiry_time {
                record.expiry_time = expiry_time;
            }
            Ok(Some(record.to_bytes()))
        })
        .await?
        .map_err(|()| not_found())?;
    serde_json::from_slice::<TokenRecord>(&changed).map(|record| record.to_json()).map_err(|_| not_found())
}

/// # DELETE /_synapse/admin/v1/registration_tokens/{token}
pub async fn delete(app: &App, token: &str) -> ApiResult<Value> {
    if load(app, token).await?.is_none() {
        return Err(not_found());
    }
    app.store.kv().delete(Bucket::Meta, &key(token)).await?;
    Ok(json!({}))
}

/// Whether a registration could use `token` now (the validity endpoint, and a first look before
/// a registration hashes its password).
pub async fn is_valid(app: &App, token: &str) -> ApiResult<bool> {
    Ok(load(app, token).await?.is_some_and(|record| record.valid(now_ms())))
}

/// Takes one use of `token` for a registration under way (compare-and-set); false when the
/// token does not exist, expired or has no use left.
pub async fn take_use(app: &App, token: &str) -> ApiResult<bool> {
    if !well_formed(token) {
        return Ok(false);
    }
    let now = now_ms();
    let taken = app
        .store
        .kv()
        .modify(Bucket::Meta, &key(token), |current| {
            let mut record: TokenRecord = current.and_then(|c| serde_json::from_slice(c).ok()).ok_or(())?;
            if !record.valid(now) {
                return Err(());
            }
            record.pending += 1;
            Ok(Some(record.to_bytes()))
        })
        .await?;
    Ok(taken.is_ok())
}

/// Settles a use taken by [`take_use`]: it becomes a completed registration, or is given back.
pub async fn settle_use(app: &App, token: &str, registered: bool) -> ApiResult<()> {
    let settled = app
        .store
        .kv()
        .modify(Bucket::Meta, &key(token), |current| -> Result<_, ()> {
            // A token deleted meanwhile has nothing to settle.
            let Some(mut record) = current.and_then(|c| serde_json::from_slice::<TokenRecord>(c).ok()) else { return Ok(None) };
            record.pending = record.pending.saturating_sub(1);
            if registered {
                record.completed += 1;
            }
            Ok(Some(record.to_bytes()))
        })
        .await;
    if let Err(error) = settled {
        // The use stays pending: the token errs on the side of fewer registrations.
        tracing::warn!(%error, registered, "could not settle a registration token use");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_valid_until_it_expires_or_its_uses_are_taken() {
        let record = TokenRecord {
            token: "t".into(),
            uses_allowed: Some(2),
            pending: 1,
            completed: 0,
            expiry_time: Some(1000),
            write_id: String::new(),
        };
        assert!(record.valid(999));
        assert!(!record.valid(1000), "expired");
        assert!(!TokenRecord { pending: 1, completed: 1, ..record.clone() }.valid(0), "every use taken");
        assert!(TokenRecord { uses_allowed: None, expiry_time: None, pending: 50, ..record }.valid(u64::MAX));
    }

    #[test]
    fn tokens_use_the_spec_alphabet() {
        assert!(well_formed("abc-DEF_1.2~"));
        assert!(!well_formed(""));
        assert!(!well_formed("with space"));
        assert!(!well_formed(&"a".repeat(65)));
        assert!(well_formed(&generate(64)));
    }
}
