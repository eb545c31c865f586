//! Forwarding (`--mode edge` and `--mode node`): DNAT rules on a Linux host that send an
//! external port to the node or pod holding it.
//!
//! [`wanted`] says which forwards the API asks for (pure), [`rules`] is that set and its
//! changes, [`sync`] applies it through a backend that only renders: nftables ([`nft`], one
//! table `inet hostport` of ours, replaced or changed in one transaction) or the iptables
//! fallback ([`iptables`], chains `HOSTPORT-*`, one `iptables-restore` per sync), locally or
//! over SSH ([`exec`]). [`run`] is the loop.

pub mod exec;
pub mod iptables;
pub mod nft;
pub mod rules;
pub mod run;
pub mod sync;
pub mod wanted;
