//! Issue 14, the store on etcd: records sealed exactly as in the embedded
//! file (etcd's raw keys and values, read with etcd's own client, hold no
//! secret), a controller that loses etcd stops issuing and says so, and
//! `kcred-controller migrate-store` moves a store to etcd and back.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;

use base64::Engine;
use kcred_controller::crypto::MasterKey;
use kcred_controller::store::{Store, Table};
use kcred_csi_driver::controller_client::{ControllerClient, ControllerError};
use kcred_proto::kcred::v1::{Bundle, Reason};
use kcred_testetcd::EtcdCluster;
use kcred_tests::{Stack, StackOptions, TestPod, procs};

fn etcd_config(cluster: &EtcdCluster) -> String {
    format!(
        "[store]\nbackend = \"etcd\"\n\n[store.etcd]\nendpoints = {:?}\nprefix = \"/kcred/\"\ntimeout_ms = 1000\n",
        cluster.endpoints()
    )
}

async fn stack_on(cluster: &EtcdCluster) -> Stack {
    Stack::start(StackOptions {
        extra_config: etcd_config(cluster),
        ..StackOptions::default()
    })
    .await
    .expect("stack")
}

async fn fetch(stack: &Stack, pod: &TestPod) -> Result<Bundle, ControllerError> {
    let client = ControllerClient::new(&stack.controller_endpoint(), "node-a").expect("client");
    client
        .fetch_bundle(pod.pod_ref(), &format!("vol-{}", pod.name), false)
        .await
}

/// Every key and value under the prefix, read with etcd's own client.
async fn raw_etcd(cluster: &EtcdCluster) -> Vec<(String, Vec<u8>)> {
    let mut client = etcd_client::Client::connect(cluster.endpoints(), None)
        .await
        .expect("etcd client");
    let resp = client
        .get(
            "/kcred/",
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .expect("etcd get");
    resp.kvs()
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                kv.value().to_vec(),
            )
        })
        .collect()
}

/// Every `n`-byte window of `secret` as it would appear raw, in hex, or in
/// base64 (at each of the three alignments).
fn secret_windows(secret: &[u8], n: usize) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = secret.windows(n).map(<[u8]>::to_vec).collect();
    let hex = hex::encode(secret).into_bytes();
    out.extend(hex.windows(2 * n).map(<[u8]>::to_vec));
    for skip in 0..3 {
        let b64 = base64::engine::general_purpose::STANDARD
            .encode(secret.get(skip..).unwrap_or_default())
            .into_bytes();
        out.extend(b64.windows(2 * n).step_by(4).map(<[u8]>::to_vec));
    }
    out
}

/// Whether any window of any secret occurs anywhere in the dump.
fn leaks(dump: &[u8], secrets: &[(&str, &[u8])], n: usize) -> Vec<String> {
    let mut lens: HashSet<usize> = HashSet::new();
    let mut wanted: Vec<(String, Vec<u8>)> = Vec::new();
    for (name, s) in secrets {
        for w in secret_windows(s, n) {
            lens.insert(w.len());
            wanted.push((name.to_string(), w));
        }
    }
    let mut seen: HashSet<&[u8]> = HashSet::new();
    for l in lens {
        seen.extend(dump.windows(l));
    }
    let mut found: Vec<String> = wanted
        .into_iter()
        .filter(|(_, w)| seen.contains(w.as_slice()))
        .map(|(name, _)| name)
        .collect();
    found.dedup();
    found
}

/// The 32-byte private scalar of a P-256 PKCS#8 key (the OCTET STRING
/// after ECPrivateKey's version 1).
fn private_scalar(der: &[u8]) -> &[u8] {
    let marker = [0x02, 0x01, 0x01, 0x04, 0x20];
    let at = der
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("an EC private key");
    &der[at + marker.len()..at + marker.len() + 32]
}

fn file<'a>(bundle: &'a Bundle, name: &str) -> &'a [u8] {
    bundle
        .files
        .iter()
        .find(|f| f.name == name)
        .map(|f| f.content.as_slice())
        .unwrap_or_else(|| panic!("bundle has no {name}"))
}

