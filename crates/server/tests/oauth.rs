//! The OAuth 2.0 API end to end over HTTP, against a real nats-server: client registration, the
//! login and consent pages driven like a browser without JavaScript, the token endpoint, a Matrix
//! call with the access token, refresh rotation and reuse detection, revocation, the device
//! authorization grant, and a flow started on one node and finished on another.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use common::{Node, TestServer, User};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const REDIRECT: &str = "https://app.example.org/callback";
const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// A browser: no redirects followed, cookies kept by name.
struct Browser {
    http: reqwest::Client,
    cookies: HashMap<String, String>,
}

struct Page {
    status: u16,
    location: Option<String>,
    body: String,
}

impl Browser {
    fn new() -> Browser {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Browser { http, cookies: HashMap::new() }
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Page {
        let cookie_header: Vec<String> = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let response = request.header("cookie", cookie_header.join("; ")).send().await.unwrap();
        for value in response.headers().get_all("set-cookie") {
            let text = value.to_str().unwrap();
            let (pair, _) = text.split_once(';').unwrap_or((text, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_string(), value.to_string());
            }
        }
        let status = response.status().as_u16();
        let location = response.headers().get("location").map(|l| l.to_str().unwrap().to_string());
        let body = response.text().await.unwrap();
        Page { status, location, body }
    }

    async fn get(&mut self, url: &str) -> Page {
        let request = self.http.get(url);
        self.send(request).await
    }

    async fn post(&mut self, url: &str, form: &[(&str, &str)]) -> Page {
        let request = self
            .http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(form).unwrap());
        self.send(request).await
    }
}

/// The hidden and prefilled fields of the first form in `html` whose action is `action`.
fn form_fields(html: &str, action: &str) -> Vec<(String, String)> {
    let start = html.find(&format!("action=\"{action}\"")).unwrap_or_else(|| panic!("no form for {action} in {html}"));
    let end = html[start..].find("</form>").unwrap() + start;
    let mut fields = Vec::new();
    for input in html[start..end].split("<input").skip(1) {
        let attr = |name: &str| {
            let key = format!("{name}=\"");
            input.find(&key).map(|i| {
                let rest = &input[i + key.len()..];
                unescape(&rest[..rest.find('"').unwrap()])
            })
        };
        if let (Some(name), Some(value)) = (attr("name"), attr("value")) {
            fields.push((name, value));
        }
    }
    fields
}

fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"").replace("&#39;", "'").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}

fn with(fields: &[(String, String)], extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = fields.iter().filter(|(k, _)| !extra.iter().any(|(e, _)| e == k)).cloned().collect();
    all.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    all
}

