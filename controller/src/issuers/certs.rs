//! Certificates: short-lived leaves from the controller's CA.
//!
//! The CA is the operator's (cert and key files) or the controller's own,
//! generated once and kept with its key sealed in the store. A leaf covers
//! exactly the names a pod asked for and its role account is granted; it
//! is cached per role account and name set until 2/3 of its life, then a
//! new one (new key, new serial) is issued.

use kcred_audit::timefmt::unix_secs;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::ca::{CertificateAuthority, IssuedCert};
use super::{IssueError, read_stored, write_stored};
use crate::gate::single_flight::{Role, SingleFlight};
use crate::metrics::Metrics;
use crate::store::{Record, Store, Table};

const KIND: &str = "cert";
const CA_RECORD: &str = "ca";

/// What the store shows about a leaf without decrypting it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CertMeta {
    /// The certificate (public).
    pub cert_pem: String,
    /// Serial, lowercase hex.
    pub serial_hex: String,
    /// Validity start, seconds since the epoch.
    pub not_before_unix: i64,
    /// Validity end.
    pub not_after_unix: i64,
}

#[derive(Serialize, Deserialize)]
struct CaMeta {
    cert_pem: String,
}

/// A leaf as delivered.
#[derive(Clone)]
pub struct LeafCert {
    /// `tls.crt`.
    pub cert_pem: String,
    /// `tls.key`.
    pub key_pem: Zeroizing<String>,
    /// Serial, for the audit.
    pub serial_hex: String,
    /// When to come back for a fresh one.
    pub refresh_at: SystemTime,
}

fn from_unix(s: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(s.max(0) as u64)
}

fn ca_from_record(r: &crate::store::Record<CaMeta>) -> Result<CertificateAuthority, String> {
    let key = std::str::from_utf8(&r.secret).map_err(|e| e.to_string())?;
    CertificateAuthority::from_pem(&r.meta.cert_pem, key).map_err(|e| e.to_string())
}

/// Issues leaf certificates.
pub struct CertIssuer {
    ca: CertificateAuthority,
    /// The trust bundle: this CA, then the CAs trusted beside it during a
    /// rotation (the next one before the switch, the previous one after).
    bundle: String,
    lifetime: Duration,
    refresh_fraction: f64,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    flight: SingleFlight<String, LeafCert, IssueError>,
}

