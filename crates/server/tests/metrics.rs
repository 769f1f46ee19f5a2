//! `/metrics`: what a node served and holds, in Prometheus's text format, read by a scraper.

mod common;

use common::*;
use serde_json::json;

/// The value of the first sample of `name` whose labels contain every one of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines().filter(|line| !line.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
        (metric == name && labels.iter().all(|l| rest.contains(l))).then(|| value.parse().ok()).flatten()
    })
}

async fn scrape(server: &TestServer, token: Option<&str>) -> (u16, String) {
    let mut request = reqwest::Client::new().get(format!("{}/metrics", server.node.base));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("scrape");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_shows_requests_sends_positions_and_assets() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let room_id = c.create_room(&alice, json!({})).await;
    c.send_text(&alice, &room_id, "counted").await;
    c.sync(&alice, None, 0).await;
    c.get("/rooms/!nope:test.local/messages?dir=b", &alice.token).await.expect_err(403, "M_FORBIDDEN");
    let (status, text) = scrape(&server, None).await;
    assert_eq!(status, 200);
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let value = line.rsplit_once(' ').map(|(_, v)| v).unwrap_or("");
        assert!(value.parse::<f64>().is_ok(), "every sample line ends in a number: {line}");
    }
    let send_route = "route=\"/_matrix/client/v3/rooms/{room_id}/send/{event_type}/{txn_id}\"";
    assert!(sample(&text, "haetae_http_requests_total", &[send_route, "status=\"200\"", "method=\"PUT\""]) >= Some(1.0), "{text}");
    assert!(sample(&text, "haetae_http_requests_total", &["/messages", "status=\"403\""]) >= Some(1.0));
    assert!(sample(&text, "haetae_http_request_duration_seconds_count", &[send_route]) >= Some(1.0));
    // Room creation sends several events, then the message.
    assert!(sample(&text, "haetae_events_sent_total", &[]) >= Some(2.0));
    assert!(sample(&text, "haetae_entries_applied_total", &[]) >= Some(2.0));
    assert_eq!(sample(&text, "haetae_logins_total", &["kind=\"register\"", "outcome=\"ok\""]), Some(1.0));
    assert_eq!(sample(&text, "haetae_read_model_lag_entries", &["partition=\"0\""]), Some(0.0), "caught up: {text}");
    assert_eq!(sample(&text, "haetae_engine_connected", &[]), Some(1.0));
    // One nats-server in tests: each asset has its one replica current.
    assert_eq!(sample(&text, "haetae_asset_replicas_current", &["asset=\"log/0\""]), Some(1.0), "{text}");
    assert!(sample(&text, "haetae_asset_replicas_configured", &["asset=\"kv/tokens\""]).is_some());
    // Raw paths never become labels.
    assert!(!text.contains(&room_id), "room ids stay out of the labels");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_token_is_required() {
    let mut config = test_config();
    config.metrics.token = Some("scrape-secret".into());
    let server = TestServer::with_config(config).await;
    assert_eq!(scrape(&server, None).await.0, 401);
    assert_eq!(scrape(&server, Some("wrong")).await.0, 401);
    let (status, text) = scrape(&server, Some("scrape-secret")).await;
    assert_eq!(status, 200);
    assert!(text.contains("haetae_uptime_seconds"));
}
