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

/// `bench history` small: the table has a row per checkpoint and the ratio row, every message
/// sent was acknowledged, and every checkpoint has each figure as a number (the local node is
/// owned, so its memory and restart are measured too).
fn history(shape: &str) {
    let (table, report) = bench(&[
        "history", "--shape", shape, "--max-events", "2000", "--checkpoints", "200,2000", "--rooms", "20",
        "--sync-samples", "20", "--read-samples", "5", "--initial-sync-rooms", "10", "--initial-sync-samples", "3",
        "--chat-users", "4", "--chat-rooms", "2", "--chat-concurrency", "4", "--chat-duration-s", "1",
    ]);
    assert!(table.contains("| 200 |"), "{table}");
    assert!(table.contains("| 2,000 |"), "{table}");
    assert!(table.contains("| ratio 2,000 / 200 |"), "{table}");
    // Header, separator, two checkpoints, the ratio.
    assert_eq!(row_count(&table), 5, "{table}");
    assert_eq!(report["shape"], shape);
    assert_eq!(report["events_sent"], 2000, "{report}");
    assert_eq!(report["events_acknowledged"], 2000, "{report}");
    assert_eq!(report["events_failed"], 0, "{report}");
    let checkpoints = report["checkpoints"].as_array().expect("checkpoints");
    assert_eq!(checkpoints.len(), 2);
    for (checkpoint, events) in checkpoints.iter().zip([200, 2000]) {
        assert_eq!(checkpoint["events"], events, "{checkpoint}");
        assert_eq!(checkpoint["reached"], true, "{checkpoint}");
        assert_eq!(checkpoint["events_acknowledged"], events, "{checkpoint}");
        assert!(checkpoint["rss_kib"].is_number(), "{checkpoint}");
        assert!(checkpoint["restart"]["total_s"].is_number(), "{checkpoint}");
        assert!(checkpoint["restart"]["replay_events_per_s"].is_number(), "{checkpoint}");
        for figure in ["incremental_sync", "initial_sync", "event_first", "messages_start", "messages_middle", "messages_end", "context_middle"] {
            assert!(checkpoint[figure]["p50_ms"].is_number(), "{figure}: {checkpoint}");
            assert!(checkpoint[figure]["p99_ms"].is_number(), "{figure}: {checkpoint}");
        }
        assert_eq!(checkpoint["incremental_sync"]["count"], 20, "{checkpoint}");
        let chat = &checkpoint["chat"];
        assert!(chat["acknowledged"].as_u64().unwrap() > 0, "{chat}");
        assert!(chat["send_latency"]["p50_ms"].is_number() && chat["delivery_latency"]["p99_ms"].is_number(), "{chat}");
    }
    assert_eq!(checkpoints[1]["rooms_grown"], if shape == "many-rooms" { 20 } else { 1 });
    assert!(report["ratios"]["incremental_sync_p50_ms"].is_number(), "{report}");
}

#[test]
fn history_one_room_grows_and_measures_every_checkpoint() {
    history("one-room");
}

#[test]
fn history_many_rooms_grows_and_measures_every_checkpoint() {
    history("many-rooms");
}

/// `bench sliding` small: a row per room count and the ratio row; each user's list counts its
/// rooms and the first range returns up to 20 of them; every incremental response carries the
/// new message; both delivery rows (over /sync and over sliding sync) deliver every message.
#[test]
fn sliding_sync_first_range_and_delivery() {
    let (table, report) = bench(&[
        "sliding", "--rooms", "3,25", "--connections", "4", "--incrementals", "3", "--chat-users", "4", "--chat-rooms", "2",
        "--chat-room-size", "2", "--chat-rate", "20", "--chat-concurrency", "2", "--chat-duration-s", "1",
    ]);
    assert!(table.contains("| 3 rooms |"), "{table}");
    assert!(table.contains("| 25 rooms |"), "{table}");
    assert!(table.contains("| ratio 25 / 3 |"), "{table}");
    assert!(table.contains("| members long-poll /sync |") && table.contains("| members long-poll sliding sync |"), "{table}");
    // Two tables: header, separator and rows (two room counts and the ratio; two receivers).
    assert_eq!(row_count(&table), 5 + 4, "{table}");
    let rows = report["first_range"].as_array().expect("first_range rows");
    assert_eq!(rows.len(), 2);
    for (row, rooms) in rows.iter().zip([3, 25]) {
        assert_eq!(row["rooms"], rooms, "{row}");
        assert_eq!(row["list_count"], rooms, "{row}");
        assert_eq!(row["rooms_returned"], rooms.min(20), "{row}");
        assert_eq!(row["first_range"]["count"], 4, "{row}");
        assert_eq!(row["incremental"]["count"], 3, "{row}");
        assert_eq!(row["incremental_with_message"], 3, "{row}");
        assert!(row["first_range"]["p50_ms"].as_f64().unwrap() > 0.0, "{row}");
        assert!(row["setup_s"].as_f64().unwrap() > 0.0, "{row}");
    }
    assert!(report["ratio"]["first_range_p50"].as_f64().unwrap() > 0.0, "{report}");
    let delivery = report["delivery"].as_array().expect("delivery rows");
    assert_eq!(delivery.len(), 2);
    for (row, receiver) in delivery.iter().zip(["sync", "sliding_sync"]) {
        assert_eq!(row["receiver"], receiver, "{row}");
        let chat = &row["report"];
        assert!(chat["acknowledged"].as_u64().unwrap() > 0, "{chat}");
        assert_eq!(chat["failed"], 0, "{chat}");
        assert_eq!(chat["delivered"], chat["expected_deliveries"], "every message reached its receiver: {chat}");
        assert!(chat["delivery_latency"]["p99_ms"].as_f64().unwrap() > 0.0, "{chat}");
    }
}
