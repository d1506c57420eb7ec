//! One logging set-up for both daemons: lines on stderr, as text for people
//! or as JSON objects for log collectors, and colour only on a terminal
//! (escape codes in files and journald make logs unreadable and unsearchable).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, target, message and
    /// fields at the top level), for Loki, Elasticsearch and the like.
    Json,
}

/// The logging flags both daemons take.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log line format on stderr. Verbosity comes from RUST_LOG
    /// (default "info").
    #[arg(
        long,
        env = "KCRED_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text,
        global = true
    )]
    pub log_format: LogFormat,
}

/// Whether text lines may carry ANSI colours: only when stderr is a
/// terminal and `NO_COLOR` (<https://no-color.org>) is not set.
pub fn colour_wanted() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Installs the process's subscriber. Call once, first thing in `main`; a
/// second call changes nothing.
pub fn init(args: &LogArgs) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match args.log_format {
        LogFormat::Text => builder.with_ansi(colour_wanted()).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_ansi(false)
            .try_init(),
    };
    if let Err(e) = installed {
        eprintln!("logging was already set up: {e}");
    }
}
