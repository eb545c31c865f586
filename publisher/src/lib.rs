//! hostport-publisher: makes allocated host ports reachable from outside the cluster.
//!
//! One desired set of forwards ([`forward::ForwardSet`]: external port and protocol → target
//! address and port), computed from the API, is applied by a backend that only renders and
//! applies it: nftables ([`nft`], one table `inet hostport` owned by us, replaced atomically
//! in one `nft -f` transaction, or changed element by element in one transaction) or the
//! iptables fallback ([`iptables`], chains `HOSTPORT-*` of ours, one `iptables-restore` per
//! sync), locally or on another host over SSH ([`exec`]). Ports on the deny-list
//! ([`deny::DenyList`]) are never forwarded.
//!
//! [`router`] is the other way out: the network's own router maps the ports, asked with PCP,
//! NAT-PMP or UPnP-IGD by the publisher on each node.
#![forbid(unsafe_code)]

pub mod cli;
pub mod deny;
pub mod desired;
pub mod exec;
pub mod forward;
pub mod iptables;
pub mod metrics;
pub mod nft;
pub mod router;
pub mod runner;
pub mod sync;
