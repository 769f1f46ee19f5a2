//! What a drill measured, and the files that tell it: [`figures`] (latencies before, during and
//! after the fault, how long writes waited, how long syncs stalled, per cohort of clients and
//! rooms), [`markdown`] and [`summary_row`] for people, [`write_all`] for the report folder
//! (`report.md`, `report.json`, `timeline.svg`). It judges nothing: the verdict is the checker's.
//!
//! Times are milliseconds since the workload started, like the history's. The fault instant is
//! the first mark whose label starts with "fault".

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::drill::chart;
use crate::drill::checker::{CheckReport, Kind, fault_ms, syncs_by_client};
use crate::drill::history::{EngineFigures, History, SendRecord, SyncRecord};
use crate::drill::login::{self, LoginFigures};
use crate::stats::{Summary, summarize};

/// Findings listed in `report.md` (all kept ones are in `report.json`).
const FINDINGS_IN_MARKDOWN: usize = 10;

/// What a drill measured, for `report.json`, `report.md` and the summary row.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Figures {
    pub fault_dc: Option<String>,
    /// When the fault hit.
    pub fault_ms: Option<f64>,
    pub sends: usize,
    pub acknowledged: usize,
    pub failed: usize,
    /// Longest wait for an acknowledged write counted from the fault (see
    /// [`CohortFigures::longest_write_wait_ms`]), over every client.
    pub longest_write_wait_ms: Option<f64>,
    /// The fault instant plus `longest_write_wait_ms`: from then on, writes went through.
    pub recovered_at_ms: Option<f64>,
    /// The part of the write outage that was haetae's, not the engine's leader election:
    /// `longest_write_wait_ms - engine.election_ms`.
    pub haetae_share_ms: Option<f64>,
    pub engine: EngineFigures,
    /// "all clients" first; with a fault, clients homed in the fault DC and elsewhere, then
    /// sends in rooms whose log leader was in the fault DC and elsewhere (when leaders are known).
    pub cohorts: Vec<CohortFigures>,
    /// The login workload's figures, when it ran.
    #[serde(default)]
    pub login: Option<LoginFigures>,
}

/// The figures of one group of clients (or of the sends into one group of rooms).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CohortFigures {
    pub name: String,
    pub clients: usize,
    pub sends: usize,
    pub acknowledged: usize,
    /// Sends that finally failed (every DC tried, or a Matrix error).
    pub failed: usize,
    /// Sends that tried more than one DC.
    pub failed_over_sends: usize,
    /// Latency of acknowledged sends that started before the fault.
    #[serde(deserialize_with = "SummaryDef::deserialize")]
    pub latency_before: Summary,
    /// ... that started between the fault and the recovery (`Figures::recovered_at_ms`).
    #[serde(deserialize_with = "SummaryDef::deserialize")]
    pub latency_during: Summary,
    /// ... that started after the recovery.
    #[serde(deserialize_with = "SummaryDef::deserialize")]
    pub latency_after: Summary,
    /// How long the cohort waited for writes to work again: over sends still in flight at the
    /// fault or started after it, the longest time from `max(start, fault)` until the client's
    /// next acknowledgement (a failed send's wait runs on to the next acknowledged one).
    pub longest_write_wait_ms: Option<f64>,
    /// From the fault to the first acknowledgement of a send started after it.
    pub first_ack_after_fault_ms: Option<f64>,
    /// The longest time one of the cohort's clients went without a successful sync (counted
    /// from the start of the workload to its end, so a client that never recovered shows).
    pub longest_sync_stall_ms: Option<f64>,
    /// For the cohort's clients homed in the fault DC: the longest time from the fault until one
    /// of them was served (a successful sync or an acknowledged send) by another DC.
    pub served_elsewhere_after_ms: Option<f64>,
    /// Clients homed in the fault DC that were never served by another DC after the fault.
    pub never_served_elsewhere: usize,
}

