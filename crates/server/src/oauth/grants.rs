//! The rules of the grants, with no IO: PKCE, scopes, client metadata and redirect URIs, what a
//! presented refresh token means for its family, and which authorization codes may be exchanged.
//! Everything here is a pure function of its arguments, so it is tested without a server.

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub use crate::refresh_chain::{Chain, Outcome};

/// An OAuth error code (RFC 6749 section 5.2, RFC 7591 section 3.2.2, RFC 8628 section 3.5) and a
/// description for people. Never carries a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub error: &'static str,
    pub description: String,
}

impl Refusal {
    pub fn new(error: &'static str, description: impl Into<String>) -> Refusal {
        Refusal { error, description: description.into() }
    }
}

pub const SCOPE_API: &str = "urn:matrix:client:api:*";
pub const SCOPE_API_UNSTABLE: &str = "urn:matrix:org.matrix.msc2967.client:api:*";
pub const SCOPE_DEVICE_PREFIX: &str = "urn:matrix:client:device:";
pub const SCOPE_DEVICE_PREFIX_UNSTABLE: &str = "urn:matrix:org.matrix.msc2967.client:device:";
pub const SCOPE_OPENID: &str = "openid";
pub const SCOPE_PROFILE: &str = "profile";
/// Asks for a refresh token (OpenID Connect); every grant here has one, so it changes nothing.
pub const SCOPE_OFFLINE: &str = "offline_access";

/// Longest device id a scope may allocate.
pub const MAX_DEVICE_ID_CHARS: usize = 255;
/// Longest scope string accepted.
pub const MAX_SCOPE_CHARS: usize = 2048;

/// A requested scope, understood. `text` is the scope as granted (the requested tokens, in the
/// order and forms the client used), echoed in token responses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    /// The device a Matrix client signs in as (with full API access). None for a service that
    /// only wants to know who the person is (OpenID Connect): no device, no Matrix access.
    pub device_id: Option<String>,
    pub openid: bool,
    /// OpenID Connect `profile`: the display name and username in the id_token and userinfo.
    #[serde(default)]
    pub profile: bool,
    pub text: String,
}

/// The unreserved characters of RFC 3986: what device ids and PKCE verifiers are made of.
fn is_unreserved(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~')
}

/// Parses a login scope. Either a Matrix client's: full API access (`urn:matrix:client:api:*`)
/// and exactly one device (`urn:matrix:client:device:<id>`), stable or MSC2967 forms, optionally
/// with `openid`; or another service's sign-in: `openid`, optionally `profile`, and nothing that
/// reaches Matrix. `offline_access` is accepted with either.
pub fn parse_scope(scope: &str) -> Result<Scope, Refusal> {
    if scope.len() > MAX_SCOPE_CHARS {
        return Err(Refusal::new("invalid_scope", "the scope is too long"));
    }
    let mut api = false;
    let mut openid = false;
    let mut profile = false;
    let mut device_ids = Vec::new();
    let mut tokens: Vec<&str> = Vec::new();
    for token in scope.split(' ').filter(|t| !t.is_empty()) {
        if tokens.contains(&token) {
            continue;
        }
        tokens.push(token);
        if token == SCOPE_API || token == SCOPE_API_UNSTABLE {
            api = true;
        } else if token == SCOPE_OPENID {
            openid = true;
        } else if token == SCOPE_PROFILE {
            profile = true;
        } else if token == SCOPE_OFFLINE {
        } else if let Some(id) =
            token.strip_prefix(SCOPE_DEVICE_PREFIX).or_else(|| token.strip_prefix(SCOPE_DEVICE_PREFIX_UNSTABLE))
        {
            if id.is_empty() || id.chars().count() > MAX_DEVICE_ID_CHARS || !id.chars().all(is_unreserved) {
                return Err(Refusal::new(
                    "invalid_scope",
                    "a device id must be 1 to 255 characters among A-Z a-z 0-9 - . _ ~",
                ));
            }
            device_ids.push(id.to_string());
        } else {
            return Err(Refusal::new("invalid_scope", format!("unknown scope token {}", shorten(token))));
        }
    }
    if profile && !openid {
        return Err(Refusal::new("invalid_scope", "profile needs openid"));
    }
    device_ids.dedup();
    if !api {
        if !openid {
            return Err(Refusal::new(
                "invalid_scope",
                format!("the scope must include {SCOPE_API} (a Matrix client) or openid (another service)"),
            ));
        }
        if !device_ids.is_empty() {
            return Err(Refusal::new("invalid_scope", format!("a device needs {SCOPE_API}")));
        }
        return Ok(Scope { device_id: None, openid, profile, text: tokens.join(" ") });
    }
    let device_id = match device_ids.as_slice() {
        [one] => one.clone(),
        [] => return Err(Refusal::new("invalid_scope", format!("the scope must include one {SCOPE_DEVICE_PREFIX}<device_id>"))),
        _ => return Err(Refusal::new("invalid_scope", "the scope may allocate only one device")),
    };
    Ok(Scope { device_id: Some(device_id), openid, profile, text: tokens.join(" ") })
}

fn shorten(text: &str) -> String {
    text.chars().take(80).collect()
}

