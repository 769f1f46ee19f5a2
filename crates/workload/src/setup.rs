//! Setup and probes shared by the single-purpose benchmark workloads (big room, login storm,
//! initial sync, idle connections): many users registered with bounded concurrency, a public
//! room joined by all of them, a cheap sync token, and what a process on this machine uses
//! (resident memory, CPU time, established TCP connections), read from `/proc`.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use crate::client::{Client, ClientError, encode};
use crate::stats::process_cpu_seconds;

/// The password every workload account gets.
pub const PASSWORD: &str = "workload-password-1";

#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("setting up the workload failed: {0}")]
    Setup(#[from] ClientError),
    #[error("invalid workload: {0}")]
    Invalid(String),
}

/// A short random tag so that repeated runs against one server never reuse a user name.
pub fn run_id() -> String {
    (0..6).map(|_| (b'a' + rand::random_range(0..26u8)) as char).collect()
}

/// `endpoints` starting at `home` (user `home` is homed there and fails over in list order).
pub fn rotated(endpoints: &[String], home: usize) -> Vec<String> {
    let n = endpoints.len();
    (0..n).map(|k| endpoints[(home + k) % n].clone()).collect()
}

/// Registers `count` users named `{prefix}_{i}`, `concurrency` registrations in flight (each one
/// is a password hash on the server: slow by design). User `i` is homed at endpoint `i mod n`.
/// Reports progress about ten times.
pub async fn register_many(
    http: &reqwest::Client,
    endpoints: &[String],
    prefix: &str,
    count: usize,
    concurrency: usize,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Vec<Client>, ClientError> {
    let step = (count / 10).max(1);
    let mut registrations = futures::stream::iter(0..count)
        .map(|i| {
            let http = http.clone();
            let endpoints = rotated(endpoints, i);
            let localpart = format!("{prefix}_{i}");
            async move { Client::register(http, endpoints, &localpart, PASSWORD).await }
        })
        .buffered(concurrency.max(1));
    let mut clients = Vec::with_capacity(count);
    while let Some(client) = registrations.next().await {
        clients.push(client?);
        if clients.len() % step == 0 || clients.len() == count {
            progress(&format!("registered {}/{count} users", clients.len()));
        }
    }
    Ok(clients)
}

/// Creates a public room (anyone may join without an invite); returns its id.
pub async fn create_public_room(creator: &mut Client, name: &str) -> Result<String, ClientError> {
    let body = json!({ "preset": "public_chat", "name": name });
    let response = creator.request("POST", "/_matrix/client/v3/createRoom", Some(&body), None).await?;
    Ok(response["room_id"].as_str().unwrap_or_default().to_string())
}

/// Every client joins `room_id`, `concurrency` joins in flight. A join the server could not take
/// (5xx even after the client's own retries: joins to one room are ordered, and a server may
/// refuse a join that raced too many others) is tried again after a pause; joining twice is
/// harmless.
pub async fn join_all(
    clients: &[Client],
    room_id: &str,
    concurrency: usize,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<(), ClientError> {
    let count = clients.len();
    let step = (count / 10).max(1);
    let mut joins = futures::stream::iter(clients.iter().cloned())
        .map(|mut client| async move {
            let mut attempt = 0;
            loop {
                match client.join(room_id).await {
                    Err(ClientError::Unreachable { .. }) if attempt < 10 => {
                        attempt += 1;
                        let pause = 100 * attempt + rand::random_range(0..100);
                        tokio::time::sleep(Duration::from_millis(pause)).await;
                    }
                    result => return result,
                }
            }
        })
        .buffer_unordered(concurrency.max(1));
    let mut joined = 0;
    while let Some(result) = joins.next().await {
        result?;
        joined += 1;
        if joined % step == 0 || joined == count {
            progress(&format!("joined {joined}/{count}"));
        }
    }
    Ok(())
}

/// A sync token for "now", from a sync whose filter leaves every room out: the server need not
/// build any room's state, which an unfiltered initial sync in a big room would.
pub async fn current_since(client: &mut Client) -> Result<String, ClientError> {
    let filter = encode(r#"{"room":{"rooms":[]}}"#);
    let path = format!("/_matrix/client/v3/sync?timeout=0&filter={filter}");
    let response = client.request("GET", &path, None, None).await?;
    Ok(response["next_batch"].as_str().unwrap_or_default().to_string())
}

/// The events of every joined room in one sync response.
pub fn timeline_events(response: &Value) -> impl Iterator<Item = &Value> {
    response["rooms"]["join"]
        .as_object()
        .into_iter()
        .flat_map(|rooms| rooms.values())
        .flat_map(|room| room["timeline"]["events"].as_array().into_iter().flatten())
}

/// A message stamped for delivery measurement: which run, which message, when its send started
/// (microseconds since the run's epoch).
pub fn stamped_message(run: &str, seq: u64, sent_us: u64) -> Value {
    json!({ "msgtype": "m.text", "body": format!("bench {run} #{seq}"), "haetae_bench": { "run": run, "seq": seq, "sent_us": sent_us } })
}

/// The stamps (message number, send start) of this run's messages in a sync response.
pub fn stamps<'a>(response: &'a Value, run: &'a str) -> impl Iterator<Item = (u64, u64)> + 'a {
    timeline_events(response).filter_map(move |event| {
        let stamp = &event["content"]["haetae_bench"];
        if stamp["run"] != run {
            return None;
        }
        Some((stamp["seq"].as_u64()?, stamp["sent_us"].as_u64()?))
    })
}

/// Microseconds since `epoch`: the workloads stamp messages with it and receivers subtract.
pub fn micros_since(epoch: Instant) -> u64 {
    epoch.elapsed().as_micros() as u64
}

/// A process on this machine, read through `/proc` (Linux).
#[derive(Clone, Copy, Debug)]
pub struct Process {
    pub pid: u32,
}

impl Process {
    /// Resident memory (VmRSS), KiB; None when the process is gone or /proc is not there.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
    }

    /// CPU time (user + system) used so far, seconds.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        parse_stat_cpu_seconds(&stat)
    }

    /// Its child processes (e.g. a node's embedded nats-server).
    pub fn children(&self) -> Vec<Process> {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid)) else { return Vec::new() };
        let mut children = Vec::new();
        for task in tasks.flatten() {
            if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
                children.extend(list.split_whitespace().filter_map(|p| p.parse().ok()).map(|pid| Process { pid }));
            }
        }
        children
    }

    /// Polls resident memory every 100 ms until it has stayed within `tolerance_kib` for a whole
    /// second (the process has finished reacting to whatever just happened), or `limit` passed.
    /// Returns the last reading and whether it settled.
    pub async fn settled_rss_kib(&self, tolerance_kib: u64, limit: Duration) -> Option<(u64, bool)> {
        let deadline = Instant::now() + limit;
        let mut window: Vec<u64> = Vec::new();
        loop {
            let rss = self.rss_kib()?;
            window.push(rss);
            if window.len() > 10 {
                window.remove(0);
            }
            let spread = window.iter().max().unwrap_or(&rss) - window.iter().min().unwrap_or(&rss);
            if window.len() == 10 && spread <= tolerance_kib {
                return Some((rss, true));
            }
            if Instant::now() >= deadline {
                return Some((rss, false));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// CPU used during a phase, each as a share of one core (1.0 = one core busy all along).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CpuShares {
    /// The load generator (this process).
    pub bench: f64,
    /// The homeserver process, when it runs on this machine and its PID is known.
    pub server: Option<f64>,
    /// The homeserver's child processes (a haetae node's embedded nats-server).
    pub server_children: Option<f64>,
}

impl CpuShares {
    /// "bench 35%, server 120% (+ children 40%)", or without the server when unknown.
    pub fn describe(&self) -> String {
        let mut text = format!("bench {:.0}%", self.bench * 100.0);
        if let Some(server) = self.server {
            text.push_str(&format!(", server {:.0}%", server * 100.0));
        }
        if let Some(children) = self.server_children.filter(|c| *c > 0.0) {
            text.push_str(&format!(" + its nats-server {:.0}%", children * 100.0));
        }
        text
    }
}

/// CPU seconds used so far by this process and by the server (and its children), to compute
/// [`CpuShares`] over a phase.
#[derive(Clone, Copy)]
pub struct CpuMark {
    at: Instant,
    bench: f64,
    server: Option<f64>,
    children: Option<f64>,
}

impl CpuMark {
    pub fn now(server: Option<Process>) -> CpuMark {
        CpuMark {
            at: Instant::now(),
            bench: process_cpu_seconds(),
            server: server.and_then(|s| s.cpu_seconds()),
            children: server.map(|s| s.children().iter().filter_map(|c| c.cpu_seconds()).sum()),
        }
    }

    /// Shares of one core from this mark until `later`.
    pub fn shares(&self, later: &CpuMark) -> CpuShares {
        let seconds = later.at.duration_since(self.at).as_secs_f64().max(1e-9);
        let share = |a: Option<f64>, b: Option<f64>| Some((b? - a?) / seconds);
        CpuShares {
            bench: (later.bench - self.bench) / seconds,
            server: share(self.server, later.server),
            server_children: share(self.children, later.children),
        }
    }
}

/// User + system CPU seconds from the text of `/proc/PID/stat`.
pub fn parse_stat_cpu_seconds(stat: &str) -> Option<f64> {
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit(')').next()?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// The TCP port a base URL points at (80 or 443 when it names none).
pub fn url_port(url: &str) -> Option<u16> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split('/').next()?;
    let host_port = authority.rsplit('@').next()?;
    // An IPv6 literal is bracketed: the port follows the closing bracket.
    let after_host = match host_port.rfind(']') {
        Some(end) => &host_port[end + 1..],
        None => host_port,
    };
    match after_host.rsplit_once(':') {
        Some((_, port)) => port.parse().ok(),
        None => match scheme {
            "https" => Some(443),
            "http" => Some(80),
            _ => None,
        },
    }
}

/// Established TCP connections on this machine (this network namespace) whose remote port is one
/// of `ports`: the connections clients here hold to those servers.
pub fn established_to(ports: &[u16]) -> usize {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|file| std::fs::read_to_string(file).ok())
        .map(|table| count_established(&table, ports))
        .sum()
}

/// Counts the rows of a `/proc/net/tcp` table in state ESTABLISHED (01) whose remote port is in
/// `ports`.
pub fn count_established(table: &str, ports: &[u16]) -> usize {
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(remote), Some(state)) = (fields.get(2), fields.get(3)) else { return false };
            let port = remote.rsplit(':').next().and_then(|hex| u16::from_str_radix(hex, 16).ok());
            *state == "01" && port.is_some_and(|p| ports.contains(&p))
        })
        .count()
}

