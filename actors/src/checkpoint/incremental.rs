//! Incremental checkpoints of keyed state: a changelog per key group, materialised now and
//! then.
//!
//! With incremental checkpoints on, a keyed operator keeps each key group as a **chain** of
//! chunks, each a blob of the checkpoint that wrote it: a full **base** (every key of the
//! group), then **deltas** (the keys written or removed since the previous checkpoint; see
//! [`KeyedTable::take_changes`](crate::state::table::KeyedTable::take_changes)). A checkpoint
//! writes, per key group:
//!
//! * nothing, if no key of the group changed: the group's chain is listed again;
//! * a delta, if some did: the chain grows by one chunk;
//! * a new base, when the deltas of the chain add up to more than about half of the base
//!   ([`rebase_share`]: 50–100 %) or the chain is [`max_chain`] (32–63) chunks long — both
//!   different per group — and it is the group's turn: one checkpoint rebases at most one in
//!   32 of the operator's groups (the most due first; a group twice due always), so rebasing
//!   never adds more than ~3 % of the state to one checkpoint. Reading a chain back stays
//!   within about three times a full read.
//!
//! Chunks written by an earlier checkpoint are **shared**: a later manifest lists them again
//! ([`BlobEntry::owner`] names the checkpoint that stored them) and the store keeps them as
//! long as any manifest lists one ([`SnapshotStore::remove`](crate::checkpoint::snapshot::SnapshotStore::remove)).
//!
//! **What a delta builds on.** Only a checkpoint known to be complete: the operator adopts the
//! chains of checkpoint `n` when it is told `n` completed. If the previous checkpoint it took
//! was not confirmed (aborted, declined, or still pending), every group is written as a new
//! base, so a chain never names a chunk of a checkpoint that does not exist. Savepoints and the
//! final state of a finished subtask are always written whole (self-contained), and leave the
//! chains and the recorded changes as they were; the first checkpoint after a restore writes
//! bases too.
//!
//! **Formats.** A base is the group's usual blob (`Vec<(K, V)>`), a delta is a [`Delta`];
//! [`merge_chain`] reads a chain back into the group's `(key, value)` pairs. Timers are not in
//! the chains: operators write them whole with every checkpoint.

use crate::checkpoint::snapshot::BlobEntry;
use crate::checkpoint::types::{KeyedParts, SnapshotContext, encode};
use crate::error::UserError;
use crate::state::table::{ChangedKeys, FrozenTable, KeyedTable};
use crate::types::{CheckpointId, KeyGroup};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// The longest chain before a group is written whole again, for the group that rebases
/// soonest; others allow up to twice as many chunks (see [`max_chain`]).
pub const MAX_CHAIN: usize = 32;

/// The longest chain of key group `kg`: 32 to 63 chunks, spread over the groups so that
/// they do not all rebase in the same checkpoint.
pub fn max_chain(kg: KeyGroup) -> usize {
    MAX_CHAIN + (kg.0.wrapping_mul(37) % 32) as usize
}

/// How much of its base a group's deltas may add up to before it rebases: 50 % to just
/// under 100 %, spread over the groups as [`max_chain`] is.
pub fn rebase_share(kg: KeyGroup) -> f64 {
    0.5 + f64::from(kg.0.wrapping_mul(37) % 64) / 128.0
}

/// How due a chain is for a new base: 1 at [`rebase_share`] or [`max_chain`], more beyond.
fn due(kg: KeyGroup, c: &Chain) -> f64 {
    let by_bytes = c.delta_len() as f64 / (c.base_len().max(1) as f64 * rebase_share(kg));
    let by_length = c.entries.len() as f64 / max_chain(kg) as f64;
    by_bytes.max(by_length)
}

/// The groups of `chains` to rebase in one checkpoint: of those due, the most due first, at
/// most one in 32 of the groups (so rebasing adds at most ~3 % of the state to a checkpoint),
/// and every one twice due whatever the budget.
fn rebase_set(chains: &HashMap<KeyGroup, Chain>) -> std::collections::HashSet<KeyGroup> {
    let mut dues: Vec<(f64, KeyGroup)> = chains
        .iter()
        .map(|(kg, c)| (due(*kg, c), *kg))
        .filter(|(d, _)| *d >= 1.0)
        .collect();
    dues.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let budget = chains.len().div_ceil(32).max(1);
    dues.iter()
        .enumerate()
        .filter(|(i, (d, _))| *i < budget || *d >= 2.0)
        .map(|(_, (_, kg))| *kg)
        .collect()
}

