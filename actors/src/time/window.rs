//! Windows: the window types, assigners, triggers and evictors of Flink's windowing API.
//!
//! The arithmetic follows Flink's (`TimeWindow.getWindowStartWithOffset`, session merging,
//! `cleanupTime`), including Java's wrapping `long` arithmetic at the extremes, so boundaries,
//! firing times and results equal Flink's for the same input. The operator that runs them is
//! [`WindowOperator`](crate::operators::WindowOperator).

use crate::dataplane::data::Data;
use crate::error::UserError;
use crate::time::timer::TimeDomain;
use crate::types::{Timestamp, Watermark};
use serde::{Deserialize, Serialize};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;

/// A window setting out of range: a size, slide or gap that is not positive, an offset not
/// smaller than the size or slide (Flink throws `IllegalArgumentException` for the same).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WindowConfigError(String);

/// A length of time for window sizes, slides, offsets, gaps and trigger intervals, in
/// milliseconds: give a [`Duration`](std::time::Duration) (Flink's `Duration.ofSeconds(5)`:
/// `Duration::from_secs(5)`) or a number of milliseconds.
///
/// # Examples
///
/// ```
/// use actorflow_runtime::time::window::TumblingWindows;
/// use std::time::Duration;
/// let a = TumblingWindows::event_time(Duration::from_secs(5))?;
/// let b = TumblingWindows::event_time(5_000)?;
/// assert_eq!(format!("{a:?}"), format!("{b:?}"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Millis(pub i64);

impl From<i64> for Millis {
    fn from(ms: i64) -> Self {
        Millis(ms)
    }
}

impl From<i32> for Millis {
    fn from(ms: i32) -> Self {
        Millis(ms.into())
    }
}

impl From<u32> for Millis {
    fn from(ms: u32) -> Self {
        Millis(ms.into())
    }
}

impl From<u64> for Millis {
    /// Saturates at `i64::MAX` ms.
    fn from(ms: u64) -> Self {
        Millis(i64::try_from(ms).unwrap_or(i64::MAX))
    }
}

impl From<std::time::Duration> for Millis {
    /// Whole milliseconds, saturating at `i64::MAX`.
    fn from(d: std::time::Duration) -> Self {
        Millis(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// A window: a group of records that is evaluated together.
pub trait Window: Data + Hash + Eq + Debug {
    /// The largest timestamp that belongs to the window; its event-time trigger fires when
    /// the watermark reaches it.
    fn max_timestamp(&self) -> Timestamp;

    /// `[start, end)` for time windows; lets sliding windows share panes.
    fn interval(&self) -> Option<(i64, i64)> {
        None
    }
}

/// A time interval `[start, end)` in milliseconds (Flink's `TimeWindow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TimeWindow {
    /// Inclusive start.
    pub start: i64,
    /// Exclusive end.
    pub end: i64,
}

impl TimeWindow {
    /// The window `[start, end)`.
    pub fn new(start: i64, end: i64) -> Self {
        TimeWindow { start, end }
    }

    /// True if the windows overlap or touch (Flink's `intersects`: bounds inclusive).
    pub fn intersects(&self, other: &TimeWindow) -> bool {
        self.start <= other.end && self.end >= other.start
    }

    /// The smallest window covering both.
    pub fn cover(&self, other: &TimeWindow) -> TimeWindow {
        TimeWindow::new(self.start.min(other.start), self.end.max(other.end))
    }

    /// The start of the window of `size` (shifted by `offset`) that holds `timestamp`
    /// (Flink's `TimeWindow.getWindowStartWithOffset`; negative timestamps included).
    ///
    /// # Examples
    ///
    /// ```
    /// use actorflow_runtime::time::window::TimeWindow;
    /// assert_eq!(TimeWindow::window_start(7, 0, 5), 5);
    /// assert_eq!(TimeWindow::window_start(-1, 0, 5), -5);
    /// assert_eq!(TimeWindow::window_start(7, 2, 5), 7);
    /// ```
    pub fn window_start(timestamp: i64, offset: i64, size: i64) -> i64 {
        let remainder = timestamp.wrapping_sub(offset).wrapping_rem(size);
        if remainder < 0 {
            timestamp.wrapping_sub(remainder.wrapping_add(size))
        } else {
            timestamp.wrapping_sub(remainder)
        }
    }
}

impl Window for TimeWindow {
    fn max_timestamp(&self) -> Timestamp {
        Timestamp(self.end.wrapping_sub(1))
    }

    fn interval(&self) -> Option<(i64, i64)> {
        Some((self.start, self.end))
    }
}

/// The one window of [`GlobalWindows`]: everything of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GlobalWindow;

impl Window for GlobalWindow {
    fn max_timestamp(&self) -> Timestamp {
        Timestamp::MAX
    }
}

/// What an assigner may consult.
#[derive(Debug, Clone, Copy)]
pub struct AssignerContext {
    /// The operator's current processing time.
    pub processing_time: Timestamp,
}

/// Assigns each record to zero or more windows (Flink's `WindowAssigner`).
pub trait WindowAssigner<T>: Clone + Send + Sync + 'static {
    /// The windows it creates.
    type W: Window;

    /// Appends the windows of `element` (with event timestamp `timestamp`) to `out`.
    ///
    /// # Errors
    ///
    /// An event-time assigner fails for a record without a timestamp.
    fn assign_windows(
        &self,
        element: &T,
        timestamp: Option<Timestamp>,
        ctx: &AssignerContext,
        out: &mut Vec<Self::W>,
    ) -> Result<(), UserError>;

    /// True if windows follow event time (watermarks), false for processing time.
    fn is_event_time(&self) -> bool;

    /// True for merging assigners (sessions).
    fn is_merging(&self) -> bool {
        false
    }

    /// For merging assigners: groups `windows` that must merge, as `(merged window, indices of
    /// the windows merged into it)`, for groups of two or more.
    fn merge_windows(&self, windows: &[Self::W], out: &mut Vec<(Self::W, Vec<usize>)>) {
        let _ = (windows, out);
    }

    /// The trigger used when none is set.
    fn default_trigger(&self) -> DefaultTrigger;

    /// For overlapping fixed windows: the start of the *pane* (a slice shared by all the
    /// windows that contain it) holding time `t`. Windows are then unions of panes, and the
    /// operator stores each record once, in its pane, instead of once per window.
    fn pane_start(&self, t: i64) -> Option<i64> {
        let _ = t;
        None
    }
}

fn no_timestamp() -> UserError {
    "record has no timestamp: an event-time window needs timestamps; call \
     assign_timestamps_and_watermarks(...) before the window, or use a processing-time window"
        .into()
}

/// Which clock a time-based assigner follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowTime {
    /// Event time (timestamps and watermarks).
    Event,
    /// Processing time (the wall clock when the record arrives).
    Processing,
}

