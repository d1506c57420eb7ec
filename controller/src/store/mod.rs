//! The controller's memory: issued credentials, encrypted at rest.
//!
//! The embedded store is a single redb file (ACID, crash-safe, no server).
//! Every secret in it is sealed with [`crate::crypto`] under the master key;
//! the file alone reveals principal names and kvnos, never keys.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::crypto::{self, CryptoError, MasterKey, Sealed};
use crate::keytab::{Keytab, KeytabError};
use crate::names::ServicePrincipal;

const KEYTABS: TableDefinition<&str, &[u8]> = TableDefinition::new("keytabs_v1");

/// Why the store failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database itself failed (I/O, corruption, locked by another process).
    #[error("store database: {0}")]
    Db(String),
    /// A record could not be decrypted.
    #[error("record {record}: {source}")]
    Crypto {
        /// The record's key.
        record: String,
        /// Why.
        source: CryptoError,
    },
    /// A record decrypted but does not hold what it should.
    #[error("record {record} is corrupt: {reason}")]
    Corrupt {
        /// The record's key.
        record: String,
        /// Why.
        reason: String,
    },
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(e.to_string())
}

#[derive(Serialize, Deserialize)]
struct KeytabRecord {
    principal: String,
    kvnos: Vec<u32>,
    extracted_at_unix: i64,
    sealed: Sealed,
}

/// A keytab as the store holds it.
#[derive(Debug, Clone)]
pub struct StoredKeytab {
    /// The keytab (decrypted, in memory only).
    pub keytab: Keytab,
    /// When it was extracted from kadmind.
    pub extracted_at_unix: i64,
}

/// The embedded store.
pub struct Store {
    db: Database,
    master: MasterKey,
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn keytab_aad(principal: &ServicePrincipal) -> String {
    format!("kcred/v1/keytab/{principal}")
}

impl Store {
    /// Opens (or creates) the store file. Only one controller process may
    /// hold it at a time.
    pub fn open(path: &Path, master: MasterKey) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(db_err)?;
        let tx = db.begin_write().map_err(db_err)?;
        tx.open_table(KEYTABS).map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        Ok(Store { db, master })
    }

    /// The stored keytab of a principal, if it was ever extracted.
    pub fn keytab(&self, principal: &ServicePrincipal) -> Result<Option<StoredKeytab>, StoreError> {
        let key = principal.to_string();
        let tx = self.db.begin_read().map_err(db_err)?;
        let table = tx.open_table(KEYTABS).map_err(db_err)?;
        let Some(raw) = table.get(key.as_str()).map_err(db_err)? else {
            return Ok(None);
        };
        let rec: KeytabRecord =
            serde_json::from_slice(raw.value()).map_err(|e| StoreError::Corrupt {
                record: key.clone(),
                reason: e.to_string(),
            })?;
        let plain = crypto::open(&self.master, keytab_aad(principal).as_bytes(), &rec.sealed)
            .map_err(|source| StoreError::Crypto {
                record: key.clone(),
                source,
            })?;
        let keytab = Keytab::parse(plain).map_err(|e: KeytabError| StoreError::Corrupt {
            record: key,
            reason: e.to_string(),
        })?;
        Ok(Some(StoredKeytab {
            keytab,
            extracted_at_unix: rec.extracted_at_unix,
        }))
    }

    /// Stores (or replaces) a principal's keytab.
    pub fn put_keytab(
        &self,
        principal: &ServicePrincipal,
        keytab: &Keytab,
    ) -> Result<(), StoreError> {
        let key = principal.to_string();
        let sealed = crypto::seal(
            &self.master,
            keytab_aad(principal).as_bytes(),
            keytab.bytes(),
        )
        .map_err(|source| StoreError::Crypto {
            record: key.clone(),
            source,
        })?;
        let rec = KeytabRecord {
            principal: key.clone(),
            kvnos: keytab.kvnos().iter().copied().collect(),
            extracted_at_unix: now_unix(),
            sealed,
        };
        let raw = serde_json::to_vec(&rec).map_err(|e| StoreError::Corrupt {
            record: key.clone(),
            reason: e.to_string(),
        })?;
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            let mut table = tx.open_table(KEYTABS).map_err(db_err)?;
            table.insert(key.as_str(), raw.as_slice()).map_err(db_err)?;
        }
        tx.commit().map_err(db_err)
    }

    /// Number of keytabs held.
    pub fn keytab_count(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let table = tx.open_table(KEYTABS).map_err(db_err)?;
        redb::ReadableTableMetadata::len(&table).map_err(db_err)
    }
}
