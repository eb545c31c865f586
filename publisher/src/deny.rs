//! Ports that are never forwarded, in any mode, whatever a class or Service says: the
//! node's and the control plane's own (SSH, DNS, the API server, etcd, the kubelet, …).

use std::collections::BTreeSet;

use hostport_api::ports::PortRange;

/// SSH, DNS, kube-apiserver, etcd, kubelet (read-write and read-only), kube-proxy health,
/// kube-controller-manager, kube-scheduler.
pub const DEFAULT_DENIED: &[u16] = &[22, 53, 2379, 2380, 6443, 10250, 10255, 10256, 10257, 10259];

/// The deny-list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DenyList {
    ports: BTreeSet<u16>,
}

impl Default for DenyList {
    fn default() -> Self {
        Self {
            ports: DEFAULT_DENIED.iter().copied().collect(),
        }
    }
}

/// A deny-list that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("deny-list entry {entry:?} is not a port (1-65535) or a range like 30000-30100")]
pub struct DenyListError {
    /// The entry.
    pub entry: String,
}

impl DenyList {
    /// From `22,6443,30000-30100` (empty: nothing denied).
    pub fn parse(list: &str) -> Result<Self, DenyListError> {
        let mut ports = BTreeSet::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let range: PortRange = entry.parse().map_err(|_| DenyListError {
                entry: entry.to_owned(),
            })?;
            ports.extend(range.start..=range.end);
        }
        Ok(Self { ports })
    }

    /// Whether `port` is never forwarded.
    pub fn denies(&self, port: u16) -> bool {
        self.ports.contains(&port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ports_and_ranges_and_refuses_the_rest() {
        let list = DenyList::parse("22, 6443,30000-30002").expect("valid");
        assert!(list.denies(22) && list.denies(30001) && !list.denies(30003));
        assert!(DenyList::parse("").expect("empty").ports.is_empty());
        for bad in ["0", "70000", "ssh", "10-5", "1-"] {
            let error = DenyList::parse(bad).expect_err(bad);
            assert!(error.to_string().contains(bad), "{error}");
        }
        assert!(DenyList::default().denies(6443));
    }
}
