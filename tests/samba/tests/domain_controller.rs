//! The test DC itself: it starts from the template, answers Kerberos and
//! LDAPS on its own loopback, and tests do not see each other's DCs.

use kcred_testsamba::{DomainController, REALM, isolate_network};

fn start() -> DomainController {
    isolate_network().expect("network namespace");
    DomainController::start().expect("domain controller")
}

#[test]
#[ignore = "needs root"]
fn administrator_gets_a_tgt_and_finds_a_new_account_over_ldaps() {
    let dc = start();
    dc.kinit_admin().expect("kinit Administrator");
    dc.add_service_account("websvc", &["HTTP/web.example.test"])
        .expect("account");

    let out = dc
        .command("ldapsearch")
        .args(["-LLL", "-o", "ldif-wrap=no", "-x", "-H"])
        .arg(dc.ldap_url())
        .args(["-D", kcred_testsamba::ADMIN_DN, "-y"])
        .arg(dc.admin_password_file())
        .args(["-b", kcred_testsamba::BASE_DN])
        .arg("(servicePrincipalName=HTTP/web.example.test)")
        .arg("sAMAccountName")
        .output()
        .expect("ldapsearch");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ldapsearch: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("sAMAccountName: websvc"), "{text}");
    let kvno = dc.key_version("websvc").expect("kvno");
    assert!(kvno >= 1, "kvno {kvno}");

    let klist = dc.command("klist").output().expect("klist");
    assert!(String::from_utf8_lossy(&klist.stdout).contains(&format!("krbtgt/{REALM}@{REALM}")));
}

#[test]
#[ignore = "needs root"]
fn two_tests_get_two_independent_domains() {
    let other = std::thread::spawn(|| {
        let dc = start();
        dc.add_service_account("only-here", &[]).expect("account");
        dc.key_version("only-here").expect("present in its own DC")
    });
    let dc = start();
    other.join().expect("other test thread");
    assert!(
        dc.key_version("only-here").is_err(),
        "an account made in another test's DC is visible here"
    );
}
