//! [`PostgresCdcSource`]: the changes of chosen tables, from a logical replication slot.
//!
//! One slot, named by the user, read with the **streaming replication protocol** (a
//! replication connection, `START_REPLICATION … LOGICAL` with the `pgoutput` plugin, protocol
//! 1; see `replication.rs`). The server sends changes as they are decoded; the source tells
//! it how far it may forget (the slot's `confirmed_flush_lsn`) only in standby status updates
//! sent when a checkpoint that holds that position **completes**
//! (`notify_checkpoint_complete`), so the server keeps everything after the newest completed
//! checkpoint. When the source ends (`stop_at_lsn`, `stop_when_idle`) it waits for the job's
//! final checkpoint, confirms it, and closes the stream cleanly, so the slot's last position
//! is the final one.
//!
//! After a restart or a restore the stream starts again at the slot's confirmed position,
//! which is never past the restored one (checked before streaming: if it is, the changes in
//! between are gone from the server and the source fails rather than miss them), and the
//! source skips whole transactions whose end LSN is at or before the restored position:
//! nothing is lost or repeated.
//!
//! Whole transactions only: changes are buffered from `Begin` to `Commit`, then emitted with
//! the commit's LSN (its end LSN, which is also the position) and commit time as event time.
//! After each transaction the source emits a watermark (the commit time, never going back).
//! When no change arrives for the idle timeout it marks itself idle, so downstream windows
//! still fire.
//!
//! With an **initial snapshot** a fresh start first creates the slot with an exported
//! snapshot and reads the tables in it (a task of its own, handing rows over a bounded
//! channel); checkpoints wait until it is read (`is_ready_for_checkpoint`), then the position
//! is the slot's consistent point. See `PostgresCdcSourceBuilder::initial_snapshot`.

use super::PostgresError;
use super::replication::{self, Command, Event, Stream};
use super::sink::{quote_ident, quote_literal};
use crate::env::ParallelSource;
use actorflow_runtime::checkpoint::types::{OperatorState, RestoredState};
use actorflow_runtime::{
    CheckpointId, Collector, Source, SourceStatus, TaskInfo, Timestamp, UserError, Watermark,
    WatermarkStatus,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::{Client, NoTls};

/// What happened to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ChangeOp {
    /// A new row.
    Insert,
    /// The row before an update (only with `REPLICA IDENTITY FULL`, or the key's old values
    /// when the key changed).
    UpdateBefore,
    /// The row after an update.
    UpdateAfter,
    /// A deleted row (all columns with `REPLICA IDENTITY FULL`, else the key).
    Delete,
    /// A row of the initial snapshot (see [`PostgresCdcSourceBuilder::initial_snapshot`]):
    /// as it was at the slot's consistent point. Flink's row kind `+I` (Debezium's op `r`).
    Read,
}

impl ChangeOp {
    /// Flink's row kind: `+I`, `-U`, `+U`, `-D`.
    pub fn short(self) -> &'static str {
        match self {
            ChangeOp::Insert => "+I",
            ChangeOp::UpdateBefore => "-U",
            ChangeOp::UpdateAfter => "+U",
            ChangeOp::Delete => "-D",
            ChangeOp::Read => "+I",
        }
    }
}

/// One change of one row.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChangeEvent {
    /// The end LSN of the transaction's commit record (the same for every change of one
    /// transaction, increasing from one transaction to the next).
    pub lsn: u64,
    /// The commit time, in ms since the Unix epoch (also the record's event time).
    pub commit_ts_ms: i64,
    /// What happened.
    pub op: ChangeOp,
    /// `schema.table` (shared by every change of the table).
    pub table: Arc<str>,
    /// Column names (shared by every change of the table).
    pub columns: Arc<[String]>,
    /// The values in PostgreSQL's text form; `None` for NULL (and for an unchanged TOAST
    /// value, which pgoutput does not send).
    pub values: Vec<Option<String>>,
}

/// The LSN in PostgreSQL's `X/Y` form.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

#[derive(Debug, Clone)]
struct CdcConfig {
    url: String,
    tables: Vec<String>,
    slot: String,
    publication: String,
    batch_changes: i32,
    poll_interval: Duration,
    idle_after: Duration,
    stop_when_idle: Option<Duration>,
    stop_at_lsn: Option<u64>,
    initial_snapshot: bool,
}

/// Builds a [`PostgresCdcSource`]. See [`PostgresCdcSource::builder`].
#[derive(Debug, Clone)]
pub struct PostgresCdcSourceBuilder {
    config: CdcConfig,
}

impl PostgresCdcSourceBuilder {
    /// The tables whose changes to read (`schema.table` or `table`).
    pub fn tables(mut self, tables: &[&str]) -> Self {
        self.config.tables = tables.iter().map(|t| t.to_string()).collect();
        self
    }

    /// The replication slot (created with `pgoutput` if missing; default `actorflow_cdc`).
    pub fn slot(mut self, slot: &str) -> Self {
        self.config.slot = slot.to_string();
        self
    }

