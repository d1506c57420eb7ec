//! Shared copies of names many entries repeat (node, namespace, service
//! account, principal, annotation): the pod view and the issued-volume
//! index keep one `Arc<str>` per distinct name instead of one `String` per
//! entry, which is most of what 100,000 entries would otherwise cost.

use std::collections::HashSet;
use std::sync::Arc;

/// Names no entry uses any more are dropped when the set has doubled
/// since the last sweep, so a churn of distinct names (pod-specific
/// annotation values) does not grow it for ever.
#[derive(Debug, Default)]
pub struct Interner {
    names: HashSet<Arc<str>>,
    swept_len: usize,
}

/// Below this many names, no sweep.
const SWEEP_FLOOR: usize = 1024;

impl Interner {
    /// The shared copy of `name`.
    pub fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(n) = self.names.get(name) {
            return Arc::clone(n);
        }
        if self.names.len() >= (2 * self.swept_len).max(SWEEP_FLOOR) {
            self.names.retain(|n| Arc::strong_count(n) > 1);
            self.swept_len = self.names.len();
        }
        let n: Arc<str> = Arc::from(name);
        self.names.insert(Arc::clone(&n));
        n
    }

    /// How many distinct names it holds.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_copy_per_name_and_unused_names_are_swept() {
        let mut i = Interner::default();
        let a = i.get("node-1");
        let b = i.get("node-1");
        assert!(Arc::ptr_eq(&a, &b));
        for n in 0..3 * SWEEP_FLOOR {
            // Each dropped at once: nothing but the interner holds it.
            i.get(&format!("gone-{n}"));
        }
        assert!(i.len() <= 2 * SWEEP_FLOOR, "{} names kept", i.len());
        assert!(Arc::ptr_eq(&a, &i.get("node-1")), "a used name stays");
    }
}
