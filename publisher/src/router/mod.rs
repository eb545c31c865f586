//! Router mode (`--mode router`): ports of this node mapped on the network's router with PCP,
//! NAT-PMP or UPnP-IGD, for the claims of classes with `spec.publish.router` and (on the
//! elected publisher) LoadBalancer Services of class `hostport.rmb938.com/router`.
//!
//! [`wanted`] says what should be mapped (pure), [`table`] holds the mappings and makes them
//! so through a [`client::Router`], [`report`] writes the results on the objects, [`run`] is
//! the loop; [`gateway`] finds the default router.

pub mod client;
pub mod gateway;
pub mod report;
pub mod run;
pub mod table;
pub mod wanted;
