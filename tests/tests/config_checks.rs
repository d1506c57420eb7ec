//! Mistakes found before anything runs. `kcred-controller check-config`,
//! run as an operator runs it: a good configuration passes, and each kind
//! of mistake is named with its setting and exits with its documented code
//! (3 invalid, 4 file, 5 unreachable). The node driver, given settings
//! that can never work, exits at once naming the flag instead of retrying.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use kcred_testrealm::{DEFAULT_REALM, Realm, RealmOptions};
use kcred_tests::procs::binary;

/// A realm and a complete controller configuration on disk.
struct Setup {
    realm: Realm,
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let realm = Realm::start().unwrap();
        realm.add_principal("kcred/controller.kcred.test").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        realm
            .extract_keytab("kcred/controller.kcred.test", &d.join("controller.keytab"))
            .unwrap();
        let out = Command::new(binary("kcred-controller"))
            .arg("generate-master-key")
            .arg(d.join("master.key"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        std::fs::write(d.join("policy.toml"), kcred_tests::stack::DEFAULT_POLICY).unwrap();
        std::fs::write(d.join("pods.toml"), "").unwrap();
        let me = Setup { realm, dir };
        me.write_config(&me.realm.krb5_conf_path(), "pods_file = \"pods.toml\"");
        me
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write_config(&self, krb5_conf: &Path, pod_source: &str) {
        let d = self.path().display();
        let pod_source = pod_source.replace("pods.toml", &format!("{d}/pods.toml"));
        std::fs::write(
            self.path().join("controller.toml"),
            format!(
                r#"listen = "127.0.0.1:0"
realm = "{DEFAULT_REALM}"
krb5_config = "{krb5}"
master_key_file = "{d}/master.key"
store_path = "{d}/store.redb"
policy_file = "{d}/policy.toml"
audit_log = "{d}/audit.log"
audit_key = "{d}/audit.key"
{pod_source}

[kadmin]
principal = "{admin}"
keytab = "{admin_keytab}"
work_dir = "{d}/extract"
timeout_secs = 10

[auth]
mode = "kerberos"
keytab = "{d}/controller.keytab"
"#,
                krb5 = krb5_conf.display(),
                admin = self.realm.admin_principal(),
                admin_keytab = self.realm.admin_keytab().display(),
            ),
        )
        .unwrap();
    }

    /// Runs `check-config`: exit code and output.
    fn check(&self, args: &[&str]) -> (i32, String) {
        let out = Command::new(binary("kcred-controller"))
            .arg("check-config")
            .arg("--config")
            .arg(self.path().join("controller.toml"))
            .args(args)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    fn chmod(&self, path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

/// A line of the report about `setting` with `status`.
fn line<'a>(report: &'a str, status: &str, setting: &str) -> Option<&'a str> {
    report
        .lines()
        .find(|l| l.starts_with(status) && l.contains(&format!(" {setting}: ")))
}

#[test]
fn a_good_configuration_passes_every_check_and_reaches_kadmind_and_the_kdc() {
    let s = Setup::new();
    let (code, report) = s.check(&["--reach"]);
    assert_eq!(code, 0, "{report}");
    for setting in [
        "config",
        "policy_file",
        "pods_file",
        "master_key_file",
        "kadmin.keytab",
        "auth.keytab",
        "kdc",
        "kadmin",
    ] {
        assert!(
            line(&report, "ok", setting).is_some(),
            "{setting}: {report}"
        );
    }
    assert!(report.contains("2 role accounts"), "{report}");
    assert!(!report.contains("invalid") && !report.contains("unreachable"));
}

#[test]
fn an_invalid_configuration_exits_3_and_names_the_setting() {
    let s = Setup::new();
    s.write_config(&s.realm.krb5_conf_path(), "");
    let (code, report) = s.check(&[]);
    assert_eq!(code, 3, "{report}");
    let l = line(&report, "invalid", "config").expect(&report);
    assert!(l.contains("no pod source"), "{l}");
}

#[test]
fn an_invalid_policy_exits_3_and_names_the_policy_file() {
    let s = Setup::new();
    std::fs::write(
        s.path().join("policy.toml"),
        "[[role_accounts]]\nlogin = \"x\"\n",
    )
    .unwrap();
    let (code, report) = s.check(&[]);
    assert_eq!(code, 3, "{report}");
    let l = line(&report, "invalid", "policy_file").expect(&report);
    assert!(l.contains("policy.toml"), "{l}");
    // The rest is still checked.
    assert!(line(&report, "ok", "master_key_file").is_some(), "{report}");
}

#[test]
fn keys_and_keytabs_others_can_read_exit_4_and_say_how_to_fix_it() {
    let s = Setup::new();
    s.chmod(&s.path().join("master.key"), 0o644);
    s.chmod(&s.path().join("controller.keytab"), 0o640);
    let (code, report) = s.check(&[]);
    assert_eq!(code, 4, "{report}");
    for setting in ["master_key_file", "auth.keytab"] {
        let l = line(&report, "file", setting).expect(&report);
        assert!(l.contains("chmod 600"), "{l}");
    }
    assert!(
        line(&report, "file", "master_key_file")
            .unwrap()
            .contains("mode 644")
    );
}

#[test]
fn a_further_realm_is_checked_like_the_controllers_own_and_named_in_the_report() {
    let s = Setup::new();
    let mut other = Realm::start_with(RealmOptions {
        realm: "OTHER.TEST".into(),
        ..RealmOptions::default()
    })
    .unwrap();
    let keytab = s.path().join("other-admin.keytab");
    std::fs::copy(other.admin_keytab(), &keytab).unwrap();
    s.chmod(&keytab, 0o600);
    let path = s.path().join("controller.toml");
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "krb5_config",
        &format!("kdcs = [\"{}\"]\nkrb5_config", s.realm.kdc_addr()),
        1,
    );
    let entry = format!(
        "\n[[realms]]\nname = \"OTHER.TEST\"\nkdcs = [\"{}\"]\n[realms.kadmin]\n\
         principal = \"{}\"\nkeytab = \"{}\"\nadmin_server = \"{}\"\n",
        other.kdc_addr(),
        other.admin_principal(),
        keytab.display(),
        other.kadmind_addr(),
    );
    std::fs::write(&path, format!("{text}{entry}")).unwrap();
    let at = |setting: &str| format!("realms[\"OTHER.TEST\"].{setting}");
    let (code, report) = s.check(&["--reach"]);
    assert_eq!(code, 0, "{report}");
    for setting in ["kadmin.keytab", "kdc", "kadmin"] {
        assert!(line(&report, "ok", &at(setting)).is_some(), "{report}");
    }
    assert!(line(&report, "ok", "kadmin").is_some(), "{report}");

    other.stop_kadmind().unwrap();
    let (code, report) = s.check(&["--reach"]);
    assert_eq!(code, 5, "{report}");
    assert!(
        line(&report, "unreachable", &at("kadmin")).is_some(),
        "{report}"
    );
    assert!(
        line(&report, "ok", "kadmin").is_some(),
        "the own realm's is fine: {report}"
    );

    s.chmod(&keytab, 0o644);
    let (code, report) = s.check(&[]);
    assert_eq!(code, 4, "{report}");
    let l = line(&report, "file", &at("kadmin.keytab")).expect(&report);
    assert!(l.contains("chmod 600"), "{l}");
}

#[test]
fn a_missing_file_exits_4_but_an_invalid_policy_besides_it_wins_with_3() {
    let s = Setup::new();
    std::fs::remove_file(s.path().join("pods.toml")).unwrap();
    let (code, report) = s.check(&[]);
    assert_eq!(code, 4, "{report}");
    let l = line(&report, "file", "pods_file").expect(&report);
    assert!(l.contains("No such file"), "{l}");

    std::fs::write(s.path().join("policy.toml"), "not toml [").unwrap();
    let (code, report) = s.check(&[]);
    assert_eq!(code, 3, "the most basic problem sets the code: {report}");
}

#[test]
fn an_unreachable_kdc_and_kadmind_exit_5() {
    let s = Setup::new();
    // The same realm at addresses where nothing listens.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let conf = std::fs::read_to_string(s.realm.krb5_conf_path()).unwrap();
    let redirected: String = conf
        .lines()
        .map(|l| match l.trim().split_once('=') {
            Some((k, _)) if ["kdc", "admin_server", "kpasswd_server"].contains(&k.trim()) => {
                format!("\t\t{} = {closed}\n", k.trim())
            }
            _ => format!("{l}\n"),
        })
        .collect();
    let bad_conf: PathBuf = s.path().join("krb5-elsewhere.conf");
    std::fs::write(&bad_conf, redirected).unwrap();
    s.write_config(&bad_conf, "pods_file = \"pods.toml\"");
    // Without --reach nothing is contacted.
    assert_eq!(s.check(&[]).0, 0);
    let (code, report) = s.check(&["--reach"]);
    assert_eq!(code, 5, "{report}");
    assert!(line(&report, "unreachable", "kdc").is_some(), "{report}");
    assert!(line(&report, "unreachable", "kadmin").is_some(), "{report}");
}

#[test]
fn the_controller_refuses_to_start_with_a_keytab_others_can_read() {
    let s = Setup::new();
    s.chmod(&s.path().join("controller.keytab"), 0o644);
    let out = Command::new(binary("kcred-controller"))
        .args(["serve", "--config"])
        .arg(s.path().join("controller.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("auth.keytab") && err.contains("chmod 600"),
        "{err}"
    );
}

/// Runs the driver with `args` (besides its local paths); it must exit by
/// itself within 30 s. Exit code and output.
fn driver(args: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut child = Command::new(binary("kcred-csi-driver"))
        .arg("--endpoint")
        .arg(d.join("csi.sock"))
        .args(["--node-id", "node-a.kcred.test"])
        .arg("--kubelet-dir")
        .arg(d)
        .arg("--state-dir")
        .arg(d.join("state"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn the_driver_exits_at_once_naming_the_flag_that_can_never_work() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("ca.crt");
    let missing = missing.to_str().unwrap();
    for (args, flag, detail) in [
        (
            &["--controller", "https://127.0.0.1:7420"][..],
            "--ca-file",
            "is https but no --ca-file",
        ),
        (
            &["--controller", "127.0.0.1:7420"][..],
            "--controller",
            "is not a URL",
        ),
        (
            &["--controller", "grpc://127.0.0.1:7420"][..],
            "--controller",
            "neither http nor https",
        ),
        (
            &[
                "--controller",
                "https://127.0.0.1:7420",
                "--ca-file",
                missing,
            ][..],
            "--ca-file",
            "No such file",
        ),
        (
            &["--controller", "http://127.0.0.1:7420", "--keytab", missing][..],
            "--keytab",
            "No such file",
        ),
    ] {
        let (code, text) = driver(args);
        assert!(
            code.is_some_and(|c| c != 0),
            "{args:?} must end the driver with an error, got {code:?}: {text}"
        );
        assert!(
            text.contains(&format!("{flag}: ")) && text.contains(detail),
            "{args:?}: {text}"
        );
    }
}
