//! The data plane: what travels between subtasks and how.
//!
//! * [`data`] — records and batches ([`Batch`](data::Batch), the type-erased
//!   [`DataBatch`](data::DataBatch)) and the [`Collector`](data::Collector) user functions
//!   emit into.
//! * [`message`] — the in-band [`StreamMessage`](message::StreamMessage) and the
//!   [`PriorityMessage`](message::PriorityMessage) that overtakes data.
//! * [`lane`] — the bounded lane between two subtasks: where backpressure happens.
//! * [`gate`] — a subtask's mailbox: one lane per input channel plus a priority lane.
//! * [`partition`] — partitioners and the record writer that batches output per channel.
//!
//! **May import:** [`state`](crate::state) (key groups and key hashing, for hash
//! partitioning), [`types`](crate::types), [`error`](crate::error). Nothing above.
//!
//! **Kept on purpose:** `data` and `message` refer to each other — a `StreamMessage` carries a
//! `DataBatch`, and a `Collector` emits watermark statuses. They are one vocabulary split over
//! two files for reading, and stay in this one folder.

pub mod data;
pub mod gate;
pub mod lane;
pub mod message;
pub mod partition;
