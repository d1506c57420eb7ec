//! Setting the webhook up from the controller's config at start.

use std::sync::Arc;

use zeroize::Zeroizing;

use super::serve::{Listener, Webhook, acceptor};
use crate::config::Config;
use crate::state::ControllerState;

/// The webhook's serving certificate and key: its own files, else the
/// `[tls]` files, else a certificate for `tls.names` from the controller's
/// CA (the one `tls.ca_export_file` exports, so that file is the
/// `caBundle`).
fn identity(cfg: &Config, state: &ControllerState) -> Result<(String, Zeroizing<String>), String> {
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))
    };
    let w = cfg.webhook.as_ref().ok_or("no [webhook] table")?;
    if let (Some(c), Some(k)) = (&w.cert_file, &w.key_file) {
        return Ok((read(c)?, Zeroizing::new(read(k)?)));
    }
    let tls = cfg
        .tls
        .as_ref()
        .ok_or("webhook: no certificate: set [tls] or webhook.cert_file")?;
    match (&tls.cert_file, &tls.key_file) {
        (Some(c), Some(k)) => Ok((read(c)?, Zeroizing::new(read(k)?))),
        _ => state.certs.serving_cert(
            &tls.names,
            std::time::Duration::from_secs(tls.serving_cert_lifetime_secs),
        ),
    }
}

/// Binds the webhook's listener if the config has a `[webhook]` table.
pub fn prepare(
    cfg: &Config,
    state: &ControllerState,
) -> Result<Option<(Listener, Arc<Webhook>)>, String> {
    let Some(w) = &cfg.webhook else {
        return Ok(None);
    };
    let (cert, key) = identity(cfg, state)?;
    let acceptor = acceptor(&cert, &key).map_err(|e| e.to_string())?;
    let listener = Listener::bind(w.listen, acceptor).map_err(|e| e.to_string())?;
    let webhook = Arc::new(Webhook {
        policy: Arc::clone(&state.policy),
        realm: state.realm.clone(),
        driver: w.driver_name.clone(),
        metrics: Arc::clone(&state.metrics),
    });
    Ok(Some((listener, webhook)))
}
