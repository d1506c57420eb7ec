//! Verifying a node's Kerberos token reads and appends to the replay cache
//! file, which MIT locks for each token. Held up there (another process
//! sharing the file holds its lock, or the disk under it stalls), token
//! verification waits, and nothing else does: calls that need no
//! verification are still answered.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use common::{Files, Running};
use kcred_proto::kcred::v1::HeartbeatRequest;
use kcred_proto::kcred::v1::node_credentials_client::NodeCredentialsClient;
use kcred_testrealm::{DEFAULT_REALM, Realm};
use nix::fcntl::{FcntlArg, fcntl};

const NODE: &str = "node-1.example.test";

/// The auth probe, built beside this test by `cargo build --workspace --bins`.
fn probe() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> -> target/<profile>/kcred-auth-probe
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("kcred-auth-probe");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// `count` tokens of the node for the controller, as metadata values.
fn tokens(realm: &Realm, keytab: &std::path::Path, count: usize) -> Vec<String> {
    let out = std::process::Command::new(probe())
        .envs(realm.env())
        .arg("token")
        .arg(keytab)
        .arg(format!("host/{NODE}@{DEFAULT_REALM}"))
        .arg(format!("kcred/controller.test@{DEFAULT_REALM}"))
        .arg(count.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let values: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(values.len(), count);
    values
}

fn heartbeat(token: Option<&str>) -> tonic::Request<HeartbeatRequest> {
    let mut request = tonic::Request::new(HeartbeatRequest {
        node_name: NODE.into(),
        volume_ids: vec![],
    });
    if let Some(t) = token {
        request
            .metadata_mut()
            .insert(kcred_auth::METADATA_KEY, t.parse().unwrap());
    }
    request
}

/// A heartbeat without a token from a client of its own runtime and
/// thread (the controller runs on this test's runtime): its code, or
/// `None` if it was not answered within `wait`.
fn tokenless_call(addr: std::net::SocketAddr, wait: Duration) -> Option<tonic::Code> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let code = runtime.block_on(async {
            let mut node = NodeCredentialsClient::connect(format!("http://{addr}"))
                .await
                .unwrap();
            match node.heartbeat(heartbeat(None)).await {
                Ok(_) => tonic::Code::Ok,
                Err(status) => status.code(),
            }
        });
        let _ = tx.send(code);
    });
    rx.recv_timeout(wait).ok()
}

/// Whether a lock request on the file with inode `ino` is waiting:
/// `/proc/locks` lists each blocked request with `->`, and the file as
/// `MAJOR:MINOR:INODE`.
fn someone_waits_for_lock(ino: u64) -> bool {
    let inode = ino.to_string();
    std::fs::read_to_string("/proc/locks")
        .unwrap()
        .lines()
        .filter(|line| line.contains("->"))
        .any(|line| {
            line.split_whitespace()
                .any(|f| f.matches(':').count() == 2 && f.rsplit(':').next() == Some(&inode))
        })
}

