//! Asynchronous uploads: `POST /media/v1/create` reserves a media id (an `mxc://` URI a client
//! may send in an event before the file exists), `PUT /media/v3/upload/{serverName}/{mediaId}`
//! fills it once. Reservations are records in the replicated `meta` bucket, so any node in any
//! DC takes the upload: `("pending_media", media id)` with its owner and expiry, and
//! `("pending_media_by_user", user, media id)` to count a user's open reservations. An unused id
//! expires after [`UNUSED_LIFETIME_MS`]; expired records are removed when next met.

use bytes::Bytes;
use haetae_store::kv::{KeyPath, KvError};
use haetae_store::{Bucket, MediaMeta};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::App;
use super::rooms::random_string;
use crate::error::{ApiResult, MatrixError};

/// How long a reserved media id waits for its file, milliseconds (a day, as the spec suggests).
pub const UNUSED_LIFETIME_MS: u64 = 24 * 3600 * 1000;
/// Most reservations one user may hold open at once.
pub const MAX_PENDING_PER_USER: usize = 10;

const PENDING: &str = "pending_media";
const PENDING_BY_USER: &str = "pending_media_by_user";

#[derive(Serialize, Deserialize)]
struct Reservation {
    user_id: String,
    expires_at_ms: u64,
    /// Set while the file is being stored: a second upload to the same id is refused.
    #[serde(default)]
    uploading: bool,
    /// Who set `uploading`: a random id, so that two uploads racing for the id never write the
    /// same bytes (the store counts a compare-and-set that finds its own bytes already there as
    /// a retry that landed, and both would be told they took the id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    claim: Option<String>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// `POST /_matrix/media/v1/create`.
pub async fn create(app: &App, user_id: &str) -> ApiResult<Value> {
    app.limit_writes(user_id)?;
    let kv = app.store.kv();
    let now = now_ms();
    let mine = kv.list(Bucket::Meta, &KeyPath::new(&[PENDING_BY_USER, user_id]), MAX_PENDING_PER_USER * 4, true).await?;
    let mut open = 0;
    for (segments, versioned) in mine.entries {
        let expires_at: u64 =
            serde_json::from_slice::<Value>(&versioned.value).ok().and_then(|v| v["expires_at_ms"].as_u64()).unwrap_or(0);
        if expires_at > now {
            open += 1;
        } else if let Some(media_id) = segments.first() {
            forget(app, user_id, media_id).await;
        }
    }
    if open >= MAX_PENDING_PER_USER {
        return Err(MatrixError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "M_LIMIT_EXCEEDED",
            format!("at most {MAX_PENDING_PER_USER} media ids may wait for their upload"),
        ));
    }
    let media_id = random_string(24);
    let expires_at_ms = now + UNUSED_LIFETIME_MS;
    let record =
        serde_json::to_vec(&Reservation { user_id: user_id.to_string(), expires_at_ms, uploading: false, claim: None }).unwrap_or_default();
    kv.create(Bucket::Meta, &KeyPath::new(&[PENDING, &media_id]), record.clone().into()).await?;
    kv.put(Bucket::Meta, &KeyPath::new(&[PENDING_BY_USER, user_id, &media_id]), record.into()).await?;
    Ok(json!({ "content_uri": format!("mxc://{}/{media_id}", app.config.server_name), "unused_expires_at": expires_at_ms }))
}

async fn forget(app: &App, user_id: &str, media_id: &str) {
    let kv = app.store.kv();
    if let Err(error) = kv.delete(Bucket::Meta, &KeyPath::new(&[PENDING, media_id])).await {
        tracing::debug!(%error, "could not remove a media reservation");
    }
    if let Err(error) = kv.delete(Bucket::Meta, &KeyPath::new(&[PENDING_BY_USER, user_id, media_id])).await {
        tracing::debug!(%error, "could not remove a media reservation");
    }
}

fn valid_media_id(media_id: &str) -> bool {
    !media_id.is_empty() && media_id.len() <= 255 && media_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// `PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`: the file of a reserved id.
pub async fn upload(app: &App, user_id: &str, server: &str, media_id: &str, bytes: Bytes, meta: MediaMeta) -> ApiResult<Value> {
    app.limit_writes(user_id)?;
    let not_found = || MatrixError::not_found("No such media id waits for an upload");
    if server != app.config.server_name || !valid_media_id(media_id) {
        return Err(not_found());
    }
    let kv = app.store.kv();
    let key = KeyPath::new(&[PENDING, media_id]);
    let cannot_overwrite =
        || MatrixError::new(axum::http::StatusCode::CONFLICT, "M_CANNOT_OVERWRITE_MEDIA", "This media id already has its file");
    let Some(stored) = kv.get(Bucket::Meta, &key).await? else {
        return Err(if app.store.media().get(media_id).await?.is_some() { cannot_overwrite() } else { not_found() });
    };
    let mut reservation: Reservation = serde_json::from_slice(&stored.value).map_err(|_| not_found())?;
    if reservation.user_id != user_id {
        return Err(MatrixError::forbidden("This media id was reserved by someone else"));
    }
    if reservation.uploading {
        return Err(cannot_overwrite());
    }
    if reservation.expires_at_ms <= now_ms() {
        forget(app, user_id, media_id).await;
        return Err(not_found());
    }
    // Taken by compare-and-set: of two uploads racing for the id, one stores its file.
    reservation.uploading = true;
    reservation.claim = Some(format!("{:016x}", rand::random::<u64>()));
    let taken = serde_json::to_vec(&reservation).unwrap_or_default();
    match kv.update(Bucket::Meta, &key, taken.into(), stored.revision).await {
        Ok(_) => {}
        Err(KvError::WrongRevision(_)) => return Err(cannot_overwrite()),
        Err(error) => return Err(error.into()),
    }
    let length = bytes.len();
    if let Err(error) = app.store.media().put(media_id, bytes, &meta).await {
        // Give the id back so the client can retry.
        reservation.uploading = false;
        reservation.claim = None;
        let record = serde_json::to_vec(&reservation).unwrap_or_default();
        let _ = kv.put(Bucket::Meta, &key, record.into()).await;
        return Err(error.into());
    }
    super::media::record_upload(app, user_id, media_id, length, &meta).await?;
    forget(app, user_id, media_id).await;
    Ok(json!({}))
}

/// Whether `media_id` is reserved and waiting for its file (downloads answer
/// `M_NOT_YET_UPLOADED` for it rather than "not found").
pub async fn is_pending(app: &App, media_id: &str) -> bool {
    if !valid_media_id(media_id) {
        return false;
    }
    match app.store.kv().get(Bucket::Meta, &KeyPath::new(&[PENDING, media_id])).await {
        Ok(Some(stored)) => serde_json::from_slice::<Reservation>(&stored.value).is_ok_and(|r| r.expires_at_ms > now_ms()),
        _ => false,
    }
}
