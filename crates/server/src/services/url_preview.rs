//! URL previews (`GET /_matrix/client/v1/media/preview_url`): the node fetches the page a user
//! names and answers its OpenGraph tags. Off unless `[homeserver.url_preview] enabled`.
//!
//! A preview makes the node fetch from the network on a user's behalf, so where it may connect
//! is decided here, never by the page or its DNS: every host name is resolved by this module, every
//! address it resolves to is checked ([`address_allowed`]: no loopback, private, link-local,
//! CGNAT, multicast, documentation or other special-purpose address) and the connection goes to
//! the address that was checked, so a name that resolves differently a moment later (DNS
//! rebinding) cannot reach anything else. Each redirect is a new URL, checked the same way.
//! The operator's allow- and deny-lists of hosts come first. Reads are bounded (`max_page_bytes`,
//! only `text/html`), the whole fetch is under `fetch_timeout_ms`, at most
//! [`MAX_CONCURRENT_FETCHES`] run at once on a node, and answers (failures too) are cached per URL
//! in a bounded map. The page's `og:image` is fetched the same way (an `image/*` of at most
//! [`MAX_IMAGE_BYTES`]) and stored in the media repository, so the answer names it by an `mxc://`
//! URI with `matrix:image:size`, as the spec says; an image that cannot be fetched is left out.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls;
use url::Url;

use super::App;
use crate::bounded::BoundedMap;
use crate::config::UrlPreviewConfig;
use crate::error::{ApiResult, MatrixError};

/// Previews (and failures) kept per node, by URL.
pub const MAX_CACHED_PREVIEWS: usize = 2_000;
/// Fetches running at once on a node; more wait (within their time limit).
pub const MAX_CONCURRENT_FETCHES: usize = 8;
/// Redirects followed from the URL asked for.
pub const MAX_REDIRECTS: usize = 5;
/// Longest URL previewed, characters.
pub const MAX_URL_CHARS: usize = 2048;
/// How long a failure is answered from the cache, s (a success: `cache_ttl_s`).
pub const FAILURE_TTL_S: u64 = 60;
/// Longest text kept of a tag, characters (titles and descriptions are cut there).
pub const MAX_TAG_CHARS: usize = 1000;
/// Largest preview image copied into the media repository, bytes (and at most the upload limit).
pub const MAX_IMAGE_BYTES: u64 = 5 * 1024 * 1024;
/// Most response header bytes hyper reads before giving up on a response.
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// The OpenGraph properties a preview answers.
const OPENGRAPH_KEYS: [&str; 10] = [
    "og:title",
    "og:description",
    "og:image",
    "og:image:type",
    "og:image:width",
    "og:image:height",
    "og:image:alt",
    "og:site_name",
    "og:type",
    "og:url",
];

/// Why there is no preview.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The URL, or a redirect, names a host or address that may not be fetched.
    Blocked,
    /// The page could not be fetched (resolution, connection, TLS, HTTP status, time limit).
    /// The detail is for the log, never for the client.
    Fetch(String),
}

/// A node's previews: the cache, the fetch slots, the TLS settings (built on first use).
pub struct Previews {
    cache: BoundedMap<String, (Instant, Result<Value, Failure>)>,
    fetches: tokio::sync::Semaphore,
    tls: OnceLock<Tls>,
}

/// TLS settings for fetches (None: https cannot be fetched on this node).
type Tls = Option<Arc<rustls::ClientConfig>>;

impl Default for Previews {
    fn default() -> Self {
        Previews {
            cache: BoundedMap::new(MAX_CACHED_PREVIEWS),
            fetches: tokio::sync::Semaphore::new(MAX_CONCURRENT_FETCHES),
            tls: OnceLock::new(),
        }
    }
}

impl Previews {
    fn tls(&self) -> Tls {
        self.tls.get_or_init(tls_config).clone()
    }
}

