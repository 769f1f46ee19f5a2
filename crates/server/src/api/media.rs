//! Media: uploads into the replicated object store, downloads, real thumbnails.
//!
//! # POST /_matrix/media/v3/upload
//! # GET  /_matrix/client/v1/media/download/{serverName}/{mediaId}[/{fileName}]
//! # GET  /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}
//! # GET  /_matrix/client/v1/media/config
//! # GET  /_matrix/media/v3/download/..., /thumbnail/..., /config (legacy, unauthenticated)

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use haetae_store::MediaMeta;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::{App, AppState, Caller};
use crate::error::{ApiResult, MatrixError};
use crate::rooms::random_string;

pub fn routes(router: Router<AppState>) -> Router<AppState> {
    let mut router = router;
    for prefix in ["/_matrix/media/v3", "/_matrix/media/r0"] {
        router = router
            .route(&format!("{prefix}/upload"), post(upload))
            .route(&format!("{prefix}/config"), get(config))
            .route(&format!("{prefix}/download/{{server}}/{{media_id}}"), get(download_legacy))
            .route(&format!("{prefix}/download/{{server}}/{{media_id}}/{{file_name}}"), get(download_legacy_named))
            .route(&format!("{prefix}/thumbnail/{{server}}/{{media_id}}"), get(thumbnail_legacy));
    }
    router
        .route("/_matrix/client/v1/media/config", get(config_authenticated))
        .route("/_matrix/client/v1/media/download/{server}/{media_id}", get(download))
        .route("/_matrix/client/v1/media/download/{server}/{media_id}/{file_name}", get(download_named))
        .route("/_matrix/client/v1/media/thumbnail/{server}/{media_id}", get(thumbnail))
}

#[derive(Deserialize)]
struct UploadQuery {
    filename: Option<String>,
}

async fn upload(State(app): State<AppState>, caller: Caller, Query(query): Query<UploadQuery>, request: Request) -> ApiResult<Json<Value>> {
    app.limit_writes(&caller.user_id)?;
    let limit = app.config.limits.max_upload_bytes as usize;
    let content_type = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
    let bytes = axum::body::to_bytes(request.into_body(), limit)
        .await
        .map_err(|error| crate::app::body_error(&error, format!("upload larger than {limit} bytes")))?;
    let media_id = random_string(24);
    let meta = MediaMeta { content_type, filename: query.filename };
    app.store.media().put(&media_id, bytes, &meta).await?;
    Ok(Json(json!({ "content_uri": format!("mxc://{}/{media_id}", app.config.server_name) })))
}

fn config_body(app: &App) -> Json<Value> {
    Json(json!({ "m.upload.size": app.config.limits.max_upload_bytes }))
}

async fn config(State(app): State<AppState>) -> Json<Value> {
    config_body(&app)
}

async fn config_authenticated(State(app): State<AppState>, _caller: Caller) -> Json<Value> {
    config_body(&app)
}

async fn fetch(app: &App, server: &str, media_id: &str) -> ApiResult<(Bytes, MediaMeta)> {
    if server != app.config.server_name {
        return Err(MatrixError::not_found("Remote media is not available (no federation)"));
    }
    if media_id.is_empty() || media_id.len() > 255 || !media_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(MatrixError::not_found("Media not found"));
    }
    app.store.media().get(media_id).await?.ok_or_else(|| MatrixError::not_found("Media not found"))
}

fn file_response(bytes: Bytes, meta: &MediaMeta, file_name: Option<&str>) -> Response {
    let mut headers = HeaderMap::new();
    let content_type = meta.content_type.as_deref().unwrap_or("application/octet-stream");
    if let Ok(value) = HeaderValue::from_str(content_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    // Only inert types are shown inline; anything else downloads, so no upload runs as a page.
    let inline = ["image/png", "image/jpeg", "image/gif", "image/webp", "video/mp4", "audio/ogg", "audio/mpeg", "text/plain"]
        .iter()
        .any(|t| content_type.starts_with(t));
    let disposition = match file_name.or(meta.filename.as_deref()) {
        Some(name) => {
            let safe: String = name.chars().filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\' || *c == ' ').collect();
            format!("{}; filename=\"{safe}\"", if inline { "inline" } else { "attachment" })
        }
        None => (if inline { "inline" } else { "attachment" }).to_string(),
    };
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; object-src 'self';"),
    );
    headers.insert("cross-origin-resource-policy", HeaderValue::from_static("cross-origin"));
    (StatusCode::OK, headers, Body::from(bytes)).into_response()
}

