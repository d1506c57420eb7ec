//! The long-lived kadmin session against a real kadmind: a command whose
//! caller gave up half way never leaves its answer for the next command.

use std::time::Duration;

use kcred_controller::kadmin::{KadminClient, KadminConfig};
use kcred_controller::names::{Principal, ServicePrincipal};
use kcred_testrealm::Realm;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_command_never_answers_for_the_next_one() {
    let realm = Realm::start().expect("realm");
    let name = format!("HTTP/web.example.com@{}", realm.name());
    realm.add_principal(&name).expect("principal");
    let work = tempfile::tempdir().expect("work dir");
    let client = KadminClient::new(KadminConfig {
        program: "kadmin".into(),
        principal: realm.admin_principal(),
        keytab: realm.admin_keytab(),
        krb5_config: Some(realm.krb5_conf_path()),
        work_dir: work.path().join("kadmin"),
        timeout: Duration::from_secs(10),
    })
    .expect("client");
    let principal = Principal::Service(
        ServicePrincipal::parse(&name, realm.name()).expect("a service principal"),
    );
    let first = client.extract_keytab(&principal).await.expect("extracted");

    // Callers that give up at every point of a command (the request's
    // deadline passed), each followed by one that waits for its answer.
    for i in 0..40u64 {
        let _ = tokio::time::timeout(
            Duration::from_micros(50 + 150 * i),
            client.extract_keytab(&principal),
        )
        .await;
        let next = client
            .extract_keytab(&principal)
            .await
            .unwrap_or_else(|e| panic!("after a call cancelled at {} µs: {e}", 50 + 150 * i));
        assert_eq!(next.kvnos(), first.kvnos());
    }
}
