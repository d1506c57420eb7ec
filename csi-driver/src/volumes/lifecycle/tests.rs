//! The lifecycle's decisions, one rule per test.

use super::*;
use crate::storage::state::WipeReason;
use crate::support::time::Deadline;

const T: &str = "/k/pods/u1/volumes/kubernetes.io~csi/creds/mount";

fn request(readonly: bool) -> PublishRequest {
    PublishRequest {
        volume_id: "csi-v1".into(),
        target: T.into(),
        pod: PodRef {
            namespace: "web".into(),
            name: "web-0".into(),
            uid: "u1".into(),
            service_account: "default".into(),
        },
        readonly,
    }
}

fn record(phase: Phase) -> PublishedVolume {
    PublishedVolume {
        volume_id: "csi-v1".into(),
        target: T.into(),
        pod_namespace: "web".into(),
        pod_name: "web-0".into(),
        pod_uid: "u1".into(),
        service_account: "default".into(),
        readonly: false,
        uid: 1500,
        gid: 1500,
        published_at: Deadline::now(),
        phase,
    }
}

fn mounted() -> PublishedVolume {
    record(Phase::Mounted {
        generation: "g1".into(),
        refresh_at: None,
    })
}

fn wiped() -> PublishedVolume {
    record(Phase::Wiped {
        reason: WipeReason::Revoked,
    })
}

fn seen(record: Option<&PublishedVolume>, target: Target) -> Observed<'_> {
    Observed {
        record,
        target,
        holder: None,
        fresh: false,
    }
}

fn publish() -> Trigger {
    Trigger::Publish(request(false))
}

fn issue(mount: bool) -> Plan {
    Plan::Issue {
        request: request(false),
        mount,
    }
}

#[test]
fn a_first_publish_mounts_only_an_empty_or_missing_target() {
    for t in [Target::Missing, Target::EmptyDir] {
        assert_eq!(decide(&publish(), seen(None, t)), issue(true));
    }
    for t in [Target::Mount, Target::NonEmptyDir, Target::Foreign] {
        assert!(
            matches!(
                decide(&publish(), seen(None, t)),
                Plan::Refuse(Refusal::NotOurs { .. })
            ),
            "{t:?}"
        );
    }
}

#[test]
fn a_publish_at_a_target_recorded_for_another_volume_is_refused() {
    let plan = decide(
        &publish(),
        Observed {
            record: None,
            target: Target::Mount,
            holder: Some("csi-other"),
            fresh: false,
        },
    );
    assert!(
        matches!(plan, Plan::Refuse(Refusal::TargetTaken { ref holder, .. }) if holder == "csi-other"),
        "{plan:?}"
    );
}

#[test]
fn a_republish_refreshes_and_never_remounts() {
    let rec = mounted();
    assert_eq!(
        decide(&publish(), seen(Some(&rec), Target::Mount)),
        Plan::Refresh
    );
}

#[test]
fn a_republish_of_files_known_current_is_answered_from_what_the_node_holds() {
    let rec = mounted();
    let fresh = Observed {
        fresh: true,
        ..seen(Some(&rec), Target::Mount)
    };
    assert_eq!(decide(&publish(), fresh), Plan::Nothing);
    // Scheduled refreshes (deadlines, pushes) always ask.
    assert_eq!(
        decide(&Trigger::Refresh(Cause::Pushed), fresh),
        Plan::Refresh
    );
    // A mount that vanished is mounted again, however fresh.
    let gone = Observed {
        fresh: true,
        ..seen(Some(&rec), Target::Missing)
    };
    assert_eq!(decide(&publish(), gone), issue(true));
}

#[test]
fn a_republish_elsewhere_for_another_pod_or_with_another_readonly_is_refused() {
    let rec = mounted();
    let mut elsewhere = request(false);
    elsewhere.target = "/k/pods/u1/volumes/kubernetes.io~csi/other/mount".into();
    assert!(matches!(
        decide(
            &Trigger::Publish(elsewhere),
            seen(Some(&rec), Target::Missing)
        ),
        Plan::Refuse(Refusal::PublishedElsewhere { .. })
    ));
    let mut other_pod = request(false);
    other_pod.pod.uid = "u2".into();
    assert!(matches!(
        decide(
            &Trigger::Publish(other_pod),
            seen(Some(&rec), Target::Mount)
        ),
        Plan::Refuse(Refusal::OtherPod { .. })
    ));
    assert!(matches!(
        decide(
            &Trigger::Publish(request(true)),
            seen(Some(&rec), Target::Mount)
        ),
        Plan::Refuse(Refusal::ReadonlyChanged {
            recorded: false,
            ..
        })
    ));
}

