//! The `m.oauth` stage of user-interactive auth (Matrix 1.17): a client signed in through OAuth
//! cannot answer a password prompt, so replacing its cross-signing keys is approved by the person
//! on the account page instead, and the client then retries with just the UIA session.
//!
//! It owns the approval record (`OauthGrants` / `cross_signing_reset:<user id>`: until when a
//! replacement is allowed). An approval is spent by the replacement it allowed, and lasts
//! [`APPROVAL_WINDOW_S`] at most. Sessions signed in with a password keep `m.login.password`.
//! The keys service asks it; the account page (`crate::oauth::pages`) records approvals.

use axum::http::StatusCode;
use haetae_store::{Bucket, KvError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::oauth_records as records;
use super::rooms::now_ms;
use super::{App, Caller, accounts};
use crate::error::{ApiResult, MatrixError};

/// The account-management action that approves a cross-signing reset.
pub const CROSS_SIGNING_RESET: &str = "org.matrix.cross_signing_reset";
/// How long after the person approved the client may replace the keys, seconds.
pub const APPROVAL_WINDOW_S: u64 = 600;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Approval {
    expires_ms: u64,
}

fn approval_key(user_id: &str) -> String {
    format!("cross_signing_reset:{user_id}")
}

/// Whether the caller's access token came from an OAuth grant (its session is a live family of
/// this user and device).
async fn signed_in_with_oauth(app: &App, caller: &Caller) -> ApiResult<bool> {
    let Some((family, _)) = records::family(app, &caller.session).await? else { return Ok(false) };
    Ok(family.user_id == caller.user_id && family.device_id.as_deref() == Some(caller.device_id.as_str()) && !family.revoked)
}

/// User-interactive auth for replacing cross-signing keys: `m.oauth` for OAuth sessions (the
/// approval is spent here), `m.login.password` for the others. `account_base` is the base URL
/// the person's browser reaches the account page at.
pub async fn require_for_cross_signing(app: &App, caller: &Caller, account_base: &str, auth: Option<&Value>) -> ApiResult<()> {
    if !signed_in_with_oauth(app, caller).await? {
        return accounts::require_password_public(app, caller, auth).await;
    }
    let session = auth.and_then(|a| a["session"].as_str()).filter(|s| !s.is_empty() && s.len() <= 64);
    if session.is_some() {
        let key = approval_key(&caller.user_id);
        if let Some((approval, revision)) = records::read::<Approval>(app, Bucket::OauthGrants, &key).await?
            && approval.expires_ms > now_ms()
        {
            // Spent by compare-and-set: two replacements racing on one approval, one wins.
            let spent = Approval { expires_ms: 0 };
            if records::replace(app, Bucket::OauthGrants, &key, &spent, revision).await? {
                return Ok(());
            }
        }
    }
    let session = session.map(str::to_string).unwrap_or_else(|| super::rooms::random_string(24));
    let url = format!("{}/account?action={CROSS_SIGNING_RESET}", account_base.trim_end_matches('/'));
    let extra = json!({
        "flows": [{ "stages": ["m.oauth"] }],
        "params": { "m.oauth": { "url": url } },
        "session": session,
    });
    Err(MatrixError::new(StatusCode::UNAUTHORIZED, "", "Approve the reset on your account page, then try again").with_extra(extra))
}

/// Records the signed-in person's approval (from the account page).
pub async fn approve_cross_signing_reset(app: &App, user_id: &str) -> ApiResult<()> {
    let approval = Approval { expires_ms: now_ms() + APPROVAL_WINDOW_S * 1000 };
    let bytes = serde_json::to_vec(&approval).unwrap_or_default().into();
    app.store.kv().put(Bucket::OauthGrants, &approval_key(user_id), bytes).await.map_err(|e: KvError| MatrixError::from(e))?;
    tracing::info!(%user_id, "cross-signing reset approved on the account page");
    Ok(())
}
