//! `haetae bench sliding`: simplified sliding sync (MSC4186) as Element X uses it. Two tables:
//! the room list's first range for a user in few and in many rooms (with the ratio of the
//! largest to the smallest), and the chat workload's delivery latency with its members receiving
//! over `/sync` and then over sliding sync, on the same population at the same fixed rate.

use std::time::{Duration, Instant};

use haetae_workload::chat::{self, ChatConfig, ChatReport, Receiver};
use haetae_workload::history::thousands;
use haetae_workload::sliding::{self, FirstRangeConfig, FirstRangeRow};

use super::workloads::{Target, progress};

#[derive(clap::Args)]
pub struct SlidingArgs {
    #[command(flatten)]
    target: Target,
    /// Room counts, one user each (comma-separated); the ratio compares the last to the first.
    #[arg(long, value_delimiter = ',', default_values_t = [20, 5000])]
    rooms: Vec<usize>,
    /// Fresh connections measured per room count (each one first request), one after another.
    #[arg(long, default_value_t = 50)]
    connections: usize,
    /// Incremental requests measured per room count, each after one new message.
    #[arg(long, default_value_t = 20)]
    incrementals: usize,
    /// Chat delivery: users, rooms and members per room.
    #[arg(long, default_value_t = 40)]
    chat_users: usize,
    #[arg(long, default_value_t = 20)]
    chat_rooms: usize,
    #[arg(long, default_value_t = 4)]
    chat_room_size: usize,
    /// Chat delivery: total messages per second (fixed, so both receivers see the same load).
    #[arg(long, default_value_t = 100.0)]
    chat_rate: f64,
    /// Chat delivery: sends in flight at most.
    #[arg(long, default_value_t = 16)]
    chat_concurrency: usize,
    /// Chat delivery: seconds of sending per receiver kind.
    #[arg(long, default_value_t = 10)]
    chat_duration_s: u64,
}

#[derive(serde::Serialize)]
struct Ratio {
    rooms: (usize, usize),
    first_range_p50: f64,
    first_range_p99: f64,
    incremental_p50: f64,
}

#[derive(serde::Serialize)]
struct Delivery {
    receiver: Receiver,
    rate_per_s: f64,
    report: ChatReport,
}

#[derive(serde::Serialize)]
struct SlidingReport {
    first_range: Vec<FirstRangeRow>,
    ratio: Option<Ratio>,
    delivery: Vec<Delivery>,
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

pub async fn sliding(args: SlidingArgs) -> Result<(), String> {
    let started = Instant::now();
    let server = args.target.server().await?;
    let config = FirstRangeConfig {
        endpoints: server.endpoints.clone(),
        room_counts: args.rooms.clone(),
        connections: args.connections,
        incrementals: args.incrementals,
        setup_concurrency: args.target.setup_concurrency,
        server: server.process,
    };
    let first_range = sliding::run_first_range(&config, &progress).await.map_err(|e| e.to_string())?;
    let ratio = match (first_range.first(), first_range.last()) {
        (Some(small), Some(large)) if first_range.len() > 1 => Some(Ratio {
            rooms: (large.rooms, small.rooms),
            first_range_p50: ratio(large.first_range.p50_ms, small.first_range.p50_ms),
            first_range_p99: ratio(large.first_range.p99_ms, small.first_range.p99_ms),
            incremental_p50: ratio(large.incremental.p50_ms, small.incremental.p50_ms),
        }),
        _ => None,
    };

    let chat_config = ChatConfig {
        endpoints: server.endpoints.clone(),
        users: args.chat_users,
        rooms: args.chat_rooms,
        room_size: args.chat_room_size,
        concurrency: args.chat_concurrency,
        rate_per_s: Some(args.chat_rate),
        duration: Duration::from_secs(args.chat_duration_s),
        ..ChatConfig::default()
    };
    let population = chat::populate(&chat_config, &progress).await.map_err(|e| e.to_string())?;
    let mut delivery = Vec::new();
    for receiver in [Receiver::Sync, Receiver::SlidingSync] {
        progress(&format!(
            "chat at {} msg/s for {} s, members receiving over {}",
            args.chat_rate,
            args.chat_duration_s,
            receiver.name()
        ));
        let config = ChatConfig { receiver, ..chat_config.clone() };
        let report = chat::run(&config, &population, &progress).await;
        delivery.push(Delivery { receiver, rate_per_s: args.chat_rate, report });
    }

    println!(
        "| first range ([[{}, {}]], timeline_limit 1, m.room.name + own member; {} fresh connections, {} incremental) | setup: rooms created, s (rooms/s) | first range p50 ms | p99 ms | max ms | incremental p50 ms | p99 ms | rooms returned / list count | response bytes | notes |",
        sliding::FIRST_RANGE.0,
        sliding::FIRST_RANGE.1,
        args.connections,
        args.incrementals
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---|---:|---|");
    for row in &first_range {
        println!(
            "| {} rooms | {:.1} ({:.0}/s) | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} / {} | {} | {}/{} incremental responses carried the new message; CPU: {} |",
            thousands(row.rooms as u64),
            row.setup_s,
            row.rooms_per_s,
            row.first_range.p50_ms,
            row.first_range.p99_ms,
            row.first_range.max_ms,
            row.incremental.p50_ms,
            row.incremental.p99_ms,
            row.rooms_returned,
            row.list_count,
            row.response_bytes,
            row.incremental_with_message,
            row.incremental.count,
            row.cpu.describe(),
        );
    }
    if let Some(ratio) = &ratio {
        println!(
            "| ratio {} / {} | | {:.2} | {:.2} | | {:.2} | | | | |",
            thousands(ratio.rooms.0 as u64),
            thousands(ratio.rooms.1 as u64),
            ratio.first_range_p50,
            ratio.first_range_p99,
            ratio.incremental_p50,
        );
    }
    println!();
    println!(
        "| delivery (chat {}u/{}r/{}m at {} msg/s, {} s each) | acknowledged/s | send p50 ms | delivery p50 ms | delivery p99 ms | delivery max ms | delivered/expected | failed |",
        args.chat_users, args.chat_rooms, args.chat_room_size, args.chat_rate, args.chat_duration_s
    );
    println!("|---|---:|---:|---:|---:|---:|---|---:|");
    for row in &delivery {
        let report = &row.report;
        println!(
            "| members long-poll {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {}/{} | {} |",
            row.receiver.name(),
            report.acknowledged_per_s,
            report.send_latency.p50_ms,
            report.delivery_latency.p50_ms,
            report.delivery_latency.p99_ms,
            report.delivery_latency.max_ms,
            report.delivered,
            report.expected_deliveries,
            report.failed,
        );
    }
    progress(&format!("whole run {:.0} s", started.elapsed().as_secs_f64()));
    args.target.write_json(&SlidingReport { first_range, ratio, delivery })
}
