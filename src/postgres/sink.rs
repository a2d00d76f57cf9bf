//! [`PostgresSink`]: rows into a PostgreSQL table, exactly once by two-phase commit.
//!
//! Each subtask keeps one connection and, between two checkpoints, one transaction. At the
//! barrier the transaction records its global id in `actorflow_commits` and is ended with
//! `PREPARE TRANSACTION gid`: durable, invisible. When the checkpoint completes, `COMMIT
//! PREPARED gid` makes it visible. The gid is `PREFIX:OPERATOR:SUBTASK:ATTEMPT:CHECKPOINT`
//! (`OPERATOR` is the sink's uid, or its name), so every attempt's transactions are distinct.
//!
//! **Committing is idempotent, and never guesses.** A `COMMIT PREPARED` of a gid that the
//! server no longer holds prepared succeeds only if the restored state says it was prepared
//! *and* its row in `actorflow_commits` is visible, which it is only if that transaction was
//! committed (the marker is written inside it). A gid that is neither prepared nor committed
//! means rows were lost (a rollback by hand, another job with the same prefix and operator):
//! the sink fails with that message instead of carrying on.
//!
//! **On restore** the checkpoint's pending gids (union state: every subtask sees all of them)
//! are committed; every other prepared transaction of this sink (`pg_prepared_xacts` with its
//! prefix) is rolled back: it belongs to an attempt after the checkpoint, whose records the
//! sources replay. Subtask `i` resolves the gids of subtask `i`, and subtask 0 also those of
//! subtasks beyond the new parallelism, so after a rescale none is left behind. A fresh start
//! (no restore) rolls back the sink's prepared transactions the same way.

use super::PostgresError;
use actorflow_runtime::checkpoint::types::{OperatorState, RestoredState};
use actorflow_runtime::{
    Batch, CheckpointId, Data, OutputTag, SideOutputs, Sink, TaskInfo, Timestamp, UserError,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls, Statement};

/// A column value of a row.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    /// `NULL`.
    Null,
    /// A `boolean`.
    Bool(bool),
    /// An integer, for `smallint`, `integer`, `bigint` (range-checked), `real`,
    /// `double precision`, or text columns.
    Int(i64),
    /// A float, for `real` and `double precision` (or text).
    Float(f64),
    /// Text, for `text`, `varchar`, `char`, `name`.
    Text(String),
}

impl fmt::Display for SqlValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SqlValue::Null => f.write_str("NULL"),
            SqlValue::Bool(b) => write!(f, "{b}"),
            SqlValue::Int(i) => write!(f, "{i}"),
            SqlValue::Float(x) => write!(f, "{x}"),
            SqlValue::Text(s) => write!(f, "{s:?}"),
        }
    }
}

impl From<i64> for SqlValue {
    fn from(v: i64) -> Self {
        SqlValue::Int(v)
    }
}
impl From<String> for SqlValue {
    fn from(v: String) -> Self {
        SqlValue::Text(v)
    }
}
impl From<&str> for SqlValue {
    fn from(v: &str) -> Self {
        SqlValue::Text(v.to_string())
    }
}
impl From<f64> for SqlValue {
    fn from(v: f64) -> Self {
        SqlValue::Float(v)
    }
}
impl From<bool> for SqlValue {
    fn from(v: bool) -> Self {
        SqlValue::Bool(v)
    }
}
impl<T: Into<SqlValue>> From<Option<T>> for SqlValue {
    fn from(v: Option<T>) -> Self {
        v.map_or(SqlValue::Null, Into::into)
    }
}

/// What the sink does with a row the database refuses (a constraint violation, a value out of
/// range). To send such rows to a side output instead, see
/// [`PostgresSinkBuilder::bad_rows_to`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadRows {
    /// Fail the subtask with the row and the database's message (the default). The job
    /// restarts from its checkpoint and meets the row again: fix the data or the table.
    Fail,
    /// Write the row (as text) and the message into this table instead, in the same
    /// transaction as the good rows, so it too is written exactly once. Created if missing:
    /// `(row text, error text, at timestamptz)`.
    DeadLetter(String),
}

/// A record whose row the database (or the column mapping) refused, as the sink's side
/// output carries it (see [`PostgresSinkBuilder::bad_rows_to`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RejectedRow<T> {
    /// The record.
    pub record: T,
    /// Its row's values as text, comma-separated (as the dead-letter table stores them).
    pub row: String,
    /// Why it was refused: the database's message (with its SQLSTATE code), or the value
    /// that does not fit its column.
    pub error: String,
}

/// The bad-row policy with its side output, if chosen.
enum BadRowPolicy<T> {
    Fail,
    DeadLetter(String),
    SideOutput(OutputTag<RejectedRow<T>>),
}

impl<T> Clone for BadRowPolicy<T> {
    fn clone(&self) -> Self {
        match self {
            BadRowPolicy::Fail => BadRowPolicy::Fail,
            BadRowPolicy::DeadLetter(t) => BadRowPolicy::DeadLetter(t.clone()),
            BadRowPolicy::SideOutput(tag) => BadRowPolicy::SideOutput(tag.clone()),
        }
    }
}

impl<T> From<BadRows> for BadRowPolicy<T> {
    fn from(b: BadRows) -> Self {
        match b {
            BadRows::Fail => BadRowPolicy::Fail,
            BadRows::DeadLetter(t) => BadRowPolicy::DeadLetter(t),
        }
    }
}

type RowFn<T> = dyn Fn(&T) -> Vec<SqlValue> + Send + Sync;

/// A record and its timestamp, as the sink received it.
type Rec<'a, T> = (&'a T, Option<Timestamp>);

/// The records of `batches`, in order.
fn recs_of<T>(batches: &[Batch<T>]) -> Vec<Rec<'_, T>> {
    let mut out = Vec::with_capacity(batches.iter().map(Batch::len).sum());
    for b in batches {
        match b.timestamps() {
            Some(ts) => out.extend(b.values().iter().zip(ts.iter().map(|t| Some(*t)))),
            None => out.extend(b.values().iter().map(|v| (v, None))),
        }
    }
    out
}

struct Config<T> {
    url: String,
    table: String,
    columns: Vec<String>,
    row: Arc<RowFn<T>>,
    upsert: Option<Vec<String>>,
    /// A user-supplied statement run once per row instead of `COPY` / multi-row `INSERT`.
    statement: Option<String>,
    create: Option<String>,
    prefix: String,
    bad_rows: BadRowPolicy<T>,
    batch_rows: usize,
    flush_rows: usize,
    marker_retention: std::time::Duration,
}

/// Builds a [`PostgresSink`]. See [`PostgresSink::builder`].
pub struct PostgresSinkBuilder<T> {
    url: String,
    table: Option<(String, Vec<String>)>,
    row: Option<Arc<RowFn<T>>>,
    upsert: Option<Vec<String>>,
    /// A user-supplied statement run once per row instead of `COPY` / multi-row `INSERT`.
    statement: Option<String>,
    create: Option<String>,
    prefix: String,
    bad_rows: BadRowPolicy<T>,
    batch_rows: usize,
    flush_rows: usize,
    marker_retention: std::time::Duration,
}

