//! One network namespace per DC, joined by a bridge in the host namespace, so a DC can be cut off
//! (its link taken down) as well as killed. Needs root and `ip`.
//!
//! Layout for a deployment with id N: bridge `htbN` with `10.X.Y.1/24`; DC i lives in namespace
//! `haetae-N-<dc>` with address `10.X.Y.(10+i)` on veth `htNvi` (host end `htNhi` on the bridge).
//! Cutting DC i takes `htNhi` down: its routes to the other DCs and to clients vanish together,
//! as when a building loses its network.

use std::process::Command;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("`ip {args}` failed: {message}")]
    Ip { args: String, message: String },
}

/// The namespaces and links of one deployment.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Network {
    pub id: u32,
    pub bridge: String,
    /// Per DC: (namespace, host-side veth, address).
    pub dcs: Vec<NetDc>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NetDc {
    pub namespace: String,
    pub host_link: String,
    pub address: String,
}

fn ip(args: &[&str]) -> Result<(), NetError> {
    let output = Command::new("ip").args(args).output().map_err(|e| NetError::Ip {
        args: args.join(" "),
        message: format!("cannot run ip: {e} (install iproute2)"),
    })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(NetError::Ip { args: args.join(" "), message: String::from_utf8_lossy(&output.stderr).trim().to_string() })
    }
}

/// True when this process may create namespaces (root with `ip` available).
pub fn available() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    root && Command::new("ip").args(["netns", "list"]).output().is_ok_and(|o| o.status.success())
}

impl Network {
    /// Creates the bridge and one namespace per DC. `id` keeps concurrent deployments apart.
    pub fn create(id: u32, dc_names: &[String]) -> Result<Network, NetError> {
        let id = id % 40_000;
        let subnet = format!("10.{}.{}", 100 + id / 250 % 150, id % 250);
        let network = Network {
            id,
            bridge: format!("htb{id}"),
            dcs: dc_names
                .iter()
                .enumerate()
                .map(|(i, name)| NetDc {
                    namespace: format!("haetae-{id}-{name}"),
                    host_link: format!("ht{id}h{i}"),
                    address: format!("{subnet}.{}", 10 + i),
                })
                .collect(),
        };
        // Leftovers of an earlier run with the same id would make every step fail.
        network.destroy();
        let result = network.build(&subnet);
        if result.is_err() {
            network.destroy();
        }
        result.map(|()| network)
    }

    fn build(&self, subnet: &str) -> Result<(), NetError> {
        ip(&["link", "add", &self.bridge, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{subnet}.1/24"), "dev", &self.bridge])?;
        ip(&["link", "set", &self.bridge, "up"])?;
        for (i, dc) in self.dcs.iter().enumerate() {
            let inner = format!("ht{}v{i}", self.id);
            ip(&["netns", "add", &dc.namespace])?;
            ip(&["link", "add", &dc.host_link, "type", "veth", "peer", "name", &inner])?;
            ip(&["link", "set", &inner, "netns", &dc.namespace])?;
            ip(&["link", "set", &dc.host_link, "master", &self.bridge])?;
            ip(&["link", "set", &dc.host_link, "up"])?;
            let ns = dc.namespace.as_str();
            ip(&["netns", "exec", ns, "ip", "addr", "add", &format!("{}/24", dc.address), "dev", &inner])?;
            ip(&["netns", "exec", ns, "ip", "link", "set", &inner, "up"])?;
            ip(&["netns", "exec", ns, "ip", "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    /// Cuts DC `index` off from every other DC and from clients.
    pub fn cut(&self, index: usize) -> Result<(), NetError> {
        ip(&["link", "set", &self.dcs[index].host_link, "down"])
    }

    /// Restores DC `index`'s link.
    pub fn heal(&self, index: usize) -> Result<(), NetError> {
        ip(&["link", "set", &self.dcs[index].host_link, "up"])
    }

    /// Removes the namespaces and the bridge; errors are ignored (parts may already be gone).
    pub fn destroy(&self) {
        for dc in &self.dcs {
            let _ = ip(&["netns", "del", &dc.namespace]);
            let _ = ip(&["link", "del", &dc.host_link]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}
