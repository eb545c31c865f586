//! `kubectl hostport why <claim|pod>`: the chain of reasons a claim or a pod is where it is
//! — the claim's conditions, its class (there? full? its access rules and opt-ins), its
//! HostPort, the pods using it, the router publisher's report, the Events about it; for a
//! pod, each claim it names, and the webhook's denial when the pod was never created.

use std::collections::BTreeMap;

use hostport_api::conditions::{reasons, status};
use hostport_api::pod_claims::POD_LABEL;
use hostport_api::{ClaimPhase, HostPortClaim};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use serde::Serialize;

use crate::error::Error;
use crate::snapshot::{Snapshot, node_of};

/// How a finding bears on the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum State {
    /// As it should be.
    Ok,
    /// On its way: nothing to do but wait.
    Waiting,
    /// Held back by something only a person can change.
    Problem,
    /// Context.
    Info,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Ok => "ok",
            State::Waiting => "waiting",
            State::Problem => "problem",
            State::Info => "info",
        }
    }
}

/// One link of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// What it is about, e.g. `claim games/web`, `class games`.
    pub subject: String,
    /// How it bears on the answer.
    pub state: State,
    /// A machine-readable reason (the conditions' and Events' own where there is one).
    pub reason: String,
    /// What it says and, for a problem, what to do.
    pub message: String,
}

/// The answer for one claim or pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Why {
    /// `claim namespace/name` or `pod namespace/name`.
    pub target: String,
    /// Its chain of reasons, in order.
    pub findings: Vec<Finding>,
}

fn finding(subject: &str, state: State, reason: &str, message: impl Into<String>) -> Finding {
    Finding {
        subject: subject.to_owned(),
        state,
        reason: reason.to_owned(),
        message: message.into(),
    }
}

/// What `why` was asked about: `claim/<name>` (also `hpclaim/`, `hostportclaim/`, or a bare
/// name) or `pod/<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A HostPortClaim.
    Claim(String),
    /// A Pod.
    Pod(String),
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (kind, name) = text.split_once('/').unwrap_or(("claim", text));
        if name.is_empty() {
            return Err(format!(
                "{text:?} names nothing: use claim/<name> or pod/<name>"
            ));
        }
        match kind {
            "claim" | "hpclaim" | "hpc" | "hostportclaim" | "hostportclaims" => {
                Ok(Target::Claim(name.to_owned()))
            }
            "pod" | "pods" | "po" => Ok(Target::Pod(name.to_owned())),
            other => Err(format!(
                "{other:?} is not a kind why knows: use claim/<name> or pod/<name>"
            )),
        }
    }
}

/// The chain of reasons for `target` in `namespace`.
pub async fn why(
    client: &Client,
    snapshot: &Snapshot,
    namespace: &str,
    target: &Target,
) -> Result<Why, Error> {
    let events = Events::list(client, namespace).await?;
    match target {
        Target::Claim(name) => {
            let mut findings = vec![];
            claim_chain(client, snapshot, &events, namespace, name, &mut findings).await?;
            Ok(Why {
                target: format!("claim {namespace}/{name}"),
                findings,
            })
        }
        Target::Pod(name) => pod_chain(client, snapshot, &events, namespace, name).await,
    }
}