impl<T: Data> PostgresSinkBuilder<T> {
    /// The table and the columns each row fills, in the order [`row`](Self::row) gives the
    /// values. `schema.table` works; names are quoted as given.
    pub fn table(mut self, table: &str, columns: &[&str]) -> Self {
        self.table = Some((
            table.to_string(),
            columns.iter().map(|c| c.to_string()).collect(),
        ));
        self
    }

    /// The values of one record's row, one per column. It may be called more than once for
    /// a record (when the server refuses a batch, its rows are made again and retried one by
    /// one), so it should not have side effects.
    pub fn row(mut self, f: impl Fn(&T) -> Vec<SqlValue> + Send + Sync + 'static) -> Self {
        self.row = Some(Arc::new(f));
        self
    }

    /// Upsert instead of two-phase commit: `INSERT ... ON CONFLICT (key columns) DO UPDATE`,
    /// each batch committed at once. At least once, but idempotent: a replayed row overwrites
    /// itself, so the table ends the same (needs a unique index on the key columns). Cheaper
    /// than exactly-once: no transaction stays open across a checkpoint.
    pub fn upsert(mut self, key_columns: &[&str]) -> Self {
        self.upsert = Some(key_columns.iter().map(|c| c.to_string()).collect());
        self
    }

    /// Writes each record with this statement instead of `COPY` into a table: its
    /// parameters `$1`, `$2`, ... take the values of [`row`](Self::row), in order, and their
    /// types come from the server (`PREPARE`). Any statement works — an `INSERT` into
    /// several columns computed from the values, an `INSERT ... ON CONFLICT`, an `UPDATE`, a
    /// function call — and it still runs inside the subtask's transaction between two
    /// checkpoints, so exactly once holds with two-phase commit. The statements of a batch
    /// are pipelined on the connection (one round trip per batch, not per row); a refused
    /// one is found row by row under savepoints, like a refused `COPY`. Slower than
    /// `COPY`: one statement execution per row. `.table(name, columns)` is then optional
    /// (it names the sink in messages, and the columns name the parameters); `.upsert` does
    /// not combine with it (write the `ON CONFLICT` into the statement).
    ///
    /// # Examples
    ///
    /// ```
    /// use actorflow::postgres::{PostgresSink, SqlValue};
    /// let sink = PostgresSink::<(String, i64)>::builder("postgresql://postgres@127.0.0.1/postgres")
    ///     .statement(
    ///         "INSERT INTO totals (item, total) VALUES ($1, $2) \
    ///          ON CONFLICT (item) DO UPDATE SET total = totals.total + EXCLUDED.total",
    ///     )
    ///     .row(|(item, n)| vec![SqlValue::from(item.as_str()), SqlValue::Int(*n)])
    ///     .build();
    /// assert!(sink.is_ok());
    /// ```
    pub fn statement(mut self, sql: &str) -> Self {
        self.statement = Some(sql.to_string());
        self
    }

    /// SQL run once at open (for instance `CREATE TABLE IF NOT EXISTS ...`).
    pub fn create_table(mut self, ddl: &str) -> Self {
        self.create = Some(ddl.to_string());
        self
    }

    /// The first part of every transaction id (default `actorflow`): jobs writing to one
    /// server through sinks of the same uid need different prefixes.
    pub fn transaction_prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.to_string();
        self
    }

    /// What to do with rows the database refuses (default [`BadRows::Fail`]). Replaces an
    /// earlier [`bad_rows_to`](Self::bad_rows_to).
    pub fn bad_rows(mut self, policy: BadRows) -> Self {
        self.bad_rows = policy.into();
        self
    }

    /// Sends the records whose rows the database refuses to the side output `tag`, with the
    /// row and the database's message ([`RejectedRow`]), instead of failing; read it with
    /// `get_side_output(&tag)` on the sink's `DataStreamSink`. Replaces an earlier
    /// [`bad_rows`](Self::bad_rows).
    ///
    /// A rejected record leaves the sink before the barrier of the checkpoint whose
    /// transaction it was refused from: written to an exactly-once sink, the side output
    /// holds each rejected record once, as the table holds each good row once. The side
    /// output must be read (the job fails otherwise, rather than losing the records).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use actorflow::prelude::*;
    /// use actorflow::postgres::{PostgresSink, RejectedRow, SqlValue};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let rejected: OutputTag<RejectedRow<i64>> = OutputTag::new("rejected");
    /// let sink = PostgresSink::<i64>::builder("postgresql://postgres@127.0.0.1:5432/postgres")
    ///     .table("positive", &["n"])
    ///     .row(|n| vec![SqlValue::Int(*n)])
    ///     .bad_rows_to(&rejected)
    ///     .build()?;
    /// let env = StreamExecutionEnvironment::new();
    /// env.enable_checkpointing(std::time::Duration::from_secs(1));
    /// env.from_collection(vec![1i64, -2, 3])
    ///     .add_sink("positive", move |_: &TaskInfo| Ok(sink.clone()))
    ///     .uid("positive-sink")
    ///     .get_side_output(&rejected)
    ///     .map(|r: RejectedRow<i64>| format!("{}: {}", r.record, r.error))
    ///     .print();
    /// env.execute_blocking("positive numbers")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn bad_rows_to(mut self, tag: &OutputTag<RejectedRow<T>>) -> Self {
        self.bad_rows = BadRowPolicy::SideOutput(tag.clone());
        self
    }

    /// Exactly-once mode: rows gathered (across batches, within one checkpoint interval)
    /// before one `COPY` sends them (default 50 000).
    pub fn flush_rows(mut self, rows: usize) -> Self {
        self.flush_rows = rows.max(1);
        self
    }

    /// How long the commit marker of a committed transaction stays in `actorflow_commits`
    /// (default 7 days). A marker is what proves, when a restore commits a transaction
    /// again, that the server committed it already; subtask 0 deletes this sink's markers
    /// older than this, at most once a minute. Restoring a checkpoint or savepoint older than
    /// the retention, whose transaction committed, fails with an error that says so: keep
    /// savepoints you mean to restore within it, or raise it.
    pub fn commit_marker_retention(mut self, retention: std::time::Duration) -> Self {
        self.marker_retention = retention;
        self
    }

    /// Rows per `INSERT` statement (upserts, and the retry of a refused batch; default
    /// 1 000; fewer if the columns would exceed PostgreSQL's 65 535 parameters).
    pub fn batch_rows(mut self, rows: usize) -> Self {
        self.batch_rows = rows.max(1);
        self
    }

    /// The sink.
    ///
    /// # Errors
    ///
    /// [`PostgresError::Config`] without a table (or a statement) or a row function, with a
    /// statement and upserts, or with a prefix that holds `:` or `'`.
    pub fn build(self) -> Result<PostgresSink<T>, PostgresError> {
        let (table, columns) = match (self.table, &self.statement) {
            (Some(t), _) => t,
            (None, Some(_)) => ("(statement)".to_string(), Vec::new()),
            (None, None) => {
                return Err(PostgresError::Config(
                    "no table: call .table(name, columns) or .statement(sql)".into(),
                ));
            }
        };
        if columns.is_empty() && self.statement.is_none() {
            return Err(PostgresError::Config(format!("table {table}: no columns")));
        }
        if self.statement.is_some() && self.upsert.is_some() {
            return Err(PostgresError::Config(
                "a statement and .upsert() do not combine: write ON CONFLICT into the statement"
                    .into(),
            ));
        }
        let row = self.row.ok_or_else(|| {
            PostgresError::Config("no row function: call .row(|record| vec![...])".into())
        })?;
        if self.prefix.is_empty() || self.prefix.contains([':', '\'', '%', '_']) {
            return Err(PostgresError::Config(format!(
                "transaction prefix {:?} must be non-empty, without ':', quotes, '%' or '_'",
                self.prefix
            )));
        }
        if let BadRowPolicy::DeadLetter(t) = &self.bad_rows
            && t.is_empty()
        {
            return Err(PostgresError::Config(
                "the dead-letter table has no name".into(),
            ));
        }
        let batch_rows = self.batch_rows.min(65_535 / columns.len().max(1)).max(1);
        Ok(PostgresSink::new(Config {
            url: self.url,
            table,
            columns,
            row,
            upsert: self.upsert,
            statement: self.statement,
            create: self.create,
            prefix: self.prefix,
            bad_rows: self.bad_rows,
            batch_rows,
            flush_rows: self.flush_rows,
            marker_retention: self.marker_retention,
        }))
    }
}