/// TLS with the system's roots (ring, as the rest of the node).
fn tls_config() -> Tls {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for certificate in found.certs {
        let _ = roots.add(certificate);
    }
    if roots.is_empty() {
        tracing::warn!("no system root certificates found: URL previews of https pages will fail");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    match rustls::ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions() {
        Ok(builder) => Some(Arc::new(builder.with_root_certificates(roots).with_no_client_auth())),
        Err(error) => {
            tracing::error!(%error, "no TLS for URL previews");
            None
        }
    }
}

/// `GET /preview_url`: the OpenGraph data of `url`, from the cache or a fetch.
pub async fn preview(app: &App, user_id: &str, url: Option<String>) -> ApiResult<Value> {
    let config = &app.config.url_preview;
    if !config.enabled {
        return Err(MatrixError::unrecognized());
    }
    let url = url.ok_or_else(|| MatrixError::missing_param("url is required"))?;
    if url.chars().count() > MAX_URL_CHARS {
        return Err(MatrixError::invalid_param(format!("the URL is longer than {MAX_URL_CHARS} characters")));
    }
    let parsed = Url::parse(&url).map_err(|_| MatrixError::invalid_param("url is not a valid URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(MatrixError::invalid_param("only http and https URLs are previewed"));
    }
    let previews = &app.url_previews;
    let now = Instant::now();
    let cached = previews.cache.get(parsed.as_str()).filter(|(at, answer)| {
        let ttl_s = if answer.is_ok() { config.cache_ttl_s } else { FAILURE_TTL_S.min(config.cache_ttl_s) };
        now.duration_since(*at) < Duration::from_secs(ttl_s)
    });
    let answer = match cached {
        Some((_, answer)) => answer,
        None => {
            let mut limits = FetchLimits::from(config);
            limits.max_image_bytes =
                limits.max_image_bytes.min(usize::try_from(app.config.limits.max_upload_bytes).unwrap_or(usize::MAX));
            let answer = tokio::time::timeout(limits.timeout, async {
                let _slot = previews.fetches.acquire().await.map_err(|_| Failure::Fetch("no fetch slots".into()))?;
                let page = fetch(&parsed, Wanted::Page, &limits, config, &previews.tls(), Loopback::Refused).await?;
                Ok(page.map(|page| parse_preview(&page.bytes, &page.url)).unwrap_or_else(|| json!({})))
            })
            .await
            .unwrap_or_else(|_| Err(Failure::Fetch("time limit".into())));
            let answer = match answer {
                Ok(found) => Ok(with_stored_image(app, user_id, found, &limits).await),
                failed => failed,
            };
            previews.cache.put(parsed.to_string(), (now, answer.clone()));
            answer
        }
    };
    answer.map_err(|failure| match failure {
        Failure::Blocked => MatrixError::forbidden("This URL may not be previewed"),
        Failure::Fetch(detail) => {
            tracing::debug!(url = %parsed, %detail, "URL preview failed");
            MatrixError::new(StatusCode::BAD_GATEWAY, "M_UNKNOWN", "Could not get a preview of this URL")
        }
    })
}

/// Replaces the preview's `og:image` URL by the image copied into the media repository (an
/// `mxc://` URI, with `matrix:image:size`); leaves it out when it cannot be fetched or stored.
async fn with_stored_image(app: &App, user_id: &str, mut preview: Value, limits: &FetchLimits) -> Value {
    let Some(image_url) = preview.get("og:image").and_then(Value::as_str).and_then(|u| Url::parse(u).ok()) else {
        return preview;
    };
    if let Some(fields) = preview.as_object_mut() {
        fields.remove("og:image");
    }
    let previews = &app.url_previews;
    let config = &app.config.url_preview;
    let image = tokio::time::timeout(limits.timeout, async {
        let _slot = previews.fetches.acquire().await.map_err(|_| Failure::Fetch("no fetch slots".into()))?;
        fetch(&image_url, Wanted::Image, limits, config, &previews.tls(), Loopback::Refused).await
    })
    .await
    .unwrap_or_else(|_| Err(Failure::Fetch("time limit".into())));
    let image = match image {
        Ok(Some(image)) => image,
        Ok(None) | Err(_) => return preview,
    };
    let size = image.bytes.len();
    let meta = haetae_store::MediaMeta { content_type: Some(image.content_type.clone()), filename: None };
    match super::media::upload(app, user_id, image.bytes.into(), meta).await {
        Ok(uri) => {
            preview["og:image"] = json!(uri);
            preview["matrix:image:size"] = json!(size);
            if preview.get("og:image:type").is_none() {
                preview["og:image:type"] = json!(image.content_type);
            }
        }
        Err(error) => tracing::debug!(errcode = error.errcode, "a preview image could not be stored"),
    }
    preview
}

/// The bounds of one fetch.
pub struct FetchLimits {
    pub max_page_bytes: usize,
    pub max_image_bytes: usize,
    pub timeout: Duration,
}

impl From<&UrlPreviewConfig> for FetchLimits {
    fn from(config: &UrlPreviewConfig) -> Self {
        FetchLimits {
            max_page_bytes: config.max_page_bytes,
            max_image_bytes: MAX_IMAGE_BYTES as usize,
            timeout: Duration::from_millis(config.fetch_timeout_ms.max(1)),
        }
    }
}

/// What a fetch is for: a page (`text/html`, read up to `max_page_bytes`, a longer page cut
/// there) or its image (`image/*` but SVG, whole, at most `max_image_bytes`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Wanted {
    Page,
    Image,
}

/// A fetched page or image.
#[derive(Debug, PartialEq, Eq)]
pub struct Fetched {
    /// Where it was found, after redirects.
    pub url: Url,
    pub bytes: Vec<u8>,
    pub content_type: String,
}

/// Whether loopback addresses may be fetched: never, except by this module's own tests (which
/// serve pages on 127.0.0.1 and must send nothing anywhere else).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Loopback {
    Refused,
    #[cfg(test)]
    AllowedForTests,
}

