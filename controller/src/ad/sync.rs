//! Identity sync: the role-account policy read from the directory instead
//! of the policy file.
//!
//! Every `interval_secs`, at once on `SIGHUP`, and when the DC's
//! `highestCommittedUSN` (checked every `change_check_secs`) moved, one
//! LDAPS search under `[active_directory.sync] base_dn` reads users, groups
//! and service accounts, and these conventions make them a [`Policy`]:
//! - a role account is an enabled user with a `uidNumber`: login
//!   `sAMAccountName`, uid `uidNumber`, gid `gidNumber`;
//! - its groups are the groups it is a member of, directly or through
//!   nested groups; those with a `gidNumber` give its supplemental gids;
//! - it may be run as by pods of namespace `ns` when it is a member of group
//!   `<namespace_group_prefix>ns` (`kcred-ns-ns`);
//! - it owns the service principal names of the accounts whose `manager`
//!   (user accounts) or `managedBy` (computer accounts) is its DN;
//! - the members of group `<act_as_group_prefix><login>` may log in as it.
//!
//! With `operators_group` / `auditors_group`, the members of those groups
//! (found under `base_dn`; members anywhere under `people_base_dn`) get the
//! admin roles as `<sAMAccountName>@<REALM>`, replaced on each sync beside
//! the static `[auth]` lists.
//!
//! Membership is the DC's own answer, not a reading of `member`: one
//! search per group that matters (`memberOf` with the in-chain matching
//! rule, LDAP_MATCHING_RULE_IN_CHAIN), so members of nested groups count,
//! and a group of any size is read whole (AD hands out at most
//! `MaxValRange` values of `member` at once; search results are paged).
//!
//! A user whose attributes are unusable (no `gidNumber`, uid 0, a bad
//! namespace) is left out and logged, never half-granted. A directory that
//! cannot be read, or accounts that do not form a policy (a namespace
//! claimed twice), keep the last good policy in force. Each change is
//! audited, one record per role account added, removed or changed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use kcred_audit::{Action, Actor, AuditEvent};

use super::AdConfig;
use super::ldap::{self, Entry};
use super::settings::SyncSection;
use crate::auth::AdminSets;
use crate::kadmin::KadminError;
use crate::names::{self, ServicePrincipal};
use crate::policy::{Policy, PolicyError, RoleAccount};
use crate::state::ControllerState;

/// Role accounts, service accounts they manage, and every group.
const FILTER: &str =
    "(|(&(objectClass=user)(|(uidNumber=*)(manager=*)(managedBy=*)))(objectClass=group))";
const ATTRS: &[&str] = &[
    "objectClass",
    "sAMAccountName",
    "userPrincipalName",
    "uidNumber",
    "gidNumber",
    "manager",
    "managedBy",
    "servicePrincipalName",
    "userAccountControl",
];

/// `userAccountControl`'s ACCOUNTDISABLE bit.
const ACCOUNT_DISABLE: u32 = 0x2;
/// LDAP_MATCHING_RULE_BIT_AND on that bit: enabled accounts only.
const ENABLED: &str = "(!(userAccountControl:1.2.840.113556.1.4.803:=2))";
/// LDAP_MATCHING_RULE_IN_CHAIN: membership through nested groups.
const IN_CHAIN: &str = "1.2.840.113556.1.4.1941";

