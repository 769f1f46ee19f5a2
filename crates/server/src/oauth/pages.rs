//! The login pages a person sees in a browser: sign in, register, consent to a client, approve
//! a device, manage the account. Every node serves them; a sign-in is a record in replicated KV
//! behind a cookie, so the next page may come from another node or another DC.
//!
//! Forms are protected by a signed double-submit token: the `haetae_csrf` cookie holds a random
//! value, each form carries that value with an HMAC under the deployment's secret, and a POST is
//! accepted only when both agree. The authorization request is checked again when consent is
//! posted; redirect URIs must match a registered one exactly before anything is sent to them.

use std::collections::HashMap;
use std::net::IpAddr;

use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use haetae_store::Bucket;
use serde_json::Value;

use super::grants::{self, CodeGrant, ResponseMode, Scope};
use super::records::{self, BrowserSession, random_secret};
use super::templates::{self, ConsentView, DeviceRow};
use super::{Form, base_url, now_ms, now_s, tokens};
use crate::services::accounts as account;
use crate::services::registration_tokens;
use crate::app::{App, AppState, client_ip};
use crate::error::{ApiResult, MatrixError};

const CSRF_COOKIE: &str = "haetae_csrf";
const LOGIN_COOKIE: &str = "haetae_login";
const MIN_PASSWORD_CHARS: usize = 8;
const MAX_PASSWORD_CHARS: usize = 512;
const MAX_STATE_CHARS: usize = 2048;

/// # GET /oauth2/style.css
pub async fn stylesheet() -> Response {
    let mut response = include_str!("style.css").into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/css; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    response
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// What every page needs to know about the browser asking.
struct Visit {
    base: String,
    /// The CSRF cookie's value, and whether this response must set it.
    csrf_cookie: String,
    set_csrf_cookie: bool,
    /// The signed form token for `csrf_cookie`.
    csrf_field: String,
    /// The sign-in, if the login cookie names a live one.
    session: Option<BrowserSession>,
    login_cookie: Option<String>,
    ip: Option<IpAddr>,
}

fn mac(secret: &[u8], value: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, format!("csrf:{value}").as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref())
}

fn csrf_valid(secret: &[u8], cookie_value: &str, field: &str) -> bool {
    let Some((value, tag)) = field.split_once('.') else { return false };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let Ok(tag) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(tag) else { return false };
    grants::constant_time_eq(value.as_bytes(), cookie_value.as_bytes())
        && ring::hmac::verify(&key, format!("csrf:{value}").as_bytes(), &tag).is_ok()
}

