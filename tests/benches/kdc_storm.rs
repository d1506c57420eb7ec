//! KDC storm benchmark: pods start at once on many simulated nodes (real
//! tmpfs mounts, real gRPC, a real MIT kadmind), and the table shows what
//! the KDC side paid. Targets: extractions == distinct principals, peak
//! never above the budget, time to mount all close to
//! (distinct - burst) / rate.
//!
//! `cargo bench -p kcred-tests --bench kdc_storm` (as root).

use kcred_tests::bench::node_fs::NodeFs;
use kcred_tests::storm::{StormConfig, run_storm, unmount_all};

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP kdc_storm: needs root for tmpfs mounts");
        return Ok(());
    }
    let runs = [
        StormConfig {
            pods: 2000,
            nodes: 200,
            principals: 20,
            rate: 10,
            burst: 5,
            node_dir: None,
        },
        StormConfig {
            pods: 2000,
            nodes: 200,
            principals: 100,
            rate: 50,
            burst: 10,
            node_dir: None,
        },
        StormConfig {
            pods: 4000,
            nodes: 400,
            principals: 40,
            rate: 20,
            burst: 10,
            node_dir: None,
        },
    ];
    println!(
        "| pods | nodes | distinct | kadmind ops | budget (rate/burst) | peak ops in 1 s (allowed) | budget violations | all mounted | ideal (distinct-burst)/rate | p50 publish | p99 publish |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for mut cfg in runs {
        // The nodes' side on a tmpfs of its own, the controller's store and
        // audit log on the disk: see the note printed below.
        let node_fs = NodeFs::mount()?;
        cfg.node_dir = Some(node_fs.path().to_path_buf());
        let (r, stack) = run_storm(cfg.clone()).await?;
        unmount_all(&stack);
        stack.shutdown().await?;
        drop(node_fs);
        let ideal = cfg.principals.saturating_sub(cfg.burst as usize) as f64 / f64::from(cfg.rate);
        println!(
            "| {} | {} | {} | {} | {}/s, {} | {} ({}) | {} | {:.2} s | {:.2} s | {:.1} ms | {:.1} ms |",
            cfg.pods,
            cfg.nodes,
            cfg.principals,
            r.total_extractions(),
            cfg.rate,
            cfg.burst,
            r.peak_per_second,
            cfg.rate + cfg.burst,
            r.budget_violations.len(),
            r.all_mounted.as_secs_f64(),
            ideal,
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3,
        );
        if r.failures > 0 {
            println!(
                "  ({} publishes failed; the first: {})",
                r.failures,
                r.first_failure.as_deref().unwrap_or("-")
            );
        }
    }
    println!(
        "\nEach row's nodes (kubelet directory, drivers' state) live on a tmpfs of \
         their own; the controller's store and audit log on {}. On ext4 without \
         a journal, creating a file scans the inodes deleted in the last seconds, \
         so on such a disk a row run right after another's cleanup pays seconds \
         for that alone, which no node with a journaled file system pays.",
        std::env::temp_dir().display()
    );
    Ok(())
}
