//! Operators: the [`Operator`](operator::Operator), [`Source`](source::Source) and
//! [`Sink`](sink::Sink) traits, the built-in operators one per file (the runtime half of the
//! DataStream API's transformations), the two-phase-commit sink adapter and the test harness.
//!
//! * [`operator`], [`source`], [`sink`] — the traits a subtask drives, and the task info and
//!   contexts they are given.
//! * [`transactional`] — two-phase-commit sinks ([`TwoPhaseCommit`](transactional::TwoPhaseCommit))
//!   and the exactly-once file sink.
//! * [`harness`] — drive one operator by hand in tests.
//! * One file per built-in operator: map, filter, flat map, keyed reduce, process, window,
//!   timestamps and watermarks, co-process, interval join, multi-input, broadcast.
//!
//! **May import:** [`checkpoint`](crate::checkpoint), [`time`](crate::time),
//! [`dataplane`](crate::dataplane), [`state`](crate::state), [`types`](crate::types),
//! [`error`](crate::error). Never [`runtime`](crate::runtime): operators do not know how they
//! are deployed.

pub mod async_io;
pub mod blocking;
pub mod broadcast;
pub mod co_process;
pub mod filter;
pub mod flat_map;
pub mod harness;
pub mod interval_join;
pub mod keyed_reduce;
pub mod map;
pub mod multi_input;
pub mod operator;
pub mod process;
pub mod rich;
pub mod sink;
pub mod source;
pub mod timestamps;
pub mod transactional;
pub mod window;

pub use broadcast::{
    BroadcastContext, BroadcastKey, BroadcastProcessFunction, BroadcastProcessOperator,
    BroadcastState, BroadcastStateDescriptor, BroadcastValue, KeyedBroadcastContext,
    KeyedBroadcastProcessFunction, KeyedBroadcastProcessOperator, ReadOnlyBroadcastState,
    StateSpec,
};
pub use co_process::{
    CoKey, CoProcessAdapter, CoProcessFunction, CoRecord, KeyedCoProcessAdapter,
    KeyedCoProcessFunction, erase_two_input,
};
pub use filter::FilterOperator;
pub use flat_map::FlatMapOperator;
pub use interval_join::{IntervalJoin, JoinBounds, JoinContext, ProcessJoinFunction};
pub use keyed_reduce::KeyedReduceOperator;
pub use map::MapOperator;
pub use multi_input::{
    InputAdapter, MultiInputAdapter, MultiInputFunction, Three, ThreeWayWindowJoin,
    erase_multi_input,
};
pub use process::{
    Context, KeyedContext, KeyedProcessFunction, KeyedProcessOperator, OpenContext,
    ProcessFunction, ProcessOperator,
};
pub use timestamps::TimestampsAndWatermarksOperator;
pub use window::{
    AggregateAgg, AggregateFunction, EvictingAgg, ListAgg, PassThrough, ReduceAgg, StateBag,
    WindowAgg, WindowContext, WindowFunction, WindowOperator, WindowSettings,
};