/// `BASE64URL(SHA256(verifier))`, the S256 code challenge of RFC 7636.
pub fn s256_challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Checks a PKCE verifier (43 to 128 unreserved characters) against an S256 challenge.
pub fn verify_pkce(challenge: &str, verifier: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len()) && verifier.chars().all(is_unreserved);
    well_formed && constant_time_eq(s256_challenge(verifier).as_bytes(), challenge.as_bytes())
}

/// A challenge as a client may send it: 43 base64url characters (a SHA-256 digest).
pub fn valid_challenge(challenge: &str) -> bool {
    challenge.len() == 43 && challenge.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The two kinds of client the spec knows; they differ in which redirect URIs they may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApplicationType {
    Web,
    Native,
}

pub const GRANT_CODE: &str = "authorization_code";
pub const GRANT_REFRESH: &str = "refresh_token";
pub const GRANT_DEVICE: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// How a client authenticates at the token endpoint (RFC 7591 section 2): a public client does
/// not; a confidential one with the secret it was given at registration, in an HTTP Basic header
/// or in the form (RFC 6749 section 2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    #[default]
    None,
    ClientSecretBasic,
    ClientSecretPost,
}

impl AuthMethod {
    pub const ALL: [&'static str; 3] = ["none", "client_secret_basic", "client_secret_post"];

    pub fn name(self) -> &'static str {
        match self {
            AuthMethod::None => "none",
            AuthMethod::ClientSecretBasic => "client_secret_basic",
            AuthMethod::ClientSecretPost => "client_secret_post",
        }
    }

    fn is_none(&self) -> bool {
        *self == AuthMethod::None
    }
}

/// A client's registration as stored: what it registered that we understood.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Client {
    pub client_id: String,
    pub client_uri: String,
    pub client_name: Option<String>,
    pub logo_uri: Option<String>,
    pub tos_uri: Option<String>,
    pub policy_uri: Option<String>,
    pub redirect_uris: Vec<String>,
    pub application_type: ApplicationType,
    pub grant_types: Vec<String>,
    pub response_types: Vec<String>,
    /// Where the client may send people back after they sign out (OpenID Connect RP-Initiated
    /// Logout 1.0), matched exactly. Absent when none, like the two fields below.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub post_logout_redirect_uris: Vec<String>,
    /// Absent from public clients' records (so their registrations, and ids, stay as they were).
    #[serde(default, skip_serializing_if = "AuthMethod::is_none")]
    pub token_endpoint_auth_method: AuthMethod,
    /// A confidential client's secret, hashed ([`secret_hash`]); the secret itself is shown once,
    /// in the registration response, and never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_hash: Option<String>,
}

impl Client {
    /// The registration response body (RFC 7591 section 3.2.1).
    pub fn to_json(&self, issued_at_s: u64) -> Value {
        let mut body = json!({
            "client_id": self.client_id,
            "client_id_issued_at": issued_at_s,
            "client_uri": self.client_uri,
            "redirect_uris": self.redirect_uris,
            "application_type": self.application_type,
            "grant_types": self.grant_types,
            "response_types": self.response_types,
            "token_endpoint_auth_method": self.token_endpoint_auth_method.name(),
            // Whatever a client asked for, id_tokens are signed with the provider's one algorithm
            // (OpenID Connect Dynamic Registration lets the provider substitute it, and says so
            // here, so a client that checks signatures knows what to expect).
            "id_token_signed_response_alg": super::keys::ALGORITHM,
        });
        for (field, value) in [
            ("client_name", &self.client_name),
            ("logo_uri", &self.logo_uri),
            ("tos_uri", &self.tos_uri),
            ("policy_uri", &self.policy_uri),
        ] {
            if let Some(value) = value {
                body[field] = json!(value);
            }
        }
        if !self.post_logout_redirect_uris.is_empty() {
            body["post_logout_redirect_uris"] = json!(self.post_logout_redirect_uris);
        }
        body
    }

    /// A name to show people: the registered name, else the client URI's host.
    pub fn display_name(&self) -> String {
        self.client_name.clone().unwrap_or_else(|| host_of(&self.client_uri).unwrap_or_else(|| self.client_uri.clone()))
    }

    pub fn allows_grant(&self, grant: &str) -> bool {
        self.grant_types.iter().any(|g| g == grant)
    }
}

pub fn host_of(uri: &str) -> Option<String> {
    url::Url::parse(uri).ok().and_then(|u| u.host_str().map(str::to_string))
}

/// Most redirect URIs one client may register; longest URI accepted.
const MAX_REDIRECT_URIS: usize = 20;
const MAX_URI_CHARS: usize = 2000;
const MAX_CLIENT_NAME_CHARS: usize = 200;

fn bad_metadata(description: impl Into<String>) -> Refusal {
    Refusal::new("invalid_client_metadata", description)
}

fn bad_redirect(description: impl Into<String>) -> Refusal {
    Refusal::new("invalid_redirect_uri", description)
}

/// `host` is `base` or one of its subdomains.
fn same_site(host: &str, base: &str) -> bool {
    host == base || host.ends_with(&format!(".{base}"))
}

