//! Third-party networks (bridges). haetae runs no application services, so it knows no
//! protocols: the listings are empty, and a lookup finds nothing (the spec allows both).

use serde_json::{Value, json};

use crate::error::{ApiResult, MatrixError};

pub fn protocols() -> Value {
    json!({})
}

pub fn protocol(protocol: &str) -> ApiResult<Value> {
    Err(MatrixError::not_found(format!("Unknown protocol {protocol:.64}")))
}

/// Lookups by protocol (`location/{protocol}`, `user/{protocol}`): nothing is bridged.
pub fn by_protocol() -> Value {
    json!([])
}

/// Reverse lookups (`location?alias=`, `user?userid=`): `parameter` is required.
pub fn reverse(parameter: &str, value: Option<&str>) -> ApiResult<Value> {
    match value {
        Some(_) => Ok(json!([])),
        None => Err(MatrixError::missing_param(format!("{parameter} is required"))),
    }
}