#[test]
fn an_interrupted_first_publish_is_completed_by_the_retry() {
    let rec = record(Phase::Publishing);
    assert_eq!(
        decide(&publish(), seen(Some(&rec), Target::Mount)),
        issue(false)
    );
    assert_eq!(
        decide(&publish(), seen(Some(&rec), Target::EmptyDir)),
        issue(true)
    );
}

#[test]
fn a_recorded_volume_whose_mount_vanished_is_mounted_again() {
    let rec = mounted();
    assert_eq!(
        decide(&publish(), seen(Some(&rec), Target::Missing)),
        issue(true)
    );
}

#[test]
fn a_revoked_volume_stays_wiped_whatever_kubelet_or_the_controller_says() {
    let rec = wiped();
    for trigger in [
        publish(),
        Trigger::Refresh(Cause::Deadline),
        Trigger::Refresh(Cause::Pushed),
        Trigger::Revoke,
    ] {
        assert_eq!(
            decide(&trigger, seen(Some(&rec), Target::Mount)),
            Plan::Nothing,
            "{trigger:?}"
        );
    }
    assert_eq!(
        decide(&publish(), seen(Some(&rec), Target::Missing)),
        Plan::MountEmpty,
        "a mount lost to a reboot comes back empty"
    );
}

#[test]
fn revocation_wipes_files_and_keeps_the_mount() {
    let rec = mounted();
    assert_eq!(
        decide(&Trigger::Revoke, seen(Some(&rec), Target::Mount)),
        Plan::Wipe { mounted: true }
    );
    assert_eq!(
        decide(&Trigger::Revoke, seen(Some(&rec), Target::Missing)),
        Plan::Wipe { mounted: false }
    );
    assert_eq!(
        decide(&Trigger::Revoke, seen(None, Target::Mount)),
        Plan::Nothing
    );
}

#[test]
fn scheduled_refreshes_touch_only_mounted_volumes() {
    let rec = mounted();
    let due = Trigger::Refresh(Cause::Deadline);
    assert_eq!(decide(&due, seen(Some(&rec), Target::Mount)), Plan::Refresh);
    for gone in [Target::Missing, Target::EmptyDir] {
        assert_eq!(decide(&due, seen(Some(&rec), gone)), Plan::Wait);
    }
    let publishing = record(Phase::Publishing);
    assert_eq!(
        decide(&due, seen(Some(&publishing), Target::Mount)),
        Plan::Nothing
    );
    assert_eq!(decide(&due, seen(None, Target::Mount)), Plan::Nothing);
}

#[test]
fn a_stale_volume_is_wiped_then_removed() {
    let rec = mounted();
    assert_eq!(
        decide(&Trigger::Stale, seen(Some(&rec), Target::Mount)),
        Plan::Remove { wipe: true }
    );
    assert_eq!(
        decide(&Trigger::Stale, seen(Some(&wiped()), Target::Mount)),
        Plan::Remove { wipe: false }
    );
    assert_eq!(
        decide(&Trigger::Stale, seen(Some(&rec), Target::Foreign)),
        Plan::Forget
    );
}

#[test]
fn unpublish_never_unmounts_what_is_not_recorded() {
    let unpublish = Trigger::Unpublish { target: T.into() };
    assert!(matches!(
        decide(&unpublish, seen(None, Target::Mount)),
        Plan::Refuse(Refusal::NotOurs { .. })
    ));
    assert_eq!(
        decide(&unpublish, seen(None, Target::Missing)),
        Plan::Nothing
    );
    assert_eq!(
        decide(&unpublish, seen(None, Target::EmptyDir)),
        Plan::RemoveMountPoint(T.into())
    );
    assert_eq!(
        decide(&unpublish, seen(None, Target::NonEmptyDir)),
        Plan::Nothing
    );
    let rec = mounted();
    assert_eq!(
        decide(&unpublish, seen(Some(&rec), Target::Mount)),
        Plan::Remove { wipe: false }
    );
    assert_eq!(
        decide(&unpublish, seen(Some(&rec), Target::Foreign)),
        Plan::Forget
    );
    let elsewhere = Trigger::Unpublish {
        target: "/k/pods/u1/volumes/kubernetes.io~csi/other/mount".into(),
    };
    assert!(matches!(
        decide(&elsewhere, seen(Some(&rec), Target::Mount)),
        Plan::Refuse(Refusal::PublishedElsewhere { .. })
    ));
}

#[test]
fn the_strongest_pending_cause_wins() {
    assert!(Cause::Stale > Cause::Revoked);
    assert!(Cause::Revoked > Cause::Pushed);
    assert!(Cause::Pushed > Cause::Deadline);
    assert_eq!(Cause::Revoked.trigger(), Trigger::Revoke);
}