/// Writes records as rows of a PostgreSQL table: exactly once with checkpointing (two-phase
/// commit, see `docs/connectors.md`), or as an idempotent upsert. Use it with
/// `add_sink(name, move |_| Ok(sink.clone()))`: each subtask gets its own connection.
///
/// # Examples
///
/// ```no_run
/// use actorflow::prelude::*;
/// use actorflow::postgres::{PostgresSink, SqlValue};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let sink = PostgresSink::<(String, i64)>::builder("postgresql://postgres@127.0.0.1:5432/postgres")
///     .create_table("CREATE TABLE IF NOT EXISTS counts (word text, n bigint)")
///     .table("counts", &["word", "n"])
///     .row(|(w, n)| vec![SqlValue::from(w.as_str()), SqlValue::Int(*n)])
///     .build()?;
/// let env = StreamExecutionEnvironment::new();
/// env.enable_checkpointing(std::time::Duration::from_secs(1));
/// env.from_collection(vec![("a".to_string(), 1i64)])
///     .add_sink("counts", move |_: &TaskInfo| Ok(sink.clone()))
///     .uid("counts-sink");
/// env.execute_blocking("to postgres")?;
/// # Ok(())
/// # }
/// ```
pub struct PostgresSink<T> {
    config: Arc<Config<T>>,
    /// The connection that writes rows, one transaction between checkpoints (shared with
    /// the task running an in-flight `COPY`).
    client: Option<Arc<Client>>,
    /// A second connection for `COMMIT PREPARED` / `ROLLBACK PREPARED`, which cannot run
    /// inside the writer's open transaction.
    control: Option<Client>,
    drivers: Vec<tokio::task::JoinHandle<()>>,
    info: Option<TaskInfo>,
    /// Unique to this subtask instance: old attempts' transactions never clash with ours.
    attempt: String,
    in_txn: bool,
    param_types: Vec<Type>,
    /// What each column takes (from `param_types`).
    columns: Vec<Column>,
    statements: HashMap<usize, Statement>,
    /// Prepared transactions waiting for their checkpoint, oldest first.
    pending: Vec<(CheckpointId, String)>,
    checkpointing: bool,
    /// Exactly-once mode: records not yet sent, written with one `COPY` when there are
    /// `flush_rows` of them or at the checkpoint (bounded: at most one `COPY` is in flight
    /// and the next flush waits for it, so backpressure holds). Kept as the batches they
    /// came in (no copy per record) to find the bad rows if the server refuses the `COPY`.
    records: Vec<Batch<T>>,
    /// How many records `records` holds.
    buffered: usize,
    /// Their rows in `COPY`'s text format, encoded as they arrive; `None` once a value did
    /// not fit its column (those records then go row by row, which names the value).
    text: Option<Vec<u8>>,
    /// Exactly-once mode: the `COPY` the server is ingesting while the sink gathers the next
    /// rows, and its records.
    in_flight: Option<InFlightCopy<T>>,
    /// When subtask 0 last deleted expired commit markers.
    pruned: Option<std::time::Instant>,
    /// Rejected records, when they go to a side output.
    side: SideOutputs,
}

/// A `COPY` running on the writer connection, under the savepoint `actorflow_copy`.
struct InFlightCopy<T> {
    task: tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
    records: Vec<Batch<T>>,
}

impl<T: Data> Clone for PostgresSink<T> {
    /// A new, unconnected sink with the same configuration.
    fn clone(&self) -> Self {
        PostgresSink::new_shared(self.config.clone())
    }
}

impl<T> fmt::Debug for PostgresSink<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresSink")
            .field("table", &self.config.table)
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