/// Why a sync produced no policy (the last good one stays in force).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The directory could not be read.
    #[error("reading the directory: {0}")]
    Directory(#[from] KadminError),
    /// The accounts read do not form a policy.
    #[error("the directory's role accounts are not a policy: {0}")]
    Policy(#[from] PolicyError),
}

/// A policy read from the directory, and the users left out of it (why).
#[derive(Debug)]
pub struct Synced {
    /// The policy.
    pub policy: Policy,
    /// `DN: reason` of each user with a `uidNumber` that is not in it.
    pub skipped: Vec<String>,
    /// Admin roles from the admin groups (None: no admin group configured).
    pub admins: Option<AdminSets>,
}

/// Reads the directory once.
pub async fn read(cfg: &AdConfig, sync: &SyncSection) -> Result<Synced, SyncError> {
    let mut entries = ldap::search(cfg, &sync.base_dn, FILTER, ATTRS).await?;
    let mut people = Vec::new();
    for group in entries
        .iter_mut()
        .filter(|e| is(e, "group") && matters(e, sync))
    {
        let members = chain_members(cfg, sync, &group.dn, false).await?;
        group.attrs.insert(
            "member".into(),
            members.iter().map(|m| m.dn.clone()).collect(),
        );
        people.extend(members);
    }
    let mut synced = build(&entries, &people, sync, &cfg.realm)?;
    if sync.operators_group.is_some() || sync.auditors_group.is_some() {
        synced.admins = Some(AdminSets {
            operators: members(cfg, sync, &entries, sync.operators_group.as_deref()).await?,
            auditors: members(cfg, sync, &entries, sync.auditors_group.as_deref()).await?,
        });
    }
    Ok(synced)
}

/// Whether a group's members shape the policy: it gives a gid, a
/// namespace or the right to act as a role account.
fn matters(group: &Entry, sync: &SyncSection) -> bool {
    group.first("gidnumber").is_some()
        || group.first("samaccountname").is_some_and(|n| {
            n.starts_with(&sync.namespace_group_prefix) || n.starts_with(&sync.act_as_group_prefix)
        })
}

/// The users under `people_base_dn` that are members of `group_dn`,
/// directly or through nested groups (enabled ones only with
/// `enabled_only`), as the DC evaluates it.
async fn chain_members(
    cfg: &AdConfig,
    sync: &SyncSection,
    group_dn: &str,
    enabled_only: bool,
) -> Result<Vec<Entry>, SyncError> {
    let filter = format!(
        "(&(objectClass=user)(memberOf:{IN_CHAIN}:={}){})",
        ldap::escape_filter(group_dn),
        if enabled_only { ENABLED } else { "" }
    );
    Ok(ldap::search(
        cfg,
        &sync.people_base(),
        &filter,
        &["sAMAccountName", "userPrincipalName"],
    )
    .await?)
}

/// The principals of a group's members (nested groups included); a
/// configured group that is missing is an error (the last good roles
/// stay), not "nobody".
async fn members(
    cfg: &AdConfig,
    sync: &SyncSection,
    entries: &[Entry],
    group: Option<&str>,
) -> Result<BTreeSet<String>, SyncError> {
    let Some(group) = group else {
        return Ok(BTreeSet::new());
    };
    let found = entries
        .iter()
        .find(|e| is(e, "group") && e.first("samaccountname") == Some(group))
        .ok_or_else(|| {
            KadminError::NoSuchPrincipal(format!(
                "admin group {group:?} not found in {}",
                sync.base_dn
            ))
        })?;
    let people = chain_members(cfg, sync, &found.dn, true).await?;
    Ok(people
        .iter()
        .filter_map(|p| p.first("samaccountname"))
        .map(|sam| format!("{sam}@{}", cfg.realm))
        .collect())
}

/// What changed between two admin sets: `(principal, description)`.
pub fn admin_changes(old: &AdminSets, new: &AdminSets) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (role, a, b) in [
        ("operator", &old.operators, &new.operators),
        ("auditor", &old.auditors, &new.auditors),
    ] {
        out.extend(
            b.difference(a)
                .map(|p| (p.clone(), format!("granted role {role}"))),
        );
        out.extend(
            a.difference(b)
                .map(|p| (p.clone(), format!("lost role {role}"))),
        );
    }
    out
}

fn is(entry: &Entry, class: &str) -> bool {
    entry
        .all("objectclass")
        .iter()
        .any(|c| c.eq_ignore_ascii_case(class))
}