/// `stats::Summary` is only `Serialize`; this reads it back from `report.json`.
#[derive(Deserialize)]
#[serde(remote = "Summary")]
struct SummaryDef {
    count: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// Where the phases of a drill begin: fault, and recovery of writes.
#[derive(Clone, Copy)]
struct Phases {
    fault_ms: Option<f64>,
    recovered_at_ms: Option<f64>,
}

/// Measures a drill: overall figures and one [`CohortFigures`] per cohort (see [`Figures::cohorts`]).
pub fn figures(history: &History) -> Figures {
    let fault = fault_ms(history);
    let all_sends: Vec<&SendRecord> = history.sends.iter().collect();
    let longest_write_wait_ms =
        fault.and_then(|f| longest_write_wait(&all_sends, f, history.duration_ms));
    let phases = Phases {
        fault_ms: fault,
        recovered_at_ms: fault.zip(longest_write_wait_ms).map(|(f, wait)| f + wait),
    };
    let syncs = syncs_by_client(history);
    let cohort = |name: String, clients: BTreeSet<usize>, sends: Vec<&SendRecord>| {
        cohort_figures(history, &syncs, phases, name, &clients, &sends)
    };

    let everyone: BTreeSet<usize> = (0..history.clients.len()).collect();
    let mut cohorts = vec![cohort("all clients".into(), everyone, all_sends)];
    if let (Some(fault_dc), Some(_)) = (&history.fault_dc, fault) {
        for homed_there in [true, false] {
            let clients: BTreeSet<usize> = (0..history.clients.len())
                .filter(|&c| (history.clients[c].home_dc == *fault_dc) == homed_there)
                .collect();
            let sends = history
                .sends
                .iter()
                .filter(|s| clients.contains(&s.client))
                .collect();
            let name = if homed_there {
                format!("homed in {fault_dc}")
            } else {
                "homed elsewhere".into()
            };
            cohorts.push(cohort(name, clients, sends));
        }
        if history.rooms.iter().any(|r| r.leader_dc_at_fault.is_some()) {
            for led_there in [true, false] {
                let rooms: BTreeSet<usize> = (0..history.rooms.len())
                    .filter(|&r| match &history.rooms[r].leader_dc_at_fault {
                        Some(leader) => (leader == fault_dc) == led_there,
                        None => false,
                    })
                    .collect();
                let clients = rooms
                    .iter()
                    .flat_map(|&r| history.rooms[r].members.iter().copied())
                    .collect();
                let sends = history
                    .sends
                    .iter()
                    .filter(|s| rooms.contains(&s.room))
                    .collect();
                let name = if led_there {
                    format!("rooms led from {fault_dc}")
                } else {
                    "rooms led elsewhere".into()
                };
                cohorts.push(cohort(name, clients, sends));
            }
        }
    }

    Figures {
        fault_dc: history.fault_dc.clone(),
        fault_ms: fault,
        sends: history.sends.len(),
        acknowledged: history
            .sends
            .iter()
            .filter(|s| s.event_id.is_some())
            .count(),
        failed: history.sends.iter().filter(|s| s.error.is_some()).count(),
        longest_write_wait_ms,
        recovered_at_ms: phases.recovered_at_ms,
        haetae_share_ms: longest_write_wait_ms
            .zip(history.engine.election_ms)
            .map(|(wait, election)| wait - election),
        engine: history.engine.clone(),
        cohorts,
        login: history.login.as_ref().map(|l| login::figures(l, &history.marks, history.engine.login_election_ms)),
    }
}

fn cohort_figures(
    history: &History,
    syncs: &HashMap<usize, Vec<&SyncRecord>>,
    phases: Phases,
    name: String,
    clients: &BTreeSet<usize>,
    sends: &[&SendRecord],
) -> CohortFigures {
    let acknowledged: Vec<&SendRecord> = sends
        .iter()
        .copied()
        .filter(|s| s.event_id.is_some())
        .collect();
    let latency = |from: Option<f64>, to: Option<f64>| {
        let mut samples: Vec<f64> = acknowledged
            .iter()
            .filter(|s| from.is_none_or(|f| s.start_ms >= f) && to.is_none_or(|t| s.start_ms < t))
            .map(|s| s.end_ms - s.start_ms)
            .collect();
        summarize(&mut samples)
    };
    let (fault, recovered) = (phases.fault_ms, phases.recovered_at_ms);
    // Without a fault everything is "before"; without a recovery everything after the fault is
    // "during".
    let (latency_before, latency_during, latency_after) = match fault {
        None => (latency(None, None), Summary::default(), Summary::default()),
        Some(f) => (
            latency(None, Some(f)),
            latency(Some(f), recovered),
            recovered.map_or_else(Summary::default, |r| latency(Some(r), None)),
        ),
    };

    let no_syncs = Vec::new();
    let longest_sync_stall_ms = clients
        .iter()
        .map(|c| longest_sync_stall(syncs.get(c).unwrap_or(&no_syncs), history.duration_ms))
        .reduce(f64::max);
    let mut served_elsewhere_after_ms = None;
    let mut never_served_elsewhere = 0;
    if let (Some(fault_dc), Some(f)) = (&history.fault_dc, fault) {
        for &client in clients.iter().filter(|&&c| {
            history
                .clients
                .get(c)
                .is_some_and(|i| i.home_dc == *fault_dc)
        }) {
            let client_sends = sends.iter().copied().filter(|s| s.client == client);
            match served_elsewhere_at(
                syncs.get(&client).unwrap_or(&no_syncs),
                client_sends,
                fault_dc,
                f,
            ) {
                Some(at) => {
                    served_elsewhere_after_ms =
                        Some(f64::max(at - f, served_elsewhere_after_ms.unwrap_or(0.0)))
                }
                None => never_served_elsewhere += 1,
            }
        }
    }

    CohortFigures {
        name,
        clients: clients.len(),
        sends: sends.len(),
        acknowledged: acknowledged.len(),
        failed: sends.iter().filter(|s| s.error.is_some()).count(),
        failed_over_sends: sends.iter().filter(|s| s.dcs_tried.len() > 1).count(),
        latency_before,
        latency_during,
        latency_after,
        longest_write_wait_ms: fault
            .and_then(|f| longest_write_wait(sends, f, history.duration_ms)),
        first_ack_after_fault_ms: fault.and_then(|f| {
            acknowledged
                .iter()
                .filter(|s| s.start_ms >= f)
                .map(|s| s.end_ms - f)
                .reduce(f64::min)
        }),
        longest_sync_stall_ms,
        served_elsewhere_after_ms,
        never_served_elsewhere,
    }
}

/// Over sends that had not ended at the fault, the longest time from the fault (or the send's
/// start, if later) until its client's next acknowledgement: the send's own, or, when it failed,
/// the first one ending after it gave up; with none, the end of the run. So a failed send counts
/// as part of the wait, not as a quick success.
fn longest_write_wait(sends: &[&SendRecord], fault_ms: f64, run_end_ms: f64) -> Option<f64> {
    let mut acknowledged_ends: HashMap<usize, Vec<f64>> = HashMap::new();
    for send in sends.iter().filter(|s| s.event_id.is_some()) {
        acknowledged_ends
            .entry(send.client)
            .or_default()
            .push(send.end_ms);
    }
    for ends in acknowledged_ends.values_mut() {
        ends.sort_by(f64::total_cmp);
    }
    let no_ends = Vec::new();
    sends
        .iter()
        .filter(|s| s.end_ms >= fault_ms)
        .map(|s| {
            let ends = acknowledged_ends.get(&s.client).unwrap_or(&no_ends);
            let next_ack = ends.get(ends.partition_point(|&end| end < s.end_ms));
            let written_ms = next_ack.copied().unwrap_or(run_end_ms.max(s.end_ms));
            written_ms - s.start_ms.max(fault_ms)
        })
        .reduce(f64::max)
}

/// The longest time without a successful sync between the start of the workload and its end.
fn longest_sync_stall(syncs: &[&SyncRecord], duration_ms: f64) -> f64 {
    let mut instants: Vec<f64> = vec![0.0];
    instants.extend(syncs.iter().filter(|s| s.error.is_none()).map(|s| s.at_ms));
    instants.push(duration_ms.max(instants.last().copied().unwrap_or(0.0)));
    instants.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max)
}