/// `"name"`, or `"schema"."name"`.
pub(super) fn quote_ident(name: &str) -> String {
    name.split('.')
        .map(|p| format!("\"{}\"", p.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(".")
}

/// `'text'`, quotes doubled.
pub(super) fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn random_token() -> String {
    actorflow_runtime::JobId::generate().to_string()[..16].to_string()
}

/// What a column takes, decided once from its type, so the per-row checks compare no
/// [`Type`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    Bool,
    Int2,
    Int4,
    Int8,
    Float,
    /// `text`, `varchar`, `char`.
    Text,
    /// `name`: text only.
    Name,
    /// Anything else: only `NULL` fits.
    Other,
}

impl Column {
    fn of(ty: &Type) -> Self {
        match *ty {
            Type::BOOL => Column::Bool,
            Type::INT2 => Column::Int2,
            Type::INT4 => Column::Int4,
            Type::INT8 => Column::Int8,
            Type::FLOAT4 | Type::FLOAT8 => Column::Float,
            Type::TEXT | Type::VARCHAR | Type::BPCHAR => Column::Text,
            Type::NAME => Column::Name,
            _ => Column::Other,
        }
    }
}

/// True if `v` can go into a column of kind `c` (what [`PostgresSink::param`] accepts),
/// without allocating.
fn fits_column(c: Column, v: &SqlValue) -> bool {
    match v {
        SqlValue::Null => true,
        SqlValue::Bool(_) => matches!(c, Column::Bool | Column::Text),
        SqlValue::Int(i) => match c {
            Column::Int2 => i16::try_from(*i).is_ok(),
            Column::Int4 => i32::try_from(*i).is_ok(),
            Column::Int8 | Column::Float | Column::Text | Column::Name => true,
            Column::Bool | Column::Other => false,
        },
        SqlValue::Float(_) => matches!(c, Column::Float | Column::Text),
        SqlValue::Text(_) => matches!(c, Column::Text | Column::Name),
    }
}

/// Appends `row` to `out` in `COPY`'s text format (one line). Returns false, leaving `out`
/// as it was, if the row has the wrong number of values or a value does not fit its column
/// (the same checks as for bound parameters: types, ranges).
fn encode_row(out: &mut Vec<u8>, row: &[SqlValue], columns: &[Column]) -> bool {
    if row.len() != columns.len() {
        return false;
    }
    let start = out.len();
    for (k, (v, &c)) in row.iter().zip(columns).enumerate() {
        if !fits_column(c, v) {
            out.truncate(start);
            return false;
        }
        if k > 0 {
            out.push(b'\t');
        }
        match v {
            SqlValue::Null => out.extend_from_slice(b"\\N"),
            SqlValue::Bool(b) => out.extend_from_slice(match (c == Column::Bool, *b) {
                (true, true) => b"t",
                (true, false) => b"f",
                (false, true) => b"true",
                (false, false) => b"false",
            }),
            SqlValue::Int(i) => push_int(out, *i),
            SqlValue::Float(x) => {
                let _ = std::io::Write::write_fmt(out, format_args!("{x}"));
            }
            SqlValue::Text(t) => push_text(out, t.as_bytes()),
        }
    }
    out.push(b'\n');
    true
}

/// Appends `t` with `COPY`'s escapes for backslash, tab, newline and carriage return.
fn push_text(out: &mut Vec<u8>, t: &[u8]) {
    // No early exit, so the check vectorises; a control character that needs no escape
    // only sends the text the slow way.
    let plain = !t
        .iter()
        .fold(false, |any, &b| any | (b <= b'\r') | (b == b'\\'));
    if plain {
        out.extend_from_slice(t);
        return;
    }
    for &b in t {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b => out.push(b),
        }
    }
}

/// Appends `i` in decimal, without the formatting machinery (the sink's hot path).
fn push_int(out: &mut Vec<u8>, i: i64) {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    let mut n = i.unsigned_abs();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if i < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[at..]);
}

/// A database error with its message, detail and SQLSTATE.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => {
            let mut s = format!("{} (SQLSTATE {})", d.message(), d.code().code());
            if let Some(detail) = d.detail() {
                s.push_str(&format!("; {detail}"));
            }
            s
        }
        None => e.to_string(),
    }
}

const MARKERS: &str = "actorflow_commits";

impl<T: Data> PostgresSink<T> {
    fn new(config: Config<T>) -> Self {
        Self::new_shared(Arc::new(config))
    }

    fn new_shared(config: Arc<Config<T>>) -> Self {
        PostgresSink {
            config,
            client: None,
            control: None,
            drivers: Vec::new(),
            info: None,
            attempt: random_token(),
            in_txn: false,
            param_types: Vec::new(),
            columns: Vec::new(),
            statements: HashMap::new(),
            pending: Vec::new(),
            checkpointing: false,
            records: Vec::new(),
            buffered: 0,
            text: Some(Vec::new()),
            in_flight: None,
            pruned: None,
            side: SideOutputs::new(),
        }
    }

    /// A builder for a sink that connects to `url`
    /// (`postgresql://user[:password]@host:port/database`).
    pub fn builder(url: &str) -> PostgresSinkBuilder<T> {
        PostgresSinkBuilder {
            url: url.to_string(),
            table: None,
            row: None,
            upsert: None,
            statement: None,
            create: None,
            prefix: "actorflow".into(),
            bad_rows: BadRowPolicy::Fail,
            batch_rows: 1000,
            flush_rows: 50_000,
            marker_retention: std::time::Duration::from_secs(7 * 24 * 3600),
        }
    }

    fn err(&self, what: &str, e: &tokio_postgres::Error) -> UserError {
        let subtask = self.info.as_ref().map_or(0, |i| i.subtask_index);
        UserError::from(format!(
            "PostgreSQL sink (table {}, subtask {subtask}): {what}: {}",
            self.config.table,
            describe(e)
        ))
    }

    fn client(&self) -> Result<&Client, UserError> {
        self.client
            .as_deref()
            .ok_or_else(|| UserError::from("PostgreSQL sink used before open()"))
    }

