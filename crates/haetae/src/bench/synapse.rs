//! Synapse, the reference homeserver, for side-by-side runs: installed from PyPI into a
//! throwaway virtual environment under `.tools/` (never a dependency of haetae), configured with
//! SQLite, open registration and every rate limit raised, and stopped (by PID) when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Synapse release the benchmark installs.
pub const SYNAPSE_VERSION: &str = "1.163.2";
const SERVER_NAME: &str = "bench.local";
/// Every `rc_*` limit Synapse has, raised far above what the benchmark sends.
const RATE_LIMITS: &str = "
rc_message: {per_second: 100000, burst_count: 100000}
rc_registration: {per_second: 100000, burst_count: 100000}
rc_registration_token_validity: {per_second: 100000, burst_count: 100000}
rc_login:
  address: {per_second: 100000, burst_count: 100000}
  account: {per_second: 100000, burst_count: 100000}
  failed_attempts: {per_second: 100000, burst_count: 100000}
rc_joins:
  local: {per_second: 100000, burst_count: 100000}
  remote: {per_second: 100000, burst_count: 100000}
rc_joins_per_room: {per_second: 100000, burst_count: 100000}
rc_invites:
  per_room: {per_second: 100000, burst_count: 100000}
  per_user: {per_second: 100000, burst_count: 100000}
  per_issuer: {per_second: 100000, burst_count: 100000}
rc_3pid_validation: {per_second: 100000, burst_count: 100000}
rc_admin_redaction: {per_second: 100000, burst_count: 100000}
rc_media_create: {per_second: 100000, burst_count: 100000}
rc_delayed_event_mgmt: {per_second: 100000, burst_count: 100000}
rc_presence:
  per_user: {per_second: 100000, burst_count: 100000}
rc_room_creation: {per_second: 100000, burst_count: 100000}
rc_profile: {per_second: 100000, burst_count: 100000}
rc_reports: {per_second: 100000, burst_count: 100000}
rc_key_requests: {per_second: 100000, burst_count: 100000}
rc_third_party_invite: {per_second: 100000, burst_count: 100000}
rc_user_directory: {per_second: 100000, burst_count: 100000}
";

/// A Synapse this process started.
pub struct Synapse {
    pub url: String,
    child: Child,
    dir: PathBuf,
    /// The virtual environment's interpreter and the configuration, to start it again.
    python: PathBuf,
    config: PathBuf,
}

/// How long Synapse may take to exit after SIGTERM before it is killed.
const STOP_LIMIT: Duration = Duration::from_secs(30);

impl Synapse {
    /// The Synapse process's PID (for its memory).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, wait for the exit (SIGKILL after [`STOP_LIMIT`]), start it again on the same
    /// configuration and database. Returns how long the stop took; serving is the caller's to poll.
    pub async fn restart(&mut self) -> Result<Duration, String> {
        let begun = Instant::now();
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        while !matches!(self.child.try_wait(), Ok(Some(_))) {
            if begun.elapsed() > STOP_LIMIT {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let stopped = begun.elapsed();
        self.child = spawn(&self.python, &self.config, &self.dir)?;
        Ok(stopped)
    }
}

/// Starts Synapse on `config`, appending its output to `dir/stdout.log`.
fn spawn(python: &Path, config: &Path, dir: &Path) -> Result<Child, String> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("stdout.log")).map_err(|e| e.to_string())?;
    Command::new(python)
        .args(["-m", "synapse.app.homeserver", "--config-path"])
        .arg(config)
        .current_dir(dir)
        .stdout(Stdio::from(log.try_clone().map_err(|e| e.to_string())?))
        .stderr(Stdio::from(log))
        .spawn()
        .map_err(|e| format!("cannot start Synapse: {e}"))
}