    /// The publication (created for the tables if missing; default `actorflow_cdc`).
    pub fn publication(mut self, publication: &str) -> Self {
        self.config.publication = publication.to_string();
        self
    }

    /// How long to wait between polls when the slot had nothing new (default 50 ms).
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.config.poll_interval = every;
        self
    }

    /// Marks the source idle after this long without a change (default 1 s).
    pub fn idle_after(mut self, after: Duration) -> Self {
        self.config.idle_after = after;
        self
    }

    /// Ends the stream once no change arrived for this long (for tests and one-off copies;
    /// default: never).
    pub fn stop_when_idle(mut self, after: Duration) -> Self {
        self.config.stop_when_idle = Some(after);
        self
    }

    /// Ends the stream once every transaction that committed before `lsn` was emitted (as
    /// `pg_recvlogical --endpos`; take it from `pg_current_wal_lsn()`). For benchmarks and
    /// one-off copies.
    pub fn stop_at_lsn(mut self, lsn: u64) -> Self {
        self.config.stop_at_lsn = Some(lsn);
        self
    }

    /// Reads the tables' current rows first ([`ChangeOp::Read`] events), then their changes,
    /// with no gap and no duplicate between the two (Flink CDC's startup mode `initial`).
    ///
    /// How: on a fresh start (no restored position) the source creates the slot over the
    /// replication protocol with `EXPORT_SNAPSHOT`, imports that snapshot into a
    /// `REPEATABLE READ` transaction (`SET TRANSACTION SNAPSHOT`) and reads the tables there
    /// with a cursor. The snapshot holds exactly the transactions that committed before the
    /// slot's consistent point, and the slot streams exactly those that commit after it. Snapshot
    /// rows carry the consistent point as their LSN and, as event time, the server's clock
    /// read just before the slot was created (no streamed change commits earlier); a
    /// watermark just below it follows the last one.
    ///
    /// A snapshot cannot be resumed: checkpoints triggered while it is read **wait** until it
    /// is done (they are aborted if the checkpoint timeout passes first: raise it for big
    /// tables), so a failure during the snapshot restarts the job from scratch, which drops
    /// and recreates the slot and reads the snapshot again (an exactly-once sink discards the
    /// first attempt's rows). An existing slot of the same name is dropped on such a fresh
    /// start: give each job its own slot. After a restore the source continues from the
    /// restored position and reads no snapshot.
    pub fn initial_snapshot(mut self) -> Self {
        self.config.initial_snapshot = true;
        self
    }

    /// How many changes one call of the source emits at most, about (default 4096).
    pub fn batch_changes(mut self, n: u32) -> Self {
        self.config.batch_changes = i32::try_from(n.max(1)).unwrap_or(i32::MAX);
        self
    }

    /// The source.
    ///
    /// # Errors
    ///
    /// [`PostgresError::Config`] without tables, or with a slot or publication name that is
    /// not lower-case letters, digits and `_`, or a name longer than PostgreSQL's 63 characters.
    pub fn build(self) -> Result<PostgresCdcSource, PostgresError> {
        let c = &self.config;
        if c.tables.is_empty() {
            return Err(PostgresError::Config("CDC source: no tables".into()));
        }
        for (what, name) in [("slot", &c.slot), ("publication", &c.publication)] {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_')
            {
                return Err(PostgresError::Config(format!(
                    "CDC source: the {what} name {name:?} must be lower-case letters, digits and _"
                )));
            }
            if name.len() > 63 {
                return Err(PostgresError::Config(format!(
                    "CDC source: the {what} name {name:?} is longer than 63 characters"
                )));
            }
        }
        Ok(PostgresCdcSource::fresh(Arc::new(self.config)))
    }
}

#[derive(Debug, Clone)]
struct Relation {
    name: Arc<str>,
    columns: Arc<[String]>,
}

/// The changes of chosen tables as a stream of [`ChangeEvent`]s, exactly once through
/// checkpoints (how: `docs/connectors.md`). One subtask (one slot): use it with
/// `env.add_source("cdc", source)`.
///
/// The server needs `wal_level = logical` and a free replication slot. Before images of
/// updates and whole deleted rows need `ALTER TABLE ... REPLICA IDENTITY FULL`.
#[derive(Debug)]
pub struct PostgresCdcSource {
    config: Arc<CdcConfig>,
    /// A normal connection, for the publication, the slot and its position.
    client: Option<Client>,
    drivers: Vec<tokio::task::JoinHandle<()>>,
    /// The replication stream, started by the first `next_batch`.
    stream: Option<Stream>,
    relations: HashMap<u32, Relation>,
    /// The changes of a transaction whose commit has not been read yet.
    open_txn: Vec<ChangeEvent>,
    open_commit_ts: i64,
    /// The end LSN of the last transaction emitted: the position.
    emitted: u64,
    /// What the server said it has sent everything up to (its keepalives).
    server_sent: u64,
    /// Positions of checkpoints not yet confirmed to the slot.
    confirmed: Vec<(CheckpointId, u64)>,
    watermark: i64,
    last_change: Option<tokio::time::Instant>,
    /// Until when a start waits for the slot to be released by an earlier connection.
    slot_wait_until: Option<tokio::time::Instant>,
    idle: bool,
    /// The source said `End`: the next completed checkpoint ends the stream.
    ended: bool,
    /// The initial snapshot being read (see `PostgresCdcSourceBuilder::initial_snapshot`).
    snapshot: Option<SnapshotReader>,
}

