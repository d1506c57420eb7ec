//! What a pod asks for, read from its `kcred.io/*` annotations.
//!
//! Pods are the untrusted side: every name is validated strictly here, and a
//! malformed annotation is an `InvalidArgument` that names the annotation
//! and the bad entry.

use std::collections::{BTreeMap, BTreeSet};

use crate::names::{self, NameError, ServicePrincipal};

/// Annotation listing the service principals whose keytabs the pod wants.
pub const KEYTABS: &str = "kcred.io/keytabs";
/// Annotation naming the role account whose prestashed TGT the pod wants.
pub const TICKETS: &str = "kcred.io/tickets";
/// Annotation listing the DNS names of the pod's certificate.
pub const CERTS: &str = "kcred.io/certs";
/// Annotation listing the data-encryption key ids the pod wants.
pub const KEYS: &str = "kcred.io/keys";

/// Annotation overriding where the admission webhook mounts the kcred
/// volume in every container (default [`DEFAULT_MOUNT_PATH`]).
pub const MOUNT_PATH: &str = "kcred.io/mount-path";
/// Where the admission webhook mounts the kcred volume by default.
pub const DEFAULT_MOUNT_PATH: &str = "/var/run/kcred";
/// Prefix of every annotation kcred reads.
pub const PREFIX: &str = "kcred.io/";
/// Every `kcred.io/*` annotation kcred knows; any other under the prefix
/// is a typo the admission webhook refuses.
pub const KNOWN: [&str; 5] = [KEYTABS, TICKETS, CERTS, KEYS, MOUNT_PATH];
/// Longest mount path accepted.
const MAX_MOUNT_PATH_LEN: usize = 256;

/// Longest annotation value kcred reads.
const MAX_VALUE_LEN: usize = 8 * 1024;
/// Most entries one annotation may list.
const MAX_ENTRIES: usize = 32;

/// Why a pod's annotations could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnotationError {
    /// The pod carries no kcred annotation at all.
    #[error(
        "pod has no kcred.io/ annotations: nothing to deliver (annotate it with {KEYTABS}, {TICKETS}, {CERTS} or {KEYS})"
    )]
    Nothing,
    /// An annotation value is oversized or lists too many entries.
    #[error("annotation {annotation}: {reason}")]
    Malformed {
        /// Which annotation.
        annotation: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// One entry is not a valid name.
    #[error("annotation {annotation}: {source}")]
    BadName {
        /// Which annotation.
        annotation: &'static str,
        /// The name error.
        source: NameError,
    },
}

/// The credentials one pod asks for, validated and deduplicated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CredentialRequest {
    /// Service principals for the pod's `krb5.keytab`.
    pub keytabs: BTreeSet<ServicePrincipal>,
    /// The role account whose TGT the pod wants as `krb5cc`.
    pub ticket: Option<String>,
    /// DNS names for one certificate (`tls.crt`, `tls.key`, `ca.crt`).
    pub certs: BTreeSet<String>,
    /// Data-encryption key ids.
    pub keys: BTreeSet<String>,
}

impl CredentialRequest {
    /// Reads the kcred annotations of a pod; principals must be of a
    /// served realm.
    pub fn from_annotations<S: names::Served + ?Sized>(
        annotations: &BTreeMap<String, String>,
        realm: &S,
    ) -> Result<Self, AnnotationError> {
        let mut req = CredentialRequest::default();
        let bad = |annotation| move |source| AnnotationError::BadName { annotation, source };
        if let Some(value) = annotations.get(TICKETS) {
            let entries = split_list(TICKETS, value)?;
            if entries.len() != 1 {
                return Err(AnnotationError::Malformed {
                    annotation: TICKETS,
                    reason: "names one role account".into(),
                });
            }
            names::validate_login(entries[0]).map_err(bad(TICKETS))?;
            req.ticket = Some(entries[0].to_string());
        }
        if let Some(value) = annotations.get(CERTS) {
            for entry in split_list(CERTS, value)? {
                names::validate_dns_name("certificate name", entry).map_err(bad(CERTS))?;
                req.certs.insert(entry.to_string());
            }
        }
        if let Some(value) = annotations.get(KEYS) {
            for entry in split_list(KEYS, value)? {
                names::validate_key_id(entry).map_err(bad(KEYS))?;
                req.keys.insert(entry.to_string());
            }
        }
        if let Some(value) = annotations.get(KEYTABS) {
            for entry in split_list(KEYTABS, value)? {
                let sp = ServicePrincipal::parse(entry, realm).map_err(|source| {
                    AnnotationError::BadName {
                        annotation: KEYTABS,
                        source,
                    }
                })?;
                req.keytabs.insert(sp);
            }
        }
        if req.keytabs.is_empty()
            && req.ticket.is_none()
            && req.certs.is_empty()
            && req.keys.is_empty()
        {
            return Err(AnnotationError::Nothing);
        }
        Ok(req)
    }
}

