//! Issue 15: the KDC backend is a per-realm choice. One controller serves
//! its own MIT realm and, as `[[realms]]`, a Samba Active Directory domain
//! (or a second MIT realm): each principal's keys come from its realm's
//! backend through its realm's gate, and each volume's `krb5.conf` names
//! the realms of its credentials. Credentials are checked with MIT's
//! `kinit` against each KDC, configured by the delivered `krb5.conf`.

use kcred_tests::{keytab_kvnos, output_text};
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use kcred_controller::gate::Lane;
use kcred_controller::names::ServicePrincipal;
use kcred_testrealm::{Realm, RealmOptions};
use kcred_tests::{Stack, StackOptions, TestPod, wait_until};
use kcred_testsamba::{DomainController, KCRED_BIND_DN, KCRED_OU, REALM as AD, isolate_network};
use tonic::Code;

const VOL: &str = "kcred";
const MIT: &str = kcred_testrealm::DEFAULT_REALM;
/// The AD principal, and the account holding it.
const AD_SPN: &str = "HTTP/adweb.example.com";
const AD_ACCOUNT: &str = "adweb-http";

/// `websvc` (namespace `web`) owns an MIT principal; `adsvc` (namespace
/// `db`), a role account of the AD domain, owns an AD principal and
/// another MIT one (for a volume with credentials of both realms).
const POLICY: &str = r#"
[[role_accounts]]
login = "websvc"
uid = 1500
gid = 1500
namespaces = ["web"]
service_principals = ["HTTP/web.example.com"]

[[role_accounts]]
login = "adsvc"
realm = "AD.KCRED.TEST"
uid = 1600
gid = 1600
namespaces = ["db"]
service_principals = ["HTTP/adweb.example.com@AD.KCRED.TEST", "HTTP/api.example.com@KCRED.TEST"]
"#;

/// `kinit -k -t keytab principal` configured by the volume's own
/// `krb5.conf` only: it must name the principal's realm and its KDC.
fn kinit_as_the_pod(volume: &Path, principal: &str, scratch: &Path) -> Output {
    let out = std::process::Command::new("kinit")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("KRB5_CONFIG", volume.join("krb5.conf"))
        .env(
            "KRB5CCNAME",
            format!("FILE:{}", scratch.join("pod.cc").display()),
        )
        .args(["-k", "-t"])
        .arg(volume.join("krb5.keytab"))
        .arg(principal)
        .output()
        .expect("kinit");
    let _ = std::fs::remove_file(scratch.join("pod.cc"));
    out
}

fn krb5_conf(volume: &Path) -> String {
    std::fs::read_to_string(volume.join("krb5.conf")).expect("krb5.conf")
}

/// The `[[realms]]` entry serving `dc`'s domain over LDAPS.
fn ad_realm(dc: &DomainController) -> String {
    format!(
        "[[realms]]\nname = \"{AD}\"\nkdcs = [\"127.0.0.1:88\"]\n\
         [realms.active_directory]\nldap_url = \"{url}\"\nca_file = \"{ca}\"\nbind_dn = \"{KCRED_BIND_DN}\"\n\
         bind_password_file = \"{pw}\"\nbase_dn = \"{KCRED_OU}\"\n",
        url = dc.ldap_url(),
        ca = dc.ca_cert_path().display(),
        pw = dc.kcred_password_file().display(),
    )
}

fn metric_line(metrics: &str, starts: &str) -> String {
    metrics
        .lines()
        .find(|l| l.starts_with(starts))
        .unwrap_or_else(|| panic!("no {starts} in {metrics}"))
        .to_string()
}