    /// `PREFIX:OPERATOR:`: what every gid of this sink starts with.
    fn gid_prefix(&self) -> String {
        let op = self.info.as_ref().map_or_else(String::new, |i| {
            let name = i.uid.as_deref().unwrap_or(&i.operator_name);
            name.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '-'
                    }
                })
                .take(80)
                .collect::<String>()
        });
        format!("{}:{op}:", self.config.prefix)
    }

    fn gid(&self, checkpoint: CheckpointId) -> String {
        let index = self.info.as_ref().map_or(0, |i| i.subtask_index);
        format!(
            "{}{index}:{}:{}",
            self.gid_prefix(),
            self.attempt,
            checkpoint.0
        )
    }

    /// True if this subtask resolves the leftover transactions of the gid's subtask.
    fn responsible_for(&self, gid: &str) -> bool {
        let Some(info) = &self.info else {
            return false;
        };
        let index = gid
            .strip_prefix(&self.gid_prefix())
            .and_then(|rest| rest.split(':').next())
            .and_then(|i| i.parse::<usize>().ok());
        match index {
            Some(i) => {
                i == info.subtask_index
                    || (info.subtask_index == 0 && i >= info.parallelism as usize)
            }
            None => false,
        }
    }

    fn control(&self) -> Result<&Client, UserError> {
        self.control
            .as_ref()
            .ok_or_else(|| UserError::from("PostgreSQL sink used before open()"))
    }

    async fn execute(&self, sql: &str, what: &str) -> Result<(), UserError> {
        self.client()?
            .batch_execute(sql)
            .await
            .map_err(|e| self.err(what, &e))
    }

    /// The sink's prepared transactions the server holds, by gid.
    async fn prepared(&self) -> Result<Vec<String>, UserError> {
        let like = format!("{}%", self.gid_prefix());
        let rows = self
            .control()?
            .query(
                "SELECT gid FROM pg_prepared_xacts WHERE gid LIKE $1 AND database = current_database()",
                &[&like],
            )
            .await
            .map_err(|e| self.err("cannot list prepared transactions", &e))?;
        Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
    }

    /// Makes prepared transaction `gid` visible; if the server no longer holds it, succeeds
    /// only if it was committed (its marker is visible).
    async fn commit_prepared(&self, gid: &str) -> Result<(), UserError> {
        let sql = format!("COMMIT PREPARED {}", quote_literal(gid));
        match self.control()?.batch_execute(&sql).await {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some(&SqlState::UNDEFINED_OBJECT) => {
                let committed = self
                    .control()?
                    .query_opt(&format!("SELECT 1 FROM {MARKERS} WHERE gid = $1"), &[&gid])
                    .await
                    .map_err(|e| self.err("cannot check a commit marker", &e))?
                    .is_some();
                if committed {
                    Ok(())
                } else {
                    Err(UserError::from(format!(
                        "PostgreSQL sink (table {}): transaction {gid} of a completed checkpoint is neither prepared nor committed: its rows are lost (rolled back by hand, or by another job with the same transaction prefix and sink uid), or the checkpoint is older than the commit marker retention ({:?}) and its marker was deleted",
                        self.config.table, self.config.marker_retention
                    )))
                }
            }
            Err(e) => Err(self.err(&format!("cannot commit {gid}"), &e)),
        }
    }

    /// Commits the transactions in `keep` this subtask is responsible for and rolls back
    /// every other prepared transaction of this sink it is responsible for.
    async fn resolve(&self, keep: &BTreeSet<String>) -> Result<(), UserError> {
        for gid in keep.iter().filter(|g| self.responsible_for(g)) {
            self.commit_prepared(gid).await?;
        }
        for gid in self.prepared().await? {
            if !keep.contains(&gid) && self.responsible_for(&gid) {
                tracing::info!(%gid, table = %self.config.table, "rolling back a prepared transaction of an attempt after the restored checkpoint");
                let sql = format!("ROLLBACK PREPARED {}", quote_literal(&gid));
                match self.control()?.batch_execute(&sql).await {
                    Ok(()) => {}
                    // Resolved meanwhile by another instance: nothing to do.
                    Err(e) if e.code() == Some(&SqlState::UNDEFINED_OBJECT) => {}
                    Err(e) => return Err(self.err(&format!("cannot roll back {gid}"), &e)),
                }
            }
        }
        Ok(())
    }

    fn insert_sql(&self, rows: usize) -> String {
        let c = &self.config;
        let cols: Vec<String> = c.columns.iter().map(|n| quote_ident(n)).collect();
        let mut sql = format!(
            "INSERT INTO {} ({}) VALUES ",
            quote_ident(&c.table),
            cols.join(", ")
        );
        let n = c.columns.len();
        for r in 0..rows {
            if r > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for k in 0..n {
                if k > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("${}", r * n + k + 1));
            }
            sql.push(')');
        }
        if let Some(keys) = &c.upsert {
            let keys_q: Vec<String> = keys.iter().map(|k| quote_ident(k)).collect();
            let others: Vec<String> = c
                .columns
                .iter()
                .filter(|col| !keys.contains(col))
                .map(|col| format!("{0} = EXCLUDED.{0}", quote_ident(col)))
                .collect();
            if others.is_empty() {
                sql.push_str(&format!(" ON CONFLICT ({}) DO NOTHING", keys_q.join(", ")));
            } else {
                sql.push_str(&format!(
                    " ON CONFLICT ({}) DO UPDATE SET {}",
                    keys_q.join(", "),
                    others.join(", ")
                ));
            }
        }
        sql
    }

    async fn statement(&mut self, rows: usize) -> Result<Statement, UserError> {
        if let Some(s) = self.statements.get(&rows) {
            return Ok(s.clone());
        }
        let sql = match &self.config.statement {
            Some(sql) => sql.clone(),
            None => self.insert_sql(rows),
        };
        let stmt = self.client()?.prepare(&sql).await.map_err(|e| {
            let what = match self.config.statement {
                Some(_) => "cannot prepare the statement",
                None => "cannot prepare the INSERT",
            };
            self.err(what, &e)
        })?;
        self.statements.insert(rows, stmt.clone());
        Ok(stmt)
    }

    /// Converts `v` for a parameter of type `ty`.
    fn param(
        &self,
        column: usize,
        ty: &Type,
        v: &SqlValue,
    ) -> Result<Box<dyn ToSql + Sync + Send>, String> {
        let name = self
            .config
            .columns
            .get(column)
            .cloned()
            .unwrap_or_else(|| format!("${}", column + 1));
        let bad = || format!("column {name} ({ty}) cannot take {v}");
        let int = |i: i64| -> Result<Box<dyn ToSql + Sync + Send>, String> {
            Ok(match *ty {
                Type::INT2 => Box::new(i16::try_from(i).map_err(|_| bad())?),
                Type::INT4 => Box::new(i32::try_from(i).map_err(|_| bad())?),
                Type::INT8 => Box::new(i),
                Type::FLOAT4 => Box::new(i as f32),
                Type::FLOAT8 => Box::new(i as f64),
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => Box::new(i.to_string()),
                _ => return Err(bad()),
            })
        };
        Ok(match v {
            SqlValue::Null => match *ty {
                Type::BOOL => Box::new(None::<bool>),
                Type::INT2 => Box::new(None::<i16>),
                Type::INT4 => Box::new(None::<i32>),
                Type::INT8 => Box::new(None::<i64>),
                Type::FLOAT4 => Box::new(None::<f32>),
                Type::FLOAT8 => Box::new(None::<f64>),
                _ => Box::new(None::<String>),
            },
            SqlValue::Bool(b) => match *ty {
                Type::BOOL => Box::new(*b),
                Type::TEXT | Type::VARCHAR | Type::BPCHAR => Box::new(b.to_string()),
                _ => return Err(bad()),
            },
            SqlValue::Int(i) => int(*i)?,
            SqlValue::Float(x) => match *ty {
                Type::FLOAT4 => Box::new(*x as f32),
                Type::FLOAT8 => Box::new(*x),
                Type::TEXT | Type::VARCHAR | Type::BPCHAR => Box::new(x.to_string()),
                _ => return Err(bad()),
            },
            SqlValue::Text(s) => match *ty {
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => Box::new(s.clone()),
                _ => return Err(bad()),
            },
        })
    }

    /// Parameters for `rows`, or the first row that does not fit the columns' types.
    #[allow(clippy::type_complexity)]
    fn params(
        &self,
        rows: &[Vec<SqlValue>],
    ) -> Result<Vec<Box<dyn ToSql + Sync + Send>>, (usize, String)> {
        let width = self.param_types.len();
        let mut out = Vec::with_capacity(rows.len() * width);
        for (r, row) in rows.iter().enumerate() {
            if row.len() != width {
                return Err((
                    r,
                    format!("the row has {} values for {width} parameters", row.len()),
                ));
            }
            for (k, v) in row.iter().enumerate() {
                out.push(self.param(k, &self.param_types[k], v).map_err(|e| (r, e))?);
            }
        }
        Ok(out)
    }

    /// Inserts `rows` (already checked by [`params`](Self::params)); the inner result is the
    /// database's answer.
    async fn insert(
        &mut self,
        rows: &[Vec<SqlValue>],
    ) -> Result<Result<(), tokio_postgres::Error>, UserError> {
        if self.config.statement.is_some() {
            return self.execute_each(rows).await;
        }
        let stmt = match self.statements.get(&rows.len()) {
            Some(s) => s.clone(),
            None => {
                let sql = self.insert_sql(rows.len());
                match self.client()?.prepare(&sql).await {
                    Ok(s) => {
                        self.statements.insert(rows.len(), s.clone());
                        s
                    }
                    Err(e) => return Ok(Err(e)),
                }
            }
        };
        let params = self.params(rows).map_err(|(_, m)| UserError::from(m))?;
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        Ok(self.client()?.execute(&stmt, &refs).await.map(|_| ()))
    }

    /// Runs the user's statement once per row (prepared at open), pipelined: every execution
    /// is sent before the answers are awaited. The inner result is the database's first
    /// refusal (the transaction is then aborted: the caller rolls back to its savepoint).
    async fn execute_each(
        &mut self,
        rows: &[Vec<SqlValue>],
    ) -> Result<Result<(), tokio_postgres::Error>, UserError> {
        let stmt = self.statement(1).await?;
        let params = self.params(rows).map_err(|(_, m)| UserError::from(m))?;
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let client = self.client()?;
        let width = self.param_types.len();
        let runs = if width == 0 {
            // A statement without parameters: once per row all the same.
            futures_util::future::join_all(rows.iter().map(|_| client.execute(&stmt, &[]))).await
        } else {
            futures_util::future::join_all(refs.chunks(width).map(|r| client.execute(&stmt, r)))
                .await
        };
        Ok(runs.into_iter().find_map(Result::err).map_or(Ok(()), Err))
    }

    /// A row the database (or the type mapping) refused: fail, into the dead-letter table,
    /// or to the side output.
    async fn bad_row(
        &mut self,
        (record, ts): Rec<'_, T>,
        row: &[SqlValue],
        message: &str,
    ) -> Result<(), UserError> {
        let text = row
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        match &self.config.bad_rows {
            BadRowPolicy::Fail => Err(UserError::from(format!(
                "PostgreSQL sink (table {}): the row ({text}) was refused: {message}",
                self.config.table
            ))),
            BadRowPolicy::SideOutput(tag) => {
                let rejected = RejectedRow {
                    record: record.clone(),
                    row: text,
                    error: message.to_string(),
                };
                self.side.output_with_timestamp(tag, rejected, ts);
                Ok(())
            }
            BadRowPolicy::DeadLetter(table) => {
                let sql = format!(
                    "INSERT INTO {} (row, error) VALUES ($1, $2)",
                    quote_ident(table)
                );
                self.client()?
                    .execute(&sql, &[&text, &message])
                    .await
                    .map(|_| ())
                    .map_err(|e| self.err("cannot write to the dead-letter table", &e))
            }
        }
    }

    /// `rows` in `COPY`'s text format, or `None` if a value does not fit its column (the
    /// row-by-row path then names it).
    fn copy_text(&self, rows: &[Vec<SqlValue>]) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(rows.len() * 16 * self.config.columns.len());
        for row in rows {
            if !encode_row(&mut out, row, &self.columns) {
                return None;
            }
        }
        Some(out)
    }

    /// The rows of `records`, from the user's row function.
    fn rows_of(&self, records: &[Batch<T>]) -> Vec<Vec<SqlValue>> {
        records
            .iter()
            .flat_map(|b| b.values().iter().map(|r| (self.config.row)(r)))
            .collect()
    }

    /// `COPY table (columns) FROM STDIN`.
    fn copy_sql(&self) -> String {
        let cols: Vec<String> = self.config.columns.iter().map(|n| quote_ident(n)).collect();
        format!(
            "COPY {} ({}) FROM STDIN",
            quote_ident(&self.config.table),
            cols.join(", ")
        )
    }

    /// Sends `text` with `COPY` on `client`; the database's answer.
    async fn copy_on(
        client: &Client,
        sql: &str,
        text: Vec<u8>,
    ) -> Result<(), tokio_postgres::Error> {
        use futures_util::SinkExt;
        let sink = client.copy_in::<_, bytes::Bytes>(sql).await?;
        futures_util::pin_mut!(sink);
        sink.send(bytes::Bytes::from(text)).await?;
        sink.finish().await.map(|_| ())
    }

    /// `COPY` of `text` into the table; the inner result is the database's answer.
    async fn copy(&self, text: Vec<u8>) -> Result<Result<(), tokio_postgres::Error>, UserError> {
        let sql = self.copy_sql();
        Ok(Self::copy_on(self.client()?, &sql, text).await)
    }

    /// Waits for the in-flight `COPY` (exactly-once mode): on success its savepoint is
    /// released; if the server refused a row, the batch is rolled back to its savepoint
    /// and written row by row, which names (or sets aside) the bad rows.
    async fn settle_copy(&mut self) -> Result<(), UserError> {
        let Some(InFlightCopy { task, records }) = self.in_flight.take() else {
            return Ok(());
        };
        let result = task
            .await
            .map_err(|e| UserError::from(format!("PostgreSQL sink: the COPY task failed: {e}")))?;
        match result {
            Ok(()) => {
                self.execute(
                    "RELEASE SAVEPOINT actorflow_copy",
                    "cannot release a savepoint",
                )
                .await
            }
            Err(e) if e.as_db_error().is_some() => {
                self.execute(
                    "ROLLBACK TO SAVEPOINT actorflow_copy",
                    "cannot roll back to a savepoint",
                )
                .await?;
                let rows = self.rows_of(&records);
                for (rec, row) in recs_of(&records).into_iter().zip(&rows) {
                    self.write_one(rec, row).await?;
                }
                Ok(())
            }
            Err(e) => Err(self.err("cannot COPY", &e)),
        }
    }

    /// Writes `rows` inside the open transaction: with `COPY` (plain and exactly-once modes)
    /// or multi-row `INSERT`s (upserts). A refused batch is rolled back to its savepoint and
    /// retried row by row (each under a savepoint) to find the bad rows without losing the
    /// good ones.
    async fn write_rows(
        &mut self,
        recs: &[Rec<'_, T>],
        rows: Vec<Vec<SqlValue>>,
    ) -> Result<(), UserError> {
        if self.config.upsert.is_none()
            && self.config.statement.is_none()
            && let Some(text) = self.copy_text(&rows)
        {
            self.execute("SAVEPOINT actorflow_copy", "cannot set a savepoint")
                .await?;
            match self.copy(text).await? {
                Ok(()) => {
                    return self
                        .execute(
                            "RELEASE SAVEPOINT actorflow_copy",
                            "cannot release a savepoint",
                        )
                        .await;
                }
                Err(e) if e.as_db_error().is_some() => {
                    self.execute(
                        "ROLLBACK TO SAVEPOINT actorflow_copy",
                        "cannot roll back to a savepoint",
                    )
                    .await?;
                    for (rec, row) in recs.iter().zip(&rows) {
                        self.write_one(*rec, row).await?;
                    }
                    return Ok(());
                }
                Err(e) => return Err(self.err("cannot COPY", &e)),
            }
        }
        let chunk_rows = self.config.batch_rows;
        let (recs, rows): (Vec<Rec<'_, T>>, Vec<Vec<SqlValue>>) = match self.last_per_key(&rows) {
            Some(keep) => {
                // Moved out, not cloned: each kept index once.
                let mut rows = rows;
                keep.into_iter()
                    .map(|i| (recs[i], std::mem::take(&mut rows[i])))
                    .unzip()
            }
            None => (recs.to_vec(), rows),
        };
        for (chunk, chunk_recs) in rows.chunks(chunk_rows).zip(recs.chunks(chunk_rows)) {
            if self.params(chunk).is_err() {
                // The client cannot encode a row: find every such row, one at a time.
                for (rec, row) in chunk_recs.iter().zip(chunk) {
                    self.write_one(*rec, row).await?;
                }
                continue;
            }
            self.execute("SAVEPOINT actorflow_chunk", "cannot set a savepoint")
                .await?;
            match self.insert(chunk).await? {
                Ok(()) => {
                    self.execute(
                        "RELEASE SAVEPOINT actorflow_chunk",
                        "cannot release a savepoint",
                    )
                    .await?;
                }
                Err(e) if e.as_db_error().is_some() => {
                    self.execute(
                        "ROLLBACK TO SAVEPOINT actorflow_chunk",
                        "cannot roll back to a savepoint",
                    )
                    .await?;
                    for (rec, row) in chunk_recs.iter().zip(chunk) {
                        self.write_one(*rec, row).await?;
                    }
                }
                Err(e) => return Err(self.err("cannot insert", &e)),
            }
        }
        Ok(())
    }

    /// One row under its own savepoint: inserted, or handled as a bad row.
    async fn write_one(&mut self, rec: Rec<'_, T>, row: &[SqlValue]) -> Result<(), UserError> {
        if let Err((_, message)) = self.params(std::slice::from_ref(&row.to_vec())) {
            return self.bad_row(rec, row, &message).await;
        }
        self.execute("SAVEPOINT actorflow_row", "cannot set a savepoint")
            .await?;
        match self.insert(std::slice::from_ref(&row.to_vec())).await? {
            Ok(()) => {
                self.execute(
                    "RELEASE SAVEPOINT actorflow_row",
                    "cannot release a savepoint",
                )
                .await
            }
            Err(e) if e.as_db_error().is_some() => {
                self.execute(
                    "ROLLBACK TO SAVEPOINT actorflow_row",
                    "cannot roll back to a savepoint",
                )
                .await?;
                self.bad_row(rec, row, &describe(&e)).await
            }
            Err(e) => Err(self.err("cannot insert", &e)),
        }
    }

    /// Upserts: the last row of each key (one statement cannot update a row twice), as the
    /// indices of the rows to write, in order (`None`: not upserting, all of them).
    fn last_per_key(&self, rows: &[Vec<SqlValue>]) -> Option<Vec<usize>> {
        let keys = self.config.upsert.as_ref()?;
        let key_idx: Vec<usize> = keys
            .iter()
            .filter_map(|k| self.config.columns.iter().position(|c| c == k))
            .collect();
        let mut last: HashMap<String, usize> = HashMap::new();
        for (i, r) in rows.iter().enumerate() {
            let key = key_idx
                .iter()
                .map(|&k| r.get(k).map_or(String::new(), |v| format!("{v:?}")))
                .collect::<Vec<_>>()
                .join("\u{1}");
            last.insert(key, i);
        }
        let mut keep: Vec<usize> = last.into_values().collect();
        keep.sort_unstable();
        Some(keep)
    }

    async fn begin_if_needed(&mut self) -> Result<(), UserError> {
        if !self.in_txn {
            self.execute("BEGIN", "cannot begin a transaction").await?;
            self.in_txn = true;
        }
        Ok(())
    }

    async fn commit_now(&mut self) -> Result<(), UserError> {
        if self.in_txn {
            self.execute("COMMIT", "cannot commit").await?;
            self.in_txn = false;
        }
        Ok(())
    }
}

