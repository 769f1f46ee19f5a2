//! The status report of a deployment: its DCs and processes, and for every stream, bucket and
//! object store the DC of its leader and of each replica, with lag, flagging any asset that is not
//! spread over three DCs.

use std::collections::BTreeSet;
use std::time::Duration;

use haetae_store::admin::{Admin, AssetInfo};

use crate::deployment::State;

/// True while a process with this PID runs. A zombie (exited, not yet reaped by its parent) does
/// not count: `cluster down` must not wait for a supervisor that already finished.
pub fn alive(pid: Option<u32>) -> bool {
    let Some(pid) = pid else { return false };
    // SAFETY: kill(pid, 0) only checks for existence.
    if unsafe { libc::kill(pid as libc::pid_t, 0) } != 0 {
        return false;
    }
    // /proc/PID/stat: "PID (command) STATE ...", the command may hold spaces and parentheses.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()) != Some("Z"),
        Err(_) => true,
    }
}

/// Problems with one asset's placement; empty when it has three current replicas in three DCs.
pub fn placement_problems(asset: &AssetInfo) -> Vec<String> {
    let mut problems = Vec::new();
    let dcs: BTreeSet<&str> = asset.replicas.iter().map(|r| r.server.as_str()).collect();
    if asset.configured_replicas < 3 {
        problems.push(format!("configured with {} replicas", asset.configured_replicas));
    }
    if dcs.len() < asset.replicas.len() {
        problems.push("two replicas share a DC".into());
    }
    if dcs.len() < 3 {
        problems.push(format!("replicas in {} DCs", dcs.len()));
    }
    if asset.leader.is_none() {
        problems.push("no leader".into());
    }
    let behind: Vec<&str> = asset.replicas.iter().filter(|r| !r.current).map(|r| r.server.as_str()).collect();
    if !behind.is_empty() {
        problems.push(format!("not current: {}", behind.join(", ")));
    }
    problems
}

/// Renders the whole status as text; `assets` is None when no DC answered.
pub fn render(state: &State, assets: Result<&[AssetInfo], String>) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "deployment {} ({} DCs, {}, sync_interval: {}, {} log partitions, {}{})\n\n",
        state.spec.dir.display(),
        state.dcs.len(),
        if state.network.is_some() { "network namespaces" } else { "loopback" },
        if state.spec.sync_always { "always" } else { "server default" },
        state.spec.partitions,
        if state.spec.tls { "TLS" } else { "no TLS" },
        if state.spec.encrypt_at_rest { ", encrypted at rest" } else { "" }
    ));
    out.push_str(&format!(
        "supervisor: PID {} {}{}\n\n",
        state.supervisor_pid,
        if alive(Some(state.supervisor_pid)) { "running" } else { "NOT RUNNING" },
        if state.activity.is_empty() { String::new() } else { format!("; {}", state.activity) }
    ));
    out.push_str("DC      nats-server                       haetae node                      phase\n");
    for dc in &state.dcs {
        let nats = format!("{} {}", dc.nats_url(), if alive(dc.nats_pid) { "up" } else { "DOWN" });
        let node = format!("{} {}", dc.endpoint(), if alive(dc.node_pid) { "up" } else { "DOWN" });
        let mut phase = dc.phase.as_str().to_string();
        if dc.burns > 0 || dc.repairs > 0 {
            phase.push_str(&format!(" (burned {}x, repaired {}x)", dc.burns, dc.repairs));
        }
        out.push_str(&format!("{:<7} {:<33} {:<32} {}\n", dc.name, nats, node, phase));
    }
    out.push('\n');
    match assets {
        Err(error) => out.push_str(&format!("JetStream: cannot read placement: {error}\n")),
        Ok(assets) => {
            let mut leaders: Vec<(String, usize)> = state.dcs.iter().map(|d| (d.name.clone(), 0)).collect();
            out.push_str(&format!("{:<18} {:>8} {:<7} {:<40} {}\n", "asset", "messages", "leader", "replicas (DC:lag)", "check"));
            let mut flagged = 0;
            for asset in assets {
                if let Some(leader) = &asset.leader {
                    if let Some(entry) = leaders.iter_mut().find(|(name, _)| name == leader) {
                        entry.1 += 1;
                    }
                }
                let replicas: Vec<String> = asset
                    .replicas
                    .iter()
                    .map(|r| format!("{}{}:{}", r.server, if r.leader { "*" } else { "" }, if r.current { r.lag.to_string() } else { format!("{} behind", r.lag) }))
                    .collect();
                let problems = placement_problems(asset);
                if !problems.is_empty() {
                    flagged += 1;
                }
                out.push_str(&format!(
                    "{:<18} {:>8} {:<7} {:<40} {}\n",
                    asset.label,
                    asset.messages,
                    asset.leader.as_deref().unwrap_or("NONE"),
                    replicas.join(" "),
                    if problems.is_empty() { "ok".to_string() } else { format!("FLAG: {}", problems.join("; ")) }
                ));
            }
            let spread: Vec<String> = leaders.iter().map(|(name, n)| format!("{name}: {n}")).collect();
            out.push_str(&format!("\nleaders per DC: {}\n", spread.join(", ")));
            out.push_str(&if flagged == 0 {
                format!("all {} assets have three current replicas in three DCs\n", assets.len())
            } else {
                format!("{flagged} of {} assets FLAGGED\n", assets.len())
            });
        }
    }
    out
}