#[tokio::test]
async fn etcd_holds_no_keytab_key_private_key_or_ticket_bytes_after_issuing_each() {
    let cluster = EtcdCluster::start(1).expect("etcd");
    let stack = stack_on(&cluster).await;
    let pod = TestPod::new("web", "web-0", "node-a")
        .annotate("kcred.io/keytabs", "HTTP/web.example.com")
        .annotate("kcred.io/tickets", "websvc")
        .annotate("kcred.io/certs", "web.example.com")
        .annotate("kcred.io/keys", "orders-db");
    stack.add_pod(&pod);
    let bundle = fetch(&stack, &pod).await.expect("fetch");
    // The private key's secret is its scalar: the rest of its PKCS#8 (the
    // algorithm, the public key) is in the certificate, public by design.
    let key_pem = String::from_utf8_lossy(file(&bundle, "tls.key")).into_owned();
    let key_der = base64::engine::general_purpose::STANDARD
        .decode(
            key_pem
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>(),
        )
        .expect("PEM body");
    let scalar = private_scalar(&key_der);
    let secrets: Vec<(&str, &[u8])> = vec![
        ("krb5.keytab", file(&bundle, "krb5.keytab")),
        ("krb5cc", file(&bundle, "krb5cc")),
        ("orders-db.keys.json", file(&bundle, "orders-db.keys.json")),
        ("tls.key private scalar", scalar),
    ];

    // The volume record is written in a batch, shortly after.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let raw = raw_etcd(&cluster).await;
    let keys: Vec<&str> = raw.iter().map(|(k, _)| k.as_str()).collect();
    // What kcred wrote is there (so the search below searched something).
    for expected in [
        "/kcred/keytabs_v1/HTTP/web.example.com@",
        "/kcred/tickets_v1/websvc@",
        "/kcred/certs_v1/",
        "/kcred/keyrings_v1/orders-db",
        "/kcred/authority_v1/",
        "/kcred/volumes_v1/vol-web-0",
    ] {
        assert!(
            keys.iter().any(|k| k.starts_with(expected)),
            "no key {expected}* in {keys:?}"
        );
    }
    let mut dump = Vec::new();
    for (k, v) in &raw {
        dump.extend_from_slice(k.as_bytes());
        dump.push(b'\n');
        dump.extend_from_slice(v);
        dump.push(b'\n');
    }
    assert_eq!(
        leaks(&dump, &secrets, 16),
        Vec::<String>::new(),
        "secret bytes in etcd"
    );
    let text = String::from_utf8_lossy(&dump);
    assert!(!text.contains("PRIVATE KEY"), "a PEM private key in etcd");
    // The search finds what it looks for: the bundle itself leaks all.
    let bundle_dump: Vec<u8> = secrets.iter().flat_map(|(_, s)| s.to_vec()).collect();
    assert_eq!(leaks(&bundle_dump, &secrets, 16).len(), secrets.len());
    stack.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_controller_that_loses_etcd_stops_issuing_and_says_so_until_it_is_back() {
    let mut cluster = EtcdCluster::start(1).expect("etcd");
    let stack = stack_on(&cluster).await;
    let pod = TestPod::with_keytabs("web", "web-0", "node-a", "HTTP/web.example.com");
    stack.add_pod(&pod);
    let issued = fetch(&stack, &pod).await.expect("fetch with etcd");
    let metrics = stack.metrics();
    assert_eq!(metrics.store_up.get(), 1);

    cluster.kill(0);
    let err = fetch(&stack, &pod).await.expect_err("issued without etcd");
    assert_eq!(err.reason(), Some(Reason::StoreUnavailable), "{err:?}");
    kcred_tests::wait_until("kcred_store_up 0", 10, || metrics.store_up.get() == 0).await;
    assert!(
        stack.metrics().render().contains("kcred_store_up 0"),
        "/metrics does not say the store is down"
    );

    cluster.restart(0).expect("etcd back");
    kcred_tests::wait_until("kcred_store_up 1", 15, || metrics.store_up.get() == 1).await;
    let again = fetch(&stack, &pod).await.expect("fetch with etcd back");
    assert_eq!(
        file(&again, "krb5.keytab"),
        file(&issued, "krb5.keytab"),
        "the keytab was not served from etcd"
    );
    stack.shutdown().await.expect("shutdown");
}

fn write_config(dir: &Path, name: &str, store: &str) -> std::path::PathBuf {
    let d = dir.display();
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:1\"\nrealm = \"KCRED.TEST\"\nmaster_key_file = \"{d}/master.key\"\npolicy_file = \"{d}/policy.toml\"\npods_file = \"{d}/pods.toml\"\naudit_log = \"{d}/audit.log\"\naudit_key = \"{d}/audit.key\"\n{store}\n[kadmin]\nprincipal = \"kcred/admin\"\nkeytab = \"{d}/admin.keytab\"\nwork_dir = \"{d}/extract\"\n\n[auth]\nmode = \"none\"\n"
        ),
    )
    .expect("write config");
    path
}

fn migrate(from: &Path, to: &Path) -> (bool, String) {
    let out = Command::new(procs::binary("kcred-controller"))
        .arg("migrate-store")
        .arg("--from")
        .arg(from)
        .arg("--to")
        .arg(to)
        .output()
        .expect("run kcred-controller");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn migrate_store_moves_every_record_to_etcd_and_back() {
    let cluster = EtcdCluster::start(1).expect("etcd");
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    MasterKey::generate_file(&d.join("master.key")).expect("master key");
    let embedded = write_config(
        d,
        "embedded.toml",
        &format!("store_path = \"{}/store.redb\"", d.display()),
    );
    let back = write_config(
        d,
        "back.toml",
        &format!("store_path = \"{}/back.redb\"", d.display()),
    );
    let etcd = write_config(d, "etcd.toml", &etcd_config(&cluster));
    {
        let store = Store::open(
            &d.join("store.redb"),
            MasterKey::load(&d.join("master.key")).expect("key"),
        )
        .expect("store");
        store
            .put(
                Table::Keytabs,
                "HTTP/web.example.com@KCRED.TEST",
                &vec![2u32],
                b"keytab",
            )
            .expect("put");
        store
            .put(Table::Certs, "websvc/web.example.com", &(), b"cert and key")
            .expect("put");
    }

    let (ok, out) = migrate(&embedded, &etcd);
    assert!(ok, "{out}");
    assert!(out.contains("copied 2 records"), "{out}");
    let raw = raw_etcd(&cluster).await;
    assert_eq!(raw.len(), 2, "{out}");
    // A second run refuses: a migration never merges.
    let (ok, out) = migrate(&embedded, &etcd);
    assert!(!ok && out.contains("already holds"), "{out}");

    let (ok, out) = migrate(&etcd, &back);
    assert!(ok, "{out}");
    let store = Store::open(
        &d.join("back.redb"),
        MasterKey::load(&d.join("master.key")).expect("key"),
    )
    .expect("store");
    let k = store
        .get::<Vec<u32>>(Table::Keytabs, "HTTP/web.example.com@KCRED.TEST")
        .expect("get")
        .expect("present");
    assert_eq!((k.meta, k.secret.as_slice()), (vec![2], &b"keytab"[..]));
}
