//! Issue 3: tickets, certificates and encryption keys beside keytabs, each
//! proven with the real tools (klist, kvno, openssl), renewed in place, and
//! governed by the role-account policy.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use kcred_controller::kdc::Ticket;
use kcred_keys::{open_with_any, parse_pod_file, seal_with_primary};
use kcred_tests::{Stack, StackOptions, TestPod};
use tonic::Code;
use zeroize::Zeroizing;

const VOL: &str = "kcred";

fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn sans(cert: &Path) -> Vec<String> {
    let (ok, out) = openssl(&[
        "x509",
        "-in",
        &cert.to_string_lossy(),
        "-noout",
        "-ext",
        "subjectAltName",
    ]);
    assert!(ok, "{out}");
    let mut names: Vec<String> = out
        .split([',', '\n'])
        .filter_map(|s| s.trim().strip_prefix("DNS:").map(str::to_string))
        .collect();
    names.sort();
    names
}

fn key_matches_cert(cert: &Path, key: &Path) -> bool {
    let (a, pub_cert) = openssl(&["x509", "-in", &cert.to_string_lossy(), "-noout", "-pubkey"]);
    let (b, pub_key) = openssl(&["pkey", "-in", &key.to_string_lossy(), "-pubout"]);
    a && b && pub_cert == pub_key
}

/// `kvno` with a private copy of a delivered cache (kvno writes into it).
fn kvno_with(stack: &Stack, ccache: &Path, service: &str) -> (bool, String) {
    let copy = stack.dir.path().join(format!("cc-copy-{}", rand_suffix()));
    std::fs::copy(ccache, &copy).expect("copy ccache");
    let out = stack
        .realm
        .command("kvno")
        .env("KRB5CCNAME", format!("FILE:{}", copy.display()))
        .arg(service)
        .output()
        .expect("kvno");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn ticket_of(path: &Path) -> Ticket {
    Ticket::parse(Zeroizing::new(std::fs::read(path).expect("read ccache"))).expect("valid ccache")
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_prestashed_ticket_is_delivered_and_gets_service_tickets() {
    let stack = Stack::start(StackOptions::default()).await.expect("stack");
    let pod = TestPod::new("web", "web-0", "node-a").annotate("kcred.io/tickets", "websvc");
    stack.add_pod(&pod);
    let target = stack.kubelet.publish(&pod, VOL).await.expect("publish");

    let cc = target.join("krb5cc");
    let klist = stack
        .realm
        .command("klist")
        .args(["-f", "-c"])
        .arg(format!("FILE:{}", cc.display()))
        .output()
        .expect("klist");
    let listing = String::from_utf8_lossy(&klist.stdout);
    assert!(klist.status.success(), "{listing}");
    assert!(
        listing.contains("Default principal: websvc@KCRED.TEST"),
        "{listing}"
    );
    let flags = listing
        .split("Flags: ")
        .nth(1)
        .and_then(|f| f.split_whitespace().next())
        .unwrap_or_default();
    assert!(
        flags.contains('F') && flags.contains('R'),
        "forwardable and renewable: {listing}"
    );
    let (ok, out) = kvno_with(&stack, &cc, "HTTP/web.example.com");
    assert!(ok, "kvno with the delivered cache: {out}");
    // Never the long-term key.
    assert!(!target.join("krb5.keytab").exists());
    let meta = std::fs::metadata(&cc).expect("stat");
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (1500, 1500, 0o400)
    );
    stack.shutdown().await.expect("shutdown");
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_certificate_verifies_with_exactly_the_entitled_names() {
    let stack = Stack::start(StackOptions::default()).await.expect("stack");
    let pod = TestPod::new("web", "web-0", "node-a")
        .annotate("kcred.io/certs", "web.example.com, api.example.com");
    stack.add_pod(&pod);
    let target = stack.kubelet.publish(&pod, VOL).await.expect("publish");

    let (crt, ca, key) = (
        target.join("tls.crt"),
        target.join("ca.crt"),
        target.join("tls.key"),
    );
    let (ok, out) = openssl(&[
        "verify",
        "-CAfile",
        &ca.to_string_lossy(),
        &crt.to_string_lossy(),
    ]);
    assert!(ok && out.contains("OK"), "{out}");
    assert_eq!(sans(&crt), vec!["api.example.com", "web.example.com"]);
    assert!(key_matches_cert(&crt, &key));
    assert_eq!(std::fs::metadata(&key).expect("stat").mode() & 0o777, 0o400);

    let greedy = TestPod::new("web", "web-1", "node-a")
        .annotate("kcred.io/certs", "web.example.com, evil.example.com");
    stack.add_pod(&greedy);
    let err = stack
        .kubelet
        .publish(&greedy, VOL)
        .await
        .expect_err("not entitled");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("rule certificates") && err.message().contains("evil.example.com"),
        "{}",
        err.message()
    );
    stack.shutdown().await.expect("shutdown");
}

#[tokio::test]
#[ignore = "needs root"]
async fn data_encrypted_by_one_pod_is_decrypted_by_another() {
    let stack = Stack::start(StackOptions::default()).await.expect("stack");
    let a = TestPod::new("web", "web-0", "node-a").annotate("kcred.io/keys", "orders-db");
    let b = TestPod::new("web", "web-1", "node-a").annotate("kcred.io/keys", "orders-db");
    stack.add_pod(&a);
    stack.add_pod(&b);
    let ta = stack.kubelet.publish(&a, VOL).await.expect("publish a");
    let tb = stack.kubelet.publish(&b, VOL).await.expect("publish b");

    let fa = parse_pod_file(&std::fs::read(ta.join("orders-db.keys.json")).expect("read"))
        .expect("pod file a");
    let fb = parse_pod_file(&std::fs::read(tb.join("orders-db.keys.json")).expect("read"))
        .expect("pod file b");
    assert_eq!(
        fa.keys.iter().filter(|k| k.primary).count(),
        1,
        "exactly one primary"
    );
    let sealed = seal_with_primary(&fa, b"order 4711: 3 widgets", b"orders").expect("seal");
    let opened = open_with_any(&fb, &sealed, b"orders").expect("the other pod opens it");
    assert_eq!(opened.as_slice(), b"order 4711: 3 widgets");

    let db = TestPod::new("db", "db-0", "node-a").annotate("kcred.io/keys", "orders-db");
    stack.add_pod(&db);
    let err = stack
        .kubelet
        .publish(&db, VOL)
        .await
        .expect_err("not granted");
    assert!(err.message().contains("rule keys"), "{}", err.message());
    stack.shutdown().await.expect("shutdown");
}

#[tokio::test]
#[ignore = "needs root"]
async fn several_kinds_land_together_owned_by_the_pods_fs_group() {
    let stack = Stack::start(StackOptions::default()).await.expect("stack");
    let mut pod = TestPod::new("web", "web-0", "node-a")
        .annotate("kcred.io/keytabs", "HTTP/web.example.com")
        .annotate("kcred.io/tickets", "websvc")
        .annotate("kcred.io/certs", "web.example.com")
        .annotate("kcred.io/keys", "orders-db");
    pod.fs_group = Some(3000);
    stack.add_pod(&pod);
    let target = stack.kubelet.publish(&pod, VOL).await.expect("publish");

    let mut names: Vec<String> = std::fs::read_dir(&target)
        .expect("ls")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with(".."))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "ca.crt",
            "krb5.conf",
            "krb5.keytab",
            "krb5cc",
            "orders-db.keys.json",
            "tls.crt",
            "tls.key"
        ]
    );
    for secret in ["krb5.keytab", "krb5cc", "tls.key", "orders-db.keys.json"] {
        let m = std::fs::metadata(target.join(secret)).expect("stat");
        assert_eq!(
            (m.uid(), m.gid(), m.mode() & 0o777),
            (1500, 3000, 0o440),
            "{secret}"
        );
    }
    assert_eq!(
        std::fs::metadata(&target).expect("stat").gid(),
        3000,
        "mount root group"
    );
    stack
        .realm
        .kinit_keytab(&target.join("krb5.keytab"), "HTTP/web.example.com")
        .expect("kinit");
    assert!(kvno_with(&stack, &target.join("krb5cc"), "HTTP/api.example.com").0);
    stack.shutdown().await.expect("shutdown");
}

