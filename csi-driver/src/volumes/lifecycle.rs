//! A volume's life as one explicit state machine.
//!
//! Every change to a volume starts from a [`Trigger`] (kubelet's publish,
//! republish and unpublish, the refresh deadline, a pushed update, the
//! heartbeat's verdict). [`decide`] looks at what is recorded for the
//! volume ([`Phase`]) and at what its target holds ([`Target`]), and
//! names the one thing to do ([`Plan`]); `reconcile` does it and says
//! when to look again.
//!
//! ```text
//!                 publish: fetch, record, mount, write
//!   (none) ─────────────────────────────────────────────▶ Mounted ◀──┐ republish, deadline,
//!     │  ▲                                                  │  │     │ push: refresh (a failure
//!     │  └── any step fails: unmounted, record removed      │  └─────┘ keeps the last good files)
//!     │                                                     │ revoked
//!     │        unpublish or stale: unmount, forget          ▼
//!     ◀──────────────────────────────────────────────────  Wiped (mount kept, nothing fetched)
//! ```
//! `Publishing` is recorded before anything touches the node and seen
//! only after a crash mid-publish: the retried publish completes it.
//!
//! A republish refreshes the files, except when they are known current
//! (fetched while the controller's update stream was up, recently, with no
//! deadline or push due): then it is answered from what the node holds.
//!
//! Rules that keep volumes apart: nothing is written into or unmounted at
//! a target without a record saying this driver put it there; a target
//! with a mount or files of unknown origin is refused; a volume is only
//! ever at the target, with the pod and the `readonly` it was recorded
//! with. And a republish never unmounts and never fails because of the
//! controller: kubelet tears down the mount directory of a volume whose
//! republish fails for good (kubernetes/kubernetes#121271).

use std::path::PathBuf;

use kcred_proto::kcred::v1::PodRef;

use super::error::Refusal;
use crate::storage::Target;
use crate::storage::state::{Phase, PublishedVolume};

/// A validated publish request from kubelet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishRequest {
    /// CSI volume id.
    pub volume_id: String,
    /// Where to mount.
    pub target: PathBuf,
    /// The pod the volume belongs to.
    pub pod: PodRef,
    /// Whether the pod must see the volume read-only.
    pub readonly: bool,
}

/// Why a volume is looked at now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// Kubelet's NodePublishVolume: a first publish, or a republish (every
    /// pod sync, about once a minute).
    Publish(PublishRequest),
    /// Kubelet's NodeUnpublishVolume.
    Unpublish {
        /// The target kubelet names.
        target: PathBuf,
    },
    /// The refresh deadline (or a retry) came, or the controller pushed a
    /// refresh (a rotation).
    Refresh(Cause),
    /// The controller revoked the volume (a pushed wipe, or the
    /// heartbeat's list of revoked volumes).
    Revoke,
    /// The heartbeat says the volume's pod is no longer bound here.
    Stale,
}

/// The scheduler's triggers, in increasing precedence: when several are
/// pending for one volume, the strongest one runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cause {
    /// The refresh deadline or a retry after a failed refresh.
    Deadline,
    /// The controller pushed a refresh.
    Pushed,
    /// The controller revoked the volume.
    Revoked,
    /// The pod is no longer bound to this node.
    Stale,
}

impl Cause {
    /// The trigger it fires.
    pub fn trigger(self) -> Trigger {
        match self {
            Cause::Deadline | Cause::Pushed => Trigger::Refresh(self),
            Cause::Revoked => Trigger::Revoke,
            Cause::Stale => Trigger::Stale,
        }
    }
}

/// The one thing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Fetch a first issue, record the volume, mount it (unless the
    /// target already is this volume's mount), write the files.
    Issue {
        /// What kubelet asked for.
        request: PublishRequest,
        /// Whether a mount is needed.
        mount: bool,
    },
    /// Fetch again and write what changed; a failure keeps the last good
    /// files.
    Refresh,
    /// Mount the volume again, empty (a wiped volume whose mount was lost).
    MountEmpty,
    /// Remove the files, keep the mount, record the volume as wiped.
    Wipe {
        /// Whether there is a mount with files to remove.
        mounted: bool,
    },
    /// Unmount the volume, remove its mount point and forget it; remove
    /// the files first if `wipe` (a container still running keeps its
    /// view of a lazily detached tmpfs).
    Remove {
        /// Whether to wipe before unmounting.
        wipe: bool,
    },
    /// Forget the record, touching nothing at the target (what is there
    /// now is not this driver's).
    Forget,
    /// Remove an empty mount point of a volume without a record.
    RemoveMountPoint(PathBuf),
    /// Nothing to do; the caller gets OK.
    Nothing,
    /// Nothing to do until kubelet's next call, and no deadline kept: the
    /// volume's refresh deadline came due but its mount is gone, so
    /// keeping the deadline would run this again at once, and again.
    Wait,
    /// Refuse, touching nothing.
    Refuse(Refusal),
}

/// What is known before deciding.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// The volume's record, if it has one.
    pub record: Option<&'a PublishedVolume>,
    /// What the target holds: the trigger's target for kubelet's calls,
    /// the recorded one otherwise.
    pub target: Target,
    /// Another volume recorded at the trigger's target, if any.
    pub holder: Option<&'a str>,
    /// Whether the volume's files are known current without asking the
    /// controller (see [`super::freshness`]).
    pub fresh: bool,
}