/// An https URI without credentials on the client URI's host or a subdomain of it.
fn check_https_uri(uri: &str, base_host: &str, field: &str) -> Result<url::Url, String> {
    if uri.len() > MAX_URI_CHARS {
        return Err(format!("{field} is too long"));
    }
    let parsed = url::Url::parse(uri).map_err(|_| format!("{field} is not a valid URI"))?;
    if parsed.scheme() != "https" {
        return Err(format!("{field} must use https"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!("{field} must not contain a user or password"));
    }
    let host = parsed.host_str().unwrap_or_default();
    if !same_site(host, base_host) {
        return Err(format!("{field} must be on the client URI's host or a subdomain of it"));
    }
    Ok(parsed)
}

/// Validates one redirect URI against the rules for the client's application type.
pub fn check_redirect_uri(uri: &str, client_host: &str, application_type: ApplicationType) -> Result<(), String> {
    if uri.len() > MAX_URI_CHARS {
        return Err("redirect URI is too long".into());
    }
    let parsed = url::Url::parse(uri).map_err(|_| format!("{} is not a valid URI", shorten(uri)))?;
    if parsed.fragment().is_some() || uri.contains('#') {
        return Err("a redirect URI must not have a fragment".into());
    }
    if parsed.scheme() == "https" {
        return check_https_uri(uri, client_host, "a redirect URI").map(|_| ());
    }
    if application_type == ApplicationType::Web {
        return Err("a web client's redirect URIs must use https".into());
    }
    if parsed.scheme() == "http" {
        let loopback = matches!(parsed.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
        if !loopback {
            return Err("an http redirect URI must be on the loopback interface".into());
        }
        if parsed.port().is_some() {
            return Err("a loopback redirect URI must not have a port (any port is accepted)".into());
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err("a redirect URI must not contain a user or password".into());
        }
        return Ok(());
    }
    // A private-use scheme: the client URI's host reversed, possibly extended; no authority.
    let reversed: Vec<&str> = client_host.split('.').rev().collect();
    let reversed = reversed.join(".");
    let scheme = parsed.scheme();
    if scheme != reversed && !scheme.starts_with(&format!("{reversed}.")) {
        return Err(format!("a private-use scheme must start with {reversed}"));
    }
    let rest = &uri[scheme.len() + 1..];
    if rest.starts_with("//") {
        return Err("a private-use scheme redirect URI must not have an authority".into());
    }
    Ok(())
}

/// Validates a dynamic registration request (RFC 7591 with the spec's rules) into a client.
/// `client_id` is derived from what was registered, so identical registrations share one id.
pub fn register_client(request: &Value) -> Result<Client, Refusal> {
    let Some(request) = request.as_object() else {
        return Err(bad_metadata("the registration request must be a JSON object"));
    };
    let text = |field: &str| -> Result<Option<String>, Refusal> {
        match request.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(bad_metadata(format!("{field} must be a string"))),
        }
    };
    let list = |field: &str| -> Result<Option<Vec<String>>, Refusal> {
        match request.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| i.as_str().map(str::to_string).ok_or_else(|| bad_metadata(format!("{field} must hold strings"))))
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(bad_metadata(format!("{field} must be an array"))),
        }
    };
    let client_uri = text("client_uri")?.ok_or_else(|| bad_metadata("client_uri is required"))?;
    if client_uri.len() > MAX_URI_CHARS {
        return Err(bad_metadata("client_uri is too long"));
    }
    let parsed = url::Url::parse(&client_uri).map_err(|_| bad_metadata("client_uri is not a valid URI"))?;
    if parsed.scheme() != "https" {
        return Err(bad_metadata("client_uri must use https"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad_metadata("client_uri must not contain a user or password"));
    }
    let client_host = parsed.host_str().ok_or_else(|| bad_metadata("client_uri needs a host"))?.to_string();
    let application_type = match text("application_type")?.as_deref() {
        None | Some("web") => ApplicationType::Web,
        Some("native") => ApplicationType::Native,
        Some(_) => return Err(bad_metadata("application_type must be web or native")),
    };
    let token_endpoint_auth_method = match text("token_endpoint_auth_method")?.as_deref() {
        None | Some("none") => AuthMethod::None,
        Some("client_secret_basic") => AuthMethod::ClientSecretBasic,
        Some("client_secret_post") => AuthMethod::ClientSecretPost,
        Some(_) => {
            return Err(bad_metadata("token_endpoint_auth_method must be none, client_secret_basic or client_secret_post"));
        }
    };
    let client_name = text("client_name")?;
    if client_name.as_ref().is_some_and(|n| n.chars().count() > MAX_CLIENT_NAME_CHARS) {
        return Err(bad_metadata("client_name is too long"));
    }
    let mut optional_uris = Vec::new();
    for field in ["logo_uri", "tos_uri", "policy_uri"] {
        let value = text(field)?;
        if let Some(uri) = &value {
            check_https_uri(uri, &client_host, field).map_err(bad_metadata)?;
        }
        optional_uris.push(value);
    }
    // Values the server does not understand are ignored (the spec says so), not refused.
    let known_grants = [GRANT_CODE, GRANT_REFRESH, GRANT_DEVICE];
    let mut grant_types: Vec<String> = list("grant_types")?
        .unwrap_or_else(|| vec![GRANT_CODE.to_string()])
        .into_iter()
        .filter(|g| known_grants.contains(&g.as_str()))
        .collect();
    grant_types.dedup();
    let mut response_types: Vec<String> = list("response_types")?
        .unwrap_or_else(|| vec!["code".to_string()])
        .into_iter()
        .filter(|r| r == "code")
        .collect();
    response_types.dedup();
    let redirect_uris = list("redirect_uris")?.unwrap_or_default();
    if redirect_uris.len() > MAX_REDIRECT_URIS {
        return Err(bad_redirect(format!("at most {MAX_REDIRECT_URIS} redirect URIs")));
    }
    for uri in &redirect_uris {
        check_redirect_uri(uri, &client_host, application_type).map_err(bad_redirect)?;
    }
    let post_logout_redirect_uris = list("post_logout_redirect_uris")?.unwrap_or_default();
    if post_logout_redirect_uris.len() > MAX_REDIRECT_URIS {
        return Err(bad_metadata(format!("at most {MAX_REDIRECT_URIS} post-logout redirect URIs")));
    }
    for uri in &post_logout_redirect_uris {
        check_redirect_uri(uri, &client_host, application_type).map_err(|e| bad_metadata(format!("post_logout_redirect_uris: {e}")))?;
    }
    if grant_types.iter().any(|g| g == GRANT_CODE) {
        if redirect_uris.is_empty() {
            return Err(bad_redirect("the authorization code grant needs at least one redirect URI"));
        }
        if !response_types.iter().any(|r| r == "code") {
            return Err(bad_metadata("the authorization code grant needs the code response type"));
        }
    }
    if grant_types.is_empty() {
        return Err(bad_metadata("no supported grant type requested"));
    }
    let mut client = Client {
        client_id: String::new(),
        client_uri,
        client_name,
        logo_uri: optional_uris[0].take(),
        tos_uri: optional_uris[1].take(),
        policy_uri: optional_uris[2].take(),
        redirect_uris,
        application_type,
        grant_types,
        response_types,
        post_logout_redirect_uris,
        token_endpoint_auth_method,
        secret_hash: None,
    };
    client.client_id = client_id_for(&client);
    Ok(client)
}

