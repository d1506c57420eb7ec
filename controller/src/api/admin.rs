//! `kcred.v1.Admin`: what `kcredctl` calls. Every call is authenticated;
//! auditors may read, operators may also rotate and revoke. Every admin
//! action is audited, and a change is refused when its record cannot be
//! written.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kcred_audit::{self as audit, Action, Actor, AuditEvent, AuditFilter, CredentialKind};
use kcred_proto::kcred::v1::admin_server::Admin;
use kcred_proto::kcred::v1::volume_update::Action as UpdateAction;
use kcred_proto::kcred::v1::*;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::auth::AdminRole;
use crate::gate::Lane;
use crate::issued::{Listing, Revoker, VolumeRecord};
use crate::names::{self, ServicePrincipal};
use crate::reasons::{Reasoned, Refusal, status_of};
use crate::revocation_sync;
use crate::rotation;
use crate::state::ControllerState;
use crate::store::{StoreError, Table};

/// Serves operators and auditors.
pub struct AdminApi {
    state: Arc<ControllerState>,
}

impl AdminApi {
    /// Builds the service over the controller's state.
    pub fn new(state: Arc<ControllerState>) -> Self {
        AdminApi { state }
    }

    /// Authenticates the caller and checks its role; refusals are audited.
    async fn caller<T>(
        &self,
        request: &Request<T>,
        needs: AdminRole,
        what: &str,
    ) -> Result<(String, AdminRole), Status> {
        let peer = request.remote_addr();
        let refuse = |who: String, refusal: Refusal| async move {
            self.state.count_refusal(refusal.reason);
            let event = AuditEvent::new(Actor::Admin(who), Action::Deny)
                .with_subject(what)
                .denied(refusal.reason, format!("admin: {}", refusal.message));
            self.state.record_refusal(peer, event, refusal.reason).await;
            Status::from(refusal)
        };
        let (who, role) = match self.state.auth.admin(request).await {
            Ok(c) => {
                if let Err(refusal) = self.state.refuse_replayed(request).await {
                    return Err(refuse(c.0, refusal).await);
                }
                self.state.connections.authenticated(request.remote_addr());
                c
            }
            Err(r) => return Err(refuse(r.who, r.refusal).await),
        };
        if needs == AdminRole::Operator && role != AdminRole::Operator {
            let refusal = Refusal::new(
                Reason::RoleForbids,
                format!("{who} is an auditor and may not {what}"),
            );
            return Err(refuse(who, refusal).await);
        }
        Ok((who, role))
    }

    /// An operator's change, audited three times: the request (the change is
    /// refused if that record cannot be written), then its failure with the
    /// reason, or its outcome as `done` describes it.
    async fn audited_change<T, E: Reasoned>(
        &self,
        event: AuditEvent,
        requested: String,
        change: impl std::future::Future<Output = Result<T, E>>,
        done: impl FnOnce(&T, AuditEvent) -> AuditEvent,
    ) -> Result<T, Status> {
        self.audit(event.clone().with_reason(requested)).await?;
        match change.await {
            Ok(v) => {
                self.audit(done(&v, event)).await?;
                Ok(v)
            }
            Err(e) => {
                let failed = event.denied(e.reason(), format!("failed: {e}"));
                if let Err(a) = self.audit(failed).await {
                    tracing::error!(error = %a.message(), "cannot audit a failed change");
                }
                Err(status_of(&e))
            }
        }
    }

    /// Records an admin read (who looked at what): reads reveal where
    /// credentials are, so they are on record too, and refused unrecorded.
    async fn audit_read(&self, who: &str, what: &str, detail: String) -> Result<(), Status> {
        // Callers choose the filters: bounded, so a record always fits.
        let detail: String = detail.chars().take(512).collect();
        let event = AuditEvent::new(Actor::Admin(who.to_string()), Action::Admin)
            .with_subject(what)
            .with_reason(detail);
        self.audit(event).await
    }

    /// Records an admin action; the action is refused if it cannot be.
    async fn audit(&self, event: AuditEvent) -> Result<(), Status> {
        self.audit_all(vec![event]).await
    }

    /// Several events in one append, made durable together.
    async fn audit_all(&self, events: Vec<AuditEvent>) -> Result<(), Status> {
        self.state.record(events).await.map_err(|e| {
            status_of(&Refusal::new(
                e.reason(),
                format!("audit log unavailable: {e}"),
            ))
        })
    }
}

