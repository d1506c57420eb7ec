//! Metric registration and the text exposition every daemon serves.
//!
//! Each daemon keeps its own registry (several controllers in one test
//! process keep separate counts). What is about the process itself, its
//! `process_*` metrics and `kcred_build_info`, lives once per process here
//! and is appended to every exposition.

use std::sync::OnceLock;

use prometheus::{Encoder, IntGaugeVec, Opts, Registry, TextEncoder};

/// What `kcred_build_info` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    /// Which daemon: `controller` or `csi-driver`.
    pub component: &'static str,
    /// Its version (`CARGO_PKG_VERSION`).
    pub version: &'static str,
}

static BUILD_INFO: OnceLock<BuildInfo> = OnceLock::new();
static PROCESS: OnceLock<Registry> = OnceLock::new();

/// Records which daemon this process is. Call first thing in `main`,
/// before anything renders metrics; later calls are ignored (one process,
/// one build).
pub fn set_build_info(info: BuildInfo) {
    let _ = BUILD_INFO.set(info);
}

/// The source revision, when the build was given one (`KCRED_REVISION`,
/// set by scripts/build-images.sh from git).
const REVISION: &str = match option_env!("KCRED_REVISION") {
    Some(r) => r,
    None => "unknown",
};

fn process_registry() -> &'static Registry {
    PROCESS.get_or_init(|| {
        let registry = Registry::new();
        let info = BUILD_INFO.get().cloned().unwrap_or(BuildInfo {
            component: "unknown",
            version: env!("CARGO_PKG_VERSION"),
        });
        let build = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "kcred_build_info",
                    "Always 1; the labels say which kcred build runs",
                ),
                &["component", "version", "revision"],
            ),
        );
        build
            .with_label_values(&[info.component, info.version, REVISION])
            .set(1);
        #[cfg(target_os = "linux")]
        if let Err(e) = registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        )) {
            tracing::error!(error = %e, "cannot register process metrics");
        }
        registry
    })
}

/// Builds a metric and registers it. Metric definitions are static, so a
/// failure is a programming error, caught by each daemon's metrics unit test.
pub fn register<C>(registry: &Registry, metric: prometheus::Result<C>) -> C
where
    C: prometheus::core::Collector + Clone + 'static,
{
    let registered = metric.and_then(|m| registry.register(Box::new(m.clone())).map(|()| m));
    match registered {
        Ok(m) => m,
        Err(e) => panic!("invalid metric definition: {e}"),
    }
}

/// A daemon's registry plus the process's own metrics, in the Prometheus
/// text format.
pub fn render(registry: &Registry) -> String {
    let mut families = registry.gather();
    families.extend(process_registry().gather());
    let mut buf = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
        tracing::error!(error = %e, "cannot encode metrics");
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_exposition_carries_build_info_and_process_metrics() {
        let text = render(&Registry::new());
        assert!(
            text.contains("kcred_build_info{component=\"")
                && text.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))),
            "{text}"
        );
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_start_time_seconds",
        ] {
            assert!(
                text.contains(&format!("\n{name} ")),
                "{name} missing: {text}"
            );
        }
    }
}
