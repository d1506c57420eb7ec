//! The admission webhook: pods are fixed up and checked when they are
//! created, not when kubelet first mounts their volume.
//!
//! The API server calls it with an `admission.k8s.io/v1` `AdmissionReview`
//! for every pod created in the namespaces the webhook configurations
//! select:
//!
//! - `/mutate-pods` ([`mutate`]): a pod with `kcred.io/*` annotations and no
//!   kcred volume gets the inline CSI volume, a read-only mount of it in
//!   every container and init container, and `KRB5_CONFIG`, `KRB5_KTNAME`
//!   and `KRB5CCNAME` for the kinds it asks for. A pod that already has
//!   the volume is left as it is, so the mutation is idempotent.
//! - `/validate-pods` ([`validate`]): refuses unknown `kcred.io/*` keys
//!   (naming the nearest known one), malformed values, a namespace with no
//!   role account, and pods that would not run as the role account.
//!
//! It is served on its own HTTPS listener ([`serve`]) with the controller's
//! serving certificate, so the `caBundle` of the webhook configurations is
//! the controller's CA.

pub mod mutate;
pub mod nearest;
pub mod review;
pub mod serve;
pub mod start;
pub mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// The CSI driver name of the chart's `CSIDriver` object.
pub const DEFAULT_DRIVER_NAME: &str = "csi.kcred.io";

/// The `[webhook]` table: where the admission webhook listens and which
/// certificate it presents.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSection {
    /// Address of the webhook's HTTPS listener (the webhook
    /// configurations' `clientConfig.url` points here).
    pub listen: SocketAddr,
    /// Serving certificate (PEM). Default: the `[tls]` certificate the
    /// gRPC API serves.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// Its key (PEM).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The CSI driver named in the volumes the webhook adds.
    #[serde(default = "default_driver_name")]
    pub driver_name: String,
}

fn default_driver_name() -> String {
    DEFAULT_DRIVER_NAME.to_string()
}

impl WebhookSection {
    /// Checks the table; `have_tls` says whether a `[tls]` table exists
    /// to borrow a certificate from.
    pub fn validate(&self, have_tls: bool) -> Result<(), String> {
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err("webhook.cert_file and webhook.key_file go together".into());
        }
        if self.cert_file.is_none() && !have_tls {
            return Err("webhook: the API server calls webhooks over HTTPS only: set a [tls] table (its certificate is used) or webhook.cert_file and webhook.key_file".into());
        }
        let d = &self.driver_name;
        if d.is_empty()
            || d.len() > 63
            || !d
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b))
        {
            return Err(format!(
                "webhook.driver_name {d:?} is not a CSI driver name (lower-case DNS name, at most 63 characters)"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(extra: &str) -> WebhookSection {
        toml::from_str(&format!("listen = \"127.0.0.1:7443\"\n{extra}")).unwrap()
    }

    #[test]
    fn the_webhook_needs_a_certificate_and_a_driver_name() {
        assert!(section("").validate(true).is_ok());
        assert_eq!(section("").driver_name, "csi.kcred.io");
        let err = section("").validate(false).unwrap_err();
        assert!(err.contains("HTTPS only") && err.contains("[tls]"), "{err}");
        let own = "cert_file = \"/c\"\nkey_file = \"/k\"";
        assert!(section(own).validate(false).is_ok());
        let err = section("cert_file = \"/c\"").validate(true).unwrap_err();
        assert!(err.contains("go together"), "{err}");
        let err = section("driver_name = \"CSI_Kcred\"")
            .validate(true)
            .unwrap_err();
        assert!(err.contains("driver_name"), "{err}");
        assert!(
            toml::from_str::<WebhookSection>("listen = \"127.0.0.1:1\"\nlisten_port = 1").is_err()
        );
    }
}
