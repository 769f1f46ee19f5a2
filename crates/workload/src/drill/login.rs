//! The drill's login workload, beside the chat: people signing in to a relying party through the
//! login pages (the authorization code flow with PKCE S256, driven over HTTP exactly as a browser
//! without JavaScript would), and the relying party refreshing its sessions, in every DC.
//!
//! - [`prepare`]: registers an OAuth client (dynamic registration) and a few accounts, reads each
//!   DC's discovery document and the JWKS once, and signs in `sessions + reuse_sessions` sessions,
//!   homed round-robin in the DCs.
//! - [`LoginRunning::start`]: while the drill runs, one agent per DC signs a person in at a steady
//!   rate (each new session joins the pool checked at the end), and every prepared session
//!   refreshes at a steady rate, each refresh returning a new refresh token that replaces the old.
//!   A request that fails at the home DC (no answer, a 5xx, a 429) is tried at the next DC: a
//!   refresh presents the same token again (the provider answers the token before the current one
//!   with the same successor, for a response that was lost), a login starts over there with a
//!   fresh browser.
//! - [`LoginRunning::finish`], once the fault is repaired: every session's current refresh token
//!   must refresh at a DC other than its home (else the session is lost), and for the sessions set
//!   aside for it, every spent refresh token (rotated, and its successor used since) is presented
//!   again and must be refused; one spent longer ago than the provider's grace period must also
//!   have revoked the session.
//!
//! Every id_token is checked offline, as a relying party would: the ES256 signature against the
//! JWKS fetched at setup (with `ring`), `iss` (the issuer of the DC that answered), `aud`, `exp`,
//! `sub`, and `nonce` (the login's own; none after a refresh, OpenID Connect Core 12.2).
//!
//! Times are milliseconds since the chat workload started, like the rest of the history.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::client::Client;
use crate::drill::history::Mark;
use crate::setup::{PASSWORD, run_id};

/// Sessions kept for the final check; logins beyond it are counted but not kept.
pub const MAX_SESSIONS: usize = 5_000;
/// Spent refresh tokens kept per session (newest last).
const MAX_SPENT_KEPT: usize = 8;
/// Problems kept per kind for the report (the rest are only counted).
const MAX_PROBLEMS_KEPT: usize = 20;
/// Largest HTML page or JSON body read from the provider.
const MAX_BODY_BYTES: usize = 256 * 1024;
/// The redirect URI the drill's client registers (a native client on loopback: nothing listens,
/// the browser stops at the redirect and hands the callback to the client).
const REDIRECT_URI: &str = "http://127.0.0.1/drill/callback";
/// Clock difference tolerated on `exp`, seconds.
const LEEWAY_S: u64 = 5;

#[derive(Clone, Debug)]
pub struct LoginConfig {
    /// (DC name, homeserver base URL), in DC order; session i is homed in DC i mod n.
    pub dcs: Vec<(String, String)>,
    /// Accounts people sign in with, homed round-robin.
    pub users: usize,
    /// Sessions signed in before the fault and refreshed through it.
    pub sessions: usize,
    /// More sessions like those, set aside for the reuse check at the end.
    pub reuse_sessions: usize,
    /// New logins per second over all DCs.
    pub logins_per_s: f64,
    /// Refreshes per second over all prepared sessions.
    pub refreshes_per_s: f64,
    /// How long one request may hang before the client tries the next DC.
    pub request_timeout: Duration,
    /// The provider's refresh grace period (`refresh_grace_s`): a spent token presented within
    /// it is refused without ending the session, so only tokens spent longer ago are expected to
    /// revoke their chain in the reuse check.
    pub refresh_grace: Duration,
}

impl Default for LoginConfig {
    fn default() -> Self {
        LoginConfig {
            dcs: Vec::new(),
            users: 6,
            sessions: 30,
            reuse_sessions: 6,
            logins_per_s: 1.5,
            refreshes_per_s: 6.0,
            request_timeout: Duration::from_secs(3),
            refresh_grace: Duration::from_secs(120),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("login workload setup: {0}")]
    Setup(String),
}

/// What one operation was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptKind {
    /// A new sign-in: the whole authorization code flow.
    Login,
    /// A refresh during the drill, at the session's home DC first.
    Refresh,
    /// The refresh after the repair, at a DC other than the session's home.
    FinalRefresh,
    /// A spent refresh token presented again (it must be refused).
    Reuse,
}

/// One login or refresh, as the workload saw it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoginAttempt {
    pub kind: AttemptKind,
    /// Index into the session pool (for a login: the session it created).
    pub session: Option<usize>,
    pub home_dc: String,
    pub start_ms: f64,
    pub end_ms: f64,
    /// The provider granted it (for `Reuse`: the spent token was accepted, which is wrong).
    pub ok: bool,
    pub error: Option<String>,
    /// DCs tried, in order (more than one when it failed over).
    pub dcs_tried: Vec<String>,
}

/// Everything the login workload recorded, for the report and `report.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LoginHistory {
    pub client_id: String,
    /// Sessions prepared before the fault (refreshed during the drill), of which `reuse_sessions`
    /// were set aside for the reuse check.
    pub prepared_sessions: usize,
    pub reuse_sessions: usize,
    /// Sessions checked at the end (prepared ones and those new logins created).
    pub sessions_checked: usize,
    /// Logins that succeeded after the pool was full (not checked at the end).
    pub sessions_not_kept: usize,
    pub attempts: Vec<LoginAttempt>,
    /// Sessions whose refresh token stopped working: refused during the drill, or not refreshed
    /// at another DC after the repair.
    pub sessions_lost: usize,
    /// Spent refresh tokens the provider accepted again.
    pub refresh_tokens_usable_twice: usize,
    /// Spent refresh tokens presented again.
    pub spent_tokens_presented: usize,
    /// Of those, tokens spent longer ago than the provider's grace period (the others are
    /// refused without revoking the chain).
    #[serde(default)]
    pub spent_tokens_past_grace: usize,
    /// Reuse-check sessions whose current token still worked after a spent one older than the
    /// grace period was presented (the chain should have been revoked; informational).
    pub chains_not_revoked_by_reuse: usize,
    /// id_tokens that failed the relying party's checks.
    pub id_tokens_rejected: usize,
    pub id_tokens_checked: usize,
    /// The first problems of each kind: "session 3 (home a): ...".
    pub problems: Vec<String>,
}

impl LoginHistory {
    /// Why the login part of the drill failed; empty when it passed.
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.sessions_lost > 0 {
            out.push(format!("{} login sessions lost", self.sessions_lost));
        }
        if self.refresh_tokens_usable_twice > 0 {
            out.push(format!("{} refresh tokens usable twice", self.refresh_tokens_usable_twice));
        }
        if self.id_tokens_rejected > 0 {
            out.push(format!("{} id_tokens rejected", self.id_tokens_rejected));
        }
        if self.sessions_checked == 0 {
            out.push("no login session was checked".to_string());
        }
        out
    }
}

