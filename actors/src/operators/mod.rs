//! The built-in operators, one per file: the runtime half of the DataStream API's
//! transformations.

pub mod filter;
pub mod flat_map;
pub mod keyed_reduce;
pub mod map;
pub mod process;

pub use filter::FilterOperator;
pub use flat_map::FlatMapOperator;
pub use keyed_reduce::KeyedReduceOperator;
pub use map::MapOperator;
pub use process::{
    Context, KeyedContext, KeyedProcessFunction, KeyedProcessOperator, ProcessFunction,
    ProcessOperator,
};
