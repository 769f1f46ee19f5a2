//! The media repository: uploads into the replicated object store, downloads, thumbnails
//! (rendered once, then kept in the object store beside the original), and what administrators
//! do with media (list a user's, quarantine, delete).
//!
//! Every upload gets a record in the replicated `meta` bucket, `("media", media id)` (uploader,
//! type, size, time, quarantine, deletion, cached thumbnails), and a copy under
//! `("user_media", user, media id)` to list a user's media. Downloads and thumbnails read the
//! record first: quarantined or deleted media answer 404 at every node. Files uploaded before
//! records existed have none and are served as before.

use bytes::Bytes;
use haetae_store::kv::KeyPath;
use haetae_store::{Bucket, MediaMeta};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::App;
use super::rooms::{now_ms, random_string};
use crate::error::{ApiResult, MatrixError};

const MEDIA: &str = "media";
const USER_MEDIA: &str = "user_media";
/// Most media one user's listing reads.
pub const MAX_LISTED_MEDIA: usize = 100_000;
/// Most cached thumbnails a record remembers (to remove them with the file); one past it stays in
/// the object store unreachable (its file's record refuses it).
const MAX_RECORDED_THUMBNAILS: usize = 64;
/// Largest page of a media listing.
const MAX_MEDIA_PAGE: usize = 1000;

/// What the `meta` bucket records of an upload.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct MediaRecord {
    /// The uploader (empty: a file uploaded before records existed, quarantined by id).
    user_id: String,
    media_id: String,
    media_type: Option<String>,
    media_length: u64,
    upload_name: Option<String>,
    created_ts: u64,
    quarantined_by: Option<String>,
    #[serde(default)]
    deleted: bool,
    /// Names of the thumbnails cached in the object store.
    #[serde(default)]
    thumbnails: Vec<String>,
}

impl MediaRecord {
    fn to_bytes(&self) -> Bytes {
        serde_json::to_vec(self).unwrap_or_default().into()
    }

    /// The admin API's view (Synapse's shape).
    fn to_json(&self) -> Value {
        json!({
            "media_id": self.media_id,
            "media_type": self.media_type,
            "media_length": self.media_length,
            "upload_name": self.upload_name,
            "created_ts": self.created_ts,
            "last_access_ts": null,
            "quarantined_by": self.quarantined_by,
            "safe_from_quarantine": false,
        })
    }
}

fn record_key(media_id: &str) -> KeyPath {
    KeyPath::new(&[MEDIA, media_id])
}

fn user_key(user_id: &str, media_id: &str) -> KeyPath {
    KeyPath::new(&[USER_MEDIA, user_id, media_id])
}

async fn load_record(app: &App, media_id: &str) -> ApiResult<Option<MediaRecord>> {
    let stored = app.store.kv().get(Bucket::Meta, &record_key(media_id)).await?;
    Ok(stored.and_then(|stored| serde_json::from_slice(&stored.value).ok()))
}

/// Writes both copies of a record (the per-user one only while the upload is listed).
async fn store_record(app: &App, record: &MediaRecord) -> ApiResult<()> {
    let kv = app.store.kv();
    let main_key = record_key(&record.media_id);
    let main = kv.put(Bucket::Meta, &main_key, record.to_bytes());
    let per_user = user_key(&record.user_id, &record.media_id);
    // Both at once: an upload waits for one round trip, not two.
    let copy = async {
        match (record.user_id.is_empty(), record.deleted) {
            (true, _) => Ok(()),
            (false, true) => kv.delete(Bucket::Meta, &per_user).await,
            (false, false) => kv.put(Bucket::Meta, &per_user, record.to_bytes()).await.map(|_| ()),
        }
    };
    futures::future::try_join(main, copy).await?;
    Ok(())
}

/// Records a stored upload (both upload paths call it once the file is in the object store).
pub(super) async fn record_upload(app: &App, user_id: &str, media_id: &str, length: usize, meta: &MediaMeta) -> ApiResult<()> {
    let record = MediaRecord {
        user_id: user_id.to_string(),
        media_id: media_id.to_string(),
        media_type: meta.content_type.clone(),
        media_length: length as u64,
        upload_name: meta.filename.clone(),
        created_ts: now_ms(),
        ..MediaRecord::default()
    };
    store_record(app, &record).await
}

/// Stores an upload and returns its `mxc://` URI.
pub async fn upload(app: &App, user_id: &str, bytes: Bytes, meta: MediaMeta) -> ApiResult<String> {
    app.limit_writes(user_id)?;
    let media_id = random_string(24);
    let length = bytes.len();
    app.store.media().put(&media_id, bytes, &meta).await?;
    record_upload(app, user_id, &media_id, length, &meta).await?;
    Ok(format!("mxc://{}/{media_id}", app.config.server_name))
}