/// Whether the host of a URL passes the operator's lists (a listed name covers its subdomains).
pub fn host_allowed(config: &UrlPreviewConfig, host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let covers = |listed: &String| {
        let listed = listed.trim_end_matches('.').to_ascii_lowercase();
        !listed.is_empty() && (host == listed || host.ends_with(&format!(".{listed}")))
    };
    !config.denied_hosts.iter().any(covers) && (config.allowed_hosts.is_empty() || config.allowed_hosts.iter().any(covers))
}

/// Whether an address may be fetched: only globally routable unicast addresses.
pub fn address_allowed(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_allowed(v4),
        IpAddr::V6(v6) => v6_allowed(v6),
    }
}

fn v4_allowed(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let special = a == 0 // "this network", unspecified
        || a == 10 // private (RFC 1918)
        || a == 127 // loopback
        || (a == 100 && (64..128).contains(&b)) // shared address space, CGNAT (RFC 6598)
        || (a == 169 && b == 254) // link-local
        || (a == 172 && (16..32).contains(&b)) // private
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // documentation (TEST-NET-1)
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast
        || (a == 192 && b == 168) // private
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || (a == 198 && b == 51 && c == 100) // documentation (TEST-NET-2)
        || (a == 203 && b == 0 && c == 113) // documentation (TEST-NET-3)
        || a >= 224; // multicast, reserved, broadcast
    !special
}

fn v6_allowed(ip: Ipv6Addr) -> bool {
    let segments = ip.segments();
    // An IPv4 address inside IPv6 (mapped, NAT64's well-known prefix): the IPv4 rules decide.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_allowed(v4);
    }
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [_, _, _, _, _, _, high, low] = segments;
        return v4_allowed(Ipv4Addr::new((high >> 8) as u8, high as u8, (low >> 8) as u8, low as u8));
    }
    // 6to4 carries an IPv4 address too.
    if segments[0] == 0x2002 {
        let (high, low) = (segments[1], segments[2]);
        return v4_allowed(Ipv4Addr::new((high >> 8) as u8, high as u8, (low >> 8) as u8, low as u8));
    }
    // Only global unicast (2000::/3), minus its special-purpose blocks.
    let global_unicast = segments[0] & 0xe000 == 0x2000;
    let special = (segments[0] == 0x2001 && segments[1] < 0x0200) // Teredo, benchmarking, ORCHID, other IETF blocks
        || (segments[0] == 0x2001 && segments[1] == 0x0db8) // documentation
        || segments[0] & 0xfff0 == 0x3ff0; // documentation (RFC 9637)
    global_unicast && !special
}

