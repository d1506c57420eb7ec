//! Assembling a pod's bundle: every credential it asked for, from its
//! issuer, as the files of one volume.
//!
//! | kind | files | mode |
//! | --- | --- | --- |
//! | always | `krb5.conf` | 0444 |
//! | keytabs | `krb5.keytab` (all principals, all kvnos kadmind holds) | 0400 |
//! | tickets | `krb5cc` (credential cache, format v4) | 0400 |
//! | certs | `tls.crt`, `ca.crt` / `tls.key` | 0444 / 0400 |
//! | keys | `<id>.keys.json` per key ring | 0400 |
//!
//! Files belong to the role account's uid and gid; with an fsGroup the
//! group is the fsGroup and secret files are 0440, so every container of
//! the pod can read them.

use kcred_audit::timefmt::unix_secs;
use std::collections::BTreeMap;
use std::time::SystemTime;

use kcred_audit::{Action, Actor, AuditEvent, CredentialKind};
use kcred_proto::kcred::v1::{Bundle, BundleFile};
use sha2::{Digest, Sha256};

use crate::annotations::CredentialRequest;
use crate::gate::Priority;
use crate::issuers::IssueError;
use crate::keytab::Keytab;
use crate::names::{Principal, Served};
use crate::pods::PodInfo;
use crate::policy::RoleAccount;
use crate::state::ControllerState;

/// A bundle and what the audit must record about it.
pub struct Assembled {
    /// The bundle for the node.
    pub bundle: Bundle,
    /// One event per credential, recorded before the bundle leaves.
    pub events: Vec<AuditEvent>,
}

/// Orders bundle files and digests them so equal bundles compare equal.
fn generation(files: &[BundleFile], uid: u32, gid: u32) -> String {
    let mut h = Sha256::new();
    h.update(uid.to_be_bytes());
    h.update(gid.to_be_bytes());
    for f in files {
        h.update((f.name.len() as u64).to_be_bytes());
        h.update(f.name.as_bytes());
        h.update(f.mode.to_be_bytes());
        h.update((f.content.len() as u64).to_be_bytes());
        h.update(&f.content);
    }
    hex::encode(&h.finalize()[..16])
}

/// A bundle's content without the pod it goes to: what every pod that
/// asks for the same credentials as the same role account (and fsGroup)
/// receives, so a batch assembles it once for all of them.
pub struct Content {
    /// The bundle for the node.
    pub bundle: Bundle,
    /// One event per credential, without the pod's place.
    events: Vec<AuditEvent>,
}

impl Content {
    /// The events recording this content's issue to `pod` on `node`: one
    /// per credential, as an issue or a refresh by `priority`.
    pub fn events_for(&self, node: &str, pod: &PodInfo, priority: Priority) -> Vec<AuditEvent> {
        let action = action_of(priority);
        self.events
            .iter()
            .map(|e| {
                let mut e = e.clone().with_place(node, &pod.namespace, &pod.name);
                e.actor = Actor::Node(node.to_string());
                e.action = action;
                e
            })
            .collect()
    }
}

fn action_of(priority: Priority) -> Action {
    match priority {
        Priority::Starting => Action::Issue,
        Priority::Background => Action::Refresh,
    }
}

/// The versions a volume is delivered, from its issue events: principal
/// -> highest kvno, key id -> primary version.
pub fn versions(events: &[AuditEvent]) -> BTreeMap<String, u32> {
    events
        .iter()
        .filter_map(|e| e.kvno.or(e.key_version).map(|v| (e.subject.clone(), v)))
        .collect()
}

/// Issues everything `wants` asks for, as role account `role`, to `pod`.
pub async fn assemble(
    st: &ControllerState,
    node: &str,
    pod: &PodInfo,
    role: &RoleAccount,
    wants: &CredentialRequest,
    priority: Priority,
) -> Result<Assembled, IssueError> {
    let content = content(st, node, role, wants, pod.fs_group, priority).await?;
    let events = content.events_for(node, pod, priority);
    Ok(Assembled {
        bundle: content.bundle,
        events,
    })
}

