//! hostport-publisher: makes allocated host ports reachable from outside the cluster, in one
//! of two ways that share only what they read from the API:
//!
//! - [`forwarding`]: DNAT rules (nftables or iptables) on an edge host, on each node or on
//!   another host over SSH.
//! - [`router`]: port mappings on the network's own router, asked with PCP, NAT-PMP or
//!   UPnP-IGD by the publisher on each node.
//!
//! Shared: [`claimed`] (which ports pods hold through claims, which ports Services never
//! get), [`caches`] (the watches), [`published`] (what the caches keep of claims and pods),
//! [`deny`] (ports never published), [`external`] (the public address annotations on pods),
//! [`dns`] (external-dns records), [`metrics`], [`cli`].
#![forbid(unsafe_code)]

pub mod caches;
pub mod claimed;
pub mod cli;
pub mod deny;
pub mod dns;
pub mod external;
pub mod forwarding;
pub mod metrics;
pub mod published;
pub mod router;
