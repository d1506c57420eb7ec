//! `FetchBundles`: many volumes of one node in one call (a rotation's
//! refreshes, renewals due together).
//!
//! Every volume is admitted, refused and audited exactly as `FetchBundle`
//! does it (see [`super::node`]); what is shared is only the work that
//! does not depend on the pod: each distinct credential set (role account,
//! credentials asked for, fsGroup) is assembled once, the batch's audit
//! records are written in one group (before anything leaves), and each
//! distinct bundle travels once in the reply.

use std::collections::{HashMap, HashSet};

use futures_util::future::join_all;
use kcred_proto::kcred::v1::volume_result::Outcome;
use kcred_proto::kcred::v1::{
    Bundle, FetchBundlesRequest, FetchBundlesResponse, PodRef, Reason, VolumeRefusal, VolumeResult,
};
use kcred_proto::limits;
use tonic::Status;
use zeroize::Zeroizing;

use super::node::{Ask, NodeApi, validate_volume};
use crate::admission::Grant;
use crate::annotations::CredentialRequest;
use crate::bundle::{self, Content};
use crate::gate::Priority;
use crate::issuers::IssueError;
use crate::reasons::{Reasoned, Refusal};

fn invalid(message: String) -> Refusal {
    Refusal::new(Reason::RequestInvalid, message)
}

/// A volume id as an error message may quote it: bounded and escaped.
fn quoted(volume_id: &str) -> String {
    let short: String = volume_id.chars().take(64).collect();
    format!("{short:?}")
}

/// The batch's shape: 1 to [`limits::MAX_BATCH`] volumes, each valid and
/// at most once (its node name was checked before the caller was
/// authenticated). The refusal names the offending item.
fn validate(req: &FetchBundlesRequest) -> Result<Vec<&PodRef>, Refusal> {
    let n = req.volumes.len();
    if n == 0 {
        return Err(invalid("volumes: at least one volume is required".into()));
    }
    if let Some(why) = limits::batch_too_large(n) {
        return Err(invalid(why));
    }
    let mut seen = HashSet::with_capacity(n);
    let mut pods = Vec::with_capacity(n);
    for (i, v) in req.volumes.iter().enumerate() {
        let pod = validate_volume(v.pod.as_ref(), &v.volume_id).map_err(|e| {
            invalid(format!(
                "volumes[{i}] (volume_id {}): {e}",
                quoted(&v.volume_id)
            ))
        })?;
        if !seen.insert(v.volume_id.as_str()) {
            return Err(invalid(format!(
                "volumes[{i}]: volume_id {} appears more than once",
                quoted(&v.volume_id)
            )));
        }
        pods.push(pod);
    }
    Ok(pods)
}

/// What makes two grants' bundles the same: what [`bundle::content`]
/// reads.
#[derive(PartialEq)]
struct Key<'a> {
    login: &'a str,
    uid: u32,
    gid: u32,
    wants: &'a CredentialRequest,
    fs_group: Option<u32>,
}

impl<'a> Key<'a> {
    fn of(g: &'a Grant) -> Self {
        Key {
            login: &g.role.login,
            uid: g.role.uid,
            gid: g.role.gid,
            wants: &g.wants,
            fs_group: g.pod.fs_group,
        }
    }
}

/// One volume's answer while the batch is worked out.
enum Answer {
    /// Its bundle: this group's content.
    Issued(usize),
    Refused(Refusal),
}

