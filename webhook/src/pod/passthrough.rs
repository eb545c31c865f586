//! Passthrough, pure: when a container port moves to its allocated number (`containerPort` =
//! `hostPort`), the probes and lifecycle hooks that named the old number by number follow it,
//! so the kubelet keeps probing the port the program now listens on. Probes that name the
//! port by name need nothing: the port keeps its name.

use std::collections::BTreeMap;

use json_patch::PatchOperation;
use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use super::check::{NewPod, replace};

/// A container port whose number the admission changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MovedPort {
    /// The number the pod declared.
    pub from: i32,
    /// The allocated port it becomes.
    pub to: u16,
    /// Its protocol.
    pub protocol: String,
    /// Its position among the pod's ports.
    pub order: usize,
}

/// Old number → new number for the TCP ports that moved, when that is unambiguous: every
/// moved port with that number goes to one new number, and no TCP port that stays declares
/// it (a probe of that number then still has a port that listens on it).
fn tcp_moves(pod: &NewPod, moved: &[MovedPort]) -> BTreeMap<i32, u16> {
    let mut targets: BTreeMap<i32, Vec<u16>> = BTreeMap::new();
    for port in moved.iter().filter(|p| p.protocol == "TCP") {
        targets.entry(port.from).or_default().push(port.to);
    }
    let staying: Vec<i32> = pod
        .named
        .values()
        .flatten()
        .chain(&pod.unnamed)
        .filter(|slot| slot.protocol == "TCP" && !moved.iter().any(|m| m.order == slot.order))
        .map(|slot| slot.container_port)
        .collect();
    targets
        .into_iter()
        .filter(|(from, _)| !staying.contains(from))
        .filter_map(|(from, to)| {
            let first = *to.first()?;
            to.iter().all(|t| *t == first).then_some((from, first))
        })
        .collect()
}

/// The operations that point every probe and lifecycle hook naming a moved TCP port by
/// number at its new number (containers and init containers: sidecars have probes too).
pub fn probe_operations(pod: &NewPod, moved: &[MovedPort]) -> Vec<PatchOperation> {
    let moves = tcp_moves(pod, moved);
    if moves.is_empty() {
        return vec![];
    }
    let Some(spec) = pod.pod.spec.as_ref() else {
        return vec![];
    };
    let lists: [(&str, &[Container]); 2] = [
        ("containers", &spec.containers),
        (
            "initContainers",
            spec.init_containers.as_deref().unwrap_or_default(),
        ),
    ];
    let mut operations = vec![];
    for (list, containers) in lists {
        for (index, container) in containers.iter().enumerate() {
            let base = format!("/spec/{list}/{index}");
            for (field, probe) in [
                ("livenessProbe", &container.liveness_probe),
                ("readinessProbe", &container.readiness_probe),
                ("startupProbe", &container.startup_probe),
            ] {
                if let Some(probe) = probe {
                    probe_ports(probe, &format!("{base}/{field}"), &moves, &mut operations);
                }
            }
            let hooks = container.lifecycle.as_ref();
            for (field, hook) in [
                ("postStart", hooks.and_then(|l| l.post_start.as_ref())),
                ("preStop", hooks.and_then(|l| l.pre_stop.as_ref())),
            ] {
                if let Some(hook) = hook {
                    handler_ports(
                        hook,
                        &format!("{base}/lifecycle/{field}"),
                        &moves,
                        &mut operations,
                    );
                }
            }
        }
    }
    operations
}

fn probe_ports(
    probe: &Probe,
    pointer: &str,
    moves: &BTreeMap<i32, u16>,
    operations: &mut Vec<PatchOperation>,
) {
    let by_number = [
        ("httpGet", probe.http_get.as_ref().map(|a| &a.port)),
        ("tcpSocket", probe.tcp_socket.as_ref().map(|a| &a.port)),
    ];
    numbered_ports(&by_number, pointer, moves, operations);
    if let Some(to) = probe.grpc.as_ref().and_then(|g| moves.get(&g.port)) {
        operations.extend(replace(&format!("{pointer}/grpc/port"), Value::from(*to)));
    }
}

