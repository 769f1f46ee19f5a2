//! A three-DC deployment is locked, checked against its real nats-servers: no server lets in a
//! client without a credential, a node's credential cannot delete a stream nor read outside
//! haetae's subjects, a nats-server without a certificate of the deployment's CA cannot join
//! the cluster, a rotation replaces a DC's certificate and its node's password, and (with
//! encryption at rest) JetStream's files hold no message body in clear.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use haetae_cluster::{Deployment, DeploymentSpec};
use haetae_store::admin::Admin;
use haetae_store::launcher::{ClusterSpec, NatsProcess, ServerSecurity, ServerSpec};
use haetae_store::pki::Authority;
use haetae_store::Credential;

const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a refused operation's error may take to come back from the server.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(10);

/// The user and password in a credential file, as an operator (or an attacker who stole the
/// file) reads them.
fn credential_parts(path: &Path) -> (String, String) {
    let value: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    (value["user"].as_str().unwrap().to_string(), value["password"].as_str().unwrap().to_string())
}

/// The server errors a connection receives (permission violations arrive only this way).
struct Errors(tokio::sync::mpsc::UnboundedReceiver<String>);

impl Errors {
    /// Waits until an error containing `needle` arrives.
    async fn expect(&mut self, needle: &str) {
        let deadline = tokio::time::Instant::now() + REFUSAL_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, self.0.recv()).await {
                Ok(Some(error)) if error.contains(needle) => return,
                Ok(Some(_)) => continue,
                _ => panic!("the server did not refuse with {needle:?} within {REFUSAL_TIMEOUT:?}"),
            }
        }
    }
}

async fn connect_as(url: &str, ca: &Path, user: &str, password: &str) -> (async_nats::Client, Errors) {
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
        .add_root_certificates(ca.to_path_buf())
        .require_tls(true)
        .custom_inbox_prefix(haetae_store::permissions::inbox_prefix(user))
        .request_timeout(Some(Duration::from_secs(2)))
        .event_callback(move |event| {
            let sender = sender.clone();
            async move {
                if let async_nats::Event::ServerError(error) = event {
                    let _ = sender.send(error.to_string());
                }
            }
        })
        .connect(url)
        .await
        .expect("the credential opens the server");
    (client, Errors(receiver))
}

/// GET on a nats-server's monitoring port, as JSON.
fn monitor(address: &str, path: &str) -> serde_json::Value {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{path} is not JSON ({e}): {response}"))
}

fn route_names(address: &str) -> Vec<String> {
    let routes = monitor(address, "/routez");
    routes["routes"].as_array().unwrap().iter().filter_map(|r| r["remote_name"].as_str().map(str::to_string)).collect()
}

