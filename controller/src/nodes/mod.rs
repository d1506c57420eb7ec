//! Nodes: leases renewed by heartbeat, what a heartbeat answers, what a
//! lost node sets off, the registry of every node ever seen, and the channel that pushes updates to each node's
//! driver.

pub mod heartbeat;
pub mod leases;
pub mod loss;
pub mod registry;
pub mod updates;
