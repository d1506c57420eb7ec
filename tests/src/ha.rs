//! What the high-availability tests read from running controllers: their
//! `/metrics`, the audit records of every controller's chain, and a fetch
//! as node-a.

use std::path::Path;

use crate::audit::{Action, AuditRecord, audit_records};

/// `GET /metrics` from a controller's metrics port (empty while it does
/// not answer: a killed controller).
pub async fn scrape(metrics_port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", metrics_port)).await else {
        return String::new();
    };
    if s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .is_err()
    {
        return String::new();
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body).await;
    body
}

/// The sum of a metric's samples whose line starts with `name` and
/// contains every one of `labels`.
pub fn metric(body: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let values: Vec<f64> = body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.split([' ', '{']).next() == Some(name) && labels.iter().all(|x| l.contains(x))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// `kcred_leader` of the controller on `metrics_port` (None: no answer).
pub async fn leader_gauge(metrics_port: u16) -> Option<f64> {
    metric(&scrape(metrics_port).await, "kcred_leader", &[])
}

/// The records of every audit log in `logs` with `action`.
pub fn records_with(logs: &[&Path], action: Action) -> Vec<AuditRecord> {
    logs.iter()
        .flat_map(|p| audit_records(p))
        .filter(|r| r.action == action)
        .collect()
}

/// Seconds since midnight of a kadmind log line (`Nov 26 05:20:26 ...`).
fn log_second(line: &str) -> Option<u32> {
    let t = line.split_whitespace().nth(2)?;
    let mut parts = t.split(':').map(|p| p.parse::<u32>().ok());
    Some(parts.next()?? * 3600 + parts.next()?? * 60 + parts.next()??)
}

/// What kadmind's own log says about key extractions (`lines` from
/// `Realm::kadmind_extractions`): how many per principal of `principals`,
/// and every window of whole seconds in which more started than
/// `burst + rate * seconds` allows.
pub fn kadmind_budget(
    lines: &[String],
    principals: &[String],
    rate: u32,
    burst: u32,
) -> (std::collections::BTreeMap<String, usize>, Vec<String>) {
    use std::collections::BTreeMap;
    let mut extractions = BTreeMap::new();
    let mut per_second: BTreeMap<u32, usize> = BTreeMap::new();
    for line in lines {
        if let Some(p) = principals
            .iter()
            .find(|p| line.contains(&format!("keys, {p}@")))
        {
            *extractions.entry(p.clone()).or_insert(0) += 1;
        }
        if let Some(s) = log_second(line) {
            *per_second.entry(s).or_insert(0) += 1;
        }
    }
    let mut violations = Vec::new();
    if let (Some(&first), Some(&last)) = (per_second.keys().next(), per_second.keys().last()) {
        for a in first..=last {
            for b in a..=last {
                let count: usize = per_second.range(a..=b).map(|(_, c)| c).sum();
                let allowed = burst as usize + rate as usize * (b - a + 1) as usize;
                if count > allowed {
                    violations.push(format!(
                        "{count} extractions in seconds {a}..={b}, budget {allowed}"
                    ));
                }
            }
        }
    }
    (extractions, violations)
}

/// FetchBundle for `pod`'s volume `kcred` as node-a, with `token` (node-a's
/// Kerberos token), over `channel` to one controller.
pub async fn fetch_as_node_a(
    channel: tonic::transport::Channel,
    token: String,
    pod: &crate::TestPod,
) -> Result<kcred_proto::kcred::v1::Bundle, tonic::Status> {
    let volume_id = crate::Kubelet::volume_id(pod, "kcred");
    fetch_volume_as_node_a(channel, token, pod, &volume_id, false).await
}

/// [`fetch_as_node_a`] for any volume id of `pod`, a renewal with `refresh`.
pub async fn fetch_volume_as_node_a(
    channel: tonic::transport::Channel,
    token: String,
    pod: &crate::TestPod,
    volume_id: &str,
    refresh: bool,
) -> Result<kcred_proto::kcred::v1::Bundle, tonic::Status> {
    use kcred_proto::kcred::v1::FetchBundleRequest;
    use kcred_proto::kcred::v1::node_credentials_client::NodeCredentialsClient;
    let mut req = tonic::Request::new(FetchBundleRequest {
        node_name: crate::procs::NODE_A.into(),
        pod: Some(pod.pod_ref()),
        volume_id: volume_id.into(),
        refresh,
        ..Default::default()
    });
    let token = token
        .parse()
        .map_err(|_| tonic::Status::invalid_argument("token is not metadata"))?;
    req.metadata_mut().insert("authorization", token);
    NodeCredentialsClient::new(channel)
        .fetch_bundle(req)
        .await
        .map(tonic::Response::into_inner)
}
