//! Media: uploads into the replicated object store, downloads, real thumbnails.
//!
//! # POST /_matrix/media/v3/upload
//! # POST /_matrix/media/v1/create
//! # PUT  /_matrix/media/v3/upload/{serverName}/{mediaId}
//! # GET  /_matrix/client/v1/media/download/{serverName}/{mediaId}[/{fileName}]
//! # GET  /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}
//! # GET  /_matrix/client/v1/media/config
//! # GET  /_matrix/media/v3/download/..., /thumbnail/..., /config (legacy, unauthenticated)
//! # GET  /_matrix/client/v1/media/preview_url, /_matrix/media/v3/preview_url (legacy)

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use haetae_store::MediaMeta;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::{AppState, Caller, read_body};
use crate::error::{ApiResult, MatrixError};
use crate::services::media::{self, MAX_THUMBNAIL_EDGE, ThumbnailSpec};
pub fn routes(router: Router<AppState>) -> Router<AppState> {
    let mut router = router;
    for prefix in ["/_matrix/media/v3", "/_matrix/media/r0"] {
        router = router
            .route(&format!("{prefix}/upload"), post(upload))
            .route(&format!("{prefix}/upload/{{server}}/{{media_id}}"), axum::routing::put(upload_reserved))
            .route(&format!("{prefix}/config"), get(config))
            .route(&format!("{prefix}/preview_url"), get(preview_url))
            .route(&format!("{prefix}/download/{{server}}/{{media_id}}"), get(download_legacy))
            .route(&format!("{prefix}/download/{{server}}/{{media_id}}/{{file_name}}"), get(download_legacy_named))
            .route(&format!("{prefix}/thumbnail/{{server}}/{{media_id}}"), get(thumbnail_legacy));
    }
    router
        .route("/_matrix/media/v1/create", post(create_reserved))
        .route("/_matrix/client/v1/media/config", get(config_authenticated))
        .route("/_matrix/client/v1/media/preview_url", get(preview_url))
        .route("/_matrix/client/v1/media/download/{server}/{media_id}", get(download))
        .route("/_matrix/client/v1/media/download/{server}/{media_id}/{file_name}", get(download_named))
        .route("/_matrix/client/v1/media/thumbnail/{server}/{media_id}", get(thumbnail))
}

#[derive(Deserialize)]
struct UploadQuery {
    filename: Option<String>,
}

async fn upload(
    State(app): State<AppState>,
    caller: Caller,
    Query(query): Query<UploadQuery>,
    request: Request,
) -> ApiResult<Json<Value>> {
    let (bytes, meta) = read_upload(&app, request, query).await?;
    let uri = media::upload(&app, &caller.user_id, bytes, meta).await?;
    Ok(Json(json!({ "content_uri": uri })))
}

/// An upload's bytes (within the configured limit) and what its request says of them.
async fn read_upload(app: &AppState, request: Request, query: UploadQuery) -> ApiResult<(bytes::Bytes, MediaMeta)> {
    let limit = app.config.limits.max_upload_bytes as usize;
    let content_type = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
    let bytes = read_body(request.into_body(), limit, || format!("upload larger than {limit} bytes")).await?;
    Ok((bytes, MediaMeta { content_type, filename: query.filename }))
}

#[derive(Deserialize)]
struct PreviewQuery {
    url: Option<String>,
    /// The preferred time of the preview; the newest one is answered.
    #[allow(dead_code)]
    ts: Option<i64>,
}

async fn preview_url(State(app): State<AppState>, caller: Caller, Query(query): Query<PreviewQuery>) -> ApiResult<Json<Value>> {
    crate::services::url_preview::preview(&app, &caller.user_id, query.url).await.map(Json)
}

async fn create_reserved(State(app): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    crate::services::media_pending::create(&app, &caller.user_id).await.map(Json)
}

async fn upload_reserved(
    State(app): State<AppState>,
    caller: Caller,
    Path((server, media_id)): Path<(String, String)>,
    Query(query): Query<UploadQuery>,
    request: Request,
) -> ApiResult<Json<Value>> {
    let (bytes, meta) = read_upload(&app, request, query).await?;
    crate::services::media_pending::upload(&app, &caller.user_id, &server, &media_id, bytes, meta).await.map(Json)
}

async fn config(State(app): State<AppState>) -> Json<Value> {
    Json(json!({ "m.upload.size": app.config.limits.max_upload_bytes }))
}

async fn config_authenticated(state: State<AppState>, _caller: Caller) -> Json<Value> {
    config(state).await
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

async fn download(
    State(app): State<AppState>,
    _caller: Caller,
    Path((server, media_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (bytes, meta) = media::fetch(&app, &server, &media_id).await?;
    Ok(file_response(bytes, &meta, None))
}

async fn download_named(
    State(app): State<AppState>,
    _caller: Caller,
    Path((server, media_id, file_name)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let (bytes, meta) = media::fetch(&app, &server, &media_id).await?;
    Ok(file_response(bytes, &meta, Some(&file_name)))
}

async fn download_legacy(State(app): State<AppState>, Path((server, media_id)): Path<(String, String)>) -> ApiResult<Response> {
    let (bytes, meta) = media::fetch(&app, &server, &media_id).await?;
    Ok(file_response(bytes, &meta, None))
}

async fn download_legacy_named(
    State(app): State<AppState>,
    Path((server, media_id, file_name)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let (bytes, meta) = media::fetch(&app, &server, &media_id).await?;
    Ok(file_response(bytes, &meta, Some(&file_name)))
}

#[derive(Deserialize)]
struct ThumbnailQuery {
    width: Option<u32>,
    height: Option<u32>,
    method: Option<String>,
}

impl ThumbnailQuery {
    fn spec(self) -> ApiResult<ThumbnailSpec> {
        let width = self.width.ok_or_else(|| MatrixError::missing_param("width is required"))?.clamp(1, MAX_THUMBNAIL_EDGE);
        let height = self.height.ok_or_else(|| MatrixError::missing_param("height is required"))?.clamp(1, MAX_THUMBNAIL_EDGE);
        let crop = match self.method.as_deref() {
            Some("crop") => true,
            Some("scale") | None => false,
            Some(_) => return Err(MatrixError::invalid_param("method must be crop or scale")),
        };
        Ok(ThumbnailSpec { width, height, crop })
    }
}

async fn thumbnail(
    State(app): State<AppState>,
    _caller: Caller,
    Path((server, media_id)): Path<(String, String)>,
    Query(query): Query<ThumbnailQuery>,
) -> ApiResult<Response> {
    let (bytes, meta) = media::thumbnail(&app, &server, &media_id, query.spec()?).await?;
    Ok(file_response(bytes, &meta, None))
}

async fn thumbnail_legacy(
    State(app): State<AppState>,
    Path((server, media_id)): Path<(String, String)>,
    Query(query): Query<ThumbnailQuery>,
) -> ApiResult<Response> {
    let (bytes, meta) = media::thumbnail(&app, &server, &media_id, query.spec()?).await?;
    Ok(file_response(bytes, &meta, None))
}
