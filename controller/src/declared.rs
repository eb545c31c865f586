//! Host ports that live pods declare, whoever made them: the ports the allocator must not hand
//! out even when no HostPort holds them (a pod in a namespace without the label, a
//! `hostNetwork` DaemonSet, a pod that kept a port whose claim is gone). Pure data, fed by the
//! pod watch; only pods that declare a host port are kept, so it grows with host ports in use,
//! not with pods.

use std::collections::HashMap;

/// What the book keeps of one live pod that declares host ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodPorts {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// The node it runs on, once scheduled.
    pub node: Option<String>,
    /// Its host ports (any protocol), sorted and distinct.
    pub ports: Vec<u16>,
    /// The claims its `claim.hostport.rmb938.com/*` annotations name.
    pub claims: Vec<String>,
}

impl PodPorts {
    /// Whether this pod holds `port` through the claim `namespace/claim`.
    pub fn uses_claim(&self, namespace: &str, claim: &str) -> bool {
        self.namespace == namespace && self.claims.iter().any(|c| c == claim)
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Declared host ports by pod and by port.
#[derive(Debug, Default)]
pub struct DeclaredPorts {
    by_pod: HashMap<String, PodPorts>,
    by_port: HashMap<u16, Vec<String>>,
    relisting: Option<Vec<PodPorts>>,
    synced: bool,
}

impl DeclaredPorts {
    /// Whether the book has been built from a complete list of pods.
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// Whether a live pod declares `port`.
    pub fn contains(&self, port: u16) -> bool {
        self.by_port.contains_key(&port)
    }

    /// The pods declaring `port`, by key.
    pub fn pods_on(&self, port: u16) -> impl Iterator<Item = &PodPorts> {
        self.by_port
            .get(&port)
            .into_iter()
            .flatten()
            .filter_map(|key| self.by_pod.get(key))
    }

    /// Every declared port.
    pub fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.by_port.keys().copied()
    }

    /// A pod was created or changed (`None`: gone, finished, or declares nothing); returns the
    /// ports that became declared or free.
    pub fn set(&mut self, pod: Option<PodPorts>, key: &str) -> Vec<u16> {
        if self.by_pod.get(key) == pod.as_ref() {
            return vec![];
        }
        let mut touched: Vec<u16> = self
            .by_pod
            .get(key)
            .map(|p| p.ports.clone())
            .unwrap_or_default();
        touched.extend(pod.iter().flat_map(|p| p.ports.iter().copied()));
        touched.sort_unstable();
        touched.dedup();
        let was: Vec<bool> = touched.iter().map(|p| self.contains(*p)).collect();
        self.forget(key);
        if let Some(pod) = pod {
            for port in &pod.ports {
                self.by_port.entry(*port).or_default().push(key.to_owned());
            }
            self.by_pod.insert(key.to_owned(), pod);
        }
        touched
            .into_iter()
            .zip(was)
            .filter(|(port, was)| self.contains(*port) != *was)
            .map(|(port, _)| port)
            .collect()
    }

    fn forget(&mut self, key: &str) {
        let Some(old) = self.by_pod.remove(key) else {
            return;
        };
        for port in old.ports {
            if let Some(keys) = self.by_port.get_mut(&port) {
                keys.retain(|k| k != key);
                if keys.is_empty() {
                    self.by_port.remove(&port);
                }
            }
        }
    }

    /// A (re)list of pods starts.
    pub fn relist_start(&mut self) {
        self.relisting = Some(vec![]);
    }

    /// One pod of a (re)list (only those that declare ports).
    pub fn relist_apply(&mut self, pod: Option<PodPorts>) {
        match (&mut self.relisting, pod) {
            (Some(list), Some(pod)) => list.push(pod),
            (None, Some(pod)) => {
                let key = pod.key();
                self.set(Some(pod), &key);
            }
            (_, None) => {}
        }
    }

    /// The (re)list is complete: exactly what it listed is declared; returns the ports that
    /// changed.
    pub fn relist_done(&mut self) -> Vec<u16> {
        let listed = self.relisting.take().unwrap_or_default();
        let before: Vec<u16> = self.ports().collect();
        self.by_pod.clear();
        self.by_port.clear();
        for pod in listed {
            let key = pod.key();
            self.set(Some(pod), &key);
        }
        self.synced = true;
        let mut changed: Vec<u16> = before
            .iter()
            .filter(|p| !self.contains(**p))
            .copied()
            .chain(self.ports().filter(|p| !before.contains(p)))
            .collect();
        changed.sort_unstable();
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ports: &[u16], claims: &[&str]) -> PodPorts {
        PodPorts {
            namespace: "team".into(),
            name: name.into(),
            node: None,
            ports: ports.to_vec(),
            claims: claims.iter().map(|c| (*c).to_owned()).collect(),
        }
    }

    #[test]
    fn a_port_is_declared_while_any_pod_declares_it() {
        let mut declared = DeclaredPorts::default();
        assert_eq!(
            declared.set(Some(pod("a", &[37200, 37201], &[])), "team/a"),
            vec![37200, 37201]
        );
        assert_eq!(
            declared.set(Some(pod("b", &[37200], &["web"])), "team/b"),
            Vec::<u16>::new()
        );
        assert_eq!(
            declared.set(Some(pod("a", &[37201], &[])), "team/a"),
            Vec::<u16>::new(),
            "b still declares 37200"
        );
        assert!(declared.contains(37200), "b still declares it");
        let users: Vec<&str> = declared.pods_on(37200).map(|p| p.name.as_str()).collect();
        assert_eq!(users, vec!["b"]);
        assert!(declared.pods_on(37200).all(|p| p.uses_claim("team", "web")));
        assert_eq!(declared.set(None, "team/b"), vec![37200]);
        assert!(!declared.contains(37200));
        assert_eq!(
            declared.set(None, "team/b"),
            Vec::<u16>::new(),
            "twice is a no-op"
        );
    }

    #[test]
    fn a_relist_replaces_everything_and_reports_the_difference() {
        let mut declared = DeclaredPorts::default();
        declared.set(Some(pod("gone", &[1000], &[])), "team/gone");
        declared.set(Some(pod("stays", &[2000], &[])), "team/stays");
        declared.relist_start();
        declared.relist_apply(Some(pod("stays", &[2000], &[])));
        declared.relist_apply(None);
        declared.relist_apply(Some(pod("new", &[3000], &[])));
        assert!(!declared.is_synced());
        assert_eq!(declared.relist_done(), vec![1000, 3000]);
        assert!(declared.is_synced());
        let mut ports: Vec<u16> = declared.ports().collect();
        ports.sort_unstable();
        assert_eq!(ports, vec![2000, 3000]);
    }
}