/// What the task reading the initial snapshot hands over, in order.
enum SnapshotEvent {
    /// Rows, as `Read` events.
    Rows(Vec<ChangeEvent>),
    /// Every row was read: the slot's consistent point and the snapshot's event time.
    Done {
        lsn: u64,
        ts_ms: i64,
    },
    Failed(String),
}

/// The task reading the initial snapshot (it owns its connections, so a dropped
/// `next_batch` loses nothing) and its bounded channel.
#[derive(Debug)]
struct SnapshotReader {
    events: tokio::sync::mpsc::Receiver<SnapshotEvent>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for SnapshotEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotEvent::Rows(r) => write!(f, "Rows({})", r.len()),
            SnapshotEvent::Done { lsn, ts_ms } => write!(f, "Done({lsn}, {ts_ms})"),
            SnapshotEvent::Failed(e) => write!(f, "Failed({e})"),
        }
    }
}

/// Reads the initial snapshot of `config.tables`, creating the slot (dropped first if it
/// exists) with an exported snapshot; sends rows in chunks of `config.batch_changes`.
async fn read_snapshot(config: Arc<CdcConfig>, tx: tokio::sync::mpsc::Sender<SnapshotEvent>) {
    let result = async {
        let pg = |what: &str, e: tokio_postgres::Error| {
            let detail = e
                .as_db_error()
                .map_or_else(|| e.to_string(), |d| d.message().to_string());
            format!("{what}: {detail}")
        };
        let (client, connection) = tokio_postgres::connect(&config.url, NoTls)
            .await
            .map_err(|e| pg("cannot connect", e))?;
        let driver = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "PostgreSQL CDC snapshot: the connection ended");
            }
        });
        let _driver = AbortOnDrop(driver);
        // No change streamed after the consistent point commits before this instant.
        let ts_ms: i64 = client
            .query_one(
                "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint",
                &[],
            )
            .await
            .map_err(|e| pg("cannot read the server's clock", e))?
            .get(0);
        let exists: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
                &[&config.slot],
            )
            .await
            .map_err(|e| pg("cannot look up the slot", e))?
            .get(0);
        let mut repl = replication::Connection::connect(&config.url).await?;
        if exists {
            // Its position cannot be matched to a new snapshot. WAIT: a connection of an
            // earlier attempt may still hold it.
            tracing::info!(slot = %config.slot, "dropping the slot to start it again with an initial snapshot");
            repl.command(&format!("DROP_REPLICATION_SLOT \"{}\" WAIT", config.slot))
                .await
                .map_err(|e| format!("cannot drop the slot to start it again: {e}"))?;
        }
        let (lsn, snapshot) = repl
            .create_slot_exporting_snapshot(&config.slot)
            .await
            .map_err(|e| format!("cannot create the slot: {e}"))?;
        let lsn = parse_lsn(&lsn).map_err(|e| e.to_string())?;
        client
            .batch_execute(&format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT {}",
                quote_literal(&snapshot)
            ))
            .await
            .map_err(|e| pg("cannot import the slot's snapshot", e))?;
        // Imported: the exporting connection may go.
        drop(repl);
        for table in &config.tables {
            let quoted = quote_ident(table);
            let name: String = client
                .query_one(
                    "SELECT n.nspname || '.' || c.relname FROM pg_class c \
                     JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1::text::regclass",
                    &[&quoted],
                )
                .await
                .map_err(|e| pg(&format!("cannot find table {table}"), e))?
                .get(0);
            let name: Arc<str> = name.into();
            client
                .batch_execute(&format!(
                    "DECLARE actorflow_snapshot NO SCROLL CURSOR FOR SELECT * FROM {quoted}"
                ))
                .await
                .map_err(|e| pg(&format!("cannot read table {table}"), e))?;
            let mut columns: Option<Arc<[String]>> = None;
            loop {
                let messages = client
                    .simple_query(&format!(
                        "FETCH FORWARD {} FROM actorflow_snapshot",
                        config.batch_changes
                    ))
                    .await
                    .map_err(|e| pg(&format!("cannot read table {table}"), e))?;
                let mut rows = Vec::new();
                for m in messages {
                    if let tokio_postgres::SimpleQueryMessage::Row(row) = m {
                        let cols = columns.get_or_insert_with(|| {
                            row.columns().iter().map(|c| c.name().to_string()).collect()
                        });
                        let values = (0..row.len())
                            .map(|i| row.get(i).map(str::to_string))
                            .collect();
                        rows.push(ChangeEvent {
                            lsn,
                            commit_ts_ms: ts_ms,
                            op: ChangeOp::Read,
                            table: name.clone(),
                            columns: cols.clone(),
                            values,
                        });
                    }
                }
                if rows.is_empty() {
                    break;
                }
                if tx.send(SnapshotEvent::Rows(rows)).await.is_err() {
                    return Ok(None); // the source is gone
                }
            }
            client
                .batch_execute("CLOSE actorflow_snapshot")
                .await
                .map_err(|e| pg("cannot close the snapshot's cursor", e))?;
        }
        client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| pg("cannot end the snapshot's transaction", e))?;
        Ok::<_, String>(Some((lsn, ts_ms)))
    }
    .await;
    let last = match result {
        Ok(Some((lsn, ts_ms))) => SnapshotEvent::Done { lsn, ts_ms },
        Ok(None) => return,
        Err(e) => SnapshotEvent::Failed(e),
    };
    let _ = tx.send(last).await;
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Clone for PostgresCdcSource {
    /// A new, unconnected source with the same configuration.
    fn clone(&self) -> Self {
        PostgresCdcSource::fresh(self.config.clone())
    }
}