fn invalid(message: impl Into<String>) -> Status {
    Refusal::new(Reason::RequestInvalid, message).into()
}

/// The audit record of an operator's rotation or retirement of `subject`.
fn rotation_event(who: &str, kind: CredentialKind, subject: impl Into<String>) -> AuditEvent {
    AuditEvent::new(Actor::Admin(who.to_string()), Action::Rotate)
        .with_kind(kind)
        .with_subject(subject)
}

fn to_proto(v: &VolumeRecord) -> IssuedVolume {
    IssuedVolume {
        volume_id: v.volume_id.clone(),
        node: v.node.clone(),
        namespace: v.namespace.clone(),
        pod: v.pod.clone(),
        keytabs: v.keytabs.iter().cloned().collect(),
        ticket: v.ticket.clone().unwrap_or_default(),
        certs: v.certs.iter().cloned().collect(),
        keys: v.keys.iter().cloned().collect(),
        issued_unix: v.issued_unix,
        generation: v.generation.clone(),
        revoked: v.revoked,
        versions: v.versions.iter().map(|(k, n)| (k.clone(), *n)).collect(),
    }
}

/// Longest an admin call may wait for nodes (one hour).
const MAX_WAIT_SECS: u64 = 3600;
/// Longest grace period of a rotation (one year).
const MAX_GRACE_SECS: u64 = 365 * 86_400;

type ProgressStream = Pin<Box<dyn Stream<Item = Result<RotationProgress, Status>> + Send>>;

/// Of the volumes in `holders` still mounted, how many hold `version` of
/// `subject`, and how many there are. Only mounted volumes count: a
/// record outlives its mount until its pod is gone, and an unmounted
/// volume never fetches the new version. A record that cannot be read
/// fails the count (it is not counted as gone).
fn delivered(
    state: &ControllerState,
    holders: &[String],
    subject: &str,
    version: u32,
) -> Result<(u32, u32), StoreError> {
    let mut live = Vec::new();
    for id in holders {
        if let Some(v) = state.issued.get(id)?
            && state.held.is_live(&v.node, &v.volume_id, v.issued_unix)
        {
            live.push(v);
        }
    }
    let updated = live
        .iter()
        .filter(|v| v.versions.get(subject).is_some_and(|&n| n >= version))
        .count();
    Ok((updated as u32, live.len() as u32))
}

/// Streams "N of M volumes updated" until every holder has `version` of
/// `subject`, or `wait` ends, or the caller hangs up.
fn progress(
    state: Arc<ControllerState>,
    subject: String,
    version: u32,
    holders: Vec<String>,
    wait: Duration,
) -> ProgressStream {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let holders = Arc::new(holders);
    let of = subject.clone();
    let count = move || {
        // With a shared store, one read through to etcd per holder.
        let (st, ids, subj) = (Arc::clone(&state), Arc::clone(&holders), of.clone());
        async move {
            let store = Arc::clone(&st.store);
            match store
                .reading(move || delivered(&st, &ids, &subj, version))
                .await
            {
                Ok(Ok(counts)) => Ok(counts),
                Ok(Err(e)) => Err(status_of(&e)),
                Err(e) => Err(Status::unavailable(e.to_string())),
            }
        }
    };
    let target = Target {
        subject,
        version,
        deadline: Instant::now() + wait,
    };
    tokio::spawn(report_progress(tx, target, count));
    Box::pin(ReceiverStream::new(rx))
}

/// What a rotation's progress is waited for.
struct Target {
    subject: String,
    version: u32,
    deadline: Instant,
}

