//! Prestashed tickets: a role account's TGT, delivered as a credential
//! cache, never its long-term key.
//!
//! One TGT per role account serves every pod that asks for it. It is kept
//! sealed in the store with its times, served as is until its refresh point
//! (2/3 of its life by default), then renewed with a TGS exchange (no
//! long-term key needed), or acquired anew with the role account's keytab
//! (extracted once, like any keytab) when it can no longer be renewed. All
//! KDC traffic passes the gate's KDC lane; concurrent requests share one
//! exchange. While the KDC is down, a ticket that has not yet expired is
//! still served.

use kcred_audit::timefmt::unix_secs;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::keytab::KeytabIssuer;
use super::{IssueError, read_stored, write_stored};
use crate::cluster::Cluster;
use crate::gate::single_flight::{Role, SingleFlight};
use crate::gate::{Lane, Priority};
use crate::kdc::{KdcClient, Ticket};
use crate::metrics::Metrics;
use crate::names::{Principal, UserPrincipal};
use crate::realms::Backends;
use crate::store::{Record, Store, Table};

const KIND: &str = "ticket";

/// What the store shows about a ticket without decrypting it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TicketMeta {
    /// Start of validity, seconds since the epoch.
    pub start_unix: i64,
    /// End of validity.
    pub end_unix: i64,
    /// Renewable until.
    pub renew_till_unix: i64,
}

/// Issues prestashed TGTs for role accounts.
pub struct TicketIssuer {
    refresh_fraction: f64,
    /// `kinit` configured for each served realm: a ticket comes from its
    /// principal's realm's KDC.
    kdcs: std::collections::BTreeMap<String, KdcClient>,
    keytabs: Arc<KeytabIssuer>,
    store: Arc<Store>,
    /// Each realm's gate (its KDC lane).
    backends: Arc<Backends>,
    metrics: Arc<Metrics>,
    flight: SingleFlight<String, Ticket, IssueError>,
    /// Other controllers refreshing the same ticket wait for this one.
    cluster: Arc<Cluster>,
}

/// A ticket and when its holder should come back for a fresher one.
#[derive(Debug, Clone)]
pub struct IssuedTicket {
    /// The ticket.
    pub ticket: Ticket,
    /// When to refresh it.
    pub refresh_at: SystemTime,
}

impl TicketIssuer {
    /// Builds the issuer over each realm's `kinit` (`kdcs`, by realm);
    /// `refresh_fraction` of a ticket's life passes before it is renewed.
    pub fn new(
        refresh_fraction: f64,
        kdcs: std::collections::BTreeMap<String, KdcClient>,
        keytabs: Arc<KeytabIssuer>,
        store: Arc<Store>,
        backends: Arc<Backends>,
        metrics: Arc<Metrics>,
    ) -> Self {
        TicketIssuer {
            refresh_fraction,
            kdcs,
            keytabs,
            store,
            backends,
            metrics,
            flight: SingleFlight::default(),
            cluster: Cluster::solo(),
        }
    }

    /// Refreshes each ticket once for every controller sharing `cluster`.
    pub fn with_cluster(mut self, cluster: Arc<Cluster>) -> Self {
        self.cluster = cluster;
        self
    }

    async fn stored(&self, name: &str) -> Result<Option<Ticket>, IssueError> {
        read_stored(
            &self.store,
            Table::Tickets,
            name,
            |r: Record<TicketMeta>| Ticket::parse(r.secret),
        )
        .await
    }

    fn issued(&self, ticket: Ticket) -> IssuedTicket {
        IssuedTicket {
            refresh_at: ticket.refresh_at(self.refresh_fraction),
            ticket,
        }
    }

