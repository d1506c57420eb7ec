//! `krb5.conf` files the controller writes from `[[realms]]`: one per
//! further realm for its own tools (`kadmin`, `kinit`, the AD helpers), and
//! the one delivered to a pod whose credentials come from several realms
//! or from a realm other than the controller's.

use std::collections::{BTreeMap, BTreeSet};

/// Where one realm's KDCs (and kadmind) are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealmServers {
    /// `host` or `host:port`, validated by the config.
    pub kdcs: Vec<String>,
    /// kadmind, for the controller's own `kadmin` (MIT realms only).
    pub admin_server: Option<String>,
}

fn realm_stanza(out: &mut String, realm: &str, servers: &RealmServers, admin: bool) {
    out.push_str(&format!("\t{realm} = {{\n"));
    for kdc in &servers.kdcs {
        out.push_str(&format!("\t\tkdc = {kdc}\n"));
    }
    if admin && let Some(a) = &servers.admin_server {
        out.push_str(&format!("\t\tadmin_server = {a}\n"));
    }
    out.push_str("\t}\n");
}

/// The configuration of the controller's tools acting in `realm`: that
/// realm by default, its servers only, no DNS look-ups, TCP (AD tickets
/// carry large PACs).
pub fn for_tools(realm: &str, servers: &RealmServers) -> String {
    let mut out = format!(
        "# Written by the kcred controller from its [[realms]] entry for {realm}.\n\
         [libdefaults]\n\
         \tdefault_realm = {realm}\n\
         \tdns_lookup_kdc = false\n\
         \tdns_lookup_realm = false\n\
         \tdns_canonicalize_hostname = false\n\
         \trdns = false\n\
         \tudp_preference_limit = 1\n\
         \n\
         [realms]\n"
    );
    realm_stanza(&mut out, realm, servers, true);
    out
}

/// What pods get as `krb5.conf`.
#[derive(Debug, Clone)]
pub struct PodKrb5Conf {
    /// The controller's own realm.
    default_realm: String,
    /// The operator's file (`pod_krb5_conf`): what a volume whose
    /// credentials all come from the default realm gets, unchanged.
    base: Vec<u8>,
    /// Every served realm's KDCs (the default realm's from top-level
    /// `kdcs`; empty without `[[realms]]`).
    servers: BTreeMap<String, RealmServers>,
}

impl PodKrb5Conf {
    /// `base` serves the default realm; `servers` lists every realm's KDCs.
    pub fn new(
        default_realm: &str,
        base: Vec<u8>,
        servers: BTreeMap<String, RealmServers>,
    ) -> Self {
        PodKrb5Conf {
            default_realm: default_realm.to_string(),
            base,
            servers,
        }
    }

    /// The file for a volume whose credentials come from `realms`: the
    /// operator's file when that is the default realm alone (or none);
    /// otherwise a file naming each of those realms with its KDCs, whose
    /// `default_realm` is the volume's one realm, else the controller's
    /// when it is among them, else the first by name.
    pub fn for_realms(&self, realms: &BTreeSet<&str>) -> Vec<u8> {
        if realms.iter().all(|r| *r == self.default_realm) {
            return self.base.clone();
        }
        let default = if realms.contains(self.default_realm.as_str()) {
            self.default_realm.as_str()
        } else {
            realms.first().copied().unwrap_or(&self.default_realm)
        };
        let mut out = format!(
            "# Written by the kcred controller: the realms of this volume's credentials.\n\
             [libdefaults]\n\
             \tdefault_realm = {default}\n\
             \tdns_lookup_realm = false\n\
             \n\
             [realms]\n"
        );
        for realm in realms {
            if let Some(s) = self.servers.get(*realm) {
                realm_stanza(&mut out, realm, s, false);
            }
        }
        out.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf() -> PodKrb5Conf {
        let servers = |kdcs: &[&str]| RealmServers {
            kdcs: kdcs.iter().map(|s| s.to_string()).collect(),
            admin_server: Some("admin.example.com".into()),
        };
        PodKrb5Conf::new(
            "MIT.TEST",
            b"operator's file".to_vec(),
            BTreeMap::from([
                ("MIT.TEST".to_string(), servers(&["kdc.mit.test:88"])),
                (
                    "AD.TEST".to_string(),
                    servers(&["dc1.ad.test", "dc2.ad.test"]),
                ),
            ]),
        )
    }

    fn text(realms: &[&str]) -> String {
        String::from_utf8(conf().for_realms(&realms.iter().copied().collect())).unwrap()
    }

    #[test]
    fn a_volume_of_the_default_realm_gets_the_operators_file() {
        assert_eq!(text(&["MIT.TEST"]), "operator's file");
        assert_eq!(text(&[]), "operator's file");
    }

    #[test]
    fn a_volume_of_another_realm_names_it_with_its_kdcs_and_as_default() {
        let t = text(&["AD.TEST"]);
        assert!(t.contains("default_realm = AD.TEST"), "{t}");
        assert!(
            t.contains("kdc = dc1.ad.test\n") && t.contains("kdc = dc2.ad.test\n"),
            "{t}"
        );
        assert!(
            !t.contains("MIT.TEST") && !t.contains("admin_server"),
            "{t}"
        );
    }

    #[test]
    fn a_volume_of_several_realms_names_each_and_defaults_to_the_controllers() {
        let t = text(&["AD.TEST", "MIT.TEST"]);
        assert!(t.contains("default_realm = MIT.TEST"), "{t}");
        assert!(t.contains("\tAD.TEST = {\n\t\tkdc = dc1.ad.test"), "{t}");
        assert!(
            t.contains("\tMIT.TEST = {\n\t\tkdc = kdc.mit.test:88"),
            "{t}"
        );
    }

    #[test]
    fn the_tools_file_holds_one_realm_with_its_admin_server() {
        let t = for_tools(
            "MIT2.TEST",
            &RealmServers {
                kdcs: vec!["127.0.0.1:1088".into()],
                admin_server: Some("127.0.0.1:1749".into()),
            },
        );
        assert!(t.contains("default_realm = MIT2.TEST"), "{t}");
        assert!(
            t.contains("kdc = 127.0.0.1:1088\n\t\tadmin_server = 127.0.0.1:1749"),
            "{t}"
        );
    }
}