#[tokio::test]
#[ignore = "needs root: network namespace, Samba, tmpfs"]
async fn one_controller_issues_from_an_mit_realm_and_an_active_directory_domain() {
    // The DC listens on port 88: everything runs in this thread's own
    // network namespace, the MIT realm (on free ports) included.
    isolate_network().expect("network namespace");
    let dc = DomainController::start().expect("domain controller");
    dc.add_service_account(AD_ACCOUNT, &[AD_SPN])
        .expect("service account");
    dc.add_service_account("adsvc", &[]).expect("role account");
    let stack = Stack::start(StackOptions {
        policy: POLICY.into(),
        extra_config: ad_realm(&dc),
        ..StackOptions::default()
    })
    .await
    .expect("stack");
    let scratch = tempfile::tempdir().expect("scratch");
    let ad_before = dc.key_version(AD_ACCOUNT).expect("AD kvno");
    let mit_web = stack.realm.kvno("HTTP/web.example.com").expect("kvno");
    let mit_api = stack.realm.kvno("HTTP/api.example.com").expect("kvno");

    // An MIT principal: its keytab and the operator's krb5.conf, as ever.
    let web = TestPod::with_keytabs("web", "web-0", "node-a", "HTTP/web.example.com");
    stack.add_pod(&web);
    let web_vol = stack.kubelet.publish(&web, VOL).await.expect("publish web");
    assert_eq!(keytab_kvnos(&web_vol.join("krb5.keytab")), vec![mit_web]);
    assert_eq!(
        krb5_conf(&web_vol),
        std::fs::read_to_string(stack.realm.krb5_conf_path()).expect("realm conf")
    );
    let out = kinit_as_the_pod(
        &web_vol,
        &format!("HTTP/web.example.com@{MIT}"),
        scratch.path(),
    );
    assert!(
        out.status.success(),
        "kinit at the MIT KDC: {}",
        output_text(&out)
    );

    // An AD principal: keys from the directory, a krb5.conf naming the
    // domain and its KDC.
    let ad = TestPod::with_keytabs("db", "ad-0", "node-a", &format!("{AD_SPN}@{AD}"));
    stack.add_pod(&ad);
    let ad_vol = stack.kubelet.publish(&ad, VOL).await.expect("publish ad");
    let ad_kvno = dc.key_version(AD_ACCOUNT).expect("AD kvno");
    assert_eq!(ad_kvno, ad_before + 1, "kcred set a new password once");
    assert_eq!(keytab_kvnos(&ad_vol.join("krb5.keytab")), vec![ad_kvno]);
    let conf = krb5_conf(&ad_vol);
    assert!(conf.contains(&format!("default_realm = {AD}")), "{conf}");
    assert!(
        conf.contains(&format!("\t{AD} = {{\n\t\tkdc = 127.0.0.1:88\n"))
            && !conf.contains(&format!("\t{MIT} = ")),
        "{conf}"
    );
    let out = kinit_as_the_pod(&ad_vol, &format!("{AD_ACCOUNT}@{AD}"), scratch.path());
    assert!(
        out.status.success(),
        "kinit at the DC: {}",
        output_text(&out)
    );
    assert_eq!(
        stack.realm.kvno("HTTP/web.example.com").expect("kvno"),
        mit_web,
        "the MIT realm is untouched by an AD issue"
    );

    // One volume with credentials of both realms: both realms and KDCs,
    // the controller's own realm as default; the AD keys are the stored ones.
    let both = TestPod::with_keytabs(
        "db",
        "both-0",
        "node-a",
        &format!("{AD_SPN}@{AD}, HTTP/api.example.com"),
    );
    stack.add_pod(&both);
    let both_vol = stack
        .kubelet
        .publish(&both, VOL)
        .await
        .expect("publish both");
    let conf = krb5_conf(&both_vol);
    assert!(conf.contains(&format!("default_realm = {MIT}")), "{conf}");
    assert!(
        conf.contains(&format!("\t{AD} = {{\n\t\tkdc = 127.0.0.1:88\n"))
            && conf.contains(&format!(
                "\t{MIT} = {{\n\t\tkdc = {}\n",
                stack.realm.kdc_addr()
            )),
        "{conf}"
    );
    assert_eq!(keytab_kvnos(&both_vol.join("krb5.keytab")), {
        let mut v = vec![mit_api, ad_kvno];
        v.sort();
        v.dedup();
        v
    });
    assert_eq!(
        dc.key_version(AD_ACCOUNT).expect("kvno"),
        ad_kvno,
        "stored keys served"
    );
    for principal in [
        format!("HTTP/api.example.com@{MIT}"),
        format!("{AD_ACCOUNT}@{AD}"),
    ] {
        let out = kinit_as_the_pod(&both_vol, &principal, scratch.path());
        assert!(
            out.status.success(),
            "kinit {principal}: {}",
            output_text(&out)
        );
    }

    // Each realm's gate counts its own calls.
    let metrics = stack.metrics().render();
    for (realm, n) in [(AD, 1), (MIT, 2)] {
        let line = metric_line(
            &metrics,
            &format!(
                "kcred_kdc_operations_total{{lane=\"kadmind\",op=\"extract_keytab\",realm=\"{realm}\",result=\"ok\"}}"
            ),
        );
        assert!(line.ends_with(&format!(" {n}")), "{line}");
    }

    // A role account of the domain: its TGT comes from the DC.
    let tix = TestPod::new("db", "tix-0", "node-a").annotate("kcred.io/tickets", "adsvc");
    stack.add_pod(&tix);
    let tix_vol = stack
        .kubelet
        .publish(&tix, VOL)
        .await
        .expect("publish tickets");
    let copy = scratch.path().join("tix.cc");
    std::fs::copy(tix_vol.join("krb5cc"), &copy).expect("copy");
    let klist = dc
        .command("klist")
        .arg("-c")
        .arg(format!("FILE:{}", copy.display()))
        .output()
        .expect("klist");
    assert!(
        output_text(&klist).contains(&format!("Default principal: adsvc@{AD}"))
            && output_text(&klist).contains(&format!("krbtgt/{AD}@{AD}")),
        "{}",
        output_text(&klist)
    );
    assert!(krb5_conf(&tix_vol).contains(&format!("default_realm = {AD}")));
    let line = metric_line(
        &stack.metrics().render(),
        &format!(
            "kcred_kdc_operations_total{{lane=\"kdc\",op=\"acquire_tgt\",realm=\"{AD}\",result=\"ok\"}}"
        ),
    );
    assert!(line.ends_with(" 1"), "{line}");

    // A realm not served is refused as an invalid annotation.
    let foreign = TestPod::with_keytabs(
        "web",
        "web-x",
        "node-a",
        "HTTP/web.example.com@ELSEWHERE.TEST",
    );
    stack.add_pod(&foreign);
    let err = stack
        .kubelet
        .publish(&foreign, VOL)
        .await
        .expect_err("unserved realm");
    assert!(err.message().contains("ELSEWHERE.TEST"), "{err:?}");
    let metrics = stack.metrics().render();
    assert!(
        metrics.contains("kcred_refusals_total{reason=\"annotation_invalid\"}"),
        "{metrics}"
    );

    // Rotating the AD principal moves the AD kvno only; its holders get
    // both kvnos, the MIT-only volume stays as it was.
    let web_keytab = std::fs::read(web_vol.join("krb5.keytab")).expect("read");
    let state = stack.state().expect("controller running");
    let sp = ServicePrincipal::parse(&format!("{AD_SPN}@{AD}"), &state.realm).expect("served");
    let new = kcred_controller::rotation::rotate_keytab(&state, &sp, Duration::from_secs(3600))
        .await
        .expect("rotate the AD principal");
    drop(state);
    assert_eq!(new, ad_kvno + 1);
    assert_eq!(dc.key_version(AD_ACCOUNT).expect("kvno"), new);
    assert_eq!(
        stack.realm.kvno("HTTP/web.example.com").expect("kvno"),
        mit_web
    );
    assert_eq!(
        stack.realm.kvno("HTTP/api.example.com").expect("kvno"),
        mit_api
    );
    wait_until("the rotation reaches the AD volume", 30, || {
        std::fs::read(ad_vol.join("krb5.keytab"))
            .is_ok_and(|_| keytab_kvnos(&ad_vol.join("krb5.keytab")) == vec![ad_kvno, new])
    })
    .await;
    wait_until("the rotation reaches the two-realm volume", 30, || {
        keytab_kvnos(&both_vol.join("krb5.keytab")).contains(&new)
    })
    .await;
    let out = kinit_as_the_pod(&ad_vol, &format!("{AD_ACCOUNT}@{AD}"), scratch.path());
    assert!(
        out.status.success(),
        "kinit with the rotated keys: {}",
        output_text(&out)
    );
    let out = kinit_as_the_pod(
        &both_vol,
        &format!("HTTP/api.example.com@{MIT}"),
        scratch.path(),
    );
    assert!(
        out.status.success(),
        "the MIT key still works: {}",
        output_text(&out)
    );
    assert_eq!(
        std::fs::read(web_vol.join("krb5.keytab")).expect("read"),
        web_keytab,
        "the MIT volume is unchanged"
    );
    let metrics = stack.metrics().render();
    let line = metric_line(
        &metrics,
        &format!(
            "kcred_kdc_operations_total{{lane=\"kadmind\",op=\"randomize_key\",realm=\"{AD}\",result=\"ok\"}}"
        ),
    );
    assert!(line.ends_with(" 1"), "{line}");
    assert!(
        !metrics.contains(&format!("op=\"randomize_key\",realm=\"{MIT}\"")),
        "{metrics}"
    );
    stack.shutdown().await.expect("shutdown");
}