impl Drop for PostgresCdcSource {
    fn drop(&mut self) {
        if let Some(s) = self.stream.take() {
            s.task.abort();
        }
        if let Some(s) = self.snapshot.take() {
            s.task.abort();
        }
        for d in self.drivers.drain(..) {
            d.abort();
        }
    }
}

/// Microseconds since 2000-01-01 (PostgreSQL's epoch) to ms since 1970-01-01.
fn pg_time_to_unix_ms(us: i64) -> i64 {
    us.div_euclid(1000) + 946_684_800_000
}

/// A cursor over one pgoutput message.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        match end {
            Some(e) => {
                let s = &self.bytes[self.at..e];
                self.at = e;
                Ok(s)
            }
            None => Err(format!(
                "pgoutput message truncated at byte {} (wanted {n} of {})",
                self.at,
                self.bytes.len()
            )),
        }
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn i16(&mut self) -> Result<i16, String> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self) -> Result<i32, String> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(self.i32()? as u32)
    }
    fn i64(&mut self) -> Result<i64, String> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }
    fn cstr(&mut self) -> Result<String, String> {
        let rest = &self.bytes[self.at.min(self.bytes.len())..];
        let n = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or("pgoutput: unterminated string")?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.at += n + 1;
        Ok(s)
    }
    fn tuple(&mut self) -> Result<Vec<Option<String>>, String> {
        let n = self.i16()?;
        let mut out = Vec::with_capacity(n.max(0) as usize);
        for _ in 0..n {
            match self.u8()? {
                b'n' | b'u' => out.push(None),
                b't' => {
                    let len = self.i32()?;
                    let len = usize::try_from(len).map_err(|_| "pgoutput: negative length")?;
                    out.push(Some(String::from_utf8_lossy(self.take(len)?).into_owned()));
                }
                other => return Err(format!("pgoutput: unknown tuple value kind {other}")),
            }
        }
        Ok(out)
    }
}

/// A decoded message: what the source needs of it.
#[derive(Debug)]
enum Message {
    Begin {
        commit_ts: i64,
    },
    Commit {
        end_lsn: u64,
        commit_ts: i64,
    },
    Relation {
        id: u32,
        relation: Relation,
    },
    Change {
        rel: u32,
        op: ChangeOp,
        values: Vec<Option<String>>,
    },
    Other,
}

/// Decodes one pgoutput (protocol 1) message; an update yields its after image here and its
/// before image (if any) as a second message.
fn decode(bytes: &[u8]) -> Result<Vec<Message>, String> {
    let mut r = Reader { bytes, at: 0 };
    let kind = r.u8()?;
    Ok(match kind {
        b'B' => {
            let _final_lsn = r.i64()?;
            let ts = r.i64()?;
            vec![Message::Begin {
                commit_ts: pg_time_to_unix_ms(ts),
            }]
        }
        b'C' => {
            let _flags = r.u8()?;
            let _commit_lsn = r.i64()?;
            let end_lsn = r.i64()? as u64;
            let ts = r.i64()?;
            vec![Message::Commit {
                end_lsn,
                commit_ts: pg_time_to_unix_ms(ts),
            }]
        }
        b'R' => {
            let id = r.u32()?;
            let namespace = r.cstr()?;
            let name = r.cstr()?;
            let _identity = r.u8()?;
            let n = r.i16()?;
            let mut columns = Vec::new();
            for _ in 0..n {
                let _flags = r.u8()?;
                columns.push(r.cstr()?);
                let _type = r.u32()?;
                let _typmod = r.i32()?;
            }
            vec![Message::Relation {
                id,
                relation: Relation {
                    name: format!("{namespace}.{name}").into(),
                    columns: columns.into(),
                },
            }]
        }
        b'I' => {
            let rel = r.u32()?;
            if r.u8()? != b'N' {
                return Err("pgoutput: insert without a new tuple".into());
            }
            vec![Message::Change {
                rel,
                op: ChangeOp::Insert,
                values: r.tuple()?,
            }]
        }
        b'U' => {
            let rel = r.u32()?;
            let mut out = Vec::new();
            let mut marker = r.u8()?;
            if marker == b'K' || marker == b'O' {
                out.push(Message::Change {
                    rel,
                    op: ChangeOp::UpdateBefore,
                    values: r.tuple()?,
                });
                marker = r.u8()?;
            }
            if marker != b'N' {
                return Err("pgoutput: update without a new tuple".into());
            }
            out.push(Message::Change {
                rel,
                op: ChangeOp::UpdateAfter,
                values: r.tuple()?,
            });
            out
        }
        b'D' => {
            let rel = r.u32()?;
            let _marker = r.u8()?;
            vec![Message::Change {
                rel,
                op: ChangeOp::Delete,
                values: r.tuple()?,
            }]
        }
        // Type, origin, truncate, logical messages: nothing to emit.
        _ => vec![Message::Other],
    })
}

