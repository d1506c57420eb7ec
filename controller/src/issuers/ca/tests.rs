//! CA tests; the `openssl` CLI is the judge of what pods will accept.

use super::*;
use std::path::Path;
use std::process::Command;

const DAY: Duration = Duration::from_secs(24 * 3600);

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn new_ca(cn: &str) -> CertificateAuthority {
    CertificateAuthority::generate(cn, 365 * DAY).unwrap()
}

/// Runs openssl in `dir`; returns (success, stdout, stderr).
fn openssl(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl CLI must be installed for these tests");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(dir: &Path, name: &str, content: &str) {
    std::fs::write(dir.join(name), content).unwrap();
}

fn write_pair(dir: &Path, ca: &CertificateAuthority, leaf: &IssuedCert) {
    write(dir, "ca.crt", ca.cert_pem());
    write(dir, "tls.crt", &leaf.cert_pem);
    write(dir, "tls.key", &leaf.key_pem);
}

fn san_list(dir: &Path) -> Vec<String> {
    let (ok, out, err) = openssl(
        dir,
        &["x509", "-in", "tls.crt", "-noout", "-ext", "subjectAltName"],
    );
    assert!(ok, "{err}");
    let body = out.lines().skip(1).collect::<Vec<_>>().join("");
    body.split(',').map(|s| s.trim().to_string()).collect()
}

fn cert_text(dir: &Path, file: &str) -> String {
    let (ok, out, err) = openssl(dir, &["x509", "-in", file, "-noout", "-text"]);
    assert!(ok, "{err}");
    out
}

#[test]
fn generated_ca_leaf_verifies_with_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca("kcred test CA");
    let leaf = ca.issue(&names(&["api.orders.svc"]), DAY).unwrap();
    write_pair(dir.path(), &ca, &leaf);
    let (ok, out, err) = openssl(dir.path(), &["verify", "-CAfile", "ca.crt", "tls.crt"]);
    assert!(ok, "verify failed: {out} {err}");
    assert!(out.contains("tls.crt: OK"), "{out}");
    for purpose in ["sslserver", "sslclient"] {
        let (ok, out, err) = openssl(
            dir.path(),
            &[
                "verify", "-purpose", purpose, "-CAfile", "ca.crt", "tls.crt",
            ],
        );
        assert!(ok && out.contains("OK"), "{purpose}: {out} {err}");
    }
}

#[test]
fn san_is_exactly_the_requested_names() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca("kcred test CA");
    let requested = names(&["api.orders.svc", "api.orders.svc.cluster.local", "orders"]);
    let leaf = ca.issue(&requested, DAY).unwrap();
    write_pair(dir.path(), &ca, &leaf);
    let expected: Vec<String> = requested.iter().map(|n| format!("DNS:{n}")).collect();
    assert_eq!(san_list(dir.path()), expected);
}

#[test]
fn leaf_and_ca_profiles() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca("kcred test CA");
    let leaf = ca.issue(&names(&["a.example", "b.example"]), DAY).unwrap();
    write_pair(dir.path(), &ca, &leaf);
    let text = cert_text(dir.path(), "tls.crt");
    for needle in [
        "Subject: CN = a.example",
        "Issuer: CN = kcred test CA",
        "CA:FALSE",
        "Digital Signature",
        "TLS Web Server Authentication, TLS Web Client Authentication",
        "X509v3 Authority Key Identifier",
        "X509v3 Subject Key Identifier",
        "prime256v1",
    ] {
        assert!(text.contains(needle), "leaf lacks {needle:?}:\n{text}");
    }
    assert!(!text.contains("Key Encipherment"), "{text}");
    let text = cert_text(dir.path(), "ca.crt");
    for needle in [
        "CA:TRUE, pathlen:0",
        "Certificate Sign, CRL Sign",
        "prime256v1",
    ] {
        assert!(text.contains(needle), "CA lacks {needle:?}:\n{text}");
    }
}