/// Decides what a trigger does to a volume. Pure: the whole lifecycle
/// policy is here.
pub fn decide(trigger: &Trigger, seen: Observed<'_>) -> Plan {
    match trigger {
        Trigger::Publish(req) => publish(req, seen),
        Trigger::Unpublish { target } => unpublish(target, seen),
        Trigger::Refresh(_) => match seen.record {
            Some(PublishedVolume {
                phase: Phase::Mounted { .. },
                ..
            }) if seen.target == Target::Mount => Plan::Refresh,
            // Its mount gone (a reboot): kubelet's next call decides, and
            // the deadline that came due is dropped.
            Some(PublishedVolume {
                phase: Phase::Mounted { .. },
                ..
            }) => Plan::Wait,
            // Not mounted yet, or wiped: kubelet's next call decides.
            _ => Plan::Nothing,
        },
        Trigger::Revoke => match seen.record {
            Some(rec) if !rec.is_wiped() => Plan::Wipe {
                mounted: seen.target == Target::Mount,
            },
            _ => Plan::Nothing,
        },
        Trigger::Stale => match (seen.record, seen.target) {
            (None, _) => Plan::Nothing,
            (Some(rec), Target::Mount) => Plan::Remove {
                wipe: !rec.is_wiped(),
            },
            (Some(_), Target::Missing | Target::EmptyDir) => Plan::Remove { wipe: false },
            (Some(_), Target::NonEmptyDir | Target::Foreign) => Plan::Forget,
        },
    }
}

fn not_ours(target: &std::path::Path, what: Target) -> Plan {
    let what = match what {
        Target::Mount => "a mount",
        Target::NonEmptyDir => "a non-empty directory",
        _ => "something that is not an empty directory",
    };
    Plan::Refuse(Refusal::NotOurs {
        target: target.to_path_buf(),
        what,
    })
}

fn issue(req: &PublishRequest, mount: bool) -> Plan {
    Plan::Issue {
        request: req.clone(),
        mount,
    }
}

fn publish(req: &PublishRequest, seen: Observed<'_>) -> Plan {
    if let Some(holder) = seen.holder {
        return Plan::Refuse(Refusal::TargetTaken {
            target: req.target.clone(),
            volume_id: req.volume_id.clone(),
            holder: holder.to_string(),
        });
    }
    let Some(rec) = seen.record else {
        return match seen.target {
            Target::Missing | Target::EmptyDir => issue(req, true),
            other => not_ours(&req.target, other),
        };
    };
    if rec.target != req.target {
        return Plan::Refuse(Refusal::PublishedElsewhere {
            volume_id: req.volume_id.clone(),
            recorded: rec.target.clone(),
            asked: req.target.clone(),
        });
    }
    if rec.pod_uid != req.pod.uid {
        return Plan::Refuse(Refusal::OtherPod {
            volume_id: req.volume_id.clone(),
            recorded_uid: rec.pod_uid.clone(),
            asked_uid: req.pod.uid.clone(),
        });
    }
    if rec.readonly != req.readonly {
        return Plan::Refuse(Refusal::ReadonlyChanged {
            volume_id: req.volume_id.clone(),
            recorded: rec.readonly,
        });
    }
    match (&rec.phase, seen.target) {
        // Revoked stays revoked: nothing is fetched, the mount stays; one
        // lost with a node reboot comes back empty.
        (Phase::Wiped { .. }, Target::Missing | Target::EmptyDir) => Plan::MountEmpty,
        (Phase::Wiped { .. }, _) => Plan::Nothing,
        (_, Target::NonEmptyDir | Target::Foreign) => not_ours(&req.target, seen.target),
        // An interrupted first publish, completed.
        (Phase::Publishing, Target::Mount) => issue(req, false),
        // The republish of files known current (fetched while the update
        // stream was up, recently, no deadline or push due) is answered
        // from what the node holds: no controller round trip every minute
        // for every pod.
        (Phase::Mounted { .. }, Target::Mount) if seen.fresh => Plan::Nothing,
        // Any other republish: a refresh.
        (Phase::Mounted { .. }, Target::Mount) => Plan::Refresh,
        // Never mounted, or the mount is gone (a node reboot): mount again.
        (Phase::Publishing | Phase::Mounted { .. }, Target::Missing | Target::EmptyDir) => {
            issue(req, true)
        }
    }
}

fn unpublish(target: &std::path::Path, seen: Observed<'_>) -> Plan {
    match (seen.record, seen.target) {
        (Some(rec), _) if rec.target != target => Plan::Refuse(Refusal::PublishedElsewhere {
            volume_id: rec.volume_id.clone(),
            recorded: rec.target.clone(),
            asked: target.to_path_buf(),
        }),
        (Some(_), Target::Mount | Target::Missing | Target::EmptyDir) => {
            Plan::Remove { wipe: false }
        }
        (Some(_), Target::NonEmptyDir | Target::Foreign) => Plan::Forget,
        // Unknown volume: only an empty mount point is cleaned up; a mount
        // is never unmounted on an unknown volume's word.
        (None, Target::Missing) => Plan::Nothing,
        (None, Target::EmptyDir) => Plan::RemoveMountPoint(target.to_path_buf()),
        (None, Target::Mount) => not_ours(target, Target::Mount),
        (None, Target::NonEmptyDir | Target::Foreign) => Plan::Nothing,
    }
}

#[cfg(test)]
mod tests;
