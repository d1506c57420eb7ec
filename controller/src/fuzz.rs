//! Generated-input tests of every parser of untrusted input in the
//! controller: no panic, no hang (inputs are bounded), and the parser's
//! own error type on bad input. `PROPTEST_CASES` sets the cases per
//! target (256 by default; `scripts/fuzz.sh` runs 100,000).
//!
//! Inputs are either arbitrary or a valid sample with a few bytes
//! overwritten, inserted or removed, or cut short, so the parsers are
//! driven past their first checks.

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;

/// Longest generated input.
pub const MAX_LEN: usize = 4096;

/// One edit of a sample.
#[derive(Debug, Clone)]
pub enum Edit {
    /// Overwrite the byte at (index mod len).
    Set(usize, u8),
    /// Insert a byte.
    Insert(usize, u8),
    /// Remove a byte.
    Remove(usize),
    /// Cut the input to (index mod len) bytes.
    Cut(usize),
}

fn apply(mut v: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let len = v.len().max(1);
        match *e {
            Edit::Set(i, b) if !v.is_empty() => v[i % len] = b,
            Edit::Insert(i, b) => v.insert(i % (v.len() + 1), b),
            Edit::Remove(i) if !v.is_empty() => {
                v.remove(i % len);
            }
            Edit::Cut(i) => v.truncate(i % len),
            _ => {}
        }
    }
    v.truncate(MAX_LEN);
    v
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        2 => any::<usize>().prop_map(Edit::Remove),
        1 => any::<usize>().prop_map(Edit::Cut),
    ]
}

/// Arbitrary bytes, or one of `samples` with up to 8 edits.
pub fn bytes_near(samples: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let n = samples.len();
    prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..MAX_LEN),
        3 => (0..n, proptest::collection::vec(edit(), 0..8))
            .prop_map(move |(i, edits)| apply(samples[i].clone(), &edits)),
    ]
}

/// Text near the samples (edited bytes, read as UTF-8 lossily), or
/// arbitrary text.
pub fn text_near(samples: &[&str]) -> impl Strategy<Value = String> {
    let bytes: Vec<Vec<u8>> = samples.iter().map(|s| s.as_bytes().to_vec()).collect();
    prop_oneof![
        1 => ".{0,512}",
        3 => bytes_near(bytes).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

/// A pod watch event as the API server streams it.
pub const WATCH_EVENT_SAMPLE: &str = r#"{"type":"MODIFIED","object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web-0","namespace":"web","uid":"5c0e1d2a-7b8f-4c3e-9a61-2f4d8e0b1c37","resourceVersion":"42","annotations":{"kcred.io/keytabs":"HTTP/web.example.com","other":"x"}},"spec":{"nodeName":"node-a","serviceAccountName":"web","securityContext":{"runAsUser":1500,"runAsGroup":1500,"fsGroup":1500,"supplementalGroups":[1500]},"containers":[{"name":"app","securityContext":{"runAsUser":1500}}],"initContainers":[{"name":"init"}]},"status":{"phase":"Running"}}}"#;

/// The event kube-rs reads when a watch expires.
pub const WATCH_ERROR_SAMPLE: &str = r#"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","status":"Failure","message":"too old resource version","reason":"Expired","code":410}}"#;

/// An admission review of a pod asking for a keytab (what the API server
/// posts to the webhook).
pub const ADMISSION_REVIEW_SAMPLE: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"705ab4f5-6393-11e8-b7cc-42010a800002","kind":{"group":"","version":"v1","kind":"Pod"},"namespace":"web","operation":"CREATE","object":{"metadata":{"generateName":"web-","annotations":{"kcred.io/keytabs":"HTTP/web.example.com","kcred.io/mount-path":"/etc/kcred"}},"spec":{"securityContext":{"runAsUser":1500,"runAsGroup":1500},"containers":[{"name":"app","env":[{"name":"A","value":"1"}],"volumeMounts":[{"name":"d","mountPath":"/d"}]}],"initContainers":[{"name":"init"}],"volumes":[{"name":"d","emptyDir":{}}]}}}}"#;

/// A valid policy file, the seed of the policy target.
pub const POLICY_SAMPLE: &str = r#"
[[role_accounts]]
login = "websvc"
uid = 1500
gid = 1500
groups = ["web"]
namespaces = ["web"]
service_principals = ["HTTP/web.example.com", "HTTP/api.example.com@EXAMPLE.TEST"]
certificates = ["web.example.com"]
keys = ["orders-db"]
"#;

/// A valid pods file.
pub const PODS_SAMPLE: &str = r#"
[[pods]]
namespace = "web"
name = "web-0"
uid = "1111"
node_name = "node-a"
fs_group = 1500
annotations = { "kcred.io/keytabs" = "HTTP/web.example.com", "kcred.io/keys" = "orders-db" }
"#;

/// A valid controller config.
pub const CONFIG_SAMPLE: &str = r#"
listen = "127.0.0.1:7400"
realm = "EXAMPLE.TEST"
master_key_file = "/etc/kcred/master.key"
store_path = "/var/lib/kcred/store.redb"
policy_file = "/etc/kcred/policy.toml"
audit_log = "/var/lib/kcred/audit.jsonl"
audit_key = "/etc/kcred/audit.key"
refresh_fraction = 0.5

[kadmin]
principal = "kcred/admin@EXAMPLE.TEST"
keytab = "/etc/kcred/kadmin.keytab"
work_dir = "/run/kcred"

[auth]
mode = "kerberos"
keytab = "/etc/kcred/kcred.keytab"
short_node_names = true
operators = ["alice@EXAMPLE.TEST"]

[tls]
names = ["kcred.example.com"]

