//! The drill's verdict: reads a [`History`] and finds what a Matrix homeserver must never do,
//! whatever fault it went through — lose an acknowledged message, store one twice, show two DCs'
//! users different orders, invent a message, or leave a syncing client without a message it was
//! due. It owns the rules of "due" and "lost"; it measures no latency (that is the report's job)
//! and never talks to a server.
//!
//! Each kind of problem keeps at most [`MAX_FINDINGS_PER_KIND`] findings as examples and its full
//! count in [`CheckReport::counts`], so a drill that goes badly wrong still gives a small report.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::drill::history::{DcTimeline, History, SendRecord, SyncRecord};

/// Findings kept per kind; the rest are only counted.
pub const MAX_FINDINGS_PER_KIND: usize = 50;

/// What kind of broken promise a finding is. Serialized with the name of its list in
/// [`CheckReport`], which is also its key in [`CheckReport::counts`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// An acknowledged send is missing from a DC's timeline that could be read.
    #[serde(rename = "lost")]
    Lost,
    /// One event twice in a timeline, or one send stored under two event ids.
    #[serde(rename = "duplicates")]
    Duplicate,
    /// Two DCs hold the same events of a room in different orders.
    #[serde(rename = "reordered")]
    Reordered,
    /// An event no send made, or stored under another id than the one acknowledged.
    #[serde(rename = "phantoms")]
    Phantom,
    /// A client synced past an acknowledged event of one of its rooms and never got it.
    #[serde(rename = "missed_by_clients")]
    MissedByClient,
    /// A client got two events of a room in another order than the timelines hold them.
    #[serde(rename = "client_order_violations")]
    ClientOrderViolation,
    /// A client got the same event twice.
    #[serde(rename = "client_duplicates")]
    ClientDuplicate,
    /// A server answered `/sync` with a Matrix error (it rejected the token or the request).
    #[serde(rename = "sync_token_errors")]
    SyncTokenError,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Lost,
        Kind::Duplicate,
        Kind::Reordered,
        Kind::Phantom,
        Kind::MissedByClient,
        Kind::ClientOrderViolation,
        Kind::ClientDuplicate,
        Kind::SyncTokenError,
    ];

    /// The name of the kind's list in [`CheckReport`], e.g. `"missed_by_clients"`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Lost => "lost",
            Kind::Duplicate => "duplicates",
            Kind::Reordered => "reordered",
            Kind::Phantom => "phantoms",
            Kind::MissedByClient => "missed_by_clients",
            Kind::ClientOrderViolation => "client_order_violations",
            Kind::ClientDuplicate => "client_duplicates",
            Kind::SyncTokenError => "sync_token_errors",
        }
    }
}

/// One example of a problem, with enough context to look it up in `report.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Finding {
    pub kind: Kind,
    /// Room id.
    pub room: Option<String>,
    /// The DC whose view shows the problem.
    pub dc: Option<String>,
    /// User id of the client concerned.
    pub client: Option<String>,
    pub detail: String,
}

/// The checker's verdict: findings by kind, their full counts, and what could be checked.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CheckReport {
    /// Sends the homeserver acknowledged (HTTP 200 with an event id).
    pub acknowledged: usize,
    pub lost: Vec<Finding>,
    pub duplicates: Vec<Finding>,
    pub reordered: Vec<Finding>,
    pub phantoms: Vec<Finding>,
    pub missed_by_clients: Vec<Finding>,
    pub client_order_violations: Vec<Finding>,
    pub client_duplicates: Vec<Finding>,
    pub sync_token_errors: Vec<Finding>,
    /// Full number of findings per kind ([`Kind::name`]), kept or not; every kind is present.
    pub counts: BTreeMap<String, usize>,
    /// DCs with at least one room timeline read without error.
    pub dcs_checked: Vec<String>,
    /// DCs none of whose room timelines could be read.
    pub dcs_unreadable: Vec<String>,
    /// Room timelines that could not be read (their DC's losses there go unseen).
    pub unreadable_timelines: usize,
    /// Acknowledged sends whose room no DC could show: nothing could be checked for them.
    pub acknowledged_unchecked: usize,
    /// (client, acknowledged event) pairs a client was due to receive.
    pub deliveries_checked: usize,
    /// `/sync` responses that said a room's timeline was limited (the client had a gap).
    pub limited_syncs: usize,
    /// Due events a client missed after a limited sync: allowed, so not in `missed_by_clients`.
    pub missed_in_limited_syncs: usize,
    /// Why the login workload failed (sessions lost, refresh tokens usable twice, id_tokens
    /// rejected: [`LoginHistory::failures`](crate::drill::login::LoginHistory::failures)).
    #[serde(default)]
    pub login_failures: Vec<String>,
}

