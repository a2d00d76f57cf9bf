//! Keyed state storage laid out per key group.
//!
//! A [`KeyedTable`] holds one hash table per key group that its subtask owns. A key's hash is
//! computed once per access and serves both to find its key group and to probe the table.
//! Snapshots write and restore whole key groups, which is what lets a job restart at another
//! parallelism.
//!
//! **Asynchronous snapshots.** [`KeyedTable::freeze`] hands a checkpoint a [`FrozenTable`]: the
//! key groups as they are now, shared (`Arc`), not copied, so the subtask pauses only for as
//! long as it takes to share the group pointers. The checkpoint encodes the frozen view on
//! another thread. A group the subtask writes to afterwards is copied first if the encoding
//! still holds it, and taken back without a copy if the encoding is done (copy on write, one
//! key group at a time, so a write never copies more than one group).

use crate::state::keygroup::{KeyGroupRange, key_group_for_hash, key_hash};
use crate::types::KeyGroup;
use hashbrown::HashTable;
use hashbrown::hash_table::Entry;
use std::hash::Hash;
use std::sync::Arc;

/// A record reached a subtask that does not own its key's key group.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "a record with a key in key group {key_group} reached the subtask owning key groups \
     {}..{}: the key's Hash implementation is not deterministic, or the stream was not \
     partitioned with key_by before this keyed operator",
    range.start, range.end
)]
pub struct KeyGroupMismatch {
    /// The key's key group.
    pub key_group: KeyGroup,
    /// What this subtask owns.
    pub range: KeyGroupRange,
}

/// A map from key to value, grouped by key group.
///
/// Lookups take the key by reference; a key is cloned only when it is inserted. Entries hold
/// just the key and the value (the hash is recomputed when a table grows), to keep as many
/// entries per cache line as possible.
///
/// # Examples
///
/// ```
/// use actorflow_runtime::state::keygroup::key_group_range_for_subtask;
/// use actorflow_runtime::state::table::KeyedTable;
/// let mut table: KeyedTable<String, u64> = KeyedTable::new(128, key_group_range_for_subtask(128, 1, 0));
/// let a = "a".to_string();
/// *table.get_or_insert_with(&a, || 0).unwrap() += 5;
/// *table.get_or_insert_with(&a, || 0).unwrap() += 1;
/// assert_eq!(table.get(&a), Some(&6));
/// assert_eq!(table.len(), 1);
/// ```
pub struct KeyedTable<K, V> {
    max_parallelism: u32,
    range: KeyGroupRange,
    groups: Vec<Group<K, V>>,
    len: usize,
    /// With change tracking on (incremental checkpoints): per key group, the keys written or
    /// removed since the last [`take_changes`](Self::take_changes).
    changed: Option<Vec<HashTable<K>>>,
}

/// One key group's table: owned, or shared with a checkpoint that froze it.
enum Group<K, V> {
    Owned(HashTable<(K, V)>),
    Shared(Arc<HashTable<(K, V)>>),
}

impl<K: Clone, V: Clone> Group<K, V> {
    #[inline]
    fn read(&self) -> &HashTable<(K, V)> {
        match self {
            Group::Owned(t) => t,
            Group::Shared(t) => t,
        }
    }

    /// The table for writing: a shared one is taken back, copied only if a checkpoint still
    /// reads it.
    #[inline]
    fn write(&mut self) -> &mut HashTable<(K, V)> {
        if let Group::Shared(shared) = self {
            let t =
                Arc::try_unwrap(std::mem::take(shared)).unwrap_or_else(|still| (*still).clone());
            *self = Group::Owned(t);
        }
        match self {
            Group::Owned(t) => t,
            // Replaced just above.
            Group::Shared(_) => unreachable!("a shared group was just taken back"),
        }
    }

    /// Shares the table (it becomes shared if it was owned).
    fn share(&mut self) -> Arc<HashTable<(K, V)>> {
        if let Group::Owned(t) = self {
            *self = Group::Shared(Arc::new(std::mem::take(t)));
        }
        match self {
            Group::Shared(t) => t.clone(),
            Group::Owned(_) => unreachable!("an owned group was just shared"),
        }
    }
}

/// Writes one key group's table during [`KeyedTable::restore_groups`].
pub struct GroupWriter<'a, K, V> {
    table: &'a mut HashTable<(K, V)>,
    kg: KeyGroup,
    max_parallelism: u32,
    added: usize,
}