/// An open file description's write lock on the whole file, as MIT takes
/// it on its replay cache (`F_OFD_SETLKW`): held while the file is open.
fn lock(path: &std::path::Path) -> std::fs::File {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let whole = nix::libc::flock {
        l_type: nix::libc::F_WRLCK as i16,
        l_whence: nix::libc::SEEK_SET as i16,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    fcntl(file.as_fd(), FcntlArg::F_OFD_SETLK(&whole)).unwrap();
    file
}

/// A controller verifying node tokens against a replay cache, and
/// `count` fresh tokens of the node for it.
struct Verifying {
    dir: tempfile::TempDir,
    controller: Running,
    tokens: Vec<String>,
    // Kept running for the controller's life (fields drop in order).
    _realm: Realm,
}

impl Verifying {
    async fn start(count: usize) -> Verifying {
        let realm = Realm::start().expect("realm");
        realm.add_principal("kcred/controller.test").unwrap();
        realm.add_principal(&format!("host/{NODE}")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (controller_keytab, node_keytab) = (
            dir.path().join("kcred.keytab"),
            dir.path().join("node.keytab"),
        );
        realm
            .extract_keytab("kcred/controller.test", &controller_keytab)
            .unwrap();
        realm
            .extract_keytab(&format!("host/{NODE}"), &node_keytab)
            .unwrap();
        let mut f = Files::with_auth(
            &format!(
                "[auth]\nmode = \"kerberos\"\nkeytab = \"{}\"\nreplay_cache = \"{}\"\n",
                controller_keytab.display(),
                dir.path().join("replay.rcache2").display()
            ),
            "",
        );
        f.config.realm = DEFAULT_REALM.to_string();
        let tokens = tokens(&realm, &node_keytab, count);
        let controller = Running::start(&f.config).await;
        Verifying {
            _realm: realm,
            dir,
            controller,
            tokens,
        }
    }

    fn replay_cache(&self) -> PathBuf {
        self.dir.path().join("replay.rcache2")
    }

    /// Verifies one token (clear text: every call's token is verified),
    /// which creates the replay cache.
    async fn first_call(&mut self) -> NodeCredentialsClient<tonic::transport::Channel> {
        let node = self.controller.node_client().await;
        let first = self.tokens.pop().unwrap();
        node.clone()
            .heartbeat(heartbeat(Some(&first)))
            .await
            .expect("a node's heartbeat with its token");
        assert!(self.replay_cache().exists());
        node
    }

    /// Polls (on this thread: the test runtime's timers need its workers)
    /// until a token's verification waits for the replay cache's lock.
    fn until_a_verification_waits(&self) {
        let ino = std::fs::metadata(self.replay_cache()).unwrap().ino();
        let waits = (0..200).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            someone_waits_for_lock(ino)
        });
        assert!(
            waits,
            "a token's verification waits for the replay cache's lock"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_cache_held_locked_stalls_only_token_verification() {
    // More waiting verifications than the test runtime has workers, and
    // than the controller verifies at once.
    let waiting = std::thread::available_parallelism().map_or(2, usize::from) + 2;
    let mut v = Verifying::start(waiting + 1).await;
    let node = v.first_call().await;

    let held = lock(&v.replay_cache());
    let calls: Vec<_> = std::mem::take(&mut v.tokens)
        .into_iter()
        .map(|t| {
            let mut node = node.clone();
            tokio::spawn(async move { node.heartbeat(heartbeat(Some(&t))).await })
        })
        .collect();
    v.until_a_verification_waits();

    // A call that needs no verification is answered meanwhile (refused:
    // it carries no token).
    assert_eq!(
        tokenless_call(v.controller.addr, Duration::from_secs(5))
            .expect("a call without a token is answered while tokens wait for the replay cache"),
        tonic::Code::Unauthenticated
    );
    assert!(
        calls.iter().all(|c| !c.is_finished()),
        "the tokens' verification waits for the replay cache's lock"
    );

    drop(held);
    for call in calls {
        tokio::time::timeout(Duration::from_secs(20), call)
            .await
            .expect("verified once the lock is released")
            .unwrap()
            .expect("a node's heartbeat with its token");
    }
    v.controller.stop().await;
}

/// A verification held up past its limit (10 s) is answered
/// `Unavailable` with the reason `CONTROLLER_UNAVAILABLE`, which tells the
/// node to try again, and the next token is verified once the cache's
/// lock is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verification_held_up_past_its_limit_is_answered_unavailable() {
    let mut v = Verifying::start(3).await;
    let node = v.first_call().await;

    let held = lock(&v.replay_cache());
    let token = v.tokens.pop().unwrap();
    let call = {
        let mut node = node.clone();
        tokio::spawn(async move { node.heartbeat(heartbeat(Some(&token))).await })
    };
    v.until_a_verification_waits();
    let status = tokio::time::timeout(Duration::from_secs(30), call)
        .await
        .expect("answered within the verification's limit")
        .unwrap()
        .expect_err("not verified while the replay cache is held");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(
        kcred_proto::reason::reason_of(&status),
        Some(kcred_proto::kcred::v1::Reason::ControllerUnavailable),
        "{status:?}"
    );

    drop(held);
    let retry = v.tokens.pop().unwrap();
    tokio::time::timeout(
        Duration::from_secs(20),
        node.clone().heartbeat(heartbeat(Some(&retry))),
    )
    .await
    .expect("verified once the lock is released")
    .expect("a node's heartbeat with its token");
    v.controller.stop().await;
}