impl<T: Data> Sink for PostgresSink<T> {
    type Input = T;

    async fn open(&mut self, info: &TaskInfo) -> Result<(), UserError> {
        self.info = Some(info.clone());
        self.checkpointing = info.checkpointing;
        self.client = Some(Arc::new(self.connect().await?));
        self.control = Some(self.connect().await?);
        if let Some(ddl) = self.config.create.clone() {
            self.create(&ddl).await?;
        }
        if !self.exactly_once() {
            // Upserts and unchekpointed jobs commit every batch: no markers, no 2PC.
        } else {
            self.create(&format!(
                "CREATE TABLE IF NOT EXISTS {MARKERS} (gid text PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())"
            ))
            .await?;
        }
        if let BadRowPolicy::DeadLetter(t) = &self.config.bad_rows {
            let ddl = format!(
                "CREATE TABLE IF NOT EXISTS {} (row text, error text, at timestamptz NOT NULL DEFAULT now())",
                quote_ident(t)
            );
            self.create(&ddl).await?;
        }
        let stmt = self.statement(1).await?;
        self.param_types = stmt.params().to_vec();
        self.columns = self.param_types.iter().map(Column::of).collect();
        if self.exactly_once() && info.restored_from.is_none() {
            // A fresh start: nothing prepared by an earlier run was part of a checkpoint we
            // continue from.
            self.resolve(&BTreeSet::new()).await?;
        }
        Ok(())
    }

