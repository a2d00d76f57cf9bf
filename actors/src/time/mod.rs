//! Time: processing-time clocks, timers, watermarks and windows.
//!
//! * [`clock`] — processing time on tokio's clock (pausable in tests).
//! * [`timer`] — deduplicated event- and processing-time timer queues.
//! * [`watermark`] — watermark strategies and generators.
//! * [`splits`] — per-split watermarks inside a source (one generator per split, the
//!   minimum over the active ones), pure.
//! * [`valve`] — combining the watermarks and idleness of several inputs (Flink's
//!   `StatusWatermarkValve`), pure.
//! * [`window`] — window types, assigners, triggers and evictors with Flink's arithmetic.
//!
//! **May import:** [`dataplane`](crate::dataplane), [`state`](crate::state),
//! [`types`](crate::types), [`error`](crate::error). The operators that run these
//! (watermark assignment, windows) live in [`operators`](crate::operators), above.

pub mod clock;
pub mod splits;
pub mod timer;
pub mod valve;
pub mod watermark;
pub mod window;
