//! A small, bounded cache of what the API server vouched for, keyed by a
//! token's hash (never the token itself), each entry until a deadline.
//!
//! kubelet republishes every volume about once a minute and a node driver
//! authenticates every call: without a cache each would cost a
//! `TokenReview`. Entries live until the token expires or a minute passes,
//! whichever comes first, so a token the API server stops honouring (its
//! pod deleted) is honoured here for at most that minute.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};

/// Longest time a review is trusted without asking again.
pub const MAX_AGE: Duration = Duration::from_secs(60);

/// The cache key of a token reviewed for an audience.
pub fn key(audience: &str, token: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(audience.as_bytes());
    h.update([0]);
    h.update(token.as_bytes());
    h.finalize().into()
}

/// How long a review of a token expiring at `expires` may be trusted
/// from `now` (zero: not at all).
pub fn ttl(expires: Option<SystemTime>, now: SystemTime) -> Duration {
    match expires {
        Some(e) => e.duration_since(now).unwrap_or(Duration::ZERO).min(MAX_AGE),
        None => Duration::ZERO,
    }
}

/// Entries by key, at most `capacity` of them.
pub struct ReviewCache<V> {
    entries: Mutex<HashMap<[u8; 32], (V, Instant)>>,
    capacity: usize,
}

impl<V: Clone> ReviewCache<V> {
    /// An empty cache holding at most `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        ReviewCache {
            entries: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (V, Instant)>> {
        // A panic while holding the map leaves it consistent (plain inserts
        // and removes): keep using it.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The entry for `key`, unless it is past its deadline.
    pub fn get(&self, key: &[u8; 32], now: Instant) -> Option<V> {
        let mut map = self.lock();
        match map.get(key) {
            Some((v, until)) if *until > now => Some(v.clone()),
            Some(_) => {
                map.remove(key);
                None
            }
            None => None,
        }
    }

    /// Keeps `value` for `ttl` from `now` (nothing for a zero ttl). A full
    /// cache first drops what is past its deadline, then the sixteenth of
    /// its entries closest to theirs: making room looks at every entry
    /// under the lock every lookup takes, so it is done once for many
    /// inserts, not for each (with more pods than entries, every new
    /// token finds the cache full).
    pub fn put(&self, key: [u8; 32], value: V, ttl: Duration, now: Instant) {
        if ttl.is_zero() {
            return;
        }
        let mut map = self.lock();
        if map.len() >= self.capacity && !map.contains_key(&key) {
            map.retain(|_, (_, until)| *until > now);
            if map.len() >= self.capacity {
                let mut soonest: Vec<(Instant, [u8; 32])> =
                    map.iter().map(|(k, (_, until))| (*until, *k)).collect();
                let room = (self.capacity / 16).clamp(1, soonest.len());
                soonest.select_nth_unstable(room - 1);
                for (_, k) in &soonest[..room] {
                    map.remove(k);
                }
            }
        }
        map.insert(key, (value, now + ttl));
    }

    /// How many entries are held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_lives_until_its_deadline_and_no_longer() {
        let cache = ReviewCache::new(8);
        let t0 = Instant::now();
        let k = key("kcred", "tok");
        cache.put(k, "pod-a", Duration::from_secs(10), t0);
        assert_eq!(cache.get(&k, t0 + Duration::from_secs(9)), Some("pod-a"));
        assert_eq!(cache.get(&k, t0 + Duration::from_secs(10)), None);
        assert!(cache.is_empty(), "an expired entry is dropped when seen");
    }

    #[test]
    fn the_key_depends_on_the_audience_and_the_token() {
        assert_ne!(key("kcred", "tok"), key("other", "tok"));
        assert_ne!(key("kcred", "tok"), key("kcred", "tok2"));
        assert_ne!(key("a", "bc"), key("ab", "c"));
    }

    #[test]
    fn trust_lasts_until_the_token_expires_or_a_minute_passes() {
        let now = SystemTime::now();
        assert_eq!(
            ttl(Some(now + Duration::from_secs(20)), now),
            Duration::from_secs(20)
        );
        assert_eq!(ttl(Some(now + Duration::from_secs(3600)), now), MAX_AGE);
        assert_eq!(ttl(Some(now - Duration::from_secs(1)), now), Duration::ZERO);
        assert_eq!(ttl(None, now), Duration::ZERO, "unknown expiry: not cached");
    }

    #[test]
    fn a_full_cache_stays_bounded_dropping_the_entry_nearest_its_deadline() {
        let cache = ReviewCache::new(3);
        let t0 = Instant::now();
        for (i, secs) in [(1u8, 30u64), (2, 10), (3, 50)] {
            cache.put([i; 32], i, Duration::from_secs(secs), t0);
        }
        cache.put([4; 32], 4, Duration::from_secs(40), t0);
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get(&[2; 32], t0), None, "the soonest to lapse went");
        for i in [1u8, 3, 4] {
            assert_eq!(cache.get(&[i; 32], t0), Some(i));
        }
        cache.put([5; 32], 5, Duration::ZERO, t0);
        assert_eq!(cache.get(&[5; 32], t0), None, "a zero ttl keeps nothing");
    }

    #[test]
    fn a_full_cache_makes_room_for_many_inserts_at_once() {
        let cache = ReviewCache::new(32);
        let t0 = Instant::now();
        for i in 1..=32u8 {
            cache.put([i; 32], i, Duration::from_secs(u64::from(i)), t0);
        }
        cache.put([100; 32], 100, Duration::from_secs(60), t0);
        assert_eq!(cache.len(), 31, "a sixteenth went, the new one came");
        for gone in [1u8, 2] {
            assert_eq!(cache.get(&[gone; 32], t0), None, "the soonest to lapse");
        }
        assert_eq!(cache.get(&[3; 32], t0), Some(3));
        cache.put([101; 32], 101, Duration::from_secs(60), t0);
        assert_eq!(cache.len(), 32, "room left: nothing dropped");
        assert_eq!(cache.get(&[3; 32], t0), Some(3));
    }
}
