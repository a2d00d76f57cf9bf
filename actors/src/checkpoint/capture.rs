//! What one subtask contributes to a checkpoint, and what a new deployment gets back.
//!
//! A subtask's snapshot is one blob, a [`SubtaskState`]: the state of each chained operator
//! ([`OperatorEntry`]), the input watermarks, and — for unaligned checkpoints — the in-flight
//! data of its input lanes ([`LaneRecord`]) and the output its barrier overtook
//! ([`OutputRecord`]). [`capture_queued`] reads a lane's in-flight data from its queue.
//! [`RestorePlan`] decodes a stored checkpoint and hands each operator instance of a new
//! deployment its share (key groups of its range, an even split of list items, every union
//! item) and each subtask its lane-level state.
//!
//! The subtask's recording of in-flight data and the coordinator actor that collects these
//! blobs are in [`runtime`](crate::runtime), above.

use crate::checkpoint::snapshot::Snapshot;
use crate::checkpoint::types::{OperatorState, RestoredState};
use crate::dataplane::lane::LaneReceiver;
use crate::dataplane::message::{StreamMessage, WatermarkStatus};
use crate::error::BuildError;
use crate::state::keygroup::KeyGroupRange;
use crate::state::operator_state::{Redistribution, redistribute};
use crate::time::valve::WatermarkValve;
use crate::types::{CheckpointId, KeyGroup};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use tracing::warn;

/// One item of an input lane's in-flight data (unaligned checkpoints).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum InFlight {
    /// A batch, serialized with its record type.
    Data(#[serde(with = "crate::checkpoint::bytes::vec")] Vec<u8>),
    Watermark(i64),
    Status(WatermarkStatus),
}

/// The in-flight data of one input lane.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct LaneRecord {
    pub(crate) lane: usize,
    pub(crate) items: Vec<InFlight>,
}

/// One operator's state inside a subtask's snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct OperatorEntry {
    /// The operator's stable key: its `uid`, or its name and graph position.
    pub(crate) key: String,
    pub(crate) max_parallelism: u32,
    pub(crate) state: OperatorState,
}

/// What one subtask stores for one checkpoint (one blob).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SubtaskState {
    /// The key of the chain's head operator, with `index` and `parallelism` identifying the
    /// subtask for the lane-level state below.
    pub(crate) head: String,
    pub(crate) index: usize,
    pub(crate) parallelism: u32,
    pub(crate) lanes: usize,
    pub(crate) operators: Vec<OperatorEntry>,
    /// The input watermarks per lane.
    pub(crate) valve: Option<WatermarkValve>,
    /// Unaligned: the data each lane delivered after the snapshot and before its barrier.
    pub(crate) in_flight: Vec<LaneRecord>,
    /// Unaligned: the output the barrier overtook, still waiting in this subtask's network
    /// writers (Flink's output channel state).
    pub(crate) out_flight: Vec<OutputRecord>,
}

/// A message as in-flight data; `None` for barriers and ends of input (not recorded).
pub(crate) fn in_flight_of(msg: &StreamMessage) -> Option<Result<InFlight, String>> {
    match msg {
        StreamMessage::Data(batch) => Some(batch.encode().map(InFlight::Data)),
        StreamMessage::Watermark(wm) => Some(Ok(InFlight::Watermark(wm.0))),
        StreamMessage::Status(s) => Some(Ok(InFlight::Status(*s))),
        StreamMessage::Barrier(_) | StreamMessage::EndOfInput => None,
    }
}

/// An unaligned checkpoint's in-flight data of one lane, read from its queue without taking
/// anything: the messages before checkpoint `id`'s barrier (or the end of input), skipping the
/// first `skip` that an earlier scan captured already. Also says whether the barrier (or the
/// end) was found, which completes the lane.
///
/// # Errors
///
/// If a batch cannot be encoded.
pub(crate) fn capture_queued(
    rx: &LaneReceiver<StreamMessage>,
    id: CheckpointId,
    mut skip: usize,
) -> Result<(Vec<InFlight>, bool), String> {
    let mut items = Vec::new();
    let mut done = false;
    let mut failed = None;
    rx.for_each_queued(|m| {
        if done || failed.is_some() {
            return;
        }
        match m {
            StreamMessage::Barrier(b) if b.id >= id => done = true,
            StreamMessage::EndOfInput => done = true,
            other => match in_flight_of(other) {
                Some(_) if skip > 0 => skip -= 1,
                Some(Ok(item)) => items.push(item),
                Some(Err(e)) => failed = Some(e),
                None => {}
            },
        }
    });
    match failed {
        Some(e) => Err(e),
        None => Ok((items, done)),
    }
}

