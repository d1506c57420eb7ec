//! The validation: a pod that kcred would refuse at mount time is refused
//! when it is created, with the reason, instead of hanging in
//! `ContainerCreating`.
//!
//! In order (the first refusal wins): every `kcred.io/*` key is one kcred
//! knows (else the nearest known key is suggested); the values parse
//! ([`crate::annotations`]); the namespace has a role account that is
//! granted what the pod asks for ([`crate::policy`]); and the pod runs as
//! that role account ([`crate::admission::identity`], the same rule the
//! controller applies before it issues anything).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

use super::nearest::nearest;
use super::review::Verdict;
use crate::annotations::{self, AnnotationError, CredentialRequest, KNOWN, PREFIX};
use crate::policy::Policy;

/// The check of unknown keys: a refusal naming the key and the nearest
/// known one.
fn unknown_key(annotations: &BTreeMap<String, String>) -> Option<Verdict> {
    let key = annotations
        .keys()
        .find(|k| k.starts_with(PREFIX) && !KNOWN.contains(&k.as_str()))?;
    let hint = match nearest(key, &KNOWN) {
        Some(n) => format!("did you mean {n}?"),
        None => format!("kcred reads {}", KNOWN.join(", ")),
    };
    Some(Verdict::invalid(format!(
        "annotation {key} is not a kcred annotation: {hint}"
    )))
}

/// The pod as the controller's pod view would hold it. At creation the
/// API server has not yet given it a UID, and a pod of a controller has
/// only `generateName`.
fn view(pod: &Pod, namespace: &str) -> Option<crate::pods::PodInfo> {
    let mut pod = pod.clone();
    let meta = &mut pod.metadata;
    meta.namespace = Some(namespace.to_string());
    if meta.name.as_deref().unwrap_or("").is_empty() {
        meta.name = Some(format!("{}*", meta.generate_name.as_deref().unwrap_or("")));
    }
    meta.uid.get_or_insert_with(String::new);
    crate::pods::kube_source::pod_info(pod)
}

/// Decides whether `pod`, created in `namespace`, may exist.
pub fn check<S: crate::names::Served + ?Sized>(
    pod: &Pod,
    namespace: &str,
    realm: &S,
    policy: &Policy,
) -> Verdict {
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    if !annotations.keys().any(|k| k.starts_with(PREFIX)) {
        return Verdict::Allow;
    }
    if let Some(refusal) = unknown_key(&annotations) {
        return refusal;
    }
    if let Err(e) = annotations::mount_path(&annotations) {
        return Verdict::invalid(e.to_string());
    }
    let wants = match CredentialRequest::from_annotations(&annotations, realm) {
        Ok(w) => w,
        Err(e @ AnnotationError::Nothing) => {
            return Verdict::invalid(format!(
                "{} says where to mount, but {e}",
                annotations::MOUNT_PATH
            ));
        }
        Err(e) => return Verdict::invalid(e.to_string()),
    };
    let role = match policy.authorize(namespace, &wants) {
        Ok(r) => r,
        Err(d) => return Verdict::forbidden(d.to_string()),
    };
    let Some(info) = view(pod, namespace) else {
        return Verdict::invalid("the pod has no name");
    };
    match crate::admission::identity::check(&info, role) {
        Ok(()) => Verdict::Allow,
        Err(refusal) => Verdict::forbidden(refusal.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const REALM: &str = "KCRED.TEST";

    fn policy() -> Policy {
        crate::policy::parse_policy(
            std::path::Path::new("policy.toml"),
            r#"
[[role_accounts]]
login = "websvc"
uid = 1500
gid = 1500
namespaces = ["web"]
service_principals = ["HTTP/web.example.com"]
"#,
            REALM,
        )
        .unwrap()
    }

    fn pod(annotations: Value, run_as: Option<i64>) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"generateName": "web-", "annotations": annotations},
            "spec": {
                "securityContext": {"runAsUser": run_as, "runAsGroup": 1500},
                "containers": [{"name": "app"}],
            },
        }))
        .unwrap()
    }

    fn denial(v: Verdict) -> (u16, String) {
        match v {
            Verdict::Deny { code, message } => (code, message),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_pod_the_policy_grants_running_as_its_role_account_is_allowed() {
        let p = pod(
            json!({"kcred.io/keytabs": "HTTP/web.example.com"}),
            Some(1500),
        );
        assert_eq!(check(&p, "web", REALM, &policy()), Verdict::Allow);
        let plain = pod(json!({"app": "x"}), None);
        assert_eq!(check(&plain, "nowhere", REALM, &policy()), Verdict::Allow);
    }

    #[test]
    fn an_unknown_key_is_refused_with_the_nearest_known_one() {
        let p = pod(
            json!({"kcred.io/keytab": "HTTP/web.example.com"}),
            Some(1500),
        );
        let (code, msg) = denial(check(&p, "web", REALM, &policy()));
        assert_eq!(code, 400);
        assert_eq!(
            msg,
            "annotation kcred.io/keytab is not a kcred annotation: did you mean kcred.io/keytabs?"
        );
        let p = pod(json!({"kcred.io/whatever": "x"}), Some(1500));
        let (_, msg) = denial(check(&p, "web", REALM, &policy()));
        assert!(
            msg.contains("kcred reads kcred.io/keytabs, kcred.io/tickets"),
            "{msg}"
        );
    }

    #[test]
    fn malformed_values_are_refused_naming_the_annotation() {
        for (k, v) in [
            ("kcred.io/keytabs", "HTTP/web.example.com, evil name"),
            ("kcred.io/tickets", "a, b"),
            ("kcred.io/certs", "*.example.com"),
            ("kcred.io/mount-path", "relative"),
        ] {
            let p = pod(json!({k: v, "kcred.io/keys": "k1"}), Some(1500));
            let (code, msg) = denial(check(&p, "web", REALM, &policy()));
            assert_eq!(code, 400, "{msg}");
            assert!(msg.contains(k), "{msg}");
        }
        let p = pod(json!({"kcred.io/mount-path": "/x"}), Some(1500));
        let (_, msg) = denial(check(&p, "web", REALM, &policy()));
        assert!(msg.contains("nothing to deliver"), "{msg}");
    }

    #[test]
    fn a_namespace_without_role_account_is_refused() {
        let p = pod(
            json!({"kcred.io/keytabs": "HTTP/web.example.com"}),
            Some(1500),
        );
        let (code, msg) = denial(check(&p, "other", REALM, &policy()));
        assert_eq!(code, 403);
        assert!(
            msg.contains("namespace \"other\" belongs to no role account"),
            "{msg}"
        );
    }

    #[test]
    fn a_pod_not_running_as_the_role_account_is_refused() {
        let p = pod(json!({"kcred.io/keytabs": "HTTP/web.example.com"}), Some(0));
        let (code, msg) = denial(check(&p, "web", REALM, &policy()));
        assert_eq!(code, 403);
        assert!(
            msg.contains("runs the pod as uid 0") || msg.contains("as uid 0"),
            "{msg}"
        );
        assert!(msg.contains("runAsUser 1500"), "{msg}");
        let p = pod(json!({"kcred.io/keytabs": "HTTP/web.example.com"}), None);
        let (_, msg) = denial(check(&p, "web", REALM, &policy()));
        assert!(msg.contains("leaves runAsUser"), "{msg}");
    }
}
