//! Incidents with two nodes on one nats-server: an incident whose failure nobody sees any more is
//! resolved, each user is told of it once and of its resolution once however many nodes do the
//! work, the public status page shows it, and the incidents admin API is for administrators only
//! and answers bad input with Matrix errors. (Detection itself is tested on a real three-DC
//! deployment in the binary's tests; a single server has no DC to lose.)

mod common;

use std::time::Duration;

use common::*;
use haetae_store::Bucket;
use haetae_store::kv::KeyPath;
use reqwest::Method;
use serde_json::{Value, json};

const STATE_TIMEOUT: Duration = Duration::from_secs(60);

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// How many notices of incident `id` the user sees: (opening, resolution).
async fn notices(c: &Client, user: &User, id: &str) -> (usize, usize) {
    let sync = c.sync(user, None, 0).await;
    let mut rooms: Vec<String> = Vec::new();
    for room_id in sync["rooms"]["invite"].as_object().into_iter().flatten().map(|(id, _)| id.clone()) {
        c.join(user, &room_id).await.ok();
        rooms.push(room_id);
    }
    rooms.extend(sync["rooms"]["join"].as_object().into_iter().flatten().map(|(id, _)| id.clone()));
    let (mut opened, mut resolved) = (0, 0);
    for room_id in rooms {
        let page = c.get(&format!("/rooms/{}/messages?dir=b&limit=50", enc(&room_id)), &user.token).await.ok();
        for event in page["chunk"].as_array().into_iter().flatten().filter(|e| e["content"]["haetae.incident"]["id"] == id) {
            match event["content"]["haetae.incident"]["notice"].as_str() {
                Some("opened") => opened += 1,
                Some("resolved") => resolved += 1,
                _ => {}
            }
        }
    }
    (opened, resolved)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_incident_is_resolved_and_told_once_per_user_by_two_nodes() {
    let mut config = test_config();
    config.admins = vec!["boss".into()];
    config.incidents.check_interval_ms = 200;
    config.incidents.resolve_after_s = 1;
    config.incidents.notice_after_s = 60;
    let nats = Nats::start().await;
    let first = Node::start(&nats, config.clone()).await;
    let second = Node::start(&nats, config).await;
    let c = first.client();
    let boss = c.register_named("boss", "a long password").await;
    let users = vec![c.register("ida").await, c.register("jon").await, c.register("kim").await];

    // Healthy: the public pages say so, without a login.
    let http = reqwest::Client::new();
    let status: Value = http.get(format!("{}/status.json", first.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(status["status"], "operational", "{status:#}");
    let page = http.get(format!("{}/status", second.base)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("All systems operational"));

    // The admin API: administrators only, Matrix errors for bad input.
    let list = "/_synapse/admin/v1/incidents";
    c.get(list, &users[0].token).await.expect_err(403, "M_FORBIDDEN");
    c.request(Method::GET, list, None, None).await.expect_err(401, "M_MISSING_TOKEN");
    assert_eq!(c.get(list, &boss.token).await.ok()["total"], 0);
    c.get("/_synapse/admin/v1/incidents/nosuch", &boss.token).await.expect_err(404, "M_NOT_FOUND");
    c.get("/_synapse/admin/v1/incidents/nosuch/report", &boss.token).await.expect_err(404, "M_NOT_FOUND");
    c.put("/_synapse/admin/v1/incidents/nosuch/drill", &boss.token, json!({ "x": 1 })).await.expect_err(404, "M_NOT_FOUND");
    c.put("/_synapse/admin/v1/incidents/nosuch/drill", &boss.token, json!([1])).await.expect_err(400, "M_BAD_JSON");
    c.raw(Method::PUT, "/_synapse/admin/v1/incidents/nosuch/drill", Some(&boss.token), "application/json", b"{nope".to_vec())
        .await
        .expect_err(400, "M_NOT_JSON");

    // An incident a node opened three hours ago, whose failure was last seen a few seconds ago
    // and is seen by nobody now (the node that saw it is gone).
    let id = "20260101-000000-dc-x-0001";
    let now = now_ms();
    let incident = json!({
        "id": id, "failure": "dc/x", "title": "DC x unreachable", "status": "open",
        "opened_at_ms": now - 3 * 3_600_000, "resolved_at_ms": null, "last_failing_ms": now - 2_000,
        "dcs": ["x"], "assets": ["log/0"], "nodes": ["gone"], "requests_failed": 7,
        "timeline": [{ "at_ms": now - 3 * 3_600_000, "node": "gone", "text": "opened: the replicas in DC x are not current" }],
    });
    let store = nats.store().await;
    store.kv().create(Bucket::Incidents, &KeyPath::new(&["open", "dc/x"]), id.as_bytes().to_vec().into()).await.unwrap();
    store
        .kv()
        .create(Bucket::Incidents, &KeyPath::new(&["incident", id]), serde_json::to_vec(&incident).unwrap().into())
        .await
        .unwrap();

    // The nodes resolve it and tell everyone, twice.
    let path = format!("/_synapse/admin/v1/incidents/{id}");
    let deadline = tokio::time::Instant::now() + STATE_TIMEOUT;
    let shown = loop {
        let shown = c.get(&path, &boss.token).await.ok();
        if shown["status"] == "resolved" && shown["notices"]["resolved"]["done"] == true {
            break shown;
        }
        assert!(tokio::time::Instant::now() < deadline, "not resolved and told: {shown:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(shown["notices"]["opened"]["users"], users.len() + 1, "{shown:#}");
    for user in users.iter().chain([&boss]) {
        assert_eq!(notices(&c, user, id).await, (1, 1), "{} was not told exactly once of each", user.user_id);
    }
    // Both nodes show it, resolved, on the status page.
    for base in [&first.base, &second.base] {
        let status: Value = http.get(format!("{base}/status.json")).send().await.unwrap().json().await.unwrap();
        assert_eq!(status["status"], "operational");
        assert_eq!(status["recent"][0]["id"], id, "{status:#}");
        assert!(
            status["recent"][0]["timeline"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["text"].as_str().unwrap().starts_with("resolved"))
        );
        assert!(status["recent"][0].get("nodes").is_none(), "the public view names no nodes");
        let page = http.get(format!("{base}/status")).send().await.unwrap().text().await.unwrap();
        assert!(page.contains("DC x unreachable") && page.contains("Resolved"), "{page}");
    }
    // The report, and a drill's annotation in it.
    c.put(&format!("{path}/drill"), &boss.token, json!({ "scenario": "fire", "lost": 0 })).await.ok();
    let report = c.get(&format!("{path}/report"), &boss.token).await;
    assert_eq!(report.status, 200);
    let report = String::from_utf8(report.raw).unwrap();
    for needle in
        ["# Incident 20260101-000000-dc-x-0001: DC x unreachable", "Requests failed", ": 7", "## Fire drill", "- scenario: fire"]
    {
        assert!(report.contains(needle), "no {needle:?} in\n{report}");
    }
    first.stop().await;
    second.stop().await;
}
