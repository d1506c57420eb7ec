//! Strict syntax for every name kcred accepts from a pod or a policy file.
//!
//! MIT's `krb5_parse_name` accepts nearly anything, and long names corrupt
//! the KDC's DB2 database; names also end up on `kadmin` command lines. So
//! kcred admits only a narrow, DNS-shaped grammar and a short total length,
//! and rejects everything else before it reaches Kerberos.

use std::fmt;

/// Longest principal (with realm) kcred will pass to Kerberos.
pub const MAX_PRINCIPAL_LEN: usize = 255;
const MAX_DNS_LEN: usize = 253;
const MAX_SERVICE_LEN: usize = 63;

/// Why a name was refused; the message names the offending input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The input is empty.
    #[error("empty {0}")]
    Empty(&'static str),
    /// The input is longer than kcred allows.
    #[error("{what} {input:?} is longer than {max} bytes")]
    TooLong {
        /// What kind of name.
        what: &'static str,
        /// The offending input (truncated).
        input: String,
        /// The limit.
        max: usize,
    },
    /// The input does not match the grammar.
    #[error("{what} {input:?} is invalid: {reason}")]
    Invalid {
        /// What kind of name.
        what: &'static str,
        /// The offending input (truncated).
        input: String,
        /// What rule it broke.
        reason: &'static str,
    },
    /// The principal names a realm the controller does not serve.
    #[error("principal {input:?} is in realm {realm:?}, but this controller serves {expected}")]
    ForeignRealm {
        /// The offending input.
        input: String,
        /// The realm it named.
        realm: String,
        /// The realms this controller serves (quoted, comma-separated).
        expected: String,
    },
}

fn shown(input: &str) -> String {
    input.chars().take(80).collect()
}

fn invalid(what: &'static str, input: &str, reason: &'static str) -> NameError {
    NameError::Invalid {
        what,
        input: shown(input),
        reason,
    }
}

/// A lowercase DNS name (RFC 1123 labels), as used for hosts and certificate
/// names.
pub fn validate_dns_name(what: &'static str, name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty(what));
    }
    if name.len() > MAX_DNS_LEN {
        return Err(NameError::TooLong {
            what,
            input: shown(name),
            max: MAX_DNS_LEN,
        });
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(invalid(what, name, "each label must be 1 to 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(invalid(
                what,
                name,
                "only lowercase letters, digits, '-' and '.' are allowed",
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(invalid(what, name, "a label may not start or end with '-'"));
        }
    }
    Ok(())
}

/// A Kerberos realm: uppercase DNS-like.
pub fn validate_realm(realm: &str) -> Result<(), NameError> {
    const WHAT: &str = "realm";
    if realm.is_empty() {
        return Err(NameError::Empty(WHAT));
    }
    if realm.len() > MAX_DNS_LEN {
        return Err(NameError::TooLong {
            what: WHAT,
            input: shown(realm),
            max: MAX_DNS_LEN,
        });
    }
    let ok = realm.split('.').all(|l| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-')
    });
    if ok {
        Ok(())
    } else {
        Err(invalid(
            WHAT,
            realm,
            "only uppercase letters, digits, '-' and '.' are allowed",
        ))
    }
}

/// The realms principals may name: one (a `str`, the controller's own)
/// or several ([`Realms`]).
pub trait Served {
    /// The realm of a principal that names none.
    fn default_realm(&self) -> &str;
    /// Whether principals of `realm` are served.
    fn serves(&self, realm: &str) -> bool;
    /// The served realms, for messages (`"A", "B"`).
    fn describe(&self) -> String {
        format!("{:?}", self.default_realm())
    }
}

impl Served for str {
    fn default_realm(&self) -> &str {
        self
    }
    fn serves(&self, realm: &str) -> bool {
        self == realm
    }
}

impl Served for &str {
    fn default_realm(&self) -> &str {
        self
    }
    fn serves(&self, realm: &str) -> bool {
        *self == realm
    }
}

impl Served for String {
    fn default_realm(&self) -> &str {
        self
    }
    fn serves(&self, realm: &str) -> bool {
        self == realm
    }
}

/// The realms one controller serves: its own (the default of names
/// without a realm) and those of `[[realms]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Realms {
    default: String,
    others: std::collections::BTreeSet<String>,
}

impl Realms {
    /// The default realm and the others (the default among them is
    /// ignored).
    pub fn new(default: &str, others: impl IntoIterator<Item = String>) -> Self {
        let others = others.into_iter().filter(|r| r != default).collect();
        Realms {
            default: default.to_string(),
            others,
        }
    }

