//! Locking a `std::sync::Mutex`, decided once.
//!
//! The driver's std mutexes guard plain bookkeeping (lock tables, the
//! schedule) that stays consistent even if a holder panicked: a poisoned
//! lock is taken over rather than spreading the panic to every later call.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, taking it over if a previous holder panicked.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_is_taken_over() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let m2 = std::sync::Arc::clone(&m);
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            panic!("poison it");
        })
        .join();
        assert!(m.is_poisoned());
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 2);
    }
}