/// Reads the placement through any DC of the state file and renders the status.
pub async fn report(state: &State) -> String {
    let assets = match state.admin_access() {
        Ok(access) => match Admin::connect(&state.nats_urls(), &access, Duration::from_secs(2)).await {
            Ok(admin) => admin.assets().await.map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        },
        Err(error) => Err(format!("no admin credential: {error}")),
    };
    render(state, assets.as_deref().map_err(Clone::clone))
}

#[cfg(test)]
mod tests {
    use super::*;
    use haetae_store::admin::ReplicaInfo;

    fn replica(server: &str, leader: bool, current: bool) -> ReplicaInfo {
        ReplicaInfo { server: server.into(), leader, current, lag: if current { 0 } else { 42 }, seen_ago_s: 0.1 }
    }

    fn asset(replicas: Vec<ReplicaInfo>, configured: usize) -> AssetInfo {
        let leader = replicas.iter().find(|r| r.leader).map(|r| r.server.clone());
        AssetInfo { label: "log/0".into(), stream: "HAETAE_LOG_0".into(), configured_replicas: configured, messages: 7, leader, replicas }
    }

    #[test]
    fn three_current_replicas_in_three_dcs_pass() {
        let spread = asset(vec![replica("a", true, true), replica("b", false, true), replica("c", false, true)], 3);
        assert!(placement_problems(&spread).is_empty());
    }

    #[test]
    fn every_kind_of_bad_placement_is_flagged() {
        let one_dc_down = asset(vec![replica("a", true, true), replica("b", false, true)], 3);
        assert_eq!(placement_problems(&one_dc_down), vec!["replicas in 2 DCs".to_string()]);
        let lagging = asset(vec![replica("a", true, true), replica("b", false, false), replica("c", false, true)], 3);
        assert_eq!(placement_problems(&lagging), vec!["not current: b".to_string()]);
        let leaderless = asset(vec![replica("a", false, true), replica("b", false, true), replica("c", false, true)], 3);
        assert_eq!(placement_problems(&leaderless), vec!["no leader".to_string()]);
        let single = asset(vec![replica("a", true, true)], 1);
        let problems = placement_problems(&single);
        assert!(problems.contains(&"configured with 1 replicas".to_string()), "{problems:?}");
        assert!(problems.contains(&"replicas in 1 DCs".to_string()), "{problems:?}");
    }
}