    /// Every served realm, the default first.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.default.as_str()).chain(self.others.iter().map(String::as_str))
    }
}

impl Served for Realms {
    fn default_realm(&self) -> &str {
        &self.default
    }
    fn serves(&self, realm: &str) -> bool {
        realm == self.default || self.others.contains(realm)
    }
    fn describe(&self) -> String {
        self.iter()
            .map(|r| format!("{r:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A two-component service principal `service/host.domain@REALM`, the only
/// shape kcred extracts keytabs for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServicePrincipal {
    service: String,
    host: String,
    realm: String,
}

impl ServicePrincipal {
    /// Parses `service/host[@REALM]`; a missing realm means the default
    /// realm, and a realm not served is refused.
    pub fn parse<S: Served + ?Sized>(input: &str, served: &S) -> Result<Self, NameError> {
        const WHAT: &str = "service principal";
        let input = input.trim();
        if input.is_empty() {
            return Err(NameError::Empty(WHAT));
        }
        if input.len() > MAX_PRINCIPAL_LEN {
            return Err(NameError::TooLong {
                what: WHAT,
                input: shown(input),
                max: MAX_PRINCIPAL_LEN,
            });
        }
        let (name, realm) = match input.split_once('@') {
            Some((n, r)) => {
                validate_realm(r)?;
                if !served.serves(r) {
                    return Err(NameError::ForeignRealm {
                        input: shown(input),
                        realm: r.to_string(),
                        expected: served.describe(),
                    });
                }
                (n, r)
            }
            None => (input, served.default_realm()),
        };
        let Some((service, host)) = name.split_once('/') else {
            return Err(invalid(
                WHAT,
                input,
                "expected the form service/host.domain",
            ));
        };
        if service.is_empty() || service.len() > MAX_SERVICE_LEN {
            return Err(invalid(
                WHAT,
                input,
                "the service must be 1 to 63 characters",
            ));
        }
        let mut sb = service.bytes();
        let first_ok = sb.next().is_some_and(|b| b.is_ascii_alphabetic());
        if !first_ok || !sb.all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(invalid(
                WHAT,
                input,
                "the service must start with a letter and hold only letters, digits, '-' and '_'",
            ));
        }
        validate_dns_name("host of service principal", host)?;
        let sp = ServicePrincipal {
            service: service.to_string(),
            host: host.to_string(),
            realm: realm.to_string(),
        };
        if sp.to_string().len() > MAX_PRINCIPAL_LEN {
            return Err(NameError::TooLong {
                what: WHAT,
                input: shown(input),
                max: MAX_PRINCIPAL_LEN,
            });
        }
        Ok(sp)
    }

    /// The service component (`HTTP`, `host`...).
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The host component.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The principal without its realm, as policy files name it.
    pub fn without_realm(&self) -> String {
        format!("{}/{}", self.service, self.host)
    }

    /// The realm.
    pub fn realm(&self) -> &str {
        &self.realm
    }
}

impl fmt::Display for ServicePrincipal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@{}", self.service, self.host, self.realm)
    }
}

/// A role account's own principal, `login@REALM`: what its prestashed
/// tickets are for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserPrincipal {
    login: String,
    realm: String,
}

impl UserPrincipal {
    /// The principal of role account `login` in `realm`.
    pub fn new(login: &str, realm: &str) -> Result<Self, NameError> {
        validate_login(login)?;
        validate_realm(realm)?;
        Ok(UserPrincipal {
            login: login.to_string(),
            realm: realm.to_string(),
        })
    }

    /// The login.
    pub fn login(&self) -> &str {
        &self.login
    }

    /// The realm.
    pub fn realm(&self) -> &str {
        &self.realm
    }
}

impl Principal {
    /// The realm whose backend holds the principal's keys.
    pub fn realm(&self) -> &str {
        match self {
            Principal::Service(s) => s.realm(),
            Principal::User(u) => u.realm(),
        }
    }
}

impl fmt::Display for UserPrincipal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.login, self.realm)
    }
}

/// Any principal kcred extracts keys for; every variant is validated, so
/// its text is safe on a kadmin command line.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Principal {
    /// `service/host@REALM`.
    Service(ServicePrincipal),
    /// `login@REALM`.
    User(UserPrincipal),
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Service(s) => s.fmt(f),
            Principal::User(u) => u.fmt(f),
        }
    }
}