/// Applies the conventions to searched entries: users, service accounts
/// and groups under `base_dn` (each group's `member` holding its members,
/// nested ones included), and `people`, the members found elsewhere (whose
/// names `logged_into_by` records).
pub fn build(
    entries: &[Entry],
    people: &[Entry],
    sync: &SyncSection,
    realm: &str,
) -> Result<Synced, SyncError> {
    let groups: Vec<&Entry> = entries.iter().filter(|e| is(e, "group")).collect();
    let person_name: BTreeMap<String, String> = people
        .iter()
        .chain(entries.iter().filter(|e| is(e, "user")))
        .filter_map(|e| {
            let name = match (e.first("userprincipalname"), e.first("samaccountname")) {
                (Some(upn), _) => upn.to_string(),
                (None, Some(sam)) => format!("{sam}@{realm}"),
                (None, None) => return None,
            };
            Some((e.dn.to_ascii_lowercase(), name))
        })
        .collect();
    let mut roles = Vec::new();
    let mut skipped = Vec::new();
    for user in entries
        .iter()
        .filter(|e| is(e, "user") && e.first("uidnumber").is_some())
    {
        match role_of(user, &groups, entries, &person_name, sync, realm) {
            Ok(role) => roles.push(role),
            Err(why) => skipped.push(format!("{}: {why}", user.dn)),
        }
    }
    Ok(Synced {
        policy: Policy::new(roles)?,
        skipped,
        admins: None,
    })
}

fn id(entry: &Entry, attr: &str) -> Result<u32, String> {
    let value = entry.first(attr).ok_or_else(|| format!("no {attr}"))?;
    match value.trim().parse::<u32>() {
        Ok(0) => Err(format!("{attr} 0 (root) is not allowed")),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{attr} {value:?} is not a number")),
    }
}

fn role_of(
    user: &Entry,
    groups: &[&Entry],
    entries: &[Entry],
    person_name: &BTreeMap<String, String>,
    sync: &SyncSection,
    realm: &str,
) -> Result<RoleAccount, String> {
    let login = user
        .first("samaccountname")
        .ok_or("no sAMAccountName")?
        .to_string();
    names::validate_login(&login).map_err(|e| e.to_string())?;
    let control = user
        .first("useraccountcontrol")
        .and_then(|v| v.trim().parse::<u32>().ok());
    if control.is_some_and(|c| c & ACCOUNT_DISABLE != 0) {
        return Err("the account is disabled".into());
    }
    let uid = id(user, "uidnumber")?;
    let gid = id(user, "gidnumber")?;
    let dn = user.dn.to_ascii_lowercase();
    let member_of = groups
        .iter()
        .filter(|g| g.all("member").iter().any(|m| m.to_ascii_lowercase() == dn));
    let mut group_names = Vec::new();
    let mut supplemental_gids = BTreeSet::new();
    let mut namespaces = BTreeSet::new();
    for group in member_of {
        let Some(name) = group.first("samaccountname") else {
            continue;
        };
        if let Ok(g) = id(group, "gidnumber") {
            group_names.push(name.to_string());
            if g != gid {
                supplemental_gids.insert(g);
            }
        }
        if let Some(ns) = name.strip_prefix(&sync.namespace_group_prefix) {
            names::validate_k8s_name("namespace", ns)
                .map_err(|e| format!("group {name:?}: {e}"))?;
            namespaces.insert(ns.to_string());
        }
    }
    // Stable whatever order the DC returns groups in: no spurious changes.
    group_names.sort();
    let mut service_principals = BTreeSet::new();
    let managed = |e: &&Entry| {
        ["manager", "managedby"]
            .iter()
            .filter_map(|a| e.first(a))
            .any(|m| m.to_ascii_lowercase() == dn)
    };
    for owned in entries.iter().filter(managed) {
        for spn in owned.all("serviceprincipalname") {
            let sp = ServicePrincipal::parse(spn, realm)
                .map_err(|e| format!("{} (managed by it): {e}", owned.dn))?;
            service_principals.insert(sp.to_string());
        }
    }
    let act_as = format!("{}{login}", sync.act_as_group_prefix);
    let logged_into_by = groups
        .iter()
        .filter(|g| g.first("samaccountname") == Some(act_as.as_str()))
        .flat_map(|g| g.all("member"))
        .map(|m| {
            person_name
                .get(&m.to_ascii_lowercase())
                .cloned()
                .unwrap_or_else(|| m.clone())
        })
        .collect();
    Ok(RoleAccount {
        realm: None,
        login,
        uid,
        gid,
        groups: group_names,
        namespaces,
        service_principals,
        certificates: BTreeSet::new(),
        keys: BTreeSet::new(),
        supplemental_gids,
        service_accounts: BTreeSet::new(),
        logged_into_by,
    })
}

