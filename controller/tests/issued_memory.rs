//! The issued-volume index keeps every record in memory (heartbeats and
//! rotations read it, never the store): 100,000 volumes of 10,000 nodes,
//! each holding one of 1,000 principals, take under 2 KiB each, the
//! store's own cache of their written records included. Names repeated
//! across records (node, namespace, principal, bundle generation) are
//! shared, not copied per record.
//!
//! Measured with a counting allocator: what stays allocated once every
//! record is written is what the index costs.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kcred_controller::crypto::MasterKey;
use kcred_controller::issued::{Issued, VolumeRecord};
use kcred_controller::store::{Store, Table};

mod counting;

/// A record as a fetch writes it: one keytab principal, its kvno, the
/// bundle's generation (shared by the volumes of one credential).
fn record(i: usize) -> VolumeRecord {
    let principal = format!("HTTP/svc{}.example.com@KCRED.TEST", i % 1000);
    VolumeRecord {
        volume_id: format!("csi-{:064x}", i as u128 * 0x9e37_79b9_7f4a_7c15),
        node: format!("node-{:05}.cluster.example.com", i % 10_000),
        namespace: format!("team-{}", i % 200),
        pod: format!("orders-api-7d9f8b6c5d-{i:06}"),
        pod_uid: format!("8c3b1f7e-2a4d-4c9b-9e1f-{i:012}"),
        keytabs: BTreeSet::from([principal.clone()]),
        ticket: None,
        certs: BTreeSet::new(),
        keys: BTreeSet::new(),
        versions: BTreeMap::from([(principal, 3)]),
        issued_unix: 1_790_000_000 + i as i64,
        generation: format!("{:032x}", (i % 1000) as u128 * 0x1234_5678_9abc_def1),
        revoked: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_issued_volumes_take_under_2_kib_each() {
    const VOLUMES: usize = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        Store::open(
            &dir.path().join("store.redb"),
            MasterKey::from_bytes([7; 32]),
        )
        .unwrap(),
    );
    let before = counting::live();
    let issued = Issued::new(Arc::clone(&store), false).unwrap();
    for i in 0..VOLUMES {
        issued.put(&record(i)).unwrap();
    }
    // Written behind: wait until the store holds every record.
    for _ in 0..600 {
        if store.count(Table::Volumes).unwrap() == VOLUMES as u64 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(store.count(Table::Volumes).unwrap(), VOLUMES as u64);
    // The writer then drops its copies of the batch: wait until the count
    // settles.
    let mut kept = counting::live() - before;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let now = counting::live() - before;
        let settled = (now - kept).abs() < 1 << 20;
        kept = now;
        if settled {
            break;
        }
    }
    let per_volume = kept as usize / VOLUMES;
    eprintln!("issued index: {kept} bytes for {VOLUMES} volumes ({per_volume} bytes each)");
    assert_eq!(
        issued.placements_on("node-00007.cluster.example.com").len(),
        10
    );
    assert!(per_volume < 2048, "{per_volume} bytes a volume");
}