async fn download(State(app): State<AppState>, _caller: Caller, Path((server, media_id)): Path<(String, String)>) -> ApiResult<Response> {
    let (bytes, meta) = fetch(&app, &server, &media_id).await?;
    Ok(file_response(bytes, &meta, None))
}

async fn download_named(
    State(app): State<AppState>,
    _caller: Caller,
    Path((server, media_id, file_name)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let (bytes, meta) = fetch(&app, &server, &media_id).await?;
    Ok(file_response(bytes, &meta, Some(&file_name)))
}

async fn download_legacy(State(app): State<AppState>, Path((server, media_id)): Path<(String, String)>) -> ApiResult<Response> {
    let (bytes, meta) = fetch(&app, &server, &media_id).await?;
    Ok(file_response(bytes, &meta, None))
}

async fn download_legacy_named(
    State(app): State<AppState>,
    Path((server, media_id, file_name)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let (bytes, meta) = fetch(&app, &server, &media_id).await?;
    Ok(file_response(bytes, &meta, Some(&file_name)))
}

#[derive(Deserialize)]
struct ThumbnailQuery {
    width: Option<u32>,
    height: Option<u32>,
    method: Option<String>,
}

/// Largest thumbnail edge we produce, pixels.
const MAX_THUMBNAIL_EDGE: u32 = 1600;
/// Largest source image we decode, pixels (guards against decompression bombs).
const MAX_SOURCE_PIXELS: u64 = 40_000_000;

async fn make_thumbnail(app: &App, server: &str, media_id: &str, query: ThumbnailQuery) -> ApiResult<Response> {
    let width = query.width.ok_or_else(|| MatrixError::missing_param("width is required"))?.clamp(1, MAX_THUMBNAIL_EDGE);
    let height = query.height.ok_or_else(|| MatrixError::missing_param("height is required"))?.clamp(1, MAX_THUMBNAIL_EDGE);
    let crop = match query.method.as_deref() {
        Some("crop") => true,
        Some("scale") | None => false,
        Some(_) => return Err(MatrixError::invalid_param("method must be crop or scale")),
    };
    let cache_name = format!("thumb-{media_id}-{width}x{height}-{}", if crop { "crop" } else { "scale" });
    if let Some((bytes, meta)) = app.store.media().get(&cache_name).await? {
        return Ok(file_response(bytes, &meta, None));
    }
    let (bytes, meta) = fetch(app, server, media_id).await?;
    let rendered = tokio::task::spawn_blocking(move || render_thumbnail(&bytes, width, height, crop))
        .await
        .map_err(MatrixError::unavailable)?;
    let Some(png) = rendered else {
        // Not an image we can read: the original is the best answer.
        let (bytes, _) = fetch(app, server, media_id).await?;
        return Ok(file_response(bytes, &meta, None));
    };
    let thumb_meta = MediaMeta { content_type: Some("image/png".into()), filename: None };
    if let Err(error) = app.store.media().put(&cache_name, png.clone(), &thumb_meta).await {
        tracing::warn!(%error, "could not cache a thumbnail");
    }
    Ok(file_response(png, &thumb_meta, None))
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

async fn thumbnail(
    State(app): State<AppState>,
    _caller: Caller,
    Path((server, media_id)): Path<(String, String)>,
    Query(query): Query<ThumbnailQuery>,
) -> ApiResult<Response> {
    make_thumbnail(&app, &server, &media_id, query).await
}

async fn thumbnail_legacy(
    State(app): State<AppState>,
    Path((server, media_id)): Path<(String, String)>,
    Query(query): Query<ThumbnailQuery>,
) -> ApiResult<Response> {
    make_thumbnail(&app, &server, &media_id, query).await
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
