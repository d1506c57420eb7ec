//! Setting the webhook up from the controller's config at start.

use std::sync::Arc;

use zeroize::Zeroizing;

use super::serve::{Listener, Webhook, acceptor, shared_acceptor};
use crate::config::Config;
use crate::serving_tls::ServingCert;
use crate::state::ControllerState;

/// The webhook's TLS: its own certificate files if set, else the `[tls]`
/// certificate in force for the node and admin APIs (`serving`: the
/// operator's files, or one from the controller's CA, which
/// `tls.ca_export_file` exports, so that file is the `caBundle`), renewed
/// with it.
fn tls(
    cfg: &Config,
    serving: Option<Arc<ServingCert>>,
) -> Result<tokio_rustls::TlsAcceptor, String> {
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))
    };
    let w = cfg.webhook.as_ref().ok_or("no [webhook] table")?;
    let acceptor = match (&w.cert_file, &w.key_file, serving) {
        (Some(c), Some(k), _) => acceptor(&read(c)?, &Zeroizing::new(read(k)?)),
        (_, _, Some(cert)) => shared_acceptor(cert),
        _ => return Err("webhook: no certificate: set [tls] or webhook.cert_file".into()),
    };
    acceptor.map_err(|e| e.to_string())
}

/// Binds the webhook's listener if the config has a `[webhook]` table.
pub fn prepare(
    cfg: &Config,
    state: &ControllerState,
    serving: Option<Arc<ServingCert>>,
) -> Result<Option<(Listener, Arc<Webhook>)>, String> {
    let Some(w) = &cfg.webhook else {
        return Ok(None);
    };
    let acceptor = tls(cfg, serving)?;
    let listener = Listener::bind(w.listen, acceptor).map_err(|e| e.to_string())?;
    let webhook = Arc::new(Webhook {
        policy: Arc::clone(&state.policy),
        realm: state.realm.clone(),
        driver: w.driver_name.clone(),
        metrics: Arc::clone(&state.metrics),
    });
    Ok(Some((listener, webhook)))
}
