//! A rotating refresh-token chain, with no IO: what a presented refresh token means, and how the
//! chain moves on. Each use of the current token hands out a successor and the used one becomes
//! spent; presenting a spent token again means the chain leaked, and the caller revokes it
//! (RFC 9700 section 4.14.2). OAuth sessions and password-login refresh tokens share these rules.
//!
//! A token presented again is not always a replay. When a data center drops out in the middle of
//! a request, the client gives up on it and retries at another DC, which answers; the first
//! request is not gone, though: its bytes wait in the network (TCP retransmits them for up to
//! about two minutes after the client closed the connection) or in a node cut off from the rest,
//! and reach a node after the partition heals, carrying a token the client has replaced since.
//! So for a *grace period* after a token is replaced, presenting it again has no effect on the
//! chain:
//! - **the token before the current one** yields the *same* successor again (the client lost the
//!   response, or this is a late copy of its request). The successor is derived from the
//!   presented token and a salt kept in the chain, so any node can hand it out again without the
//!   chain storing a token in the clear;
//! - **a spent token** is refused, and the chain stays valid.
//!
//! After the grace period the strict rules apply: the token before the current one rotates again
//! (the successor nobody used becomes spent), and a spent token revokes the chain. A thief
//! replaying a token inside the grace period gains nothing (a spent token is refused; the previous
//! token yields only what its owner also holds, and the next rotation by either party separates
//! them again).

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::services::token_hash;

/// Spent tokens remembered for reuse detection.
pub const MAX_SPENT: usize = 64;
/// Spent tokens remembered with the time they were spent (the newest), for the grace period.
pub const MAX_SPENT_AT: usize = 16;

/// The chain's state as stored (token hashes only). Embedded, flattened, in the session records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chain {
    /// Hash of the refresh token that is valid now.
    pub current: String,
    /// Hash of the token `current` replaced: it yields `current` again until `current` is used.
    pub previous: Option<String>,
    /// Hashes of tokens no longer valid (bounded): presenting one means the chain leaked.
    pub spent: Vec<String>,
    /// The newest spent hashes with when they were spent (ms since the epoch), bounded.
    #[serde(default)]
    pub spent_at: Vec<(String, u64)>,
    /// When `current` replaced `previous` (ms since the epoch).
    #[serde(default)]
    pub rotated_ms: Option<u64>,
    /// The salt `current` was derived with from `previous`; None for a first token or a chain
    /// written before successors were derived.
    #[serde(default)]
    pub salt: Option<String>,
}

/// What a presented refresh token means for its chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The current token: move on to a successor.
    Rotate,
    /// The token before the current one, within the grace period: the same successor again.
    Retry,
    /// The token before the current one, after the grace period: a new successor; the one
    /// handed out before (never used) becomes spent.
    RotateAgain,
    /// A spent token within the grace period: refused; the chain stays valid.
    Stale,
    /// A spent token after the grace period: someone replayed it; revoke the chain.
    Reused,
    /// Not a token of this chain: refuse, change nothing.
    Invalid,
}

/// The secret part of the successor of `presented` under `salt`.
pub fn successor_secret(presented: &str, salt: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(salt.as_bytes());
    hasher.update([0u8]);
    hasher.update(presented.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hasher.finalize())
}

fn same(a: &str, b: &str) -> bool {
    crate::oauth::grants::constant_time_eq(a.as_bytes(), b.as_bytes())
}

fn push_bounded<T>(list: &mut Vec<T>, item: T, bound: usize) {
    list.push(item);
    if list.len() > bound {
        let excess = list.len() - bound;
        list.drain(..excess);
    }
}

impl Chain {
    /// A chain whose first token hashes to `first`.
    pub fn new(first: String) -> Chain {
        Chain { current: first, previous: None, spent: vec![], spent_at: vec![], rotated_ms: None, salt: None }
    }

    /// Whether `hash` is any token this chain issued and remembers.
    pub fn knows(&self, hash: &str) -> bool {
        same(&self.current, hash) || self.previous.as_deref().is_some_and(|p| same(p, hash)) || self.spent.iter().any(|s| s == hash)
    }