/// What changed between two policies: `(login, description)` per role
/// account added, removed or changed.
pub fn changes(old: &Policy, new: &Policy) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for role in new.roles() {
        match old.role(&role.login) {
            None => out.push((role.login.clone(), format!("added: {}", describe(role)))),
            Some(before) if before != role => out.push((
                role.login.clone(),
                format!("changed: {}", delta(before, role)),
            )),
            Some(_) => {}
        }
    }
    for role in old.roles().filter(|r| new.role(&r.login).is_none()) {
        out.push((role.login.clone(), "removed".to_string()));
    }
    out
}

fn describe(r: &RoleAccount) -> String {
    format!(
        "uid {} gid {} supplemental_gids {:?} namespaces {:?} service_principals {:?} logged_into_by {:?}",
        r.uid, r.gid, r.supplemental_gids, r.namespaces, r.service_principals, r.logged_into_by
    )
}

fn set_delta<T: Ord + std::fmt::Debug>(
    field: &str,
    a: &BTreeSet<T>,
    b: &BTreeSet<T>,
    out: &mut Vec<String>,
) {
    let gone: Vec<_> = a.difference(b).collect();
    let new: Vec<_> = b.difference(a).collect();
    if !gone.is_empty() || !new.is_empty() {
        out.push(format!("{field} -{gone:?} +{new:?}"));
    }
}

fn delta(a: &RoleAccount, b: &RoleAccount) -> String {
    let mut out = Vec::new();
    if a.uid != b.uid {
        out.push(format!("uid {} -> {}", a.uid, b.uid));
    }
    if a.gid != b.gid {
        out.push(format!("gid {} -> {}", a.gid, b.gid));
    }
    set_delta("namespaces", &a.namespaces, &b.namespaces, &mut out);
    set_delta(
        "service_principals",
        &a.service_principals,
        &b.service_principals,
        &mut out,
    );
    set_delta(
        "supplemental_gids",
        &a.supplemental_gids,
        &b.supplemental_gids,
        &mut out,
    );
    set_delta(
        "logged_into_by",
        &a.logged_into_by,
        &b.logged_into_by,
        &mut out,
    );
    if a.groups != b.groups {
        out.push(format!("groups {:?} -> {:?}", a.groups, b.groups));
    }
    out.join("; ")
}

/// Syncs until aborted: the first read at once, then every interval, at
/// once when `fired` fires (`SIGHUP`), and whenever the DC's
/// `highestCommittedUSN`, checked every `change_check_secs`, moved since
/// the last good sync began (something in the directory changed).
pub fn spawn(
    state: Arc<ControllerState>,
    cfg: AdConfig,
    sync: SyncSection,
    mut fired: tokio::sync::watch::Receiver<()>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(sync.interval_secs));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let following = sync.change_check_secs > 0;
        // The first check comes a period after the first sync (the
        // interval's first tick, at once), not beside it.
        let every = Duration::from_secs(sync.change_check_secs.max(1));
        let mut check = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The USN the last good sync started from.
        let mut synced_at: Option<u64> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                Ok(()) = fired.changed() => {}
                _ = check.tick(), if following => {
                    match ldap::highest_usn(&cfg).await {
                        Ok(usn) if Some(usn) == synced_at => continue,
                        Ok(usn) => tracing::debug!(usn, before = ?synced_at, "the directory changed; syncing"),
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot read the directory's highestCommittedUSN; the next check or interval syncs");
                            continue;
                        }
                    }
                }
            }
            // Read before the sync: a change made during it moves the USN
            // past this, and the next check syncs again.
            let before = if following {
                ldap::highest_usn(&cfg).await.ok()
            } else {
                None
            };
            if once(&state, &cfg, &sync).await {
                synced_at = before;
            }
        }
    })
}

