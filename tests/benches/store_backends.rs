//! What the store costs per issue on each backend: one sealed write (what
//! a first issue adds) and one read (what serving from the store costs),
//! on the embedded redb file and on a real etcd cluster on loopback (one
//! and three members).
//!
//! `cargo bench -p kcred-tests --bench store_backends`

use std::sync::Arc;
use std::time::{Duration, Instant};

use kcred_controller::crypto::MasterKey;
use kcred_controller::store::etcd::{Etcd, EtcdOptions};
use kcred_controller::store::{Store, Table};
use kcred_testetcd::EtcdCluster;

const OPS: usize = 300;

fn per_op(total: Duration) -> String {
    format!("{:>8.0} µs", total.as_secs_f64() * 1e6 / OPS as f64)
}

fn measure(label: &str, store: &Store) {
    let secret = vec![7u8; 600]; // about a keytab with three enctypes
    let start = Instant::now();
    for i in 0..OPS {
        store
            .put(
                Table::Keytabs,
                &format!("HTTP/svc-{i}@R"),
                &vec![1u32],
                &secret,
            )
            .expect("put");
    }
    let write = start.elapsed();
    let start = Instant::now();
    for i in 0..OPS {
        store
            .get::<Vec<u32>>(Table::Keytabs, &format!("HTTP/svc-{i}@R"))
            .expect("get")
            .expect("present");
    }
    let read = start.elapsed();
    println!("{label:<22} {}  {}", per_op(write), per_op(read));
}

fn main() -> anyhow::Result<()> {
    let master = || MasterKey::from_bytes([1; 32]);
    println!(
        "{:<22} {:>11}  {:>11}",
        "store", "write/issue", "read/serve"
    );
    let dir = tempfile::tempdir()?;
    measure(
        "embedded (redb)",
        &Store::open(&dir.path().join("bench.redb"), master())?,
    );
    for members in [1, 3] {
        let cluster = EtcdCluster::start(members)?;
        let etcd = Etcd::connect(EtcdOptions::plain(cluster.endpoints(), "/kcred/"))?;
        measure(
            &format!("etcd, {members} member(s)"),
            &Store::with_backend(Arc::new(etcd), master()),
        );
    }
    Ok(())
}