/// The provider as the relying party knows it after setup.
struct Provider {
    client_id: String,
    /// Each DC's `issuer`, by DC index (the deployment has no single public URL in a drill, so
    /// each node names itself).
    issuers: Vec<String>,
    /// `kid` -> uncompressed P-256 public key.
    keys: HashMap<String, Vec<u8>>,
}

/// An account and where it is homed.
#[derive(Clone)]
struct Account {
    localpart: String,
    user_id: String,
}

/// One relying-party session: its refresh-token chain as the client knows it.
#[derive(Clone, Debug)]
struct Session {
    home: usize,
    user: usize,
    /// The token to present next.
    current: String,
    /// The token last presented successfully (its successor, `current`, not used yet).
    previous: Option<String>,
    /// Tokens whose successor has been used since, with when that was: the provider must refuse
    /// them (newest last).
    spent: Vec<(String, Instant)>,
    /// Set aside for the reuse check.
    reuse: bool,
    /// Why the session stopped working, if it did.
    lost: Option<String>,
}

impl Session {
    fn rotated(&mut self, next: String) {
        if let Some(previous) = self.previous.take() {
            self.spent.push((previous, Instant::now()));
            if self.spent.len() > MAX_SPENT_KEPT {
                self.spent.remove(0);
            }
        }
        self.previous = Some(std::mem::replace(&mut self.current, next));
    }
}

/// What [`prepare`] hands to [`LoginRunning::start`].
pub struct LoginPopulation {
    config: LoginConfig,
    http: reqwest::Client,
    provider: Provider,
    accounts: Vec<Account>,
    sessions: Vec<Session>,
    id_tokens_checked: usize,
}

/// Shared by the agents while the drill runs.
#[derive(Default)]
struct Shared {
    sessions: Vec<Session>,
    attempts: Vec<LoginAttempt>,
    sessions_not_kept: usize,
    id_tokens_checked: usize,
    id_tokens_rejected: usize,
    spent_tokens_past_grace: usize,
    chains_not_revoked_by_reuse: usize,
    problems: Vec<String>,
}

impl Shared {
    fn problem(&mut self, text: String) {
        if self.problems.len() < MAX_PROBLEMS_KEPT * 4 {
            self.problems.push(text);
        }
    }
}

/// Counters for the drill's progress line.
#[derive(Default)]
pub struct LoginCounters {
    pub logins_ok: AtomicU64,
    pub logins_failed: AtomicU64,
    pub refreshes_ok: AtomicU64,
    pub refreshes_failed: AtomicU64,
}

/// The login workload under way.
pub struct LoginRunning {
    config: LoginConfig,
    http: reqwest::Client,
    provider: Arc<Provider>,
    accounts: Arc<Vec<Account>>,
    shared: Arc<Mutex<Shared>>,
    started: Instant,
    stop: Arc<AtomicBool>,
    /// Wakes agents waiting for their next turn when the workload stops.
    stop_now: tokio::sync::watch::Sender<bool>,
    tasks: JoinSet<()>,
    prepared: usize,
    pub counters: Arc<LoginCounters>,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn unix_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn random_token(chars: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~";
    (0..chars).map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char).collect()
}

fn ms_since(origin: Instant) -> f64 {
    let now = Instant::now();
    if now >= origin {
        now.duration_since(origin).as_secs_f64() * 1000.0
    } else {
        -(origin.duration_since(now).as_secs_f64() * 1000.0)
    }
}

/// Why one request to one DC did not succeed.
#[derive(Debug)]
enum Failure {
    /// No answer, a 5xx or a 429: worth trying at another DC.
    Unavailable(String),
    /// The provider refused (a 4xx): trying elsewhere would not change the answer.
    Refused(String),
}

impl Failure {
    fn text(&self) -> &str {
        match self {
            Failure::Unavailable(t) | Failure::Refused(t) => t,
        }
    }
}

fn classify(status: u16, body: &str, what: &str) -> Failure {
    let short: String = body.chars().take(160).collect();
    let text = format!("{what}: HTTP {status} {short}");
    if status >= 500 || status == 429 { Failure::Unavailable(text) } else { Failure::Refused(text) }
}

fn transport(error: reqwest::Error, what: &str) -> Failure {
    Failure::Unavailable(format!("{what}: {error}"))
}

/// A browser with no JavaScript: a cookie jar for one site, redirects not followed.
struct Browser<'a> {
    http: &'a reqwest::Client,
    base: &'a str,
    cookies: HashMap<String, String>,
    timeout: Duration,
}

struct Page {
    status: u16,
    location: Option<String>,
    body: String,
}

impl<'a> Browser<'a> {
    fn new(http: &'a reqwest::Client, base: &'a str, timeout: Duration) -> Browser<'a> {
        Browser { http, base, cookies: HashMap::new(), timeout }
    }

    fn url(&self, location: &str) -> String {
        if location.starts_with('/') { format!("{}{location}", self.base) } else { location.to_string() }
    }

    async fn go(&mut self, method: &str, location: &str, form: Option<&[(String, String)]>) -> Result<Page, Failure> {
        let url = self.url(location);
        let mut request = if method == "POST" { self.http.post(&url) } else { self.http.get(&url) }.timeout(self.timeout);
        if !self.cookies.is_empty() {
            let jar: Vec<String> = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
            request = request.header(reqwest::header::COOKIE, jar.join("; "));
        }
        if let Some(fields) = form {
            let body = serde_urlencoded::to_string(fields).map_err(|e| Failure::Refused(format!("form: {e}")))?;
            request = request.header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded").body(body);
        }
        let what = format!("{method} {}", location.split('?').next().unwrap_or_default());
        let response = request.send().await.map_err(|e| transport(e, &what))?;
        let status = response.status().as_u16();
        for value in response.headers().get_all(reqwest::header::SET_COOKIE) {
            let Ok(text) = value.to_str() else { continue };
            let pair = text.split(';').next().unwrap_or_default();
            if let Some((name, value)) = pair.split_once('=') {
                let expired = text.split(';').any(|a| a.trim().eq_ignore_ascii_case("max-age=0"));
                if expired || value.is_empty() {
                    self.cookies.remove(name.trim());
                } else {
                    self.cookies.insert(name.trim().to_string(), value.trim().to_string());
                }
            }
        }
        let location = response.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok()).map(str::to_string);
        let body = read_text(response).await.map_err(|e| transport(e, &what))?;
        if status >= 400 {
            return Err(classify(status, &page_message(&body), &what));
        }
        Ok(Page { status, location, body })
    }
}

async fn read_text(response: reqwest::Response) -> Result<String, reqwest::Error> {
    let bytes = response.bytes().await?;
    Ok(String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_BODY_BYTES)]).into_owned())
}

/// The message of an error page (its first paragraph), or the body's start.
fn page_message(body: &str) -> String {
    let start = body.find("<p").and_then(|i| body[i..].find('>').map(|j| i + j + 1));
    match start {
        Some(s) => body[s..].split("</p>").next().unwrap_or_default().trim().to_string(),
        None => body.chars().take(160).collect(),
    }
}

/// Undoes the login pages' HTML escaping.
fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"").replace("&#39;", "'").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}

fn attribute<'t>(tag: &'t str, name: &str) -> Option<&'t str> {
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    let end = tag[start..].find('"')? + start;
    Some(&tag[start..end])
}

