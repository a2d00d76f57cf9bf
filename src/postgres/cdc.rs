//! [`PostgresCdcSource`]: the changes of chosen tables, from a logical replication slot.
//!
//! The source reads the slot with `pg_logical_slot_peek_binary_changes` and the `pgoutput`
//! plugin (protocol 1). *Peeking* does not consume. The slot moves forward only once a
//! checkpoint that holds the position completes (`pg_replication_slot_advance` in
//! `notify_checkpoint_complete`). After a restore the server still has everything after the
//! restored position, and the source skips what it had emitted before it: nothing is lost or
//! repeated.
//!
//! Whole transactions only: changes are buffered from `Begin` to `Commit`, then emitted with
//! the commit's LSN (its end LSN, which is also the position) and commit time as event time.
//! After each transaction the source emits a watermark (the commit time, never going back).
//! When no change arrives for the idle timeout it marks itself idle, so downstream windows
//! still fire.

use super::PostgresError;
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
}

impl ChangeOp {
    /// Flink's row kind: `+I`, `-U`, `+U`, `-D`.
    pub fn short(self) -> &'static str {
        match self {
            ChangeOp::Insert => "+I",
            ChangeOp::UpdateBefore => "-U",
            ChangeOp::UpdateAfter => "+U",
            ChangeOp::Delete => "-D",
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
    /// `schema.table`.
    pub table: String,
    /// Column names.
    pub columns: Vec<String>,
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

    /// The source.
    ///
    /// # Errors
    ///
    /// [`PostgresError::Config`] without tables, or with a slot or publication name that is
    /// not lower-case letters, digits and `_`.
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
        }
        Ok(PostgresCdcSource {
            config: Arc::new(self.config),
            client: None,
            drivers: Vec::new(),
            relations: HashMap::new(),
            emitted: 0,
            limit: 0,
            confirmed: Vec::new(),
            watermark: i64::MIN,
            last_change: None,
            idle: false,
        })
    }
}

#[derive(Debug, Clone)]
struct Relation {
    name: String,
    columns: Vec<String>,
}

/// The changes of chosen tables as a stream of [`ChangeEvent`]s, exactly once through
/// checkpoints (see the [module docs](self)). One subtask (one slot): use it with
/// `env.add_source("cdc", source)`.
///
/// The server needs `wal_level = logical` and a free replication slot. Before images of
/// updates and whole deleted rows need `ALTER TABLE ... REPLICA IDENTITY FULL`.
#[derive(Debug)]
pub struct PostgresCdcSource {
    config: Arc<CdcConfig>,
    client: Option<Client>,
    drivers: Vec<tokio::task::JoinHandle<()>>,
    relations: HashMap<u32, Relation>,
    /// The end LSN of the last transaction emitted: the position.
    emitted: u64,
    /// How many slot messages the next peek asks for.
    limit: i32,
    /// Positions of checkpoints not yet confirmed to the slot.
    confirmed: Vec<(CheckpointId, u64)>,
    watermark: i64,
    last_change: Option<tokio::time::Instant>,
    idle: bool,
}

impl Clone for PostgresCdcSource {
    /// A new, unconnected source with the same configuration.
    fn clone(&self) -> Self {
        PostgresCdcSource {
            config: self.config.clone(),
            client: None,
            drivers: Vec::new(),
            relations: HashMap::new(),
            emitted: 0,
            limit: 0,
            confirmed: Vec::new(),
            watermark: i64::MIN,
            last_change: None,
            idle: false,
        }
    }
}

impl Drop for PostgresCdcSource {
    fn drop(&mut self) {
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
                    name: format!("{namespace}.{name}"),
                    columns,
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

    /// Peeks up to `limit` slot messages and returns the complete transactions after the
    /// emitted position, and how many messages came back.
    async fn peek(&mut self) -> Result<(Vec<(u64, i64, Vec<ChangeEvent>)>, usize), UserError> {
        let rows = self
            .client()?
            .query(
                "SELECT data FROM pg_logical_slot_peek_binary_changes($1, NULL, $2, 'proto_version', '1', 'publication_names', $3)",
                &[&self.config.slot, &self.limit, &self.config.publication],
            )
            .await
            .map_err(|e| self.err("cannot read the slot", &e))?;
        let n = rows.len();
        let mut txns = Vec::new();
        let mut current: Vec<ChangeEvent> = Vec::new();
        let mut commit_ts = 0;
        for row in rows {
            let data: Vec<u8> = row.get(0);
            let messages = decode(&data).map_err(|e| {
                UserError::from(format!(
                    "PostgreSQL CDC source (slot {}): {e}",
                    self.config.slot
                ))
            })?;
            for m in messages {
                match m {
                    Message::Begin { commit_ts: ts } => {
                        current.clear();
                        commit_ts = ts;
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
                        current.push(ChangeEvent {
                            lsn: 0,
                            commit_ts_ms: commit_ts,
                            op,
                            table: r.name.clone(),
                            columns: r.columns.clone(),
                            values,
                        });
                    }
                    Message::Commit { end_lsn, commit_ts } => {
                        let mut changes = std::mem::take(&mut current);
                        for c in &mut changes {
                            c.lsn = end_lsn;
                        }
                        txns.push((end_lsn, commit_ts, changes));
                    }
                    Message::Other => {}
                }
            }
        }
        Ok((txns, n))
    }
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
        self.limit = self.config.batch_changes;
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
            let tables: Vec<String> = c
                .tables
                .iter()
                .map(|t| {
                    t.split('.')
                        .map(|p| format!("\"{}\"", p.replace('"', "\"\"")))
                        .collect::<Vec<_>>()
                        .join(".")
                })
                .collect();
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
        if !slot {
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
        let (txns, returned) = self.peek().await?;
        let mut emitted_any = false;
        for (end_lsn, commit_ts, changes) in txns {
            if end_lsn <= self.emitted {
                continue; // emitted before the restored (or last) position
            }
            if self.idle {
                out.emit_status(WatermarkStatus::Active);
                self.idle = false;
            }
            for c in changes {
                out.collect_with_timestamp(c, Timestamp(commit_ts));
            }
            self.emitted = end_lsn;
            if commit_ts > self.watermark {
                self.watermark = commit_ts;
                out.emit_watermark(Watermark(commit_ts.saturating_sub(1)));
            }
            emitted_any = true;
        }
        let now = tokio::time::Instant::now();
        if emitted_any {
            self.last_change = Some(now);
            return Ok(SourceStatus::More);
        }
        if returned as i32 >= self.limit {
            // Everything it returned was emitted already: ask for more next time.
            self.limit = self.limit.saturating_mul(2);
            return Ok(SourceStatus::More);
        }
        let quiet = self.last_change.map_or(Duration::ZERO, |t| now - t);
        if let Some(stop) = self.config.stop_when_idle
            && quiet >= stop
        {
            return Ok(SourceStatus::End);
        }
        if !self.idle && quiet >= self.config.idle_after {
            out.emit_status(WatermarkStatus::Idle);
            self.idle = true;
        }
        tokio::time::sleep(self.config.poll_interval).await;
        Ok(SourceStatus::More)
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
        self.client()?
            .execute(
                "SELECT pg_replication_slot_advance($1, $2::text::pg_lsn)",
                &[&self.config.slot, &format_lsn(lsn)],
            )
            .await
            .map_err(|e| self.err("cannot advance the slot", &e))?;
        self.limit = self.config.batch_changes;
        Ok(())
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
        self.config.stop_when_idle.is_some()
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
