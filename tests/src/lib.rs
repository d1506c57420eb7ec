//! End-to-end harness: a real MIT realm, the controller and the CSI driver
//! in-process on real sockets, and a kubelet stand-in that speaks CSI over
//! the driver's unix socket exactly as kubelet does for ephemeral inline
//! volumes.

pub mod kubelet;
pub mod procs;
pub mod stack;
pub mod storm;

pub use kcred_testrealm::Realm;
pub use kubelet::{Kubelet, TestPod};
pub use stack::{Stack, StackOptions};

/// Whether this process may mount (tests that need real tmpfs mounts skip
/// with a message otherwise).
pub fn can_mount() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Prints why a test is skipped and returns true when it must be.
pub fn skip_unless_root(test: &str) -> bool {
    if can_mount() {
        false
    } else {
        eprintln!("SKIP {test}: needs root for tmpfs mounts");
        true
    }
}