fn time_of(
    time: WindowTime,
    timestamp: Option<Timestamp>,
    ctx: &AssignerContext,
) -> Result<i64, UserError> {
    match time {
        WindowTime::Event => match timestamp {
            Some(t) if t != Timestamp::MIN => Ok(t.0),
            _ => Err(no_timestamp()),
        },
        WindowTime::Processing => Ok(ctx.processing_time.0),
    }
}

/// Fixed-size, non-overlapping windows (Flink's `TumblingEventTimeWindows` /
/// `TumblingProcessingTimeWindows`).
///
/// # Examples
///
/// ```
/// use actorflow_runtime::time::window::{AssignerContext, TimeWindow, TumblingWindows, WindowAssigner};
/// use actorflow_runtime::Timestamp;
/// let w = TumblingWindows::event_time(10).unwrap();
/// let mut out = Vec::new();
/// let ctx = AssignerContext { processing_time: Timestamp(0) };
/// w.assign_windows(&(), Some(Timestamp(-3)), &ctx, &mut out).unwrap();
/// assert_eq!(out, vec![TimeWindow::new(-10, 0)]);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct TumblingWindows {
    size: i64,
    offset: i64,
    time: WindowTime,
}

impl TumblingWindows {
    /// Event-time windows of `size` (a `Duration`, or milliseconds).
    ///
    /// # Errors
    ///
    /// If `size <= 0`.
    pub fn event_time(size: impl Into<Millis>) -> Result<Self, WindowConfigError> {
        Self::new(size, 0, WindowTime::Event)
    }

    /// Processing-time windows of `size` (a `Duration`, or milliseconds).
    ///
    /// # Errors
    ///
    /// If `size <= 0`.
    pub fn processing_time(size: impl Into<Millis>) -> Result<Self, WindowConfigError> {
        Self::new(size, 0, WindowTime::Processing)
    }

    /// Windows of `size` ms shifted by `offset` ms (for example to align days to a time zone).
    ///
    /// # Errors
    ///
    /// If `size <= 0` or `|offset| >= size`, as in Flink.
    pub fn new(
        size: impl Into<Millis>,
        offset: impl Into<Millis>,
        time: WindowTime,
    ) -> Result<Self, WindowConfigError> {
        let (size, offset) = (size.into().0, offset.into().0);
        if size <= 0 || offset.unsigned_abs() >= size.unsigned_abs() {
            return Err(WindowConfigError(format!(
                "tumbling windows need size > 0 and |offset| < size (got size {size} ms, offset {offset} ms)"
            )));
        }
        Ok(TumblingWindows { size, offset, time })
    }

    /// The same windows shifted by `offset` ms.
    ///
    /// # Errors
    ///
    /// If `|offset| >= size`.
    pub fn with_offset(self, offset: impl Into<Millis>) -> Result<Self, WindowConfigError> {
        Self::new(self.size, offset, self.time)
    }
}

impl<T> WindowAssigner<T> for TumblingWindows {
    type W = TimeWindow;

    #[inline]
    fn assign_windows(
        &self,
        _: &T,
        timestamp: Option<Timestamp>,
        ctx: &AssignerContext,
        out: &mut Vec<TimeWindow>,
    ) -> Result<(), UserError> {
        let t = time_of(self.time, timestamp, ctx)?;
        let start = TimeWindow::window_start(t, self.offset % self.size, self.size);
        out.push(TimeWindow::new(start, start.wrapping_add(self.size)));
        Ok(())
    }

    fn is_event_time(&self) -> bool {
        self.time == WindowTime::Event
    }

    fn default_trigger(&self) -> DefaultTrigger {
        match self.time {
            WindowTime::Event => DefaultTrigger::EventTime,
            WindowTime::Processing => DefaultTrigger::ProcessingTime,
        }
    }
}

/// Fixed-size windows starting every `slide` ms (Flink's `SlidingEventTimeWindows` /
/// `SlidingProcessingTimeWindows`); a record belongs to `size / slide` windows.
#[derive(Debug, Clone, Copy)]
pub struct SlidingWindows {
    size: i64,
    slide: i64,
    offset: i64,
    time: WindowTime,
}

impl SlidingWindows {
    /// Event-time windows of `size` (a `Duration`, or milliseconds).every `slide` ms.
    ///
    /// # Errors
    ///
    /// If `size <= 0` or `slide <= 0`.
    pub fn event_time(
        size: impl Into<Millis>,
        slide: impl Into<Millis>,
    ) -> Result<Self, WindowConfigError> {
        Self::new(size, slide, 0, WindowTime::Event)
    }

    /// Processing-time windows of `size` (a `Duration`, or milliseconds).every `slide` ms.
    ///
    /// # Errors
    ///
    /// If `size <= 0` or `slide <= 0`.
    pub fn processing_time(
        size: impl Into<Millis>,
        slide: impl Into<Millis>,
    ) -> Result<Self, WindowConfigError> {
        Self::new(size, slide, 0, WindowTime::Processing)
    }

    /// Sliding windows shifted by `offset` ms.
    ///
    /// # Errors
    ///
    /// If `size <= 0`, `slide <= 0` or `|offset| >= slide`, as in Flink.
    pub fn new(
        size: impl Into<Millis>,
        slide: impl Into<Millis>,
        offset: impl Into<Millis>,
        time: WindowTime,
    ) -> Result<Self, WindowConfigError> {
        let (size, slide, offset) = (size.into().0, slide.into().0, offset.into().0);
        if size <= 0 || slide <= 0 || offset.unsigned_abs() >= slide.unsigned_abs() {
            return Err(WindowConfigError(format!(
                "sliding windows need size > 0, slide > 0 and |offset| < slide \
                 (got size {size} ms, slide {slide} ms, offset {offset} ms)"
            )));
        }
        Ok(SlidingWindows {
            size,
            slide,
            offset,
            time,
        })
    }

    /// The same windows shifted by `offset` ms.
    ///
    /// # Errors
    ///
    /// If `|offset| >= slide`.
    pub fn with_offset(self, offset: impl Into<Millis>) -> Result<Self, WindowConfigError> {
        Self::new(self.size, self.slide, offset, self.time)
    }
}

/// Sliding windows are sliced only when a window spans at most this many panes.
const MAX_PANES_PER_WINDOW: i64 = 64;

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl<T> WindowAssigner<T> for SlidingWindows {
    type W = TimeWindow;

    fn pane_start(&self, t: i64) -> Option<i64> {
        let pane = gcd(self.size, self.slide);
        // With many panes per window (size and slide sharing no large factor, 10 001 / 10 000
        // say), merging them at each firing would cost more than keeping windows apart.
        if self.size / pane > MAX_PANES_PER_WINDOW {
            return None;
        }
        Some(TimeWindow::window_start(t, self.offset % pane, pane))
    }

    fn assign_windows(
        &self,
        _: &T,
        timestamp: Option<Timestamp>,
        ctx: &AssignerContext,
        out: &mut Vec<TimeWindow>,
    ) -> Result<(), UserError> {
        let t = time_of(self.time, timestamp, ctx)?;
        let last_start = TimeWindow::window_start(t, self.offset, self.slide);
        let lowest = t.wrapping_sub(self.size);
        let mut start = last_start;
        while start > lowest {
            out.push(TimeWindow::new(start, start.wrapping_add(self.size)));
            let next = start.wrapping_sub(self.slide);
            if next > start {
                break; // wrapped around i64::MIN
            }
            start = next;
        }
        Ok(())
    }

    fn is_event_time(&self) -> bool {
        self.time == WindowTime::Event
    }

    fn default_trigger(&self) -> DefaultTrigger {
        match self.time {
            WindowTime::Event => DefaultTrigger::EventTime,
            WindowTime::Processing => DefaultTrigger::ProcessingTime,
        }
    }
}

