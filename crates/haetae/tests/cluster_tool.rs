//! `haetae cluster` as an operator uses it, through the real binary: `cluster up` supervising in
//! the background, a small chat load through the Matrix API at every DC's node, `cluster fire`
//! twice in a row (DC a, then DC b as soon as a is back), and `cluster down`.
//!
//! Asserts that each burned DC comes back with every asset current (read from `cluster status`),
//! that every acknowledged message is in the room exactly once at every DC, and that `down` ends
//! the supervisor and every process it started within a bounded time. Every wait polls a
//! condition with a deadline.
//!
//! The deployment runs with `--sync-interval default`: this test burns one DC at a time while the
//! other two keep running on the same kernel, so fsync policy cannot change its outcome, and
//! fsyncing every write would slow this 2-core machine's test for nothing. `--partitions 3` keeps
//! the number of streams (and elections after each fire) small.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use haetae_workload::client::{Client, http_client};
use haetae_workload::setup;
use serde_json::{Value, json};

fn haetae(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_haetae")).args(args).arg("--dir").arg(dir).output().expect("run haetae")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `cluster up` running as a child; on drop (a failed assertion) the deployment is stopped so
/// no process outlives the test.
struct Up {
    child: Child,
    dir: PathBuf,
    log: PathBuf,
    out: PathBuf,
    _temp: tempfile::TempDir,
}

impl Up {
    fn start() -> Up {
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path().join("cluster");
        let log = temp.path().join("up.stderr");
        let out = temp.path().join("up.stdout");
        let child = Command::new(env!("CARGO_BIN_EXE_haetae"))
            .args(["cluster", "up", "--partitions", "3", "--sync-interval", "default", "--dir"])
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("stdout file"))
            .stderr(std::fs::File::create(&log).expect("stderr file"))
            .spawn()
            .expect("start haetae cluster up");
        Up { child, dir, log, out, _temp: temp }
    }

    /// The supervisor's log so far (for failure messages).
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls `condition` every 200 ms until it holds; panics after `limit` naming what it waited
    /// for, with the supervisor's log.
    fn wait_until(&mut self, what: &str, limit: Duration, mut condition: impl FnMut(&mut Up) -> bool) {
        let started = Instant::now();
        loop {
            if condition(self) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the supervisor exited ({status}) while waiting for {what}\n{}", self.log());
            }
            assert!(started.elapsed() < limit, "waited {} s for {what}; supervisor log:\n{}", limit.as_secs(), self.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn state(&self) -> Value {
        let text = std::fs::read_to_string(self.dir.join("cluster.json")).unwrap_or_default();
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// True when `cluster status` shows every DC's processes up and serving, and every asset with
    /// three current replicas in three DCs.
    fn all_current(&self) -> bool {
        let output = haetae(&["cluster", "status"], &self.dir);
        let status = text(&output.stdout);
        let dc_lines: Vec<&str> = status.lines().filter(|l| l.starts_with(|c: char| c == 'a' || c == 'b' || c == 'c') && l.contains("nats://")).collect();
        output.status.success()
            && dc_lines.len() == 3
            && dc_lines.iter().all(|l| !l.contains("DOWN") && l.contains("serving"))
            && status.lines().any(|l| l.starts_with("all ") && l.ends_with("assets have three current replicas in three DCs"))
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = haetae(&["cluster", "down"], &self.dir);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What the load saw: every acknowledged message (body, event id).
#[derive(Default)]
struct Sent {
    acknowledged: Vec<(String, String)>,
    failed: usize,
}

/// Users homed in each DC sending to one room every 100 ms until `stop`; a send that times out
/// moves to the next DC and is retried with the same txn id (the client does that).
async fn load(clients: Vec<Client>, room: String, stop: Arc<AtomicBool>, sent: Arc<std::sync::Mutex<Sent>>) {
    let senders = clients.into_iter().enumerate().map(|(k, mut client)| {
        let room = room.clone();
        let stop = stop.clone();
        let sent = sent.clone();
        async move {
            client.request_timeout = Duration::from_secs(3);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let body = format!("load {k} #{n}");
                match client.send(&room, &format!("t{n}"), &json!({ "msgtype": "m.text", "body": body })).await {
                    Ok(event_id) => sent.lock().unwrap().acknowledged.push((body, event_id)),
                    Err(_) => sent.lock().unwrap().failed += 1,
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    run_all(senders).await;
}

async fn run_all<F: std::future::Future<Output = ()> + Send + 'static>(futures: impl Iterator<Item = F>) {
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    for handle in handles {
        handle.await.expect("sender task");
    }
}

/// Every message body in the room as one DC's node has it, oldest last.
async fn bodies_at(client: &Client, endpoint: &str, room: &str) -> Option<Vec<String>> {
    let mut pinned = client.pinned(endpoint);
    pinned.request_timeout = Duration::from_secs(5);
    let mut bodies = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..200 {
        let page = pinned.messages(room, from.as_deref(), 100).await.ok()?;
        let chunk = page["chunk"].as_array().cloned().unwrap_or_default();
        bodies.extend(chunk.iter().filter(|e| e["type"] == "m.room.message").filter_map(|e| e["content"]["body"].as_str().map(str::to_string)));
        match page["end"].as_str() {
            Some(end) if !chunk.is_empty() => from = Some(end.to_string()),
            _ => return Some(bodies),
        }
    }
    Some(bodies)
}

fn alive(pid: u64) -> bool {
    // SAFETY: kill(pid, 0) only checks for existence.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

#[test]
fn fire_twice_under_load_every_dc_comes_back_and_down_stops_everything() {
    let test_started = Instant::now();
    let mut up = Up::start();
    up.wait_until("`cluster up` to print its endpoints", Duration::from_secs(90), |up| {
        std::fs::read_to_string(&up.out).unwrap_or_default().contains("stop:")
    });
    up.wait_until("every asset current after `cluster up`", Duration::from_secs(30), |up| up.all_current());
    let state = up.state();
    let endpoints: Vec<String> = state["dcs"]
        .as_array()
        .expect("DCs in the state file")
        .iter()
        .map(|dc| format!("http://{}:{}", dc["host"].as_str().unwrap_or_default(), dc["http_port"]))
        .collect();
    assert_eq!(endpoints.len(), 3);

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let http = http_client();
    let (clients, room) = runtime.block_on(async {
        let clients = setup::register_many(&http, &endpoints, &format!("op{}", setup::run_id()), 3, 3, &|_| {}).await.expect("register");
        let mut creator = clients[0].clone();
        let room = setup::create_public_room(&mut creator, "fire").await.expect("create room");
        setup::join_all(&clients[1..], &room, 2, &|_| {}).await.expect("join");
        (clients, room)
    });
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(std::sync::Mutex::new(Sent::default()));
    let load_task = runtime.spawn(load(clients.clone(), room.clone(), stop.clone(), sent.clone()));
    let acknowledged = |sent: &Arc<std::sync::Mutex<Sent>>| sent.lock().unwrap().acknowledged.len();
    up.wait_until("the load to get 10 messages acknowledged", Duration::from_secs(20), |_| acknowledged(&sent) >= 10);

    for dc in ["a", "b"] {
        let before = acknowledged(&sent);
        let fired = Instant::now();
        let output = haetae(&["cluster", "fire", "--dc", dc, "--wait"], &up.dir);
        assert!(
            output.status.success(),
            "cluster fire --dc {dc} failed\nstdout:\n{}\nstderr:\n{}\nsupervisor log:\n{}",
            text(&output.stdout),
            text(&output.stderr),
            up.log()
        );
        let said = text(&output.stdout);
        assert!(said.contains(&format!("DC {dc} burned")) && said.contains(&format!("DC {dc} is back")), "fire said:\n{said}");
        up.wait_until(&format!("every asset current after the fire in DC {dc}"), Duration::from_secs(60), |up| up.all_current());
        eprintln!("fire in DC {dc}: back and current after {:.1} s", fired.elapsed().as_secs_f64());
        assert_eq!(up.state()["dcs"].as_array().unwrap().iter().find(|d| d["name"] == dc).unwrap()["burns"], 1);
        // The load goes on after each fire.
        up.wait_until(&format!("writes to go on after the fire in DC {dc}"), Duration::from_secs(30), |_| acknowledged(&sent) >= before + 10);
    }
    stop.store(true, Ordering::Relaxed);
    runtime.block_on(load_task).expect("load");
    let (acknowledged, failed) = {
        let sent = sent.lock().unwrap();
        (sent.acknowledged.clone(), sent.failed)
    };
    eprintln!("load: {} acknowledged, {failed} failed", acknowledged.len());

    // Every acknowledged message is in the room exactly once, at every DC (the two rebuilt ones
    // replayed the log from the others).
    for endpoint in &endpoints {
        let deadline = Instant::now() + Duration::from_secs(30);
        let missing = loop {
            let bodies = runtime.block_on(bodies_at(&clients[0], endpoint, &room)).unwrap_or_default();
            let missing: Vec<String> = acknowledged.iter().filter(|(body, _)| !bodies.contains(body)).map(|(body, _)| body.clone()).collect();
            let twice: Vec<&(String, String)> = acknowledged.iter().filter(|(body, _)| bodies.iter().filter(|b| *b == body).count() > 1).collect();
            assert!(twice.is_empty(), "{endpoint} has acknowledged messages twice: {twice:?}");
            if missing.is_empty() || Instant::now() > deadline {
                break missing;
            }
            std::thread::sleep(Duration::from_millis(300));
        };
        assert!(missing.is_empty(), "{endpoint} lacks {} acknowledged messages: {missing:?}", missing.len());
    }

    // `cluster down` ends the supervisor and every process it started, within seconds.
    let state = up.state();
    let pids: Vec<u64> = state["dcs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|dc| [dc["nats_pid"].as_u64(), dc["node_pid"].as_u64()])
        .flatten()
        .collect();
    assert_eq!(pids.len(), 6, "every DC's two processes are recorded: {state}");
    let asked = Instant::now();
    let output = haetae(&["cluster", "down"], &up.dir);
    assert!(output.status.success(), "cluster down failed: {}{}", text(&output.stdout), text(&output.stderr));
    up.wait_until_exit(Duration::from_secs(20));
    let stop_s = asked.elapsed().as_secs_f64();
    assert!(stop_s < 10.0, "`cluster down` took {stop_s:.1} s to end the supervisor\n{}", up.log());
    let running: Vec<u64> = pids.into_iter().filter(|pid| alive(*pid)).collect();
    assert!(running.is_empty(), "processes still running after `cluster down`: {running:?}");
    assert!(up.log().contains("stopped every process"), "supervisor log:\n{}", up.log());
    eprintln!("cluster down: supervisor gone after {stop_s:.1} s; whole test {:.1} s", test_started.elapsed().as_secs_f64());
}

impl Up {
    fn wait_until_exit(&mut self, limit: Duration) {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "the supervisor exited with {status}\n{}", self.log());
                return;
            }
            assert!(started.elapsed() < limit, "the supervisor still runs {} s after `cluster down`\n{}", limit.as_secs(), self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