#[tokio::test]
#[ignore = "needs root"]
async fn the_policy_reloads_without_restart_and_every_refusal_names_its_rule() {
    let stack = Stack::start(StackOptions::default()).await.expect("stack");
    let other = TestPod::new("web", "web-0", "node-a").annotate("kcred.io/tickets", "dbsvc");
    stack.add_pod(&other);
    let err = stack
        .kubelet
        .publish(&other, VOL)
        .await
        .expect_err("another account's tickets");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("rule tickets"), "{}", err.message());

    let pod = TestPod::new("db", "db-0", "node-a").annotate("kcred.io/certs", "api.example.com");
    stack.add_pod(&pod);
    let err = stack
        .kubelet
        .publish(&pod, VOL)
        .await
        .expect_err("not granted yet");
    assert!(
        err.message().contains("rule certificates"),
        "{}",
        err.message()
    );

    let policy = stack.dir.path().join("policy.toml");
    let text = std::fs::read_to_string(&policy).expect("read policy")
        .replace("service_principals = [\"postgres/db1.example.com\"]", "service_principals = [\"postgres/db1.example.com\"]\ncertificates = [\"api.example.com\"]");
    std::fs::write(&policy, text).expect("write policy");
    let deadline = Instant::now() + Duration::from_secs(10);
    let target = loop {
        match stack.kubelet.publish(&pod, VOL).await {
            Ok(t) => break t,
            Err(e) if Instant::now() < deadline && e.code() == Code::PermissionDenied => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => panic!("policy was not reloaded: {e:?}"),
        }
    };
    assert_eq!(sans(&target.join("tls.crt")), vec!["api.example.com"]);
    let m = std::fs::metadata(target.join("tls.key")).expect("stat");
    assert_eq!((m.uid(), m.gid()), (1600, 1600), "owned by dbsvc");
    stack.shutdown().await.expect("shutdown");
}