/// How a session window's gap is chosen.
pub enum SessionGap<T> {
    /// The same gap for every record.
    Static(i64),
    /// A gap computed from each record (Flink's `SessionWindowTimeGapExtractor`).
    Dynamic(Arc<dyn Fn(&T) -> i64 + Send + Sync>),
}

impl<T> Clone for SessionGap<T> {
    fn clone(&self) -> Self {
        match self {
            SessionGap::Static(g) => SessionGap::Static(*g),
            SessionGap::Dynamic(f) => SessionGap::Dynamic(f.clone()),
        }
    }
}

impl<T> Debug for SessionGap<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionGap::Static(g) => write!(f, "Static({g})"),
            SessionGap::Dynamic(_) => f.write_str("Dynamic"),
        }
    }
}

/// Session windows: a record opens `[t, t + gap)`, and windows that overlap or touch merge
/// (Flink's `EventTimeSessionWindows` / `ProcessingTimeSessionWindows`, static or dynamic
/// gap).
#[derive(Debug)]
pub struct SessionWindows<T> {
    gap: SessionGap<T>,
    time: WindowTime,
}

impl<T> Clone for SessionWindows<T> {
    fn clone(&self) -> Self {
        SessionWindows {
            gap: self.gap.clone(),
            time: self.time,
        }
    }
}

impl<T> SessionWindows<T> {
    /// Event-time sessions with a fixed gap.
    ///
    /// # Errors
    ///
    /// If `gap <= 0`.
    pub fn event_time(gap: impl Into<Millis>) -> Result<Self, WindowConfigError> {
        Self::with_gap(gap.into().0, WindowTime::Event)
    }

    /// Processing-time sessions with a fixed gap.
    ///
    /// # Errors
    ///
    /// If `gap <= 0`.
    pub fn processing_time(gap: impl Into<Millis>) -> Result<Self, WindowConfigError> {
        Self::with_gap(gap.into().0, WindowTime::Processing)
    }

    fn with_gap(gap: i64, time: WindowTime) -> Result<Self, WindowConfigError> {
        if gap <= 0 {
            return Err(WindowConfigError(format!(
                "session windows need gap > 0 (got {gap} ms)"
            )));
        }
        Ok(SessionWindows {
            gap: SessionGap::Static(gap),
            time,
        })
    }

    /// Sessions whose gap `gap(record)` is computed per record; a gap `<= 0` fails the job.
    pub fn dynamic(time: WindowTime, gap: impl Fn(&T) -> i64 + Send + Sync + 'static) -> Self {
        SessionWindows {
            gap: SessionGap::Dynamic(Arc::new(gap)),
            time,
        }
    }
}

impl<T: 'static> WindowAssigner<T> for SessionWindows<T> {
    type W = TimeWindow;

    fn assign_windows(
        &self,
        element: &T,
        timestamp: Option<Timestamp>,
        ctx: &AssignerContext,
        out: &mut Vec<TimeWindow>,
    ) -> Result<(), UserError> {
        let t = time_of(self.time, timestamp, ctx)?;
        let gap = match &self.gap {
            SessionGap::Static(g) => *g,
            SessionGap::Dynamic(f) => {
                let g = f(element);
                if g <= 0 {
                    return Err(format!("dynamic session gap must be > 0, got {g}").into());
                }
                g
            }
        };
        out.push(TimeWindow::new(t, t.wrapping_add(gap)));
        Ok(())
    }

    fn is_event_time(&self) -> bool {
        self.time == WindowTime::Event
    }

    fn is_merging(&self) -> bool {
        true
    }

    fn merge_windows(&self, windows: &[TimeWindow], out: &mut Vec<(TimeWindow, Vec<usize>)>) {
        merge_time_windows(windows, out);
    }

    fn default_trigger(&self) -> DefaultTrigger {
        match self.time {
            WindowTime::Event => DefaultTrigger::EventTime,
            WindowTime::Processing => DefaultTrigger::ProcessingTime,
        }
    }
}

/// Flink's `TimeWindow.mergeWindows`: sort by start, sweep, and merge runs of windows that
/// intersect (touching included).
pub fn merge_time_windows(windows: &[TimeWindow], out: &mut Vec<(TimeWindow, Vec<usize>)>) {
    let n = windows.len();
    if n < 2 {
        return;
    }
    // A key rarely has more than a few open sessions: sort their indices on the stack.
    let mut small = [0usize; 8];
    let mut large = Vec::new();
    let order: &mut [usize] = if n <= small.len() {
        &mut small[..n]
    } else {
        large.extend(0..n);
        &mut large
    };
    for (slot, i) in order.iter_mut().zip(0..n) {
        *slot = i;
    }
    order.sort_by_key(|&i| windows[i].start);
    let mut group_start = 0;
    let mut cover = windows[order[0]];
    for k in 1..n {
        let w = windows[order[k]];
        if cover.intersects(&w) {
            cover = cover.cover(&w);
        } else {
            if k - group_start > 1 {
                out.push((cover, order[group_start..k].to_vec()));
            }
            group_start = k;
            cover = w;
        }
    }
    if n - group_start > 1 {
        out.push((cover, order[group_start..n].to_vec()));
    }
}

/// One window per key holding everything (Flink's `GlobalWindows`). Its default trigger never
/// fires; give it a trigger (count windows do), or use
/// [`with_end_of_stream_trigger`](Self::with_end_of_stream_trigger).
#[derive(Debug, Clone, Copy, Default)]
pub struct GlobalWindows {
    end_of_stream: bool,
}

impl GlobalWindows {
    /// The global window with a trigger that never fires.
    pub fn create() -> Self {
        GlobalWindows::default()
    }

    /// The global window firing once at the end of a bounded input (Flink's
    /// `GlobalWindows.createWithEndOfStreamTrigger`).
    pub fn with_end_of_stream_trigger() -> Self {
        GlobalWindows {
            end_of_stream: true,
        }
    }
}

impl<T> WindowAssigner<T> for GlobalWindows {
    type W = GlobalWindow;

    fn assign_windows(
        &self,
        _: &T,
        _: Option<Timestamp>,
        _: &AssignerContext,
        out: &mut Vec<GlobalWindow>,
    ) -> Result<(), UserError> {
        out.push(GlobalWindow);
        Ok(())
    }

    fn is_event_time(&self) -> bool {
        false
    }