/// The keys of a key group written or removed since the chunk before it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Delta<K, V> {
    /// Keys no longer present.
    pub removed: Vec<K>,
    /// Keys with their new value.
    pub changed: Vec<(K, V)>,
}

/// One key group's chain as a checkpoint left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// Base first, then the deltas.
    pub entries: Vec<BlobEntry>,
}

impl Chain {
    fn base_len(&self) -> u64 {
        self.entries.first().map_or(0, |e| e.len)
    }

    fn delta_len(&self) -> u64 {
        self.entries.iter().skip(1).map(|e| e.len).sum()
    }
}

/// An operator's incremental bookkeeping (one per keyed operator instance).
#[derive(Debug, Default)]
pub struct Incremental {
    /// The chains of the newest checkpoint known to be complete.
    confirmed: HashMap<KeyGroup, Chain>,
    confirmed_id: Option<CheckpointId>,
    /// The newest checkpoint snapshot taken (savepoints and final states aside).
    last_taken: Option<CheckpointId>,
    /// The chains each taken checkpoint produced, filled in by its asynchronous part.
    produced: Arc<Mutex<BTreeMap<CheckpointId, HashMap<KeyGroup, Chain>>>>,
}

/// How one snapshot writes each key group, decided at the barrier.
#[derive(Debug)]
pub struct Plan {
    id: CheckpointId,
    prefix: String,
    /// `None`: write every group whole, inside the state blob (not incremental).
    chains: Option<HashMap<KeyGroup, Chain>>,
    /// Deltas may extend the confirmed chains.
    deltas: bool,
    /// Groups that write a new base if they changed.
    rebase: std::collections::HashSet<KeyGroup>,
    produced: Arc<Mutex<BTreeMap<CheckpointId, HashMap<KeyGroup, Chain>>>>,
}

/// What a [`Plan`] asks for one key group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupWrite {
    /// The group's bytes inside the state blob (not incremental).
    Whole,
    /// A new base chunk.
    Base,
    /// A delta chunk of the changed keys, on top of the group's chain.
    Delta,
    /// Nothing changed: the chain is listed again.
    Unchanged,
}

impl Incremental {
    /// Decides, at the barrier of checkpoint `id`, how the snapshot writes its groups. The
    /// table's recorded changes are to be taken for an incremental plan
    /// ([`Plan::is_incremental`]); a whole snapshot leaves them for the next checkpoint.
    pub fn plan(&mut self, id: CheckpointId, context: &SnapshotContext) -> Plan {
        if !context.incremental {
            return Plan {
                id,
                prefix: String::new(),
                chains: None,
                deltas: false,
                rebase: Default::default(),
                produced: self.produced.clone(),
            };
        }
        let deltas = self.confirmed_id.is_some() && self.confirmed_id == self.last_taken;
        self.last_taken = Some(id);
        Plan {
            id,
            prefix: context.chunk_prefix.clone(),
            chains: Some(if deltas {
                self.confirmed.clone()
            } else {
                HashMap::new()
            }),
            deltas,
            rebase: if deltas {
                rebase_set(&self.confirmed)
            } else {
                Default::default()
            },
            produced: self.produced.clone(),
        }
    }

    /// Checkpoint `id` completed: its chains become the ones later deltas build on.
    pub fn confirm(&mut self, id: CheckpointId) {
        let Ok(mut produced) = self.produced.lock() else {
            return;
        };
        if let Some(chains) = produced.remove(&id) {
            self.confirmed = chains;
            self.confirmed_id = Some(id);
        }
        produced.retain(|i, _| *i > id);
    }

    /// Forgets the chains (after a restore: the next checkpoint writes bases).
    pub fn reset(&mut self) {
        self.confirmed.clear();
        self.confirmed_id = None;
        self.last_taken = None;
        if let Ok(mut p) = self.produced.lock() {
            p.clear();
        }
    }
}