impl CheckReport {
    /// True when nothing went wrong and at least one DC's timelines could be checked.
    pub fn ok(&self) -> bool {
        self.problems().is_empty()
    }

    /// Why the drill failed, one short phrase per reason ("3 lost"); empty when it passed.
    pub fn problems(&self) -> Vec<String> {
        let mut problems: Vec<String> = Kind::ALL
            .iter()
            .filter(|kind| self.count(**kind) > 0)
            .map(|kind| format!("{} {}", self.count(*kind), kind.name().replace('_', " ")))
            .collect();
        if self.dcs_checked.is_empty() {
            problems.push("no DC timeline could be read".to_string());
        }
        problems.extend(self.login_failures.iter().cloned());
        problems
    }

    /// How many problems of this kind were found (not only the ones kept).
    pub fn count(&self, kind: Kind) -> usize {
        self.counts.get(kind.name()).copied().unwrap_or(0)
    }

    /// The kept findings of one kind.
    pub fn findings(&self, kind: Kind) -> &[Finding] {
        match kind {
            Kind::Lost => &self.lost,
            Kind::Duplicate => &self.duplicates,
            Kind::Reordered => &self.reordered,
            Kind::Phantom => &self.phantoms,
            Kind::MissedByClient => &self.missed_by_clients,
            Kind::ClientOrderViolation => &self.client_order_violations,
            Kind::ClientDuplicate => &self.client_duplicates,
            Kind::SyncTokenError => &self.sync_token_errors,
        }
    }

    fn add(&mut self, finding: Finding) {
        *self
            .counts
            .entry(finding.kind.name().to_string())
            .or_default() += 1;
        let list = match finding.kind {
            Kind::Lost => &mut self.lost,
            Kind::Duplicate => &mut self.duplicates,
            Kind::Reordered => &mut self.reordered,
            Kind::Phantom => &mut self.phantoms,
            Kind::MissedByClient => &mut self.missed_by_clients,
            Kind::ClientOrderViolation => &mut self.client_order_violations,
            Kind::ClientDuplicate => &mut self.client_duplicates,
            Kind::SyncTokenError => &mut self.sync_token_errors,
        };
        if list.len() < MAX_FINDINGS_PER_KIND {
            list.push(finding);
        }
    }
}

/// Judges a drill's history. Rules, in short:
/// - every acknowledged send is in every readable timeline of its room (by event id, or by marker
///   under another id, which is then a phantom rather than a loss); a send that failed or never
///   finished may or may not have landed, so it is neither required nor a phantom;
/// - readable timelines of a room agree on the order of the events they share;
/// - a client that synced successfully after a send was acknowledged (and started one more
///   successful sync after it) received it, unless a limited sync excused the gap;
/// - no client got an event twice or out of the timelines' order, and no server rejected a sync.
pub fn check(history: &History) -> CheckReport {
    let mut report = CheckReport {
        counts: Kind::ALL
            .iter()
            .map(|k| (k.name().to_string(), 0))
            .collect(),
        ..CheckReport::default()
    };
    let sends_by_marker: HashMap<&str, &SendRecord> = history
        .sends
        .iter()
        .map(|s| (s.marker.as_str(), s))
        .collect();
    let mut acknowledged_by_room: BTreeMap<usize, Vec<(&SendRecord, &str)>> = BTreeMap::new();
    for send in &history.sends {
        if let Some(event_id) = &send.event_id {
            acknowledged_by_room
                .entry(send.room)
                .or_default()
                .push((send, event_id));
        }
    }
    report.acknowledged = acknowledged_by_room.values().map(Vec::len).sum();

    let readable = readable_timelines(history);
    check_dcs(history, &readable, &mut report);
    for (&room, acknowledged) in &acknowledged_by_room {
        match readable.get(&room) {
            Some(timelines) => check_lost(history, room, acknowledged, timelines, &mut report),
            None => report.acknowledged_unchecked += acknowledged.len(),
        }
    }
    for (&room, timelines) in &readable {
        check_timelines(history, room, timelines, &sends_by_marker, &mut report);
    }
    check_clients(
        history,
        &readable,
        &sends_by_marker,
        &acknowledged_by_room,
        &mut report,
    );
    check_sync_errors(history, &mut report);
    report.login_failures = history.login.as_ref().map(|login| login.failures()).unwrap_or_default();
    report
}

