//! The OAuth 2.0 API end to end over HTTP, against a real nats-server: client registration, the
//! login and consent pages driven like a browser without JavaScript, the token endpoint, a Matrix
//! call with the access token, refresh rotation and reuse detection, revocation, the device
//! authorization grant, and a flow started on one node and finished on another.

mod common;

use std::collections::HashMap;

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
    let server = TestServer::start().await;
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
    // Using the new refresh token spends the old one for good.
    let (status, third) = refresh(&base, &client_id, &refresh2).await;
    assert_eq!(status, 200, "{third}");
    let access3 = third["access_token"].as_str().unwrap().to_string();
    whoami(&server, &access3).await.ok();
    // Replaying the first refresh token revokes the whole chain and its device.
    let (status, replay) = refresh(&base, &client_id, &refresh1).await;
    assert_eq!((status, replay["error"].as_str()), (400, Some("invalid_grant")));
    whoami(&server, &access3).await.expect_err(401, "M_UNKNOWN_TOKEN");
    let (status, _) = refresh(&base, &client_id, third["refresh_token"].as_str().unwrap()).await;
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
