//! Refusals of callers that proved no identity, audited in aggregate.
//!
//! Every audit record is signed and `fsync`ed, and a full disk stops all
//! issuing (the log fails closed). If each refused anonymous call were a
//! record, anyone able to reach the port could fill the disk and so stop
//! kcred. So for calls refused before the caller proved any identity, the
//! first refusal of a source and reason in a window is recorded as it is,
//! and the rest of that window becomes one record with a count ("N more
//! refusals from 192.0.2.7 in 60 s"). Refusals of authenticated callers (a
//! node speaking for another, a principal without a role) stay individual:
//! they name someone.
//!
//! Growth is bounded: at most `max_sources` sources are told apart per
//! window (IPv6 sources by /64, as one host can hold a whole /64); beyond
//! that, refusals share one "other sources" bucket. Each window thus
//! produces at most two records per tracked source and reason.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kcred_audit::{Action, Actor, AuditEvent};
use kcred_proto::kcred::v1::Reason;

use crate::locks::lock;

/// Where anonymous refusals come from, as told apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// An IPv4 address, or an IPv6 /64.
    Net(IpAddr),
    /// Unknown, or beyond the sources told apart.
    Other,
}

impl Source {
    fn of(peer: Option<SocketAddr>) -> Source {
        match peer.map(|p| p.ip()) {
            Some(IpAddr::V4(v4)) => Source::Net(IpAddr::V4(v4)),
            Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::Net(IpAddr::V4(v4)),
                None => {
                    let bits = u128::from(v6) & !((1u128 << 64) - 1);
                    Source::Net(IpAddr::V6(bits.into()))
                }
            },
            None => Source::Other,
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Net(IpAddr::V6(a)) => write!(f, "{a}/64"),
            Source::Net(a) => write!(f, "{a}"),
            Source::Other => f.write_str("other sources"),
        }
    }
}

struct Bucket {
    since: Instant,
    /// Refusals after the first, in this window.
    more: u64,
}

/// Counts anonymous refusals per source and reason and window.
pub struct Denials {
    window: Duration,
    max_sources: usize,
    buckets: Mutex<HashMap<(Source, Reason), Bucket>>,
}

impl Denials {
    /// Windows of `window`, telling at most `max_sources` sources apart.
    pub fn new(window: Duration, max_sources: usize) -> Self {
        Denials {
            window,
            max_sources,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Notes an anonymous refusal from `peer`; true when it is the first of
    /// its source and reason in the window and must be recorded as it is.
    pub fn first_in_window(&self, peer: Option<SocketAddr>, reason: Reason) -> bool {
        let mut buckets = lock(&self.buckets);
        let mut source = Source::of(peer);
        if !buckets.contains_key(&(source, reason)) && buckets.len() >= self.max_sources {
            source = Source::Other;
        }
        match buckets.get_mut(&(source, reason)) {
            Some(b) => {
                b.more += 1;
                false
            }
            None => {
                buckets.insert(
                    (source, reason),
                    Bucket {
                        since: Instant::now(),
                        more: 0,
                    },
                );
                true
            }
        }
    }

    /// The summaries of windows that ended (all of them with `all`), one
    /// record per source and reason that had more than its first refusal.
    pub fn summaries(&self, all: bool) -> Vec<AuditEvent> {
        let mut buckets = lock(&self.buckets);
        let mut out = Vec::new();
        buckets.retain(|(source, reason), b| {
            let ended = all || b.since.elapsed() >= self.window;
            if ended && b.more > 0 {
                let secs = b.since.elapsed().as_secs().max(1);
                out.push(
                    AuditEvent::new(
                        Actor::Caller("unauthenticated".into()),
                        Action::Deny,
                    )
                    .denied(
                        *reason,
                        format!(
                            "{} more refusals from {source} in {secs} s (the first was recorded on its own)",
                            b.more
                        ),
                    ),
                );
            }
            !ended
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn one_record_then_one_summary_per_source_and_reason() {
        let d = Denials::new(Duration::from_secs(60), 100);
        assert!(d.first_in_window(peer("192.0.2.7:1000"), Reason::Unauthenticated));
        for port in 0..5000u16 {
            let p = peer(&format!("192.0.2.7:{port}"));
            assert!(!d.first_in_window(p, Reason::Unauthenticated));
        }
        assert!(d.first_in_window(peer("192.0.2.8:1"), Reason::Unauthenticated));
        assert!(d.summaries(false).is_empty(), "the window has not ended");
        let s = d.summaries(true);
        assert_eq!(s.len(), 1, "the quiet source needs no summary");
        assert!(
            s[0].detail.contains("5000 more refusals from 192.0.2.7"),
            "{}",
            s[0].detail
        );
        assert!(
            d.first_in_window(peer("192.0.2.7:1"), Reason::Unauthenticated),
            "new window"
        );
    }

    #[test]
    fn sources_beyond_the_bound_share_one_bucket() {
        let d = Denials::new(Duration::from_secs(60), 10);
        let firsts = (0..1000u32)
            .filter(|i| {
                let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i);
                d.first_in_window(Some(SocketAddr::new(ip.into(), 1)), Reason::Unauthenticated)
            })
            .count();
        assert_eq!(firsts, 11, "ten sources and the shared bucket");
        assert_eq!(d.summaries(true).len(), 1);
    }

    #[test]
    fn an_ipv6_host_cannot_escape_by_changing_its_address() {
        let d = Denials::new(Duration::from_secs(60), 100);
        assert!(d.first_in_window(peer("[2001:db8::1]:1"), Reason::Unauthenticated));
        assert!(!d.first_in_window(peer("[2001:db8::ffff:1]:1"), Reason::Unauthenticated));
        assert!(d.first_in_window(peer("[2001:db8:0:1::1]:1"), Reason::Unauthenticated));
    }
}