impl<K: Hash + Eq + Clone, V> GroupWriter<'_, K, V> {
    /// Makes room for `additional` more keys.
    pub fn reserve(&mut self, additional: usize) {
        self.table
            .reserve(additional, |(k, _)| table_hash(key_hash(k)));
    }

    /// The value of `key`, inserting a clone of the key with `make()` first if absent.
    ///
    /// # Errors
    ///
    /// [`KeyGroupMismatch`] if `key` is not of this key group.
    pub fn get_or_insert_with(
        &mut self,
        key: &K,
        make: impl FnOnce() -> V,
    ) -> Result<&mut V, KeyGroupMismatch> {
        let hash = key_hash(key);
        let kg = key_group_for_hash(hash, self.max_parallelism);
        if kg != self.kg {
            return Err(KeyGroupMismatch {
                key_group: kg,
                range: KeyGroupRange {
                    start: self.kg.0,
                    end: self.kg.0 + 1,
                },
            });
        }
        let (value, inserted) = find_or_insert(self.table, table_hash(hash), key, make);
        self.added += usize::from(inserted);
        Ok(value)
    }
}

/// The keys of one key group that changed between two [`KeyedTable::take_changes`].
#[derive(Debug)]
pub struct ChangedKeys<K>(HashTable<K>);

impl<K> ChangedKeys<K> {
    /// The keys, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &K> {
        self.0.iter()
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A read-only view of a [`KeyedTable`] as it was when frozen, for a checkpoint to encode on
/// another thread while the subtask goes on.
///
/// # Examples
///
/// ```
/// use actorflow_runtime::state::keygroup::key_group_range_for_subtask;
/// use actorflow_runtime::state::table::KeyedTable;
/// let mut table: KeyedTable<u64, u64> = KeyedTable::new(128, key_group_range_for_subtask(128, 1, 0));
/// *table.get_or_insert_with(&1, || 0).unwrap() = 10;
/// let frozen = table.freeze();
/// *table.get_or_insert_with(&1, || 0).unwrap() = 11; // copies that key group
/// *table.get_or_insert_with(&2, || 0).unwrap() = 20;
/// let seen: Vec<(u64, u64)> = std::thread::spawn(move || frozen.iter().map(|(k, v)| (*k, *v)).collect())
///     .join()
///     .unwrap();
/// assert_eq!(seen, vec![(1, 10)]);
/// assert_eq!(table.get(&1), Some(&11));
/// ```
pub struct FrozenTable<K, V> {
    range: KeyGroupRange,
    groups: Vec<Arc<HashTable<(K, V)>>>,
}

impl<K, V> FrozenTable<K, V> {
    /// The key groups it covers.
    pub fn range(&self) -> KeyGroupRange {
        self.range
    }

    /// Every `(key, value)` of one key group.
    pub fn iter_group(&self, kg: KeyGroup) -> impl Iterator<Item = (&K, &V)> {
        self.range
            .offset(kg)
            .and_then(|o| self.groups.get(o))
            .into_iter()
            .flat_map(|t| t.iter().map(|(k, v)| (k, v)))
    }

    /// Every `(key, value)`, key group by key group.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.groups
            .iter()
            .flat_map(|t| t.iter().map(|(k, v)| (k, v)))
    }

    /// Every key group with its entries, in key group order.
    pub fn groups(&self) -> impl Iterator<Item = (KeyGroup, &HashTable<(K, V)>)> {
        self.range.iter().zip(self.groups.iter().map(|g| &**g))
    }
}

impl<K: Hash + Eq, V> FrozenTable<K, V> {
    /// The value of `key` in key group `kg`, if present.
    pub fn get_in(&self, kg: KeyGroup, key: &K) -> Option<&V> {
        let table = self.groups.get(self.range.offset(kg)?)?;
        table
            .find(table_hash(key_hash(key)), |(k, _)| k == key)
            .map(|(_, v)| v)
    }
}

/// The value of `key` in one key group's `table` (probed with `hash`, its table hash),
/// inserting a clone of the key with `make()` first if absent; true if it was inserted.
#[inline]
fn find_or_insert<'t, K: Hash + Eq + Clone, V>(
    table: &'t mut HashTable<(K, V)>,
    hash: u64,
    key: &K,
    make: impl FnOnce() -> V,
) -> (&'t mut V, bool) {
    match table.entry(hash, |(k, _)| k == key, |(k, _)| table_hash(key_hash(k))) {
        Entry::Occupied(e) => (&mut e.into_mut().1, false),
        Entry::Vacant(e) => (&mut e.insert((key.clone(), make())).into_mut().1, true),
    }
}

