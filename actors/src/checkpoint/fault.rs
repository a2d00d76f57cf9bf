//! Failure injection: a [`FaultPlan`] says which subtask fails how and when, for tests, the
//! chaos runner and demos.
//!
//! Each [`Fault`] fires **once per plan** (across restarts: a restarted subtask does not fail
//! again at the same place), unless it is marked `repeat`.
//!
//! A fault is written `ACTION@OPERATOR[#SUBTASK]:WHEN` on command lines ([`FaultPlan::parse`]):
//!
//! * actions: `panic` (the operator panics), `abort` (the subtask's actor is killed without
//!   unwinding through operator code), `exit` (the whole process exits at once, as with
//!   SIGKILL: nothing is flushed), `slow=MS` (the subtask stalls for MS milliseconds);
//! * `OPERATOR`: a substring of the name of the chain (job vertex) the subtask runs;
//! * `WHEN`: `records=N` (after the subtask took N input records) or `checkpoint=K` (when the
//!   subtask takes checkpoint K, or the first one after K that reaches it, if K was aborted
//!   before its barrier arrived).
//!
//! `corrupt-latest` is not a subtask fault: the example flag damages the newest checkpoint in
//! the store before restoring (see `snapshot::SledStore::corrupt_blob`).
//!
//! # Examples
//!
//! ```
//! use actorflow_runtime::checkpoint::fault::{FaultAction, FaultPlan, When};
//! let plan = FaultPlan::parse("panic@window#1:records=5000,exit@window:checkpoint=3").unwrap();
//! assert_eq!(plan.faults()[0].action, FaultAction::Panic);
//! assert_eq!(plan.faults()[0].subtask, Some(1));
//! assert_eq!(plan.faults()[1].when, When::Checkpoint(3));
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// What happens when a fault fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAction {
    /// The operator code panics (caught, reported as the operator's failure).
    Panic,
    /// The subtask's actor stops as if killed: a failure outside operator code.
    Abort,
    /// The process exits immediately with status 137, like SIGKILL.
    Exit,
    /// The subtask stalls for this long (a slow operator).
    Slow(Duration),
}

/// When a fault fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// After the subtask took this many input records (for a source: emitted).
    Records(u64),
    /// When the subtask snapshots this checkpoint.
    Checkpoint(u64),
}

/// One planned fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// What happens.
    pub action: FaultAction,
    /// A substring of the job vertex name.
    pub operator: String,
    /// Which subtask; `None` for every one (the first to get there fires it).
    pub subtask: Option<usize>,
    /// When.
    pub when: When,
}

/// Faults to inject into a job. Cloning shares the "already fired" marks.
#[derive(Debug, Clone, Default)]
pub struct FaultPlan {
    faults: Vec<Fault>,
    fired: Arc<Vec<AtomicBool>>,
}

impl FaultPlan {
    /// A plan of these faults.
    pub fn new(faults: Vec<Fault>) -> Self {
        let fired = Arc::new(faults.iter().map(|_| AtomicBool::new(false)).collect());
        FaultPlan { faults, fired }
    }

    /// The planned faults.
    pub fn faults(&self) -> &[Fault] {
        &self.faults
    }

    /// True if no fault is planned.
    pub fn is_empty(&self) -> bool {
        self.faults.is_empty()
    }

    /// Parses a comma-separated list of faults (see the [module docs](self)).
    ///
    /// # Errors
    ///
    /// A message naming the part that does not parse.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut faults = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = |why: &str| {
                format!("bad fault {part:?}: {why} (expected ACTION@OPERATOR[#SUBTASK]:WHEN)")
            };
            let (action, rest) = part.split_once('@').ok_or_else(|| bad("no '@'"))?;
            let (target, when) = rest.split_once(':').ok_or_else(|| bad("no ':'"))?;
            let action = match action {
                "panic" => FaultAction::Panic,
                "abort" => FaultAction::Abort,
                "exit" => FaultAction::Exit,
                a => match a.strip_prefix("slow=").map(str::parse::<u64>) {
                    Some(Ok(ms)) => FaultAction::Slow(Duration::from_millis(ms)),
                    _ => return Err(bad("the action is panic, abort, exit or slow=MS")),
                },
            };
            let (operator, subtask) = match target.split_once('#') {
                Some((op, i)) => (
                    op,
                    Some(i.parse().map_err(|_| bad("the subtask is not a number"))?),
                ),
                None => (target, None),
            };
            if operator.is_empty() {
                return Err(bad("the operator is empty"));
            }
            let when = match when.split_once('=') {
                Some(("records", n)) => When::Records(n.parse().map_err(|_| bad("bad count"))?),
                Some(("checkpoint", n)) => {
                    When::Checkpoint(n.parse().map_err(|_| bad("bad checkpoint"))?)
                }
                _ => return Err(bad("WHEN is records=N or checkpoint=K")),
            };
            faults.push(Fault {
                action,
                operator: operator.to_string(),
                subtask,
                when,
            });
        }
        Ok(FaultPlan::new(faults))
    }

    /// The hook of one subtask, or `None` if no fault concerns it.
    pub(crate) fn hook(&self, vertex: &str, index: usize) -> Option<FaultHook> {
        let mine: Vec<usize> = self
            .faults
            .iter()
            .enumerate()
            .filter(|(_, f)| vertex.contains(&f.operator) && f.subtask.is_none_or(|s| s == index))
            .map(|(i, _)| i)
            .collect();
        (!mine.is_empty()).then(|| FaultHook {
            plan: self.clone(),
            mine,
            records: 0,
        })
    }
}

/// The faults that concern one subtask, and its record count.
#[derive(Debug, Clone)]
pub(crate) struct FaultHook {
    plan: FaultPlan,
    mine: Vec<usize>,
    records: u64,
}

impl FaultHook {
    fn take(&self, due: impl Fn(&When) -> bool) -> Option<FaultAction> {
        for &i in &self.mine {
            let f = &self.plan.faults[i];
            if due(&f.when)
                && self.plan.fired[i]
                    .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                tracing::warn!(fault = ?f, "injecting a fault");
                return Some(f.action);
            }
        }
        None
    }

    /// `n` more records went in: the fault due now, if any.
    pub(crate) fn on_records(&mut self, n: u64) -> Option<FaultAction> {
        self.records += n;
        let records = self.records;
        self.take(|w| matches!(w, When::Records(r) if records >= *r))
    }

    /// Checkpoint `id` is being taken: the fault due now, if any.
    pub(crate) fn on_checkpoint(&self, id: u64) -> Option<FaultAction> {
        self.take(|w| matches!(w, When::Checkpoint(k) if *k <= id))
    }
}
