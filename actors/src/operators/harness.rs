//! A test harness for one operator: push records, watermarks and processing time by hand and
//! read what it emitted — no job, no threads, no sleeping (RisingWave's executor harness).
//!
//! # Examples
//!
//! ```
//! use actorflow_runtime::operators::harness::OperatorHarness;
//! use actorflow_runtime::operators::MapOperator;
//! let mut h = OperatorHarness::new(MapOperator::new(|x: u64| x + 1)).unwrap();
//! h.process(1, Some(10)).unwrap();
//! h.watermark(10).unwrap();
//! assert_eq!(h.take_output(), vec![(2, Some(10))]);
//! assert_eq!(h.take_watermarks(), vec![10]);
//! ```

use crate::checkpoint::types::{OperatorState, RestoredState};
use crate::dataplane::data::{Batch, Data, DataBatch, Emission, OutputTag};
use crate::dataplane::message::WatermarkStatus;
use crate::error::UserError;
use crate::operators::operator::{ErasedOperator, Operator, OperatorFault, TaskInfo, erase};
use crate::time::clock::{ManualTime, ProcessingClock};
use crate::types::{CheckpointId, Timestamp, Watermark};
use std::marker::PhantomData;

fn fault(f: OperatorFault) -> UserError {
    match f {
        OperatorFault::User(e) => e,
        OperatorFault::Type(t) => t.to_string().into(),
    }
}

/// Drives one operator by hand.
pub struct OperatorHarness<O: Operator> {
    op: Box<dyn ErasedOperator>,
    time: ManualTime,
    emitted: Vec<Emission>,
    chunks: usize,
    wakeup: std::sync::Arc<tokio::sync::Notify>,
    _op: PhantomData<fn() -> O>,
}

impl<O: Operator> std::fmt::Debug for OperatorHarness<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorHarness")
            .field("pending", &self.emitted.len())
            .finish()
    }
}

impl<O: Operator> OperatorHarness<O> {
    /// Opens `op` as subtask 0 of 1 (128 key groups), processing time 0, streaming mode.
    ///
    /// # Errors
    ///
    /// The operator's `open` error.
    pub fn new(op: O) -> Result<Self, UserError> {
        Self::with_info(op, |_| {})
    }

    /// Like [`new`](Self::new), after `configure` adjusted the task description (runtime
    /// mode, watermark interval...).
    ///
    /// # Errors
    ///
    /// The operator's `open` error.
    pub fn with_info(op: O, configure: impl FnOnce(&mut TaskInfo)) -> Result<Self, UserError> {
        let (clock, time) = ProcessingClock::manual(Timestamp(0));
        let mut info = TaskInfo::standalone("harness", 0, 1, 128);
        info.clock = clock;
        configure(&mut info);
        let mut op = erase(op);
        op.open(&info)?;
        Ok(OperatorHarness {
            op,
            time,
            emitted: Vec::new(),
            chunks: 0,
            wakeup: info.wakeup.clone(),
            _op: PhantomData,
        })
    }

    /// Opens `op` (as `configure` describes the task), then restores `restored` into it, as a
    /// subtask of a restarted job does.
    ///
    /// # Errors
    ///
    /// The operator's `open` or `restore_state` error.
    pub fn restored(
        op: O,
        restored: RestoredState,
        configure: impl FnOnce(&mut TaskInfo),
    ) -> Result<Self, UserError> {
        let mut h = Self::with_info(op, configure)?;
        h.op.restore_state(restored)?;
        Ok(h)
    }

    /// The operator's snapshot for checkpoint `id`, as a subtask takes it at a barrier, with
    /// the keyed state it froze already encoded (what the coordinator stores).
    ///
    /// # Errors
    ///
    /// The operator's `snapshot_state` error, or its encoding's.
    pub fn snapshot(&mut self, id: u64) -> Result<OperatorState, UserError> {
        let mut state = self.snapshot_frozen(id)?;
        state.finish_pending()?;
        Ok(state)
    }

