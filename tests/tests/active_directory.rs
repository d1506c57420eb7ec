//! Issue 15: Active Directory as the KDC. Every test runs a real Samba AD
//! domain controller in its own network namespace, the controller and the
//! driver, and checks delivered credentials with MIT's tools against the DC.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use kcred_controller::keytab::Keytab;
use kcred_controller::names::ServicePrincipal;
use kcred_tests::{DirectoryRealm, Stack, StackOptions, TestPod, wait_until};
use kcred_testsamba::{DomainController, KCRED_BIND_DN, KCRED_OU, REALM, isolate_network};
use zeroize::Zeroizing;

const VOL: &str = "kcred";
/// The default policy's service principal, and the AD account holding it.
const SPN: &str = "HTTP/web.example.com";
const SERVICE_ACCOUNT: &str = "web-http";

/// A DC with the service account, and a stack serving its realm; the
/// calling thread (the test's) moves into a private network namespace.
async fn ad_stack() -> (DomainController, Stack) {
    isolate_network().expect("network namespace");
    let dc = DomainController::start().expect("domain controller");
    dc.add_service_account(SERVICE_ACCOUNT, &[SPN])
        .expect("service account");
    let section = format!(
        "[active_directory]\nldap_url = \"{url}\"\nca_file = \"{ca}\"\nbind_dn = \"{KCRED_BIND_DN}\"\n\
         bind_password_file = \"{pw}\"\nbase_dn = \"{KCRED_OU}\"\n",
        url = dc.ldap_url(),
        ca = dc.ca_cert_path().display(),
        pw = dc.kcred_password_file().display(),
    );
    let stack = Stack::start(StackOptions {
        active_directory: Some(DirectoryRealm {
            realm: REALM.to_string(),
            krb5_conf: dc.krb5_conf_path(),
            section,
        }),
        ..StackOptions::default()
    })
    .await
    .expect("stack");
    (dc, stack)
}

