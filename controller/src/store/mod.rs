//! The controller's memory: issued credentials, encrypted at rest.
//!
//! The embedded store is a single redb file (ACID, crash-safe, no server).
//! A record is a name in a table, non-secret metadata in the clear (kvnos,
//! expiry times, serials: what `kcredctl list` shows), and a secret sealed
//! with [`crate::crypto`] under the master key, bound to its table and name.
//! The file alone reveals names and metadata, never keys.

use kcred_audit::timefmt::now_unix;
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::crypto::{self, CryptoError, MasterKey, Sealed};

/// The kinds of record the store holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// Keytabs by principal.
    Keytabs,
    /// Ticket caches by client principal.
    Tickets,
    /// Certificates by role account and names.
    Certs,
    /// The controller's certificate authority.
    Authority,
    /// Data-encryption key rings by key id.
    KeyRings,
    /// What was issued to which volume (no secrets).
    Volumes,
    /// Keytab rotations whose grace period has not ended.
    Rotations,
    /// Every node ever seen (their `host/` keys stay reserved).
    Nodes,
}

impl Table {
    fn definition(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        TableDefinition::new(self.name())
    }

    /// The table's name in the file and in associated data.
    pub fn name(self) -> &'static str {
        match self {
            Table::Keytabs => "keytabs_v1",
            Table::Tickets => "tickets_v1",
            Table::Certs => "certs_v1",
            Table::Authority => "authority_v1",
            Table::KeyRings => "keyrings_v1",
            Table::Volumes => "volumes_v1",
            Table::Rotations => "rotations_v1",
            Table::Nodes => "nodes_v1",
        }
    }

    const ALL: [Table; 8] = [
        Table::Keytabs,
        Table::Tickets,
        Table::Certs,
        Table::Authority,
        Table::KeyRings,
        Table::Volumes,
        Table::Rotations,
        Table::Nodes,
    ];
}

/// Why the store failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database itself failed (I/O, corruption, locked by another process).
    #[error("store database: {0}")]
    Db(String),
    /// A record could not be decrypted.
    #[error("record {record}: {source}")]
    Crypto {
        /// The record's table and name.
        record: String,
        /// Why.
        source: CryptoError,
    },
    /// A record does not hold what it should.
    #[error("record {record} is corrupt: {reason}")]
    Corrupt {
        /// The record's table and name.
        record: String,
        /// Why.
        reason: String,
    },
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(e.to_string())
}

#[derive(Serialize, Deserialize)]
struct Stored<M> {
    meta: M,
    updated_unix: i64,
    sealed: Sealed,
}

/// A record as read back: metadata and the decrypted secret.
pub struct Record<M> {
    /// Non-secret metadata.
    pub meta: M,
    /// The secret (in memory only, zeroized on drop).
    pub secret: Zeroizing<Vec<u8>>,
    /// When it was last written.
    pub updated_unix: i64,
}

/// The embedded store.
pub struct Store {
    db: Database,
    master: MasterKey,
}

fn aad(table: Table, name: &str) -> String {
    format!("kcred/v1/{}/{name}", table.name())
}