impl PostgresCdcSource {
    /// A builder for a source reading from `url`.
    pub fn builder(url: &str) -> PostgresCdcSourceBuilder {
        PostgresCdcSourceBuilder {
            config: CdcConfig {
                url: url.to_string(),
                tables: Vec::new(),
                slot: "actorflow_cdc".into(),
                publication: "actorflow_cdc".into(),
                batch_changes: 4096,
                poll_interval: Duration::from_millis(50),
                idle_after: Duration::from_secs(1),
                stop_when_idle: None,
                stop_at_lsn: None,
                initial_snapshot: false,
            },
        }
    }

    fn err(&self, what: &str, e: &tokio_postgres::Error) -> UserError {
        let detail = e
            .as_db_error()
            .map_or_else(|| e.to_string(), |d| d.message().to_string());
        UserError::from(format!(
            "PostgreSQL CDC source (slot {}): {what}: {detail}",
            self.config.slot
        ))
    }

    fn client(&self) -> Result<&Client, UserError> {
        self.client
            .as_ref()
            .ok_or_else(|| UserError::from("PostgreSQL CDC source used before open()"))
    }

    fn fresh(config: Arc<CdcConfig>) -> Self {
        PostgresCdcSource {
            config,
            client: None,
            drivers: Vec::new(),
            stream: None,
            relations: HashMap::new(),
            open_txn: Vec::new(),
            open_commit_ts: 0,
            emitted: 0,
            server_sent: 0,
            confirmed: Vec::new(),
            watermark: i64::MIN,
            last_change: None,
            idle: false,
            ended: false,
            slot_wait_until: None,
            snapshot: None,
        }
    }

    /// True while the initial snapshot is still to be read: asked for, and no position yet
    /// (a fresh start).
    fn snapshot_pending(&self) -> bool {
        self.config.initial_snapshot && self.emitted == 0
    }

    /// Emits the next chunk of the initial snapshot, starting its task if needed; once done,
    /// the position is the slot's consistent point and a watermark follows.
    async fn next_snapshot_rows(
        &mut self,
        out: &mut Collector<ChangeEvent>,
    ) -> Result<SourceStatus, UserError> {
        let config = self.config.clone();
        let reader = self.snapshot.get_or_insert_with(|| {
            let (tx, events) = tokio::sync::mpsc::channel(4);
            SnapshotReader {
                events,
                task: tokio::spawn(read_snapshot(config, tx)),
            }
        });
        let mut emitted = 0usize;
        loop {
            // Cancel-safe: what was not received stays in the channel.
            let event = if emitted == 0 {
                reader.events.recv().await
            } else {
                match reader.events.try_recv() {
                    Ok(e) => Some(e),
                    Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                    Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => None,
                }
            };
            match event {
                Some(SnapshotEvent::Rows(rows)) => {
                    emitted += rows.len();
                    for r in rows {
                        let ts = Timestamp(r.commit_ts_ms);
                        out.collect_with_timestamp(r, ts);
                    }
                    if emitted >= self.config.batch_changes as usize {
                        break;
                    }
                }
                Some(SnapshotEvent::Done { lsn, ts_ms }) => {
                    tracing::info!(slot = %self.config.slot, lsn = %format_lsn(lsn), "the initial snapshot was read; streaming from its consistent point");
                    self.emitted = lsn;
                    self.snapshot = None;
                    if ts_ms > self.watermark {
                        self.watermark = ts_ms;
                        out.emit_watermark(Watermark(ts_ms.saturating_sub(1)));
                    }
                    break;
                }
                Some(SnapshotEvent::Failed(e)) => {
                    return Err(UserError::from(format!(
                        "PostgreSQL CDC source (slot {}): initial snapshot: {e}",
                        self.config.slot
                    )));
                }
                None => {
                    return Err(UserError::from(format!(
                        "PostgreSQL CDC source (slot {}): the initial snapshot's task ended",
                        self.config.slot
                    )));
                }
            }
        }
        self.last_change = Some(tokio::time::Instant::now());
        Ok(SourceStatus::More)
    }