    fn default_trigger(&self) -> DefaultTrigger {
        if self.end_of_stream {
            DefaultTrigger::EndOfStream
        } else {
            DefaultTrigger::Never
        }
    }
}

// ----- triggers ------------------------------------------------------------------------------

/// What a trigger decides (Flink's `TriggerResult`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerResult {
    /// Do nothing.
    Continue,
    /// Evaluate the window and emit its result; keep its contents.
    Fire,
    /// Drop the window's contents without emitting.
    Purge,
    /// Emit, then drop the contents.
    FireAndPurge,
}

impl TriggerResult {
    /// True for `Fire` and `FireAndPurge`.
    pub fn is_fire(self) -> bool {
        matches!(self, TriggerResult::Fire | TriggerResult::FireAndPurge)
    }

    /// True for `Purge` and `FireAndPurge`.
    pub fn is_purge(self) -> bool {
        matches!(self, TriggerResult::Purge | TriggerResult::FireAndPurge)
    }
}

/// A timer request of a trigger, applied by the operator for the current key and window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum TimerRequest {
    RegisterEvent(Timestamp),
    DeleteEvent(Timestamp),
    RegisterProcessing(Timestamp),
    DeleteProcessing(Timestamp),
}

/// What a trigger can see and do for one key and window: the clocks, and timers.
#[derive(Debug)]
pub struct TriggerContext<'a> {
    pub(crate) watermark: Watermark,
    pub(crate) processing_time: Timestamp,
    pub(crate) requests: &'a mut Vec<TimerRequest>,
}

impl TriggerContext<'_> {
    /// The operator's current watermark.
    pub fn current_watermark(&self) -> Watermark {
        self.watermark
    }

    /// The current processing time.
    pub fn current_processing_time(&self) -> Timestamp {
        self.processing_time
    }

    /// Calls the trigger's `on_event_time` when the watermark reaches `time`.
    pub fn register_event_time_timer(&mut self, time: Timestamp) {
        self.requests.push(TimerRequest::RegisterEvent(time));
    }

    /// Deletes an event-time timer of this key and window.
    pub fn delete_event_time_timer(&mut self, time: Timestamp) {
        self.requests.push(TimerRequest::DeleteEvent(time));
    }

    /// Calls the trigger's `on_processing_time` when processing time reaches `time`.
    pub fn register_processing_time_timer(&mut self, time: Timestamp) {
        self.requests.push(TimerRequest::RegisterProcessing(time));
    }

    /// Deletes a processing-time timer of this key and window.
    pub fn delete_processing_time_timer(&mut self, time: Timestamp) {
        self.requests.push(TimerRequest::DeleteProcessing(time));
    }
}

/// Decides when a window is evaluated and purged (Flink's `Trigger`).
///
/// Each key and window has its own `State` (Flink's partitioned trigger state), created with
/// `Default`, handed to every call, merged with [`merge_state`](Self::merge_state) when
/// session windows merge, and dropped after [`clear`](Self::clear).
pub trait Trigger<T, W: Window>: Clone + Send + Sync + 'static {
    /// Per key and window state.
    type State: Data + Default;

    /// Called for every record added to `window`.
    fn on_element(
        &mut self,
        element: &T,
        timestamp: Option<Timestamp>,
        window: &W,
        state: &mut Self::State,
        ctx: &mut TriggerContext<'_>,
    ) -> TriggerResult;

    /// Called when an event-time timer of this trigger fires.
    fn on_event_time(
        &mut self,
        time: Timestamp,
        window: &W,
        state: &mut Self::State,
        ctx: &mut TriggerContext<'_>,
    ) -> TriggerResult;

    /// Called when a processing-time timer of this trigger fires.
    fn on_processing_time(
        &mut self,
        time: Timestamp,
        window: &W,
        state: &mut Self::State,
        ctx: &mut TriggerContext<'_>,
    ) -> TriggerResult;

    /// True if the trigger supports merging windows.
    fn can_merge(&self) -> bool {
        false
    }

    /// Called when windows merged into `window`; `state` is already merged.
    fn on_merge(&mut self, window: &W, state: &mut Self::State, ctx: &mut TriggerContext<'_>) {
        let _ = (window, state, ctx);
    }

    /// Merges the state of a window merged away into the state of the merged window.
    fn merge_state(&self, into: &mut Self::State, from: Self::State) {
        let _ = (into, from);
    }

    /// Called when the window is removed: delete its timers here.
    fn clear(&mut self, window: &W, state: &mut Self::State, ctx: &mut TriggerContext<'_>);

    /// True if this trigger never returns `Purge` or `FireAndPurge`: then overlapping windows
    /// may share their contents (sliding windows store each record once, in a pane).
    fn keeps_contents(&self) -> bool {
        false
    }
}

/// The default trigger of each assigner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultTrigger {
    /// [`EventTimeTrigger`].
    EventTime,
    /// [`ProcessingTimeTrigger`].
    ProcessingTime,
    /// [`NeverTrigger`].
    Never,
    /// [`EndOfStreamTrigger`].
    EndOfStream,
}

/// Fires when the watermark passes the window's end; fires again at once for each late but
/// allowed record (Flink's `EventTimeTrigger`).
#[derive(Debug, Clone, Copy, Default)]
pub struct EventTimeTrigger;

impl<T, W: Window> Trigger<T, W> for EventTimeTrigger {
    type State = ();

    fn on_element(
        &mut self,
        _: &T,
        _: Option<Timestamp>,
        window: &W,
        _: &mut (),
        ctx: &mut TriggerContext<'_>,
    ) -> TriggerResult {
        if window.max_timestamp().0 <= ctx.watermark.0 {
            TriggerResult::Fire
        } else {
            ctx.register_event_time_timer(window.max_timestamp());
            TriggerResult::Continue
        }
    }

    fn on_event_time(
        &mut self,
        time: Timestamp,
        window: &W,
        _: &mut (),
        _: &mut TriggerContext<'_>,
    ) -> TriggerResult {
        if time == window.max_timestamp() {
            TriggerResult::Fire
        } else {
            TriggerResult::Continue
        }
    }

    fn on_processing_time(
        &mut self,
        _: Timestamp,
        _: &W,
        _: &mut (),
        _: &mut TriggerContext<'_>,
    ) -> TriggerResult {
        TriggerResult::Continue
    }

    fn can_merge(&self) -> bool {
        true
    }

    fn on_merge(&mut self, window: &W, _: &mut (), ctx: &mut TriggerContext<'_>) {
        if window.max_timestamp().0 > ctx.watermark.0 {
            ctx.register_event_time_timer(window.max_timestamp());
        }
    }

    fn keeps_contents(&self) -> bool {
        true
    }

    fn clear(&mut self, window: &W, _: &mut (), ctx: &mut TriggerContext<'_>) {
        ctx.delete_event_time_timer(window.max_timestamp());
    }
}

/// Fires when processing time passes the window's end (Flink's `ProcessingTimeTrigger`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessingTimeTrigger;

