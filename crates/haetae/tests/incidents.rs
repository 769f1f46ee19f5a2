//! Incidents on a real three-DC deployment (three nats-servers, three nodes of the binary): stopping
//! a DC opens one incident however many nodes see it, every node's public status page shows it,
//! every user (homed in every DC) is told once when it lasts past the threshold and once when it
//! is resolved, `haetae incident` reads it back, and the live console answers administrators
//! from the surviving DCs throughout. Timings are the drill's business: this only
//! waits for each state, with deadlines.

use std::process::Command;
use std::time::Duration;

use haetae_cluster::{Deployment, DeploymentSpec};
use haetae_workload::client::{Client, http_client};
use haetae_workload::drill::incidents::count_notices;
use serde_json::Value;

/// Longest wait for any one state (an incident to open, notices to go out, a DC to come back).
const STATE_TIMEOUT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(200);

const NODE_CONFIG: &str = "admins = [\"ops\"]\n\n[homeserver.incidents]\ncheck_interval_ms = 300\nopen_after_s = 1\nresolve_after_s = 2\nnotice_after_s = 2\n";

async fn get_json(url: &str, token: Option<&str>) -> Option<(u16, Value)> {
    let mut request = http_client().get(url).timeout(Duration::from_secs(10));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.ok()?))
}

/// Polls `check` until it returns Some, or fails the test naming `what`.
async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + STATE_TIMEOUT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// The open incidents a node's public status page lists.
async fn open_incidents(base: &str) -> Option<Vec<Value>> {
    let (status, body) = get_json(&format!("{base}/status.json"), None).await?;
    (status == 200).then(|| body["open"].as_array().cloned().unwrap_or_default())
}

