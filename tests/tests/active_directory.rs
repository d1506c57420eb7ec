//! Issue 15: Active Directory as the KDC. Every test runs a real Samba AD
//! domain controller in its own network namespace, the controller and the
//! driver, and checks delivered credentials with MIT's tools against the DC.

use kcred_tests::{keytab_kvnos, output_text};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use kcred_controller::keytab::Keytab;
use kcred_controller::names::ServicePrincipal;
use kcred_csi_driver::controller_client::{ControllerClient, ControllerError};
use kcred_proto::kcred::v1::{PodRef, Reason};
use kcred_tests::{DirectoryRealm, Kubelet, Stack, StackOptions, TestPod, wait_until};
use kcred_testsamba::{
    ADMIN_DN, DomainController, KCRED_BIND_DN, KCRED_OU, REALM, isolate_network,
};
use zeroize::Zeroizing;

const VOL: &str = "kcred";
/// The default policy's service principal, and the AD account holding it.
const SPN: &str = "HTTP/web.example.com";
const SERVICE_ACCOUNT: &str = "web-http";

/// The `[active_directory]` table for `dc` over LDAPS with kcred's bind
/// account, then `rest` (more keys, or further tables).
fn ldaps_section(dc: &DomainController, rest: &str) -> String {
    format!(
        "[active_directory]\nldap_url = \"{url}\"\nca_file = \"{ca}\"\nbind_dn = \"{KCRED_BIND_DN}\"\n\
         bind_password_file = \"{pw}\"\nbase_dn = \"{KCRED_OU}\"\n{rest}",
        url = dc.ldap_url(),
        ca = dc.ca_cert_path().display(),
        pw = dc.kcred_password_file().display(),
    )
}

/// The role account `websvc` (uid and gid 1500) in the OU, and the
/// (empty) group naming namespace `web`.
fn add_role_account_and_web_namespace(dc: &DomainController) {
    dc.samba_tool(&[
        "user",
        "add",
        "websvc",
        "Throwaway-Initial-Pw1!",
        "--userou=OU=kcred",
        "--uid-number=1500",
        "--gid-number=1500",
    ])
    .expect("role account");
    dc.samba_tool(&["group", "add", "kcred-ns-web", "--groupou=OU=kcred"])
        .expect("namespace group");
}

/// A stack serving `dc`'s realm with `section` as its
/// `[active_directory]` configuration (and the policy from the directory
/// when `syncs_policy`).
fn on_directory(dc: &DomainController, section: String, syncs_policy: bool) -> StackOptions {
    StackOptions {
        active_directory: Some(DirectoryRealm {
            realm: REALM.to_string(),
            krb5_conf: dc.krb5_conf_path(),
            section,
            syncs_policy,
        }),
        ..StackOptions::default()
    }
}

/// After a rotation to kvno `new`: a ticket for the service under the new
/// keys is accepted with `keytab` (`kvno -k`), and the service account
/// itself logs in with it (`kinit -k -t`). Returns the cache holding that
/// ticket.
fn the_new_keys_work(dc: &DomainController, keytab: &Path, new: u32) -> PathBuf {
    let new_ticket = admin_cache(dc, "new-ticket.cc");
    let out = kvno_accepts(dc, &new_ticket, keytab);
    assert!(
        out.status.success() && output_text(&out).contains(&format!("kvno = {new}")),
        "kvno with the new keytab: {}",
        output_text(&out)
    );
    let out = kinit_with(dc, keytab, &format!("{SERVICE_ACCOUNT}@{REALM}"), "svc.cc");
    assert!(
        out.status.success(),
        "kinit -k -t with the new keytab: {}",
        output_text(&out)
    );
    new_ticket
}

/// A DC with the service account, and a stack serving its realm; the
/// calling thread (the test's) moves into a private network namespace.
async fn ad_stack() -> (DomainController, Stack) {
    isolate_network().expect("network namespace");
    let dc = DomainController::start().expect("domain controller");
    dc.add_service_account(SERVICE_ACCOUNT, &[SPN])
        .expect("service account");
    let section = ldaps_section(&dc, "");
    let stack = Stack::start(on_directory(&dc, section, false))
        .await
        .expect("stack");
    (dc, stack)
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
    assert_eq!(
        keytab_kvnos(&keytab),
        vec![after],
        "the keytab holds the new kvno"
    );
    let out = kinit_with(
        &dc,
        &keytab,
        &format!("{SERVICE_ACCOUNT}@{REALM}"),
        "svc.cc",
    );
    assert!(
        out.status.success(),
        "kinit -k -t as the account: {}",
        output_text(&out)
    );
    let cache = admin_cache(&dc, "admin.cc");
    let out = kvno_accepts(&dc, &cache, &keytab);
    assert!(
        out.status.success(),
        "kvno -k with the delivered keytab: {}",
        output_text(&out)
    );
    assert!(
        output_text(&out).contains(&format!("kvno = {after}")),
        "{}",
        output_text(&out)
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
    assert!(out.status.success(), "{}", output_text(&out));
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
    assert!(out.status.success(), "{}", output_text(&out));

    let sp = ServicePrincipal::parse(SPN, REALM).expect("principal");
    let state = stack.state().expect("controller running");
    let new = kcred_controller::rotation::rotate_keytab(&state, &sp, Duration::from_secs(15))
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
        output_text(&out)
    );
    assert!(
        output_text(&out).contains(&format!("kvno = {old}")),
        "{}",
        output_text(&out)
    );
    let new_ticket = the_new_keys_work(&dc, &grace, new);

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
        output_text(&out)
    );
    let out = kvno_accepts(&dc, &new_ticket, &after);
    assert!(out.status.success(), "{}", output_text(&out));
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
    assert!(klist.status.success(), "{}", output_text(&klist));
    assert!(
        output_text(&klist).contains(&format!("Default principal: websvc@{REALM}"))
            && output_text(&klist).contains(&format!("krbtgt/{REALM}@{REALM}")),
        "{}",
        output_text(&klist)
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
        output_text(&out)
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
    assert!(
        err.message().contains("no account") && err.message().contains("accounts_ou"),
        "the refusal says kcred creates no account without accounts_ou: {}",
        err.message()
    );
    assert_eq!(
        dc.key_version("db-outside").expect("kvno"),
        outside_before,
        "an account outside the delegated OU is never touched"
    );
    stack.shutdown().await.expect("shutdown");
}