/// The hash a table uses for a key.
///
/// The key group is `key_hash mod max_parallelism`, so all keys of one group share the hash's
/// low bits, which is where hashbrown starts probing: tables use the hash rotated by half a
/// word, whose low bits are independent of the key group.
#[inline]
fn table_hash(key_hash: u64) -> u64 {
    key_hash.rotate_right(32)
}

impl<K: Hash + Eq + Clone, V: Clone> KeyedTable<K, V> {
    /// An empty table for a subtask owning `range` out of `max_parallelism` key groups.
    pub fn new(max_parallelism: u32, range: KeyGroupRange) -> Self {
        KeyedTable {
            max_parallelism,
            range,
            groups: (0..range.len())
                .map(|_| Group::Owned(HashTable::new()))
                .collect(),
            len: 0,
            changed: None,
        }
    }

    /// Starts recording which keys change (see [`take_changes`](Self::take_changes)); every
    /// write access counts as a change from then on.
    pub fn track_changes(&mut self) {
        if self.changed.is_none() {
            self.changed = Some((0..self.range.len()).map(|_| HashTable::new()).collect());
        }
    }

    /// True if changes are recorded.
    pub fn tracks_changes(&self) -> bool {
        self.changed.is_some()
    }

    /// The keys written or removed since the last call, per key group (in group order), and
    /// starts recording afresh. Empty if tracking is off. Costs a pointer per key group (the
    /// sets are moved, not copied): it runs at the barrier.
    pub fn take_changes(&mut self) -> Vec<(KeyGroup, ChangedKeys<K>)> {
        let Some(changed) = &mut self.changed else {
            return Vec::new();
        };
        self.range
            .iter()
            .zip(changed.iter_mut())
            .filter(|(_, c)| !c.is_empty())
            .map(|(kg, c)| (kg, ChangedKeys(std::mem::take(c))))
            .collect()
    }

    /// Records that `key` changed (for writes made through [`get_or_insert_untracked`]
    /// (Self::get_or_insert_untracked)).
    pub fn mark_changed(&mut self, key: &K) {
        if self.changed.is_some()
            && let Ok((hash, offset)) = self.locate(key)
        {
            self.note(hash, offset, key);
        }
    }

    #[inline]
    fn note(&mut self, hash: u64, offset: usize, key: &K) {
        if let Some(changed) = &mut self.changed {
            let set = &mut changed[offset];
            if set.find(hash, |k| k == key).is_none() {
                set.insert_unique(hash, key.clone(), |k| table_hash(key_hash(k)));
            }
        }
    }

    /// The key groups this table covers.
    pub fn range(&self) -> KeyGroupRange {
        self.range
    }

    /// The key's table hash and the index of its key group's table.
    #[inline]
    fn locate(&self, key: &K) -> Result<(u64, usize), KeyGroupMismatch> {
        let hash = key_hash(key);
        let kg = key_group_for_hash(hash, self.max_parallelism);
        match self.range.offset(kg) {
            Some(offset) => Ok((table_hash(hash), offset)),
            None => Err(KeyGroupMismatch {
                key_group: kg,
                range: self.range,
            }),
        }
    }

    /// The value of `key`, inserting a clone of the key with `make()` first if absent.
    ///
    /// # Errors
    ///
    /// [`KeyGroupMismatch`] if this subtask does not own the key's key group.
    #[inline]
    pub fn get_or_insert_with(
        &mut self,
        key: &K,
        make: impl FnOnce() -> V,
    ) -> Result<&mut V, KeyGroupMismatch> {
        let (hash, offset) = self.locate(key)?;
        self.note(hash, offset, key);
        Ok(self.entry_at(hash, offset, key, make))
    }

    #[inline]
    fn entry_at(&mut self, hash: u64, offset: usize, key: &K, make: impl FnOnce() -> V) -> &mut V {
        let (value, inserted) = find_or_insert(self.groups[offset].write(), hash, key, make);
        self.len += usize::from(inserted);
        value
    }