/// The named `<input>` values of the first form posting to `action`.
fn form_fields(page: &str, action: &str) -> Option<Vec<(String, String)>> {
    let marker = format!("action=\"{action}\"");
    let start = page.find(&marker)?;
    let end = page[start..].find("</form>").map_or(page.len(), |e| start + e);
    let form = &page[start..end];
    let mut fields = Vec::new();
    let mut rest = form;
    while let Some(i) = rest.find("<input") {
        let tag_end = rest[i..].find('>').map_or(rest.len(), |e| i + e);
        let tag = &rest[i..tag_end];
        if let Some(name) = attribute(tag, "name") {
            fields.push((unescape(name), unescape(attribute(tag, "value").unwrap_or_default())));
        }
        rest = &rest[tag_end..];
    }
    Some(fields)
}

fn set_field(fields: &mut Vec<(String, String)>, name: &str, value: &str) {
    fields.retain(|(k, _)| k != name);
    fields.push((name.to_string(), value.to_string()));
}

/// A token response, read.
struct Tokens {
    refresh_token: String,
    id_token: Option<String>,
}

async fn token_request(
    http: &reqwest::Client,
    base: &str,
    fields: &[(&str, &str)],
    timeout: Duration,
) -> Result<Tokens, Failure> {
    let body = serde_urlencoded::to_string(fields).map_err(|e| Failure::Refused(format!("form: {e}")))?;
    let response = http
        .post(format!("{base}/oauth2/token"))
        .timeout(timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .map_err(|e| transport(e, "POST /oauth2/token"))?;
    let status = response.status().as_u16();
    let text = read_text(response).await.map_err(|e| transport(e, "POST /oauth2/token"))?;
    if status != 200 {
        return Err(classify(status, &text, "POST /oauth2/token"));
    }
    let value: Value = serde_json::from_str(&text).map_err(|_| Failure::Refused("token response is not JSON".into()))?;
    let refresh_token = value["refresh_token"].as_str().unwrap_or_default().to_string();
    if refresh_token.is_empty() || value["access_token"].as_str().is_none() {
        return Err(Failure::Refused(format!("token response without tokens: {}", text.chars().take(160).collect::<String>())));
    }
    Ok(Tokens { refresh_token, id_token: value["id_token"].as_str().map(str::to_string) })
}

/// The scope of session `i`: every other one is a Matrix client with its own device (and an
/// id_token), the others sign in to another service only.
fn scope_for(i: usize) -> String {
    if i.is_multiple_of(2) {
        "openid profile".to_string()
    } else {
        format!("urn:matrix:client:api:* urn:matrix:client:device:DRILL{} openid", random_token(10).replace(['-', '.', '~'], "x"))
    }
}

/// One whole sign-in at `base`: the authorization request, the sign-in form, consent, the
/// redirect with the code, the token endpoint. Returns the refresh token and the id_token checked.
async fn login_at(
    http: &reqwest::Client,
    provider: &Provider,
    dc: usize,
    base: &str,
    account: &Account,
    scope: &str,
    timeout: Duration,
) -> Result<(Tokens, Result<(), String>), Failure> {
    let verifier = random_token(64);
    let challenge = b64(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()).as_ref());
    let state = random_token(24);
    let nonce = random_token(24);
    let query = serde_urlencoded::to_string([
        ("response_type", "code"),
        ("client_id", provider.client_id.as_str()),
        ("redirect_uri", REDIRECT_URI),
        ("scope", scope),
        ("state", state.as_str()),
        ("nonce", nonce.as_str()),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ])
    .map_err(|e| Failure::Refused(format!("query: {e}")))?;
    let mut browser = Browser::new(http, base, timeout);
    let page = browser.go("GET", &format!("/oauth2/authorize?{query}"), None).await?;
    let mut fields = form_fields(&page.body, "/oauth2/login").ok_or_else(|| Failure::Refused("no sign-in form".into()))?;
    set_field(&mut fields, "username", &account.localpart);
    set_field(&mut fields, "password", PASSWORD);
    let signed_in = browser.go("POST", "/oauth2/login", Some(&fields)).await?;
    let next = match (signed_in.status, signed_in.location) {
        (303, Some(next)) => next,
        (status, _) => return Err(Failure::Refused(format!("sign-in answered {status}: {}", page_message(&signed_in.body)))),
    };
    let consent = browser.go("GET", &next, None).await?;
    let mut fields = form_fields(&consent.body, "/oauth2/authorize").ok_or_else(|| Failure::Refused("no consent form".into()))?;
    set_field(&mut fields, "decision", "allow");
    let answer = browser.go("POST", "/oauth2/authorize", Some(&fields)).await?;
    let callback = match (answer.status, answer.location) {
        (303, Some(location)) => location,
        (status, _) => return Err(Failure::Refused(format!("consent answered {status}"))),
    };
    let url = reqwest::Url::parse(&callback).map_err(|_| Failure::Refused(format!("callback is not a URL: {callback}")))?;
    let params: HashMap<String, String> = url.query_pairs().into_owned().collect();
    if !callback.starts_with(REDIRECT_URI) || params.get("state") != Some(&state) {
        return Err(Failure::Refused(format!("the callback is not ours or lost the state: {callback}")));
    }
    let Some(code) = params.get("code") else {
        return Err(Failure::Refused(format!("callback without a code: {:?}", params.get("error"))));
    };
    let tokens = token_request(
        http,
        base,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT_URI),
            ("client_id", &provider.client_id),
            ("code_verifier", &verifier),
        ],
        timeout,
    )
    .await?;
    let verdict = check_id_token(provider, dc, tokens.id_token.as_deref(), &account.user_id, Some(&nonce));
    Ok((tokens, verdict))
}

/// The relying party's offline checks of an id_token (OpenID Connect Core 3.1.3.7).
fn check_id_token(provider: &Provider, dc: usize, token: Option<&str>, user_id: &str, nonce: Option<&str>) -> Result<(), String> {
    let token = token.ok_or("no id_token in the token response")?;
    let mut parts = token.split('.');
    let (Some(head), Some(body), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err("the id_token is not a compact JWS".into());
    };
    let decode =
        |part: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).map_err(|_| "bad base64url".to_string());
    let header: Value = serde_json::from_slice(&decode(head)?).map_err(|_| "the header is not JSON")?;
    if header["alg"] != "ES256" {
        return Err(format!("alg {} is not ES256", header["alg"]));
    }
    let kid = header["kid"].as_str().unwrap_or_default();
    let key = provider.keys.get(kid).ok_or_else(|| format!("kid {kid} is not in the JWKS"))?;
    let signed = &token[..head.len() + 1 + body.len()];
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, key)
        .verify(signed.as_bytes(), &decode(signature)?)
        .map_err(|_| "the signature does not verify".to_string())?;
    let claims: Value = serde_json::from_slice(&decode(body)?).map_err(|_| "the claims are not JSON")?;
    let issuer = provider.issuers.get(dc).map(String::as_str).unwrap_or_default();
    if claims["iss"] != issuer {
        return Err(format!("iss {} is not {issuer}", claims["iss"]));
    }
    let audience_ok = match &claims["aud"] {
        Value::String(aud) => *aud == provider.client_id,
        Value::Array(auds) => auds.iter().any(|a| *a == provider.client_id.as_str()),
        _ => false,
    };
    if !audience_ok {
        return Err(format!("aud {} is not the client", claims["aud"]));
    }
    if claims["exp"].as_u64().is_none_or(|exp| exp + LEEWAY_S <= unix_s()) {
        return Err(format!("exp {} has passed", claims["exp"]));
    }
    if claims["sub"] != user_id {
        return Err(format!("sub {} is not {user_id}", claims["sub"]));
    }
    if claims["nonce"].as_str() != nonce {
        return Err(format!("nonce {} is not {nonce:?}", claims["nonce"]));
    }
    Ok(())
}

