//! Backup and restore of an embedded store, as docs/operator-guide.md
//! describes it: the store, the audit log and its key copied while the
//! controller is stopped, the master key kept apart; restored into a fresh
//! directory, the controller serves what it issued before from the store,
//! without kadmind (same keytab, same kvno), and the KDC accepts it.
//! Real processes: controller, node driver, MIT realm, kinit.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use kcred_controller::keytab::Keytab;
use kcred_tests::TestPod;
use kcred_tests::procs::{NODE_A, Proc, ProcStack, binary};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use zeroize::Zeroizing;

const VOL: &str = "kcred";

/// The files a backup holds, besides the master key kept apart.
const BACKED_UP: [&str; 3] = ["store.redb", "audit.log", "audit.key"];

fn copy_files(from: &Path, to: &Path, names: &[&str]) {
    std::fs::create_dir_all(to).expect("mkdir");
    for name in names {
        std::fs::copy(from.join(name), to.join(name))
            .unwrap_or_else(|e| panic!("copy {name}: {e}"));
    }
}

fn keytab(path: &Path) -> Keytab {
    Keytab::parse(Zeroizing::new(std::fs::read(path).expect("read keytab"))).expect("keytab")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn a_restored_backup_serves_the_keytab_issued_before_with_kadmind_stopped() {
    let mut stack = ProcStack::start("").await.expect("stack");
    let d = stack.path().to_path_buf();
    let first = TestPod::with_keytabs("web", "web-0", NODE_A, "HTTP/web.example.com");
    let second = TestPod::with_keytabs("web", "web-1", NODE_A, "HTTP/web.example.com");
    stack.set_pods(&[&first, &second]).await.expect("pods");
    let target = stack.kubelet().publish(&first, VOL).await.expect("publish");
    let issued = keytab(&target.join("krb5.keytab"));

    // Backup: the controller stopped, its files copied; the master key
    // goes elsewhere (a backup holding both is one theft away from every
    // key).
    stack.controller = None;
    copy_files(&d, &d.join("backup"), &BACKED_UP);
    copy_files(&d, &d.join("key-escrow"), &["master.key"]);

    // The host is lost.
    for name in BACKED_UP.iter().chain(&["master.key"]) {
        std::fs::remove_file(d.join(name)).expect("remove");
    }

    // Restore into a fresh directory and start from it.
    let fresh = d.join("restored");
    copy_files(&d.join("backup"), &fresh, &BACKED_UP);
    copy_files(&d.join("key-escrow"), &fresh, &["master.key"]);
    let config = std::fs::read_to_string(d.join("controller.toml")).expect("config");
    let mut restored = config.clone();
    for name in BACKED_UP.iter().chain(&["master.key"]) {
        restored = restored.replace(
            &format!("{}/{name}", d.display()),
            &format!("{}/{name}", fresh.display()),
        );
    }
    assert_ne!(restored, config);
    std::fs::write(fresh.join("controller.toml"), &restored).expect("config");
    let check = Command::new(binary("kcred-controller"))
        .args(["check-config", "--config"])
        .arg(fresh.join("controller.toml"))
        .output()
        .expect("check-config");
    assert!(check.status.success(), "{check:?}");

    // kadmind is stopped: whatever is served now comes from the store.
    let kadmind =
        Pid::from_raw(i32::try_from(stack.realm.kadmind_pid().expect("kadmind")).expect("pid"));
    kill(kadmind, Signal::SIGSTOP).expect("stop kadmind");
    let mut cmd = Command::new(binary("kcred-controller"));
    cmd.args(["serve", "--config"])
        .arg(fresh.join("controller.toml"))
        .env("RUST_LOG", "info");
    let proc = Proc::spawn(cmd, &fresh.join("controller.log")).expect("controller");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !proc.log_text().contains("serving node API") {
        assert!(Instant::now() < deadline, "{}", proc.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stack.controller = Some(proc);

    let again = stack
        .kubelet()
        .publish(&second, VOL)
        .await
        .expect("served from the restored store");
    let served = keytab(&again.join("krb5.keytab"));
    kill(kadmind, Signal::SIGCONT).expect("continue kadmind");
    assert_eq!(served.kvnos(), issued.kvnos());
    assert_eq!(
        served.bytes(),
        issued.bytes(),
        "the same keys, not new ones"
    );

    // The KDC accepts the restored keys.
    let out = stack
        .realm
        .command("kinit")
        .env("KRB5CCNAME", "MEMORY:restored")
        .arg("-k")
        .arg("-t")
        .arg(again.join("krb5.keytab"))
        .arg(format!(
            "HTTP/web.example.com@{}",
            kcred_testrealm::DEFAULT_REALM
        ))
        .output()
        .expect("kinit");
    assert!(out.status.success(), "{out:?}");
}
