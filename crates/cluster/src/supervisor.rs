//! The supervisor behind `haetae cluster up`: the only party that touches a DC's processes and
//! disks once the deployment runs.
//!
//! - `cluster fire` never kills or deletes anything itself: it drops a request file into
//!   `DIR/requests/` and watches the state file. The supervisor takes the request (by deleting the
//!   file: whoever deletes it first, the supervisor or a `fire` that gave up, wins), SIGKILLs the
//!   DC's processes, deletes its disks, and rebuilds it on the empty disk. One operation at a
//!   time, so no two parties ever touch a disk at once.
//! - A fire request waits while another DC is not current: burning a second DC before the first
//!   has its replicas back would leave one copy of what was acknowledged.
//! - A process that exits on its own is started again on whatever its disk holds.
//! - A DC whose replicas stay behind without progress (a server whose files vanished, say) gets
//!   its nats-server restarted on a clean disk, provided the other DCs hold two current copies of
//!   everything.
//! - Every operation runs against the stop signal: `cluster down`, SIGTERM or Ctrl-C stop
//!   everything within seconds, whether the supervisor is idle, rebuilding or waiting.
//!
//! Never interprets what the nodes store; knows JetStream only through `haetae_store::admin`.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use haetae_store::admin::{Admin, AssetInfo};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::deployment::{ClusterError, DcReplicas, Deployment, Phase};

/// How often the supervisor looks at requests, processes and replicas.
const ROUND: Duration = Duration::from_millis(500);
/// The longest one look at every asset's placement may take.
const ASSETS_TIMEOUT: Duration = Duration::from_secs(3);
/// Failed starts are retried after 5 s, 10 s, 20 s... up to this.
const RETRY_CEILING: Duration = Duration::from_secs(60);

/// A request, written by `cluster fire`, for the supervisor to burn a DC.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FireRequest {
    pub dc: String,
    /// Seconds the DC stays burned before the supervisor rebuilds it.
    #[serde(default)]
    pub hold_s: f64,
}

/// The folder of pending requests.
pub fn requests_dir(dir: &Path) -> PathBuf {
    dir.join("requests")
}

/// Writes a fire request (atomically) and returns its path: the request is pending while the
/// file exists.
pub fn request_fire(dir: &Path, request: &FireRequest) -> Result<PathBuf, String> {
    let folder = requests_dir(dir);
    std::fs::create_dir_all(&folder).map_err(|e| format!("cannot create {}: {e}", folder.display()))?;
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let name = format!("fire-{nanos:020}-{}-{}", request.dc, std::process::id());
    let temporary = folder.join(format!(".{name}.tmp"));
    let path = folder.join(format!("{name}.json"));
    let text = serde_json::to_string(request).unwrap_or_default();
    std::fs::write(&temporary, text).map_err(|e| format!("cannot write {}: {e}", temporary.display()))?;
    std::fs::rename(&temporary, &path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// Withdraws a pending request. True when it was still pending (nothing will happen); false when
/// the supervisor had already taken it.
pub fn withdraw(path: &Path) -> bool {
    std::fs::remove_file(path).is_ok()
}

/// Pending requests, oldest first.
fn pending(dir: &Path) -> Vec<(PathBuf, Option<FireRequest>)> {
    let Ok(entries) = std::fs::read_dir(requests_dir(dir)) else { return Vec::new() };
    let mut paths: Vec<PathBuf> =
        entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "json")).collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let request = std::fs::read_to_string(&path).ok().and_then(|text| serde_json::from_str(&text).ok());
            (path, request)
        })
        .collect()
}

/// Watches each DC's replicas across rounds and says when one is stuck: behind, and neither
/// fewer replicas behind nor less lag for `stuck_after`. A DC catching up (lag falling) is not
/// stuck, however long it takes.
pub struct ReplicaWatch {
    stuck_after: Duration,
    /// Per DC, while it has replicas behind: (lowest count behind, lowest total lag) and when
    /// either last reached a new low.
    behind: Vec<Option<((usize, u64), Instant)>>,
}