/// Registers the client and the accounts, reads discovery and the JWKS, and signs in the sessions.
pub async fn prepare(config: LoginConfig, progress: &(dyn Fn(&str) + Sync)) -> Result<LoginPopulation, LoginError> {
    let setup = |text: String| LoginError::Setup(text);
    if config.dcs.is_empty() || config.users == 0 {
        return Err(setup("no DC or no accounts".into()));
    }
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .build()
        .map_err(|e| setup(e.to_string()))?;
    let timeout = Duration::from_secs(15);
    let mut issuers = Vec::new();
    let mut metadata = Value::Null;
    for (name, base) in &config.dcs {
        let response = http.get(format!("{base}/.well-known/openid-configuration")).timeout(timeout).send().await;
        metadata = match response {
            Ok(r) if r.status().is_success() => r.json().await.map_err(|e| setup(format!("discovery at {name}: {e}")))?,
            Ok(r) => return Err(setup(format!("discovery at {name}: HTTP {}", r.status()))),
            Err(e) => return Err(setup(format!("discovery at {name}: {e}"))),
        };
        issuers.push(metadata["issuer"].as_str().unwrap_or_default().to_string());
    }
    let jwks_uri = metadata["jwks_uri"].as_str().unwrap_or_default().to_string();
    let jwks: Value = match http.get(&jwks_uri).timeout(timeout).send().await {
        Ok(r) => r.json().await.map_err(|e| setup(format!("JWKS: {e}")))?,
        Err(e) => return Err(setup(format!("JWKS: {e}"))),
    };
    let mut keys = HashMap::new();
    for key in jwks["keys"].as_array().into_iter().flatten() {
        let point = |c: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(key[c].as_str().unwrap_or_default()).ok();
        if key["kty"] == "EC"
            && key["crv"] == "P-256"
            && let (Some(kid), Some(x), Some(y)) = (key["kid"].as_str(), point("x"), point("y"))
        {
            keys.insert(kid.to_string(), [&[4u8][..], &x, &y].concat());
        }
    }
    let registration = json!({
        "client_name": "Fire drill relying party",
        "client_uri": "https://drill.example.org/",
        "redirect_uris": [REDIRECT_URI],
        "application_type": "native",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    });
    let (_, first) = &config.dcs[0];
    let registered = http.post(format!("{first}/oauth2/register")).timeout(timeout).json(&registration).send().await;
    let client_id = match registered {
        Ok(r) if r.status().as_u16() == 201 => {
            let value: Value = r.json().await.map_err(|e| setup(format!("registration: {e}")))?;
            value["client_id"].as_str().unwrap_or_default().to_string()
        }
        Ok(r) => return Err(setup(format!("registration: HTTP {}", r.status()))),
        Err(e) => return Err(setup(format!("registration: {e}"))),
    };
    let provider = Provider { client_id, issuers, keys };

    let tag = run_id();
    let endpoints: Vec<String> = config.dcs.iter().map(|(_, url)| url.clone()).collect();
    let mut accounts = Vec::new();
    for i in 0..config.users {
        let localpart = format!("login_{tag}_{i}");
        let home = crate::setup::rotated(&endpoints, i % endpoints.len());
        let client = Client::register(http.clone(), home, &localpart, PASSWORD).await.map_err(|e| setup(e.to_string()))?;
        accounts.push(Account { localpart, user_id: client.user_id });
    }
    let total = config.sessions + config.reuse_sessions;
    let n = config.dcs.len();
    let mut sessions = Vec::with_capacity(total);
    let mut checked = 0;
    for i in 0..total {
        let home = i % n;
        let user = account_for(config.users, n, home, i / n);
        let (_, base) = &config.dcs[home];
        let scope = scope_for(i);
        let mut last = String::new();
        let mut done = None;
        // Setup retries: a client registered a moment ago may not be readable in every DC yet.
        for attempt in 0..10u64 {
            match login_at(&http, &provider, home, base, &accounts[user], &scope, timeout).await {
                Ok(result) => {
                    done = Some(result);
                    break;
                }
                Err(failure) => last = failure.text().to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100 * (attempt + 1))).await;
        }
        let (tokens, verdict) = done.ok_or_else(|| setup(format!("signing in session {i} at {}: {last}", config.dcs[home].0)))?;
        verdict.map_err(|e| setup(format!("session {i}: id_token rejected: {e}")))?;
        checked += 1;
        sessions.push(Session {
            home,
            user,
            current: tokens.refresh_token,
            previous: None,
            spent: Vec::new(),
            reuse: i >= config.sessions,
            lost: None,
        });
    }
    progress(&format!(
        "login workload: client {} registered, {} accounts, {} sessions signed in through the login pages",
        provider.client_id,
        accounts.len(),
        sessions.len()
    ));
    Ok(LoginPopulation { config, http, provider, accounts, sessions, id_tokens_checked: checked })
}

/// The `k`th account homed in DC `home` (account u is homed in DC u mod n), round-robin.
fn account_for(accounts: usize, n: usize, home: usize, k: usize) -> usize {
    let homed: Vec<usize> = (0..accounts).filter(|u| u % n == home).collect();
    if homed.is_empty() { k % accounts.max(1) } else { homed[k % homed.len()] }
}

/// The DCs to try for a request homed in `home`, in order: twice round.
fn order(home: usize, n: usize) -> impl Iterator<Item = usize> {
    (0..2 * n).map(move |k| (home + k) % n)
}

