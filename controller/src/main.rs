//! `kcred-controller`: runs the controller, prepares its master key, or
//! moves its records between stores.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use kcred_controller::crypto::MasterKey;
use kcred_controller::store::Store;
use kcred_controller::{Config, Controller};

#[derive(Parser)]
#[command(
    version,
    about = "kcred controller: issues Kerberos credentials to Kubernetes pods"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
    /// Create a new random master key file (mode 0600); never overwrites.
    GenerateMasterKey {
        /// Where to write it.
        path: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match Cli::parse().command {
        Command::GenerateMasterKey { path } => {
            let key = MasterKey::generate_file(&path)?;
            println!("wrote master key {} to {}", key.id(), path.display());
            Ok(())
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
            Ok(())
        }
        Command::Serve { config } => {
            let cfg = Config::load(&config)?;
            // Ready (store open, CA exported) before the port opens: a
            // client that can connect finds everything in place.
            let controller = Controller::start(&cfg)?;
            let listener = tokio::net::TcpListener::bind(cfg.listen)
                .await
                .with_context(|| format!("cannot listen on {}", cfg.listen))?;
            tracing::info!(listen = %cfg.listen, "serving node API");
            controller
                .serve(listener, kcred_runtime::shutdown_signal())
                .await?;
            Ok(())
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