/// The lane-level state a restored subtask starts from.
#[derive(Debug, Default)]
pub(crate) struct LaneRestore {
    /// Input watermarks per lane.
    pub(crate) valve: Option<WatermarkValve>,
    /// In-flight input to process before anything new.
    pub(crate) input: Vec<LaneRecord>,
    /// Overtaken output to send before anything new.
    pub(crate) output: Vec<OutputRecord>,
}

/// Output of one network tail's channel that an unaligned barrier overtook.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct OutputRecord {
    /// Which network tail of the subtask (in chain order).
    pub(crate) tail: usize,
    /// The tail's number of channels when the snapshot was taken.
    pub(crate) channels: usize,
    pub(crate) channel: usize,
    pub(crate) items: Vec<InFlight>,
}

/// A subtask's encoded snapshot: its state blob, the chunks it wrote (incremental keyed
/// state), and the chunks of earlier checkpoints its chains list.
pub(crate) struct EncodedState {
    pub(crate) state: Vec<u8>,
    pub(crate) chunks: Vec<(crate::checkpoint::snapshot::BlobEntry, Vec<u8>)>,
    pub(crate) shared: Vec<crate::checkpoint::snapshot::BlobEntry>,
    /// Bytes of in-flight data (input and output) the state holds: unaligned checkpoints.
    pub(crate) in_flight_bytes: u64,
}

impl SubtaskState {
    /// Bytes of recorded in-flight batches, input and output.
    pub(crate) fn in_flight_bytes(&self) -> u64 {
        let size = |items: &[InFlight]| {
            items
                .iter()
                .map(|i| match i {
                    InFlight::Data(b) => b.len() as u64,
                    InFlight::Watermark(_) | InFlight::Status(_) => 0,
                })
                .sum::<u64>()
        };
        self.in_flight.iter().map(|r| size(&r.items)).sum::<u64>()
            + self.out_flight.iter().map(|r| size(&r.items)).sum::<u64>()
    }
}

/// Facts about a checkpoint kept in its manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CheckpointMeta {
    pub(crate) job: String,
    pub(crate) generation: u64,
    pub(crate) is_final: bool,
    pub(crate) unaligned: bool,
}

struct OpRestore {
    max_parallelism: u32,
    old_parallelism: usize,
    /// State of each old instance, by old index, without its keyed groups.
    instances: BTreeMap<usize, OperatorState>,
    /// The keyed groups of all old instances. Each goes to exactly one new instance, so it is
    /// moved out when handed over, not copied.
    keyed: std::sync::Mutex<BTreeMap<KeyGroup, Vec<u8>>>,
    /// The same for key groups kept as chains (incremental checkpoints): their chunks' bytes.
    layers: std::sync::Mutex<BTreeMap<KeyGroup, Vec<Vec<u8>>>>,
    has_keyed: bool,
}

struct LaneState {
    parallelism: u32,
    lanes: usize,
    valve: Option<WatermarkValve>,
    in_flight: Vec<LaneRecord>,
    out_flight: Vec<OutputRecord>,
}

/// A stored checkpoint, decoded and indexed for the subtasks of a new deployment.
pub(crate) struct RestorePlan {
    pub(crate) checkpoint: CheckpointId,
    ops: HashMap<String, OpRestore>,
    subtasks: HashMap<(String, usize), LaneState>,
    placed: std::sync::Mutex<HashSet<String>>,
}

/// Names of the chunk blobs of incremental keyed state start so (see
/// [`incremental`](crate::checkpoint::incremental)); subtask state blobs never do.
pub(crate) const CHUNK_PREFIX: &str = "chunk/";

