//! Data-encryption keys: versioned AES-256 key rings, created on first
//! request and kept sealed in the store. Pods get every live version with
//! the primary marked (format: [`super::data_keys`]).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::data_keys::{KeyError, KeyRing};
use super::{IssueError, read_stored, write_stored};
use crate::cluster::Cluster;
use crate::gate::single_flight::SingleFlight;
use crate::metrics::Metrics;
use crate::store::{Record, Store, StoreError, Table};

const KIND: &str = "key";

/// What the store shows about a key ring without decrypting it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyRingMeta {
    /// The primary version.
    pub primary: u32,
    /// Versions delivered to pods.
    pub live: Vec<u32>,
}

/// A key ring's pod file.
#[derive(Clone)]
pub struct KeyFile {
    /// File name in the volume (`<id>.keys.json`).
    pub name: String,
    /// Content (all live versions).
    pub content: Zeroizing<Vec<u8>>,
    /// Primary version, for the audit.
    pub primary: u32,
}

/// Issues (and rotates) key rings.
pub struct KeyIssuer {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    flight: SingleFlight<String, KeyFile, IssueError>,
    /// Serializes read-modify-write of rings (rotation, retirement).
    write: tokio::sync::Mutex<()>,
    /// The same across controllers sharing an etcd store: without it two
    /// could create a ring twice (pods on each would get different keys)
    /// or lose one's rotation to the other's write.
    cluster: Arc<Cluster>,
}

fn corrupt(id: &str, e: impl std::fmt::Display) -> IssueError {
    IssueError::Store(StoreError::Corrupt {
        record: id.to_string(),
        reason: e.to_string(),
    })
}

/// A refused rotation or retirement: the operator asked for something the
/// ring cannot do, the store is fine.
fn user_error(id: &str, e: KeyError) -> IssueError {
    match e {
        KeyError::UnknownVersion(_) => IssueError::KeyUnknown(format!("key ring {id:?}: {e}")),
        KeyError::RetirePrimary(_) | KeyError::VersionsExhausted => {
            IssueError::KeyState(format!("key ring {id:?}: {e}"))
        }
        other => corrupt(id, other),
    }
}

impl KeyIssuer {
    /// Builds the issuer over the store.
    pub fn new(store: Arc<Store>, metrics: Arc<Metrics>) -> Self {
        KeyIssuer {
            store,
            metrics,
            flight: SingleFlight::default(),
            write: tokio::sync::Mutex::new(()),
            cluster: Cluster::solo(),
        }
    }

    /// Creates, rotates and retires each ring once for every controller
    /// sharing `cluster`.
    pub fn with_cluster(mut self, cluster: Arc<Cluster>) -> Self {
        self.cluster = cluster;
        self
    }

    fn lock_name(id: &str) -> String {
        format!("key/{id}")
    }

    async fn load(&self, id: &str) -> Result<Option<KeyRing>, IssueError> {
        read_stored(
            &self.store,
            Table::KeyRings,
            id,
            |r: Record<KeyRingMeta>| KeyRing::from_store_bytes(&r.secret),
        )
        .await
    }

    async fn save(&self, ring: &KeyRing) -> Result<(), IssueError> {
        let meta = KeyRingMeta {
            primary: ring.primary(),
            live: ring.live_versions(),
        };
        write_stored(
            &self.store,
            Table::KeyRings,
            ring.id(),
            meta,
            ring.to_store_bytes(),
        )
        .await
    }

    fn file(ring: &KeyRing) -> KeyFile {
        KeyFile {
            name: ring.pod_file_name(),
            content: ring.to_pod_file(),
            primary: ring.primary(),
        }
    }

    /// The pod file of key ring `id`, creating the ring on first use.
    pub async fn key_file(&self, id: &str) -> Result<KeyFile, IssueError> {
        if let Some(ring) = self.load(id).await? {
            self.metrics.cache_hits.with_label_values(&[KIND]).inc();
            return Ok(Self::file(&ring));
        }
        let (result, _) = self
            .flight
            .run(id.to_string(), || async {
                let _w = self.write.lock().await;
                let _one_in_cluster = self.cluster.lock(&Self::lock_name(id)).await?;
                if let Some(ring) = self.load(id).await? {
                    return Ok(Self::file(&ring));
                }
                self.metrics.cache_misses.with_label_values(&[KIND]).inc();
                let ring = KeyRing::new(id).map_err(|e| corrupt(id, e))?;
                self.save(&ring).await?;
                tracing::info!(key = %id, version = ring.primary(), "key ring created");
                Ok(Self::file(&ring))
            })
            .await;
        result
    }

    /// Makes a new primary version; old versions stay for decryption.
    pub async fn rotate(&self, id: &str) -> Result<u32, IssueError> {
        let _w = self.write.lock().await;
        let _one_in_cluster = self.cluster.lock(&Self::lock_name(id)).await?;
        let mut ring = self
            .load(id)
            .await?
            .ok_or_else(|| IssueError::KeyUnknown(format!("key ring {id:?} does not exist")))?;
        let v = ring.rotate().map_err(|e| user_error(id, e))?;
        self.save(&ring).await?;
        tracing::info!(key = %id, version = v, "key ring rotated");
        Ok(v)
    }

    /// Stops delivering `version` (never the primary).
    pub async fn retire(&self, id: &str, version: u32) -> Result<(), IssueError> {
        let _w = self.write.lock().await;
        let _one_in_cluster = self.cluster.lock(&Self::lock_name(id)).await?;
        let mut ring = self
            .load(id)
            .await?
            .ok_or_else(|| IssueError::KeyUnknown(format!("key ring {id:?} does not exist")))?;
        ring.retire(version).map_err(|e| user_error(id, e))?;
        self.save(&ring).await?;
        tracing::info!(key = %id, version, "key version retired");
        Ok(())
    }
}
