//! The login provider: the Matrix OAuth 2.0 API, served natively by every node, and the login
//! pages people use in a browser.
//!
//! # GET  /_matrix/client/v1/auth_metadata (and /unstable/org.matrix.msc2965/auth_metadata)
//! # POST /oauth2/register              dynamic client registration (RFC 7591)
//! # GET|POST /oauth2/authorize         authorization code grant with PKCE S256 (sign-in, consent)
//! # POST /oauth2/token                 code, refresh-token and device-code grants
//! # POST /oauth2/revoke                token revocation (RFC 7009)
//! # POST /oauth2/device_authorization  device authorization grant (RFC 8628)
//! # GET|POST /device                   where a person enters a device's user code
//! # GET|POST /oauth2/login, /oauth2/signup, /oauth2/logout   the login pages
//! # GET|POST /oauth2/end_session       RP-initiated logout (OpenID Connect), with confirmation
//! # GET  /account, POST /account/*     account management (devices, password, approving a
//!                                      cross-signing reset for `m.oauth` UIA, [`uia`])
//! # GET  /.well-known/openid-configuration, /oauth2/keys.json, GET|POST /oauth2/userinfo
//!                                      OpenID Connect for other services ([`oidc`])
//!
//! It owns the grants' rules ([`grants`], pure), their records in replicated KV ([`records`]), the
//! token endpoint ([`tokens`]), the HTML pages ([`pages`], [`templates`]), OpenID Connect
//! ([`oidc`]) and the id_token signing keys ([`keys`], replicated KV, rotated by schedule). It never keeps a
//! flow in a node's memory and never writes a code, token, password or cookie to a log line.
//! Access tokens it issues are stored exactly like password-login tokens (hashed in the tokens
//! bucket), so every Matrix endpoint accepts them through the same `Caller` extractor.

pub mod grants;
pub mod keys;
pub mod oidc;
pub use crate::services::oauth_records as records;
pub mod pages;
pub mod templates;
pub mod tokens;
pub use crate::services::oauth_uia as uia;

use std::collections::HashMap;

use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::app::{App, AppState};
use crate::error::MatrixError;
use grants::Refusal;

/// Largest form body the OAuth endpoints read.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// The routes of the login provider, with their own layers (the Matrix API's layers would turn
/// an HTML error page into a JSON Matrix error).
pub fn router(app: AppState) -> Router {
    if !app.config.oauth.enabled {
        return Router::new();
    }
    let api = Router::new()
        .route("/_matrix/client/v1/auth_metadata", get(auth_metadata))
        .route("/_matrix/client/unstable/org.matrix.msc2965/auth_metadata", get(auth_metadata))
        .route("/.well-known/oauth-authorization-server", get(auth_metadata))
        .route("/.well-known/openid-configuration", get(auth_metadata))
        .route("/oauth2/keys.json", get(oidc::jwks))
        .route("/oauth2/userinfo", get(oidc::userinfo).post(oidc::userinfo))
        .route("/oauth2/register", post(tokens::register_client))
        .route("/oauth2/token", post(tokens::token))
        .route("/oauth2/revoke", post(tokens::revoke))
        .route("/oauth2/device_authorization", post(tokens::device_authorization))
        .layer(axum::middleware::from_fn(cors));
    let pages = Router::new()
        .route("/oauth2/authorize", get(pages::authorize).post(pages::consent))
        .route("/oauth2/login", get(pages::login_page).post(pages::login))
        .route("/oauth2/signup", get(pages::signup_page).post(pages::signup))
        .route("/oauth2/logout", post(pages::logout))
        .route("/oauth2/end_session", get(pages::end_session_page).post(pages::end_session))
        .route("/oauth2/style.css", get(pages::stylesheet))
        .route("/device", get(pages::device_page).post(pages::device_answer))
        .route("/account", get(pages::account))
        .route("/account/devices/delete", post(pages::delete_device))
        .route("/account/services/delete", post(pages::delete_service))
        .route("/account/password", post(pages::change_password))
        .route("/account/cross_signing_reset", post(pages::approve_cross_signing_reset));
    api.merge(pages).with_state(app)
}

/// The base URL of this deployment as clients reach it: the configured public URL, else the
/// request's Host (fine on a laptop; a deployment sets `public_base_url`).
pub fn base_url(app: &App, headers: &HeaderMap) -> String {
    if let Some(base) = &app.config.public_base_url {
        return base.trim_end_matches('/').to_string();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c)))
        .unwrap_or("127.0.0.1:8008");
    format!("http://{host}")
}

/// The issuer identifier (the `iss` of id_tokens): the base URL with a trailing slash.
pub fn issuer(app: &App, headers: &HeaderMap) -> String {
    format!("{}/", base_url(app, headers))
}

/// The actions the account page understands (`?action=`).
pub const ACCOUNT_ACTIONS: [&str; 4] =
    ["org.matrix.devices_list", "org.matrix.device_view", "org.matrix.device_delete", uia::CROSS_SIGNING_RESET];