/// When a client homed in `home_dc` was first served by another DC after the fault.
fn served_elsewhere_at<'a>(
    syncs: &[&SyncRecord],
    sends: impl Iterator<Item = &'a SendRecord>,
    home_dc: &str,
    fault_ms: f64,
) -> Option<f64> {
    let synced = syncs
        .iter()
        .filter(|s| s.error.is_none() && s.at_ms >= fault_ms && s.dc != home_dc)
        .map(|s| s.at_ms);
    let acknowledged = sends
        .filter(|s| s.event_id.is_some() && s.end_ms >= fault_ms)
        .filter(|s| s.dcs_tried.last().is_some_and(|dc| dc != home_dc))
        .map(|s| s.end_ms);
    synced.chain(acknowledged).reduce(f64::min)
}

/// The drill's report for people: verdict, checks, cohorts, engine figures, marks and notes.
pub fn markdown(history: &History, check: &CheckReport, figures: &Figures) -> String {
    let mut out = format!("# Fire drill: {}\n\n", history.scenario);
    let _ = writeln!(out, "{}\n", verdict_line(check));
    let _ = writeln!(
        out,
        "{} sends, {} acknowledged, {} failed over {:.1} s; timelines checked at {}{}.\n",
        figures.sends,
        figures.acknowledged,
        figures.failed,
        history.duration_ms / 1000.0,
        list_or_none(&check.dcs_checked),
        if check.dcs_unreadable.is_empty() {
            String::new()
        } else {
            format!(" (unreadable: {})", check.dcs_unreadable.join(", "))
        }
    );

    out.push_str("## Checks\n\n| check | count |\n|---|---:|\n");
    for kind in Kind::ALL {
        let _ = writeln!(
            out,
            "| {} | {} |",
            kind.name().replace('_', " "),
            check.count(kind)
        );
    }
    let _ = writeln!(
        out,
        "| deliveries to clients checked | {} |",
        check.deliveries_checked
    );
    let _ = writeln!(
        out,
        "| limited syncs (misses they excused) | {} ({}) |",
        check.limited_syncs, check.missed_in_limited_syncs
    );
    let _ = writeln!(
        out,
        "| unreadable room timelines | {} |",
        check.unreadable_timelines
    );
    let _ = writeln!(
        out,
        "| acknowledged, room unreadable at every DC | {} |\n",
        check.acknowledged_unchecked
    );
    let findings: Vec<_> = Kind::ALL
        .iter()
        .flat_map(|&k| check.findings(k))
        .take(FINDINGS_IN_MARKDOWN)
        .collect();
    if !findings.is_empty() {
        let _ = writeln!(out, "First findings (all kept ones are in report.json):\n");
        for f in findings {
            let context: Vec<&str> = [&f.dc, &f.room, &f.client]
                .iter()
                .filter_map(|s| s.as_deref())
                .collect();
            let _ = writeln!(
                out,
                "- {} [{}]: {}",
                f.kind.name(),
                context.join(" "),
                f.detail
            );
        }
        out.push('\n');
    }

    out.push_str(
        "## Cohorts\n\nLatency of acknowledged sends, p50 / p99 ms (count), by when they started: \
         before the fault, during it (until writes recovered), after.\n\n\
         | cohort | clients | sends | acked | failed | failed over | before | during | after \
         | longest write wait ms | first ack after fault ms | longest sync stall ms \
         | served elsewhere after ms |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for c in &figures.cohorts {
        let served = match (c.served_elsewhere_after_ms, c.never_served_elsewhere) {
            (value, 0) => ms(value),
            (value, never) => format!("{} ({never} never)", ms(value)),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            c.name,
            c.clients,
            c.sends,
            c.acknowledged,
            c.failed,
            c.failed_over_sends,
            latency_cell(&c.latency_before),
            latency_cell(&c.latency_during),
            latency_cell(&c.latency_after),
            ms(c.longest_write_wait_ms),
            ms(c.first_ack_after_fault_ms),
            ms(c.longest_sync_stall_ms),
            served
        );
    }

    out.push_str("\n## Engine\n\n");
    if let (Some(dc), Some(fault)) = (&figures.fault_dc, figures.fault_ms) {
        let _ = writeln!(
            out,
            "- fault in DC {dc} at {:.3} s; writes recovered at {}",
            fault / 1000.0,
            figures
                .recovered_at_ms
                .map_or("never".into(), |r| format!("{:.3} s", r / 1000.0))
        );
    }
    let _ = writeln!(
        out,
        "- longest write wait: {} ms",
        ms(figures.longest_write_wait_ms)
    );
    let _ = writeln!(
        out,
        "- leader election (engine): {} ms",
        ms(figures.engine.election_ms)
    );
    let _ = writeln!(
        out,
        "- haetae's share (write wait − election): {} ms",
        ms(figures.haetae_share_ms)
    );
    let _ = writeln!(
        out,
        "- rebuild catch-up: {} ms",
        ms(figures.engine.rebuild_catch_up_ms)
    );

    if let Some(login) = &figures.login {
        out.push('\n');
        out.push_str(login::markdown(login).trim_end());
        out.push('\n');
    }
    if !history.marks.is_empty() {
        out.push_str("\n## Marks\n\n| at s | mark |\n|---:|---|\n");
        for mark in &history.marks {
            let _ = writeln!(out, "| {:.3} | {} |", mark.at_ms / 1000.0, mark.label);
        }
    }
    if !figures.engine.notes.is_empty() {
        out.push_str("\n## Notes\n\n");
        for note in &figures.engine.notes {
            let _ = writeln!(out, "- {note}");
        }
    }
    out
}

