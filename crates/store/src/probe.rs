//! The engine's ceiling: raw JetStream publishes with the same replicas, payload size and
//! concurrency as a haetae workload, measured by the same binary, so a benchmark can say what
//! share of the engine's throughput haetae keeps.
//!
//! Uses a throwaway stream (`HAETAE_PROBE`) that is deleted afterwards.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};

const PROBE_STREAM: &str = "HAETAE_PROBE";

#[derive(Clone, Debug)]
pub struct ProbeConfig {
    pub replicas: usize,
    /// Publishes awaiting their acknowledgement at once.
    pub concurrency: usize,
    pub payload_bytes: usize,
    pub duration: Duration,
}

#[derive(Clone, Debug, Default)]
pub struct ProbeResult {
    pub acknowledged: u64,
    pub failed: u64,
    pub duration_s: f64,
    /// Publish-to-acknowledgement latencies, milliseconds.
    pub latencies_ms: Vec<f64>,
}

/// Publishes flat out for `config.duration` with `config.concurrency` publishers, each waiting
/// for its acknowledgement before the next publish.
pub async fn publish_ceiling(url: &str, config: &ProbeConfig) -> Result<ProbeResult, String> {
    let servers = crate::server_addrs(url)?;
    let client = async_nats::ConnectOptions::new()
        .name("haetae-probe")
        .connect(servers)
        .await
        .map_err(|e| format!("cannot connect to NATS at {url}: {e}"))?;
    let js = jetstream::ContextBuilder::new().timeout(Duration::from_secs(5)).build(client);
    let _ = js.delete_stream(PROBE_STREAM).await;
    js.create_stream(stream::Config {
        name: PROBE_STREAM.into(),
        subjects: vec!["haetae.probe.>".into()],
        num_replicas: config.replicas,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| format!("cannot create the probe stream: {e}"))?;
    let payload = bytes::Bytes::from(vec![b'x'; config.payload_bytes]);
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..config.concurrency {
        let (js, payload, stop, failed) = (js.clone(), payload.clone(), stop.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let subject = format!("haetae.probe.{worker}");
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let acked = match js.publish(subject.clone(), payload.clone()).await {
                    Ok(ack) => ack.await.is_ok(),
                    Err(_) => false,
                };
                if acked {
                    latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            latencies
        }));
    }
    tokio::time::sleep(config.duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies_ms = Vec::new();
    for task in tasks {
        latencies_ms.extend(task.await.unwrap_or_default());
    }
    let duration_s = started.elapsed().as_secs_f64();
    let _ = js.delete_stream(PROBE_STREAM).await;
    Ok(ProbeResult { acknowledged: latencies_ms.len() as u64, failed: failed.load(Ordering::Relaxed), duration_s, latencies_ms })
}