/// # GET /_matrix/client/v1/auth_metadata
/// # GET /.well-known/openid-configuration
/// One document for Matrix clients (MSC2965) and OpenID Connect relying parties (OpenID Connect
/// Discovery 1.0): each ignores the other's fields.
async fn auth_metadata(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let base = base_url(&app, &headers);
    let mut prompts = vec![];
    if app.config.registration.enabled {
        prompts.push("create");
    }
    let body = json!({
        "issuer": issuer(&app, &headers),
        "authorization_endpoint": format!("{base}/oauth2/authorize"),
        "token_endpoint": format!("{base}/oauth2/token"),
        "registration_endpoint": format!("{base}/oauth2/register"),
        "revocation_endpoint": format!("{base}/oauth2/revoke"),
        "end_session_endpoint": format!("{base}/oauth2/end_session"),
        "device_authorization_endpoint": format!("{base}/oauth2/device_authorization"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query", "fragment"],
        "grant_types_supported": [grants::GRANT_CODE, grants::GRANT_REFRESH, grants::GRANT_DEVICE],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": grants::AuthMethod::ALL,
        "revocation_endpoint_auth_methods_supported": ["none"],
        "scopes_supported": [
            grants::SCOPE_API,
            grants::SCOPE_API_UNSTABLE,
            "urn:matrix:client:device:*",
            grants::SCOPE_OPENID,
            grants::SCOPE_PROFILE,
            grants::SCOPE_OFFLINE,
        ],
        "prompt_values_supported": prompts,
        "account_management_uri": format!("{base}/account"),
        "account_management_actions_supported": ACCOUNT_ACTIONS,
        "userinfo_endpoint": format!("{base}/oauth2/userinfo"),
        "jwks_uri": format!("{base}/oauth2/keys.json"),
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [keys::ALGORITHM],
        "claims_supported": oidc::CLAIMS_SUPPORTED,
        "claims_parameter_supported": false,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
    });
    let mut response = Json(body).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    response
}

/// An error of a JSON OAuth endpoint: `{"error", "error_description"}` with an HTTP status.
#[derive(Debug)]
pub struct OauthError {
    pub status: StatusCode,
    pub error: &'static str,
    pub description: String,
    pub retry_after_s: Option<u64>,
}

impl OauthError {
    pub fn bad_request(error: &'static str, description: impl Into<String>) -> OauthError {
        OauthError { status: StatusCode::BAD_REQUEST, error, description: description.into(), retry_after_s: None }
    }
}

impl From<Refusal> for OauthError {
    fn from(refusal: Refusal) -> Self {
        let status = if refusal.error == "invalid_client" { StatusCode::UNAUTHORIZED } else { StatusCode::BAD_REQUEST };
        OauthError { status, error: refusal.error, description: refusal.description, retry_after_s: None }
    }
}

impl From<MatrixError> for OauthError {
    fn from(error: MatrixError) -> Self {
        let code = match error.status {
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => "temporarily_unavailable",
            _ => "server_error",
        };
        OauthError {
            status: error.status,
            error: code,
            description: error.message,
            retry_after_s: error.retry_after_ms.map(|ms| ms.div_ceil(1000)),
        }
    }
}

impl From<haetae_store::KvError> for OauthError {
    fn from(error: haetae_store::KvError) -> Self {
        MatrixError::from(error).into()
    }
}

impl IntoResponse for OauthError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.error, "error_description": self.description });
        let mut response = (self.status, Json(body)).into_response();
        no_store(&mut response);
        if let Some(seconds) = self.retry_after_s
            && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

pub fn no_store(response: &mut Response) {
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// The fields of an `application/x-www-form-urlencoded` body (or query string). A field given
/// twice is refused, as RFC 6749 section 3.1 asks.
pub struct Form(pub HashMap<String, String>);

impl Form {
    pub fn parse(bytes: &[u8]) -> Result<Form, OauthError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(bytes)
            .map_err(|_| OauthError::bad_request("invalid_request", "the body is not a valid form"))?;
        let mut fields = HashMap::new();
        for (key, value) in pairs {
            if fields.insert(key.clone(), value).is_some() {
                return Err(OauthError::bad_request("invalid_request", format!("{} given more than once", key.chars().take(40).collect::<String>())));
            }
        }
        Ok(Form(fields))
    }

    pub async fn read(request: Request) -> Result<Form, OauthError> {
        let bytes = axum::body::to_bytes(request.into_body(), MAX_FORM_BYTES)
            .await
            .map_err(|_| OauthError::bad_request("invalid_request", format!("the body is larger than {MAX_FORM_BYTES} bytes")))?;
        Form::parse(&bytes)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str).filter(|v| !v.is_empty())
    }

    pub fn require(&self, key: &str) -> Result<&str, OauthError> {
        self.get(key).ok_or_else(|| OauthError::bad_request("invalid_request", format!("{key} is required")))
    }
}

/// Public clients call the JSON endpoints from web pages on other origins.
async fn cors(request: Request, next: Next) -> Response {
    let mut response =
        if request.method() == Method::OPTIONS { StatusCode::NO_CONTENT.into_response() } else { next.run(request).await };
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, OPTIONS"));
    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("Content-Type, Authorization"));
    response
}

/// Milliseconds and seconds since the epoch.
pub fn now_ms() -> u64 {
    crate::services::rooms::now_ms()
}

pub fn now_s() -> u64 {
    now_ms() / 1000
}

/// A JSON value's string field, for registration bodies.
pub fn json_body(bytes: &[u8]) -> Result<Value, OauthError> {
    serde_json::from_slice(bytes).map_err(|_| OauthError::bad_request("invalid_client_metadata", "the body is not JSON"))
}