    /// The operator's snapshot for checkpoint `id` as the barrier leaves it: keyed state the
    /// operator froze is not encoded yet ([`OperatorState::finish_pending`] does it), so a test
    /// can change the operator's state in between.
    ///
    /// # Errors
    ///
    /// The operator's `snapshot_state` error.
    pub fn snapshot_frozen(&mut self, id: u64) -> Result<OperatorState, UserError> {
        let mut state = OperatorState::default();
        self.op.snapshot_state(CheckpointId(id), &mut state)?;
        Ok(state)
    }

    /// The operator's snapshot for checkpoint `id` with incremental checkpoints on (see
    /// [`incremental`](crate::checkpoint::incremental)), encoded. The chunks it wrote are in
    /// [`OperatorState::take_new_chunks`]; to restore it, resolve its chains against every
    /// chunk written so far ([`OperatorState::resolve_chains`]).
    ///
    /// # Errors
    ///
    /// The operator's `snapshot_state` error, or its encoding's.
    pub fn snapshot_incremental(&mut self, id: u64) -> Result<OperatorState, UserError> {
        let mut state = OperatorState::default();
        state.set_context(crate::checkpoint::types::SnapshotContext {
            incremental: true,
            chunk_prefix: "chunk/harness/".into(),
        });
        self.op.snapshot_state(CheckpointId(id), &mut state)?;
        state.finish_pending()?;
        Ok(state)
    }

    /// Tells the operator that checkpoint `id` completed.
    ///
    /// # Errors
    ///
    /// The operator's error.
    pub fn notify_complete(&mut self, id: u64) -> Result<(), UserError> {
        self.op.notify_checkpoint_complete(CheckpointId(id))?;
        self.collect();
        Ok(())
    }

    fn collect(&mut self) {
        self.op.take_emissions(&mut self.emitted);
    }

    /// Runs work the operator does in chunks (firing many timers) to its end, as the runtime
    /// does between input events; counts the chunks.
    fn settle(&mut self) -> Result<(), UserError> {
        while self.op.has_more() {
            self.chunks += 1;
            let r = self.op.resume().map_err(fault);
            self.collect();
            r?;
        }
        Ok(())
    }

    /// True while the operator waits for asynchronous work and takes no input (see
    /// [`Operator::is_blocked`]).
    pub fn is_blocked(&self) -> bool {
        self.op.is_blocked()
    }

    /// Waits for the operator's asynchronous work (Async I/O requests) to wake it, then runs
    /// what became ready, until `done` holds for the emissions gathered so far (data,
    /// watermarks and statuses, not yet taken) — as the runtime does while it waits. Needs a
    /// tokio runtime; wrap it in a timeout in tests.
    ///
    /// # Errors
    ///
    /// The operator's error.
    pub async fn run_async_until(
        &mut self,
        mut done: impl FnMut(&Self) -> bool,
    ) -> Result<(), UserError> {
        loop {
            self.settle()?;
            if done(self) {
                return Ok(());
            }
            self.wakeup.notified().await;
        }
    }

    /// How many data records were emitted and not yet taken.
    pub fn pending_output(&self) -> usize {
        self.emitted
            .iter()
            .map(|e| match e {
                Emission::Data(b) => b.len(),
                _ => 0,
            })
            .sum()
    }

    /// How many extra chunks long work (timer firings) took so far.
    pub fn chunks(&self) -> usize {
        self.chunks
    }

    /// Processes one record with an optional event timestamp.
    ///
    /// # Errors
    ///
    /// The operator's error.
    pub fn process(&mut self, value: O::In, timestamp: Option<i64>) -> Result<(), UserError> {
        let mut b = Batch::new();
        b.push_opt(value, timestamp.map(Timestamp));
        self.process_batch(b)
    }

