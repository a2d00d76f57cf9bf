//! Timers: a queue of `(timestamp, key, namespace)` entries per time domain, deduplicated and
//! deletable, fired in timestamp order (Flink's `InternalTimerService`).
//!
//! Registering the same `(key, namespace, timestamp)` twice keeps one timer, so it fires once.
//! Timers of one timestamp fire in the order they were first registered, which keeps outputs
//! deterministic.

use hashbrown::{Equivalent, HashMap};
use std::collections::BTreeMap;
use std::hash::Hash;

use crate::types::Timestamp;

/// Which clock a timer follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum TimeDomain {
    /// Fires when the watermark reaches the timer's timestamp.
    EventTime,
    /// Fires when processing (wall-clock) time reaches the timer's timestamp.
    ProcessingTime,
}

/// The timers of one time domain.
///
/// # Examples
///
/// ```
/// use actorflow_runtime::timer::TimerQueue;
/// use actorflow_runtime::Timestamp;
/// let mut q: TimerQueue<&str, ()> = TimerQueue::new();
/// assert!(q.register(Timestamp(10), &"a", &()));
/// assert!(!q.register(Timestamp(10), &"a", &()), "the same timer twice is one timer");
/// q.register(Timestamp(5), &"b", &());
/// assert_eq!(q.pop_due(Timestamp(10)), Some((Timestamp(5), vec![("b", ())])));
/// assert_eq!(q.pop_due(Timestamp(10)), Some((Timestamp(10), vec![("a", ())])));
/// assert_eq!(q.pop_due(Timestamp(10)), None);
/// ```
#[derive(Debug, Clone)]
pub struct TimerQueue<K, N> {
    by_time: BTreeMap<Timestamp, HashMap<(K, N), u64>>,
    seq: u64,
    len: usize,
}

impl<K, N> Default for TimerQueue<K, N> {
    fn default() -> Self {
        TimerQueue {
            by_time: BTreeMap::new(),
            seq: 0,
            len: 0,
        }
    }
}

impl<K: Hash + Eq + Clone, N: Hash + Eq + Clone> TimerQueue<K, N> {
    /// An empty queue.
    pub fn new() -> Self {
        TimerQueue::default()
    }

    /// Registers a timer; false if this exact timer already exists.
    pub fn register(&mut self, time: Timestamp, key: &K, namespace: &N) -> bool {
        let at = self.by_time.entry(time).or_default();
        if at.contains_key(&Probe(key, namespace)) {
            return false;
        }
        self.seq += 1;
        at.insert((key.clone(), namespace.clone()), self.seq);
        self.len += 1;
        true
    }

    /// True if this exact timer exists.
    pub fn contains(&self, time: Timestamp, key: &K, namespace: &N) -> bool {
        self.by_time
            .get(&time)
            .is_some_and(|at| at.contains_key(&Probe(key, namespace)))
    }

    /// Deletes a timer; false if it did not exist.
    pub fn delete(&mut self, time: Timestamp, key: &K, namespace: &N) -> bool {
        let Some(at) = self.by_time.get_mut(&time) else {
            return false;
        };
        let removed = at.remove(&Probe(key, namespace)).is_some();
        if at.is_empty() {
            self.by_time.remove(&time);
        }
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// The earliest timer's timestamp.
    pub fn peek(&self) -> Option<Timestamp> {
        self.by_time.keys().next().copied()
    }

    /// Removes and returns the earliest timestamp `<= upto` with its timers, in registration
    /// order. Call repeatedly: firing a timer may register new ones.
    pub fn pop_due(&mut self, upto: Timestamp) -> Option<(Timestamp, Vec<(K, N)>)> {
        let first = *self.by_time.keys().next()?;
        if first > upto {
            return None;
        }
        let at = self.by_time.remove(&first)?;
        self.len -= at.len();
        let mut timers: Vec<((K, N), u64)> = at.into_iter().collect();
        timers.sort_unstable_by_key(|(_, seq)| *seq);
        Some((first, timers.into_iter().map(|(kn, _)| kn).collect()))
    }

    /// Number of timers.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if there are no timers.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every timer as `(timestamp, key, namespace)`, in firing order.
    pub fn iter(&self) -> impl Iterator<Item = (Timestamp, &K, &N)> {
        self.by_time.iter().flat_map(|(t, at)| {
            let mut v: Vec<_> = at.iter().collect();
            v.sort_unstable_by_key(|(_, seq)| **seq);
            v.into_iter().map(move |((k, n), _)| (*t, k, n))
        })
    }
}

/// A borrowed `(key, namespace)` that hashes like the owned pair, so lookups clone nothing.
#[derive(Hash)]
struct Probe<'a, K, N>(&'a K, &'a N);

impl<K: Eq, N: Eq> Equivalent<(K, N)> for Probe<'_, K, N> {
    fn equivalent(&self, other: &(K, N)) -> bool {
        *self.0 == other.0 && *self.1 == other.1
    }
}

/// Event-time and processing-time timers of one keyed operator.
#[derive(Debug, Clone)]
pub struct Timers<K, N> {
    /// Event-time timers.
    pub event: TimerQueue<K, N>,
    /// Processing-time timers.
    pub processing: TimerQueue<K, N>,
}

impl<K, N> Default for Timers<K, N> {
    fn default() -> Self {
        Timers {
            event: TimerQueue::default(),
            processing: TimerQueue::default(),
        }
    }
}

impl<K: Hash + Eq + Clone, N: Hash + Eq + Clone> Timers<K, N> {
    /// The queue of `domain`.
    pub fn queue(&mut self, domain: TimeDomain) -> &mut TimerQueue<K, N> {
        match domain {
            TimeDomain::EventTime => &mut self.event,
            TimeDomain::ProcessingTime => &mut self.processing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_delete_and_order() {
        let mut q: TimerQueue<u32, u8> = TimerQueue::new();
        for k in [3, 1, 2, 1, 3] {
            q.register(Timestamp(7), &k, &0);
        }
        assert_eq!(q.len(), 3);
        assert!(q.delete(Timestamp(7), &1, &0));
        assert!(!q.delete(Timestamp(7), &1, &0));
        q.register(Timestamp(-3), &9, &1);
        assert_eq!(q.peek(), Some(Timestamp(-3)));
        assert_eq!(q.pop_due(Timestamp(-4)), None);
        assert_eq!(
            q.pop_due(Timestamp(100)),
            Some((Timestamp(-3), vec![(9, 1)]))
        );
        assert_eq!(
            q.pop_due(Timestamp(100)),
            Some((Timestamp(7), vec![(3, 0), (2, 0)]))
        );
        assert!(q.is_empty());
    }
}
