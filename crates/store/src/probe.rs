//! The engine's ceiling: raw JetStream publishes with the same replicas, payload size and
//! concurrency as a haetae workload, measured by the same binary, so a benchmark can say what
//! share of the engine's throughput haetae keeps.
//!
//! Uses throwaway streams (`HAETAE_PROBE_<i>`) that are deleted afterwards. With one stream the
//! engine batches every publish into one replication group; with as many streams as haetae has
//! log partitions it shows what splitting the same load over that many groups costs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};

fn probe_stream(index: usize) -> String {
    format!("HAETAE_PROBE_{index}")
}

#[derive(Clone, Debug)]
pub struct ProbeConfig {
    pub replicas: usize,
    /// Publishes awaiting their acknowledgement at once.
    pub concurrency: usize,
    pub payload_bytes: usize,
    pub duration: Duration,
    /// Streams the publishers are spread over (publisher i writes to stream i mod `streams`).
    pub streams: usize,
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
/// `access` must allow creating and deleting the probe streams (a deployment's admin user).
pub async fn publish_ceiling(url: &str, access: &crate::Access, config: &ProbeConfig) -> Result<ProbeResult, String> {
    let (servers, credential) = crate::server_addrs(url)?;
    let access = crate::merge_access(credential, access)?;
    let client = crate::with_access(async_nats::ConnectOptions::new().name("haetae-probe"), &access)
        .connect(servers)
        .await
        .map_err(|e| format!("cannot connect to NATS at {}: {e}", crate::redact_url(url)))?;
    let js = jetstream::ContextBuilder::new().timeout(Duration::from_secs(5)).build(client);
    let streams = config.streams.max(1);
    for index in 0..streams {
        let _ = js.delete_stream(probe_stream(index)).await;
        js.create_stream(stream::Config {
            name: probe_stream(index),
            subjects: vec![format!("haetae.probe.{index}.>")],
            num_replicas: config.replicas,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("cannot create probe stream {index}: {e}"))?;
    }
    let payload = bytes::Bytes::from(vec![b'x'; config.payload_bytes]);
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..config.concurrency {
        let (js, payload, stop, failed) = (js.clone(), payload.clone(), stop.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let subject = format!("haetae.probe.{}.{worker}", worker % streams);
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
    for index in 0..streams {
        let _ = js.delete_stream(probe_stream(index)).await;
    }
    Ok(ProbeResult { acknowledged: latencies_ms.len() as u64, failed: failed.load(Ordering::Relaxed), duration_s, latencies_ms })
}
