//! Keytabs: extracted once from kadmind, then served from the store.
//!
//! A principal's keys are never randomized here: the first request extracts
//! the current keys (`ktadd -norandkey`) through the gate, seals them into
//! the store, and every later request (any pod, any node, after any
//! restart, while kadmind is down) gets exactly those bytes. Concurrent
//! first requests for one principal share a single extraction, across
//! controllers too (a cluster lock around it).

use std::sync::Arc;

use super::{IssueError, read_stored, write_stored};
use crate::cluster::Cluster;
use crate::gate::single_flight::{Role, SingleFlight};
use crate::gate::{Lane, Priority};
use crate::keytab::Keytab;
use crate::metrics::Metrics;
use crate::names::Principal;
use crate::realms::Backends;
use crate::store::{Record, Store, Table};

/// What the store shows about a keytab without decrypting it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct KeytabMeta {
    /// Key versions held.
    pub kvnos: Vec<u32>,
}

const KIND: &str = "keytab";

/// Issues keytabs for service principals.
pub struct KeytabIssuer {
    store: Arc<Store>,
    /// Each realm's backend and gate: a principal's keys come from its
    /// realm's.
    backends: Arc<Backends>,
    metrics: Arc<Metrics>,
    flight: Arc<SingleFlight<Principal, Keytab, IssueError>>,
    /// Other controllers extracting the same principal wait for this one.
    cluster: Arc<Cluster>,
    /// Serializes compare-and-store of keytabs.
    write: tokio::sync::Mutex<()>,
}

impl KeytabIssuer {
    /// Builds an issuer over a store, the realms' backends (each behind
    /// its gate) and metrics.
    pub fn new(
        store: Arc<Store>,
        backends: Arc<Backends>,
        metrics: Arc<Metrics>,
        cluster: Arc<Cluster>,
    ) -> Self {
        KeytabIssuer {
            store,
            backends,
            metrics,
            flight: Arc::default(),
            cluster,
            write: tokio::sync::Mutex::new(()),
        }
    }

    async fn stored(&self, principal: &Principal) -> Result<Option<Keytab>, IssueError> {
        read_stored(
            &self.store,
            Table::Keytabs,
            &principal.to_string(),
            |r: Record<KeytabMeta>| Keytab::parse(r.secret),
        )
        .await
    }

    /// The stored keytab, if any (what an AD rotation keeps the previous
    /// key version from).
    pub async fn stored_keytab(&self, principal: &Principal) -> Result<Option<Keytab>, IssueError> {
        self.stored(principal).await
    }

    /// The principal's keytab: from the store, or extracted once. The
    /// extraction outlives a caller that gives up (see
    /// [`SingleFlight::run_detached`]).
    pub async fn keytab(
        self: &Arc<Self>,
        principal: &Principal,
        priority: Priority,
    ) -> Result<Keytab, IssueError> {
        if let Some(k) = self.stored(principal).await? {
            self.metrics.cache_hits.with_label_values(&[KIND]).inc();
            return Ok(k);
        }
        let (me, p) = (Arc::clone(self), principal.clone());
        let (result, role) = self
            .flight
            .run_detached(principal.clone(), move || async move {
                me.extract(&p, priority).await
            })
            .await;
        if role == Role::Follower {
            self.metrics.coalesced.with_label_values(&[KIND]).inc();
        }
        result
    }

    /// Stores a keytab unless the store already holds newer keys: a slow
    /// extraction that started before a rotation must not replace the
    /// rotated keytab (kvnos only ever move forward, and a purge drops old
    /// kvnos while keeping the newest).
    pub async fn store_keytab(
        &self,
        principal: &Principal,
        keytab: &Keytab,
    ) -> Result<(), IssueError> {
        let _w = self.write.lock().await;
        let newest = |k: &Keytab| k.kvnos().iter().max().copied().unwrap_or(0);
        if let Some(current) = self.stored(principal).await?
            && newest(&current) > newest(keytab)
        {
            tracing::info!(%principal, "kept the stored keytab: it holds a newer kvno");
            return Ok(());
        }
        let meta = KeytabMeta {
            kvnos: keytab.kvnos().iter().copied().collect(),
        };
        let secret = zeroize::Zeroizing::new(keytab.bytes().to_vec());
        write_stored(
            &self.store,
            Table::Keytabs,
            &principal.to_string(),
            meta,
            secret,
        )
        .await
    }

    async fn extract(
        &self,
        principal: &Principal,
        priority: Priority,
    ) -> Result<Keytab, IssueError> {
        // A flight that finished just before this one started stored it.
        if let Some(k) = self.stored(principal).await? {
            self.metrics.cache_hits.with_label_values(&[KIND]).inc();
            return Ok(k);
        }
        // So did another controller, if it held the lock before us.
        let _cluster_flight = self.cluster.lock(&format!("keytab/{principal}")).await?;
        if let Some(k) = self.stored(principal).await? {
            self.metrics.cache_hits.with_label_values(&[KIND]).inc();
            return Ok(k);
        }
        self.metrics.cache_misses.with_label_values(&[KIND]).inc();
        let backend = self.backends.of(principal.realm())?;
        let keytab = backend
            .gate
            .run(Lane::Kadmin, priority, "extract_keytab", || {
                backend.admin.extract_keytab(principal)
            })
            .await?;
        self.store_keytab(principal, &keytab).await?;
        tracing::info!(principal = %principal, realm = principal.realm(), kvnos = ?keytab.kvnos(), "issued a new keytab from the KDC backend");
        Ok(keytab)
    }
}
