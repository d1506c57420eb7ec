//! gRPC definitions shared by the kcred controller and CSI node driver.
//!
//! - [`csi::v1`]: the CSI spec's Identity and Node services, which kubelet
//!   calls on the driver's unix socket.
//! - [`kcred::v1`]: the controller API the driver calls.
//! - [`reason`]: the reason vocabulary carried in status details.

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

pub mod reason;
