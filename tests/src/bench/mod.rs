//! Parts of the fast-path benchmark (`tests/benches/fast_path.rs`): the
//! floors and peers every kcred figure is printed beside, measured in the
//! same run on the same machine, and the load that drives the real
//! controller and driver processes.

pub mod echo;
pub mod floor;
pub mod load;
pub mod node_fs;
pub mod procstat;
pub mod stats;