/// Issues everything `wants` asks for, as role account `role`, for pods
/// with `fs_group` on `node`; [`Content::events_for`] places it.
pub async fn content(
    st: &ControllerState,
    node: &str,
    role: &RoleAccount,
    wants: &CredentialRequest,
    fs_group: Option<u32>,
    priority: Priority,
) -> Result<Content, IssueError> {
    let secret_mode = if fs_group.is_some() { 0o440 } else { 0o400 };
    let gid = fs_group.unwrap_or(role.gid);
    let action = action_of(priority);
    let event = |kind: CredentialKind, subject: String| {
        AuditEvent::new(Actor::Node(node.to_string()), action)
            .with_kind(kind)
            .with_subject(subject)
            .with_reason(format!("role account {}", role.login))
    };
    // The realms the volume's Kerberos credentials come from: a role
    // account's ticket is of its realm.
    let ticket_realm = role.realm.as_deref().unwrap_or(st.realm.default_realm());
    let mut realms: std::collections::BTreeSet<&str> =
        wants.keytabs.iter().map(|p| p.realm()).collect();
    if wants.ticket.is_some() {
        realms.insert(ticket_realm);
    }
    let mut files = vec![BundleFile {
        name: "krb5.conf".into(),
        content: st.pod_krb5_conf.for_realms(&realms),
        mode: 0o444,
    }];
    let mut events = Vec::new();
    let mut refresh_after: Option<SystemTime> = None;
    let mut sooner = |t: SystemTime| {
        refresh_after = Some(refresh_after.map_or(t, |r| r.min(t)));
    };

    if !wants.keytabs.is_empty() {
        let mut keytabs = Vec::with_capacity(wants.keytabs.len());
        for principal in &wants.keytabs {
            let k = st
                .keytabs
                .keytab(&Principal::Service(principal.clone()), priority)
                .await?;
            let mut e = event(CredentialKind::Keytab, principal.to_string());
            if let Some(kvno) = k.kvnos().iter().max() {
                e = e.with_kvno(*kvno);
            }
            events.push(e);
            keytabs.push(k);
        }
        let merged = Keytab::merge(keytabs.iter()).map_err(IssueError::Keytab)?;
        files.push(BundleFile {
            name: "krb5.keytab".into(),
            content: merged.bytes().to_vec(),
            mode: secret_mode,
        });
    }
    if let Some(login) = &wants.ticket {
        let t = st.tickets.ticket(login, ticket_realm, priority).await?;
        sooner(t.refresh_at);
        events.push(
            event(CredentialKind::Ticket, t.ticket.client.clone()).with_reason(format!(
                "role account {}; valid until {}",
                role.login,
                unix_secs(t.ticket.end)
            )),
        );
        files.push(BundleFile {
            name: "krb5cc".into(),
            content: t.ticket.ccache().to_vec(),
            mode: secret_mode,
        });
    }
    if !wants.certs.is_empty() {
        let leaf = st.certs.cert(&role.login, &wants.certs).await?;
        sooner(leaf.refresh_at);
        let names = wants.certs.iter().cloned().collect::<Vec<_>>().join(",");
        events.push(event(CredentialKind::Cert, names).with_serial(leaf.serial_hex.clone()));
        files.push(BundleFile {
            name: "tls.crt".into(),
            content: leaf.cert_pem.clone().into_bytes(),
            mode: 0o444,
        });
        files.push(BundleFile {
            name: "tls.key".into(),
            content: leaf.key_pem.as_bytes().to_vec(),
            mode: secret_mode,
        });
        files.push(BundleFile {
            name: "ca.crt".into(),
            content: st.certs.trust_bundle().as_bytes().to_vec(),
            mode: 0o444,
        });
    }
    for id in &wants.keys {
        let f = st.keys.key_file(id).await?;
        events.push(event(CredentialKind::Key, id.clone()).with_key_version(f.primary));
        files.push(BundleFile {
            name: f.name.clone(),
            content: f.content.to_vec(),
            mode: secret_mode,
        });
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    let generation = generation(&files, role.uid, gid);
    Ok(Content {
        bundle: Bundle {
            files,
            uid: role.uid,
            gid,
            generation,
            refresh_after_unix: refresh_after.map(unix_secs).unwrap_or(0),
        },
        events,
    })
}
