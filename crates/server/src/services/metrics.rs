//! The node's metrics, in Prometheus's text format: what it served (requests by route and status,
//! their latency), what it holds (long-polls, caches), how far its read model is behind the log,
//! and, asked of the engine at scrape time, how many current replicas each asset has.
//!
//! Every node serves them, so an operator whose DC burned scrapes the nodes of the others. Labels
//! are bounded: routes are the router's templates (never raw paths), partitions and assets are
//! the deployment's.

use std::time::{Duration, Instant};

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use super::App;

/// Latency buckets, seconds: from a cache hit to a long-poll's timeout.
const LATENCY_BUCKETS_S: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// How long a scrape waits for the engine's answers (log positions, assets) before leaving them out.
const ENGINE_SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

/// Counters and histograms the request paths update; gauges filled at scrape time.
pub struct Metrics {
    registry: Registry,
    /// Requests by route template, method and status.
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    /// Requests answered with a server error (5xx): what an incident's report counts as failed.
    pub http_requests_failed: IntCounter,
    /// `/sync` requests waiting for something to happen.
    pub sync_waiting: IntGauge,
    /// Events appended to rooms through this node (messages and state).
    pub events_sent: IntCounter,
    /// Appends to the event log: latency, and failures.
    pub append_duration: Histogram,
    pub append_errors: IntCounter,
    /// Log entries this node's read model applied.
    pub entries_applied: IntCounter,
    /// Password logins and registrations by outcome.
    pub logins: IntCounterVec,
    /// Requests refused by a rate limit, by limit.
    pub rate_limited: IntCounterVec,
    applied_position: IntGaugeVec,
    log_lag: IntGaugeVec,
    cache_bytes: IntGaugeVec,
    rooms: IntGaugeVec,
    room_spill_bytes: IntGauge,
    chunk_reads: IntGaugeVec,
    replicas_current: IntGaugeVec,
    replicas_configured: IntGaugeVec,
    engine_connected: IntGauge,
    engine_scrape_errors: IntCounter,
    uptime_s: IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let metric = IntCounter::new(name, help).expect("valid metric");
    registry.register(Box::new(metric.clone())).expect("metric registered once");
    metric
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry.register(Box::new(metric.clone())).expect("metric registered once");
    metric
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let metric = IntGauge::new(name, help).expect("valid metric");
    registry.register(Box::new(metric.clone())).expect("metric registered once");
    metric
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let metric = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry.register(Box::new(metric.clone())).expect("metric registered once");
    metric
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new_custom(Some("haetae".into()), None).expect("valid prefix");
        let r = &registry;
        let http_duration = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "Time to answer a request, by route template and method")
                .buckets(LATENCY_BUCKETS_S.to_vec()),
            &["route", "method"],
        )
        .expect("valid metric");
        registry.register(Box::new(http_duration.clone())).expect("metric registered once");
        let append_duration = Histogram::with_opts(
            HistogramOpts::new("log_append_duration_seconds", "Time for the event log to acknowledge an append (a quorum of DCs stored it)")
                .buckets(LATENCY_BUCKETS_S.to_vec()),
        )
        .expect("valid metric");
        registry.register(Box::new(append_duration.clone())).expect("metric registered once");
        Metrics {
            http_requests: counter_vec(r, "http_requests_total", "Requests answered, by route template, method and status", &[
                "route", "method", "status",
            ]),
            http_duration,
            http_requests_failed: counter(r, "http_requests_failed_total", "Requests answered with a server error (5xx)"),
            sync_waiting: gauge(r, "sync_waiting", "/sync long-polls waiting for news"),
            events_sent: counter(r, "events_sent_total", "Room events appended through this node"),
            append_duration,
            append_errors: counter(r, "log_append_errors_total", "Appends to the event log that failed"),
            entries_applied: counter(r, "entries_applied_total", "Event-log entries applied to this node's read model"),
            logins: counter_vec(r, "logins_total", "Password logins and registrations, by kind and outcome", &["kind", "outcome"]),
            rate_limited: counter_vec(r, "rate_limited_total", "Requests refused by a rate limit, by limit", &["limit"]),
            applied_position: gauge_vec(r, "read_model_position", "Last log position applied, per partition", &["partition"]),
            log_lag: gauge_vec(r, "read_model_lag_entries", "Entries the log holds that the read model has not applied, per partition", &[
                "partition",
            ]),
            cache_bytes: gauge_vec(r, "history_cache_bytes", "Bytes held by the history cache, by part (window, chunk, rooms: hot rooms' state and indexes, estimated)", &["part"]),
            rooms: gauge_vec(r, "rooms", "Rooms this node knows, by where they are (hot: in memory; cold: in the spill file)", &["state"]),
            room_spill_bytes: gauge(r, "room_spill_bytes", "Bytes of the spill file that holds cold rooms"),
            chunk_reads: gauge_vec(r, "history_chunk_reads", "Old-history chunk reads since start, by outcome (hit, miss)", &[
                "outcome",
            ]),
            replicas_current: gauge_vec(r, "asset_replicas_current", "Replicas of an asset that are current (leader included)", &[
                "asset",
            ]),
            replicas_configured: gauge_vec(r, "asset_replicas_configured", "Replicas an asset is configured with", &["asset"]),
            engine_connected: gauge(r, "engine_connected", "1 while this node's connection to its nats-server is up"),
            engine_scrape_errors: counter(r, "engine_scrape_errors_total", "Scrapes whose questions to the engine failed or timed out"),
            uptime_s: gauge(r, "uptime_seconds", "Seconds since this node started"),
            registry,
        }
    }

    /// Records one answered request.
    pub fn observe_request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        self.http_requests.with_label_values(&[route, method, &status.to_string()]).inc();
        self.http_duration.with_label_values(&[route, method]).observe(elapsed.as_secs_f64());
        if status >= 500 {
            self.http_requests_failed.inc();
        }
    }
}

