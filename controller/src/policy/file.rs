//! The policy file format (TOML), documented in `deploy/controller/policy.example.toml`.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Deserialize;

use super::{Policy, RoleAccount};
use crate::names::{self, ServicePrincipal};
use crate::reload::LoadError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    role_accounts: Vec<RoleAccountEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleAccountEntry {
    login: String,
    #[serde(default)]
    realm: Option<String>,
    uid: u32,
    gid: u32,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default)]
    service_principals: Vec<String>,
    #[serde(default)]
    certificates: Vec<String>,
    #[serde(default)]
    keys: Vec<String>,
    #[serde(default)]
    supplemental_gids: Vec<u32>,
    #[serde(default)]
    service_accounts: Vec<String>,
}

/// Parses and validates a policy file; principals without a realm belong
/// to the default realm, and one of a realm not served is an error.
pub fn parse_policy<S: names::Served + ?Sized>(
    path: &Path,
    text: &str,
    realm: &S,
) -> Result<Policy, LoadError> {
    let invalid = |reason: String| LoadError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let file: PolicyFile = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
    let mut roles = Vec::with_capacity(file.role_accounts.len());
    for e in file.role_accounts {
        let ctx = |what: String| invalid(format!("role account {:?}: {what}", e.login));
        names::validate_login(&e.login).map_err(|err| invalid(err.to_string()))?;
        if e.uid == 0 || e.gid == 0 {
            return Err(ctx("uid and gid 0 (root) are not allowed".into()));
        }
        if let Some(r) = &e.realm
            && !realm.serves(r)
        {
            return Err(ctx(format!(
                "realm {r:?} is not served (this controller serves {})",
                realm.describe()
            )));
        }
        let role_realm = e.realm.filter(|r| r != realm.default_realm());
        let mut namespaces = BTreeSet::new();
        for ns in e.namespaces {
            names::validate_k8s_name("namespace", &ns).map_err(|err| ctx(err.to_string()))?;
            namespaces.insert(ns);
        }
        let mut principals = BTreeSet::new();
        for p in e.service_principals {
            let sp = ServicePrincipal::parse(&p, realm).map_err(|err| ctx(err.to_string()))?;
            principals.insert(sp.to_string());
        }
        let mut certificates = BTreeSet::new();
        for c in e.certificates {
            names::validate_dns_name("certificate name", &c).map_err(|err| ctx(err.to_string()))?;
            certificates.insert(c);
        }
        let mut keys = BTreeSet::new();
        for k in e.keys {
            names::validate_key_id(&k).map_err(|err| ctx(err.to_string()))?;
            keys.insert(k);
        }
        if e.supplemental_gids.contains(&0) {
            return Err(ctx("supplemental_gids may not hold 0 (root)".into()));
        }
        let mut service_accounts = BTreeSet::new();
        for sa in e.service_accounts {
            names::validate_k8s_name("service account", &sa).map_err(|err| ctx(err.to_string()))?;
            service_accounts.insert(sa);
        }
        roles.push(RoleAccount {
            supplemental_gids: e.supplemental_gids.into_iter().collect(),
            service_accounts,
            logged_into_by: BTreeSet::new(),
            login: e.login,
            realm: role_realm,
            uid: e.uid,
            gid: e.gid,
            groups: e.groups,
            namespaces,
            service_principals: principals,
            certificates,
            keys,
        });
    }
    Policy::new(roles).map_err(|e| invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Denied;

    const R: &str = "KCRED.TEST";

    fn parse(text: &str) -> Result<Policy, LoadError> {
        parse_policy(Path::new("policy.toml"), text, R)
    }

    const GOOD: &str = r#"
        [[role_accounts]]
        login = "websvc"
        uid = 1500
        gid = 1500
        namespaces = ["web"]
        service_principals = ["HTTP/web.example.com"]

        [[role_accounts]]
        login = "dbsvc"
        uid = 1600
        gid = 1600
        namespaces = ["db", "db-staging"]
        service_principals = ["postgres/db1.example.com@KCRED.TEST"]
    "#;

    #[test]
    fn owner_gets_its_principal_and_others_are_refused_by_rule() {
        let p = parse(GOOD).expect("valid");
        let http = ServicePrincipal::parse("HTTP/web.example.com", R).expect("sp");
        let pg = ServicePrincipal::parse("postgres/db1.example.com", R).expect("sp");
        assert_eq!(p.authorize_keytab("web", &http).expect("allowed").uid, 1500);
        assert_eq!(
            p.authorize_keytab("db-staging", &pg)
                .expect("allowed")
                .login,
            "dbsvc"
        );
        let denied = p.authorize_keytab("db", &http).unwrap_err();
        assert!(matches!(denied, Denied::PrincipalNotOwned { .. }));
        assert!(
            denied.to_string().contains("rule service_principals"),
            "{denied}"
        );
        let denied = p.authorize_keytab("nowhere", &http).unwrap_err();
        assert!(matches!(denied, Denied::NoRoleAccount { .. }));
    }

    #[test]
    fn tickets_certificates_and_keys_follow_their_rules() {
        use crate::annotations::CredentialRequest;
        let p = parse(
            r#"
            [[role_accounts]]
            login = "websvc"
            uid = 1500
            gid = 1500
            namespaces = ["web"]
            certificates = ["web.example.com"]
            keys = ["orders-db"]
            "#,
        )
        .expect("valid");
        let mut req = CredentialRequest {
            ticket: Some("websvc".into()),
            certs: ["web.example.com".to_string()].into(),
            keys: ["orders-db".to_string()].into(),
            ..Default::default()
        };
        assert_eq!(p.authorize("web", &req).expect("allowed").login, "websvc");
        req.ticket = Some("tsfoo".into());
        let d = p.authorize("web", &req).unwrap_err();
        assert!(d.to_string().starts_with("rule tickets"), "{d}");
        req.ticket = None;
        req.certs.insert("evil.example.com".into());
        let d = p.authorize("web", &req).unwrap_err();
        assert!(
            d.to_string().starts_with("rule certificates") && d.to_string().contains("evil"),
            "{d}"
        );
        req.certs.remove("evil.example.com");
        req.keys.insert("payroll".into());
        let d = p.authorize("web", &req).unwrap_err();
        assert!(d.to_string().starts_with("rule keys"), "{d}");
    }

    #[test]
    fn a_grant_names_its_realm_so_one_name_in_another_realm_is_not_owned() {
        let served = names::Realms::new(R, ["AD.KCRED.TEST".to_string()]);
        let text = "[[role_accounts]]\nlogin = \"websvc\"\nuid = 1500\ngid = 1500\nnamespaces = [\"web\"]\n\
                    service_principals = [\"HTTP/web.example.com\", \"HTTP/ad.example.com@AD.KCRED.TEST\"]\n";
        let p = parse_policy(Path::new("policy.toml"), text, &served).expect("valid");
        let sp = |s: &str| ServicePrincipal::parse(s, &served).expect("sp");
        assert!(
            p.authorize_keytab("web", &sp("HTTP/web.example.com"))
                .is_ok()
        );
        assert!(
            p.authorize_keytab("web", &sp("HTTP/ad.example.com@AD.KCRED.TEST"))
                .is_ok()
        );
        for other in [
            "HTTP/web.example.com@AD.KCRED.TEST",
            "HTTP/ad.example.com@KCRED.TEST",
        ] {
            let d = p.authorize_keytab("web", &sp(other)).unwrap_err();
            assert!(
                matches!(d, Denied::PrincipalNotOwned { .. }),
                "{other}: {d}"
            );
        }
        let ad_role =
            "[[role_accounts]]\nlogin = \"adsvc\"\nrealm = \"AD.KCRED.TEST\"\nuid = 1\ngid = 1\n";
        let p = parse_policy(Path::new("policy.toml"), ad_role, &served).expect("served realm");
        assert_eq!(
            p.role("adsvc").and_then(|r| r.realm.as_deref()),
            Some("AD.KCRED.TEST")
        );
        let err = parse_policy(Path::new("policy.toml"), ad_role, R).unwrap_err();
        assert!(err.to_string().contains("is not served"), "{err}");
        let unserved = "[[role_accounts]]\nlogin = \"x\"\nuid = 1\ngid = 1\nservice_principals = [\"HTTP/a.example.com@OTHER.TEST\"]\n";
        assert!(parse_policy(Path::new("policy.toml"), unserved, &served).is_err());
    }

    #[test]
    fn a_namespace_claimed_twice_is_an_error() {
        let text = format!(
            "{GOOD}\n[[role_accounts]]\nlogin = \"other\"\nuid = 1700\ngid = 1700\nnamespaces = [\"web\"]\n"
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("claimed by both"), "{err}");
    }

    #[test]
    fn root_bad_names_and_unknown_fields_are_errors() {
        for bad in [
            "[[role_accounts]]\nlogin = \"x\"\nuid = 0\ngid = 1\n",
            "[[role_accounts]]\nlogin = \"x\"\nuid = 1\ngid = 1\nservice_principals = [\"HTTP/Bad Host\"]\n",
            "[[role_accounts]]\nlogin = \"x\"\nuid = 1\ngid = 1\nnamespaces = [\"UPPER\"]\n",
            "[[role_accounts]]\nlogin = \"x\"\nuid = 1\ngid = 1\nsurprise = 1\n",
            "[[role_accounts]]\nlogin = \"x\"\nuid = 1\ngid = 1\nservice_principals = [\"HTTP/a.example.com@OTHER.REALM\"]\n",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
