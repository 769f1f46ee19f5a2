//! # GET /metrics
//!
//! The node's metrics in Prometheus's text format (see `services::metrics`). Off with
//! `[homeserver.metrics] disabled = true`; with `token` set, a scrape presents it as a bearer
//! token.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::app::AppState;
use crate::error::MatrixError;

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    router.route("/metrics", get(metrics))
}

async fn metrics(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let config = &app.config.metrics;
    if config.disabled {
        return MatrixError::unrecognized().into_response();
    }
    if let Some(expected) = &config.token {
        let presented = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        if presented.map(str::trim) != Some(expected.as_str()) {
            return MatrixError::new(StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN", "metrics need the configured token").into_response();
        }
    }
    let text = crate::services::metrics::render(&app).await;
    let mut response = text.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}