fn pairs(fields: &[(String, String)]) -> Vec<(&str, &str)> {
    fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// The parameters of a redirect to the client (query or fragment).
fn callback_params(location: &str) -> HashMap<String, String> {
    let (_, params) = location.split_once(['#', '?']).unwrap();
    serde_urlencoded::from_str(params).unwrap()
}

fn pkce() -> (String, String) {
    let verifier = format!("{}-{}", common::unique_name("verifier"), "x".repeat(40));
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

async fn register_client(base: &str, extra: Value) -> Value {
    let mut body = json!({
        "client_name": "Test client",
        "client_uri": "https://app.example.org/",
        "redirect_uris": [REDIRECT],
        "application_type": "web",
        "grant_types": ["authorization_code", "refresh_token", DEVICE_GRANT],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let response = reqwest::Client::new().post(format!("{base}/oauth2/register")).json(&body).send().await.unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    body
}

async fn token_request(base: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}/oauth2/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string(form).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers().get("cache-control").map(|v| v.to_str().unwrap()), Some("no-store"));
    (response.status().as_u16(), response.json().await.unwrap())
}

fn authorize_url(base: &str, client_id: &str, device_id: &str, challenge: &str, state: &str, mode: &str) -> String {
    let query = serde_urlencoded::to_string([
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", REDIRECT),
        ("scope", &format!("urn:matrix:client:api:* urn:matrix:client:device:{device_id}")),
        ("state", state),
        ("response_mode", mode),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
    ])
    .unwrap();
    format!("{base}/oauth2/authorize?{query}")
}

/// Signs `user` in on the login page shown for `url`, then follows to the page after.
async fn sign_in(browser: &mut Browser, base: &str, url: &str, user: &User) -> Page {
    let page = browser.get(url).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Sign in"), "{}", page.body);
    let fields = form_fields(&page.body, "/oauth2/login");
    let form = with(&fields, &[("username", &user.localpart), ("password", &user.password)]);
    let done = browser.post(&format!("{base}/oauth2/login"), &pairs(&form)).await;
    assert_eq!(done.status, 303, "{}", done.body);
    let next = done.location.unwrap();
    assert!(next.starts_with('/'), "{next}");
    browser.get(&format!("{base}{next}")).await
}

/// Runs the authorization code flow up to the code: sign in (if needed), consent.
async fn authorize(browser: &mut Browser, base: &str, client_id: &str, device_id: &str, user: &User) -> (String, String) {
    let (verifier, challenge) = pkce();
    let state = common::unique_name("state");
    let url = authorize_url(base, client_id, device_id, &challenge, &state, "fragment");
    let consent = if browser.cookies.contains_key("haetae_login") { browser.get(&url).await } else { sign_in(browser, base, &url, user).await };
    assert_eq!(consent.status, 200);
    assert!(consent.body.contains("Allow access?"), "{}", consent.body);
    assert!(consent.body.contains(device_id));
    let fields = form_fields(&consent.body, "/oauth2/authorize");
    let answer = browser.post(&format!("{base}/oauth2/authorize"), &pairs(&with(&fields, &[("decision", "allow")]))).await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    let location = answer.location.unwrap();
    assert!(location.starts_with(&format!("{REDIRECT}#")), "{location}");
    let params = callback_params(&location);
    assert_eq!(params["state"], state);
    (params["code"].clone(), verifier)
}

async fn exchange(base: &str, client_id: &str, code: &str, verifier: &str) -> (u16, Value) {
    token_request(base, &[("grant_type", "authorization_code"), ("code", code), ("redirect_uri", REDIRECT), ("client_id", client_id), ("code_verifier", verifier)]).await
}

async fn refresh(base: &str, client_id: &str, refresh_token: &str) -> (u16, Value) {
    token_request(base, &[("grant_type", "refresh_token"), ("refresh_token", refresh_token), ("client_id", client_id)]).await
}

async fn whoami(server: &TestServer, token: &str) -> common::Resp {
    server.client().get("/account/whoami", token).await
}

#[tokio::test]
async fn authorization_code_flow_refresh_reuse_and_revocation() {
    let mut config = common::test_config();
    config.oauth.refresh_grace_s = 2;
    let server = TestServer::with_config(config).await;
    let base = server.node.base.clone();
    let client = server.client();
    let user = client.register("oauth").await;

    for path in ["/_matrix/client/v1/auth_metadata", "/_matrix/client/unstable/org.matrix.msc2965/auth_metadata"] {
        let metadata = reqwest::get(format!("{base}{path}")).await.unwrap().json::<Value>().await.unwrap();
        assert_eq!(metadata["authorization_endpoint"], format!("{base}/oauth2/authorize"));
        assert_eq!(metadata["code_challenge_methods_supported"], json!(["S256"]));
        assert_eq!(metadata["response_modes_supported"], json!(["query", "fragment"]));
        assert!(metadata["grant_types_supported"].as_array().unwrap().contains(&json!(DEVICE_GRANT)));
        assert_eq!(metadata["account_management_uri"], format!("{base}/account"));
    }

    let registered = register_client(&base, json!({})).await;
    let client_id = registered["client_id"].as_str().unwrap().to_string();
    assert_eq!(registered["redirect_uris"], json!([REDIRECT]));
    // A registration breaking the spec's redirect URI rules is refused.
    let bad = reqwest::Client::new()
        .post(format!("{base}/oauth2/register"))
        .json(&json!({"client_uri": "https://app.example.org/", "redirect_uris": ["https://evil.test/cb"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    assert_eq!(bad.json::<Value>().await.unwrap()["error"], "invalid_redirect_uri");

    let mut browser = Browser::new();
    let (code, verifier) = authorize(&mut browser, &base, &client_id, "OAUTHDEV01", &user).await;
    // A wrong verifier does not spend the code; the right one does, once.
    let (status, body) = exchange(&base, &client_id, &code, &"w".repeat(43)).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
    let (status, tokens) = exchange(&base, &client_id, &code, &verifier).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["scope"], "urn:matrix:client:api:* urn:matrix:client:device:OAUTHDEV01");
    assert!(tokens["expires_in"].as_u64().unwrap() > 0);
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let refresh1 = tokens["refresh_token"].as_str().unwrap().to_string();

    let me = whoami(&server, &access).await.ok();
    assert_eq!(me["user_id"], user.user_id);
    assert_eq!(me["device_id"], "OAUTHDEV01");
    // Any Matrix endpoint takes the token: create a room and sync.
    let room = client.post("/createRoom", &access, json!({"name": "made with OAuth"})).await.ok();
    assert!(room["room_id"].is_string());
    let devices = client.get("/devices", &user.token).await.ok();
    assert!(devices["devices"].as_array().unwrap().iter().any(|d| d["device_id"] == "OAUTHDEV01"));

    // Refresh rotates both tokens; the old access token's record is gone.
    let (status, second) = refresh(&base, &client_id, &refresh1).await;
    assert_eq!(status, 200, "{second}");
    let access2 = second["access_token"].as_str().unwrap().to_string();
    let refresh2 = second["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(refresh2, refresh1);
    assert_eq!(whoami(&server, &access2).await.ok()["device_id"], "OAUTHDEV01");
    // Using the new refresh token spends the old one.
    let grace_ends = std::time::Instant::now() + Duration::from_secs(2);
    let (status, third) = refresh(&base, &client_id, &refresh2).await;
    assert_eq!(status, 200, "{third}");
    let access3 = third["access_token"].as_str().unwrap().to_string();
    let refresh3 = third["refresh_token"].as_str().unwrap().to_string();
    whoami(&server, &access3).await.ok();
    // Within the grace period a late copy of an earlier request changes nothing: the spent
    // token is refused and the session goes on; the previous token yields the same successor
    // again, and the access token the client holds keeps working.
    let (status, late) = refresh(&base, &client_id, &refresh1).await;
    assert_eq!((status, late["error"].as_str()), (400, Some("invalid_grant")), "{late}");
    let (status, again) = refresh(&base, &client_id, &refresh2).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["refresh_token"], third["refresh_token"]);
    whoami(&server, &access3).await.ok();
    whoami(&server, again["access_token"].as_str().unwrap()).await.ok();
    // After it, replaying the first refresh token revokes the whole chain and its device.
    let replay = loop {
        let (status, replay) = refresh(&base, &client_id, &refresh1).await;
        assert_eq!((status, replay["error"].as_str()), (400, Some("invalid_grant")));
        if replay["error_description"].as_str().is_some_and(|d| d.contains("revoked")) {
            break replay;
        }
        assert!(std::time::Instant::now() < grace_ends + Duration::from_secs(10), "reuse after the grace period did not revoke: {replay}");
        whoami(&server, &access3).await.ok();
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(std::time::Instant::now() >= grace_ends, "revoked within the grace period: {replay}");
    whoami(&server, &access3).await.expect_err(401, "M_UNKNOWN_TOKEN");
    let (status, _) = refresh(&base, &client_id, &refresh3).await;
    assert_eq!(status, 400);
    let devices = client.get("/devices", &user.token).await.ok();
    assert!(!devices["devices"].as_array().unwrap().iter().any(|d| d["device_id"] == "OAUTHDEV01"));

    // A code used twice: refused, and what it was exchanged for is revoked.
    let (code, verifier) = authorize(&mut browser, &base, &client_id, "OAUTHDEV02", &user).await;
    let (_, tokens) = exchange(&base, &client_id, &code, &verifier).await;
    let access = tokens["access_token"].as_str().unwrap().to_string();
    whoami(&server, &access).await.ok();
    let (status, again) = exchange(&base, &client_id, &code, &verifier).await;
    assert_eq!((status, again["error"].as_str()), (400, Some("invalid_grant")));
    whoami(&server, &access).await.expect_err(401, "M_UNKNOWN_TOKEN");

    // Revocation (RFC 7009) with the refresh token ends the access token and the device.
    let (code, verifier) = authorize(&mut browser, &base, &client_id, "OAUTHDEV03", &user).await;
    let (_, tokens) = exchange(&base, &client_id, &code, &verifier).await;
    let access = tokens["access_token"].as_str().unwrap().to_string();
    whoami(&server, &access).await.ok();
    let revoke = |token: String| {
        let base = base.clone();
        async move {
            reqwest::Client::new()
                .post(format!("{base}/oauth2/revoke"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(serde_urlencoded::to_string([("token", token.as_str()), ("token_type_hint", "refresh_token")]).unwrap())
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(revoke(tokens["refresh_token"].as_str().unwrap().to_string()).await, 200);
    whoami(&server, &access).await.expect_err(401, "M_UNKNOWN_TOKEN");
    assert_eq!(revoke("not a token".into()).await, 200);

    // Password login keeps working beside OAuth.
    let again = client.login(&user).await;
    whoami(&server, &again.token).await.ok();
}

/// A token request with an `Authorization: Basic` header.
async fn token_request_basic(base: &str, id: &str, secret: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}/oauth2/token"))
        .basic_auth(id, Some(secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string(form).unwrap())
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn confidential_clients_authenticate_at_the_token_endpoint() {
    let server = TestServer::start().await;
    let base = server.node.base.clone();
    let user = server.client().register("confidential").await;
    let metadata = reqwest::get(format!("{base}/.well-known/openid-configuration")).await.unwrap().json::<Value>().await.unwrap();
    assert_eq!(metadata["token_endpoint_auth_methods_supported"], json!(["none", "client_secret_basic", "client_secret_post"]));

    // client_secret_basic: the secret is given once, at registration.
    let registered = register_client(&base, json!({"token_endpoint_auth_method": "client_secret_basic"})).await;
    let client_id = registered["client_id"].as_str().unwrap().to_string();
    let secret = registered["client_secret"].as_str().unwrap().to_string();
    assert_eq!(registered["token_endpoint_auth_method"], "client_secret_basic");
    assert_eq!(registered["client_secret_expires_at"], 0);
    assert!(secret.len() >= 43);
    // The same registration again is another client with another secret.
    let twin = register_client(&base, json!({"token_endpoint_auth_method": "client_secret_basic"})).await;
    assert_ne!(twin["client_id"], registered["client_id"]);
    assert_ne!(twin["client_secret"], registered["client_secret"]);

    let mut browser = Browser::new();
    let (code, verifier) = authorize(&mut browser, &base, &client_id, "CONFDEV01", &user).await;
    let grant = [("grant_type", "authorization_code"), ("code", code.as_str()), ("redirect_uri", REDIRECT), ("code_verifier", verifier.as_str())];
    // Without the secret, with a wrong one, or with the secret in the form (not the registered
    // method): invalid_client, and the code is not spent.
    let (status, body) = exchange(&base, &client_id, &code, &verifier).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "{body}");
    let (status, body) = token_request_basic(&base, &client_id, "not-the-secret", &grant).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "{body}");
    let mut posted = grant.to_vec();
    posted.extend([("client_id", client_id.as_str()), ("client_secret", secret.as_str())]);
    let (status, body) = token_request(&base, &posted).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "{body}");
    let (status, body) = token_request_basic(&base, twin["client_id"].as_str().unwrap(), twin["client_secret"].as_str().unwrap(), &grant).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "another client's code: {body}");
    let (status, tokens) = token_request_basic(&base, &client_id, &secret, &grant).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(whoami(&server, tokens["access_token"].as_str().unwrap()).await.ok()["device_id"], "CONFDEV01");
    // Refreshes authenticate too.
    let refresh_token = tokens["refresh_token"].as_str().unwrap();
    let (status, body) = refresh(&base, &client_id, refresh_token).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "{body}");
    let (status, refreshed) = token_request_basic(&base, &client_id, &secret, &[("grant_type", "refresh_token"), ("refresh_token", refresh_token)]).await;
    assert_eq!(status, 200, "{refreshed}");

    // client_secret_post: the secret goes in the form, not in a Basic header.
    let registered = register_client(&base, json!({"token_endpoint_auth_method": "client_secret_post"})).await;
    let client_id = registered["client_id"].as_str().unwrap().to_string();
    let secret = registered["client_secret"].as_str().unwrap().to_string();
    let (code, verifier) = authorize(&mut browser, &base, &client_id, "CONFDEV02", &user).await;
    let grant = [("grant_type", "authorization_code"), ("code", code.as_str()), ("redirect_uri", REDIRECT), ("code_verifier", verifier.as_str())];
    let (status, body) = token_request_basic(&base, &client_id, &secret, &grant).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "{body}");
    let mut posted = grant.to_vec();
    posted.extend([("client_id", client_id.as_str()), ("client_secret", "wrong")]);
    let (status, body) = token_request(&base, &posted).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "{body}");
    posted.pop();
    posted.push(("client_secret", secret.as_str()));
    let (status, tokens) = token_request(&base, &posted).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(whoami(&server, tokens["access_token"].as_str().unwrap()).await.ok()["device_id"], "CONFDEV02");

    // Public clients are as they were: no secret, and an unknown method is refused.
    let public = register_client(&base, json!({})).await;
    assert_eq!(public["token_endpoint_auth_method"], "none");
    assert!(public.get("client_secret").is_none());
    let refused = reqwest::Client::new()
        .post(format!("{base}/oauth2/register"))
        .json(&json!({"client_uri": "https://app.example.org/", "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "private_key_jwt"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 400);
    assert_eq!(refused.json::<Value>().await.unwrap()["error"], "invalid_client_metadata");
}

#[tokio::test]
async fn login_pages_refuse_forgery_and_foreign_redirects() {
    let server = TestServer::start().await;
    let base = server.node.base.clone();
    let user = server.client().register("pages").await;
    let client_id = register_client(&base, json!({})).await["client_id"].as_str().unwrap().to_string();
    let (_, challenge) = pkce();
    let mut browser = Browser::new();

    // An unregistered redirect URI: an error page, never a redirect there.
    let url = authorize_url(&base, &client_id, "DEV", &challenge, "s", "query").replace("callback", "elsewhere");
    let page = browser.get(&url).await;
    assert_eq!((page.status, page.location), (400, None));
    let page = browser.get(&authorize_url(&base, "nobody", "DEV", &challenge, "s", "query")).await;
    assert_eq!((page.status, page.location), (400, None));
    // A bad parameter with a good redirect URI goes back to the client, with its state.
    let url = authorize_url(&base, &client_id, "DEV", &challenge, "s1", "query").replace("S256", "plain");
    let page = browser.get(&url).await;
    assert_eq!(page.status, 303);
    let params = callback_params(page.location.as_deref().unwrap());
    assert_eq!((params["error"].as_str(), params["state"].as_str()), ("invalid_request", "s1"));
    assert!(page.location.unwrap().starts_with(&format!("{REDIRECT}?")));

    // The login form without its CSRF token, or with another browser's, is refused.
    let login = browser.get(&format!("{base}/oauth2/login")).await;
    let fields = form_fields(&login.body, "/oauth2/login");
    let forged = browser.post(&format!("{base}/oauth2/login"), &[("username", &user.localpart), ("password", &user.password)]).await;
    assert_eq!(forged.status, 403);
    let mut other = Browser::new();
    other.get(&format!("{base}/oauth2/login")).await;
    let stolen = other.post(&format!("{base}/oauth2/login"), &pairs(&with(&fields, &[("username", &user.localpart), ("password", &user.password)]))).await;
    assert_eq!(stolen.status, 403);
    // A wrong password: the form again, no session.
    let wrong = browser.post(&format!("{base}/oauth2/login"), &pairs(&with(&fields, &[("username", &user.localpart), ("password", "nope")]))).await;
    assert_eq!(wrong.status, 401);
    assert!(!browser.cookies.contains_key("haetae_login"));
    // `next` pointing at another site lands on the account page instead.
    let form = with(&fields, &[("username", &user.localpart), ("password", &user.password)]);
    let mut form: Vec<(String, String)> = form.into_iter().filter(|(k, _)| k != "next").collect();
    form.push(("next".into(), "https://evil.test/".into()));
    let done = browser.post(&format!("{base}/oauth2/login"), &pairs(&form)).await;
    assert_eq!((done.status, done.location.as_deref()), (303, Some("/account")));

    // The account page: sessions listed, one signed out, the password changed.
    let account = browser.get(&format!("{base}/account")).await;
    assert_eq!(account.status, 200);
    assert!(account.body.contains(&user.device_id), "{}", account.body);
    let fields = form_fields(&account.body, "/account/devices/delete");
    let signed_out = browser.post(&format!("{base}/account/devices/delete"), &pairs(&fields)).await;
    assert_eq!(signed_out.status, 303);
    server.client().get("/account/whoami", &user.token).await.expect_err(401, "M_UNKNOWN_TOKEN");
    let account = browser.get(&format!("{base}/account")).await;
    let fields = form_fields(&account.body, "/account/password");
    let new_password = "a brand new password";
    let form = with(&fields, &[("current_password", &user.password), ("new_password", new_password), ("new_password_confirm", new_password)]);
    let changed = browser.post(&format!("{base}/account/password"), &pairs(&form)).await;
    assert_eq!((changed.status, changed.location.as_deref()), (303, Some("/account?notice=password_changed")));
    let relogin = User { password: new_password.into(), ..user.clone() };
    server.client().login(&relogin).await;

    // Signing out of the browser ends the sign-in.
    let account = browser.get(&format!("{base}/account")).await;
    let fields = form_fields(&account.body, "/oauth2/logout");
    browser.post(&format!("{base}/oauth2/logout"), &pairs(&fields)).await;
    let after = browser.get(&format!("{base}/account")).await;
    assert!(after.body.contains("action=\"/oauth2/login\""));
}

#[tokio::test]
async fn device_grant_and_a_flow_across_two_nodes() {
    let server = TestServer::start().await;
    let other = Node::start(&server.nats, common::test_config()).await;
    let (a, b) = (server.node.base.clone(), other.base.clone());
    let user = server.client().register("device").await;
    let client_id = register_client(&a, json!({})).await["client_id"].as_str().unwrap().to_string();

    // Device authorization at node A; the person approves at node B; the device polls node A.
    let response = reqwest::Client::new()
        .post(format!("{a}/oauth2/device_authorization"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string([("client_id", client_id.as_str()), ("scope", "urn:matrix:client:api:* urn:matrix:client:device:TVDEVICE")]).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let grant: Value = response.json().await.unwrap();
    let device_code = grant["device_code"].as_str().unwrap().to_string();
    let user_code = grant["user_code"].as_str().unwrap().to_string();
    assert!(grant["verification_uri_complete"].as_str().unwrap().contains(&user_code));
    let poll = || {
        let (a, device_code, client_id) = (a.clone(), device_code.clone(), client_id.clone());
        async move { token_request(&a, &[("grant_type", DEVICE_GRANT), ("device_code", &device_code), ("client_id", &client_id)]).await }
    };
    let (status, pending) = poll().await;
    assert_eq!((status, pending["error"].as_str()), (400, Some("authorization_pending")));

    let mut browser = Browser::new();
    let confirm = sign_in(&mut browser, &b, &format!("{b}/device?user_code={}", user_code.to_lowercase()), &user).await;
    assert!(confirm.body.contains("Allow this device?"), "{}", confirm.body);
    let fields = form_fields(&confirm.body, "/device");
    let done = browser.post(&format!("{b}/device"), &pairs(&with(&fields, &[("decision", "allow")]))).await;
    assert_eq!(done.status, 200, "{}", done.body);
    let tokens = common::eventually(std::time::Duration::from_secs(20), "device poll succeeds", || async {
        let (status, body) = poll().await;
        (status == 200).then_some(body)
    })
    .await;
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(whoami(&server, access).await.ok()["device_id"], "TVDEVICE");
    let (status, used) = poll().await;
    assert_eq!((status, used["error"].as_str()), (400, Some("invalid_grant")));

    // The authorization code flow: signed in at B, code exchanged at A, refreshed at B.
    let (code, verifier) = authorize(&mut browser, &b, &client_id, "CROSSDC", &user).await;
    let (status, tokens) = exchange(&a, &client_id, &code, &verifier).await;
    assert_eq!(status, 200, "{tokens}");
    let (status, refreshed) = refresh(&b, &client_id, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{refreshed}");
    let at_b = server.client().at(&b);
    assert_eq!(at_b.get("/account/whoami", refreshed["access_token"].as_str().unwrap()).await.ok()["device_id"], "CROSSDC");
}

// ---------------------------------------------------------------------------------------------
// OpenID Connect: haetae as the login provider of other services.

const RP_REDIRECT: &str = "https://rp.example.org/callback";

fn b64url(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).unwrap_or_else(|_| panic!("not base64url: {text}"))
}

/// The JWKS a relying party would cache.
async fn fetch_jwks(base: &str) -> Value {
    let response = reqwest::get(format!("{base}/oauth2/keys.json")).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let cache = response.headers().get("cache-control").unwrap().to_str().unwrap().to_string();
    assert!(cache.starts_with("public, max-age="), "{cache}");
    response.json().await.unwrap()
}

fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_string()).collect()
}

/// Verifies an id_token's ES256 signature against `jwks` offline, as a relying party does, and
/// returns (header, claims). Panics on any defect.
fn verify_id_token(id_token: &str, jwks: &Value) -> (Value, Value) {
    let parts: Vec<&str> = id_token.split('.').collect();
    assert_eq!(parts.len(), 3, "{id_token}");
    let header: Value = serde_json::from_slice(&b64url(parts[0])).unwrap();
    let claims: Value = serde_json::from_slice(&b64url(parts[1])).unwrap();
    assert_eq!(header["alg"], "ES256");
    let kid = header["kid"].as_str().unwrap();
    let jwk = jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == kid).unwrap_or_else(|| panic!("kid {kid} not in {jwks}"));
    assert_eq!((jwk["kty"].as_str(), jwk["crv"].as_str(), jwk["use"].as_str()), (Some("EC"), Some("P-256"), Some("sig")));
    assert!(jwk.get("d").is_none(), "a private key is published: {jwk}");
    let mut point = vec![4u8];
    point.extend(b64url(jwk["x"].as_str().unwrap()));
    point.extend(b64url(jwk["y"].as_str().unwrap()));
    let key = ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, point);
    let signed = format!("{}.{}", parts[0], parts[1]);
    key.verify(signed.as_bytes(), &b64url(parts[2])).expect("the id_token's signature verifies");
    (header, claims)
}

fn now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// Checks the claims every id_token must have (OpenID Connect Core 3.1.3.7).
fn check_claims(claims: &Value, issuer: &str, client_id: &str, user: &User, access_token: &str) {
    assert_eq!(claims["iss"], issuer);
    assert_eq!(claims["aud"], client_id);
    assert_eq!(claims["sub"], user.user_id);
    let (iat, exp, auth_time) = (claims["iat"].as_u64().unwrap(), claims["exp"].as_u64().unwrap(), claims["auth_time"].as_u64().unwrap());
    let now = now_s();
    assert!(iat <= now + 5 && iat + 60 >= now, "iat {iat}, now {now}");
    assert!(exp > now && exp > iat, "exp {exp}");
    assert!(auth_time <= iat, "auth_time {auth_time} after iat {iat}");
    let digest = Sha256::digest(access_token.as_bytes());
    assert_eq!(claims["at_hash"].as_str().unwrap(), base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..16]));
}

fn authorize_query(base: &str, client_id: &str, redirect: &str, scope: &str, challenge: &str, state: &str, nonce: Option<&str>) -> String {
    let mut params = vec![
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", redirect),
        ("scope", scope),
        ("state", state),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
    ];
    if let Some(nonce) = nonce {
        params.push(("nonce", nonce));
    }
    format!("{base}/oauth2/authorize?{}", serde_urlencoded::to_string(params).unwrap())
}

/// The authorization code flow for a relying party, up to the code: returns (code, verifier,
/// the consent page's text).
async fn authorize_rp(browser: &mut Browser, base: &str, client_id: &str, scope: &str, nonce: Option<&str>, user: &User) -> (String, String, String) {
    let (verifier, challenge) = pkce();
    let state = common::unique_name("state");
    let url = authorize_query(base, client_id, RP_REDIRECT, scope, &challenge, &state, nonce);
    let consent = if browser.cookies.contains_key("haetae_login") { browser.get(&url).await } else { sign_in(browser, base, &url, user).await };
    assert_eq!(consent.status, 200, "{}", consent.body);
    assert!(consent.body.contains("Allow access?"), "{}", consent.body);
    let fields = form_fields(&consent.body, "/oauth2/authorize");
    let answer = browser.post(&format!("{base}/oauth2/authorize"), &pairs(&with(&fields, &[("decision", "allow")]))).await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    let location = answer.location.unwrap();
    assert!(location.starts_with(&format!("{RP_REDIRECT}?")), "{location}");
    let params = callback_params(&location);
    assert_eq!(params["state"], state);
    (params["code"].clone(), verifier, consent.body)
}

async fn register_rp(base: &str) -> String {
    let body = json!({
        "client_name": "Taxi",
        "client_uri": "https://rp.example.org/",
        "redirect_uris": [RP_REDIRECT],
        "application_type": "web",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    });
    let response = reqwest::Client::new().post(format!("{base}/oauth2/register")).json(&body).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 201);
    response.json::<Value>().await.unwrap()["client_id"].as_str().unwrap().to_string()
}

async fn userinfo(base: &str, token: Option<&str>) -> (u16, Option<String>, Value) {
    let mut request = reqwest::Client::new().get(format!("{base}/oauth2/userinfo"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let challenge = response.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_string());
    (status, challenge, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn another_service_signs_people_in_and_verifies_id_tokens_offline() {
    let server = TestServer::start().await;
    let other = Node::start(&server.nats, common::test_config()).await;
    let (a, b) = (server.node.base.clone(), other.base.clone());
    let client = server.client();
    let user = client.register("oidc").await;
    client.put(&format!("/profile/{}/displayname", common::enc(&user.user_id)), &user.token, json!({"displayname": "Oidc Person"})).await.ok();

    // Discovery: one document for Matrix clients and relying parties, on every node.
    let discovery: Value = reqwest::get(format!("{a}/.well-known/openid-configuration")).await.unwrap().json().await.unwrap();
    let issuer = discovery["issuer"].as_str().unwrap().to_string();
    assert_eq!(issuer, format!("{a}/"));
    assert_eq!(discovery["jwks_uri"], format!("{a}/oauth2/keys.json"));
    assert_eq!(discovery["userinfo_endpoint"], format!("{a}/oauth2/userinfo"));
    assert_eq!(discovery["id_token_signing_alg_values_supported"], json!(["ES256"]));
    assert_eq!(discovery["subject_types_supported"], json!(["public"]));
    assert!(discovery["scopes_supported"].as_array().unwrap().contains(&json!("profile")));
    let matrix: Value = reqwest::get(format!("{a}/_matrix/client/v1/auth_metadata")).await.unwrap().json().await.unwrap();
    assert_eq!(matrix, discovery);

    // Both nodes publish the same keys.
    let jwks = fetch_jwks(&a).await;
    assert_eq!(kids(&jwks).len(), 1, "{jwks}");
    assert_eq!(fetch_jwks(&b).await, jwks);

    // Sign-in with `openid profile`: the consent page promises no Matrix access.
    let client_id = register_rp(&a).await;
    let devices_before = client.get("/devices", &user.token).await.ok()["devices"].as_array().unwrap().len();
    let mut browser = Browser::new();
    let nonce = common::unique_name("nonce");
    let (code, verifier, consent) = authorize_rp(&mut browser, &a, &client_id, "openid profile", Some(&nonce), &user).await;
    assert!(consent.contains("no access to your messages"), "{consent}");
    let form = [("grant_type", "authorization_code"), ("code", code.as_str()), ("redirect_uri", RP_REDIRECT), ("client_id", client_id.as_str()), ("code_verifier", verifier.as_str())];
    let (status, tokens) = token_request(&a, &form).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["scope"], "openid profile");
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let (header, claims) = verify_id_token(tokens["id_token"].as_str().unwrap(), &jwks);
    assert_eq!(header["kid"], kids(&jwks)[0]);
    check_claims(&claims, &issuer, &client_id, &user, &access);
    assert_eq!(claims["nonce"], nonce);
    assert_eq!(claims["name"], "Oidc Person");
    assert_eq!(claims["preferred_username"], user.localpart);

    // The access token is for userinfo only: no Matrix endpoint takes it, and no device appeared.
    let (status, _, info) = userinfo(&b, Some(&access)).await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["sub"], user.user_id);
    assert_eq!(info["preferred_username"], user.localpart);
    whoami(&server, &access).await.expect_err(401, "M_UNKNOWN_TOKEN");
    let devices_after = client.get("/devices", &user.token).await.ok()["devices"].as_array().unwrap().len();
    assert_eq!(devices_after, devices_before);

    // Refresh at the other node: a new id_token for the same sign-in (no nonce), a new access
    // token, and the old access token stops working.
    let (status, refreshed) = refresh(&b, &client_id, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{refreshed}");
    let access2 = refreshed["access_token"].as_str().unwrap().to_string();
    let (_, claims2) = verify_id_token(refreshed["id_token"].as_str().unwrap(), &fetch_jwks(&b).await);
    check_claims(&claims2, &format!("{b}/"), &client_id, &user, &access2);
    assert_eq!(claims2["auth_time"], claims["auth_time"]);
    assert!(claims2.get("nonce").is_none());
    assert_eq!(userinfo(&a, Some(&access2)).await.0, 200);
    assert_eq!(userinfo(&a, Some(&access)).await.0, 401);
    // Userinfo by POST with the token in the form (RFC 6750 section 2.2).
    let posted = reqwest::Client::new()
        .post(format!("{a}/oauth2/userinfo"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string([("access_token", access2.as_str())]).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status().as_u16(), 200);

    // Userinfo refusals (RFC 6750): no token, a token that is not one, a Matrix password token.
    let (status, challenge, _) = userinfo(&a, None).await;
    assert_eq!((status, challenge.as_deref()), (401, Some("Bearer")));
    let (status, challenge, body) = userinfo(&a, Some("haei_1_garbage")).await;
    assert_eq!((status, challenge.as_deref(), body["error"].as_str()), (401, Some("Bearer error=\"invalid_token\""), Some("invalid_token")));
    let (status, _, body) = userinfo(&a, Some(&user.token)).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_token")));

    // Revoking the refresh token ends the sign-in.
    let revoked = reqwest::Client::new()
        .post(format!("{a}/oauth2/revoke"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string([("token", refreshed["refresh_token"].as_str().unwrap())]).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status().as_u16(), 200);
    assert_eq!(userinfo(&a, Some(&access2)).await.0, 401);

    // A Matrix client may ask for an id_token too: its token works for Matrix and userinfo; a
    // Matrix token without `openid` is refused by userinfo as lacking the scope.
    let matrix_client = register_client(&a, json!({})).await["client_id"].as_str().unwrap().to_string();
    let (verifier, challenge) = pkce();
    let url = format!(
        "{a}/oauth2/authorize?{}",
        serde_urlencoded::to_string([
            ("response_type", "code"),
            ("client_id", matrix_client.as_str()),
            ("redirect_uri", REDIRECT),
            ("scope", "urn:matrix:client:api:* urn:matrix:client:device:OIDCDEV openid"),
            ("state", "s"),
            ("nonce", "n1"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ])
        .unwrap()
    );
    let consent = browser.get(&url).await;
    assert!(consent.body.contains("OIDCDEV"), "{}", consent.body);
    let fields = form_fields(&consent.body, "/oauth2/authorize");
    let answer = browser.post(&format!("{a}/oauth2/authorize"), &pairs(&with(&fields, &[("decision", "allow")]))).await;
    let code = callback_params(answer.location.as_deref().unwrap())["code"].clone();
    let (status, tokens) = exchange(&a, &matrix_client, &code, &verifier).await;
    assert_eq!(status, 200, "{tokens}");
    let access = tokens["access_token"].as_str().unwrap();
    let (_, claims) = verify_id_token(tokens["id_token"].as_str().unwrap(), &jwks);
    check_claims(&claims, &issuer, &matrix_client, &user, access);
    assert_eq!(claims["nonce"], "n1");
    assert!(claims.get("name").is_none(), "no profile claims without the profile scope");
    assert_eq!(whoami(&server, access).await.ok()["device_id"], "OIDCDEV");
    let (status, _, info) = userinfo(&a, Some(access)).await;
    assert_eq!((status, info["sub"].as_str()), (200, Some(user.user_id.as_str())));
    assert!(info.get("name").is_none());
    let (code, verifier) = authorize(&mut browser, &a, &matrix_client, "NOOPENID", &user).await;
    let (_, tokens) = exchange(&a, &matrix_client, &code, &verifier).await;
    assert!(tokens.get("id_token").is_none());
    let (status, _, body) = userinfo(&a, Some(tokens["access_token"].as_str().unwrap())).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("insufficient_scope")));
}

#[tokio::test]
async fn refusals_carry_the_right_oauth_error_codes_and_never_a_server_error() {
    let server = TestServer::start().await;
    let base = server.node.base.clone();
    let user = server.client().register("refusals").await;
    let client_id = register_rp(&base).await;
    let mut browser = Browser::new();
    let (code, verifier, _) = authorize_rp(&mut browser, &base, &client_id, "openid", Some("n"), &user).await;
    let exchange_with = |client: &str, redirect: &str, verifier: &str| {
        let (base, code, client, redirect, verifier) = (base.clone(), code.clone(), client.to_string(), redirect.to_string(), verifier.to_string());
        async move {
            token_request(&base, &[("grant_type", "authorization_code"), ("code", &code), ("redirect_uri", &redirect), ("client_id", &client), ("code_verifier", &verifier)]).await
        }
    };
    // An unknown client, another redirect URI, a wrong PKCE verifier: refused, code not spent.
    let (status, body) = exchange_with("cNobodyRegisteredThis", RP_REDIRECT, &verifier).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")));
    let (status, body) = exchange_with(&client_id, "https://rp.example.org/other", &verifier).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
    let (status, body) = exchange_with(&client_id, RP_REDIRECT, &"w".repeat(43)).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
    let (status, tokens) = exchange_with(&client_id, RP_REDIRECT, &verifier).await;
    assert_eq!(status, 200, "{tokens}");
    // The code again: refused, and the sign-in it gave is revoked.
    let (status, body) = exchange_with(&client_id, RP_REDIRECT, &verifier).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
    assert_eq!(userinfo(&base, Some(tokens["access_token"].as_str().unwrap())).await.0, 401);

    // Token endpoint: the request's shape.
    for (form, status, error) in [
        (vec![("grant_type", "authorization_code")], 401, "invalid_client"),
        (vec![("client_id", client_id.as_str())], 400, "invalid_request"),
        (vec![("client_id", client_id.as_str()), ("grant_type", "password")], 400, "unsupported_grant_type"),
        (vec![("client_id", client_id.as_str()), ("grant_type", DEVICE_GRANT), ("device_code", "x")], 400, "unauthorized_client"),
        (vec![("client_id", client_id.as_str()), ("grant_type", "authorization_code"), ("code", "nope"), ("redirect_uri", RP_REDIRECT), ("code_verifier", &verifier)], 400, "invalid_grant"),
        (vec![("client_id", client_id.as_str()), ("grant_type", "refresh_token"), ("refresh_token", "haer_garbage")], 400, "invalid_grant"),
        (vec![("client_id", client_id.as_str()), ("client_id", client_id.as_str()), ("grant_type", "refresh_token")], 400, "invalid_request"),
    ] {
        let (got_status, body) = token_request(&base, &form).await;
        assert_eq!((got_status, body["error"].as_str()), (status, Some(error)), "{form:?}: {body}");
    }

    // Authorization endpoint: an unknown client or unregistered redirect URI gets a page (never a
    // redirect); other faults go back to the client with the error and the state.
    let (_, challenge) = pkce();
    let page = browser.get(&authorize_query(&base, "cNobody", RP_REDIRECT, "openid", &challenge, "s", None)).await;
    assert_eq!((page.status, page.location.as_deref()), (400, None));
    let page = browser.get(&authorize_query(&base, &client_id, "https://evil.test/callback", "openid", &challenge, "s", None)).await;
    assert_eq!((page.status, page.location.as_deref()), (400, None));
    for (scope, challenge, error) in [
        ("openid email", challenge.as_str(), "invalid_scope"),
        ("profile", challenge.as_str(), "invalid_scope"),
        ("openid", "short", "invalid_request"),
    ] {
        let page = browser.get(&authorize_query(&base, &client_id, RP_REDIRECT, scope, challenge, "s9", None)).await;
        assert_eq!(page.status, 303, "{scope}");
        let params = callback_params(page.location.as_deref().unwrap());
        assert_eq!((params["error"].as_str(), params["state"].as_str()), (error, "s9"), "{scope}");
    }

    // Malformed input anywhere: a 4xx, never a 5xx.
    let http = reqwest::Client::new();
    let form = "application/x-www-form-urlencoded";
    let cases: Vec<(reqwest::Method, &str, &str, Vec<u8>)> = vec![
        (reqwest::Method::POST, "/oauth2/token", form, b"%zz=%%".to_vec()),
        (reqwest::Method::POST, "/oauth2/token", form, vec![0xff, 0xfe, b'=', 0x80]),
        (reqwest::Method::POST, "/oauth2/token", form, vec![b'a'; 70 * 1024]),
        (reqwest::Method::POST, "/oauth2/register", "application/json", b"{not json".to_vec()),
        (reqwest::Method::POST, "/oauth2/register", "application/json", b"[]".to_vec()),
        (reqwest::Method::POST, "/oauth2/register", "application/json", br#"{"client_uri": 5}"#.to_vec()),
        (reqwest::Method::POST, "/oauth2/revoke", form, b"token_type_hint=weird&token=x".to_vec()),
        (reqwest::Method::POST, "/oauth2/revoke", form, b"".to_vec()),
        (reqwest::Method::POST, "/oauth2/userinfo", form, b"access_token=%ff%fe".to_vec()),
        (reqwest::Method::POST, "/oauth2/device_authorization", form, b"client_id=x&scope=openid".to_vec()),
        (reqwest::Method::GET, "/oauth2/authorize?client_id=%ff&redirect_uri=%00", form, vec![]),
        (reqwest::Method::GET, "/oauth2/authorize?%%%", form, vec![]),
        (reqwest::Method::POST, "/oauth2/authorize", form, b"decision=allow".to_vec()),
        (reqwest::Method::GET, "/device?user_code=%ff", form, vec![]),
    ];
    for (method, path, content_type, body) in cases {
        let response = http.request(method.clone(), format!("{base}{path}")).header("content-type", content_type).body(body).send().await.unwrap();
        let status = response.status().as_u16();
        assert!((200..500).contains(&status), "{method} {path}: {status}");
    }
    let (status, _, _) = userinfo(&base, Some(&"x".repeat(4000))).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn signing_keys_are_created_once_and_rotated_for_every_node() {
    let mut config = common::test_config();
    // A key signs for 6 s, its successor is published 3 s before that.
    config.oauth.signing_key_rotation_s = 6;
    config.oauth.signing_key_publish_ahead_s = 3;
    config.oauth.id_token_lifetime_s = 2;
    let server = TestServer::with_config(config.clone()).await;
    let other = Node::start(&server.nats, config).await;
    let (a, b) = (server.node.base.clone(), other.base.clone());

    // Both nodes race to create the first key: all of them answer with the same single key.
    let answers = futures::future::join_all((0..12).map(|i| fetch_jwks(if i % 2 == 0 { &a } else { &b }))).await;
    let first = answers[0].clone();
    assert_eq!(kids(&first).len(), 1, "{first}");
    assert!(answers.iter().all(|jwks| *jwks == first), "nodes disagree on the keys: {answers:?}");

    // One sign-in, then refreshes (each gives a new id_token) alternating between the nodes until
    // two rotations happened. Every id_token is signed by a key that the JWKS fetched just before
    // already held, and the key before it is still published.
    let user = server.client().register("keys").await;
    let client_id = register_rp(&a).await;
    let mut browser = Browser::new();
    let (code, verifier, _) = authorize_rp(&mut browser, &a, &client_id, "openid", None, &user).await;
    let form = [("grant_type", "authorization_code"), ("code", code.as_str()), ("redirect_uri", RP_REDIRECT), ("client_id", client_id.as_str()), ("code_verifier", verifier.as_str())];
    let (status, tokens) = token_request(&a, &form).await;
    assert_eq!(status, 200, "{tokens}");
    let mut refresh_token = tokens["refresh_token"].as_str().unwrap().to_string();
    let mut signers: Vec<String> = vec![verify_id_token(tokens["id_token"].as_str().unwrap(), &first).0["kid"].as_str().unwrap().to_string()];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut round = 0;
    while signers.len() < 3 {
        assert!(tokio::time::Instant::now() < deadline, "no two rotations within 60 s; signers {signers:?}");
        round += 1;
        let (jwks_node, token_node) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let jwks = fetch_jwks(jwks_node).await;
        assert!(kids(&jwks).len() <= 3, "{jwks}");
        let (status, refreshed) = refresh(token_node, &client_id, &refresh_token).await;
        assert_eq!(status, 200, "{refreshed}");
        refresh_token = refreshed["refresh_token"].as_str().unwrap().to_string();
        let (header, _) = verify_id_token(refreshed["id_token"].as_str().unwrap(), &jwks);
        let kid = header["kid"].as_str().unwrap().to_string();
        if signers.last() != Some(&kid) {
            assert!(!signers.contains(&kid), "a retired key signed again: {kid} after {signers:?}");
            assert!(kids(&jwks).contains(signers.last().unwrap()), "the previous key left the JWKS as soon as its successor signed");
            signers.push(kid);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn prompt_and_max_age_follow_openid_connect() {
    let server = TestServer::start().await;
    let base = server.node.base.clone();
    let user = server.client().register("prompts").await;
    let client_id = register_rp(&base).await;
    let mut browser = Browser::new();
    let (code, verifier, _) = authorize_rp(&mut browser, &base, &client_id, "openid", None, &user).await;
    let signed_in_s = now_s();
    let form = [("grant_type", "authorization_code"), ("code", code.as_str()), ("redirect_uri", RP_REDIRECT), ("client_id", client_id.as_str()), ("code_verifier", verifier.as_str())];
    let (_, tokens) = token_request(&base, &form).await;
    let first_auth_time = verify_id_token(tokens["id_token"].as_str().unwrap(), &fetch_jwks(&base).await).1["auth_time"].as_u64().unwrap();
    let (_, challenge) = pkce();
    let url = |extra: &[(&str, &str)]| {
        let mut url = authorize_query(&base, &client_id, RP_REDIRECT, "openid", &challenge, "st", None);
        for (k, v) in extra {
            url.push_str(&format!("&{k}={v}"));
        }
        url
    };
    let error_of = |page: &Page| {
        assert_eq!(page.status, 303, "{}", page.body);
        callback_params(page.location.as_deref().unwrap())["error"].clone()
    };

    // prompt=none: no page may be shown, and every grant needs consent.
    assert_eq!(error_of(&browser.get(&url(&[("prompt", "none")])).await), "consent_required");
    assert_eq!(error_of(&Browser::new().get(&url(&[("prompt", "none")])).await), "login_required");
    assert_eq!(error_of(&browser.get(&url(&[("prompt", "none%20login")])).await), "invalid_request");
    assert_eq!(error_of(&browser.get(&url(&[("prompt", "sometimes")])).await), "invalid_request");
    assert_eq!(error_of(&browser.get(&url(&[("max_age", "soon")])).await), "invalid_request");
    // A generous max_age: the current sign-in counts.
    let page = browser.get(&url(&[("max_age", "100000")])).await;
    assert!(page.body.contains("Allow access?"), "{}", page.body);
    // max_age=0 once a second has passed since the sign-in: the password again.
    common::eventually(std::time::Duration::from_secs(5), "a second passes", || async { (now_s() > signed_in_s).then_some(()) }).await;
    let page = browser.get(&url(&[("max_age", "0")])).await;
    assert!(page.body.contains("action=\"/oauth2/login\""), "{}", page.body);

    // prompt=login: the password again even though signed in, then back without the prompt; the
    // id_token's auth_time is the new sign-in's.
    let (verifier, challenge) = pkce();
    let login_url = format!("{}&prompt=login", authorize_query(&base, &client_id, RP_REDIRECT, "openid", &challenge, "st2", None));
    let page = browser.get(&login_url).await;
    assert_eq!(page.status, 200);
    let fields = form_fields(&page.body, "/oauth2/login");
    let next = &fields.iter().find(|(k, _)| k == "next").unwrap().1;
    assert!(next.starts_with("/oauth2/authorize?") && !next.contains("prompt"), "{next}");
    let done = browser.post(&format!("{base}/oauth2/login"), &pairs(&with(&fields, &[("username", &user.localpart), ("password", &user.password)]))).await;
    assert_eq!(done.status, 303);
    let consent = browser.get(&format!("{base}{}", done.location.unwrap())).await;
    assert!(consent.body.contains("Allow access?"), "{}", consent.body);
    let fields = form_fields(&consent.body, "/oauth2/authorize");
    let answer = browser.post(&format!("{base}/oauth2/authorize"), &pairs(&with(&fields, &[("decision", "allow")]))).await;
    let code = callback_params(answer.location.as_deref().unwrap())["code"].clone();
    let form = [("grant_type", "authorization_code"), ("code", code.as_str()), ("redirect_uri", RP_REDIRECT), ("client_id", client_id.as_str()), ("code_verifier", verifier.as_str())];
    let (status, tokens) = token_request(&base, &form).await;
    assert_eq!(status, 200, "{tokens}");
    let auth_time = verify_id_token(tokens["id_token"].as_str().unwrap(), &fetch_jwks(&base).await).1["auth_time"].as_u64().unwrap();
    assert!(auth_time > first_auth_time, "auth_time {auth_time} is not the new sign-in's (first {first_auth_time})");
}

fn master_key(user_id: &str, id: &str) -> Value {
    json!({ "master_key": { "user_id": user_id, "usage": ["master"], "keys": { format!("ed25519:{id}"): id } } })
}

#[tokio::test]
async fn an_oauth_session_resets_cross_signing_through_the_account_page() {
    let server = TestServer::start().await;
    let base = server.node.base.clone();
    let client = server.client();
    let user = client.register("xsign").await;
    let client_id = register_client(&base, json!({})).await["client_id"].as_str().unwrap().to_string();
    let mut browser = Browser::new();
    let (code, verifier) = authorize(&mut browser, &base, &client_id, "XSIGNDEV", &user).await;
    let (_, tokens) = exchange(&base, &client_id, &code, &verifier).await;
    let access = tokens["access_token"].as_str().unwrap().to_string();

    // The first upload needs no auth; replacing the keys asks for m.oauth, with the account page.
    client.post("/keys/device_signing/upload", &access, master_key(&user.user_id, "first")).await.ok();
    let challenge = client.post("/keys/device_signing/upload", &access, master_key(&user.user_id, "second")).await;
    assert_eq!(challenge.status, 401, "{}", challenge.body);
    assert_eq!(challenge.body["flows"], json!([{ "stages": ["m.oauth"] }]));
    let url = challenge.body["params"]["m.oauth"]["url"].as_str().unwrap().to_string();
    assert_eq!(url, format!("{base}/account?action=org.matrix.cross_signing_reset"));
    let session = challenge.body["session"].as_str().unwrap().to_string();
    let with_auth = |id: &str| {
        let mut body = master_key(&user.user_id, id);
        body["auth"] = json!({ "session": session });
        body
    };
    // Retrying before the person approved: still the challenge.
    let early = client.post("/keys/device_signing/upload", &access, with_auth("second")).await;
    assert_eq!((early.status, early.body["session"].as_str()), (401, Some(session.as_str())));

    // The person approves on the account page (CSRF-protected), the client retries: done, once.
    let page = browser.get(&url).await;
    assert!(page.body.contains("Reset the cross-signing keys"), "{}", page.body);
    let fields = form_fields(&page.body, "/account/cross_signing_reset");
    let forged = Browser::new().post(&format!("{base}/account/cross_signing_reset"), &pairs(&fields)).await;
    assert_eq!(forged.status, 403);
    let approved = browser.post(&format!("{base}/account/cross_signing_reset"), &pairs(&fields)).await;
    assert_eq!(approved.status, 200, "{}", approved.body);
    client.post("/keys/device_signing/upload", &access, with_auth("second")).await.ok();
    let again = client.post("/keys/device_signing/upload", &access, with_auth("third")).await;
    assert_eq!(again.status, 401, "an approval allows one reset");

    // A session signed in with a password still answers a password prompt.
    let challenge = client.post("/keys/device_signing/upload", &user.token, master_key(&user.user_id, "fourth")).await;
    assert_eq!(challenge.status, 401);
    assert_eq!(challenge.body["flows"], json!([{ "stages": ["m.login.password"] }]));
    let metadata: Value = reqwest::get(format!("{base}/_matrix/client/v1/auth_metadata")).await.unwrap().json().await.unwrap();
    assert!(metadata["account_management_actions_supported"].as_array().unwrap().contains(&json!("org.matrix.cross_signing_reset")));
}

#[tokio::test]
async fn the_account_page_lists_and_ends_sign_ins_to_services() {
    let server = TestServer::start().await;
    let base = server.node.base.clone();
    let user = server.client().register("services").await;
    let client_id = register_rp(&base).await;
    let mut browser = Browser::new();
    let (code, verifier, _) = authorize_rp(&mut browser, &base, &client_id, "openid", None, &user).await;
    let form = [("grant_type", "authorization_code"), ("code", code.as_str()), ("redirect_uri", RP_REDIRECT), ("client_id", client_id.as_str()), ("code_verifier", verifier.as_str())];
    let (_, tokens) = token_request(&base, &form).await;
    let access = tokens["access_token"].as_str().unwrap().to_string();
    assert_eq!(userinfo(&base, Some(&access)).await.0, 200);

    let account = browser.get(&format!("{base}/account")).await;
    assert!(account.body.contains("Services you signed in to") && account.body.contains("Taxi"), "{}", account.body);
    let fields = form_fields(&account.body, "/account/services/delete");
    // Another person cannot end it, even with a valid form of their own.
    let other = server.client().register("intruder").await;
    let mut intruder = Browser::new();
    let page = sign_in(&mut intruder, &base, &format!("{base}/account"), &other).await;
    let mut theirs = form_fields(&page.body, "/account/password");
    theirs.retain(|(k, _)| k == "csrf");
    theirs.extend(fields.iter().filter(|(k, _)| k == "session").cloned());
    let refused = intruder.post(&format!("{base}/account/services/delete"), &pairs(&theirs)).await;
    assert_eq!(refused.status, 404, "{}", refused.body);
    assert_eq!(userinfo(&base, Some(&access)).await.0, 200);
    // Its owner can; the service's tokens stop working and it leaves the list.
    let done = browser.post(&format!("{base}/account/services/delete"), &pairs(&fields)).await;
    assert_eq!((done.status, done.location.as_deref()), (303, Some("/account?notice=signed_out")));
    assert_eq!(userinfo(&base, Some(&access)).await.0, 401);
    let (status, body) = refresh(&base, &client_id, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
    let account = browser.get(&format!("{base}/account")).await;
    assert!(!account.body.contains("Taxi"), "{}", account.body);
}

#[tokio::test]
async fn applications_sign_people_out_through_the_end_session_endpoint() {
    const BYE: &str = "https://rp.example.org/signed-out";
    let server = TestServer::start().await;
    let base = server.node.base.clone();
    let user = server.client().register("rplogout").await;
    let config = reqwest::get(format!("{base}/.well-known/openid-configuration")).await.unwrap().json::<Value>().await.unwrap();
    assert_eq!(config["end_session_endpoint"], format!("{base}/oauth2/end_session"));

    let registration = |post_logout: Value| {
        let base = base.clone();
        async move {
            let body = json!({
                "client_name": "Taxi",
                "client_uri": "https://rp.example.org/",
                "redirect_uris": [RP_REDIRECT],
                "post_logout_redirect_uris": post_logout,
                "grant_types": ["authorization_code", "refresh_token"],
            });
            let response = reqwest::Client::new().post(format!("{base}/oauth2/register")).json(&body).send().await.unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap())
        }
    };
    // Post-logout URIs follow the redirect URI rules.
    let (status, refused) = registration(json!(["https://evil.test/bye"])).await;
    assert_eq!((status, refused["error"].as_str()), (400, Some("invalid_client_metadata")), "{refused}");
    let (status, registered) = registration(json!([BYE])).await;
    assert_eq!(status, 201, "{registered}");
    assert_eq!(registered["post_logout_redirect_uris"], json!([BYE]));
    let client_id = registered["client_id"].as_str().unwrap().to_string();

    let mut browser = Browser::new();
    let (code, verifier, _) = authorize_rp(&mut browser, &base, &client_id, "openid", Some("n"), &user).await;
    let form = [("grant_type", "authorization_code"), ("code", code.as_str()), ("redirect_uri", RP_REDIRECT), ("client_id", client_id.as_str()), ("code_verifier", verifier.as_str())];
    let (status, tokens) = token_request(&base, &form).await;
    assert_eq!(status, 200, "{tokens}");
    let id_token = tokens["id_token"].as_str().unwrap().to_string();
    let end = |query: &[(&str, &str)]| format!("{base}/oauth2/end_session?{}", serde_urlencoded::to_string(query).unwrap());

    // Refused with a page, and nothing sent anywhere: an unregistered (or merely similar) address,
    // an address with no application named, a hint this server did not sign, two applications.
    let (head, _) = id_token.split_once('.').unwrap();
    let forged = format!("{head}.{}.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"aud":"x"}"#), "AAAA");
    for query in [
        vec![("id_token_hint", id_token.as_str()), ("post_logout_redirect_uri", "https://rp.example.org/signed-out/")],
        vec![("client_id", client_id.as_str()), ("post_logout_redirect_uri", "https://rp.example.org/other")],
        vec![("post_logout_redirect_uri", BYE)],
        vec![("id_token_hint", forged.as_str()), ("post_logout_redirect_uri", BYE)],
        vec![("id_token_hint", id_token.as_str()), ("client_id", "cAnotherOne"), ("post_logout_redirect_uri", BYE)],
    ] {
        let page = browser.get(&end(&query)).await;
        assert_eq!((page.status, page.location.as_deref()), (400, None), "{query:?}: {}", page.body);
    }
    assert!(browser.cookies.contains_key("haetae_login"), "a refused request signed nobody out");

    // The application's request: the person is asked, says yes, and goes back with the state.
    let page = browser.get(&end(&[("id_token_hint", &id_token), ("post_logout_redirect_uri", BYE), ("state", "st 1")])).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Sign out of this server as well?") && page.body.contains("Taxi"), "{}", page.body);
    let fields = form_fields(&page.body, "/oauth2/end_session");
    let stay = browser.post(&format!("{base}/oauth2/end_session"), &pairs(&with(&fields, &[("decision", "stay")]))).await;
    assert_eq!((stay.status, stay.location.as_deref()), (200, None));
    assert!(browser.cookies.contains_key("haetae_login"));
    // The form is CSRF-protected like every other.
    let forged_post = browser.post(&format!("{base}/oauth2/end_session"), &[("decision", "sign_out"), ("csrf", "x.y")]).await;
    assert_eq!(forged_post.status, 403);
    let answer = browser.post(&format!("{base}/oauth2/end_session"), &pairs(&with(&fields, &[("decision", "sign_out")]))).await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    assert_eq!(answer.location.as_deref(), Some(format!("{BYE}?state=st+1").as_str()));
    assert!(!browser.cookies.contains_key("haetae_login"), "the sign-in cookie is cleared");

    // Signed out for real: the next authorization asks for the password again.
    let (_, challenge) = pkce();
    let again = browser.get(&authorize_query(&base, &client_id, RP_REDIRECT, "openid", &challenge, "s", None)).await;
    assert!(again.status == 200 && again.body.contains("Sign in"), "{}", again.body);
    // Someone not signed in goes straight back (client_id instead of a hint works too).
    let page = browser.get(&end(&[("client_id", &client_id), ("post_logout_redirect_uri", BYE)])).await;
    assert_eq!((page.status, page.location.as_deref()), (303, Some(BYE)));
    let page = browser.get(&end(&[])).await;
    assert_eq!((page.status, page.location.as_deref()), (200, None));
}
