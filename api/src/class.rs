//! `HostPortClass`: a cluster-wide pool of node ports that claims allocate from.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::conditions::{Condition, reasons};
use crate::ports::{PortPool, PortRange, describe_ranges, usable_ranges};
use crate::selector::LabelSelector;

/// A pool of host ports that HostPortClaims of this class are allocated from. Admins create
/// one class per purpose (e.g. `game-servers` on 27000-27100); tenants name it in their claims.
// Several `printcolumn`s and `shortname`s are how kube-derive takes lists.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "hostport.rmb938.com",
    version = "v1alpha1",
    kind = "HostPortClass",
    plural = "hostportclasses",
    shortname = "hpclass",
    shortname = "hpcl",
    category = "hostport-allocator",
    status = "HostPortClassStatus",
    derive = "PartialEq",
    doc = "HostPortClass is a cluster-wide pool of node ports that HostPortClaims are allocated from.",
    printcolumn(
        name = "Pools",
        type_ = "string",
        json_path = ".status.pools",
        description = "Port ranges of the class pools"
    ),
    printcolumn(
        name = "Capacity",
        type_ = "integer",
        json_path = ".status.capacity",
        description = "Ports in the class pools"
    ),
    printcolumn(
        name = "Allocated",
        type_ = "integer",
        json_path = ".status.allocated",
        description = "Ports held by HostPorts of this class"
    ),
    printcolumn(
        name = "Available",
        type_ = "integer",
        json_path = ".status.available",
        description = "Ports free for new claims"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether claims can get a port (free ports remain)"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "self.pools.all(a, self.pools.filter(b, a.start <= b.end && b.start <= a.end).size() == 1)"
).message("pools of one class must not overlap: merge them or make them disjoint").field_path(".pools"))]
pub struct HostPortClassSpec {
    /// Port ranges this class allocates from, lowest port first. At least one; pools of one
    /// class must not overlap. Ports shared with another class are handed out to whichever
    /// claim asks first: a node port is only ever allocated once.
    #[schemars(length(min = 1, max = 128))]
    pub pools: Vec<PortPool>,
    /// Which namespaces may claim ports of this class, by the labels of the Namespace
    /// (e.g. `matchLabels: {kubernetes.io/metadata.name: games}`). Unset or empty: every
    /// namespace. The webhook denies claims from other namespaces (`NamespaceNotAllowed`);
    /// the allocator never binds one that got past it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Most claims of this class one namespace may hold (unset: no limit). The webhook
    /// denies the claim over the limit (`NamespaceLimitReached`); the allocator leaves claims
    /// over it Pending until one of the namespace's claims of the class is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_claims_per_namespace: Option<i32>,
    /// Where ports of this class are made reachable by `hostport-publisher` (unset: nowhere).
    /// An admin's decision: only classes that opt in are ever forwarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<Publish>,
    /// Whether claims of this class may ask for `portPolicy: Passthrough` (the pod's
    /// container port becomes the allocated port; per-pod claims ask with the annotation
    /// `port-policy.hostport.rmb938.com/<portName>: Passthrough`). Default false: such claims
    /// are refused (`PassthroughNotAllowed`). An admin's decision, like every other rule of a
    /// class.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_passthrough: bool,
    /// Whether `hostNetwork: true` pods may use ports of this class. Such a pod binds the
    /// node's ports itself: its claimed ports are declared with `containerPort` = `hostPort`
    /// = the allocated port (so the scheduler keeps two of them off one node), and a
    /// `hostNetwork` pod that claims nothing, or claims from a class that does not allow
    /// it, is refused (`HostNetworkNotAllowed`). Default false. An admin's decision: the
    /// kernel does not stop such a pod from binding other ports; allow it for programs you
    /// trust to bind only the ports they are given.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_host_network: bool,
    /// The largest block of consecutive ports (`spec.count` of a claim, or the annotation
    /// `count.hostport.rmb938.com/<portName>` of a pod) a claim of this class may ask for.
    /// Unset: 1, no blocks; larger claims are refused (`BlockTooLarge`). A block lies inside
    /// one pool and never spans two.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1024))]
    pub max_block_size: Option<i32>,
}

