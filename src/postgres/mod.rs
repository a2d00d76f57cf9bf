//! PostgreSQL connectors (cargo feature `postgres`, client `tokio-postgres`): an exactly-once
//! sink by two-phase commit ([`PostgresSink`]) and a change-data-capture source from a
//! logical replication slot ([`PostgresCdcSource`]). How each guarantee is reached, and what
//! the server needs, is in `docs/connectors.md`.

mod cdc;
mod replication;
mod sink;

pub use cdc::{ChangeEvent, ChangeOp, PostgresCdcSource, PostgresCdcSourceBuilder, format_lsn};
pub use sink::{BadRows, PostgresSink, PostgresSinkBuilder, RejectedRow, SqlValue};

/// Why a PostgreSQL connector could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    /// The configuration is incomplete or inconsistent.
    #[error("PostgreSQL sink: {0}")]
    Config(String),
}
