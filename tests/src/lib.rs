//! End-to-end harness: a real MIT realm, the controller and the CSI driver
//! in-process on real sockets, and a kubelet stand-in that speaks CSI over
//! the driver's unix socket exactly as kubelet does for ephemeral inline
//! volumes.

#![forbid(unsafe_code)]

pub mod audit;
pub mod bench;
pub mod ha;
pub mod kube;
pub mod kubelet;
pub mod procs;
pub mod scale;
pub mod stack;
pub mod storm;

pub use audit::audit_records;
pub use kcred_testrealm::Realm;
pub use kubelet::{Kubelet, TestPod};
pub use stack::{DirectoryRealm, Stack, StackOptions};

/// Polls `ok` every 200 ms; panics with `what` after `secs` seconds.
pub async fn wait_until(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// The key versions a keytab file holds (panics on an unreadable or torn
/// keytab: a delivered keytab must always be whole).
pub fn keytab_kvnos(path: &std::path::Path) -> Vec<u32> {
    let k = kcred_controller::keytab::Keytab::parse(zeroize::Zeroizing::new(
        std::fs::read(path).expect("read keytab"),
    ))
    .expect("whole keytab");
    k.kvnos().iter().copied().collect()
}

/// A command's standard output and error, as one text for assertions.
pub fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Detaches every CSI volume mount under a kubelet directory, so a failed
/// test never leaves tmpfs mounts behind.
pub fn unmount_volumes(kubelet_dir: &std::path::Path) {
    let Ok(pods) = std::fs::read_dir(kubelet_dir.join("pods")) else {
        return;
    };
    for pod in pods.flatten() {
        let Ok(vols) = std::fs::read_dir(pod.path().join("volumes/kubernetes.io~csi")) else {
            continue;
        };
        for v in vols.flatten() {
            let _ = nix::mount::umount2(&v.path().join("mount"), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}