/// A client's id: derived from its registration (with its secret's hash, for a confidential
/// client, so two registrations never share an id and a secret).
pub fn client_id_for(client: &Client) -> String {
    let canonical = serde_json::to_vec(&Client { client_id: String::new(), ..client.clone() }).unwrap_or_default();
    let digest = Sha256::digest(&canonical);
    format!("c{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..16]))
}

/// How a client secret is stored: SHA-256, base64url (secrets are 256 random bits).
pub fn secret_hash(secret: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(secret.as_bytes()))
}

/// Checks a token-endpoint caller against the client's registration: `basic` is the secret of an
/// `Authorization: Basic` header naming this client, `posted` the form's `client_secret`. A
/// confidential client must use the method it registered, with its secret; a public client has
/// none to check (what it sends is ignored, as before confidential clients existed).
pub fn authenticate_client(client: &Client, basic: Option<&str>, posted: Option<&str>) -> Result<(), Refusal> {
    let presented = match client.token_endpoint_auth_method {
        AuthMethod::None => return Ok(()),
        AuthMethod::ClientSecretBasic if posted.is_none() => basic,
        AuthMethod::ClientSecretPost if basic.is_none() => posted,
        method => return Err(Refusal::new("invalid_client", format!("this client authenticates with {}", method.name()))),
    };
    let Some(presented) = presented else {
        return Err(Refusal::new("invalid_client", "client authentication is required"));
    };
    let stored = client.secret_hash.as_deref().unwrap_or_default();
    if stored.is_empty() || !constant_time_eq(secret_hash(presented).as_bytes(), stored.as_bytes()) {
        return Err(Refusal::new("invalid_client", "client authentication failed"));
    }
    Ok(())
}

/// Whether `requested` is one of the client's registered redirect URIs: exact string equality,
/// except that a native client's loopback URI matches with any port (RFC 8252 section 7.3).
pub fn redirect_matches(client: &Client, requested: &str) -> bool {
    if client.redirect_uris.iter().any(|r| r == requested) {
        return true;
    }
    if client.application_type != ApplicationType::Native {
        return false;
    }
    let Ok(mut parsed) = url::Url::parse(requested) else { return false };
    let loopback = matches!(parsed.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    if parsed.scheme() != "http" || !loopback || parsed.port().is_none() || requested.contains('#') {
        return false;
    }
    if parsed.set_port(None).is_err() {
        return false;
    }
    client
        .redirect_uris
        .iter()
        .filter_map(|r| url::Url::parse(r).ok())
        .any(|registered| registered.scheme() == "http" && registered == parsed)
}

/// How the authorization response reaches the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResponseMode {
    Query,
    Fragment,
}

