//! Each single-purpose bench workload, small, through the real binary against the local node it
//! starts: the run finishes, prints its table row and writes a JSON report whose counts add up.
//! Figures are the benchmark's business, not a test's: nothing here asserts a latency.

use std::process::Command;

use serde_json::Value;

/// Runs `haetae bench <args> --json FILE`; returns the printed table and the JSON report.
fn bench(args: &[&str]) -> (String, Value) {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_haetae"))
        .arg("bench")
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run haetae bench");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench {args:?} failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    let text = std::fs::read_to_string(&json).expect("the JSON report was written");
    (stdout, serde_json::from_str(&text).expect("the report is JSON"))
}

fn row_count(table: &str) -> usize {
    table.lines().filter(|line| line.starts_with('|')).count()
}

#[test]
fn big_room_delivers_every_message_to_every_member() {
    let (table, report) = bench(&["big-room", "--members", "12", "--messages", "3", "--interval-ms", "100"]);
    assert!(table.contains("| big-room 12 members"), "{table}");
    assert_eq!(row_count(&table), 3, "{table}");
    assert_eq!(report["receivers"], 11);
    assert_eq!(report["expected_deliveries"], 33);
    assert_eq!(report["delivered"], 33);
    assert_eq!(report["delivery"]["count"], 33);
    assert!(report["cpu"]["server"].is_number(), "the local node's CPU is known: {report}");
}

#[test]
fn login_storm_logs_in() {
    let (table, report) = bench(&["login-storm", "--users", "3", "--concurrency", "2", "--duration-s", "2"]);
    assert!(table.contains("| login-storm 3 users"), "{table}");
    assert!(report["succeeded"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(report["rate_limited"], 0, "the local node runs without rate limits: {report}");
}

#[test]
fn initial_sync_returns_every_room() {
    let (table, report) = bench(&["initial-sync", "--rooms", "4", "--events-per-room", "12", "--repeat", "3"]);
    assert!(table.contains("| initial-sync 4 rooms"), "{table}");
    assert_eq!(report["rooms_returned"], 4);
    assert_eq!(report["latency"]["count"], 3);
    let state = report["state_events_per_room"].as_u64().unwrap();
    assert!(state > 0 && state < 12, "{report}");
    assert_eq!(report["messages_per_room"].as_u64().unwrap() + state, 12);
    assert!(report["response_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn idle_connections_are_held_measured_and_woken() {
    let (table, report) = bench(&["idle", "--connections", "60", "--users", "4", "--ramp"]);
    // Ramp steps 6, 15, 30, 60: one row each.
    assert_eq!(row_count(&table), 6, "{table}");
    let steps = report["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 4);
    for step in steps {
        assert_eq!(step["delivered"], step["connections"], "{step}");
        assert_eq!(step["established"], true, "{step}");
        assert!(step["memory_per_connection_bytes"].is_number(), "the local node's memory is known: {step}");
    }
    assert_eq!(steps[3]["per_user"], 15);
}
