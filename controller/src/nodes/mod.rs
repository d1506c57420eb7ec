//! Nodes: leases renewed by heartbeat, and the channel that pushes updates
//! to each node's driver.

pub mod leases;
pub mod updates;