/// The redirect carrying `params` back to the client, in the query or the fragment.
pub fn redirect_with(redirect_uri: &str, mode: ResponseMode, params: &[(&str, &str)]) -> String {
    let encoded = serde_urlencoded::to_string(params).unwrap_or_default();
    match mode {
        ResponseMode::Fragment => format!("{redirect_uri}#{encoded}"),
        ResponseMode::Query if redirect_uri.contains('?') => format!("{redirect_uri}&{encoded}"),
        ResponseMode::Query => format!("{redirect_uri}?{encoded}"),
    }
}

/// An authorization code as stored (under the hash of the code).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeGrant {
    pub client_id: String,
    pub redirect_uri: String,
    pub scope: Scope,
    pub user_id: String,
    pub code_challenge: String,
    pub expires_ms: u64,
    pub auth_time_s: u64,
    pub nonce: Option<String>,
    /// Set once the code was exchanged: the session it started (revoked if the code comes again).
    pub used_by_session: Option<String>,
}

/// Decides whether a code may be exchanged by this token request.
pub fn check_code(grant: &CodeGrant, client_id: &str, redirect_uri: &str, verifier: &str, now_ms: u64) -> Result<(), Refusal> {
    if grant.used_by_session.is_some() {
        return Err(Refusal::new("invalid_grant", "the authorization code was already used"));
    }
    if now_ms >= grant.expires_ms {
        return Err(Refusal::new("invalid_grant", "the authorization code expired"));
    }
    if grant.client_id != client_id {
        return Err(Refusal::new("invalid_grant", "the authorization code was issued to another client"));
    }
    if grant.redirect_uri != redirect_uri {
        return Err(Refusal::new("invalid_grant", "redirect_uri differs from the authorization request"));
    }
    if !verify_pkce(&grant.code_challenge, verifier) {
        return Err(Refusal::new("invalid_grant", "the code verifier does not match the code challenge"));
    }
    Ok(())
}

/// One refresh-token family: a device's OAuth session from the grant until revocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Family {
    pub user_id: String,
    /// The Matrix device the session signs in as; None for a sign-in to another service.
    pub device_id: Option<String>,
    pub client_id: String,
    pub scope: Scope,
    pub auth_time_s: u64,
    pub created_ms: u64,
    /// The refresh tokens (hashes), stored flat beside the other fields.
    #[serde(flatten)]
    pub chain: Chain,
    /// Hashes of the access tokens issued lately (they may still be cached and unexpired).
    pub access: Vec<String>,
    pub revoked: bool,
}

/// Access tokens remembered per family (the newest last).
pub const MAX_FAMILY_ACCESS: usize = 3;

impl Family {
    /// What presenting a refresh token means for this family: nothing once it is revoked.
    pub fn outcome(&self, presented_hash: &str, now_ms: u64, grace_ms: u64) -> Outcome {
        if self.revoked { Outcome::Invalid } else { self.chain.outcome(presented_hash, now_ms, grace_ms) }
    }

    /// Remembers an access token issued to the family (bounded).
    pub fn issued_access(&mut self, access_hash: String) {
        self.access.push(access_hash);
        if self.access.len() > MAX_FAMILY_ACCESS {
            let excess = self.access.len() - MAX_FAMILY_ACCESS;
            self.access.drain(..excess);
        }
    }
}

/// A device authorization (RFC 8628) as stored under the hash of its device code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceGrant {
    pub client_id: String,
    pub scope: Scope,
    pub user_code: String,
    pub expires_ms: u64,
    pub last_poll_ms: u64,
    pub state: DeviceState,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum DeviceState {
    Pending,
    Approved { user_id: String, auth_time_s: u64 },
    Denied,
    Used { session: String },
}

/// What a token poll with a device code gets (before the grant is completed).
pub fn device_poll(grant: &DeviceGrant, client_id: &str, now_ms: u64, interval_ms: u64) -> Result<(String, u64), Refusal> {
    if grant.client_id != client_id {
        return Err(Refusal::new("invalid_grant", "the device code was issued to another client"));
    }
    match &grant.state {
        DeviceState::Used { .. } => Err(Refusal::new("invalid_grant", "the device code was already used")),
        _ if now_ms >= grant.expires_ms => Err(Refusal::new("expired_token", "the device code expired")),
        DeviceState::Denied => Err(Refusal::new("access_denied", "the user denied the request")),
        DeviceState::Pending if now_ms < grant.last_poll_ms + interval_ms => {
            Err(Refusal::new("slow_down", "polling too often"))
        }
        DeviceState::Pending => Err(Refusal::new("authorization_pending", "the user has not answered yet")),
        DeviceState::Approved { user_id, auth_time_s } => Ok((user_id.clone(), *auth_time_s)),
    }
}

/// The alphabet of user codes: consonants only (no words, nothing to confuse with digits).
const USER_CODE_ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";

/// A fresh user code, `XXXX-XXXX`.
pub fn new_user_code() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    let mut code = String::with_capacity(9);
    for i in 0..8 {
        if i == 4 {
            code.push('-');
        }
        code.push(USER_CODE_ALPHABET[rng.random_range(0..USER_CODE_ALPHABET.len())] as char);
    }
    code
}