/// Quarantined and deleted media are not served (404, as Synapse answers).
async fn refuse_withdrawn(app: &App, media_id: &str) -> ApiResult<()> {
    match load_record(app, media_id).await? {
        Some(record) if record.deleted || record.quarantined_by.is_some() => Err(MatrixError::not_found("Media not found")),
        _ => Ok(()),
    }
}

fn valid_media_id(media_id: &str) -> bool {
    !media_id.is_empty() && media_id.len() <= 255 && media_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn local_media(app: &App, server: &str, media_id: &str) -> ApiResult<()> {
    if server != app.config.server_name {
        return Err(MatrixError::invalid_param("Only media of this server can be changed (no federation)"));
    }
    if !valid_media_id(media_id) {
        return Err(MatrixError::not_found("Media not found"));
    }
    Ok(())
}

/// A page of a media listing, as the query string gives it.
#[derive(Deserialize)]
pub struct MediaPage {
    from: Option<String>,
    limit: Option<String>,
    /// `f` (oldest first, the default) or `b`.
    dir: Option<String>,
}

/// # GET /_synapse/admin/v1/users/{userId}/media ?from, limit, dir
pub async fn user_media(app: &App, user_id: &str, page: MediaPage) -> ApiResult<Value> {
    let number = |text: &Option<String>, default: usize| match text {
        Some(text) => text.parse::<usize>().map_err(|_| MatrixError::invalid_param("from and limit are numbers")),
        None => Ok(default),
    };
    let (from, limit) = (number(&page.from, 0)?, number(&page.limit, 100)?.clamp(1, MAX_MEDIA_PAGE));
    let backwards = match page.dir.as_deref() {
        None | Some("f") => false,
        Some("b") => true,
        Some(_) => return Err(MatrixError::invalid_param("dir must be f or b")),
    };
    if haetae_matrix::ids::server_name(user_id) != Some(app.config.server_name.as_str()) {
        return Err(MatrixError::invalid_param("Can only look up local users"));
    }
    let localpart = haetae_matrix::ids::localpart(user_id).unwrap_or_default();
    if super::accounts::load_account(app, localpart).await?.is_none() {
        return Err(MatrixError::not_found("User not found"));
    }
    let listing = app.store.kv().list(Bucket::Meta, &KeyPath::new(&[USER_MEDIA, user_id]), MAX_LISTED_MEDIA, true).await?;
    let mut records: Vec<MediaRecord> =
        listing.entries.iter().filter_map(|(_, stored)| serde_json::from_slice(&stored.value).ok()).collect();
    records.sort_by(|a, b| (a.created_ts, &a.media_id).cmp(&(b.created_ts, &b.media_id)));
    if backwards {
        records.reverse();
    }
    let total = records.len();
    let media: Vec<Value> = records.iter().skip(from).take(limit).map(MediaRecord::to_json).collect();
    let mut answer = json!({ "media": media, "total": total });
    if from + limit < total {
        answer["next_token"] = json!(from + limit);
    }
    Ok(answer)
}

/// # POST /_synapse/admin/v1/media/quarantine/{serverName}/{mediaId} (and `unquarantine`)
pub async fn set_quarantine(app: &App, admin: &str, server: &str, media_id: &str, quarantined: bool) -> ApiResult<Value> {
    local_media(app, server, media_id)?;
    let mut record = match load_record(app, media_id).await? {
        Some(record) => record,
        // A file from before records existed (or none at all: quarantined before it exists).
        None => MediaRecord { media_id: media_id.to_string(), ..MediaRecord::default() },
    };
    record.quarantined_by = quarantined.then(|| admin.to_string());
    store_record(app, &record).await?;
    tracing::info!(%admin, %media_id, quarantined, "admin changed a media's quarantine");
    Ok(json!({}))
}

/// # DELETE /_synapse/admin/v1/media/{serverName}/{mediaId}
/// Removes the file and its cached thumbnails from the object store; the record stays, marked
/// deleted, so no node serves a copy a lagging replica might still hold.
pub async fn delete(app: &App, admin: &str, server: &str, media_id: &str) -> ApiResult<Value> {
    local_media(app, server, media_id)?;
    let record = load_record(app, media_id).await?;
    let stored = app.store.media().exists(media_id).await?;
    let mut record = match record {
        Some(record) if !record.deleted => record,
        Some(_) => return Err(MatrixError::not_found("Media not found")),
        None if stored => MediaRecord { media_id: media_id.to_string(), ..MediaRecord::default() },
        None => return Err(MatrixError::not_found("Media not found")),
    };
    record.deleted = true;
    // Marked first: from here on no node serves it, whatever the object store still holds.
    store_record(app, &record).await?;
    app.store.media().delete(media_id).await?;
    for thumbnail in &record.thumbnails {
        app.store.media().delete(thumbnail).await?;
    }
    tracing::info!(%admin, %media_id, "admin deleted a media file");
    Ok(json!({ "deleted_media": [media_id], "total": 1 }))
}

/// Remembers a cached thumbnail's name in its file's record, so deleting the file removes it.
async fn record_thumbnail(app: &App, media_id: &str, name: &str) {
    let changed = app
        .store
        .kv()
        .modify(Bucket::Meta, &record_key(media_id), |current| -> Result<_, ()> {
            let Some(mut record) = current.and_then(|c| serde_json::from_slice::<MediaRecord>(c).ok()) else { return Ok(None) };
            if record.thumbnails.len() >= MAX_RECORDED_THUMBNAILS || record.thumbnails.iter().any(|t| t == name) {
                return Ok(None);
            }
            record.thumbnails.push(name.to_string());
            Ok(Some(record.to_bytes()))
        })
        .await;
    if let Err(error) = changed {
        tracing::debug!(%error, "could not record a cached thumbnail");
    }
}

/// A stored file of this server.
pub async fn fetch(app: &App, server: &str, media_id: &str) -> ApiResult<(Bytes, MediaMeta)> {
    if server != app.config.server_name {
        return Err(MatrixError::not_found("Remote media is not available (no federation)"));
    }
    if !valid_media_id(media_id) {
        return Err(MatrixError::not_found("Media not found"));
    }
    refuse_withdrawn(app, media_id).await?;
    match app.store.media().get(media_id).await? {
        Some(found) => Ok(found),
        None if super::media_pending::is_pending(app, media_id).await => Err(MatrixError::new(
            axum::http::StatusCode::GATEWAY_TIMEOUT,
            "M_NOT_YET_UPLOADED",
            "The media id is reserved and its file not uploaded yet",
        )),
        None => Err(MatrixError::not_found("Media not found")),
    }
}

/// What a client asked a thumbnail to be.
pub struct ThumbnailSpec {
    pub width: u32,
    pub height: u32,
    pub crop: bool,
}

/// Largest thumbnail edge we produce, pixels.
pub const MAX_THUMBNAIL_EDGE: u32 = 1600;
/// Largest source image we decode, pixels (guards against decompression bombs).
const MAX_SOURCE_PIXELS: u64 = 40_000_000;

/// A thumbnail of a stored file: from the cache of thumbnails, rendered, or (not an image we can
/// read) the original.
pub async fn thumbnail(app: &App, server: &str, media_id: &str, spec: ThumbnailSpec) -> ApiResult<(Bytes, MediaMeta)> {
    let ThumbnailSpec { width, height, crop } = spec;
    let cache_name = format!("thumb-{media_id}-{width}x{height}-{}", if crop { "crop" } else { "scale" });
    if valid_media_id(media_id) {
        refuse_withdrawn(app, media_id).await?;
    }
    if let Some(found) = app.store.media().get(&cache_name).await? {
        return Ok(found);
    }
    let (bytes, meta) = fetch(app, server, media_id).await?;
    let original = bytes.clone();
    let rendered = tokio::task::spawn_blocking(move || render_thumbnail(&bytes, width, height, crop))
        .await
        .map_err(MatrixError::unavailable)?;
    let Some(png) = rendered else {
        return Ok((original, meta));
    };
    let thumb_meta = MediaMeta { content_type: Some("image/png".into()), filename: None };
    match app.store.media().put(&cache_name, png.clone(), &thumb_meta).await {
        Ok(()) => record_thumbnail(app, media_id, &cache_name).await,
        Err(error) => tracing::warn!(%error, "could not cache a thumbnail"),
    }
    Ok((png, thumb_meta))
}

fn render_thumbnail(bytes: &[u8], width: u32, height: u32, crop: bool) -> Option<Bytes> {
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format().ok()?;
    let (source_width, source_height) = reader.into_dimensions().ok()?;
    if u64::from(source_width) * u64::from(source_height) > MAX_SOURCE_PIXELS {
        return None;
    }
    let image = image::load_from_memory(bytes).ok()?;
    let thumbnail = if crop {
        image.resize_to_fill(width, height, image::imageops::FilterType::Triangle)
    } else if source_width <= width && source_height <= height {
        image
    } else {
        image.thumbnail(width, height)
    };
    let mut out = std::io::Cursor::new(Vec::new());
    thumbnail.write_to(&mut out, image::ImageFormat::Png).ok()?;
    Some(Bytes::from(out.into_inner()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbnails_are_real_images_of_the_asked_size() {
        let source = image::RgbImage::from_fn(64, 32, |x, _| image::Rgb([x as u8 * 4, 0, 0]));
        let mut png = std::io::Cursor::new(Vec::new());
        image::DynamicImage::ImageRgb8(source).write_to(&mut png, image::ImageFormat::Png).unwrap();
        let thumb = render_thumbnail(png.get_ref(), 16, 16, true).unwrap();
        let decoded = image::load_from_memory(&thumb).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (16, 16));
        let scaled = image::load_from_memory(&render_thumbnail(png.get_ref(), 16, 16, false).unwrap()).unwrap();
        assert_eq!((scaled.width(), scaled.height()), (16, 8));
        assert!(render_thumbnail(b"not an image", 16, 16, false).is_none());
    }
}
