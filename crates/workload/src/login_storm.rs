//! The login-storm workload: `users` accounts, then password logins (`m.login.password`) as fast
//! as `concurrency` callers can make them for `duration`. Each login is a password-hash check on
//! the server, so this measures the server's hashing settings as much as anything else.
//!
//! The login request is sent once, not through [`Client::request`](crate::client::Client::request):
//! that method waits out a `429` and retries, and here a refused login must be counted as such.
//! Every login creates a new device; nothing logs out.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::client::http_client;
use crate::setup::{self, CpuMark, CpuShares, PASSWORD, Process, WorkloadError};
use crate::stats::{Summary, summarize};

#[derive(Clone, Debug)]
pub struct LoginStormConfig {
    /// Homeserver base URLs; user i is homed (and logs in) at endpoint i mod len.
    pub endpoints: Vec<String>,
    /// Accounts the logins cycle through.
    pub users: usize,
    /// Logins in flight at once.
    pub concurrency: usize,
    pub duration: Duration,
    /// Registrations in flight at once during setup.
    pub setup_concurrency: usize,
    /// The homeserver process, when it runs on this machine: its CPU use is reported.
    pub server: Option<Process>,
}

impl Default for LoginStormConfig {
    fn default() -> Self {
        LoginStormConfig {
            endpoints: vec!["http://127.0.0.1:8008".into()],
            users: 50,
            concurrency: 16,
            duration: Duration::from_secs(10),
            setup_concurrency: 16,
            server: None,
        }
    }
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct LoginStormReport {
    pub users: usize,
    pub concurrency: usize,
    pub duration_s: f64,
    /// Logins answered 200 with an access token.
    pub succeeded: u64,
    pub logins_per_s: f64,
    /// Latency of the successful logins.
    pub latency: Summary,
    /// Logins refused with 429 (rate limited).
    pub rate_limited: u64,
    /// Any other answer, or no answer.
    pub failed: u64,
    /// The first failure's description, if any.
    pub first_failure: Option<String>,
    pub register_s: f64,
    pub cpu: CpuShares,
}

pub async fn run(config: &LoginStormConfig, progress: &(dyn Fn(&str) + Sync)) -> Result<LoginStormReport, WorkloadError> {
    if config.endpoints.is_empty() || config.users == 0 || config.concurrency == 0 {
        return Err(WorkloadError::Invalid("need endpoints, users and concurrency".into()));
    }
    let http = http_client();
    let run = setup::run_id();
    let prefix = format!("login_{run}");
    let started = Instant::now();
    setup::register_many(&http, &config.endpoints, &prefix, config.users, config.setup_concurrency, progress).await?;
    let register_s = started.elapsed().as_secs_f64();
    progress(&format!("logging in for {} s, {} at once", config.duration.as_secs(), config.concurrency));

    let next = Arc::new(AtomicUsize::new(0));
    let succeeded = Arc::new(AtomicU64::new(0));
    let rate_limited = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::new(Mutex::new(Vec::new()));
    let first_failure: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let cpu_start = CpuMark::now(config.server);
    let start = Instant::now();
    let deadline = start + config.duration;
    let mut workers = Vec::with_capacity(config.concurrency);
    for _ in 0..config.concurrency {
        let (http, next, succeeded, rate_limited, failed, latencies, first_failure, prefix) = (
            http.clone(),
            next.clone(),
            succeeded.clone(),
            rate_limited.clone(),
            failed.clone(),
            latencies.clone(),
            first_failure.clone(),
            prefix.clone(),
        );
        let (endpoints, users) = (config.endpoints.clone(), config.users);
        workers.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                // Consecutive logins go to different users: no two at once for one user's devices.
                let i = next.fetch_add(1, Ordering::Relaxed) % users;
                let url = format!("{}/_matrix/client/v3/login", endpoints[i % endpoints.len()]);
                let body = json!({
                    "type": "m.login.password",
                    "identifier": { "type": "m.id.user", "user": format!("{prefix}_{i}") },
                    "password": PASSWORD,
                    "initial_device_display_name": "login storm",
                });
                let begun = Instant::now();
                let outcome = match http.post(&url).json(&body).timeout(Duration::from_secs(30)).send().await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let value: serde_json::Value = response.json().await.unwrap_or_default();
                        match status {
                            200 if value["access_token"].is_string() => Ok(()),
                            429 => Err(None),
                            _ => Err(Some(format!("HTTP {status} {value}"))),
                        }
                    }
                    Err(error) => Err(Some(error.to_string())),
                };
                match outcome {
                    Ok(()) => {
                        succeeded.fetch_add(1, Ordering::Relaxed);
                        latencies.lock().expect("latency lock").push(begun.elapsed().as_secs_f64() * 1000.0);
                    }
                    Err(None) => {
                        rate_limited.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(Some(failure)) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        first_failure.lock().expect("failure lock").get_or_insert(failure);
                    }
                }
            }
        }));
    }
    for worker in workers {
        let _ = worker.await;
    }
    let duration_s = start.elapsed().as_secs_f64();
    let cpu = cpu_start.shares(&CpuMark::now(config.server));
    let succeeded = succeeded.load(Ordering::Relaxed);
    let mut latencies = std::mem::take(&mut *latencies.lock().expect("latency lock"));
    let first_failure = first_failure.lock().expect("failure lock").take();
    Ok(LoginStormReport {
        users: config.users,
        concurrency: config.concurrency,
        duration_s,
        succeeded,
        logins_per_s: succeeded as f64 / duration_s,
        latency: summarize(&mut latencies),
        rate_limited: rate_limited.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        first_failure,
        register_s,
        cpu,
    })
}
