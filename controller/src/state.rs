//! The controller's shared state, built once at start from the config.

use std::sync::Arc;

use crate::issuers::keytab::KeytabIssuer;
use crate::metrics::Metrics;
use crate::pods::PodIndex;
use crate::policy::Policy;
use crate::reload::Watched;

/// What every request handler reads.
pub struct ControllerState {
    /// The realm served.
    pub realm: String,
    /// Pods as the controller knows them.
    pub pods: Arc<PodIndex>,
    /// The role-account policy in force.
    pub policy: Arc<Watched<Policy>>,
    /// Keytab issuer.
    pub keytabs: KeytabIssuer,
    /// The `krb5.conf` delivered to pods.
    pub pod_krb5_conf: Vec<u8>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}
