//! The private nats-server of `haetae serve` is locked: loopback only, no monitoring port, and a
//! client without the generated credential is refused. Every test runs a real nats-server.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use haetae_store::launcher::{CREDENTIAL_FILE, NatsProcess, StoreKey};
use haetae_store::{ConnectError, Credential, Store, StoreConfig};

const START_TIMEOUT: Duration = Duration::from_secs(30);
/// A refusal must come at once, not after the store's retries give up.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(10);

async fn start(dir: &Path) -> (NatsProcess, Credential) {
    // No fsync per write: these tests check access, not durability.
    NatsProcess::start_private(dir, false, None, START_TIMEOUT).await.expect("the private nats-server starts")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The user and password as an operator would read them from the file.
fn file_parts(dir: &Path) -> (String, String) {
    let text = std::fs::read_to_string(dir.join(CREDENTIAL_FILE)).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    (value["user"].as_str().unwrap().to_string(), value["password"].as_str().unwrap().to_string())
}

async fn connect(url: &str, credential: Option<Credential>) -> Result<Store, ConnectError> {
    let config = StoreConfig { partitions: 2, credential, ..StoreConfig::default() };
    tokio::time::timeout(START_TIMEOUT, Store::connect(url, config)).await.expect("connect answers in time")
}

#[tokio::test]
async fn a_client_without_the_credential_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (nats, credential) = start(dir.path()).await;
    let (_, password) = file_parts(dir.path());

    let anonymous = async_nats::ConnectOptions::new().connect(nats.url()).await;
    assert_eq!(anonymous.err().map(|e| e.kind()), Some(async_nats::ConnectErrorKind::AuthorizationViolation));
    let wrong = async_nats::ConnectOptions::with_user_and_password(credential.user().into(), "guessed".into())
        .connect(nats.url())
        .await;
    assert_eq!(wrong.err().map(|e| e.kind()), Some(async_nats::ConnectErrorKind::AuthorizationViolation));
    let right = async_nats::ConnectOptions::with_user_and_password(credential.user().into(), password.clone())
        .connect(nats.url())
        .await;
    assert!(right.is_ok(), "the credential in the file opens the server");

    // The store says so at once, instead of retrying a refused credential in the background.
    let refused = tokio::time::timeout(REFUSAL_TIMEOUT, Store::connect(nats.url(), StoreConfig::default()))
        .await
        .expect("a refusal ends Store::connect at once");
    assert!(matches!(refused, Err(ConnectError::Unauthorized { .. })), "{:?}", refused.err());
    let guessed = Credential::new(credential.user(), "guessed");
    let refused = tokio::time::timeout(REFUSAL_TIMEOUT, connect(nats.url(), guessed)).await.unwrap();
    let message = refused.err().expect("a wrong password is refused").to_string();
    assert!(message.contains("refused") && !message.contains(&password), "{message}");
}

#[tokio::test]
async fn the_private_server_listens_on_loopback_only_without_monitoring() {
    let dir = tempfile::tempdir().unwrap();
    let (nats, _) = start(dir.path()).await;
    assert!(nats.url().starts_with("nats://127.0.0.1:"), "{}", nats.url());
    let ports_file = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|e| e == "ports"))
        .expect("nats-server wrote its ports file");
    let ports: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(ports_file).unwrap()).unwrap();
    assert!(ports.get("monitoring").is_none(), "no monitoring endpoint: {ports}");
    for url in ports["nats"].as_array().unwrap() {
        assert!(url.as_str().unwrap().starts_with("nats://127.0.0.1:"), "loopback only: {ports}");
    }
}

