//! Service accounts kcred creates itself, for a service principal no
//! account holds yet (with `[active_directory] accounts_ou`).
//!
//! The account's name is derived from the principal alone, so every
//! controller, before or after a restart, picks the same one: two racing
//! creations of one principal meet at the same DN, the directory takes one
//! add and refuses the other (`entryAlreadyExists`), and the loser finds
//! the winner's account by its service principal name.

use sha2::{Digest, Sha256};

use super::ldap::NewAccount;

/// AD's limit on a user's `sAMAccountName`.
const MAX_SAM: usize = 20;
/// Hex digits of the principal's hash in the name (32 bits).
const HASH_HEX: usize = 8;

/// The logon name for `spn`'s account: a readable stem from the service and
/// the host's first label, and a hash of the whole name so two principals
/// never share one (`HTTP/web.example.com` -> `http-web-1a2b3c4d`).
pub fn account_name(spn: &str) -> String {
    let lower = spn.to_ascii_lowercase();
    let (service, host) = lower.split_once('/').unwrap_or((lower.as_str(), ""));
    let label = host.split(['.', ':']).next().unwrap_or_default();
    let mut stem: String = format!("{service}-{label}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(MAX_SAM - HASH_HEX - 1)
        .collect();
    while stem.ends_with('-') {
        stem.pop();
    }
    let digest = Sha256::digest(lower.as_bytes());
    let hash = hex::encode(&digest[..HASH_HEX / 2]);
    if stem.is_empty() {
        format!("kcred-{hash}")
    } else {
        format!("{stem}-{hash}")
    }
}

/// The account to create for `spn` in `ou`.
pub fn new_account(spn: &str, ou: &str, realm: &str, manager: Option<&str>) -> NewAccount {
    let sam = account_name(spn);
    NewAccount {
        dn: format!("CN={sam},{ou}"),
        user_principal_name: format!("{sam}@{realm}"),
        sam_account_name: sam,
        spn: spn.to_string(),
        manager: manager.map(str::to_string),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_names_are_stable_short_and_distinct_per_principal() {
        let a = account_name("HTTP/web.example.com");
        assert_eq!(a, account_name("http/WEB.example.com"), "case-blind");
        assert!(a.starts_with("http-web-"), "{a}");
        assert_ne!(a, account_name("HTTP/web.example.org"));
        let long = account_name("verylongservicename/averylonghostname.example.com");
        assert!(long.len() <= MAX_SAM, "{long}");
        assert!(
            long.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{long}"
        );
    }

    #[test]
    fn a_principal_without_a_usable_stem_still_gets_a_valid_name() {
        let n = account_name("-/.x");
        assert!(n.starts_with("kcred-") && n.len() <= MAX_SAM, "{n}");
    }

    #[test]
    fn the_new_account_lives_in_the_ou_under_its_logon_name() {
        let n = new_account(
            "HTTP/web.example.com",
            "OU=kcred,DC=x",
            "X",
            Some("CN=boss,DC=x"),
        );
        assert_eq!(n.dn, format!("CN={},OU=kcred,DC=x", n.sam_account_name));
        assert_eq!(n.user_principal_name, format!("{}@X", n.sam_account_name));
        assert_eq!(n.manager.as_deref(), Some("CN=boss,DC=x"));
    }
}
