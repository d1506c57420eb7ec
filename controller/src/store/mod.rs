//! The controller's memory: issued credentials, encrypted at rest.
//!
//! A record is a name in a table, non-secret metadata in the clear (kvnos,
//! expiry times, serials: what `kcredctl list` shows), and a secret sealed
//! with [`crate::crypto`] under the master key, bound to its table and name.
//! Sealing happens here, in one place, above the backends ([`backend`]):
//! the embedded redb file ([`embedded`], the default) and etcd ([`etcd`],
//! for several controllers) hold the same sealed bytes, and reveal names
//! and metadata, never keys.

pub mod backend;
pub mod embedded;
pub mod etcd;
pub(crate) mod etcd_members;
pub mod health;
pub mod migrate;
pub mod settings;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kcred_audit::timefmt::now_unix;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::crypto::{self, CryptoError, MasterKey, Sealed};
pub use backend::StoreBackend;

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
    /// Pods with a revoked volume, by pod UID (no secrets): what every
    /// controller sharing the store checks before issuing.
    Revocations,
}

impl Table {
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
            Table::Revocations => "revocations_v1",
        }
    }

    /// Every table, in a fixed order.
    pub const ALL: [Table; 9] = [
        Table::Keytabs,
        Table::Tickets,
        Table::Certs,
        Table::Authority,
        Table::KeyRings,
        Table::Volumes,
        Table::Rotations,
        Table::Nodes,
        Table::Revocations,
    ];
}

/// Why the store failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (I/O, corruption, locked by another process,
    /// etcd unreachable or without a leader).
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

/// The store: sealing above, a backend below.
pub struct Store {
    backend: Arc<dyn StoreBackend>,
    master: MasterKey,
    /// Whether the backend answered the last call.
    up: AtomicBool,
    /// Turns for [`Store::reading`]'s reads through the network: many
    /// batches at once must not take every blocking thread (the audit's
    /// syncs need one too).
    remote_reads: crate::blocking::Turns,
}

/// Reads through to a remote store at once, at most ([`Store::reading`]):
/// enough for a full batch's volumes to overlap their round trips in a
/// few turns.
const REMOTE_READS_AT_ONCE: usize = 64;

fn aad(table: Table, name: &str) -> String {
    format!("kcred/v1/{}/{name}", table.name())
}

#[derive(Deserialize)]
struct MetaOnly<M> {
    meta: M,
    updated_unix: i64,
}

impl Store {
    /// Opens (or creates) an embedded store file. Only one controller
    /// process may hold it at a time.
    pub fn open(path: &Path, master: MasterKey) -> Result<Self, StoreError> {
        Ok(Store::with_backend(
            Arc::new(embedded::Embedded::open(path)?),
            master,
        ))
    }

    /// A store over any backend.
    pub fn with_backend(backend: Arc<dyn StoreBackend>, master: MasterKey) -> Self {
        Store {
            backend,
            master,
            up: AtomicBool::new(true),
            remote_reads: crate::blocking::Turns::new(REMOTE_READS_AT_ONCE),
        }
    }

    /// Where the records live (no secrets), for logs.
    pub fn describe(&self) -> String {
        self.backend.describe()
    }

    /// Whether reads come from a local file (see
    /// [`backend::StoreBackend::reads_locally`]).
    pub fn reads_locally(&self) -> bool {
        self.backend.reads_locally()
    }

    /// Runs `read`, which reads this store, where such a read belongs: in
    /// place when the store reads locally (a B-tree lookup in pages the
    /// kernel holds: microseconds, less than the hop to a blocking thread
    /// and back), on a blocking thread otherwise (an etcd round trip must
    /// not hold an async worker), at most [`REMOTE_READS_AT_ONCE`] at a
    /// time, so concurrent tasks overlap their round trips without taking
    /// every blocking thread. `Err` only if that thread's task was lost.
    pub async fn reading<T: Send + 'static>(
        &self,
        read: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, crate::blocking::TaskLost> {
        if self.reads_locally() {
            return Ok(read());
        }
        self.remote_reads.run(read).await
    }

