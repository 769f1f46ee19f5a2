//! Rate limits: token buckets per client IP, per user's writes and per IP's logins.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use super::App;
use crate::error::{ApiResult, MatrixError};

/// Token buckets keyed by client IP or user.
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

/// Bound on remembered keys; beyond it the oldest-idle state is forgotten (a fresh, full bucket).
const MAX_RATE_KEYS: usize = 100_000;

impl RateLimiter {
    pub fn new() -> RateLimiter {
        RateLimiter { buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token from `key`'s bucket or says how long to wait.
    pub fn check(&self, key: &str, per_s: f64, burst: f64) -> Result<(), MatrixError> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("limiter lock");
        if buckets.len() > MAX_RATE_KEYS {
            buckets.retain(|_, (tokens, last)| now.duration_since(*last).as_secs_f64() * per_s + *tokens < burst);
        }
        let (tokens, last) = buckets.entry(key.to_string()).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * per_s).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait_ms = ((1.0 - *tokens) / per_s.max(1e-9) * 1000.0).ceil() as u64;
            Err(MatrixError::limit_exceeded(wait_ms.max(1)))
        }
    }
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl App {
    /// Per-user limit on writes (sends, state changes, room creation).
    pub fn limit_writes(&self, user_id: &str) -> ApiResult<()> {
        let limits = &self.config.rate_limits;
        if !limits.enabled {
            return Ok(());
        }
        self.limiter.check(&format!("w:{user_id}"), limits.writes_per_user_per_s, limits.writes_per_user_burst)
    }

    /// Per-IP limit on logins and registrations.
    pub fn limit_logins(&self, ip: Option<IpAddr>) -> ApiResult<()> {
        let limits = &self.config.rate_limits;
        match ip {
            Some(ip) if limits.enabled => {
                self.limiter.check(&format!("l:{ip}"), limits.logins_per_ip_per_s, limits.logins_per_ip_burst)
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limiter_allows_a_burst_then_refuses() {
        let limiter = RateLimiter::new();
        for _ in 0..3 {
            limiter.check("k", 0.001, 3.0).unwrap();
        }
        let error = limiter.check("k", 0.001, 3.0).unwrap_err();
        assert_eq!(error.errcode, "M_LIMIT_EXCEEDED");
        assert!(error.retry_after_ms.unwrap() > 0);
        limiter.check("other", 0.001, 3.0).unwrap();
    }
}