/// A key id for data-encryption keys (`orders-db`): lowercase DNS-style.
pub fn validate_key_id(id: &str) -> Result<(), NameError> {
    if id.len() > 63 {
        return Err(NameError::TooLong {
            what: "key id",
            input: shown(id),
            max: 63,
        });
    }
    validate_dns_name("key id", id)
}

/// A unix login name for a role account (POSIX portable, as `useradd`
/// accepts by default).
pub fn validate_login(login: &str) -> Result<(), NameError> {
    const WHAT: &str = "role account login";
    if login.is_empty() {
        return Err(NameError::Empty(WHAT));
    }
    if login.len() > 32 {
        return Err(NameError::TooLong {
            what: WHAT,
            input: shown(login),
            max: 32,
        });
    }
    let mut b = login.bytes();
    let first_ok = b
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == b'_');
    if first_ok && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
    {
        Ok(())
    } else {
        Err(invalid(
            WHAT,
            login,
            "must start with a lowercase letter or '_' and hold only lowercase letters, digits, '_' and '-'",
        ))
    }
}

/// A Kubernetes namespace or pod name (RFC 1123 DNS label or subdomain).
pub fn validate_k8s_name(what: &'static str, name: &str) -> Result<(), NameError> {
    validate_dns_name(what, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: &str = "KCRED.TEST";

    #[test]
    fn service_principal_gets_default_realm() {
        let p = ServicePrincipal::parse("HTTP/web.example.com", R).expect("valid");
        assert_eq!(p.to_string(), "HTTP/web.example.com@KCRED.TEST");
        assert_eq!(p.without_realm(), "HTTP/web.example.com");
    }

    #[test]
    fn service_principal_accepts_own_realm_and_refuses_others() {
        assert!(ServicePrincipal::parse("HTTP/web.example.com@KCRED.TEST", R).is_ok());
        let err = ServicePrincipal::parse("HTTP/web.example.com@OTHER.TEST", R).unwrap_err();
        assert!(matches!(err, NameError::ForeignRealm { .. }), "{err}");
    }

    #[test]
    fn a_principal_of_any_served_realm_is_accepted_and_others_refused_naming_them() {
        let served = Realms::new(R, ["AD.KCRED.TEST".to_string()]);
        let ad =
            ServicePrincipal::parse("HTTP/web.example.com@AD.KCRED.TEST", &served).expect("served");
        assert_eq!(ad.realm(), "AD.KCRED.TEST");
        let plain = ServicePrincipal::parse("HTTP/web.example.com", &served).expect("default");
        assert_eq!(plain.realm(), R);
        let err = ServicePrincipal::parse("HTTP/web.example.com@OTHER.TEST", &served).unwrap_err();
        assert!(matches!(err, NameError::ForeignRealm { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("\"KCRED.TEST\", \"AD.KCRED.TEST\""),
            "{err}"
        );
    }

    #[test]
    fn service_principal_refuses_dangerous_shapes() {
        for bad in [
            "",
            "HTTP",
            "HTTP/",
            "/web.example.com",
            "HTTP/Web.Example.com",
            "HTTP/web example.com",
            "HTTP/web.example.com/extra",
            "HTTP/web..example.com",
            "HTTP/-web.example.com",
            "HT TP/web.example.com",
            "HTTP/web.example.com\n",
            "HTTP\\/web.example.com",
            "krbtgt/KCRED.TEST",
            "HTTP/web.example.com@",
            "HTTP/web.example.com@kcred.test",
            "1HTTP/web.example.com",
            "HTTP/wéb.example.com",
        ] {
            // A trailing newline is trimmed; everything else must fail.
            if bad == "HTTP/web.example.com\n" {
                continue;
            }
            assert!(
                ServicePrincipal::parse(bad, R).is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn service_principal_refuses_long_names() {
        let host = format!("{}.example.com", "a".repeat(60)).repeat(5);
        let err = ServicePrincipal::parse(&format!("HTTP/{host}"), R).unwrap_err();
        assert!(matches!(err, NameError::TooLong { .. }), "{err}");
        let huge = "a".repeat(70_000);
        assert!(ServicePrincipal::parse(&format!("HTTP/{huge}"), R).is_err());
    }

    #[test]
    fn logins_follow_posix_portable_rules() {
        assert!(validate_login("tsfoo").is_ok());
        assert!(validate_login("_svc-1").is_ok());
        for bad in ["", "Root", "1abc", "a b", "a/b", &"a".repeat(33)] {
            assert!(validate_login(bad).is_err(), "{bad:?}");
        }
    }
}
