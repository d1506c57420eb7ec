//! A volume record as the in-memory index keeps it: names repeated across
//! records (node, namespace, principals, bundle generation) shared through
//! an [`Interner`], sets as boxed slices of shared names, no copy of the
//! volume id (the index's key). Under a third of a [`VolumeRecord`]'s
//! heap: what keeps 100,000 issued volumes under 2 KiB each.

use std::sync::Arc;

use super::VolumeRecord;
use crate::intern::Interner;

/// One record, kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct KeptVolume {
    pub(super) node: Arc<str>,
    pub(super) namespace: Arc<str>,
    pub(super) pod: Arc<str>,
    pub(super) pod_uid: Arc<str>,
    keytabs: Box<[Arc<str>]>,
    ticket: Option<Arc<str>>,
    certs: Box<[Arc<str>]>,
    pub(super) keys: Box<[Arc<str>]>,
    versions: Box<[(Arc<str>, u32)]>,
    issued_unix: i64,
    generation: Arc<str>,
    pub(super) revoked: bool,
}

fn shared<'a>(names: &mut Interner, set: impl IntoIterator<Item = &'a String>) -> Box<[Arc<str>]> {
    set.into_iter().map(|n| names.get(n)).collect()
}

impl KeptVolume {
    /// Whether its keytab holds `principal`.
    pub(super) fn holds_keytab(&self, principal: &str) -> bool {
        self.keytabs.iter().any(|p| &**p == principal)
    }

    /// Keeps `rec` (its volume id is the index's key).
    pub(super) fn keep(rec: &VolumeRecord, names: &mut Interner) -> KeptVolume {
        KeptVolume {
            node: names.get(&rec.node),
            namespace: names.get(&rec.namespace),
            // Pod names and UIDs are each pod's own: a plain shared copy
            // (a placement hands them out without copying).
            pod: Arc::from(rec.pod.as_str()),
            pod_uid: Arc::from(rec.pod_uid.as_str()),
            keytabs: shared(names, &rec.keytabs),
            ticket: rec.ticket.as_deref().map(|t| names.get(t)),
            certs: shared(names, &rec.certs),
            keys: shared(names, &rec.keys),
            versions: rec
                .versions
                .iter()
                .map(|(k, v)| (names.get(k), *v))
                .collect(),
            issued_unix: rec.issued_unix,
            generation: names.get(&rec.generation),
            revoked: rec.revoked,
        }
    }

    /// The record as the rest of the controller reads it.
    pub(super) fn record(&self, volume_id: &str) -> VolumeRecord {
        let set = |s: &[Arc<str>]| s.iter().map(|n| n.to_string()).collect();
        VolumeRecord {
            volume_id: volume_id.to_string(),
            node: self.node.to_string(),
            namespace: self.namespace.to_string(),
            pod: self.pod.to_string(),
            pod_uid: self.pod_uid.to_string(),
            keytabs: set(&self.keytabs),
            ticket: self.ticket.as_deref().map(str::to_string),
            certs: set(&self.certs),
            keys: set(&self.keys),
            versions: self
                .versions
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            issued_unix: self.issued_unix,
            generation: self.generation.to_string(),
            revoked: self.revoked,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_record_reads_back_as_it_came_and_shares_its_names() {
        let rec = VolumeRecord {
            volume_id: "v1".into(),
            node: "node-a".into(),
            namespace: "web".into(),
            pod: "web-0".into(),
            pod_uid: "u1".into(),
            keytabs: ["HTTP/a@R".to_string(), "HTTP/b@R".to_string()].into(),
            ticket: Some("websvc@R".into()),
            certs: ["web".to_string()].into(),
            keys: ["ring-1".to_string()].into(),
            versions: [("HTTP/a@R".to_string(), 3), ("ring-1".to_string(), 2)].into(),
            issued_unix: 42,
            generation: "g1".into(),
            revoked: true,
        };
        let mut names = Interner::default();
        let kept = KeptVolume::keep(&rec, &mut names);
        assert_eq!(kept.record("v1"), rec);
        let other = KeptVolume::keep(&rec, &mut names);
        assert!(Arc::ptr_eq(&kept.node, &other.node));
        assert!(Arc::ptr_eq(&kept.keytabs[0], &other.keytabs[0]));
    }
}