/// Files under `dir` (recursively) whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return found };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_containing(&path, needle));
        } else if std::fs::read(&path).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle)) {
            found.push(path);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_admits_only_its_users_and_its_servers() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = DeploymentSpec::new(dir.path().join("deployment"), env!("CARGO_BIN_EXE_haetae"));
    spec.partitions = 2;
    // These checks are about access, not durability.
    spec.sync_always = false;
    spec.encrypt_at_rest = true;
    let deployment = Deployment::up(spec, &|line| eprintln!("{line}")).await.expect("the deployment starts");
    let pki = dir.path().join("deployment/pki");
    let ca = pki.join("ca.pem");

    // 1. No server lets a client in without a credential, nor with a wrong one; none speaks
    //    plaintext to a client.
    for dc in &deployment.state.dcs {
        let url = dc.nats_url();
        let anonymous = async_nats::ConnectOptions::new().add_root_certificates(ca.clone()).require_tls(true).connect(&url).await;
        assert_eq!(anonymous.err().map(|e| e.kind()), Some(async_nats::ConnectErrorKind::AuthorizationViolation), "DC {}", dc.name);
        let guessed = async_nats::ConnectOptions::with_user_and_password("admin".into(), "guessed".into())
            .add_root_certificates(ca.clone())
            .require_tls(true)
            .connect(&url)
            .await;
        assert_eq!(guessed.err().map(|e| e.kind()), Some(async_nats::ConnectErrorKind::AuthorizationViolation), "DC {}", dc.name);
        let plaintext = tokio::time::timeout(
            REFUSAL_TIMEOUT,
            async_nats::ConnectOptions::new().require_tls(false).connect(&url),
        )
        .await
        .expect("a plaintext client is answered in time");
        assert!(plaintext.is_err(), "DC {} let a client in without TLS", dc.name);
    }

    // 2. A node's credential works for haetae's subjects, and for nothing more.
    let (user, password) = credential_parts(&pki.join("node-a.json"));
    let url = deployment.state.dcs[0].nats_url();
    let (node, mut errors) = connect_as(&url, &ca, &user, &password).await;
    let js = async_nats::jetstream::new(node.clone());
    let marker = format!("body-marker-{}", std::process::id());
    js.publish("$KV.haetae_txns.ktest", marker.clone().into())
        .await
        .expect("a node writes into its buckets")
        .await
        .expect("the bucket acknowledges");
    // A foreign entry in the event log (not haetae's encoding): every node replays it on its
    // next start, and must get past it (the rotation below restarts DC a's node).
    js.publish("haetae.log.0.ktest", marker.clone().into())
        .await
        .expect("a node publishes into its log")
        .await
        .expect("the log acknowledges");

    let deleted = js.delete_stream("HAETAE_LOG_0").await;
    assert!(deleted.is_err(), "a node deleted an event-log stream");
    errors.expect("Permissions Violation for Publish to \"$JS.API.STREAM.DELETE.HAETAE_LOG_0\"").await;
    let purged = js.get_stream("HAETAE_LOG_0").await;
    assert!(purged.is_ok(), "a node reads its stream's info");
    assert!(purged.unwrap().purge().await.is_err(), "a node purged an event-log stream");
    errors.expect("Permissions Violation for Publish to \"$JS.API.STREAM.PURGE.HAETAE_LOG_0\"").await;

    let _outside = node.subscribe("secrets.>").await.unwrap();
    errors.expect("Permissions Violation for Subscription to \"secrets.>\"").await;
    // Another node's replies, and the KV subjects directly (a node reads KV through JetStream).
    let _other_inbox = node.subscribe("_INBOX_node-b.>").await.unwrap();
    errors.expect("Permissions Violation for Subscription to \"_INBOX_node-b.>\"").await;
    let _kv_tap = node.subscribe("$KV.haetae_tokens.>").await.unwrap();
    errors.expect("Permissions Violation for Subscription to \"$KV.haetae_tokens.>\"").await;
    let _everything = node.subscribe(">").await.unwrap();
    errors.expect("Permissions Violation for Subscription to \">\"").await;

    // The stream is still there, and the node's write landed.
    let admin = Admin::connect(&deployment.state.nats_urls(), &deployment.admin_access(), Duration::from_secs(5)).await.unwrap();
    let assets = admin.assets().await.unwrap();
    assert!(assets.iter().any(|a| a.label == "log/0"), "log/0 survives");
    let txns = assets.iter().find(|a| a.label == "kv/txns").expect("kv/txns is there");
    assert!(txns.messages >= 1, "the node's write landed");

    // The ephemeral subject works both ways for a node.
    let mut typing = node.subscribe("haetae.ephemeral").await.unwrap();
    node.flush().await.unwrap();
    node.publish("haetae.ephemeral", "typing".into()).await.unwrap();
    let received = tokio::time::timeout(REFUSAL_TIMEOUT, typing.next()).await.expect("the ephemeral message arrives");
    assert_eq!(received.map(|m| m.payload), Some("typing".into()));

    // 3. A nats-server that knows the route credential (stolen) but has no certificate of the
    //    deployment's CA cannot join: neither with another CA's certificate nor without TLS.
    let target = &deployment.state.dcs[0];
    let target_monitor = format!("{}:{}", target.host, target.monitor_port);
    let (route_user, route_password) = credential_parts(&pki.join("route.json"));
    let elsewhere = Authority::load_or_create(&dir.path().join("other-ca"), "someone else's CA").unwrap();
    for (name, tls) in [
        ("rogue-other-ca", Some(elsewhere.issue_server(&dir.path().join("other-ca"), "rogue", &["127.0.0.1".into()]).unwrap())),
        ("rogue-plaintext", None),
    ] {
        let mut rogue = ServerSpec::single(dir.path().join(name));
        rogue.name = name.into();
        rogue.sync_always = false;
        rogue.monitor_port = free_port();
        rogue.cluster = Some(ClusterSpec {
            name: "haetae".into(),
            route_port: free_port(),
            routes: vec![format!("nats-route://{}:{}", target.host, target.route_port)],
            unique_tag: None,
        });
        rogue.security = ServerSecurity { users: Vec::new(), tls, route_credential: Credential::new(&route_user, &route_password) };
        let rogue_log = rogue.dir.join("nats.log");
        let process = NatsProcess::start(rogue.clone(), START_TIMEOUT).await.expect("the rogue server starts");
        // Wait until its route attempt has been answered (refused) at least once.
        let deadline = Instant::now() + REFUSAL_TIMEOUT;
        loop {
            let log = std::fs::read_to_string(&rogue_log).unwrap_or_default();
            // Another CA: the TLS handshake fails; plaintext: the peer closes the connection.
            let refused = |line: &str| {
                (line.contains("[ERR]") && (line.contains("TLS") || line.contains("route"))) || line.contains("Router connection closed")
            };
            if log.lines().any(refused) {
                break;
            }
            assert!(Instant::now() < deadline, "{name}: no refused route attempt in its log:\n{log}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let rogue_monitor = format!("127.0.0.1:{}", rogue.monitor_port);
        assert_eq!(route_names(&rogue_monitor), Vec::<String>::new(), "{name} got a route");
        let names = route_names(&target_monitor);
        assert!(!names.iter().any(|n| n == name), "{name} joined the cluster: {names:?}");
        assert!(names.iter().any(|n| n == "b") && names.iter().any(|n| n == "c"), "the real peers stay: {names:?}");
        process.kill().await;
    }

    // 4. Rotation: DC a's server gets a new certificate and its node a new password by a
    //    graceful restart; the old password no longer opens DC a's server, the new one does, and
    //    the node serves again.
    drop(node);
    let old_cert = std::fs::read(pki.join("dc-a.pem")).unwrap();
    let mut deployment = deployment;
    deployment.rotate_dc(0).await.expect("DC a rotates");
    assert_ne!(std::fs::read(pki.join("dc-a.pem")).unwrap(), old_cert, "a new certificate");
    let (_, new_password) = credential_parts(&pki.join("node-a.json"));
    assert_ne!(new_password, password, "a new password");
    let url = deployment.state.dcs[0].nats_url();
    let stale = async_nats::ConnectOptions::with_user_and_password(user.clone(), password.clone())
        .add_root_certificates(ca.clone())
        .require_tls(true)
        .connect(&url)
        .await;
    assert_eq!(stale.err().map(|e| e.kind()), Some(async_nats::ConnectErrorKind::AuthorizationViolation));
    let (_rotated, _) = connect_as(&url, &ca, &user, &new_password).await;
    assert!(deployment.processes(0).1, "DC a's node runs again");

    // Every node's /metrics reports each asset's replicas, asked with the node's own (least)
    // privileges.
    for dc in &deployment.state.dcs {
        let metrics = reqwest::get(format!("http://{}:{}/metrics", dc.host, dc.http_port)).await.expect("scrape").text().await.unwrap();
        assert!(metrics.contains("haetae_asset_replicas_configured{asset=\"log/0\"} 3"), "DC {}:\n{metrics}", dc.name);
        assert!(metrics.contains("haetae_engine_scrape_errors_total 0"), "DC {}:\n{metrics}", dc.name);
    }

    // No node was refused anything it does (least privilege is enough to run; a refused request
    // is logged by the node's store).
    for dc in &deployment.state.dcs {
        let log = std::fs::read_to_string(dir.path().join(format!("deployment/dc-{}/node/node.log", dc.name))).unwrap_or_default();
        assert!(!log.contains("Permissions Violation"), "DC {}'s node was refused an operation:\n{log}", dc.name);
    }

    // 5. Encrypted at rest: the body written above is nowhere in clear in any DC's nats-server files.
    let servers: Vec<PathBuf> = deployment.state.dcs.iter().map(|dc| dir.path().join(format!("deployment/dc-{}/nats", dc.name))).collect();
    deployment.down().await;
    for server in servers {
        let leaks = files_containing(&server, marker.as_bytes());
        assert!(leaks.is_empty(), "the message body is in clear in {leaks:?}");
    }
}

/// A port free now, below the ephemeral range; never the same one twice in this process.
fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    for _ in 0..2000 {
        let offset = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = (20_000 + (std::process::id().wrapping_mul(7919) + offset * 13) % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port");
}