async fn visit(app: &App, headers: &HeaderMap, ip: Option<IpAddr>) -> ApiResult<(Visit, Vec<u8>)> {
    let secret = records::signing_secret(app).await?;
    let existing = cookie(headers, CSRF_COOKIE).filter(|v| v.len() == 43 && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    let (csrf_cookie, set_csrf_cookie) = match existing {
        Some(value) => (value.to_string(), false),
        None => (random_secret(), true),
    };
    let csrf_field = format!("{csrf_cookie}.{}", mac(&secret, &csrf_cookie));
    let login_cookie = cookie(headers, LOGIN_COOKIE).map(str::to_string);
    let session = match &login_cookie {
        Some(value) => records::browser_session(app, value, now_ms()).await?,
        None => None,
    };
    let visit = Visit { base: base_url(app, headers), csrf_cookie, set_csrf_cookie, csrf_field, session, login_cookie, ip };
    Ok((visit, secret))
}

fn set_cookie(response: &mut Response, visit: &Visit, name: &str, value: &str, max_age_s: Option<u64>) {
    let secure = if visit.base.starts_with("https://") { "; Secure" } else { "" };
    let max_age = max_age_s.map(|s| format!("; Max-Age={s}")).unwrap_or_default();
    let text = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax{secure}{max_age}");
    if let Ok(value) = HeaderValue::from_str(&text) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// An HTML response with the headers every page carries.
fn html(visit: Option<&Visit>, status: StatusCode, app: &App, title: &str, body: &str) -> Response {
    let mut response = (status, templates::page(title, &app.config.server_name, body)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'"),
    );
    if let Some(visit) = visit
        && visit.set_csrf_cookie
    {
        set_cookie(&mut response, visit, CSRF_COOKIE, &visit.csrf_cookie, None);
    }
    response
}

/// A page for when the store cannot answer: the person retries.
fn unavailable(app: &App, error: MatrixError) -> Response {
    let status = if error.status == StatusCode::TOO_MANY_REQUESTS { error.status } else { StatusCode::SERVICE_UNAVAILABLE };
    let text = if status == StatusCode::TOO_MANY_REQUESTS {
        "Too many attempts. Wait a moment, then try again."
    } else {
        "The service is briefly unavailable. Try again in a few seconds."
    };
    let mut response = html(None, status, app, "Try again", &templates::message(text, None));
    if let Some(ms) = error.retry_after_ms
        && let Ok(value) = HeaderValue::from_str(&ms.div_ceil(1000).to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

fn see_other(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Where to go after signing in: only pages of this site that want a sign-in (never another
/// site: no open redirect).
fn safe_next(next: Option<&str>) -> String {
    let next = next.unwrap_or("/account");
    let allowed = ["/oauth2/authorize?", "/account", "/device"].iter().any(|p| next.starts_with(p));
    let clean = !next.contains(['\\', '\r', '\n']) && !next.starts_with("//");
    if allowed && clean { next.to_string() } else { "/account".to_string() }
}

fn signup_link(app: &App, next: &str) -> Option<String> {
    app.config
        .registration
        .enabled
        .then(|| format!("/oauth2/signup?{}", serde_urlencoded::to_string([("next", next)]).unwrap_or_default()))
}

fn login_response(app: &App, visit: &Visit, next: &str, username: &str, error: Option<&str>, status: StatusCode) -> Response {
    let body = templates::login_form(&visit.csrf_field, next, username, error, signup_link(app, next).as_deref());
    html(Some(visit), status, app, "Sign in", &body)
}

fn request_path_and_query(request_uri: &axum::http::Uri) -> String {
    request_uri.path_and_query().map(|pq| pq.as_str().to_string()).unwrap_or_else(|| "/account".into())
}

/// Reads a POSTed form and checks its CSRF token. Err is the response to send.
async fn posted(app: &App, request: Request) -> Result<(Visit, Form), Response> {
    let (parts, body) = request.into_parts();
    let (visit, secret) = visit(app, &parts.headers, client_ip(&parts)).await.map_err(|e| unavailable(app, e))?;
    let form = Form::read(Request::from_parts(parts, body)).await.map_err(|e| {
        html(Some(&visit), StatusCode::BAD_REQUEST, app, "Something went wrong", &templates::message(&e.description, None))
    })?;
    let token_ok = form.get("csrf").is_some_and(|field| !visit.set_csrf_cookie && csrf_valid(&secret, &visit.csrf_cookie, field));
    if !token_ok {
        let text = "This form expired or was sent from another site. Go back, reload the page and try again.";
        return Err(html(Some(&visit), StatusCode::FORBIDDEN, app, "Form expired", &templates::message(text, Some(("/account", "Your account")))));
    }
    Ok((visit, form))
}

/// # GET /oauth2/login
pub async fn login_page(State(app): State<AppState>, headers: HeaderMap, Query(query): Query<HashMap<String, String>>) -> Response {
    let (visit, _) = match visit(&app, &headers, None).await {
        Ok(v) => v,
        Err(e) => return unavailable(&app, e),
    };
    let next = safe_next(query.get("next").map(String::as_str));
    if visit.session.is_some() {
        return see_other(&next);
    }
    login_response(&app, &visit, &next, "", None, StatusCode::OK)
}

/// Per-account throttle on password attempts (beside the per-IP one), so guessing one account's
/// password from many addresses is slow too.
fn limit_account(app: &App, localpart: &str) -> ApiResult<()> {
    let limits = &app.config.rate_limits;
    if !limits.enabled {
        return Ok(());
    }
    app.limiter.check(&format!("la:{localpart}"), limits.logins_per_ip_per_s, limits.logins_per_ip_burst)
}

async fn start_browser_session(app: &App, visit: &Visit, user_id: &str, next: &str) -> ApiResult<Response> {
    let cookie_value = random_secret();
    let lifetime_s = app.config.oauth.browser_session_lifetime_s;
    let session = BrowserSession { user_id: user_id.to_string(), auth_time_s: now_s(), expires_ms: now_ms() + lifetime_s * 1000 };
    records::create(app, Bucket::OauthGrants, &records::browser_key(&cookie_value), &session).await?;
    let mut response = see_other(next);
    set_cookie(&mut response, visit, LOGIN_COOKIE, &cookie_value, Some(lifetime_s));
    Ok(response)
}

/// # POST /oauth2/login
pub async fn login(State(app): State<AppState>, request: Request) -> Response {
    let (visit, form) = match posted(&app, request).await {
        Ok(v) => v,
        Err(response) => return response,
    };
    let next = safe_next(form.get("next"));
    let username = form.get("username").unwrap_or_default().trim().to_string();
    let password = form.get("password").unwrap_or_default();
    if let Err(error) = app.limit_logins(visit.ip) {
        return unavailable(&app, error);
    }
    let Ok(localpart) = account::identified_localpart(&app, None, Some(&username)) else {
        return login_response(&app, &visit, &next, &username, Some("Wrong username or password."), StatusCode::UNAUTHORIZED);
    };
    if let Err(error) = limit_account(&app, &localpart) {
        return unavailable(&app, error);
    }
    if username.is_empty() || password.len() > MAX_PASSWORD_CHARS {
        return login_response(&app, &visit, &next, &username, Some("Wrong username or password."), StatusCode::UNAUTHORIZED);
    }
    match account::check_password(&app, &localpart, password).await {
        Ok(()) => {}
        Err(error) if error.status == StatusCode::FORBIDDEN => {
            return login_response(&app, &visit, &next, &username, Some("Wrong username or password."), StatusCode::UNAUTHORIZED);
        }
        Err(error) => return unavailable(&app, error),
    }
    let user_id = app.user_id(&localpart);
    tracing::info!(%user_id, "signed in on the login page");
    start_browser_session(&app, &visit, &user_id, &next).await.unwrap_or_else(|e| unavailable(&app, e))
}

/// # GET /oauth2/signup
pub async fn signup_page(State(app): State<AppState>, headers: HeaderMap, Query(query): Query<HashMap<String, String>>) -> Response {
    let (visit, _) = match visit(&app, &headers, None).await {
        Ok(v) => v,
        Err(e) => return unavailable(&app, e),
    };
    let next = safe_next(query.get("next").map(String::as_str));
    signup_response(&app, &visit, &next, "", None, StatusCode::OK)
}

fn signup_response(app: &App, visit: &Visit, next: &str, username: &str, error: Option<&str>, status: StatusCode) -> Response {
    if !app.config.registration.enabled {
        let body = templates::message("This server does not accept new accounts.", Some(("/oauth2/login", "Sign in")));
        return html(Some(visit), StatusCode::FORBIDDEN, app, "Registration closed", &body);
    }
    let needs_token = app.config.registration.token.is_some() || app.config.registration.requires_token;
    let body = templates::signup_form(&visit.csrf_field, next, username, needs_token, error);
    html(Some(visit), status, app, "Create your account", &body)
}

/// # POST /oauth2/signup
pub async fn signup(State(app): State<AppState>, request: Request) -> Response {
    let (visit, form) = match posted(&app, request).await {
        Ok(v) => v,
        Err(response) => return response,
    };
    let next = safe_next(form.get("next"));
    let username = form.get("username").unwrap_or_default().trim().to_lowercase();
    if !app.config.registration.enabled {
        return signup_response(&app, &visit, &next, &username, None, StatusCode::FORBIDDEN);
    }
    if let Err(error) = app.limit_logins(visit.ip) {
        return unavailable(&app, error);
    }
    let refuse = |message: &str| signup_response(&app, &visit, &next, &username, Some(message), StatusCode::BAD_REQUEST);
    if let Err(error) = haetae_matrix::ids::validate_user_localpart(&username) {
        return refuse(&format!("That username cannot be used: {error}."));
    }
    let password = form.get("password").unwrap_or_default();
    if password.chars().count() < MIN_PASSWORD_CHARS || password.len() > MAX_PASSWORD_CHARS {
        return refuse("The password must have at least 8 characters.");
    }
    if form.get("password_confirm") != Some(password) {
        return refuse("The two passwords differ.");
    }
    // The configured token, or one of the admin API's, whose use is taken and then settled.
    let given = form.get("token").unwrap_or_default();
    let configured =
        app.config.registration.token.as_ref().is_some_and(|expected| grants::constant_time_eq(given.as_bytes(), expected.as_bytes()));
    let needs_token = app.config.registration.token.is_some() || app.config.registration.requires_token;
    let admin_token = needs_token && !configured;
    if admin_token {
        match registration_tokens::is_valid(&app, given).await {
            Ok(true) => {}
            Ok(false) => return refuse("The registration token is not valid."),
            Err(error) => return unavailable(&app, error),
        }
    }
    let password_hash = match account::hash_password(&app, password.to_string()).await {
        Ok(hash) => hash,
        Err(error) => return unavailable(&app, error),
    };
    if admin_token {
        match registration_tokens::take_use(&app, given).await {
            Ok(true) => {}
            Ok(false) => return refuse("The registration token is not valid."),
            Err(error) => return unavailable(&app, error),
        }
    }
    let created = account::create_account(&app, &username, password_hash).await;
    if admin_token && let Err(error) = registration_tokens::settle_use(&app, given, matches!(created, Ok(true))).await {
        return unavailable(&app, error);
    }
    match created {
        Ok(true) => {}
        Ok(false) => return refuse("That username is taken."),
        Err(error) => return unavailable(&app, error),
    }
    let user_id = app.user_id(&username);
    tracing::info!(%user_id, "registered on the login page");
    start_browser_session(&app, &visit, &user_id, &next).await.unwrap_or_else(|e| unavailable(&app, e))
}

/// # POST /oauth2/logout
pub async fn logout(State(app): State<AppState>, request: Request) -> Response {
    let (visit, _form) = match posted(&app, request).await {
        Ok(v) => v,
        Err(response) => return response,
    };
    if let Some(value) = &visit.login_cookie
        && let Err(error) = records::delete(&app, Bucket::OauthGrants, &records::browser_key(value)).await
    {
        return unavailable(&app, error);
    }
    let mut response = see_other("/oauth2/login");
    set_cookie(&mut response, &visit, LOGIN_COOKIE, "", Some(0));
    response
}

/// The fields of an RP-initiated logout request carried through the confirmation form.
const END_SESSION_FIELDS: [&str; 4] = ["id_token_hint", "client_id", "post_logout_redirect_uri", "state"];

/// An RP-initiated logout request (OpenID Connect RP-Initiated Logout 1.0), checked.
struct EndSession {
    /// Where to send the person afterwards (a registered post-logout URI, with `state`).
    redirect: Option<String>,
    client_name: Option<String>,
    fields: Vec<(String, String)>,
}

/// Checks a logout request: an `id_token_hint` must be one this deployment signed for this
/// issuer (expired ones are fine: people sign out long after signing in), a `client_id` must
/// agree with its audience, and a `post_logout_redirect_uri` must be one the client registered,
/// exactly. Err is the page to show instead (nothing is sent to an unchecked address).
async fn check_end_session(app: &App, visit: &Visit, issuer: &str, params: &HashMap<String, String>) -> Result<EndSession, Response> {
    let get = |key: &str| params.get(key).map(String::as_str).filter(|v| !v.is_empty());
    let refuse = |text: &str| html(Some(visit), StatusCode::BAD_REQUEST, app, "Cannot sign out", &templates::message(text, None));
    let mut client_id = get("client_id").map(str::to_string);
    if let Some(hint) = get("id_token_hint") {
        let set = super::keys::current(app).await.map_err(|e| unavailable(app, e))?;
        let claims = super::keys::verify_jwt(&set, hint).ok_or_else(|| refuse("The sign-out request carries an ID token this server did not issue."))?;
        if claims["iss"] != issuer {
            return Err(refuse("The sign-out request carries an ID token this server did not issue."));
        }
        let audience = claims["aud"].as_str().map(str::to_string);
        if client_id.is_some() && client_id != audience {
            return Err(refuse("The sign-out request names two different applications."));
        }
        client_id = audience;
    }
    let client = match &client_id {
        Some(id) => Some(records::client(app, id).await.map_err(|e| unavailable(app, e))?.ok_or_else(|| refuse("This application is not registered with this server."))?),
        None => None,
    };
    let redirect = match get("post_logout_redirect_uri") {
        None => None,
        Some(uri) => {
            let client = client.as_ref().ok_or_else(|| refuse("The sign-out request does not say which application it comes from."))?;
            if !client.post_logout_redirect_uris.iter().any(|registered| registered == uri) {
                return Err(refuse("The application asked to return to an address it did not register."));
            }
            let state = get("state").filter(|s| s.len() <= MAX_STATE_CHARS);
            Some(match state {
                Some(state) => grants::redirect_with(uri, ResponseMode::Query, &[("state", state)]),
                None => uri.to_string(),
            })
        }
    };
    let fields = END_SESSION_FIELDS.iter().filter_map(|k| get(k).map(|v| (k.to_string(), v.to_string()))).collect();
    Ok(EndSession { redirect, client_name: client.map(|c| c.display_name()), fields })
}

/// Where a logout ends: back at the application, or a page saying so.
fn after_end_session(app: &App, visit: &Visit, request: &EndSession, text: &str) -> Response {
    match &request.redirect {
        Some(location) => see_other(location),
        None => html(Some(visit), StatusCode::OK, app, "Signed out", &templates::message(text, Some(("/account", "Your account")))),
    }
}

/// # GET /oauth2/end_session (OpenID Connect RP-Initiated Logout 1.0)
/// Asks the person whether to sign out of this server too; someone not signed in goes straight back.
pub async fn end_session_page(State(app): State<AppState>, request: Request) -> Response {
    let (parts, _) = request.into_parts();
    let (visit, _) = match visit(&app, &parts.headers, client_ip(&parts)).await {
        Ok(v) => v,
        Err(e) => return unavailable(&app, e),
    };
    let params: HashMap<String, String> = serde_urlencoded::from_str(parts.uri.query().unwrap_or_default()).unwrap_or_default();
    let request = match check_end_session(&app, &visit, &super::issuer(&app, &parts.headers), &params).await {
        Ok(request) => request,
        Err(page) => return page,
    };
    let Some(session) = &visit.session else {
        return after_end_session(&app, &visit, &request, "You are signed out.");
    };
    let body = templates::end_session_form(&visit.csrf_field, &request.fields, &session.user_id, request.client_name.as_deref());
    html(Some(&visit), StatusCode::OK, &app, "Sign out?", &body)
}

/// # POST /oauth2/end_session (the confirmation form)
pub async fn end_session(State(app): State<AppState>, request: Request) -> Response {
    let issuer = super::issuer(&app, request.headers());
    let (visit, form) = match posted(&app, request).await {
        Ok(v) => v,
        Err(response) => return response,
    };
    let request = match check_end_session(&app, &visit, &issuer, &form.0).await {
        Ok(request) => request,
        Err(page) => return page,
    };
    if form.get("decision") != Some("sign_out") {
        let text = "You are still signed in.";
        return html(Some(&visit), StatusCode::OK, &app, "Signed in", &templates::message(text, Some(("/account", "Your account"))));
    }
    if let Some(value) = &visit.login_cookie
        && let Err(error) = records::delete(&app, Bucket::OauthGrants, &records::browser_key(value)).await
    {
        return unavailable(&app, error);
    }
    let mut response = after_end_session(&app, &visit, &request, "You are signed out.");
    set_cookie(&mut response, &visit, LOGIN_COOKIE, "", Some(0));
    response
}

/// An authorization request, checked.
struct AuthRequest {
    client: grants::Client,
    redirect_uri: String,
    mode: ResponseMode,
    state: Option<String>,
    scope: Scope,
    code_challenge: String,
    nonce: Option<String>,
    prompt: Option<String>,
    /// OpenID Connect `max_age`: the longest time since the person last typed their password.
    max_age_s: Option<u64>,
    /// The request's parameters, carried through the consent form.
    fields: Vec<(String, String)>,
}

impl AuthRequest {
    /// Whether the space-separated `prompt` holds `value`.
    fn prompts(&self, value: &str) -> bool {
        self.prompt.as_deref().is_some_and(|p| p.split(' ').any(|v| v == value))
    }
}

enum AuthProblem {
    /// The client or redirect URI cannot be trusted: tell the person, send nothing anywhere.
    Page(&'static str),
    /// Tell the client, at its (registered) redirect URI.
    Redirect(String),
    Store(MatrixError),
}

const AUTH_FIELDS: [&str; 11] = [
    "client_id",
    "redirect_uri",
    "response_type",
    "response_mode",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
    "nonce",
    "prompt",
    "max_age",
];

async fn check_auth_request(app: &App, params: &HashMap<String, String>) -> Result<AuthRequest, AuthProblem> {
    let get = |key: &str| params.get(key).map(String::as_str).filter(|v| !v.is_empty());
    let client_id = get("client_id").ok_or(AuthProblem::Page("The application did not say who it is (client_id is missing)."))?;
    let client = records::client(app, client_id)
        .await
        .map_err(AuthProblem::Store)?
        .ok_or(AuthProblem::Page("This application is not registered with this server."))?;
    let redirect_uri = get("redirect_uri").ok_or(AuthProblem::Page("The application did not say where to return (redirect_uri is missing)."))?;
    if !grants::redirect_matches(&client, redirect_uri) {
        return Err(AuthProblem::Page("The application asked to return to an address it did not register."));
    }
    let state = get("state").map(str::to_string);
    if state.as_ref().is_some_and(|s| s.len() > MAX_STATE_CHARS) {
        return Err(AuthProblem::Page("The request is too long."));
    }
    let mode = match get("response_mode") {
        None | Some("query") => ResponseMode::Query,
        Some("fragment") => ResponseMode::Fragment,
        Some(_) => ResponseMode::Query,
    };
    let fail = |error: &str, description: &str| {
        let mut params = vec![("error", error), ("error_description", description)];
        if let Some(state) = &state {
            params.push(("state", state));
        }
        AuthProblem::Redirect(grants::redirect_with(redirect_uri, mode, &params))
    };
    if !matches!(get("response_mode"), None | Some("query" | "fragment")) {
        return Err(fail("invalid_request", "response_mode must be query or fragment"));
    }
    if get("response_type") != Some("code") {
        return Err(fail("unsupported_response_type", "response_type must be code"));
    }
    if !client.allows_grant(grants::GRANT_CODE) {
        return Err(fail("unauthorized_client", "the client did not register the authorization code grant"));
    }
    if get("code_challenge_method") != Some("S256") {
        return Err(fail("invalid_request", "PKCE with code_challenge_method S256 is required"));
    }
    let code_challenge = get("code_challenge").unwrap_or_default();
    if !grants::valid_challenge(code_challenge) {
        return Err(fail("invalid_request", "code_challenge must be 43 base64url characters"));
    }
    let scope = grants::parse_scope(get("scope").unwrap_or_default()).map_err(|r| fail(r.error, &r.description))?;
    let nonce = get("nonce").map(str::to_string);
    if nonce.as_ref().is_some_and(|n| n.len() > 512) {
        return Err(fail("invalid_request", "nonce is too long"));
    }
    let max_age_s = match get("max_age") {
        None => None,
        Some(text) => Some(text.parse::<u64>().map_err(|_| fail("invalid_request", "max_age must be a number of seconds"))?),
    };
    let prompt = get("prompt").map(str::to_string);
    if let Some(prompt) = &prompt {
        let values: Vec<&str> = prompt.split(' ').filter(|p| !p.is_empty()).collect();
        if !values.iter().all(|p| ["none", "login", "consent", "create"].contains(p)) {
            return Err(fail("invalid_request", "prompt values are none, login, consent and create"));
        }
        if values.contains(&"none") && values.len() > 1 {
            return Err(fail("invalid_request", "prompt=none goes alone"));
        }
    }
    let fields = AUTH_FIELDS.iter().filter_map(|k| get(k).map(|v| (k.to_string(), v.to_string()))).collect();
    Ok(AuthRequest {
        redirect_uri: redirect_uri.to_string(),
        client,
        mode,
        state,
        scope,
        code_challenge: code_challenge.to_string(),
        nonce,
        prompt,
        max_age_s,
        fields,
    })
}

fn auth_problem(app: &App, visit: &Visit, problem: AuthProblem) -> Response {
    match problem {
        AuthProblem::Page(text) => html(Some(visit), StatusCode::BAD_REQUEST, app, "Cannot sign in", &templates::message(text, None)),
        AuthProblem::Redirect(location) => see_other(&location),
        AuthProblem::Store(error) => unavailable(app, error),
    }
}

fn consent_view<'a>(request: &'a AuthRequest, client_name: &'a str, user_id: &'a str, host: &'a str) -> ConsentView<'a> {
    ConsentView {
        client_name,
        client_uri: &request.client.client_uri,
        tos_uri: request.client.tos_uri.as_deref(),
        policy_uri: request.client.policy_uri.as_deref(),
        user_id,
        device_id: request.scope.device_id.as_deref(),
        profile: request.scope.profile,
        redirect_host: host,
    }
}

/// # GET /oauth2/authorize
pub async fn authorize(State(app): State<AppState>, request: Request) -> Response {
    let (parts, _) = request.into_parts();
    let (visit, _) = match visit(&app, &parts.headers, client_ip(&parts)).await {
        Ok(v) => v,
        Err(e) => return unavailable(&app, e),
    };
    let params: HashMap<String, String> = serde_urlencoded::from_str(parts.uri.query().unwrap_or_default()).unwrap_or_default();
    let auth = match check_auth_request(&app, &params).await {
        Ok(auth) => auth,
        Err(problem) => return auth_problem(&app, &visit, problem),
    };
    let here = request_path_and_query(&parts.uri);
    let tell_client = |error: &str| {
        let mut params = vec![("error", error)];
        if let Some(state) = &auth.state {
            params.push(("state", state));
        }
        see_other(&grants::redirect_with(&auth.redirect_uri, auth.mode, &params))
    };
    // OpenID Connect: a sign-in older than max_age does not count; prompt=login asks for the
    // password again (and comes back without the prompt, so it asks once).
    let now = now_s();
    let session = visit.session.as_ref().filter(|s| auth.max_age_s.is_none_or(|max| now.saturating_sub(s.auth_time_s) <= max));
    if auth.prompts("login") {
        let without_prompt: Vec<&(String, String)> = auth.fields.iter().filter(|(k, _)| k != "prompt").collect();
        let next = format!("/oauth2/authorize?{}", serde_urlencoded::to_string(&without_prompt).unwrap_or_default());
        return login_response(&app, &visit, &next, "", None, StatusCode::OK);
    }
    let Some(session) = session else {
        if auth.prompts("none") {
            return tell_client("login_required");
        }
        if auth.prompts("create") && app.config.registration.enabled {
            return signup_response(&app, &visit, &here, "", None, StatusCode::OK);
        }
        return login_response(&app, &visit, &here, "", None, StatusCode::OK);
    };
    // Every grant asks the person, so a request that must not show a page cannot be answered.
    if auth.prompts("none") {
        return tell_client("consent_required");
    }
    let name = auth.client.display_name();
    let host = grants::host_of(&auth.redirect_uri).unwrap_or_else(|| auth.redirect_uri.split(':').next().unwrap_or_default().to_string());
    let view = consent_view(&auth, &name, &session.user_id, &host);
    let body = templates::consent_form(&view, &visit.csrf_field, &auth.fields);
    html(Some(&visit), StatusCode::OK, &app, "Allow access?", &body)
}

/// # POST /oauth2/authorize (the consent form)
pub async fn consent(State(app): State<AppState>, request: Request) -> Response {
    let (visit, form) = match posted(&app, request).await {
        Ok(v) => v,
        Err(response) => return response,
    };
    let auth = match check_auth_request(&app, &form.0).await {
        Ok(auth) => auth,
        Err(problem) => return auth_problem(&app, &visit, problem),
    };
    let Some(session) = &visit.session else {
        let here = format!("/oauth2/authorize?{}", serde_urlencoded::to_string(&auth.fields).unwrap_or_default());
        return login_response(&app, &visit, &here, "", Some("Your sign-in expired. Sign in again."), StatusCode::UNAUTHORIZED);
    };
    let mut params: Vec<(&str, String)> = Vec::new();
    if form.get("decision") == Some("allow") {
        let grant = CodeGrant {
            client_id: auth.client.client_id.clone(),
            redirect_uri: auth.redirect_uri.clone(),
            scope: auth.scope.clone(),
            user_id: session.user_id.clone(),
            code_challenge: auth.code_challenge.clone(),
            expires_ms: now_ms() + app.config.oauth.code_lifetime_s * 1000,
            auth_time_s: session.auth_time_s,
            nonce: auth.nonce.clone(),
            used_by_session: None,
        };
        match tokens::issue_code(&app, &grant).await {
            Ok(code) => params.push(("code", code)),
            Err(error) => return unavailable(&app, error),
        }
        tracing::info!(user_id = %session.user_id, client_id = %auth.client.client_id, "authorization granted");
    } else {
        params.push(("error", "access_denied".into()));
        params.push(("error_description", "The user denied the request.".into()));
    }
    if let Some(state) = &auth.state {
        params.push(("state", state.clone()));
    }
    let borrowed: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    see_other(&grants::redirect_with(&auth.redirect_uri, auth.mode, &borrowed))
}

/// What a page that needs a signed-in browser starts from: the visit, the query and the sign-in;
/// or the response to send instead (the sign-in form, coming back here afterwards, or an error).
async fn signed_in_page(app: &App, parts: &axum::http::request::Parts) -> Result<(Visit, HashMap<String, String>, records::BrowserSession), Response> {
    let (visit, _) = visit(app, &parts.headers, client_ip(parts)).await.map_err(|e| unavailable(app, e))?;
    let query: HashMap<String, String> = serde_urlencoded::from_str(parts.uri.query().unwrap_or_default()).unwrap_or_default();
    match visit.session.clone() {
        Some(session) => Ok((visit, query, session)),
        None => Err(login_response(app, &visit, &request_path_and_query(&parts.uri), "", None, StatusCode::OK)),
    }
}

/// # GET /device
pub async fn device_page(State(app): State<AppState>, request: Request) -> Response {
    let (parts, _) = request.into_parts();
    let (visit, query, session) = match signed_in_page(&app, &parts).await {
        Ok(page) => page,
        Err(response) => return response,
    };
    let session = &session;
    let typed = query.get("user_code").cloned().unwrap_or_default();
    if typed.is_empty() {
        return html(Some(&visit), StatusCode::OK, &app, "Connect a device", &templates::device_code_form(&visit.csrf_field, "", None));
    }
    device_confirmation(&app, &visit, &session.user_id, &typed).await
}

async fn device_confirmation(app: &App, visit: &Visit, user_id: &str, typed: &str) -> Response {
    let invalid = |text: &str| {
        html(Some(visit), StatusCode::BAD_REQUEST, app, "Connect a device", &templates::device_code_form(&visit.csrf_field, typed, Some(text)))
    };
    let Some(code) = grants::normalize_user_code(typed) else {
        return invalid("That code is not valid. Check it and try again.");
    };
    let grant = match tokens::pending_device(app, &code).await {
        Ok(Some(grant)) => grant,
        Ok(None) => return invalid("That code is not valid, expired or was already used."),
        Err(error) => return unavailable(app, error),
    };
    let client = match records::client(app, &grant.client_id).await {
        Ok(Some(client)) => client,
        Ok(None) => return invalid("That code is not valid."),
        Err(error) => return unavailable(app, error),
    };
    let name = client.display_name();
    let view = ConsentView {
        client_name: &name,
        client_uri: &client.client_uri,
        tos_uri: client.tos_uri.as_deref(),
        policy_uri: client.policy_uri.as_deref(),
        user_id,
        device_id: grant.scope.device_id.as_deref(),
        profile: grant.scope.profile,
        redirect_host: "",
    };
    html(Some(visit), StatusCode::OK, app, "Allow this device?", &templates::device_confirm_form(&view, &visit.csrf_field, &code))
}

/// # POST /device
pub async fn device_answer(State(app): State<AppState>, request: Request) -> Response {
    let (visit, form) = match posted(&app, request).await {
        Ok(v) => v,
        Err(response) => return response,
    };
    let typed = form.get("user_code").unwrap_or_default().to_string();
    let Some(session) = &visit.session else {
        let next = format!("/device?{}", serde_urlencoded::to_string([("user_code", &typed)]).unwrap_or_default());
        return login_response(&app, &visit, &next, "", Some("Sign in to connect your device."), StatusCode::UNAUTHORIZED);
    };
    let decision = form.get("decision");
    let Some(code) = grants::normalize_user_code(&typed).filter(|_| decision.is_some()) else {
        return device_confirmation(&app, &visit, &session.user_id, &typed).await;
    };
    let approve = (decision == Some("allow")).then(|| (session.user_id.clone(), session.auth_time_s));
    let approved = approve.is_some();
    match tokens::answer_device(&app, &code, approve).await {
        Ok(Ok(_)) if approved => {
            tracing::info!(user_id = %session.user_id, "device authorization approved");
            html(Some(&visit), StatusCode::OK, &app, "Device connected", &templates::message("Done. You can go back to your device.", Some(("/account", "Your sessions"))))
        }
        Ok(Ok(_)) => html(Some(&visit), StatusCode::OK, &app, "Request denied", &templates::message("The device was not connected.", Some(("/account", "Your sessions")))),
        Ok(Err(text)) => html(Some(&visit), StatusCode::BAD_REQUEST, &app, "Connect a device", &templates::device_code_form(&visit.csrf_field, &typed, Some(text))),
        Err(error) => unavailable(&app, error),
    }
}

fn format_seen(ms: Option<u64>) -> String {
    let Some(ms) = ms else { return "never".into() };
    let ago_s = now_ms().saturating_sub(ms) / 1000;
    match ago_s {
        0..60 => "just now".into(),
        60..3600 => format!("{} min ago", ago_s / 60),
        3600..86400 => format!("{} h ago", ago_s / 3600),
        _ => format!("{} days ago", ago_s / 86400),
    }
}

/// Fixed notices the account page shows after an action (never text from the request).
fn notice_text(key: Option<&str>) -> Option<&'static str> {
    match key? {
        "signed_out" => Some("The session was signed out."),
        "password_changed" => Some("Your password was changed."),
        _ => None,
    }
}

/// # GET /account
pub async fn account(State(app): State<AppState>, request: Request) -> Response {
    let (parts, _) = request.into_parts();
    let (visit, query, session) = match signed_in_page(&app, &parts).await {
        Ok(page) => page,
        Err(response) => return response,
    };
    let session = &session;
    if query.get("action").map(String::as_str) == Some(super::uia::CROSS_SIGNING_RESET) {
        let body = templates::cross_signing_reset_form(&session.user_id, &visit.csrf_field, super::uia::APPROVAL_WINDOW_S / 60);
        return html(Some(&visit), StatusCode::OK, &app, "Reset cross-signing?", &body);
    }
    account_response(&app, &visit, &session.user_id, query.get("device_id").map(String::as_str), notice_text(query.get("notice").map(String::as_str)), None, StatusCode::OK).await
}

async fn account_response(
    app: &App,
    visit: &Visit,
    user_id: &str,
    highlight: Option<&str>,
    notice: Option<&str>,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let devices = match account::load_devices(app, user_id).await {
        Ok(devices) => devices,
        Err(error) => return unavailable(app, error),
    };
    let mut rows: Vec<DeviceRow> = devices
        .as_object()
        .map(|map| {
            map.iter()
                .map(|(id, device): (&String, &Value)| DeviceRow {
                    device_id: id.clone(),
                    display_name: device["display_name"].as_str().unwrap_or(id).to_string(),
                    last_seen: format_seen(device["last_seen_ts"].as_u64()),
                    kind: if device["oauth_family"].is_string() { "signed in with OAuth" } else { "signed in with a password" },
                    highlighted: highlight == Some(id.as_str()),
                })
                .collect()
        })
        .unwrap_or_default();
    rows.sort_by(|a, b| a.display_name.cmp(&b.display_name).then(a.device_id.cmp(&b.device_id)));
    let services = match records::signins(app, user_id).await {
        Ok(services) => services,
        Err(error) => return unavailable(app, error),
    };
    let services: Vec<templates::ServiceRow> = services
        .into_iter()
        .map(|(family_id, entry)| templates::ServiceRow { family_id, name: entry.client_name, since: format_seen(Some(entry.created_ms)) })
        .collect();
    let body = templates::account_page(user_id, &visit.csrf_field, &rows, &services, notice, error);
    html(Some(visit), status, app, "Your account", &body)
}

/// # POST /account/devices/delete
pub async fn delete_device(State(app): State<AppState>, request: Request) -> Response {
    let (visit, form) = match posted(&app, request).await {
        Ok(v) => v,
        Err(response) => return response,
    };
    let Some(session) = &visit.session else {
        return login_response(&app, &visit, "/account", "", Some("Sign in again."), StatusCode::UNAUTHORIZED);
    };
    let device_id = form.get("device_id").unwrap_or_default().to_string();
    let devices = match account::load_devices(&app, &session.user_id).await {
        Ok(devices) => devices,
        Err(error) => return unavailable(&app, error),
    };
    let Some(device) = devices.get(&device_id) else {
        return account_response(&app, &visit, &session.user_id, None, None, Some("That session no longer exists."), StatusCode::NOT_FOUND).await;
    };
    let outcome = match device["oauth_family"].as_str() {
        Some(family) => tokens::revoke_family(&app, family).await,
        None => account::remove_devices(&app, &session.user_id, Some(std::slice::from_ref(&device_id)), None).await,
    };
    if let Err(error) = outcome {
        return unavailable(&app, error);
    }
    tracing::info!(user_id = %session.user_id, %device_id, "session signed out from the account page");
    see_other("/account?notice=signed_out")
}

/// # POST /account/services/delete
/// Signs the person out of another service: its refresh token and access token stop working.
pub async fn delete_service(State(app): State<AppState>, request: Request) -> Response {
    let (visit, form) = match posted(&app, request).await {
        Ok(v) => v,
        Err(response) => return response,
    };
    let Some(session) = &visit.session else {
        return login_response(&app, &visit, "/account", "", Some("Sign in again."), StatusCode::UNAUTHORIZED);
    };
    let family_id = form.get("session").unwrap_or_default().to_string();
    // Only a sign-in listed under this person may be ended from their page.
    match records::signin_listed(&app, &session.user_id, &family_id).await {
        Ok(true) => {}
        Ok(false) => {
            return account_response(&app, &visit, &session.user_id, None, None, Some("That sign-in no longer exists."), StatusCode::NOT_FOUND).await;
        }
        Err(error) => return unavailable(&app, error),
    }
    if let Err(error) = tokens::revoke_family(&app, &family_id).await {
        return unavailable(&app, error);
    }
    tracing::info!(user_id = %session.user_id, "signed out of a service from the account page");
    see_other("/account?notice=signed_out")
}

/// # POST /account/cross_signing_reset
pub async fn approve_cross_signing_reset(State(app): State<AppState>, request: Request) -> Response {
    let (visit, _form) = match posted(&app, request).await {
        Ok(v) => v,
        Err(response) => return response,
    };
    let Some(session) = &visit.session else {
        let next = format!("/account?action={}", super::uia::CROSS_SIGNING_RESET);
        return login_response(&app, &visit, &next, "", Some("Sign in again."), StatusCode::UNAUTHORIZED);
    };
    if let Err(error) = super::uia::approve_cross_signing_reset(&app, &session.user_id).await {
        return unavailable(&app, error);
    }
    let text = "Allowed. Go back to your app to finish the reset.";
    html(Some(&visit), StatusCode::OK, &app, "Reset allowed", &templates::message(text, Some(("/account", "Your account"))))
}

/// # POST /account/password
pub async fn change_password(State(app): State<AppState>, request: Request) -> Response {
    let (visit, form) = match posted(&app, request).await {
        Ok(v) => v,
        Err(response) => return response,
    };
    let Some(session) = visit.session.clone() else {
        return login_response(&app, &visit, "/account", "", Some("Sign in again."), StatusCode::UNAUTHORIZED);
    };
    let user_id = session.user_id;
    let refuse = |text: &'static str| account_response(&app, &visit, &user_id, None, None, Some(text), StatusCode::BAD_REQUEST);
    let localpart = haetae_matrix::ids::localpart(&user_id).unwrap_or_default().to_string();
    if let Err(error) = app.limit_logins(visit.ip).and_then(|_| limit_account(&app, &localpart)) {
        return unavailable(&app, error);
    }
    let current = form.get("current_password").unwrap_or_default();
    let new = form.get("new_password").unwrap_or_default();
    if new.chars().count() < MIN_PASSWORD_CHARS || new.len() > MAX_PASSWORD_CHARS {
        return refuse("The new password must have at least 8 characters.").await;
    }
    if form.get("new_password_confirm") != Some(new) {
        return refuse("The two new passwords differ.").await;
    }
    match account::check_password(&app, &localpart, current).await {
        Ok(()) => {}
        Err(error) if error.status == StatusCode::FORBIDDEN => return refuse("The current password is wrong.").await,
        Err(error) => return unavailable(&app, error),
    }
    let password_hash = match account::hash_password(&app, new.to_string()).await {
        Ok(hash) => hash,
        Err(error) => return unavailable(&app, error),
    };
    if let Err(error) = account::set_password_hash(&app, &localpart, password_hash).await {
        return unavailable(&app, error);
    }
    if form.get("logout_devices").is_some()
        && let Err(error) = account::remove_devices(&app, &user_id, None, None).await
    {
        return unavailable(&app, error);
    }
    tracing::info!(%user_id, "password changed on the account page");
    see_other("/account?notice=password_changed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_never_leaves_the_site() {
        assert_eq!(safe_next(Some("/oauth2/authorize?client_id=x")), "/oauth2/authorize?client_id=x");
        assert_eq!(safe_next(Some("/device?user_code=BCDF-GHJK")), "/device?user_code=BCDF-GHJK");
        for bad in ["https://evil.test/", "//evil.test/", "/\\evil.test", "javascript:alert(1)", "/account\r\nSet-Cookie: x", "/other"] {
            assert_eq!(safe_next(Some(bad)), "/account", "{bad}");
        }
        assert_eq!(safe_next(None), "/account");
    }

    #[test]
    fn csrf_tokens_are_bound_to_the_cookie_and_signed() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let cookie_value = random_secret();
        let field = format!("{cookie_value}.{}", mac(secret, &cookie_value));
        assert!(csrf_valid(secret, &cookie_value, &field));
        assert!(!csrf_valid(secret, &random_secret(), &field));
        assert!(!csrf_valid(b"another secret of thirty-two b..", &cookie_value, &field));
        // An attacker who plants a cookie cannot make a matching field without the secret.
        assert!(!csrf_valid(secret, "planted", "planted.AAAA"));
        assert!(!csrf_valid(secret, &cookie_value, &cookie_value));
    }

    #[test]
    fn cookies_are_read_by_name() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("a=1; haetae_csrf=xyz; b=2"));
        assert_eq!(cookie(&headers, CSRF_COOKIE), Some("xyz"));
        assert_eq!(cookie(&headers, LOGIN_COOKIE), None);
    }
}