/// How often a rotation's progress is counted again.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// Counts the volumes holding the target version every
/// [`PROGRESS_EVERY`] and sends each new count, until all have it, the
/// deadline passes, a count fails or the caller hangs up: a `--wait` the
/// operator gave up on stops counting (each count reads every holder's
/// record, and one under way is dropped) instead of counting until its
/// deadline.
async fn report_progress<F, Fut>(
    tx: tokio::sync::mpsc::Sender<Result<RotationProgress, Status>>,
    target: Target,
    mut count: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(u32, u32), Status>>,
{
    let Target {
        subject,
        version,
        deadline,
    } = target;
    let mut last = (u32::MAX, u32::MAX);
    loop {
        let counted = tokio::select! {
            () = tx.closed() => return,
            counted = count() => counted,
        };
        let (updated, total) = match counted {
            Ok(counts) => counts,
            Err(status) => {
                let _ = tx.send(Err(status)).await;
                return;
            }
        };
        let done = updated == total;
        let timed_out = Instant::now() >= deadline;
        if (updated, total) != last || done || timed_out {
            last = (updated, total);
            let message = if done {
                format!("{subject}: version {version} delivered to all {total} volumes")
            } else if timed_out {
                format!(
                    "{subject}: {updated} of {total} volumes have version {version}; stopped waiting"
                )
            } else {
                format!("{subject}: {updated} of {total} volumes updated")
            };
            let msg = RotationProgress {
                message,
                version,
                updated,
                total,
                done: done || timed_out,
            };
            if tx.send(Ok(msg)).await.is_err() || done || timed_out {
                return;
            }
        }
        tokio::select! {
            () = tx.closed() => return,
            () = tokio::time::sleep(PROGRESS_EVERY) => {}
        }
    }
}

#[tonic::async_trait]
impl Admin for AdminApi {
    type RotateKeytabStream = ProgressStream;
    type RotateKeyStream = ProgressStream;
    type AuditExportStream = Pin<Box<dyn Stream<Item = Result<AuditLine, Status>> + Send>>;

    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let (who, role) = self
            .caller(&request, AdminRole::Auditor, "read status")
            .await?;
        self.audit_read(&who, "status", "read the controller's status".into())
            .await?;
        let st = &self.state;
        let held = st.issued.count_by_node();
        let nodes = st
            .leases
            .all()
            .into_iter()
            .map(|(name, state, last)| NodeStatus {
                volumes: held.get(&name).copied().unwrap_or(0) as u32,
                name,
                state: state.as_str().into(),
                last_heartbeat_unix: last,
            })
            .collect();
        // The controller's own realm's lanes by their names, further
        // realms' as `lane@REALM`.
        let gate = st
            .backends
            .iter()
            .enumerate()
            .flat_map(|(i, (realm, b))| {
                [Lane::Kadmin, Lane::Kdc].into_iter().map(move |lane| {
                    let (open, queued, remaining) = b.gate.lane_status(lane);
                    GateStatus {
                        lane: if i == 0 {
                            lane.as_str().into()
                        } else {
                            format!("{}@{realm}", lane.as_str())
                        },
                        breaker_open: open,
                        queued: queued as u32,
                        budget_remaining: remaining,
                    }
                })
            })
            .collect();
        let count = |t| st.store.count(t).unwrap_or(0);
        Ok(Response::new(StatusResponse {
            nodes,
            gate,
            keytabs: count(Table::Keytabs),
            tickets: count(Table::Tickets),
            certs: count(Table::Certs),
            key_rings: count(Table::KeyRings),
            volumes: held.values().sum::<usize>() as u64,
            audit_records: st.audit.head().map(|h| h.seq).unwrap_or(0),
            caller: who,
            role: role.as_str().into(),
        }))
    }

    async fn list_credentials(
        &self,
        request: Request<ListCredentialsRequest>,
    ) -> Result<Response<ListCredentialsResponse>, Status> {
        let (who, _) = self
            .caller(&request, AdminRole::Auditor, "list credentials")
            .await?;
        let f = request.into_inner();
        self.audit_read(
            &who,
            "list",
            format!(
                "listed issued credentials (principal {:?}, namespace {:?}, node {:?})",
                f.principal, f.namespace, f.node
            ),
        )
        .await?;
        let principal = if f.principal.is_empty() {
            None
        } else {
            Some(
                ServicePrincipal::parse(&f.principal, &self.state.realm)
                    .map_err(|e| status_of(&e))?
                    .to_string(),
            )
        };
        // Made off the async workers: at 100,000 records, tens of
        // milliseconds.
        let state = Arc::clone(&self.state);
        let volumes = tokio::task::spawn_blocking(move || {
            fn some(s: &str) -> Option<&str> {
                (!s.is_empty()).then_some(s)
            }
            let wanted = Listing {
                principal: principal.as_deref(),
                namespace: some(&f.namespace),
                node: some(&f.node),
            };
            state.issued.listing(&wanted).iter().map(to_proto).collect()
        })
        .await
        .map_err(|e| Status::internal(format!("listing the volumes failed: {e}")))?;
        Ok(Response::new(ListCredentialsResponse { volumes }))
    }

    async fn rotate_keytab(
        &self,
        request: Request<RotateKeytabRequest>,
    ) -> Result<Response<Self::RotateKeytabStream>, Status> {
        let (who, _) = self
            .caller(&request, AdminRole::Operator, "rotate keytabs")
            .await?;
        let req = request.into_inner();
        let principal = ServicePrincipal::parse(&req.principal, &self.state.realm)
            .map_err(|e| status_of(&e))?;
        if req.grace_secs > MAX_GRACE_SECS || req.wait_secs > MAX_WAIT_SECS {
            return Err(invalid(format!(
                "grace_secs is at most {MAX_GRACE_SECS} and wait_secs at most {MAX_WAIT_SECS}"
            )));
        }
        let st = &self.state;
        // kcred's own identities and node host keys are never rotated by
        // hand: rotating the controller's would lock every node out.
        let is_node = |h: &str| st.is_node(h);
        if let Err(refusal) = st.reserved.check_principal(&principal, &is_node) {
            st.count_refusal(refusal.reason);
            let _ = self
                .audit(
                    rotation_event(&who, CredentialKind::Keytab, principal.to_string())
                        .denied(refusal.reason, refusal.message.clone()),
                )
                .await;
            return Err(refusal.into());
        }
        let kvno = self
            .audited_change(
                rotation_event(&who, CredentialKind::Keytab, principal.to_string()),
                format!("requested; grace {} s", req.grace_secs),
                rotation::rotate_keytab(st, &principal, Duration::from_secs(req.grace_secs)),
                |kvno, e| {
                    e.with_kvno(*kvno)
                        .with_reason("new keys; previous kvno kept for the grace period")
                },
            )
            .await?;
        let holders = st
            .issued
            .holding_principal(&principal.to_string())
            .map_err(|e| status_of(&e))?
            .into_iter()
            .map(|v| v.volume_id)
            .collect();
        Ok(Response::new(progress(
            Arc::clone(&self.state),
            principal.to_string(),
            kvno,
            holders,
            Duration::from_secs(req.wait_secs),
        )))
    }

    async fn rotate_key(
        &self,
        request: Request<RotateKeyRequest>,
    ) -> Result<Response<Self::RotateKeyStream>, Status> {
        let (who, _) = self
            .caller(&request, AdminRole::Operator, "rotate keys")
            .await?;
        let req = request.into_inner();
        names::validate_key_id(&req.key_id).map_err(|e| status_of(&e))?;
        let st = &self.state;
        if req.wait_secs > MAX_WAIT_SECS {
            return Err(invalid(format!("wait_secs is at most {MAX_WAIT_SECS}")));
        }
        let version = self
            .audited_change(
                rotation_event(&who, CredentialKind::Key, req.key_id.clone()),
                "requested".into(),
                st.keys.rotate(&req.key_id),
                |version, e| {
                    e.with_key_version(*version)
                        .with_reason("new primary version; older versions kept for decryption")
                },
            )
            .await?;
        let holders = st
            .issued
            .holding_key(&req.key_id)
            .map_err(|e| status_of(&e))?;
        rotation::push_refresh(
            st,
            &holders,
            &format!("key {} rotated to version {version}", req.key_id),
        );
        Ok(Response::new(progress(
            Arc::clone(&self.state),
            req.key_id,
            version,
            holders.into_iter().map(|v| v.volume_id).collect(),
            Duration::from_secs(req.wait_secs),
        )))
    }

    async fn retire_key(
        &self,
        request: Request<RetireKeyRequest>,
    ) -> Result<Response<RetireKeyResponse>, Status> {
        let (who, _) = self
            .caller(&request, AdminRole::Operator, "retire keys")
            .await?;
        let req = request.into_inner();
        names::validate_key_id(&req.key_id).map_err(|e| status_of(&e))?;
        let st = &self.state;
        self.audit(
            rotation_event(&who, CredentialKind::Key, req.key_id.clone())
                .with_key_version(req.version)
                .with_reason("version retired: no longer delivered"),
        )
        .await?;
        st.keys
            .retire(&req.key_id, req.version)
            .await
            .map_err(|e| status_of(&e))?;
        let holders = st
            .issued
            .holding_key(&req.key_id)
            .map_err(|e| status_of(&e))?;
        rotation::push_refresh(
            st,
            &holders,
            &format!("key {} version {} retired", req.key_id, req.version),
        );
        Ok(Response::new(RetireKeyResponse {
            volumes: holders.len() as u32,
        }))
    }

    async fn revoke(
        &self,
        request: Request<RevokeRequest>,
    ) -> Result<Response<RevokeResponse>, Status> {
        let (who, _) = self.caller(&request, AdminRole::Operator, "revoke").await?;
        let req = request.into_inner();
        if req.reason.trim().is_empty() {
            return Err(invalid("a reason is required"));
        }
        let st = &self.state;
        let rec = st
            .issued
            .get(&req.volume_id)
            .map_err(|e| status_of(&e))?
            .ok_or_else(|| {
                Status::from(Refusal::new(
                    Reason::VolumeUnknown,
                    format!("no volume {}", req.volume_id),
                ))
            })?;
        // The pod's other volumes go with it (its pod gets nothing more):
        // each is audited before it is revoked. Listing them may read a
        // shared store's whole table: off the async workers.
        let (issued, named) = (st.issued.clone(), rec.clone());
        let known = tokio::task::spawn_blocking(move || issued.pod_records(&named))
            .await
            .map_err(|e| status_of(&Refusal::new(Reason::Internal, e.to_string())))?
            .map_err(|e| status_of(&e))?;
        let siblings: Vec<VolumeRecord> = known.iter().filter(|v| !v.revoked).cloned().collect();
        let event = |v: &VolumeRecord| {
            let reason = if v.volume_id == rec.volume_id {
                req.reason.clone()
            } else {
                revocation_sync::with_pod(&req.reason, &rec.volume_id)
            };
            AuditEvent::new(Actor::Admin(who.clone()), Action::Revoke)
                .with_subject(v.volume_id.clone())
                .with_place(&v.node, &v.namespace, &v.pod)
                .with_reason(reason)
        };
        self.audit_all(std::iter::once(&rec).chain(&siblings).map(event).collect())
            .await?;
        let (issued, named) = (st.issued.clone(), rec.clone());
        let by = Revoker {
            admin: who.clone(),
            reason: req.reason.clone(),
        };
        let (revocation, written) =
            tokio::task::spawn_blocking(move || issued.revoke(&named, &known, &by))
                .await
                .map_err(|e| status_of(&Refusal::new(Reason::Internal, e.to_string())))?;
        // A volume of the pod revoked now that nobody audited (recorded since
        // the listing above, or revoked here by a revocation taken in from
        // the store) is audited now, as the pod's entry's revoker, then
        // written revoked; if this fails, or the revocation sync holds it
        // for its own audit, the sync does it.
        let (issued, uid) = (st.issued.clone(), rec.pod_uid.clone());
        let late_audit = match tokio::task::spawn_blocking(move || {
            issued.unaudited_revocations(Some(&uid))
        })
        .await
        {
            Ok(Ok(late)) => revocation_sync::audit_late(st, &late)
                .await
                .map_err(|e| e.reason()),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot look for unaudited volumes of the pod; the revocation sync will");
                Err(e.reason())
            }
            Err(e) => {
                tracing::error!(error = %e, "looking for unaudited volumes of the pod failed");
                Err(Reason::Internal)
            }
        };
        // Every volume of the pod is wiped, also one revoked before (a node
        // that missed the first push, a retry after a failed store write).
        st.updates
            .send_by_node(UpdateAction::Wipe, &revocation.records, &req.reason);
        written.map_err(|e| {
            status_of(&Refusal::new(
                e.reason(),
                format!("revocation audited but not stored: {e}"),
            ))
        })?;
        if let Err(reason) = late_audit {
            return Err(status_of(&Refusal::new(
                reason,
                "revoked and wiped, but a volume recorded meanwhile is not audited yet \
                 (the revocation sync retries it; the controller's log says why)",
            )));
        }
        Ok(Response::new(RevokeResponse {
            volume_ids: revocation.newly,
            node: rec.node,
        }))
    }

    async fn audit_export(
        &self,
        request: Request<AuditQuery>,
    ) -> Result<Response<Self::AuditExportStream>, Status> {
        let (who, _) = self
            .caller(&request, AdminRole::Auditor, "read the audit")
            .await?;
        let q = request.into_inner();
        self.audit_read(&who, "audit export", format!("exported the audit ({q:?})"))
            .await?;
        let opt = |s: String| if s.is_empty() { None } else { Some(s) };
        let filter = AuditFilter {
            subject: opt(q.subject),
            namespace: opt(q.namespace),
            node: opt(q.node),
            since_unix_ms: (q.since_unix_ms != 0).then_some(q.since_unix_ms),
            until_unix_ms: (q.until_unix_ms != 0).then_some(q.until_unix_ms),
            action: if q.action.is_empty() {
                None
            } else {
                Some(
                    q.action
                        .parse::<Action>()
                        .map_err(|_| invalid(format!("unknown action {:?}", q.action)))?,
                )
            },
        };
        let path = self.state.audit.path().to_path_buf();
        let (lines, _reading) = super::audit_export::lines(path, filter);
        Ok(Response::new(Box::pin(lines)))
    }

    async fn audit_head(
        &self,
        request: Request<AuditHeadRequest>,
    ) -> Result<Response<AuditHeadResponse>, Status> {
        self.caller(&request, AdminRole::Auditor, "read the audit")
            .await?;
        // The head kept in the store, not the one read from the log: a log
        // cut short (and reopened) must not vouch for itself.
        let head: Option<audit::AuditHead> = self
            .state
            .store
            .get(
                Table::Authority,
                &crate::audit_head::head_record(self.state.audit.signer().key_id()),
            )
            .map_err(|e| status_of(&e))?
            .map(|r| r.meta)
            .or_else(|| self.state.audit.head());
        Ok(Response::new(AuditHeadResponse {
            seq: head.as_ref().map(|h| h.seq).unwrap_or(0),
            hash: head.map(|h| h.hash).unwrap_or_default(),
            public_key_hex: self.state.audit.signer().public_key_hex(),
        }))
    }

    async fn audit_heads(
        &self,
        request: Request<AuditHeadsRequest>,
    ) -> Result<Response<AuditHeadsResponse>, Status> {
        let (who, _) = self
            .caller(&request, AdminRole::Auditor, "read the audit")
            .await?;
        self.audit_read(
            &who,
            "audit heads",
            "listed the stored audit chain heads".to_string(),
        )
        .await?;
        let heads = crate::audit_head::stored_heads(&self.state.store)
            .map_err(|e| status_of(&e))?
            .into_iter()
            .map(|(key_id, h)| StoredAuditHead {
                key_id,
                seq: h.seq,
                hash: h.hash,
            })
            .collect();
        Ok(Response::new(AuditHeadsResponse { heads }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    use super::*;

    /// A caller that hangs up ends the counting at once, not at its
    /// deadline an hour away, though the count never changes again.
    #[tokio::test]
    async fn progress_stops_counting_when_the_caller_hangs_up() {
        let counts = Arc::new(AtomicUsize::new(0));
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let target = Target {
            subject: "HTTP/web.example.com@EXAMPLE.COM".into(),
            version: 2,
            deadline: Instant::now() + Duration::from_secs(3600),
        };
        let counted = Arc::clone(&counts);
        let counting = tokio::spawn(report_progress(tx, target, move || {
            counted.fetch_add(1, SeqCst);
            async { Ok((0, 1)) }
        }));
        let first = rx.recv().await.expect("a first count").expect("counted");
        assert_eq!((first.updated, first.total, first.done), (0, 1, false));
        drop(rx);
        tokio::time::timeout(Duration::from_secs(5), counting)
            .await
            .expect("the counting stops once the caller hung up")
            .expect("task");
        assert!(counts.load(SeqCst) <= 2, "{} counts", counts.load(SeqCst));
    }

    /// A caller that hangs up while a count is under way (a slow store)
    /// ends the counting then, not when the count finishes.
    #[tokio::test]
    async fn progress_drops_a_count_under_way_when_the_caller_hangs_up() {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let target = Target {
            subject: "HTTP/web.example.com@EXAMPLE.COM".into(),
            version: 2,
            deadline: Instant::now() + Duration::from_secs(3600),
        };
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let mut started_tx = Some(started_tx);
        let counting = tokio::spawn(report_progress(tx, target, move || {
            if let Some(started) = started_tx.take() {
                let _ = started.send(());
            }
            async {
                // A count that takes an hour.
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok((0, 1))
            }
        }));
        started_rx.await.expect("the count started");
        drop(rx);
        tokio::time::timeout(Duration::from_secs(5), counting)
            .await
            .expect("the counting stops once the caller hung up")
            .expect("task");
    }
}