/// Where `hostport-publisher` forwards the ports of a class.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Publish {
    /// Forward each allocated port from the edge host (a Linux router, a VPS tunnel end)
    /// running `hostport-publisher --mode edge` to the node that runs the pod: DNAT
    /// `<external interface>:<port>` → `<node IP>:<port>`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub edge: bool,
    /// On each node running `hostport-publisher --mode node` (a DaemonSet), DNAT
    /// `<node>:<hostPort>` → `<pod IP>:<containerPort>` for the pods there, for CNIs without
    /// the portmap plugin (which implements `hostPort`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub node: bool,
    /// Ask the network's router (a home or small-office router) to forward each allocated
    /// port from its public address to the node that runs the pod, with PCP, NAT-PMP or
    /// UPnP-IGD. Done by `hostport-publisher --mode router` on each node (a DaemonSet):
    /// routers only map ports to the host that asks. The result is in the claim's
    /// `status.external` and its `Published` condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<RouterPublish>,
    /// The address families ports of this class are published on: `IPv4`, `IPv6` or both
    /// (dual-stack nodes and pods: `status.hostIPs`, `status.podIPs`). Unset: the
    /// publisher's `--ip-families` (default `IPv4`, what every release before did). A family
    /// the node or pod has no address of is left out (the claim's `Published` condition says
    /// so in router mode).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 2))]
    #[x_kube(validation = Rule::new("self.size() < 2 || self[0] != self[1]").message("ipFamilies lists each family once: [IPv4], [IPv6] or [IPv4, IPv6]"))]
    pub ip_families: Vec<IpFamily>,
    /// DNS records for clients, through external-dns: the publisher keeps one
    /// `DNSEndpoint` (`externaldns.k8s.io/v1alpha1`) per published claim, in its namespace
    /// and owned by it, with A/AAAA records `<claim>.<namespace>.<zone>` for its public
    /// addresses and an SRV record `_<portName>._<tcp|udp>.<claim>.<namespace>.<zone>` per
    /// port. Needs external-dns's CRD (without it nothing is created, and the publisher says
    /// so) and external-dns watching `--source=crd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsPublish>,
}

/// DNS records for the claims of a class.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DnsPublish {
    /// The zone the records are made in (`games.example.com`): a DNS name external-dns
    /// manages.
    #[schemars(length(min = 1, max = 200))]
    #[schemars(regex(
        pattern = r"^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)*[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
    ))]
    pub zone: String,
    /// The records' TTL in seconds (default 60: public addresses of home routers change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400))]
    pub ttl_seconds: Option<i32>,
}

impl DnsPublish {
    /// Default TTL.
    pub const DEFAULT_TTL_SECONDS: i64 = 60;

    /// The TTL asked for.
    pub fn ttl_seconds(&self) -> i64 {
        self.ttl_seconds
            .filter(|t| *t > 0)
            .map_or(Self::DEFAULT_TTL_SECONDS, i64::from)
    }
}

/// An IP address family, spelled as Kubernetes Services spell it.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
pub enum IpFamily {
    /// IPv4.
    #[serde(rename = "IPv4")]
    Ipv4,
    /// IPv6.
    #[serde(rename = "IPv6")]
    Ipv6,
}

impl IpFamily {
    /// Both families, IPv4 first.
    pub const ALL: [IpFamily; 2] = [IpFamily::Ipv4, IpFamily::Ipv6];

    /// The family of `address`.
    pub fn of(address: std::net::IpAddr) -> Self {
        match address {
            std::net::IpAddr::V4(_) => Self::Ipv4,
            std::net::IpAddr::V6(_) => Self::Ipv6,
        }
    }

    /// The first of `addresses` of this family.
    pub fn first_of(
        self,
        addresses: impl IntoIterator<Item = std::net::IpAddr>,
    ) -> Option<std::net::IpAddr> {
        addresses.into_iter().find(|a| Self::of(*a) == self)
    }

    /// The first of `addresses` of each family, IPv4 first: at most one per family.
    pub fn one_each(addresses: &[std::net::IpAddr]) -> Vec<std::net::IpAddr> {
        Self::ALL
            .into_iter()
            .filter_map(|family| family.first_of(addresses.iter().copied()))
            .collect()
    }

    /// `IPv4` or `IPv6`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ipv4 => "IPv4",
            Self::Ipv6 => "IPv6",
        }
    }

    /// From `IPv4` or `IPv6` (as Kubernetes spells it; case-insensitive for flags).
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "ipv4" => Some(Self::Ipv4),
            "ipv6" => Some(Self::Ipv6),
            _ => None,
        }
    }
}

impl std::fmt::Display for IpFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Publish {
    /// The families to publish on: the class's `ipFamilies`, else `default`.
    pub fn families<'a>(&'a self, default: &'a [IpFamily]) -> &'a [IpFamily] {
        if self.ip_families.is_empty() {
            default
        } else {
            &self.ip_families
        }
    }
}

