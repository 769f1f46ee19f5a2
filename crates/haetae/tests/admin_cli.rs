//! `haetae admin` against a running `haetae serve`: an administrator named in the config lists,
//! creates and deactivates users from a terminal; a non-administrator is told why not.

mod common;

use std::process::Command;

use common::Serve;
use serde_json::{Value, json};

fn admin(address: &str, token: &str, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_haetae"))
        .args(["admin", "--url", &format!("http://{address}"), "--token", token])
        .args(args)
        .output()
        .expect("haetae admin runs");
    (output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrator_manages_users_from_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("haetae.toml");
    std::fs::write(&config, "[homeserver]\nadmins = [\"boss\"]\n\n[homeserver.rate_limits]\nenabled = false\n").unwrap();
    let serve = Serve::start_with(&dir.path().join("data"), dir.path().join("serve.log"), &["--config", config.to_str().unwrap()]);
    let http = reqwest::Client::new();
    let base = format!("http://{}/_matrix/client/v3", serve.address);
    let mut tokens = Vec::new();
    for name in ["boss", "bob"] {
        let body = json!({ "username": name, "password": "a long password", "auth": { "type": "m.login.dummy" } });
        let answer: Value = http.post(format!("{base}/register")).json(&body).send().await.unwrap().json().await.unwrap();
        tokens.push(answer["access_token"].as_str().expect("registered").to_string());
    }
    let address = serve.address.clone();
    let (boss, bob) = (tokens[0].clone(), tokens[1].clone());
    let run = move |token: String, args: Vec<String>| {
        let address = address.clone();
        tokio::task::spawn_blocking(move || admin(&address, &token, &args.iter().map(String::as_str).collect::<Vec<_>>()))
    };
    let (ok, out, err) = run(boss.clone(), vec!["users".into()]).await.unwrap();
    assert!(ok, "{err}");
    let users: Value = serde_json::from_str(&out).expect("JSON on stdout");
    assert_eq!(users["total"], 2, "{out}");

    let (ok, _, err) = run(bob.clone(), vec!["users".into()]).await.unwrap();
    assert!(!ok);
    assert!(err.contains("M_FORBIDDEN") && err.contains("administrator"), "{err}");

    let carol = "@carol:localhost".to_string();
    let (ok, out, err) = run(boss.clone(), vec!["create-user".into(), carol.clone(), "--password".into(), "carol's password".into()]).await.unwrap();
    assert!(ok, "{err}");
    assert!(out.contains("@carol:localhost"));
    let (ok, _, err) = run(boss.clone(), vec!["deactivate".into(), "@bob:localhost".into()]).await.unwrap();
    assert!(ok, "{err}");
    let whoami = http.get(format!("{base}/account/whoami")).bearer_auth(&bob).send().await.unwrap();
    assert_eq!(whoami.status(), 401, "bob's token no longer works");
    let (ok, out, _) = run(boss, vec!["user".into(), "@bob:localhost".into()]).await.unwrap();
    assert!(ok);
    let bob_record: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(bob_record["deactivated"], true);
    serve.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrator_moderates_from_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("haetae.toml");
    std::fs::write(&config, "[homeserver]\nadmins = [\"boss\"]\n\n[homeserver.rate_limits]\nenabled = false\n").unwrap();
    let serve = Serve::start_with(&dir.path().join("data"), dir.path().join("serve.log"), &["--config", config.to_str().unwrap()]);
    let http = reqwest::Client::new();
    let base = format!("http://{}/_matrix/client/v3", serve.address);
    let body = json!({ "username": "boss", "password": "a long password", "auth": { "type": "m.login.dummy" } });
    let answer: Value = http.post(format!("{base}/register")).json(&body).send().await.unwrap().json().await.unwrap();
    let boss = answer["access_token"].as_str().expect("registered").to_string();
    let address = serve.address.clone();
    let run = move |args: &[&str]| {
        let (address, token) = (address.clone(), boss.clone());
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        tokio::task::spawn_blocking(move || admin(&address, &token, &args.iter().map(String::as_str).collect::<Vec<_>>()))
    };
    let (ok, out, err) = run(&["new-registration-token", "--token", "welcome", "--uses-allowed", "1"]).await.unwrap();
    assert!(ok, "{err}");
    let token: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((token["token"].clone(), token["uses_allowed"].clone()), (json!("welcome"), json!(1)));
    let (ok, out, err) = run(&["registration-tokens", "--valid"]).await.unwrap();
    assert!(ok, "{err}");
    assert!(out.contains("welcome"), "{out}");
    let (ok, out, err) = run(&["block-room", "!spam:localhost"]).await.unwrap();
    assert!(ok, "{err}");
    assert!(out.contains("true"), "{out}");
    let (ok, out, err) = run(&["delete-room", "!spam:localhost", "--block"]).await.unwrap();
    assert!(ok, "{err}");
    let status: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["status"], "complete", "{out}");
    let (ok, _, err) = run(&["delete-media", "not-an-mxc"]).await.unwrap();
    assert!(!ok && err.contains("mxc://"), "{err}");
    let (ok, _, err) = run(&["delete-registration-token", "welcome"]).await.unwrap();
    assert!(ok, "{err}");
    serve.stop();
}