#[test]
fn long_first_name_gets_no_cn_but_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca("kcred test CA");
    let long = format!("{}.example", "a".repeat(60));
    let leaf = ca.issue(std::slice::from_ref(&long), DAY).unwrap();
    write_pair(dir.path(), &ca, &leaf);
    let (ok, out, err) = openssl(dir.path(), &["verify", "-CAfile", "ca.crt", "tls.crt"]);
    assert!(ok, "{out} {err}");
    assert_eq!(san_list(dir.path()), vec![format!("DNS:{long}")]);
    let text = cert_text(dir.path(), "tls.crt");
    assert!(
        text.contains("X509v3 Subject Alternative Name: critical"),
        "{text}"
    );
    assert!(!text.contains("Subject: CN"), "{text}");
}

#[test]
fn leaf_from_other_ca_does_not_verify() {
    let dir = tempfile::tempdir().unwrap();
    let ca_a = new_ca("CA A");
    let ca_b = new_ca("CA B");
    let leaf = ca_a.issue(&names(&["x.example"]), DAY).unwrap();
    write_pair(dir.path(), &ca_b, &leaf);
    let (ok, out, _) = openssl(dir.path(), &["verify", "-CAfile", "ca.crt", "tls.crt"]);
    assert!(!ok, "leaf of CA A verified under CA B: {out}");
}

#[test]
fn leaf_key_matches_leaf_cert() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca("kcred test CA");
    let leaf = ca.issue(&names(&["x.example"]), DAY).unwrap();
    write_pair(dir.path(), &ca, &leaf);
    let (ok1, from_key, e1) = openssl(dir.path(), &["pkey", "-in", "tls.key", "-pubout"]);
    let (ok2, from_cert, e2) =
        openssl(dir.path(), &["x509", "-in", "tls.crt", "-noout", "-pubkey"]);
    assert!(ok1 && ok2, "{e1} {e2}");
    assert!(from_key.contains("BEGIN PUBLIC KEY"));
    assert_eq!(from_key, from_cert);
    assert!(leaf.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
}

#[test]
fn from_pem_round_trip_issues_verifiable_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let original = new_ca("kcred test CA");
    let loaded = CertificateAuthority::from_pem(original.cert_pem(), original.key_pem()).unwrap();
    assert_eq!(loaded.cert_pem(), original.cert_pem());
    assert_eq!(loaded.not_after(), original.not_after());
    let leaf = loaded.issue(&names(&["x.example"]), DAY).unwrap();
    write_pair(dir.path(), &original, &leaf);
    let (ok, out, err) = openssl(dir.path(), &["verify", "-CAfile", "ca.crt", "tls.crt"]);
    assert!(ok && out.contains("OK"), "{out} {err}");
}

/// Makes a CA with the openssl CLI, as an operator would, and returns (cert, key).
fn openssl_ca(dir: &Path, newkey: &[&str], subj: &str) -> (String, String) {
    openssl_ca_with_usage(dir, newkey, subj, "keyUsage=critical,keyCertSign,cRLSign")
}

fn openssl_ca_with_usage(dir: &Path, newkey: &[&str], subj: &str, ku: &str) -> (String, String) {
    let mut args = vec!["req", "-x509", "-nodes", "-days", "30", "-subj", subj];
    args.extend_from_slice(newkey);
    args.extend_from_slice(&["-keyout", "op.key", "-out", "op.crt"]);
    args.extend_from_slice(&["-addext", "basicConstraints=critical,CA:TRUE"]);
    args.extend_from_slice(&["-addext", ku]);
    let (ok, _, err) = openssl(dir, &args);
    assert!(ok, "{err}");
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    (read("op.crt"), read("op.key"))
}

#[test]
fn from_pem_accepts_openssl_made_cas() {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];
    let rsa = ["-newkey", "rsa:2048"];
    for newkey in [&ec[..], &rsa[..]] {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = openssl_ca(dir.path(), newkey, "/C=DE/O=Example Org/CN=Ops Root CA");
        let ca = CertificateAuthority::from_pem(&cert, &key).unwrap();
        let leaf = ca.issue(&names(&["x.example"]), DAY).unwrap();
        write_pair(dir.path(), &ca, &leaf);
        let (ok, out, err) = openssl(dir.path(), &["verify", "-CAfile", "op.crt", "tls.crt"]);
        assert!(ok && out.contains("OK"), "{newkey:?}: {out} {err}");
    }
}