/// Readable timelines by room index.
fn readable_timelines(history: &History) -> BTreeMap<usize, Vec<&DcTimeline>> {
    let mut by_room: BTreeMap<usize, Vec<&DcTimeline>> = BTreeMap::new();
    for timeline in history.timelines.iter().filter(|t| t.error.is_none()) {
        by_room.entry(timeline.room).or_default().push(timeline);
    }
    by_room
}

fn check_dcs(
    history: &History,
    readable: &BTreeMap<usize, Vec<&DcTimeline>>,
    report: &mut CheckReport,
) {
    let mut dcs = history.dcs.clone();
    for timeline in &history.timelines {
        if !dcs.contains(&timeline.dc) {
            dcs.push(timeline.dc.clone());
        }
    }
    let checked: HashSet<&str> = readable.values().flatten().map(|t| t.dc.as_str()).collect();
    for dc in dcs {
        if checked.contains(dc.as_str()) {
            report.dcs_checked.push(dc);
        } else {
            report.dcs_unreadable.push(dc);
        }
    }
    report.unreadable_timelines = history
        .timelines
        .iter()
        .filter(|t| t.error.is_some())
        .count();
}

fn check_lost(
    history: &History,
    room: usize,
    acknowledged: &[(&SendRecord, &str)],
    timelines: &[&DcTimeline],
    report: &mut CheckReport,
) {
    for timeline in timelines {
        let ids: HashSet<&str> = timeline
            .events
            .iter()
            .map(|e| e.event_id.as_str())
            .collect();
        let markers: HashSet<&str> = timeline
            .events
            .iter()
            .filter_map(|e| e.marker.as_deref())
            .collect();
        for (send, event_id) in acknowledged {
            if !ids.contains(event_id) && !markers.contains(send.marker.as_str()) {
                report.add(Finding {
                    kind: Kind::Lost,
                    room: Some(room_name(history, room)),
                    dc: Some(timeline.dc.clone()),
                    client: Some(client_name(history, send.client)),
                    detail: format!(
                        "{event_id} (marker {}) acknowledged at {:.3} s is missing",
                        send.marker,
                        send.end_ms / 1000.0
                    ),
                });
            }
        }
    }
}

/// Duplicates and phantoms in each timeline of a room, and the order the timelines agree on.
fn check_timelines(
    history: &History,
    room: usize,
    timelines: &[&DcTimeline],
    sends_by_marker: &HashMap<&str, &SendRecord>,
    report: &mut CheckReport,
) {
    let finding = |kind, dc: &str, detail| Finding {
        kind,
        room: Some(room_name(history, room)),
        dc: Some(dc.to_string()),
        client: None,
        detail,
    };
    // Every distinct event id carrying a marker, over all this room's readable timelines.
    let mut ids_by_marker: HashMap<&str, Vec<&str>> = HashMap::new();
    for timeline in timelines {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for event in &timeline.events {
            *seen.entry(event.event_id.as_str()).or_default() += 1;
            let Some(marker) = event.marker.as_deref() else {
                continue;
            };
            if let Some(reason) =
                phantom_reason(sends_by_marker.get(marker).copied(), room, &event.event_id)
            {
                let detail = format!("{} (marker {marker}): {reason}", event.event_id);
                report.add(finding(Kind::Phantom, &timeline.dc, detail));
            }
            let ids = ids_by_marker.entry(marker).or_default();
            if !ids.contains(&event.event_id.as_str()) {
                ids.push(&event.event_id);
                if let [first, .., _] = ids.as_slice() {
                    let detail = format!(
                        "marker {marker} is carried by {first} and also by {}",
                        event.event_id
                    );
                    report.add(finding(Kind::Duplicate, &timeline.dc, detail));
                }
            }
        }
        let mut repeated: Vec<(&str, usize)> = seen.into_iter().filter(|(_, n)| *n > 1).collect();
        repeated.sort();
        for (event_id, times) in repeated {
            let detail = format!("{event_id} appears {times} times");
            report.add(finding(Kind::Duplicate, &timeline.dc, detail));
        }
    }
    for (i, a) in timelines.iter().enumerate() {
        for b in &timelines[i + 1..] {
            if let Some(detail) = order_divergence(a, b) {
                report.add(finding(
                    Kind::Reordered,
                    &format!("{} vs {}", a.dc, b.dc),
                    detail,
                ));
            }
        }
    }
}

