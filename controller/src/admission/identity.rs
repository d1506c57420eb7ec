//! Who the pod runs as, against the role account it would receive
//! credentials of.
//!
//! Files land owned by the role account's uid and gid, 0400 (0440 with an
//! fsGroup). A pod that runs as another uid, or as root, or whose uid is
//! left to its image, would either not be able to read them or read them
//! as someone the policy never named. So every container's effective
//! `runAsUser` and `runAsGroup` (its own, else the pod's; init and
//! ephemeral containers included) must be the role account's, set
//! explicitly; `fsGroup` and `supplementalGroups` must be the role
//! account's gid or among its `supplemental_gids`; and where the policy
//! names service accounts, the pod's must be one of them.

use kcred_proto::kcred::v1::Reason;

use crate::pods::PodInfo;
use crate::policy::RoleAccount;
use crate::reasons::Refusal;

/// Checks the pod's identity against `role`.
pub fn check(pod: &PodInfo, role: &RoleAccount) -> Result<(), Refusal> {
    let who = format!("{}/{}", pod.namespace, pod.name);
    let mismatch = |what: String| {
        Refusal::new(
            Reason::RunAsMismatch,
            format!(
                "pod {who} {what}; pods in namespace {} must run as role account {} (runAsUser {}, runAsGroup {})",
                pod.namespace, role.login, role.uid, role.gid
            ),
        )
    };
    let named = |c: &str| {
        if c.is_empty() {
            "the pod".to_string()
        } else {
            format!("container {c:?}")
        }
    };
    // With no containers listed (a pods file), the pod level is what runs.
    let pod_level = crate::pods::ContainerIdentity::default();
    let containers = if pod.containers.is_empty() {
        std::slice::from_ref(&pod_level)
    } else {
        pod.containers.as_slice()
    };
    for c in containers {
        match c.run_as_user.or(pod.run_as_user) {
            Some(uid) if uid == role.uid => {}
            Some(uid) => return Err(mismatch(format!("runs {} as uid {uid}", named(&c.name)))),
            None => {
                return Err(mismatch(format!(
                    "leaves runAsUser of {} to its image",
                    named(&c.name)
                )));
            }
        }
        match c.run_as_group.or(pod.run_as_group) {
            Some(gid) if gid == role.gid => {}
            Some(gid) => {
                return Err(mismatch(format!("runs {} as gid {gid}", named(&c.name))));
            }
            None => {
                return Err(mismatch(format!(
                    "leaves runAsGroup of {} to its image",
                    named(&c.name)
                )));
            }
        }
    }
    let allowed = |g: u32| g == role.gid || role.supplemental_gids.contains(&g);
    if let Some(g) = pod.fs_group.filter(|g| !allowed(*g)) {
        return Err(mismatch(format!(
            "sets fsGroup {g}, which is neither gid {} nor among the role account's supplemental_gids",
            role.gid
        )));
    }
    if let Some(g) = pod.supplemental_groups.iter().find(|g| !allowed(**g)) {
        return Err(mismatch(format!(
            "lists supplemental group {g}, which is neither gid {} nor among the role account's supplemental_gids",
            role.gid
        )));
    }
    if !role.service_accounts.is_empty() && !role.service_accounts.contains(&pod.service_account) {
        return Err(Refusal::new(
            Reason::ServiceAccountNotAllowed,
            format!(
                "pod {who} runs as service account {:?}; role account {} serves only {:?}",
                pod.service_account, role.login, role.service_accounts
            ),
        ));
    }
    Ok(())
}