#[test]
fn from_pem_refuses_subject_it_cannot_reproduce() {
    let dir = tempfile::tempdir().unwrap();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];
    let (cert, key) = openssl_ca(dir.path(), &ec, "/DC=com/DC=example/CN=Ops CA");
    let err = CertificateAuthority::from_pem(&cert, &key).unwrap_err();
    assert!(matches!(err, CertError::UnsupportedCa(_)), "{err}");
}

#[test]
fn from_pem_refuses_leaf_mismatched_key_bundle_and_garbage() {
    let ca = new_ca("kcred test CA");
    let other = new_ca("other CA");
    let leaf = ca.issue(&names(&["x.example"]), DAY).unwrap();

    let err = CertificateAuthority::from_pem(&leaf.cert_pem, &leaf.key_pem).unwrap_err();
    assert!(matches!(err, CertError::NotACa(_)), "{err}");

    let err = CertificateAuthority::from_pem(ca.cert_pem(), other.key_pem()).unwrap_err();
    assert!(matches!(err, CertError::KeyMismatch), "{err}");

    let bundle = format!("{}{}", ca.cert_pem(), other.cert_pem());
    let err = CertificateAuthority::from_pem(&bundle, ca.key_pem()).unwrap_err();
    assert!(matches!(err, CertError::ParseCaCert(_)), "{err}");

    let err = CertificateAuthority::from_pem("not a pem", ca.key_pem()).unwrap_err();
    assert!(matches!(err, CertError::ParseCaCert(_)), "{err}");

    let err = CertificateAuthority::from_pem(ca.cert_pem(), "garbage").unwrap_err();
    assert!(matches!(err, CertError::ParseCaKey(_)), "{err}");
}

#[test]
fn invalid_names_are_refused() {
    let ca = new_ca("kcred test CA");
    let long_label = format!("{}.example", "a".repeat(64));
    let too_long = vec!["abcdefghi"; 26].join(".");
    assert!(too_long.len() > 253);
    let bad: &[&[&str]] = &[
        &[],
        &["Upper.example"],
        &["with space.example"],
        &["*.example"],
        &["trailing.dot."],
        &["empty..label"],
        &["-lead.example"],
        &["trail-.example"],
        &["under_score.example"],
        &["10.0.0.1"],
        &["ümlaut.example"],
        &[""],
        &[&long_label],
        &[&too_long],
        &["dup.example", "dup.example"],
    ];
    for list in bad {
        let err = ca.issue(&names(list), DAY).unwrap_err();
        assert!(
            matches!(err, CertError::InvalidSan { .. } | CertError::SanCount(_)),
            "{list:?} gave {err}"
        );
    }
    let many: Vec<String> = (0..=MAX_DNS_NAMES)
        .map(|i| format!("n{i}.example"))
        .collect();
    assert!(matches!(ca.issue(&many, DAY), Err(CertError::SanCount(33))));
    let max: Vec<String> = many[..MAX_DNS_NAMES].to_vec();
    assert!(ca.issue(&max, DAY).is_ok());
    assert!(
        ca.issue(&names(&["0a.example", "x-1.y2", "localhost"]), DAY)
            .is_ok()
    );
}

#[test]
fn lifetime_and_validity_bounds() {
    let ca = new_ca("kcred test CA");
    let n = names(&["x.example"]);
    assert!(matches!(
        ca.issue(&n, Duration::from_secs(59)),
        Err(CertError::Lifetime { .. })
    ));
    assert!(matches!(
        ca.issue(&n, 398 * DAY),
        Err(CertError::Lifetime { .. })
    ));
    assert!(ca.issue(&n, MIN_LEAF_LIFETIME).is_ok());
    let err = CertificateAuthority::generate("x", Duration::from_secs(60)).unwrap_err();
    assert!(matches!(err, CertError::Lifetime { .. }), "{err}");
    for cn in ["", "a\nb", &"c".repeat(65)] {
        let err = CertificateAuthority::generate(cn, DAY).unwrap_err();
        assert!(matches!(err, CertError::InvalidCommonName(_)), "{err}");
    }
}