/// Fetches a page or an image, following redirects, every hop checked. Ok(None): not what was
/// wanted (a page that is not HTML: a preview without data).
pub async fn fetch(
    url: &Url,
    wanted: Wanted,
    limits: &FetchLimits,
    config: &UrlPreviewConfig,
    tls: &Tls,
    loopback: Loopback,
) -> Result<Option<Fetched>, Failure> {
    let mut current = url.clone();
    for _hop in 0..=MAX_REDIRECTS {
        let addresses = checked_addresses(&current, config, loopback).await?;
        let response = request(&current, &addresses, wanted, limits, tls).await?;
        match response {
            Answer::Redirect(location) => {
                current = current.join(&location).map_err(|_| Failure::Fetch("a redirect to an invalid URL".into()))?;
                if !matches!(current.scheme(), "http" | "https") {
                    return Err(Failure::Blocked);
                }
            }
            Answer::Body(bytes, content_type) => return Ok(Some(Fetched { url: current, bytes, content_type })),
            Answer::Unwanted => return Ok(None),
        }
    }
    Err(Failure::Fetch("too many redirects".into()))
}

/// The addresses a URL's host may be reached at: resolved here, every one allowed (a name with
/// any address that is not is refused as a whole).
async fn checked_addresses(url: &Url, config: &UrlPreviewConfig, loopback: Loopback) -> Result<Vec<SocketAddr>, Failure> {
    let host = url.host().ok_or(Failure::Blocked)?;
    let port = url.port_or_known_default().ok_or(Failure::Blocked)?;
    let host_text = match &host {
        url::Host::Domain(name) => name.to_string(),
        url::Host::Ipv4(ip) => ip.to_string(),
        url::Host::Ipv6(ip) => ip.to_string(),
    };
    if !host_allowed(config, &host_text) {
        return Err(Failure::Blocked);
    }
    let addresses: Vec<SocketAddr> = match host {
        url::Host::Ipv4(ip) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
        url::Host::Ipv6(ip) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
        url::Host::Domain(name) => tokio::net::lookup_host((name, port))
            .await
            .map_err(|error| Failure::Fetch(format!("cannot resolve the host: {error}")))?
            .collect(),
    };
    let allowed =
        |address: &SocketAddr| address_allowed(address.ip()) || (loopback != Loopback::Refused && address.ip().is_loopback());
    if addresses.is_empty() {
        return Err(Failure::Fetch("the host has no address".into()));
    }
    if !addresses.iter().all(allowed) {
        return Err(Failure::Blocked);
    }
    Ok(addresses)
}

/// What one request got.
enum Answer {
    Redirect(String),
    /// The body (up to its limit) and its content type.
    Body(Vec<u8>, String),
    /// Another kind of content than wanted.
    Unwanted,
}

