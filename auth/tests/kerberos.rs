//! End-to-end tests against a real MIT KDC, one throwaway realm per test.
//!
//! The initiator always runs in a child process (`kcred-auth-probe token`)
//! whose environment carries that realm's `KRB5_CONFIG`: MIT only reads the
//! KDC's location from the environment, and parallel tests each have their
//! own realm, so it must never be set in this process. The acceptor runs in
//! this process with no Kerberos environment at all, as it must in the
//! controller.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Barrier};

use kcred_auth::{Acceptor, AuthError, from_metadata_value, to_metadata_value};
use kcred_testrealm::Realm;

const PROBE: &str = env!("CARGO_BIN_EXE_kcred-auth-probe");
const NODE: &str = "host/node-a.example.com";
const CONTROLLER: &str = "kcred/controller.example.com";
const SERVICE: &str = "kcred@controller.example.com";

/// A realm with a node and the controller, each with its keytab.
struct Fixture {
    realm: Realm,
    node_keytab: PathBuf,
    controller_keytab: PathBuf,
}

impl Fixture {
    fn start() -> Fixture {
        let realm = Realm::start().expect("start realm");
        let node_keytab = realm.dir().join("node.keytab");
        let controller_keytab = realm.dir().join("controller.keytab");
        for (principal, keytab) in [(NODE, &node_keytab), (CONTROLLER, &controller_keytab)] {
            realm.add_principal(principal).expect("add principal");
            realm
                .extract_keytab(principal, keytab)
                .expect("extract keytab");
        }
        Fixture {
            realm,
            node_keytab,
            controller_keytab,
        }
    }

    fn node_principal(&self) -> String {
        format!("{NODE}@{}", self.realm.name())
    }

    /// A replay cache private to this test, so parallel tests never share one.
    fn acceptor(&self) -> Acceptor {
        Acceptor::with_replay_cache(&self.controller_keytab, &self.realm.dir().join("rcache"))
            .expect("acceptor")
    }

    /// Runs the initiator in a child configured for this realm only.
    fn run_initiator(
        &self,
        keytab: &Path,
        principal: &str,
        service: &str,
        count: u32,
        threads: u32,
    ) -> Output {
        let mut cmd = self.realm.command(PROBE);
        // Point the variables the library must NOT depend on at nothing, so a
        // success proves the credential store is what selects keytab and cache.
        cmd.env("KRB5CCNAME", "FILE:/nonexistent/kcred-ccache")
            .env("KRB5_CLIENT_KTNAME", "FILE:/nonexistent/kcred-keytab")
            .env("KRB5_KTNAME", "FILE:/nonexistent/kcred-keytab")
            .args(["token", &keytab.display().to_string(), principal, service])
            .args([count.to_string(), threads.to_string()])
            .stdin(Stdio::null());
        cmd.output().expect("run kcred-auth-probe token")
    }

    /// `count` node tokens for `service`, as metadata values.
    fn tokens(&self, service: &str, count: u32) -> Vec<String> {
        self.tokens_from_threads(service, count, 1)
    }