/// A refresh at the DCs of `dcs` in order, moving on when one does not answer; the same token is
/// presented each time. Returns the tokens and the DC that answered, the DCs tried, and the error.
async fn refresh_across(
    http: &reqwest::Client,
    provider: &Provider,
    config: &LoginConfig,
    dcs: &[usize],
    token: &str,
) -> (Result<(Tokens, usize), Failure>, Vec<String>) {
    let mut tried = Vec::new();
    let mut last = Failure::Unavailable("no DC to try".into());
    for (k, &dc) in dcs.iter().enumerate() {
        let (name, base) = &config.dcs[dc];
        tried.push(name.clone());
        let fields = [("grant_type", "refresh_token"), ("refresh_token", token), ("client_id", provider.client_id.as_str())];
        match token_request(http, base, &fields, config.request_timeout).await {
            Ok(tokens) => return (Ok((tokens, dc)), tried),
            Err(Failure::Refused(text)) => return (Err(Failure::Refused(text)), tried),
            Err(failure) => last = failure,
        }
        if k + 1 == config.dcs.len() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    (Err(last), tried)
}

impl LoginRunning {
    /// Starts the agents; `started` is the drill's time zero.
    pub fn start(population: LoginPopulation, started: Instant) -> LoginRunning {
        let LoginPopulation { config, http, provider, accounts, sessions, id_tokens_checked } = population;
        let prepared = sessions.len();
        let shared = Arc::new(Mutex::new(Shared { sessions, id_tokens_checked, ..Shared::default() }));
        let mut running = LoginRunning {
            config,
            http,
            provider: Arc::new(provider),
            accounts: Arc::new(accounts),
            shared,
            started,
            stop: Arc::new(AtomicBool::new(false)),
            stop_now: tokio::sync::watch::channel(false).0,
            tasks: JoinSet::new(),
            prepared,
            counters: Arc::new(LoginCounters::default()),
        };
        let n = running.config.dcs.len();
        if running.config.logins_per_s > 0.0 {
            let interval = Duration::from_secs_f64(n as f64 / running.config.logins_per_s);
            for dc in 0..n {
                let first_at = Instant::now() + interval.mul_f64(dc as f64 / n as f64);
                running.tasks.spawn(login_loop(running.agent(), dc, interval, first_at));
            }
        }
        if running.config.refreshes_per_s > 0.0 && prepared > 0 {
            let interval = Duration::from_secs_f64(prepared as f64 / running.config.refreshes_per_s);
            for session in 0..prepared {
                let first_at = Instant::now() + interval.mul_f64(session as f64 / prepared as f64);
                running.tasks.spawn(refresh_loop(running.agent(), session, interval, first_at));
            }
        }
        running
    }

    fn agent(&self) -> Agent {
        Agent {
            config: self.config.clone(),
            http: self.http.clone(),
            provider: self.provider.clone(),
            accounts: self.accounts.clone(),
            shared: self.shared.clone(),
            started: self.started,
            stop: self.stop.clone(),
            stopped: self.stop_now.subscribe(),
            counters: self.counters.clone(),
        }
    }

    /// Stops the agents (waiting up to `drain` for requests under way), then checks every session
    /// at a DC other than its home, and spent tokens on the sessions set aside for it.
    pub async fn finish(mut self, drain: Duration) -> LoginHistory {
        self.stop.store(true, Ordering::Relaxed);
        self.stop_now.send_replace(true);
        let deadline = tokio::time::Instant::now() + drain;
        while !self.tasks.is_empty() {
            match tokio::time::timeout_at(deadline, self.tasks.join_next()).await {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    self.tasks.abort_all();
                    while self.tasks.join_next().await.is_some() {}
                }
            }
        }
        let agent = self.agent();
        let count = agent.shared.lock().expect("login lock").sessions.len();
        // A few at a time: each is a short request, and the deployment is still serving the chat.
        let mut checks = JoinSet::new();
        for index in 0..count {
            let agent = agent.clone();
            checks.spawn(async move { agent.final_check(index).await });
            if checks.len() >= 8 {
                checks.join_next().await;
            }
        }
        while checks.join_next().await.is_some() {}

        let shared = std::mem::take(&mut *self.shared.lock().expect("login lock"));
        let lost: Vec<(usize, &Session)> = shared.sessions.iter().enumerate().filter(|(_, s)| s.lost.is_some()).collect();
        let mut problems: Vec<String> = lost
            .iter()
            .take(MAX_PROBLEMS_KEPT)
            .map(|(i, s)| {
                format!("session {i} (home {}) lost: {}", self.config.dcs[s.home].0, s.lost.as_deref().unwrap_or_default())
            })
            .collect();
        problems.extend(shared.problems.iter().take(MAX_PROBLEMS_KEPT * 2).cloned());
        let reuse = |kind: AttemptKind| shared.attempts.iter().filter(move |a| a.kind == kind);
        LoginHistory {
            client_id: self.provider.client_id.clone(),
            prepared_sessions: self.prepared,
            reuse_sessions: shared.sessions.iter().filter(|s| s.reuse).count(),
            sessions_checked: shared.sessions.len(),
            sessions_not_kept: shared.sessions_not_kept,
            sessions_lost: lost.len(),
            refresh_tokens_usable_twice: reuse(AttemptKind::Reuse).filter(|a| a.ok).count(),
            spent_tokens_presented: reuse(AttemptKind::Reuse).count(),
            spent_tokens_past_grace: shared.spent_tokens_past_grace,
            chains_not_revoked_by_reuse: shared.chains_not_revoked_by_reuse,
            id_tokens_rejected: shared.id_tokens_rejected,
            id_tokens_checked: shared.id_tokens_checked,
            problems,
            attempts: shared.attempts,
        }
    }
}

/// What each agent task holds.
#[derive(Clone)]
struct Agent {
    config: LoginConfig,
    http: reqwest::Client,
    provider: Arc<Provider>,
    accounts: Arc<Vec<Account>>,
    shared: Arc<Mutex<Shared>>,
    started: Instant,
    stop: Arc<AtomicBool>,
    stopped: tokio::sync::watch::Receiver<bool>,
    counters: Arc<LoginCounters>,
}

