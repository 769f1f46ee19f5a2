//! `haetae serve` without `--nats-url`, through the real binary: its private nats-server refuses
//! a client without the generated credential, the node itself gets in, the credential never
//! appears in the output, and a restart on the same data directory keeps working.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;

mod common;

use common::{IO_TIMEOUT, Serve};

/// The private nats-server's client address, from the ports file it writes.
fn nats_address(nats_dir: &Path) -> String {
    let ports = std::fs::read_dir(nats_dir)
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|e| e == "ports"))
        .expect("the private nats-server wrote its ports file");
    let ports: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(ports).unwrap()).unwrap();
    ports["nats"][0].as_str().unwrap().trim_start_matches("nats://").to_string()
}

/// Speaks the NATS client protocol's first exchange; returns the server's answer to PING.
fn nats_hello(address: &str, user_password: Option<(&str, &str)>) -> String {
    let stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut info = String::new();
    reader.read_line(&mut info).unwrap();
    assert!(info.starts_with("INFO "), "{info}");
    let connect = match user_password {
        Some((user, pass)) => serde_json::json!({ "verbose": false, "pedantic": false, "user": user, "pass": pass }),
        None => serde_json::json!({ "verbose": false, "pedantic": false }),
    };
    write!(&stream, "CONNECT {connect}\r\nPING\r\n").unwrap();
    let mut answer = String::new();
    reader.read_line(&mut answer).unwrap();
    answer.trim().to_string()
}

#[test]
fn serve_locks_its_private_nats_server_and_restarts_with_the_same_credential() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let output = dir.path().join("serve.log");
    let serve = Serve::start(&data_dir, output.clone());
    assert!(serve.versions_status().contains(" 200 "), "the node got into its own server");

    let nats_dir = data_dir.join("nats");
    let credential_path = nats_dir.join("credential.json");
    let mode = std::fs::metadata(&credential_path).unwrap().permissions();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
    let credential: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&credential_path).unwrap()).unwrap();
    let (user, password) = (credential["user"].as_str().unwrap(), credential["password"].as_str().unwrap());

    let address = nats_address(&nats_dir);
    assert!(address.starts_with("127.0.0.1:"), "{address}");
    assert_eq!(nats_hello(&address, None).to_lowercase(), "-err 'authorization violation'");
    assert_eq!(nats_hello(&address, Some((user, "guessed"))).to_lowercase(), "-err 'authorization violation'");
    assert_eq!(nats_hello(&address, Some((user, password))), "PONG");
    serve.stop();

    let serve = Serve::start(&data_dir, output.clone());
    assert!(serve.versions_status().contains(" 200 "), "the restarted node got in with the stored credential");
    let again: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&credential_path).unwrap()).unwrap();
    assert_eq!(again, credential, "a restart reuses the credential");
    serve.stop();

    let printed = std::fs::read_to_string(&output).unwrap();
    assert!(printed.contains("private nats-server"), "{printed}");
    assert!(!printed.contains(password), "the password was printed or logged:\n{printed}");
}
