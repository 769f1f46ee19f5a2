//! Request plumbing every handler shares: who is calling (the access token, from the header or
//! the query), their JSON body with the spec's errors, their address. The node itself ([`App`])
//! lives in `services`; nothing here reaches the store or the read model.

use std::net::IpAddr;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::MatrixError;
pub use crate::error::parse_json;
pub use crate::services::{App, AppState, Caller};

pub fn access_token(parts: &Parts) -> Option<String> {
    if let Some(header) = parts.headers.get(axum::http::header::AUTHORIZATION) {
        let value = header.to_str().ok()?;
        return value.strip_prefix("Bearer ").map(|t| t.trim().to_string());
    }
    let query = parts.uri.query()?;
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == "access_token").then(|| percent_decode(value))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        // Hex digits read as bytes: slicing the text could split a multi-byte character.
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((high * 16 + low) as u8);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn client_ip(parts: &Parts) -> Option<IpAddr> {
    parts.extensions.get::<ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = MatrixError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Self::Rejection> {
        let token = access_token(parts)
            .ok_or_else(|| MatrixError::new(axum::http::StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN", "Missing access token"))?;
        if crate::oauth::tokens::access_token_expired(&token) || crate::services::session_tokens::access_token_expired(&token) {
            return Err(MatrixError::new(axum::http::StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN", "Access token expired")
                .with_extra(serde_json::json!({"soft_logout": true})));
        }
        let session = app.session_for_token(&token).await?.ok_or_else(|| {
            MatrixError::new(axum::http::StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN", "Unknown access token")
                .with_extra(serde_json::json!({"soft_logout": false}))
        })?;
        Ok(Caller { user_id: session.user_id, device_id: session.device_id, session: session.session, ip: client_ip(parts) })
    }
}

/// A JSON request body with the spec's errors: too large -> M_TOO_LARGE, not JSON -> M_NOT_JSON,
/// wrong shape -> M_BAD_JSON, missing field -> M_MISSING_PARAM. An empty body reads as `{}`.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = MatrixError;

    async fn from_request(request: Request, app: &AppState) -> Result<Self, Self::Rejection> {
        let RawBody(bytes) = RawBody::from_request(request, app).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// A request body as bytes, at most `limits.max_body_bytes` (else M_TOO_LARGE, read as
/// [`read_body`] does).
pub struct RawBody(pub bytes::Bytes);

impl FromRequest<AppState> for RawBody {
    type Rejection = MatrixError;

    async fn from_request(request: Request, app: &AppState) -> Result<Self, Self::Rejection> {
        let limit = app.config.limits.max_body_bytes;
        read_body(request.into_body(), limit, || format!("request body larger than {limit} bytes")).await.map(RawBody)
    }
}

/// Most bytes read and dropped after a body passed its limit. The client is still sending when
/// the 413 is ready; a connection closed with bytes unread is reset, and the client may lose the
/// answer with it. Reading on (up to this much, each chunk under the body idle timeout) lets it
/// finish and read the error; a larger body is cut off.
pub const MAX_DRAIN_BYTES: usize = 16 * 1024 * 1024;

/// Reads a body of at most `limit` bytes: a longer one is M_TOO_LARGE (with `too_large` as the
/// message), a stalled one 408.
pub async fn read_body(body: axum::body::Body, limit: usize, too_large: impl FnOnce() -> String) -> Result<bytes::Bytes, MatrixError> {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let mut read = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|error| body_error(&error, String::new()))?;
        if read.len() + chunk.len() <= limit {
            read.extend_from_slice(&chunk);
            continue;
        }
        let mut drained = 0usize;
        while drained < MAX_DRAIN_BYTES {
            match stream.next().await {
                Some(Ok(chunk)) => drained += chunk.len(),
                _ => break,
            }
        }
        return Err(MatrixError::too_large(too_large()));
    }
    Ok(read.freeze())
}

/// A body that could not be read: it stalled (408) or was larger than allowed (413).
pub fn body_error(error: &axum::Error, too_large: String) -> MatrixError {
    if crate::http_server::is_body_timeout(error) {
        MatrixError::new(axum::http::StatusCode::REQUEST_TIMEOUT, "M_UNKNOWN", "the request body stopped arriving")
    } else {
        MatrixError::too_large(too_large)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_map_to_the_spec_errors() {
        #[derive(serde::Deserialize, Debug)]
        struct Body {
            #[allow(dead_code)]
            name: String,
        }
        assert_eq!(parse_json::<Body>(b"{not json").unwrap_err().errcode, "M_NOT_JSON");
        assert_eq!(parse_json::<Body>(b"{\"name\": 3}").unwrap_err().errcode, "M_BAD_JSON");
        assert_eq!(parse_json::<Body>(b"{}").unwrap_err().errcode, "M_MISSING_PARAM");
        assert_eq!(parse_json::<Body>(b"[]").unwrap_err().errcode, "M_BAD_JSON");
        assert!(parse_json::<Body>(b"{\"name\": \"x\"}").is_ok());
    }

    #[test]
    fn token_query_parameter_is_decoded() {
        assert_eq!(percent_decode("a%2Bb+c"), "a+b c");
        assert_eq!(percent_decode("%"), "%");
        // Non-ASCII after a percent sign once panicked (a slice inside a character).
        assert_eq!(percent_decode("%é1"), "%é1");
        assert_eq!(percent_decode("a%€"), "a%€");
    }
}
