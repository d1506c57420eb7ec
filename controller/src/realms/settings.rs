//! The `[[realms]]` config tables: realms served beside the controller's
//! own (the top-level `realm`), each with its own key administration
//! backend and KDCs.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::Deserialize;

use crate::ad::settings::ActiveDirectorySection;
use crate::gate::GateConfig;
use crate::names;

/// One `[[realms]]` entry: exactly one of `kadmin` or `active_directory`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealmSection {
    /// The realm (upper case).
    pub name: String,
    /// Its KDCs, `host` or `host:port`: the controller's own tools reach
    /// them, and so do pods holding the realm's credentials.
    pub kdcs: Vec<String>,
    /// A `krb5.conf` for the controller's tools acting in this realm
    /// (its `default_realm` must be this realm) instead of the one the
    /// controller writes from `kdcs`.
    #[serde(default)]
    pub krb5_config: Option<PathBuf>,
    /// This realm's KDC budgets (default: the top-level `[gate]`'s). Each
    /// realm has its own buckets and breakers whatever the budgets.
    #[serde(default)]
    pub gate: Option<GateConfig>,
    /// MIT kadmind administers the realm.
    #[serde(default)]
    pub kadmin: Option<RealmKadminSection>,
    /// The realm is an Active Directory domain.
    #[serde(default)]
    pub active_directory: Option<ActiveDirectorySection>,
}

/// `[realms.kadmin]`: how to reach this realm's kadmind. The program, work
/// directory and timeout are the top-level `[kadmin]`'s.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealmKadminSection {
    /// Admin principal holding the `e` privilege on served principals.
    pub principal: String,
    /// Its keytab (mode 0600).
    pub keytab: PathBuf,
    /// kadmind's address, `host` or `host:port`.
    pub admin_server: String,
}

/// Whether `addr` is `host` or `host:port` (a DNS name, IPv4 address or
/// bracketed IPv6 address): it is written into `krb5.conf` files.
pub fn valid_address(addr: &str) -> bool {
    let (host, port) = match addr.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, tail)) => {
                if v6.parse::<std::net::Ipv6Addr>().is_err() {
                    return false;
                }
                match (tail.is_empty(), tail.strip_prefix(':')) {
                    (true, _) => (None, None),
                    (false, Some(p)) => (None, Some(p)),
                    (false, None) => return false,
                }
            }
            None => return false,
        },
        None => match addr.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(addr), None),
        },
    };
    let host_ok = host.is_none_or(|h| {
        !h.is_empty()
            && h.len() <= 253
            && h.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            })
    });
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
    host_ok && port_ok
}

/// Checks the KDC list of a realm (`what` names it in messages).
pub fn validate_kdcs(what: &str, kdcs: &[String]) -> Result<(), String> {
    if kdcs.is_empty() {
        return Err(format!("{what}: at least one KDC is required"));
    }
    match kdcs.iter().find(|k| !valid_address(k)) {
        Some(bad) => Err(format!(
            "{what}: {bad:?} is not host or host:port (a DNS name, IPv4 or [IPv6] address)"
        )),
        None => Ok(()),
    }
}

/// Checks a lane's budget (`what` names it in messages).
pub fn validate_gate(what: &str, gate: &GateConfig) -> Result<(), String> {
    for (lane, l) in [("kadmin", &gate.kadmin), ("kdc", &gate.kdc)] {
        if l.rate_per_sec == 0 || l.burst == 0 {
            return Err(format!(
                "{what}.{lane}: rate_per_sec and burst must be at least 1"
            ));
        }
        if l.backoff_min_ms > l.backoff_max_ms {
            return Err(format!(
                "{what}.{lane}: backoff_min_ms exceeds backoff_max_ms"
            ));
        }
    }
    Ok(())
}

impl RealmSection {
    /// Refuses an entry that cannot work, naming it and the field.
    fn validate(&self) -> Result<(), String> {
        let at = format!("realms[{:?}]", self.name);
        names::validate_realm(&self.name).map_err(|e| format!("{at}.name: {e}"))?;
        validate_kdcs(&format!("{at}.kdcs"), &self.kdcs)?;
        if let Some(g) = &self.gate {
            validate_gate(&format!("{at}.gate"), g)?;
        }
        match (&self.kadmin, &self.active_directory) {
            (Some(_), Some(_)) => Err(format!(
                "{at}: both [realms.kadmin] and [realms.active_directory] are set: a realm has one key administration backend, remove one"
            )),
            (None, None) => Err(format!(
                "{at}: no backend: give [realms.kadmin] (MIT kadmind) or [realms.active_directory]"
            )),
            (Some(k), None) => {
                if k.principal.is_empty() || k.keytab.as_os_str().is_empty() {
                    return Err(format!(
                        "{at}.kadmin: principal and keytab must not be empty"
                    ));
                }
                if !valid_address(&k.admin_server) {
                    return Err(format!(
                        "{at}.kadmin.admin_server: {:?} is not host or host:port",
                        k.admin_server
                    ));
                }
                Ok(())
            }
            (None, Some(ad)) => {
                if ad.sync.is_some() {
                    return Err(format!(
                        "{at}.active_directory.sync: the policy is synced from the default realm's directory only (the top-level [active_directory.sync])"
                    ));
                }
                ad.validate().map_err(|e| format!("{at}: {e}"))
            }
        }
    }
}

/// Checks every `[[realms]]` entry against the others and the default
/// realm; `kdcs` are the default realm's (required with further realms:
/// pods holding credentials of several realms get a `krb5.conf` naming
/// every realm's KDCs).
pub fn validate(
    default_realm: &str,
    kdcs: &[String],
    realms: &[RealmSection],
) -> Result<(), String> {
    if !kdcs.is_empty() || !realms.is_empty() {
        validate_kdcs("kdcs (the default realm's KDCs)", kdcs)?;
    }
    let mut seen = BTreeSet::from([default_realm]);
    for r in realms {
        r.validate()?;
        if r.name == default_realm {
            return Err(format!(
                "realms[{:?}]: that is the controller's own realm (top-level realm); [[realms]] lists further realms",
                r.name
            ));
        }
        if !seen.insert(&r.name) {
            return Err(format!(
                "realms[{:?}] is listed twice: one entry per realm",
                r.name
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_host_or_host_and_port() {
        for ok in [
            "kdc1.example.com",
            "kdc1.example.com:88",
            "127.0.0.1:10088",
            "[::1]:88",
            "[::1]",
        ] {
            assert!(valid_address(ok), "{ok}");
        }
        for bad in [
            "",
            "kdc 1",
            "kdc:",
            "kdc:0",
            "kdc:99999",
            "kdc}\n",
            "a..b",
            "-kdc",
            "[nothex]:88",
            "[::1]x",
            "[::1]:",
            "kdc:88:88",
            "kdc = evil",
        ] {
            assert!(!valid_address(bad), "{bad:?}");
        }
    }
}