impl<T, W: Window> Trigger<T, W> for ProcessingTimeTrigger {
    type State = ();

    fn on_element(
        &mut self,
        _: &T,
        _: Option<Timestamp>,
        window: &W,
        _: &mut (),
        ctx: &mut TriggerContext<'_>,
    ) -> TriggerResult {
        ctx.register_processing_time_timer(window.max_timestamp());
        TriggerResult::Continue
    }

    fn on_event_time(
        &mut self,
        _: Timestamp,
        _: &W,
        _: &mut (),
        _: &mut TriggerContext<'_>,
    ) -> TriggerResult {
        TriggerResult::Continue
    }

    fn on_processing_time(
        &mut self,
        _: Timestamp,
        _: &W,
        _: &mut (),
        _: &mut TriggerContext<'_>,
    ) -> TriggerResult {
        TriggerResult::Fire
    }

    fn can_merge(&self) -> bool {
        true
    }

    fn on_merge(&mut self, window: &W, _: &mut (), ctx: &mut TriggerContext<'_>) {
        if window.max_timestamp().0 > ctx.processing_time.0 {
            ctx.register_processing_time_timer(window.max_timestamp());
        }
    }

    fn keeps_contents(&self) -> bool {
        true
    }

    fn clear(&mut self, window: &W, _: &mut (), ctx: &mut TriggerContext<'_>) {
        ctx.delete_processing_time_timer(window.max_timestamp());
    }
}

/// Never fires (the default of [`GlobalWindows`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct NeverTrigger;

impl<T, W: Window> Trigger<T, W> for NeverTrigger {
    type State = ();
    fn on_element(
        &mut self,
        _: &T,
        _: Option<Timestamp>,
        _: &W,
        _: &mut (),
        _: &mut TriggerContext<'_>,
    ) -> TriggerResult {
        TriggerResult::Continue
    }
    fn on_event_time(
        &mut self,
        _: Timestamp,
        _: &W,
        _: &mut (),
        _: &mut TriggerContext<'_>,
    ) -> TriggerResult {
        TriggerResult::Continue
    }
    fn on_processing_time(
        &mut self,
        _: Timestamp,
        _: &W,
        _: &mut (),
        _: &mut TriggerContext<'_>,
    ) -> TriggerResult {
        TriggerResult::Continue
    }
    fn can_merge(&self) -> bool {
        true
    }
    fn keeps_contents(&self) -> bool {
        true
    }

    fn clear(&mut self, _: &W, _: &mut (), _: &mut TriggerContext<'_>) {}
}

/// Fires once when the input ends (the maximum watermark), for global windows.
#[derive(Debug, Clone, Copy, Default)]
pub struct EndOfStreamTrigger;

impl<T, W: Window> Trigger<T, W> for EndOfStreamTrigger {
    type State = ();
    fn on_element(
        &mut self,
        _: &T,
        _: Option<Timestamp>,
        _: &W,
        _: &mut (),
        ctx: &mut TriggerContext<'_>,
    ) -> TriggerResult {
        ctx.register_event_time_timer(Timestamp::MAX);
        TriggerResult::Continue
    }
    fn on_event_time(
        &mut self,
        time: Timestamp,
        _: &W,
        _: &mut (),
        _: &mut TriggerContext<'_>,
    ) -> TriggerResult {
        if time == Timestamp::MAX {
            TriggerResult::FireAndPurge
        } else {
            TriggerResult::Continue
        }
    }
    fn on_processing_time(
        &mut self,
        _: Timestamp,
        _: &W,
        _: &mut (),
        _: &mut TriggerContext<'_>,
    ) -> TriggerResult {
        TriggerResult::Continue
    }
    fn clear(&mut self, _: &W, _: &mut (), ctx: &mut TriggerContext<'_>) {
        ctx.delete_event_time_timer(Timestamp::MAX);
    }
}

/// Fires every `count` records (Flink's `CountTrigger`).
#[derive(Debug, Clone, Copy)]
pub struct CountTrigger {
    count: u64,
}

impl CountTrigger {
    /// Fires when a window holds `count` records since the last firing.
    pub fn of(count: u64) -> Self {
        CountTrigger { count }
    }
}

impl<T, W: Window> Trigger<T, W> for CountTrigger {
    type State = u64;

    fn on_element(
        &mut self,
        _: &T,
        _: Option<Timestamp>,
        _: &W,
        seen: &mut u64,
        _: &mut TriggerContext<'_>,
    ) -> TriggerResult {
        *seen += 1;
        if *seen >= self.count {
            *seen = 0;
            TriggerResult::Fire
        } else {
            TriggerResult::Continue
        }
    }

    fn on_event_time(
        &mut self,
        _: Timestamp,
        _: &W,
        _: &mut u64,
        _: &mut TriggerContext<'_>,
    ) -> TriggerResult {
        TriggerResult::Continue
    }

    fn on_processing_time(
        &mut self,
        _: Timestamp,
        _: &W,
        _: &mut u64,
        _: &mut TriggerContext<'_>,
    ) -> TriggerResult {
        TriggerResult::Continue
    }

    fn can_merge(&self) -> bool {
        true
    }

    fn merge_state(&self, into: &mut u64, from: u64) {
        *into += from;
    }

    fn keeps_contents(&self) -> bool {
        true
    }

    fn clear(&mut self, _: &W, seen: &mut u64, _: &mut TriggerContext<'_>) {
        *seen = 0;
    }
}

/// The schedule both continuous triggers share: the next early firing, kept as the trigger's
/// state (the earliest one after a merge), and its timer in one time domain.
#[derive(Debug, Clone, Copy)]
struct Every {
    interval: i64,
    domain: TimeDomain,
}

impl Every {
    fn new(interval: i64, domain: TimeDomain) -> Result<Self, WindowConfigError> {
        if interval <= 0 {
            return Err(WindowConfigError(format!(
                "continuous trigger interval must be > 0, got {interval} ms"
            )));
        }
        Ok(Every { interval, domain })
    }

    fn register(&self, ctx: &mut TriggerContext<'_>, t: i64) {
        match self.domain {
            TimeDomain::EventTime => ctx.register_event_time_timer(Timestamp(t)),
            TimeDomain::ProcessingTime => ctx.register_processing_time_timer(Timestamp(t)),
        }
    }

    /// Flink's `registerNextFireTimestamp`: the next firing `interval` after `time`, at the
    /// latest at the window's end.
    fn register_next<W: Window>(
        &self,
        time: i64,
        window: &W,
        state: &mut Option<i64>,
        ctx: &mut TriggerContext<'_>,
    ) {
        let next = time
            .wrapping_add(self.interval)
            .min(window.max_timestamp().0);
        *state = Some(state.map_or(next, |s| s.min(next)));
        self.register(ctx, next);
    }

