//! Moving every record from one store to another (embedded to etcd, and
//! back). Records are copied as sealed: the secrets are never decrypted on
//! the way, so both stores must use the same master key. Afterwards every
//! record in the target is read back and decrypted, proving the copy whole.

use super::{Store, StoreError, Table};

/// Records per write to the target.
const BATCH: usize = 200;

/// Why a migration did not happen.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The two configurations name different master keys.
    #[error(
        "the source store is sealed under master key {from} and the target under {to}: use the same master_key_file"
    )]
    KeyMismatch {
        /// The source's key id.
        from: String,
        /// The target's key id.
        to: String,
    },
    /// The target already holds records: a migration never merges.
    #[error(
        "the target ({target}) already holds {count} records in {table}: migrate into an empty store"
    )]
    TargetNotEmpty {
        /// The target store.
        target: String,
        /// The first non-empty table.
        table: &'static str,
        /// How many records it holds.
        count: u64,
    },
    /// A store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The target does not hold what was copied.
    #[error(
        "verification: table {table} holds {found} records in the target, {copied} were copied"
    )]
    Verify {
        /// The table.
        table: &'static str,
        /// Records copied.
        copied: u64,
        /// Records found.
        found: u64,
    },
}

/// What was copied, per table.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Copied {
    /// Table name and record count, for every table.
    pub tables: Vec<(&'static str, u64)>,
}

impl Copied {
    /// Records copied in all.
    pub fn total(&self) -> u64 {
        self.tables.iter().map(|(_, n)| n).sum()
    }
}

impl Store {
    /// Copies every record of every table into `target`, which must be
    /// empty and sealed under the same master key, then reads each one back
    /// from the target and decrypts it.
    pub fn copy_into(&self, target: &Store) -> Result<Copied, MigrateError> {
        if self.master.id() != target.master.id() {
            return Err(MigrateError::KeyMismatch {
                from: self.master.id().to_string(),
                to: target.master.id().to_string(),
            });
        }
        for table in Table::ALL {
            let count = target.count(table)?;
            if count > 0 {
                return Err(MigrateError::TargetNotEmpty {
                    target: target.describe(),
                    table: table.name(),
                    count,
                });
            }
        }
        let mut copied = Copied::default();
        for table in Table::ALL {
            let records = self.track(self.backend.list(table))?;
            for chunk in records.chunks(BATCH) {
                target.track(target.backend.put_many(table, chunk))?;
            }
            let n = records.len() as u64;
            let found = target.count(table)?;
            if found != n {
                return Err(MigrateError::Verify {
                    table: table.name(),
                    copied: n,
                    found,
                });
            }
            for (name, _) in &records {
                target
                    .get::<serde_json::Value>(table, name)?
                    .ok_or_else(|| MigrateError::Verify {
                        table: table.name(),
                        copied: n,
                        found: found.saturating_sub(1),
                    })?;
            }
            copied.tables.push((table.name(), n));
        }
        Ok(copied)
    }
}
