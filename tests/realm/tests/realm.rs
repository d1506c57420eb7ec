//! Exercises kcred-testrealm against the real MIT tools.

use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Instant;

use kcred_testrealm::{Realm, RealmError, RealmOptions};

const SERVICE: &str = "HTTP/web.example.com";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `kinit PRINCIPAL` with the password on stdin, into the realm's shared ccache.
fn kinit_password(realm: &Realm, principal: &str, password: &str) -> Output {
    let mut child = realm
        .command("kinit")
        .arg(principal)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kinit");
    child
        .stdin
        .take()
        .expect("kinit stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("write password to kinit");
    child.wait_with_output().expect("wait for kinit")
}

/// Remote `ktadd -norandkey` as the controller does it, with the admin keytab.
fn remote_ktadd(realm: &Realm, out: &Path, principal: &str) -> Output {
    let output = realm
        .command("kadmin")
        .arg("-k")
        .arg("-t")
        .arg(realm.admin_keytab())
        .args(["-p", "kcred/admin", "-q"])
        .arg(format!("ktadd -k {} -norandkey {principal}", out.display()))
        .stdin(Stdio::null())
        .output()
        .expect("run kadmin");
    eprintln!(
        "remote ktadd {principal}: {} stderr={:?}",
        output.status,
        text(&output.stderr)
    );
    output
}

fn process_alive(pid: u32, name: &str) -> bool {
    // A zombie keeps its comm, so "false" also means "reaped". A reused pid
    // would belong to another program, so check the name too.
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|comm| comm.trim() == name)
        .unwrap_or(false)
}

#[test]
fn password_principal_gets_a_tgt() {
    let realm = Realm::start().expect("start realm");
    assert_eq!(realm.name(), "KCRED.TEST");
    let password = "correct horse \"battery\"";
    realm
        .add_principal_with_password("alice", password)
        .expect("add alice");

    let bad = kinit_password(&realm, "alice", "wrong");
    assert!(!bad.status.success(), "kinit accepted a wrong password");

    let ok = kinit_password(&realm, "alice", password);
    assert!(ok.status.success(), "kinit failed: {}", text(&ok.stderr));

    let klist = realm.command("klist").output().expect("run klist");
    let listing = text(&klist.stdout);
    assert!(
        klist.status.success(),
        "klist failed: {}",
        text(&klist.stderr)
    );
    assert!(
        listing.contains("Default principal: alice@KCRED.TEST"),
        "{listing}"
    );
    assert!(
        listing.contains("krbtgt/KCRED.TEST@KCRED.TEST"),
        "{listing}"
    );
    assert!(
        listing.contains(&realm.ccache_path().display().to_string()),
        "klist used another ccache: {listing}"
    );
}