/// The header of the table [`summary_row`] fills: the header line and its separator line.
pub fn summary_header() -> String {
    "| scenario | verdict | acknowledged | lost | duplicates | reordered | failed sends \
     | longest write wait ms | engine election ms | haetae share ms \
     | sync stall, homed elsewhere ms | rebuild catch-up ms | sessions lost | logins back ms |\n\
     |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        .to_string()
}

/// One drill as one row (no line break) of the table headed by [`summary_header`].
pub fn summary_row(history: &History, check: &CheckReport, figures: &Figures) -> String {
    let stall_elsewhere = figures
        .cohorts
        .iter()
        .find(|c| c.name == "homed elsewhere")
        .and_then(|c| c.longest_sync_stall_ms);
    let login = figures.login.as_ref();
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        history.scenario,
        if check.ok() { "PASS" } else { "FAIL" },
        check.acknowledged,
        check.count(Kind::Lost),
        check.count(Kind::Duplicate),
        check.count(Kind::Reordered),
        figures.failed,
        ms(figures.longest_write_wait_ms),
        ms(figures.engine.election_ms),
        ms(figures.haetae_share_ms),
        ms(stall_elsewhere),
        ms(figures.engine.rebuild_catch_up_ms),
        login.map_or("–".to_string(), |l| l.sessions_lost.to_string()),
        ms(login.and_then(|l| l.first_login_after_fault_ms)),
    )
}