impl ReplicaWatch {
    pub fn new(dcs: usize, stuck_after: Duration) -> ReplicaWatch {
        ReplicaWatch { stuck_after, behind: vec![None; dcs] }
    }

    /// Records one look at DC `i`; true when it is stuck.
    pub fn observe(&mut self, i: usize, standing: &DcReplicas, now: Instant) -> bool {
        if standing.behind.is_empty() {
            self.behind[i] = None;
            return false;
        }
        let seen = (standing.behind.len(), standing.total_lag());
        match &mut self.behind[i] {
            None => {
                self.behind[i] = Some((seen, now));
                false
            }
            Some((best, progressed_at)) => {
                if seen.0 < best.0 || seen.1 < best.1 {
                    *best = (best.0.min(seen.0), best.1.min(seen.1));
                    *progressed_at = now;
                }
                now.duration_since(*progressed_at) >= self.stuck_after
            }
        }
    }

    /// Forgets DC `i` (it was just rebuilt).
    pub fn forget(&mut self, i: usize) {
        self.behind[i] = None;
    }
}

/// How the supervisor is tuned.
#[derive(Clone, Debug)]
pub struct SupervisorConfig {
    /// A serving DC whose replicas make no progress for this long is restarted on a clean disk.
    pub stuck_after: Duration,
}

impl Default for SupervisorConfig {
    fn default() -> SupervisorConfig {
        SupervisorConfig { stuck_after: crate::deployment::CATCH_UP_NO_PROGRESS }
    }
}

/// Supervises a running deployment until told to stop.
pub struct Supervisor {
    deployment: Deployment,
    config: SupervisorConfig,
    watch: ReplicaWatch,
    /// A connection for reading placement, kept across rounds; dropped on error.
    admin: Option<Admin>,
    /// Per DC: failed starts in a row, and when the next may be tried.
    failures: Vec<u32>,
    retry_at: Vec<Instant>,
    /// The last "waiting" sentence logged, so a waiting request is told once, not every round.
    last_note: String,
    log: Arc<dyn Fn(&str) + Send + Sync>,
}

/// Runs `op` unless the stop signal comes first (then `op` is dropped: a process it was
/// starting is killed on drop).
async fn unless_stopped<T>(stop: &mut watch::Receiver<bool>, op: impl Future<Output = T>) -> Option<T> {
    tokio::select! {
        biased;
        _ = stop.wait_for(|stopped| *stopped) => None,
        out = op => Some(out),
    }
}

impl Supervisor {
    pub fn new(deployment: Deployment, config: SupervisorConfig, log: Arc<dyn Fn(&str) + Send + Sync>) -> Supervisor {
        let count = deployment.dc_count();
        Supervisor {
            watch: ReplicaWatch::new(count, config.stuck_after),
            deployment,
            config,
            admin: None,
            failures: vec![0; count],
            retry_at: vec![Instant::now(); count],
            last_note: String::new(),
            log,
        }
    }

    fn say(&self, line: &str) {
        (self.log)(line);
    }

    fn name(&self, i: usize) -> String {
        self.deployment.state.dcs[i].name.clone()
    }

    fn set_activity(&mut self, activity: String) {
        self.deployment.state.activity = activity;
        if let Err(error) = self.deployment.save() {
            self.say(&format!("cannot write the state file: {error}"));
        }
    }

    fn set_phase(&mut self, i: usize, phase: Phase) {
        self.deployment.state.dcs[i].phase = phase;
        if let Err(error) = self.deployment.save() {
            self.say(&format!("cannot write the state file: {error}"));
        }
    }