/// Why an event carrying a workload marker is not what the send with that marker made, if so.
fn phantom_reason(send: Option<&SendRecord>, room: usize, event_id: &str) -> Option<String> {
    let Some(send) = send else {
        return Some("no send has this marker".to_string());
    };
    if send.room != room {
        return Some(format!(
            "the send with this marker went to room #{}",
            send.room
        ));
    }
    match &send.event_id {
        Some(acknowledged) if acknowledged != event_id => {
            Some(format!("the send was acknowledged as {acknowledged}"))
        }
        _ => None,
    }
}

/// The first place where two timelines order their common events differently.
fn order_divergence(a: &DcTimeline, b: &DcTimeline) -> Option<String> {
    let in_a: HashSet<&str> = a.events.iter().map(|e| e.event_id.as_str()).collect();
    let in_b: HashSet<&str> = b.events.iter().map(|e| e.event_id.as_str()).collect();
    let common = |timeline: &DcTimeline, other: &HashSet<&str>| -> Vec<String> {
        let mut seen = HashSet::new();
        timeline
            .events
            .iter()
            .map(|e| e.event_id.clone())
            .filter(|id| other.contains(id.as_str()) && seen.insert(id.clone()))
            .collect()
    };
    let (order_a, order_b) = (common(a, &in_b), common(b, &in_a));
    let position = order_a.iter().zip(&order_b).position(|(x, y)| x != y)?;
    Some(format!(
        "{} common events; at common position {position} {} has {} where {} has {}",
        order_a.len(),
        a.dc,
        order_a[position],
        b.dc,
        order_b[position]
    ))
}

