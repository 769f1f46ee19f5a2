//! `haetae deploy`'s files run as they are, on three "hosts" that are network namespaces: each
//! DC's nats-server from its generated nats.conf (TLS, mutual-TLS routes, users, encryption at
//! rest from store.env), each node from its generated haetae.toml; a message sent through DC a
//! is read through DC c, and the traffic captured on DC b's link meanwhile holds no byte of its
//! body in clear. Needs root and `ip netns` (skipped otherwise, like the partition drill).

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use haetae_cluster::netns::Network;

const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Processes this test started, killed by PID when it ends (passed or not).
struct Started(Vec<Child>);

impl Drop for Started {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Removes the namespaces when the test ends.
struct Namespaces(Network);

impl Drop for Namespaces {
    fn drop(&mut self) {
        self.0.destroy();
    }
}

fn netns_available() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    root && Command::new("ip").args(["netns", "list"]).output().is_ok_and(|o| o.status.success())
}

/// One HTTP/1.0 request; returns (status, body).
fn http(method: &str, address: &str, path: &str, token: Option<&str>, body: &str) -> Option<(u16, serde_json::Value)> {
    let mut stream = std::net::TcpStream::connect_timeout(&address.parse().ok()?, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {address}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let json = response.split_once("\r\n\r\n").and_then(|(_, b)| serde_json::from_str(b).ok()).unwrap_or_default();
    Some((status, json))
}

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + START_TIMEOUT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out after {START_TIMEOUT:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn in_namespace(namespace: &str, program: &Path, args: &[&str], log: &Path, env: &[(String, String)]) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new("ip")
        .args(["netns", "exec", namespace])
        .arg(program)
        .args(args)
        .envs(env.iter().cloned())
        .env_remove("HAETAE_NATS_URL")
        .env_remove("HAETAE_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start a process in a namespace")
}

/// Everything that crosses one network link while it runs (an AF_PACKET socket bound to the
/// link, as tcpdump would open), kept up to a bound.
struct Capture {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<u8>>,
}

/// Largest capture kept, bytes.
const CAPTURE_LIMIT_BYTES: usize = 64 * 1024 * 1024;

impl Capture {
    fn start(link: &str) -> Capture {
        let name = std::ffi::CString::new(link).unwrap();
        // SAFETY: plain socket calls with valid arguments; the descriptor is closed by the thread.
        let fd = unsafe {
            let protocol = (libc::ETH_P_ALL as u16).to_be();
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(protocol));
            assert!(fd >= 0, "cannot open a packet socket");
            let mut address: libc::sockaddr_ll = std::mem::zeroed();
            address.sll_family = libc::AF_PACKET as u16;
            address.sll_protocol = protocol;
            address.sll_ifindex = libc::if_nametoindex(name.as_ptr()) as i32;
            assert!(address.sll_ifindex > 0, "no link {link}");
            let bound = libc::bind(fd, &address as *const libc::sockaddr_ll as *const libc::sockaddr, std::mem::size_of::<libc::sockaddr_ll>() as u32);
            assert_eq!(bound, 0, "cannot bind the packet socket to {link}");
            let timeout = libc::timeval { tv_sec: 0, tv_usec: 100_000 };
            libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &timeout as *const libc::timeval as *const libc::c_void, std::mem::size_of::<libc::timeval>() as u32);
            fd
        };
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut captured = Vec::new();
            let mut frame = vec![0u8; 65536];
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                // SAFETY: reads into a buffer of the given length.
                let n = unsafe { libc::recv(fd, frame.as_mut_ptr() as *mut libc::c_void, frame.len(), 0) };
                if n > 0 && captured.len() < CAPTURE_LIMIT_BYTES {
                    captured.extend_from_slice(&frame[..n as usize]);
                }
            }
            // SAFETY: the descriptor opened above, closed once.
            unsafe { libc::close(fd) };
            captured
        });
        Capture { stop, thread }
    }

    fn finish(self) -> Vec<u8> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