    /// Like `tokens`, made by `threads` threads sharing one initiator.
    fn tokens_from_threads(&self, service: &str, count: u32, threads: u32) -> Vec<String> {
        let principal = self.node_principal();
        let out = self.run_initiator(&self.node_keytab, &principal, service, count, threads);
        assert!(
            out.status.success(),
            "initiator failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<String> = String::from_utf8(out.stdout)
            .expect("utf-8 output")
            .lines()
            .map(str::to_string)
            .collect();
        assert_eq!(lines.len(), count as usize);
        lines
    }
}

/// Runs the probe's acceptor (`cmd`, set up for its environment) on
/// `tokens`, one per line, with its own replay cache.
fn accept_in_child(fx: &Fixture, mut cmd: Command, tokens: &[&str]) -> Output {
    let mut child = cmd
        .args(["accept", &fx.controller_keytab.display().to_string()])
        .arg(fx.realm.dir().join("child.rcache"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kcred-auth-probe accept");
    let mut stdin = child.stdin.take().expect("stdin");
    writeln!(stdin, "{}", tokens.join("\n")).expect("write tokens");
    drop(stdin);
    child.wait_with_output().expect("acceptor")
}

fn decode(value: &str) -> Vec<u8> {
    from_metadata_value(value).expect("well-formed metadata")
}

/// Counts the opens of the realm's `krb5.conf` while `run` runs.
fn krb5_conf_opens(fx: &Fixture, run: impl FnOnce()) -> usize {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK).expect("inotify");
    // Closes too: the kernel merges an event into an identical one still
    // unread, so only alternating events count every open.
    inotify
        .add_watch(
            &fx.realm.krb5_conf_path(),
            AddWatchFlags::IN_OPEN | AddWatchFlags::IN_CLOSE_NOWRITE,
        )
        .expect("watch krb5.conf");
    run();
    let mut opens = 0;
    while let Ok(events) = inotify.read_events() {
        if events.is_empty() {
            break;
        }
        opens += events
            .iter()
            .filter(|e| e.mask.contains(AddWatchFlags::IN_OPEN))
            .count();
    }
    opens
}

#[test]
fn later_tokens_do_not_read_krb5_conf_again() {
    let fx = Fixture::start();
    const TOKENS: u32 = 100;
    let opens = krb5_conf_opens(&fx, || {
        fx.tokens(SERVICE, TOKENS);
    });
    // Setting up the identity and the first token read it a few times;
    // parsed again for every token, it is opened twice per token.
    assert!(
        (1..20).contains(&opens),
        "krb5.conf opened {opens} times for {TOKENS} tokens made"
    );
    // The controller's side, in a child configured for the realm as the
    // initiator is: parsed again for every token, twice per token.
    let tokens = fx.tokens(SERVICE, TOKENS);
    let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let opens = krb5_conf_opens(&fx, || {
        let out = accept_in_child(&fx, fx.realm.command(PROBE), &tokens);
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
    assert!(
        (1..20).contains(&opens),
        "krb5.conf opened {opens} times for {TOKENS} tokens accepted"
    );
}

#[test]
fn node_token_is_accepted_as_its_host_principal() {
    let fx = Fixture::start();
    let acceptor = fx.acceptor();
    let tokens = fx.tokens(SERVICE, 2);
    for value in &tokens {
        assert_eq!(
            acceptor.accept(&decode(value)).unwrap(),
            fx.node_principal()
        );
    }
    assert_ne!(tokens[0], tokens[1], "each call must make a fresh token");
    // Naming the controller by principal (no host-based canonicalization).
    let by_principal = format!("{CONTROLLER}@{}", fx.realm.name());
    let value = &fx.tokens(&by_principal, 1)[0];
    assert_eq!(
        acceptor.accept(&decode(value)).unwrap(),
        fx.node_principal()
    );
}

#[test]
fn replayed_token_is_refused() {
    let fx = Fixture::start();
    let token = decode(&fx.tokens(SERVICE, 1)[0]);
    let acceptor = fx.acceptor();
    assert_eq!(acceptor.accept(&token).unwrap(), fx.node_principal());
    let err = acceptor.accept(&token).unwrap_err();
    assert!(matches!(err, AuthError::Replay), "{err}");
    println!("replay: {err}");
    // A restarted controller using the same replay cache file refuses it too.
    drop(acceptor);
    let err = fx.acceptor().accept(&token).unwrap_err();
    assert!(matches!(err, AuthError::Replay), "{err}");
    // The cache really is the file we named (not MIT's shared default), and
    // it is all replay detection knows: an acceptor with another file (think
    // another replica) accepts the same token once.
    assert!(fx.realm.dir().join("rcache").is_file());
    let other = fx.realm.dir().join("other-rcache");
    let replica = Acceptor::with_replay_cache(&fx.controller_keytab, &other).unwrap();
    assert_eq!(replica.accept(&token).unwrap(), fx.node_principal());
    assert!(matches!(replica.accept(&token), Err(AuthError::Replay)));
}

#[test]
fn concurrent_replays_are_accepted_exactly_once() {
    let fx = Fixture::start();
    let tokens: Vec<Vec<u8>> = fx.tokens(SERVICE, 5).iter().map(|v| decode(v)).collect();
    let acceptor = Arc::new(fx.acceptor());
    const THREADS: usize = 4;
    for token in tokens {
        let token = Arc::new(token);
        let barrier = Arc::new(Barrier::new(THREADS));
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let (acceptor, token, barrier) = (acceptor.clone(), token.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    acceptor.accept(&token)
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(ok, 1, "one token accepted {ok} times: {results:?}");
        for r in results.iter().filter(|r| r.is_err()) {
            assert!(matches!(r, Err(AuthError::Replay)), "{r:?}");
        }
    }
}

#[test]
fn initiator_shared_by_threads_makes_distinct_valid_tokens() {
    let fx = Fixture::start();
    let values = fx.tokens_from_threads(SERVICE, 100, 4);
    let distinct: std::collections::HashSet<&String> = values.iter().collect();
    assert_eq!(distinct.len(), values.len(), "a token was produced twice");
    let acceptor = fx.acceptor();
    for value in &values {
        assert_eq!(
            acceptor.accept(&decode(value)).unwrap(),
            fx.node_principal()
        );
    }
}

#[test]
fn initiator_for_a_principal_missing_from_its_keytab_fails() {
    let fx = Fixture::start();
    fx.realm.add_principal("host/node-b.example.com").unwrap();
    let other = format!("host/node-b.example.com@{}", fx.realm.name());
    let out = fx.run_initiator(&fx.node_keytab, &other, SERVICE, 1, 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "node-a's keytab spoke as node-b");
    assert!(stderr.contains("node-b"), "{stderr}");
    assert!(
        stderr.contains("holds no key for this principal"),
        "{stderr}"
    );
    println!("wrong principal: {stderr}");
}

#[test]
fn token_for_another_service_is_refused() {
    let fx = Fixture::start();
    fx.realm.add_principal("kcred/other.example.com").unwrap();
    let token = decode(&fx.tokens("kcred@other.example.com", 1)[0]);
    let err = fx.acceptor().accept(&token).unwrap_err();
    assert!(matches!(err, AuthError::Rejected(_)), "{err}");
    println!("other service: {err}");
}

#[test]
fn garbage_tokens_are_refused() {
    let fx = Fixture::start();
    let acceptor = fx.acceptor();
    for token in [
        &b""[..],
        b"x",
        &[0x60, 0x82, 0x02, 0x00, 0x06, 0x09][..],
        &[0u8; 512][..],
    ] {
        let err = acceptor.accept(token).unwrap_err();
        assert!(matches!(err, AuthError::Rejected(_)), "{err}");
        println!("garbage: {err}");
    }
    // A real token with one byte flipped in the encrypted part.
    let mut token = decode(&fx.tokens(SERVICE, 1)[0]);
    let n = token.len();
    token[n - 10] ^= 0x55;
    let err = acceptor.accept(&token).unwrap_err();
    assert!(matches!(err, AuthError::Rejected(_)), "{err}");
    println!("tampered: {err}");
    // Broken metadata never reaches the acceptor and says why.
    for value in ["Negotiate !!!not-base64", "Bearer abc", "Negotiate", ""] {
        let err = from_metadata_value(value).unwrap_err();
        assert!(matches!(err, AuthError::Metadata(_)), "{err}");
    }
    // And a well-formed value round-trips to the same bytes.
    assert_eq!(decode(&to_metadata_value(b"abc")), b"abc");
}

#[test]
fn acceptor_without_its_keytab_fails_clearly() {
    let dir = std::env::temp_dir().join(format!("kcred-auth-missing-{}", std::process::id()));
    let err = Acceptor::new(&dir.join("missing.keytab")).unwrap_err();
    assert!(matches!(err, AuthError::Credentials { .. }), "{err}");
    assert!(err.to_string().contains("missing.keytab"), "{err}");
    println!("missing keytab: {err}");
}

#[test]
fn stale_node_keytab_cannot_make_tokens() {
    let fx = Fixture::start();
    fx.realm.randomize_key(NODE).unwrap();
    let out = fx.run_initiator(&fx.node_keytab, &fx.node_principal(), SERVICE, 1, 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "stale keytab produced a token");
    assert!(out.stdout.is_empty());
    assert!(stderr.contains(NODE), "{stderr}");
    println!("stale keytab: {stderr}");
}

#[test]
fn initiator_without_a_reachable_kdc_fails() {
    let mut fx = Fixture::start();
    fx.realm.stop_kdc().unwrap();
    let out = fx.run_initiator(&fx.node_keytab, &fx.node_principal(), SERVICE, 1, 1);
    assert!(!out.status.success(), "token made without a KDC");
    println!("no KDC: {}", String::from_utf8_lossy(&out.stderr));
}

/// The acceptor in a child with an empty environment and a krb5.conf that
/// does not exist: verification must need neither.
#[test]
fn acceptor_needs_no_kerberos_environment() {
    let fx = Fixture::start();
    let tokens = fx.tokens(SERVICE, 2);
    let mut cmd = Command::new(PROBE);
    cmd.env_clear().env("KRB5_CONFIG", "/nonexistent/krb5.conf");
    let out = accept_in_child(&fx, cmd, &[&tokens[0], &tokens[1], &tokens[0]]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let ok = format!("ok {}", fx.node_principal());
    assert_eq!(
        lines.len(),
        3,
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(lines[0], ok);
    assert_eq!(lines[1], ok);
    assert!(
        lines[2].starts_with("refused") && lines[2].contains("replay"),
        "{stdout}"
    );
}