fn check_clients(
    history: &History,
    readable: &BTreeMap<usize, Vec<&DcTimeline>>,
    sends_by_marker: &HashMap<&str, &SendRecord>,
    acknowledged_by_room: &BTreeMap<usize, Vec<(&SendRecord, &str)>>,
    report: &mut CheckReport,
) {
    // The order a client must see: the longest readable timeline of the room (if DCs disagree
    // among themselves, that is already reported as `reordered`).
    let rank: BTreeMap<usize, HashMap<&str, usize>> = readable
        .iter()
        .filter_map(|(&room, timelines)| {
            // `rev`: among equally long timelines, the first one.
            let longest = timelines.iter().rev().max_by_key(|t| t.events.len())?;
            let mut ranks = HashMap::new();
            for (i, event) in longest.events.iter().enumerate() {
                ranks.entry(event.event_id.as_str()).or_insert(i);
            }
            Some((room, ranks))
        })
        .collect();
    let mut received: BTreeMap<(usize, usize), HashSet<&str>> = BTreeMap::new();
    let mut latest: HashMap<(usize, usize), (usize, &str)> = HashMap::new();
    let mut seen_by_client: HashSet<(usize, &str)> = HashSet::new();
    for event in &history.received {
        let finding = |kind, detail| Finding {
            kind,
            room: Some(room_name(history, event.room)),
            dc: Some(event.dc.clone()),
            client: Some(client_name(history, event.client)),
            detail,
        };
        if !seen_by_client.insert((event.client, &event.event_id)) {
            let detail = format!(
                "{} received again at {:.3} s",
                event.event_id,
                event.at_ms / 1000.0
            );
            report.add(finding(Kind::ClientDuplicate, detail));
            continue;
        }
        received
            .entry((event.client, event.room))
            .or_default()
            .insert(&event.event_id);
        if let Some(marker) = event.marker.as_deref() {
            let send = sends_by_marker.get(marker).copied();
            if let Some(reason) = phantom_reason(send, event.room, &event.event_id) {
                let detail = format!(
                    "{} (marker {marker}) served to a client: {reason}",
                    event.event_id
                );
                report.add(finding(Kind::Phantom, detail));
            }
        }
        let Some(&position) = rank
            .get(&event.room)
            .and_then(|r| r.get(event.event_id.as_str()))
        else {
            continue;
        };
        match latest.get(&(event.client, event.room)) {
            Some(&(latest_position, latest_id)) if latest_position > position => {
                let detail = format!(
                    "{} received after {latest_id}, which the timelines hold later",
                    event.event_id
                );
                report.add(finding(Kind::ClientOrderViolation, detail));
            }
            _ => {
                latest.insert((event.client, event.room), (position, &event.event_id));
            }
        }
    }

    let syncs = syncs_by_client(history);
    report.limited_syncs = history.syncs.iter().filter(|s| s.limited).count();
    for (room, info) in history.rooms.iter().enumerate() {
        let Some(acknowledged) = acknowledged_by_room.get(&room) else {
            continue;
        };
        for &client in &info.members {
            let client_syncs = syncs.get(&client).map(Vec::as_slice).unwrap_or_default();
            let got = received.get(&(client, room));
            for (send, event_id) in acknowledged {
                if !due(client_syncs, send.end_ms) {
                    continue;
                }
                report.deliveries_checked += 1;
                if got.is_some_and(|ids| ids.contains(event_id)) {
                    continue;
                }
                if client_syncs
                    .iter()
                    .any(|s| s.limited && s.at_ms >= send.end_ms)
                {
                    report.missed_in_limited_syncs += 1;
                    continue;
                }
                report.add(Finding {
                    kind: Kind::MissedByClient,
                    room: Some(info.room_id.clone()),
                    dc: None,
                    client: Some(client_name(history, client)),
                    detail: format!(
                        "{event_id} acknowledged at {:.3} s never arrived{}",
                        send.end_ms / 1000.0,
                        served_by(client_syncs, send.end_ms)
                    ),
                });
            }
        }
    }
}

/// Whether a client with these syncs (sorted by time) must have received an event acknowledged
/// at `acknowledged_ms`: the ack came after its first successful sync, and it got a successful
/// response to a sync it started after the ack (the request after the first response that ended
/// after the ack; one that was already waiting may rightly have missed it).
fn due(syncs: &[&SyncRecord], acknowledged_ms: f64) -> bool {
    let Some(first_ok) = syncs.iter().find(|s| s.error.is_none()) else {
        return false;
    };
    if acknowledged_ms <= first_ok.at_ms {
        return false;
    }
    let first_after = syncs.partition_point(|s| s.at_ms < acknowledged_ms);
    syncs
        .get(first_after + 1..)
        .is_some_and(|later| later.iter().any(|s| s.error.is_none()))
}

/// " (synced at DC x, y since)": where the client was served after the ack, for a finding.
fn served_by(syncs: &[&SyncRecord], since_ms: f64) -> String {
    let mut dcs: Vec<&str> = Vec::new();
    let since = syncs.partition_point(|s| s.at_ms < since_ms);
    for sync in syncs[since..].iter().filter(|s| s.error.is_none()) {
        if !dcs.contains(&sync.dc.as_str()) {
            dcs.push(&sync.dc);
        }
    }
    if dcs.is_empty() {
        String::new()
    } else {
        format!(" (synced at {} since)", dcs.join(", "))
    }
}

fn check_sync_errors(history: &History, report: &mut CheckReport) {
    for sync in &history.syncs {
        let Some(error) = &sync.error else { continue };
        let Some(errcode) = matrix_errcode(error) else {
            continue;
        };
        report.add(Finding {
            kind: Kind::SyncTokenError,
            room: None,
            dc: Some(sync.dc.clone()),
            client: Some(client_name(history, sync.client)),
            detail: format!("{errcode} at {:.3} s: {error}", sync.at_ms / 1000.0),
        });
    }
}

