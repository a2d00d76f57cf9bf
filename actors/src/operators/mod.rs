//! The built-in operators, one per file: the runtime half of the DataStream API's
//! transformations.

pub mod broadcast;
pub mod co_process;
pub mod filter;
pub mod flat_map;
pub mod interval_join;
pub mod keyed_reduce;
pub mod map;
pub mod multi_input;
pub mod process;
pub mod timestamps;
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