impl CertIssuer {
    /// Uses the operator's CA when given, else the one in the store, else
    /// generates one and stores it.
    pub fn load(
        operator_ca: Option<(String, Zeroizing<String>)>,
        common_name: &str,
        lifetime: Duration,
        refresh_fraction: f64,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, String> {
        let ca = match operator_ca {
            Some((cert, key)) => {
                CertificateAuthority::from_pem(&cert, &key).map_err(|e| e.to_string())?
            }
            None => match store
                .get::<CaMeta>(Table::Authority, CA_RECORD)
                .map_err(|e| e.to_string())?
            {
                Some(r) => ca_from_record(&r)?,
                None => {
                    let ca = CertificateAuthority::generate(
                        common_name,
                        Duration::from_secs(10 * 365 * 86400),
                    )
                    .map_err(|e| e.to_string())?;
                    let meta = CaMeta {
                        cert_pem: ca.cert_pem().to_string(),
                    };
                    // Controllers sharing a store (etcd) may start together:
                    // one CA wins, and every controller uses the winner.
                    let created = store
                        .put_if_absent(Table::Authority, CA_RECORD, &meta, ca.key_pem().as_bytes())
                        .map_err(|e| e.to_string())?;
                    if created {
                        tracing::info!(%common_name, "generated the controller's certificate authority");
                        ca
                    } else {
                        let r = store
                            .get::<CaMeta>(Table::Authority, CA_RECORD)
                            .map_err(|e| e.to_string())?
                            .ok_or("the certificate authority record vanished")?;
                        ca_from_record(&r)?
                    }
                }
            },
        };
        Ok(CertIssuer {
            bundle: ca.cert_pem().to_string(),
            ca,
            lifetime,
            refresh_fraction,
            store,
            metrics,
            flight: SingleFlight::default(),
        })
    }

    /// A serving certificate for the controller itself (TLS): the same CA,
    /// so nodes trust one bundle.
    pub fn serving_cert(
        &self,
        names: &[String],
        lifetime: Duration,
    ) -> Result<(String, Zeroizing<String>), String> {
        let issued = self.ca.issue(names, lifetime).map_err(|e| e.to_string())?;
        Ok((issued.cert_pem, issued.key_pem))
    }

    /// This CA's certificate.
    pub fn ca_pem(&self) -> &str {
        self.ca.cert_pem()
    }

    /// Adds CA certificates (PEM) to the trust bundle, so clients trust
    /// both sides of a CA rotation.
    pub fn trust_also(&mut self, pem: &str) {
        if !self.bundle.ends_with('\n') {
            self.bundle.push('\n');
        }
        self.bundle.push_str(pem.trim());
        self.bundle.push('\n');
    }

    /// `ca.crt` as nodes, tools and pods receive it: this CA and those
    /// trusted beside it.
    pub fn trust_bundle(&self) -> &str {
        &self.bundle
    }

    fn refresh_at(&self, not_before: SystemTime, not_after: SystemTime) -> SystemTime {
        let life = not_after.duration_since(not_before).unwrap_or_default();
        not_before + life.mul_f64(self.refresh_fraction)
    }

    /// A leaf for `names`, issued to role account `login`.
    pub async fn cert(
        &self,
        login: &str,
        names: &BTreeSet<String>,
    ) -> Result<LeafCert, IssueError> {
        let key = format!(
            "{login}/{}",
            names.iter().cloned().collect::<Vec<_>>().join(",")
        );
        if let Some(leaf) = self.stored(&key).await?
            && SystemTime::now() < leaf.refresh_at
        {
            self.metrics.cache_hits.with_label_values(&[KIND]).inc();
            return Ok(leaf);
        }
        let (result, role) = self
            .flight
            .run(key.clone(), || self.issue(&key, names))
            .await;
        if role == Role::Follower {
            self.metrics.coalesced.with_label_values(&[KIND]).inc();
        }
        result
    }

    async fn stored(&self, key: &str) -> Result<Option<LeafCert>, IssueError> {
        read_stored(&self.store, Table::Certs, key, |r: Record<CertMeta>| {
            let key_pem = String::from_utf8(r.secret.to_vec())?;
            Ok::<_, std::string::FromUtf8Error>(LeafCert {
                refresh_at: self.refresh_at(
                    from_unix(r.meta.not_before_unix),
                    from_unix(r.meta.not_after_unix),
                ),
                cert_pem: r.meta.cert_pem,
                key_pem: Zeroizing::new(key_pem),
                serial_hex: r.meta.serial_hex,
            })
        })
        .await
    }

    async fn issue(&self, key: &str, names: &BTreeSet<String>) -> Result<LeafCert, IssueError> {
        if let Some(leaf) = self.stored(key).await?
            && SystemTime::now() < leaf.refresh_at
        {
            return Ok(leaf);
        }
        self.metrics.cache_misses.with_label_values(&[KIND]).inc();
        let names: Vec<String> = names.iter().cloned().collect();
        let issued: IssuedCert = self
            .ca
            .issue(&names, self.lifetime)
            .map_err(|e| IssueError::Unavailable(format!("certificate for {names:?}: {e}")))?;
        let meta = CertMeta {
            cert_pem: issued.cert_pem.clone(),
            serial_hex: issued.serial_hex.clone(),
            not_before_unix: unix_secs(issued.not_before),
            not_after_unix: unix_secs(issued.not_after),
        };
        let secret = Zeroizing::new(issued.key_pem.as_bytes().to_vec());
        write_stored(&self.store, Table::Certs, key, meta.clone(), secret).await?;
        tracing::info!(names = ?names, serial = %issued.serial_hex, not_after = meta.not_after_unix, "certificate issued");
        Ok(LeafCert {
            refresh_at: self.refresh_at(issued.not_before, issued.not_after),
            cert_pem: issued.cert_pem,
            key_pem: issued.key_pem,
            serial_hex: issued.serial_hex,
        })
    }
}