/// The Matrix errcode (`M_UNKNOWN_TOKEN`...) in an error text: the server answered and refused,
/// as opposed to not answering at all.
fn matrix_errcode(error: &str) -> Option<&str> {
    error
        .split(|c: char| !(c.is_ascii_uppercase() || c == '_'))
        .find(|word| word.len() > 2 && word.starts_with("M_"))
}

// Small views of a history shared with the report.

/// When the fault hit: the first mark whose label starts with "fault".
pub(super) fn fault_ms(history: &History) -> Option<f64> {
    history
        .marks
        .iter()
        .find(|m| m.label.starts_with("fault"))
        .map(|m| m.at_ms)
}

/// Each client's sync responses, oldest first.
pub(super) fn syncs_by_client(history: &History) -> HashMap<usize, Vec<&SyncRecord>> {
    let mut by_client: HashMap<usize, Vec<&SyncRecord>> = HashMap::new();
    for sync in &history.syncs {
        by_client.entry(sync.client).or_default().push(sync);
    }
    for syncs in by_client.values_mut() {
        syncs.sort_by(|a, b| a.at_ms.total_cmp(&b.at_ms));
    }
    by_client
}

pub(super) fn room_name(history: &History, room: usize) -> String {
    history
        .rooms
        .get(room)
        .map_or_else(|| format!("room #{room}"), |r| r.room_id.clone())
}

