//! Discovery: what this server is and speaks.
//!
//! # GET /.well-known/matrix/client
//! # GET /_matrix/client/versions
//! # GET /_matrix/client/v3/capabilities
//! # GET /_matrix/client/v3/voip/turnServer

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use serde_json::{Value, json};

use super::client;
use crate::app::{AppState, Caller};

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    let router = router
        .route("/.well-known/matrix/client", get(well_known))
        .route("/_matrix/client/versions", get(versions))
        .route("/", get(root))
        .route("/health", get(health));
    let router = client(router, "/capabilities", get(capabilities));
    client(router, "/voip/turnServer", get(turn_server))
}

async fn root() -> &'static str {
    "haetae Matrix homeserver. Point a Matrix client at this URL.\n"
}

/// Liveness for operators and the drill: 200 once the read model has caught up.
async fn health(State(app): State<AppState>) -> Json<Value> {
    Json(app.health())
}

async fn well_known(State(app): State<AppState>, headers: HeaderMap) -> Json<Value> {
    let base_url = app.config.public_base_url.clone().unwrap_or_else(|| {
        let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1:8008");
        format!("http://{host}")
    });
    Json(json!({ "m.homeserver": { "base_url": base_url } }))
}

async fn versions() -> Json<Value> {
    Json(json!({
        "versions": ["r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11"],
        "unstable_features": { "org.matrix.simplified_msc3575": true }
    }))
}

async fn capabilities(State(_app): State<AppState>, _caller: Caller) -> Json<Value> {
    let available: serde_json::Map<String, Value> =
        haetae_matrix::SUPPORTED_ROOM_VERSIONS.iter().map(|v| (v.to_string(), json!("stable"))).collect();
    Json(json!({
        "capabilities": {
            "m.change_password": { "enabled": true },
            "m.room_versions": { "default": haetae_matrix::DEFAULT_ROOM_VERSION, "available": available },
            "m.set_displayname": { "enabled": true },
            "m.set_avatar_url": { "enabled": true },
            "m.3pid_changes": { "enabled": false },
            "m.get_login_token": { "enabled": true },
        }
    }))
}

async fn turn_server(_caller: Caller) -> Json<Value> {
    Json(json!({}))
}