fn kvnos(path: &Path) -> Vec<u32> {
    let k = Keytab::parse(Zeroizing::new(std::fs::read(path).expect("read keytab")))
        .expect("whole keytab");
    k.kvnos().iter().copied().collect()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `kinit -k -t keytab principal` against the DC, into a cache of its own.
fn kinit_with(dc: &DomainController, keytab: &Path, principal: &str, cache: &str) -> Output {
    dc.command("kinit")
        .env(
            "KRB5CCNAME",
            format!("FILE:{}", dc.dir().join(cache).display()),
        )
        .args(["-k", "-t"])
        .arg(keytab)
        .arg(principal)
        .output()
        .expect("kinit")
}

/// `kvno -k keytab SPN` with the administrator's cache `cache` (whose
/// cached service ticket, if any, is used as is).
fn kvno_accepts(dc: &DomainController, cache: &Path, keytab: &Path) -> Output {
    dc.command("kvno")
        .env("KRB5CCNAME", format!("FILE:{}", cache.display()))
        .arg("-k")
        .arg(keytab)
        .arg(format!("{SPN}@{REALM}"))
        .output()
        .expect("kvno")
}

/// A copy of the administrator's TGT cache, so a test can hold a service
/// ticket of one kvno while the directory moves on.
fn admin_cache(dc: &DomainController, name: &str) -> PathBuf {
    dc.kinit_admin().expect("kinit Administrator");
    let copy = dc.dir().join(name);
    std::fs::copy(dc.ccache_path(), &copy).expect("copy ccache");
    copy
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_keytab_from_active_directory_authenticates_and_accepts_tickets_at_the_dc() {
    let (dc, stack) = ad_stack().await;
    let before = dc.key_version(SERVICE_ACCOUNT).expect("kvno");
    let pod = TestPod::with_keytabs("web", "web-0", "node-a", SPN);
    stack.add_pod(&pod);

    let target = stack.kubelet.publish(&pod, VOL).await.expect("publish");
    let keytab = target.join("krb5.keytab");

    let after = dc.key_version(SERVICE_ACCOUNT).expect("kvno");
    assert_eq!(after, before + 1, "kcred set a new password once");
    assert_eq!(kvnos(&keytab), vec![after], "the keytab holds the new kvno");
    let out = kinit_with(
        &dc,
        &keytab,
        &format!("{SERVICE_ACCOUNT}@{REALM}"),
        "svc.cc",
    );
    assert!(
        out.status.success(),
        "kinit -k -t as the account: {}",
        text(&out)
    );
    let cache = admin_cache(&dc, "admin.cc");
    let out = kvno_accepts(&dc, &cache, &keytab);
    assert!(
        out.status.success(),
        "kvno -k with the delivered keytab: {}",
        text(&out)
    );
    assert!(
        text(&out).contains(&format!("kvno = {after}")),
        "{}",
        text(&out)
    );

    // A second pod gets the stored keys: no second password reset.
    let other = TestPod::with_keytabs("web", "web-1", "node-a", SPN);
    stack.add_pod(&other);
    let second = stack.kubelet.publish(&other, VOL).await.expect("publish");
    assert_eq!(
        std::fs::read(second.join("krb5.keytab")).expect("read"),
        std::fs::read(&keytab).expect("read")
    );
    assert_eq!(dc.key_version(SERVICE_ACCOUNT).expect("kvno"), after);
    stack.shutdown().await.expect("shutdown");
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_storm_of_pods_for_one_account_costs_one_password_set() {
    let (dc, stack) = ad_stack().await;
    let before = dc.key_version(SERVICE_ACCOUNT).expect("kvno");
    let pods: Vec<TestPod> = (0..12)
        .map(|i| TestPod::with_keytabs("web", &format!("web-{i}"), "node-a", SPN))
        .collect();
    for p in &pods {
        stack.add_pod(p);
    }

    let publishes = pods.iter().map(|p| stack.kubelet.publish(p, VOL));
    let targets: Vec<PathBuf> = futures_join_all(publishes).await;

    assert_eq!(
        dc.key_version(SERVICE_ACCOUNT).expect("kvno"),
        before + 1,
        "twelve pods, one password reset"
    );
    let first = std::fs::read(targets[0].join("krb5.keytab")).expect("read");
    for t in &targets {
        assert_eq!(std::fs::read(t.join("krb5.keytab")).expect("read"), first);
    }
    let cache = admin_cache(&dc, "admin.cc");
    let out = kvno_accepts(&dc, &cache, &targets[0].join("krb5.keytab"));
    assert!(out.status.success(), "{}", text(&out));
    stack.shutdown().await.expect("shutdown");
}

/// Runs the publishes concurrently on this (namespaced) thread.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<PathBuf>
where
    F: std::future::Future<Output = Result<PathBuf, tonic::Status>>,
{
    let mut pinned: Vec<_> = futures.map(Box::pin).collect();
    let mut done: Vec<Option<PathBuf>> = vec![None; pinned.len()];
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if done[i].is_some() {
                continue;
            }
            match f.as_mut().poll(cx) {
                std::task::Poll::Ready(r) => done[i] = Some(r.expect("publish")),
                std::task::Poll::Pending => pending = true,
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    done.into_iter().map(|d| d.expect("finished")).collect()
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_rotation_on_ad_keeps_the_previous_kvno_for_the_grace_period_only() {
    let (dc, stack) = ad_stack().await;
    let pod = TestPod::with_keytabs("web", "web-0", "node-a", SPN);
    stack.add_pod(&pod);
    let target = stack.kubelet.publish(&pod, VOL).await.expect("publish");
    let keytab = target.join("krb5.keytab");
    let old = dc.key_version(SERVICE_ACCOUNT).expect("kvno");
    // A client holding a service ticket issued under the old kvno.
    let old_ticket = admin_cache(&dc, "old-ticket.cc");
    let out = kvno_accepts(&dc, &old_ticket, &keytab);
    assert!(out.status.success(), "{}", text(&out));

    let sp = ServicePrincipal::parse(SPN, REALM).expect("principal");
    let state = stack.state().expect("controller running");
    let new = kcred_controller::rotation::rotate_keytab(&state, &sp, Duration::from_secs(4))
        .await
        .expect("rotate");
    drop(state);

    assert_eq!(new, old + 1);
    assert_eq!(dc.key_version(SERVICE_ACCOUNT).expect("kvno"), new);
    wait_until("the rotation reaches the volume", 30, || {
        std::fs::read(&keytab).is_ok_and(|b| {
            Keytab::parse(Zeroizing::new(b))
                .is_ok_and(|k| k.kvnos().iter().copied().collect::<Vec<_>>() == vec![old, new])
        })
    })
    .await;
    let grace = dc.dir().join("grace.keytab");
    std::fs::copy(&keytab, &grace).expect("copy");
    let out = kvno_accepts(&dc, &old_ticket, &grace);
    assert!(
        out.status.success(),
        "old ticket during the grace period: {}",
        text(&out)
    );
    assert!(
        text(&out).contains(&format!("kvno = {old}")),
        "{}",
        text(&out)
    );
    let new_ticket = admin_cache(&dc, "new-ticket.cc");
    let out = kvno_accepts(&dc, &new_ticket, &grace);
    assert!(out.status.success(), "new ticket: {}", text(&out));
    assert!(
        text(&out).contains(&format!("kvno = {new}")),
        "{}",
        text(&out)
    );
    let out = kinit_with(&dc, &grace, &format!("{SERVICE_ACCOUNT}@{REALM}"), "svc.cc");
    assert!(
        out.status.success(),
        "kinit with the new password's keys: {}",
        text(&out)
    );

    // The grace period ends: the old kvno leaves the volume, and a ticket
    // issued under it is refused.
    wait_until("the old kvno dropped", 30, || {
        std::fs::read(&keytab).is_ok_and(|b| {
            Keytab::parse(Zeroizing::new(b))
                .is_ok_and(|k| k.kvnos().iter().copied().collect::<Vec<_>>() == vec![new])
        })
    })
    .await;
    let after = dc.dir().join("after.keytab");
    std::fs::copy(&keytab, &after).expect("copy");
    let out = kvno_accepts(&dc, &old_ticket, &after);
    assert!(
        !out.status.success(),
        "old ticket after the grace period: {}",
        text(&out)
    );
    let out = kvno_accepts(&dc, &new_ticket, &after);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        dc.key_version(SERVICE_ACCOUNT).expect("kvno"),
        new,
        "ending the grace period resets no password"
    );
    stack.shutdown().await.expect("shutdown");
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_prestashed_ticket_comes_from_the_ad_kdc() {
    let (dc, stack) = ad_stack().await;
    dc.add_service_account("websvc", &[]).expect("role account");
    let pod = TestPod::new("web", "web-0", "node-a").annotate("kcred.io/tickets", "websvc");
    stack.add_pod(&pod);

    let target = stack.kubelet.publish(&pod, VOL).await.expect("publish");

    let cc = target.join("krb5cc");
    let copy = dc.dir().join("pod.cc");
    std::fs::copy(&cc, &copy).expect("copy");
    let klist = dc
        .command("klist")
        .arg("-c")
        .arg(format!("FILE:{}", copy.display()))
        .output()
        .expect("klist");
    assert!(klist.status.success(), "{}", text(&klist));
    assert!(
        text(&klist).contains(&format!("Default principal: websvc@{REALM}"))
            && text(&klist).contains(&format!("krbtgt/{REALM}@{REALM}")),
        "{}",
        text(&klist)
    );
    let out = dc
        .command("kvno")
        .env("KRB5CCNAME", format!("FILE:{}", copy.display()))
        .arg(format!("{SPN}@{REALM}"))
        .output()
        .expect("kvno");
    assert!(
        out.status.success(),
        "a service ticket with the pod's TGT: {}",
        text(&out)
    );
    assert!(
        !target.join("krb5.keytab").exists(),
        "never the long-term key"
    );
    stack.shutdown().await.expect("shutdown");
}

#[tokio::test]
#[ignore = "needs root"]
async fn an_account_shared_with_another_spn_or_outside_the_ou_is_refused_and_left_alone() {
    let (dc, stack) = ad_stack().await;
    // HTTP/api.example.com (owned by websvc in the policy) sits on an
    // account that also holds a name kcred does not serve.
    dc.add_service_account(
        "shared",
        &["HTTP/api.example.com", "HTTP/other.example.com"],
    )
    .expect("shared account");
    let before = dc.key_version("shared").expect("kvno");
    let pod = TestPod::with_keytabs("web", "web-0", "node-a", "HTTP/api.example.com");
    stack.add_pod(&pod);

    let err = stack
        .kubelet
        .publish(&pod, VOL)
        .await
        .expect_err("a shared account");

    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("HTTP/other.example.com"),
        "the refusal names the other SPN: {}",
        err.message()
    );
    assert_eq!(
        dc.key_version("shared").expect("kvno"),
        before,
        "no password was reset"
    );

    // postgres/db1.example.com is in the policy, but its account lies
    // outside the OU delegated to kcred.
    dc.samba_tool(&["user", "add", "db-outside", "Outside-Initial-Pw1!"])
        .expect("account outside the OU");
    dc.samba_tool(&["spn", "add", "postgres/db1.example.com", "db-outside"])
        .expect("spn");
    let outside_before = dc.key_version("db-outside").expect("kvno");
    let db = TestPod::with_keytabs("db", "db-0", "node-a", "postgres/db1.example.com");
    stack.add_pod(&db);
    let err = stack
        .kubelet
        .publish(&db, VOL)
        .await
        .expect_err("no account");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("no account"), "{}", err.message());
    assert_eq!(
        dc.key_version("db-outside").expect("kvno"),
        outside_before,
        "an account outside the delegated OU is never touched"
    );
    stack.shutdown().await.expect("shutdown");
}