fn handler_ports(
    handler: &LifecycleHandler,
    pointer: &str,
    moves: &BTreeMap<i32, u16>,
    operations: &mut Vec<PatchOperation>,
) {
    let by_number = [
        ("httpGet", handler.http_get.as_ref().map(|a| &a.port)),
        ("tcpSocket", handler.tcp_socket.as_ref().map(|a| &a.port)),
    ];
    numbered_ports(&by_number, pointer, moves, operations);
}

/// `httpGet`/`tcpSocket` ports given as a number that moved (a name stays as it is).
fn numbered_ports(
    actions: &[(&str, Option<&IntOrString>)],
    pointer: &str,
    moves: &BTreeMap<i32, u16>,
    operations: &mut Vec<PatchOperation>,
) {
    for (action, port) in actions {
        if let Some(IntOrString::Int(from)) = port
            && let Some(to) = moves.get(from)
        {
            operations.extend(replace(
                &format!("{pointer}/{action}/port"),
                Value::from(*to),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;

    fn moved(from: i32, to: u16, protocol: &str, order: usize) -> MovedPort {
        MovedPort {
            from,
            to,
            protocol: protocol.into(),
            order,
        }
    }

    fn paths(operations: &[PatchOperation]) -> Vec<String> {
        operations
            .iter()
            .map(|o| serde_json::to_value(o).expect("op")["path"].to_string())
            .collect()
    }

    #[test]
    fn numbered_probes_and_hooks_follow_named_ones_stay() {
        let pod: Pod = serde_json::from_value(json!({"spec": {
            "containers": [{"name": "game", "image": "g",
                "ports": [{"name": "game", "containerPort": 7777},
                          {"name": "game-udp", "containerPort": 7777, "protocol": "UDP"}],
                "livenessProbe": {"tcpSocket": {"port": 7777}},
                "readinessProbe": {"httpGet": {"port": "game", "path": "/"}},
                "startupProbe": {"grpc": {"port": 7777}},
                "lifecycle": {"preStop": {"httpGet": {"port": 7777, "path": "/drain"}}}}],
            "initContainers": [{"name": "sidecar", "image": "s", "restartPolicy": "Always",
                "readinessProbe": {"httpGet": {"port": 7777, "path": "/"}}}]}}))
        .expect("pod");
        let new_pod = NewPod::new(&pod);
        let operations = probe_operations(
            &new_pod,
            &[moved(7777, 31000, "TCP", 0), moved(7777, 31000, "UDP", 1)],
        );
        assert_eq!(
            paths(&operations),
            vec![
                "\"/spec/containers/0/livenessProbe/tcpSocket/port\"",
                "\"/spec/containers/0/startupProbe/grpc/port\"",
                "\"/spec/containers/0/lifecycle/preStop/httpGet/port\"",
                "\"/spec/initContainers/0/readinessProbe/httpGet/port\"",
            ]
        );
        assert!(
            operations
                .iter()
                .all(|o| serde_json::to_value(o).expect("op")["value"] == json!(31000))
        );
    }

    #[test]
    fn a_number_another_port_still_declares_or_two_targets_leave_probes_alone() {
        let pod: Pod = serde_json::from_value(json!({"spec": {
            "containers": [{"name": "game", "image": "g",
                "ports": [{"name": "game", "containerPort": 7777},
                          {"name": "admin", "containerPort": 7777}],
                "livenessProbe": {"tcpSocket": {"port": 7777}}}]}}))
        .expect("pod");
        let new_pod = NewPod::new(&pod);
        // `admin` keeps 7777: the probe may mean it.
        assert!(probe_operations(&new_pod, &[moved(7777, 31000, "TCP", 0)]).is_empty());
        // Both move, to two numbers: which one the probe meant is unknown.
        assert!(
            probe_operations(
                &new_pod,
                &[moved(7777, 31000, "TCP", 0), moved(7777, 31001, "TCP", 1)]
            )
            .is_empty()
        );
        // Only UDP moved: TCP probes have nothing to follow.
        assert!(probe_operations(&new_pod, &[moved(7777, 31000, "UDP", 0)]).is_empty());
    }
}