/// Moves the entries of key groups in `range` out of `all`.
fn take_range<V>(all: &mut BTreeMap<KeyGroup, V>, range: KeyGroupRange) -> BTreeMap<KeyGroup, V> {
    let mut mine = all.split_off(&KeyGroup(range.start));
    let mut above = mine.split_off(&KeyGroup(range.end));
    all.append(&mut above);
    mine
}

fn restore_error(id: CheckpointId, message: String) -> BuildError {
    BuildError::InvalidConfig(format!("cannot restore checkpoint {id}: {message}"))
}

impl RestorePlan {
    /// Decodes every subtask blob of `snapshot`.
    pub(crate) fn new(snapshot: &Snapshot) -> Result<Self, BuildError> {
        let id = snapshot.manifest.id;
        let mut ops: HashMap<String, OpRestore> = HashMap::new();
        let mut subtasks = HashMap::new();
        for (name, bytes) in &snapshot.blobs {
            if name.starts_with(CHUNK_PREFIX) {
                continue; // read through the chains that name it
            }
            let st: SubtaskState = postcard::from_bytes(bytes)
                .map_err(|e| restore_error(id, format!("blob {name:?} is unreadable: {e}")))?;
            for mut op in st.operators {
                op.state.resolve_chains(&snapshot.blobs).map_err(|e| {
                    restore_error(id, format!("blob {name:?}, operator {:?}: {e}", op.key))
                })?;
                let entry = ops.entry(op.key.clone()).or_insert(OpRestore {
                    max_parallelism: op.max_parallelism,
                    old_parallelism: st.parallelism as usize,
                    instances: BTreeMap::new(),
                    keyed: Default::default(),
                    layers: Default::default(),
                    has_keyed: false,
                });
                let keyed = std::mem::take(&mut op.state.keyed);
                let layers = std::mem::take(&mut op.state.layers);
                entry.has_keyed |= !keyed.is_empty() || !layers.is_empty();
                if let Ok(mut all) = entry.keyed.lock() {
                    all.extend(keyed);
                }
                if let Ok(mut all) = entry.layers.lock() {
                    all.extend(layers);
                }
                entry.instances.insert(st.index, op.state);
            }
            subtasks.insert(
                (st.head, st.index),
                LaneState {
                    parallelism: st.parallelism,
                    lanes: st.lanes,
                    valve: st.valve,
                    in_flight: st.in_flight,
                    out_flight: st.out_flight,
                },
            );
        }
        Ok(RestorePlan {
            checkpoint: id,
            ops,
            subtasks,
            placed: std::sync::Mutex::new(HashSet::new()),
        })
    }

    /// The state of operator `key`'s instance `index` of `parallelism`, owning `range` of
    /// `max_parallelism` key groups; `None` if the checkpoint has no state for the operator.
    pub(crate) fn for_operator(
        &self,
        key: &str,
        index: usize,
        parallelism: u32,
        max_parallelism: u32,
        range: KeyGroupRange,
    ) -> Result<Option<RestoredState>, BuildError> {
        let Some(op) = self.ops.get(key) else {
            return Ok(None);
        };
        if let Ok(mut placed) = self.placed.lock() {
            placed.insert(key.to_string());
        }
        if op.has_keyed && op.max_parallelism != max_parallelism {
            return Err(restore_error(
                self.checkpoint,
                format!(
                    "operator {key:?} has keyed state for max parallelism {}, the job now has {max_parallelism}; the max parallelism cannot change",
                    op.max_parallelism
                ),
            ));
        }
        let mut state = OperatorState::default();
        if let Ok(mut all) = op.keyed.lock() {
            state.keyed = take_range(&mut all, range);
        }
        if let Ok(mut all) = op.layers.lock() {
            state.layers = take_range(&mut all, range);
        }
        for s in op.instances.values() {
            state.union.extend(s.union.iter().cloned());
        }
        let old: Vec<Vec<Vec<u8>>> = op.instances.values().map(|s| s.items.clone()).collect();
        let mut split = redistribute(Redistribution::EvenSplit, old, parallelism as usize);
        if index < split.len() {
            state.items = std::mem::take(&mut split[index]);
        }
        let same_index = (op.old_parallelism == parallelism as usize).then_some(index);
        Ok(Some(RestoredState { state, same_index }))
    }