/// Connects to the first of `addresses` that answers (the checked addresses, never the name
/// again) and asks for the page.
async fn request(
    url: &Url,
    addresses: &[SocketAddr],
    wanted: Wanted,
    limits: &FetchLimits,
    tls: &Tls,
) -> Result<Answer, Failure> {
    let mut stream = None;
    let mut last_error = String::from("no address");
    for address in addresses.iter().take(3) {
        match tokio::time::timeout(limits.timeout, tokio::net::TcpStream::connect(address)).await {
            Ok(Ok(connected)) => {
                stream = Some(connected);
                break;
            }
            Ok(Err(error)) => last_error = error.to_string(),
            Err(_) => last_error = "connection timed out".into(),
        }
    }
    let stream = stream.ok_or_else(|| Failure::Fetch(format!("cannot connect: {last_error}")))?;
    let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_string();
    let mut target = url.path().to_string();
    if let Some(query) = url.query() {
        target.push('?');
        target.push_str(query);
    }
    let host_header = match url.port() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_string(),
    };
    let request = axum::http::Request::get(target)
        .header("host", host_header)
        .header("user-agent", "haetae URL preview")
        .header("accept", if wanted == Wanted::Page { "text/html,application/xhtml+xml" } else { "image/*" })
        .header("accept-encoding", "identity")
        .header("connection", "close")
        .body(axum::body::Body::empty())
        .map_err(|error| Failure::Fetch(error.to_string()))?;
    if url.scheme() == "https" {
        let name = rustls::pki_types::ServerName::try_from(host).map_err(|_| Failure::Fetch("not a TLS server name".into()))?;
        let tls = tls.clone().ok_or_else(|| Failure::Fetch("no TLS on this node".into()))?;
        let connector = tokio_rustls::TlsConnector::from(tls);
        let stream = connector.connect(name, stream).await.map_err(|error| Failure::Fetch(format!("TLS: {error}")))?;
        exchange(stream, request, wanted, limits).await
    } else {
        exchange(stream, request, wanted, limits).await
    }
}

/// One HTTP/1.1 exchange on a connected stream: the redirect, or the body within its limit. The
/// connection is driven here until the answer is read (no task outlives the request).
async fn exchange<S>(
    stream: S,
    request: axum::http::Request<axum::body::Body>,
    wanted: Wanted,
    limits: &FetchLimits,
) -> Result<Answer, Failure>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let fetch_error = |error: hyper::Error| Failure::Fetch(error.to_string());
    let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(MAX_HEADER_BYTES)
        .handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(fetch_error)?;
    let work = async move {
        let response = sender.send_request(request).await.map_err(fetch_error)?;
        drop(sender);
        let (parts, mut body) = response.into_parts();
        if parts.status.is_redirection() {
            let location = parts.headers.get(axum::http::header::LOCATION).and_then(|l| l.to_str().ok());
            return match location {
                Some(location) => Ok(Answer::Redirect(location.to_string())),
                None => Err(Failure::Fetch(format!("HTTP {} without a location", parts.status))),
            };
        }
        if parts.status != StatusCode::OK {
            return Err(Failure::Fetch(format!("HTTP {}", parts.status)));
        }
        let content_type = parts.headers.get(axum::http::header::CONTENT_TYPE).and_then(|c| c.to_str().ok()).unwrap_or_default();
        let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        let (acceptable, max_bytes) = match wanted {
            Wanted::Page => (essence == "text/html" || essence == "application/xhtml+xml", limits.max_page_bytes),
            // SVG is a document that can carry scripts, not a picture to serve.
            Wanted::Image => (essence.starts_with("image/") && essence != "image/svg+xml", limits.max_image_bytes),
        };
        if !acceptable {
            return Ok(Answer::Unwanted);
        }
        let mut page = Vec::new();
        loop {
            let frame = std::future::poll_fn(|cx| http_body::Body::poll_frame(std::pin::Pin::new(&mut body), cx)).await;
            match frame {
                None => break,
                Some(Err(error)) => return Err(fetch_error(error)),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        let room = max_bytes - page.len();
                        if data.len() > room && wanted == Wanted::Image {
                            return Err(Failure::Fetch("the image is too large".into()));
                        }
                        page.extend_from_slice(&data[..data.len().min(room)]);
                    }
                }
            }
            if page.len() >= max_bytes && wanted == Wanted::Page {
                break;
            }
        }
        Ok(Answer::Body(page, essence))
    };
    tokio::pin!(connection);
    tokio::pin!(work);
    let mut connection_done = false;
    loop {
        tokio::select! {
            answer = &mut work => return answer,
            closed = &mut connection, if !connection_done => {
                connection_done = true;
                // A failed connection fails the exchange through the response or its body; a
                // closed one has delivered everything, which the exchange reads on.
                let _ = closed;
            }
        }
    }
}

/// Cuts text to [`MAX_TAG_CHARS`], with surrounding and repeated whitespace collapsed.
fn tidy(text: &str) -> String {
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    collapsed.chars().take(MAX_TAG_CHARS).collect()
}