/// A user code as typed (any case, with or without the dash or spaces), in canonical form.
pub fn normalize_user_code(typed: &str) -> Option<String> {
    let letters: String = typed.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_uppercase()).collect();
    if letters.len() != 8 || !letters.bytes().all(|b| USER_CODE_ALPHABET.contains(&b)) {
        return None;
    }
    Some(format!("{}-{}", &letters[..4], &letters[4..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert_eq!(s256_challenge(verifier), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
        assert!(verify_pkce("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", verifier));
        assert!(!verify_pkce("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXx"));
        // The plain method is not accepted: the challenge equal to the verifier does not verify.
        assert!(!verify_pkce(verifier, verifier));
        // Too short, or characters outside the unreserved set.
        assert!(!verify_pkce(&s256_challenge("short"), "short"));
        let spaced = "a b".repeat(20);
        assert!(!verify_pkce(&s256_challenge(&spaced), &spaced));
        assert!(valid_challenge("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"));
        assert!(!valid_challenge("plain"));
    }

    #[test]
    fn scopes_need_api_access_and_exactly_one_device() {
        let scope = parse_scope("urn:matrix:client:api:* urn:matrix:client:device:ABCDEFGHIJ").unwrap();
        assert_eq!(scope.device_id.as_deref(), Some("ABCDEFGHIJ"));
        assert!(!scope.openid);
        let unstable =
            parse_scope("urn:matrix:org.matrix.msc2967.client:api:* urn:matrix:org.matrix.msc2967.client:device:X1 openid")
                .unwrap();
        assert_eq!(unstable.device_id.as_deref(), Some("X1"));
        assert!(unstable.openid);
        assert_eq!(unstable.text, "urn:matrix:org.matrix.msc2967.client:api:* urn:matrix:org.matrix.msc2967.client:device:X1 openid");
        for bad in [
            "",
            "urn:matrix:client:device:ABC",
            "urn:matrix:client:api:*",
            "urn:matrix:client:api:* urn:matrix:client:device:A urn:matrix:client:device:B",
            "urn:matrix:client:api:* urn:matrix:client:device:",
            "urn:matrix:client:api:* urn:matrix:client:device:a<b",
            "urn:matrix:client:api:* urn:matrix:client:device:ABC urn:matrix:client:admin",
            "profile",
            "openid email",
            "openid urn:matrix:client:device:ABC",
            "offline_access",
        ] {
            assert_eq!(parse_scope(bad).unwrap_err().error, "invalid_scope", "{bad}");
        }
        // The same device named twice (once per form) is one device.
        let both = parse_scope("urn:matrix:client:api:* urn:matrix:client:device:D urn:matrix:org.matrix.msc2967.client:device:D");
        assert_eq!(both.unwrap().device_id.as_deref(), Some("D"));
    }

    #[test]
    fn another_service_asks_only_who_the_person_is() {
        let scope = parse_scope("openid profile offline_access").unwrap();
        assert_eq!(scope.device_id, None);
        assert!(scope.openid && scope.profile);
        assert_eq!(scope.text, "openid profile offline_access");
        let bare = parse_scope("openid").unwrap();
        assert!(bare.openid && !bare.profile && bare.device_id.is_none());
        // A Matrix client may ask for an id_token too, with or without the profile.
        let both = parse_scope("openid profile urn:matrix:client:api:* urn:matrix:client:device:D").unwrap();
        assert_eq!(both.device_id.as_deref(), Some("D"));
        assert!(both.openid && both.profile);
    }

    fn registration(application_type: &str, redirect_uris: &[&str]) -> Value {
        json!({
            "client_name": "Test",
            "client_uri": "https://example.com/",
            "redirect_uris": redirect_uris,
            "application_type": application_type,
            "grant_types": ["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:token-exchange"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        })
    }

    #[test]
    fn web_redirect_uris_follow_the_spec_examples() {
        for good in ["https://example.com/callback", "https://app.example.com/callback", "https://example.com:5173/?query=value"] {
            assert!(register_client(&registration("web", &[good])).is_ok(), "{good}");
        }
        for bad in ["https://example.com/callback#fragment", "http://example.com/callback", "http://localhost/", "https://app.com/callback", "https://user:pw@example.com/cb"] {
            assert_eq!(register_client(&registration("web", &[bad])).unwrap_err().error, "invalid_redirect_uri", "{bad}");
        }
    }

    #[test]
    fn native_redirect_uris_follow_the_spec_examples() {
        for good in [
            "com.example.app:/callback",
            "com.example:/",
            "com.example:callback",
            "http://localhost/callback",
            "http://127.0.0.1/callback",
            "http://[::1]/callback",
        ] {
            assert!(register_client(&registration("native", &[good])).is_ok(), "{good}");
        }
        for bad in ["example:/callback", "com.example.app://callback", "https://localhost/callback", "http://localhost:1234/callback"] {
            assert_eq!(register_client(&registration("native", &[bad])).unwrap_err().error, "invalid_redirect_uri", "{bad}");
        }
    }

    #[test]
    fn registration_keeps_what_it_understands() {
        let client = register_client(&registration("web", &["https://example.com/cb"])).unwrap();
        assert_eq!(client.grant_types, vec![GRANT_CODE, GRANT_REFRESH]);
        assert!(client.client_id.starts_with('c'));
        // Identical metadata, identical client id; different metadata, different id.
        assert_eq!(register_client(&registration("web", &["https://example.com/cb"])).unwrap().client_id, client.client_id);
        assert_ne!(register_client(&registration("web", &["https://example.com/cb2"])).unwrap().client_id, client.client_id);
        let mut missing = registration("web", &["https://example.com/cb"]);
        missing.as_object_mut().unwrap().remove("client_uri");
        assert_eq!(register_client(&missing).unwrap_err().error, "invalid_client_metadata");
        let mut http = registration("web", &["https://example.com/cb"]);
        http["client_uri"] = json!("http://example.com/");
        assert_eq!(register_client(&http).unwrap_err().error, "invalid_client_metadata");
        let mut secret = registration("web", &["https://example.com/cb"]);
        secret["token_endpoint_auth_method"] = json!("client_secret_jwt");
        assert!(register_client(&secret).is_err());
        let mut logo = registration("web", &["https://example.com/cb"]);
        logo["logo_uri"] = json!("https://evil.test/logo.png");
        assert!(register_client(&logo).is_err());
        assert!(register_client(&json!([1])).is_err());
        let mut no_uris = registration("web", &[]);
        no_uris["redirect_uris"] = json!([]);
        assert_eq!(register_client(&no_uris).unwrap_err().error, "invalid_redirect_uri");
        // A device-only client needs no redirect URI.
        let device_only = json!({"client_uri": "https://example.com/", "grant_types": [GRANT_DEVICE, GRANT_REFRESH]});
        assert!(register_client(&device_only).is_ok());
    }

    #[test]
    fn confidential_clients_authenticate_with_the_method_they_registered() {
        let public = register_client(&registration("web", &["https://example.com/cb"])).unwrap();
        assert_eq!(public.token_endpoint_auth_method, AuthMethod::None);
        // A public client's record and id are what they were before confidential clients.
        assert!(!serde_json::to_string(&public).unwrap().contains("token_endpoint_auth_method"));
        assert_eq!(authenticate_client(&public, None, None), Ok(()));
        assert_eq!(authenticate_client(&public, Some("anything"), None), Ok(()));

        for (method, name) in [(AuthMethod::ClientSecretBasic, "client_secret_basic"), (AuthMethod::ClientSecretPost, "client_secret_post")] {
            let mut request = registration("web", &["https://example.com/cb"]);
            request["token_endpoint_auth_method"] = json!(name);
            let mut client = register_client(&request).unwrap();
            assert_eq!(client.token_endpoint_auth_method, method);
            assert_eq!(client.to_json(0)["token_endpoint_auth_method"], name);
            assert_eq!(client.to_json(0)["id_token_signed_response_alg"], super::super::keys::ALGORITHM);
            client.secret_hash = Some(secret_hash("s3cret"));
            let (right, wrong) = match method {
                AuthMethod::ClientSecretBasic => ((Some("s3cret"), None), (None, Some("s3cret"))),
                _ => ((None, Some("s3cret")), (Some("s3cret"), None)),
            };
            assert_eq!(authenticate_client(&client, right.0, right.1), Ok(()), "{name}");
            let refused = |basic, posted| authenticate_client(&client, basic, posted).unwrap_err().error;
            assert_eq!(refused(wrong.0, wrong.1), "invalid_client", "{name}: the other method");
            assert_eq!(refused(None, None), "invalid_client", "{name}: no secret");
            let bad = right.0.map(|_| "nope");
            assert_eq!(refused(bad, right.1.map(|_| "nope")), "invalid_client", "{name}: wrong secret");
            // The id covers the secret: the same registration with another secret is another client.
            let first = client_id_for(&client);
            client.secret_hash = Some(secret_hash("other"));
            assert_ne!(client_id_for(&client), first);
        }
    }

    #[test]
    fn redirects_match_exactly_except_loopback_ports() {
        let web = register_client(&registration("web", &["https://example.com/cb"])).unwrap();
        assert!(redirect_matches(&web, "https://example.com/cb"));
        for other in ["https://example.com/cb/", "https://example.com/cb?x=1", "https://example.com/CB", "https://example.com:443/cb", "https://example.com/cb#x"] {
            assert!(!redirect_matches(&web, other), "{other}");
        }
        let native = register_client(&registration("native", &["http://127.0.0.1/callback", "com.example.app:/cb"])).unwrap();
        assert!(redirect_matches(&native, "http://127.0.0.1:51234/callback"));
        assert!(redirect_matches(&native, "http://127.0.0.1/callback"));
        assert!(redirect_matches(&native, "com.example.app:/cb"));
        assert!(!redirect_matches(&native, "http://127.0.0.1:51234/other"));
        assert!(!redirect_matches(&native, "http://localhost:51234/callback"));
        assert!(!redirect_matches(&native, "https://127.0.0.1:51234/callback"));
        assert!(!redirect_matches(&native, "com.example.app:/cb?x"));
    }

    #[test]
    fn responses_go_in_the_query_or_the_fragment() {
        let params = [("code", "a b"), ("state", "s&t")];
        assert_eq!(redirect_with("https://e.com/cb", ResponseMode::Query, &params), "https://e.com/cb?code=a+b&state=s%26t");
        assert_eq!(redirect_with("https://e.com/cb?x=1", ResponseMode::Query, &params), "https://e.com/cb?x=1&code=a+b&state=s%26t");
        assert_eq!(redirect_with("https://e.com/cb", ResponseMode::Fragment, &params), "https://e.com/cb#code=a+b&state=s%26t");
    }

    fn code_grant() -> CodeGrant {
        CodeGrant {
            client_id: "c1".into(),
            redirect_uri: "https://e.com/cb".into(),
            scope: parse_scope("urn:matrix:client:api:* urn:matrix:client:device:D").unwrap(),
            user_id: "@a:x".into(),
            code_challenge: s256_challenge(&"v".repeat(43)),
            expires_ms: 1000,
            auth_time_s: 0,
            nonce: None,
            used_by_session: None,
        }
    }

    #[test]
    fn codes_are_single_use_short_lived_and_bound() {
        let verifier = "v".repeat(43);
        let grant = code_grant();
        assert!(check_code(&grant, "c1", "https://e.com/cb", &verifier, 999).is_ok());
        assert!(check_code(&grant, "c1", "https://e.com/cb", &verifier, 1000).is_err());
        assert!(check_code(&grant, "c2", "https://e.com/cb", &verifier, 0).is_err());
        assert!(check_code(&grant, "c1", "https://e.com/cb2", &verifier, 0).is_err());
        assert!(check_code(&grant, "c1", "https://e.com/cb", &"w".repeat(43), 0).is_err());
        let used = CodeGrant { used_by_session: Some("s".into()), ..grant };
        assert_eq!(check_code(&used, "c1", "https://e.com/cb", &verifier, 0).unwrap_err().error, "invalid_grant");
    }

    fn family() -> Family {
        Family {
            user_id: "@a:x".into(),
            device_id: Some("D".into()),
            client_id: "c1".into(),
            scope: parse_scope("urn:matrix:client:api:* urn:matrix:client:device:D").unwrap(),
            auth_time_s: 0,
            created_ms: 0,
            chain: Chain::new("r1".into()),
            access: vec!["a1".into()],
            revoked: false,
        }
    }

    #[test]
    fn a_revoked_family_accepts_no_token_and_keeps_few_access_tokens() {
        let mut family = family();
        assert_eq!(family.outcome("r1", 0, 1000), Outcome::Rotate);
        for i in 0..10 {
            family.issued_access(format!("a{i}"));
        }
        assert_eq!(family.access.len(), MAX_FAMILY_ACCESS);
        assert_eq!(family.access.last().map(String::as_str), Some("a9"));
        family.revoked = true;
        assert_eq!(family.outcome("r1", 0, 1000), Outcome::Invalid);
    }

    #[test]
    fn families_keep_their_stored_format() {
        let stored = serde_json::to_value(family()).unwrap();
        assert_eq!(stored["current"], "r1");
        assert!(stored["spent"].as_array().is_some_and(Vec::is_empty));
        let back: Family = serde_json::from_value(stored).unwrap();
        assert_eq!(back, family());
    }

    #[test]
    fn device_polls_follow_rfc8628() {
        let mut grant = DeviceGrant {
            client_id: "c1".into(),
            scope: parse_scope("urn:matrix:client:api:* urn:matrix:client:device:D").unwrap(),
            user_code: "BCDF-GHJK".into(),
            expires_ms: 100_000,
            last_poll_ms: 0,
            state: DeviceState::Pending,
        };
        assert_eq!(device_poll(&grant, "c1", 10_000, 5_000).unwrap_err().error, "authorization_pending");
        grant.last_poll_ms = 10_000;
        assert_eq!(device_poll(&grant, "c1", 11_000, 5_000).unwrap_err().error, "slow_down");
        assert_eq!(device_poll(&grant, "c2", 20_000, 5_000).unwrap_err().error, "invalid_grant");
        assert_eq!(device_poll(&grant, "c1", 100_000, 5_000).unwrap_err().error, "expired_token");
        grant.state = DeviceState::Denied;
        assert_eq!(device_poll(&grant, "c1", 20_000, 5_000).unwrap_err().error, "access_denied");
        grant.state = DeviceState::Approved { user_id: "@a:x".into(), auth_time_s: 5 };
        assert_eq!(device_poll(&grant, "c1", 20_000, 5_000).unwrap(), ("@a:x".to_string(), 5));
        grant.state = DeviceState::Used { session: "s".into() };
        assert_eq!(device_poll(&grant, "c1", 20_000, 5_000).unwrap_err().error, "invalid_grant");
    }

    #[test]
    fn user_codes_are_typed_loosely() {
        let code = new_user_code();
        assert_eq!(normalize_user_code(&code.to_lowercase().replace('-', " ")), Some(code.clone()));
        assert_eq!(normalize_user_code("bcdf ghjk"), Some("BCDF-GHJK".into()));
        assert_eq!(normalize_user_code("BCDF-GHJ"), None);
        assert_eq!(normalize_user_code("AEIO-UBCD"), None);
    }
}