impl Drop for Synapse {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = std::fs::remove_dir_all(&self.dir);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where the virtual environment lives: `HAETAE_SYNAPSE_VENV`, else `.tools/synapse-venv` under
/// the current directory (the repository root, where the README's commands run).
fn venv_dir() -> Result<PathBuf, String> {
    if let Ok(dir) = std::env::var("HAETAE_SYNAPSE_VENV") {
        return Ok(PathBuf::from(dir));
    }
    Ok(std::env::current_dir().map_err(|e| e.to_string())?.join(".tools").join("synapse-venv"))
}

fn run(command: &mut Command, what: &str) -> Result<(), String> {
    let output = command.output().map_err(|e| format!("{what}: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
    Err(format!("{what} failed ({}): {}", output.status, tail.into_iter().rev().collect::<Vec<_>>().join(" | ")))
}

/// Installs Synapse into the virtual environment unless this version is there already. The
/// marker file is written only after a complete install, so a broken one is redone.
fn install(venv: &Path, progress: &dyn Fn(&str)) -> Result<PathBuf, String> {
    let python = venv.join("bin").join("python");
    let marker = venv.join(format!(".installed-matrix-synapse-{SYNAPSE_VERSION}"));
    if marker.exists() && python.exists() {
        return Ok(python);
    }
    progress(&format!("installing matrix-synapse {SYNAPSE_VERSION} into {} (first run only)", venv.display()));
    let _ = std::fs::remove_dir_all(venv);
    run(
        Command::new("python3").arg("-m").arg("venv").arg(venv),
        "creating a Python virtual environment (on Debian: apt-get install python3-venv)",
    )?;
    run(
        Command::new(&python).args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"]).arg(format!("matrix-synapse=={SYNAPSE_VERSION}")),
        "pip install matrix-synapse",
    )?;
    std::fs::write(&marker, SYNAPSE_VERSION).map_err(|e| e.to_string())?;
    Ok(python)
}

/// The generated configuration with our listener in place of its own, plus open registration,
/// no presence and raised rate limits.
fn configure(generated: &str, port: u16) -> String {
    let mut out = String::new();
    let mut in_listeners = false;
    for line in generated.lines() {
        if line.starts_with("listeners:") {
            in_listeners = true;
            continue;
        }
        if in_listeners && (line.starts_with(' ') || line.starts_with('-') || line.is_empty()) {
            continue;
        }
        in_listeners = false;
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(&format!(
        "listeners:\n  - port: {port}\n    bind_addresses: ['127.0.0.1']\n    type: http\n    tls: false\n    x_forwarded: false\n    resources:\n      - names: [client]\n        compress: false\n"
    ));
    out.push_str("enable_registration: true\nenable_registration_without_verification: true\nreport_stats: false\n");
    out.push_str("presence:\n  enabled: false\nurl_preview_enabled: false\ntrusted_key_servers: []\nfederation_domain_whitelist: []\n");
    out.push_str(RATE_LIMITS);
    out
}

/// Installs (first run), configures and starts Synapse in a fresh directory under `work_dir`, and
/// returns once it answers `/_matrix/client/versions`.
pub async fn start(work_dir: &Path, progress: &dyn Fn(&str)) -> Result<Synapse, String> {
    let venv = venv_dir()?;
    let python = install(&venv, progress)?;
    let dir = work_dir.join("synapse");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let config = dir.join("homeserver.yaml");
    run(
        Command::new(&python)
            .args(["-m", "synapse.app.homeserver", "--server-name", SERVER_NAME, "--report-stats=no", "--generate-config"])
            .arg("--config-path")
            .arg(&config)
            .arg("--data-directory")
            .arg(&dir)
            .current_dir(&dir),
        "generating a Synapse configuration",
    )?;
    let generated = std::fs::read_to_string(&config).map_err(|e| e.to_string())?;
    let port = super::free_port()?;
    std::fs::write(&config, configure(&generated, port)).map_err(|e| e.to_string())?;
    let child = spawn(&python, &config, &dir)?;
    let mut synapse = Synapse { url: format!("http://127.0.0.1:{port}"), child, dir, python, config };
    let http = haetae_workload::client::http_client();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let answered = http.get(format!("{}/_matrix/client/versions", synapse.url)).send().await;
        if answered.is_ok_and(|r| r.status().is_success()) {
            return Ok(synapse);
        }
        let exited = synapse.child.try_wait().ok().flatten();
        if exited.is_some() || Instant::now() > deadline {
            let log = std::fs::read_to_string(synapse.dir.join("stdout.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(6).collect();
            let why = if exited.is_some() { "exited" } else { "did not answer within 120 s" };
            return Err(format!("Synapse {why}: {}", tail.into_iter().rev().collect::<Vec<_>>().join(" | ")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_listener_is_replaced_by_ours() {
        let generated = "server_name: \"bench.local\"\nlisteners:\n  - port: 8008\n    tls: false\n    resources:\n      - names: [client, federation]\ndatabase:\n  name: sqlite3\n";
        let config = configure(generated, 12345);
        assert!(!config.contains("8008"));
        assert!(config.contains("port: 12345"));
        assert!(config.contains("database:\n  name: sqlite3"));
        assert_eq!(config.matches("listeners:").count(), 1);
        assert!(config.contains("enable_registration: true"));
    }
}
