//! HTTP: the Matrix Client-Server API routes, one file per endpoint group, plus the cross-cutting
//! layers (request metrics, CORS, per-IP rate limit, unknown endpoints). Handlers reach data only
//! through services.

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;

use crate::app::{AppState, client_ip};
use crate::error::MatrixError;

pub mod account;
pub mod admin;
pub mod admin_moderation;
pub mod console;
pub mod account_extras;
pub mod directory;
pub mod incidents;
pub mod discovery;
pub mod key_backup;
pub mod keys;
pub mod legacy;
pub mod media;
pub mod membership;
pub mod metrics;
pub mod notifications;
pub mod openid;
pub mod presence;
pub mod relations;
pub mod reports;
pub mod room_upgrade;
pub mod rooms;
pub mod search;
pub mod sliding_sync;
pub mod spaces;
pub mod sync;
pub mod tags;
pub mod thirdparty;
pub mod timestamp;
pub mod user_data;

/// Registers `route` under every client API version prefix clients use.
pub(crate) fn client(router: Router<AppState>, path: &str, route: MethodRouter<AppState>) -> Router<AppState> {
    let mut router = router;
    for prefix in ["/_matrix/client/v3", "/_matrix/client/r0", "/_matrix/client/unstable"] {
        router = router.route(&format!("{prefix}{path}"), route.clone());
    }
    router
}

pub fn router(app: AppState) -> Router {
    let mut router = Router::new();
    router = discovery::routes(router);
    router = account::routes(router);
    router = rooms::routes(router);
    router = membership::routes(router);
    router = sync::routes(router);
    router = sliding_sync::routes(router);
    router = user_data::routes(router);
    router = keys::routes(router);
    router = media::routes(router);
    router = presence::routes(router);
    router = key_backup::routes(router);
    router = metrics::routes(router);
    router = admin::routes(router);
    router = admin_moderation::routes(router);
    router = openid::routes(router);
    router = tags::routes(router);
    router = reports::routes(router);
    router = thirdparty::routes(router);
    router = account_extras::routes(router);
    router = directory::routes(router);
    router = relations::routes(router);
    router = search::routes(router);
    router = notifications::routes(router);
    router = spaces::routes(router);
    router = timestamp::routes(router);
    router = room_upgrade::routes(router);
    router = legacy::routes(router);
    router = incidents::routes(router);
    router = console::routes(router);
    router
        .fallback(|| async { MatrixError::unrecognized() })
        .method_not_allowed_fallback(|| async {
            MatrixError::new(StatusCode::METHOD_NOT_ALLOWED, "M_UNRECOGNIZED", "Method not allowed for this endpoint")
        })
        .layer(axum::middleware::from_fn_with_state(app.clone(), per_ip_limit))
        .layer(axum::middleware::from_fn(matrix_rejections))
        .layer(axum::extract::DefaultBodyLimit::max(app.config.limits.max_body_bytes))
        .layer(axum::middleware::from_fn(cors))
        .with_state(app.clone())
        .merge(crate::oauth::router(app.clone()))
        .layer(axum::middleware::from_fn_with_state(app, observe))
}

/// Counts every answered request by route template (never the raw path: ids would make the
/// labels unbounded), method and status, with its latency.
async fn observe(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let route = request.extensions().get::<axum::extract::MatchedPath>().map_or("unmatched", |p| p.as_str()).to_string();
    let method = request.method().clone();
    let response = next.run(request).await;
    app.metrics.observe_request(&route, method.as_str(), response.status().as_u16(), started.elapsed());
    response
}

/// Browsers (Element Web, Hydrogen) call from another origin: answer preflights and allow all.
async fn cors(request: Request, next: Next) -> Response {
    let mut response = if request.method() == Method::OPTIONS { StatusCode::OK.into_response() } else { next.run(request).await };
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, PUT, DELETE, OPTIONS"));
    headers
        .insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("X-Requested-With, Content-Type, Authorization"));
    response
}

/// Extractor rejections (bad query strings, undecodable paths, oversized raw bodies) are plain
/// text in axum; clients expect Matrix errors, so every such response is rewritten here, in one
/// place, instead of in each handler.
async fn matrix_rejections(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        // Pages for people (the console's sign-in) keep their HTML.
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let body = axum::body::to_bytes(response.into_body(), 16 * 1024).await.unwrap_or_default();
    let message = String::from_utf8_lossy(&body).into_owned();
    let errcode = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "M_TOO_LARGE",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "M_NOT_JSON",
        StatusCode::UNPROCESSABLE_ENTITY => "M_BAD_JSON",
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => "M_UNRECOGNIZED",
        status if status.is_server_error() => "M_UNKNOWN",
        _ => "M_INVALID_PARAM",
    };
    MatrixError::new(status, errcode, if message.is_empty() { status.to_string() } else { message }).into_response()
}

async fn per_ip_limit(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let limits = &app.config.rate_limits;
    if limits.enabled {
        let (parts, body) = request.into_parts();
        if let Some(ip) = client_ip(&parts)
            && let Err(error) = app.limit_ip(ip)
        {
            return error.into_response();
        }
        return next.run(Request::from_parts(parts, body)).await;
    }
    next.run(request).await
}