/// Serves a batch whose caller is authenticated as `req.node_name`.
pub(super) async fn fetch(
    api: &NodeApi,
    mut req: FetchBundlesRequest,
) -> Result<FetchBundlesResponse, Status> {
    // Credentials: out of the request (logged on errors) at once, wiped
    // when done.
    let tokens: Vec<Zeroizing<String>> = req
        .volumes
        .iter_mut()
        .map(|v| Zeroizing::new(std::mem::take(&mut v.pod_token)))
        .collect();
    let pods = validate(&req)?;
    let st = &api.state;
    let node = req.node_name.as_str();
    let asks: Vec<Ask> = req
        .volumes
        .iter()
        .zip(pods)
        .map(|(v, pod)| Ask {
            node,
            pod,
            volume_id: &v.volume_id,
            refresh: v.refresh,
        })
        .collect();

    // Admission, each volume on its own (pod-token reviews run together).
    let decisions = join_all(asks.iter().zip(&tokens).map(|(a, t)| api.admit(a, t))).await;
    let mut answers: Vec<Option<Answer>> = Vec::with_capacity(asks.len());
    // (volume index, grant)
    let mut granted: Vec<(usize, Grant)> = Vec::new();
    let mut denials = Vec::new();
    for (i, (ask, decision)) in asks.iter().zip(decisions).enumerate() {
        answers.push(match decision {
            Ok(Ok(grant)) => {
                granted.push((i, grant));
                None
            }
            Ok(Err(refusal)) => {
                denials.push(api.denial(node, ask.pod, &refusal));
                Some(Answer::Refused(refusal))
            }
            Err(failed) => Some(Answer::Refused(failed)),
        });
    }
    // Grants (indices into `granted`) by distinct credential set.
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (k, (_, g)) in granted.iter().enumerate() {
        let key = Key::of(g);
        match groups
            .iter_mut()
            .find(|members| Key::of(&granted[members[0]].1) == key)
        {
            Some(members) => members.push(k),
            None => groups.push(vec![k]),
        }
    }

    // Each distinct credential set once; a starting pod among its volumes
    // makes it urgent.
    let contents: Vec<Result<Content, IssueError>> = join_all(groups.iter().map(|members| {
        let g = &granted[members[0]].1;
        let priority = members
            .iter()
            .map(|&k| granted[k].1.priority)
            .max()
            .unwrap_or(Priority::Background);
        bundle::content(st, node, &g.role, &g.wants, g.pod.fs_group, priority)
    }))
    .await;

    // Every issue is recorded per volume, the batch's records in one group.
    let mut events = Vec::new();
    let mut pending = Vec::new();
    for (gi, (members, content)) in groups.iter().zip(&contents).enumerate() {
        for &k in members {
            let (m, g) = &granted[k];
            match content {
                Ok(c) => {
                    let issued = c.events_for(node, &g.pod, g.priority);
                    pending.push((k, gi, bundle::versions(&issued)));
                    events.extend(issued);
                }
                Err(e) => {
                    st.count_refusal(e.reason());
                    answers[*m] = Some(Answer::Refused(Refusal::from_error(e)));
                }
            }
        }
    }
    if let Err(e) = st.record(std::mem::take(&mut denials)).await {
        tracing::error!(error = %e, "cannot audit denials");
    }
    // Fail closed: no record, no credential.
    if let Err(e) = st.record(events).await {
        tracing::error!(error = %e, "audit log unavailable; nothing issued");
        for (k, _, _) in pending.drain(..) {
            st.count_refusal(e.reason());
            answers[granted[k].0] = Some(Answer::Refused(Refusal::new(
                e.reason(),
                format!("audit log unavailable, nothing issued: {e}"),
            )));
        }
    }
    for (k, gi, versions) in pending {
        let (m, g) = &granted[k];
        let Some(Ok(c)) = contents.get(gi) else {
            continue;
        };
        answers[*m] = Some(
            match api.remember_issue(&asks[*m], g, &c.bundle, versions) {
                Ok(()) => Answer::Issued(gi),
                Err(refusal) => {
                    denials.push(api.denial(node, asks[*m].pod, &refusal));
                    Answer::Refused(refusal)
                }
            },
        );
    }
    if let Err(e) = st.record(denials).await {
        tracing::error!(error = %e, "cannot audit denials");
    }
    for (members, content) in groups.iter().zip(&contents) {
        if let Ok(c) = content {
            tracing::debug!(node, role = %granted[members[0]].1.role.login, volumes = members.len(),
                generation = %c.bundle.generation, refresh_after = c.bundle.refresh_after_unix,
                "issued bundles");
        }
    }
    Ok(reply(api, &asks, answers, contents))
}