/// How ports of a class are mapped on the router.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RouterPublish {
    /// The port mapping protocol: `pcp`, `natpmp`, `upnp`, or `auto` (the default: PCP, then
    /// NAT-PMP, then UPnP-IGD, the first the router answers).
    #[serde(default)]
    pub protocol: RouterProtocol,
    /// The router's address (IPv4). Unset: each node's default route gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}$"
    ))]
    pub gateway: Option<String>,
    /// The router's IPv6 address, for classes publishing over IPv6 (`ipFamilies`): where
    /// PCP `MAP` and UPnP IGD:2 pinhole requests go. Unset: each node's IPv6 default route
    /// gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 45))]
    #[schemars(regex(pattern = r"^[0-9a-fA-F:.]+$"))]
    pub gateway6: Option<String>,
    /// How long each mapping is asked for, in seconds (default 3600); it is renewed when half
    /// of it has passed and lapses by itself if the publisher stops renewing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 120, max = 86400))]
    pub lifetime_seconds: Option<i32>,
    /// `same` (the default): the external port must equal the allocated port, and a port the
    /// router gives to someone else is reported (`PortTakenExternally`). `any`: take the port
    /// the router offers and report it in the claim's `status.external`.
    #[serde(default)]
    pub external_port: ExternalPortPolicy,
}

impl RouterPublish {
    /// Default mapping lifetime.
    pub const DEFAULT_LIFETIME_SECONDS: u32 = 3600;

    /// The lifetime asked for.
    pub fn lifetime_seconds(&self) -> u32 {
        self.lifetime_seconds
            .and_then(|s| u32::try_from(s).ok())
            .filter(|s| *s > 0)
            .unwrap_or(Self::DEFAULT_LIFETIME_SECONDS)
    }
}

/// A router port mapping protocol.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RouterProtocol {
    /// PCP, then NAT-PMP, then UPnP-IGD.
    #[default]
    Auto,
    /// Port Control Protocol (RFC 6887).
    Pcp,
    /// NAT Port Mapping Protocol (RFC 6886).
    Natpmp,
    /// UPnP Internet Gateway Device `AddPortMapping`.
    Upnp,
}

/// Whether the external port must be the allocated port.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExternalPortPolicy {
    /// The external port equals the allocated port, or nothing is mapped.
    #[default]
    Same,
    /// Whatever port the router offers.
    Any,
}

/// Observed state of a HostPortClass, written by the controller.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HostPortClassStatus {
    /// The class pools as text, `27000-27100,28000` (for `kubectl get`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub pools: Option<String>,
    /// Number of ports in the class pools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<i32>,
    /// Number of those ports held by HostPorts of this class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocated: Option<i32>,
    /// Number of those ports free for new claims (also excludes ports held by other classes
    /// whose pools overlap this one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available: Option<i32>,
    /// The namespaces holding the most ports of this class, most first (at most 10; ties by
    /// name): who uses the class, at a glance in `kubectl get -o yaml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_namespaces: Option<Vec<NamespaceAllocation>>,
    /// Ports of the pools that live pods declare without a claim of theirs holding them (a
    /// `hostPort` set by hand in a namespace without the label, a `hostNetwork` pod, a pod
    /// that kept a port after its claim was released): the allocator never hands these out
    /// while the pod lives. Lowest first, at most 10; the `PortsInUseOutside` condition counts
    /// them all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports_in_use_outside: Option<Vec<PortInUseOutside>>,
    /// The `.metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Current state: `Ready` (free ports remain), `Exhausted` (no free port),
    /// `PoolsOverlapOtherClass` (information),
    /// `PortsInUseOutside` (pods use pool ports outside the allocator) and
    /// `OverlapsNodePortRange` (a pool shares ports with the NodePort Service range).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// A port of a class's pools that a live pod declares outside the allocator's books.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PortInUseOutside {
    /// The port.
    pub port: i32,
    /// The pod declaring it, `namespace/name` (the first by name when several do).
    pub pod: String,
    /// The node the pod runs on, once scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// How many ports a class status lists in `portsInUseOutside`.
pub const PORTS_IN_USE_OUTSIDE_LISTED: usize = 10;

/// Ports of a class held by the claims of one namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceAllocation {
    /// The namespace.
    pub namespace: String,
    /// Ports of the class its claims hold.
    pub allocated: i32,
}

/// How many namespaces a class status lists in `topNamespaces`.
pub const TOP_NAMESPACES: usize = 10;

impl HostPortClassSpec {
    /// A spec with the inclusive `(start, end)` pools.
    pub fn with_pools(pools: &[(i32, i32)]) -> Self {
        Self {
            pools: pools
                .iter()
                .map(|&(start, end)| PortPool { start, end })
                .collect(),
            namespace_selector: None,
            max_claims_per_namespace: None,
            publish: None,
            allow_passthrough: false,
            allow_host_network: false,
            max_block_size: None,
        }
    }
}