impl Plan {
    /// True if the snapshot is incremental (groups go into chains, not the state blob).
    pub fn is_incremental(&self) -> bool {
        self.chains.is_some()
    }

    /// How group `kg` is to be written, given whether any of its keys changed and whether
    /// it holds anything.
    pub fn write_of(&self, kg: KeyGroup, changed: bool, empty: bool) -> GroupWrite {
        let Some(chains) = &self.chains else {
            return GroupWrite::Whole;
        };
        match chains.get(&kg) {
            Some(_) if !changed && self.deltas => GroupWrite::Unchanged,
            Some(_) if self.deltas && !empty => {
                if self.rebase.contains(&kg) {
                    GroupWrite::Base
                } else {
                    GroupWrite::Delta
                }
            }
            _ => GroupWrite::Base,
        }
    }

    /// Writes the snapshot's parts: `whole` holds the groups written whole (not incremental)
    /// and `chunks` the new base or delta chunk of each group that needs one, with what it
    /// is; unchanged groups keep their chain, empty groups have none.
    ///
    /// # Errors
    ///
    /// If a delta names a group without a chain (a bug in the operator).
    pub fn finish(
        self,
        whole: Vec<(KeyGroup, Vec<u8>)>,
        chunks: Vec<(KeyGroup, GroupWrite, Vec<u8>)>,
        unchanged: Vec<KeyGroup>,
    ) -> Result<KeyedParts, UserError> {
        let Some(mut chains) = self.chains else {
            return Ok(KeyedParts::from(whole));
        };
        let mut out = KeyedParts {
            groups: whole,
            ..KeyedParts::default()
        };
        let mut next: HashMap<KeyGroup, Chain> = HashMap::new();
        for kg in unchanged {
            if let Some(c) = chains.remove(&kg) {
                next.insert(kg, c);
            }
        }
        for (kg, write, bytes) in chunks {
            let name = format!("{}{}/{}", self.prefix, kg.0, self.id.0);
            let entry = BlobEntry::of(self.id, &name, &bytes);
            let chain = match write {
                GroupWrite::Delta => {
                    let mut c = chains.remove(&kg).ok_or_else(|| {
                        format!("key group {kg}: a delta without a chain to extend")
                    })?;
                    c.entries.push(entry.clone());
                    c
                }
                _ => Chain {
                    entries: vec![entry.clone()],
                },
            };
            out.chunks.push((entry, bytes));
            next.insert(kg, chain);
        }
        out.chains = next
            .iter()
            .map(|(kg, c)| (*kg, c.entries.clone()))
            .collect();
        out.chains.sort_by_key(|(kg, _)| *kg);
        if let Ok(mut produced) = self.produced.lock() {
            produced.insert(self.id, next);
        }
        Ok(out)
    }
}

/// The keys each key group changed since the last [`KeyedTable::take_changes`], by group.
pub type Changes<K> = HashMap<KeyGroup, ChangedKeys<K>>;

impl Incremental {
    /// [`plan`](Self::plan) for an operator whose keyed state is `table`: an incremental plan
    /// starts (or goes on) recording the table's changes and takes those made since the last
    /// checkpoint; a whole snapshot leaves them for the next one.
    pub fn plan_table<K: Hash + Eq + Clone, V: Clone>(
        &mut self,
        id: CheckpointId,
        context: &SnapshotContext,
        table: &mut KeyedTable<K, V>,
    ) -> (Plan, Changes<K>) {
        let plan = self.plan(id, context);
        if !plan.is_incremental() {
            return (plan, Changes::new());
        }
        // From the first incremental checkpoint on (it writes every group whole).
        table.track_changes();
        (plan, table.take_changes().into_iter().collect())
    }
}