/// Writes `report.md`, `report.json` (`check`, `figures` and the whole `history`) and
/// `timeline.svg` into `dir` (created if missing); returns the paths written.
pub fn write_all(
    dir: &Path,
    history: &History,
    check: &CheckReport,
    figures: &Figures,
) -> std::io::Result<Vec<PathBuf>> {
    #[derive(Serialize)]
    struct ReportFile<'a> {
        check: &'a CheckReport,
        figures: &'a Figures,
        history: &'a History,
    }
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_vec_pretty(&ReportFile {
        check,
        figures,
        history,
    })?;
    let files = [
        ("report.md", markdown(history, check, figures).into_bytes()),
        ("report.json", json),
        ("timeline.svg", chart::timeline_svg(history).into_bytes()),
    ];
    let mut written = Vec::new();
    for (name, contents) in files {
        let path = dir.join(name);
        std::fs::write(&path, contents)?;
        written.push(path);
    }
    Ok(written)
}

fn verdict_line(check: &CheckReport) -> String {
    if check.ok() {
        format!(
            "**PASS**: {} acknowledged sends, none lost, duplicated or reordered.",
            check.acknowledged
        )
    } else {
        format!("**FAIL**: {}.", check.problems().join(", "))
    }
}

/// Milliseconds with no decimals, "–" when unknown.
fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "–".to_string(), |v| format!("{v:.0}"))
}

