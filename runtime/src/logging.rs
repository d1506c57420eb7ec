//! One logging set-up for both daemons: lines on stderr, as text for people
//! or as JSON objects for log collectors, and colour only on a terminal
//! (escape codes in files and journald make logs unreadable and unsearchable).

use std::io::IsTerminal;

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt;
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
    // The filter as a layer of its own: the subscriber's level cap is the
    // filter's, so disabled `log` records are dropped at the macro.
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match args.log_format {
        LogFormat::Text => registry
            .with(
                fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(colour_wanted()),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::stderr)
                    .with_ansi(false),
            )
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
    let Some(text) = var else {
        return (info(), None);
    };
    let unreadable = |why: String| {
        Some(format!(
            "RUST_LOG {text:?} is not a list of levels and target=level pairs ({why}); logging at info"
        ))
    };
    // Empty pieces (a trailing comma) and the spaces around pieces mean
    // nothing; `Targets` would read an empty piece as the level "error",
    // and " kcred" as a target of that name.
    let pieces: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if pieces.is_empty() {
        return (info(), None);
    }
    // A piece without `=` is a level: `Targets` would take a misspelled
    // one for a target's name, and with no default level log nothing else.
    if let Some(bad) = pieces
        .iter()
        .find(|p| !p.contains('=') && p.parse::<LevelFilter>().is_err())
    {
        return (info(), unreadable(format!("{bad:?} is not a level")));
    }
    match pieces.join(",").parse::<Targets>() {
        Ok(targets) => (targets, None),
        Err(e) => (info(), unreadable(e.to_string())),
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
    fn empty_pieces_and_spaces_around_pieces_mean_nothing() {
        for var in ["info,", ",", " info , kcred=debug ,", "info,,kcred=debug"] {
            let (f, unreadable) = filter_from(Some(var));
            assert!(unreadable.is_none(), "{var:?}: {unreadable:?}");
            assert!(f.would_enable("hyper", &Level::INFO), "{var:?}");
            assert!(!f.would_enable("hyper", &Level::DEBUG), "{var:?}");
        }
        let (f, _) = filter_from(Some("warn, kcred=debug"));
        assert!(f.would_enable("kcred::x", &Level::DEBUG));
    }

    #[test]
    fn a_misspelt_level_is_unreadable_not_a_target() {
        for var in ["inf", "warn,debgu", "OFF,nope"] {
            let (f, unreadable) = filter_from(Some(var));
            let reason = unreadable.unwrap_or_else(|| panic!("{var:?} was read"));
            assert!(reason.contains("is not a level"), "{reason}");
            assert!(f.would_enable("kcred", &Level::INFO));
        }
        // Levels are read whatever their case; "off" is one.
        let (f, unreadable) = filter_from(Some("OFF,kcred=Debug"));
        assert!(unreadable.is_none());
        assert!(!f.would_enable("hyper", &Level::ERROR));
        assert!(f.would_enable("kcred", &Level::DEBUG));
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