const OTHER: &str = "OTHER.TEST";
/// A breaker that opens after two failures and probes after a second.
const FAST_BREAKER: &str = "retries = 1\nbackoff_min_ms = 20\nbackoff_max_ms = 50\nbreaker_threshold = 2\nbreaker_cooldown_secs = 1\n";

#[tokio::test]
#[ignore = "needs root: tmpfs"]
async fn a_second_mit_realm_has_its_own_kadmind_and_its_own_breaker() {
    // Its admin may also rotate (`c`, `m`).
    let mut other = Realm::start_with(RealmOptions {
        realm: OTHER.into(),
        acl: vec![format!("kcred/admin@{OTHER} ecm */*@{OTHER}")],
        ..RealmOptions::default()
    })
    .expect("second realm");
    other
        .add_principal("HTTP/other.example.com")
        .expect("principal");
    let policy = format!(
        "[[role_accounts]]\nlogin = \"websvc\"\nuid = 1500\ngid = 1500\nnamespaces = [\"web\"]\n\
         service_principals = [\"HTTP/web.example.com\"]\n\n[[role_accounts]]\nlogin = \"othersvc\"\nuid = 1600\ngid = 1600\nnamespaces = [\"db\"]\n\
         service_principals = [\"HTTP/other.example.com@{OTHER}\"]\n"
    );
    let entry = format!(
        "[[realms]]\nname = \"{OTHER}\"\nkdcs = [\"{kdc}\"]\n[realms.kadmin]\nprincipal = \"{admin}\"\n\
         keytab = \"{keytab}\"\nadmin_server = \"{kadmind}\"\n[realms.gate.kadmin]\n{FAST_BREAKER}",
        kdc = other.kdc_addr(),
        admin = other.admin_principal(),
        keytab = other.admin_keytab().display(),
        kadmind = other.kadmind_addr(),
    );
    let stack = Stack::start(StackOptions {
        policy,
        extra_config: entry,
        ..StackOptions::default()
    })
    .await
    .expect("stack");
    let scratch = tempfile::tempdir().expect("scratch");

    // The second realm's kadmind is down: its breaker opens.
    other.stop_kadmind().expect("stop kadmind");
    let pod = TestPod::with_keytabs(
        "db",
        "other-0",
        "node-a",
        &format!("HTTP/other.example.com@{OTHER}"),
    );
    stack.add_pod(&pod);
    for _ in 0..3 {
        let err = stack
            .kubelet
            .publish(&pod, VOL)
            .await
            .expect_err("kadmind down");
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    }
    let state = stack.state().expect("running");
    let breaker = |realm: &str| {
        state
            .backends
            .of(realm)
            .expect("served")
            .gate
            .breaker_open(Lane::Kadmin)
    };
    assert!(breaker(OTHER), "the failing realm's breaker is open");
    assert!(!breaker(MIT), "the other realm's breaker is not");
    let metrics = stack.metrics().render();
    assert!(
        metrics.contains(&format!(
            "kcred_gate_refused_total{{lane=\"kadmind\",realm=\"{OTHER}\",reason=\"breaker_open\"}}"
        )),
        "{metrics}"
    );

    // The controller's own realm issues meanwhile.
    let web = TestPod::with_keytabs("web", "web-0", "node-a", "HTTP/web.example.com");
    stack.add_pod(&web);
    let web_vol = stack
        .kubelet
        .publish(&web, VOL)
        .await
        .expect("own realm unaffected");
    let out = kinit_as_the_pod(
        &web_vol,
        &format!("HTTP/web.example.com@{MIT}"),
        scratch.path(),
    );
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(!breaker(MIT));
    drop(state);

    // Back up: the second realm's keys, from its own kadmind, work at its
    // own KDC with the volume's krb5.conf.
    other.start_kadmind().expect("start kadmind");
    tokio::time::sleep(Duration::from_millis(1200)).await; // the breaker's cooldown
    let vol = stack.kubelet.publish(&pod, VOL).await.expect("recovered");
    assert_eq!(
        keytab_kvnos(&vol.join("krb5.keytab")),
        vec![other.kvno("HTTP/other.example.com").expect("kvno")]
    );
    let conf = krb5_conf(&vol);
    assert!(conf.contains(&format!("default_realm = {OTHER}")), "{conf}");
    let out = kinit_as_the_pod(
        &vol,
        &format!("HTTP/other.example.com@{OTHER}"),
        scratch.path(),
    );
    assert!(
        out.status.success(),
        "kinit at the second KDC: {}",
        output_text(&out)
    );
    let extractions = other
        .kadmind_extractions(Some("HTTP/other.example.com"))
        .expect("kadmind log");
    assert_eq!(extractions.len(), 1, "{extractions:?}");

    // Rotating it moves its kvno, not the first realm's; the volume holds
    // both kvnos for the grace period, then the old keys are purged at
    // that realm's kadmind.
    let mit_web = stack.realm.kvno("HTTP/web.example.com").expect("kvno");
    let before = other.kvno("HTTP/other.example.com").expect("kvno");
    let state = stack.state().expect("running");
    let sp = ServicePrincipal::parse(&format!("HTTP/other.example.com@{OTHER}"), &state.realm)
        .expect("served");
    let new = kcred_controller::rotation::rotate_keytab(&state, &sp, Duration::from_secs(3))
        .await
        .expect("rotate");
    drop(state);
    assert_eq!(new, before + 1);
    assert_eq!(other.kvno("HTTP/other.example.com").expect("kvno"), new);
    assert_eq!(
        stack.realm.kvno("HTTP/web.example.com").expect("kvno"),
        mit_web
    );
    let keytab = vol.join("krb5.keytab");
    wait_until("the rotation reaches the volume", 30, || {
        keytab_kvnos(&keytab) == vec![before, new]
    })
    .await;
    wait_until("the grace period ends", 30, || {
        keytab_kvnos(&keytab) == vec![new]
    })
    .await;
    let held = other
        .kadmin_local("getprinc HTTP/other.example.com")
        .expect("getprinc");
    assert!(
        !held.contains(&format!("Key: vno {before},")),
        "purged at the second realm's kadmind: {held}"
    );
    let out = kinit_as_the_pod(
        &vol,
        &format!("HTTP/other.example.com@{OTHER}"),
        scratch.path(),
    );
    assert!(
        out.status.success(),
        "the new keys work: {}",
        output_text(&out)
    );
    stack.shutdown().await.expect("shutdown");
}