    /// The lane-level state (input watermarks, in-flight data) of subtask `index` of the chain
    /// headed by `head`, if the checkpoint was taken at the same parallelism and lanes.
    pub(crate) fn for_lanes(
        &self,
        head: &str,
        index: usize,
        parallelism: u32,
        lanes: usize,
    ) -> Result<LaneRestore, BuildError> {
        let Some(s) = self.subtasks.get(&(head.to_string(), index)) else {
            return Ok(LaneRestore::default());
        };
        if s.parallelism == parallelism && s.lanes == lanes {
            return Ok(LaneRestore {
                valve: s.valve.clone(),
                input: s.in_flight.clone(),
                output: s.out_flight.clone(),
            });
        }
        let in_flight = s.in_flight.iter().any(|l| !l.items.is_empty())
            || s.out_flight.iter().any(|l| !l.items.is_empty());
        if in_flight {
            return Err(restore_error(
                self.checkpoint,
                format!(
                    "it is an unaligned checkpoint with in-flight data at {head:?}, which was at \
                     parallelism {} and cannot be rescaled; restore it at the same parallelism, \
                     or take a savepoint (always aligned) and rescale from that",
                    s.parallelism
                ),
            ));
        }
        Ok(LaneRestore::default())
    }

    /// Refuses a restore that leaves state of an operator unplaced, unless allowed.
    pub(crate) fn check_all_placed(&self, allow: bool) -> Result<(), BuildError> {
        let placed = self.placed.lock().map(|p| p.clone()).unwrap_or_default();
        let mut missing: Vec<&String> = self
            .ops
            .iter()
            .filter(|(k, op)| {
                !placed.contains(*k)
                    && (op.has_keyed || op.instances.values().any(|s| !s.is_empty()))
            })
            .map(|(k, _)| k)
            .collect();
        missing.sort();
        if missing.is_empty() {
            return Ok(());
        }
        if allow {
            warn!(checkpoint = %self.checkpoint, ?missing, "state of operators the job no longer has is skipped (allow non-restored state)");
            return Ok(());
        }
        Err(restore_error(
            self.checkpoint,
            format!(
                "it holds state of operators this job does not have: {missing:?}. Give operators \
                 stable ids with uid(...), or allow non-restored state to skip it"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::data::{Batch, DataBatch};
    use crate::dataplane::lane::lane;
    use crate::dataplane::message::BarrierAlignment;
    use crate::dataplane::message::{CheckpointBarrier, CheckpointKind};
    use crate::types::Watermark;

    fn barrier(id: u64) -> StreamMessage {
        StreamMessage::Barrier(CheckpointBarrier {
            id: CheckpointId(id),
            timestamp_ms: 0,
            kind: CheckpointKind::Checkpoint,
            alignment: BarrierAlignment::Unaligned,
        })
    }

    fn data(v: &[u64]) -> StreamMessage {
        StreamMessage::Data(DataBatch::new(Batch::from_values(v.to_vec())))
    }

    fn decoded(items: &[InFlight]) -> Vec<String> {
        items
            .iter()
            .map(|i| match i {
                InFlight::Data(bytes) => format!(
                    "{:?}",
                    DataBatch::decode::<u64>(bytes)
                        .unwrap()
                        .downcast::<u64>()
                        .unwrap()
                        .into_values()
                ),
                InFlight::Watermark(w) => format!("wm {w}"),
                InFlight::Status(s) => format!("{s:?}"),
            })
            .collect()
    }

    /// The receiver's half of an unaligned checkpoint: the in-flight data of a lane is what
    /// is queued before the checkpoint's barrier, read without taking it; a later scan skips
    /// what an earlier one captured; a lane whose barrier is not queued yet stays open.
    #[test]
    fn in_flight_data_is_captured_from_the_queue_up_to_the_barrier() {
        let (tx, rx) = lane::<StreamMessage>(100, std::sync::Arc::new(tokio::sync::Notify::new()));
        tx.try_send(data(&[1, 2])).unwrap();
        tx.try_send(StreamMessage::Watermark(Watermark(5))).unwrap();
        let (items, done) = capture_queued(&rx, CheckpointId(7), 0).unwrap();
        assert_eq!(decoded(&items), ["[1, 2]", "wm 5"]);
        assert!(!done, "the barrier is not queued yet");
        tx.try_send(data(&[3])).unwrap();
        tx.try_send(barrier(7)).unwrap();
        tx.try_send(data(&[4])).unwrap();
        // Two messages were captured before: only the rest up to the barrier is new.
        let (items, done) = capture_queued(&rx, CheckpointId(7), 2).unwrap();
        assert_eq!(decoded(&items), ["[3]"]);
        assert!(done);
        // Nothing was taken from the lane.
        assert!(matches!(rx.try_recv(), Ok(StreamMessage::Data(b)) if b.len() == 2));
        // An older checkpoint's barrier does not end the capture; the end of input does.
        let (tx, rx) = lane::<StreamMessage>(100, std::sync::Arc::new(tokio::sync::Notify::new()));
        tx.try_send(barrier(6)).unwrap();
        tx.try_send(data(&[8])).unwrap();
        tx.try_send(StreamMessage::EndOfInput).unwrap();
        let (items, done) = capture_queued(&rx, CheckpointId(7), 0).unwrap();
        assert_eq!(decoded(&items), ["[8]"]);
        assert!(done);
    }

    /// Damaged blob bytes never panic the restore: decoding a bit-flipped or random subtask
    /// blob either fails with an error naming the checkpoint and the blob, or yields state
    /// that the operators decode (and check) themselves.
    #[test]
    fn decoding_damaged_subtask_blobs_never_panics() {
        use crate::checkpoint::snapshot::{Manifest, Snapshot};
        use crate::types::KeyGroup;
        let mut op = OperatorState::default();
        op.put_group(KeyGroup(3), &vec![(1u64, "a".to_string())])
            .unwrap();
        op.push_item(&42u64).unwrap();
        op.push_union(0, &"u".to_string()).unwrap();
        let good = postcard::to_allocvec(&SubtaskState {
            head: "src#0".into(),
            index: 0,
            parallelism: 2,
            lanes: 1,
            operators: vec![OperatorEntry {
                key: "window#1".into(),
                max_parallelism: 128,
                state: op,
            }],
            valve: Some(WatermarkValve::new(1)),
            in_flight: vec![LaneRecord {
                lane: 0,
                items: vec![InFlight::Watermark(5)],
            }],
            out_flight: Vec::new(),
        })
        .unwrap();
        let mut seed = 0x1234_5678_u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            seed >> 33
        };
        let mut errors = 0;
        for round in 0..5_000 {
            let mut bytes = if round % 5 == 0 {
                (0..next() % 200).map(|_| next() as u8).collect()
            } else {
                good.clone()
            };
            if round % 5 != 0 {
                for _ in 0..1 + next() % 3 {
                    let i = (next() as usize) % bytes.len();
                    bytes[i] ^= 1 << (next() % 8);
                }
                if round % 7 == 0 {
                    bytes.truncate((next() as usize) % bytes.len());
                }
            }
            let snapshot = Snapshot {
                manifest: Manifest {
                    version: crate::checkpoint::snapshot::FORMAT_VERSION,
                    id: CheckpointId(11),
                    kind: CheckpointKind::Checkpoint,
                    triggered_ms: 0,
                    blobs: Vec::new(),
                    metadata: Vec::new(),
                },
                blobs: [("subtask-0-0".to_string(), bytes)].into_iter().collect(),
            };
            match RestorePlan::new(&snapshot) {
                Err(e) => {
                    let e = e.to_string();
                    assert!(
                        e.contains("checkpoint 11") && e.contains("subtask-0-0"),
                        "{e}"
                    );
                    errors += 1;
                }
                Ok(plan) => {
                    let range = crate::state::keygroup::KeyGroupRange { start: 0, end: 128 };
                    for key in ["window#1", "other"] {
                        let _ = plan.for_operator(key, 0, 2, 128, range);
                    }
                    let _ = plan.for_lanes("src#0", 0, 2, 1);
                }
            }
        }
        assert!(
            errors > 1_000,
            "only {errors} of 5000 damaged blobs were refused"
        );
    }
}