    /// The current TGT of role account `login`, whose principal is of
    /// `realm`.
    pub async fn ticket(
        &self,
        login: &str,
        realm: &str,
        priority: Priority,
    ) -> Result<IssuedTicket, IssueError> {
        let principal =
            UserPrincipal::new(login, realm).map_err(|e| IssueError::Unavailable(e.to_string()))?;
        let name = principal.to_string();
        if let Some(t) = self.stored(&name).await?
            && SystemTime::now() < t.refresh_at(self.refresh_fraction)
        {
            self.metrics.cache_hits.with_label_values(&[KIND]).inc();
            return Ok(self.issued(t));
        }
        let (result, role) = self
            .flight
            .run(name.clone(), || self.refresh(&principal, &name, priority))
            .await;
        if role == Role::Follower {
            self.metrics.coalesced.with_label_values(&[KIND]).inc();
        }
        result.map(|t| self.issued(t))
    }

    async fn refresh(
        &self,
        principal: &UserPrincipal,
        name: &str,
        priority: Priority,
    ) -> Result<Ticket, IssueError> {
        // Another controller may be refreshing it: its result, once
        // stored, is this one's.
        let _cluster_flight = self.cluster.lock(&format!("ticket/{name}")).await?;
        let now = SystemTime::now();
        let current = self.stored(name).await?;
        if let Some(t) = &current
            && now < t.refresh_at(self.refresh_fraction)
        {
            self.metrics.cache_hits.with_label_values(&[KIND]).inc();
            return Ok(t.clone());
        }
        self.metrics.cache_misses.with_label_values(&[KIND]).inc();
        let (gate, kdc) = self.realm_of(principal)?;
        let fresh = match &current {
            Some(t) if t.renewable_at(now) && t.renewal_extends() => {
                match gate
                    .run(Lane::Kdc, priority, "renew_tgt", || kdc.renew(t))
                    .await
                {
                    Ok(renewed) => Ok(renewed),
                    Err(crate::gate::GateError::Failed(crate::kdc::TicketError::NotRenewable(
                        _,
                    ))) => self.acquire(principal, priority).await,
                    Err(e) => Err(e.into()),
                }
            }
            _ => self.acquire(principal, priority).await,
        };
        let ticket = match fresh {
            Ok(t) => t,
            Err(e) => {
                // A ticket that is still valid beats no ticket while the KDC
                // is away.
                if let Some(t) = current
                    && now + Duration::from_secs(30) < t.end
                {
                    tracing::warn!(principal = %name, error = %e, "KDC unavailable; serving the current ticket until it expires");
                    return Ok(t);
                }
                return Err(e);
            }
        };
        let meta = TicketMeta {
            start_unix: unix_secs(ticket.start),
            end_unix: unix_secs(ticket.end),
            renew_till_unix: unix_secs(ticket.renew_till),
        };
        let bytes = Zeroizing::new(ticket.ccache().to_vec());
        write_stored(&self.store, Table::Tickets, name, meta.clone(), bytes).await?;
        tracing::info!(principal = %name, end = meta.end_unix, renew_till = meta.renew_till_unix, "ticket issued");
        Ok(ticket)
    }

    async fn acquire(
        &self,
        principal: &UserPrincipal,
        priority: Priority,
    ) -> Result<Ticket, IssueError> {
        let keytab = self
            .keytabs
            .keytab(&Principal::User(principal.clone()), priority)
            .await?;
        let name = principal.to_string();
        let (gate, kdc) = self.realm_of(principal)?;
        Ok(gate
            .run(Lane::Kdc, priority, "acquire_tgt", || {
                kdc.acquire(&name, &keytab)
            })
            .await?)
    }

    /// The gate and `kinit` of the principal's realm.
    fn realm_of(
        &self,
        principal: &UserPrincipal,
    ) -> Result<(&crate::gate::KdcGate, &KdcClient), IssueError> {
        let gate = &self.backends.of(principal.realm())?.gate;
        let kdc = self.kdcs.get(principal.realm()).ok_or_else(|| {
            IssueError::Task(format!("no kinit configured for {}", principal.realm()))
        })?;
        Ok((gate, kdc))
    }
}