#[test]
fn the_generated_files_run_three_dcs_with_tls() {
    if !netns_available() {
        eprintln!("SKIPPED: needs root and `ip netns`");
        return;
    }
    let nats_server = haetae_store::launcher::find_binary().expect("nats-server (./scripts/setup.sh)");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("deploy");
    let names: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
    let network = Namespaces(Network::create(std::process::id(), &names).expect("namespaces"));
    let hosts: Vec<String> = names.iter().zip(&network.0.dcs).map(|(name, dc)| format!("{name}={}", dc.address)).collect();

    let generated = Command::new(env!("CARGO_BIN_EXE_haetae"))
        .args(["deploy", "--server-name", "hosts.test", "--partitions", "2", "--sync-interval", "default", "--encrypt-at-rest"])
        .arg("--out")
        .arg(&out)
        .args(hosts.iter().flat_map(|h| ["--dc".to_string(), h.clone()]))
        .arg("--config-dir")
        .arg(format!("{}/dc-{{dc}}/config", out.display()))
        .arg("--data-dir")
        .arg(format!("{}/dc-{{dc}}/data", out.display()))
        .arg("--haetae-binary")
        .arg(env!("CARGO_BIN_EXE_haetae"))
        .arg("--nats-binary")
        .arg(&nats_server)
        .output()
        .unwrap();
    assert!(generated.status.success(), "haetae deploy failed: {}", String::from_utf8_lossy(&generated.stderr));

    // The units name the binaries and files as given.
    let unit = std::fs::read_to_string(out.join("dc-a/systemd/haetae-nats.service")).unwrap();
    assert!(unit.contains(&format!("-c {}/dc-a/config/nats.conf", out.display())) && unit.contains("EnvironmentFile="), "{unit}");
    let node_unit = std::fs::read_to_string(out.join("dc-a/systemd/haetae.service")).unwrap();
    assert!(node_unit.contains(&format!("serve --config {}/dc-a/config/haetae.toml", out.display())), "{node_unit}");

    let mut started = Started(Vec::new());
    for (i, name) in names.iter().enumerate() {
        let config = out.join(format!("dc-{name}/config"));
        // What the unit's EnvironmentFile= gives the server.
        let env: Vec<(String, String)> = std::fs::read_to_string(config.join("store.env"))
            .unwrap()
            .lines()
            .filter_map(|line| line.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
            .collect();
        std::fs::create_dir_all(out.join(format!("dc-{name}/data/nats"))).unwrap();
        let conf = config.join("nats.conf");
        started.0.push(in_namespace(
            &network.0.dcs[i].namespace,
            &nats_server,
            &["-c", conf.to_str().unwrap()],
            &out.join(format!("dc-{name}/nats.log")),
            &env,
        ));
    }
    // The first node creates the streams; the others find them.
    for (i, name) in names.iter().enumerate() {
        let config = out.join(format!("dc-{name}/config/haetae.toml"));
        started.0.push(in_namespace(
            &network.0.dcs[i].namespace,
            Path::new(env!("CARGO_BIN_EXE_haetae")),
            &["serve", "--config", config.to_str().unwrap()],
            &out.join(format!("dc-{name}/node.log")),
            &[],
        ));
        let address = format!("{}:8008", network.0.dcs[i].address);
        wait_until(&format!("DC {name}'s node to serve (its log: dc-{name}/node.log)"), || {
            http("GET", &address, "/_matrix/client/versions", None, "").is_some_and(|(status, _)| status == 200)
        });
    }

    // DC b's link carries only what DCs a and c replicate to it (the test talks to a and c).
    let capture = Capture::start(&network.0.dcs[1].host_link);
    let a = format!("{}:8008", network.0.dcs[0].address);
    let c = format!("{}:8008", network.0.dcs[2].address);
    let register = r#"{"username":"alice","password":"a-long-password-1","auth":{"type":"m.login.dummy"}}"#;
    let (status, body) = http("POST", &a, "/_matrix/client/v3/register", None, register).expect("register");
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap().to_string();
    let (_, room) = http("POST", &a, "/_matrix/client/v3/createRoom", Some(&token), "{}").expect("createRoom");
    let room = room["room_id"].as_str().expect("a room").to_string();
    let secret = format!("a body no wire may show {}", std::process::id());
    let message = format!(r#"{{"msgtype":"m.text","body":"{secret}"}}"#);
    let (status, sent) =
        http("PUT", &a, &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t1"), Some(&token), &message).expect("send");
    assert_eq!(status, 200, "{sent}");
    wait_until("the message to be readable through DC c", || {
        http("GET", &c, &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=10"), Some(&token), "")
            .is_some_and(|(_, page)| page["chunk"].as_array().is_some_and(|events| events.iter().any(|e| e["content"]["body"] == secret.as_str())))
    });
    // DC b holds a replica of the room's partition: the body crossed its link, encrypted.
    let captured = capture.finish();
    assert!(captured.len() > 10_000, "the capture saw the replication traffic ({} bytes)", captured.len());
    let leaked = captured.windows(secret.len()).any(|window| window == secret.as_bytes());
    assert!(!leaked, "the message body crossed the link between DCs in clear");
    // The capture works: it holds the routes' TLS application-data records (TLS 1.2/1.3 header).
    assert!(captured.windows(3).any(|w| w == [0x17, 0x03, 0x03]), "no TLS records on the link");
    drop(started);
}