impl Store {
    /// Opens (or creates) the store file. Only one controller process may
    /// hold it at a time.
    pub fn open(path: &Path, master: MasterKey) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(db_err)?;
        let tx = db.begin_write().map_err(db_err)?;
        for t in Table::ALL {
            tx.open_table(t.definition()).map_err(db_err)?;
        }
        tx.commit().map_err(db_err)?;
        Ok(Store { db, master })
    }

    /// Reads and decrypts one record.
    pub fn get<M: DeserializeOwned>(
        &self,
        table: Table,
        name: &str,
    ) -> Result<Option<Record<M>>, StoreError> {
        let record = aad(table, name);
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(table.definition()).map_err(db_err)?;
        let Some(raw) = t.get(name).map_err(db_err)? else {
            return Ok(None);
        };
        let stored: Stored<M> =
            serde_json::from_slice(raw.value()).map_err(|e| StoreError::Corrupt {
                record: record.clone(),
                reason: e.to_string(),
            })?;
        let secret = crypto::open(&self.master, record.as_bytes(), &stored.sealed)
            .map_err(|source| StoreError::Crypto { record, source })?;
        Ok(Some(Record {
            meta: stored.meta,
            secret,
            updated_unix: stored.updated_unix,
        }))
    }

    /// Seals a record's secret and encodes it as stored.
    fn encode<M: Serialize>(
        &self,
        table: Table,
        name: &str,
        meta: &M,
        secret: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        let record = aad(table, name);
        let sealed = crypto::seal(&self.master, record.as_bytes(), secret).map_err(|source| {
            StoreError::Crypto {
                record: record.clone(),
                source,
            }
        })?;
        serde_json::to_vec(&Stored {
            meta,
            updated_unix: now_unix(),
            sealed,
        })
        .map_err(|e| StoreError::Corrupt {
            record,
            reason: e.to_string(),
        })
    }

    /// Seals and writes (or replaces) one record.
    pub fn put<M: Serialize>(
        &self,
        table: Table,
        name: &str,
        meta: &M,
        secret: &[u8],
    ) -> Result<(), StoreError> {
        let raw = self.encode(table, name, meta, secret)?;
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = tx.open_table(table.definition()).map_err(db_err)?;
            t.insert(name, raw.as_slice()).map_err(db_err)?;
        }
        tx.commit().map_err(db_err)
    }

    /// Writes many records without secrets in one transaction (one fsync).
    pub fn put_many<M: Serialize>(
        &self,
        table: Table,
        records: &[(String, M)],
    ) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = tx.open_table(table.definition()).map_err(db_err)?;
            for (name, meta) in records {
                let raw = self.encode(table, name, meta, b"")?;
                t.insert(name.as_str(), raw.as_slice()).map_err(db_err)?;
            }
        }
        tx.commit().map_err(db_err)
    }

    /// Every record's name and metadata in a table, without decrypting.
    pub fn list<M: DeserializeOwned>(
        &self,
        table: Table,
    ) -> Result<Vec<(String, M, i64)>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(table.definition()).map_err(db_err)?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(db_err)? {
            let (k, v) = entry.map_err(db_err)?;
            let name = k.value().to_string();
            #[derive(Deserialize)]
            struct MetaOnly<M> {
                meta: M,
                updated_unix: i64,
            }
            let m: MetaOnly<M> =
                serde_json::from_slice(v.value()).map_err(|e| StoreError::Corrupt {
                    record: aad(table, &name),
                    reason: e.to_string(),
                })?;
            out.push((name, m.meta, m.updated_unix));
        }
        Ok(out)
    }

    /// Deletes a record (no-op when absent).
    pub fn delete(&self, table: Table, name: &str) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = tx.open_table(table.definition()).map_err(db_err)?;
            t.remove(name).map_err(db_err)?;
        }
        tx.commit().map_err(db_err)
    }

    /// Number of records in a table.
    pub fn count(&self, table: Table) -> Result<u64, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(table.definition()).map_err(db_err)?;
        redb::ReadableTableMetadata::len(&t).map_err(db_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_sealed_and_bound_to_their_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store.redb");
        let store = Store::open(&path, MasterKey::from_bytes([1; 32])).expect("open");
        store
            .put(Table::Keytabs, "HTTP/a@R", &vec![1u32, 2], b"secret-bytes")
            .expect("put");
        let r: Record<Vec<u32>> = store
            .get(Table::Keytabs, "HTTP/a@R")
            .expect("get")
            .expect("present");
        assert_eq!(
            (r.meta, r.secret.as_slice()),
            (vec![1, 2], &b"secret-bytes"[..])
        );
        assert!(
            store
                .get::<Vec<u32>>(Table::Tickets, "HTTP/a@R")
                .expect("get")
                .is_none()
        );
        let listed: Vec<(String, Vec<u32>, i64)> = store.list(Table::Keytabs).expect("list");
        assert_eq!(listed.len(), 1);
        drop(store);
        let raw = std::fs::read(&path).expect("read file");
        assert!(
            !raw.windows(12).any(|w| w == b"secret-bytes"),
            "secret stored in the clear"
        );
        // Another master key cannot read it.
        let other = Store::open(&path, MasterKey::from_bytes([2; 32])).expect("open");
        assert!(other.get::<Vec<u32>>(Table::Keytabs, "HTTP/a@R").is_err());
    }
}
