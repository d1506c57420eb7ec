//! Why a volume operation failed. Each variant maps to one CSI status code
//! (see `crate::csi::status`).

use std::path::PathBuf;

use crate::controller_client::ControllerError;
use crate::storage::StorageError;

/// Why a volume operation failed.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// Another operation on the same volume is running (CSI: ABORTED).
    #[error("an operation on volume {0} is already in progress")]
    Busy(String),
    /// The lifecycle refused the request and touched nothing.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The controller refused, failed or could not be reached.
    #[error(transparent)]
    Controller(#[from] ControllerError),
    /// Node-side storage failed (CSI: INTERNAL).
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A blocking task failed (CSI: INTERNAL).
    #[error("internal task failed: {0}")]
    Task(String),
}

/// A request the lifecycle refuses because of what is recorded or what is
/// at the target: it would mix volumes up or touch what is not this
/// driver's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Another volume is recorded at this target.
    #[error("target {} holds volume {holder}, not {volume_id}", target.display())]
    TargetTaken {
        /// The target asked for.
        target: PathBuf,
        /// The volume asked for.
        volume_id: String,
        /// The volume recorded there.
        holder: String,
    },
    /// The volume is published at another target.
    #[error("volume {volume_id} is published at {}, not {}", recorded.display(), asked.display())]
    PublishedElsewhere {
        /// The volume.
        volume_id: String,
        /// Where it is.
        recorded: PathBuf,
        /// Where it was asked for.
        asked: PathBuf,
    },
    /// The volume is recorded for another pod.
    #[error("volume {volume_id} is published for pod UID {recorded_uid}, not {asked_uid}")]
    OtherPod {
        /// The volume.
        volume_id: String,
        /// The pod on record.
        recorded_uid: String,
        /// The pod asked for.
        asked_uid: String,
    },
    /// The volume is published with the other `readonly` (CSI: ALREADY_EXISTS).
    #[error("volume {volume_id} is already published with readonly={recorded}")]
    ReadonlyChanged {
        /// The volume.
        volume_id: String,
        /// Its readonly on record.
        recorded: bool,
    },
    /// The target holds something this driver did not put there.
    #[error("target {} holds {what} that this driver did not publish; refusing to touch it", target.display())]
    NotOurs {
        /// The target.
        target: PathBuf,
        /// What it holds.
        what: &'static str,
    },
}
