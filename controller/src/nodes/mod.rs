//! Nodes: leases renewed by heartbeat, what a heartbeat answers, what a
//! lost node sets off, the registry of every node ever seen, the channel
//! that pushes updates to each node's driver, and the nodes the cluster
//! knows (from the node watch).

pub mod heartbeat;
pub mod held;
pub mod known;
pub mod kube_source;
pub mod leases;
pub mod loss;
pub mod registry;
pub mod updates;
