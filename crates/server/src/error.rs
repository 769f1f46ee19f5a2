//! Matrix errors: the one place that turns a failure into `{"errcode", "error"}` and an HTTP status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;

/// A Matrix error response.
#[derive(Debug, Clone)]
pub struct MatrixError {
    pub status: StatusCode,
    pub errcode: &'static str,
    pub message: String,
    /// For M_LIMIT_EXCEEDED: when the client may try again.
    pub retry_after_ms: Option<u64>,
    /// Extra top-level fields (user-interactive auth flows, soft_logout, ...).
    pub extra: Option<serde_json::Value>,
}

pub type ApiResult<T> = Result<T, MatrixError>;

impl MatrixError {
    pub fn new(status: StatusCode, errcode: &'static str, message: impl Into<String>) -> MatrixError {
        MatrixError { status, errcode, message: message.into(), retry_after_ms: None, extra: None }
    }
    pub fn forbidden(message: impl Into<String>) -> MatrixError {
        Self::new(StatusCode::FORBIDDEN, "M_FORBIDDEN", message)
    }
    pub fn not_found(message: impl Into<String>) -> MatrixError {
        Self::new(StatusCode::NOT_FOUND, "M_NOT_FOUND", message)
    }
    pub fn bad_json(message: impl Into<String>) -> MatrixError {
        Self::new(StatusCode::BAD_REQUEST, "M_BAD_JSON", message)
    }
    pub fn not_json(message: impl Into<String>) -> MatrixError {
        Self::new(StatusCode::BAD_REQUEST, "M_NOT_JSON", message)
    }
    pub fn missing_param(message: impl Into<String>) -> MatrixError {
        Self::new(StatusCode::BAD_REQUEST, "M_MISSING_PARAM", message)
    }
    pub fn invalid_param(message: impl Into<String>) -> MatrixError {
        Self::new(StatusCode::BAD_REQUEST, "M_INVALID_PARAM", message)
    }
    pub fn too_large(message: impl Into<String>) -> MatrixError {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE", message)
    }
    pub fn unrecognized() -> MatrixError {
        Self::new(StatusCode::NOT_FOUND, "M_UNRECOGNIZED", "Unrecognized request")
    }
    pub fn limit_exceeded(retry_after_ms: u64) -> MatrixError {
        MatrixError {
            retry_after_ms: Some(retry_after_ms),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED", "Too many requests")
        }
    }
    /// The store could not reach a quorum in time: the client should retry (with the same txnId).
    pub fn unavailable(message: impl std::fmt::Display) -> MatrixError {
        tracing::warn!(%message, "storage unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "M_UNKNOWN",
            "Storage is temporarily unavailable (no quorum); retry the request",
        )
    }
    pub fn with_extra(mut self, extra: serde_json::Value) -> MatrixError {
        self.extra = Some(extra);
        self
    }
}

impl IntoResponse for MatrixError {
    fn into_response(self) -> Response {
        let mut body =
            if self.errcode.is_empty() { json!({}) } else { json!({ "errcode": self.errcode, "error": self.message }) };
        if let Some(retry_after_ms) = self.retry_after_ms {
            body["retry_after_ms"] = json!(retry_after_ms);
        }
        if let Some(serde_json::Value::Object(extra)) = self.extra {
            for (key, value) in extra {
                body[key] = value;
            }
        }
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(retry_after_ms) = self.retry_after_ms {
            let seconds = retry_after_ms.div_ceil(1000).to_string();
            if let Ok(value) = seconds.parse() {
                response.headers_mut().insert("retry-after", value);
            }
        }
        response
    }
}

impl From<haetae_store::KvError> for MatrixError {
    fn from(error: haetae_store::KvError) -> Self {
        MatrixError::unavailable(error)
    }
}

impl From<haetae_store::MediaError> for MatrixError {
    fn from(error: haetae_store::MediaError) -> Self {
        match error {
            haetae_store::MediaError::TooLarge { limit_bytes } => {
                MatrixError::too_large(format!("file larger than {limit_bytes} bytes"))
            }
            other => MatrixError::unavailable(other),
        }
    }
}

/// A JSON body with the spec's errors: not JSON -> M_NOT_JSON, wrong shape -> M_BAD_JSON,
/// missing field -> M_MISSING_PARAM. An empty body reads as `{}`.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    let value: serde_json::Value = if bytes.iter().all(u8::is_ascii_whitespace) {
        serde_json::json!({})
    } else {
        serde_json::from_slice(bytes).map_err(|e| MatrixError::not_json(format!("Content not JSON: {e}")))?
    };
    serde_json::from_value(value).map_err(|e| {
        let message = e.to_string();
        if message.starts_with("missing field") { MatrixError::missing_param(message) } else { MatrixError::bad_json(message) }
    })
}