    /// The first firing, aligned to the interval, unless one is scheduled.
    fn start<W: Window>(
        &self,
        time: i64,
        window: &W,
        state: &mut Option<i64>,
        ctx: &mut TriggerContext<'_>,
    ) {
        if state.is_none() {
            let aligned = time.wrapping_sub(time.wrapping_rem(self.interval));
            self.register_next(aligned, window, state, ctx);
        }
    }

    /// A timer of this schedule's domain fired: the window's end, or the next early firing.
    fn on_timer<W: Window>(
        &self,
        time: Timestamp,
        window: &W,
        state: &mut Option<i64>,
        ctx: &mut TriggerContext<'_>,
    ) -> TriggerResult {
        if time == window.max_timestamp() {
            return TriggerResult::Fire;
        }
        if *state == Some(time.0) {
            *state = None;
            self.register_next(time.0, window, state, ctx);
            return TriggerResult::Fire;
        }
        TriggerResult::Continue
    }

    fn merge_state(into: &mut Option<i64>, from: Option<i64>) {
        *into = match (*into, from) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    fn on_merge(&self, state: &mut Option<i64>, ctx: &mut TriggerContext<'_>) {
        if let Some(next) = *state {
            self.register(ctx, next);
        }
    }

    fn clear(&self, state: &mut Option<i64>, ctx: &mut TriggerContext<'_>) {
        if let Some(t) = state.take() {
            match self.domain {
                TimeDomain::EventTime => ctx.delete_event_time_timer(Timestamp(t)),
                TimeDomain::ProcessingTime => ctx.delete_processing_time_timer(Timestamp(t)),
            }
        }
    }
}

/// Fires every `interval` ms of event time while the window is open, and at its end
/// (Flink's `ContinuousEventTimeTrigger`).
#[derive(Debug, Clone, Copy)]
pub struct ContinuousEventTimeTrigger(Every);

impl ContinuousEventTimeTrigger {
    /// Fires every `interval` ms of event time.
    ///
    /// # Errors
    ///
    /// If `interval <= 0`.
    pub fn of(interval: impl Into<Millis>) -> Result<Self, WindowConfigError> {
        Every::new(interval.into().0, TimeDomain::EventTime).map(ContinuousEventTimeTrigger)
    }
}

impl<T, W: Window> Trigger<T, W> for ContinuousEventTimeTrigger {
    type State = Option<i64>;

    fn on_element(
        &mut self,
        _: &T,
        timestamp: Option<Timestamp>,
        window: &W,
        state: &mut Option<i64>,
        ctx: &mut TriggerContext<'_>,
    ) -> TriggerResult {
        if window.max_timestamp().0 <= ctx.watermark.0 {
            return TriggerResult::Fire;
        }
        ctx.register_event_time_timer(window.max_timestamp());
        self.0
            .start(timestamp.map_or(0, |t| t.0), window, state, ctx);
        TriggerResult::Continue
    }

    fn on_event_time(
        &mut self,
        time: Timestamp,
        window: &W,
        state: &mut Option<i64>,
        ctx: &mut TriggerContext<'_>,
    ) -> TriggerResult {
        self.0.on_timer(time, window, state, ctx)
    }

    fn on_processing_time(
        &mut self,
        _: Timestamp,
        _: &W,
        _: &mut Option<i64>,
        _: &mut TriggerContext<'_>,
    ) -> TriggerResult {
        TriggerResult::Continue
    }

    fn can_merge(&self) -> bool {
        true
    }

    fn merge_state(&self, into: &mut Option<i64>, from: Option<i64>) {
        Every::merge_state(into, from);
    }

    fn on_merge(&mut self, _: &W, state: &mut Option<i64>, ctx: &mut TriggerContext<'_>) {
        self.0.on_merge(state, ctx);
    }

    fn keeps_contents(&self) -> bool {
        true
    }

    fn clear(&mut self, _: &W, state: &mut Option<i64>, ctx: &mut TriggerContext<'_>) {
        self.0.clear(state, ctx);
    }
}

/// Fires every `interval` ms of processing time while the window is open, and at its end
/// (Flink's `ContinuousProcessingTimeTrigger`).
#[derive(Debug, Clone, Copy)]
pub struct ContinuousProcessingTimeTrigger(Every);

impl ContinuousProcessingTimeTrigger {
    /// Fires every `interval` ms of processing time.
    ///
    /// # Errors
    ///
    /// If `interval <= 0`.
    pub fn of(interval: impl Into<Millis>) -> Result<Self, WindowConfigError> {
        Every::new(interval.into().0, TimeDomain::ProcessingTime)
            .map(ContinuousProcessingTimeTrigger)
    }
}

impl<T, W: Window> Trigger<T, W> for ContinuousProcessingTimeTrigger {
    type State = Option<i64>;

    fn on_element(
        &mut self,
        _: &T,
        _: Option<Timestamp>,
        window: &W,
        state: &mut Option<i64>,
        ctx: &mut TriggerContext<'_>,
    ) -> TriggerResult {
        let now = ctx.processing_time.0;
        self.0.start(now, window, state, ctx);
        TriggerResult::Continue
    }

    fn on_event_time(
        &mut self,
        _: Timestamp,
        _: &W,
        _: &mut Option<i64>,
        _: &mut TriggerContext<'_>,
    ) -> TriggerResult {
        TriggerResult::Continue
    }

    fn on_processing_time(
        &mut self,
        time: Timestamp,
        window: &W,
        state: &mut Option<i64>,
        ctx: &mut TriggerContext<'_>,
    ) -> TriggerResult {
        self.0.on_timer(time, window, state, ctx)
    }

    fn can_merge(&self) -> bool {
        true
    }

    fn merge_state(&self, into: &mut Option<i64>, from: Option<i64>) {
        Every::merge_state(into, from);
    }

    fn on_merge(&mut self, _: &W, state: &mut Option<i64>, ctx: &mut TriggerContext<'_>) {
        self.0.on_merge(state, ctx);
    }

    fn keeps_contents(&self) -> bool {
        true
    }

    fn clear(&mut self, _: &W, state: &mut Option<i64>, ctx: &mut TriggerContext<'_>) {
        self.0.clear(state, ctx);
    }
}

/// Turns every `Fire` of the inner trigger into `FireAndPurge` (Flink's `PurgingTrigger`).
#[derive(Debug, Clone, Copy)]
pub struct PurgingTrigger<Tr>(pub Tr);

impl<Tr> PurgingTrigger<Tr> {
    /// Wraps `trigger`.
    pub fn of(trigger: Tr) -> Self {
        PurgingTrigger(trigger)
    }
}

fn purging(r: TriggerResult) -> TriggerResult {
    if r.is_fire() {
        TriggerResult::FireAndPurge
    } else {
        r
    }
}

impl<T, W: Window, Tr: Trigger<T, W>> Trigger<T, W> for PurgingTrigger<Tr> {
    type State = Tr::State;

