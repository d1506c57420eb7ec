//! The audit log as tests read it: parsed records, so assertions name the
//! field they mean (action, decision, actor, node, reason) instead of
//! matching text anywhere in a line.

use std::path::Path;

pub use kcred_audit::{Action, AuditRecord, Decision};
use kcred_audit::{AuditFilter, query};

/// Every record of the audit log at `path`, in log order; none while the
/// log does not exist yet. A damaged line fails the test.
pub fn audit_records(path: &Path) -> Vec<AuditRecord> {
    if !path.exists() {
        return Vec::new();
    }
    query(path, &AuditFilter::default())
        .unwrap_or_else(|e| panic!("audit log {}: {e}", path.display()))
}