    /// Starts the replication stream, waiting (up to 30 s) while the slot is still held by
    /// a connection of an earlier attempt that the server has not noticed is gone.
    async fn start_stream(&mut self) -> Result<(), UserError> {
        let c = self.config.clone();
        let fail = |e: String| {
            UserError::from(format!(
                "PostgreSQL CDC source (slot {}): cannot start streaming: {e}",
                c.slot
            ))
        };
        // Kept in `self`: this future is dropped at every barrier, and the 30 s must not
        // start again each time.
        let give_up = *self
            .slot_wait_until
            .get_or_insert_with(|| tokio::time::Instant::now() + Duration::from_secs(30));
        loop {
            let conn = replication::Connection::connect(&c.url)
                .await
                .map_err(fail)?;
            // Up to 16 chunks of up to 4096 messages queued between the socket and the job.
            match conn.start(&c.slot, &c.publication, 16).await {
                Ok(stream) => {
                    self.stream = Some(stream);
                    self.slot_wait_until = None;
                    return Ok(());
                }
                Err(e) if e.contains(" 55006:") && tokio::time::Instant::now() < give_up => {
                    tracing::debug!(slot = %c.slot, "the slot is still active, waiting: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    self.slot_wait_until = None;
                    return Err(fail(e));
                }
            }
        }
    }

    /// True (and the source ended) once everything up to `stop_at_lsn` was emitted, or the
    /// server's position passed it.
    fn reached_stop_lsn(&mut self) -> bool {
        if let Some(end) = self.config.stop_at_lsn
            && (self.emitted >= end || self.server_sent >= end)
        {
            self.ended = true;
        }
        self.ended
    }

    /// The end once `stop_at_lsn` is reached; after a quiet spell, the end (with
    /// `stop_when_idle`) or idleness, announced once.
    fn quiet_status(&mut self, out: &mut Collector<ChangeEvent>) -> Option<SourceStatus> {
        if self.reached_stop_lsn() {
            return Some(SourceStatus::End);
        }
        let quiet = self
            .last_change
            .map_or(Duration::ZERO, |t| tokio::time::Instant::now() - t);
        if let Some(stop) = self.config.stop_when_idle
            && quiet >= stop
        {
            self.ended = true;
            return Some(SourceStatus::End);
        }
        if !self.idle && quiet >= self.config.idle_after {
            out.emit_status(WatermarkStatus::Idle);
            self.idle = true;
            return Some(SourceStatus::More);
        }
        None
    }

    /// Takes one chunk of pgoutput messages: assembles transactions and emits the whole
    /// ones after the position.
    fn on_messages(
        &mut self,
        messages: Vec<bytes::Bytes>,
        out: &mut Collector<ChangeEvent>,
    ) -> Result<usize, UserError> {
        let mut emitted = 0;
        for data in messages {
            let decoded = decode(&data).map_err(|e| {
                UserError::from(format!(
                    "PostgreSQL CDC source (slot {}): {e}",
                    self.config.slot
                ))
            })?;
            for m in decoded {
                match m {
                    Message::Begin { commit_ts } => {
                        self.open_txn.clear();
                        self.open_commit_ts = commit_ts;
                    }
                    Message::Relation { id, relation } => {
                        self.relations.insert(id, relation);
                    }
                    Message::Change { rel, op, values } => {
                        let r = self.relations.get(&rel).ok_or_else(|| {
                            UserError::from(format!(
                                "PostgreSQL CDC source: a change of unknown relation {rel}"
                            ))
                        })?;
                        self.open_txn.push(ChangeEvent {
                            lsn: 0,
                            commit_ts_ms: self.open_commit_ts,
                            op,
                            table: r.name.clone(),
                            columns: r.columns.clone(),
                            values,
                        });
                    }
                    Message::Commit { end_lsn, commit_ts } => {
                        let changes = std::mem::take(&mut self.open_txn);
                        if end_lsn <= self.emitted {
                            continue; // emitted before the restored (or last) position
                        }
                        if self.idle {
                            out.emit_status(WatermarkStatus::Active);
                            self.idle = false;
                        }
                        emitted += changes.len();
                        for mut c in changes {
                            c.lsn = end_lsn;
                            out.collect_with_timestamp(c, Timestamp(commit_ts));
                        }
                        self.emitted = end_lsn;
                        if commit_ts > self.watermark {
                            self.watermark = commit_ts;
                            out.emit_watermark(Watermark(commit_ts.saturating_sub(1)));
                        }
                    }
                    Message::Other => {}
                }
            }
        }
        Ok(emitted)
    }

    /// Fails if the durable slot moved past the restored position: the changes in between
    /// are gone from the server (a restore from an older checkpoint or savepoint than the
    /// newest completed one, with the same slot).
    async fn check_slot_position(&mut self) -> Result<(), UserError> {
        if self.emitted == 0 {
            return Ok(()); // a fresh start goes on from the slot's position
        }
        let confirmed: Option<String> = self
            .client()?
            .query_one(
                "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
                &[&self.config.slot],
            )
            .await
            .map_err(|e| self.err("cannot look up the slot", &e))?
            .get(0);
        let slot_at = confirmed
            .as_deref()
            .map(parse_lsn)
            .transpose()?
            .unwrap_or(0);
        if slot_at > self.emitted {
            return Err(UserError::from(format!(
                "PostgreSQL CDC source: the slot {} is at {}, past the restored position {}: the \
                 changes in between are no longer on the server. Restore the newest checkpoint, \
                 or start with a new slot (and take the table's current contents another way)",
                self.config.slot,
                format_lsn(slot_at),
                format_lsn(self.emitted)
            )));
        }
        Ok(())
    }
}

/// Parses PostgreSQL's `X/Y` form of an LSN.
///
/// # Errors
///
/// Anything else.
fn parse_lsn(text: &str) -> Result<u64, UserError> {
    let bad = || UserError::from(format!("not an LSN: {text:?}"));
    let (hi, lo) = text.split_once('/').ok_or_else(bad)?;
    let hi = u32::from_str_radix(hi, 16).map_err(|_| bad())?;
    let lo = u32::from_str_radix(lo, 16).map_err(|_| bad())?;
    Ok((u64::from(hi) << 32) | u64::from(lo))
}

impl Source for PostgresCdcSource {
    type Output = ChangeEvent;

