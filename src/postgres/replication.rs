//! A minimal client of PostgreSQL's streaming replication protocol, for logical decoding:
//! connect with `replication=database`, `START_REPLICATION SLOT ... LOGICAL`, then read
//! `XLogData` and keepalives and send standby status updates (the slot's confirmed
//! position). `tokio-postgres` has no replication support; this speaks the few messages
//! needed, over plain TCP or a Unix socket (no TLS), with trust, password, MD5 and
//! SCRAM-SHA-256 authentication.
//!
//! The stream runs in its own task, which owns the connection: reading is never lost when
//! the source's `next_batch` future is dropped, and keepalives are answered while the job
//! is backpressured (the server drops a receiver that stays silent for
//! `wal_sender_timeout`).

use bytes::{Buf, Bytes, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

/// What the stream delivers, in order.
#[derive(Debug)]
pub(crate) enum Event {
    /// pgoutput messages, in WAL order.
    Data(Vec<Bytes>),
    /// The server sent everything it has decoded up to this LSN (a keepalive): no
    /// transaction committing before it is still to come.
    Position(u64),
    /// The stream failed; nothing follows.
    Failed(String),
}

/// Requests to the stream's task.
#[derive(Debug)]
pub(crate) enum Command {
    /// Report this position as flushed (the slot's confirmed position).
    Confirm(u64),
    /// Report the position, end the stream cleanly (`CopyDone`), and answer once the
    /// server has acknowledged.
    Finish(u64, oneshot::Sender<Result<(), String>>),
}

/// A running logical replication stream.
#[derive(Debug)]
pub(crate) struct Stream {
    /// Events, bounded: when the job does not keep up, the task stops reading the socket.
    pub(crate) events: mpsc::Receiver<Event>,
    /// Commands: at most one per completed checkpoint, and one finish.
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) task: tokio::task::JoinHandle<()>,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A replication connection, authenticated and ready for a command.
pub(crate) struct Connection {
    io: Box<dyn Io>,
    /// Bytes read and not yet taken as messages.
    buf: BytesMut,
}

/// Microseconds since 2000-01-01, PostgreSQL's clock.
fn pg_now() -> i64 {
    let unix_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    unix_us - 946_684_800_000_000
}

fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(kind);
    out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn cstr(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

/// The text of an `ErrorResponse`: severity, SQLSTATE and message.
fn error_text(body: &[u8]) -> String {
    let (mut code, mut message, mut severity) = (String::new(), String::new(), String::new());
    for field in body.split(|&b| b == 0) {
        if let Some((&kind, value)) = field.split_first() {
            let value = String::from_utf8_lossy(value).into_owned();
            match kind {
                b'C' => code = value,
                b'M' => message = value,
                b'S' => severity = value,
                _ => {}
            }
        }
    }
    format!("{severity} {code}: {message}")
}

/// A standby status update: written, flushed and applied up to `lsn`.
/// The values of a `DataRow` message body, as text (`None` for NULL).
fn data_row(body: &[u8]) -> Result<Vec<Option<String>>, String> {
    let bad = || "a malformed DataRow message".to_string();
    let mut r = body;
    let mut take = |n: usize| -> Result<&[u8], String> {
        if r.len() < n {
            return Err(bad());
        }
        let (head, tail) = r.split_at(n);
        r = tail;
        Ok(head)
    };
    let count = i16::from_be_bytes(take(2)?.try_into().map_err(|_| bad())?);
    let mut values = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    for _ in 0..count {
        let len = i32::from_be_bytes(take(4)?.try_into().map_err(|_| bad())?);
        if len < 0 {
            values.push(None);
        } else {
            let bytes = take(usize::try_from(len).map_err(|_| bad())?)?;
            values.push(Some(String::from_utf8_lossy(bytes).into_owned()));
        }
    }
    Ok(values)
}

fn status_update(written: u64, flushed: u64) -> Vec<u8> {
    let mut body = Vec::with_capacity(34);
    body.push(b'r');
    body.extend_from_slice(&written.to_be_bytes());
    body.extend_from_slice(&flushed.to_be_bytes());
    body.extend_from_slice(&flushed.to_be_bytes());
    body.extend_from_slice(&pg_now().to_be_bytes());
    body.push(0);
    frame(b'd', &body)
}

impl Connection {
    /// Connects to the server of `url` (a `postgresql://` URL or `key=value` string, as for
    /// `tokio-postgres`) in logical replication mode and authenticates.
    pub(crate) async fn connect(url: &str) -> Result<Connection, String> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| format!("cannot read the connection string: {e}"))?;
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let io: Box<dyn Io> = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => Box::new(
                tokio::net::TcpStream::connect((host.as_str(), port))
                    .await
                    .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?,
            ),
            #[cfg(unix)]
            Some(tokio_postgres::config::Host::Unix(dir)) => {
                let path = dir.join(format!(".s.PGSQL.{port}"));
                Box::new(
                    tokio::net::UnixStream::connect(&path)
                        .await
                        .map_err(|e| format!("cannot connect to {}: {e}", path.display()))?,
                )
            }
            _ => return Err("the connection string names no host".into()),
        };
        let user = config
            .get_user()
            .ok_or("the connection string names no user")?
            .to_string();
        let dbname = config.get_dbname().unwrap_or(&user).to_string();
        let password = config.get_password().map(<[u8]>::to_vec);
        let mut conn = Connection {
            io,
            buf: BytesMut::with_capacity(256 << 10),
        };
        let mut body = Vec::new();
        body.extend_from_slice(&196_608i32.to_be_bytes()); // protocol 3.0
        for (k, v) in [
            ("user", user.as_str()),
            ("database", dbname.as_str()),
            ("replication", "database"),
            ("application_name", "actorflow-cdc"),
        ] {
            cstr(&mut body, k);
            cstr(&mut body, v);
        }
        body.push(0);
        let mut startup = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        startup.extend_from_slice(&body);
        conn.write(&startup).await?;
        conn.authenticate(&user, password.as_deref()).await?;
        // ParameterStatus, BackendKeyData, ... until ReadyForQuery.
        loop {
            let (kind, body) = conn.read().await?;
            match kind {
                b'Z' => return Ok(conn),
                b'E' => return Err(error_text(&body)),
                _ => {}
            }
        }
    }

    async fn authenticate(&mut self, user: &str, password: Option<&[u8]>) -> Result<(), String> {
        let need = || "the server asks for a password and the connection string has none";
        let mut scram: Option<ScramSha256> = None;
        loop {
            let (kind, body) = self.read().await?;
            match kind {
                b'E' => return Err(error_text(&body)),
                b'R' => {}
                other => return Err(format!("unexpected message {:?} at login", other as char)),
            }
            let mut b = &body[..];
            if b.len() < 4 {
                return Err("a truncated authentication message".into());
            }
            match b.get_i32() {
                0 => return Ok(()),
                3 => {
                    let mut out = password.ok_or_else(need)?.to_vec();
                    out.push(0);
                    self.write(&frame(b'p', &out)).await?;
                }
                5 => {
                    if b.len() < 4 {
                        return Err("a truncated MD5 request".into());
                    }
                    let salt = [b[0], b[1], b[2], b[3]];
                    let hash = postgres_protocol::authentication::md5_hash(
                        user.as_bytes(),
                        password.ok_or_else(need)?,
                        salt,
                    );
                    let mut out = Vec::new();
                    cstr(&mut out, &hash);
                    self.write(&frame(b'p', &out)).await?;
                }
                10 => {
                    let mechanisms: Vec<&[u8]> = b.split(|&c| c == 0).collect();
                    if !mechanisms.contains(&&b"SCRAM-SHA-256"[..]) {
                        return Err("the server offers no SASL mechanism this client has".into());
                    }
                    let s =
                        ScramSha256::new(password.ok_or_else(need)?, ChannelBinding::unsupported());
                    let mut out = Vec::new();
                    cstr(&mut out, "SCRAM-SHA-256");
                    out.extend_from_slice(&(s.message().len() as i32).to_be_bytes());
                    out.extend_from_slice(s.message());
                    self.write(&frame(b'p', &out)).await?;
                    scram = Some(s);
                }
                11 => {
                    let s = scram.as_mut().ok_or("SASL continue without a start")?;
                    s.update(b).map_err(|e| format!("SCRAM: {e}"))?;
                    let reply = s.message().to_vec();
                    self.write(&frame(b'p', &reply)).await?;
                }
                12 => {
                    let s = scram.as_mut().ok_or("SASL final without a start")?;
                    s.finish(b).map_err(|e| format!("SCRAM: {e}"))?;
                }
                other => return Err(format!("unsupported authentication method {other}")),
            }
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.io
            .write_all(bytes)
            .await
            .map_err(|e| format!("cannot write to the server: {e}"))?;
        self.io
            .flush()
            .await
            .map_err(|e| format!("cannot write to the server: {e}"))
    }

    /// Takes one whole message off the buffer, if one is there.
    fn take_message(&mut self) -> Result<Option<(u8, BytesMut)>, String> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l >= 4)
            .ok_or_else(|| format!("a message of impossible length {len}"))?;
        if self.buf.len() < len + 1 {
            self.buf.reserve(len + 1 - self.buf.len());
            return Ok(None);
        }
        let mut m = self.buf.split_to(len + 1);
        let kind = m[0];
        m.advance(5);
        Ok(Some((kind, m)))
    }

    /// Whether a whole message is already buffered.
    fn has_message(&self) -> bool {
        self.buf.len() >= 5 && {
            let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
            usize::try_from(len).is_ok_and(|l| self.buf.len() > l)
        }
    }

    /// The next message. Cancel-safe: bytes read stay in the buffer.
    async fn read(&mut self) -> Result<(u8, BytesMut), String> {
        loop {
            if let Some(m) = self.take_message()? {
                return Ok(m);
            }
            if self.buf.capacity() - self.buf.len() < 64 << 10 {
                self.buf.reserve(256 << 10);
            }
            let n = self
                .io
                .read_buf(&mut self.buf)
                .await
                .map_err(|e| format!("the connection to the server ended: {e}"))?;
            if n == 0 {
                return Err("the server closed the connection".into());
            }
        }
    }

    /// Runs a replication command that answers with rows (or none), in the simple query
    /// protocol: the rows' values as text. The server's error comes back as `Err`, after
    /// which the connection is ready for another command.
    pub(crate) async fn command(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
        let mut q = Vec::new();
        cstr(&mut q, sql);
        self.write(&frame(b'Q', &q)).await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let (kind, body) = self.read().await?;
            match kind {
                b'D' => rows.push(data_row(&body)?),
                b'E' => error = Some(error_text(&body)),
                b'Z' => break,
                // RowDescription, CommandComplete, notices, parameter changes.
                _ => {}
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(rows),
        }
    }

    /// Creates the logical slot `slot` (pgoutput) and exports the snapshot it starts from:
    /// `(consistent point, snapshot name)`. The snapshot can be imported
    /// (`SET TRANSACTION SNAPSHOT`) until this connection runs another command or closes: a
    /// transaction that imported it sees exactly what committed before the consistent
    /// point, and the slot streams exactly what commits after it.
    pub(crate) async fn create_slot_exporting_snapshot(
        &mut self,
        slot: &str,
    ) -> Result<(String, String), String> {
        let rows = self
            .command(&format!(
                "CREATE_REPLICATION_SLOT \"{slot}\" LOGICAL pgoutput EXPORT_SNAPSHOT"
            ))
            .await?;
        // slot_name, consistent_point, snapshot_name, output_plugin.
        match rows.first().map(Vec::as_slice) {
            Some([_, Some(lsn), Some(snapshot), ..]) => Ok((lsn.clone(), snapshot.clone())),
            _ => Err(format!(
                "CREATE_REPLICATION_SLOT answered without a consistent point and snapshot: {rows:?}"
            )),
        }
    }

    /// Starts streaming `slot` with pgoutput protocol 1 and `publication` (from the slot's
    /// confirmed position). Fails with the server's message, for example when another
    /// connection is reading the slot.
    pub(crate) async fn start(
        mut self,
        slot: &str,
        publication: &str,
        capacity: usize,
    ) -> Result<Stream, String> {
        let mut q = Vec::new();
        cstr(
            &mut q,
            &format!(
                "START_REPLICATION SLOT \"{slot}\" LOGICAL 0/0 (\"proto_version\" '1', \"publication_names\" '\"{publication}\"')"
            ),
        );
        self.write(&frame(b'Q', &q)).await?;
        loop {
            let (kind, body) = self.read().await?;
            match kind {
                b'W' => break,
                b'E' => return Err(error_text(&body)),
                b'N' | b'S' => {}
                other => {
                    return Err(format!(
                        "unexpected message {:?} after START_REPLICATION",
                        other as char
                    ));
                }
            }
        }
        let (events_tx, events) = mpsc::channel(capacity.max(1));
        // Few commands: one confirmation per completed checkpoint (a dropped one is subsumed
        // by the next, positions only grow) and one finish.
        let (commands, commands_rx) = mpsc::channel(8);
        let task = tokio::spawn(self.run(events_tx, commands_rx));
        Ok(Stream {
            events,
            commands,
            task,
        })
    }

    /// The stream's task: reads, batches and forwards messages, answers keepalives, sends
    /// status updates on request and every 10 s.
    async fn run(mut self, events: mpsc::Sender<Event>, mut commands: mpsc::Receiver<Command>) {
        let (mut received, mut flushed) = (0u64, 0u64);
        let mut ticker = tokio::time::interval(Duration::from_secs(10));
        let mut pending: Vec<Bytes> = Vec::new();
        let mut finishing: Option<oneshot::Sender<Result<(), String>>> = None;
        loop {
            // Forward what was gathered once the socket's buffer is empty (or plenty is there).
            if !pending.is_empty() && (!self.has_message() || pending.len() >= 4096) {
                let chunk = Event::Data(std::mem::take(&mut pending));
                let mut send = std::pin::pin!(events.send(chunk));
                loop {
                    tokio::select! {
                        r = &mut send => {
                            if r.is_err() {
                                return; // the source is gone
                            }
                            break;
                        }
                        _ = ticker.tick() => {
                            // Backpressured: still tell the server we are alive.
                            if self.write(&status_update(received, flushed)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
            let message = tokio::select! {
                m = self.read() => m,
                c = commands.recv() => {
                    let result = match c {
                        Some(Command::Confirm(lsn)) => {
                            flushed = flushed.max(lsn);
                            self.write(&status_update(received.max(flushed), flushed)).await
                        }
                        Some(Command::Finish(lsn, done)) => {
                            flushed = flushed.max(lsn);
                            let mut r = self.write(&status_update(received.max(flushed), flushed)).await;
                            if r.is_ok() {
                                r = self.write(&frame(b'c', &[])).await;
                            }
                            if let Err(e) = r {
                                let _ = done.send(Err(e));
                                return;
                            }
                            finishing = Some(done);
                            Ok(())
                        }
                        None => return,
                    };
                    if let Err(e) = result {
                        let _ = events.send(Event::Failed(e)).await;
                        return;
                    }
                    continue;
                }
                _ = ticker.tick() => {
                    if let Err(e) = self.write(&status_update(received.max(flushed), flushed)).await {
                        let _ = events.send(Event::Failed(e)).await;
                        return;
                    }
                    continue;
                }
            };
            let (kind, mut body) = match message {
                Ok(m) => m,
                Err(e) => {
                    if let Some(done) = finishing.take() {
                        let _ = done.send(Ok(())); // the server closed after CopyDone
                    } else {
                        let _ = events.send(Event::Failed(e)).await;
                    }
                    return;
                }
            };
            match kind {
                b'd' if body.first() == Some(&b'w') && body.len() >= 25 => {
                    body.advance(1);
                    let start = body.get_u64();
                    let _end = body.get_u64();
                    let _time = body.get_i64();
                    received = received.max(start);
                    pending.push(body.freeze());
                }
                b'd' if body.first() == Some(&b'k') && body.len() >= 18 => {
                    body.advance(1);
                    let wal_end = body.get_u64();
                    let _time = body.get_i64();
                    let reply = body.get_u8() == 1;
                    if reply
                        && let Err(e) = self
                            .write(&status_update(received.max(flushed), flushed))
                            .await
                    {
                        let _ = events.send(Event::Failed(e)).await;
                        return;
                    }
                    if finishing.is_none() {
                        if !pending.is_empty() {
                            let chunk = Event::Data(std::mem::take(&mut pending));
                            if events.send(chunk).await.is_err() {
                                return;
                            }
                        }
                        if events.send(Event::Position(wal_end)).await.is_err() {
                            return;
                        }
                    }
                }
                b'd' => {
                    let e = format!("an unknown replication message ({} bytes)", body.len());
                    let _ = events.send(Event::Failed(e)).await;
                    return;
                }
                b'E' => {
                    let e = error_text(&body);
                    if let Some(done) = finishing.take() {
                        let _ = done.send(Err(e));
                    } else {
                        let _ = events.send(Event::Failed(e)).await;
                    }
                    return;
                }
                // The server's CopyDone, then CommandComplete and ReadyForQuery.
                b'c' | b'C' | b'N' | b'S' => {}
                b'Z' => {
                    if let Some(done) = finishing.take() {
                        let _ = done.send(Ok(()));
                    }
                    return;
                }
                other => {
                    let e = format!("an unexpected message {:?} in the stream", other as char);
                    let _ = events.send(Event::Failed(e)).await;
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_updates_have_the_protocol_layout() {
        let m = status_update(0x10, 0x20);
        assert_eq!(m[0], b'd');
        assert_eq!(i32::from_be_bytes([m[1], m[2], m[3], m[4]]), 38);
        assert_eq!(m[5], b'r');
        assert_eq!(u64::from_be_bytes(m[6..14].try_into().unwrap()), 0x10);
        assert_eq!(u64::from_be_bytes(m[14..22].try_into().unwrap()), 0x20);
        assert_eq!(u64::from_be_bytes(m[22..30].try_into().unwrap()), 0x20);
        assert_eq!(m.len(), 39);
    }

    #[test]
    fn data_rows_read_as_text_with_nulls_and_refuse_truncation() {
        let mut body = 3i16.to_be_bytes().to_vec();
        body.extend_from_slice(&2i32.to_be_bytes());
        body.extend_from_slice(b"ab");
        body.extend_from_slice(&(-1i32).to_be_bytes());
        body.extend_from_slice(&0i32.to_be_bytes());
        assert_eq!(
            data_row(&body).unwrap(),
            vec![Some("ab".to_string()), None, Some(String::new())]
        );
        assert!(data_row(&body[..7]).is_err());
        assert!(data_row(&[]).is_err());
    }

    #[test]
    fn error_responses_read_as_text() {
        let body = b"SERROR\0C55006\0Mreplication slot \"s\" is active for PID 7\0\0";
        assert_eq!(
            error_text(body),
            "ERROR 55006: replication slot \"s\" is active for PID 7"
        );
    }
}