    fn on_element(
        &mut self,
        element: &T,
        timestamp: Option<Timestamp>,
        window: &W,
        state: &mut Self::State,
        ctx: &mut TriggerContext<'_>,
    ) -> TriggerResult {
        purging(self.0.on_element(element, timestamp, window, state, ctx))
    }
    fn on_event_time(
        &mut self,
        time: Timestamp,
        window: &W,
        state: &mut Self::State,
        ctx: &mut TriggerContext<'_>,
    ) -> TriggerResult {
        purging(self.0.on_event_time(time, window, state, ctx))
    }
    fn on_processing_time(
        &mut self,
        time: Timestamp,
        window: &W,
        state: &mut Self::State,
        ctx: &mut TriggerContext<'_>,
    ) -> TriggerResult {
        purging(self.0.on_processing_time(time, window, state, ctx))
    }
    fn can_merge(&self) -> bool {
        self.0.can_merge()
    }
    fn on_merge(&mut self, window: &W, state: &mut Self::State, ctx: &mut TriggerContext<'_>) {
        self.0.on_merge(window, state, ctx);
    }
    fn merge_state(&self, into: &mut Self::State, from: Self::State) {
        self.0.merge_state(into, from);
    }
    fn clear(&mut self, window: &W, state: &mut Self::State, ctx: &mut TriggerContext<'_>) {
        self.0.clear(window, state, ctx);
    }
}

/// Any of the built-in default triggers, chosen by the assigner at run time.
#[derive(Debug, Clone, Copy)]
pub struct AssignerDefault(pub DefaultTrigger);

impl<T, W: Window> Trigger<T, W> for AssignerDefault {
    type State = ();

    fn on_element(
        &mut self,
        e: &T,
        ts: Option<Timestamp>,
        w: &W,
        s: &mut (),
        ctx: &mut TriggerContext<'_>,
    ) -> TriggerResult {
        match self.0 {
            DefaultTrigger::EventTime => EventTimeTrigger.on_element(e, ts, w, s, ctx),
            DefaultTrigger::ProcessingTime => ProcessingTimeTrigger.on_element(e, ts, w, s, ctx),
            DefaultTrigger::Never => {
                <NeverTrigger as Trigger<T, W>>::on_element(&mut NeverTrigger, e, ts, w, s, ctx)
            }
            DefaultTrigger::EndOfStream => EndOfStreamTrigger.on_element(e, ts, w, s, ctx),
        }
    }

    fn on_event_time(
        &mut self,
        t: Timestamp,
        w: &W,
        s: &mut (),
        ctx: &mut TriggerContext<'_>,
    ) -> TriggerResult {
        match self.0 {
            DefaultTrigger::EventTime => <EventTimeTrigger as Trigger<T, W>>::on_event_time(
                &mut EventTimeTrigger,
                t,
                w,
                s,
                ctx,
            ),
            DefaultTrigger::EndOfStream => <EndOfStreamTrigger as Trigger<T, W>>::on_event_time(
                &mut EndOfStreamTrigger,
                t,
                w,
                s,
                ctx,
            ),
            DefaultTrigger::ProcessingTime | DefaultTrigger::Never => TriggerResult::Continue,
        }
    }

    fn on_processing_time(
        &mut self,
        _: Timestamp,
        _: &W,
        _: &mut (),
        _: &mut TriggerContext<'_>,
    ) -> TriggerResult {
        match self.0 {
            DefaultTrigger::ProcessingTime => TriggerResult::Fire,
            _ => TriggerResult::Continue,
        }
    }

    fn can_merge(&self) -> bool {
        !matches!(self.0, DefaultTrigger::EndOfStream)
    }

    fn on_merge(&mut self, w: &W, s: &mut (), ctx: &mut TriggerContext<'_>) {
        match self.0 {
            DefaultTrigger::EventTime => {
                <EventTimeTrigger as Trigger<T, W>>::on_merge(&mut EventTimeTrigger, w, s, ctx)
            }
            DefaultTrigger::ProcessingTime => <ProcessingTimeTrigger as Trigger<T, W>>::on_merge(
                &mut ProcessingTimeTrigger,
                w,
                s,
                ctx,
            ),
            _ => {}
        }
    }

    fn keeps_contents(&self) -> bool {
        !matches!(self.0, DefaultTrigger::EndOfStream)
    }

    fn clear(&mut self, w: &W, s: &mut (), ctx: &mut TriggerContext<'_>) {
        match self.0 {
            DefaultTrigger::EventTime => {
                <EventTimeTrigger as Trigger<T, W>>::clear(&mut EventTimeTrigger, w, s, ctx)
            }
            DefaultTrigger::ProcessingTime => <ProcessingTimeTrigger as Trigger<T, W>>::clear(
                &mut ProcessingTimeTrigger,
                w,
                s,
                ctx,
            ),
            DefaultTrigger::EndOfStream => {
                <EndOfStreamTrigger as Trigger<T, W>>::clear(&mut EndOfStreamTrigger, w, s, ctx)
            }
            DefaultTrigger::Never => {}
        }
    }
}

// ----- evictors ------------------------------------------------------------------------------

/// Removes records from a window's contents before and/or after its function runs (Flink's
/// `Evictor`). The contents are `(record, timestamp)` in arrival order.
pub trait Evictor<T, W>: Clone + Send + Sync + 'static {
    /// Called before the window function.
    fn evict_before(&mut self, elements: &mut Vec<(T, Option<Timestamp>)>, window: &W);
    /// Called after the window function.
    fn evict_after(&mut self, elements: &mut Vec<(T, Option<Timestamp>)>, window: &W);
}

/// Keeps at most `count` records, dropping the oldest (Flink's `CountEvictor`).
#[derive(Debug, Clone, Copy)]
pub struct CountEvictor {
    count: usize,
    after: bool,
}

impl CountEvictor {
    /// Evicts before the function.
    pub fn of(count: usize) -> Self {
        CountEvictor {
            count,
            after: false,
        }
    }

    /// Evicts after the function instead.
    pub fn after(count: usize) -> Self {
        CountEvictor { count, after: true }
    }

    fn evict<T>(&self, elements: &mut Vec<(T, Option<Timestamp>)>) {
        if elements.len() > self.count {
            let n = elements.len() - self.count;
            elements.drain(..n);
        }
    }
}

impl<T, W> Evictor<T, W> for CountEvictor {
    fn evict_before(&mut self, elements: &mut Vec<(T, Option<Timestamp>)>, _: &W) {
        if !self.after {
            self.evict(elements);
        }
    }
    fn evict_after(&mut self, elements: &mut Vec<(T, Option<Timestamp>)>, _: &W) {
        if self.after {
            self.evict(elements);
        }
    }
}

/// Keeps the records within `size` ms of the newest one (Flink's `TimeEvictor`).
#[derive(Debug, Clone, Copy)]
pub struct TimeEvictor {
    size: i64,
    after: bool,
}

impl TimeEvictor {
    /// Evicts before the function.
    pub fn of(size: i64) -> Self {
        TimeEvictor { size, after: false }
    }

    /// Evicts after the function instead.
    pub fn after(size: i64) -> Self {
        TimeEvictor { size, after: true }
    }