    async fn open(&mut self, _info: &TaskInfo) -> Result<(), UserError> {
        let (client, connection) = tokio_postgres::connect(&self.config.url, NoTls)
            .await
            .map_err(|e| self.err("cannot connect", &e))?;
        self.drivers.push(tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "PostgreSQL CDC source: the connection ended");
            }
        }));
        self.client = Some(client);
        let c = self.config.clone();
        let exists: bool = self
            .client()?
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)",
                &[&c.publication],
            )
            .await
            .map_err(|e| self.err("cannot look up the publication", &e))?
            .get(0);
        if !exists {
            let tables: Vec<String> = c.tables.iter().map(|t| quote_ident(t)).collect();
            self.client()?
                .batch_execute(&format!(
                    "CREATE PUBLICATION {} FOR TABLE {}",
                    c.publication,
                    tables.join(", ")
                ))
                .await
                .map_err(|e| self.err("cannot create the publication", &e))?;
        }
        let slot: bool = self
            .client()?
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
                &[&c.slot],
            )
            .await
            .map_err(|e| self.err("cannot look up the slot", &e))?
            .get(0);
        // With an initial snapshot the slot is created (with its snapshot) by the first
        // `next_batch` of a fresh start.
        if !slot && !c.initial_snapshot {
            self.client()?
                .execute(
                    "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
                    &[&c.slot],
                )
                .await
                .map_err(|e| self.err("cannot create the replication slot", &e))?;
        }
        self.last_change = Some(tokio::time::Instant::now());
        Ok(())
    }

    async fn next_batch(
        &mut self,
        out: &mut Collector<ChangeEvent>,
    ) -> Result<SourceStatus, UserError> {
        if self.snapshot_pending() {
            return self.next_snapshot_rows(out).await;
        }
        if self.stream.is_none() {
            if self.ended {
                return Ok(SourceStatus::End);
            }
            self.check_slot_position().await?;
            self.start_stream().await?;
        }
        // The runtime drops this future whenever a barrier or a flush comes first (often
        // more often than the poll interval), so quietness is judged before waiting too.
        if let Some(status) = self.quiet_status(out) {
            return Ok(status);
        }
        let wait = self.config.poll_interval;
        let mut emitted = 0usize;
        let mut got_any = false;
        let mut received_data = false;
        while let Some(stream) = self.stream.as_mut() {
            // Cancel-safe: an event not yet received stays in the channel.
            let event = if got_any {
                match stream.events.try_recv() {
                    Ok(e) => Some(e),
                    Err(tokio::sync::mpsc::error::TryRecvError::Empty) => None,
                    Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                        Some(Event::Failed("the stream ended".into()))
                    }
                }
            } else {
                match tokio::time::timeout(wait, stream.events.recv()).await {
                    Ok(Some(e)) => Some(e),
                    Ok(None) => Some(Event::Failed("the stream ended".into())),
                    Err(_) => None,
                }
            };
            let Some(event) = event else { break };
            got_any = true;
            match event {
                Event::Data(messages) => {
                    received_data = true;
                    emitted += self.on_messages(messages, out)?;
                }
                Event::Position(lsn) => self.server_sent = self.server_sent.max(lsn),
                Event::Failed(e) => {
                    return Err(UserError::from(format!(
                        "PostgreSQL CDC source (slot {}): {e}",
                        self.config.slot
                    )));
                }
            }
            if emitted >= self.config.batch_changes as usize {
                break;
            }
        }
        if self.reached_stop_lsn() {
            return Ok(SourceStatus::End);
        }
        // Keepalives (the server answers every status update with one) are not activity:
        // only data counts, or an idle table would never be idle.
        if received_data {
            self.last_change = Some(tokio::time::Instant::now());
        }
        if emitted > 0 || received_data {
            return Ok(SourceStatus::More);
        }
        Ok(self.quiet_status(out).unwrap_or(SourceStatus::More))
    }

    fn snapshot_state(
        &mut self,
        checkpoint: CheckpointId,
        state: &mut OperatorState,
    ) -> Result<(), UserError> {
        self.confirmed.push((checkpoint, self.emitted));
        state.push_item(&self.emitted)
    }

    fn restore_state(&mut self, restored: RestoredState) -> Result<(), UserError> {
        let items: Vec<u64> = restored.state.items()?;
        self.emitted = items.into_iter().max().unwrap_or(0);
        Ok(())
    }

    fn notifies_external_system(&self) -> bool {
        true
    }

    fn is_ready_for_checkpoint(&self) -> bool {
        // A snapshot cannot be resumed: no position inside it.
        !self.snapshot_pending()
    }

    async fn notify_checkpoint_complete(
        &mut self,
        checkpoint: CheckpointId,
    ) -> Result<(), UserError> {
        let Some(lsn) = self
            .confirmed
            .iter()
            .filter(|(c, _)| *c <= checkpoint)
            .map(|(_, l)| *l)
            .max()
        else {
            return Ok(());
        };
        self.confirmed.retain(|(c, _)| *c > checkpoint);
        if lsn == 0 {
            return Ok(());
        }
        let Some(stream) = self.stream.as_mut() else {
            return Ok(()); // not streaming (yet, or any more): the next start reads the slot
        };
        if !self.ended {
            // Confirmed with the next status update; the server keeps what comes after.
            // A full queue drops it: the next confirmation carries a later position.
            let _ = stream.commands.try_send(Command::Confirm(lsn));
            return Ok(());
        }
        // The source ended and this is its last checkpoint: confirm, close the stream
        // cleanly, and wait for the server, so the slot's position is the final one.
        // Changes after the end may still arrive meanwhile: they are dropped (the slot keeps
        // them), so the stream's task is never stuck forwarding them.
        let (done, confirmed) = tokio::sync::oneshot::channel();
        let Stream {
            events, commands, ..
        } = stream;
        let finish = async {
            if commands.send(Command::Finish(lsn, done)).await.is_err() {
                return None;
            }
            confirmed.await.ok()
        };
        let drain = async { while events.recv().await.is_some() {} };
        let result = tokio::time::timeout(Duration::from_secs(30), async {
            tokio::pin!(finish, drain);
            let mut drained = false;
            loop {
                tokio::select! {
                    r = &mut finish => return r,
                    () = &mut drain, if !drained => drained = true,
                }
            }
        })
        .await;
        if let Some(s) = self.stream.take() {
            s.task.abort();
        }
        match result {
            Ok(Some(Ok(()))) => Ok(()),
            Ok(Some(Err(e))) => Err(UserError::from(format!(
                "PostgreSQL CDC source (slot {}): cannot confirm {}: {e}",
                self.config.slot,
                format_lsn(lsn)
            ))),
            Ok(None) | Err(_) => Err(UserError::from(format!(
                "PostgreSQL CDC source (slot {}): no answer when confirming {}",
                self.config.slot,
                format_lsn(lsn)
            ))),
        }
    }
}