pub(super) fn client_name(history: &History, client: usize) -> String {
    history
        .clients
        .get(client)
        .map_or_else(|| format!("client #{client}"), |c| c.user_id.clone())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::drill::history::{ClientInfo, Mark, Received, RoomInfo, TimelineEvent};

    /// A small drill: DCs a, b, c; two clients (0 homed in a, 1 homed in b) in one room; client 0
    /// sends m0..m3 through a, then the fault hits a at 1 s and m4 goes through b.
    pub fn clean_history() -> History {
        let mut history = History {
            scenario: "test".into(),
            dcs: vec!["a".into(), "b".into(), "c".into()],
            fault_dc: Some("a".into()),
            duration_ms: 3000.0,
            marks: vec![Mark {
                at_ms: 1000.0,
                label: "fault: fire in DC a".into(),
            }],
            clients: vec![
                ClientInfo {
                    user_id: "@u0:t".into(),
                    home_dc: "a".into(),
                },
                ClientInfo {
                    user_id: "@u1:t".into(),
                    home_dc: "b".into(),
                },
            ],
            rooms: vec![RoomInfo {
                room_id: "!r:t".into(),
                members: vec![0, 1],
                leader_dc_at_fault: Some("a".into()),
            }],
            ..History::default()
        };
        for i in 0..4 {
            let start = 100.0 + 200.0 * i as f64;
            history
                .sends
                .push(send(0, i, start, start + 50.0, true, &["a"]));
        }
        history
            .sends
            .push(send(0, 4, 1100.0, 1600.0, true, &["a", "b"]));
        for client in 0..2 {
            for at in [50.0, 500.0, 900.0, 1700.0, 2000.0, 2500.0] {
                let dc = if client == 0 && at > 1000.0 {
                    "b"
                } else {
                    ["a", "b"][client]
                };
                history.syncs.push(sync(client, at, dc, None));
            }
            for (i, at) in [(0, 500.0), (1, 500.0), (2, 900.0), (3, 900.0), (4, 1700.0)] {
                history.received.push(received(client, i, at, "b"));
            }
        }
        history.timelines = ["a", "b", "c"]
            .iter()
            .map(|dc| timeline(dc, &[0, 1, 2, 3, 4], None))
            .collect();
        // DC a burnt: its view could not be read at the end.
        history.timelines[0] = timeline("a", &[], Some("DC down"));
        history
    }

    pub fn send(
        client: usize,
        i: usize,
        start: f64,
        end: f64,
        ok: bool,
        dcs: &[&str],
    ) -> SendRecord {
        SendRecord {
            client,
            room: 0,
            txn_id: format!("t{i}"),
            marker: format!("m{i}"),
            start_ms: start,
            end_ms: end,
            event_id: ok.then(|| format!("$e{i}")),
            error: (!ok).then(|| "no endpoint answered".to_string()),
            dcs_tried: dcs.iter().map(|d| d.to_string()).collect(),
        }
    }

    pub fn sync(client: usize, at_ms: f64, dc: &str, error: Option<&str>) -> SyncRecord {
        SyncRecord {
            client,
            at_ms,
            dc: dc.into(),
            error: error.map(str::to_string),
            limited: false,
        }
    }

    fn received(client: usize, i: usize, at_ms: f64, dc: &str) -> Received {
        Received {
            client,
            room: 0,
            event_id: format!("$e{i}"),
            marker: Some(format!("m{i}")),
            at_ms,
            dc: dc.into(),
        }
    }

    fn event(i: usize) -> TimelineEvent {
        TimelineEvent {
            event_id: format!("$e{i}"),
            sender: "@u0:t".into(),
            marker: Some(format!("m{i}")),
        }
    }

    fn timeline(dc: &str, events: &[usize], error: Option<&str>) -> DcTimeline {
        DcTimeline {
            dc: dc.into(),
            room: 0,
            events: events.iter().map(|&i| event(i)).collect(),
            error: error.map(str::to_string),
        }
    }

    /// The only non-zero counts of a report.
    fn problems(report: &CheckReport) -> Vec<(String, usize)> {
        report
            .counts
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| (k.clone(), *n))
            .collect()
    }

    fn one(kind: Kind, n: usize) -> Vec<(String, usize)> {
        vec![(kind.name().to_string(), n)]
    }

    #[test]
    fn clean_history_passes() {
        let report = check(&clean_history());
        assert!(report.ok(), "{:?}", report.problems());
        assert_eq!(report.acknowledged, 5);
        assert_eq!(report.dcs_checked, ["b", "c"]);
        assert_eq!(report.dcs_unreadable, ["a"]);
        // All five ended after the first sync (50 ms) and before a later sync began, for 2 clients.
        assert_eq!(report.deliveries_checked, 10);
    }

    #[test]
    fn empty_history_fails_for_want_of_timelines_without_panicking() {
        let report = check(&History::default());
        assert!(!report.ok());
        assert_eq!(report.problems(), ["no DC timeline could be read"]);
    }

    #[test]
    fn lost_acknowledged_event_at_one_dc() {
        let mut history = clean_history();
        history.timelines[2] = timeline("c", &[0, 1, 3, 4], None);
        let report = check(&history);
        assert_eq!(problems(&report), one(Kind::Lost, 1));
        assert_eq!(report.lost[0].dc.as_deref(), Some("c"));
        assert!(report.lost[0].detail.contains("$e2"));
    }

    #[test]
    fn duplicate_event_and_marker_under_two_ids() {
        let mut history = clean_history();
        history.timelines[1] = timeline("b", &[0, 1, 1, 2, 3, 4], None);
        assert_eq!(problems(&check(&history)), one(Kind::Duplicate, 1));

        // The same send stored twice under two ids: one is also not the id acknowledged.
        let mut history = clean_history();
        let mut again = event(2);
        again.event_id = "$other".into();
        history.timelines[1].events.push(again);
        let report = check(&history);
        assert_eq!(report.count(Kind::Duplicate), 1);
        assert_eq!(report.count(Kind::Phantom), 1);
    }

    #[test]
    fn reordering_between_two_dcs() {
        let mut history = clean_history();
        history.timelines[2] = timeline("c", &[0, 2, 1, 3, 4], None);
        let report = check(&history);
        // The clients followed b's order, the first of the equally long timelines: only the DCs
        // disagree.
        assert_eq!(report.count(Kind::Reordered), 1);
        assert_eq!(report.reordered[0].dc.as_deref(), Some("b vs c"));
        assert!(!report.ok());
    }

    #[test]
    fn phantom_event_without_a_send() {
        let mut history = clean_history();
        let mut stray = event(9);
        stray.marker = Some("m9".into());
        history.timelines[1].events.push(stray.clone());
        history.timelines[2].events.push(stray);
        // An event without a marker is not a workload message.
        history.timelines[2].events.push(TimelineEvent {
            event_id: "$join".into(),
            ..Default::default()
        });
        let report = check(&history);
        assert_eq!(problems(&report), one(Kind::Phantom, 2));
        assert!(
            report.phantoms[0]
                .detail
                .contains("no send has this marker")
        );
    }

    #[test]
    fn failed_send_may_or_may_not_have_landed() {
        // m5 failed but landed at both DCs; m6 failed and is nowhere: neither is a problem.
        let mut history = clean_history();
        history
            .sends
            .push(send(1, 5, 1200.0, 4000.0, false, &["b", "c"]));
        history
            .sends
            .push(send(1, 6, 1300.0, 4000.0, false, &["b", "c"]));
        for timeline in &mut history.timelines[1..] {
            timeline.events.push(event(5));
        }
        let report = check(&history);
        assert!(report.ok(), "{:?}", report.problems());
        assert_eq!(report.acknowledged, 5);
    }

    #[test]
    fn client_missed_an_event_after_failing_over() {
        let mut history = clean_history();
        // Client 0 failed over to b and never got m4, though it synced twice after its ack.
        history
            .received
            .retain(|r| !(r.client == 0 && r.event_id == "$e4"));
        let report = check(&history);
        assert_eq!(problems(&report), one(Kind::MissedByClient, 1));
        let finding = &report.missed_by_clients[0];
        assert_eq!(finding.client.as_deref(), Some("@u0:t"));
        assert!(finding.detail.contains("$e4") && finding.detail.contains("synced at b"));

        // A limited sync after the ack excuses it, and is counted apart.
        history.syncs[3].limited = true;
        let report = check(&history);
        assert!(report.ok(), "{:?}", report.problems());
        assert_eq!(
            (report.limited_syncs, report.missed_in_limited_syncs),
            (1, 1)
        );
    }

    #[test]
    fn event_acknowledged_after_the_last_sync_began_is_not_due() {
        let mut history = clean_history();
        history.sends.push(send(0, 5, 2400.0, 2450.0, true, &["b"]));
        for timeline in &mut history.timelines[1..] {
            timeline.events.push(event(5));
        }
        // Only one sync (2500) answered after the ack; it may have been waiting since before it.
        let report = check(&history);
        assert!(report.ok(), "{:?}", report.problems());
    }

    #[test]
    fn client_duplicate_and_order_violation() {
        let mut history = clean_history();
        history.received.push(received(1, 3, 2000.0, "b"));
        let report = check(&history);
        assert_eq!(problems(&report), one(Kind::ClientDuplicate, 1));

        let mut history = clean_history();
        history.received.swap(0, 1);
        let report = check(&history);
        assert_eq!(problems(&report), one(Kind::ClientOrderViolation, 1));
        assert!(
            report.client_order_violations[0]
                .detail
                .starts_with("$e0 received after $e1")
        );
    }

    #[test]
    fn sync_rejected_by_a_server_but_not_a_connection_failure() {
        let mut history = clean_history();
        history.syncs.push(sync(
            1,
            2600.0,
            "c",
            Some("GET /sync: HTTP 400 M_INVALID_PARAM: bad since"),
        ));
        history.syncs.push(sync(
            1,
            2700.0,
            "c",
            Some("GET /sync: no endpoint answered: timed out"),
        ));
        let report = check(&history);
        assert_eq!(problems(&report), one(Kind::SyncTokenError, 1));
        assert!(
            report.sync_token_errors[0]
                .detail
                .starts_with("M_INVALID_PARAM")
        );
    }

    #[test]
    fn findings_are_capped_but_counted() {
        let mut history = clean_history();
        for i in 10..10 + MAX_FINDINGS_PER_KIND + 5 {
            history.sends.push(send(0, i, 1200.0, 1250.0, true, &["b"]));
        }
        let report = check(&history);
        assert_eq!(report.lost.len(), MAX_FINDINGS_PER_KIND);
        assert_eq!(report.count(Kind::Lost), 2 * (MAX_FINDINGS_PER_KIND + 5));
    }
}