fn latency_cell(summary: &Summary) -> String {
    if summary.count == 0 {
        return "–".to_string();
    }
    format!(
        "{:.0} / {:.0} ({})",
        summary.p50_ms, summary.p99_ms, summary.count
    )
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "no DC".to_string()
    } else {
        items.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drill::checker::check;
    use crate::drill::checker::tests::{clean_history, send, sync};

    fn cohort<'a>(figures: &'a Figures, name: &str) -> &'a CohortFigures {
        figures
            .cohorts
            .iter()
            .find(|c| c.name == name)
            .expect("cohort")
    }

    #[test]
    fn figures_split_latency_around_the_fault_and_recovery() {
        // The fault is at 1000 ms; client 0 (homed in a) waits 500 ms for m4 (1100..1600, a then b).
        let mut history = clean_history();
        // Client 1 (homed in b): m5 in flight at the fault, m7 fails, m6 gets through at 2030: its
        // writes waited 780 ms from m7's start, which sets the recovery at 1780.
        history.sends.push(send(1, 5, 900.0, 1200.0, true, &["b"]));
        history
            .sends
            .push(send(1, 7, 1250.0, 1900.0, false, &["b", "c"]));
        history.sends.push(send(1, 6, 2000.0, 2030.0, true, &["b"]));
        let figures = figures(&history);

        assert_eq!(figures.fault_ms, Some(1000.0));
        assert_eq!(figures.longest_write_wait_ms, Some(780.0));
        assert_eq!(figures.recovered_at_ms, Some(1780.0));
        assert_eq!((figures.acknowledged, figures.failed), (7, 1));
        let names: Vec<&str> = figures.cohorts.iter().map(|c| c.name.as_str()).collect();
        let expected = ["all clients", "homed in a", "homed elsewhere"];
        assert_eq!(
            names,
            [&expected[..], &["rooms led from a", "rooms led elsewhere"]].concat()
        );

        let a = cohort(&figures, "homed in a");
        assert_eq!((a.clients, a.sends, a.failed_over_sends), (1, 5, 1));
        assert_eq!((a.latency_before.count, a.latency_before.p50_ms), (4, 50.0));
        assert_eq!(
            (a.latency_during.count, a.latency_during.max_ms),
            (1, 500.0)
        );
        assert_eq!(a.latency_after.count, 0);
        assert_eq!(a.longest_write_wait_ms, Some(500.0));
        assert_eq!(a.first_ack_after_fault_ms, Some(600.0));
        // m4 acknowledged through b at 1600 (its first sync at b came later, at 1700).
        assert_eq!(a.served_elsewhere_after_ms, Some(600.0));
        // Successful syncs at 900 then 1700.
        assert_eq!(a.longest_sync_stall_ms, Some(800.0));

        let elsewhere = cohort(&figures, "homed elsewhere");
        assert_eq!(elsewhere.longest_write_wait_ms, Some(780.0));
        assert_eq!(elsewhere.first_ack_after_fault_ms, Some(1030.0));
        assert_eq!((elsewhere.failed, elsewhere.failed_over_sends), (1, 1));
        let counts = |c: &CohortFigures| {
            (
                c.latency_before.count,
                c.latency_during.count,
                c.latency_after.count,
            )
        };
        assert_eq!(counts(elsewhere), (1, 0, 1));
        assert_eq!(elsewhere.served_elsewhere_after_ms, None);
        assert_eq!(cohort(&figures, "rooms led elsewhere").sends, 0);
    }

    #[test]
    fn sync_stall_counts_a_client_that_never_recovers() {
        let mut history = clean_history();
        history.syncs.retain(|s| s.client != 0 || s.at_ms < 1000.0);
        history
            .syncs
            .push(sync(0, 1200.0, "a", Some("no endpoint answered")));
        history.engine.election_ms = Some(250.0);
        let figures = figures(&history);
        let homed_in_a = cohort(&figures, "homed in a");
        // Last success at 900, workload ended at 3000.
        assert_eq!(homed_in_a.longest_sync_stall_ms, Some(2100.0));
        // m4 was acknowledged through b at 1600.
        assert_eq!(homed_in_a.served_elsewhere_after_ms, Some(600.0));
        assert_eq!(figures.haetae_share_ms, Some(250.0));
    }

    #[test]
    fn empty_history_has_figures_and_a_failing_report() {
        let history = History::default();
        let (check, figures) = (check(&history), figures(&history));
        assert_eq!(figures.cohorts.len(), 1);
        assert_eq!(figures.cohorts[0].longest_sync_stall_ms, None);
        assert!(
            markdown(&history, &check, &figures).contains("**FAIL**: no DC timeline could be read")
        );
        assert!(summary_row(&history, &check, &figures).contains("| FAIL |"));
    }

    #[test]
    fn markdown_and_row_carry_the_verdict_and_figures() {
        let mut history = clean_history();
        history.engine.notes.push("sync policy: always".into());
        let (check, figures) = (check(&history), figures(&history));
        let text = markdown(&history, &check, &figures);
        assert!(
            text.starts_with("# Fire drill: test\n\n**PASS**: 5 acknowledged sends"),
            "{text}"
        );
        assert!(
            text.contains(
                "| homed in a | 1 | 5 | 5 | 0 | 1 | 50 / 50 (4) | 500 / 500 (1) | – | 500 |"
            ),
            "{text}"
        );
        assert!(
            text.contains("| 1.000 | fault: fire in DC a |")
                && text.contains("- sync policy: always")
        );

        let row = summary_row(&history, &check, &figures);
        let columns = |s: &str| s.matches('|').count();
        assert_eq!(
            columns(&row),
            columns(summary_header().lines().next().unwrap_or_default())
        );
        assert!(
            row.starts_with("| test | PASS | 5 | 0 | 0 | 0 | 0 | 500 |"),
            "{row}"
        );

        history.timelines[1].events.pop();
        let check = crate::drill::checker::check(&history);
        let text = markdown(&history, &check, &figures);
        assert!(
            text.contains("**FAIL**: 1 lost") && text.contains("- lost [b !r:t @u0:t]: $e4"),
            "{text}"
        );
    }

    #[test]
    fn write_all_writes_the_three_files() {
        let dir = std::env::temp_dir().join(format!("haetae-report-test-{}", std::process::id()));
        let history = clean_history();
        let (check, figures) = (check(&history), figures(&history));
        let written = write_all(&dir, &history, &check, &figures).expect("write");
        assert_eq!(written.len(), 3);
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("report.json")).expect("read"))
                .expect("json");
        let figures_back: Figures =
            serde_json::from_value(json["figures"].clone()).expect("figures");
        assert_eq!(figures_back.cohorts[1].latency_before.count, 4);
        assert_eq!(json["check"]["acknowledged"], 5);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
