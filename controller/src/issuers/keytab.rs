//! Keytabs: extracted once from kadmind, then served from the store.
//!
//! A principal's keys are never randomized here: the first request extracts
//! the current keys (`ktadd -norandkey`), seals them into the store, and
//! every later request (any pod, any node, after any restart) gets exactly
//! those bytes. Concurrent first requests for one principal wait on a single
//! extraction.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::IssueError;
use crate::kadmin::KadminClient;
use crate::keytab::Keytab;
use crate::names::ServicePrincipal;
use crate::store::Store;

/// Issues keytabs for service principals.
pub struct KeytabIssuer {
    store: Arc<Store>,
    kadmin: Arc<KadminClient>,
    inflight: Mutex<HashMap<ServicePrincipal, Arc<tokio::sync::Mutex<()>>>>,
}

impl KeytabIssuer {
    /// Builds an issuer over a store and a kadmin client.
    pub fn new(store: Arc<Store>, kadmin: Arc<KadminClient>) -> Self {
        KeytabIssuer {
            store,
            kadmin,
            inflight: Mutex::new(HashMap::new()),
        }
    }

    async fn stored(&self, principal: &ServicePrincipal) -> Result<Option<Keytab>, IssueError> {
        let store = Arc::clone(&self.store);
        let p = principal.clone();
        let found = tokio::task::spawn_blocking(move || store.keytab(&p))
            .await
            .map_err(|e| IssueError::Task(e.to_string()))??;
        Ok(found.map(|s| s.keytab))
    }

    fn flight_lock(&self, principal: &ServicePrincipal) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = match self.inflight.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        Arc::clone(map.entry(principal.clone()).or_default())
    }

    fn release_flight(&self, principal: &ServicePrincipal, lock: Arc<tokio::sync::Mutex<()>>) {
        let mut map = match self.inflight.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        // Only the map and this caller hold it: nobody else is waiting.
        if Arc::strong_count(&lock) == 2 {
            map.remove(principal);
        }
    }

    /// The principal's keytab: from the store, or extracted once.
    pub async fn keytab(&self, principal: &ServicePrincipal) -> Result<Keytab, IssueError> {
        if let Some(k) = self.stored(principal).await? {
            return Ok(k);
        }
        let lock = self.flight_lock(principal);
        let result = async {
            let _turn = lock.lock().await;
            // Someone else may have extracted it while we waited.
            if let Some(k) = self.stored(principal).await? {
                return Ok(k);
            }
            let keytab = self.kadmin.extract_keytab(principal).await?;
            let store = Arc::clone(&self.store);
            let (p, k) = (principal.clone(), keytab.clone());
            tokio::task::spawn_blocking(move || store.put_keytab(&p, &k))
                .await
                .map_err(|e| IssueError::Task(e.to_string()))??;
            tracing::info!(principal = %principal, kvnos = ?keytab.kvnos(), "extracted keytab from kadmind");
            Ok(keytab)
        }
        .await;
        self.release_flight(principal, lock);
        result
    }
}
