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
/// use actorflow_runtime::time::timer::TimerQueue;
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
    /// Timers in firing order: timestamp, then registration order.
    order: BTreeMap<(Timestamp, u64), (K, N)>,
    /// Each timer's registration number, for deduplication and deletion.
    index: HashMap<(K, N, Timestamp), u64>,
    seq: u64,
}

impl<K, N> Default for TimerQueue<K, N> {
    fn default() -> Self {
        TimerQueue {
            order: BTreeMap::new(),
            index: HashMap::new(),
            seq: 0,
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
        if self.index.contains_key(&Probe(key, namespace, time)) {
            return false;
        }
        self.seq += 1;
        self.index
            .insert((key.clone(), namespace.clone(), time), self.seq);
        self.order
            .insert((time, self.seq), (key.clone(), namespace.clone()));
        true
    }

    /// True if this exact timer exists.
    pub fn contains(&self, time: Timestamp, key: &K, namespace: &N) -> bool {
        self.index.contains_key(&Probe(key, namespace, time))
    }

    /// Deletes a timer; false if it did not exist.
    pub fn delete(&mut self, time: Timestamp, key: &K, namespace: &N) -> bool {
        match self.index.remove(&Probe(key, namespace, time)) {
            Some(seq) => {
                self.order.remove(&(time, seq));
                true
            }
            None => false,
        }
    }

    /// The earliest timer's timestamp.
    pub fn peek(&self) -> Option<Timestamp> {
        self.order.first_key_value().map(|((t, _), _)| *t)
    }

    /// Removes and returns the earliest timestamp `<= upto` with its timers, in registration
    /// order. Call repeatedly: firing a timer may register new ones.
    pub fn pop_due(&mut self, upto: Timestamp) -> Option<(Timestamp, Vec<(K, N)>)> {
        let first = self.peek()?;
        if first > upto {
            return None;
        }
        let mut timers = Vec::new();
        while let Some(entry) = self.order.first_entry() {
            if entry.key().0 != first {
                break;
            }
            let (k, n) = entry.remove();
            self.index.remove(&Probe(&k, &n, first));
            timers.push((k, n));
        }
        Some((first, timers))
    }

    /// Number of timers.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// True if there are no timers.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Every timer as `(timestamp, key, namespace)`, in firing order.
    pub fn iter(&self) -> impl Iterator<Item = (Timestamp, &K, &N)> {
        self.order.iter().map(|((t, _), (k, n))| (*t, k, n))
    }
}

/// How many timers an operator fires per chunk before the runtime drains its output and checks
/// for cancellation (see `Operator::has_more`).
pub const TIMERS_PER_CHUNK: usize = 1024;

/// Fires the timers due at a watermark a chunk at a time: timers registered while firing that
/// are due too fire in the same advance, as in Flink.
#[derive(Debug, Clone)]
pub struct Firing<K, N> {
    upto: Option<Timestamp>,
    due: std::collections::VecDeque<(Timestamp, K, N)>,
}

impl<K, N> Default for Firing<K, N> {
    fn default() -> Self {
        Firing {
            upto: None,
            due: std::collections::VecDeque::new(),
        }
    }
}

impl<K: Hash + Eq + Clone, N: Hash + Eq + Clone> Firing<K, N> {
    /// Starts firing every timer of `queue` up to `upto`.
    pub fn start(&mut self, upto: Timestamp) {
        self.upto = Some(upto);
    }

    /// True until every due timer was handed out.
    pub fn is_active(&self) -> bool {
        self.upto.is_some()
    }

    /// The next due timer, or `None` (and inactive) when there are no more.
    pub fn next(&mut self, queue: &mut TimerQueue<K, N>) -> Option<(Timestamp, K, N)> {
        let upto = self.upto?;
        if self.due.is_empty()
            && let Some((t, timers)) = queue.pop_due(upto)
        {
            self.due.extend(timers.into_iter().map(|(k, n)| (t, k, n)));
        }
        let next = self.due.pop_front();
        if next.is_none() {
            self.upto = None;
        }
        next
    }
}

/// A borrowed `(key, namespace, time)` that hashes like the owned triple, so lookups clone
/// nothing.
#[derive(Hash)]
struct Probe<'a, K, N>(&'a K, &'a N, Timestamp);

impl<K: Eq, N: Eq> Equivalent<(K, N, Timestamp)> for Probe<'_, K, N> {
    fn equivalent(&self, other: &(K, N, Timestamp)) -> bool {
        self.2 == other.2 && *self.0 == other.0 && *self.1 == other.1
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