    fn evict<T>(&self, elements: &mut Vec<(T, Option<Timestamp>)>) {
        if elements.first().is_none_or(|(_, t)| t.is_none()) {
            return;
        }
        let newest = elements
            .iter()
            .filter_map(|(_, t)| t.map(|t| t.0))
            .max()
            .unwrap_or(i64::MIN);
        let cutoff = newest.wrapping_sub(self.size);
        elements.retain(|(_, t)| t.is_none_or(|t| t.0 > cutoff));
    }
}

impl<T, W> Evictor<T, W> for TimeEvictor {
    fn evict_before(&mut self, elements: &mut Vec<(T, Option<Timestamp>)>, _: &W) {
        if !self.after {
            self.evict(elements);
        }
    }
    fn evict_after(&mut self, elements: &mut Vec<(T, Option<Timestamp>)>, _: &W) {
        if self.after {
            self.evict(elements);
        }
    }
}

/// A delta function of two records.
type DeltaFn<T> = Arc<dyn Fn(&T, &T) -> f64 + Send + Sync>;

/// Removes the records whose `delta(record, newest record)` is at least `threshold`
/// (Flink's `DeltaEvictor`).
pub struct DeltaEvictor<T> {
    threshold: f64,
    delta: DeltaFn<T>,
    after: bool,
}

impl<T> Clone for DeltaEvictor<T> {
    fn clone(&self) -> Self {
        DeltaEvictor {
            threshold: self.threshold,
            delta: self.delta.clone(),
            after: self.after,
        }
    }
}

impl<T> Debug for DeltaEvictor<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeltaEvictor")
            .field("threshold", &self.threshold)
            .field("after", &self.after)
            .finish()
    }
}

impl<T> DeltaEvictor<T> {
    /// Evicts before the function.
    pub fn of(threshold: f64, delta: impl Fn(&T, &T) -> f64 + Send + Sync + 'static) -> Self {
        DeltaEvictor {
            threshold,
            delta: Arc::new(delta),
            after: false,
        }
    }

    /// Evicts after the function instead.
    pub fn after(threshold: f64, delta: impl Fn(&T, &T) -> f64 + Send + Sync + 'static) -> Self {
        DeltaEvictor {
            threshold,
            delta: Arc::new(delta),
            after: true,
        }
    }

    fn evict(&self, elements: &mut Vec<(T, Option<Timestamp>)>) {
        let Some(last) = elements.len().checked_sub(1) else {
            return;
        };
        let keep: Vec<bool> = elements
            .iter()
            .map(|(v, _)| (self.delta)(v, &elements[last].0) < self.threshold)
            .collect();
        let mut flags = keep.into_iter();
        elements.retain(|_| flags.next().unwrap_or(true));
    }
}

impl<T: Send + Sync + 'static, W> Evictor<T, W> for DeltaEvictor<T> {
    fn evict_before(&mut self, elements: &mut Vec<(T, Option<Timestamp>)>, _: &W) {
        if !self.after {
            self.evict(elements);
        }
    }
    fn evict_after(&mut self, elements: &mut Vec<(T, Option<Timestamp>)>, _: &W) {
        if self.after {
            self.evict(elements);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> AssignerContext {
        AssignerContext {
            processing_time: Timestamp(0),
        }
    }

    fn assign<A: WindowAssigner<()>>(a: &A, t: i64) -> Vec<A::W> {
        let mut out = Vec::new();
        a.assign_windows(&(), Some(Timestamp(t)), &ctx(), &mut out)
            .unwrap();
        out
    }

    #[test]
    fn tumbling_with_offsets_and_negative_times() {
        let a = TumblingWindows::new(10, 3, WindowTime::Event).unwrap();
        assert_eq!(assign(&a, 3), vec![TimeWindow::new(3, 13)]);
        assert_eq!(assign(&a, 2), vec![TimeWindow::new(-7, 3)]);
        assert_eq!(assign(&a, -8), vec![TimeWindow::new(-17, -7)]);
        let b = TumblingWindows::new(10, -3, WindowTime::Event).unwrap();
        assert_eq!(assign(&b, 0), vec![TimeWindow::new(-3, 7)]);
        assert!(TumblingWindows::new(10, 10, WindowTime::Event).is_err());
        assert!(TumblingWindows::event_time(0).is_err());
    }

    #[test]
    fn sliding_assigns_newest_first() {
        let a = SlidingWindows::event_time(10, 5).unwrap();
        assert_eq!(
            assign(&a, 7),
            vec![TimeWindow::new(5, 15), TimeWindow::new(0, 10)]
        );
        assert_eq!(
            assign(&a, -1),
            vec![TimeWindow::new(-5, 5), TimeWindow::new(-10, 0)]
        );
        let uneven = SlidingWindows::event_time(10, 3).unwrap();
        assert_eq!(assign(&uneven, 0).len(), 4);
    }

    #[test]
    fn sessions_merge_when_touching() {
        let mut out = Vec::new();
        let ws = [
            TimeWindow::new(10, 15),
            TimeWindow::new(0, 5),
            TimeWindow::new(5, 10),
            TimeWindow::new(20, 25),
        ];
        merge_time_windows(&ws, &mut out);
        assert_eq!(out, vec![(TimeWindow::new(0, 15), vec![1, 2, 0])]);
    }

    #[test]
    fn extreme_timestamps_wrap_like_java() {
        let a = TumblingWindows::event_time(1000).unwrap();
        let w = assign(&a, i64::MAX)[0];
        assert_eq!(w.start, i64::MAX - (i64::MAX % 1000));
        assert_eq!(w.end, w.start.wrapping_add(1000));
        let w = assign(&a, i64::MIN + 1)[0];
        assert_eq!(w.start, TimeWindow::window_start(i64::MIN + 1, 0, 1000));
    }

    #[test]
    fn evictors() {
        let mut v: Vec<(u8, Option<Timestamp>)> = (0..5)
            .map(|i| (i, Some(Timestamp(i64::from(i) * 10))))
            .collect();
        Evictor::<u8, GlobalWindow>::evict_before(&mut CountEvictor::of(3), &mut v, &GlobalWindow);
        assert_eq!(v.iter().map(|x| x.0).collect::<Vec<_>>(), vec![2, 3, 4]);
        Evictor::<u8, GlobalWindow>::evict_before(&mut TimeEvictor::of(15), &mut v, &GlobalWindow);
        assert_eq!(v.iter().map(|x| x.0).collect::<Vec<_>>(), vec![3, 4]);
        let mut d: Vec<(i32, Option<Timestamp>)> =
            [1, 9, 7, 10].iter().map(|&x| (x, None)).collect();
        let mut delta = DeltaEvictor::of(3.0, |a: &i32, b: &i32| f64::from((a - b).abs()));
        Evictor::<i32, GlobalWindow>::evict_before(&mut delta, &mut d, &GlobalWindow);
        assert_eq!(
            d.iter().map(|x| x.0).collect::<Vec<_>>(),
            vec![9, 10],
            "within 3 of 10"
        );
    }
}