impl Agent {
    /// Waits until `at`; false when the workload stopped meanwhile.
    async fn wait_turn(&mut self, at: Instant) -> bool {
        if self.stop.load(Ordering::Relaxed) {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(at.into()) => !self.stop.load(Ordering::Relaxed),
            _ = self.stopped.changed() => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().expect("login lock")
    }

    fn id_token_verdict(&self, verdict: Result<(), String>, context: String) {
        let mut shared = self.lock();
        shared.id_tokens_checked += 1;
        if let Err(reason) = verdict {
            shared.id_tokens_rejected += 1;
            shared.problem(format!("{context}: id_token rejected: {reason}"));
        }
    }

    /// A new sign-in homed in `home`: the whole flow there, else again at the next DC.
    async fn login(&self, home: usize, sequence: usize) {
        let n = self.config.dcs.len();
        let user = account_for(self.accounts.len(), n, home, sequence / n);
        let scope = scope_for(sequence);
        let start_ms = ms_since(self.started);
        let mut tried = Vec::new();
        let mut outcome = Err(Failure::Unavailable("no DC to try".into()));
        for (k, dc) in order(home, n).enumerate() {
            let (name, base) = &self.config.dcs[dc];
            tried.push(name.clone());
            let account = &self.accounts[user];
            outcome = login_at(&self.http, &self.provider, dc, base, account, &scope, self.config.request_timeout)
                .await
                .map(|r| (r, dc));
            if !matches!(outcome, Err(Failure::Unavailable(_))) {
                break;
            }
            if k + 1 == n {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let end_ms = ms_since(self.started);
        let home_dc = self.config.dcs[home].0.clone();
        let (ok, error, session) = match outcome {
            Ok(((tokens, verdict), dc)) => {
                self.counters.logins_ok.fetch_add(1, Ordering::Relaxed);
                self.id_token_verdict(verdict, format!("login at {}", self.config.dcs[dc].0));
                let mut shared = self.lock();
                let session = if shared.sessions.len() < MAX_SESSIONS {
                    shared.sessions.push(Session {
                        home,
                        user,
                        current: tokens.refresh_token,
                        previous: None,
                        spent: Vec::new(),
                        reuse: false,
                        lost: None,
                    });
                    Some(shared.sessions.len() - 1)
                } else {
                    shared.sessions_not_kept += 1;
                    None
                };
                (true, None, session)
            }
            Err(failure) => {
                self.counters.logins_failed.fetch_add(1, Ordering::Relaxed);
                (false, Some(failure.text().to_string()), None)
            }
        };
        let attempt = LoginAttempt { kind: AttemptKind::Login, session, home_dc, start_ms, end_ms, ok, error, dcs_tried: tried };
        self.lock().attempts.push(attempt);
    }

    /// One refresh of session `index` from the DCs in `dcs`; `kind` says which phase it is.
    async fn refresh(&self, index: usize, dcs: &[usize], kind: AttemptKind) -> bool {
        let (token, home, user) = {
            let shared = self.lock();
            let session = &shared.sessions[index];
            if session.lost.is_some() {
                return false;
            }
            (session.current.clone(), session.home, session.user)
        };
        let start_ms = ms_since(self.started);
        let (outcome, tried) = refresh_across(&self.http, &self.provider, &self.config, dcs, &token).await;
        let end_ms = ms_since(self.started);
        let ok = outcome.is_ok();
        let counter = if ok { &self.counters.refreshes_ok } else { &self.counters.refreshes_failed };
        counter.fetch_add(1, Ordering::Relaxed);
        let mut error = None;
        match outcome {
            Ok((tokens, dc)) => {
                let user_id = self.accounts[user].user_id.clone();
                let verdict = check_id_token(&self.provider, dc, tokens.id_token.as_deref(), &user_id, None);
                self.id_token_verdict(verdict, format!("refresh of session {index} at {}", self.config.dcs[dc].0));
                self.lock().sessions[index].rotated(tokens.refresh_token);
            }
            Err(Failure::Refused(text)) => {
                // The provider refused the token it issued last: the session is gone.
                self.lock().sessions[index].lost = Some(format!("{kind:?} refused: {text}"));
                error = Some(text);
            }
            Err(Failure::Unavailable(text)) => {
                if kind == AttemptKind::FinalRefresh {
                    self.lock().sessions[index].lost = Some(format!("not refreshed after the repair: {text}"));
                }
                error = Some(text);
            }
        }
        let home_dc = self.config.dcs[home].0.clone();
        let attempt = LoginAttempt { kind, session: Some(index), home_dc, start_ms, end_ms, ok, error, dcs_tried: tried };
        self.lock().attempts.push(attempt);
        ok
    }

    /// After the repair: the current token must refresh at another DC than home; on a session set
    /// aside for it, every spent token is then presented and must be refused.
    async fn final_check(&self, index: usize) {
        let n = self.config.dcs.len();
        let (home, reuse) = {
            let shared = self.lock();
            (shared.sessions[index].home, shared.sessions[index].reuse)
        };
        let elsewhere: Vec<usize> = (1..n).map(|k| (home + k) % n).collect();
        let others = if elsewhere.is_empty() { vec![home] } else { elsewhere };
        if !self.refresh(index, &others, AttemptKind::FinalRefresh).await || !reuse {
            return;
        }
        // One more rotation when needed, so that there is a spent token to present.
        if self.lock().sessions[index].spent.is_empty() && !self.refresh(index, &others, AttemptKind::FinalRefresh).await {
            return;
        }
        let (spent, current) = {
            let shared = self.lock();
            let session = &shared.sessions[index];
            (session.spent.clone(), session.current.clone())
        };
        let home_dc = self.config.dcs[home].0.clone();
        let past_grace = spent.iter().filter(|(_, at)| at.elapsed() > self.config.refresh_grace).count();
        self.lock().spent_tokens_past_grace += past_grace;
        for (token, _) in spent.iter().rev() {
            let start_ms = ms_since(self.started);
            let (outcome, tried) = refresh_across(&self.http, &self.provider, &self.config, &others, token).await;
            let end_ms = ms_since(self.started);
            let (ok, error) = match &outcome {
                Ok(_) => (true, Some("a spent refresh token was accepted".to_string())),
                Err(failure) => (false, Some(failure.text().to_string())),
            };
            if let Err(Failure::Unavailable(text)) = &outcome {
                self.lock().problem(format!("session {index}: a spent token could not be presented: {text}"));
            }
            let attempt = LoginAttempt {
                kind: AttemptKind::Reuse,
                session: Some(index),
                home_dc: home_dc.clone(),
                start_ms,
                end_ms,
                ok,
                error,
                dcs_tried: tried,
            };
            self.lock().attempts.push(attempt);
        }
        // The chain is revoked on reuse past the grace period: the current token should be
        // refused now.
        if past_grace > 0 {
            let (outcome, _) = refresh_across(&self.http, &self.provider, &self.config, &others, &current).await;
            if outcome.is_ok() {
                let mut shared = self.lock();
                shared.chains_not_revoked_by_reuse += 1;
                shared.problem(format!("session {index}: the current token still worked after a spent one was presented"));
            }
        }
    }
}

async fn login_loop(mut agent: Agent, home: usize, interval: Duration, first_at: Instant) {
    let mut next = first_at;
    let mut sequence = home;
    while agent.wait_turn(next).await {
        next = (next + interval).max(Instant::now());
        agent.login(home, sequence).await;
        sequence += agent.config.dcs.len();
    }
}

async fn refresh_loop(mut agent: Agent, index: usize, interval: Duration, first_at: Instant) {
    let n = agent.config.dcs.len();
    let home = agent.lock().sessions[index].home;
    let dcs: Vec<usize> = order(home, n).collect();
    let mut next = first_at;
    while agent.wait_turn(next).await {
        next = (next + interval).max(Instant::now());
        if !agent.refresh(index, &dcs, AttemptKind::Refresh).await && agent.lock().sessions[index].lost.is_some() {
            break;
        }
    }
}

/// Attempts of one kind in one phase: attempted, succeeded, failed, failed over.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PhaseCounts {
    pub attempted: usize,
    pub succeeded: usize,
    pub failed: usize,
    /// Attempts that tried more than one DC.
    pub failed_over: usize,
}

/// The login figures of a drill, for the report.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LoginFigures {
    /// Logins and refreshes by phase: before the fault, during it (until the last mark: the
    /// repair), after it. Without a fault, everything is "before".
    pub logins: [PhaseCounts; 3],
    pub refreshes: [PhaseCounts; 3],
    pub prepared_sessions: usize,
    pub reuse_sessions: usize,
    pub sessions_checked: usize,
    pub sessions_lost: usize,
    pub refresh_tokens_usable_twice: usize,
    pub spent_tokens_presented: usize,
    pub spent_tokens_past_grace: usize,
    pub chains_not_revoked_by_reuse: usize,
    pub id_tokens_checked: usize,
    pub id_tokens_rejected: usize,
    /// From the fault until a login started after it first succeeded: the login recovery.
    pub first_login_after_fault_ms: Option<f64>,
    /// Over logins still under way at the fault or started after it, the longest time from the
    /// fault (or the login's start, if later) until a login succeeded: the login outage.
    pub longest_login_wait_ms: Option<f64>,
    /// The same for refreshes.
    pub longest_refresh_wait_ms: Option<f64>,
    /// The engine's election of the key-value buckets a login writes (see
    /// [`EngineFigures::login_election_ms`](crate::drill::history::EngineFigures::login_election_ms)).
    pub login_election_ms: Option<f64>,
    /// `first_login_after_fault_ms` minus `login_election_ms`: haetae's share of the login outage.
    pub login_recovery_beyond_election_ms: Option<f64>,
    pub problems: Vec<String>,
}

/// Measures the login workload: phases are split by the fault mark and the last mark after it;
/// `election_ms` is the engine's election of the buckets a login writes.
pub fn figures(login: &LoginHistory, marks: &[Mark], election_ms: Option<f64>) -> LoginFigures {
    let fault = marks.iter().find(|m| m.label.starts_with("fault")).map(|m| m.at_ms);
    let repaired = fault.and_then(|f| marks.iter().map(|m| m.at_ms).filter(|&at| at > f).reduce(f64::max));
    let phase = |start: f64| match (fault, repaired) {
        (Some(f), _) if start < f => 0,
        (Some(_), Some(r)) if start >= r => 2,
        (Some(_), _) => 1,
        (None, _) => 0,
    };
    let counts = |kind: AttemptKind| {
        let mut out: [PhaseCounts; 3] = Default::default();
        for attempt in login.attempts.iter().filter(|a| a.kind == kind) {
            let c = &mut out[phase(attempt.start_ms)];
            c.attempted += 1;
            if attempt.ok {
                c.succeeded += 1;
            } else {
                c.failed += 1;
            }
            if attempt.dcs_tried.len() > 1 {
                c.failed_over += 1;
            }
        }
        out
    };
    let of_kind = |kind: AttemptKind| login.attempts.iter().filter(move |a| a.kind == kind).collect::<Vec<_>>();
    let logins = of_kind(AttemptKind::Login);
    let longest_login_wait_ms = fault.and_then(|f| longest_wait(&logins, f));
    let first_login_after_fault_ms =
        fault.and_then(|f| logins.iter().filter(|a| a.ok && a.start_ms >= f).map(|a| a.end_ms - f).reduce(f64::min));
    LoginFigures {
        logins: counts(AttemptKind::Login),
        refreshes: counts(AttemptKind::Refresh),
        prepared_sessions: login.prepared_sessions,
        reuse_sessions: login.reuse_sessions,
        sessions_checked: login.sessions_checked,
        sessions_lost: login.sessions_lost,
        refresh_tokens_usable_twice: login.refresh_tokens_usable_twice,
        spent_tokens_presented: login.spent_tokens_presented,
        spent_tokens_past_grace: login.spent_tokens_past_grace,
        chains_not_revoked_by_reuse: login.chains_not_revoked_by_reuse,
        id_tokens_checked: login.id_tokens_checked,
        id_tokens_rejected: login.id_tokens_rejected,
        first_login_after_fault_ms,
        longest_login_wait_ms,
        longest_refresh_wait_ms: fault.and_then(|f| longest_wait(&of_kind(AttemptKind::Refresh), f)),
        login_election_ms: election_ms,
        login_recovery_beyond_election_ms: first_login_after_fault_ms.zip(election_ms).map(|(w, e)| w - e),
        problems: login.problems.clone(),
    }
}

/// Over attempts that had not ended at the fault: the longest time from `max(start, fault)` until
/// the first success ending at or after the attempt's end (its own, if it succeeded).
fn longest_wait(attempts: &[&LoginAttempt], fault_ms: f64) -> Option<f64> {
    let mut successes: Vec<f64> = attempts.iter().filter(|a| a.ok).map(|a| a.end_ms).collect();
    successes.sort_by(f64::total_cmp);
    let run_end = attempts.iter().map(|a| a.end_ms).fold(fault_ms, f64::max);
    attempts
        .iter()
        .filter(|a| a.end_ms >= fault_ms)
        .map(|a| {
            let done = successes.get(successes.partition_point(|&s| s < a.end_ms)).copied().unwrap_or(run_end);
            done - a.start_ms.max(fault_ms)
        })
        .reduce(f64::max)
}

fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "–".to_string(), |v| format!("{v:.0}"))
}