async fn claim_chain(
    client: &Client,
    snapshot: &Snapshot,
    events: &Events,
    namespace: &str,
    name: &str,
    findings: &mut Vec<Finding>,
) -> Result<(), Error> {
    let subject = format!("claim {namespace}/{name}");
    let Some(claim) = snapshot
        .claims
        .get(&(namespace.to_owned(), name.to_owned()))
    else {
        return Err(Error::NotFound {
            kind: "HostPortClaim",
            name: format!("{namespace}/{name}"),
            hint: format!(
                "; claims in {namespace}: {}",
                snapshot
                    .claims
                    .keys()
                    .filter(|(ns, _)| ns == namespace)
                    .map(|(_, n)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    };
    if claim.metadata.deletion_timestamp.is_some() {
        findings.push(finding(
            &subject,
            State::Waiting,
            reasons::DELETING,
            "being deleted: its port is released once no pod uses it",
        ));
    }
    let conditions = claim
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    if conditions.is_empty() {
        findings.push(finding(
            &subject,
            State::Waiting,
            reasons::WAITING_FOR_PORT,
            "no status yet: is hostport-controller running? (kubectl -n hostport-system get pods)",
        ));
    }
    for condition in &conditions {
        let state = if condition.status == status::TRUE {
            State::Ok
        } else if reasons::blocks_binding(&condition.reason) {
            State::Problem
        } else {
            State::Waiting
        };
        findings.push(finding(
            &format!("{subject} {}", condition.type_),
            state,
            &condition.reason,
            condition.message.clone(),
        ));
    }
    class_findings(client, snapshot, claim, findings).await?;
    host_port_findings(snapshot, claim, findings);
    for pod in snapshot.pods_of(namespace, name) {
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_else(|| "Pending".into());
        let node = node_of(pod).unwrap_or("no node yet");
        findings.push(finding(
            &format!("pod {namespace}/{}", pod.name_any()),
            State::Info,
            &phase,
            format!("names this claim; on {node}"),
        ));
    }
    findings.extend(events.about("HostPortClaim", name));
    Ok(())
}

async fn class_findings(
    client: &Client,
    snapshot: &Snapshot,
    claim: &HostPortClaim,
    findings: &mut Vec<Finding>,
) -> Result<(), Error> {
    let class_name = &claim.spec.host_port_class_name;
    let subject = format!("class {class_name}");
    let Some(class) = snapshot.classes.get(class_name) else {
        findings.push(finding(
            &subject,
            State::Problem,
            reasons::CLASS_NOT_FOUND,
            format!("HostPortClass {class_name:?} does not exist: create it (the claim binds at once) or recreate the claim with an existing class"),
        ));
        return Ok(());
    };
    let free = crate::free::free_ports(snapshot, class_name)?;
    let bound = claim.phase() == ClaimPhase::Bound;
    let state = if free.free == 0 && !bound {
        State::Problem
    } else {
        State::Info
    };
    findings.push(finding(
        &subject,
        state,
        if free.free == 0 {
            reasons::NO_PORTS_AVAILABLE
        } else {
            reasons::PORTS_AVAILABLE
        },
        format!(
            "{} of {} ports free (pools {}){}",
            free.free,
            free.capacity,
            free.pools.join(", "),
            if free.free == 0 && !bound {
                ": free a port (delete a claim) or add a pool to the class"
            } else {
                ""
            }
        ),
    ));
    if let Some((reason, rule)) = class.refuses_claim_spec(&claim.spec) {
        findings.push(finding(&subject, State::Problem, reason, rule));
    }
    let namespace = claim.namespace().unwrap_or_default();
    if class.spec.namespace_selector.is_some() || class.spec.max_claims_per_namespace.is_some() {
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let labels = namespaces
            .get_opt(&namespace)
            .await
            .map_err(Error::api(format!("reading Namespace {namespace}")))?
            .map(|ns| ns.labels().clone())
            .unwrap_or_default();
        let holding = snapshot
            .claims
            .iter()
            .filter(|((ns, n), other)| {
                *ns == namespace
                    && Some(n.as_str()) != claim.metadata.name.as_deref()
                    && other.spec.host_port_class_name == *class_name
                    && other.bound_port().is_some()
            })
            .count();
        match class.refuses_namespace(&namespace, &labels, holding) {
            Some((reason, message)) if !bound => {
                findings.push(finding(&subject, State::Problem, reason, message));
            }
            _ => findings.push(finding(
                &subject,
                State::Ok,
                "NamespaceAllowed",
                format!("namespace {namespace:?} may claim from it ({holding} other claim(s) of the class hold ports there)"),
            )),
        }
    }
    if class.publishes_on_router() {
        findings.push(finding(
            &subject,
            State::Info,
            "PublishesOnRouter",
            "the class publishes on the router: the claim is Ready once hostport-publisher --mode router has mapped it (its Published condition)",
        ));
    }
    Ok(())
}

fn host_port_findings(snapshot: &Snapshot, claim: &HostPortClaim, findings: &mut Vec<Finding>) {
    let Some(name) = claim.bound_host_port_name() else {
        return;
    };
    let name = &*name;
    let subject = format!("HostPort {name}");
    let held = snapshot
        .host_ports
        .values()
        .find(|hp| hp.metadata.name.as_deref() == Some(name));
    match held {
        Some(hp) if hp.claim_uid().is_some() && hp.claim_uid() == claim.metadata.uid.as_deref() => {
            findings.push(finding(
                &subject,
                State::Ok,
                reasons::ALLOCATED,
                format!(
                    "holds port {} for this claim",
                    hp.port().map_or_else(|| "?".into(), |p| p.to_string())
                ),
            ));
        }
        Some(_) => findings.push(finding(
            &subject,
            State::Problem,
            reasons::HOST_PORT_NOT_OWNED,
            "is not bound to this claim (another UID in its claimRef): the allocator repairs it; pods naming the claim are refused meanwhile",
        )),
        None => findings.push(finding(
            &subject,
            State::Waiting,
            reasons::HOST_PORT_NOT_OWNED,
            "does not exist: the allocator binds a port from the class pools again",
        )),
    }
}

async fn pod_chain(
    client: &Client,
    snapshot: &Snapshot,
    events: &Events,
    namespace: &str,
    name: &str,
) -> Result<Why, Error> {
    let target = format!("pod {namespace}/{name}");
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let Some(pod) = pods
        .get_opt(name)
        .await
        .map_err(Error::api(format!("reading Pod {namespace}/{name}")))?
    else {
        // Never created (or gone): what its creators were told.
        let denials = events.denials_of(name);
        if denials.is_empty() {
            return Err(Error::NotFound {
                kind: "Pod",
                name: format!("{namespace}/{name}"),
                hint: "; no Event records a webhook denial for it either".into(),
            });
        }
        return Ok(Why {
            target,
            findings: denials,
        });
    };
    let mut findings = vec![];
    let annotations = pod.annotations();
    let claims: Vec<(String, String)> =
        match hostport_api::annotations::parse_claim_annotations(annotations) {
            Ok(parsed) => parsed
                .into_iter()
                .map(|a| (a.port_name, a.claim_name))
                .collect(),
            Err(error) => {
                findings.push(finding(
                    &target,
                    State::Problem,
                    "InvalidAnnotation",
                    error.to_string(),
                ));
                vec![]
            }
        };
    // Claims the webhook made for the pod's class annotations carry its name in a label.
    let mut named: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (port, claim) in claims {
        named.entry(claim).or_default().push(port);
    }
    for ((ns, claim_name), claim) in &snapshot.claims {
        if ns == namespace && claim.labels().get(POD_LABEL).map(String::as_str) == Some(name) {
            named.entry(claim_name.clone()).or_default();
        }
    }
    if named.is_empty() {
        findings.push(finding(
            &target,
            State::Info,
            "NoClaims",
            "names no claim (no claim.hostport.rmb938.com/ or class.hostport.rmb938.com/ annotation the webhook acted on)",
        ));
    }
    for (claim, ports) in named {
        let declared: Vec<String> = ports
            .iter()
            .map(|port| {
                let value = annotations
                    .get(&hostport_api::annotations::port_annotation_key(port))
                    .cloned()
                    .unwrap_or_else(|| "none".into());
                format!("{port} → {value}")
            })
            .collect();
        findings.push(finding(
            &target,
            State::Info,
            "NamesClaim",
            format!(
                "names claim {claim}{}",
                if declared.is_empty() {
                    String::new()
                } else {
                    format!(" (ports: {})", declared.join(", "))
                }
            ),
        ));
        claim_chain(client, snapshot, events, namespace, &claim, &mut findings).await?;
    }
    findings.extend(events.about("Pod", name));
    Ok(Why { target, findings })
}

/// The Events of a namespace (events.k8s.io, where kube-apiserver also shows the core ones).
struct Events(Vec<Event>);

impl Events {
    async fn list(client: &Client, namespace: &str) -> Result<Self, Error> {
        let api: Api<Event> = Api::namespaced(client.clone(), namespace);
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(Error::api(format!("listing Events in {namespace}")))?;
        Ok(Self(list.items))
    }

    fn finding(event: &Event, subject: &str) -> Finding {
        let warning = event.type_.as_deref() == Some("Warning");
        finding(
            subject,
            if warning { State::Problem } else { State::Info },
            event.reason.as_deref().unwrap_or("Event"),
            event.note.clone().unwrap_or_default(),
        )
    }

    /// The latest Events about `kind` `name`, newest last (at most 5).
    fn about(&self, kind: &str, name: &str) -> Vec<Finding> {
        let mut found: Vec<&Event> = self
            .0
            .iter()
            .filter(|e| {
                e.regarding.as_ref().is_some_and(|r| {
                    r.kind.as_deref() == Some(kind) && r.name.as_deref() == Some(name)
                })
            })
            .collect();
        found.sort_by_key(|e| event_time(e));
        let skip = found.len().saturating_sub(5);
        found
            .into_iter()
            .skip(skip)
            .map(|e| Self::finding(e, &format!("event on {kind} {name}")))
            .collect()
    }

    /// The webhook's denials of pod `name`, as the workload that tried to create it
    /// recorded them (a StatefulSet names the pod; a ReplicaSet's name is its prefix).
    fn denials_of(&self, name: &str) -> Vec<Finding> {
        self.0
            .iter()
            .filter(|e| {
                let note = e.note.as_deref().unwrap_or_default();
                let by = e
                    .regarding
                    .as_ref()
                    .and_then(|r| r.name.as_deref())
                    .unwrap_or_default();
                note.contains("hostport.rmb938.com")
                    && note.contains("denied")
                    && (note.contains(name) || (!by.is_empty() && name.starts_with(by)))
            })
            .map(|e| {
                let by = e.regarding.as_ref();
                let subject = format!(
                    "{} {}",
                    by.and_then(|r| r.kind.as_deref()).unwrap_or("object"),
                    by.and_then(|r| r.name.as_deref()).unwrap_or("?")
                );
                Self::finding(e, &subject)
            })
            .collect()
    }
}

fn event_time(event: &Event) -> Option<String> {
    event
        .event_time
        .as_ref()
        .map(|t| t.0.to_string())
        .or_else(|| {
            event
                .deprecated_last_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
        })
}

/// `why` as a table.
pub fn table(why: &Why) -> String {
    let rows: Vec<Vec<String>> = why
        .findings
        .iter()
        .map(|f| {
            vec![
                f.state.as_str().to_owned(),
                f.subject.clone(),
                f.reason.clone(),
                f.message.clone(),
            ]
        })
        .collect();
    format!(
        "{}:\n{}",
        why.target,
        crate::table::render(&["state", "subject", "reason", "message"], &rows)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_read_like_kubectl_resource_names() {
        assert_eq!("web".parse(), Ok(Target::Claim("web".into())));
        assert_eq!("hpclaim/web".parse(), Ok(Target::Claim("web".into())));
        assert_eq!("pod/game-0".parse(), Ok(Target::Pod("game-0".into())));
        let refused: Result<Target, _> = "deployment/web".parse();
        assert!(refused.is_err_and(|e| e.contains("claim/<name> or pod/<name>")));
        let empty: Result<Target, _> = "pod/".parse();
        assert!(empty.is_err());
    }
}
