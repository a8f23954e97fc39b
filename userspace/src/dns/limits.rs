//! Per-sandbox limits of the responder: what one requester holds (forwards
//! in flight, TCP connections) is capped on its own, so a sandbox that
//! floods the responder runs into its own limit while every other sandbox
//! keeps its share. A total cap stays behind them, sized for the worker's
//! file descriptors, not as the first line.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

/// Forwarded queries in flight per sandbox: glibc sends at most a few at
/// once (A and AAAA, per search domain); a resolver library in a busy
/// service may keep some dozens.
pub const FORWARDS_PER_SANDBOX: usize = 32;
/// Forwarded queries in flight in all.
pub const MAX_FORWARDS: usize = 4096;
/// Open TCP connections per sandbox (clients use TCP after a truncated UDP
/// answer, one connection per lookup).
pub const TCP_PER_SANDBOX: usize = 8;
/// Open TCP connections in all.
pub const MAX_TCP: usize = 1024;

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per: HashMap<Arc<str>, usize>,
}

/// A pool with a share per sandbox and a total.
#[derive(Debug)]
pub struct Pool {
    per_sandbox: usize,
    total: usize,
    counts: Mutex<Counts>,
}

/// One slot of a [`Pool`], given back on drop.
#[derive(Debug)]
pub struct Slot {
    pool: Arc<Pool>,
    sandbox: Arc<str>,
}

impl Pool {
    pub fn new(per_sandbox: usize, total: usize) -> Arc<Pool> {
        Arc::new(Pool {
            per_sandbox,
            total,
            counts: Mutex::new(Counts::default()),
        })
    }

    /// A slot for `sandbox`, unless it holds its share already or the pool
    /// is full.
    pub fn try_take(self: &Arc<Self>, sandbox: &Arc<str>) -> Option<Slot> {
        let mut c = self.counts.lock().expect("not poisoned");
        if c.total >= self.total {
            return None;
        }
        let n = c.per.entry(sandbox.clone()).or_insert(0);
        if *n >= self.per_sandbox {
            return None;
        }
        *n += 1;
        c.total += 1;
        Some(Slot {
            pool: self.clone(),
            sandbox: sandbox.clone(),
        })
    }

    /// Slots held by `sandbox`.
    pub fn held_by(&self, sandbox: &str) -> usize {
        let c = self.counts.lock().expect("not poisoned");
        c.per.get(sandbox).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.pool.counts.lock().expect("not poisoned");
        c.total -= 1;
        if let Some(n) = c.per.get_mut(&self.sandbox) {
            *n -= 1;
            if *n == 0 {
                // No entry per sandbox that ever asked: the map stays as
                // small as what is in flight.
                c.per.remove(&self.sandbox);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Arc<str> {
        s.into()
    }

    #[test]
    fn a_sandbox_over_its_share_is_refused_while_another_still_gets_slots() {
        let pool = Pool::new(3, 100);
        let (flood, victim) = (key("flood"), key("victim"));
        let held: Vec<Slot> = (0..50).filter_map(|_| pool.try_take(&flood)).collect();
        assert_eq!(held.len(), 3);
        assert!(pool.try_take(&victim).is_some());
        assert_eq!(pool.held_by("flood"), 3);
        drop(held);
        assert_eq!(pool.held_by("flood"), 0);
        assert!(pool.try_take(&flood).is_some(), "slots come back on drop");
    }

    #[test]
    fn the_total_caps_all_sandboxes_together() {
        let pool = Pool::new(2, 3);
        let a = [pool.try_take(&key("a")), pool.try_take(&key("a"))];
        let b = pool.try_take(&key("b"));
        assert!(a.iter().all(Option::is_some) && b.is_some());
        assert!(pool.try_take(&key("c")).is_none());
        drop(b);
        assert!(pool.try_take(&key("c")).is_some());
    }
}