/// A stack whose policy comes from the directory, synced every second.
async fn ad_sync_stack(dc: &DomainController) -> Stack {
    let section = ldaps_section(
        dc,
        &format!(
            "\n\
         [active_directory.sync]\nbase_dn = \"{KCRED_OU}\"\ninterval_secs = 1\n"
        ),
    );
    Stack::start(on_directory(dc, section, true))
        .await
        .expect("stack")
}

/// Applies an LDIF change to the DC's database with `ldbmodify`.
fn ldbmodify(dc: &DomainController, ldif: &str) {
    let file = dc.dir().join("change.ldif");
    std::fs::write(&file, ldif).expect("write ldif");
    let out = dc
        .command("ldbmodify")
        .arg("-H")
        .arg(dc.dir().join("private/sam.ldb"))
        .arg(&file)
        .output()
        .expect("ldbmodify");
    assert!(out.status.success(), "ldbmodify: {}", output_text(&out));
}

fn audit_text(stack: &Stack) -> String {
    std::fs::read_to_string(stack.dir.path().join("audit.log")).unwrap_or_default()
}

#[tokio::test]
#[ignore = "needs root"]
async fn role_accounts_synced_from_the_directory_are_served_and_a_removed_membership_stops_renewals()
 {
    isolate_network().expect("network namespace");
    let dc = DomainController::start().expect("domain controller");
    // The role account, with its unix ids, in the namespace group; the
    // service account it manages holds the SPN.
    add_role_account_and_web_namespace(&dc);
    dc.samba_tool(&["group", "addmembers", "kcred-ns-web", "websvc"])
        .expect("membership");
    dc.samba_tool(&[
        "group",
        "add",
        "data",
        "--groupou=OU=kcred",
        "--gid-number=3000",
        "--nis-domain=kcred",
    ])
    .expect("unix group");
    dc.samba_tool(&["group", "addmembers", "data", "websvc"])
        .expect("membership");
    dc.add_service_account(SERVICE_ACCOUNT, &[SPN])
        .expect("service account");
    ldbmodify(
        &dc,
        &format!(
            "dn: CN={SERVICE_ACCOUNT},{KCRED_OU}\nchangetype: modify\nreplace: manager\n\
             manager: CN=websvc,{KCRED_OU}\n"
        ),
    );
    let stack = ad_sync_stack(&dc).await;

    let pod =
        TestPod::with_keytabs("web", "web-0", "node-a", SPN).annotate("kcred.io/tickets", "websvc");
    stack.add_pod(&pod);
    // Nothing is granted until the first sync lands.
    let mut served = None;
    for _ in 0..150 {
        match stack.kubelet.publish(&pod, VOL).await {
            Ok(t) => {
                served = Some(t);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let target = served.expect("the synced policy serves the pod");
    assert_eq!(
        keytab_kvnos(&target.join("krb5.keytab")),
        vec![dc.key_version(SERVICE_ACCOUNT).expect("kvno")]
    );
    assert!(target.join("krb5cc").exists(), "the role account's ticket");
    let audit = audit_text(&stack);
    assert!(
        audit.contains("directory sync: role account websvc added")
            && audit.contains("supplemental_gids {3000}"),
        "{audit}"
    );

    // Out of the namespace group: the next renewal after a sync is refused.
    dc.samba_tool(&["group", "removemembers", "kcred-ns-web", "websvc"])
        .expect("remove membership");
    let client = ControllerClient::new(&stack.controller_endpoint(), "node-a").expect("client");
    let pod_ref = PodRef {
        namespace: pod.namespace.clone(),
        name: pod.name.clone(),
        uid: pod.uid.clone(),
        service_account: "default".into(),
    };
    let mut refusal = None;
    for _ in 0..150 {
        let renewal = client
            .fetch_bundle(pod_ref.clone(), &Kubelet::volume_id(&pod, VOL), true)
            .await;
        match renewal {
            Ok(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(e) => {
                refusal = Some(e);
                break;
            }
        }
    }
    let refused = refusal.unwrap_or_else(|| {
        panic!(
            "renewals stop once the sync sees the removal: {}",
            audit_text(&stack)
        )
    });
    assert!(
        matches!(
            &refused,
            ControllerError::Refused { reason: Some(Reason::NoRoleAccount), status }
                if status.message().contains("rule namespaces")
        ),
        "refused by the policy: {refused:?}"
    );
    let audit = audit_text(&stack);
    assert!(
        audit.contains("role account websvc changed: namespaces -[\\\"web\\\"]"),
        "one record saying what changed: {audit}"
    );
    stack.shutdown().await.expect("shutdown");
}

const CONTROLLER_SPN: &str = "kcred/controller.ad.kcred.test";

/// A Kerberos token for the controller from `keytab`'s `principal`,
/// minted by the auth probe against the DC.
fn admin_token(dc: &DomainController, keytab: &Path, principal: &str) -> String {
    let out = std::process::Command::new(kcred_tests::procs::binary("kcred-auth-probe"))
        .env("KRB5_CONFIG", dc.krb5_conf_path())
        .arg("token")
        .arg(keytab)
        .arg(principal)
        .arg(format!("{CONTROLLER_SPN}@{REALM}"))
        .output()
        .expect("kcred-auth-probe");
    assert!(out.status.success(), "token: {}", output_text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The admin API's Status as `principal`: its role, or the refusal.
async fn admin_status(
    stack: &Stack,
    dc: &DomainController,
    keytab: &Path,
    principal: &str,
) -> Result<String, tonic::Status> {
    use kcred_proto::kcred::v1::StatusRequest;
    use kcred_proto::kcred::v1::admin_client::AdminClient;
    let channel = tonic::transport::Channel::from_shared(stack.controller_endpoint())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut req = tonic::Request::new(StatusRequest {});
    req.metadata_mut().insert(
        "authorization",
        admin_token(dc, keytab, principal)
            .parse()
            .expect("metadata"),
    );
    AdminClient::new(channel)
        .status(req)
        .await
        .map(|r| r.into_inner().role)
}

#[tokio::test]
#[ignore = "needs root"]
async fn an_operator_gains_and_loses_the_role_through_directory_group_membership_synced_on_sighup()
{
    isolate_network().expect("network namespace");
    let dc = DomainController::start().expect("domain controller");
    dc.add_service_account("kcred-ctl", &[CONTROLLER_SPN])
        .expect("controller account");
    let ctl_keytab = dc.dir().join("controller.keytab");
    dc.export_keytab(&format!("{CONTROLLER_SPN}@{REALM}"), &ctl_keytab)
        .expect("controller keytab");
    dc.samba_tool(&["user", "add", "alice", "Alice-Initial-Pw1!"])
        .expect("a person");
    let alice_keytab = dc.dir().join("alice.keytab");
    let alice = format!("alice@{REALM}");
    dc.export_keytab(&alice, &alice_keytab)
        .expect("alice's keytab");
    dc.samba_tool(&["group", "add", "kcred-operators", "--groupou=OU=kcred"])
        .expect("operators group");
    let section = ldaps_section(
        &dc,
        &format!(
            "\n\
         [active_directory.sync]\nbase_dn = \"{KCRED_OU}\"\ninterval_secs = 3600\n\
         change_check_secs = 0\noperators_group = \"kcred-operators\"\n"
        ),
    );
    let stack = Stack::start(StackOptions {
        auth_config: format!(
            "[auth]\nmode = \"kerberos\"\nkeytab = \"{}\"\nreplay_cache = \"{}\"\n",
            ctl_keytab.display(),
            dc.dir().join("controller.rcache").display()
        ),
        ..on_directory(&dc, section, true)
    })
    .await
    .expect("stack");

    let refused = admin_status(&stack, &dc, &alice_keytab, &alice)
        .await
        .expect_err("no role before the group grants one");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");

    // The interval is an hour and changes are not followed: what follows
    // is the sync SIGHUP asks for.
    dc.samba_tool(&["group", "addmembers", "kcred-operators", "alice"])
        .expect("membership");
    stack.reload();
    let mut role = None;
    for _ in 0..150 {
        if let Ok(r) = admin_status(&stack, &dc, &alice_keytab, &alice).await {
            role = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        role.as_deref(),
        Some("operator"),
        "the group grants the role"
    );

    dc.samba_tool(&["group", "removemembers", "kcred-operators", "alice"])
        .expect("remove membership");
    stack.reload();
    let mut refusal = None;
    for _ in 0..150 {
        match admin_status(&stack, &dc, &alice_keytab, &alice).await {
            Ok(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(status) => {
                refusal = Some(status);
                break;
            }
        }
    }
    let refusal = refusal.expect("the role goes with the membership, without a restart");
    assert_eq!(refusal.code(), tonic::Code::PermissionDenied, "{refusal:?}");
    let audit = audit_text(&stack);
    assert!(
        audit.contains(&format!("directory sync: {alice} granted role operator"))
            && audit.contains(&format!("directory sync: {alice} lost role operator")),
        "{audit}"
    );
    stack.shutdown().await.expect("shutdown");
}

/// The `[active_directory]` table letting kcred create service accounts in
/// the OU, managed by the administrator.
fn creating_section(dc: &DomainController) -> String {
    ldaps_section(
        dc,
        &format!(
            "accounts_ou = \"{KCRED_OU}\"\n\
         accounts_manager = \"{ADMIN_DN}\"\n"
        ),
    )
}

/// The logon name of the one account holding `spn`, asserting there is
/// exactly one, in the OU.
fn only_account_holding(dc: &DomainController, spn: &str) -> String {
    let holders = dc.accounts_holding(spn).expect("ldbsearch");
    assert_eq!(
        holders.len(),
        1,
        "exactly one account holds {spn}: {holders:?}"
    );
    let dn = &holders[0];
    assert!(
        dn.to_ascii_lowercase()
            .ends_with(&format!(",{}", KCRED_OU.to_ascii_lowercase())),
        "{dn} is in the OU"
    );
    dn.strip_prefix("CN=")
        .and_then(|rest| rest.split(',').next())
        .expect("a CN")
        .to_string()
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_service_principal_nobody_created_gets_one_account_of_its_own_and_a_keytab_the_dc_accepts()
 {
    isolate_network().expect("network namespace");
    let dc = DomainController::start().expect("domain controller");
    assert!(dc.accounts_holding(SPN).expect("ldbsearch").is_empty());
    let mut stack = Stack::start(StackOptions {
        ..on_directory(&dc, creating_section(&dc), false)
    })
    .await
    .expect("stack");

    // Six pods at once need the new principal: one account is created.
    let pods: Vec<TestPod> = (0..6)
        .map(|i| TestPod::with_keytabs("web", &format!("web-{i}"), "node-a", SPN))
        .collect();
    for p in &pods {
        stack.add_pod(p);
    }
    let targets = futures_join_all(pods.iter().map(|p| stack.kubelet.publish(p, VOL))).await;

    let account = only_account_holding(&dc, SPN);
    let first = std::fs::read(targets[0].join("krb5.keytab")).expect("read");
    for t in &targets {
        assert_eq!(std::fs::read(t.join("krb5.keytab")).expect("read"), first);
    }
    let kvno = dc.key_version(&account).expect("kvno");
    assert_eq!(keytab_kvnos(&targets[0].join("krb5.keytab")), vec![kvno]);
    let attr = |name: &str| dc.attribute(&account, name).expect("samba-tool user show");
    assert_eq!(
        attr("msDS-SupportedEncryptionTypes"),
        vec!["24"],
        "AES only"
    );
    assert_eq!(
        attr("userAccountControl"),
        vec!["66048"],
        "enabled, password never expires"
    );
    assert_eq!(attr("manager"), vec![ADMIN_DN.to_string()]);
    assert_eq!(
        attr("userPrincipalName"),
        vec![format!("{account}@{REALM}")]
    );
    let out = kinit_with(
        &dc,
        &targets[0].join("krb5.keytab"),
        &format!("{account}@{REALM}"),
        "svc.cc",
    );
    assert!(
        out.status.success(),
        "kinit -k -t as the created account: {}",
        output_text(&out)
    );
    let cache = admin_cache(&dc, "admin.cc");
    let out = kvno_accepts(&dc, &cache, &targets[0].join("krb5.keytab"));
    assert!(out.status.success(), "kvno -k: {}", output_text(&out));
    let audit = audit_text(&stack);
    assert_eq!(
        audit.matches("created Active Directory account").count(),
        1,
        "one audit record of the creation: {audit}"
    );

    // A principal an account outside the OU already holds: the directory
    // refuses a second holder, and kcred says so.
    dc.samba_tool(&["user", "add", "db-outside", "Outside-Initial-Pw1!"])
        .expect("account outside the OU");
    dc.samba_tool(&["spn", "add", "postgres/db1.example.com", "db-outside"])
        .expect("spn");
    let db = TestPod::with_keytabs("db", "db-0", "node-a", "postgres/db1.example.com");
    stack.add_pod(&db);
    let err = stack
        .kubelet
        .publish(&db, VOL)
        .await
        .expect_err("held outside the OU");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert_eq!(
        dc.accounts_holding("postgres/db1.example.com")
            .expect("ldbsearch")
            .len(),
        1,
        "no second account"
    );

    // A controller that lost its store (a restart on a new disk) finds the
    // account it made and gives it new keys: still one account.
    stack.stop_controller().await.expect("stop");
    let fresh = stack.dir.path().join("fresh");
    std::fs::create_dir_all(&fresh).expect("dir");
    stack
        .start_controller(
            |cfg| {
                cfg.store_path = Some(fresh.join("store.redb"));
                cfg.audit_log = fresh.join("audit.log");
            },
            &[],
        )
        .await
        .expect("restart");
    let late = TestPod::with_keytabs("web", "web-late", "node-a", SPN);
    stack.add_pod(&late);
    let target = stack.kubelet.publish(&late, VOL).await.expect("publish");
    assert_eq!(only_account_holding(&dc, SPN), account);
    assert_eq!(dc.key_version(&account).expect("kvno"), kvno + 1);
    let out = kinit_with(
        &dc,
        &target.join("krb5.keytab"),
        &format!("{account}@{REALM}"),
        "svc2.cc",
    );
    assert!(
        out.status.success(),
        "kinit after the restart: {}",
        output_text(&out)
    );
    let audit = std::fs::read_to_string(fresh.join("audit.log")).unwrap_or_default();
    assert!(
        !audit.contains("created Active Directory account"),
        "nothing created the second time: {audit}"
    );
    stack.shutdown().await.expect("shutdown");
}

#[tokio::test]
#[ignore = "needs root"]
async fn two_controllers_racing_to_create_one_principal_make_one_account() {
    use kcred_controller::ad::{AdClient, AdConfig, Bind};
    use kcred_controller::names::Principal;
    isolate_network().expect("network namespace");
    let dc = DomainController::start().expect("domain controller");
    let client = |name: &str| {
        let cfg = AdConfig {
            realm: REALM.to_string(),
            ldap_url: dc.ldap_url(),
            ca_file: Some(dc.ca_cert_path()),
            bind: Bind::Simple {
                dn: KCRED_BIND_DN.to_string(),
                password_file: dc.kcred_password_file(),
            },
            base_dn: KCRED_OU.to_string(),
            accounts_ou: Some(KCRED_OU.to_string()),
            accounts_manager: None,
            krb5_config: Some(dc.krb5_conf_path()),
            work_dir: dc.dir().join(name),
            timeout: Duration::from_secs(10),
            ldapsearch: "ldapsearch".into(),
            ldapmodify: "ldapmodify".into(),
            ktutil: "ktutil".into(),
        };
        let (audit, events) = tokio::sync::mpsc::unbounded_channel();
        (AdClient::new(cfg, audit).expect("client"), events)
    };
    let (a, mut a_events) = client("a");
    let (b, mut b_events) = client("b");
    let principal = Principal::Service(ServicePrincipal::parse(SPN, REALM).expect("principal"));

    let (ka, kb) = tokio::join!(a.new_keys(&principal), b.new_keys(&principal));

    ka.expect("the first controller gets keys");
    kb.expect("the second controller gets keys");
    only_account_holding(&dc, SPN);
    let created = [a_events.try_recv().is_ok(), b_events.try_recv().is_ok()];
    assert_eq!(
        created.iter().filter(|c| **c).count(),
        1,
        "exactly one of them created (and audited) the account: {created:?}"
    );
}

/// Runs `kcred-csi-driver` as its own process for `node`, authenticating
/// to the controller with `host/<node>`'s keytab from the DC, and connects
/// a kubelet stand-in to it.
async fn driver_process(
    dc: &DomainController,
    stack: &Stack,
    node: &str,
    keytab: &Path,
) -> (kcred_tests::procs::Proc, Kubelet) {
    let d = stack.dir.path().join(format!("driver-{node}"));
    let kubelet_dir = d.join("kubelet");
    std::fs::create_dir_all(kubelet_dir.join("pods")).expect("kubelet dir");
    let socket = d.join("csi.sock");
    let mut cmd = std::process::Command::new(kcred_tests::procs::binary("kcred-csi-driver"));
    cmd.env("KRB5_CONFIG", dc.krb5_conf_path())
        .env("RUST_LOG", "info")
        .arg("--endpoint")
        .arg(&socket)
        .args(["--node-id", node])
        .args(["--controller", &stack.controller_endpoint()])
        .arg("--keytab")
        .arg(keytab)
        .args(["--principal", &format!("host/{node}@{REALM}")])
        .args(["--controller-service", &format!("{CONTROLLER_SPN}@{REALM}")])
        .arg("--kubelet-dir")
        .arg(&kubelet_dir)
        .arg("--state-dir")
        .arg(d.join("state"))
        .args(["--heartbeat-secs", "1"]);
    let proc = kcred_tests::procs::Proc::spawn(cmd, &d.join("driver.log")).expect("driver");
    let kubelet =
        match Kubelet::connect_when_ready(&socket, &kubelet_dir, Duration::from_secs(20)).await {
            Ok(k) => k,
            Err(e) => panic!("driver did not start: {e:#}\n{}", proc.log_text()),
        };
    (proc, kubelet)
}

fn keytab_kvnos_are(path: &Path, want: &[u32]) -> bool {
    std::fs::read(path).is_ok_and(|b| {
        Keytab::parse(Zeroizing::new(b))
            .is_ok_and(|k| k.kvnos().iter().copied().collect::<Vec<_>>() == want)
    })
}

#[tokio::test]
#[ignore = "needs root"]
async fn kcredctl_rotates_a_keytab_on_active_directory_and_the_node_delivers_the_new_kvno() {
    isolate_network().expect("network namespace");
    let dc = DomainController::start().expect("domain controller");
    dc.add_service_account(SERVICE_ACCOUNT, &[SPN])
        .expect("service account");
    dc.add_service_account("kcred-ctl", &[CONTROLLER_SPN])
        .expect("controller account");
    let ctl_keytab = dc.dir().join("controller.keytab");
    dc.export_keytab(&format!("{CONTROLLER_SPN}@{REALM}"), &ctl_keytab)
        .expect("controller keytab");
    // The node's identity: an account whose userPrincipalName is its host
    // principal, so the KDC accepts that name from a client.
    let node = "node-b";
    let host = format!("host/{node}@{REALM}");
    dc.add_service_account("node-b-host", &[&format!("host/{node}")])
        .expect("node account");
    ldbmodify(
        &dc,
        &format!(
            "dn: CN=node-b-host,{KCRED_OU}\nchangetype: modify\nreplace: userPrincipalName\n\
             userPrincipalName: {host}\n"
        ),
    );
    let node_keytab = dc.dir().join("node.keytab");
    dc.export_keytab(&host, &node_keytab).expect("node keytab");
    dc.samba_tool(&["user", "add", "alice", "Alice-Initial-Pw1!"])
        .expect("an operator");
    let alice_keytab = dc.dir().join("alice.keytab");
    let alice = format!("alice@{REALM}");
    dc.export_keytab(&alice, &alice_keytab)
        .expect("alice's keytab");
    let section = ldaps_section(&dc, "");
    let stack = Stack::start(StackOptions {
        auth_config: format!(
            "[auth]\nmode = \"kerberos\"\nkeytab = \"{}\"\nreplay_cache = \"{}\"\noperators = [\"{alice}\"]\n",
            ctl_keytab.display(),
            dc.dir().join("controller.rcache").display()
        ),
        ..on_directory(&dc, section, false)
    })
    .await
    .expect("stack");
    let (driver, kubelet) = driver_process(&dc, &stack, node, &node_keytab).await;
    let pod = TestPod::with_keytabs("web", "web-0", node, SPN);
    stack.add_pod(&pod);
    let target = kubelet
        .publish(&pod, VOL)
        .await
        .unwrap_or_else(|e| panic!("publish: {e:?}\n{}", driver.log_text()));
    let keytab = target.join("krb5.keytab");
    let old = dc.key_version(SERVICE_ACCOUNT).expect("kvno");
    assert_eq!(keytab_kvnos(&keytab), vec![old]);
    // A client holding a service ticket issued under the old kvno.
    let old_ticket = admin_cache(&dc, "old-ticket.cc");
    let out = kvno_accepts(&dc, &old_ticket, &keytab);
    assert!(out.status.success(), "{}", output_text(&out));

    // Awaited, not blocking: the controller runs on this test's runtime.
    let out = tokio::process::Command::new(kcred_tests::procs::binary("kcredctl"))
        .env("KRB5_CONFIG", dc.krb5_conf_path())
        .env(
            "KRB5CCNAME",
            format!("FILE:{}", dc.dir().join("alice.cc").display()),
        )
        .args(["--controller", &stack.controller_endpoint()])
        .args(["--service", &format!("{CONTROLLER_SPN}@{REALM}")])
        .arg("--keytab")
        .arg(&alice_keytab)
        .args(["--principal", &alice])
        .args(["rotate", "keytab", SPN, "--grace", "15s", "--wait", "30s"])
        .output()
        .await
        .expect("kcredctl");
    let report = output_text(&out);
    assert!(out.status.success(), "kcredctl rotate keytab: {report}");
    assert!(
        report.contains("1 of 1") || report.contains("all 1"),
        "progress: {report}"
    );

    let new = dc.key_version(SERVICE_ACCOUNT).expect("kvno");
    assert_eq!(new, old + 1, "AD's msDS-KeyVersionNumber moved by one");
    wait_until("the node delivers the new kvno", 30, || {
        keytab_kvnos_are(&keytab, &[old, new])
    })
    .await;
    let grace = dc.dir().join("grace.keytab");
    std::fs::copy(&keytab, &grace).expect("copy");
    let out = kvno_accepts(&dc, &old_ticket, &grace);
    assert!(
        out.status.success() && output_text(&out).contains(&format!("kvno = {old}")),
        "a ticket of the old kvno during the grace period: {}",
        output_text(&out)
    );
    the_new_keys_work(&dc, &grace, new);

    wait_until("the grace period ends on the node", 30, || {
        keytab_kvnos_are(&keytab, &[new])
    })
    .await;
    let after = dc.dir().join("after.keytab");
    std::fs::copy(&keytab, &after).expect("copy");
    let out = kvno_accepts(&dc, &old_ticket, &after);
    assert!(
        !out.status.success(),
        "the old kvno after the grace period: {}",
        output_text(&out)
    );
    let audit = audit_text(&stack);
    assert!(
        audit.contains(&alice) && audit.contains("\"rotate\""),
        "the rotation is audited with its operator: {audit}"
    );
    // Its mount goes with the pod, not left behind on the machine.
    kubelet.unpublish(&pod, VOL).await.expect("unpublish");
    drop(kubelet);
    drop(driver);
    stack.shutdown().await.expect("shutdown");
}

#[tokio::test]
#[ignore = "needs root"]
async fn members_of_nested_groups_count_for_namespaces_gids_and_admin_roles() {
    isolate_network().expect("network namespace");
    let dc = DomainController::start().expect("domain controller");
    let tool = |args: &[&str]| {
        dc.samba_tool(args)
            .unwrap_or_else(|e| panic!("samba-tool {args:?}: {e}"))
    };
    tool(&[
        "user",
        "add",
        "websvc",
        "Throwaway-Initial-Pw1!",
        "--userou=OU=kcred",
        "--uid-number=1500",
        "--gid-number=1500",
    ]);
    // websvc is in web-team; web-team is in the namespace group and in the
    // unix group: websvc is a member of neither directly.
    tool(&["group", "add", "web-team", "--groupou=OU=kcred"]);
    tool(&["group", "addmembers", "web-team", "websvc"]);
    tool(&["group", "add", "kcred-ns-web", "--groupou=OU=kcred"]);
    tool(&["group", "addmembers", "kcred-ns-web", "web-team"]);
    tool(&[
        "group",
        "add",
        "data",
        "--groupou=OU=kcred",
        "--gid-number=3000",
        "--nis-domain=kcred",
    ]);
    tool(&["group", "addmembers", "data", "web-team"]);
    // alice is in ops-people (outside the OU), which is in kcred-operators.
    tool(&["user", "add", "alice", "Alice-Initial-Pw1!"]);
    tool(&["group", "add", "ops-people"]);
    tool(&["group", "addmembers", "ops-people", "alice"]);
    tool(&["group", "add", "kcred-operators", "--groupou=OU=kcred"]);
    tool(&["group", "addmembers", "kcred-operators", "ops-people"]);
    dc.add_service_account(SERVICE_ACCOUNT, &[SPN])
        .expect("service account");
    ldbmodify(
        &dc,
        &format!(
            "dn: CN={SERVICE_ACCOUNT},{KCRED_OU}\nchangetype: modify\nreplace: manager\n\
             manager: CN=websvc,{KCRED_OU}\n"
        ),
    );
    let section = ldaps_section(
        &dc,
        &format!(
            "\n\
         [active_directory.sync]\nbase_dn = \"{KCRED_OU}\"\ninterval_secs = 1\n\
         operators_group = \"kcred-operators\"\n"
        ),
    );
    let stack = Stack::start(on_directory(&dc, section, true))
        .await
        .expect("stack");

    let pod = TestPod::with_keytabs("web", "web-0", "node-a", SPN);
    stack.add_pod(&pod);
    let mut served = None;
    for _ in 0..150 {
        match stack.kubelet.publish(&pod, VOL).await {
            Ok(t) => {
                served = Some(t);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    served.unwrap_or_else(|| {
        panic!(
            "the namespace granted through a nested group serves the pod: {}",
            audit_text(&stack)
        )
    });
    let audit = audit_text(&stack);
    assert!(
        audit.contains("directory sync: role account websvc added")
            && audit.contains("supplemental_gids {3000}")
            && audit.contains("namespaces {\\\"web\\\"}"),
        "namespace and gid through web-team: {audit}"
    );
    assert!(
        audit.contains(&format!(
            "directory sync: alice@{REALM} granted role operator"
        )),
        "operator through ops-people: {audit}"
    );

    // Out of the nested group: out of the namespace and the role.
    tool(&["group", "removemembers", "web-team", "websvc"]);
    tool(&["group", "removemembers", "ops-people", "alice"]);
    wait_until("the sync sees the nested removals", 30, || {
        let audit = audit_text(&stack);
        audit.contains("role account websvc changed: namespaces -[\\\"web\\\"]")
            && audit.contains(&format!("directory sync: alice@{REALM} lost role operator"))
    })
    .await;
    stack.shutdown().await.expect("shutdown");
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_namespace_group_with_more_members_than_one_ldap_read_returns_counts_every_member() {
    isolate_network().expect("network namespace");
    let dc = DomainController::start().expect("domain controller");
    // 1,600 people (more than AD's MaxValRange of 1,500 values and its
    // MaxPageSize of 1,000 entries) in kcred-ns-web, and websvc last.
    // Samba enforces neither limit (it returns all 1,600 `member` values
    // and 1,600 unpaged entries), so this proves the in-chain, paged reads
    // handle a group this size, not how a truncating DC would answer.
    let fillers = 1600;
    let mut ldif = String::new();
    for i in 0..fillers {
        ldif.push_str(&format!(
            "dn: CN=filler-{i:04},CN=Users,{base}\nobjectClass: user\nsAMAccountName: filler-{i:04}\n\n",
            base = kcred_testsamba::BASE_DN
        ));
    }
    let file = dc.dir().join("fillers.ldif");
    std::fs::write(&file, ldif).expect("write ldif");
    let out = dc
        .command("ldbadd")
        .arg("-H")
        .arg(dc.dir().join("private/sam.ldb"))
        .arg(&file)
        .output()
        .expect("ldbadd");
    assert!(out.status.success(), "ldbadd: {}", output_text(&out));
    add_role_account_and_web_namespace(&dc);
    let mut members = format!("dn: CN=kcred-ns-web,{KCRED_OU}\nchangetype: modify\nadd: member\n");
    for i in 0..fillers {
        members.push_str(&format!(
            "member: CN=filler-{i:04},CN=Users,{}\n",
            kcred_testsamba::BASE_DN
        ));
    }
    ldbmodify(&dc, &members);
    ldbmodify(
        &dc,
        &format!(
            "dn: CN=kcred-ns-web,{KCRED_OU}\nchangetype: modify\nadd: member\n\
             member: CN=websvc,{KCRED_OU}\n"
        ),
    );
    let stack = ad_sync_stack(&dc).await;

    wait_until("websvc synced with its namespace", 60, || {
        audit_text(&stack).contains("namespaces {\\\"web\\\"}")
    })
    .await;
    let state = stack.state().expect("controller running");
    let policy = state.policy.get();
    let role = policy
        .role_for_namespace("web")
        .expect("the 1,601st member counts");
    assert_eq!(role.login, "websvc");
    drop(policy);
    drop(state);
    stack.shutdown().await.expect("shutdown");
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_membership_added_in_the_directory_reaches_the_policy_without_sighup_or_interval() {
    isolate_network().expect("network namespace");
    let dc = DomainController::start().expect("domain controller");
    add_role_account_and_web_namespace(&dc);
    // An hour between full syncs, and no SIGHUP: only the change check
    // (every second) can bring the membership in.
    let section = ldaps_section(
        &dc,
        &format!(
            "\n\
         [active_directory.sync]\nbase_dn = \"{KCRED_OU}\"\ninterval_secs = 3600\n\
         change_check_secs = 1\n"
        ),
    );
    let stack = Stack::start(on_directory(&dc, section, true))
        .await
        .expect("stack");
    wait_until("the first sync", 30, || {
        audit_text(&stack).contains("directory sync: role account websvc added")
    })
    .await;
    let syncs = || {
        stack
            .metrics()
            .directory_syncs
            .with_label_values(&["ok"])
            .get()
    };
    // Nothing changes: the checks find the same USN and do not sync.
    let quiet = syncs();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(syncs(), quiet, "no change in the directory, no sync");
    let state = stack.state().expect("controller running");
    assert!(state.policy.get().role_for_namespace("web").is_err());
    drop(state);

    dc.samba_tool(&["group", "addmembers", "kcred-ns-web", "websvc"])
        .expect("membership");

    wait_until("the change check brings the membership in", 30, || {
        audit_text(&stack).contains("role account websvc changed: namespaces -[] +[\\\"web\\\"]")
    })
    .await;
    let state = stack.state().expect("controller running");
    assert_eq!(
        state
            .policy
            .get()
            .role_for_namespace("web")
            .expect("web runs as websvc now")
            .login,
        "websvc"
    );
    drop(state);
    stack.shutdown().await.expect("shutdown");
}

#[tokio::test]
#[ignore = "needs root"]
async fn two_controllers_on_one_etcd_creating_one_principal_make_one_account_and_share_its_keytab()
{
    isolate_network().expect("network namespace");
    let dc = DomainController::start().expect("domain controller");
    let etcd = kcred_testetcd::EtcdCluster::start(1).expect("etcd");
    let store = format!(
        "[store]\nbackend = \"etcd\"\n\n[store.etcd]\nendpoints = {:?}\n",
        etcd.endpoints()
    );
    let options = |node: &str, master_key_from: Option<PathBuf>| StackOptions {
        node: node.to_string(),
        extra_config: store.clone(),
        master_key_from,
        ..on_directory(&dc, creating_section(&dc), false)
    };
    let a = Stack::start(options("node-a", None))
        .await
        .expect("stack a");
    let b = Stack::start(options("node-b", Some(a.dir.path().join("master.key"))))
        .await
        .expect("stack b");
    let pod_a = TestPod::with_keytabs("web", "web-a", "node-a", SPN);
    let pod_b = TestPod::with_keytabs("web", "web-b", "node-b", SPN);
    for stack in [&a, &b] {
        stack.add_pod(&pod_a);
        stack.add_pod(&pod_b);
    }

    let (ta, tb) = tokio::join!(
        a.kubelet.publish(&pod_a, VOL),
        b.kubelet.publish(&pod_b, VOL)
    );

    let (ta, tb) = (ta.expect("publish on a"), tb.expect("publish on b"));
    let account = only_account_holding(&dc, SPN);
    let keytab = std::fs::read(ta.join("krb5.keytab")).expect("read");
    assert_eq!(
        std::fs::read(tb.join("krb5.keytab")).expect("read"),
        keytab,
        "the second controller waited for the first one's keys"
    );
    assert_eq!(
        keytab_kvnos(&ta.join("krb5.keytab")),
        vec![dc.key_version(&account).expect("kvno")],
        "one password set"
    );
    let out = kinit_with(
        &dc,
        &tb.join("krb5.keytab"),
        &format!("{account}@{REALM}"),
        "svc.cc",
    );
    assert!(out.status.success(), "kinit -k -t: {}", output_text(&out));
    let created = [audit_text(&a), audit_text(&b)]
        .iter()
        .map(|t| t.matches("created Active Directory account").count())
        .sum::<usize>();
    assert_eq!(created, 1, "one creation audited across both controllers");
    b.shutdown().await.expect("shutdown b");
    a.shutdown().await.expect("shutdown a");
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_kerberos_bind_over_sealed_ldap_resets_and_creates_accounts_without_any_password() {
    isolate_network().expect("network namespace");
    let dc = DomainController::start().expect("domain controller");
    let url = dc.kerberos_ldap_url().expect("ldap over Kerberos");
    let bind_keytab = dc.dir().join("kcred-bind.keytab");
    dc.export_keytab(&format!("kcred-admin@{REALM}"), &bind_keytab)
        .expect("kcred's keytab");
    std::fs::set_permissions(
        &bind_keytab,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod");
    dc.add_service_account(SERVICE_ACCOUNT, &[SPN])
        .expect("service account");
    let before = dc.key_version(SERVICE_ACCOUNT).expect("kvno");
    let section = format!(
        "[active_directory]\nldap_url = \"{url}\"\nbind_keytab = \"{kt}\"\n\
         base_dn = \"{KCRED_OU}\"\naccounts_ou = \"{KCRED_OU}\"\n",
        kt = bind_keytab.display(),
    );
    let stack = Stack::start(on_directory(&dc, section, false))
        .await
        .expect("stack");

    // An account the administrator made: its password is reset.
    let pod = TestPod::with_keytabs("web", "web-0", "node-a", SPN);
    stack.add_pod(&pod);
    let target = stack.kubelet.publish(&pod, VOL).await.expect("publish");
    assert_eq!(dc.key_version(SERVICE_ACCOUNT).expect("kvno"), before + 1);
    let out = kinit_with(
        &dc,
        &target.join("krb5.keytab"),
        &format!("{SERVICE_ACCOUNT}@{REALM}"),
        "svc.cc",
    );
    assert!(out.status.success(), "kinit -k -t: {}", output_text(&out));

    // A principal nobody created: its account is added over the same bind.
    let api = TestPod::with_keytabs("web", "api-0", "node-a", "HTTP/api.example.com");
    stack.add_pod(&api);
    let target = stack.kubelet.publish(&api, VOL).await.expect("publish");
    let account = only_account_holding(&dc, "HTTP/api.example.com");
    let out = kinit_with(
        &dc,
        &target.join("krb5.keytab"),
        &format!("{account}@{REALM}"),
        "api.cc",
    );
    assert!(out.status.success(), "kinit -k -t: {}", output_text(&out));
    stack.shutdown().await.expect("shutdown");
}