    /// Processes a batch.
    ///
    /// # Errors
    ///
    /// The operator's error.
    pub fn process_batch(&mut self, batch: Batch<O::In>) -> Result<(), UserError> {
        let r = self.op.process(0, DataBatch::new(batch)).map_err(fault);
        self.collect();
        r?;
        self.settle()
    }

    /// Advances the input watermark to `watermark`.
    ///
    /// # Errors
    ///
    /// The operator's error.
    pub fn watermark(&mut self, watermark: i64) -> Result<(), UserError> {
        let r = self
            .op
            .process_watermark(Watermark(watermark))
            .map_err(fault);
        self.collect();
        r?;
        self.settle()
    }

    /// Marks the input idle or active.
    ///
    /// # Errors
    ///
    /// The operator's error.
    pub fn status(&mut self, status: WatermarkStatus) -> Result<(), UserError> {
        let r = self.op.process_status(status).map_err(fault);
        self.collect();
        r
    }

    /// Sets processing time to `now` and runs every callback due by then, in time order.
    ///
    /// # Errors
    ///
    /// The operator's error.
    pub fn set_processing_time(&mut self, now: i64) -> Result<(), UserError> {
        self.time.set(Timestamp(now));
        while let Some(due) = self.op.next_processing_time() {
            if due.0 > now {
                break;
            }
            let r = self.op.on_processing_time(Timestamp(now)).map_err(fault);
            self.collect();
            r?;
            self.settle()?;
            if self.op.next_processing_time() == Some(due) {
                break; // the operator did not consume it; avoid spinning
            }
        }
        Ok(())
    }

    /// The processing time the operator would be called back at next.
    pub fn next_processing_time(&self) -> Option<i64> {
        self.op.next_processing_time().map(|t| t.0)
    }

    /// Ends the input.
    ///
    /// # Errors
    ///
    /// The operator's error.
    pub fn finish(&mut self) -> Result<(), UserError> {
        let r = self.op.finish().map_err(fault);
        self.collect();
        r
    }

    /// Removes and returns the main output so far, with timestamps.
    pub fn take_output(&mut self) -> Vec<(O::Out, Option<i64>)> {
        let mut out = Vec::new();
        self.emitted.retain_mut(|e| match e {
            Emission::Data(b) => {
                let b = std::mem::replace(b, DataBatch::new(Batch::<()>::new()));
                if let Ok(b) = b.downcast::<O::Out>() {
                    for (v, t) in b.into_iter_timestamped() {
                        out.push((v, t.map(|t| t.0)));
                    }
                }
                false
            }
            _ => true,
        });
        out
    }

    /// Removes and returns what went to side output `tag`.
    pub fn take_side_output<X: Data>(&mut self, tag: &OutputTag<X>) -> Vec<(X, Option<i64>)> {
        let mut out = Vec::new();
        self.emitted.retain_mut(|e| match e {
            Emission::Side(id, b) if id == tag.id() => {
                let b = std::mem::replace(b, DataBatch::new(Batch::<()>::new()));
                if let Ok(b) = b.downcast::<X>() {
                    for (v, t) in b.into_iter_timestamped() {
                        out.push((v, t.map(|t| t.0)));
                    }
                }
                false
            }
            _ => true,
        });
        out
    }

    /// Removes and returns the watermarks emitted so far.
    pub fn take_watermarks(&mut self) -> Vec<i64> {
        let mut out = Vec::new();
        self.emitted.retain(|e| match e {
            Emission::Watermark(w) => {
                out.push(w.0);
                false
            }
            _ => true,
        });
        out
    }

    /// Removes and returns the watermark status changes emitted so far.
    pub fn take_statuses(&mut self) -> Vec<WatermarkStatus> {
        let mut out = Vec::new();
        self.emitted.retain(|e| match e {
            Emission::Status(s) => {
                out.push(*s);
                false
            }
            _ => true,
        });
        out
    }
}