/// The report's "Login" section.
pub fn markdown(figures: &LoginFigures) -> String {
    let mut out = String::from(
        "## Login\n\nPeople signing in to a relying party through the login pages (authorization code with PKCE), \
         and its sessions refreshing (each refresh rotates the refresh token), homed in every DC; a request \
         that fails at its home DC is tried at the next. By when they started: before the fault, during it \
         (until the repair), after.\n\n\
         | | before | during | after |\n|---|---:|---:|---:|\n",
    );
    let cell = |c: &PhaseCounts| {
        let over = if c.failed_over > 0 { format!(", {} failed over", c.failed_over) } else { String::new() };
        format!("{} / {} / {}{over}", c.attempted, c.succeeded, c.failed)
    };
    for (name, row) in [("logins (attempted / succeeded / failed)", &figures.logins), ("refreshes", &figures.refreshes)] {
        let _ = writeln!(out, "| {name} | {} | {} | {} |", cell(&row[0]), cell(&row[1]), cell(&row[2]));
    }
    let _ = writeln!(
        out,
        "\n| check | value |\n|---|---:|\n\
         | sessions checked after the repair, at a DC other than their home | {} |\n\
         | sessions lost | {} |\n\
         | spent refresh tokens presented again (of {} sessions set aside) | {} |\n\
         | of them spent longer ago than the grace period (these revoke their session) | {} |\n\
         | refresh tokens usable twice | {} |\n\
         | id_tokens checked / rejected | {} / {} |\n\
         | logins back: from the fault to the first login started after it that succeeded, ms | {} |\n\
         | engine: election of the login's buckets led from the fault DC, ms | {} |\n\
         | haetae's share (logins back − that election), ms | {} |\n\
         | longest wait for a login after the fault, ms | {} |\n\
         | longest wait for a refresh after the fault, ms | {} |",
        figures.sessions_checked,
        figures.sessions_lost,
        figures.reuse_sessions,
        figures.spent_tokens_presented,
        figures.spent_tokens_past_grace,
        figures.refresh_tokens_usable_twice,
        figures.id_tokens_checked,
        figures.id_tokens_rejected,
        ms(figures.first_login_after_fault_ms),
        ms(figures.login_election_ms),
        ms(figures.login_recovery_beyond_election_ms),
        ms(figures.longest_login_wait_ms),
        ms(figures.longest_refresh_wait_ms),
    );
    if figures.chains_not_revoked_by_reuse > 0 {
        let _ =
            writeln!(out, "\n{} sessions kept working after a spent token older than the grace period was presented.", figures.chains_not_revoked_by_reuse);
    }
    if !figures.problems.is_empty() {
        out.push_str("\nFirst login problems:\n\n");
        for problem in figures.problems.iter().take(MAX_PROBLEMS_KEPT) {
            let _ = writeln!(out, "- {problem}");
        }
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(kind: AttemptKind, start_ms: f64, end_ms: f64, ok: bool, tried: &[&str]) -> LoginAttempt {
        LoginAttempt {
            kind,
            session: None,
            home_dc: "a".into(),
            start_ms,
            end_ms,
            ok,
            error: (!ok).then(|| "no".into()),
            dcs_tried: tried.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn forms_are_read_as_a_browser_posts_them() {
        let page = r#"<p class="error">x</p><form method="post" action="/oauth2/login">
<input type="hidden" name="csrf" value="a.b"><input type="hidden" name="next" value="/oauth2/authorize?a=1&amp;b=&quot;2&quot;">
<input id="username" name="username" type="text" required autofocus value="">
</form><form method="post" action="/oauth2/logout"><input type="hidden" name="other" value="z"></form>"#;
        let fields = form_fields(page, "/oauth2/login").expect("form");
        assert_eq!(
            fields,
            [
                ("csrf".into(), "a.b".into()),
                ("next".into(), "/oauth2/authorize?a=1&b=\"2\"".into()),
                ("username".into(), String::new())
            ]
        );
        assert!(form_fields(page, "/oauth2/authorize").is_none());
    }

    #[test]
    fn a_session_knows_which_of_its_tokens_are_spent() {
        let mut session =
            Session { home: 0, user: 0, current: "r0".into(), previous: None, spent: vec![], reuse: true, lost: None };
        session.rotated("r1".into());
        assert_eq!((session.current.as_str(), session.previous.as_deref(), session.spent.len()), ("r1", Some("r0"), 0));
        session.rotated("r2".into());
        assert_eq!(session.spent.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(), ["r0"]);
        for i in 3..20 {
            session.rotated(format!("r{i}"));
        }
        assert_eq!(session.spent.len(), MAX_SPENT_KEPT);
        assert_eq!(session.spent.last().map(|(t, _)| t.as_str()), Some("r17"));
    }

    #[test]
    fn id_tokens_are_checked_like_a_relying_party() {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 =
            ring::signature::EcdsaKeyPair::generate_pkcs8(&ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("key");
        let pair =
            ring::signature::EcdsaKeyPair::from_pkcs8(&ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                .expect("pair");
        use ring::signature::KeyPair;
        let provider = Provider {
            client_id: "c1".into(),
            issuers: vec!["http://a/".into()],
            keys: HashMap::from([("k1".to_string(), pair.public_key().as_ref().to_vec())]),
        };
        let sign = |claims: Value, kid: &str| {
            let head = b64(json!({ "alg": "ES256", "kid": kid }).to_string().as_bytes());
            let body = b64(claims.to_string().as_bytes());
            let signature = pair.sign(&rng, format!("{head}.{body}").as_bytes()).expect("sign");
            format!("{head}.{body}.{}", b64(signature.as_ref()))
        };
        let good = json!({ "iss": "http://a/", "aud": "c1", "exp": unix_s() + 60, "sub": "@u:t", "nonce": "n" });
        assert_eq!(check_id_token(&provider, 0, Some(&sign(good.clone(), "k1")), "@u:t", Some("n")), Ok(()));
        let refused =
            |claims: Value, kid: &str, nonce: Option<&str>| check_id_token(&provider, 0, Some(&sign(claims, kid)), "@u:t", nonce);
        assert!(refused(good.clone(), "k1", None).is_err(), "nonce");
        assert!(refused(good.clone(), "k2", Some("n")).is_err(), "unknown kid");
        for (field, value) in
            [("iss", json!("http://b/")), ("aud", json!("c2")), ("exp", json!(unix_s() - 60)), ("sub", json!("@v:t"))]
        {
            let mut claims = good.clone();
            claims[field] = value;
            assert!(refused(claims, "k1", Some("n")).is_err(), "{field}");
        }
        let token = sign(good, "k1");
        let tampered = format!("{}x", &token[..token.len() - 1]);
        assert!(check_id_token(&provider, 0, Some(&tampered), "@u:t", Some("n")).is_err());
        assert!(check_id_token(&provider, 0, None, "@u:t", Some("n")).is_err());
    }

    #[test]
    fn figures_split_phases_and_measure_the_login_outage() {
        let marks = vec![
            Mark { at_ms: 1000.0, label: "fault: fire in DC a".into() },
            Mark { at_ms: 5000.0, label: "DC a rebuilt and serving".into() },
        ];
        let history = LoginHistory {
            prepared_sessions: 3,
            reuse_sessions: 2,
            spent_tokens_presented: 7,
            sessions_checked: 5,
            attempts: vec![
                attempt(AttemptKind::Login, 100.0, 200.0, true, &["a"]),
                // In flight at the fault: fails, and the next success ends at 2600.
                attempt(AttemptKind::Login, 900.0, 2000.0, false, &["a", "b", "c"]),
                attempt(AttemptKind::Login, 2100.0, 2600.0, true, &["a", "b"]),
                attempt(AttemptKind::Login, 6000.0, 6100.0, true, &["a"]),
                attempt(AttemptKind::Refresh, 1200.0, 1500.0, true, &["b"]),
                attempt(AttemptKind::FinalRefresh, 7000.0, 7010.0, true, &["b"]),
            ],
            ..LoginHistory::default()
        };
        let figures = figures(&history, &marks, Some(400.0));
        let counts = |c: &PhaseCounts| (c.attempted, c.succeeded, c.failed, c.failed_over);
        assert_eq!(counts(&figures.logins[0]), (2, 1, 1, 1));
        assert_eq!(counts(&figures.logins[1]), (1, 1, 0, 1));
        assert_eq!(counts(&figures.logins[2]), (1, 1, 0, 0));
        assert_eq!(counts(&figures.refreshes[1]), (1, 1, 0, 0));
        assert_eq!(figures.first_login_after_fault_ms, Some(1600.0));
        assert_eq!(figures.longest_login_wait_ms, Some(1600.0));
        assert_eq!(figures.login_recovery_beyond_election_ms, Some(1200.0));
        assert_eq!(figures.longest_refresh_wait_ms, Some(300.0));
        let text = markdown(&figures);
        assert!(
            text.contains(
                "| logins (attempted / succeeded / failed) | 2 / 1 / 1, 1 failed over | 1 / 1 / 0, 1 failed over | 1 / 1 / 0 |"
            ),
            "{text}"
        );
        assert!(text.contains("| sessions lost | 0 |"), "{text}");
        assert!(text.contains("| spent refresh tokens presented again (of 2 sessions set aside) | 7 |"), "{text}");
        assert!(text.contains("| haetae's share (logins back − that election), ms | 1200 |"), "{text}");
        assert!(history.failures().is_empty());
        let lost = LoginHistory { sessions_lost: 1, refresh_tokens_usable_twice: 2, ..history };
        assert_eq!(lost.failures(), ["1 login sessions lost", "2 refresh tokens usable twice"]);
    }
}