    /// Like [`get_or_insert_with`](Self::get_or_insert_with), but the access does not count
    /// as a change: the caller tells with [`mark_changed`](Self::mark_changed) if it wrote,
    /// and removes an untouched new entry with [`remove_untracked`](Self::remove_untracked).
    ///
    /// # Errors
    ///
    /// [`KeyGroupMismatch`] if this subtask does not own the key's key group.
    #[inline]
    pub fn get_or_insert_untracked(
        &mut self,
        key: &K,
        make: impl FnOnce() -> V,
    ) -> Result<&mut V, KeyGroupMismatch> {
        let (hash, offset) = self.locate(key)?;
        Ok(self.entry_at(hash, offset, key, make))
    }

    /// The value of `key`, if present (and owned by this subtask).
    pub fn get(&self, key: &K) -> Option<&V> {
        let (hash, offset) = self.locate(key).ok()?;
        self.groups[offset]
            .read()
            .find(hash, |(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// The value of `key` for update, if present (and owned by this subtask).
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let (hash, offset) = self.locate(key).ok()?;
        self.note(hash, offset, key);
        self.groups[offset]
            .write()
            .find_mut(hash, |(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let (hash, offset) = self.locate(key).ok()?;
        self.note(hash, offset, key);
        self.remove_at(hash, offset, key)
    }

    /// Removes `key` without counting it as a change (an entry
    /// [`get_or_insert_untracked`](Self::get_or_insert_untracked) created and nothing wrote).
    pub fn remove_untracked(&mut self, key: &K) -> Option<V> {
        let (hash, offset) = self.locate(key).ok()?;
        self.remove_at(hash, offset, key)
    }

    fn remove_at(&mut self, hash: u64, offset: usize, key: &K) -> Option<V> {
        let table = self.groups[offset].write();
        match table.find_entry(hash, |(k, _)| k == key) {
            Ok(entry) => {
                self.len -= 1;
                Some(entry.remove().0.1)
            }
            Err(_) => None,
        }
    }

    /// Makes room for `additional` more keys in key group `kg` (a restore that knows how
    /// many keys a group brings, so the group's table grows once instead of many times).
    pub fn reserve_in_group(&mut self, kg: KeyGroup, additional: usize) {
        if let Some(offset) = self.range.offset(kg) {
            self.groups[offset]
                .write()
                .reserve(additional, |(k, _)| table_hash(key_hash(k)));
        }
    }

    /// Fills key groups for a restore, several at a time: `f` is called once per key group of
    /// the table, on up to `threads` threads (each group's table is written by one call only),
    /// and returns what the caller must apply afterwards (timers, for example). Results come
    /// back in key group order. Changes are not recorded.
    ///
    /// # Errors
    ///
    /// The first error of `f` (or a panicked thread, as an error).
    pub fn restore_groups<R: Send, E: Send + From<String>>(
        &mut self,
        threads: usize,
        f: impl Fn(KeyGroup, &mut GroupWriter<'_, K, V>) -> Result<R, E> + Sync,
    ) -> Result<Vec<R>, E>
    where
        K: Send + Sync,
        V: Send + Sync,
    {
        let (range, max_parallelism) = (self.range, self.max_parallelism);
        let per = self.groups.len().div_ceil(threads.max(1)).max(1);
        let run = |first: usize, chunk: &mut [Group<K, V>]| -> Result<(Vec<R>, usize), E> {
            let mut out = Vec::with_capacity(chunk.len());
            let mut added = 0;
            for (j, g) in chunk.iter_mut().enumerate() {
                let kg = KeyGroup(range.start + (first + j) as u32);
                let mut w = GroupWriter {
                    table: g.write(),
                    kg,
                    max_parallelism,
                    added: 0,
                };
                out.push(f(kg, &mut w)?);
                added += w.added;
            }
            Ok((out, added))
        };
        let parts: Vec<Result<(Vec<R>, usize), E>> = if threads <= 1 || self.groups.len() <= 1 {
            vec![run(0, &mut self.groups)]
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = self
                    .groups
                    .chunks_mut(per)
                    .enumerate()
                    .map(|(i, chunk)| {
                        let run = &run;
                        s.spawn(move || run(i * per, chunk))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join()
                            .unwrap_or_else(|_| Err(E::from("a restore thread panicked".into())))
                    })
                    .collect()
            })
        };
        let mut all = Vec::with_capacity(self.groups.len());
        for part in parts {
            let (out, added) = part?;
            self.len += added;
            all.extend(out);
        }
        Ok(all)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if no key is present.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every `(key, value)` of one key group.
    pub fn iter_group(&self, kg: KeyGroup) -> impl Iterator<Item = (&K, &V)> {
        self.range
            .offset(kg)
            .and_then(|o| self.groups.get(o))
            .into_iter()
            .flat_map(|t| t.read().iter().map(|(k, v)| (k, v)))
    }

    /// Every value, key group by key group, consuming the table.
    pub fn into_values(self) -> impl Iterator<Item = V> {
        self.groups
            .into_iter()
            .flat_map(|mut g| std::mem::take(g.write()).into_iter().map(|(_, v)| v))
    }

    /// Freezes the table for a checkpoint: a view of every key group as it is now, shared with
    /// the table instead of copied (see the [module docs](self)).
    pub fn freeze(&mut self) -> FrozenTable<K, V> {
        FrozenTable {
            range: self.range,
            groups: self.groups.iter_mut().map(Group::share).collect(),
        }
    }

    /// Keeps the entries for which `f` returns true; `f` may change the values.
    /// Every entry `f` sees counts as changed.
    pub fn retain(&mut self, mut f: impl FnMut(&K, &mut V) -> bool) {
        let mut removed = 0;
        for (offset, g) in self.groups.iter_mut().enumerate() {
            let mut changed = self.changed.as_mut().map(|c| &mut c[offset]);
            g.write().retain(|(k, v)| {
                if let Some(set) = changed.as_deref_mut() {
                    let hash = table_hash(key_hash(k));
                    if set.find(hash, |x| x == k).is_none() {
                        set.insert_unique(hash, k.clone(), |x| table_hash(key_hash(x)));
                    }
                }
                let keep = f(k, v);
                removed += usize::from(!keep);
                keep
            });
        }
        self.len -= removed;
    }

    /// Every `(key, value)`, key group by key group.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.groups
            .iter()
            .flat_map(|t| t.read().iter().map(|(k, v)| (k, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::keygroup::{assign_to_key_group, key_group_range_for_subtask};

    #[test]
    fn keys_of_other_subtasks_are_refused_with_an_explanation() {
        let range = key_group_range_for_subtask(128, 2, 0);
        let mut t: KeyedTable<u64, u64> = KeyedTable::new(128, range);
        let foreign = (0..1000u64)
            .find(|k| !range.contains(assign_to_key_group(k, 128)))
            .unwrap();
        let err = t.get_or_insert_with(&foreign, || 0).unwrap_err();
        assert!(err.to_string().contains("key_by"), "{err}");
        assert!(t.is_empty());
    }

    /// Groups filled on several threads hold what one thread would have put there, the
    /// length adds up, a key of another group is refused, and an error comes back.
    #[test]
    fn groups_are_restored_on_several_threads() {
        let range = key_group_range_for_subtask(32, 1, 0);
        for threads in [1, 3] {
            let mut t: KeyedTable<u64, u64> = KeyedTable::new(32, range);
            let seen = t
                .restore_groups(threads, |kg, w| -> Result<usize, String> {
                    let mine: Vec<u64> = (0..1_000u64)
                        .filter(|k| assign_to_key_group(k, 32) == kg)
                        .collect();
                    w.reserve(mine.len());
                    for k in &mine {
                        *w.get_or_insert_with(k, || 0).map_err(|e| e.to_string())? = k * 2;
                    }
                    Ok(mine.len())
                })
                .unwrap();
            assert_eq!(seen.iter().sum::<usize>(), 1_000);
            assert_eq!(t.len(), 1_000);
            assert!((0..1_000u64).all(|k| t.get(&k) == Some(&(k * 2))));
            let err = t
                .restore_groups(threads, |kg, w| -> Result<(), String> {
                    let foreign = (0..100u64)
                        .find(|k| assign_to_key_group(k, 32) != kg)
                        .unwrap();
                    w.get_or_insert_with(&foreign, || 0)
                        .map_err(|e| e.to_string())?;
                    Ok(())
                })
                .unwrap_err();
            assert!(err.contains("key_by"), "{err}");
        }
    }

    #[test]
    fn insert_get_remove_and_group_iteration() {
        let range = key_group_range_for_subtask(16, 1, 0);
        let mut t: KeyedTable<u64, u64> = KeyedTable::new(16, range);
        for k in 0..100 {
            *t.get_or_insert_with(&k, || 0).unwrap() += k;
        }
        assert_eq!(t.len(), 100);
        assert_eq!(t.remove(&7), Some(7));
        assert_eq!(t.get(&7), None);
        let total: usize = range.iter().map(|kg| t.iter_group(kg).count()).sum();
        assert_eq!(total, 99);
        assert_eq!(t.iter().count(), 99);
    }
}
