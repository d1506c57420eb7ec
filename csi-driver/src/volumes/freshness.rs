//! Whether a volume's files are known to be current without asking the
//! controller: what lets a republish be answered from what the node holds.
//!
//! The controller pushes every change it makes to a volume's credentials
//! (rotations, retired key versions, revocations) over the update stream.
//! So files fetched while the stream is up stay current until a push says
//! otherwise, or until their own refresh deadline comes. Changes nobody
//! pushes (a pod's annotations, the policy) are caught by asking again at
//! least every [`QUIET_LIMIT`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::support::lock::lock;

/// Longest time a volume goes without asking the controller while kubelet
/// republishes it.
pub const QUIET_LIMIT: Duration = Duration::from_secs(300);

/// When the update stream came up, and when each volume's files were last
/// confirmed by the controller. In memory only: a restarted driver asks
/// again on each volume's first republish.
#[derive(Debug, Default)]
pub struct Freshness {
    stream_since: Mutex<Option<Instant>>,
    confirmed: Mutex<HashMap<String, Instant>>,
}

/// What freshness is judged from.
#[derive(Debug, Clone, Copy)]
pub struct Evidence {
    /// When the update stream came up (`None`: it is down).
    pub stream_since: Option<Instant>,
    /// When the controller last confirmed the volume's files.
    pub confirmed: Option<Instant>,
    /// Whether the volume's refresh deadline has come.
    pub deadline_due: bool,
    /// Whether a trigger (a push, a retry) is due or pending beyond a
    /// plain future deadline.
    pub trigger_pending: bool,
}

impl Evidence {
    /// Fresh: confirmed while the stream was up, recently, with nothing
    /// due or pending.
    pub fn is_fresh(&self, now: Instant) -> bool {
        match (self.stream_since, self.confirmed) {
            (Some(since), Some(at)) => {
                at >= since
                    && now.saturating_duration_since(at) < QUIET_LIMIT
                    && !self.deadline_due
                    && !self.trigger_pending
            }
            _ => false,
        }
    }
}

impl Freshness {
    /// The update stream is (re)established: pushes arrive from now on.
    pub fn stream_up(&self) {
        *lock(&self.stream_since) = Some(Instant::now());
    }

    /// The update stream broke: pushes may be missed.
    pub fn stream_down(&self) {
        *lock(&self.stream_since) = None;
    }

    /// Whether the update stream is up.
    pub fn following(&self) -> bool {
        lock(&self.stream_since).is_some()
    }

    /// The controller answered for the volume's files when it was asked
    /// at `asked`: they are current as of then, not as of the answer (a
    /// push lost to a stream that dropped in between must not be missed).
    pub fn confirm(&self, volume_id: &str, asked: Instant) {
        lock(&self.confirmed).insert(volume_id.to_string(), asked);
    }

    /// The volume's files are no longer known current (a failed refresh),
    /// or the volume is gone.
    pub fn forget(&self, volume_id: &str) {
        lock(&self.confirmed).remove(volume_id);
    }

    /// The stream's and the volume's part of the evidence.
    pub fn evidence(&self, volume_id: &str, deadline_due: bool, trigger_pending: bool) -> Evidence {
        Evidence {
            stream_since: *lock(&self.stream_since),
            confirmed: lock(&self.confirmed).get(volume_id).copied(),
            deadline_due,
            trigger_pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evidence(since: Option<Instant>, confirmed: Option<Instant>) -> Evidence {
        Evidence {
            stream_since: since,
            confirmed,
            deadline_due: false,
            trigger_pending: false,
        }
    }

    #[test]
    fn files_confirmed_while_the_stream_is_up_are_fresh_until_the_quiet_limit() {
        let since = Instant::now();
        let at = since + Duration::from_secs(1);
        assert!(evidence(Some(since), Some(at)).is_fresh(at + Duration::from_secs(60)));
        assert!(!evidence(Some(since), Some(at)).is_fresh(at + QUIET_LIMIT));
    }

    #[test]
    fn without_the_stream_or_a_confirmation_after_it_came_up_nothing_is_fresh() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        assert!(!evidence(None, Some(t1)).is_fresh(t1));
        assert!(!evidence(Some(t1), None).is_fresh(t1));
        // Confirmed before the stream (re)connected: a push may be missed.
        assert!(!evidence(Some(t1), Some(t0)).is_fresh(t1));
    }

    #[test]
    fn a_due_deadline_or_a_pending_trigger_is_never_fresh() {
        let t = Instant::now();
        let mut e = evidence(Some(t), Some(t));
        assert!(e.is_fresh(t));
        e.deadline_due = true;
        assert!(!e.is_fresh(t));
        e.deadline_due = false;
        e.trigger_pending = true;
        assert!(!e.is_fresh(t));
    }

    /// The stream dropped and came back while a refresh was under way (a
    /// push may have been lost then): its answer confirms nothing.
    #[test]
    fn an_answer_asked_for_before_the_stream_came_back_is_not_fresh() {
        let f = Freshness::default();
        f.stream_up();
        let asked = Instant::now();
        std::thread::sleep(Duration::from_millis(2));
        f.stream_down();
        f.stream_up();
        f.confirm("v", asked);
        assert!(!f.evidence("v", false, false).is_fresh(Instant::now()));
    }

    #[test]
    fn the_stream_and_confirmations_are_tracked() {
        let f = Freshness::default();
        assert!(!f.following());
        f.stream_up();
        f.confirm("v", Instant::now());
        assert!(f.evidence("v", false, false).is_fresh(Instant::now()));
        f.forget("v");
        assert!(!f.evidence("v", false, false).is_fresh(Instant::now()));
        f.confirm("v", Instant::now());
        f.stream_down();
        assert!(!f.following());
        assert!(!f.evidence("v", false, false).is_fresh(Instant::now()));
    }
}