impl HostPortClass {
    /// Whether ports of this class are mapped on a router (`spec.publish.router`): its
    /// claims are Ready only once the router publisher says they are Published.
    pub fn publishes_on_router(&self) -> bool {
        self.spec
            .publish
            .as_ref()
            .is_some_and(|p| p.router.is_some())
    }

    /// The well-formed pools of the class (a malformed stored pool is skipped, not fatal).
    pub fn ranges(&self) -> Vec<PortRange> {
        usable_ranges(&self.spec.pools)
    }

    /// Why a claim in `namespace` (whose labels are `labels`) may not take a port of this
    /// class while the namespace holds `holding` other claims of it: the condition reason
    /// and a message naming the rule and the fix; `None` when it may. One rule for the
    /// webhook (at creation) and the allocator (before binding).
    pub fn refuses_namespace(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
        holding: usize,
    ) -> Option<(&'static str, String)> {
        let class = self.metadata.name.as_deref().unwrap_or_default();
        if let Some(selector) = &self.spec.namespace_selector
            && !selector.matches(labels)
        {
            return Some((
                reasons::NAMESPACE_NOT_ALLOWED,
                format!(
                    "namespace {namespace:?} is not selected by the namespaceSelector of HostPortClass {class:?} ({}): use a class this namespace may claim from, or ask a cluster admin to label the namespace",
                    selector.describe()
                ),
            ));
        }
        match self.spec.max_claims_per_namespace {
            Some(max) if i64::try_from(holding).unwrap_or(i64::MAX) >= i64::from(max) => Some((
                reasons::NAMESPACE_LIMIT_REACHED,
                format!(
                    "namespace {namespace:?} already holds {holding} claim(s) of HostPortClass {class:?}, its maxClaimsPerNamespace is {max}: delete one of them, or use another class"
                ),
            )),
            _ => None,
        }
    }

    /// Which opt-in of this class a claim with `spec` asks for and does not get (beyond its
    /// port): the condition reason and the rule it breaks (callers add who asked and the fix);
    /// `None` when the class grants all it asks. One rule for the webhook (at creation) and
    /// the allocator (before binding).
    pub fn refuses_claim_spec(
        &self,
        spec: &crate::HostPortClaimSpec,
    ) -> Option<(&'static str, String)> {
        let class = self.metadata.name.as_deref().unwrap_or_default();
        if spec.port_policy() == crate::PortPolicy::Passthrough && !self.spec.allow_passthrough {
            return Some((
                reasons::PASSTHROUGH_NOT_ALLOWED,
                format!(
                    "port policy Passthrough is not allowed by HostPortClass {class:?} (its spec.allowPassthrough is false; a cluster admin decides)"
                ),
            ));
        }
        let max = self.max_block_size();
        if spec.count() > max {
            return Some((
                reasons::BLOCK_TOO_LARGE,
                format!(
                    "a block of {} ports is more than HostPortClass {class:?} allows (its spec.maxBlockSize is {max}; a cluster admin decides)",
                    spec.count()
                ),
            ));
        }
        None
    }

    /// The largest block a claim of this class may ask for (unset: 1).
    pub fn max_block_size(&self) -> u16 {
        self.spec
            .max_block_size
            .and_then(|m| u16::try_from(m).ok())
            .filter(|m| *m >= 1)
            .unwrap_or(1)
    }

    /// Why the block `base..base + count` may not be asked of this class, if it does not lie
    /// inside one of its pools; the caller appends the fix.
    pub fn block_outside_pools(&self, base: u16, count: u16) -> Option<String> {
        if count <= 1 {
            return self.port_outside_pools(base);
        }
        let last = u32::from(base) + u32::from(count) - 1;
        let ranges = self.ranges();
        let inside = ranges
            .iter()
            .any(|r| r.contains(base) && last <= u32::from(r.end));
        (!inside).then(|| {
            format!(
                "ports {base}-{last} (spec.port and spec.count) do not lie inside one pool of HostPortClass {:?} ({}); a block never spans two pools",
                self.metadata.name.as_deref().unwrap_or_default(),
                describe_ranges(&ranges)
            )
        })
    }

    /// Why `port` may not be asked of this class, if it is outside its pools; the caller
    /// appends the fix that fits where the message goes.
    pub fn port_outside_pools(&self, port: u16) -> Option<String> {
        let ranges = self.ranges();
        (!ranges.iter().any(|r| r.contains(port))).then(|| {
            format!(
                "spec.port {port} is outside the pools of HostPortClass {:?} ({})",
                self.metadata.name.as_deref().unwrap_or_default(),
                describe_ranges(&ranges)
            )
        })
    }
}
