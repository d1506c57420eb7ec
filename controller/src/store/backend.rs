//! What a place to keep records must do: move opaque bytes by table and
//! name. Sealing, associated data and metadata encoding stay above, in
//! [`super::Store`], so every backend holds exactly the same sealed bytes.

use super::{StoreError, Table};

/// A place records live: the embedded redb file or an etcd cluster.
///
/// Values are already sealed when they reach a backend; a backend never
/// sees a secret in the clear.
pub trait StoreBackend: Send + Sync {
    /// The value stored under `name`, if any.
    fn get(&self, table: Table, name: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Writes (or replaces) one value, durably.
    fn put(&self, table: Table, name: &str, value: &[u8]) -> Result<(), StoreError>;
    /// Writes a value only if `name` holds none, atomically: of several
    /// controllers racing to create one record, exactly one wins. Returns
    /// whether this call wrote it.
    fn put_if_absent(&self, table: Table, name: &str, value: &[u8]) -> Result<bool, StoreError>;
    /// Writes many values with as few durable commits as the backend allows.
    fn put_many(&self, table: Table, records: &[(String, Vec<u8>)]) -> Result<(), StoreError>;
    /// Every name and value in a table, in name order.
    fn list(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// Removes a value (no-op when absent).
    fn delete(&self, table: Table, name: &str) -> Result<(), StoreError>;
    /// How many values a table holds.
    fn count(&self, table: Table) -> Result<u64, StoreError>;
    /// Where the records live, for logs and error messages (no secrets).
    fn describe(&self) -> String;
    /// Whether a read is answered from this machine's own file, with no
    /// network on the way: then it is cheap enough to make on an async
    /// worker.
    fn reads_locally(&self) -> bool;
}
