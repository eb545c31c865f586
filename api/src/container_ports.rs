//! The container ports of a pod that can serve a host port: those of its regular containers
//! and of its restartable init containers (sidecars, `restartPolicy: Always`), which run
//! alongside the pod. One rule for the webhook (which injects `hostPort`) and the publisher
//! (which forwards it).

use k8s_openapi::api::core::v1::{ContainerPort, Pod};

/// Whether the pod has stopped for good (Succeeded or Failed): it holds none of its ports any
/// more. One rule for the controller's books, the publisher and `kubectl hostport`.
pub fn finished(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Succeeded" | "Failed"))
}

/// Where a container port is in the pod spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortPlace {
    /// `containers` or `initContainers`.
    pub list: &'static str,
    /// Index of the container in that list.
    pub container: usize,
    /// Index of the port in the container's `ports`.
    pub port: usize,
}

/// Every such port with its place, in spec order (containers, then sidecars).
pub fn container_ports(pod: &Pod) -> impl Iterator<Item = (PortPlace, &ContainerPort)> {
    let spec = pod.spec.as_ref();
    let containers = spec
        .into_iter()
        .flat_map(|s| s.containers.iter().enumerate())
        .map(|(i, c)| ("containers", i, c));
    let sidecars = spec
        .into_iter()
        .flat_map(|s| s.init_containers.iter().flatten().enumerate())
        .filter(|(_, c)| c.restart_policy.as_deref() == Some("Always"))
        .map(|(i, c)| ("initContainers", i, c));
    containers.chain(sidecars).flat_map(|(list, container, c)| {
        c.ports.iter().flatten().enumerate().map(move |(port, p)| {
            (
                PortPlace {
                    list,
                    container,
                    port,
                },
                p,
            )
        })
    })
}

/// The host ports a pod declares, with their protocol (`TCP` when unset), sorted and
/// distinct: every `hostPort` of its containers and init containers (the scheduler's
/// NodePorts filter and the kubelet's port mappings count them all), and for a `hostNetwork`
/// pod every container port (it binds them on the node itself).
pub fn declared_host_ports(pod: &Pod) -> Vec<(u16, &str)> {
    let Some(spec) = pod.spec.as_ref() else {
        return vec![];
    };
    let host_network = spec.host_network == Some(true);
    let mut ports: Vec<(u16, &str)> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = match p.host_port.filter(|h| *h != 0) {
                Some(host) => host,
                None if host_network => p.container_port,
                None => return None,
            };
            let port = u16::try_from(port).ok().filter(|p| *p != 0)?;
            Some((port, p.protocol.as_deref().unwrap_or("TCP")))
        })
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_host_ports_of_containers_init_containers_and_the_host_network() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "spec": {
                "containers": [{"name": "a", "ports": [
                    {"containerPort": 80, "hostPort": 37200},
                    {"containerPort": 80, "hostPort": 37200, "protocol": "UDP"},
                    {"containerPort": 81},
                    {"containerPort": 82, "hostPort": 0},
                    {"containerPort": 83, "hostPort": 70000}]}],
                "initContainers": [{"name": "setup", "ports": [{"containerPort": 1, "hostPort": 37201}]}]
            }
        }))
        .expect("pod");
        assert_eq!(
            declared_host_ports(&pod),
            vec![(37200, "TCP"), (37200, "UDP"), (37201, "TCP")]
        );
        let host_network: Pod = serde_json::from_value(serde_json::json!({
            "spec": {"hostNetwork": true, "containers": [{"name": "a", "ports": [
                {"containerPort": 9100}, {"containerPort": 9100}]}]}
        }))
        .expect("pod");
        assert_eq!(declared_host_ports(&host_network), vec![(9100, "TCP")]);
        assert!(declared_host_ports(&Pod::default()).is_empty());
    }

    #[test]
    fn containers_then_sidecars_not_plain_init_containers() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "spec": {
                "containers": [{"name": "a", "ports": [{"name": "web", "containerPort": 80},
                                                       {"name": "udp", "containerPort": 81}]}],
                "initContainers": [
                    {"name": "setup", "ports": [{"name": "no", "containerPort": 82}]},
                    {"name": "proxy", "restartPolicy": "Always",
                     "ports": [{"name": "side", "containerPort": 83}]}]
            }
        }))
        .expect("pod");
        let found: Vec<(PortPlace, i32)> = container_ports(&pod)
            .map(|(place, p)| (place, p.container_port))
            .collect();
        let place = |list, container, port| PortPlace {
            list,
            container,
            port,
        };
        assert_eq!(
            found,
            vec![
                (place("containers", 0, 0), 80),
                (place("containers", 0, 1), 81),
                (place("initContainers", 1, 0), 83),
            ]
        );
        assert_eq!(container_ports(&Pod::default()).count(), 0);
    }
}
