//! One logging set-up for both daemons: lines on stderr, as text for people
//! or as JSON objects for log collectors, and colour only on a terminal
//! (escape codes in files and journald make logs unreadable and unsearchable).

use std::io::IsTerminal;

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

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
    let (filter, unreadable) = filter_from(std::env::var("RUST_LOG").ok().as_deref());
    // The builder's own level cap (info) would hide what RUST_LOG enables.
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(LevelFilter::TRACE);
    let installed = match args.log_format {
        LogFormat::Text => builder
            .with_ansi(colour_wanted())
            .finish()
            .with(filter)
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_ansi(false)
            .finish()
            .with(filter)
            .try_init(),
    };
    match installed {
        Err(e) => eprintln!("logging was already set up: {e}"),
        Ok(()) => {
            if let Some(reason) = unreadable {
                tracing::warn!("{reason}");
            }
        }
    }
}

/// The filter `RUST_LOG` asks for: comma-separated directives, each a
/// level (`debug`) or a target and its level (`kcred_controller=debug`);
/// "info" when unset, and when unreadable (with why, to log). Targets and
/// levels only, not span or field filters: those need a regex engine,
/// which would be most of what a daemon's logging costs in code.
fn filter_from(var: Option<&str>) -> (Targets, Option<String>) {
    let info = || Targets::new().with_default(LevelFilter::INFO);
    match var.map(str::trim) {
        None | Some("") => (info(), None),
        Some(text) => match text.parse::<Targets>() {
            Ok(targets) => (targets, None),
            Err(e) => (
                info(),
                Some(format!(
                    "RUST_LOG {text:?} is not a list of levels and target=level pairs ({e}); logging at info"
                )),
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    use super::filter_from;

    #[test]
    fn unset_or_empty_logs_at_info() {
        for var in [None, Some(""), Some("  ")] {
            let (f, unreadable) = filter_from(var);
            assert!(unreadable.is_none());
            assert!(f.would_enable("kcred_controller::api", &Level::INFO));
            assert!(!f.would_enable("kcred_controller::api", &Level::DEBUG));
        }
    }

    #[test]
    fn levels_and_targets_are_read() {
        let (f, unreadable) = filter_from(Some("warn,kcred_csi_driver::volumes=debug"));
        assert!(unreadable.is_none());
        assert!(f.would_enable("kcred_csi_driver::volumes::reconcile", &Level::DEBUG));
        assert!(!f.would_enable("kcred_csi_driver::volumes", &Level::TRACE));
        assert!(f.would_enable("h2::codec", &Level::WARN));
        assert!(!f.would_enable("h2::codec", &Level::INFO));
        // A target alone enables that target only.
        let (f, _) = filter_from(Some("kcred_controller=trace"));
        assert!(f.would_enable("kcred_controller::pods", &Level::TRACE));
        assert!(!f.would_enable("hyper", &Level::ERROR));
    }

    #[test]
    fn an_unreadable_filter_logs_at_info_and_says_why() {
        let (f, unreadable) = filter_from(Some("kcred=loud"));
        let reason = unreadable.expect("a reason");
        assert!(reason.contains("kcred=loud"), "{reason}");
        assert!(f.would_enable("kcred", &Level::INFO));
        assert!(!f.would_enable("kcred", &Level::DEBUG));
    }
}