#[tokio::test]
async fn the_credential_is_private_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (nats, credential) = start(dir.path()).await;
    let credential_path = dir.path().join(CREDENTIAL_FILE);
    assert_eq!(mode(&credential_path), 0o600);
    assert_eq!(mode(&dir.path().join("nats.conf")), 0o600, "nats.conf holds the password");
    assert_eq!(mode(dir.path()), 0o700);
    let written = std::fs::read(&credential_path).unwrap();

    let store = connect(nats.url(), Some(credential.clone())).await.expect("the credential opens the store");
    assert!(store.connected());
    drop(store);
    nats.stop(Duration::from_secs(10)).await;

    let (nats, again) = start(dir.path()).await;
    assert_eq!(again, credential, "a restart reuses the credential");
    assert_eq!(std::fs::read(&credential_path).unwrap(), written, "the file is left as it was");
    let store = connect(nats.url(), Some(again)).await.expect("the same credential opens the restarted server");
    assert!(store.connected());

    // A file someone loosened is tightened again on the next start.
    drop(store);
    nats.stop(Duration::from_secs(10)).await;
    std::fs::set_permissions(&credential_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (_nats, third) = start(dir.path()).await;
    assert_eq!(third, credential);
    assert_eq!(mode(&credential_path), 0o600);
}

#[tokio::test]
async fn an_external_deployment_takes_the_credential_in_the_url_or_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let (nats, _) = start(dir.path()).await;
    let (user, password) = file_parts(dir.path());
    let address = nats.url().trim_start_matches("nats://");

    let in_url = format!("nats://{user}:{password}@{address}");
    let store = connect(&in_url, None).await.expect("user:password in the URL");
    assert!(store.connected());

    let from_file = Credential::read(&dir.path().join(CREDENTIAL_FILE)).unwrap();
    let store = connect(nats.url(), Some(from_file.clone())).await.expect("a credentials file");
    assert!(store.connected());

    let both = connect(&in_url, Some(from_file)).await.err().expect("a URL credential and a file are one too many");
    let message = both.to_string();
    assert!(matches!(both, ConnectError::Url { .. }) && !message.contains(&password), "{message}");
}

/// Files under `dir` (recursively) whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
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

/// Appends a recognisable body through the store, stops the server (it flushes), and returns
/// the JetStream files that hold the body in clear.
async fn files_with_a_body(dir: &Path, store_key: Option<StoreKey>) -> Vec<std::path::PathBuf> {
    let (nats, credential) = NatsProcess::start_private(dir, false, store_key, START_TIMEOUT).await.expect("the private nats-server starts");
    let store = connect(nats.url(), Some(credential)).await.expect("the store opens");
    let body = format!("a-message-body-{}", std::process::id());
    store.log().append("!room:example.org", body.clone().into(), "m1", None).await.expect("appended");
    drop(store);
    nats.stop(Duration::from_secs(10)).await;
    files_containing(&dir.join("jetstream"), body.as_bytes())
}

#[tokio::test]
async fn with_a_store_key_no_body_is_on_disk_in_clear() {
    // Without a key the body is on disk as it was sent (so the scan below can find one).
    let plain = tempfile::tempdir().unwrap();
    assert!(!files_with_a_body(plain.path(), None).await.is_empty(), "the scan finds an unencrypted body");

    let encrypted = tempfile::tempdir().unwrap();
    let key = StoreKey::generate();
    assert!(files_with_a_body(encrypted.path(), Some(key.clone())).await.is_empty(), "a body is on disk in clear");
    let config = std::fs::read_to_string(encrypted.path().join("nats.conf")).unwrap();
    assert!(config.contains("cipher: chachapoly") && !config.contains(key.expose()), "the key stays out of the config");

    // The same key opens the data again.
    let (nats, credential) =
        NatsProcess::start_private(encrypted.path(), false, Some(key), START_TIMEOUT).await.expect("restart with the key");
    let store = connect(nats.url(), Some(credential)).await.expect("the store opens again");
    let partition = store.log().partition_of("!room:example.org");
    let entry = store.log().get(partition, 1).await.expect("the log reads").expect("the entry is there");
    assert!(entry.payload.starts_with(b"a-message-body-"), "the entry reads back with the key");

    assert!(StoreKey::new("short").is_err());
    assert!(StoreKey::new("1abcdefghijklmnopqrstuvwxyz0123456789").is_err(), "a key must start with a letter");
}