/// Counts a long-poll as waiting while it lives.
pub struct WaitingSync<'a>(&'a IntGauge);

impl<'a> WaitingSync<'a> {
    pub fn new(gauge: &'a IntGauge) -> WaitingSync<'a> {
        gauge.inc();
        WaitingSync(gauge)
    }
}

impl Drop for WaitingSync<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The metrics as Prometheus text, with the gauges read now (the engine's answers bounded by
/// [`ENGINE_SCRAPE_TIMEOUT`]).
pub async fn render(app: &App) -> String {
    let metrics = &app.metrics;
    metrics.uptime_s.set(app.started.elapsed().as_secs() as i64);
    metrics.engine_connected.set(i64::from(app.store.connected()));
    let positions = app.model.positions();
    for (partition, applied) in positions.iter().enumerate() {
        metrics.applied_position.with_label_values(&[&partition.to_string()]).set(*applied as i64);
    }
    let (window_bytes, chunk_bytes, hits, misses) = app.model.cache_stats();
    metrics.cache_bytes.with_label_values(&["window"]).set(window_bytes as i64);
    metrics.cache_bytes.with_label_values(&["chunk"]).set(chunk_bytes as i64);
    metrics.cache_bytes.with_label_values(&["rooms"]).set(app.model.room_bytes() as i64);
    let (hot, cold, spill_bytes, _) = app.model.room_counts();
    metrics.rooms.with_label_values(&["hot"]).set(hot as i64);
    metrics.rooms.with_label_values(&["cold"]).set(cold as i64);
    metrics.room_spill_bytes.set(spill_bytes as i64);
    metrics.chunk_reads.with_label_values(&["hit"]).set(hits as i64);
    metrics.chunk_reads.with_label_values(&["miss"]).set(misses as i64);
    let started = Instant::now();
    let engine = async {
        for (partition, applied) in positions.iter().enumerate() {
            let last = app.store.log().last_seq(partition as u32).await.map_err(|e| e.to_string())?;
            metrics.log_lag.with_label_values(&[&partition.to_string()]).set(last.saturating_sub(*applied) as i64);
        }
        let assets = app.store.assets(ENGINE_SCRAPE_TIMEOUT).await.map_err(|e| e.to_string())?;
        for asset in assets {
            let current = asset.replicas.iter().filter(|r| r.current).count();
            metrics.replicas_current.with_label_values(&[&asset.label]).set(current as i64);
            metrics.replicas_configured.with_label_values(&[&asset.label]).set(asset.configured_replicas as i64);
        }
        Ok::<(), String>(())
    };
    match tokio::time::timeout(ENGINE_SCRAPE_TIMEOUT, engine).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            metrics.engine_scrape_errors.inc();
            tracing::debug!(%error, "metrics: the engine did not answer");
        }
        Err(_) => {
            metrics.engine_scrape_errors.inc();
            tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, "metrics: the engine did not answer in time");
        }
    }
    let mut text = Vec::new();
    if let Err(error) = TextEncoder::new().encode(&metrics.registry.gather(), &mut text) {
        tracing::warn!(%error, "cannot encode metrics");
    }
    String::from_utf8(text).unwrap_or_default()
}
