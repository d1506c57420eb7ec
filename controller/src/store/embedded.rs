//! The embedded backend: one redb file (ACID, crash-safe, no server).
//! Only one process may hold the file at a time.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::backend::StoreBackend;
use super::{StoreError, Table};

/// A redb file.
pub struct Embedded {
    db: Database,
    path: PathBuf,
}

/// redb's page cache (its default is 1 GiB). The controller reads its
/// records into memory at start (issued volumes) or caches what it issues
/// (keytabs, tickets), so pages are rarely read twice: a small cache keeps
/// the controller's memory proportional to what it indexes, not to the
/// file (which the kernel's page cache still holds).
const CACHE_BYTES: usize = 16 * 1024 * 1024;

fn definition(table: Table) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(table.name())
}

impl Embedded {
    /// Opens (or creates) the file and every table in it.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let err = |e: &dyn std::fmt::Display| StoreError::Db(format!("{}: {e}", path.display()));
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| err(&e))?;
        let tx = db.begin_write().map_err(|e| err(&e))?;
        for t in Table::ALL {
            tx.open_table(definition(t)).map_err(|e| err(&e))?;
        }
        tx.commit().map_err(|e| err(&e))?;
        Ok(Embedded {
            db,
            path: path.to_path_buf(),
        })
    }
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(e.to_string())
}

impl StoreBackend for Embedded {
    fn get(&self, table: Table, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(definition(table)).map_err(db_err)?;
        Ok(t.get(name).map_err(db_err)?.map(|v| v.value().to_vec()))
    }

    fn put(&self, table: Table, name: &str, value: &[u8]) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = tx.open_table(definition(table)).map_err(db_err)?;
            t.insert(name, value).map_err(db_err)?;
        }
        tx.commit().map_err(db_err)
    }

    fn put_if_absent(&self, table: Table, name: &str, value: &[u8]) -> Result<bool, StoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        let written = {
            let mut t = tx.open_table(definition(table)).map_err(db_err)?;
            let present = t.get(name).map_err(db_err)?.is_some();
            if !present {
                t.insert(name, value).map_err(db_err)?;
            }
            !present
        };
        tx.commit().map_err(db_err)?;
        Ok(written)
    }

    fn put_many(&self, table: Table, records: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = tx.open_table(definition(table)).map_err(db_err)?;
            for (name, value) in records {
                t.insert(name.as_str(), value.as_slice()).map_err(db_err)?;
            }
        }
        tx.commit().map_err(db_err)
    }

    fn list(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(definition(table)).map_err(db_err)?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(db_err)? {
            let (k, v) = entry.map_err(db_err)?;
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    fn delete(&self, table: Table, name: &str) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = tx.open_table(definition(table)).map_err(db_err)?;
            t.remove(name).map_err(db_err)?;
        }
        tx.commit().map_err(db_err)
    }

    fn count(&self, table: Table) -> Result<u64, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(definition(table)).map_err(db_err)?;
        redb::ReadableTableMetadata::len(&t).map_err(db_err)
    }

    fn describe(&self) -> String {
        format!("embedded store {}", self.path.display())
    }

    fn reads_locally(&self) -> bool {
        true
    }
}
