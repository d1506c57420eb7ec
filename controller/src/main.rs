//! `kcred-controller`: runs the controller, prepares its master key, or
//! moves its records between stores.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kcred_controller::crypto::MasterKey;
use kcred_controller::gate::{GateConfig, Lane};
use kcred_controller::metrics::Metrics;
use kcred_controller::store::Store;
use kcred_controller::{Config, Controller};
use kcred_runtime::{Check, OpsEndpoints};

#[derive(Parser)]
#[command(
    version,
    about = "kcred controller: issues Kerberos credentials to Kubernetes pods"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: kcred_runtime::LogArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller.
    Serve {
        /// Configuration file (TOML).
        #[arg(
            long,
            short,
            env = "KCRED_CONFIG",
            default_value = "/etc/kcred/controller.toml"
        )]
        config: PathBuf,
        /// Start although the audit log no longer reaches the head kept in
        /// the store (cut, deleted or replaced while the controller was
        /// stopped), after restoring what can be restored. The reason (a
        /// ticket, a name) is recorded in the log with the lost head; see
        /// docs/operations-audit.md.
        #[arg(long, value_name = "REASON")]
        acknowledge_audit_loss: Option<String>,
    },
    /// Copy every record from one store to another (embedded file to etcd,
    /// or back), sealed as they are. Stop the controllers first; the target
    /// must be empty and use the same master key.
    MigrateStore {
        /// Configuration naming the source store.
        #[arg(long)]
        from: PathBuf,
        /// Configuration naming the target store.
        #[arg(long)]
        to: PathBuf,
    },
    /// Check a configuration and every file it names without starting:
    /// prints each finding; exits 0 if all is well, 3 if the config, policy
    /// or pods file is invalid, 4 if a file is missing, unreadable or
    /// readable by others (keys, keytabs), 5 if (with --reach) kadmind or
    /// the KDC cannot be used.
    CheckConfig {
        /// Configuration file (TOML).
        #[arg(
            long,
            short,
            env = "KCRED_CONFIG",
            default_value = "/etc/kcred/controller.toml"
        )]
        config: PathBuf,
        /// Also log in to the KDC and kadmind with the admin keytab.
        #[arg(long)]
        reach: bool,
    },
    /// Create a new random master key file (mode 0600); never overwrites.
    GenerateMasterKey {
        /// Where to write it.
        path: PathBuf,
    },
}

fn main() -> anyhow::Result<std::process::ExitCode> {
    kcred_runtime::malloc::limit_arenas(MALLOC_ARENAS);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run())
}

/// glibc's malloc arenas (`kcred_runtime::malloc`): with 10,000 nodes and
/// 100,000 volumes the controller ended at 744 MiB instead of 833 (2.3 KiB
/// of RSS per issued volume instead of 3.2), at the same CPU.
const MALLOC_ARENAS: i32 = 2;

async fn run() -> anyhow::Result<std::process::ExitCode> {
    kcred_runtime::set_build_info(kcred_runtime::BuildInfo {
        component: "controller",
        version: env!("CARGO_PKG_VERSION"),
    });
    let cli = Cli::parse();
    kcred_runtime::logging::init(&cli.log);
    match cli.command {
        Command::GenerateMasterKey { path } => {
            let key = MasterKey::generate_file(&path)?;
            println!("wrote master key {} to {}", key.id(), path.display());
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::CheckConfig { config, reach } => {
            let report = kcred_controller::check::check(&config, reach).await;
            for finding in &report.findings {
                println!("{finding}");
            }
            let code = report.exit_code();
            if code == 0 {
                println!("configuration {} is usable", config.display());
            }
            Ok(std::process::ExitCode::from(code))
        }
        Command::MigrateStore { from, to } => {
            let (source, target) = (open_store(&from)?, open_store(&to)?);
            let copied = source.copy_into(&target)?;
            for (table, n) in &copied.tables {
                println!("{table}: {n}");
            }
            println!(
                "copied {} records from {} to {}",
                copied.total(),
                source.describe(),
                target.describe()
            );
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Serve {
            config,
            acknowledge_audit_loss,
        } => {
            let mut cfg = Config::load(&config)?;
            if let Some(reason) = acknowledge_audit_loss {
                anyhow::ensure!(
                    !reason.trim().is_empty(),
                    "--acknowledge-audit-loss needs a reason (a ticket, a name)"
                );
                cfg.acknowledge_audit_loss = Some(reason);
            }
            // The operations endpoint is served from here (not by
            // `Controller::serve`), with the readiness checks below.
            let ops_addr = cfg.metrics_listen.take();
            // Ready (store open, CA exported) before the port opens: a
            // client that can connect finds everything in place.
            let controller = Controller::start(&cfg)?;
            spawn_reload_on_sighup(controller.reload_trigger())?;
            let metrics = controller.metrics();
            start_series_at_zero(&metrics, &cfg);
            if let Some(addr) = ops_addr {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} (metrics_listen)"))?;
                let audit_log = cfg.audit_log.clone();
                let store_up = controller.readiness();
                let pods = controller.pods();
                let ops = OpsEndpoints::new(move || metrics.render())
                    .with_readiness(move || readiness(&audit_log, store_up(), !pods.is_stale()));
                tokio::spawn(async move {
                    if let Err(e) = ops.serve(listener).await {
                        tracing::error!(error = %e, "metrics server stopped");
                    }
                });
                tracing::info!(listen = %addr, "serving /metrics, /healthz, /readyz");
            }
            let listener = kcred_controller::listener::bind(cfg.listen)
                .with_context(|| format!("cannot listen on {}", cfg.listen))?;
            tracing::info!(listen = %cfg.listen, "serving node API");
            controller
                .serve(listener, kcred_runtime::shutdown_signal())
                .await?;
            Ok(std::process::ExitCode::SUCCESS)
        }
    }
}

/// `SIGHUP` reloads the policy, the pods file and every other
/// hot-reloaded file at once, without waiting for their next poll.
fn spawn_reload_on_sighup(trigger: kcred_controller::reload::ReloadTrigger) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading configuration files");
            trigger.fire();
        }
    });
    Ok(())
}

