//! gRPC definitions shared by the kcred controller and CSI node driver.
//!
//! - [`csi::v1`]: the CSI spec's Identity and Node services, which kubelet
//!   calls on the driver's unix socket.
//! - [`kcred::v1`]: the controller API the driver calls.
//! - [`reason`]: the reason vocabulary carried in status details.
//! - [`codec`]: the protobuf codec every service uses (small first
//!   buffers for the messages of long-lived streams; repeated fields
//!   counted before a request is decoded).
//! - [`limits`]: how many entries a request's repeated fields may carry.
//! - [`code_label`]: a status code as a metrics label.
//! - [`inline_volume_id`]: the volume id kubelet gives a pod's inline CSI
//!   volume, which the driver checks kubelet's requests against and the
//!   controller checks the node's.

#![forbid(unsafe_code)]

/// Container Storage Interface.
pub mod csi {
    /// CSI spec v1 (package `csi.v1`).
    #[allow(clippy::all, missing_docs)]
    pub mod v1 {
        tonic::include_proto!("csi.v1");
    }
}

/// kcred's own API.
pub mod kcred {
    /// Controller API, version 1 (package `kcred.v1`).
    #[allow(clippy::all, missing_docs)]
    pub mod v1 {
        tonic::include_proto!("kcred.v1");
    }
}

mod code_label;
pub mod codec;
pub mod limits;
pub mod reason;
mod volume_id;

pub use code_label::code_label;
pub use volume_id::inline_volume_id;

impl std::fmt::Debug for kcred::v1::FetchBundleRequest {
    /// Everything but the pod's token, which is a credential: only whether
    /// there is one.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchBundleRequest")
            .field("node_name", &self.node_name)
            .field("pod", &self.pod)
            .field("volume_id", &self.volume_id)
            .field("refresh", &self.refresh)
            .field(
                "pod_token",
                &if self.pod_token.is_empty() {
                    "<none>"
                } else {
                    "<redacted>"
                },
            )
            .finish()
    }
}

impl std::fmt::Debug for kcred::v1::VolumeRequest {
    /// Everything but the pod's token (see [`kcred::v1::FetchBundleRequest`]).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeRequest")
            .field("pod", &self.pod)
            .field("volume_id", &self.volume_id)
            .field("refresh", &self.refresh)
            .field(
                "pod_token",
                &if self.pod_token.is_empty() {
                    "<none>"
                } else {
                    "<redacted>"
                },
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::kcred::v1::{FetchBundleRequest, FetchBundlesRequest, VolumeRequest};

    #[test]
    fn a_batch_request_never_prints_its_pod_tokens() {
        let req = FetchBundlesRequest {
            node_name: "node-a".into(),
            volumes: vec![VolumeRequest {
                volume_id: "v1".into(),
                pod_token: "eyJhbGciOiJSUzI1NiJ9.secret.sig".into(),
                ..Default::default()
            }],
        };
        let shown = format!("{req:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(
            shown.contains("<redacted>") && shown.contains("v1"),
            "{shown}"
        );
    }

    #[test]
    fn a_fetch_request_never_prints_its_pod_token() {
        let req = FetchBundleRequest {
            node_name: "node-a".into(),
            pod_token: "eyJhbGciOiJSUzI1NiJ9.secret.sig".into(),
            ..Default::default()
        };
        let shown = format!("{req:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(
            shown.contains("<redacted>") && shown.contains("node-a"),
            "{shown}"
        );
    }
}
