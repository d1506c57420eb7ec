//! `kcredctl`: the operators' and auditors' command line for the kcred
//! controller's `kcred.v1.Admin` API. See `kcredctl --help`.

#![forbid(unsafe_code)]

mod audit;
mod chains;
mod cli;
mod connect;
mod output;
mod rotate;
mod scheme;
mod status;
mod timeparse;
mod verify;

use std::fmt;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser};

use crate::cli::{AuditCmd, Cli, Command, RotateCmd, Shell};

/// A mistake in how kcredctl was called that clap cannot see (a missing
/// --controller, an empty reason...): exit code 2.
#[derive(Debug)]
pub struct Usage(String);

impl Usage {
    /// A usage error with its message (exit code 2).
    pub fn new(message: impl Into<String>) -> Self {
        Usage(message.into())
    }
}

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kcredctl: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // A Kerberos call abandoned on timeout must not hold the exit up.
    runtime.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kcredctl: {}", describe(&e));
            if e.downcast_ref::<Usage>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let g = &cli.global;
    let format = g.output;
    match &cli.command {
        Command::Completions { shell } => {
            completions(*shell);
            return Ok(ExitCode::SUCCESS);
        }
        Command::Audit(AuditCmd::Verify(args)) if args.file.is_some() => {
            return verify::local(args, format).await;
        }
        Command::Audit(AuditCmd::Verify(args)) if !args.chains.is_empty() => {
            return chains::verify_files(args, format).await;
        }
        Command::Audit(AuditCmd::Verify(args)) if args.every_controller => {
            return chains::verify_every(g, args, format).await;
        }
        _ => {}
    }
    precheck(&cli.command)?;
    let mut conn = connect::connect(g).await?;
    let conn = &mut conn;
    match &cli.command {
        Command::Status => status::status(conn, format).await?,
        Command::List(args) => status::list(conn, args, format).await?,
        Command::Rotate(RotateCmd::Keytab {
            principal,
            grace,
            wait,
        }) => return rotate::keytab(conn, principal, *grace, *wait, format).await,
        Command::Rotate(RotateCmd::Key { id, wait }) => {
            return rotate::key(conn, id, *wait, format).await;
        }
        Command::Revoke(args) => rotate::revoke(conn, args, format).await?,
        Command::Retire { id, key_version } => {
            rotate::retire(conn, id, *key_version, format).await?
        }
        Command::Audit(AuditCmd::Query(filter)) => audit::query(conn, filter, format).await?,
        Command::Audit(AuditCmd::Export { filter, out }) => {
            audit::export(conn, filter, out.as_deref()).await?
        }
        Command::Audit(AuditCmd::Verify(args)) => return verify::online(conn, args, format).await,
        Command::Completions { .. } => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// Usage errors clap cannot see, found before connecting.
fn precheck(command: &Command) -> anyhow::Result<()> {
    match command {
        Command::Audit(AuditCmd::Query(f) | AuditCmd::Export { filter: f, .. }) => {
            audit::to_query(f).map(drop)
        }
        Command::Revoke(args) if args.reason.trim().is_empty() => {
            Err(Usage::new("--reason must say why (it goes into the audit log)").into())
        }
        _ => Ok(()),
    }
}

/// The error and its causes, "a: b: c", leaving out a cause that its
/// parent's message already spells out.
fn describe(e: &anyhow::Error) -> String {
    let mut out: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.last().is_some_and(|prev| prev.contains(&text)) {
            out.push(text);
        }
    }
    out.join(": ")
}

fn completions(shell: Shell) {
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(
        shell,
        &mut Cli::command(),
        "kcredctl",
        &mut std::io::stdout(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_listed_once() {
        let io = std::io::Error::other("connection refused");
        let e = anyhow::Error::new(io)
            .context("tcp connect error: connection refused")
            .context("cannot connect");
        assert_eq!(
            describe(&e),
            "cannot connect: tcp connect error: connection refused"
        );
    }

    #[test]
    fn bad_filters_and_empty_reasons_are_usage_errors_before_connecting() {
        let cli = Cli::try_parse_from(["kcredctl", "revoke", "v", "--reason", " "]);
        let err = precheck(&cli.expect("parses").command).expect_err("refused");
        assert!(err.downcast_ref::<Usage>().is_some());
        let args = [
            "kcredctl", "audit", "export", "--since", "-1h", "--until", "-2h",
        ];
        let cli = Cli::try_parse_from(args).expect("parses");
        assert!(precheck(&cli.command).is_err());
    }
}