    /// Supervises until `stop` turns true, then stops every process (bounded by
    /// [`crate::deployment::STOP_GRACE`]).
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        // Requests left over from an earlier deployment in this folder are not for this one.
        for (path, _) in pending(&self.deployment.state.spec.dir) {
            let _ = std::fs::remove_file(path);
        }
        self.set_activity(String::new());
        while !*stop.borrow() {
            if !self.round(&mut stop).await {
                break;
            }
            if unless_stopped(&mut stop, tokio::time::sleep(ROUND)).await.is_none() {
                break;
            }
        }
        self.say("stopping: SIGTERM to every process, SIGKILL to any still running after 5 s");
        let started = Instant::now();
        self.deployment.state.activity = "stopping".into();
        let _ = self.deployment.save();
        self.deployment.down().await;
        (self.log)(&format!("stopped every process in {:.1} s", started.elapsed().as_secs_f64()));
    }

    /// One round: restart what died, carry out a fire request, repair a stuck DC. False when the
    /// stop signal interrupted an operation.
    async fn round(&mut self, stop: &mut watch::Receiver<bool>) -> bool {
        for i in self.deployment.exited() {
            let name = self.name(i);
            self.say(&format!("DC {name}: a process exited on its own (crashed or killed from outside); starting it again on what its disk holds"));
            self.set_phase(i, Phase::Rebuilding);
        }
        for i in 0..self.deployment.dc_count() {
            let (nats, node) = self.deployment.processes(i);
            if (nats && node) || Instant::now() < self.retry_at[i] {
                continue;
            }
            if unless_stopped(stop, self.bring_back(i, "restart")).await.is_none() {
                return false;
            }
        }
        let Some(assets) = unless_stopped(stop, self.assets()).await else { return false };
        if let Some(request) = self.next_fire_request(assets.as_deref()) {
            return unless_stopped(stop, self.fire(request)).await.is_some();
        }
        if let Some(assets) = assets {
            for i in 0..self.deployment.dc_count() {
                if self.deployment.processes(i) != (true, true) {
                    continue;
                }
                let standing = DcReplicas::of(&self.name(i), &assets);
                if self.watch.observe(i, &standing, Instant::now()) {
                    return unless_stopped(stop, self.repair(i, standing)).await.is_some();
                }
            }
        }
        true
    }

    /// Every asset's placement, or None when JetStream did not answer in time.
    async fn assets(&mut self) -> Option<Vec<AssetInfo>> {
        if self.admin.is_none() {
            self.admin = tokio::time::timeout(ASSETS_TIMEOUT, self.deployment.admin()).await.ok().and_then(Result::ok);
        }
        let admin = self.admin.as_ref()?;
        match tokio::time::timeout(ASSETS_TIMEOUT, admin.assets()).await {
            Ok(Ok(assets)) if !assets.is_empty() => Some(assets),
            _ => {
                self.admin = None;
                None
            }
        }
    }

    /// The oldest pending fire request, taken (its file deleted) if it can be carried out now.
    /// A request that must wait stays pending and the reason goes to the log and the state file.
    fn next_fire_request(&mut self, assets: Option<&[AssetInfo]>) -> Option<(usize, FireRequest)> {
        let dir = self.deployment.state.spec.dir.clone();
        for (path, request) in pending(&dir) {
            let Some(request) = request.filter(|r| self.deployment.dc_index(&r.dc).is_some()) else {
                self.say(&format!("ignoring {}: not a fire request for a DC of this deployment", path.display()));
                let _ = std::fs::remove_file(&path);
                continue;
            };
            let target = self.deployment.dc_index(&request.dc).unwrap_or(0);
            let wait_reason = match assets {
                None => Some("JetStream does not answer".to_string()),
                Some(assets) => (0..self.deployment.dc_count()).filter(|&j| j != target).find_map(|j| {
                    let name = self.name(j);
                    if self.deployment.processes(j) != (true, true) {
                        return Some(format!("DC {name} is not running"));
                    }
                    let standing = DcReplicas::of(&name, assets);
                    (!standing.current()).then(|| format!("DC {name} is not current yet (behind: {})", standing.describe_behind(3)))
                }),
            };
            if let Some(reason) = wait_reason {
                let note = format!("a fire request for DC {} waits: {reason}; burning it now would leave one copy of its data", request.dc);
                if note != self.last_note {
                    self.say(&note);
                    self.last_note = note.clone();
                    self.set_activity(note);
                }
                return None;
            }
            // Taking the request is deleting its file; a `fire` that gave up deleted it first.
            if std::fs::remove_file(&path).is_err() {
                continue;
            }
            self.last_note.clear();
            return Some((target, request));
        }
        None
    }

    /// Burns DC `i` (SIGKILL its processes, delete its disks), keeps it down for the requested
    /// time, then rebuilds it on the empty disk.
    async fn fire(&mut self, (i, request): (usize, FireRequest)) {
        let name = self.name(i);
        let dir = Deployment::dc_data_dir(&self.deployment.state, &name);
        self.set_activity(format!("burning DC {name}"));
        self.say(&format!("FIRE in DC {name} (requested): SIGKILL its nats-server and node, delete {}", dir.display()));
        let started = Instant::now();
        if let Err(error) = self.deployment.kill_dc(i, true).await {
            self.say(&format!("DC {name}: burning failed: {error}; its processes are gone, the rebuild goes on"));
        }
        self.deployment.state.dcs[i].burns += 1;
        self.set_phase(i, Phase::Burned);
        self.watch.forget(i);
        self.say(&format!("DC {name} burned in {} ms", started.elapsed().as_millis()));
        if request.hold_s > 0.0 {
            self.set_activity(format!("DC {name} stays burned for {} s, as asked", request.hold_s));
            self.say(&format!("DC {name} stays burned for {} s, as asked", request.hold_s));
            // The caller races this whole operation against the stop signal.
            tokio::time::sleep(Duration::from_secs_f64(request.hold_s)).await;
        }
        self.bring_back(i, "rebuild on empty disks").await;
    }

    /// Restarts the nats-server of a DC whose replicas stay behind, on a clean disk, if the other
    /// DCs hold two current copies of everything; otherwise says why it waits.
    async fn repair(&mut self, i: usize, standing: DcReplicas) {
        let name = self.name(i);
        let health = self.deployment.health_problem(i).await.unwrap_or_else(|| "healthy".into());
        if !standing.fragile_elsewhere.is_empty() {
            let note = format!(
                "DC {name}: replicas behind without progress ({}), but {} have fewer than two current replicas elsewhere: not wiping its disk; waiting",
                standing.describe_behind(3),
                standing.fragile_elsewhere.join(", ")
            );
            if note != self.last_note {
                self.say(&note);
                self.last_note = note;
            }
            return;
        }
        self.say(&format!(
            "DC {name}: replicas behind and not catching up for {} s: {}; its nats-server says: {health}; restarting its nats-server on a clean disk",
            self.config.stuck_after.as_secs(),
            standing.describe_behind(5)
        ));
        self.wipe_and_count(i).await;
        self.bring_back(i, "repair on a clean disk").await;
    }

    async fn wipe_and_count(&mut self, i: usize) {
        let name = self.name(i);
        match self.deployment.wipe_server(i).await {
            Ok(kept) => self.say(&format!("DC {name}: server data deleted; its old log kept at {}", kept.display())),
            Err(error) => self.say(&format!("DC {name}: deleting its server data failed: {error}")),
        }
        self.deployment.state.dcs[i].repairs += 1;
        self.watch.forget(i);
    }

    /// Starts whatever of DC `i` is not running and waits until it caught up and serves. A DC
    /// that makes no progress catching up is restarted on a clean disk (when that is safe) and
    /// tried again; other failures are retried later with a growing pause.
    async fn bring_back(&mut self, i: usize, why: &str) {
        let name = self.name(i);
        for attempt in 1..=3 {
            self.set_activity(format!("DC {name}: {why}, attempt {attempt}"));
            self.set_phase(i, Phase::Rebuilding);
            self.say(&format!("DC {name}: {why}: starting its processes, waiting until its replicas are current (attempt {attempt})"));
            let started = Instant::now();
            match self.deployment.start_dc(i).await {
                Ok(caught_up) => {
                    self.say(&format!(
                        "DC {name} is back: replicas current after {:.1} s, node serving after {:.1} s",
                        caught_up.as_secs_f64(),
                        started.elapsed().as_secs_f64()
                    ));
                    self.failures[i] = 0;
                    self.watch.forget(i);
                    self.set_phase(i, Phase::Serving);
                    self.set_activity(String::new());
                    return;
                }
                Err(error @ ClusterError::Stuck { .. }) => {
                    self.say(&format!("{error}"));
                    let safe = match self.assets().await {
                        Some(assets) => DcReplicas::of(&name, &assets).fragile_elsewhere,
                        None => vec!["(JetStream did not answer)".to_string()],
                    };
                    if !safe.is_empty() {
                        self.say(&format!("DC {name}: not wiping its disk: {} lack two current replicas elsewhere", safe.join(", ")));
                        break;
                    }
                    self.say(&format!("DC {name}: restarting its nats-server on a clean disk"));
                    self.wipe_and_count(i).await;
                }
                Err(error) => {
                    self.say(&format!("DC {name}: {why} failed: {error}"));
                    break;
                }
            }
        }
        self.failures[i] += 1;
        let pause = (Duration::from_secs(5) * 2u32.pow(self.failures[i].min(4) - 1)).min(RETRY_CEILING);
        self.retry_at[i] = Instant::now() + pause;
        let note = format!(
            "DC {name} is not back; the supervisor tries again in {} s (`haetae cluster status --dir {}` shows its replicas; its logs are under {})",
            pause.as_secs(),
            self.deployment.state.spec.dir.display(),
            Deployment::dc_data_dir(&self.deployment.state, &name).display()
        );
        self.say(&note);
        self.set_activity(note);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn behind(lags: &[u64]) -> DcReplicas {
        DcReplicas { behind: lags.iter().enumerate().map(|(k, lag)| (format!("log/{k}"), *lag)).collect(), ..DcReplicas::default() }
    }

    #[test]
    fn a_replica_that_catches_up_is_not_stuck_one_that_stays_behind_is() {
        let mut watch = ReplicaWatch::new(1, Duration::from_secs(10));
        let t0 = Instant::now();
        let s = Duration::from_secs;
        assert!(!watch.observe(0, &behind(&[100, 50]), t0));
        // Lag falls: progress, however long it takes.
        assert!(!watch.observe(0, &behind(&[80, 50]), t0 + s(8)));
        assert!(!watch.observe(0, &behind(&[40]), t0 + s(16)));
        // No new low for 10 s: stuck.
        assert!(!watch.observe(0, &behind(&[45]), t0 + s(20)));
        assert!(watch.observe(0, &behind(&[40]), t0 + s(26)));
        // Current again: forgotten; behind again starts a new count.
        assert!(!watch.observe(0, &behind(&[]), t0 + s(27)));
        assert!(!watch.observe(0, &behind(&[0]), t0 + s(28)));
        assert!(watch.observe(0, &behind(&[0]), t0 + s(38)));
    }

    #[test]
    fn fire_requests_are_taken_once_oldest_first_and_can_be_withdrawn() {
        let dir = std::env::temp_dir().join(format!("haetae-requests-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = request_fire(&dir, &FireRequest { dc: "a".into(), hold_s: 0.0 }).unwrap();
        let second = request_fire(&dir, &FireRequest { dc: "b".into(), hold_s: 2.0 }).unwrap();
        let found = pending(&dir);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].0, first);
        assert_eq!(found[1].1.as_ref().map(|r| r.dc.as_str()), Some("b"));
        // The supervisor takes the first by deleting it; a late withdrawal learns it was taken.
        std::fs::remove_file(&first).unwrap();
        assert!(!withdraw(&first));
        assert!(withdraw(&second));
        assert!(pending(&dir).is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