/// The preview of an HTML page: its OpenGraph properties (the first of each), with `<title>` and
/// `<meta name="description">` standing in for a missing `og:title` and `og:description`;
/// `og:image` and `og:url` made absolute against the page's URL (only http and https kept);
/// image dimensions as integers. Only the document's head is read.
pub fn parse_preview(html: &[u8], page_url: &Url) -> Value {
    use html5gum::{DefaultEmitter, Token, Tokenizer};
    let mut emitter = DefaultEmitter::default();
    emitter.naively_switch_states(true);
    let mut found: Map<String, Value> = Map::new();
    let mut title: Option<String> = None;
    let mut in_title = false;
    let mut title_text = String::new();
    let mut description: Option<String> = None;
    for token in Tokenizer::new_with_emitter(html, emitter) {
        let Ok(token) = token;
        match token {
            Token::StartTag(tag) => {
                let name = tag.name.as_slice();
                if name == b"body" {
                    break;
                }
                if name == b"title" && title.is_none() {
                    in_title = true;
                    continue;
                }
                if name != b"meta" {
                    continue;
                }
                let attribute = |key: &[u8]| {
                    tag.attributes
                        .iter()
                        .find(|(k, _)| k.as_slice() == key)
                        .map(|(_, v)| String::from_utf8_lossy(v.value.as_slice()).into_owned())
                };
                let Some(content) = attribute(b"content") else { continue };
                let property = attribute(b"property").or_else(|| attribute(b"name")).map(|p| p.trim().to_ascii_lowercase());
                match property.as_deref() {
                    Some("description") if description.is_none() => description = Some(tidy(&content)),
                    Some(key) if OPENGRAPH_KEYS.contains(&key) && !found.contains_key(key) => {
                        if let Some(value) = opengraph_value(key, &content, page_url) {
                            found.insert(key.to_string(), value);
                        }
                    }
                    _ => {}
                }
            }
            Token::String(text) if in_title => {
                if title_text.len() < MAX_TAG_CHARS * 4 {
                    title_text.push_str(&String::from_utf8_lossy(text.value.as_slice()));
                }
            }
            Token::EndTag(tag) => {
                let name = tag.name.as_slice();
                if name == b"title" && in_title {
                    in_title = false;
                    title = Some(tidy(&title_text));
                }
                if name == b"head" {
                    break;
                }
            }
            _ => {}
        }
    }
    if !found.contains_key("og:title")
        && let Some(title) = title.filter(|t| !t.is_empty())
    {
        found.insert("og:title".into(), json!(title));
    }
    if !found.contains_key("og:description")
        && let Some(description) = description.filter(|d| !d.is_empty())
    {
        found.insert("og:description".into(), json!(description));
    }
    Value::Object(found)
}