/// One sync; whether the directory was read (a policy that did not form
/// counts as read: the next change, not the next check, should retry).
async fn once(state: &ControllerState, cfg: &AdConfig, sync: &SyncSection) -> bool {
    let synced = match read(cfg, sync).await {
        Ok(s) => s,
        Err(e) => {
            state
                .metrics
                .directory_syncs
                .with_label_values(&["failed"])
                .inc();
            tracing::error!(error = %e, "directory sync failed; keeping the last good policy");
            return matches!(e, SyncError::Policy(_));
        }
    };
    state
        .metrics
        .directory_syncs
        .with_label_values(&["ok"])
        .inc();
    for why in &synced.skipped {
        tracing::warn!(account = %why, "directory user left out of the policy");
    }
    let mut events: Vec<AuditEvent> = Vec::new();
    if let Some(admins) = synced.admins {
        let before = state.auth.set_directory_admins(admins.clone());
        events.extend(
            admin_changes(&before, &admins)
                .into_iter()
                .map(|(who, what)| {
                    AuditEvent::new(Actor::Controller, Action::Admin)
                        .with_subject(format!("admin/{who}"))
                        .with_reason(format!("directory sync: {who} {what}"))
                }),
        );
    }
    let current = state.policy.get();
    let changed = changes(&current, &synced.policy);
    if !changed.is_empty() {
        let roles = synced.policy.len();
        state.policy.set(synced.policy);
        tracing::info!(
            changes = changed.len(),
            role_accounts = roles,
            "policy synced from the directory"
        );
    }
    events.extend(changed.into_iter().map(|(login, what)| {
        AuditEvent::new(Actor::Controller, Action::Admin)
            .with_subject(format!("policy/{login}"))
            .with_reason(format!("directory sync: role account {login} {what}"))
    }));
    if let Err(e) = state.record(events).await {
        tracing::error!(error = %e, "cannot audit a directory policy change");
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const REALM: &str = "KCRED.TEST";

    fn sync() -> SyncSection {
        SyncSection {
            base_dn: "OU=kcred,DC=x".into(),
            interval_secs: 1,
            change_check_secs: 5,
            namespace_group_prefix: "kcred-ns-".into(),
            act_as_group_prefix: "kcred-act-as-".into(),
            operators_group: None,
            auditors_group: None,
            people_base_dn: None,
        }
    }

    #[test]
    fn admin_members_default_to_the_domain_and_changes_name_the_person() {
        assert_eq!(sync().people_base(), "DC=x");
        let before = AdminSets::default();
        let after = AdminSets {
            operators: BTreeSet::from(["alice@KCRED.TEST".to_string()]),
            auditors: BTreeSet::new(),
        };
        assert_eq!(
            admin_changes(&before, &after),
            vec![(
                "alice@KCRED.TEST".to_string(),
                "granted role operator".to_string()
            )]
        );
        assert_eq!(admin_changes(&after, &before)[0].1, "lost role operator");
    }

    fn entry(dn: &str, attrs: &[(&str, &str)]) -> Entry {
        let mut e = Entry {
            dn: dn.into(),
            ..Entry::default()
        };
        for (k, v) in attrs {
            e.attrs
                .entry(k.to_ascii_lowercase())
                .or_default()
                .push((*v).into());
        }
        e
    }

    fn directory() -> Vec<Entry> {
        vec![
            entry(
                "CN=websvc,OU=kcred,DC=x",
                &[
                    ("objectClass", "user"),
                    ("sAMAccountName", "websvc"),
                    ("uidNumber", "1500"),
                    ("gidNumber", "1500"),
                ],
            ),
            entry(
                "CN=web-http,OU=kcred,DC=x",
                &[
                    ("objectClass", "user"),
                    ("sAMAccountName", "web-http"),
                    ("manager", "cn=websvc,ou=kcred,dc=x"),
                    ("servicePrincipalName", "HTTP/web.example.com"),
                ],
            ),
            entry(
                "CN=kcred-ns-web,OU=kcred,DC=x",
                &[
                    ("objectClass", "group"),
                    ("sAMAccountName", "kcred-ns-web"),
                    ("member", "CN=websvc,OU=kcred,DC=x"),
                ],
            ),
            entry(
                "CN=data,OU=kcred,DC=x",
                &[
                    ("objectClass", "group"),
                    ("sAMAccountName", "data"),
                    ("gidNumber", "3000"),
                    ("member", "CN=websvc,OU=kcred,DC=x"),
                ],
            ),
            entry(
                "CN=kcred-act-as-websvc,OU=kcred,DC=x",
                &[
                    ("objectClass", "group"),
                    ("sAMAccountName", "kcred-act-as-websvc"),
                    ("member", "CN=alice,OU=people,DC=x"),
                ],
            ),
            entry(
                "CN=root-ish,OU=kcred,DC=x",
                &[
                    ("objectClass", "user"),
                    ("sAMAccountName", "rootish"),
                    ("uidNumber", "0"),
                    ("gidNumber", "0"),
                ],
            ),
        ]
    }

    #[test]
    fn directory_conventions_make_a_role_account() {
        let synced = build(&directory(), &[], &sync(), REALM).unwrap();
        let role = synced.policy.role_for_namespace("web").unwrap();
        assert_eq!(
            (role.login.as_str(), role.uid, role.gid),
            ("websvc", 1500, 1500)
        );
        assert_eq!(role.supplemental_gids, BTreeSet::from([3000]));
        assert_eq!(
            role.service_principals,
            BTreeSet::from([format!("HTTP/web.example.com@{REALM}")])
        );
        assert_eq!(
            role.logged_into_by,
            BTreeSet::from(["CN=alice,OU=people,DC=x".to_string()])
        );
        assert_eq!(synced.policy.len(), 1, "the uid-0 user is left out");
        assert!(synced.skipped[0].contains("root"), "{:?}", synced.skipped);
    }

    #[test]
    fn members_found_outside_base_dn_are_named_by_their_principal() {
        let people = [entry(
            "CN=alice,OU=people,DC=x",
            &[
                ("sAMAccountName", "alice"),
                ("userPrincipalName", "alice@x.example"),
            ],
        )];
        let synced = build(&directory(), &people, &sync(), REALM).unwrap();
        let role = synced.policy.role_for_namespace("web").unwrap();
        assert_eq!(
            role.logged_into_by,
            BTreeSet::from(["alice@x.example".to_string()])
        );
    }

    #[test]
    fn only_groups_giving_a_gid_a_namespace_or_act_as_are_expanded() {
        let dir = directory();
        let expanded: Vec<&str> = dir
            .iter()
            .filter(|e| is(e, "group") && matters(e, &sync()))
            .filter_map(|e| e.first("samaccountname"))
            .collect();
        assert_eq!(
            expanded,
            vec!["kcred-ns-web", "data", "kcred-act-as-websvc"]
        );
        let plain = entry(
            "CN=team,OU=kcred,DC=x",
            &[("objectClass", "group"), ("sAMAccountName", "team")],
        );
        assert!(!matters(&plain, &sync()));
    }

    #[test]
    fn a_disabled_role_account_is_left_out() {
        let mut dir = directory();
        dir[0]
            .attrs
            .insert("useraccountcontrol".into(), vec!["514".into()]);
        let synced = build(&dir, &[], &sync(), REALM).unwrap();
        assert!(synced.policy.role_for_namespace("web").is_err());
        assert!(
            synced.skipped.iter().any(|s| s.contains("disabled")),
            "{:?}",
            synced.skipped
        );
    }

    #[test]
    fn a_removed_membership_is_a_change_naming_the_namespace() {
        let before = build(&directory(), &[], &sync(), REALM).unwrap().policy;
        let mut dir = directory();
        dir.retain(|e| !e.dn.starts_with("CN=kcred-ns-web"));
        let after = build(&dir, &[], &sync(), REALM).unwrap().policy;
        assert!(after.role_for_namespace("web").is_err());
        let changed = changes(&before, &after);
        assert_eq!(changed.len(), 1, "{changed:?}");
        assert_eq!(changed[0].0, "websvc");
        assert!(
            changed[0].1.contains("namespaces -[\"web\"]"),
            "{changed:?}"
        );
        assert_eq!(
            changes(&after, &Policy::default()),
            vec![("websvc".to_string(), "removed".to_string())]
        );
    }

    #[test]
    fn a_namespace_claimed_by_two_accounts_is_no_policy() {
        let mut dir = directory();
        dir.push(entry(
            "CN=other,OU=kcred,DC=x",
            &[
                ("objectClass", "user"),
                ("sAMAccountName", "other"),
                ("uidNumber", "1600"),
                ("gidNumber", "1600"),
            ],
        ));
        dir[2]
            .attrs
            .get_mut("member")
            .unwrap()
            .push("CN=other,OU=kcred,DC=x".into());
        assert!(matches!(
            build(&dir, &[], &sync(), REALM),
            Err(SyncError::Policy(PolicyError::NamespaceTwice { .. }))
        ));
    }
}