    /// What presenting the token hashing to `presented_hash` at `now_ms` means, with a grace
    /// period of `grace_ms`.
    pub fn outcome(&self, presented_hash: &str, now_ms: u64, grace_ms: u64) -> Outcome {
        let within_grace = |since_ms: u64| now_ms < since_ms.saturating_add(grace_ms);
        if same(&self.current, presented_hash) {
            return Outcome::Rotate;
        }
        if self.previous.as_deref().is_some_and(|p| same(p, presented_hash)) {
            let derived = self.salt.is_some();
            return if derived && self.rotated_ms.is_some_and(within_grace) { Outcome::Retry } else { Outcome::RotateAgain };
        }
        if !self.spent.iter().any(|s| s == presented_hash) {
            return Outcome::Invalid;
        }
        let recent = self.spent_at.iter().any(|(hash, at_ms)| hash == presented_hash && within_grace(*at_ms));
        if recent { Outcome::Stale } else { Outcome::Reused }
    }

    fn spend(&mut self, hash: String, now_ms: u64) {
        push_bounded(&mut self.spent_at, (hash.clone(), now_ms), MAX_SPENT_AT);
        push_bounded(&mut self.spent, hash, MAX_SPENT);
    }

    /// Moves the chain on for an outcome of presenting `presented`, and returns the refresh token
    /// to hand out (made from a secret by `format`), if any. `fresh_salt` is a new random salt.
    pub fn advance(&mut self, outcome: Outcome, presented: &str, fresh_salt: String, now_ms: u64, format: impl Fn(&str) -> String) -> Option<String> {
        let next = |salt: &str| format(&successor_secret(presented, salt));
        match outcome {
            Outcome::Rotate => {
                let token = next(&fresh_salt);
                if let Some(previous) = self.previous.take() {
                    self.spend(previous, now_ms);
                }
                self.previous = Some(std::mem::replace(&mut self.current, token_hash(&token)));
                self.salt = Some(fresh_salt);
                self.rotated_ms = Some(now_ms);
                Some(token)
            }
            Outcome::Retry => self.salt.as_deref().map(next),
            Outcome::RotateAgain => {
                let token = next(&fresh_salt);
                let unused = std::mem::replace(&mut self.current, token_hash(&token));
                self.spend(unused, now_ms);
                self.salt = Some(fresh_salt);
                self.rotated_ms = Some(now_ms);
                Some(token)
            }
            Outcome::Stale | Outcome::Reused | Outcome::Invalid => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: u64 = 100;

    fn fmt(secret: &str) -> String {
        format!("r_{secret}")
    }

    fn chain() -> Chain {
        Chain::new(token_hash("r1"))
    }

    #[test]
    fn rotation_spends_and_detects_reuse_after_the_grace_period() {
        let mut chain = chain();
        assert_eq!(chain.outcome(&token_hash("r1"), 10, GRACE), Outcome::Rotate);
        let r2 = chain.advance(Outcome::Rotate, "r1", "s1".into(), 10, fmt).unwrap();
        assert_eq!(chain.outcome(&token_hash(&r2), 20, GRACE), Outcome::Rotate);
        let r3 = chain.advance(Outcome::Rotate, &r2, "s2".into(), 20, fmt).unwrap();
        // r1 was spent at 20, when r2 was used.
        assert_eq!(chain.outcome(&token_hash("r1"), 119, GRACE), Outcome::Stale);
        assert_eq!(chain.outcome(&token_hash("r1"), 120, GRACE), Outcome::Reused);
        assert_eq!(chain.outcome(&token_hash(&r2), 30, GRACE), Outcome::Retry);
        assert_eq!(chain.outcome(&token_hash(&r2), 120, GRACE), Outcome::RotateAgain);
        assert_eq!(chain.outcome(&token_hash(&r3), 30, GRACE), Outcome::Rotate);
        assert_eq!(chain.outcome(&token_hash("unknown"), 30, GRACE), Outcome::Invalid);
        assert!(chain.knows(&token_hash("r1")) && chain.knows(&token_hash(&r3)) && !chain.knows(&token_hash("x")));
        for outcome in [Outcome::Stale, Outcome::Reused, Outcome::Invalid] {
            let before = chain.clone();
            assert_eq!(chain.advance(outcome, "r1", "s".into(), 200, fmt), None);
            assert_eq!(chain, before);
        }
    }

    #[test]
    fn the_previous_token_yields_the_same_successor_within_the_grace_period() {
        let mut chain = chain();
        let r2 = chain.advance(Outcome::Rotate, "r1", "s1".into(), 10, fmt).unwrap();
        let before = chain.clone();
        assert_eq!(chain.outcome(&token_hash("r1"), 15, GRACE), Outcome::Retry);
        let again = chain.advance(Outcome::Retry, "r1", "other".into(), 15, fmt).unwrap();
        assert_eq!(again, r2);
        assert_eq!(chain, before, "handing the successor out again changes nothing");
        // Successors are not guessable from the token alone: another salt gives another one.
        assert_ne!(successor_secret("r1", "s1"), successor_secret("r1", "s2"));
    }

    #[test]
    fn a_late_copy_of_a_request_does_not_end_the_session() {
        let mut chain = chain();
        // A request with r1 hangs at a DC that is cut off; the client retries elsewhere
        // (r1 -> r2 at 8) and later uses r2 (r1 spent at 12).
        let r2 = chain.advance(Outcome::Rotate, "r1", "s1".into(), 8, fmt).unwrap();
        let r3 = chain.advance(Outcome::Rotate, &r2, "s2".into(), 12, fmt).unwrap();
        // The hung request reaches a node after the partition heals: refused, chain intact.
        assert_eq!(chain.outcome(&token_hash("r1"), 40, GRACE), Outcome::Stale);
        assert_eq!(chain.outcome(&token_hash(&r3), 41, GRACE), Outcome::Rotate);
        // A late copy of the r2 request, arriving before r3 is used: r3 again, nothing spent.
        assert_eq!(chain.advance(Outcome::Retry, &r2, "x".into(), 42, fmt).as_deref(), Some(r3.as_str()));
    }

    #[test]
    fn after_the_grace_period_the_previous_token_rotates_again() {
        let mut chain = chain();
        let r2 = chain.advance(Outcome::Rotate, "r1", "s1".into(), 10, fmt).unwrap();
        assert_eq!(chain.outcome(&token_hash("r1"), 500, GRACE), Outcome::RotateAgain);
        let other = chain.advance(Outcome::RotateAgain, "r1", "s9".into(), 500, fmt).unwrap();
        assert_ne!(other, r2);
        assert_eq!(chain.current, token_hash(&other));
        assert_eq!(chain.outcome(&token_hash(&r2), 501, GRACE), Outcome::Stale);
        assert_eq!(chain.outcome(&token_hash(&r2), 600, GRACE), Outcome::Reused);
    }

    #[test]
    fn chains_stored_before_derived_successors_still_work() {
        let old: Chain = serde_json::from_str(r#"{"current":"a","previous":"p","spent":["b"]}"#).unwrap();
        assert_eq!(old.outcome("b", 0, GRACE), Outcome::Reused);
        assert_eq!(old.outcome("p", 0, GRACE), Outcome::RotateAgain);
        assert_eq!(old.outcome("a", 0, GRACE), Outcome::Rotate);
    }

    #[test]
    fn memory_of_spent_tokens_is_bounded() {
        let mut chain = chain();
        let mut token = "r1".to_string();
        for i in 0..200u64 {
            token = chain.advance(Outcome::Rotate, &token, format!("s{i}"), i, fmt).unwrap();
        }
        assert_eq!(chain.spent.len(), MAX_SPENT);
        assert_eq!(chain.spent_at.len(), MAX_SPENT_AT);
    }
}