/// What a reader saw in one generation, read through `..data` once.
struct Seen {
    cert: String,
    key: String,
}

fn read_generation(target: &Path) -> Option<Seen> {
    let generation = std::fs::read_link(target.join("..data")).ok()?;
    let dir = target.join(generation);
    let cert = std::fs::read_to_string(dir.join("tls.crt")).ok()?;
    let key = std::fs::read_to_string(dir.join("tls.key")).ok()?;
    let cc = std::fs::read(dir.join("krb5cc")).ok()?;
    // A generation that vanished between readlink and read is retried; what
    // was read must be whole.
    assert!(
        cert.starts_with("-----BEGIN CERTIFICATE-----")
            && cert.ends_with("-----END CERTIFICATE-----\n"),
        "partial tls.crt"
    );
    assert!(
        key.starts_with("-----BEGIN PRIVATE KEY-----")
            && key.ends_with("-----END PRIVATE KEY-----\n"),
        "partial tls.key"
    );
    Ticket::parse(Zeroizing::new(cc)).expect("partial krb5cc");
    Some(Seen { cert, key })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn renewals_replace_files_atomically_in_every_volume_while_readers_read() {
    // Tickets live 10 s and certificates 60 s (plus 60 s back-dating): at
    // refresh_fraction 0.55 both are renewed about 6 s after issue.
    let stack = Stack::start(StackOptions {
        top_config: "refresh_fraction = 0.55".into(),
        extra_config: "[tickets]\nlifetime_secs = 10\nrenew_lifetime_secs = 3600\n\n[certs]\nlifetime_secs = 60\n".into(),
        ..StackOptions::default()
    })
    .await
    .expect("stack");
    let pods: Vec<TestPod> = (0..2)
        .map(|i| {
            TestPod::new("web", &format!("web-{i}"), "node-a")
                .annotate("kcred.io/tickets", "websvc")
                .annotate("kcred.io/certs", "web.example.com")
        })
        .collect();
    let mut targets = Vec::new();
    for p in &pods {
        stack.add_pod(p);
        targets.push(stack.kubelet.publish(p, VOL).await.expect("publish"));
    }
    let first_ticket = ticket_of(&targets[0].join("krb5cc"));
    let first_cert = std::fs::read_to_string(targets[0].join("tls.crt")).expect("read");

    let reader_target = targets[0].clone();
    let reader = std::thread::spawn(move || {
        let mut pairs = std::collections::BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut reads = 0u32;
        while Instant::now() < deadline && reads < 200_000 {
            if let Some(seen) = read_generation(&reader_target) {
                reads += 1;
                pairs.insert(seen.cert, seen.key);
                if pairs.len() >= 2 && reads > 1000 {
                    break;
                }
            }
        }
        (pairs, reads)
    });

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let t = ticket_of(&targets[0].join("krb5cc"));
        let c = std::fs::read_to_string(targets[0].join("tls.crt")).expect("read");
        if t.end > first_ticket.end && c != first_cert {
            break;
        }
        assert!(Instant::now() < deadline, "no renewal within 20 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (pairs, reads) = reader.join().expect("reader");
    assert!(reads > 0);
    // Every pair the reader saw was a matching certificate and key.
    for (i, (cert, key)) in pairs.iter().enumerate() {
        let c = stack.dir.path().join(format!("seen-{i}.crt"));
        let k = stack.dir.path().join(format!("seen-{i}.key"));
        std::fs::write(&c, cert).expect("write");
        std::fs::write(&k, key).expect("write");
        assert!(
            key_matches_cert(&c, &k),
            "reader saw a certificate with another generation's key"
        );
    }

    let renewed = ticket_of(&targets[0].join("krb5cc"));
    assert_eq!(
        renewed.renew_till, first_ticket.renew_till,
        "renewed, not re-acquired"
    );
    assert!(kvno_with(&stack, &targets[0].join("krb5cc"), "HTTP/web.example.com").0);
    let (ok, out) = openssl(&[
        "verify",
        "-CAfile",
        &targets[0].join("ca.crt").to_string_lossy(),
        &targets[0].join("tls.crt").to_string_lossy(),
    ]);
    assert!(ok, "{out}");
    // The renewed cache reached the other volume too.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read(targets[1].join("krb5cc")).expect("read")
        != std::fs::read(targets[0].join("krb5cc")).expect("read")
    {
        assert!(
            Instant::now() < deadline,
            "second volume never got the renewed ticket"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stack.shutdown().await.expect("shutdown");
}
