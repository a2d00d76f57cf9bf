//! Operator (non-keyed) list state: what a source or sink keeps per subtask — a source's
//! read positions, a sink's pending transactions — and how it is redistributed when a job
//! restarts at another parallelism (Flink's `ListState` from `getListState` /
//! `getUnionListState` on the `OperatorStateStore`).
//!
//! The state is a list of items per subtask. On a change of parallelism the lists of all old
//! subtasks are concatenated in subtask order and either split into contiguous, nearly equal
//! parts ([`Redistribution::EvenSplit`], Flink's round-robin repartitioner) or given whole to
//! every new subtask ([`Redistribution::Union`]). Checkpoints (the next step) snapshot these
//! lists; this module holds the state and the redistribution rule, which is pure.

/// How operator list state moves when the parallelism changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redistribution {
    /// Every item goes to exactly one new subtask; the parts are contiguous and differ in size
    /// by at most one (Flink's `SPLIT_DISTRIBUTE`).
    EvenSplit,
    /// Every new subtask gets every item (Flink's `UNION`), and keeps what it needs.
    Union,
}

/// A named list of items kept by one source or sink subtask.
///
/// # Examples
///
/// ```
/// use actorflow_runtime::state::operator_state::{OperatorListState, Redistribution};
/// let mut offsets = OperatorListState::new("offsets", Redistribution::EvenSplit);
/// offsets.add(("file-a".to_string(), 1024u64));
/// offsets.add(("file-b".to_string(), 0));
/// assert_eq!(offsets.get().len(), 2);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct OperatorListState<T> {
    name: String,
    mode: Redistribution,
    items: Vec<T>,
}

impl<T> OperatorListState<T> {
    /// An empty list state.
    pub fn new(name: &str, mode: Redistribution) -> Self {
        OperatorListState {
            name: name.to_string(),
            mode,
            items: Vec::new(),
        }
    }

    /// The state's name (stable across job versions: it maps snapshots to state).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How it is redistributed.
    pub fn redistribution(&self) -> Redistribution {
        self.mode
    }

    /// The items.
    pub fn get(&self) -> &[T] {
        &self.items
    }

    /// Appends an item.
    pub fn add(&mut self, item: T) {
        self.items.push(item);
    }

    /// Replaces the items.
    pub fn update(&mut self, items: Vec<T>) {
        self.items = items;
    }

    /// Removes every item.
    pub fn clear(&mut self) {
        self.items.clear();
    }

    /// Takes the items out.
    pub fn take(&mut self) -> Vec<T> {
        std::mem::take(&mut self.items)
    }
}

/// Redistributes the lists of the old subtasks (in subtask order) over `new_parallelism`
/// subtasks.
///
/// # Examples
///
/// ```
/// use actorflow_runtime::state::operator_state::{redistribute, Redistribution};
/// let old = vec![vec![1, 2, 3], vec![4, 5]];
/// assert_eq!(redistribute(Redistribution::EvenSplit, old.clone(), 3), vec![vec![1, 2], vec![3, 4], vec![5]]);
/// assert_eq!(redistribute(Redistribution::Union, old, 2), vec![vec![1, 2, 3, 4, 5]; 2]);
/// ```
pub fn redistribute<T: Clone>(
    mode: Redistribution,
    old: Vec<Vec<T>>,
    new_parallelism: usize,
) -> Vec<Vec<T>> {
    let all: Vec<T> = old.into_iter().flatten().collect();
    if new_parallelism == 0 {
        return Vec::new();
    }
    match mode {
        Redistribution::Union => vec![all; new_parallelism],
        Redistribution::EvenSplit => {
            let base = all.len() / new_parallelism;
            let extra = all.len() % new_parallelism;
            let mut items = all.into_iter();
            (0..new_parallelism)
                .map(|i| items.by_ref().take(base + usize::from(i < extra)).collect())
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_split_keeps_every_item_once_in_order() {
        for total in 0..20usize {
            for p in 1..6 {
                let old: Vec<Vec<usize>> =
                    vec![(0..total / 2).collect(), (total / 2..total).collect()];
                let new = redistribute(Redistribution::EvenSplit, old, p);
                assert_eq!(new.len(), p);
                let sizes: Vec<usize> = new.iter().map(Vec::len).collect();
                let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
                assert!(max - min <= 1, "{sizes:?}");
                assert_eq!(new.concat(), (0..total).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn list_state_basics() {
        let mut s = OperatorListState::new("pending", Redistribution::Union);
        s.add(1);
        s.update(vec![2, 3]);
        assert_eq!(s.get(), &[2, 3]);
        assert_eq!(s.take(), vec![2, 3]);
        assert!(s.get().is_empty());
        assert_eq!(s.name(), "pending");
    }
}
