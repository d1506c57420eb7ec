//! `kcred-controller`: runs the controller, or prepares its master key.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kcred_controller::crypto::MasterKey;
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
        /// Start although the audit log no longer reaches the head kept in
        /// the store (cut, deleted or replaced while the controller was
        /// stopped), after restoring what can be restored. The reason (a
        /// ticket, a name) is recorded in the log with the lost head; see
        /// docs/operations-audit.md.
        #[arg(long, value_name = "REASON")]
        acknowledge_audit_loss: Option<String>,
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