    async fn write_batch(&mut self, batch: Batch<T>) -> Result<(), UserError> {
        if self.exactly_once() {
            // With a statement there is no `COPY` text to build (see `flush`).
            if self.config.statement.is_none()
                && let Some(text) = &mut self.text
            {
                for r in batch.values() {
                    if !encode_row(text, &(self.config.row)(r), &self.columns) {
                        self.text = None;
                        break;
                    }
                }
            }
            self.buffered += batch.len();
            self.records.push(batch);
            if self.buffered >= self.config.flush_rows {
                self.flush().await?;
            }
            return Ok(());
        }
        if batch.is_empty() {
            return Ok(());
        }
        let batches = [batch];
        let rows = self.rows_of(&batches);
        self.begin_if_needed().await?;
        self.write_rows(&recs_of(&batches), rows).await?;
        if !self.exactly_once() {
            self.commit_now().await?;
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<(), UserError> {
        if !self.exactly_once() {
            self.commit_now().await?;
        }
        // With checkpointing the final checkpoint prepares the last transaction and its
        // completion commits it.
        Ok(())
    }

    async fn snapshot_state(
        &mut self,
        checkpoint: CheckpointId,
        state: &mut OperatorState,
    ) -> Result<(), UserError> {
        self.flush().await?;
        self.settle_copy().await?;
        if self.exactly_once() && self.in_txn {
            let gid = self.gid(checkpoint);
            self.client()?
                .execute(&format!("INSERT INTO {MARKERS} (gid) VALUES ($1)"), &[&gid])
                .await
                .map_err(|e| self.err("cannot write the commit marker", &e))?;
            self.execute(
                &format!("PREPARE TRANSACTION {}", quote_literal(&gid)),
                "cannot prepare the transaction",
            )
            .await?;
            self.in_txn = false;
            self.pending.push((checkpoint, gid));
        }
        let index = self.info.as_ref().map_or(0, |i| i.subtask_index);
        for p in &self.pending {
            state.push_union(index, p)?;
        }
        Ok(())
    }

    async fn restore_state(&mut self, restored: RestoredState) -> Result<(), UserError> {
        if !self.exactly_once() {
            return Ok(());
        }
        let keep: BTreeSet<String> = restored
            .state
            .union_items::<(CheckpointId, String)>()?
            .into_iter()
            .map(|(_, (_, gid))| gid)
            .collect();
        if let Some(info) = &self.info {
            info.generation.ensure_current()?;
        }
        self.resolve(&keep).await
    }

    async fn notify_checkpoint_complete(
        &mut self,
        checkpoint: CheckpointId,
    ) -> Result<(), UserError> {
        if !self.pending.iter().any(|(c, _)| *c <= checkpoint) {
            return Ok(());
        }
        if let Some(info) = &self.info {
            // A subtask of an attempt before a restart must not commit.
            info.generation.ensure_current()?;
        }
        let (ready, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|(c, _)| *c <= checkpoint);
        self.pending = keep;
        for (_, gid) in ready {
            self.commit_prepared(&gid).await?;
        }
        self.prune_markers().await
    }

    fn is_transactional(&self) -> bool {
        self.exactly_once()
    }

    fn side_outputs(&mut self) -> Option<&mut SideOutputs> {
        match self.config.bad_rows {
            BadRowPolicy::SideOutput(_) => Some(&mut self.side),
            _ => None,
        }
    }
}

impl<T: Data> PostgresSink<T> {
    /// Sends the buffered rows (exactly-once mode) into the open transaction: waits for
    /// the previous `COPY`, then starts one for these rows that runs on the server while the
    /// sink gathers the next ones. Call [`settle_copy`](Self::settle_copy) before anything
    /// else uses the connection.
    async fn flush(&mut self) -> Result<(), UserError> {
        self.settle_copy().await?;
        if self.buffered == 0 {
            return Ok(());
        }
        let records = std::mem::take(&mut self.records);
        let capacity = self.text.as_ref().map_or(0, Vec::len);
        let text = match self.config.statement {
            // The user's statement row by row (pipelined), not `COPY`.
            Some(_) => None,
            None => self.text.replace(Vec::with_capacity(capacity)),
        };
        self.buffered = 0;
        self.begin_if_needed().await?;
        let Some(text) = text else {
            // A value that does not fit its column (row by row names it), or the user's
            // statement.
            let rows = self.rows_of(&records);
            return self.write_rows(&recs_of(&records), rows).await;
        };
        self.execute("SAVEPOINT actorflow_copy", "cannot set a savepoint")
            .await?;
        let client = self
            .client
            .clone()
            .ok_or_else(|| UserError::from("PostgreSQL sink used before open()"))?;
        let sql = self.copy_sql();
        let task = tokio::spawn(async move { Self::copy_on(&client, &sql, text).await });
        self.in_flight = Some(InFlightCopy { task, records });
        Ok(())
    }

    /// Subtask 0 deletes this sink's commit markers older than the retention, at most once
    /// a minute (after a commit).
    async fn prune_markers(&mut self) -> Result<(), UserError> {
        if self.info.as_ref().is_none_or(|i| i.subtask_index != 0)
            || self
                .pruned
                .is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(60))
        {
            return Ok(());
        }
        self.pruned = Some(std::time::Instant::now());
        let like = format!("{}%", self.gid_prefix());
        let secs = self.config.marker_retention.as_secs_f64();
        let deleted = self
            .control()?
            .execute(
                &format!(
                    "DELETE FROM {MARKERS} WHERE gid LIKE $1 AND at < now() - make_interval(secs => $2)"
                ),
                &[&like, &secs],
            )
            .await;
        // Housekeeping: a failure is worth a warning, not a restart.
        match deleted {
            Ok(0) => {}
            Ok(n) => {
                tracing::debug!(deleted = n, table = %self.config.table, "expired commit markers deleted");
            }
            Err(e) => {
                tracing::warn!(table = %self.config.table, error = %describe(&e), "cannot delete expired commit markers");
            }
        }
        Ok(())
    }

    /// Two-phase commit: checkpointing on and no upsert.
    fn exactly_once(&self) -> bool {
        self.checkpointing && self.config.upsert.is_none()
    }

    /// A new connection, its I/O driven by a task of its own.
    async fn connect(&mut self) -> Result<Client, UserError> {
        let (client, connection) = tokio_postgres::connect(&self.config.url, NoTls)
            .await
            .map_err(|e| self.err("cannot connect", &e))?;
        let table = self.config.table.clone();
        self.drivers.push(tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(%table, error = %e, "PostgreSQL sink: the connection ended");
            }
        }));
        Ok(client)
    }

    /// Runs DDL; a concurrent `CREATE ... IF NOT EXISTS` by another subtask may fail with a
    /// unique violation on the catalog, which means the object exists now.
    async fn create(&self, ddl: &str) -> Result<(), UserError> {
        match self.client()?.batch_execute(ddl).await {
            Ok(()) => Ok(()),
            Err(e)
                if e.code() == Some(&SqlState::UNIQUE_VIOLATION)
                    || e.code() == Some(&SqlState::DUPLICATE_TABLE) =>
            {
                Ok(())
            }
            Err(e) => Err(self.err(&format!("cannot run {ddl:?}"), &e)),
        }
    }
}