impl ParallelSource for PostgresCdcSource {
    type Source = PostgresCdcSource;

    fn create(&self, _task: &TaskInfo) -> Result<PostgresCdcSource, String> {
        Ok(self.clone())
    }

    fn max_parallelism(&self) -> Option<u32> {
        Some(1)
    }

    fn is_bounded(&self) -> bool {
        self.config.stop_when_idle.is_some() || self.config.stop_at_lsn.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_print_as_postgres_does() {
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
        assert_eq!(format_lsn(0), "0/0");
    }

    #[test]
    fn damaged_messages_are_errors_not_panics() {
        for bytes in [
            &b""[..],
            b"B",
            b"C\x00\x01",
            b"I\x00\x00\x00\x01N\x00\x02t\xff\xff\xff\xff",
            b"R\x00\x00\x00\x01abc",
        ] {
            assert!(decode(bytes).is_err(), "{bytes:?}");
        }
        // A well-formed insert of (1, NULL).
        let mut insert = b"I".to_vec();
        insert.extend_from_slice(&7u32.to_be_bytes());
        insert.push(b'N');
        insert.extend_from_slice(&2i16.to_be_bytes());
        insert.push(b't');
        insert.extend_from_slice(&1i32.to_be_bytes());
        insert.push(b'1');
        insert.push(b'n');
        match decode(&insert).unwrap().as_slice() {
            [
                Message::Change {
                    rel: 7,
                    op: ChangeOp::Insert,
                    values,
                },
            ] => {
                assert_eq!(values, &vec![Some("1".to_string()), None]);
            }
            other => panic!("{other:?}"),
        }
    }
}