[leases]
ttl_secs = 30
rotate_keytabs_on_loss = true

[limits]
max_connections = 2048

[reserved]
host_patterns = ["*.nodes.example.com"]
"#;

mod tests {
    use super::*;
    use crate::annotations::{AnnotationError, CredentialRequest};
    use crate::config::{Config, ConfigError};
    use crate::names::{self, ServicePrincipal};
    use crate::reload::LoadError;

    const REALM: &str = "EXAMPLE.TEST";

    fn name_text() -> impl Strategy<Value = String> {
        text_near(&[
            "HTTP/web.example.com",
            "HTTP/web.example.com@EXAMPLE.TEST",
            "host/node-1.nodes.example.com",
            "web-0",
            "orders-db",
            "websvc",
            "a.b-c.d",
        ])
    }

    proptest! {
        #[test]
        fn fuzz_names(input in name_text()) {
            // The error type is the signature's; a valid name obeys it.
            if names::validate_dns_name("name", &input).is_ok() {
                prop_assert!(!input.is_empty() && input.len() <= 253);
                prop_assert!(input.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
            }
            if names::validate_k8s_name("name", &input).is_ok() {
                prop_assert!(!input.is_empty() && input.len() <= 253);
            }
            let _ = names::validate_realm(&input);
            let _ = names::validate_login(&input);
            let _ = names::validate_key_id(&input);
            if let Ok(p) = ServicePrincipal::parse(&input, REALM) {
                // What was accepted reads back as itself.
                let again = ServicePrincipal::parse(&p.to_string(), REALM);
                prop_assert_eq!(again.as_ref().ok(), Some(&p));
            }
        }

        #[test]
        fn fuzz_annotations(keytabs in name_text(), certs in name_text(), keys in name_text(), ticket in name_text()) {
            let mut a = BTreeMap::new();
            a.insert("kcred.io/keytabs".to_string(), keytabs);
            a.insert("kcred.io/certs".to_string(), certs);
            a.insert("kcred.io/keys".to_string(), keys);
            a.insert("kcred.io/tickets".to_string(), ticket);
            let r: Result<CredentialRequest, AnnotationError> = CredentialRequest::from_annotations(&a, REALM);
            if let Err(e) = r {
                prop_assert!(e.to_string().contains("kcred.io/") || matches!(e, AnnotationError::Nothing));
            }
        }

        #[test]
        fn fuzz_policy_file(text in text_near(&[crate::fuzz::POLICY_SAMPLE])) {
            match crate::policy::parse_policy(Path::new("policy.toml"), &text, REALM) {
                Ok(_) => {}
                Err(LoadError::Invalid { reason, .. }) => prop_assert!(!reason.is_empty()),
                Err(e @ LoadError::Read { .. }) => prop_assert!(false, "parsing read a file: {e}"),
            }
        }

        #[test]
        fn fuzz_pods_file(text in text_near(&[crate::fuzz::PODS_SAMPLE])) {
            match crate::pods::file_source::parse_pods(Path::new("pods.toml"), &text) {
                Ok(_) => {}
                Err(LoadError::Invalid { reason, .. }) => prop_assert!(!reason.is_empty()),
                Err(e @ LoadError::Read { .. }) => prop_assert!(false, "parsing read a file: {e}"),
            }
        }

        #[test]
        fn fuzz_watch_events(line in bytes_near(vec![
            crate::fuzz::WATCH_EVENT_SAMPLE.as_bytes().to_vec(),
            crate::fuzz::WATCH_ERROR_SAMPLE.as_bytes().to_vec(),
        ])) {
            use k8s_openapi::api::core::v1::Pod;
            use kube::api::WatchEvent;
            // A line the client cannot read is a serde error (the watch then
            // restarts); a pod it can read keeps only what kcred needs.
            if let Ok(WatchEvent::Added(pod) | WatchEvent::Modified(pod) | WatchEvent::Deleted(pod)) =
                serde_json::from_slice::<WatchEvent<Pod>>(&line)
                && let Some(info) = crate::pods::kube_source::pod_info(pod)
            {
                prop_assert!(info.annotations.keys().all(|k| k.starts_with("kcred.io/")));
                prop_assert!(!info.uid.is_empty());
            }
        }

        #[test]
        fn fuzz_admission_reviews(body in bytes_near(vec![
            crate::fuzz::ADMISSION_REVIEW_SAMPLE.as_bytes().to_vec(),
        ])) {
            use crate::webhook::review::{self, Verdict};
            use crate::webhook::{mutate, validate};
            // A body the webhook cannot read is a 400 with a reason; a pod
            // it can read gets a verdict, and a refusal says why.
            let policy = crate::policy::parse_policy(Path::new("policy.toml"), crate::fuzz::POLICY_SAMPLE, REALM)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            match review::parse(&body).and_then(|r| r.pod()) {
                Err(e) => prop_assert!(!e.to_string().is_empty()),
                Ok(None) => {}
                Ok(Some((pod, ns))) => {
                    for v in [mutate::patch(&pod, "csi.kcred.io"), validate::check(&pod, &ns, REALM, &policy)] {
                        if let Verdict::Deny { message, code } = v {
                            prop_assert!(!message.is_empty() && (code == 400 || code == 403));
                        }
                    }
                }
            }
        }

        #[test]
        fn fuzz_config_file(text in text_near(&[crate::fuzz::CONFIG_SAMPLE])) {
            match Config::parse(Path::new("controller.toml"), &text) {
                Ok(_) | Err(ConfigError::Parse { .. }) | Err(ConfigError::Invalid { .. }) => {}
                Err(e @ ConfigError::Read { .. }) => prop_assert!(false, "parsing read a file: {e}"),
            }
        }
    }
}