#[test]
fn not_after_is_now_plus_lifetime() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca("kcred test CA");
    let lifetime = 7 * DAY;
    let expected = SystemTime::now() + lifetime;
    let leaf = ca.issue(&names(&["x.example"]), lifetime).unwrap();
    let diff = |a: SystemTime, b: SystemTime| a.duration_since(b).unwrap_or_else(|e| e.duration());
    assert!(diff(leaf.not_after, expected) < Duration::from_secs(5));
    assert!(
        diff(leaf.not_before + Duration::from_secs(60), SystemTime::now()) < Duration::from_secs(5)
    );

    // x509-parser reads back exactly what IssuedCert reports.
    let der = single_cert_der(&leaf.cert_pem).unwrap();
    let cert = parse_cert(&der).unwrap();
    assert_eq!(
        unix_to_system(cert.validity().not_after.timestamp()),
        leaf.not_after
    );
    assert_eq!(
        unix_to_system(cert.validity().not_before.timestamp()),
        leaf.not_before
    );

    // openssl agrees: still valid shortly before the end, expired shortly after.
    write_pair(dir.path(), &ca, &leaf);
    let secs = lifetime.as_secs();
    let before = (secs - 10).to_string();
    let after = (secs + 10).to_string();
    let (ok, _, _) = openssl(
        dir.path(),
        &["x509", "-in", "tls.crt", "-noout", "-checkend", &before],
    );
    assert!(ok, "leaf expires too early");
    let (ok, _, _) = openssl(
        dir.path(),
        &["x509", "-in", "tls.crt", "-noout", "-checkend", &after],
    );
    assert!(!ok, "leaf lives too long");
}

#[test]
fn leaf_is_clamped_to_ca_not_after() {
    let ca = CertificateAuthority::generate("short CA", MIN_CA_VALIDITY).unwrap();
    let leaf = ca.issue(&names(&["x.example"]), DAY).unwrap();
    assert_eq!(leaf.not_after, ca.not_after());
}

#[test]
fn serials_are_random_positive_and_match_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca("kcred test CA");
    let a = ca.issue(&names(&["x.example"]), DAY).unwrap();
    let b = ca.issue(&names(&["x.example"]), DAY).unwrap();
    assert_ne!(a.serial_hex, b.serial_hex);
    assert_eq!(a.serial_hex.len(), 32);
    write_pair(dir.path(), &ca, &a);
    let (ok, out, err) = openssl(dir.path(), &["x509", "-in", "tls.crt", "-noout", "-serial"]);
    assert!(ok, "{err}");
    assert_eq!(
        out.trim().to_lowercase(),
        format!("serial={}", a.serial_hex)
    );
}

#[test]
fn debug_output_never_shows_keys() {
    let ca = new_ca("kcred test CA");
    let leaf = ca.issue(&names(&["x.example"]), DAY).unwrap();
    let loaded = CertificateAuthority::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
    for dbg in [
        format!("{ca:?}"),
        format!("{loaded:?}"),
        format!("{leaf:?}"),
    ] {
        assert!(!dbg.contains("PRIVATE KEY"), "{dbg}");
        assert!(dbg.contains("redacted"), "{dbg}");
    }
    assert!(ca.key_pem().contains("PRIVATE KEY"));
}

#[test]
fn from_pem_refuses_ca_without_cert_sign_or_expired() {
    let dir = tempfile::tempdir().unwrap();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];
    let (cert, key) = openssl_ca_with_usage(
        dir.path(),
        &ec,
        "/CN=No Sign CA",
        "keyUsage=critical,digitalSignature",
    );
    let err = CertificateAuthority::from_pem(&cert, &key).unwrap_err();
    assert!(matches!(err, CertError::NotACa(_)), "{err}");

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.not_before = to_offset(unix_now().unwrap() - 7200).unwrap();
    params.not_after = to_offset(unix_now().unwrap() - 3600).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let err = CertificateAuthority::from_pem(&cert.pem(), &key.serialize_pem()).unwrap_err();
    assert!(matches!(err, CertError::CaExpired), "{err}");
}

#[test]
fn ca_can_be_shared_across_tasks() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<CertificateAuthority>();
    assert_send_sync::<IssuedCert>();
    assert_send_sync::<CertError>();
}