async fn incident(base: &str, token: &str, id: &str) -> Option<Value> {
    let (status, body) = get_json(&format!("{base}/_synapse/admin/v1/incidents/{id}"), Some(token)).await?;
    (status == 200).then_some(body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_dc_opens_one_incident_tells_every_user_twice_and_closes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut spec = DeploymentSpec::new(dir.path().join("deployment"), env!("CARGO_BIN_EXE_haetae"));
    spec.partitions = 2;
    spec.sync_always = false;
    spec.homeserver_extra = NODE_CONFIG.into();
    let mut deployment = Deployment::up(spec, &|line| eprintln!("{line}")).await.expect("the deployment starts");
    let endpoints = deployment.endpoints();
    let names: Vec<String> = deployment.state.dcs.iter().map(|dc| dc.name.clone()).collect();

    // One user homed in each DC (its node first in its list), and an administrator.
    let mut users = Vec::new();
    for i in 0..endpoints.len() {
        let mut homed = endpoints.clone();
        homed.rotate_left(i);
        let user = Client::register(http_client(), homed, &format!("user-{}", names[i]), "correct horse battery")
            .await
            .expect("register");
        users.push((names[i].clone(), endpoints[i].clone(), user));
    }
    let ops = Client::register(http_client(), endpoints.clone(), "ops", "correct horse battery").await.expect("register ops");
    let token = ops.access_token.clone();

    // Healthy: every node says so.
    for base in &endpoints {
        wait_for("a healthy status page", || async { open_incidents(base).await.filter(|open| open.is_empty()) }).await;
    }
    let page = http_client().get(format!("{}/status", endpoints[0])).send().await.expect("status page");
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(page.text().await.unwrap().contains("All systems operational"));
    // The admin API is for administrators only.
    let (status, body) =
        get_json(&format!("{}/_synapse/admin/v1/incidents", endpoints[0]), Some(&users[0].2.access_token)).await.unwrap();
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")));

    // DC c stops: the nodes of a and b both see it, and agree on one incident.
    let stopped = names.len() - 1;
    deployment.stop_dc(stopped).await.expect("stop DC c");
    let mut ids = Vec::new();
    for base in &endpoints[..stopped] {
        let open = wait_for("the incident on every surviving node's status page", || async {
            open_incidents(base).await.filter(|open| !open.is_empty())
        })
        .await;
        assert_eq!(open.len(), 1, "{open:#?}");
        assert_eq!(open[0]["dcs"], serde_json::json!([names[stopped]]), "{open:#?}");
        ids.push(open[0]["id"].as_str().unwrap().to_string());
    }
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "the nodes opened different incidents: {ids:?}");
    let id = ids[0].clone();
    let base = &endpoints[0];

    // The console answers from the surviving DCs while c is down, to administrators only.
    for base in &endpoints[..stopped] {
        let page = http_client().get(format!("{base}/console")).bearer_auth(&token).send().await.expect("console");
        assert_eq!(page.status(), 200);
        let text = page.text().await.unwrap();
        assert!(text.contains("Data centres") && text.contains("unreachable") && text.contains(&id), "{text}");
    }
    let anonymous = http_client().get(format!("{base}/console")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert!(anonymous.text().await.unwrap().contains("action=\"/console/login\""));
    let not_admin = http_client().get(format!("{base}/console")).bearer_auth(&users[0].2.access_token).send().await.unwrap();
    assert_eq!(not_admin.status(), 403);
    // Signing in with the form sets the console's cookie.
    let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let signed_in = browser
        .post(format!("{base}/console/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("username=ops&password=correct+horse+battery")
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    let cookie = signed_in.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.starts_with("haetae_console=") && cookie.contains("HttpOnly"), "{cookie}");
    let cookie = cookie.split(';').next().unwrap().to_string();
    let page = browser.get(format!("{base}/console")).header("cookie", cookie).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let wrong = browser
        .post(format!("{base}/console/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("username=user-a&password=correct+horse+battery")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 403, "a user who is not an administrator cannot sign in");
    wait_for("both surviving nodes to record that they see it", || async {
        incident(base, &token, &id).await.filter(|i| i["nodes"].as_array().is_some_and(|n| n.len() >= stopped))
    })
    .await;
    wait_for("the opening notice to reach every user", || async {
        incident(base, &token, &id).await.filter(|i| i["notices"]["opened"]["done"] == true)
    })
    .await;

    // DC c comes back: the incident closes, and the resolution notice goes out.
    deployment.start_dc(stopped).await.expect("start DC c");
    for base in &endpoints {
        wait_for("the incident resolved on every node's status page", || async {
            let (_, body) = get_json(&format!("{base}/status.json"), None).await?;
            let recent = body["recent"].as_array()?;
            (body["open"].as_array()?.is_empty() && recent.iter().any(|i| i["id"] == id.as_str() && i["status"] == "resolved"))
                .then_some(())
        })
        .await;
    }
    let closed = wait_for("the resolution notice to reach every user", || async {
        incident(base, &token, &id).await.filter(|i| i["notices"]["resolved"]["done"] == true)
    })
    .await;
    assert_eq!(closed["status"], "resolved");
    assert!(closed["resolved_at_ms"].as_u64() > closed["opened_at_ms"].as_u64());

    // Every user, at their home DC (c included, back from its stop), was told exactly once of each.
    for (dc, home, user) in &users {
        let mut pinned = user.pinned(home);
        let counts = count_notices(&mut pinned, &id).await.expect("read the notices");
        assert_eq!(counts, (1, 1), "{} homed in DC {dc}: (opening, resolution) notices", user.user_id);
    }
    // One incident for the stopped DC, however many nodes watched.
    let (_, listed) = get_json(&format!("{}/_synapse/admin/v1/incidents", endpoints[1]), Some(&token)).await.unwrap();
    let for_c: Vec<&Value> =
        listed["incidents"].as_array().unwrap().iter().filter(|i| i["failure"] == format!("dc/{}", names[stopped])).collect();
    assert_eq!(for_c.len(), 1, "{listed:#}");
    let page = http_client().get(format!("{}/status", endpoints[stopped])).send().await.unwrap().text().await.unwrap();
    assert!(page.contains(&format!("DC {} unreachable", names[stopped])) && page.contains("Resolved"), "{page}");

    // The CLI reads it back from any node.
    let report_path = dir.path().join("incident.md");
    let output = Command::new(env!("CARGO_BIN_EXE_haetae"))
        .args(["incident", "--url", &endpoints[1], "--token", &token, "report", &id, "--out"])
        .arg(&report_path)
        .output()
        .expect("run haetae incident report");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report = std::fs::read_to_string(&report_path).expect("report written");
    for needle in
        ["# Incident", "## Timeline", "## Affected", "- opened: 4 users told", "- resolved: 4 users told", "Requests failed"]
    {
        assert!(report.to_lowercase().contains(&needle.to_lowercase()), "no {needle:?} in\n{report}");
    }
    let output = Command::new(env!("CARGO_BIN_EXE_haetae"))
        .args(["incident", "--url", &endpoints[0], "--token", &token, "list"])
        .output()
        .expect("run haetae incident list");
    assert!(output.status.success() && String::from_utf8_lossy(&output.stdout).contains(&id));
    deployment.down().await;
}