/// Each key group of a frozen table as `plan` asks: whole, a base (`Vec<(K, X)>` of every
/// key that holds something) or a [`Delta`] of the keys in `changes`, with what it is;
/// unchanged groups are listed apart, groups that hold nothing get no bytes. `holds` says
/// whether an entry holds anything, `value` is what a held entry is written as.
///
/// # Errors
///
/// The first error of `value`, or of encoding.
#[allow(clippy::type_complexity)] // (group, write, bytes) and the unchanged groups
pub fn table_groups<'f, K, V, X>(
    frozen: &'f FrozenTable<K, V>,
    changes: &Changes<K>,
    plan: &Plan,
    holds: impl Fn(&V) -> bool,
    value: impl Fn(&'f V) -> Result<X, UserError>,
) -> Result<(Vec<(KeyGroup, GroupWrite, Vec<u8>)>, Vec<KeyGroup>), UserError>
where
    K: Hash + Eq + Serialize,
    X: Serialize,
{
    let mut written = Vec::new();
    let mut unchanged = Vec::new();
    for (kg, table) in frozen.groups() {
        let changed = changes.get(&kg);
        let empty = !table.iter().any(|(_, v)| holds(v));
        let write = plan.write_of(kg, changed.is_some(), empty);
        let bytes = match write {
            GroupWrite::Unchanged => {
                unchanged.push(kg);
                continue;
            }
            _ if empty => continue,
            GroupWrite::Delta => {
                let mut delta: Delta<&K, X> = Delta {
                    removed: Vec::new(),
                    changed: Vec::new(),
                };
                for k in changed.into_iter().flat_map(|c| c.iter()) {
                    match frozen.get_in(kg, k) {
                        Some(v) if holds(v) => delta.changed.push((k, value(v)?)),
                        _ => delta.removed.push(k),
                    }
                }
                encode(&delta)?
            }
            GroupWrite::Base | GroupWrite::Whole => {
                let list = table
                    .iter()
                    .filter(|(_, v)| holds(v))
                    .map(|(k, v)| Ok((k, value(v)?)))
                    .collect::<Result<Vec<_>, UserError>>()?;
                encode(&list)?
            }
        };
        written.push((kg, write, bytes));
    }
    Ok((written, unchanged))
}

