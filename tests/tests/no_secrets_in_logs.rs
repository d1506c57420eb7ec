//! Secrets never reach the logs: every line the controller and the driver
//! log at TRACE level during real publishes, refreshes, refusals and a
//! restart is captured, then searched for the delivered keys (as `klist -K`
//! prints them) and the master key.

use std::io::Write;
use std::sync::{Arc, Mutex};

use kcred_tests::{Stack, StackOptions, TestPod};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Hex keys from `klist -k -K` lines like `1 p@R (0x0123abcd...)`.
fn keys_in(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|l| l.split("(0x").nth(1))
        .map(|k| k.trim_end_matches(')').trim().to_lowercase())
        .filter(|k| k.len() >= 32)
        .collect()
}

#[tokio::test]
#[ignore = "needs root"]
async fn logs_never_contain_keys_or_the_master_key() {
    let captured = Captured::default();
    let sink = captured.clone();
    tracing_subscriber::fmt()
        .with_env_filter("trace")
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .init();

    let mut stack = Stack::start(StackOptions::default()).await.expect("stack");
    let pod = TestPod::with_keytabs(
        "web",
        "web-0",
        "node-a",
        "HTTP/web.example.com, HTTP/api.example.com",
    );
    let denied = TestPod::with_keytabs("db", "db-0", "node-a", "HTTP/web.example.com");
    stack.add_pod(&pod);
    stack.add_pod(&denied);
    let target = stack.kubelet.publish(&pod, "kcred").await.expect("publish");
    stack
        .kubelet
        .publish(&pod, "kcred")
        .await
        .expect("republish");
    stack
        .kubelet
        .publish(&denied, "kcred")
        .await
        .expect_err("denied");
    stack.stop_controller().await.expect("stop");
    stack
        .kubelet
        .publish(&pod, "kcred")
        .await
        .expect("refresh while down keeps files");
    stack
        .start_controller(|_| {}, &[&pod])
        .await
        .expect("restart");
    stack
        .kubelet
        .publish(&pod, "kcred")
        .await
        .expect("republish after restart");

    let listing = stack
        .realm
        .command("klist")
        .args(["-k", "-K"])
        .arg(target.join("krb5.keytab"))
        .output()
        .expect("klist -K");
    let keys = keys_in(&String::from_utf8_lossy(&listing.stdout));
    assert!(
        keys.len() >= 4,
        "expected the keys of two principals, got {keys:?}"
    );
    let master = std::fs::read_to_string(stack.dir.path().join("master.key")).expect("master key");
    let master = master.trim().to_lowercase();
    stack
        .kubelet
        .unpublish(&pod, "kcred")
        .await
        .expect("unpublish");
    stack.shutdown().await.expect("shutdown");

    let logs = String::from_utf8_lossy(&captured.0.lock().expect("lock")).to_lowercase();
    assert!(
        logs.contains("issued bundle") && logs.contains("denied"),
        "logs were not captured"
    );
    for key in keys.iter().chain([&master]) {
        // Any 16-hex-digit window of a key is enough to count as a leak.
        for window in key.as_bytes().windows(16).step_by(8) {
            let window = std::str::from_utf8(window).expect("hex");
            assert!(
                !logs.contains(window),
                "a key fragment {window} appears in the logs"
            );
        }
    }
}
