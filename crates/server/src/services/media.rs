//! The media repository: uploads into the replicated object store, downloads, thumbnails
//! (rendered once, then kept in the object store beside the original).

use bytes::Bytes;
use haetae_store::MediaMeta;

use super::App;
use super::rooms::random_string;
use crate::error::{ApiResult, MatrixError};

/// Stores an upload and returns its `mxc://` URI.
pub async fn upload(app: &App, user_id: &str, bytes: Bytes, meta: MediaMeta) -> ApiResult<String> {
    app.limit_writes(user_id)?;
    let media_id = random_string(24);
    app.store.media().put(&media_id, bytes, &meta).await?;
    Ok(format!("mxc://{}/{media_id}", app.config.server_name))
}

/// A stored file of this server.
pub async fn fetch(app: &App, server: &str, media_id: &str) -> ApiResult<(Bytes, MediaMeta)> {
    if server != app.config.server_name {
        return Err(MatrixError::not_found("Remote media is not available (no federation)"));
    }
    if media_id.is_empty() || media_id.len() > 255 || !media_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(MatrixError::not_found("Media not found"));
    }
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
    if let Err(error) = app.store.media().put(&cache_name, png.clone(), &thumb_meta).await {
        tracing::warn!(%error, "could not cache a thumbnail");
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