/// The mount path the pod asks for, else [`DEFAULT_MOUNT_PATH`]: an
/// absolute path of printable ASCII without `..` components, `:` or
/// whitespace, and not `/` itself.
pub fn mount_path(annotations: &BTreeMap<String, String>) -> Result<&str, AnnotationError> {
    let Some(path) = annotations.get(MOUNT_PATH) else {
        return Ok(DEFAULT_MOUNT_PATH);
    };
    let bad = |reason: &str| AnnotationError::Malformed {
        annotation: MOUNT_PATH,
        reason: format!("{path:?} {reason}"),
    };
    if !path.starts_with('/') {
        return Err(bad("is not an absolute path"));
    }
    if path.len() > MAX_MOUNT_PATH_LEN {
        return Err(bad(&format!("is longer than {MAX_MOUNT_PATH_LEN} bytes")));
    }
    if !path.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
        return Err(bad("may hold only printable ASCII without ':' or spaces"));
    }
    if path.split('/').any(|c| c == "..") {
        return Err(bad("must not contain '..'"));
    }
    if path.trim_end_matches('/').is_empty() {
        return Err(bad("would hide the container's whole file system"));
    }
    Ok(path)
}

/// Splits a comma-separated annotation value into trimmed, non-empty entries.
fn split_list<'a>(
    annotation: &'static str,
    value: &'a str,
) -> Result<Vec<&'a str>, AnnotationError> {
    if value.len() > MAX_VALUE_LEN {
        return Err(AnnotationError::Malformed {
            annotation,
            reason: format!("value is longer than {MAX_VALUE_LEN} bytes"),
        });
    }
    let entries: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    if entries.is_empty() {
        return Err(AnnotationError::Malformed {
            annotation,
            reason: "lists no entries".into(),
        });
    }
    if entries.len() > MAX_ENTRIES {
        return Err(AnnotationError::Malformed {
            annotation,
            reason: format!(
                "lists {} entries; at most {MAX_ENTRIES} are allowed",
                entries.len()
            ),
        });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn keytab_list_is_split_trimmed_and_deduplicated() {
        let req = CredentialRequest::from_annotations(
            &ann(&[(
                KEYTABS,
                "HTTP/web.example.com, postgres/db1.example.com ,HTTP/web.example.com@KCRED.TEST",
            )]),
            "KCRED.TEST",
        )
        .expect("valid");
        let names: Vec<String> = req.keytabs.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            names,
            [
                "HTTP/web.example.com@KCRED.TEST",
                "postgres/db1.example.com@KCRED.TEST"
            ]
        );
    }

    #[test]
    fn a_bad_entry_names_the_annotation() {
        let err = CredentialRequest::from_annotations(
            &ann(&[(KEYTABS, "HTTP/web.example.com, evil name")]),
            "KCRED.TEST",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(KEYTABS) && msg.contains("evil name"), "{msg}");
    }

    #[test]
    fn no_annotation_means_nothing_to_deliver() {
        let err =
            CredentialRequest::from_annotations(&ann(&[("other", "x")]), "KCRED.TEST").unwrap_err();
        assert_eq!(err, AnnotationError::Nothing);
        let err = CredentialRequest::from_annotations(&ann(&[(KEYTABS, " , ")]), "KCRED.TEST")
            .unwrap_err();
        assert!(matches!(err, AnnotationError::Malformed { .. }));
    }

    #[test]
    fn all_four_kinds_are_read_and_validated() {
        let req = CredentialRequest::from_annotations(
            &ann(&[
                (TICKETS, "tsfoo"),
                (CERTS, "web.example.com, api.example.com"),
                (KEYS, "orders-db"),
            ]),
            "KCRED.TEST",
        )
        .expect("valid");
        assert_eq!(req.ticket.as_deref(), Some("tsfoo"));
        assert_eq!(req.certs.len(), 2);
        assert!(req.keys.contains("orders-db"));
        for (k, v) in [
            (TICKETS, "a, b"),
            (TICKETS, "Root"),
            (CERTS, "*.example.com"),
            (CERTS, "Web.Example.com"),
            (KEYS, "orders db"),
        ] {
            let err =
                CredentialRequest::from_annotations(&ann(&[(k, v)]), "KCRED.TEST").expect_err(v);
            assert!(err.to_string().contains(k), "{err}");
        }
    }

    #[test]
    fn mount_path_defaults_and_refuses_what_kubernetes_or_the_pod_should_not_have() {
        assert_eq!(mount_path(&ann(&[])).unwrap(), DEFAULT_MOUNT_PATH);
        assert_eq!(
            mount_path(&ann(&[(MOUNT_PATH, "/etc/kcred")])).unwrap(),
            "/etc/kcred"
        );
        for bad in ["etc/kcred", "/", "//", "/a/../b", "/a b", "/c:d", ""] {
            let err = mount_path(&ann(&[(MOUNT_PATH, bad)])).expect_err(bad);
            assert!(err.to_string().contains(MOUNT_PATH), "{err}");
        }
    }

    #[test]
    fn too_many_entries_are_refused() {
        let many: Vec<String> = (0..40).map(|i| format!("HTTP/h{i}.example.com")).collect();
        let err =
            CredentialRequest::from_annotations(&ann(&[(KEYTABS, &many.join(","))]), "KCRED.TEST")
                .unwrap_err();
        assert!(matches!(err, AnnotationError::Malformed { .. }));
    }
}