/// The reply: each distinct bundle once, each volume's answer in the
/// request's order.
fn reply(
    api: &NodeApi,
    asks: &[Ask],
    answers: Vec<Option<Answer>>,
    contents: Vec<Result<Content, IssueError>>,
) -> FetchBundlesResponse {
    let mut bundles: Vec<Bundle> = Vec::new();
    let mut index_of: HashMap<(String, i64), u32> = HashMap::new();
    let mut slot_of_group: HashMap<usize, u32> = HashMap::new();
    let mut contents: Vec<Option<Content>> = contents.into_iter().map(Result::ok).collect();
    let mut volumes = Vec::with_capacity(asks.len());
    let (mut issued, mut refused) = (0u64, 0u64);
    for (ask, answer) in asks.iter().zip(answers) {
        let outcome = match answer {
            Some(Answer::Issued(gi)) => {
                let slot = match slot_of_group.get(&gi) {
                    Some(s) => Some(*s),
                    None => contents.get_mut(gi).and_then(Option::take).map(|c| {
                        let key = (c.bundle.generation.clone(), c.bundle.refresh_after_unix);
                        let s = *index_of.entry(key).or_insert_with(|| {
                            bundles.push(c.bundle);
                            (bundles.len() - 1) as u32
                        });
                        slot_of_group.insert(gi, s);
                        s
                    }),
                };
                match slot {
                    Some(s) => {
                        issued += 1;
                        Outcome::Bundle(s)
                    }
                    None => {
                        refused += 1;
                        refusal_of(Refusal::new(Reason::Internal, "a batch lost a bundle"))
                    }
                }
            }
            Some(Answer::Refused(r)) => {
                refused += 1;
                refusal_of(r)
            }
            None => {
                refused += 1;
                refusal_of(Refusal::new(
                    Reason::Internal,
                    "a batch volume got no answer",
                ))
            }
        };
        volumes.push(VolumeResult {
            volume_id: ask.volume_id.to_string(),
            outcome: Some(outcome),
        });
    }
    let m = &api.state.metrics;
    m.batch_volumes
        .with_label_values(&["issued"])
        .inc_by(issued);
    m.batch_volumes
        .with_label_values(&["refused"])
        .inc_by(refused);
    FetchBundlesResponse { bundles, volumes }
}

fn refusal_of(r: Refusal) -> Outcome {
    Outcome::Refused(VolumeRefusal {
        reason: r.reason as i32,
        message: r.message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kcred_proto::kcred::v1::VolumeRequest;
    use kcred_proto::limits::MAX_BATCH;

    fn volume(id: &str) -> VolumeRequest {
        VolumeRequest {
            pod: Some(PodRef {
                namespace: "web".into(),
                name: "web-0".into(),
                uid: "uid-web-0".into(),
                service_account: "default".into(),
            }),
            volume_id: id.into(),
            refresh: true,
            pod_token: String::new(),
        }
    }

    fn batch(volumes: Vec<VolumeRequest>) -> FetchBundlesRequest {
        FetchBundlesRequest {
            node_name: "node-a".into(),
            volumes,
        }
    }

    #[test]
    fn a_valid_batch_passes() {
        let req = batch((0..MAX_BATCH).map(|i| volume(&format!("v{i}"))).collect());
        assert_eq!(validate(&req).map(|p| p.len()), Ok(MAX_BATCH));
    }

    #[test]
    fn bad_batches_are_refused_naming_what_is_wrong() {
        let cases = [
            (batch(vec![]), "at least one volume"),
            (
                batch((0..=MAX_BATCH).map(|i| volume(&format!("v{i}"))).collect()),
                "257 volumes in one call, at most 256",
            ),
            (
                batch(vec![volume("v0"), volume("")]),
                "volumes[1] (volume_id \"\"): volume_id must be",
            ),
            (
                batch(vec![volume("v0"), volume("v1"), volume("v0")]),
                "volumes[2]: volume_id \"v0\" appears more than once",
            ),
            (
                batch(vec![VolumeRequest {
                    pod: None,
                    ..volume("v0")
                }]),
                "volumes[0] (volume_id \"v0\"): pod is required",
            ),
        ];
        for (req, expected) in cases {
            let refusal = validate(&req).expect_err(expected);
            assert_eq!(refusal.reason, Reason::RequestInvalid);
            assert!(
                refusal.message.contains(expected),
                "{expected}: {}",
                refusal.message
            );
        }
    }
}