/// What `/readyz` reports: the store answers (an etcd store can be lost
/// while running: then nothing is issued), the pod view follows its source
/// (a Kubernetes watch that has listed), and the audit log is writable,
/// probed on every call: nothing is issued without it (fail closed), and a
/// log moved or deleted under the running controller would lose records.
fn readiness(audit_log: &Path, store_up: bool, pods_synced: bool) -> Vec<Check> {
    let audit = std::fs::OpenOptions::new()
        .append(true)
        .open(audit_log)
        .map(drop)
        .map_err(|e| format!("{}: {e}", audit_log.display()));
    let said = |ok: bool, why: &str| if ok { Ok(()) } else { Err(why.to_string()) };
    vec![
        Check::from_result("store", said(store_up, "the store does not answer")),
        Check::from_result(
            "pods",
            said(pods_synced, "the pod view has not listed its source yet"),
        ),
        Check::from_result("audit", audit),
    ]
}

/// Every series whose labels are known in advance starts at zero, so each
/// metric family is on `/metrics` from the start (dashboards and alerts see
/// it, and `rate()` counts the first event). Operation names are those the
/// gate's callers pass.
fn start_series_at_zero(m: &Arc<Metrics>, cfg: &Config) {
    let realms = std::iter::once((cfg.realm.as_str(), &cfg.gate)).chain(
        cfg.realms
            .iter()
            .map(|r| (r.name.as_str(), r.gate.as_ref().unwrap_or(&cfg.gate))),
    );
    for (realm, gate) in realms {
        start_gate_series_at_zero(m, realm, gate);
    }
    for kind in ["keytab", "ticket", "cert", "key"] {
        m.cache_hits.with_label_values(&[kind]);
        m.cache_misses.with_label_values(&[kind]);
        m.coalesced.with_label_values(&[kind]);
    }
    m.fetch_seconds.with_label_values(&["Ok"]);
}

/// One realm's gate series.
fn start_gate_series_at_zero(m: &Arc<Metrics>, realm: &str, gate: &GateConfig) {
    let lanes = [
        (
            Lane::Kadmin,
            &gate.kadmin,
            &["extract_keytab", "randomize_key"],
        ),
        (Lane::Kdc, &gate.kdc, &["acquire_tgt", "renew_tgt"]),
    ];
    for (lane, cfg, ops) in lanes {
        let lane = lane.as_str();
        m.gate_queue_depth.with_label_values(&[realm, lane]).set(0);
        m.gate_breaker_open.with_label_values(&[realm, lane]).set(0);
        // The bucket starts full.
        m.gate_budget_remaining
            .with_label_values(&[realm, lane])
            .set(i64::from(cfg.burst.max(1)));
        for reason in ["breaker_open", "queue_full"] {
            m.gate_refused.with_label_values(&[realm, lane, reason]);
        }
        for op in ops {
            for result in ["ok", "unavailable", "error"] {
                m.kdc_ops.with_label_values(&[realm, lane, op, result]);
            }
        }
    }
}

/// The store a configuration file names, under its master key.
fn open_store(config: &Path) -> anyhow::Result<Store> {
    let cfg = Config::load(config)?;
    let master = MasterKey::load(&cfg.master_key_file)
        .with_context(|| format!("master key of {}", config.display()))?;
    cfg.store
        .open(cfg.store_path.as_deref(), master)
        .with_context(|| format!("store of {}", config.display()))
}