/// The soft and hard limits on open files of this process, from `/proc/self/limits`.
pub fn open_files_limit() -> Option<(u64, u64)> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_open_files_limit(&limits)
}

pub fn parse_open_files_limit(limits: &str) -> Option<(u64, u64)> {
    let line = limits.lines().find(|line| line.starts_with("Max open files"))?;
    let fields: Vec<&str> = line["Max open files".len()..].split_whitespace().collect();
    let parse = |text: &str| if text == "unlimited" { Some(u64::MAX) } else { text.parse().ok() };
    Some((parse(fields.first()?)?, parse(fields.get(1)?)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_base_urls() {
        assert_eq!(url_port("http://127.0.0.1:8008"), Some(8008));
        assert_eq!(url_port("http://127.0.0.1:8008/"), Some(8008));
        assert_eq!(url_port("https://matrix.example.org"), Some(443));
        assert_eq!(url_port("http://example.org/path:1"), Some(80));
        assert_eq!(url_port("http://[::1]:9000"), Some(9000));
        assert_eq!(url_port("http://[::1]"), Some(80));
        assert_eq!(url_port("nonsense"), None);
    }

    #[test]
    fn established_rows_are_counted_by_remote_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue\n\
             0: 0100007F:D431 0100007F:1F48 01 00000000:00000000\n\
             1: 0100007F:1F48 0100007F:D431 01 00000000:00000000\n\
             2: 0100007F:D432 0100007F:1F48 06 00000000:00000000\n\
             3: 0100007F:D433 0100007F:1F49 01 00000000:00000000\n";
        // Port 8008 is 1F48: one established client-side row, one in TIME_WAIT (06).
        assert_eq!(count_established(table, &[8008]), 1);
        assert_eq!(count_established(table, &[8008, 8009]), 2);
        assert_eq!(count_established(table, &[]), 0);
    }

    #[test]
    fn open_files_limit_is_read() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
             Max cpu time              unlimited            unlimited            seconds   \n\
             Max open files            1024                 524288               files     \n";
        assert_eq!(parse_open_files_limit(limits), Some((1024, 524288)));
        let unlimited = "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_open_files_limit(unlimited), Some((u64::MAX, u64::MAX)));
    }

    #[test]
    fn stat_cpu_time_is_user_plus_system() {
        // pid (comm with ) inside) state ppid ... utime=250 stime=50 (ticks of 10 ms)
        let stat = "42 (a) b) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 1 1 1";
        assert_eq!(parse_stat_cpu_seconds(stat), Some(3.0));
    }
}
