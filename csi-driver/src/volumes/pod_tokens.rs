//! The last token kubelet passed for each volume's pod, held in memory
//! only (never in the state directory: it is a credential).
//!
//! Kubelet passes a fresh token with every publish and republish (about
//! once a minute); refreshes between them (deadlines, pushed rotations)
//! send the last one while it is valid. After a driver restart there is
//! none until kubelet's next republish: a controller that requires pod
//! tokens refuses those refreshes meanwhile, and the pod keeps its files.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use kcred_auth::BearerToken;

use crate::csi::pod_token::PodToken;
use crate::support::lock::lock;

/// A token this close to its expiry is not sent: it could lapse on the way.
const MARGIN: Duration = Duration::from_secs(10);

struct Held {
    pod_uid: String,
    token: PodToken,
}

/// Tokens by volume id.
#[derive(Default)]
pub struct PodTokens {
    held: Mutex<HashMap<String, Held>>,
}

impl PodTokens {
    /// Keeps the token kubelet just passed for `volume_id`'s pod.
    pub fn remember(&self, volume_id: &str, pod_uid: &str, token: PodToken) {
        lock(&self.held).insert(
            volume_id.to_string(),
            Held {
                pod_uid: pod_uid.to_string(),
                token,
            },
        );
    }

    /// The token to send for `volume_id` of pod `pod_uid`: the last one
    /// kubelet passed for that pod, unless it is about to expire.
    pub fn current(&self, volume_id: &str, pod_uid: &str, now: SystemTime) -> Option<BearerToken> {
        let held = lock(&self.held);
        let h = held.get(volume_id)?;
        let live = h.token.expires.is_none_or(|e| e > now + MARGIN);
        (h.pod_uid == pod_uid && live).then(|| h.token.token.clone())
    }

    /// Drops the volume's token (the volume is gone).
    pub fn forget(&self, volume_id: &str) {
        lock(&self.held).remove(volume_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(expires: Option<SystemTime>) -> PodToken {
        PodToken {
            token: BearerToken::new("a.b.c").unwrap(),
            expires,
        }
    }

    #[test]
    fn the_last_token_is_sent_for_its_own_pod_while_it_is_valid() {
        let tokens = PodTokens::default();
        let now = SystemTime::now();
        tokens.remember(
            "vol-1",
            "uid-1",
            token(Some(now + Duration::from_secs(600))),
        );
        assert!(tokens.current("vol-1", "uid-1", now).is_some());
        assert!(
            tokens.current("vol-1", "uid-2", now).is_none(),
            "another pod"
        );
        assert!(
            tokens.current("vol-2", "uid-1", now).is_none(),
            "another volume"
        );
        let late = now + Duration::from_secs(595);
        assert!(
            tokens.current("vol-1", "uid-1", late).is_none(),
            "about to expire"
        );
        tokens.forget("vol-1");
        assert!(tokens.current("vol-1", "uid-1", now).is_none());
    }
}