impl<T> Drop for PostgresSink<T> {
    /// Closes the connections: the server rolls back a transaction that was not prepared.
    fn drop(&mut self) {
        for d in self.drivers.drain(..) {
            d.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_written_as_decimal_text() {
        for i in [0, 7, -7, 10, -10, 1_234_567_890_123, i64::MAX, i64::MIN] {
            let mut s = b"x".to_vec();
            push_int(&mut s, i);
            assert_eq!(s, format!("x{i}").into_bytes());
        }
    }

    #[test]
    fn a_row_that_does_not_fit_leaves_the_text_as_it_was() {
        let types = [Column::Int4, Column::Text, Column::Bool];
        let mut out = Vec::new();
        assert!(encode_row(
            &mut out,
            &[
                SqlValue::Int(-3),
                SqlValue::Text("a\tb\\c\nd".into()),
                SqlValue::Bool(true)
            ],
            &types
        ));
        assert!(encode_row(
            &mut out,
            &[
                SqlValue::Null,
                SqlValue::Text("plain".into()),
                SqlValue::Null
            ],
            &types
        ));
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "-3\ta\\tb\\\\c\\nd\tt\n\\N\tplain\t\\N\n"
        );
        let before = out.clone();
        // Out of `integer` range; text for an integer column; too few values.
        for row in [
            vec![SqlValue::Int(1 << 40), SqlValue::Null, SqlValue::Null],
            vec![
                SqlValue::Int(1),
                SqlValue::Int(2),
                SqlValue::Text("x".into()),
            ],
            vec![SqlValue::Int(1)],
        ] {
            assert!(!encode_row(&mut out, &row, &types), "{row:?}");
            assert_eq!(out, before);
        }
    }
}
