//! A storm of pod starts: many pods on many simulated nodes asking for a
//! few principals at once. Shared by the gate's test and its benchmark.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use kcred_csi_driver::volumes::PublishRequest;
use kcred_proto::kcred::v1::PodRef;

use crate::kubelet::{Kubelet, TestPod};
use crate::stack::{Stack, StackOptions};

/// The storm's shape and the kadmind budget.
#[derive(Debug, Clone)]
pub struct StormConfig {
    /// Pods started at once.
    pub pods: usize,
    /// Simulated nodes they are spread over.
    pub nodes: usize,
    /// Distinct principals they ask for.
    pub principals: usize,
    /// kadmind budget: operations per second.
    pub rate: u32,
    /// kadmind budget: burst.
    pub burst: u32,
    /// Where the nodes' side lives ([`StackOptions::node_dir`]).
    pub node_dir: Option<std::path::PathBuf>,
}

/// What the storm cost and how long it took.
#[derive(Debug, Clone)]
pub struct StormReport {
    /// The storm's shape.
    pub config: StormConfig,
    /// Publishes that failed.
    pub failures: usize,
    /// The first failed publish's error, to say why.
    pub first_failure: Option<String>,
    /// Extractions kadmind logged, by principal.
    pub extractions: BTreeMap<String, usize>,
    /// Most extractions kadmind logged in any one second.
    pub peak_per_second: usize,
    /// Windows of whole seconds whose count beat `burst + rate * len`.
    pub budget_violations: Vec<String>,
    /// From the first publish until every volume was mounted.
    pub all_mounted: Duration,
    /// Publish latency percentiles.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
}

impl StormReport {
    /// Total extractions kadmind performed.
    pub fn total_extractions(&self) -> usize {
        self.extractions.values().sum()
    }
}

fn principal(i: usize) -> String {
    format!("HTTP/svc{i}.example.com")
}

/// Seconds since midnight of a kadmind log line (`Nov 26 05:20:26 ...`).
fn log_second(line: &str) -> Option<u32> {
    let t = line.split_whitespace().nth(2)?;
    let mut parts = t.split(':').map(|p| p.parse::<u32>().ok());
    Some(parts.next()?? * 3600 + parts.next()?? * 60 + parts.next()??)
}

/// Runs the storm and returns its report and the stack (for more checks).
pub async fn run_storm(cfg: StormConfig) -> anyhow::Result<(StormReport, Stack)> {
    let principals: Vec<String> = (0..cfg.principals).map(principal).collect();
    let owned = principals
        .iter()
        .map(|p| format!("{p:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let policy = format!(
        "[[role_accounts]]\nlogin = \"storm\"\nuid = 2000\ngid = 2000\nnamespaces = [\"storm\"]\nservice_principals = [{owned}]\n"
    );
    let stack = Stack::start(StackOptions {
        principals: principals.clone(),
        policy,
        extra_config: format!(
            "[gate.kadmin]\nrate_per_sec = {}\nburst = {}\n",
            cfg.rate, cfg.burst
        ),
        node_dir: cfg.node_dir.clone(),
        ..StackOptions::default()
    })
    .await?;

    let mut nodes = Vec::with_capacity(cfg.nodes);
    for n in 0..cfg.nodes {
        nodes.push(Arc::new(stack.simulated_node(&format!("node-{n}"))?));
    }
    let mut jobs = Vec::with_capacity(cfg.pods);
    for j in 0..cfg.pods {
        let node = j % cfg.nodes;
        let pod = TestPod::with_keytabs(
            "storm",
            &format!("p{j}"),
            &format!("node-{node}"),
            &principals[j % cfg.principals],
        );
        stack.add_pod(&pod);
        let req = PublishRequest {
            volume_id: Kubelet::volume_id(&pod, "kcred"),
            target: stack.kubelet.target_path(&pod, "kcred"),
            pod: PodRef {
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
                uid: pod.uid.clone(),
                service_account: "default".into(),
            },
            readonly: false,
        };
        if let Some(parent) = req.target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        jobs.push((Arc::clone(&nodes[node]), req));
    }

    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for (node, req) in jobs {
        set.spawn(async move {
            let t = Instant::now();
            let r = node.publish(req).await;
            (r.err().map(|e| format!("{e:#}")), t.elapsed())
        });
    }
    let mut latencies = Vec::with_capacity(cfg.pods);
    let (mut failures, mut first_failure) = (0, None);
    while let Some(done) = set.join_next().await {
        let (failed, latency) = done.context("publish task")?;
        if let Some(e) = failed {
            failures += 1;
            first_failure.get_or_insert(e);
        }
        latencies.push(latency);
    }
    let all_mounted = start.elapsed();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };

    let lines = stack.realm.kadmind_extractions(None)?;
    let mut extractions = BTreeMap::new();
    for line in &lines {
        if let Some(p) = principals
            .iter()
            .find(|p| line.contains(&format!("keys, {p}@")))
        {
            *extractions.entry(p.clone()).or_insert(0) += 1;
        }
    }
    let budget = kadmind_budget(&lines, cfg.rate, cfg.burst);
    let report = StormReport {
        peak_per_second: budget.peak_per_second,
        config: cfg,
        failures,
        first_failure,
        extractions,
        budget_violations: budget.violations,
        all_mounted,
        p50: pct(0.50),
        p99: pct(0.99),
    };
    Ok((report, stack))
}

/// How kadmind's extractions spread over time, against a budget.
#[derive(Debug, Clone, Default)]
pub struct BudgetCheck {
    /// Most extractions logged in any one second.
    pub peak_per_second: usize,
    /// Windows of whole seconds whose count beat `burst + rate * len`.
    pub violations: Vec<String>,
}

/// Checks kadmind's extraction log lines
/// ([`kcred_testrealm::Realm::kadmind_extractions`]) against a budget of
/// `rate` per second after a `burst`.
pub fn kadmind_budget(lines: &[String], rate: u32, burst: u32) -> BudgetCheck {
    let mut per_second: BTreeMap<u32, usize> = BTreeMap::new();
    for line in lines {
        if let Some(s) = log_second(line) {
            *per_second.entry(s).or_insert(0) += 1;
        }
    }
    let mut violations = Vec::new();
    if let (Some(&first), Some(&last)) = (per_second.keys().next(), per_second.keys().last()) {
        for a in first..=last {
            for b in a..=last {
                let count: usize = per_second.range(a..=b).map(|(_, c)| c).sum();
                // Events in whole seconds a..=b happened within less than
                // (b - a + 1) seconds.
                let allowed = burst as usize + rate as usize * (b - a + 1) as usize;
                if count > allowed {
                    violations.push(format!(
                        "{count} extractions in seconds {a}..={b}, budget {allowed}"
                    ));
                }
            }
        }
    }
    BudgetCheck {
        peak_per_second: per_second.values().copied().max().unwrap_or(0),
        violations,
    }
}

/// Unmounts every volume the storm mounted (the stack's Drop would too).
pub fn unmount_all(stack: &Stack) {
    crate::unmount_volumes(&stack.kubelet_dir());
}
