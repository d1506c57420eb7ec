//! Nodes: leases renewed by heartbeat, the channel that pushes updates
//! to each node's driver, and the nodes the cluster knows.

pub mod known;
pub mod kube_source;
pub mod leases;
pub mod updates;