/// One OpenGraph property's value as answered, or None when it is unusable.
fn opengraph_value(key: &str, content: &str, page_url: &Url) -> Option<Value> {
    match key {
        "og:image" | "og:url" => {
            let absolute = page_url.join(content.trim()).ok()?;
            let usable = matches!(absolute.scheme(), "http" | "https") && absolute.as_str().len() <= MAX_URL_CHARS;
            usable.then(|| json!(absolute.as_str()))
        }
        "og:image:width" | "og:image:height" => content.trim().parse::<u64>().ok().map(|n| json!(n)),
        _ => {
            let text = tidy(content);
            (!text.is_empty()).then(|| json!(text))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> Url {
        Url::parse("https://example.org/articles/one").unwrap()
    }

    #[test]
    fn opengraph_tags_are_read_from_the_head() {
        let html = br#"<!doctype html><html><head>
            <title>Fallback &amp; title</title>
            <meta property="og:title" content="A &quot;quoted&quot; title">
            <meta property="og:description" content="  Spaced
               out  ">
            <meta property="og:image" content="/images/cover.png">
            <meta property="og:image:width" content="640">
            <meta property="og:image:height" content="not a number">
            <meta property="og:title" content="second title is ignored">
            <meta property="og:unknown" content="dropped">
            <script>var x = "<meta property='og:type' content='in a script'>";</script>
            </head><body><meta property="og:site_name" content="in the body"></body></html>"#;
        let preview = parse_preview(html, &page());
        assert_eq!(
            preview,
            json!({
                "og:title": "A \"quoted\" title",
                "og:description": "Spaced out",
                "og:image": "https://example.org/images/cover.png",
                "og:image:width": 640,
            })
        );
    }

    #[test]
    fn title_and_description_stand_in_for_missing_tags() {
        let html = b"<html><head><TITLE> Plain <b>page</b> </TITLE><meta name=Description content=About></head></html>";
        assert_eq!(parse_preview(html, &page()), json!({ "og:title": "Plain <b>page</b>", "og:description": "About" }));
        assert_eq!(parse_preview(b"", &page()), json!({}));
        assert_eq!(parse_preview(b"\xff\xfe<meta property=og:title content=x>", &page()), json!({ "og:title": "x" }));
    }

    #[test]
    fn images_on_other_schemes_are_dropped_and_text_is_bounded() {
        let long = "x".repeat(5000);
        let html =
            format!(r#"<meta property="og:image" content="javascript:alert(1)"><meta property="og:title" content="{long}">"#);
        let preview = parse_preview(html.as_bytes(), &page());
        assert!(preview.get("og:image").is_none());
        assert_eq!(preview["og:title"].as_str().unwrap().chars().count(), MAX_TAG_CHARS);
    }

    #[test]
    fn only_global_unicast_addresses_are_allowed() {
        for refused in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "192.0.0.8",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
            "2001::1",
            "fec0::1",
            "100::1",
            "3fff::1",
        ] {
            assert!(!address_allowed(refused.parse().unwrap()), "{refused} must be refused");
        }
        for allowed in
            ["93.184.215.14", "1.1.1.1", "172.32.0.1", "100.128.0.1", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]
        {
            assert!(address_allowed(allowed.parse().unwrap()), "{allowed} must be allowed");
        }
    }

    #[test]
    fn host_lists_cover_subdomains() {
        let mut config = UrlPreviewConfig::default();
        assert!(host_allowed(&config, "example.org"));
        config.denied_hosts = vec!["bad.example".into()];
        assert!(!host_allowed(&config, "bad.example"));
        assert!(!host_allowed(&config, "www.BAD.example."));
        assert!(host_allowed(&config, "notbad.example"));
        config.allowed_hosts = vec!["wikipedia.org".into()];
        assert!(host_allowed(&config, "en.wikipedia.org"));
        assert!(!host_allowed(&config, "example.org"));
    }

    /// A page server on 127.0.0.1 for the fetch tests, counting the requests it gets.
    async fn page_server() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use axum::response::IntoResponse;
        use axum::routing::get;
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = hits.clone();
        let html = |body: String| ([(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response();
        let router = axum::Router::new()
            .route(
                "/page",
                get(move || async move { html(r#"<head><meta property="og:title" content="Local page"></head>"#.into()) }),
            )
            .route(
                "/big",
                get(move || async move { html(format!("<head><title>{}</title></head>", "a".repeat(3 * 1024 * 1024))) }),
            )
            .route("/json", get(|| async { axum::Json(json!({ "og:title": "no" })) }))
            .route(
                "/image.png",
                get(|| async { ([(axum::http::header::CONTENT_TYPE, "image/png")], vec![7u8; 1000]).into_response() }),
            )
            .route(
                "/huge.png",
                get(|| async { ([(axum::http::header::CONTENT_TYPE, "image/png")], vec![7u8; 3_000_000]).into_response() }),
            )
            .route(
                "/drawing.svg",
                get(|| async { ([(axum::http::header::CONTENT_TYPE, "image/svg+xml")], "<svg/>").into_response() }),
            )
            .route("/to-page", get(|| async { axum::response::Redirect::temporary("/page") }))
            .route("/to-private", get(|| async { axum::response::Redirect::temporary("http://10.1.2.3/secret") }))
            .route(
                "/to-metadata",
                get(|| async { axum::response::Redirect::temporary("http://169.254.169.254/latest/meta-data") }),
            )
            .route("/to-file", get(|| async { axum::response::Redirect::temporary("file:///etc/passwd") }))
            .route("/missing", get(|| async { StatusCode::NOT_FOUND }))
            .route("/slow", get(|| async { std::future::pending::<()>().await }))
            .layer(axum::middleware::from_fn(move |request: axum::extract::Request, next: axum::middleware::Next| {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                next.run(request)
            }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        (base, hits)
    }

    async fn fetch_wanted(url: &str, wanted: Wanted, loopback: Loopback) -> Result<Option<Fetched>, Failure> {
        let limits =
            FetchLimits { max_page_bytes: 1024 * 1024, max_image_bytes: 2 * 1024 * 1024, timeout: Duration::from_secs(2) };
        let config = UrlPreviewConfig { enabled: true, ..Default::default() };
        let tls = tls_config();
        tokio::time::timeout(limits.timeout, super::fetch(&Url::parse(url).unwrap(), wanted, &limits, &config, &tls, loopback))
            .await
            .unwrap_or(Err(Failure::Fetch("time limit".into())))
    }

    async fn fetch(url: &str, loopback: Loopback) -> Result<Option<(Url, Vec<u8>)>, Failure> {
        fetch_wanted(url, Wanted::Page, loopback).await.map(|found| found.map(|f| (f.url, f.bytes)))
    }

    #[tokio::test]
    async fn fetches_are_bounded_and_every_redirect_is_checked() {
        let (base, hits) = page_server().await;
        let allowed = Loopback::AllowedForTests;
        let (final_url, html) = fetch(&format!("{base}/page"), allowed).await.unwrap().unwrap();
        assert_eq!(parse_preview(&html, &final_url), json!({ "og:title": "Local page" }));
        let (final_url, _) = fetch(&format!("{base}/to-page"), allowed).await.unwrap().unwrap();
        assert_eq!(final_url.path(), "/page");
        let (_, big) = fetch(&format!("{base}/big"), allowed).await.unwrap().unwrap();
        assert_eq!(big.len(), 1024 * 1024, "a page is read up to the limit only");
        assert_eq!(fetch(&format!("{base}/json"), allowed).await, Ok(None), "only HTML is previewed");
        assert!(matches!(fetch(&format!("{base}/missing"), allowed).await, Err(Failure::Fetch(_))));
        assert!(matches!(fetch(&format!("{base}/slow"), allowed).await, Err(Failure::Fetch(_))));
        // Redirects to private, link-local and non-HTTP targets are refused before any connection.
        for path in ["/to-private", "/to-metadata", "/to-file"] {
            assert_eq!(fetch(&format!("{base}{path}"), allowed).await, Err(Failure::Blocked), "{path}");
        }
        // Without the tests' exception, loopback is refused before anything is sent, by address
        // and by name.
        let before = hits.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(fetch(&format!("{base}/page"), Loopback::Refused).await, Err(Failure::Blocked));
        let by_name = base.replace("127.0.0.1", "localhost");
        assert_eq!(fetch(&format!("{by_name}/page"), Loopback::Refused).await, Err(Failure::Blocked));
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), before, "a refused URL gets no request");

        // Images: whole, image/* only (not SVG), within their own limit.
        let image = fetch_wanted(&format!("{base}/image.png"), Wanted::Image, allowed).await.unwrap().unwrap();
        assert_eq!((image.bytes.len(), image.content_type.as_str()), (1000, "image/png"));
        assert!(matches!(fetch_wanted(&format!("{base}/huge.png"), Wanted::Image, allowed).await, Err(Failure::Fetch(_))));
        assert_eq!(fetch_wanted(&format!("{base}/drawing.svg"), Wanted::Image, allowed).await, Ok(None));
        assert_eq!(fetch_wanted(&format!("{base}/page"), Wanted::Image, allowed).await, Ok(None));
    }
}