#[test]
fn tickets_are_renewable() {
    let realm = Realm::start().expect("start realm");
    realm
        .add_principal_with_password("bob", "pw")
        .expect("add bob");
    let mut child = realm
        .command("kinit")
        .args(["-r", "3d", "bob"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kinit");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"pw\n")
        .expect("write password");
    let out = child.wait_with_output().expect("wait for kinit");
    assert!(
        out.status.success(),
        "kinit -r failed: {}",
        text(&out.stderr)
    );
    let renew = realm
        .command("kinit")
        .arg("-R")
        .output()
        .expect("run kinit -R");
    assert!(
        renew.status.success(),
        "kinit -R failed: {}",
        text(&renew.stderr)
    );
    let klist = realm.command("klist").output().expect("run klist");
    assert!(
        text(&klist.stdout).contains("renew until"),
        "{}",
        text(&klist.stdout)
    );
}

#[test]
fn admin_keytab_extracts_remotely_without_rotating() {
    let realm = Realm::start().expect("start realm");
    assert_eq!(realm.admin_principal(), "kcred/admin@KCRED.TEST");
    realm.add_principal(SERVICE).expect("add service");
    assert_eq!(realm.kvno(SERVICE).expect("kvno before"), 1);

    let out = realm.dir().join("web.keytab");
    let res = remote_ktadd(&realm, &out, SERVICE);
    assert!(
        res.status.success() && out.exists(),
        "remote ktadd failed: {}{}",
        text(&res.stdout),
        text(&res.stderr)
    );
    realm
        .kinit_keytab(&out, SERVICE)
        .expect("kinit with extracted keytab");
    assert_eq!(realm.kvno(SERVICE).expect("kvno after"), 1);

    // The default ACL covers */*@REALM only: a one-component principal is off limits.
    realm
        .add_principal_with_password("carol", "pw")
        .expect("add carol");
    let denied = realm.dir().join("carol.keytab");
    let res = remote_ktadd(&realm, &denied, "carol");
    assert!(
        !denied.exists(),
        "default ACL let the admin extract carol: {}",
        text(&res.stdout)
    );
    assert!(
        text(&res.stderr).contains("extract-keys"),
        "{}",
        text(&res.stderr)
    );
}

#[test]
fn extra_acl_lines_and_realm_name_apply() {
    let realm = Realm::start_with(RealmOptions {
        realm: "OTHER.TEST".to_string(),
        acl: vec!["kcred/admin@OTHER.TEST e */*/*@OTHER.TEST".to_string()],
        ..RealmOptions::default()
    })
    .expect("start realm");
    assert_eq!(realm.admin_principal(), "kcred/admin@OTHER.TEST");
    let three = "svc/host.example.com/extra";
    realm.add_principal(three).expect("add 3-part principal");
    let out = realm.dir().join("three.keytab");
    let res = remote_ktadd(&realm, &out, three);
    assert!(
        out.exists(),
        "extra ACL line ignored: {}",
        text(&res.stderr)
    );
    realm
        .kinit_keytab(&out, &format!("{three}@OTHER.TEST"))
        .expect("kinit 3-part principal");
}

#[test]
fn kadmin_local_reports_failures() {
    let realm = Realm::start().expect("start realm");
    realm.add_principal(SERVICE).expect("add service");
    let dup = realm
        .add_principal(SERVICE)
        .expect_err("duplicate add succeeded");
    assert!(dup.to_string().contains("already exists"), "{dup}");
    assert!(matches!(
        realm.kvno("nobody"),
        Err(RealmError::Command { .. })
    ));
    assert!(realm.kadmin_local("bogus request").is_err());
    assert!(realm.kadmin_local("addprinc -bogusflag x").is_err());
    let err = realm
        .add_principal_with_password("dave", "secret")
        .and_then(|()| realm.add_principal_with_password("dave", "secret"))
        .expect_err("duplicate add succeeded");
    assert!(
        !err.to_string().contains("secret"),
        "password leaked: {err}"
    );

    realm.randomize_key(SERVICE).expect("randomize");
    assert_eq!(realm.kvno(SERVICE).expect("kvno"), 2);
    realm.delete_principal(SERVICE).expect("delete");
    assert!(realm.kvno(SERVICE).is_err());
}

#[test]
fn parallel_realms_do_not_clash() {
    let handles: Vec<_> = (0..2)
        .map(|i| {
            std::thread::spawn(move || {
                let realm = Realm::start().expect("start realm");
                let principal = format!("svc{i}/host.example.com");
                realm.add_principal(&principal).expect("add principal");
                let kt = realm.dir().join("svc.keytab");
                realm.extract_keytab(&principal, &kt).expect("extract");
                realm.kinit_keytab(&kt, &principal).expect("kinit");
                (
                    realm.kdc_addr(),
                    realm.kadmind_addr(),
                    realm.dir().to_owned(),
                )
            })
        })
        .collect();
    let results: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().expect("realm thread panicked"))
        .collect();
    assert_ne!(results[0].0, results[1].0);
    assert_ne!(results[0].1, results[1].1);
    assert_ne!(results[0].2, results[1].2);
}

#[test]
fn kdc_outage_and_recovery() {
    let mut realm = Realm::start().expect("start realm");
    realm.add_principal(SERVICE).expect("add service");
    let kt = realm.dir().join("web.keytab");
    realm.extract_keytab(SERVICE, &kt).expect("extract");
    realm.kinit_keytab(&kt, SERVICE).expect("kinit while up");

    let old_pid = realm.kdc_pid().expect("kdc pid");
    let addr = realm.kdc_addr();
    realm.stop_kdc().expect("stop kdc");
    assert_eq!(realm.kdc_pid(), None);
    assert!(!process_alive(old_pid, "krb5kdc"), "KDC still running");
    assert!(
        realm.kadmind_pid().is_some(),
        "kadmind stopped with the KDC"
    );
    let err = realm
        .kinit_keytab(&kt, SERVICE)
        .expect_err("kinit worked with the KDC down");
    assert!(matches!(err, RealmError::Command { .. }), "{err}");

    realm.start_kdc().expect("restart kdc");
    assert_eq!(realm.kdc_addr(), addr);
    realm
        .kinit_keytab(&kt, SERVICE)
        .expect("kinit after restart");
}

#[test]
fn start_kdc_reports_a_taken_port() {
    let mut realm = Realm::start().expect("start realm");
    realm.stop_kdc().expect("stop kdc");
    let squatter = std::net::TcpListener::bind(realm.kdc_addr()).expect("bind KDC port");
    let err = realm.start_kdc().expect_err("KDC started on a taken port");
    assert!(
        matches!(err, RealmError::DaemonStart { .. }) && err.to_string().contains("in use"),
        "{err}"
    );
    assert_eq!(realm.kdc_pid(), None);
    drop(squatter);
    realm
        .start_kdc()
        .expect("restart kdc once the port is free");
    assert!(realm.kdc_pid().is_some());
}

#[test]
fn drop_stops_daemons_and_removes_dir() {
    let realm = Realm::start().expect("start realm");
    let kdc = realm.kdc_pid().expect("kdc pid");
    let kadmind = realm.kadmind_pid().expect("kadmind pid");
    let dir = realm.dir().to_owned();
    assert!(process_alive(kdc, "krb5kdc"));
    assert!(process_alive(kadmind, "kadmind"));
    drop(realm);
    assert!(
        !process_alive(kdc, "krb5kdc"),
        "krb5kdc {kdc} survived drop"
    );
    assert!(
        !process_alive(kadmind, "kadmind"),
        "kadmind {kadmind} survived drop"
    );
    assert!(!dir.exists(), "realm dir {} left behind", dir.display());
}

#[test]
fn startup_time() {
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let realm = Realm::start().expect("start realm");
        times.push(t.elapsed());
        drop(realm);
    }
    eprintln!("realm start-up times: {times:?}");
}