/// Reads a key group's chain back (base, then deltas in order) into its `(key, value)`
/// pairs, in no particular order.
///
/// # Errors
///
/// If a chunk does not decode, naming the group and the chunk's position.
pub fn merge_chain<'a, K, V>(kg: KeyGroup, layers: &'a [Vec<u8>]) -> Result<Vec<(K, V)>, UserError>
where
    K: Deserialize<'a> + Hash + Eq,
    V: Deserialize<'a>,
{
    let Some((base, deltas)) = layers.split_first() else {
        return Ok(Vec::new());
    };
    let base: Vec<(K, V)> = postcard::from_bytes(base)
        .map_err(|e| format!("key group {kg}: the base chunk does not decode: {e}"))?;
    if deltas.is_empty() {
        return Ok(base);
    }
    let mut map: hashbrown::HashMap<K, V> = base.into_iter().collect();
    for (i, d) in deltas.iter().enumerate() {
        let delta: Delta<K, V> = postcard::from_bytes(d)
            .map_err(|e| format!("key group {kg}: delta chunk {} does not decode: {e}", i + 1))?;
        for k in delta.removed {
            map.remove(&k);
        }
        map.extend(delta.changed);
    }
    Ok(map.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> SnapshotContext {
        SnapshotContext {
            incremental: true,
            chunk_prefix: "chunk/op/".into(),
        }
    }

    /// Deltas only on top of a confirmed checkpoint; unchanged groups listed again; an
    /// unconfirmed previous checkpoint makes the next one write bases.
    #[test]
    fn deltas_build_only_on_confirmed_checkpoints() {
        let mut inc = Incremental::default();
        let plan = inc.plan(CheckpointId(1), &ctx());
        assert!(plan.is_incremental());
        assert_eq!(plan.write_of(KeyGroup(3), true, false), GroupWrite::Base);
        let parts = plan
            .finish(
                Vec::new(),
                vec![(KeyGroup(3), GroupWrite::Base, vec![1; 100])],
                Vec::new(),
            )
            .unwrap();
        assert_eq!(parts.chains.len(), 1);
        inc.confirm(CheckpointId(1));
        let plan = inc.plan(CheckpointId(2), &ctx());
        assert_eq!(
            plan.write_of(KeyGroup(3), false, false),
            GroupWrite::Unchanged
        );
        assert_eq!(plan.write_of(KeyGroup(3), true, false), GroupWrite::Delta);
        let parts = plan
            .finish(
                Vec::new(),
                vec![(KeyGroup(3), GroupWrite::Delta, vec![2; 10])],
                Vec::new(),
            )
            .unwrap();
        let chain = &parts.chains[0].1;
        assert_eq!(chain.len(), 2);
        assert_eq!(
            (chain[0].owner, chain[1].owner),
            (CheckpointId(1), CheckpointId(2))
        );
        // 2 never confirmed (aborted): 3 writes a base.
        let plan = inc.plan(CheckpointId(3), &ctx());
        assert_eq!(plan.write_of(KeyGroup(3), true, false), GroupWrite::Base);
        // A savepoint: whole, and the changes stay for the next checkpoint.
        let plan = inc.plan(CheckpointId(4), &SnapshotContext::default());
        assert!(!plan.is_incremental());
    }

    /// Deltas that outweigh half the base make the group rebase.
    #[test]
    fn long_chains_are_materialised() {
        let mut inc = Incremental::default();
        let mut id = 1;
        let plan = inc.plan(CheckpointId(id), &ctx());
        plan.finish(
            Vec::new(),
            vec![(KeyGroup(0), GroupWrite::Base, vec![0; 100])],
            Vec::new(),
        )
        .unwrap();
        inc.confirm(CheckpointId(id));
        let mut rebased_at = None;
        for _ in 0..20 {
            id += 1;
            let plan = inc.plan(CheckpointId(id), &ctx());
            let w = plan.write_of(KeyGroup(0), true, false);
            if w == GroupWrite::Base {
                rebased_at = Some(id);
                break;
            }
            plan.finish(Vec::new(), vec![(KeyGroup(0), w, vec![0; 10])], Vec::new())
                .unwrap();
            inc.confirm(CheckpointId(id));
        }
        // Group 0 rebases once its deltas reach half its base: after 5 deltas of 10 bytes.
        assert_eq!(rebased_at, Some(7));
    }

    /// Many groups due at once rebase a few per checkpoint (one in 32), the most due first;
    /// a group twice due rebases whatever the budget.
    #[test]
    fn rebasing_is_spread_over_checkpoints() {
        let mut inc = Incremental::default();
        let plan = inc.plan(CheckpointId(1), &ctx());
        let bases = (0..64)
            .map(|g| (KeyGroup(g), GroupWrite::Base, vec![0; 100]))
            .collect();
        plan.finish(Vec::new(), bases, Vec::new()).unwrap();
        inc.confirm(CheckpointId(1));
        let plan = inc.plan(CheckpointId(2), &ctx());
        // Deltas of 60 % of the base: due for the groups whose share is below 60 %; group 1
        // gets 250 %, twice due.
        let deltas = (0..64)
            .map(|g| {
                (
                    KeyGroup(g),
                    GroupWrite::Delta,
                    vec![0; if g == 1 { 250 } else { 60 }],
                )
            })
            .collect();
        plan.finish(Vec::new(), deltas, Vec::new()).unwrap();
        inc.confirm(CheckpointId(2));
        let plan = inc.plan(CheckpointId(3), &ctx());
        let rebased: Vec<u32> = (0..64)
            .filter(|g| plan.write_of(KeyGroup(*g), true, false) == GroupWrite::Base)
            .collect();
        assert_eq!(rebased.len(), 2, "{rebased:?}");
        assert!(rebased.contains(&1), "the most due first: {rebased:?}");
    }

    #[test]
    fn chains_merge_in_order() {
        let base = postcard::to_allocvec(&vec![(1u64, 10u64), (2, 20), (3, 30)]).unwrap();
        let d1 = postcard::to_allocvec(&Delta {
            removed: vec![2u64],
            changed: vec![(1u64, 11u64), (4, 40)],
        })
        .unwrap();
        let d2 = postcard::to_allocvec(&Delta {
            removed: vec![4u64],
            changed: vec![(2u64, 22u64)],
        })
        .unwrap();
        let mut all: Vec<(u64, u64)> = merge_chain(KeyGroup(0), &[base, d1, d2]).unwrap();
        all.sort();
        assert_eq!(all, vec![(1, 11), (2, 22), (3, 30)]);
        let err = merge_chain::<u64, u64>(KeyGroup(5), &[vec![], vec![0xff]]).unwrap_err();
        assert!(err.to_string().contains("key group 5"), "{err}");
    }
}