    /// Runs `call` on this store on a blocking thread: a durable write
    /// waits for the disk (or etcd), any etcd call is a round trip, and
    /// neither may hold an async worker.
    pub async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        call: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = Arc::clone(self);
        tokio::task::spawn_blocking(move || call(&store))
            .await
            .map_err(|e| StoreError::Db(format!("store task lost: {e}")))?
    }

    /// Whether the backend answered the last call: false once it fails
    /// (etcd lost), and every issue then fails with it. For readiness.
    pub fn healthy(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Asks the backend (a cheap count) and returns [`Self::healthy`].
    /// Blocks for at most the backend's request timeout.
    pub fn probe(&self) -> bool {
        let _ = self.count(Table::Authority);
        self.healthy()
    }

    /// Notes whether the backend answered.
    fn track<T>(&self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        match &r {
            Ok(_) => self.up.store(true, Ordering::Relaxed),
            Err(StoreError::Db(e)) => {
                if self.up.swap(false, Ordering::Relaxed) {
                    tracing::error!(store = %self.describe(), error = %e, "store unavailable: issuing stops until it answers");
                }
            }
            Err(_) => {}
        }
        r
    }

    /// Reads and decrypts one record.
    pub fn get<M: DeserializeOwned>(
        &self,
        table: Table,
        name: &str,
    ) -> Result<Option<Record<M>>, StoreError> {
        let record = aad(table, name);
        let Some(raw) = self.track(self.backend.get(table, name))? else {
            return Ok(None);
        };
        let stored: Stored<M> = serde_json::from_slice(&raw).map_err(|e| StoreError::Corrupt {
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
        self.track(self.backend.put(table, name, &raw))
    }

    /// Seals and writes a record only if none exists under `name`
    /// (atomically, across every controller sharing the store). Returns
    /// whether this call wrote it; if not, read the winner's record.
    pub fn put_if_absent<M: Serialize>(
        &self,
        table: Table,
        name: &str,
        meta: &M,
        secret: &[u8],
    ) -> Result<bool, StoreError> {
        let raw = self.encode(table, name, meta, secret)?;
        self.track(self.backend.put_if_absent(table, name, &raw))
    }

    /// Writes many records without secrets in one transaction (one fsync,
    /// or one etcd round trip per hundred records).
    pub fn put_many<M: Serialize>(
        &self,
        table: Table,
        records: &[(String, M)],
    ) -> Result<(), StoreError> {
        let raw = records
            .iter()
            .map(|(name, meta)| Ok((name.clone(), self.encode(table, name, meta, b"")?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.track(self.backend.put_many(table, &raw))
    }

    /// Every record's name and metadata in a table, without decrypting.
    pub fn list<M: DeserializeOwned>(
        &self,
        table: Table,
    ) -> Result<Vec<(String, M, i64)>, StoreError> {
        self.track(self.backend.list(table))?
            .into_iter()
            .map(|(name, raw)| {
                let m: MetaOnly<M> =
                    serde_json::from_slice(&raw).map_err(|e| StoreError::Corrupt {
                        record: aad(table, &name),
                        reason: e.to_string(),
                    })?;
                Ok((name, m.meta, m.updated_unix))
            })
            .collect()
    }

    /// Deletes a record (no-op when absent).
    pub fn delete(&self, table: Table, name: &str) -> Result<(), StoreError> {
        self.track(self.backend.delete(table, name))
    }

    /// Number of records in a table.
    pub fn count(&self, table: Table) -> Result<u64, StoreError> {
        self.track(self.backend.count(table))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kcred_testetcd::EtcdCluster;

    /// What keeps a backend alive for a test: its file's directory, or its
    /// etcd cluster.
    enum Holder {
        File(tempfile::TempDir),
        Etcd(EtcdCluster),
    }

    /// One store per backend, same master key.
    fn backends(master: [u8; 32]) -> Vec<(Store, Holder)> {
        let dir = tempfile::tempdir().expect("tempdir");
        let embedded = Store::open(
            &dir.path().join("store.redb"),
            MasterKey::from_bytes(master),
        )
        .expect("open embedded");
        let cluster = EtcdCluster::start(1).expect("start etcd");
        let etcd = etcd::Etcd::connect(etcd::EtcdOptions::plain(cluster.endpoints(), "/kcred/"))
            .expect("connect etcd");
        vec![
            (embedded, Holder::File(dir)),
            (
                Store::with_backend(Arc::new(etcd), MasterKey::from_bytes(master)),
                Holder::Etcd(cluster),
            ),
        ]
    }

    fn reopen(holder: &Holder, master: [u8; 32]) -> Store {
        match holder {
            Holder::File(dir) => Store::open(
                &dir.path().join("store.redb"),
                MasterKey::from_bytes(master),
            )
            .expect("reopen"),
            Holder::Etcd(c) => Store::with_backend(
                Arc::new(
                    etcd::Etcd::connect(etcd::EtcdOptions::plain(c.endpoints(), "/kcred/"))
                        .expect("reconnect"),
                ),
                MasterKey::from_bytes(master),
            ),
        }
    }

    #[test]
    fn records_round_trip_sealed_and_bound_to_their_name_on_every_backend() {
        for (store, holder) in backends([1; 32]) {
            let what = store.describe();
            store
                .put(Table::Keytabs, "HTTP/a@R", &vec![1u32, 2], b"secret-bytes")
                .expect("put");
            let r: Record<Vec<u32>> = store
                .get(Table::Keytabs, "HTTP/a@R")
                .expect("get")
                .expect("present");
            assert_eq!(
                (r.meta, r.secret.as_slice()),
                (vec![1, 2], &b"secret-bytes"[..]),
                "{what}"
            );
            assert!(
                store
                    .get::<Vec<u32>>(Table::Tickets, "HTTP/a@R")
                    .expect("get")
                    .is_none(),
                "{what}: tables are separate"
            );
            let listed: Vec<(String, Vec<u32>, i64)> = store.list(Table::Keytabs).expect("list");
            assert_eq!(listed.len(), 1, "{what}");
            assert_eq!(listed[0].0, "HTTP/a@R", "{what}");
            let raw = store
                .backend
                .get(Table::Keytabs, "HTTP/a@R")
                .expect("raw")
                .expect("raw present");
            assert!(
                !raw.windows(12).any(|w| w == b"secret-bytes"),
                "{what}: secret stored in the clear"
            );
            // Moved under another name, the sealed bytes no longer open.
            store
                .backend
                .put(Table::Keytabs, "HTTP/b@R", &raw)
                .expect("raw put");
            assert!(
                matches!(
                    store.get::<Vec<u32>>(Table::Keytabs, "HTTP/b@R"),
                    Err(StoreError::Crypto { .. })
                ),
                "{what}: a record opened under another name"
            );
            drop(store);
            // Another master key cannot read it; the same one can, after a
            // restart.
            let other = reopen(&holder, [2; 32]);
            assert!(
                other.get::<Vec<u32>>(Table::Keytabs, "HTTP/a@R").is_err(),
                "{what}"
            );
            drop(other);
            let same = reopen(&holder, [1; 32]);
            assert!(
                same.get::<Vec<u32>>(Table::Keytabs, "HTTP/a@R")
                    .expect("get")
                    .is_some()
            );
        }
    }

    #[test]
    fn batches_listing_counting_and_deleting_agree_on_every_backend() {
        for (store, _holder) in backends([3; 32]) {
            let what = store.describe();
            // More than one etcd transaction and more than one listing page.
            let records: Vec<(String, u32)> =
                (0..1203).map(|i| (format!("vol-{i:05}"), i)).collect();
            store.put_many(Table::Volumes, &records).expect("put_many");
            assert_eq!(store.count(Table::Volumes).expect("count"), 1203, "{what}");
            assert_eq!(store.count(Table::Keytabs).expect("count"), 0, "{what}");
            let listed: Vec<(String, u32, i64)> = store.list(Table::Volumes).expect("list");
            let names: Vec<&str> = listed.iter().map(|(n, _, _)| n.as_str()).collect();
            let expected: Vec<String> = records.iter().map(|(n, _)| n.clone()).collect();
            assert_eq!(names, expected, "{what}: every record once, in name order");
            assert!(
                listed.iter().all(|(n, m, _)| *n == format!("vol-{m:05}")),
                "{what}"
            );
            store.delete(Table::Volumes, "vol-00007").expect("delete");
            store
                .delete(Table::Volumes, "vol-absent")
                .expect("delete absent");
            assert_eq!(store.count(Table::Volumes).expect("count"), 1202, "{what}");
            assert!(
                store
                    .get::<u32>(Table::Volumes, "vol-00007")
                    .expect("get")
                    .is_none()
            );
        }
    }

    #[test]
    fn of_two_creators_of_one_record_exactly_one_wins_on_every_backend() {
        for (store, _holder) in backends([7; 32]) {
            let what = store.describe();
            assert!(
                store
                    .put_if_absent(Table::Authority, "ca", &1u32, b"first")
                    .expect("create")
            );
            assert!(
                !store
                    .put_if_absent(Table::Authority, "ca", &2u32, b"second")
                    .expect("create")
            );
            let r: Record<u32> = store
                .get(Table::Authority, "ca")
                .expect("get")
                .expect("present");
            assert_eq!((r.meta, r.secret.as_slice()), (1, &b"first"[..]), "{what}");
        }
    }

    #[test]
    fn a_store_that_loses_etcd_fails_closed_and_recovers_when_it_answers() {
        let mut cluster = EtcdCluster::start(1).expect("start etcd");
        let mut opts = etcd::EtcdOptions::plain(cluster.endpoints(), "/kcred/");
        opts.timeout = std::time::Duration::from_secs(1);
        let store = Store::with_backend(
            Arc::new(etcd::Etcd::connect(opts).expect("connect")),
            MasterKey::from_bytes([4; 32]),
        );
        store
            .put(Table::Keytabs, "HTTP/a@R", &(), b"k")
            .expect("put");
        assert!(store.probe());
        cluster.kill(0);
        assert!(matches!(
            store.get::<()>(Table::Keytabs, "HTTP/a@R"),
            Err(StoreError::Db(_))
        ));
        assert!(!store.healthy(), "a store without etcd reports healthy");
        assert!(store.put(Table::Keytabs, "HTTP/b@R", &(), b"k").is_err());
        cluster.restart(0).expect("restart");
        let mut back = false;
        for _ in 0..100 {
            if store.probe() {
                back = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert!(back, "the store did not come back with etcd");
        assert!(
            store
                .get::<()>(Table::Keytabs, "HTTP/a@R")
                .expect("get")
                .is_some()
        );
        assert!(
            store
                .get::<()>(Table::Keytabs, "HTTP/b@R")
                .expect("get")
                .is_none()
        );
    }

    /// A store on a fresh three-member cluster, listing every member.
    fn store_on_three_members() -> (EtcdCluster, Store) {
        let cluster = EtcdCluster::start(3).expect("start etcd");
        let mut opts = etcd::EtcdOptions::plain(cluster.endpoints(), "/kcred/");
        opts.timeout = std::time::Duration::from_secs(2);
        let store = Store::with_backend(
            Arc::new(etcd::Etcd::connect(opts).expect("connect")),
            MasterKey::from_bytes([6; 32]),
        );
        (cluster, store)
    }

    /// Writes and reads `count` records, and fails naming the calls that
    /// failed.
    fn every_write_and_read_succeeds(store: &Store, count: usize) {
        let mut failures = Vec::new();
        for i in 0..count {
            let name = format!("HTTP/{i}@R");
            if let Err(e) = store.put(Table::Keytabs, &name, &(), b"k") {
                failures.push(format!("put {i}: {e}"));
            }
            if let Err(e) = store.get::<()>(Table::Keytabs, &name) {
                failures.push(format!("get {i}: {e}"));
            }
        }
        assert!(
            failures.is_empty(),
            "{} failed: {:?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
    }

    /// etcd's client balances over every listed member and keeps trying a
    /// dead one for some requests; a store must not fail while a quorum
    /// answers.
    #[test]
    fn a_store_keeps_serving_when_one_listed_member_is_dead() {
        let (mut cluster, store) = store_on_three_members();
        cluster.kill(2);
        // Should member 2 have led, the others elect a leader first.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !store.probe() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        every_write_and_read_succeeds(&store, 300);
    }

    /// A member that hears requests and never answers (a host gone silent)
    /// is taken out of the client's rotation: requests stop waiting on it.
    #[test]
    fn a_store_keeps_serving_when_one_listed_member_falls_silent() {
        let (cluster, store) = store_on_three_members();
        cluster.freeze(2);
        // The watcher's probe times out (at most a second), then the
        // survivors answer (after an election, should member 2 have led).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut answered = 0;
        while answered < 20 && std::time::Instant::now() < deadline {
            answered = if store.probe() { answered + 1 } else { 0 };
        }
        every_write_and_read_succeeds(&store, 200);
        cluster.thaw(2);
    }

    #[test]
    fn a_store_restored_from_an_etcd_snapshot_serves_what_was_saved() {
        let dir = tempfile::tempdir().expect("tempdir");
        let snapshot = dir.path().join("kcred.db");
        let connect = |c: &EtcdCluster| {
            Store::with_backend(
                Arc::new(
                    etcd::Etcd::connect(etcd::EtcdOptions::plain(c.endpoints(), "/kcred/"))
                        .expect("connect"),
                ),
                MasterKey::from_bytes([9; 32]),
            )
        };
        {
            let cluster = EtcdCluster::start(1).expect("etcd");
            let store = connect(&cluster);
            store
                .put(Table::Keytabs, "HTTP/a@R", &vec![4u32], b"saved")
                .expect("put");
            cluster.snapshot(&snapshot).expect("etcdctl snapshot save");
            store
                .put(Table::Keytabs, "HTTP/b@R", &vec![5u32], b"after")
                .expect("put");
        }
        // The cluster is gone; a new three-member one starts from the snapshot.
        let restored = EtcdCluster::restore(&snapshot, 3).expect("etcdctl snapshot restore");
        let store = connect(&restored);
        let r: Record<Vec<u32>> = store
            .get(Table::Keytabs, "HTTP/a@R")
            .expect("get")
            .expect("restored");
        assert_eq!((r.meta, r.secret.as_slice()), (vec![4], &b"saved"[..]));
        assert!(
            store
                .get::<Vec<u32>>(Table::Keytabs, "HTTP/b@R")
                .expect("get")
                .is_none(),
            "a record written after the snapshot came back"
        );
    }

    #[test]
    fn a_controller_never_starts_on_an_etcd_it_cannot_reach() {
        let cluster = EtcdCluster::start(1).expect("start etcd");
        let endpoints = cluster.endpoints();
        drop(cluster);
        let mut opts = etcd::EtcdOptions::plain(endpoints.clone(), "/kcred/");
        opts.timeout = std::time::Duration::from_millis(500);
        let err = etcd::Etcd::connect(opts)
            .err()
            .expect("connected to nothing");
        assert!(err.to_string().contains(&endpoints[0]), "{err}");
    }

    #[test]
    fn migration_copies_every_record_to_etcd_and_back_still_sealed() {
        let master = [5; 32];
        let mut stores = backends(master);
        let (etcd_store, _cluster) = stores.pop().expect("etcd");
        let (embedded, dir) = stores.pop().expect("embedded");
        embedded
            .put(Table::Keytabs, "HTTP/a@R", &vec![3u32], b"keytab")
            .expect("put");
        embedded
            .put(Table::KeyRings, "orders", &(), b"ring")
            .expect("put");
        embedded
            .put_many(
                Table::Volumes,
                &[("v1".to_string(), 1u32), ("v2".to_string(), 2)],
            )
            .expect("put_many");

        let copied = embedded.copy_into(&etcd_store).expect("to etcd");
        assert_eq!(copied.total(), 4);
        let r: Record<Vec<u32>> = etcd_store
            .get(Table::Keytabs, "HTTP/a@R")
            .expect("get")
            .expect("present");
        assert_eq!((r.meta, r.secret.as_slice()), (vec![3], &b"keytab"[..]));

        // A migration never merges into a store that holds records.
        assert!(matches!(
            embedded.copy_into(&etcd_store),
            Err(migrate::MigrateError::TargetNotEmpty { .. })
        ));
        // Nor copies between stores under different master keys.
        let other_dir = tempfile::tempdir().expect("tempdir");
        let other = Store::open(
            &other_dir.path().join("s.redb"),
            MasterKey::from_bytes([6; 32]),
        )
        .expect("open");
        assert!(matches!(
            etcd_store.copy_into(&other),
            Err(migrate::MigrateError::KeyMismatch { .. })
        ));

        // And back, into a fresh embedded file.
        let Holder::File(d) = dir else {
            panic!("embedded first")
        };
        let back =
            Store::open(&d.path().join("back.redb"), MasterKey::from_bytes(master)).expect("open");
        assert_eq!(etcd_store.copy_into(&back).expect("back").total(), 4);
        let ring = back
            .get::<()>(Table::KeyRings, "orders")
            .expect("get")
            .expect("present");
        assert_eq!(ring.secret.as_slice(), b"ring");
        assert_eq!(back.count(Table::Volumes).expect("count"), 2);
    }
}
